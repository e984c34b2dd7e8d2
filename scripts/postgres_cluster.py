"""A PostgreSQL cluster of our own, from the server binaries installed here: the tests start one
when TEST_POSTGRES_URL is not set, and bench.faults stops and hangs one (never a shared server).

It uses pytest-postgresql's executor (initdb, `pg_ctl start -w`, `pg_ctl stop -m fast`), which
imports nothing of pytest; it is a development dependency, imported only when a cluster starts.
PostgreSQL refuses to run as root: as root the cluster runs as the `postgres` system user, which
then owns its folder.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil


def find_pg_ctl() -> str | None:
    """PostgreSQL's server control program: on PATH, else the newest of Debian's versioned folders."""
    if found := shutil.which("pg_ctl"):
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return str(versions[-1]) if versions else None


@dataclass
class Cluster:
    """A running cluster: its superuser URL, and what stops, starts and finds its processes."""

    url: str
    datadir: Path
    executor: Any  # pytest_postgresql's PostgreSQLExecutor

    def stop(self) -> None:
        """`pg_ctl stop -m fast`: open sessions are ended, the server exits."""
        self.executor.stop()

    def start(self) -> None:
        """`pg_ctl start -w`: returns once the server accepts connections."""
        self.executor.start()

    def processes(self) -> list[psutil.Process]:
        """The postmaster (its pid is the first line of postmaster.pid) and every process it started."""
        pid_file = self.datadir / "postmaster.pid"
        if not pid_file.exists():
            return []
        postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
        return [postmaster, *postmaster.children(recursive=True)]


@contextmanager
def throwaway_cluster(pg_ctl: str, port: int) -> Iterator[Cluster]:
    """A new cluster on 127.0.0.1:`port` (trust authentication, superuser `postgres`), stopped and
    deleted afterwards."""
    from pytest_postgresql.executors import PostgreSQLExecutor

    base = Path(tempfile.mkdtemp(prefix="toplist-pg-"))
    executable = pg_ctl
    if os.geteuid() == 0:
        executable = str(base / "pg_ctl")
        Path(executable).write_text(f'#!/bin/sh\nexec runuser -u postgres -- {shlex.quote(pg_ctl)} "$@"\n')
        os.chmod(executable, 0o755)
        shutil.chown(base, "postgres")
    executor = PostgreSQLExecutor(
        executable=executable, host="127.0.0.1", port=port, datadir=str(base / "data"), unixsocketdir=str(base),
        logfile=str(base / "postgresql.log"), startparams="-w", dbname="test", user="postgres",
    )  # fmt: skip
    executor.start()
    try:
        yield Cluster(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", base / "data", executor)
    finally:
        if executor.running():
            executor.stop()
        shutil.rmtree(base, ignore_errors=True)
