"""API throughput and latency of `GET /`, each row against baselines sending the same bytes, in one run.

    apt-get install wrk          # the load generator (Debian package)
    .venv/bin/python -m bench.api_load

The warehouse is filled by a real materialization of the current minute against the emulator,
and every following minute is stored as it begins (as the live pipeline does), so "now" rows
serve the current minute's snapshot. Each row is one request to the real API (JSON and CSV, a
past minute and now, with and without `Accept-Encoding: gzip`, a 304 revalidation, and two rows
with 2 workers). Its answer (status, headers, body) is captured once and replayed by two
baselines on the same server (uvicorn, httptools, uvloop): a raw ASGI callable and a bare
FastAPI route (bench/api_baselines.py, 1 worker; the raw app with 2 workers for the 2-worker
rows), so each row is compared with the same bytes it sends. wrk (`-t1 -c50` by default, on
the same machine) then loads, round after round, each row's baselines and the real route one
after the other. Figures are medians over the rounds; each ratio is taken against the raw
baseline of the same row and round (the machine is shared, so only ratios within a run
compare). Each row also reports the server's CPU time per request (its process group, from
/proc): other tenants' load moves requests/s and p99 a lot, CPU per request much less.
Goal: every real row >= 50% of its raw baseline's requests/s and a p99 <= 2x its p99.
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
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
from scripts.process_tree import ProcessTrees, exit_on_signals
from scripts.run_stack import ROOT, wait_until_up
from warehouse.store import Warehouse

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
GZIP = {"Accept-Encoding": "gzip"}
EMULATOR_PORT = 18766
PORTS = {("raw", 1): 18770, ("bare", 1): 18771, ("real", 1): 18772, ("raw", 2): 18773, ("real", 2): 18774}
ADDED = (b"date", b"server")  # headers each uvicorn adds to an answer itself
GOAL_RPS, GOAL_P99 = 0.5, 2.0


@dataclass(frozen=True)
class Case:
    """One request to the real API (`path` and `headers`), and the baselines that replay its answer."""

    name: str
    key: str  # the captured answer's name in the baselines: they serve it at /<key>?<the same query>
    path: str
    headers: dict[str, str]
    workers: int

    def baselines(self) -> tuple[str, ...]:
        return ("raw", "bare") if self.workers == 1 else ("raw",)


class Answer(NamedTuple):
    status: int
    headers: list[tuple[str, str]]  # latin-1
    body: bytes

    def to_json(self) -> dict:
        """As bench/api_baselines.py loads it."""
        return {"status": self.status, "headers": self.headers, "body": self.body.hex()}


class Figures(NamedTuple):
    rps: float
    p50: float  # ms
    p99: float  # ms
    cpu_us: float  # server CPU per request, microseconds


def this_minute() -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0)


def fill_warehouse(database_url: str, emulator_url: str, minute: datetime) -> None:
    """Materialize one minute through the real pipeline, as its live run does."""
    dg.materialize(
        [fetch_prices_and_rankings, top_assets],
        partition_key=minute.strftime("%Y-%m-%d-%H:%M"),
        resources={
            "cmc": CoinMarketCapResource(api_keys={"CMC_API_KEY": "bench"}, base_url=emulator_url),
            "cryptocompare": CryptoCompareResource(
                api_keys={"CRYPTOCOMPARE_API_KEY": "bench"}, data_api_url=emulator_url, min_api_url=emulator_url
            ),
            "warehouse": WarehouseResource(database_url=database_url),
            "toplist": ToplistConfig(),
        },
    )


class MinuteWriter(threading.Thread):
    """Stores each minute's snapshot as the minute begins, as the live pipeline does: the "now" rows
    serve the current minute (and, in its first seconds, the minute before, as users get it)."""

    def __init__(self, database_url: str, emulator_url: str) -> None:
        super().__init__(name="minute-writer", daemon=True)
        self.database_url, self.emulator_url = database_url, emulator_url
        self.stopped = threading.Event()
        self.lags: list[float] = []  # seconds from each minute's start to its snapshot stored
        self.error: Exception | None = None
        self.stored = this_minute()  # the newest minute stored (main() stores the first)

    def wait_clear_of_stores(self, seconds: float) -> None:
        """Return when a run of `seconds` starting now overlaps no store. A store is a burst of
        CPU in this process; a minute holds about six 10 s runs, a multiple of the three servers of
        a one-worker row, so its bursts would otherwise land in the same server's runs for most of
        the benchmark and bias that server's p99."""
        while self.is_alive():
            minute = this_minute()
            run_ends = datetime.now(UTC) + timedelta(seconds=seconds + 1)
            if self.stored >= minute and run_ends < minute + timedelta(minutes=1):
                return
            time.sleep(0.1)

    def run(self) -> None:
        while True:
            minute = this_minute() + timedelta(minutes=1)
            if self.stopped.wait((minute - datetime.now(UTC)).total_seconds() + 0.1):
                return
            try:
                fill_warehouse(self.database_url, self.emulator_url, minute)
            except Exception as error:  # noqa: BLE001 - reported by main(), after the load
                self.error = error
                return
            self.lags.append((datetime.now(UTC) - minute).total_seconds())
            self.stored = minute


