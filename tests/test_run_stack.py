"""`make run` decides and reports its upstreams from the settings (environment, then `.env`), and
records in `.env` what a second terminal's dagster CLI needs to use the same instance."""

from __future__ import annotations

import dotenv
import pytest

from common.settings import Settings
from scripts.run_stack import record_in_dotenv, stack_environment, upstreams_line

NO_KEYS = {"CMC_API_KEY": "", "CRYPTOCOMPARE_API_KEY": "", "EMULATOR_URL": "", "DAGSTER_HOME": ""}


@pytest.fixture
def settings_from(tmp_path, monkeypatch):
    """Settings read from a given `.env` only (the test's own environment carries no keys)."""
    for name in NO_KEYS:
        monkeypatch.delenv(name, raising=False)

    def read(dotenv_text: str) -> Settings:
        path = tmp_path / ".env"
        path.write_text(dotenv_text)
        return Settings(_env_file=path)

    return read


def test_keys_only_in_dotenv_make_the_stack_live(settings_from):
    settings = settings_from("CMC_API_KEY=k1\nCRYPTOCOMPARE_API_KEY=k2\n")
    env, with_emulator = stack_environment({}, settings)
    assert not with_emulator and "EMULATOR_URL" not in env
    line = upstreams_line(settings)
    assert "LIVE" in line and "https://pro-api.coinmarketcap.com" in line and "k1" not in line


def test_one_key_is_not_enough_and_it_says_so(settings_from):
    settings = settings_from("CMC_API_KEY=k1\n")
    env, with_emulator = stack_environment({}, settings)
    assert with_emulator and env["EMULATOR_URL"] == "http://127.0.0.1:8765"
    assert upstreams_line(settings) == (
        "Upstreams: the emulator at http://127.0.0.1:8765 (only CMC_API_KEY is set; live data needs both keys);"
        " the data is labelled emulated."
    )


def test_without_keys_the_emulator_is_started_on_the_configured_port(settings_from):
    settings = settings_from("EMULATOR_URL=http://127.0.0.1:9876\nDAGSTER_HOME=relative/home\n")
    env, with_emulator = stack_environment({}, settings)
    assert with_emulator and env["EMULATOR_URL"] == "http://127.0.0.1:9876"
    assert env["DAGSTER_HOME"] == str(settings.dagster_home) and settings.dagster_home.is_absolute()
    assert "no API keys" in upstreams_line(settings)


def test_a_remote_emulator_is_used_not_started(settings_from):
    _, with_emulator = stack_environment({}, settings_from("EMULATOR_URL=http://emulator:8765\n"))
    assert not with_emulator


def test_dotenv_gains_only_what_it_lacks(tmp_path):
    path = tmp_path / ".env"
    path.write_text("# mine\nCMC_API_KEY=secret\nDAGSTER_HOME=\n")
    assert record_in_dotenv({"DAGSTER_HOME": "/a/home", "CMC_API_KEY": "other"}, path) == ["DAGSTER_HOME"]
    assert dotenv.dotenv_values(path) == {"CMC_API_KEY": "secret", "DAGSTER_HOME": "/a/home"}
    assert path.read_text().startswith("# mine\n")
    assert record_in_dotenv({"DAGSTER_HOME": "/b/home"}, path) == []  # the user's (or an earlier) value stays


def test_a_value_the_environment_and_dotenv_disagree_on_stops_make_run(tmp_path, monkeypatch):
    """Dagster's CLI and `dagster dev` load `.env` over the environment, the settings (and the API)
    the other way round: with both set and different, the stack would split (keys for the API, an
    empty key for the pipeline; two warehouses), so `make run` refuses, naming but never showing them."""
    from scripts import run_stack

    path = tmp_path / ".env"
    path.write_text("CMC_API_KEY=\nDATABASE_URL=sqlite:////file/db\nAPI_PORT=6667\n")
    monkeypatch.setattr(run_stack, "DOTENV", path)
    monkeypatch.setenv("CMC_API_KEY", "shell-secret")
    monkeypatch.setenv("DATABASE_URL", "sqlite:////shell/db")
    monkeypatch.setenv("API_PORT", "6667")  # the same value: no conflict
    monkeypatch.setattr(run_stack, "record_in_dotenv", lambda *_: pytest.fail(".env written"))
    monkeypatch.setattr(run_stack, "Stack", lambda *_, **__: pytest.fail("stack started"))
    with pytest.raises(SystemExit) as stopped:
        run_stack.main()
    message = str(stopped.value.code)
    assert "CMC_API_KEY, DATABASE_URL" in message and "API_PORT" not in message
    assert "shell-secret" not in message and "/shell/db" not in message
