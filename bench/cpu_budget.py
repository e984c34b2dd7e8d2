"""Steady-state CPU of the whole stack as a ratio to Dagster's own floor, plus publication lag.

    .venv/bin/python -m bench.cpu_budget --minutes 4 --rounds 3

Runs two phases alternately, `--rounds` times each, in the same invocation: (1) `dagster dev`
on the trivial code location in bench/trivial_location.py, (2) the real stack as `make run`
starts it (daemon, code server, runs, idle webserver, API, emulator). For each it discards a
warm-up, then reads machine-wide CPU time from /proc/stat over the measured window and prints
CPU-seconds per minute of wall time. It prints every round, then the median ratio and its
spread, and the CPU per process role (daemon, code server, run workers, webserver, API,
emulator) of both phases side by side, so a difference is attributed, not guessed.

During (2) it polls `GET /?limit=1` once a second until the current minute's snapshot is
served (then waits for the next minute) and records how long after the minute's start the API
first served it. Its own CPU (the polling) is subtracted: the probe is
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.backfill_memory import free_port
from scripts.process_tree import ProcessTrees, exit_on_signals
from scripts.run_stack import ROOT, Stack, stack_environment, wait_until_up

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def busy_cpu_seconds() -> float:
    """Machine-wide non-idle CPU time (user, nice, system, irq, softirq, steal) since boot."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


Processes = dict[int, tuple[int, float]]  # pid -> (parent pid, CPU-seconds)

# Process roles by command line, first match wins. Run workers are multiprocessing children of
# the code server (`multiprocessing.spawn`, with a resource tracker); a multiprocessing child of
# any other process (e.g. uvicorn's workers) counts under its parent's role.
RUN_WORKER = "run workers"
SPAWNED = "spawned"
ROLES = (
    (SPAWNED, ("multiprocessing.spawn", "multiprocessing.resource_tracker")),
    (RUN_WORKER, ("execute_run", "execute_step")),
    ("api", ("uvicorn",)),
    ("emulator", ("-m emulator",)),
    ("webserver", ("dagster_webserver", "dagster-webserver")),
    ("daemon", ("dagster._daemon", "dagster-daemon")),
    ("code server", ("api grpc", "code-server")),
    ("dagster dev", (" dev ",)),
)


