"""`make run`: the whole stack on this machine, stopped together by Ctrl-C.

- the emulator on :8765 (the settings' EMULATOR_URL), unless both CMC_API_KEY and
  CRYPTOCOMPARE_API_KEY are set in the environment or `.env` (then the live APIs are used, and
  it says so);
- `dagster dev` (webserver on :3000, daemon, the minute schedule on by default);
- the API on :6667;
with the warehouse and Dagster's instance in SQLite under `.data/` unless configured.

Everything is read through the settings (environment, then `.env`), as the pipeline and the API
read it. DAGSTER_HOME is recorded in `.env`, which the dagster CLI loads too: a second terminal
in the project root then works on the same instance, warehouse and upstreams as the stack.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import dotenv
import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from common.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parent.parent
DOTENV = ROOT / ".env"
LOCAL_INSTANCE = ROOT / "deploy" / "dagster.local.yaml"  # SQLite, no file per run, ticks purged
PRODUCTION_INSTANCE = ROOT / "deploy" / "dagster.yaml"  # dagster-postgres, DAGSTER_POSTGRES_*
GENERATED_MARK = "# Copied from deploy/dagster.local.yaml by `make run`"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def stack_environment(base: Mapping[str, str], settings: Settings | None = None) -> tuple[dict[str, str], bool]:
    """The environment every process of the stack shares, and whether it starts the emulator
    (no live keys and a loopback EMULATOR_URL: the emulator is ours to run)."""
    settings = settings or get_settings()
    env = dict(base)
    env.setdefault("DATABASE_URL", settings.database_url)
    env.setdefault("DAGSTER_HOME", str(settings.dagster_home))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if settings.uses_emulator:
        env.setdefault("EMULATOR_URL", settings.emulator_url)
    return env, settings.uses_emulator and urlsplit(env["EMULATOR_URL"]).hostname in LOOPBACK


def postgres_instance_env(database_url: str) -> dict[str, str]:
    """The DAGSTER_POSTGRES_* variables PRODUCTION_INSTANCE reads, for the database behind `database_url`."""
    url = make_url(database_url)
    return {
        "DAGSTER_POSTGRES_HOST": url.host or "127.0.0.1",
        "DAGSTER_POSTGRES_PORT": str(url.port or 5432),
        "DAGSTER_POSTGRES_USER": url.username or "postgres",
        "DAGSTER_POSTGRES_PASSWORD": url.password or "",
        "DAGSTER_POSTGRES_DB": url.database or "",
    }


@contextmanager
def new_database(server: str, name: str) -> Iterator[str]:
    """A new, empty database on the Postgres server of `server` (a URL), dropped afterwards."""
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def range_run_command(first: str, last: str, tags: Mapping[str, str] | None = None) -> list[str]:
    """One run over the minute partitions first...last from a shell: the backfill job with
    Dagster's range tags (and `tags`). `--partition-range` would need BackfillPolicy.single_run,
    and the assets backfill a range as runs of a day (crypto_pipeline/partitions.py)."""
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last, **(tags or {})}
    return [sys.executable, "-m", "dagster", "job", "execute", "-m", "crypto_pipeline.definitions",
            "-j", "backfill_snapshots", "--tags", json.dumps(tags)]  # fmt: skip


def upstreams_line(settings: Settings) -> str:
    """What `make run` says about its upstreams: the truth, from the same settings the pipeline reads."""
    if not settings.uses_emulator:
        return (
            f"Upstreams: the LIVE APIs, CoinMarketCap at {settings.cmc_base_url} and CryptoCompare at "
            f"{settings.cryptocompare_data_api_url} (both API keys are set in the environment or .env)."
        )
    keys = [name for name in ("CMC_API_KEY", "CRYPTOCOMPARE_API_KEY") if getattr(settings, name.lower())]
    why = f"only {keys[0]} is set; live data needs both keys" if keys else "no API keys in the environment or .env"
    return f"Upstreams: the emulator at {settings.emulator_url} ({why}); the data is labelled emulated."


def record_in_dotenv(values: Mapping[str, str], path: Path = DOTENV) -> list[str]:
    """Add to `.env` the values it does not set yet (never changing one the user wrote); the names
    added. The dagster CLI and the settings both read `.env`, so another terminal agrees with us."""
    present = dotenv.dotenv_values(path) if path.exists() else {}
    added = [name for name, value in values.items() if not present.get(name)]
    for name in added:
        dotenv.set_key(path, name, values[name], quote_mode="never")
    return added


def dotenv_conflicts(environ: Mapping[str, str], path: Path) -> list[str]:
    """Names set in both the environment and `.env`, to different values. The settings (the API,
    this script) take the environment's, but Dagster's CLI and `dagster dev` load `.env` over the
    environment: the stack would split (live for the API, an empty key for the pipeline)."""
    present = dotenv.dotenv_values(path) if path.exists() else {}
    return sorted(name for name, value in present.items() if value is not None and environ.get(name, value) != value)


def install_local_instance(home: Path) -> None:
    """$DAGSTER_HOME/dagster.yaml from the committed template, unless someone else's file is there."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists() or target.read_text().startswith(GENERATED_MARK):
        target.write_text(f"{GENERATED_MARK}; edit that file, not this one.\n{LOCAL_INSTANCE.read_text()}")


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
                 quiet: bool = False) -> None:  # fmt: skip
        self.env, self.with_emulator, self.quiet = env, with_emulator, quiet
        self.api_port, self.dagster_port = api_port, dagster_port
        self.processes: list[subprocess.Popen] = []

    def spawn(self, *command: str) -> None:
        output = subprocess.DEVNULL if self.quiet else None
        self.processes.append(
            subprocess.Popen(command, cwd=ROOT, env=self.env, start_new_session=True, stdout=output, stderr=output)
        )

    def start(self) -> None:
        install_local_instance(Path(self.env["DAGSTER_HOME"]))
        subprocess.run([sys.executable, "-m", "warehouse", "upgrade"], cwd=ROOT, env=self.env, check=True)
        if self.with_emulator:
            url = urlsplit(self.env["EMULATOR_URL"])
            self.spawn(sys.executable, "-m", "emulator", "--host", url.hostname, "--port", str(url.port or 80))
            wait_until_up(f"{url.geturl().rstrip('/')}/_emulator/health", 30)
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
    if conflicts := dotenv_conflicts(os.environ, DOTENV):
        sys.exit(
            f"{', '.join(conflicts)}: set in the environment and in .env to different values. Dagster loads .env "
            "over the environment, the API does not, so they would disagree: unset one, or make them equal."
        )
    settings = get_settings()
    env, with_emulator = stack_environment(os.environ, settings)
    print(upstreams_line(settings))
    added = record_in_dotenv({"DAGSTER_HOME": env["DAGSTER_HOME"]})
    if added:
        print(f"Recorded {', '.join(added)} in .env, so the dagster CLI in another terminal uses this instance.")
    stack = Stack(env, with_emulator, api_port=settings.api_port)
    try:
        stack.start()
        print(
            f"\nUp: Dagster UI http://127.0.0.1:{stack.dagster_port} · API http://127.0.0.1:{stack.api_port} "
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
