"""Log handlers from settings: console and/or a file, one format everywhere."""

from __future__ import annotations

import logging

from common.settings import Settings

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(settings: Settings) -> None:
    """Attach the configured handlers to our loggers (not the root: Dagster and uvicorn keep theirs)."""
    handlers: list[logging.Handler] = []
    if settings.log_console:
        handlers.append(logging.StreamHandler())
    if settings.log_file:
        settings.log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(settings.log_file))
    for name in ("crypto_pipeline", "api", "warehouse"):
        logger = logging.getLogger(name)
        logger.setLevel(settings.log_level.upper())
        logger.handlers = []
        for handler in handlers:
            handler.setFormatter(logging.Formatter(FORMAT))
            logger.addHandler(handler)
        logger.propagate = False
