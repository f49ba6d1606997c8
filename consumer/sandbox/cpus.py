"""Where sandbox workers run: worker i bound to the i-th CPU of the daemon's allowed set,
round robin.

Every step crosses threads inside a worker: mini-racer runs each isolate on a thread of its
own, so a run is posted from the worker's loop thread to the isolate's thread and its result
posted back (engine.py). When the two threads sit on different CPUs, each hand-over wakes a
sleeping CPU with an inter-processor interrupt, which costs most on a virtual machine: a bare
eval round trip measured 87 µs of CPU (2 context switches) unbound against 33 µs (1) with
both threads on one CPU, and a worker's sequential runs 0.84-0.89 -> 0.61-0.67 ms p50
(2-core AMD EPYC VM, 2026-12-02). Bound, the threads of one worker share a CPU and the
workers spread over the CPUs; the daemon and PostgreSQL stay free to run anywhere.
JSRT_PIN_WORKERS=false leaves placement to the scheduler.
"""

from __future__ import annotations

import contextlib
import os


def cpu_for(index: int) -> int | None:
    """The CPU for worker `index`, or None where there is nothing to choose (one CPU)."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None
    return allowed[index % len(allowed)]


def bind(cpu: int) -> None:
    """Bind the calling process (its threads to come) to `cpu`. A CPU that is no longer
    allowed (taken offline, a changed cpuset) leaves the worker unbound: binding is a
    speed-up, never a condition of running."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {cpu})
