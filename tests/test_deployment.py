"""What can be proven about the compose deployment without a Docker engine on this machine."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml

from scripts.run_stack import PRODUCTION_INSTANCE, postgres_instance_env
from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def docker_compose() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but docker-compose is missing (.ci/run installs Debian's docker-compose)")
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    return binary


APP_SERVICES = ("migrate", "code-server", "dagster-webserver", "dagster-daemon", "api", "emulator")


def rendered_services(tmp_path, dotenv: str, profile: str | None = "demo") -> dict:
    """The services as Debian's docker-compose (v1) renders the compose file with this `.env`."""
    for name in ("docker-compose.yml", "Dockerfile"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / ".env").write_text(dotenv)
    command = [docker_compose(), *(["--profile", profile] if profile else []), "config"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


@pytest.mark.parametrize("profile", [None, "demo"])
def test_compose_file_validates(tmp_path, profile):
    services = rendered_services(tmp_path, (ROOT / ".env.example").read_text(), profile)
    expected = {"postgres", *APP_SERVICES}
    assert set(services) == expected
    assert services["emulator"]["profiles"] == ["demo"]  # started only with --profile demo
    assert all("profiles" not in s for name, s in services.items() if name != "emulator")


@pytest.mark.parametrize(
    ("dotenv", "password"),
    [
        ("POSTGRES_PASSWORD=s3cret-pw\n", "s3cret-pw"),
        ("", "change-me"),  # the compose file's default
        # A .env that still carries an old DATABASE_URL (or one for `make run`): compose's wins.
        ("POSTGRES_PASSWORD=s3cret-pw\nDATABASE_URL=postgresql+psycopg://toplist:old@postgres:5432/toplist\n",
         "s3cret-pw"),
    ],
)  # fmt: skip
def test_v1_derives_every_database_setting_from_postgres_password(tmp_path, dotenv, password):
    """Compose v1 parses a nested ${A:-${B}} wrongly (a URL ending in `/toplist@postgres:5432/toplist}`):
    the URL and Dagster's password must come out whole from POSTGRES_PASSWORD alone."""
    services = rendered_services(tmp_path, dotenv)
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == password
    for name in APP_SERVICES:
        environment = services[name]["environment"]
        assert environment["DATABASE_URL"] == f"postgresql+psycopg://toplist:{password}@postgres:5432/toplist", name
        assert environment["DAGSTER_POSTGRES_PASSWORD"] == password, name
        assert environment["LOG_FILE"] == "off", name  # console only, whatever .env says


def test_long_running_services_restart_and_report_their_health(tmp_path):
    """A service whose process exits is started again; each has a health check (the daemon's
    heartbeats, the webserver's /server_info), and only the one-shot migration never restarts."""
    services = rendered_services(tmp_path, "")
    assert services["migrate"]["restart"] == "no" and "healthcheck" not in services["migrate"]
    for name in {"postgres", *APP_SERVICES} - {"migrate"}:
        assert services[name]["restart"] == "unless-stopped", name
        assert services[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
    assert services["dagster-daemon"]["healthcheck"]["test"][1:] == ["dagster-daemon", "liveness-check"]
    assert "http://127.0.0.1:3000/server_info" in services["dagster-webserver"]["healthcheck"]["test"][-1]


def test_env_example_keeps_make_run_on_its_local_defaults(monkeypatch):
    """`make run` reads .env too: a copied .env.example must not point it at compose's `postgres` host."""
    from common.settings import Settings

    monkeypatch.delenv("DATABASE_URL", raising=False)
    copied = Settings(_env_file=ROOT / ".env.example")
    assert copied.database_url == Settings.model_fields["database_url"].default
    assert "@postgres" not in (ROOT / ".env.example").read_text()


def test_services_depend_on_health_and_share_one_image():
    services = COMPOSE["services"]
    assert services["postgres"]["healthcheck"] and "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("dagster-webserver", "dagster-daemon"):
        assert services[name]["depends_on"]["code-server"]["condition"] == "service_healthy"
    built = {name: s.get("image") for name, s in services.items() if name != "postgres"}
    assert set(built.values()) == {"crypto-toplist:latest"}
    assert services["emulator"]["profiles"] == ["demo"]


@pytest.mark.parametrize(
    "service", ["migrate", "code-server", "dagster-webserver", "dagster-daemon", "api", "emulator"]
)
def test_each_service_command_exists(service):
    """Run the service's entry point (its words up to the first option) with --help."""
    command = COMPOSE["services"][service]["command"]
    words = []
    for word in command:
        if word.startswith("-"):
            break
        words.append(word)
    if words[0] == "python":
        words[0] = sys.executable
    else:
        words[0] = os.path.join(os.path.dirname(sys.executable), words[0])
    result = subprocess.run([*words, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{shlex.join(words)} --help: {result.stderr[-2000:]}"


def test_dagster_yaml_loads_as_an_instance_on_postgres(tmp_path, postgres_url, monkeypatch):
    import dagster as dg

    for variable, value in postgres_instance_env(postgres_url).items():
        monkeypatch.setenv(variable, value)
    shutil.copy(PRODUCTION_INSTANCE, tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert instance.get_runs_count() >= 0
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"


def test_workspace_yaml_loads():
    from dagster._core.workspace.load import location_origins_from_yaml_paths

    (origin,) = location_origins_from_yaml_paths([str(ROOT / "deploy" / "workspace.yaml")])
    assert origin.location_name == "crypto_pipeline"
    assert (origin.host, origin.port) == ("code-server", 4000)


def test_live_minutes_come_first_in_both_instances(tmp_path, postgres_url, monkeypatch):
    """Request-launched runs have their own concurrency limit and minute runs a higher priority,
    in the production dagster.yaml and in the local instance `make run` writes; neither UI greets
    its operator with Dagster's "Join the community" pop-up (the webserver's `shouldShowNux`)."""
    import dagster as dg

    from crypto_pipeline.definitions import defs
    from crypto_pipeline.runs import NICENESS_TAG, REQUEST_TAG
    from scripts.run_stack import LOCAL_INSTANCE

    for variable, value in postgres_instance_env(postgres_url).items():
        monkeypatch.setenv(variable, value)
    (tmp_path / "production").mkdir()
    shutil.copy(PRODUCTION_INSTANCE, tmp_path / "production" / "dagster.yaml")
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "dagster.yaml").write_text(LOCAL_INSTANCE.read_text())
    for home in ("production", "local"):
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / home))
        with dg.DagsterInstance.from_config(str(tmp_path / home)) as instance:
            queue = instance.get_concurrency_config().run_queue_config
            limits = {limit["key"]: limit["limit"] for limit in queue.tag_concurrency_limits}
            assert limits[REQUEST_TAG] < queue.max_concurrent_runs, home
            assert instance.run_retries_enabled and not instance.run_retries_retry_on_asset_or_op_failure
            assert not instance.nux_enabled, home
    assert int(defs.resolve_job_def("minute_snapshot").tags["dagster/priority"]) > 0
    backfill = defs.resolve_job_def("backfill_snapshots").tags
    assert "dagster/priority" not in backfill and int(backfill[NICENESS_TAG]) > 0


@pytest.mark.parametrize(
    ("calls", "niceness"),
    [
        # A backfill request's run: niceness 10, applied once, never raised back.
        ("yield_cpu({NICENESS_TAG: '10'}); yield_cpu({NICENESS_TAG: '10'}); yield_cpu({})", 10),
        ("yield_cpu({'dagster/backfill': 'abc'})", 10),  # a UI backfill's run yields like a request's
        ("yield_cpu({'dagster/backfill': 'abc', NICENESS_TAG: '15'})", 15),  # unless tagged otherwise
    ],
)
def test_a_run_lowers_its_cpu_priority_to_its_niceness_once(calls, niceness):
    """What a run worker does before it works (in a child process here)."""
    code = (
        "import os; from crypto_pipeline.runs import NICENESS_TAG, yield_cpu;"
        f"before = os.nice(0); {calls}; print(before, os.nice(0))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    before, after = (int(n) for n in result.stdout.split())
    assert after == max(before, niceness)
