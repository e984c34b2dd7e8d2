"""Child processes are stopped as whole trees: what they started, what ignores SIGINT, what outlived
its parent (reparented to init) and what started a session of its own, also when the parent is
stopped by SIGTERM, as `timeout` stops a benchmark."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from scripts.process_tree import ProcessTrees, tree
from tests.conftest import ROOT, commands, running

SLEEP = "import time; time.sleep(600)"
# A leader whose tree has a child that ignores SIGINT and a grandchild in a session of its own.
LEADER = f"""
import subprocess, sys
deaf = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)"
subprocess.Popen([sys.executable, "-c", deaf])
subprocess.Popen([sys.executable, "-c", "import subprocess, sys; "
                  "subprocess.Popen([sys.executable, '-c', {SLEEP!r}], start_new_session=True); " + {SLEEP!r}])
{SLEEP}
"""
# A benchmark's shape: children (each a tree) stopped in a `finally`, reached by SIGTERM too.
BENCHMARK = f"""
import subprocess, sys, time
from scripts.process_tree import ProcessTrees, exit_on_signals
with exit_on_signals():
    with ProcessTrees(dict(__import__("os").environ)) as processes:
        processes.spawn(sys.executable, "-c", {LEADER!r})
        {SLEEP}
"""


def descendants(pid: int, count: int, timeout: float = 30) -> list[psutil.Process]:
    """The `count` descendants of `pid`, once they have all started."""
    deadline = time.monotonic() + timeout
    while len(found := psutil.Process(pid).children(recursive=True)) < count:
        assert time.monotonic() < deadline, found
        time.sleep(0.1)
    return found


@pytest.mark.parametrize("leader_killed_first", [False, True], ids=["leader alive", "leader killed -9"])
def test_a_tree_is_stopped_whole(leader_killed_first, leftovers):
    processes = ProcessTrees(dict(os.environ), quiet=True)
    leader = processes.spawn(sys.executable, "-c", LEADER)
    leftovers.add(leader.pid)
    members = [psutil.Process(leader.pid), *descendants(leader.pid, 3)]
    sessions = {os.getsid(member.pid) for member in members}
    leftovers.update(sessions)
    assert len(sessions) == 2  # one of them left the leader's session
    if leader_killed_first:  # its children live on, reparented to init
        leader.kill()
        leader.wait()
        assert len(running(members)) == 3 and all(p.ppid() != leader.pid for p in running(members))

    started = time.monotonic()
    stopped = processes.stop(grace=1)
    assert running(members) == [] and tree(sessions) == []
    assert stopped == len(members) - leader_killed_first
    assert time.monotonic() - started < 10  # the deaf child was killed after the grace
    assert processes.processes == []


def test_a_benchmark_stopped_by_sigterm_stops_its_children_first(leftovers):
    benchmark = subprocess.Popen([sys.executable, "-c", BENCHMARK], cwd=ROOT, start_new_session=True)
    leftovers.add(benchmark.pid)
    members = descendants(benchmark.pid, 4)  # the leader and its three
    leftovers.update(os.getsid(member.pid) for member in members)
    benchmark.send_signal(signal.SIGTERM)
    assert benchmark.wait(30) == 128 + signal.SIGTERM
    assert running(members) == []


def test_a_stack_benchmark_stopped_by_timeout_leaves_no_process(leftovers):
    """bench.cpu_budget stopped by SIGTERM, as `timeout` stops it, while its baseline `dagster dev`
    runs (webserver, daemon, code servers): nothing it started is left."""
    command = [sys.executable, "-m", "bench.cpu_budget", "--idle", "1", "--warmup", "600", "--rounds", "1"]
    benchmark = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, start_new_session=True)
    leftovers.add(benchmark.pid)
    deadline = time.monotonic() + 240
    while True:  # until dagster dev's tree is complete
        members = psutil.Process(benchmark.pid).children(recursive=True)
        leftovers.update(os.getsid(member.pid) for member in running(members))
        started = " ".join(commands(members).values())
        if all(part in started for part in ("dagster_webserver", "dagster._daemon", "dagster api grpc")):
            break
        assert benchmark.poll() is None and time.monotonic() < deadline, started
        time.sleep(0.5)
    benchmark.send_signal(signal.SIGTERM)
    assert benchmark.wait(60) == 128 + signal.SIGTERM
    assert running(members) == [] and tree(leftovers) == []
