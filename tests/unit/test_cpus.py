"""Which CPU each sandbox worker is bound to (consumer/sandbox/cpus.py)."""

from __future__ import annotations

import os

import pytest

from consumer.sandbox import cpus


def test_workers_go_round_the_allowed_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {5, 2, 7})
    assert [cpus.cpu_for(i) for i in range(5)] == [2, 5, 7, 2, 5]


def test_one_cpu_leaves_nothing_to_bind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    assert cpus.cpu_for(0) is None


def test_a_cpu_that_cannot_be_had_leaves_the_process_as_it_was() -> None:
    before = os.sched_getaffinity(0)
    cpus.bind(10_000)  # no such CPU: EINVAL, ignored
    assert os.sched_getaffinity(0) == before
