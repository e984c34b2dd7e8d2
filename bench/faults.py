"""Every minute heals: the running stack under ordinary faults, and what each one cost.

    .venv/bin/python -m bench.faults                          # every fault in turn (about 75 min)
    .venv/bin/python -m bench.faults --faults cmc-500,db-hung

Runs `make run`'s stack (scripts/run_stack.Stack, supervised in this process as `make run`
supervises it) on the emulator, the warehouse and Dagster's production instance on a PostgreSQL
cluster of its own (scripts/postgres_cluster), which it stops and hangs. Once minutes are being
published, each fault in turn starts at its second of a minute, so that it spans a minute
boundary, and is cleared; then the benchmark waits until every minute up to the one the fault
was cleared in is published (at most --settle-minutes) before the next. A slot without a fault
comes first: the baseline, measured in the same run.

Meanwhile a client asks the API for a past minute every two seconds. An answer served from another
minute than the one asked (a stand-in) must name the asked minute in X-Owed-Minute, and the request
its X-Owed-Backfill names must exist.

Prints, per fault: the minutes lost at the end (goal 0); the minutes published after the fault
was cleared, and how many of them were fetched again rather than captured live; seconds from
recovery to the last of them (goal ≤ 600); stand-ins served without an owed request (goal 0);
503s; then the runs left non-terminal 15 minutes after they were created (goal 0).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dagster as dg
import httpx
import psutil
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from bench.backfill_memory import free_port
from crypto_pipeline.launcher import live_worker, recorded_worker
from emulator.faults import ENDPOINTS
from scripts.postgres_cluster import Cluster, find_pg_ctl, throwaway_cluster
from scripts.process_tree import exit_on_signals, tree
from scripts.run_stack import (
    DAGSTER_DEV_PARTS,
    PRODUCTION_INSTANCE,
    Stack,
    new_database,
    postgres_instance_env,
    stack_environment,
)
from warehouse.coverage import minute_of, unpublished
from warehouse.schema import ONE_MINUTE, snapshots
from warehouse.store import Warehouse

HEAL_GOAL_SECONDS = 600
STUCK_AFTER = timedelta(minutes=15)  # a run not finished this long after it was created is left hanging
UPSTREAMS = {"cmc": [e for e in ENDPOINTS if e.startswith("cmc_")], "cc": [e for e in ENDPOINTS if e.startswith("cc_")]}
UPSTREAMS["all"] = list(ENDPOINTS)
NON_TERMINAL = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]  # fmt: skip


@dataclass
class Slot:
    """One fault's share of the run: the minutes from the end of the slot before to the one it was
    cleared in, and what the probe saw meanwhile."""

    fault: str
    first: datetime
    started: datetime | None = None
    cleared: datetime | None = None
    note: str = ""
    answers: Counter = field(default_factory=Counter)

    @property
    def last(self) -> datetime:
        return minute_of(self.cleared)


class Bench:
    """The running stack and its parts, as the faults reach them."""

    def __init__(self, stack: Stack, cluster: Cluster, store: Warehouse, home: str) -> None:
        self.stack, self.cluster, self.store, self.home = stack, cluster, store, home
        self.api = f"http://127.0.0.1:{stack.api_port}"
        self.emulator = stack.env["EMULATOR_URL"].rstrip("/")
        self.slots: list[Slot] = []

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(self.home)

    def dagster_part(self, part: str) -> psutil.Process:
        """The running process of `dagster dev`'s `part` (daemon, webserver, code server)."""
        mark = DAGSTER_DEV_PARTS[part]
        for process in tree([self.stack.component("dagster dev").process.pid]):
            try:
                if mark in " ".join(process.cmdline()[1:5]):
                    return process
            except psutil.Error:
                continue
        raise LookupError(f"no {part} runs in dagster dev's tree")

    def restarted_dagster(self, restarts: int, since: float, timeout: float = 300) -> float:
        """Seconds from `since` until the supervisor has restarted `dagster dev` (it had restarted it
        `restarts` times before) and it answers again."""
        component = self.stack.component("dagster dev")
        deadline = time.monotonic() + timeout
        while not (component.restarts > restarts and component.up and component.restart_at is None):
            if time.monotonic() > deadline:
                raise TimeoutError(f"dagster dev not restarted and back within {timeout:.0f} s")
            time.sleep(1)
        return time.monotonic() - since

    def set_faults(self, upstream: str, kind: str | None, **options) -> None:
        spec = {endpoint: {"kind": kind, **options} for endpoint in UPSTREAMS[upstream]} if kind else {}
        httpx.put(f"{self.emulator}/_emulator/faults", json=spec, timeout=5).raise_for_status()


# The faults: each injects, waits for what clears it, and may say what it saw. -------------------


def no_fault(bench: Bench) -> str:
    time.sleep(60)
    return ""


def database_stopped(bench: Bench) -> str:
    bench.cluster.stop()
    time.sleep(85)
    bench.cluster.start()
    return "pg_ctl stop -m fast, 85 s, start"


def database_hung(bench: Bench) -> str:
    processes = bench.cluster.processes()
    for process in processes:
        process.suspend()
    time.sleep(80)
    for process in processes:
        process.resume()
    return f"SIGSTOP to {len(processes)} server processes, 80 s, SIGCONT"


def killed(part: str, signum: int = signal.SIGKILL) -> Callable[[Bench], str]:
    def fault(bench: Bench) -> str:
        since, restarts = time.monotonic(), bench.stack.component("dagster dev").restarts
        bench.dagster_part(part).send_signal(signum)
        back = bench.restarted_dagster(restarts, since)
        return f"{signal.Signals(signum).name}; dagster dev restarted, back {back:.0f} s later"

    return fault


def run_worker_killed(bench: Bench) -> str:
    """kill -9 of the first started run's worker, then how long until Dagster says it failed."""
    deadline = time.monotonic() + 50
    with bench.instance() as instance:
        while time.monotonic() < deadline:
            for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
                if (recorded := recorded_worker(instance, run.run_id)) and (worker := live_worker(*recorded)):
                    worker.kill()
                    return f"{run.job_name} run {run.run_id[:8]}: {run_ended(instance, run.run_id)}"
            time.sleep(0.5)
    raise TimeoutError("no run started within 50 s")


def run_ended(instance: dg.DagsterInstance, run_id: str, timeout: float = 300) -> str:
    since = time.monotonic()
    while (run := instance.get_run_by_id(run_id)).status in NON_TERMINAL:
        if time.monotonic() - since > timeout:
            return f"still {run.status.value} after {timeout:.0f} s"
        time.sleep(1)
    return f"{run.status.value} {time.monotonic() - since:.0f} s after the kill"


def upstream(upstream: str, kind: str, **options) -> Callable[[Bench], str]:
    def fault(bench: Bench) -> str:
        bench.set_faults(upstream, kind, **options)
        time.sleep(60)
        bench.set_faults(upstream, None)
        return f"{kind} on every {upstream} endpoint for 60 s"

    return fault


# name: (the second of the minute it starts at, the fault)
FAULTS: dict[str, tuple[int, Callable[[Bench], str]]] = {
    "none": (30, no_fault),
    "db-stopped": (30, database_stopped),
    "db-hung": (30, database_hung),
    "daemon-killed": (50, killed("daemon")),
    "run-worker-killed": (1, run_worker_killed),
    "code-server-killed": (50, killed("code server")),
    "code-server-restarted": (50, killed("code server", signal.SIGTERM)),
    "cmc-500": (50, upstream("cmc", "server_error")),
    "cc-malformed": (50, upstream("cc", "malformed")),
    "cmc-truncated": (50, upstream("cmc", "truncated")),
    "cmc-429": (50, upstream("cmc", "rate_limited")),
    "upstream-slow": (50, upstream("all", "timeout", timeout_seconds=30)),
}


# The client asking for past minutes. ---------------------------------------------------------------


