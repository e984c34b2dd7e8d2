"""API throughput and latency of `GET /` against a raw ASGI app serving the same bytes, in one run.

    apt-get install wrk          # the load generator (Debian package)
    .venv/bin/python -m bench.api_load

The warehouse is filled by a real materialization of the current minute against the emulator.
The real API then answers `GET /?limit=200&datetime=<that minute>`; its answer (headers and
body) is captured and replayed by two baselines on the same server (uvicorn, httptools, uvloop,
one worker): a raw ASGI callable and a bare FastAPI route (bench/api_baselines.py). wrk
(`-t1 -c50` by default, on the same machine) then loads, round after round in alternation: the
two baselines and the real routes (JSON and CSV, a past minute and now, with and without
`Accept-Encoding: gzip`, and a 304 revalidation), then the raw app and the real routes with 2
workers each. Figures are medians over the rounds; each ratio is taken against the raw app of
the same round (the machine is shared, so only ratios within a run compare). Each row also
reports the server's CPU time per request (its process group, from /proc): other tenants'
load moves requests/s and p99 a lot, CPU per request much less.
Goal: every real route >= 50% of the raw app's requests/s and a p99 <= 2x its p99.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import dagster as dg
import httpx
import uvicorn

from crypto_pipeline.assets.top_assets import top_assets
from crypto_pipeline.assets.upstream import fetch_prices_and_rankings
from crypto_pipeline.resources.coinmarketcap import CoinMarketCapResource
from crypto_pipeline.resources.cryptocompare import CryptoCompareResource
from crypto_pipeline.resources.toplist import ToplistConfig
from crypto_pipeline.resources.warehouse import WarehouseResource
from scripts.run_stack import ROOT, Stack, wait_until_up
from warehouse.store import Warehouse

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
GZIP = {"Accept-Encoding": "gzip"}
EMULATOR_PORT, RAW, BARE, API, RAW_2, API_2 = 18766, 18770, 18771, 18772, 18773, 18774
GOAL_RPS, GOAL_P99 = 0.5, 2.0


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    path: str
    headers: dict[str, str]
    baseline: str  # the raw app this row is compared with


class Figures(NamedTuple):
    rps: float
    p50: float  # ms
    p99: float  # ms
    cpu_us: float  # server CPU per request, microseconds


def fill_warehouse(database_url: str, emulator_url: str) -> datetime:
    """Materialize the current minute through the real pipeline; returns that minute."""
    Warehouse(database_url).upgrade()
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    dg.materialize(
        [fetch_prices_and_rankings, top_assets],
        partition_key=minute.strftime("%Y-%m-%d-%H:%M"),
        resources={
            "cmc": CoinMarketCapResource(api_key="bench", base_url=emulator_url),
            "cryptocompare": CryptoCompareResource(
                api_key="bench", data_api_url=emulator_url, min_api_url=emulator_url
            ),
            "warehouse": WarehouseResource(database_url=database_url),
            "toplist": ToplistConfig(),
        },
    )
    return minute


def serve(servers: Stack, app: str, port: int, workers: int) -> int:
    """Start uvicorn; returns its process group (it and its workers)."""
    servers.spawn(sys.executable, "-m", "uvicorn", app, "--port", str(port), "--workers", str(workers),
                  "--no-access-log", "--log-level", "warning")  # fmt: skip
    wait_until_up(f"http://127.0.0.1:{port}/", 30)
    return servers.processes[-1].pid  # spawned in a new session: its pid is the group's id


def group_cpu_seconds(group: int) -> float:
    """User and system CPU of every live process in a process group."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process has gone
            continue
        if int(fields[2]) == group:
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def capture(url: str, path: Path) -> None:
    """The real answer, byte for byte, for the baselines to replay (the Date header is the server's)."""
    response = httpx.get(url, headers={"Accept-Encoding": "identity"})
    response.raise_for_status()
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw if k.lower() != b"date"]
    path.write_text(json.dumps({"status": response.status_code, "headers": headers, "body": response.content.hex()}))


def check(target: Target) -> int:
    """The target answers what its name says; returns the size of the body on the wire."""
    with httpx.Client(headers={"Accept-Encoding": "identity"}) as client:
        request = client.build_request("GET", f"http://127.0.0.1:{target.port}{target.path}", headers=target.headers)
        response = client.send(request, stream=True)
        body = b"".join(response.iter_raw())
    expected = 304 if "If-None-Match" in target.headers else 200
    encoding = "gzip" if target.headers.get("Accept-Encoding") == "gzip" and expected == 200 else None
    if response.status_code != expected or response.headers.get("content-encoding") != encoding:
        raise RuntimeError(f"{target.name}: {response.status_code} {response.headers}")
    return len(body)


def wrk(target: Target, seconds: int, threads: int, connections: int, group: int) -> Figures:
    """One wrk run, and the CPU the server's process group spent meanwhile."""
    cpu = group_cpu_seconds(group)
    headers = [arg for name, value in target.headers.items() for arg in ("-H", f"{name}: {value}")]
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", *headers,
         f"http://127.0.0.1:{target.port}{target.path}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"{target.name} answered errors under load:\n{out}")
    cpu = group_cpu_seconds(group) - cpu
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def percentile(p: str) -> float:
        value, unit = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * UNITS[unit]

    return Figures(rps, percentile("50"), percentile("99"), cpu / requests * 1e6)


