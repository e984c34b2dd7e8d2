"""`make run`: the whole stack on this machine, supervised, stopped together by Ctrl-C or SIGTERM.

- the emulator on :8765 (the settings' EMULATOR_URL), unless both CMC_API_KEY and
  CRYPTOCOMPARE_API_KEY are set in the environment or `.env` (then the live APIs are used, and
  it says so);
- `dagster dev` (webserver on :3000 (DAGSTER_PORT), daemon, the minute schedule on by default);
- the API on :6667 (API_PORT);
with the warehouse and Dagster's instance in SQLite under `.data/` unless configured.

A component that dies is restarted alone, the others untouched, once its whole process tree is
gone (scripts/process_tree.py: a `dagster dev` killed with -9 leaves its webserver, daemon and
code server running, and they would launch runs beside the new ones). `dagster dev` itself exits
when its webserver or daemon dies, and restarts its code server's proxy, but not the code server
behind the proxy: without one it stays up and launches nothing, so that counts as dying.

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
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import dotenv
import httpx
import psutil
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from common.settings import Settings, get_settings
from scripts.process_tree import ProcessTrees, exit_on_signals, tree

ROOT = Path(__file__).resolve().parent.parent
DOTENV = ROOT / ".env"
LOCAL_INSTANCE = ROOT / "deploy" / "dagster.local.yaml"  # SQLite, no file per run, ticks purged
PRODUCTION_INSTANCE = ROOT / "deploy" / "dagster.yaml"  # dagster-postgres, DAGSTER_POSTGRES_*
GENERATED_MARK = "# Copied from deploy/dagster.local.yaml by `make run`"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
CHECK_INTERVAL_SECONDS = 1.0
FIRST_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS = 1.0, 30.0  # a restart waits this long, doubling while it dies young
STABLE_SECONDS = 60.0  # a component that lived this long before dying is restarted after the first backoff again
PART_GRACE_SECONDS = 15.0  # dagster dev restarts its code server's proxy within 5 s, which starts the server
# What `dagster dev` must have running while it is up: it exits without its webserver or daemon,
# but runs on without its code server (`dagster api grpc`, the proxy's child), launching nothing.
DAGSTER_DEV_PARTS = {"daemon": "dagster._daemon", "webserver": "dagster_webserver", "code server": "dagster api grpc"}


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


def record_in_dotenv(values: Mapping[str, str], path: Path) -> list[str]:
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


def answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
        return True
    except httpx.TransportError:
        return False


def wait_until_up(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not answers(url):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(0.5)


def how_it_ended(code: int) -> str:
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


def clock() -> str:
    return time.strftime("%H:%M:%S")


@dataclass
class Component:
    """One process of the stack and the tree it starts: how to start it, the URL that answers
    once it is up, and the descendants that must be there while it is (name: a mark in their
    command line)."""

    name: str
    command: tuple[str, ...]
    health_url: str
    start_timeout: float
    parts: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    spawned_at: float = 0.0
    up: bool = False
    restarts: int = 0
    backoff: float = FIRST_BACKOFF_SECONDS
    restart_at: float | None = None
    missing: dict[str, float] = field(default_factory=dict)  # part: since when

    def absent_parts(self) -> list[str]:
        """The parts not running in this component's tree now."""
        commands = []
        for process in tree([self.process.pid]):
            try:
                commands.append(" ".join(process.cmdline()[1:5]))
            except psutil.Error:  # gone meanwhile
                continue
        return [part for part, mark in self.parts.items() if not any(mark in command for command in commands)]