def serve(servers: ProcessTrees, app: str, port: int, workers: int) -> int:
    """Start uvicorn; returns its process group (it and its workers)."""
    server = servers.spawn(sys.executable, "-m", "uvicorn", app, "--port", str(port), "--workers", str(workers),
                           "--no-access-log", "--log-level", "warning")  # fmt: skip
    wait_until_up(f"http://127.0.0.1:{port}/", 30)
    return server.pid  # spawned in a new session: its pid is the group's id


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


def url(case: Case, server: str) -> str:
    """Where `server` ("real", "raw" or "bare") answers the case's request."""
    path = case.path if server == "real" else f"/{case.key}{case.path.removeprefix('/')}"
    return f"http://127.0.0.1:{PORTS[server, case.workers]}{path}"


def wire(url: str, headers: dict[str, str]) -> Answer:
    """(status, headers but Date and Server, which each uvicorn adds itself, the body as sent)."""
    with httpx.Client(headers={"Accept-Encoding": "identity"}) as client:  # wrk asks for no encoding
        response = client.send(client.build_request("GET", url, headers=headers), stream=True)
        body = b"".join(response.iter_raw())
    kept = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw if k.lower() not in ADDED]
    return Answer(response.status_code, kept, body)


def check(case: Case, answer: Answer) -> int:
    """The real answer is what the case's name says and each baseline replays it byte for byte;
    returns the size of the body on the wire."""
    status = 304 if "If-None-Match" in case.headers else 200
    encoding = "gzip" if case.headers.get("Accept-Encoding") == "gzip" and status == 200 else None
    if answer.status != status or dict((k.lower(), v) for k, v in answer.headers).get("content-encoding") != encoding:
        raise RuntimeError(f"{case.name}: {answer.status} {answer.headers}")
    for server in case.baselines():
        if (replayed := wire(url(case, server), case.headers)) != answer:
            raise RuntimeError(f"{case.name}: the {server} baseline sent {replayed[:2]}, not {answer[:2]}")
    return len(answer.body)


def wrk(case: Case, server: str, seconds: int, args: argparse.Namespace, group: int) -> Figures:
    """One wrk run against `server` with the case's request, and the CPU the server's process group spent."""
    cpu = group_cpu_seconds(group)
    headers = [arg for name, value in case.headers.items() for arg in ("-H", f"{name}: {value}")]
    out = subprocess.run(
        ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s", "--latency", *headers,
         url(case, server)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"{case.name} ({server}) answered errors under load:\n{out}")
    cpu = group_cpu_seconds(group) - cpu
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def percentile(p: str) -> float:
        value, unit = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * UNITS[unit]

    return Figures(rps, percentile("50"), percentile("99"), cpu / requests * 1e6)


def past_path(minute: datetime) -> str:
    return f"/?limit=200&datetime={minute.strftime('%Y-%m-%dT%H:%MZ')}"


