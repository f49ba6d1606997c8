"""A few shared bytes through which a worker tells its parent what it is doing right now.

The worker writes, before each JavaScript step, which execution runs and until when it may;
a heartbeat proves its event loop turns. When a worker dies or freezes, the parent reads the
slot to know which execution is guilty — without a message per step, and even when the worker
can no longer speak. Writes are plain 8-byte stores into a shared mapping (no syscalls).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import tempfile
import time
from dataclasses import dataclass

# running seq (0 = none), its deadline (monotonic ns), heartbeat, when the running step began,
# and the phase: why the worker is busy, so that a kill gives the verdict of the true cause
_LAYOUT = struct.Struct("<qqqqq")
SIZE = _LAYOUT.size
RUNNING = 0  # a step of JavaScript
CLOSING_AFTER_MEMORY = 1  # tearing down a context that hit its memory limit
CLOSING = 2  # tearing down a context for any other reason


@dataclass(frozen=True, slots=True)
class SlotState:
    seq: int
    deadline_ns: int
    heartbeat_ns: int
    since_ns: int
    phase: int


class Slot:
    def __init__(self, path: str, *, create: bool) -> None:
        self.path = path
        flags = os.O_RDWR | (os.O_CREAT | os.O_TRUNC if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, mmap.PAGESIZE)
            self._map = mmap.mmap(fd, mmap.PAGESIZE)
        finally:
            os.close(fd)

    @classmethod
    def create(cls) -> Slot:
        directory = "/dev/shm" if os.path.isdir("/dev/shm") else None
        fd, path = tempfile.mkstemp(prefix="jsrt-slot-", dir=directory)
        os.close(fd)
        return cls(path, create=True)

    def enter(self, seq: int, deadline_ns: int, phase: int = RUNNING) -> None:
        struct.pack_into("<qq", self._map, 24, time.monotonic_ns(), phase)
        struct.pack_into("<qq", self._map, 0, seq, deadline_ns)

    def leave(self) -> None:
        struct.pack_into("<q", self._map, 0, 0)

    def beat(self) -> None:
        struct.pack_into("<q", self._map, 16, time.monotonic_ns())

    def read(self) -> SlotState:
        return SlotState(*_LAYOUT.unpack_from(self._map, 0))

    def unlink(self) -> None:
        """Remove the file; the mappings already made stay valid. Done as soon as the worker
        has mapped it, so that nothing is left in /dev/shm when a process is killed."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def close(self, *, unlink: bool = False) -> None:
        self._map.close()
        if unlink:
            self.unlink()
