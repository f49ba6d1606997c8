"""The daemon's handle on one worker process: spawn it, talk to it, watch it, kill it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from consumer.sandbox import protocol
from consumer.sandbox.errors import ProtocolError, WorkerStartError
from consumer.sandbox.memory import Statm
from consumer.sandbox.slot import Slot

_ROOT = str(Path(__file__).resolve().parents[2])  # the directory that holds the `consumer` package
_STDERR_TAIL = 16
_SEE_ALSO = re.compile(r"\s*\(see [^)]*\)")
_PATH = re.compile(r"(/[\w.+-]+){2,}")
log = structlog.get_logger("jsrt.sandbox")


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    rlimit_data_bytes: int
    max_idle_contexts: int
    max_context_runs: int
    start_timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class KillReason:
    kind: str  # "timeout" | "memory" | "unresponsive" | "protocol" | "shutdown"
    guilty_seq: int | None


OnMessage = Callable[["WorkerProcess", protocol.Done | protocol.Call | protocol.Revoked], None]
OnLost = Callable[["WorkerProcess"], None]


class WorkerProcess(asyncio.SubprocessProtocol):
    def __init__(self, index: int, slot: Slot, on_message: OnMessage, on_lost: OnLost) -> None:
        self.index = index
        self.slot = slot
        self.pid = 0
        self.inflight: dict[int, Any] = {}  # seq → the executor's pending execution
        self.executions = 0
        self.started_at = time.time()
        self.kill_reason: KillReason | None = None
        self.long_step = False  # a step is running long: no new runs for this worker
        self.active_at = 0.0  # (monotonic) last run sent, result received or warm-up sent
        self.stderr_tail: deque[str] = deque(maxlen=_STDERR_TAIL)
        self.sources = protocol.Sources(keep=False)  # what this worker holds (its mirror)
        self._on_message = on_message
        self._on_lost = on_lost
        self._lines = protocol.LineBuffer(protocol.from_worker, self._dispatch)
        self._stderr_partial = b""
        self._transport: asyncio.SubprocessTransport | None = None
        self._writer: protocol.BatchWriter | None = None
        self._statm: Statm | None = None
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    @classmethod
    async def spawn(
        cls, index: int, settings: WorkerSettings, on_message: OnMessage, on_lost: OnLost
    ) -> WorkerProcess:
        loop = asyncio.get_running_loop()
        worker = cls(index, Slot.create(), on_message, on_lost)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")])),
        }
        try:
            await loop.subprocess_exec(
                lambda: worker,
                sys.executable,
                "-m",
                "consumer.sandbox.worker",
                "--slot",
                worker.slot.path,
                "--rlimit-data",
                str(settings.rlimit_data_bytes),
                "--max-idle-contexts",
                str(settings.max_idle_contexts),
                "--max-context-runs",
                str(settings.max_context_runs),
                "--parent-pid",
                str(os.getpid()),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=_ROOT,
                env=env,
            )
            try:
                async with asyncio.timeout(settings.start_timeout_s):
                    await asyncio.wait(
                        {worker.ready, worker.closed}, return_when=asyncio.FIRST_COMPLETED
                    )
            except TimeoutError:
                pass
            if not worker.ready.done():
                worker.kill(KillReason("shutdown", None))
                await worker.closed
                raise WorkerStartError(f"sandbox worker did not start: {worker.describe_exit()}")
            return worker
        except BaseException:
            # failed, or cancelled while starting (the executor closing, say): nothing of it
            # may outlive this call
            if worker._transport is not None:
                worker._transport.close()  # kills the process if it still runs
            raise
        finally:
            # Ready (or failed, or cancelled while starting): the worker has mapped its slot
            # or never will, and the name is no longer needed - a SIGKILLed daemon (no close)
            # or a start cut short would otherwise leave the file in /dev/shm for good.
            worker.slot.unlink()

    # asyncio.SubprocessProtocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self._transport = transport
        self.pid = transport.get_pid()
        self._statm = Statm(self.pid)
        stdin = transport.get_pipe_transport(0)
        assert isinstance(stdin, asyncio.WriteTransport)
        self._writer = protocol.BatchWriter(asyncio.get_running_loop(), stdin.write)

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            try:
                self._lines.feed(data)
            except ProtocolError as exc:
                # The worker no longer follows the protocol: it is killed, and what it held is
                # re-run or failed by the executor's _on_lost.
                log.error("worker_protocol_error", index=self.index, pid=self.pid,
                          error=f"{type(exc).__name__}: {exc}"[:300])
                self.kill(KillReason("protocol", None))
        else:
            lines = (self._stderr_partial + data).split(b"\n")
            self._stderr_partial = lines.pop()[-4096:]
            self.stderr_tail.extend(
                line.decode("utf-8", "replace")[:500] for line in lines if line.strip()
            )

    def connection_lost(self, exc: Exception | None) -> None:
        if self._statm is not None:
            self._statm.close()
        if not self.ready.done():
            self.ready.cancel()
        self.closed.set_result(None)
        self._on_lost(self)

    def _dispatch(self, message: protocol.FromWorker) -> None:
        if isinstance(message, protocol.Ready):
            if not self.ready.done():
                self.ready.set_result(None)
            return
        self._on_message(self, message)

    # the daemon's side
    @property
    def alive(self) -> bool:
        return (
            self.ready.done()
            and not self.ready.cancelled()
            and self.kill_reason is None
            and not self.closed.done()
        )

    def send(self, message: protocol.ToWorker) -> None:
        if self._writer is not None and not self.closed.done():
            self._writer.send(message)

    def rss_bytes(self) -> int:
        return self._statm.rss_bytes() if self._statm is not None else 0

    def kill(self, reason: KillReason) -> None:
        if self.kill_reason is None:
            self.kill_reason = reason
        if self._transport is not None and not self.closed.done():
            with contextlib.suppress(ProcessLookupError):
                self._transport.kill()

    async def stop(self, timeout_s: float = 2.0) -> None:
        """Ask the worker to exit; kill it if it does not."""
        if not self.closed.done():
            self.kill_reason = self.kill_reason or KillReason("shutdown", None)
            self.send(protocol.Quit())
            try:
                async with asyncio.timeout(timeout_s):
                    await asyncio.shield(self.closed)
            except TimeoutError:
                self.kill(KillReason("shutdown", None))
                await self.closed
        if self._transport is not None:
            self._transport.close()
        self.slot.close(unlink=True)

    def describe_exit(self) -> str:
        """What the engine said when it died, or how the process ended."""
        fatal = [
            _SEE_ALSO.sub("", line.lstrip("# ")).strip()
            for line in self.stderr_tail
            if "Fatal" in line or "out of memory" in line
        ]
        fatal = [
            line for line in fatal if line and not line.endswith(":") and not _PATH.search(line)
        ]
        if fatal:  # never a file path in a message a tenant will read
            return fatal[-1]
        code = self._transport.get_returncode() if self._transport is not None else None
        if code is not None and code < 0:
            return f"worker killed by {signal.Signals(-code).name}"
        if code == 133:  # 128 + SIGTRAP, as reported through a shell
            return "worker killed by SIGTRAP"
        return f"worker exited with status {code}"