def cases(minute: datetime, etag: str) -> list[Case]:
    """The real requests measured; `etag` is the past minute's identity JSON's, for the 304 row."""
    past = past_path(minute)
    now = "/?limit=200"
    requests = []
    for fmt, suffix in (("JSON", ""), ("CSV", "&format=csv")):
        for when, path in (("past minute", past), ("now", now)):
            for encoding, headers in (("", {}), (", gzip", GZIP)):
                requests.append((f"{fmt} {when}{encoding}", path + suffix, headers, 1))
    requests += [
        ("304 revalidation (JSON past minute)", past, {"If-None-Match": etag}, 1),
        ("JSON past minute, 2 workers", past, {}, 2),
        ("CSV now, gzip, 2 workers", now + "&format=csv", GZIP, 2),
    ]
    return [Case(name, f"case{i}", path, headers, workers) for i, (name, path, headers, workers) in enumerate(requests)]


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
        env["BENCH_ANSWERS_FILE"] = answers_file = str(Path(data) / "answers.json")
        emulator_url = f"http://127.0.0.1:{EMULATOR_PORT}"
        servers = ProcessTrees(env, quiet=True)
        writer = MinuteWriter(database_url, emulator_url)
        try:
            servers.spawn(sys.executable, "-m", "emulator", "--port", str(EMULATOR_PORT))
            wait_until_up(f"{emulator_url}/_emulator/health", 30)
            Warehouse(database_url).upgrade()
            minute = this_minute()
            fill_warehouse(database_url, emulator_url, minute)
            writer.start()
            groups = {("real", w): serve(servers, "api.main:app", PORTS["real", w], w) for w in (1, 2)}
            past_json = wire(f"http://127.0.0.1:{PORTS['real', 1]}{past_path(minute)}", {})
            rows = cases(minute, etag=dict(past_json.headers)["etag"])
            answers = {case.key: wire(url(case, "real"), case.headers) for case in rows}
            Path(answers_file).write_text(json.dumps({key: answer.to_json() for key, answer in answers.items()}))
            for server, workers in (("raw", 1), ("bare", 1), ("raw", 2)):
                app = "bench.api_baselines:raw_app" if server == "raw" else "bench.api_baselines:fastapi_app"
                groups[server, workers] = serve(servers, app, PORTS[server, workers], workers)
            sizes = {case.name: check(case, answers[case.key]) for case in rows}
            runs = [(case, server) for case in rows for server in (*case.baselines(), "real")]
            for case, server in runs:  # warm caches, the fast path's validated queries and the interpreter
                writer.wait_clear_of_stores(2)
                wrk(case, server, 2, args, groups[server, case.workers])
            results: dict[tuple[str, str], list[Figures]] = {(case.name, server): [] for case, server in runs}
            for _ in range(args.rounds):
                for case, server in runs:
                    writer.wait_clear_of_stores(args.seconds)
                    figures = wrk(case, server, args.seconds, args, groups[server, case.workers])
                    results[case.name, server].append(figures)
        finally:
            writer.stopped.set()
            writer.join()
            servers.stop()
    if writer.error is not None:
        raise RuntimeError('storing the current minute failed: the "now" rows served stand-ins') from writer.error
    report(rows, sizes, results, args, writer.lags)


def report(
    rows: list[Case], sizes: dict[str, int], results: dict[tuple[str, str], list[Figures]], args, lags: list[float]
) -> None:
    print(f"uvicorn {uvicorn.__version__} (httptools, uvloop); wrk -t{args.threads} -c{args.connections}; "
          f"{args.rounds} alternating rounds x {args.seconds} s per server and row; medians; each row against "
          f"baselines replaying its own answer, ratios within the same round")  # fmt: skip
    print(f"{'':44} {'':6} {'req/s':>17} {'':6} {'p99 ms':>17} {'':6} {'CPU us/req':>13} {'bare FastAPI':>15}")
    print(f"{'row':38} {'bytes':>6} {'real':>7} {'raw':>7} {'ratio':>6} {'real':>7} {'raw':>7} {'ratio':>6} "
          f"{'real':>6} {'raw':>6} {'req/s':>7} {'p99':>7}")  # fmt: skip
    for case in rows:
        real, raw = results[case.name, "real"], results[case.name, "raw"]
        rps, p99, cpu = (median(real, field) for field in ("rps", "p99", "cpu_us"))
        raw_rps, raw_p99, raw_cpu = (median(raw, field) for field in ("rps", "p99", "cpu_us"))
        rps_ratio, p99_ratio = ratio(real, raw, "rps"), ratio(real, raw, "p99")
        bare = results.get((case.name, "bare"))
        bare_columns = (
            f"{ratio(bare, raw, 'rps'):7.0%} {ratio(bare, raw, 'p99'):6.2f}x" if bare else f"{'-':>7} {'-':>7}"
        )
        verdict = "meets" if rps_ratio >= GOAL_RPS and p99_ratio <= GOAL_P99 else "MISSES"
        print(f"{case.name:38} {sizes[case.name]:6} {rps:7.0f} {raw_rps:7.0f} {rps_ratio:6.0%} {p99:7.2f} "
              f"{raw_p99:7.2f} {p99_ratio:5.2f}x {cpu:6.1f} {raw_cpu:6.1f} {bare_columns}  {verdict}")  # fmt: skip
    print(f"goal: each real row >= {GOAL_RPS:.0%} of its raw baseline's req/s and p99 <= {GOAL_P99:.0f}x its p99")
    if lags:
        print(f'"now": {len(lags)} minutes stored during the run, {statistics.median(lags):.1f} s after each began '
              f"(median); before that a minute's \"now\" is the minute before")  # fmt: skip


def median(runs: list[Figures], field: str) -> float:
    return statistics.median(getattr(run, field) for run in runs)


def ratio(runs: list[Figures], baseline: list[Figures], field: str) -> float:
    """The median over the rounds of the ratio to the baseline's run in the same round."""
    return statistics.median(getattr(run, field) / getattr(ref, field) for run, ref in zip(runs, baseline, strict=True))


if __name__ == "__main__":
    with exit_on_signals():  # SIGTERM (`timeout`) stops what it started, as Ctrl-C does
        main()
