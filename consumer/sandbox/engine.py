"""One V8 context (its own isolate and thread, in mini-racer 0.14.1), driven only by text.

Every interaction is `eval_cancelable(code) -> str`: a running step can always be cancelled
(mini-racer terminates it), and no call here ever blocks the worker's event loop on a busy
isolate — mini-racer's object, function and promise helpers do, so they are never used.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Callable
from contextlib import ExitStack
from importlib import resources
from typing import Any

from py_mini_racer import JSEvalException, JSOOMException, JSParseException, JSTimeoutException

# The raw context, not MiniRacer: MiniRacer's constructor installs a setTimeout shim (0.8 ms
# per context, and timers that run outside any step). Pinned: mini-racer==0.14.1.
from py_mini_racer._mini_racer import _make_context

_FILES = resources.files("consumer.sandbox")


def _lazy_source(name: str) -> str:
    """A lazily compiled piece as a string literal (JSON's strings are JavaScript's), without
    its comment lines and indentation (the pieces have no multi-line strings)."""
    lines = (line.strip() for line in _FILES.joinpath(name).read_text().splitlines())
    return json.dumps("\n".join(line for line in lines if line and not line.startswith("//")))


PRELUDE = _FILES.joinpath("prelude.js").read_text()
# The pieces the prelude compiles on first use (see prelude.js, lazy), and the names that
# reach them. A context gets a piece's source only when its script's source names one of
# them (as any substring: `baseURL` counts): scanning the stdlib's source as a string
# literal costs a fresh context about a third of the prelude's own compilation, and most
# scripts never use it. For a script that reaches one only through a computed name
# (`globalThis['cry' + 'pto']`), it is not there.
LAZY: dict[str, tuple[str, re.Pattern[str]]] = {
    "iota": (_lazy_source("iota.js"), re.compile("sdk|events")),
    "stdlib": (_lazy_source("stdlib.js"), re.compile(
        "URL|TextEncoder|TextDecoder|atob|btoa|structuredClone|crypto|DOMException")),
}


def provisions(source: str, api: str) -> str:
    """Code that hands a context the lazy pieces its script's source names."""
    return "".join(f'{api}.provide("{key}",{text});' for key, (text, names) in LAZY.items()
                   if names.search(source))
_LOCATION = re.compile(r"^<anonymous>:(\d+): (.*)$")


class ScriptError(Exception):
    """JavaScript threw (or did not parse) outside the handler's promise."""

    def __init__(self, error: str, stack: str | None) -> None:
        super().__init__(error)
        self.error = error
        self.stack = stack


class MemoryLimitHit(Exception):
    """V8's heap limit terminated the step."""


class StepTimeout(Exception):
    """The step ran past its execution's deadline."""


