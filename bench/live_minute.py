"""What one live minute costs: publication time and CMC credits, against the emulator.

    .venv/bin/python -m bench.live_minute --runs 7 --latency-ms 150

Materializes the current minute (the `minute_snapshot` assets, in process, on a fresh SQLite
warehouse) `--runs` times against an emulator that adds `--latency-ms` to every upstream call
(loopback answers in ~1 ms; real upstreams take a few hundred). Prints, as medians: the fetch
step's wall time, the time from run start until `top_assets` is published, and the CMC credits
the `prices` materialization reported (`cmc_credits`). Run it on two checkouts to compare.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime

import dagster as dg
import httpx

from crypto_pipeline.assets.top_assets import top_assets
from crypto_pipeline.assets.upstream import fetch_prices_and_rankings
from crypto_pipeline.resources.coinmarketcap import CoinMarketCapResource
from crypto_pipeline.resources.cryptocompare import CryptoCompareResource
from crypto_pipeline.resources.toplist import ToplistConfig
from crypto_pipeline.resources.warehouse import WarehouseResource
from scripts.process_tree import ProcessTrees, exit_on_signals
from warehouse.store import Warehouse


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--latency-ms", type=int, default=150)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    processes = ProcessTrees(dict(os.environ), quiet=True)
    processes.spawn(sys.executable, "-m", "emulator", "--port", str(port), "--latency-ms", str(args.latency_ms))
    fetch_s, publish_s, credits = [], [], []
    try:
        for _ in range(100):
            try:
                httpx.get(f"{url}/_emulator/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        with tempfile.TemporaryDirectory() as data, dg.DagsterInstance.ephemeral() as instance:
            database_url = f"sqlite:///{data}/warehouse.db"
            Warehouse(database_url).upgrade()
            resources = {
                "cmc": CoinMarketCapResource(api_keys={"CMC_API_KEY": "bench"}, base_url=url),
                "cryptocompare": CryptoCompareResource(
                    api_keys={"CRYPTOCOMPARE_API_KEY": "bench"}, data_api_url=url, min_api_url=url
                ),
                "warehouse": WarehouseResource(database_url=database_url),
                "toplist": ToplistConfig(),
            }
            for _ in range(args.runs):
                minute = datetime.now(UTC).strftime("%Y-%m-%d-%H:%M")
                started = time.time()
                result = dg.materialize(
                    [fetch_prices_and_rankings, top_assets], partition_key=minute, resources=resources,
                    instance=instance,
                )  # fmt: skip
                steps = {
                    (e.step_key, e.dagster_event.event_type_value): e.timestamp
                    for e in instance.all_logs(result.run_id)
                    if e.dagster_event is not None
                }
                fetch = "fetch_prices_and_rankings"
                fetch_s.append(steps[(fetch, "STEP_SUCCESS")] - steps[(fetch, "STEP_START")])
                publish_s.append(steps[("top_assets", "STEP_SUCCESS")] - started)
                prices = next(m for m in result.get_asset_materialization_events() if m.asset_key.path == ["prices"])
                credits.append(prices.materialization.metadata["cmc_credits"].value)
    finally:
        processes.stop()
    print(f"runs={args.runs} latency_ms={args.latency_ms}")
    print(f"fetch step   median {statistics.median(fetch_s):.2f} s  (min {min(fetch_s):.2f}, max {max(fetch_s):.2f})")
    print(f"published    median {statistics.median(publish_s):.2f} s after the run call (min {min(publish_s):.2f})")
    print(f"cmc_credits  per minute {sorted(set(credits))}")


if __name__ == "__main__":
    with exit_on_signals():  # SIGTERM (`timeout`) stops what it started, as Ctrl-C does
        main()
