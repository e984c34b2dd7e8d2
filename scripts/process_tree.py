"""Child processes that are stopped as whole trees, also when this process is told to stop.

`dagster dev` starts its own children (webserver, daemon, a code server that starts another,
which starts the run workers), and when a process dies its children live on, reparented to
init: a `dagster dev` killed with -9 left its webserver and daemon running (still holding the
UI's port, still launching runs) and its code server until its heartbeat timed out. They keep
their session, though, unless they start one of their own. So each child is started in a
session of its own, and its tree is every process in that session plus every descendant of
one; stopping it signals every member, not the leader only, and waits until none is left.

A benchmark or `make run` stopped by SIGTERM (`timeout`) would otherwise die at once, its
`finally` blocks unrun and its children (each in its own session, out of reach of the
terminal's or `timeout`'s signal) running on: `exit_on_signals` makes SIGTERM and SIGHUP unwind
the main thread like Ctrl-C does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
STOP_GRACE_SECONDS = 10.0  # after SIGINT, what is still running is killed
KILL_WAIT_SECONDS = 10.0  # a process that outlives SIGKILL this long is stuck in the kernel
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def tree(sessions: Iterable[int]) -> list[psutil.Process]:
    """Every live process (zombies aside) in one of `sessions`, and every descendant of one that left them."""
    sessions = set(sessions)
    live: dict[int, psutil.Process] = {}
    for process in psutil.process_iter(["ppid", "status"]):
        if process.info["status"] != psutil.STATUS_ZOMBIE:
            live[process.pid] = process
    members = {}
    for pid, process in live.items():
        try:
            if os.getsid(pid) in sessions:
                members[pid] = process
        except OSError:  # gone meanwhile
            continue
    while found := [p for pid, p in live.items() if p.info["ppid"] in members and pid not in members]:
        members.update((process.pid, process) for process in found)  # descendants with sessions of their own
    return list(members.values())


def signal_all(processes: Iterable[psutil.Process], signum: int) -> None:
    for process in processes:
        try:
            process.send_signal(signum)
        except psutil.NoSuchProcess:
            pass


@contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP wait until the block is done: a stop is never cut short."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def stop_trees(leaders: Iterable[subprocess.Popen], grace: float = STOP_GRACE_SECONDS) -> int:
    """Stop the trees of `leaders` (each started in a session of its own): SIGINT to every member,
    SIGKILL to what is left after `grace` seconds; returns once none is left, with how many
    processes there were."""
    leaders = list(leaders)
    sessions = {leader.pid for leader in leaders}
    with signals_deferred():
        members = tree(sessions)
        signal_all(members, signal.SIGINT)
        deadline = time.monotonic() + grace
        while remaining := living(leaders, sessions):
            if time.monotonic() > deadline + KILL_WAIT_SECONDS:
                raise RuntimeError(f"still running after SIGKILL: {[p.pid for p in remaining]}")
            if time.monotonic() > deadline:
                signal_all(remaining, signal.SIGKILL)
            time.sleep(0.1)
    return len(members)


def living(leaders: list[subprocess.Popen], sessions: set[int]) -> list[psutil.Process]:
    for leader in leaders:
        leader.poll()  # our own children: reaped here, or they stay as zombies
    return tree(sessions)


class ProcessTrees:
    """Processes started in sessions of their own, by `spawn`, stopped as whole trees by `stop`
    (also as a context manager): nothing they started survives them."""

    def __init__(self, env: dict[str, str], quiet: bool = False, cwd: Path = ROOT) -> None:
        self.env, self.quiet, self.cwd = env, quiet, cwd
        self.processes: list[subprocess.Popen] = []

    def spawn(self, *command: str, **options) -> subprocess.Popen:
        """`command` in a session of its own; `options` go to Popen (stdout and stderr: DEVNULL if quiet)."""
        output = subprocess.DEVNULL if self.quiet else None
        options = {"stdout": output, "stderr": output, **options}
        process = subprocess.Popen(command, cwd=self.cwd, env=self.env, start_new_session=True, **options)
        self.processes.append(process)
        return process

    def stop(self, *processes: subprocess.Popen, grace: float = STOP_GRACE_SECONDS) -> int:
        """Stop the trees of `processes`, or of every process spawned when none is given; the
        number of processes that were in them."""
        chosen = list(processes or self.processes)
        stopped = stop_trees(chosen, grace)
        self.processes = [process for process in self.processes if process not in chosen]
        return stopped

    def __enter__(self) -> ProcessTrees:
        return self

    def __exit__(self, *_) -> None:
        self.stop()


@contextmanager
def exit_on_signals() -> Iterator[None]:
    """In the main thread: SIGTERM and SIGHUP raise SystemExit and SIGINT KeyboardInterrupt (even
    if this process was started with it ignored), so `finally` blocks and context managers stop
    what they started. Signals after the first are ignored: the stopping it began finishes."""
    stopping = False

    def stop(signum: int, _frame) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
