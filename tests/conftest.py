"""Shared fixtures: a real emulator process on loopback, and the warehouse databases.

Postgres-backed tests use TEST_POSTGRES_URL, or without it a throwaway cluster started for the
session from the PostgreSQL server binaries installed here. They skip only where there are none;
under CI=true they never skip, so CI never passes by skipping.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from scripts.postgres_cluster import find_pg_ctl, throwaway_cluster
from scripts.run_stack import PRODUCTION_INSTANCE, new_database, postgres_instance_env

ROOT = Path(__file__).resolve().parent.parent

# The tests stop the processes they start with SIGINT and SIGTERM. A suite started in the
# background of a non-interactive shell (`cmd &`) inherits SIGINT ignored, and some runners
# ignore SIGTERM too; an ignored signal stays ignored across exec, so `dagster dev` and the
# emulator would never stop. Handled signals are reset on exec: the children get the defaults.
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "upstream"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not come up within {timeout} s")


def scratch_copy(target: Path) -> Path:
    """The project root as symlinks, without the developer's `.env`, `.data` or `.git`: the dagster
    CLI loads `.env` from its working directory over the environment (and `make run` records
    DAGSTER_HOME there), so a test's CLI run in the root would use the developer's instance."""
    target.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in {".env", ".data", ".git", ".pytest_cache"}:
            (target / entry.name).symlink_to(entry)
    return target


def running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of `processes` still running (a zombie has ended: only its parent has not reaped it)."""
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            continue
    return alive


def commands(processes: list[psutil.Process]) -> dict[psutil.Process, str]:
    """The command line of each of `processes` still there."""
    found = {}
    for process in processes:
        try:
            found[process] = " ".join(process.cmdline())
        except psutil.Error:  # gone meanwhile
            continue
    return found


@pytest.fixture
def leftovers() -> Iterator[set[int]]:
    """Sessions a test adds here are killed afterwards, whatever survives in them: a test that
    fails must not leave its processes running on a shared machine."""
    from scripts.process_tree import signal_all, tree

    sessions: set[int] = set()
    yield sessions
    signal_all(tree(sessions), signal.SIGKILL)


@pytest.fixture
def project_dir(tmp_path) -> Path:
    """Where a test runs the dagster CLI: the project as a new user has it, whatever the developer's `.env`."""
    return scratch_copy(tmp_path / "project")


@dataclass
class EmulatorProcess:
    url: str

    def set_faults(self, faults: dict) -> None:
        httpx.put(f"{self.url}/_emulator/faults", json=faults).raise_for_status()

    def set_plan(self, plan: str) -> None:
        httpx.put(f"{self.url}/_emulator/config", json={"cmc_plan": plan}).raise_for_status()

    def requests(self) -> dict[str, int]:
        return httpx.get(f"{self.url}/_emulator/requests").json()


@pytest.fixture(scope="session")
def emulator_process() -> Iterator[EmulatorProcess]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--host", "127.0.0.1", "--port", str(port), "--universe", "3000"],
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/_emulator/health")
        yield EmulatorProcess(url)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def emulator(emulator_process: EmulatorProcess) -> Iterator[EmulatorProcess]:
    """The session's emulator with no faults and a paid CMC plan, restored after the test."""
    emulator_process.set_faults({})
    emulator_process.set_plan("standard")
    yield emulator_process
    emulator_process.set_faults({})
    emulator_process.set_plan("standard")


def reachable(url: str) -> Exception | None:
    """None if the server at `url` answers, else why not."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as error:  # noqa: BLE001 - any failure means "unreachable" here
        return error
    finally:
        engine.dispose()
    return None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server URL: TEST_POSTGRES_URL (CI sets it), else a throwaway cluster started for
    the session. Skipped, with one line, only where no PostgreSQL server binaries exist; never under
    CI=true, where every Postgres-backed test runs or fails."""
    ci = os.environ.get("CI") == "true"
    if url := os.environ.get("TEST_POSTGRES_URL"):
        if (error := reachable(url)) is not None:
            if ci:
                pytest.fail(f"CI=true but Postgres at TEST_POSTGRES_URL is unreachable: {error}")
            pytest.skip(f"Postgres at TEST_POSTGRES_URL is unreachable: {error}")
        yield url
        return
    if ci:
        pytest.fail("CI=true but TEST_POSTGRES_URL is not set")
    pg_ctl = find_pg_ctl()
    if pg_ctl is None:
        pytest.skip("no PostgreSQL server binaries (pg_ctl) here: install PostgreSQL or set TEST_POSTGRES_URL")
    with throwaway_cluster(pg_ctl, free_port()) as cluster:
        yield cluster.url


@pytest.fixture(scope="session")
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh database on the test server for this session, dropped afterwards."""
    with new_database(postgres_server, f"toplist_test_{os.getpid()}") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path) -> Iterator[str]:
    """A migrated, empty warehouse on each backend."""
    from warehouse.schema import metadata
    from warehouse.store import Warehouse

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    store = Warehouse(url)
    store.upgrade()
    yield url
    with store.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
    store.engine.dispose()


@pytest.fixture
def dagster_instance(database_url, tmp_path, monkeypatch):
    """Dagster's instance on the warehouse's backend: in memory with SQLite, the production
    deploy/dagster.yaml (dagster-postgres) with Postgres, so CI runs both stores on Postgres."""

    import dagster as dg

    if not database_url.startswith("postgresql"):
        with dg.DagsterInstance.ephemeral() as instance:
            yield instance
        return
    for variable, value in postgres_instance_env(database_url).items():
        monkeypatch.setenv(variable, value)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PRODUCTION_INSTANCE, home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance
