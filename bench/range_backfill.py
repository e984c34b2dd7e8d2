"""A range backfilled as the UI launches it, on `make run`'s stack: peak memory of every process.

    .venv/bin/python -m bench.range_backfill [--days 30] [--ending-days-ago 8]

Starts the stack as `make run` does (emulator, `dagster dev` with the minute schedule on, the
API) on a fresh SQLite warehouse and local instance, then launches a backfill of the three
assets through `dagster dev`'s GraphQL API (`launchPartitionBackfill`, a partition range per
asset; the UI's *Materialize* dialog sends the same range as its partition names). The daemon
runs it as runs of at most a day (`BackfillPolicy.multi_run`). Every second it reads the peak
RSS (`VmHWM`) of every process of the stack, run workers included, until the backfill ends;
then prints the highest per kind of process, the wall time, and how many of the range's
minutes were stored (it exits non-zero unless all were). A worker's last second before it
exits is not sampled. Goal: a 30-day range under
500 MB in every process.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import func, select

from bench.backfill_memory import free_port, key
from scripts.process_tree import exit_on_signals
from scripts.run_stack import ROOT, Stack
from warehouse.schema import snapshots
from warehouse.store import Warehouse

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } }
}"""
RUNS = """
query Runs($id: String!) {
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
    ... on Runs { results { status tags { key value } } }
  }
}"""
KINDS = [("api.main", "API"), ("emulator", "emulator"), ("_daemon", "daemon"), ("webserver", "webserver"),
         ("code-server", "code server"), ("api grpc", "code server"), ("spawn_main", "run worker"),
         ("resource_tracker", "resource tracker"), ("dagster dev", "dagster dev")]  # fmt: skip


def kind_of(command: str) -> str:
    return next((kind for marker, kind in KINDS if marker in command), " ".join(command.split()[1:4])[:40])


def stack_processes(sessions: set[int]) -> dict[int, tuple[str, int]]:
    """{pid: (kind, peak RSS in KB)} of every process in the stack's sessions."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            session = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3])
            if session not in sessions:
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (entry / "status").read_text()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        peak = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
        found[int(entry.name)] = (kind_of(command), peak)
    return found


def graphql(client: httpx.Client, query: str, **variables) -> dict:
    reply = client.post("/graphql", json={"query": query, "variables": variables}, timeout=120)
    reply.raise_for_status()
    body = reply.json()
    if body.get("errors"):
        raise RuntimeError(body["errors"])
    return body["data"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=float, default=30, help="length of the range")
    parser.add_argument("--ending-days-ago", type=float, default=8, help="where the range ends")
    args = parser.parse_args()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    last = now - timedelta(days=args.ending_days_ago)
    first = last - timedelta(days=args.days) + timedelta(minutes=1)
    with tempfile.TemporaryDirectory() as data:
        env = {k: v for k, v in os.environ.items() if k not in ("CMC_API_KEY", "CRYPTOCOMPARE_API_KEY")}
        env.update(PYTHONPATH=str(ROOT), DAGSTER_HOME=data, DATABASE_URL=f"sqlite:///{data}/warehouse.db",
                   EMULATOR_URL=f"http://127.0.0.1:{free_port()}", LOG_CONSOLE="false",
                   HISTORY_START=(first - timedelta(days=1)).strftime("%Y-%m-%dT%H:%MZ"))  # fmt: skip
        stack = Stack(env, with_emulator=True, api_port=free_port(), dagster_port=free_port(), quiet=True)
        peaks: dict[int, tuple[str, int]] = {}
        try:
            stack.start()
            sessions = {process.pid for process in stack.processes}
            partitions = {"range": {"start": key(first), "end": key(last)}}
            params = {"partitionsByAssets": [{"assetKey": {"path": [name]}, "partitions": partitions}
                                             for name in ("prices", "rankings", "top_assets")]}  # fmt: skip
            with httpx.Client(base_url=f"http://127.0.0.1:{stack.dagster_port}") as client:
                started = time.monotonic()
                launched = graphql(client, LAUNCH, params=params)["launchPartitionBackfill"]
                if "backfillId" not in launched:
                    raise RuntimeError(f"the backfill was not launched: {launched}")
                backfill = launched["backfillId"]
                print(f"backfill {backfill}: {key(first)}...{key(last)} ({args.days:g} days)", flush=True)
                status, checked = "REQUESTED", 0.0
                while status in ("REQUESTED", "CANCELING", "FAILING"):  # the others are final
                    for pid, (kind, peak) in stack_processes(sessions).items():
                        known, highest = peaks.get(pid, (kind, 0))  # an exiting process has no cmdline
                        peaks[pid] = (known or kind, max(peak, highest))
                    if time.monotonic() - checked > 15:
                        status = graphql(client, STATUS, id=backfill)["partitionBackfillOrError"]["status"]
                        checked = time.monotonic()
                    time.sleep(1)
                wall = time.monotonic() - started
                runs = graphql(client, RUNS, id=backfill)["runsOrError"]["results"]
            minutes = int((last - first) / timedelta(minutes=1)) + 1
            in_range = snapshots.c.minute.between(first, last)
            with Warehouse(env["DATABASE_URL"]).engine.connect() as conn:
                stored = conn.execute(select(func.count()).select_from(snapshots).where(in_range)).scalar()
        finally:
            stack.stop()
    by_kind = defaultdict(list)
    for kind, peak in peaks.values():
        by_kind[kind].append(peak)
    statuses = defaultdict(int)
    for run in runs:
        statuses[run["status"]] += 1
    print(f"backfill {status} after {wall / 60:.1f} min: {len(runs)} runs ({dict(statuses)}), "
          f"{stored:,} of {minutes:,} minutes stored")  # fmt: skip
    for kind, values in sorted(by_kind.items()):
        print(f"  {kind:<12} {len(values):>4} processes   highest peak RSS {max(values) / 1024:6.0f} MB")
    print("goal: a 30-day range under 500 MB in every process")
    if status != "COMPLETED_SUCCESS" or stored != minutes:
        sys.exit("the backfill did not store every minute: the figures above are not the goal's")


if __name__ == "__main__":
    with exit_on_signals():  # SIGTERM (`timeout`) stops what it started, as Ctrl-C does
        main()
