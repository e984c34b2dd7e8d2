"""API throughput and latency for `GET /?limit=200` (JSON and CSV) against a static route.

    apt-get install wrk          # the load generator (Debian package)
    .venv/bin/python -m bench.api_load

The warehouse is filled by a real materialization against the emulator; then one uvicorn
worker serves both `GET /?limit=200` and `/_bench/static`, a pre-rendered body of the same
size in the same app. wrk (50 connections, 2 threads, on the same machine) alternates between
them; the figures are medians over the rounds, and the ratios compare routes of the same run.
Goal: >= 70% of the static route's requests/s and a p99 <= 1.5x its p99.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime

import dagster as dg
import httpx

from crypto_pipeline.assets.top_assets import top_assets
from crypto_pipeline.assets.upstream import fetch_prices_and_rankings
from crypto_pipeline.resources.coinmarketcap import CoinMarketCapResource
from crypto_pipeline.resources.cryptocompare import CryptoCompareResource
from crypto_pipeline.resources.toplist import ToplistConfig
from crypto_pipeline.resources.warehouse import WarehouseResource
from scripts.run_stack import ROOT, Stack, wait_until_up
from warehouse.store import Warehouse

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def fill_warehouse(database_url: str, emulator_url: str) -> None:
    Warehouse(database_url).upgrade()
    minute = datetime.now(UTC).strftime("%Y-%m-%d-%H:%M")
    dg.materialize(
        [fetch_prices_and_rankings, top_assets],
        partition_key=minute,
        resources={
            "cmc": CoinMarketCapResource(api_key="bench", base_url=emulator_url),
            "cryptocompare": CryptoCompareResource(
                api_key="bench", data_api_url=emulator_url, min_api_url=emulator_url
            ),
            "warehouse": WarehouseResource(database_url=database_url),
            "toplist": ToplistConfig(),
        },
    )


def wrk(url: str, seconds: int, connections: int) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) from one wrk run."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in out:
        raise RuntimeError(f"{url} answered errors under load:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def percentile(p: str) -> float:
        value, unit = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * UNITS[unit]

    return rps, percentile("50"), percentile("99")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=15, help="duration of each wrk run (default 15)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per route (default 3)")
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")

    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "LOG_CONSOLE": "false", "API_TOLERANCE_MINUTES": "120"}
        env["DATABASE_URL"] = database_url = f"sqlite:///{data}/warehouse.db"
        emulator = Stack(env, with_emulator=False, quiet=True)
        emulator.spawn(sys.executable, "-m", "emulator", "--port", "18766")
        try:
            wait_until_up("http://127.0.0.1:18766/_emulator/health", 30)
            fill_warehouse(database_url, "http://127.0.0.1:18766")
        finally:
            emulator.stop()

        size_probe = Stack(env, with_emulator=False, api_port=16668, quiet=True)
        size_probe.spawn(sys.executable, "-m", "uvicorn", "api.main:app", "--port", "16668", "--log-level", "warning")
        try:
            wait_until_up("http://127.0.0.1:16668/healthz", 30)
            body_bytes = len(httpx.get("http://127.0.0.1:16668/?limit=200").content)
        finally:
            size_probe.stop()

        env["API_BENCHMARK_BODY_BYTES"] = str(body_bytes)
        server = Stack(env, with_emulator=False, quiet=True)
        server.spawn(sys.executable, "-m", "uvicorn", "api.main:app", "--port", "16669", "--workers", "1",
                     "--no-access-log", "--log-level", "warning")  # fmt: skip
        base = "http://127.0.0.1:16669"
        routes = {"static": "/_bench/static", "json": "/?limit=200", "csv": "/?limit=200&format=csv"}
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in routes}
        try:
            wait_until_up(f"{base}/healthz", 30)
            for path in routes.values():  # warm the caches and the interpreter
                wrk(base + path, 2, args.connections)
            for _ in range(args.rounds):
                for name, path in routes.items():
                    results[name].append(wrk(base + path, args.seconds, args.connections))
        finally:
            server.stop()

    median = {
        name: tuple(statistics.median(run[i] for run in runs) for i in range(3)) for name, runs in results.items()
    }
    static_rps, _, static_p99 = median["static"]
    print(f"body: {body_bytes} bytes (limit=200 JSON); 1 uvicorn worker; wrk -t2 -c{args.connections}, "
          f"{args.rounds} x {args.seconds} s per route, medians")  # fmt: skip
    print(f"{'route':8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs static rps':>14} {'vs static p99':>14}")
    for name, (rps, p50, p99) in median.items():
        print(f"{name:8} {rps:8.0f} {p50:8.2f} {p99:8.2f} {rps / static_rps:13.0%} {p99 / static_p99:13.2f}x")
    print("goal: json and csv >= 70% of static req/s, p99 <= 1.5x static p99")


if __name__ == "__main__":
    main()
