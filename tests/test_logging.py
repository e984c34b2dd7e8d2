"""Logging per service: the shipped dictConfig files, the LOG_* overrides, one file per process,
the project's lines in Dagster's run logs, and no secret in any log line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime

import dagster as dg
import httpx
import pytest
import yaml

from common.logs import configure_logging, load, with_overrides
from common.settings import Settings
from crypto_pipeline.assets.top_assets import top_assets
from crypto_pipeline.assets.upstream import fetch_prices_and_rankings
from crypto_pipeline.partitions import MINUTE_FORMAT
from crypto_pipeline.resources.coinmarketcap import CoinMarketCapResource
from crypto_pipeline.resources.cryptocompare import CryptoCompareResource
from crypto_pipeline.resources.toplist import ToplistConfig
from crypto_pipeline.resources.warehouse import WarehouseResource
from tests.conftest import ROOT, free_port, wait_for_http

SHIPPED = {name: ROOT / "config" / "logging" / f"{name}.yaml" for name in ("api", "pipeline", "emulator")}
MARKER = "SECRET-MARKER-7f3a91"


def run_python(code: str, cwd, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOG_")}
    environment.update(env, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=environment,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result


def test_each_service_ships_a_dictconfig_with_console_and_rotating_file_per_process():
    for name, path in SHIPPED.items():
        config = load(path)
        classes = {handler["class"] for handler in config["handlers"].values()}
        assert {"logging.StreamHandler", "logging.handlers.RotatingFileHandler"} <= classes, name
        files = [h["filename"] for h in config["handlers"].values() if "filename" in h]
        assert files and all("{pid}" in f for f in files), f"{name}: a default file shared by two processes"
        assert all("level" in logger for logger in config["loggers"].values()), name


def test_a_debug_file_handler_receives_debug_records_and_nothing_below(tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump({
        "version": 1,
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(tmp_path / "p-{pid}.log"),
                              "level": "DEBUG"}},
        "loggers": {"crypto_pipeline": {"level": 1, "handlers": ["file"], "propagate": False}},
    }))  # fmt: skip
    run_python(
        """
        import logging
        from common.logs import configure_logging
        from common.settings import Settings
        configure_logging("pipeline", Settings())
        log = logging.getLogger("crypto_pipeline.resources.http")
        log.log(5, "below-debug"); log.debug("at-debug"); log.info("at-info"); log.warning("at-warning")
        """,
        tmp_path,
        PIPELINE_LOG_CONFIG=str(config),
    )
    (written,) = tmp_path.glob("p-*.log")
    text = written.read_text()
    assert "at-debug" in text and "at-info" in text and "at-warning" in text
    assert "below-debug" not in text


def test_log_variables_override_the_file(tmp_path):
    config = load(SHIPPED["pipeline"])
    overridden = with_overrides(config, level="warning", console=False, file=tmp_path / "all-{pid}.log")
    assert {logger["level"] for logger in overridden["loggers"].values()} == {"WARNING"}
    assert all(h["class"] != "logging.StreamHandler" for h in overridden["handlers"].values())
    assert overridden["handlers"]["file"]["filename"] == str(tmp_path / f"all-{os.getpid()}.log")
    # A run worker keeps no file unless LOG_FILE asks for one.
    run_worker = with_overrides(load(SHIPPED["pipeline"]), level=None, console=None, file=None, keep_files=False)
    assert not any("filename" in handler for handler in run_worker["handlers"].values())


# A service's logging as it starts (argv[1]: api or pipeline), then one line from it.
SAY_HELLO = textwrap.dedent(
    """
    import logging, sys
    from common.logs import configure_logging
    from common.settings import Settings
    configure_logging(sys.argv[1], Settings())
    logging.getLogger(sys.argv[1] if sys.argv[1] == "api" else "crypto_pipeline").warning("hello")
    """
)


def test_two_processes_never_share_a_file_by_default(tmp_path):
    """Two API and two pipeline processes with the shipped files, then two emulators: four, then two files."""
    for service in ("api", "pipeline", "api", "pipeline"):
        environment = {k: v for k, v in os.environ.items() if not k.startswith("LOG_")}
        subprocess.run([sys.executable, "-c", SAY_HELLO, service], cwd=tmp_path, check=True,
                       env={**environment, "PYTHONPATH": str(ROOT)}, timeout=60)  # fmt: skip
    logs = tmp_path / ".data" / "logs"
    assert len(list(logs.glob("api-*.log"))) == 2 and len(list(logs.glob("pipeline-*.log"))) == 2
    emulators = []
    for _ in range(2):
        port = free_port()
        emulators.append(subprocess.Popen([sys.executable, "-m", "emulator", "--port", str(port), "--universe", "50"],
                                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}))  # fmt: skip
        wait_for_http(f"http://127.0.0.1:{port}/_emulator/health")
    for process in emulators:
        process.terminate()
        process.wait(10)
    written = list(logs.glob("emulator-*.log"))
    assert len(written) == 2 and all("emulating CoinMarketCap" in f.read_text() for f in written)


def test_log_file_off_leaves_every_service_its_console_only(tmp_path):
    """LOG_FILE=off, as the image sets it: the API's, the pipeline's and the emulator's lines reach
    their standard output (what a container's log collects, as twelve-factor services log) and no
    file is written."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOG_")}
    environment.update(PYTHONPATH=str(ROOT), LOG_FILE="off")
    for service in ("api", "pipeline"):
        result = subprocess.run([sys.executable, "-c", SAY_HELLO, service], cwd=tmp_path, env=environment,
                                capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        assert "hello" in result.stdout and "hello" not in result.stderr, service
    port = free_port()
    emulator = subprocess.Popen([sys.executable, "-m", "emulator", "--port", str(port), "--universe", "50"],
                                cwd=tmp_path, env=environment, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/_emulator/health")
    finally:
        emulator.terminate()
        console, _ = emulator.communicate(timeout=10)
    assert "emulating CoinMarketCap" in console
    assert not list(tmp_path.iterdir())  # no .data/logs, no file named after the option either


def instance_python_logs() -> dict:
    """python_logs of the production instance config (the local one, deploy/dagster.local.yaml, matches)."""
    from scripts.run_stack import LOCAL_INSTANCE

    production = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())["python_logs"]
    assert yaml.safe_load(LOCAL_INSTANCE.read_text())["python_logs"] == production
    return production


def materialize_minute(emulator_url: str, database_url: str, instance, key: str = "test-key", **faults):
    client = dict(timeout_seconds=2.0, backoff_seconds=0.01, max_attempts=3)
    return dg.materialize(
        [fetch_prices_and_rankings, top_assets],
        partition_key=datetime.now(UTC).strftime(MINUTE_FORMAT),
        resources={
            "cmc": CoinMarketCapResource(api_keys={"CMC_API_KEY": key}, base_url=emulator_url, **client),
            "cryptocompare": CryptoCompareResource(
                api_keys={"CRYPTOCOMPARE_API_KEY": key}, data_api_url=emulator_url, min_api_url=emulator_url, **client
            ),
            "warehouse": WarehouseResource(database_url=database_url),
            "toplist": ToplistConfig(depth=50, ranking_depth=60),
        },
        instance=instance,
        raise_on_error=False,
    )


def run_log_lines(instance, run_id: str) -> list[tuple[int, str]]:
    return [(entry.level, entry.user_message) for entry in instance.all_logs(run_id)]


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_project_loggers_appear_in_the_run_logs_at_the_configured_level(emulator, tmp_path, level):
    configure_logging("pipeline", Settings(log_level=level, log_file=tmp_path / "p.log", log_console=False))
    emulator.set_faults({"cc_top_list": {"kind": "server_error", "times": 1}})
    url = f"sqlite:///{tmp_path / 'w.db'}"
    from warehouse.store import Warehouse

    Warehouse(url).upgrade()
    with dg.DagsterInstance.ephemeral(settings={"python_logs": instance_python_logs()}) as instance:
        result = materialize_minute(emulator.url, url, instance)
        lines = run_log_lines(instance, result.run_id)
    retries = [text for lvl, text in lines if "attempt 1 failed" in text]
    requests = [text for lvl, text in lines if "GET /asset/v1/top/list" in text]
    assert retries and all(lvl == logging.WARNING for lvl, text in lines if "attempt 1 failed" in text)
    assert bool(requests) == (level == "DEBUG"), "DEBUG lines must show only when the level allows them"


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_no_secret_in_any_log_line_of_a_materialization(emulator, tmp_path):
    """Keys set to a marker, every logger at DEBUG, faults and an auth failure: the marker never shows."""
    log_file = tmp_path / "pipeline.log"
    configure_logging("pipeline", Settings(log_level="DEBUG", log_file=log_file, log_console=False))
    capture = Capture()
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    watched = [root, *(logging.getLogger(name) for name in ("crypto_pipeline", "warehouse", "httpx", "httpcore"))]
    for logger in watched:
        logger.addHandler(capture)
    url = f"sqlite:///{tmp_path / 'w.db'}"
    from warehouse.store import Warehouse

    Warehouse(url).upgrade()
    try:
        with dg.DagsterInstance.ephemeral(settings={"python_logs": instance_python_logs()}) as instance:
            emulator.set_faults({"cmc_quotes_latest": {"kind": "rate_limited", "times": 1},
                                 "cc_top_list": {"kind": "malformed", "times": 1}})  # fmt: skip
            ok = materialize_minute(emulator.url, url, instance, key=MARKER)
            failed = materialize_minute(emulator.url, url, instance, key="")  # an auth failure's path too
            lines = run_log_lines(instance, ok.run_id) + run_log_lines(instance, failed.run_id)
    finally:
        for logger in watched:
            logger.removeHandler(capture)
        root.setLevel(old_level)
    assert ok.success and not failed.success
    assert any("GET /v2/cryptocurrency/quotes/latest" in line for line in capture.lines)  # DEBUG was on
    assert any("attempt 1 failed" in text for _, text in lines)
    everything = "\n".join([*capture.lines, *(text for _, text in lines), log_file.read_text()])
    assert MARKER not in everything


def test_no_secret_in_any_log_line_of_the_api(database_url, tmp_path):
    """The API at DEBUG with keys and the database password set to a marker, over a few requests."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.drivername.startswith("postgresql"):
        url = url.set(password=MARKER)  # the test server trusts local connections: any password works
    port, log_file = free_port(), tmp_path / "api.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOG_")}
    environment.update(
        PYTHONPATH=str(ROOT),
        DATABASE_URL=url.render_as_string(hide_password=False),
        CMC_API_KEY=MARKER,
        CRYPTOCOMPARE_API_KEY=MARKER,
        LOG_LEVEL="DEBUG",
        LOG_FILE=str(log_file),
    )
    command = [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port), "--log-level", "debug"]
    api = subprocess.Popen(command, cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/healthz")
        for path in ("/", "/?limit=0", "/?datetime=2026-11-20T10:00Z", "/readyz", "/backfills/nonsense", "/metrics"):
            httpx.get(base + path, timeout=10)
    finally:
        api.terminate()
        output, _ = api.communicate(timeout=20)
    written = log_file.read_text()
    assert "GET /?limit=0" in written or "/readyz" in written  # uvicorn's access lines were logged at DEBUG
    assert MARKER not in written and MARKER not in output


def test_a_bad_logging_file_or_level_is_refused_naming_the_file_or_the_variable(tmp_path):
    """dictConfig's own errors ("Unable to configure handler 'h'") name neither the file nor LOG_LEVEL."""
    from common.logs import LogConfigError

    bad = tmp_path / "api.yaml"
    bad.write_text("version: 1\nhandlers:\n  h: {class: logging.NoSuchHandler}\nloggers:\n  api: {handlers: [h]}\n")
    with pytest.raises(LogConfigError, match=rf"logging configuration {bad}: Unable to configure handler 'h'.*NoSuch"):
        configure_logging("api", Settings(api_log_config=bad))
    with pytest.raises(LogConfigError, match=r"LOG_LEVEL='verbose' is not a logging level \(CRITICAL, FATAL"):
        configure_logging("api", Settings(log_level="verbose"))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--log-config", "{bad}"], "logging configuration {bad}: Unable to configure handler 'h'"),
        (["--log-config", "{missing}"], "logging configuration {missing}: [Errno 2] No such file or directory"),
        (["--log-level", "verbose"], "LOG_LEVEL='verbose' is not a logging level (CRITICAL, FATAL"),
    ],
)
def test_the_emulator_refuses_a_bad_logging_file_or_level_naming_the_file_or_the_variable(tmp_path, arguments, message):
    """As the API and the pipeline do: dictConfig's own errors name neither the file nor LOG_LEVEL."""
    paths = {"bad": tmp_path / "emulator.yaml", "missing": tmp_path / "nowhere.yaml"}
    handler = "handlers:\n  h: {class: logging.NoSuchHandler}\n"
    paths["bad"].write_text(f"version: 1\n{handler}loggers:\n  emulator: {{handlers: [h]}}\n")
    arguments = [argument.format(**paths) for argument in arguments]
    started = subprocess.run([sys.executable, "-m", "emulator", "--port", "0", *arguments], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert started.returncode != 0
    assert message.format(**paths) in started.stderr
    assert "Traceback" not in started.stderr
