"""Live minutes while 1,000 past minutes are requested: publication lag with and without the load.

    .venv/bin/python -m bench.backfill_load

One stack as `make run` starts it (real daemon, the minute schedule, the request sensor, API,
emulator; SQLite). After a warm-up it measures (1) the live minutes' publication lag for
`--baseline` minutes with no request (the no-load baseline, same run), then (2) asks
`GET /?datetime=` for `--requests` distinct past minutes drawn from one day (fixed seed), all at
once, and keeps measuring until every request has ended: that is how long the 1,000 take. It
also reports how phase (2)'s live minutes were fetched (the latest endpoints, not the
historical path a run that started late takes) and how many runs served the requests.
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import func, select

from bench.cpu_budget import LagProbe, emulated_stack, percentile
from scripts.process_tree import exit_on_signals
from warehouse.requests import OPEN, Status
from warehouse.schema import backfill_requests, fetches
from warehouse.store import Warehouse


def keep_probing(probe: LagProbe, seconds: float, until=None, progress=None) -> None:
    deadline, last_report = time.monotonic() + seconds, time.monotonic()
    while time.monotonic() < deadline and not (until and until()):
        probe.poll()
        time.sleep(1)
        if progress and time.monotonic() - last_report >= 30:
            print(progress(), file=sys.stderr, flush=True)
            last_report = time.monotonic()


def summary(lags: list[float]) -> str:
    if not lags:
        return "no minute served"
    return (f"publication lag over {len(lags)} minutes: p50 {statistics.median(lags):.1f} s, "
            f"p95 {percentile(lags, 0.95):.1f} s, max {max(lags):.1f} s  (goal p95 <= 30 s)")  # fmt: skip


def free_port() -> int:
    """A port nobody listens on: a shared machine runs other stacks on the usual ones."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def past_day(count: int, seed: int) -> list[datetime]:
    """`count` distinct minutes of the day that ended two hours ago."""
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    return [end - timedelta(minutes=1 + m) for m in random.Random(seed).sample(range(1440), count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="past minutes to request (default 1000)")
    parser.add_argument("--baseline", type=float, default=5, help="no-load minutes measured first (default 5)")
    parser.add_argument("--warmup", type=float, default=90, help="seconds discarded after start (default 90)")
    parser.add_argument("--timeout", type=float, default=3600, help="give up after this many seconds of load")
    parser.add_argument("--max-gap", type=int, default=None, help="BACKFILL_MAX_GAP_MINUTES for the stack")
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as data:  # run workers may still be exiting
        stack = emulated_stack(data, api_port=free_port(), dagster_port=free_port(), emulator_port=free_port())
        stack.env["BACKFILL_MAX_PENDING"] = str(max(1000, args.requests))
        if args.max_gap is not None:
            stack.env["BACKFILL_MAX_GAP_MINUTES"] = str(args.max_gap)
        api = f"http://127.0.0.1:{stack.api_port}"
        probe = LagProbe(api)
        store = Warehouse(stack.env["DATABASE_URL"])
        try:
            stack.start()
            keep_probing(probe, args.warmup)
            measured = len(probe.lags)
            keep_probing(probe, args.baseline * 60)
            baseline = probe.since(measured)

            measured, load_start, started = len(probe.lags), datetime.now(UTC), time.monotonic()
            targets = [m.strftime("%Y-%m-%dT%H:%MZ") for m in past_day(args.requests, args.seed)]
            with httpx.Client(base_url=api, timeout=30) as client, ThreadPoolExecutor(8) as pool:
                answers = Counter(pool.map(lambda t: client.get("/", params={"datetime": t}).status_code, targets))
            asked = time.monotonic() - started
            assert answers[202] == store.requests.count(OPEN) == args.requests, (answers, "another API answered?")
            keep_probing(probe, args.timeout, until=lambda: store.requests.count(OPEN) == 0,
                         progress=lambda: f"{time.monotonic() - started:.0f} s: {store.requests.count(OPEN)} open, "
                         f"lags {list(probe.lags.values())[-3:]}")  # fmt: skip
            took, load_end = time.monotonic() - started, datetime.now(UTC)
            under_load = probe.since(measured)
            with store.engine.connect() as conn:
                by_status = select(backfill_requests.c.status, func.count()).group_by(backfill_requests.c.status)
                outcomes = dict(conn.execute(by_status).all())
                runs = conn.execute(select(func.count(backfill_requests.c.run_id.distinct()))).scalar()
                live = select(fetches.c.mode, func.count()).where(
                    fetches.c.dataset == "prices", fetches.c.minute >= load_start.replace(second=0, microsecond=0),
                    fetches.c.minute <= load_end,
                )  # fmt: skip
                modes = dict(conn.execute(live.group_by(fetches.c.mode)).all())
        finally:
            probe.client.close()
            stack.stop()

    print(f"no load, baseline:      {summary(baseline)}")
    print(f"during {args.requests} requests: {summary(under_load)}")
    ended = outcomes.get(Status.SUCCEEDED, 0) + outcomes.get(Status.FAILED, 0)
    verdict = "all ended" if ended == args.requests else f"{ended} ended (--timeout reached)"
    print(f"the {args.requests} requests: answers {dict(answers)} in {asked:.1f} s; {verdict} after {took:.0f} s "
          f"({took / 60:.1f} min); outcomes {outcomes}; {runs} runs")  # fmt: skip
    print(f"live minutes during the load, by fetch mode: {modes} (latest = on time, not the historical path)")
    if outcomes.get(Status.FAILED):
        print("some requests failed: see backfill_requests.error")


if __name__ == "__main__":
    with exit_on_signals():  # SIGTERM (`timeout`) stops what it started, as Ctrl-C does
        main()