def probe(bench: Bench, stopping: threading.Event) -> None:
    """Ask for a past minute every two seconds (half of them in the current slot) and count the answers."""
    rng = random.Random(0)
    with httpx.Client(base_url=bench.api, timeout=10) as client:
        while not stopping.wait(2):
            slot = bench.slots[-1]
            since = slot.first if rng.random() < 0.5 else bench.slots[0].first
            latest = minute_of(datetime.now(UTC)) - ONE_MINUTE
            if latest < since:
                continue
            asked = since + rng.randrange((latest - since) // ONE_MINUTE + 1) * ONE_MINUTE
            slot.answers[classify(client, asked)] += 1


def classify(client: httpx.Client, asked: datetime) -> str:
    try:
        answer = client.get("/", params={"datetime": asked.strftime("%Y-%m-%dT%H:%MZ"), "limit": 10})
    except httpx.TransportError:
        return "no answer"
    if answer.status_code != 200:
        return str(answer.status_code)
    if answer.headers["x-snapshot-time"] == asked.strftime("%Y-%m-%dT%H:%M:00Z"):
        return "200"
    owed = answer.headers.get("x-owed-minute") == asked.strftime("%Y-%m-%dT%H:%M:00Z")
    if not owed or client.get(answer.headers["x-owed-backfill"]).status_code == 404:
        return "stand-in not owed"
    return "stand-in owed"


# The run. ----------------------------------------------------------------------------------------------


def until_second(second: int) -> None:
    """Sleep until the clock is at `second` of a minute (the next time it is, at least 5 s away)."""
    now = time.time()
    wait = (second - now % 60) % 60
    time.sleep(wait if wait >= 5 else wait + 60)


def retried(read: Callable, attempts: int = 60):
    """`read` of the warehouse, retried while the database does not answer yet."""
    for _ in range(attempts - 1):
        try:
            return read()
        except OperationalError:
            time.sleep(2)
    return read()


def run_slot(bench: Bench, slot: Slot, settle: timedelta) -> None:
    second, fault = FAULTS[slot.fault]
    until_second(second)
    slot.started = datetime.now(UTC)
    slot.note = fault(bench)
    slot.cleared = datetime.now(UTC)
    deadline = slot.cleared + settle
    while datetime.now(UTC) < deadline:
        owed = retried(lambda: unpublished(bench.store, slot.first, slot.last + ONE_MINUTE))
        if not owed and datetime.now(UTC) > slot.cleared + timedelta(seconds=30):
            break
        time.sleep(5)
    print(f"{datetime.now(UTC):%H:%M:%S} {slot.fault}: cleared {slot.cleared:%H:%M:%S} ({slot.note})", flush=True)


def stored(store: Warehouse, first: datetime, last: datetime) -> dict[datetime, tuple[datetime, bool]]:
    query = select(snapshots.c.minute, snapshots.c.created_at, snapshots.c.live).where(
        snapshots.c.minute.between(first, last)
    )
    return {row.minute: (row.created_at, row.live) for row in store.read(lambda conn: conn.execute(query))}


COLUMNS = ("minutes", "lost", "after", "again", "heal s", "owed", "unowed", "202", "503", "other")
COUNTED = ("stand-in owed", "stand-in not owed", "202", "503")


def report(bench: Bench) -> None:
    now = datetime.now(UTC)
    with bench.instance() as instance:
        hanging = instance.get_runs(dg.RunsFilter(statuses=NON_TERMINAL, created_before=now - STUCK_AFTER))
    print(f"\n{'fault':22}" + "".join(f"{name:>8}" for name in COLUMNS) + "  what happened")
    for slot in bench.slots:
        late = {m: v for m, v in stored(bench.store, slot.first, slot.last).items() if v[0] > slot.cleared}
        figures = (
            (slot.last - slot.first) // ONE_MINUTE + 1,
            len(unpublished(bench.store, slot.first, slot.last + ONE_MINUTE)),
            len(late),
            sum(1 for _, live in late.values() if not live),
            round(max(((created - slot.cleared).total_seconds() for created, _ in late.values()), default=0)),
            *(slot.answers[kind] for kind in COUNTED),
            sum(n for kind, n in slot.answers.items() if kind not in ("200", *COUNTED)),
        )
        print(f"{slot.fault:22}" + "".join(f"{figure:>8}" for figure in figures) + f"  {slot.note}")
    print(f"\nruns left non-terminal {STUCK_AFTER.seconds // 60} min after they were created: {len(hanging)} (goal 0)")
    for run in hanging:
        print(f"  {run.run_id} {run.job_name} {run.status.value}")
    print(
        f"Goals: lost 0, heal s ≤ {HEAL_GOAL_SECONDS}, unowed 0. Per slot: its minutes; those lost at the end; "
        "those published after the fault was cleared, and of them the ones fetched again (not captured "
        "live); seconds from clearing to the last of them; the probe's answers: stand-ins that owe the asked "
        "minute, stand-ins that do not, 202s (nothing stored near), 503s, anything else."
    )
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--faults",
        default=",".join(f for f in FAULTS if f != "none"),
        help=f"comma-separated, in order, from: {', '.join(f for f in FAULTS if f != 'none')}",
    )
    parser.add_argument("--settle-minutes", type=float, default=12, help="longest wait for a fault's minutes")
    args = parser.parse_args()  # fmt: skip
    chosen = ["none", *args.faults.split(",")]
    if unknown := [name for name in chosen if name not in FAULTS]:
        parser.error(f"unknown fault {', '.join(unknown)}")
    if not (pg_ctl := find_pg_ctl()):
        parser.error("no pg_ctl: install PostgreSQL's server (Debian: postgresql)")
    with exit_on_signals(), ExitStack() as cleanup:
        data = tempfile.mkdtemp(prefix="bench-faults-")  # kept: the stack's logs are read after a bad run
        cluster = cleanup.enter_context(throwaway_cluster(pg_ctl, free_port()))
        database_url = cleanup.enter_context(new_database(cluster.url, "toplist"))
        home = os.path.join(data, "dagster")
        os.makedirs(home)
        shutil.copy(PRODUCTION_INSTANCE, os.path.join(home, "dagster.yaml"))
        instance_env = postgres_instance_env(database_url)
        os.environ.update(instance_env)  # this process reads the same instance (runs, their workers)
        base = {k: v for k, v in os.environ.items() if k not in ("CMC_API_KEY", "CRYPTOCOMPARE_API_KEY")}
        base.update(DATABASE_URL=database_url, DAGSTER_HOME=home, EMULATOR_URL=f"http://127.0.0.1:{free_port()}",
                    LOG_FILE=os.path.join(data, "logs", "{pid}.log"), **instance_env)  # fmt: skip
        env, _ = stack_environment(base)
        stack = Stack(env, with_emulator=True, api_port=free_port(), dagster_port=free_port(), quiet=True)
        cleanup.callback(stack.stop)
        stack.start()
        stopping = threading.Event()
        cleanup.callback(stopping.set)
        threading.Thread(target=stack.supervise, args=(stopping,), daemon=True).start()
        bench = Bench(stack, cluster, Warehouse(database_url), home)
        print(f"{datetime.now(UTC):%H:%M:%S} stack up (API {bench.api}, logs in {data}/logs); waiting for two "
              "live minutes", flush=True)  # fmt: skip
        while len(stored(bench.store, datetime.now(UTC) - timedelta(minutes=5), datetime.now(UTC))) < 2:
            time.sleep(5)
        first = minute_of(datetime.now(UTC))
        for name in chosen:
            bench.slots.append(Slot(name, first))
            if len(bench.slots) == 1:
                threading.Thread(target=probe, args=(bench, stopping), daemon=True).start()
            run_slot(bench, bench.slots[-1], timedelta(minutes=args.settle_minutes))
            first = bench.slots[-1].last + ONE_MINUTE
        report(bench)


if __name__ == "__main__":
    main()