def targets(minute: datetime, etag: str) -> list[Target]:
    past = f"/?limit=200&datetime={minute.strftime('%Y-%m-%dT%H:%MZ')}"
    now = "/?limit=200"
    rows = [
        Target("raw ASGI app, same bytes", RAW, "/", {}, "raw"),
        Target("bare FastAPI route, same bytes", BARE, "/", {}, "raw"),
    ]
    for fmt, suffix in (("JSON", ""), ("CSV", "&format=csv")):
        for when, path in (("past minute", past), ("now", now)):
            rows.append(Target(f"{fmt} {when}", API, path + suffix, {}, "raw"))
            rows.append(Target(f"{fmt} {when}, gzip", API, path + suffix, GZIP, "raw"))
    rows.append(Target("304 revalidation (JSON past minute)", API, past, {"If-None-Match": etag}, "raw"))
    rows += [
        Target("raw ASGI app, 2 workers", RAW_2, "/", {}, "raw, 2 workers"),
        Target("JSON past minute, 2 workers", API_2, past, {}, "raw, 2 workers"),
        Target("CSV now, gzip, 2 workers", API_2, now + "&format=csv", GZIP, "raw, 2 workers"),
    ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")

    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "LOG_CONSOLE": "false", "API_TOLERANCE_MINUTES": "120"}
        env["DATABASE_URL"] = database_url = f"sqlite:///{data}/warehouse.db"
        env["BENCH_ANSWER_FILE"] = answer_file = str(Path(data) / "answer.json")
        emulator = Stack(env, with_emulator=False, quiet=True)
        emulator.spawn(sys.executable, "-m", "emulator", "--port", str(EMULATOR_PORT))
        try:
            wait_until_up(f"http://127.0.0.1:{EMULATOR_PORT}/_emulator/health", 30)
            minute = fill_warehouse(database_url, f"http://127.0.0.1:{EMULATOR_PORT}")
        finally:
            emulator.stop()

        servers = Stack(env, with_emulator=False, quiet=True)
        try:
            groups = {API: serve(servers, "api.main:app", API, 1), API_2: serve(servers, "api.main:app", API_2, 2)}
            past = f"http://127.0.0.1:{API}/?limit=200&datetime={minute.strftime('%Y-%m-%dT%H:%MZ')}"
            capture(past, Path(answer_file))
            etag = httpx.get(past, headers={"Accept-Encoding": "identity"}).headers["etag"]
            groups[RAW] = serve(servers, "bench.api_baselines:raw_app", RAW, 1)
            groups[BARE] = serve(servers, "bench.api_baselines:fastapi_app", BARE, 1)
            groups[RAW_2] = serve(servers, "bench.api_baselines:raw_app", RAW_2, 2)
            rows = targets(minute, etag)
            sizes = {row.name: check(row) for row in rows}
            for row in rows:  # warm caches, the fast path's validated queries and the interpreter
                wrk(row, 2, args.threads, args.connections, groups[row.port])
            results: dict[str, list[Figures]] = {row.name: [] for row in rows}
            for _ in range(args.rounds):
                for row in rows:
                    results[row.name].append(wrk(row, args.seconds, args.threads, args.connections, groups[row.port]))
        finally:
            servers.stop()
    report(rows, sizes, results, args)


def report(rows: list[Target], sizes: dict[str, int], results: dict[str, list[Figures]], args) -> None:
    baselines = {row.baseline: results[row.name] for row in rows if row.port in (RAW, RAW_2)}
    print(f"uvicorn {uvicorn.__version__} (httptools, uvloop); wrk -t{args.threads} -c{args.connections}; "
          f"{args.rounds} alternating rounds x {args.seconds} s per row; medians; ratios against the raw app "
          f"of the same round")  # fmt: skip
    print(f"{'route':38} {'bytes':>6} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/req':>10} "
          f"{'req/s vs raw':>12} {'p99 vs raw':>10} {'CPU vs raw':>10}")  # fmt: skip
    for row in rows:
        runs, base = results[row.name], baselines[row.baseline]
        rps, p50, p99, cpu = (statistics.median(run[i] for run in runs) for i in range(4))
        rps_ratio = statistics.median(run.rps / ref.rps for run, ref in zip(runs, base, strict=True))
        p99_ratio = statistics.median(run.p99 / ref.p99 for run, ref in zip(runs, base, strict=True))
        cpu_ratio = statistics.median(run.cpu_us / ref.cpu_us for run, ref in zip(runs, base, strict=True))
        verdict = (
            "" if row.port in (RAW, RAW_2) else "meets" if rps_ratio >= GOAL_RPS and p99_ratio <= GOAL_P99 else "MISSES"
        )
        print(f"{row.name:38} {sizes[row.name]:6} {rps:7.0f} {p50:7.2f} {p99:7.2f} {cpu:10.1f} "
              f"{rps_ratio:12.0%} {p99_ratio:9.2f}x {cpu_ratio:9.2f}x  {verdict}")  # fmt: skip
    print(f"goal: real routes >= {GOAL_RPS:.0%} of the raw app's req/s and p99 <= {GOAL_P99:.0f}x its p99")


if __name__ == "__main__":
    main()
