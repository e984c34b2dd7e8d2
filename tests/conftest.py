"""Shared fixtures: a real emulator process on loopback, and the warehouse databases.

Postgres-backed tests use TEST_POSTGRES_URL. Outside CI they skip when it is unset or
unreachable; under CI=true they fail instead, so CI never passes by skipping.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
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


def postgres_server_url() -> str | None:
    """TEST_POSTGRES_URL if that server answers; under CI=true an unreachable server is an error."""
    url = os.environ.get("TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but TEST_POSTGRES_URL is not set")
        return None
    from sqlalchemy import create_engine, text

    try:
        with create_engine(url, connect_args={"connect_timeout": 3}).connect() as conn:
            conn.execute(text("select 1"))
    except Exception as error:  # noqa: BLE001 - any failure means "unreachable" here
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but Postgres at TEST_POSTGRES_URL is unreachable: {error}")
        return None
    return url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on the test server for this session, dropped afterwards."""
    server = postgres_server_url()
    if server is None:
        pytest.skip("TEST_POSTGRES_URL not set or unreachable (CI=true makes this a failure)")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"toplist_test_{os.getpid()}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


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


def postgres_instance_env(database_url: str) -> dict[str, str]:
    """The DAGSTER_POSTGRES_* variables dagster.yaml reads, for the database behind `database_url`."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    return {
        "DAGSTER_POSTGRES_HOST": url.host or "127.0.0.1",
        "DAGSTER_POSTGRES_PORT": str(url.port or 5432),
        "DAGSTER_POSTGRES_USER": url.username or "postgres",
        "DAGSTER_POSTGRES_PASSWORD": url.password or "",
        "DAGSTER_POSTGRES_DB": url.database or "",
    }


@pytest.fixture
def dagster_instance(database_url, tmp_path, monkeypatch):
    """Dagster's instance on the warehouse's backend: in memory with SQLite, the production
    dagster.yaml (dagster-postgres) with Postgres, so CI runs both stores on Postgres."""
    import shutil

    import dagster as dg

    if not database_url.startswith("postgresql"):
        with dg.DagsterInstance.ephemeral() as instance:
            yield instance
        return
    for variable, value in postgres_instance_env(database_url).items():
        monkeypatch.setenv(variable, value)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance
