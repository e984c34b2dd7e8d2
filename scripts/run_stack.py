"""`make run`: the whole stack on this machine, stopped together by Ctrl-C.

- the emulator on :8765, unless both CMC_API_KEY and CRYPTOCOMPARE_API_KEY are set (then the
  live APIs are used, and it says so);
- `dagster dev` (webserver on :3000, daemon, the minute schedule on by default);
- the API on :6667;
with the warehouse and Dagster's instance in SQLite under `.data/` unless configured.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from common.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data"
LOCAL_INSTANCE = ROOT / "deploy" / "dagster.local.yaml"  # SQLite, no file per run, ticks purged


def stack_environment(base: Mapping[str, str], emulator_port: int = 8765) -> tuple[dict[str, str], bool]:
    """The environment every process of the stack shares, and whether the emulator is needed."""
    env = dict(base)
    env.setdefault("DATABASE_URL", f"sqlite:///{DATA / 'warehouse.db'}")
    env.setdefault("DAGSTER_HOME", str(DATA / "dagster"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    live = bool(env.get("CMC_API_KEY")) and bool(env.get("CRYPTOCOMPARE_API_KEY"))
    if not live:
        env["EMULATOR_URL"] = f"http://127.0.0.1:{emulator_port}"
    return env, not live


def wait_until_up(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


class Stack:
    """The processes of the stack, each in its own process group so all of it stops together."""

    def __init__(self, env: dict[str, str], with_emulator: bool, api_port: int = 6667, dagster_port: int = 3000,
                 emulator_port: int = 8765, quiet: bool = False) -> None:  # fmt: skip
        self.env, self.with_emulator, self.quiet = env, with_emulator, quiet
        self.api_port, self.dagster_port, self.emulator_port = api_port, dagster_port, emulator_port
        self.processes: list[subprocess.Popen] = []

    def spawn(self, *command: str) -> None:
        output = subprocess.DEVNULL if self.quiet else None
        self.processes.append(
            subprocess.Popen(command, cwd=ROOT, env=self.env, start_new_session=True, stdout=output, stderr=output)
        )

    def start(self) -> None:
        home = Path(self.env["DAGSTER_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        instance_config = home / "dagster.yaml"
        if not instance_config.exists() or instance_config.read_text() != LOCAL_INSTANCE.read_text():
            instance_config.write_text(LOCAL_INSTANCE.read_text())
        subprocess.run([sys.executable, "-m", "warehouse", "upgrade"], cwd=ROOT, env=self.env, check=True)
        if self.with_emulator:
            self.spawn(sys.executable, "-m", "emulator", "--host", "127.0.0.1", "--port", str(self.emulator_port))
            wait_until_up(f"http://127.0.0.1:{self.emulator_port}/_emulator/health", 30)
        self.spawn(sys.executable, "-m", "dagster", "dev", "-m", "crypto_pipeline.definitions",
                   "-h", "127.0.0.1", "-p", str(self.dagster_port))  # fmt: skip
        self.spawn(sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(self.api_port),
                   "--no-access-log")  # fmt: skip
        wait_until_up(f"http://127.0.0.1:{self.api_port}/healthz", 60)
        wait_until_up(f"http://127.0.0.1:{self.dagster_port}/server_info", 180)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
        for process in reversed(self.processes):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def alive(self) -> bool:
        return all(process.poll() is None for process in self.processes)


def main() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # and SIGTERM stop the whole stack
    env, with_emulator = stack_environment(os.environ)
    print(
        "Upstreams: the local emulator on :8765 (no API keys set; data is labelled emulated)."
        if with_emulator
        else "Upstreams: the LIVE CoinMarketCap and CryptoCompare APIs (both API keys are set)."
    )
    stack = Stack(env, with_emulator, api_port=get_settings().api_port)
    try:
        stack.start()
        print(
            f"\nUp: Dagster UI http://127.0.0.1:3000 · API http://127.0.0.1:{stack.api_port} "
            f"(try: curl 'localhost:{stack.api_port}/?limit=10') · Ctrl-C stops everything.\n"
            "The first snapshot lands within about a minute of start.",
            flush=True,
        )
        while stack.alive():
            time.sleep(1)
        print("A process of the stack exited; stopping the rest.", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
