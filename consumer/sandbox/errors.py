"""The sandbox's errors: each class's docstring is its default message."""

from __future__ import annotations

from consumer.errors import JsrtError


class SandboxError(JsrtError):
    """The sandbox failed."""


class ExecutorClosed(SandboxError):
    """The executor is not running."""


class WorkerStartError(SandboxError):
    """A sandbox worker process did not start."""


class ProtocolError(SandboxError):
    """A sandbox worker sent a message that does not follow the protocol."""


class RuntimeCorrupted(SandboxError):
    """sandbox runtime corrupted by the script"""


class HostCallError(SandboxError):
    """A host API call failed; the message is shown to the script as is."""

    name = "Error"


class RateLimited(HostCallError):
    """rate limit exceeded"""

    name = "RateLimitError"


class FetchBlocked(HostCallError):
    """fetch blocked: the address is not reachable from scripts"""
