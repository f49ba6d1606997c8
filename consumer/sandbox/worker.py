"""A sandbox worker process: `python -m consumer.sandbox.worker --slot PATH --parent-pid PID`.

It runs tenants' JavaScript so that the daemon never has to: when V8 aborts, hangs or eats
memory, only this process is lost, and its parent replaces it. Requests arrive on stdin and
results leave on stdout (see protocol.py); stderr carries V8's own fatal messages.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import os
import resource
import signal
import sys
import traceback
from collections.abc import Callable

from consumer.sandbox import protocol
from consumer.sandbox.contexts import ContextPool
from consumer.sandbox.engine import JsContext
from consumer.sandbox.errors import ProtocolError
from consumer.sandbox.fairlock import FairLock
from consumer.sandbox.ledger import Ledger
from consumer.sandbox.memory import Statm
from consumer.sandbox.runner import Job, Runner
from consumer.sandbox.slot import Slot
from consumer.sandbox.watchdog import MemoryWatchdog

HEARTBEAT_S = 0.1
THREAD_STACK_BYTES = 2 << 20


def _harden(rlimit_data: int, parent_pid: int) -> None:
    # RLIMIT_DATA (not RLIMIT_AS, which V8's address-space reservations break) turns an
    # ArrayBuffer bomb into a RangeError instead of a machine-wide memory shortage.
    if rlimit_data > 0:
        resource.setrlimit(resource.RLIMIT_DATA, (rlimit_data, rlimit_data))
    # Die with the parent, even when stuck inside V8 and deaf to the closed stdin.
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    # A parent that died before prctl leaves us re-parented. Compared with the pid the parent
    # gave, not with 1: a daemon that is itself PID 1 (a container's entrypoint) is alive.
    if os.getppid() != parent_pid:
        os._exit(1)


def _protocol_fds() -> tuple[int, int]:
    """Take fds 0/1 for the protocol, and point fd 1 at stderr so no stray print corrupts it."""
    read_fd, write_fd = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return read_fd, write_fd


class _Reader(asyncio.Protocol):
    def __init__(
        self, on_message: Callable[[protocol.ToWorker], None], on_eof: Callable[[], None]
    ) -> None:
        self._lines = protocol.LineBuffer(protocol.to_worker, on_message)
        self._on_eof = on_eof

    def data_received(self, data: bytes) -> None:
        try:
            self._lines.feed(data)
        except ProtocolError:
            # The parent sent a line that is no message (a bug on its side): stop, and let it
            # re-run what this worker held, rather than drop a run that it waits for.
            traceback.print_exc(file=sys.stderr)
            self._on_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_eof()


class _Jobs:
    """The executions this worker holds, by the parent's sequence number."""

    def __init__(self, runner: Runner, send: Callable[[protocol.FromWorker], None]) -> None:
        self._runner = runner
        self._send = send
        self._jobs: dict[int, tuple[Job, asyncio.Task[None]]] = {}
        self._chain_tails: dict[int, Job] = {}  # the last run of each chain held here
        self._sources = protocol.Sources(keep=True)  # mirrored by the parent

    def handle(self, message: protocol.Run | protocol.Ret | protocol.Revoke | protocol.Cancel
               | protocol.Warm) -> None:
        match message:
            case protocol.Run():
                source = self._sources.incoming(
                    (message.tenant_id, message.script_id, message.version_id), message.source)
                job = Job.from_run(message, source)
                if job.chain:
                    tail = self._chain_tails.get(job.chain)
                    if tail is not None and not tail.ended:
                        tail.next, job.after = job, tail
                    self._chain_tails[job.chain] = job
                self._runner.arriving += 1
                task = asyncio.get_running_loop().create_task(self._run(job))
                self._jobs[job.seq] = (job, task)
            case protocol.Ret():
                held = self._jobs.get(message.seq)
                if held is not None:
                    held[0].deliver(message)
            case protocol.Revoke(seq=seq):
                self._revoke(seq)
            case protocol.Cancel(seq=seq):
                self._cancel(seq)
            case protocol.Warm():
                self._runner.warm()

    def _cancel(self, seq: int) -> None:
        """A cancelled run: dropped if it has not begun; its step terminated (the context
        closed, the worker kept) if it is running alone or waiting between steps; a run
        inside another's batch step ends with the batch (the parent ignores its result)."""
        held = self._jobs.get(seq)
        if held is None:
            return
        job, task = held
        # A run of a chain is never taken out of its middle (revoke gives back the rest of
        # the chain with it): marked, it ends at once when its turn comes.
        if (not job.chain and self._runner.revoke(job)) or self._runner.cancel(job):
            task.cancel()

    def _revoke(self, seq: int) -> None:
        """Give a run back to the parent if it has not begun: it is waiting behind another
        execution's long step, and another worker can run it now."""
        held = self._jobs.get(seq)
        if held is None or not self._runner.revoke(held[0]):
            return
        job = held[0]
        # the rest of its chain goes back with it, in order (none of it has begun)
        for given in (job, *self._runner.chain_after(job)):
            self._jobs[given.seq][1].cancel()
            given.next = given.after = None
            self._send(protocol.Revoked(given.seq))

    async def _run(self, job: Job) -> None:
        try:
            await self._runner.run(job)
        except asyncio.CancelledError:
            pass  # revoked or cancelled before it began: the parent runs it elsewhere, or not
        finally:
            del self._jobs[job.seq]
            if job.chain and self._chain_tails.get(job.chain) is job:
                del self._chain_tails[job.chain]


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    read_fd, write_fd = _protocol_fds()
    write_transport, _ = await loop.connect_write_pipe(
        asyncio.Protocol, os.fdopen(write_fd, "wb", 0)
    )
    assert isinstance(write_transport, asyncio.WriteTransport)
    writer = protocol.BatchWriter(loop, write_transport.write)
    slot = Slot(args.slot, create=False)
    watchdog = MemoryWatchdog(loop)
    # The first context pays for V8's own start-up (about 0.1 s); pay it before saying ready,
    # and before the ledger takes the worker's empty RSS.
    (await JsContext.create(10.0)).close()
    lock = FairLock()  # the engine lock: one piece of V8 work at a time, tenants in turn
    ledger = Ledger(Statm().rss_bytes)
    pool = ContextPool(lock, ledger, args.max_idle_contexts, args.max_context_runs)
    jobs = _Jobs(Runner(writer.send, slot, pool, watchdog, lock, ledger), writer.send)
    stopped = asyncio.Event()

    def on_message(message: protocol.ToWorker) -> None:
        if isinstance(message, protocol.Quit):
            stopped.set()
        else:
            jobs.handle(message)

    await loop.connect_read_pipe(
        lambda: _Reader(on_message, stopped.set), os.fdopen(read_fd, "rb", 0)
    )

    async def heartbeat() -> None:
        while True:
            slot.beat()
            await asyncio.sleep(HEARTBEAT_S)

    beat = loop.create_task(heartbeat())
    gc.freeze()  # start-up's objects live as long as the worker: keep them out of collections
    writer.send(protocol.Ready(os.getpid()))
    await stopped.wait()
    beat.cancel()
    writer.flush()
    pool.close()
    watchdog.close()


def _small_stacks(argv: list[str]) -> None:
    """Re-exec with a 2 MiB stack limit, which glibc reads once at start-up as the default
    thread stack size: every V8 context owns a thread, and RLIMIT_DATA counts its stack."""
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if soft == resource.RLIM_INFINITY or soft > THREAD_STACK_BYTES:
        if hard != resource.RLIM_INFINITY and hard < THREAD_STACK_BYTES:
            return
        resource.setrlimit(resource.RLIMIT_STACK, (THREAD_STACK_BYTES, hard))
        os.execv(sys.executable, [sys.executable, "-m", "consumer.sandbox.worker", *argv])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    _small_stacks(argv)
    parser = argparse.ArgumentParser(prog="consumer.sandbox.worker")
    parser.add_argument("--slot", required=True)
    parser.add_argument("--rlimit-data", type=int, default=2 << 30)
    parser.add_argument("--max-idle-contexts", type=int, default=32)
    parser.add_argument("--max-context-runs", type=int, default=1000)
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    _harden(args.rlimit_data, args.parent_pid)
    asyncio.run(serve(args))
    sys.stderr.flush()
    # Skip interpreter teardown: V8's threads have nothing left to say.
    os._exit(0)


if __name__ == "__main__":
    main()
