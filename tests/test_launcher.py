"""The run launcher's health check, against real code servers: a run is alive while the code server
that launched it runs it, and failed once that server restarted without it or stopped answering;
Dagster's own run monitoring then fails the run."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psutil
import pytest
from dagster._core.launcher import WorkerStatus
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import GrpcServerTarget
from dagster._daemon.monitoring.run_monitoring import monitor_started_run
from dagster._grpc.client import DagsterGrpcClient

from crypto_pipeline.launcher import RUNNING
from tests.conftest import ROOT, free_port
from tests.launcher_location import long_run

LOCATION = "monitored"
GRACE_SECONDS = 3


SERVER = ["api", "grpc"]  # compose's code server
PROXY = ["code-server", "start"]  # what `dagster dev` runs: a proxy in front of a code server it starts


@contextmanager
def code_server(port: int, kind: list[str] = SERVER) -> Iterator[subprocess.Popen]:
    """A code server over tests/launcher_location.py in its own session: killing the session
    takes its run workers with it, as recreating a code server's container does."""
    command = [sys.executable, "-m", "dagster", *kind, "-h", "127.0.0.1", "-p", str(port),
               "-f", str(ROOT / "tests" / "launcher_location.py"), "-d", str(ROOT)]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while DagsterGrpcClient(port=port, host="127.0.0.1").health_check_query() != "SERVING":
            assert server.poll() is None and time.monotonic() < deadline, "the code server did not start"
            time.sleep(0.2)
        yield server
    finally:
        kill_session(server)


def kill_session(server: subprocess.Popen) -> None:
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait(10)


@pytest.fixture
def instance(tmp_path) -> Iterator[dg.DagsterInstance]:
    launcher = {"module": "crypto_pipeline.launcher", "class": "MonitoredRunLauncher",
                "config": {"unreachable_grace_seconds": GRACE_SECONDS}}  # fmt: skip
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides={"run_launcher": launcher}) as instance:
        yield instance


def launch_long_run(instance: dg.DagsterInstance, port: int) -> dg.DagsterRun:
    """Launch `long_run` on the code server at `port` through the instance's launcher; return it once STARTED."""
    target = GrpcServerTarget(host="127.0.0.1", port=port, socket=None, location_name=LOCATION)
    with WorkspaceProcessContext(instance, target) as process_context:
        workspace = process_context.create_request_context()
        remote_job = workspace.get_code_location(LOCATION).get_repository("__repository__").get_full_job("long_run")
        run = instance.create_run_for_job(
            long_run, remote_job_origin=remote_job.get_remote_origin(), job_code_origin=remote_job.get_python_origin()
        )
        instance.launch_run(run.run_id, workspace)
    deadline = time.monotonic() + 60
    while (run := instance.get_run_by_id(run.run_id)).status != dg.DagsterRunStatus.STARTED:
        assert time.monotonic() < deadline, f"the run did not start: {run.status}"
        time.sleep(0.2)
    return run


def test_a_run_is_failed_once_its_code_server_restarted_without_it(instance):
    port = free_port()
    with code_server(port) as server:
        run = launch_long_run(instance, port)
        assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
        kill_session(server)  # the container is recreated: the server and its run worker are gone
        unreachable = instance.run_launcher.check_run_worker_health(run)
        assert unreachable.status == WorkerStatus.RUNNING and unreachable.transient  # a restart takes a while
    with code_server(port):  # the new server at the same address does not run it
        restarted = instance.run_launcher.check_run_worker_health(run)
        assert restarted.status == WorkerStatus.FAILED and "no longer runs it" in restarted.msg
        record = instance.get_run_record_by_id(run.run_id)
        monitor_started_run(instance, None, record, logging.getLogger(__name__))  # what the daemon's iteration does
    failed = instance.get_run_by_id(run.run_id)
    assert failed.status == dg.DagsterRunStatus.FAILURE


def test_a_run_whose_code_server_stopped_answering_is_failed_after_the_grace(instance):
    port = free_port()
    with code_server(port) as server:
        run = launch_long_run(instance, port)
        kill_session(server)
        assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
        time.sleep(GRACE_SECONDS)
        gone = instance.run_launcher.check_run_worker_health(run)
        assert gone.status == WorkerStatus.FAILED and f"not answered for {GRACE_SECONDS} s" in gone.msg
        time.sleep(GRACE_SECONDS)  # run monitoring asks again in its own iteration
        monitor_started_run(instance, None, instance.get_run_record_by_id(run.run_id), logging.getLogger(__name__))
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE


def test_a_run_executed_outside_a_code_server_is_left_to_its_max_runtime(instance):
    """`dagster job execute` (scripts.backfill_range's day runs) runs in the CLI's own process: no
    code server to ask, so the health check never fails it; dagster/max_runtime still ends it."""
    run = instance.create_run_for_job(long_run, status=dg.DagsterRunStatus.STARTED)
    assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING


def test_behind_dagster_devs_proxy_a_run_is_alive_while_its_worker_process_is(instance):
    """`dagster dev`'s proxy cannot list its runs: a healthy run must not be taken for one whose
    server is gone, however long it runs; once its worker dies with the code server behind the
    proxy (the proxy itself still answering), the run is failed."""
    port = free_port()
    with code_server(port, PROXY) as proxy:
        run = launch_long_run(instance, port)
        assert instance.run_launcher.check_run_worker_health(run) == RUNNING
        time.sleep(GRACE_SECONDS + 1)
        assert instance.run_launcher.check_run_worker_health(run) == RUNNING  # still alive past the grace
        for process in psutil.Process(proxy.pid).children(recursive=True):  # the server behind it, the worker
            process.kill()
        psutil.wait_procs(psutil.Process(proxy.pid).children(recursive=True), timeout=10)
        gone = instance.run_launcher.check_run_worker_health(run)
        assert gone.status == WorkerStatus.FAILED and "run worker" in gone.msg and "is gone" in gone.msg
        monitor_started_run(instance, None, instance.get_run_record_by_id(run.run_id), logging.getLogger(__name__))
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
