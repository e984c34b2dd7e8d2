"""`make deploy-check`: the production image and docker-compose.yml, run for real on a Docker engine.

It builds the image, brings the demo profile up (the emulator as upstream) as its own compose
project, and prints a figure for each step: the build's time and the image's size, the first
served minute, a past minute (202, then 200), the API's, the daemon's and Postgres's main
process ending (the engine's restart policy starts each again), the code server down across a
minute boundary (that minute healed within 10 minutes), the code server recreated during a
backfill run (the run ends FAILED), `down` then `up`, and a backup restored as
docs/deployment.md#where-the-data-lives-backup-and-restore says, after the volume is gone.
Before and after each fault it counts the minutes stored: one stored before and missing after is
lost, and fails the check. At the end it removes its containers and volumes, pass or fail.

It reaches the stack only through the compose command (`exec -T`), never a published port, so it
runs the same on a normal engine and on the local-docker kit's loopback-only one:

    COMPOSE               compose command (default: `docker compose` when it answers, else `docker-compose`)
    DOCKER                docker command (default: `docker`)
    DOCKER_BUILD_FLAGS    extra `docker build` flags (the kit: `--network host`)
    DEPLOY_CHECK_PROJECT  compose project name (default: toplist-deploy-check, so `down -v` at the
                          end never touches another project's volumes)
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dotenv

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "crypto-toplist:latest"
SERVICES = ("postgres", "code-server", "dagster-webserver", "dagster-daemon", "api", "emulator")
APP_SERVICES = ("code-server", "dagster-daemon", "dagster-webserver", "api")  # the documented restore stops these
DEADLINE_SECONDS = 300
# Run inside the api container: GET each path given of the API; print a line [status, body] for each.
PROBE = """
import json, sys, urllib.error, urllib.request
for path in sys.argv[1:]:
    try:
        answer = urllib.request.urlopen("http://127.0.0.1:6667" + path, timeout=10)
    except urllib.error.HTTPError as error:
        answer = error
    print(json.dumps([answer.status, answer.read().decode()]))
"""


def as_minute(column: str) -> str:
    """SQL for a timestamptz column as a minute's text, YYYY-MM-DDTHH:MM (what `minute_of` writes)."""
    return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI')"


class CheckFailed(Exception):
    """A step did not do what the deployment promises; the message says which and what was seen."""


def command_from(variable: str, default: str) -> list[str]:
    return shlex.split(os.environ.get(variable) or default)


def default_compose(docker: list[str]) -> list[str]:
    if shutil.which(docker[0]) and subprocess.run([*docker, "compose", "version"], capture_output=True).returncode == 0:
        return [*docker, "compose"]
    return ["docker-compose"]


