"""The run launcher of both instances: Dagster's DefaultRunLauncher, with a health check that lets
Dagster's run monitoring fail a run whose worker is gone.

DefaultRunLauncher has no health check, so a run whose code server was restarted or recreated
(taking its run workers with it) stayed STARTED for ever, holding its minute and its backfill
requests. The code server that launched a run (`dagster api grpc`, as compose runs it) keeps it in
its list of current runs until its worker exits (a worker that dies alone is failed by the code
server itself), so the question is asked of that server: it answers and no longer runs it →
failed; it does not answer for longer than `unreachable_grace_seconds` → failed; otherwise
running. The proxy that `dagster dev` puts in front of its code server (`dagster code-server
start`, on loopback) does not answer that question, so there the worker process itself is looked
for on this machine, by the pid its run recorded. Run monitoring polls every
`poll_interval_seconds` of the instance's `run_monitoring` and reports the failure; run retries
then retry the run once, and an unpublished minute is healed like any other.

Imported by the daemon and the webserver from the instance file: it needs Dagster and psutil only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import grpc
import psutil
from dagster import DagsterEventType, DagsterInstance, Field
from dagster._core.errors import DagsterUserCodeUnreachableError
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._grpc.client import DagsterGrpcClient
from dagster._grpc.types import GetCurrentRunsResult
from dagster._serdes import ConfigurableClassData, deserialize_value

DEFAULT_UNREACHABLE_GRACE_SECONDS = 180
LOOPBACK = {"localhost", "127.0.0.1", "::1"}
RUNNING = CheckRunHealthResult(WorkerStatus.RUNNING)


class MonitoredRunLauncher(DefaultRunLauncher):
    """Launches runs as DefaultRunLauncher does; judges a run alive while its code server runs it."""

    def __init__(
        self,
        inst_data: ConfigurableClassData | None = None,
        unreachable_grace_seconds: int = DEFAULT_UNREACHABLE_GRACE_SECONDS,
    ) -> None:
        super().__init__(inst_data=inst_data)
        self.unreachable_grace_seconds = unreachable_grace_seconds
        self._unreachable_since: dict[str, float] = {}  # run id -> first failed check (this process)

    @classmethod
    def config_type(cls) -> dict:
        return {
            "unreachable_grace_seconds": Field(int, is_required=False, default_value=DEFAULT_UNREACHABLE_GRACE_SECONDS)
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]):
        return cls(inst_data=inst_data, **config_value)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        client = self._get_grpc_client_for_termination(run.run_id)  # from the run's grpc_info tag
        if client is None:  # finished meanwhile, or executed in a CLI process: judged by its max runtime
            return CheckRunHealthResult(WorkerStatus.RUNNING, "not running in a code server")
        server = f"the code server at {client.host}:{client.port or client.socket}"
        try:
            current = deserialize_value(client.get_current_runs(), GetCurrentRunsResult).current_runs
        except DagsterUserCodeUnreachableError as error:
            if getattr(error.__cause__, "code", lambda: None)() == grpc.StatusCode.UNIMPLEMENTED:
                return self._local_worker_health(run, client, server)
            return self._unreachable(run, server)
        self._unreachable_since.pop(run.run_id, None)
        if run.run_id in current:
            return RUNNING
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"{server} no longer runs it: the server restarted since, taking its worker with it"
        )

    def _unreachable(self, run: DagsterRun, server: str) -> CheckRunHealthResult:
        """Running while the server has been silent for less than the grace (a restart takes a while)."""
        now = time.monotonic()
        for run_id, since in list(self._unreachable_since.items()):  # runs that ended meanwhile are forgotten
            if now - since > 10 * self.unreachable_grace_seconds:
                del self._unreachable_since[run_id]
        since = self._unreachable_since.setdefault(run.run_id, now)
        if now - since < self.unreachable_grace_seconds:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"{server} does not answer yet", transient=True)
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"{server} has not answered for {self.unreachable_grace_seconds} s"
        )

    def _local_worker_health(self, run: DagsterRun, client: DagsterGrpcClient, server: str) -> CheckRunHealthResult:
        """For a server that cannot list its runs (the proxy of `dagster dev`): on loopback its run
        workers are processes of this machine, found by the pid each records when it starts (a pid
        reused by a younger process is not it). A remote one cannot be judged: its max runtime ends it."""
        if client.host not in LOOPBACK and client.socket is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"{server} cannot say which runs it runs")
        if (recorded := recorded_worker(self._instance, run.run_id)) is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "its run worker has not recorded its pid yet")
        if live_worker(*recorded):
            return RUNNING
        return CheckRunHealthResult(WorkerStatus.FAILED, f"its run worker (pid {recorded[0]}) is gone")


def recorded_worker(instance: DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid a run's worker recorded when it started, and when it recorded it."""
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        if (pid := entry.dagster_event.engine_event_data.metadata.get("pid")) is not None:
            return int(pid.value), entry.timestamp
    return None


def live_worker(pid: int, recorded_at: float) -> psutil.Process | None:
    """The process of that pid, if it runs and is not a younger process that reused the pid."""
    try:
        worker = psutil.Process(pid)
        if worker.status() != psutil.STATUS_ZOMBIE and worker.create_time() <= recorded_at + 1:
            return worker
    except psutil.NoSuchProcess:
        pass
    return None