def process_cpu_seconds(own_only: bool = False) -> Processes:
    """Every process: (parent pid, own CPU + CPU of its reaped children, or own CPU alone)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        times = fields[11:13] if own_only else fields[11:15]
        table[int(entry.name)] = (int(fields[1]), sum(int(x) for x in times) / CLOCK_TICKS)
    return table


def role_of(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "other"
    return next((role for role, marks in ROLES if any(mark in command for mark in marks)), "other")


class RoleLedger:
    """Own CPU (without reaped children) of every process in the stack's tree, summed per role.

    Sampled once a second: a process that ends between samples loses at most its last second,
    which the tree total (reaped children included) still counts; the gap is shown as `other`.
    """

    def __init__(self, roots: list[int]) -> None:
        self.roots, self.first, self.last, self.roles = roots, {}, {}, {}
        self.sampled = False

    def sample(self) -> None:
        table = process_cpu_seconds(own_only=True)
        for pid in tree(table, self.roots):
            if pid not in self.roles:
                role = role_of(pid)
                if role == SPAWNED:
                    parent = self.roles.get(table[pid][0]) or role_of(table[pid][0])
                    role = RUN_WORKER if parent == "code server" else parent
                self.roles[pid] = role
                # Alive at the first sample: count from there; born later: all of its CPU.
                self.first[pid] = 0.0 if self.sampled else table[pid][1]
            self.last[pid] = table[pid][1]
        self.sampled = True

    def per_role(self) -> dict[str, float]:
        spent: dict[str, float] = {}
        for pid, role in self.roles.items():
            spent[role] = spent.get(role, 0.0) + self.last[pid] - self.first[pid]
        return spent


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


@dataclass
class Phase:
    """One measured phase: CPU-seconds per minute of wall time."""

    machine: float  # machine-wide, less the probe's own CPU
    own_tree: float  # the stack's process tree, reaped children included
    roles: dict[str, float]  # the tree's own CPU per process role
    lags: list[float] = field(default_factory=list)


def measure(seconds: float, stack: Stack | ProcessTrees | None = None, on_tick=None) -> Phase:
    """CPU over `seconds`: machine-wide less this process's own, the stack's tree and its roles."""
    roots = [p.pid for p in stack.processes] if stack else []
    ledger = RoleLedger(roots)
    ledger.sample()
    cpu0, own0, procs0, wall0 = busy_cpu_seconds(), own_cpu_seconds(), process_cpu_seconds(), time.monotonic()
    while (elapsed := time.monotonic() - wall0) < seconds:
        if on_tick:
            on_tick()
        if stack:
            ledger.sample()
        time.sleep(min(1.0, seconds - elapsed))
    minutes = (time.monotonic() - wall0) / 60
    machine = (busy_cpu_seconds() - cpu0) - (own_cpu_seconds() - own0)
    own_tree = tree_cpu_seconds(procs0, process_cpu_seconds(), roots) if stack else float("nan")
    ledger.sample()
    roles = {role: spent / minutes for role, spent in ledger.per_role().items()}
    if stack:  # what the sampling missed (the last second of short-lived processes) stays visible
        roles["unattributed"] = own_tree / minutes - sum(roles.values())
    return Phase(machine / minutes, own_tree / minutes, roles)


def baseline(minutes: float, warmup: float) -> Phase:
    port = free_port()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "DAGSTER_HOME": home, "PYTHONPATH": str(ROOT)}
        Path(home, "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        with ProcessTrees(env, quiet=True) as floor:
            floor.spawn(sys.executable, "-m", "dagster", "dev", "-f", str(ROOT / "bench" / "trivial_location.py"),
                        "-h", "127.0.0.1", "-p", str(port))  # fmt: skip
            wait_until_up(f"http://127.0.0.1:{port}/server_info", 180)
            time.sleep(warmup)
            return measure(minutes * 60, floor)


class LagProbe:
    """Publication lag: how long after a minute's start `GET /` first serves that minute.

    Call `poll()` about once a second; once the current minute is served it stays quiet until
    the next one, so the probe costs the stack almost nothing."""

    def __init__(self, api_url: str) -> None:
        self.lags: dict[str, float] = {}
        self.client = httpx.Client(base_url=api_url, timeout=5)

    def poll(self) -> None:
        current = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:00Z")
        if current in self.lags:
            return  # this minute is served; wait for the next one
        try:
            response = self.client.get("/", params={"limit": 1})
        except httpx.TransportError:
            return
        minute = response.headers.get("x-snapshot-time")
        if response.status_code == 200 and minute and minute not in self.lags:
            start = datetime.fromisoformat(minute.replace("Z", "+00:00"))
            self.lags[minute] = (datetime.now(UTC) - start).total_seconds()

    def since(self, count: int) -> list[float]:
        """The lags recorded after the first `count` ones."""
        return list(self.lags.values())[count:]


def emulated_stack(data: str, api_port: int, dagster_port: int, emulator_port: int) -> Stack:
    """The stack as `make run` starts it, on the emulator, with SQLite under `data`."""
    base = {k: v for k, v in os.environ.items() if k not in ("CMC_API_KEY", "CRYPTOCOMPARE_API_KEY")}
    base.update(DATABASE_URL=f"sqlite:///{data}/warehouse.db", DAGSTER_HOME=f"{data}/dagster",
                EMULATOR_URL=f"http://127.0.0.1:{emulator_port}")  # fmt: skip
    env, _ = stack_environment(base)
    return Stack(env, with_emulator=True, api_port=api_port, dagster_port=dagster_port, quiet=True)


def real_stack(minutes: float, warmup: float) -> Phase:
    with tempfile.TemporaryDirectory() as data:
        stack = emulated_stack(data, api_port=free_port(), dagster_port=free_port(), emulator_port=free_port())
        probe = LagProbe(f"http://127.0.0.1:{stack.api_port}")
        try:
            stack.start()
            measure(warmup, on_tick=probe.poll)
            first_measured = len(probe.lags)
            phase = measure(minutes * 60, stack, probe.poll)
            phase.lags = probe.since(first_measured)
            return phase
        finally:
            probe.client.close()
            stack.stop()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f}, spread {min(values):.2f}–{max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=4, help="measured minutes per phase (default 4)")
    parser.add_argument("--warmup", type=float, default=90, help="seconds discarded after start (default 90)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating floor/real rounds (default 3)")
    parser.add_argument("--idle", type=float, default=20, help="seconds of idle machine measured first (default 20)")
    args = parser.parse_args()

    idle = measure(args.idle).machine
    print(f"idle machine: {idle:.2f} CPU-s/min", flush=True)
    rounds: list[tuple[Phase, Phase]] = []
    print("round  floor machine/tree   real machine/tree   ratio machine/tree   lag p50/p95")
    for number in range(1, args.rounds + 1):
        floor = baseline(args.minutes, args.warmup)
        real = real_stack(args.minutes, args.warmup)
        rounds.append((floor, real))
        lag = statistics.median(real.lags) if real.lags else float("nan")
        print(f"{number:5d}  {floor.machine:6.2f} / {floor.own_tree:5.2f}"
              f"     {real.machine:6.2f} / {real.own_tree:5.2f}"
              f"     {real.machine / floor.machine:5.2f} / {real.own_tree / floor.own_tree:4.2f}"
              f"        {lag:4.1f} / {percentile(real.lags, 0.95):4.1f} s", flush=True)  # fmt: skip

    lags = [lag for _, real in rounds for lag in real.lags]
    print(f"\nratio, own process trees: {spread([r.own_tree / f.own_tree for f, r in rounds])}  (goal median <= 1.2)")
    print(f"ratio, machine-wide:      {spread([r.machine / f.machine for f, r in rounds])}")
    p50 = statistics.median(lags) if lags else float("nan")
    print(f"publication lag over {len(lags)} minutes: p50 {p50:.1f} s, p95 {percentile(lags, 0.95):.1f} s, "
          f"max {max(lags, default=float('nan')):.1f} s  (goal p95 <= 10 s)")  # fmt: skip
    print("\nCPU-s/min per process role (median over rounds): floor vs real stack, difference")
    roles = sorted({role for pair in rounds for phase in pair for role in phase.roles})
    for role in roles:
        floor_cpu = statistics.median(f.roles.get(role, 0.0) for f, _ in rounds)
        real_cpu = statistics.median(r.roles.get(role, 0.0) for _, r in rounds)
        print(f"  {role:13s} {floor_cpu:6.2f}  {real_cpu:6.2f}  {real_cpu - floor_cpu:+6.2f}")


if __name__ == "__main__":
    with exit_on_signals():  # SIGTERM (`timeout`) stops what it started, as Ctrl-C does
        main()
