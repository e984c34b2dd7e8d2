"""CPU of one tick of the backfill request sensor: idle, and reconciling requests in flight.

    .venv/bin/python -m bench.request_sensor

Each tick is evaluated as the code server does it: a fresh context from an instance *ref*, so a
tick that touches `context.instance` pays for building the DagsterInstance, as in production.
Phases: (1) idle: the healing horizon (HEAL_HORIZON_HOURS, 24 h) fully stored, nothing owed (a few
index reads, no instance); (2) `--requests` requested minutes in flight under the runs created for
them (the instance is built and the run records are read by tag).
CPU per minute is the tick's CPU times the ticks a minute (60 / REQUEST_INTERVAL_SECONDS).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta

import dagster as dg

from common.settings import Settings
from crypto_pipeline.definitions import defs
from crypto_pipeline.reconstruction import minutes_in
from crypto_pipeline.sensors import REQUEST_INTERVAL_SECONDS, build_backfill_requests_sensor
from warehouse.publish import Snapshot
from warehouse.requests import RequestPolicy
from warehouse.schema import snapshots
from warehouse.store import Warehouse


def cpu_per_tick(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, ticks: int) -> list[float]:
    spent = []
    for _ in range(ticks):
        context = dg.build_sensor_context(instance_ref=instance.get_ref(), definitions=defs)
        started = time.process_time()
        sensor.evaluate_tick(context)
        spent.append(time.process_time() - started)
    return spent


def store_minutes(store: Warehouse, start: datetime, end: datetime) -> None:
    """Live snapshots of one asset for every minute in [start, end): what the healer reads is the minutes."""
    first = Snapshot(start, 1, 1, 0, "emulated", "coinmarketcap", start, start, live=True)
    rows = [{**vars(first), "minute": m, "cmc_ids": [1], "prices_usd": [1.0], "volumes_24h_usd": [1.0]}
            for m in minutes_in(start, end)]  # fmt: skip
    with store.engine.begin() as conn:
        conn.execute(snapshots.insert(), rows)


def report(name: str, spent: list[float]) -> None:
    per_tick = statistics.median(spent)
    per_minute = per_tick * 60 / REQUEST_INTERVAL_SECONDS
    print(f"{name:<34} {per_tick * 1000:6.1f} ms CPU per tick (median of {len(spent)}), {per_minute:.2f} CPU-s/min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("CMC_API_KEY", "unused")  # creating a run resolves the job's resource config
    os.environ.setdefault("CRYPTOCOMPARE_API_KEY", "unused")
    with tempfile.TemporaryDirectory() as data, dg.instance_for_test(temp_dir=data) as instance:
        url = f"sqlite:///{data}/warehouse.db"
        store = Warehouse(url)
        store.upgrade()
        settings = Settings(_env_file=None, database_url=url)
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        store_minutes(store, now - timedelta(hours=settings.heal_horizon_hours + 1), now)
        sensor = build_backfill_requests_sensor(settings)
        report("idle (24 h stored, nothing owed)", cpu_per_tick(sensor, instance, args.ticks))

        start = now - timedelta(days=2)
        for i in range(args.requests):
            store.requests.ask(start + timedelta(minutes=i), RequestPolicy(max_pending=args.requests))
        first = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
        job = defs.resolve_job_def("backfill_snapshots")
        for request in first.run_requests:  # what the daemon does with them
            instance.create_run_for_job(job, tags={**request.tags, "dagster/run_key": request.run_key},
                                        status=dg.DagsterRunStatus.NOT_STARTED)  # fmt: skip
        in_flight = store.requests.count(["requested", "launched"])
        runs = len(first.run_requests)
        report(f"{in_flight} requests in flight, {runs} runs", cpu_per_tick(sensor, instance, args.ticks))
        print(f"launched now: {store.requests.count(['launched'])} of {in_flight}")


if __name__ == "__main__":
    main()