class JsContext:
    """A context with the prelude loaded; `assign` gives it to one script version for good.

    `api` is the name of the prelude's runtime object in this context: a global lexical
    binding with a random name, reachable by the worker's code and by no script."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.key: tuple[str, str, str] | None = None
        self.source = ""
        self.runs = 0
        self.api = "__jsrt_" + secrets.token_hex(16)
        self.held = 0  # RSS charged to this context (see ledger.py)
        self.reclaimed_at = 0
        self._closed = False
        self._stack = ExitStack()
        self._mr = self._stack.enter_context(_make_context(loop))

    @classmethod
    async def create(cls, timeout: float) -> JsContext:
        """A booted context. Creating the isolate (about 1.5 ms of CPU, with the GIL released)
        happens on a thread, so the worker's loop keeps turning meanwhile."""
        ctx = await asyncio.to_thread(cls, asyncio.get_running_loop())
        try:
            await ctx.eval(f"const {ctx.api} = {PRELUDE};", timeout)
        except BaseException:
            ctx.close()
            raise
        return ctx

    async def collect_garbage(self) -> None:
        """A full collection (only between steps: the isolate must be idle). On a thread: a
        large heap takes milliseconds."""
        try:
            await asyncio.to_thread(self._mr.low_memory_notification)
        except RuntimeError:  # no thread to be had (see aclose)
            self._mr.low_memory_notification()

    def assign(self, key: tuple[str, str, str], source: str) -> None:
        self.key, self.source = key, source

    def set_memory_limit(self, limit: int) -> None:
        self._mr.set_hard_memory_limit(limit)

    async def eval(self, code: str, timeout: float) -> str:
        """Evaluate; translate every engine outcome into our exceptions."""
        return await self.step(code, None, timeout)

    async def step(self, code: str, then: str | None, timeout: float) -> str:
        """Evaluate `code`, then `then` in a separate task (after the microtask checkpoint),
        under one deadline; return the last value."""
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                if then is None:
                    value = await self._mr.eval_cancelable(code)
                else:
                    value = await self._pipelined(code, then)
        except TimeoutError as exc:
            raise StepTimeout from exc
        except JSOOMException as exc:
            raise MemoryLimitHit from exc
        except JSParseException as exc:
            raise parse_error(str(exc)) from None
        except JSTimeoutException as exc:
            raise StepTimeout from exc
        except JSEvalException as exc:
            if self._mr.was_hard_memory_limit_reached():
                raise MemoryLimitHit from exc
            raise eval_error(str(exc)) from None
        except UnicodeEncodeError:
            # V8 is handed UTF-8. Inputs and results are checked JSON text and no stored
            # source can hold one, so this is a source given directly (the embedded API).
            raise ScriptError("the source is not valid Unicode: it contains an unpaired "
                              "UTF-16 surrogate", None) from None
        return value if isinstance(value, str) else ""

    async def _pipelined(self, code: str, then: str) -> Any:
        """Evaluate `code`, then `then`, as two tasks queued on the isolate's thread at once:
        it runs the second (after the microtask checkpoint between two tasks) as soon as the
        first ends, without waiting for this loop to hand it over - one thread hop per step
        instead of two. mini-racer's eval_cancelable, taken apart (pinned 0.14.1): the same
        callbacks, value handles and cancellation, for two tasks.

        Cut short (a timeout, the memory watchdog, a cancelled run), the second task is
        cancelled first, while the first still runs, so it never starts: a terminated step's
        console lines stay for the salvage (collect would take them). When the first throws,
        the second may have run: its outbox is lost with the context, which a throwing step
        never keeps."""
        mr = self._mr
        loop = asyncio.get_running_loop()
        first: asyncio.Future[Any] = loop.create_future()
        second: asyncio.Future[Any] = loop.create_future()

        def settles(future: asyncio.Future[Any]) -> Callable[[Any], None]:
            def callback(handle: Any) -> None:
                if future.done():
                    return
                try:
                    future.set_result(mr._value_handle_to_python(handle))
                except JSEvalException as exc:
                    future.set_exception(exc)
            return callback

        with mr._register_cancelable_mr_task_callback(settles(first)) as first_id, \
                mr._register_cancelable_mr_task_callback(settles(second)) as second_id:
            # the handles live in this frame until both tasks are over
            code_handle = mr._python_to_value_handle(code)
            then_handle = mr._python_to_value_handle(then)
            first_task = mr._dll.mr_eval(mr._ctx, code_handle.raw, first_id)
            second_task = mr._dll.mr_eval(mr._ctx, then_handle.raw, second_id)
            try:
                await first
                return await second
            finally:
                # (ignored for a task that is over)
                mr._dll.mr_cancel_task(mr._ctx, second_task)
                mr._dll.mr_cancel_task(mr._ctx, first_task)
                for future in (first, second):  # an exception not awaited is not logged
                    if future.done() and not future.cancelled():
                        future.exception()
                    else:
                        future.cancel()

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        """Close on a thread: freeing an isolate takes about 1.4 ms with the GIL released,
        which the worker's loop spends on other work meanwhile."""
        self._closed = True
        try:
            await asyncio.to_thread(self._stack.close)
        except RuntimeError:
            # no thread to be had (a bomb of untouched buffers ran the worker into its
            # RLIMIT_DATA, which thread stacks count against): close here, blocking the loop
            # for the milliseconds it takes - the memory comes back with it
            self._stack.close()

    def close(self) -> None:
        # Freeing the context stops any JavaScript still running in it (leftover microtasks)
        # and waits for its thread: after this, the script can no longer allocate or crash.
        self._closed = True
        self._stack.close()


def parse_error(message: str) -> ScriptError:
    """ "<anonymous>:3: SyntaxError: Unexpected token '='…" → "SyntaxError: … at line 3"."""
    first = message.split("\n", 1)[0]
    match = _LOCATION.match(first)
    if match is None:
        return ScriptError(first or "SyntaxError", None)
    return ScriptError(f"{match.group(2)} at line {match.group(1)}", None)


def eval_error(message: str) -> ScriptError:
    """An exception thrown by a script's top level: first line, and the stack after the excerpt."""
    head, _, rest = message.partition("\n")
    match = _LOCATION.match(head)
    error = match.group(2) if match else head
    stack = rest.split("\n\n", 1)[1].strip() if "\n\n" in rest else None
    return ScriptError(error or "Error", stack or None)
