"""A sandbox worker process: `python -m consumer.sandbox.worker --slot PATH`.

It runs tenants' JavaScript so that the daemon never has to: when V8 aborts, hangs or eats
memory, only this process is lost, and its parent replaces it. Requests arrive on stdin and
results leave on stdout (see protocol.py); stderr carries V8's own fatal messages.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import resource
import signal
import sys
from typing import Any

HEARTBEAT_S = 0.1


def _harden(rlimit_data: int) -> None:
    # RLIMIT_DATA (not RLIMIT_AS, which V8's address-space reservations break) turns an
    # ArrayBuffer bomb into a RangeError instead of a machine-wide memory shortage.
    if rlimit_data > 0:
        resource.setrlimit(resource.RLIMIT_DATA, (rlimit_data, rlimit_data))
    # Die with the parent, even when stuck inside V8 and deaf to the closed stdin.
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:
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
    def __init__(self, on_message: Any, on_eof: Any) -> None:
        from consumer.sandbox.protocol import LineBuffer

        self._lines = LineBuffer(on_message)
        self._on_eof = on_eof

    def data_received(self, data: bytes) -> None:
        self._lines.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_eof()


async def serve(args: argparse.Namespace) -> None:
    from consumer.sandbox import protocol
    from consumer.sandbox.contexts import ContextPool
    from consumer.sandbox.engine import JsContext
    from consumer.sandbox.runner import Job, Runner
    from consumer.sandbox.slot import Slot
    from consumer.sandbox.watchdog import MemoryWatchdog

    loop = asyncio.get_running_loop()
    read_fd, write_fd = _protocol_fds()
    write_transport, _ = await loop.connect_write_pipe(
        asyncio.Protocol, os.fdopen(write_fd, "wb", 0)
    )
    writer = protocol.BatchWriter(loop, write_transport.write)  # type: ignore[attr-defined]
    slot = Slot(args.slot, create=False)
    pool = ContextPool(args.max_idle_contexts, args.max_context_runs)
    watchdog = MemoryWatchdog(loop)
    runner = Runner(writer.send, slot, pool, watchdog)
    jobs: dict[int, Job] = {}
    stopped = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    def on_message(message: list[Any]) -> None:
        kind = message[0]
        if kind == protocol.RUN:
            job = Job.from_message(message)
            jobs[job.seq] = job
            task = loop.create_task(runner.run(job))
            tasks.add(task)
            task.add_done_callback(lambda t, seq=job.seq: (tasks.discard(t), jobs.pop(seq, None)))
        elif kind == protocol.RET:
            job = jobs.get(message[1])
            if job is not None:
                job.deliver(message[2:])
        elif kind == protocol.QUIT:
            stopped.set()

    await loop.connect_read_pipe(
        lambda: _Reader(on_message, stopped.set), os.fdopen(read_fd, "rb", 0)
    )
    # The first context pays for V8's own start-up (about 0.1 s); pay it before saying ready.
    warmup = JsContext(("", "", ""), "")
    await warmup.boot(10.0)
    warmup.close()

    async def heartbeat() -> None:
        while True:
            slot.beat()
            await asyncio.sleep(HEARTBEAT_S)

    beat = loop.create_task(heartbeat())
    writer.send([protocol.READY, os.getpid()])
    await stopped.wait()
    beat.cancel()
    writer.flush()
    pool.close()
    watchdog.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="consumer.sandbox.worker")
    parser.add_argument("--slot", required=True)
    parser.add_argument("--rlimit-data", type=int, default=2 << 30)
    parser.add_argument("--max-idle-contexts", type=int, default=128)
    parser.add_argument("--max-context-runs", type=int, default=1000)
    args = parser.parse_args(argv)
    _harden(args.rlimit_data)
    asyncio.run(serve(args))
    sys.stderr.flush()
    # Skip interpreter teardown: V8's threads have nothing left to say.
    os._exit(0)


if __name__ == "__main__":
    main()
