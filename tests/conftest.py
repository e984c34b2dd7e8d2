"""Shared fixtures: a real emulator process on loopback, and the warehouse databases.

Postgres-backed tests use TEST_POSTGRES_URL. Outside CI they skip when it is unset or
unreachable; under CI=true they fail instead, so CI never passes by skipping.
"""

from __future__ import annotations

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
