"""structlog set-up: JSON lines by default, readable console lines on request."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


_level = logging.INFO


def configure(fmt: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    global _level
    _level = _LEVELS[level]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )


def enabled(level: str) -> bool:
    """Whether lines of this level are kept: lets a hot path skip building their fields."""
    return _LEVELS[level] >= _level


def get(name: str = "jsrt") -> Any:
    return structlog.get_logger(name)
