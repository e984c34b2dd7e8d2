"""`make run`'s supervision against the real stack (Stack on free ports, SQLite, the emulator): a
process killed with -9 is restarted alone, after its whole tree is gone, while the API keeps
answering; Ctrl-C or SIGTERM stops everything."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import psutil
import pytest

from scripts import run_stack
from scripts.process_tree import tree
from scripts.run_stack import Stack, stack_environment
from tests.conftest import commands, free_port, running

RESTART_TIMEOUT = 240  # a stop, a backoff and `dagster dev`'s start on a loaded 2-core machine


class ApiWatch:
    """Polls the API's `GET /?limit=1` twice a second; every answer must be a 200 or a 503."""

    def __init__(self, api: str) -> None:
        self.api, self.answers, self.failures = api, 0, []

    def poll(self) -> str | None:
        """The minute the API serves, if any."""
        try:
            answer = httpx.get(f"{self.api}/?limit=1", timeout=5)
        except httpx.TransportError as error:
            self.failures.append(repr(error))
            return None
        self.answers += 1
        if answer.status_code not in (200, 503):
            self.failures.append(answer.status_code)
        return answer.headers.get("x-snapshot-time")

    def until(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"{what} not within {timeout} s"
            self.poll()
            time.sleep(0.5)
        assert self.failures == [], self.failures


@pytest.fixture(scope="module")
def stack(emulator_process, tmp_path_factory) -> Iterator[Stack]:
    """`make run`'s stack on free ports, supervised by a thread as `make run` supervises it."""
    data = tmp_path_factory.mktemp("supervised")
    env, _ = stack_environment({"PATH": os.environ["PATH"]})
    env.update(DATABASE_URL=f"sqlite:///{data}/warehouse.db", DAGSTER_HOME=str(data / "dagster"),
               EMULATOR_URL=emulator_process.url, LOG_CONSOLE="false")  # fmt: skip
    running_stack = Stack(env, with_emulator=False, api_port=free_port(), dagster_port=free_port(), quiet=True)
    stopping = threading.Event()
    supervisor = threading.Thread(target=running_stack.supervise, args=(stopping,))
    try:
        running_stack.start()
        supervisor.start()
        yield running_stack
    finally:
        stopping.set()
        if supervisor.is_alive():
            supervisor.join()
        running_stack.stop()


def dagster_tree(stack: Stack) -> dict[psutil.Process, str]:
    """`dagster dev`'s processes once it is up with its daemon, webserver and code server."""
    dagster = stack.component("dagster dev")
    deadline = time.monotonic() + RESTART_TIMEOUT
    while not dagster.up or dagster.absent_parts():
        assert time.monotonic() < deadline, "dagster dev is not up"
        time.sleep(0.5)
    return commands(tree([dagster.process.pid]))


def killed_and_restarted(stack: Stack, mark: str, capsys) -> tuple[ApiWatch, str]:
    """Kill -9 the process of `dagster dev`'s tree whose command line has `mark`; return once
    `dagster dev` is back (the API polled all along) and no process of the old tree is left,
    with the line the supervisor printed."""
    old = dagster_tree(stack)
    api_pid = stack.component("API").process.pid
    dagster = stack.component("dagster dev")
    restarts = dagster.restarts
    capsys.readouterr()
    next(process for process, command in old.items() if mark in command).kill()
    watch = ApiWatch(f"http://127.0.0.1:{stack.api_port}")
    watch.until(lambda: dagster.restarts > restarts and dagster.up, RESTART_TIMEOUT, "dagster dev back")
    assert running(list(old)) == []  # nothing of the old tree outlived the restart
    assert httpx.get(f"http://127.0.0.1:{stack.dagster_port}/server_info", timeout=10).status_code == 200
    assert stack.component("API").process.pid == api_pid and stack.component("API").restarts == 0
    assert watch.answers > 0
    return watch, capsys.readouterr().out


def a_new_minute_is_served(watch: ApiWatch, after: datetime) -> None:
    """Wait until the API serves a minute that began after `after`: the restarted pipeline stored it."""
    first = (after.replace(second=0, microsecond=0) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:00Z")
    watch.until(lambda: (watch.poll() or "") >= first, 180, f"minute {first} served")


def test_a_killed_daemon_restarts_dagster_dev_alone(stack, capsys):
    killed = datetime.now(UTC)
    watch, printed = killed_and_restarted(stack, "dagster._daemon", capsys)
    # dagster dev exits by itself within 5 s of its daemon, or the supervisor sees the daemon gone.
    assert re.search(r"dagster dev (exited with code \d+ \(its daemon had gone first\)|is running without its "
                     r"daemon).*; restarting it in \d+ s \(restart \d+\)\.", printed), printed  # fmt: skip
    assert re.search(r"dagster dev is back, \d+ s after its restart\.", printed), printed
    a_new_minute_is_served(watch, killed)


def test_a_killed_dagster_dev_leaves_no_orphan(stack, capsys):
    """Killed with -9, `dagster dev` leaves its webserver (on the UI's port), daemon and code
    servers running: they are stopped before it starts again, or the new one could not bind the port."""
    _, printed = killed_and_restarted(stack, " dev -m crypto_pipeline", capsys)
    assert re.search(r"dagster dev was killed by SIGKILL; stopped the \d+ processes left of it;", printed), printed


def test_dagster_dev_without_its_code_server_is_restarted(stack, capsys):
    """Nothing restarts the code server behind dagster dev's proxy: dagster dev stays up, launching nothing."""
    killed = datetime.now(UTC)
    watch, printed = killed_and_restarted(stack, "dagster api grpc", capsys)
    assert "dagster dev is running without its code server; stopped the" in printed, printed
    a_new_minute_is_served(watch, killed)


def test_restarts_back_off_while_a_component_dies_young(stack, capsys, monkeypatch):
    monkeypatch.setattr(run_stack, "STABLE_SECONDS", 8.0)
    api = stack.component("API")
    delays = []
    for _ in range(3):
        if len(delays) == 2:
            time.sleep(run_stack.STABLE_SECONDS)  # it stayed up long enough: the backoff starts again
        restarts = api.restarts
        capsys.readouterr()
        api.process.kill()
        deadline = time.monotonic() + 60
        while not (api.restarts > restarts and api.up):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        printed = capsys.readouterr().out
        delays += re.findall(r"API was killed by SIGKILL; restarting it in (\d+) s", printed)
    assert delays == ["1", "2", "1"]
    assert httpx.get(f"http://127.0.0.1:{stack.api_port}/healthz", timeout=10).status_code == 200


MAKE_RUN = "import pathlib, sys; from scripts import run_stack; run_stack.DOTENV = pathlib.Path(sys.argv[1]); " \
    "run_stack.main()"  # fmt: skip


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_make_run_restarts_what_dies_and_stops_everything(stop, project_dir, tmp_path, leftovers):
    """`make run` itself (scripts.run_stack.main, its own emulator): a killed API comes back alone,
    and SIGTERM or Ctrl-C leaves no process of any of its trees."""
    env = {k: v for k, v in os.environ.items() if k not in ("CMC_API_KEY", "CRYPTOCOMPARE_API_KEY")}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'warehouse.db'}", DAGSTER_HOME=str(tmp_path / "dagster"),
               EMULATOR_URL=f"http://127.0.0.1:{free_port()}", API_PORT=str(free_port()),
               DAGSTER_PORT=str(free_port()), LOG_CONSOLE="false")  # fmt: skip
    output = tmp_path / "make-run.out"
    with output.open("w") as out:
        make_run = subprocess.Popen([sys.executable, "-c", MAKE_RUN, str(tmp_path / ".env")], cwd=project_dir,
                                    env=env, stdout=out, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    leftovers.add(make_run.pid)  # a failure below kills make run and all it started
    printed = lambda: output.read_text()  # noqa: E731
    deadline = time.monotonic() + RESTART_TIMEOUT
    while "\nUp: " not in printed():
        assert make_run.poll() is None and time.monotonic() < deadline, printed()
        time.sleep(0.5)
    children = psutil.Process(make_run.pid).children()
    leftovers.update(child.pid for child in children)  # each leads a session
    by_role = {command.split(" -m ")[1].split()[0]: p for p, command in commands(children).items()}
    assert sorted(by_role) == ["dagster", "emulator", "uvicorn"]
    by_role["uvicorn"].kill()
    while "API is back" not in printed():
        assert time.monotonic() < deadline, printed()
        time.sleep(0.5)
    assert "API was killed by SIGKILL; restarting it in 1 s (restart 1)." in printed()
    assert httpx.get(f"http://127.0.0.1:{env['API_PORT']}/healthz", timeout=10).status_code == 200
    assert running([by_role["dagster"], by_role["emulator"]]) == [by_role["dagster"], by_role["emulator"]]

    members = psutil.Process(make_run.pid).children(recursive=True)
    sessions = {os.getsid(p.pid) for p in members}
    leftovers.update(sessions)
    assert len(sessions) == 3 and len(members) >= 7  # emulator, API; dagster dev and its own
    started = time.monotonic()
    make_run.send_signal(stop)
    assert make_run.wait(60) == 0
    assert time.monotonic() - started < 30
    assert running(members) == [] and tree(sessions) == []
    assert printed().endswith("Stopped: no process of the stack is left.\n")
    assert (tmp_path / ".env").read_text() == f"DAGSTER_HOME={env['DAGSTER_HOME']}\n"  # not the project's .env