class Stack:
    """The processes of the stack, each in a session of its own with everything it starts.

    `supervise` restarts a component that died, or that lost one of its parts (`dagster dev`
    outlives its code server: nothing restarts that), alone and only once its whole tree is
    gone, after a backoff that doubles while it keeps dying young. `stop` leaves no process.
    """

    def __init__(self, env: dict[str, str], with_emulator: bool, api_port: int = 6667, dagster_port: int = 3000,
                 quiet: bool = False) -> None:  # fmt: skip
        self.env, self.trees = env, ProcessTrees(env, quiet)
        self.api_port, self.dagster_port = api_port, dagster_port
        python = sys.executable
        self.components = [
            Component("dagster dev", (python, "-m", "dagster", "dev", "-m", "crypto_pipeline.definitions",
                                      "-h", "127.0.0.1", "-p", str(dagster_port)),
                      f"http://127.0.0.1:{dagster_port}/server_info", 180, DAGSTER_DEV_PARTS),
            Component("API", (python, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(api_port),
                              "--no-access-log"), f"http://127.0.0.1:{api_port}/healthz", 60),
        ]  # fmt: skip
        if with_emulator:
            url = urlsplit(env["EMULATOR_URL"])
            command = (python, "-m", "emulator", "--host", url.hostname, "--port", str(url.port or 80))
            health = f"{url.geturl().rstrip('/')}/_emulator/health"
            self.components.insert(0, Component("emulator", command, health, 30))

    @property
    def processes(self) -> list[subprocess.Popen]:
        return [component.process for component in self.components if component.process]

    def component(self, name: str) -> Component:
        return next(component for component in self.components if component.name == name)

    def spawn(self, component: Component) -> None:
        component.process = self.trees.spawn(*component.command)
        component.spawned_at, component.up, component.restart_at = time.monotonic(), False, None
        component.missing.clear()

    def start(self) -> None:
        install_local_instance(Path(self.env["DAGSTER_HOME"]))
        subprocess.run([sys.executable, "-m", "warehouse", "upgrade"], cwd=ROOT, env=self.env, check=True)
        upstream = [component for component in self.components if component.name == "emulator"]
        for batch in (upstream, [component for component in self.components if component not in upstream]):
            for component in batch:  # the emulator first: the code location's first tick calls it
                self.spawn(component)
            for component in batch:
                self.wait_up(component)

    def wait_up(self, component: Component) -> None:
        deadline = component.spawned_at + component.start_timeout
        while not answers(component.health_url):
            if (code := component.process.poll()) is not None:
                raise RuntimeError(f"{component.name} {how_it_ended(code)} while starting")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{component.health_url} did not answer within {component.start_timeout:.0f} s")
            time.sleep(0.5)
        component.up = True

    def supervise(self, stopping: threading.Event | None = None) -> None:
        """Check every component once a second until `stopping` is set (or an exception, Ctrl-C)."""
        stopping = stopping or threading.Event()
        while not stopping.wait(CHECK_INTERVAL_SECONDS):
            self.check()

    def check(self) -> None:
        for component in self.components:
            if component.restart_at is not None:
                if time.monotonic() >= component.restart_at:
                    self.spawn(component)
            elif trouble := self.trouble(component):
                self.restart(component, trouble)
            elif not component.up and answers(component.health_url):
                component.up = True
                print(f"{clock()} {component.name} is back, {time.monotonic() - component.spawned_at:.0f} s after "
                      "its restart.", flush=True)  # fmt: skip

    def trouble(self, component: Component) -> str | None:
        """What is wrong with `component`, if anything: it ended, never came up, or lost a part for good."""
        now = time.monotonic()
        if (code := component.process.poll()) is not None:
            first_gone = sorted(component.missing, key=component.missing.get)[:1]
            return how_it_ended(code) + "".join(f" (its {part} had gone first)" for part in first_gone)
        if not component.up:
            late = now - component.spawned_at > component.start_timeout
            return f"did not answer {component.health_url} within {component.start_timeout:.0f} s" if late else None
        absent = component.absent_parts() if component.parts else []
        for part in component.parts:
            if part in absent:
                component.missing.setdefault(part, now)
            else:
                component.missing.pop(part, None)
        lost = [part for part, since in component.missing.items() if now - since > PART_GRACE_SECONDS]
        return f"is running without its {' and '.join(lost)}" if lost else None

    def restart(self, component: Component, trouble: str) -> None:
        """Stop what is left of `component`'s tree, then start it again after its backoff."""
        noticed = clock()
        if time.monotonic() - component.spawned_at > STABLE_SECONDS:
            component.backoff = FIRST_BACKOFF_SECONDS
        left = self.trees.stop(component.process)
        delay, component.backoff = component.backoff, min(component.backoff * 2, MAX_BACKOFF_SECONDS)
        component.restarts += 1
        component.restart_at, component.up = time.monotonic() + delay, False
        reaped = f"stopped the {left} process{'es' if left > 1 else ''} left of it; " if left else ""
        print(f"{noticed} {component.name} {trouble}; {reaped}restarting it in {delay:.0f} s "
              f"(restart {component.restarts}).", flush=True)  # fmt: skip

    def stop(self) -> None:
        self.trees.stop()


def main() -> None:
    with exit_on_signals():  # Ctrl-C, SIGTERM and SIGHUP stop the whole stack
        if conflicts := dotenv_conflicts(os.environ, DOTENV):
            sys.exit(
                f"{', '.join(conflicts)}: set in the environment and in .env to different values. Dagster loads .env "
                "over the environment, the API does not, so they would disagree: unset one, or make them equal."
            )
        settings = get_settings()
        env, with_emulator = stack_environment(os.environ, settings)
        print(upstreams_line(settings))
        added = record_in_dotenv({"DAGSTER_HOME": env["DAGSTER_HOME"]}, DOTENV)
        if added:
            print(f"Recorded {', '.join(added)} in .env, so the dagster CLI in another terminal uses this instance.")
        stack = Stack(env, with_emulator, api_port=settings.api_port, dagster_port=settings.dagster_port)
        try:
            stack.start()
            print(
                f"\nUp: Dagster UI http://127.0.0.1:{stack.dagster_port} · API http://127.0.0.1:{stack.api_port} "
                f"(try: curl 'localhost:{stack.api_port}/?limit=10') · Ctrl-C stops everything.\n"
                "The first snapshot lands within about a minute of start. A process that dies is restarted alone.",
                flush=True,
            )
            stack.supervise()
        except (KeyboardInterrupt, SystemExit):  # a stop that was asked for (signals): a clean exit
            pass
        finally:
            print("Stopping the stack...", flush=True)
            stack.stop()
            print("Stopped: no process of the stack is left.", flush=True)


if __name__ == "__main__":
    main()