class Stack:
    """The compose project under test, driven through the compose and docker commands."""

    def __init__(self) -> None:
        self.docker = command_from("DOCKER", "docker")
        self.compose = command_from("COMPOSE", "") or default_compose(self.docker)
        self.project = os.environ.get("DEPLOY_CHECK_PROJECT") or "toplist-deploy-check"
        # COMPOSE_PROJECT_NAME for compose itself; COMPOSE_PROJECT for the local-docker kit's compose.sh.
        self.env = {**os.environ, "COMPOSE_PROJECT_NAME": self.project, "COMPOSE_PROJECT": self.project}

    def run(self, *args: str, check: bool = True, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        result = subprocess.run([*self.compose, "--profile", "demo", *args], cwd=ROOT, env=self.env, text=True,
                                timeout=timeout, **kwargs)  # fmt: skip
        if check and result.returncode != 0:
            raise CheckFailed(f"`compose {shlex.join(args)}` exited {result.returncode}: {result.stderr[-2000:]}")
        return result

    def get(self, *paths: str) -> list[tuple[int, str]]:
        """The API's answers to GET each path, asked from inside its container; [] while it cannot answer."""
        result = self.run("exec", "-T", "api", "python", "-c", PROBE, *paths, check=False, timeout=300)
        return [tuple(json.loads(line)) for line in result.stdout.splitlines()] if result.returncode == 0 else []

    def answer(self, path: str) -> tuple[int, str]:
        return next(iter(self.get(path)), (0, "no answer"))

    def sql(self, query: str, check: bool = True) -> list[str]:
        """The rows of a query of the toplist database, one line each (none while Postgres does not answer, unless
        `check`)."""
        result = self.run("exec", "-T", "postgres", "psql", "-U", "toplist", "-d", "toplist", "-tA", "-c", query,
                          check=check, timeout=60)  # fmt: skip
        return result.stdout.splitlines() if result.returncode == 0 else []

    def stored_minutes(self, check: bool = True) -> set[str]:
        return set(self.sql(f"SELECT {as_minute('minute')} FROM toplist_snapshots", check=check))

    def states(self) -> dict[str, tuple[str, int]]:
        """Each service's health (its state without a health check) and restart count, in two commands."""
        containers = self.run("ps", "-q").stdout.split()
        if not containers:
            return {}
        template = '{{index .Config.Labels "com.docker.compose.service"}} {{.RestartCount}} '
        template += "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}"
        result = subprocess.run([*self.docker, "inspect", "-f", template, *containers], capture_output=True, text=True)
        lines = (line.split() for line in result.stdout.splitlines())
        return {service: (health, int(restarts)) for service, restarts, health in lines}

    def healthy(self, *services: str) -> bool:
        states = self.states()
        return all(states.get(service, ("missing", 0))[0] == "healthy" for service in services)

    def restarts(self, service: str) -> int:
        return self.states().get(service, ("missing", 0))[1]


def wait_for(conditions: dict[str, Callable[[], bool]], since: float, deadline: float = DEADLINE_SECONDS) -> str:
    """Poll every condition (every 2 s) until each has held once; say when each first did, in
    seconds from `since` (to a poll's few seconds). Fails naming those not met within `deadline`."""
    seen: dict[str, float] = {}
    while True:
        for name, condition in conditions.items():
            if name not in seen and condition():
                seen[name] = time.monotonic() - since
        if len(seen) == len(conditions):
            return ", ".join(f"{name} after {seconds:.0f} s" for name, seconds in seen.items())
        if time.monotonic() - since > deadline:
            raise CheckFailed(f"not within {deadline} s: {', '.join(n for n in conditions if n not in seen)}")
        time.sleep(2)


def minute_of(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M")


def recovery(stack: Stack, moment: datetime) -> dict[str, Callable[[], bool]]:
    """What a recovered stack shows: the API ready (/readyz 200), every service healthy, and a
    minute whose schedule tick came after `moment` stored."""
    started = minute_of(moment)
    return {
        "API ready": lambda: stack.answer("/readyz")[0] == 200,
        "every service healthy": lambda: stack.healthy(*SERVICES),
        "a later minute stored": lambda: max(stack.stored_minutes(check=False), default="") > started,
    }


def build(stack: Stack) -> None:
    started = time.monotonic()
    flags = command_from("DOCKER_BUILD_FLAGS", "")
    result = subprocess.run([*stack.docker, "build", *flags, "-t", IMAGE, "."], cwd=ROOT, capture_output=True,
                            text=True)  # fmt: skip
    if result.returncode != 0:
        raise CheckFailed(f"docker build exited {result.returncode}: {result.stdout[-2000:]}{result.stderr[-2000:]}")
    size = int(subprocess.run([*stack.docker, "image", "inspect", "-f", "{{.Size}}", IMAGE], capture_output=True,
                              text=True, check=True).stdout)  # fmt: skip
    print(f"build: {time.monotonic() - started:.0f} s, image {IMAGE} {size / 2**20:.0f} MiB", flush=True)


def first_minute(stack: Stack) -> set[str]:
    moment, started = datetime.now(UTC), time.monotonic()
    stack.run("up", "-d", timeout=900)
    conditions = recovery(stack, moment)
    del conditions["a later minute stored"]  # the first minute is the one /readyz waits for
    print(f"up: {wait_for(conditions, started)}", flush=True)
    status, body = stack.answer("/?limit=3&format=csv")
    if status != 200:
        raise CheckFailed(f"GET /?limit=3&format=csv once ready: {status} {body}")
    return stack.stored_minutes()


def past_minute(stack: Stack) -> None:
    minute = minute_of(datetime.now(UTC) - timedelta(hours=1))
    path = f"/?datetime={minute}Z&limit=3"
    status, body = stack.answer(path)
    if status != 202:
        raise CheckFailed(f"GET {path}: expected 202 (backfill requested), got {status} {body}")
    waited = wait_for({"200": lambda: stack.answer(path)[0] == 200}, time.monotonic())
    status, body = stack.answer(path)
    if f'"snapshot_time":"{minute}:00Z"' not in body:
        raise CheckFailed(f"GET {path}: 200 but not that minute's snapshot: {body[:300]}")
    print(f"past minute {minute}: 202, then {waited}", flush=True)


def accounted(stack: Stack, name: str, before: set[str], figures: str) -> None:
    """Print a fault's figures; fail when a minute stored before it is gone now."""
    after = stack.stored_minutes()
    lost = sorted(before - after)
    print(f"{name}: {figures}; minutes stored {len(before)} -> {len(after)}, lost {len(lost)}", flush=True)
    if lost:
        raise CheckFailed(f"{name}: minutes stored before and missing after: {lost}")


def process_ends(stack: Stack, service: str, signal_command: list[str]) -> None:
    """Signal the service's main process (pid 1) from inside; the engine's restart policy must
    start the container again (a `docker kill` would count as a manual stop and be left down)."""
    before, restarts = stack.stored_minutes(), stack.restarts(service)
    moment, started = datetime.now(UTC), time.monotonic()
    stack.run("exec", "-T", service, *signal_command, check=False)
    figures = wait_for({"restarted by the engine": lambda: stack.restarts(service) > restarts}, started)
    figures += ", " + wait_for(recovery(stack, moment), started)
    accounted(stack, f"{service}'s process ended", before, figures)


def sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


def code_server_down_across_a_minute_boundary(stack: Stack) -> None:
    """The code server stopped from second 45 of a minute to 20 s into the next: the schedule
    cannot launch the next minute's run, and that minute must be stored within 10 minutes anyway
    (the healer requests it once its live window is over)."""
    before, now = stack.stored_minutes(), datetime.now(UTC)
    boundary = now.replace(second=0, microsecond=0) + timedelta(minutes=1 if now.second < 40 else 2)
    sleep_until(boundary - timedelta(seconds=15))
    stack.run("stop", "code-server", timeout=120)
    sleep_until(boundary + timedelta(seconds=20))
    started, missed = time.monotonic(), minute_of(boundary)
    stack.run("start", "code-server", timeout=120)
    figures = wait_for({f"{missed} stored": lambda: missed in stack.stored_minutes(check=False)}, started, 600)
    origins = stack.sql(f"SELECT origin FROM backfill_requests WHERE {as_minute('minute')} = '{missed}'")
    figures += f" from the start, {'requested by the ' + origins[0] if origins else 'by the schedule (no request)'}"
    accounted(stack, "code server down across a minute boundary", before, figures)


def code_server_recreated_mid_run(stack: Stack) -> None:
    """`up -d --no-deps --force-recreate code-server` while a backfill request's run is running: its
    worker goes with the container, and run monitoring must end the run FAILED, not leave it STARTED.
    (Without --no-deps, Compose v1 recreates what code-server depends on too: Postgres.)"""
    before = stack.stored_minutes()
    first = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=4)
    block = [minute_of(first + timedelta(minutes=i)) for i in range(120)]  # one run (BACKFILL_MAX_MINUTES_PER_RUN)
    answers = stack.get(*(f"/?datetime={minute}Z&limit=1" for minute in block))
    if [status for status, _ in answers] != [202] * len(block):
        raise CheckFailed(f"GET of {block[0]}..{block[-1]}: expected 202 for each, got {answers[:3]}…")
    runs_of_block = (
        "SELECT r.run_id, r.status FROM runs r JOIN backfill_requests b ON b.run_id = r.run_id "
        f"WHERE {as_minute('b.minute')} BETWEEN '{block[0]}' AND '{block[-1]}'"
    )
    wait_for({"its run started": lambda: any(row.endswith("|STARTED") for row in stack.sql(runs_of_block))},
             time.monotonic())  # fmt: skip
    run_id = next(row.split("|")[0] for row in stack.sql(runs_of_block) if row.endswith("|STARTED"))
    started = time.monotonic()
    stack.run("up", "-d", "--no-deps", "--force-recreate", "code-server", timeout=300)

    def failed() -> bool:
        status = stack.sql(f"SELECT status FROM runs WHERE run_id = '{run_id}'", check=False)
        if status == ["SUCCESS"]:
            raise CheckFailed(f"run {run_id} succeeded: it ended before the code server went (run the check again)")
        return status == ["FAILURE"]

    figures = wait_for({f"run {run_id[:8]} FAILURE": failed}, started)
    accounted(stack, "code server recreated during a backfill run", before, figures + " from the recreate")


def down_and_up(stack: Stack) -> None:
    before = stack.stored_minutes()
    stack.run("down", timeout=300)
    moment, started = datetime.now(UTC), time.monotonic()
    stack.run("up", "-d", timeout=900)
    accounted(stack, "down, then up", before, wait_for(recovery(stack, moment), started))


def backup_and_restore(stack: Stack, folder: Path) -> None:
    """The documented backup, the volume removed (a lost disk), then the documented restore."""
    dump = folder / "toplist.dump"
    with dump.open("w") as out:
        stack.run("exec", "-T", "postgres", "pg_dump", "-U", "toplist", "-Fc", "toplist", stdout=out)
    backed_up = stack.stored_minutes()
    stack.run("down", "-v", timeout=300)
    stack.run("up", "-d", "postgres", timeout=300)
    wait_for({"postgres healthy on a new volume": lambda: stack.healthy("postgres")}, time.monotonic())
    stack.run("stop", *APP_SERVICES, timeout=300)
    started = time.monotonic()
    with dump.open() as dumped:
        stack.run("exec", "-T", "postgres", "pg_restore", "-U", "toplist", "-d", "toplist", "--clean", "--if-exists",
                  stdin=dumped, timeout=600)  # fmt: skip
    restored, moment, started = time.monotonic() - started, datetime.now(UTC), time.monotonic()
    stack.run("up", "-d", timeout=900)
    figures = f"{dump.stat().st_size / 2**20:.1f} MiB dump restored in {restored:.0f} s, then after up: "
    figures += wait_for(recovery(stack, moment), started)
    accounted(stack, "backup, volume removed, restore", backed_up, figures)


def report_missed(first: set[str], stack: Stack) -> None:
    """Minutes from the first served one to the last with no snapshot (the faults' windows)."""
    stored = stack.stored_minutes()
    start, end = (datetime.strptime(m, "%Y-%m-%dT%H:%M") for m in (min(first), max(stored)))
    every = {minute_of(start + timedelta(minutes=i)) for i in range(int((end - start).total_seconds() // 60) + 1)}
    missed = sorted(every - stored)
    print(f"minutes {min(first)}..{max(stored)}: {len(every)}, not stored at the end: {len(missed)} {missed}")


def diagnose(stack: Stack) -> None:
    print(stack.run("ps", check=False).stdout, file=sys.stderr)
    for service in SERVICES:
        print(stack.run("logs", "--no-color", "--tail", "30", service, check=False).stdout, file=sys.stderr)


def preflight(stack: Stack) -> None:
    if shutil.which(stack.docker[0]) is None or subprocess.run([*stack.docker, "info"], capture_output=True).returncode:
        raise CheckFailed("no Docker engine answers `docker info` (start one; on a machine without a registry, "
                          "the local-docker kit's engine.sh and standins.sh)")  # fmt: skip
    if shutil.which(stack.compose[0]) is None:
        raise CheckFailed(f"compose command not found: {shlex.join(stack.compose)} (set COMPOSE)")
    env_file = ROOT / ".env"
    if not env_file.exists():
        shutil.copy(ROOT / ".env.example", env_file)
        print("created .env from .env.example (compose reads it)", flush=True)
    values = dotenv.dotenv_values(env_file)
    if values.get("CMC_API_KEY") and values.get("CRYPTOCOMPARE_API_KEY"):
        raise CheckFailed(".env sets both API keys: the check runs on the emulator; unset them for it")


def main() -> None:
    stack = Stack()
    print(f"deploy check: {shlex.join(stack.compose)}, project {stack.project}", flush=True)
    try:
        preflight(stack)
    except CheckFailed as error:
        raise SystemExit(f"deploy check: {error}") from None
    try:
        stack.run("down", "-v", "--remove-orphans", timeout=300)  # what an interrupted check left
        build(stack)
        first = first_minute(stack)
        past_minute(stack)
        process_ends(stack, "api", ["python", "-c", "import os, signal; os.kill(1, signal.SIGTERM)"])
        process_ends(stack, "dagster-daemon", ["python", "-c", "import os, signal; os.kill(1, signal.SIGTERM)"])
        process_ends(stack, "postgres", ["sh", "-c", "kill -QUIT 1"])  # immediate shutdown: recovery at start
        code_server_down_across_a_minute_boundary(stack)
        code_server_recreated_mid_run(stack)
        down_and_up(stack)
        with tempfile.TemporaryDirectory() as folder:
            backup_and_restore(stack, Path(folder))
        report_missed(first, stack)
    except (CheckFailed, subprocess.TimeoutExpired) as error:
        print(f"deploy check FAILED: {error}", file=sys.stderr)
        diagnose(stack)
        raise SystemExit(1) from None
    finally:
        stack.run("down", "-v", "--remove-orphans", check=False, timeout=300)
    print("deploy check passed: nothing lost")


if __name__ == "__main__":
    main()
