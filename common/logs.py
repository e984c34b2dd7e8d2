"""Logging per service from its own `dictConfig` file (YAML), with the LOG_* variables on top.

Each service ships a file under `config/logging/` (`api.yaml`, `pipeline.yaml`, `emulator.yaml`).
A setting selects another file (`API_LOG_CONFIG`, `PIPELINE_LOG_CONFIG`; the emulator's
`--log-config`, default `EMULATOR_LOG_CONFIG`). This module needs only the standard library and
PyYAML (the settings only as a type), so the emulator, which imports nothing of the pipeline or
the API, applies its file with `apply` and fails the same way, naming the file. `LOG_LEVEL` sets
the level of every logger the file configures, `LOG_CONSOLE=false` drops the console handlers
(`true` adds one if the file has none) and `LOG_FILE` redirects the file handlers (adds a
rotating one if the file has none); `LOG_FILE=off` drops them, for containers, whose console is
their log (the image sets it), while `make run` keeps its files under `.data/logs`.
`{pid}` in a filename becomes the process id, so two processes never write one file by default.
"""

from __future__ import annotations

import logging.config
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

if TYPE_CHECKING:
    from common.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent

Service = Literal["api", "pipeline"]
STREAM_HANDLER = "logging.StreamHandler"
FILE_HANDLER = "logging.handlers.RotatingFileHandler"
ROTATION = {"maxBytes": 10 * 1024 * 1024, "backupCount": 3, "delay": True, "encoding": "utf-8"}
FILES_OFF = "off"
LogFile = Path | Literal["off"] | None  # LOG_FILE: where the file handlers write, or FILES_OFF for none


class LogConfigError(ValueError):
    """A logging file that cannot be read or is not a dictConfig mapping."""


def config_path(path: Path) -> Path:
    """A relative path is looked up from the working directory, then from the project root."""
    if path.is_absolute() or path.exists():
        return path
    return PROJECT_ROOT / path


def load(path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise LogConfigError(f"logging configuration {path}: {error}") from None
    if not isinstance(config, dict) or config.get("version") != 1:
        raise LogConfigError(f"logging configuration {path}: expected a dictConfig mapping with 'version: 1'")
    return config


def log_file_option(value: str | None) -> LogFile:
    """LOG_FILE as given on a command line or in the environment (the emulator reads no settings)."""
    return (FILES_OFF if value == FILES_OFF else Path(value)) if value else None


def with_overrides(
    config: dict[str, Any], *, level: str | None, console: bool | None, file: LogFile, keep_files: bool = True
) -> dict[str, Any]:
    """`config` with the LOG_* overrides applied and `{pid}` expanded in filenames."""
    handlers: dict[str, dict] = config.setdefault("handlers", {})
    loggers: dict[str, dict] = config.setdefault("loggers", {})

    def drop(names: set[str]) -> None:
        for name in names:
            handlers.pop(name, None)
        for logger in (*loggers.values(), config.get("root") or {}):
            logger["handlers"] = [h for h in logger.get("handlers", []) if h not in names]

    def attach_everywhere(name: str, handler: dict) -> None:
        formatter = next(iter(config.get("formatters", {})), None)
        handlers[name] = handler | ({"formatter": formatter} if formatter else {})
        for logger in loggers.values():
            logger.setdefault("handlers", []).append(name)

    consoles = {name for name, h in handlers.items() if h.get("class") == STREAM_HANDLER}
    if console is False:
        drop(consoles)
    elif console and not consoles:
        attach_everywhere("log_console", {"class": STREAM_HANDLER, "stream": "ext://sys.stderr"})
    files = {name for name, h in handlers.items() if "filename" in h}
    if file == FILES_OFF or (not keep_files and file is None):
        drop(files)
    elif file is not None:
        for name in files:
            handlers[name]["filename"] = str(file)
        if not files:
            attach_everywhere("log_file", {"class": FILE_HANDLER, "filename": str(file), **ROTATION})
    for handler in handlers.values():
        if "filename" in handler:
            path = Path(str(handler["filename"]).replace("{pid}", str(os.getpid())))
            path.parent.mkdir(parents=True, exist_ok=True)
            handler["filename"] = str(path)
    if level:
        for logger in (*loggers.values(), *([config["root"]] if config.get("root") else [])):
            logger["level"] = level.upper()
    return config


def configure_logging(service: Service, settings: Settings, *, keep_files: bool = True) -> dict[str, Any]:
    """Apply the service's logging file and the LOG_* overrides; return the configuration applied.

    `keep_files=False` drops the file handlers (unless LOG_FILE asks for one): Dagster's run
    workers use it, since Dagster keeps their lines in the run's logs.
    """
    path = settings.api_log_config if service == "api" else settings.pipeline_log_config
    return apply(path, level=settings.log_level, console=settings.log_console, file=settings.log_file,
                 keep_files=keep_files)  # fmt: skip


def apply(
    path: Path, *, level: str | None, console: bool | None = None, file: LogFile = None, keep_files: bool = True
) -> dict[str, Any]:
    """dictConfig from the file at `path` with the overrides; every error names the file or LOG_LEVEL."""
    path = config_path(path)
    levels = logging.getLevelNamesMapping()
    if level and level.upper() not in levels:
        raise LogConfigError(f"LOG_LEVEL={level!r} is not a logging level ({', '.join(levels)})")
    config = with_overrides(load(path), level=level, console=console, file=file, keep_files=keep_files)
    try:
        logging.config.dictConfig(config)
    except (ValueError, TypeError, AttributeError, ImportError) as error:  # dictConfig names neither file nor cause
        raise LogConfigError(f"logging configuration {path}: {error}: {error.__cause__ or ''}") from None
    return config
