"""Steady-state CPU of the whole stack as a ratio to Dagster's own floor, plus publication lag.

    .venv/bin/python -m bench.cpu_budget --minutes 5

Runs, one after the other in the same invocation: (1) `dagster dev` on the trivial code
location in bench/trivial_location.py, (2) the real stack as `make run` starts it (daemon,
code server, runs, idle webserver, API, emulator). For each it discards a warm-up, then reads
machine-wide CPU time from /proc/stat over the measured window and prints CPU-seconds per
minute of wall time. During (2) it polls `GET /?limit=1` once a second until the current
minute's snapshot is served (then waits for the next minute) and records how long after the
minute's start the API first served it. Its own CPU (the polling) is subtracted: the probe is
not part of the stack.

Machine-wide CPU includes other tenants of a shared machine; each phase also reports the CPU of
the stack's own process tree (/proc/<pid>/stat: own time plus reaped children, so run workers
count too), which that noise does not reach.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from scripts.run_stack import ROOT, Stack, stack_environment, wait_until_up

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def busy_cpu_seconds() -> float:
    """Machine-wide non-idle CPU time (user, nice, system, irq, softirq, steal) since boot."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


Processes = dict[int, tuple[int, float]]  # pid -> (parent pid, CPU-seconds)


def process_cpu_seconds() -> Processes:
    """Every process: (parent pid, own CPU + CPU of its reaped children)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        table[int(entry.name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]) / CLOCK_TICKS)
    return table


def tree(table: Processes, roots: list[int]) -> set[int]:
    members, frontier = set(roots) & table.keys(), list(roots)
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in table.items():
            if ppid == parent and pid not in members:
                members.add(pid)
                frontier.append(pid)
    return members


def tree_cpu_seconds(before: Processes, after: Processes, roots: list[int]) -> float:
    """CPU the process tree under `roots` spent between two `process_cpu_seconds()` readings.

    A process that died in between was reaped into its parent's figure with its whole lifetime,
    so its share from before the window is taken off again.
    """
    start, end = tree(before, roots), tree(after, roots)
    spent = sum(after[p][1] - before[p][1] for p in start & end) + sum(after[p][1] for p in end - start)
    return spent - sum(before[p][1] for p in start - end)


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(seconds: float, stack: Stack | None = None, on_tick=None) -> tuple[float, float]:
    """CPU-seconds per minute of wall time over `seconds`: machine-wide less this process's own,
    and the stack's process tree alone (nan without a stack)."""
    roots = [p.pid for p in stack.processes] if stack else []
    cpu0, own0, procs0, wall0 = busy_cpu_seconds(), own_cpu_seconds(), process_cpu_seconds(), time.monotonic()
    while (elapsed := time.monotonic() - wall0) < seconds:
        if on_tick:
            on_tick()
        time.sleep(min(1.0, seconds - elapsed))
    minutes = (time.monotonic() - wall0) / 60
    machine = (busy_cpu_seconds() - cpu0) - (own_cpu_seconds() - own0)
    own_tree = tree_cpu_seconds(procs0, process_cpu_seconds(), roots) if stack else float("nan")
    return machine / minutes, own_tree / minutes


def baseline(minutes: float, warmup: float, port: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "DAGSTER_HOME": home, "PYTHONPATH": str(ROOT)}
        Path(home, "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        stack = Stack(env, with_emulator=False, quiet=True)
        stack.spawn(sys.executable, "-m", "dagster", "dev", "-f", str(ROOT / "bench" / "trivial_location.py"),
                    "-h", "127.0.0.1", "-p", str(port))  # fmt: skip
        try:
            wait_until_up(f"http://127.0.0.1:{port}/server_info", 180)
            time.sleep(warmup)
            return measure(minutes * 60, stack)
        finally:
            stack.stop()


def real_stack(minutes: float, warmup: float) -> tuple[tuple[float, float], list[float]]:
    with tempfile.TemporaryDirectory() as data:
        base = {k: v for k, v in os.environ.items() if k not in ("CMC_API_KEY", "CRYPTOCOMPARE_API_KEY")}
        base.update(DATABASE_URL=f"sqlite:///{data}/warehouse.db", DAGSTER_HOME=f"{data}/dagster")
        env, _ = stack_environment(base, emulator_port=18765)
        stack = Stack(env, with_emulator=True, api_port=16667, dagster_port=13000, emulator_port=18765, quiet=True)
        lags: dict[str, float] = {}
        client = httpx.Client(base_url="http://127.0.0.1:16667", timeout=5)

        def poll() -> None:
            current = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:00Z")
            if current in lags:
                return  # this minute is served; wait for the next one
            try:
                response = client.get("/", params={"limit": 1})
            except httpx.TransportError:
                return
            minute = response.headers.get("x-snapshot-time")
            if response.status_code == 200 and minute and minute not in lags:
                start = datetime.fromisoformat(minute.replace("Z", "+00:00"))
                lags[minute] = (datetime.now(UTC) - start).total_seconds()

        try:
            stack.start()
            measure(warmup, on_tick=poll)
            first_measured = len(lags)
            cpu = measure(minutes * 60, stack, poll)
            return cpu, list(lags.values())[first_measured:]
        finally:
            client.close()
            stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5, help="measured minutes per phase (default 5)")
    parser.add_argument("--warmup", type=float, default=90, help="seconds discarded after start (default 90)")
    args = parser.parse_args()

    idle, _ = measure(20)
    floor, floor_tree = baseline(args.minutes, args.warmup, port=13001)
    (stack, stack_tree), lags = real_stack(args.minutes, args.warmup)
    lags.sort()
    p95 = lags[min(len(lags) - 1, round(0.95 * (len(lags) - 1)))] if lags else float("nan")
    print(f"idle machine:                     {idle:6.2f} CPU-s/min")
    print(f"baseline (trivial dagster dev):   {floor:6.2f} CPU-s/min")
    print(f"real stack (all services):        {stack:6.2f} CPU-s/min")
    print(f"ratio real/baseline:              {stack / floor:6.2f}  (goal <= 1.2)")
    print(f"own process trees only:           {floor_tree:6.2f} vs {stack_tree:.2f} CPU-s/min, "
          f"ratio {stack_tree / floor_tree:.2f}")  # fmt: skip
    print(f"publication lag over {len(lags)} minutes: p50 {statistics.median(lags) if lags else float('nan'):.1f} s, "
          f"p95 {p95:.1f} s, max {max(lags) if lags else float('nan'):.1f} s  (goal p95 <= 30 s)")  # fmt: skip


if __name__ == "__main__":
    main()
