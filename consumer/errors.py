"""One small error hierarchy: each class's docstring is its default message."""

from __future__ import annotations


class JsrtError(Exception):
    """Base of every jsruntime error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())


class ConfigError(JsrtError):
    """Invalid configuration."""


class MigrationError(JsrtError):
    """A migration could not be applied."""


class StoreError(JsrtError):
    """The database refused or lost an operation."""


class StoreUnavailable(StoreError):
    """The database cannot be reached right now."""


class NotFound(JsrtError):
    """No such object for this tenant."""


class InvalidEvent(JsrtError):
    """An event was rejected: it is malformed."""


class ValidationError(JsrtError):
    """Invalid input."""


class ScriptBusy(JsrtError):
    """The script's max_concurrent_runs is full; try again later."""
