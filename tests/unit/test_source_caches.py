"""The sources a process holds so that a version's source travels once (#17, fairness: a
tenant's 1 MiB script brought with every run made every other tenant wait). Two caches: the
daemon's (consumer/sources.py: what it names to the claim), and the worker's with its parent's
mirror (protocol.Sources), which must agree at every step - a worker told it holds a source
it dropped would fail the run."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.sandbox import protocol
from consumer.sources import Named, Sources

T1, T2 = uuid.uuid4(), uuid.uuid4()
S1, S2 = uuid.uuid4(), uuid.uuid4()
BIG = "x" * 5000


def row(tenant: uuid.UUID, script: uuid.UUID, digest: str, source: str | None) -> dict[str, Any]:
    return {"tenant_id": tenant, "script_id": script, "version_id": digest, "source": source}


# ------------------------------------------------------------------ the worker and its parent
versions = st.sampled_from([("t1", "s1", "a"), ("t1", "s1", "b"), ("t1", "s2", "a"),
                            ("t2", "s1", "a"), ("t2", "s3", "c")])
sizes = st.sampled_from([10, 4095, 4096, 5000, 9000, 20000])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(versions, sizes), max_size=60),
       st.sampled_from([8000, 12000, 30000]))
def test_the_parent_always_knows_what_its_worker_holds(
    runs: list[tuple[tuple[str, str, str], int]], capacity: int
) -> None:
    """Whatever the sequence of RUNs (sizes around the threshold and the capacity, versions
    of one script, of two tenants), every RUN sent without its source arrives at a worker that
    holds exactly that source, and one sent with it carries it unchanged."""
    parent = protocol.Sources(keep=False, capacity=capacity)
    worker = protocol.Sources(keep=True, capacity=capacity)
    texts: dict[tuple[str, str, str], str] = {}
    for version, size in runs:
        # a version's text is always the same (its size the first one drawn for it)
        text = texts.setdefault(version, ("".join(version) * size)[:size])
        sent = parent.outgoing(version, text)
        assert sent is None or sent == text
        assert worker.incoming(version, sent) == text
        assert len(parent) == len(worker)


def test_small_sources_always_travel_and_large_ones_once() -> None:
    parent = protocol.Sources(keep=False)
    assert parent.outgoing(("t", "s", "v"), "function handler() {}") is not None
    assert parent.outgoing(("t", "s", "v"), "function handler() {}") is not None
    assert parent.outgoing(("t", "s", "w"), BIG) == BIG
    assert parent.outgoing(("t", "s", "w"), BIG) is None
    # the same digest of another script, or of another tenant, is another version
    assert parent.outgoing(("t", "other", "w"), BIG) == BIG
    assert parent.outgoing(("u", "s", "w"), BIG) == BIG


def test_a_worker_without_the_source_says_so() -> None:
    """A parent's broken promise is a failed run (runner: source_lost), never a guess."""
    worker = protocol.Sources(keep=True)
    assert worker.incoming(("t", "s", "v"), None) is None
    worker.incoming(("t", "s", "v"), BIG)
    assert worker.incoming(("t2", "s", "v"), None) is None


def test_a_run_without_its_source_goes_over_the_wire() -> None:
    run = protocol.Run(7, "t", "s", "v", None, "{}", "{}", 1000, 1 << 20, 1 << 16, 0)
    line = protocol.frame(run.encode())
    assert protocol.to_worker(protocol.decode(line.rstrip(b"\n"))) == run


# ------------------------------------------------------------------ the daemon's cache
def test_a_claim_brings_a_version_once_and_the_rest_share_it() -> None:
    sources = Sources()
    got = sources.fill([row(T1, S1, "a", BIG), row(T1, S1, "a", None), row(T1, S1, "a", None)],
                       sources.named())
    assert got == [BIG, BIG, BIG]
    assert got[0] is got[1] is got[2]


def test_named_versions_are_the_large_ones_most_recent_first() -> None:
    sources = Sources(max_named=2)
    sources.fill([row(T1, S1, "a", BIG), row(T1, S2, "b", BIG + "b"), row(T2, S1, "c", "tiny"),
                  row(T2, S2, "d", BIG + "d")], None)
    named = sources.named()
    assert (named.scripts, named.digests) == ([S2, S2], ["d", "b"])
    assert sources.fill([row(T2, S2, "d", None)], named) == [BIG + "d"]


def test_a_source_is_never_taken_from_another_tenant_or_script() -> None:
    """The same digest in another tenant's (or script's) row is not the same version: a row
    without its source whose version was not named has none (its run fails, saying so)."""
    sources = Sources()
    sources.fill([row(T1, S1, "a", BIG)], None)
    named = sources.named()
    assert sources.fill([row(T2, S1, "a", None), row(T1, S2, "a", None)], named) == [None, None]


def test_the_named_sources_outlive_their_eviction() -> None:
    """A version named to a claim stays usable for that claim's answer, even when another
    statement meanwhile pushed it out of the cache."""
    sources = Sources(held_chars=6000)
    sources.fill([row(T1, S1, "a", BIG)], None)
    named = sources.named()
    sources.fill([row(T1, S2, "b", "y" * 5000)], None)  # evicts (T1, S1, a)
    assert len(sources) == 1
    assert sources.fill([row(T1, S1, "a", None)], named) == [BIG]


def test_unnamed_cache_is_empty_named() -> None:
    assert Sources().named() == Named([], [], {})
