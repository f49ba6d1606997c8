"""What every console page is given (ConsoleContext) and the refusals pages raise; the
handlers in consumer/console/__init__.py turn the refusals into pages in words."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
from starlette.requests import Request

from consumer.clock import Clock, SystemClock
from consumer.errors import JsrtError
from consumer.settings import Settings
from consumer.store import Store

if TYPE_CHECKING:
    from consumer.ondemand import OnDemand
    from consumer.sandbox import Executor


class SignInRequired(JsrtError):
    """Sign in to use the console."""


class Forbidden(JsrtError):
    """This key is not allowed to do that."""


class CsrfRefused(Forbidden):
    """This form did not come from this console page, or it is too old (no valid CSRF token):
    reload the page and try again."""


class TooManySignIns(JsrtError):
    """Too many failed sign-ins from this address: wait a minute and try again."""


class TooManyChecks(JsrtError):
    """Too many checks of script sources from this key in the last minute: wait a minute and
    try again."""


class SignInLimiter:
    """Events per client (a failed sign-in per address, a source check per key) in the last
    minute, in this process (the keys' comparison is constant-time already; this bounds
    guessing, and the V8 parses a person can ask of a process that serves every tenant)."""

    MAX_CLIENTS = 10_000  # bounded memory under a spray of addresses

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        # least recently failed first: a spray of new addresses evicts those gone quiet, and
        # an address that is tried again within the last MAX_CLIENTS stays counted (clearing
        # the whole table, as before, reset the count of the address being guessed at)
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, client: str) -> deque[float]:
        now = time.monotonic()
        failures = self._failures.setdefault(client, deque())
        while failures and failures[0] < now - 60:
            failures.popleft()
        if not failures:
            self._failures.pop(client, None)
        return failures

    def blocked(self, client: str) -> bool:
        return len(self._recent(client)) >= self.per_minute

    def failed(self, client: str) -> None:
        self._failures.setdefault(client, deque()).append(time.monotonic())
        self._failures.move_to_end(client)
        while len(self._failures) > self.MAX_CLIENTS:
            self._failures.popitem(last=False)


CHECKS_PER_MINUTE = 120


@dataclass(slots=True)
class ConsoleContext:
    store: Store
    settings: Settings
    executor: Executor | None = None
    # runs started by the console (Run now): the same path as `jsrt exec` and HTTP; None when
    # the process has no sandbox (then the page says so)
    ondemand: OnDemand | None = None
    clock: Clock = field(default_factory=SystemClock)
    signins: SignInLimiter = field(default_factory=lambda: SignInLimiter(10))
    # Checking a source parses it with V8 in this process, which may be the daemon of every
    # tenant: a few at a time, and a person's share per minute (the editor checks as one
    # types, about one a second at most).
    checks: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(2))
    check_rate: SignInLimiter = field(default_factory=lambda: SignInLimiter(CHECKS_PER_MINUTE))

    @property
    def session_seconds(self) -> float:
        return self.settings.console_session_hours * 3600

    @property
    def idle_seconds(self) -> float:
        return self.settings.console_idle_minutes * 60


def console(request: Request) -> ConsoleContext:
    """The context of the console app serving this request."""
    ctx: ConsoleContext = request.app.state.console
    return ctx
