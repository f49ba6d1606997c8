"""The scripts' sources a process holds, so that a claim or a start need not bring the same
source again with every run. A script may be 1 MiB: brought with each of a claim's runs, one
tenant's large script made every claim slow and every other tenant's events wait behind it
(measured: 1.2-5.5 s instead of 6-18 ms). Now the database sends a version's source once per
statement, and not at all when this process names it among the versions it holds
(jsrt_claim_v4, jsrt_start_now_v3).

A version is (tenant, script, digest): a source is only ever taken for the same script of the
same tenant, never found by its digest alone. Only sources of MIN_HELD characters and more are
held (resending a small one costs less than naming it), MAX_NAMED of them named per statement,
HELD_CHARS in all; the least recently used go first."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple
from uuid import UUID

from consumer import log

_LOG = log.get("jsrt.sources")

MIN_HELD = 4096
MAX_NAMED = 256
HELD_CHARS = 64 << 20

Version = tuple[UUID, UUID, str]  # (tenant_id, script_id, digest)


class Named(NamedTuple):
    """The versions named to one statement, and their sources, held for its answer (another
    statement meanwhile may push them out of the cache)."""

    scripts: list[UUID]
    digests: list[str]
    sources: dict[Version, str]


class Sources:
    def __init__(self, min_held: int = MIN_HELD, max_named: int = MAX_NAMED,
                 held_chars: int = HELD_CHARS) -> None:
        self._min = min_held
        self._max_named = max_named
        self._capacity = held_chars
        self._held: OrderedDict[Version, str] = OrderedDict()
        self._chars = 0

    def __len__(self) -> int:
        return len(self._held)

    def named(self) -> Named:
        """The most recently used versions, to name to the next statement."""
        sources: dict[Version, str] = {}
        for version in reversed(self._held):
            if len(sources) == self._max_named:
                break
            sources[version] = self._held[version]
        return Named([v[1] for v in sources], [v[2] for v in sources], sources)

    def fill(self, rows: Sequence[Mapping[str, Any]], named: Named | None) -> list[str | None]:
        """Each row's source: the one it came with, or (NULL) that of an earlier row of the
        same version, or of a version named. None where neither is there (the statement
        broke its promise: the caller fails that run, never guesses)."""
        seen: dict[Version, str] = dict(named.sources) if named is not None else {}
        out: list[str | None] = []
        for row in rows:
            version = (row["tenant_id"], row["script_id"], row["version_id"])
            source = row["source"]
            if source is None:
                source = seen.get(version)
                if source is None:
                    _LOG.error("source_missing", tenant_id=str(version[0]),
                               script_id=str(version[1]), version_id=version[2])
            else:
                # equal versions share one copy (a local queue of hundreds of runs of a
                # 1 MiB script holds it once): an equal text only
                kept = seen.setdefault(version, source)
                source = kept if kept == source else source
            if source is not None:
                self._use(version, source)
            out.append(source)
        return out

    def _use(self, version: Version, source: str) -> None:
        if len(source) < self._min or len(source) > self._capacity:
            return
        held = self._held.get(version)
        if held is not None:
            self._held.move_to_end(version)
            if held == source:
                return
            self._chars -= len(held)
        self._held[version] = source
        self._chars += len(source)
        while self._chars > self._capacity:
            _, gone = self._held.popitem(last=False)
            self._chars -= len(gone)
