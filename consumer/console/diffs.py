"""Diffs between two versions of a script, computed on the server (difflib) as rows a
template renders as a table: side by side, or unified. Pure functions."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

CONTEXT = 3  # unchanged lines kept around each change


@dataclass(frozen=True, slots=True)
class Row:
    """One row: `kind` is same | add | del | chg (side by side: a changed pair) | hunk (a
    gap of unchanged lines left out, `old`/`new` say where the next part starts)."""

    kind: str
    old_no: int | None = None
    old: str = ""
    new_no: int | None = None
    new: str = ""


def _lines(text: str) -> list[str]:
    return text.splitlines()


def side_by_side(a: str, b: str, context: int = CONTEXT) -> list[Row]:
    old, new = _lines(a), _lines(b)
    rows: list[Row] = []
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for group in matcher.get_grouped_opcodes(context):
        rows.append(_hunk(group[0][1], group[0][3]))
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                rows += [Row("same", i + 1, old[i], j + 1, new[j])
                         for i, j in zip(range(i1, i2), range(j1, j2), strict=True)]
                continue
            width = max(i2 - i1, j2 - j1)
            for k in range(width):
                i, j = i1 + k, j1 + k
                has_old, has_new = i < i2, j < j2
                kind = "chg" if has_old and has_new else ("del" if has_old else "add")
                rows.append(Row(kind, i + 1 if has_old else None, old[i] if has_old else "",
                                j + 1 if has_new else None, new[j] if has_new else ""))
    return rows


def unified(a: str, b: str, context: int = CONTEXT) -> list[Row]:
    old, new = _lines(a), _lines(b)
    rows: list[Row] = []
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for group in matcher.get_grouped_opcodes(context):
        rows.append(_hunk(group[0][1], group[0][3]))
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                rows += [Row("same", i + 1, old[i], j + 1, new[j])
                         for i, j in zip(range(i1, i2), range(j1, j2), strict=True)]
                continue
            rows += [Row("del", i + 1, old[i]) for i in range(i1, i2)]
            rows += [Row("add", None, "", j + 1, new[j]) for j in range(j1, j2)]
    return rows


def _hunk(i: int, j: int) -> Row:
    return Row("hunk", i + 1, f"from line {i + 1}", j + 1, f"from line {j + 1}")


def stats(rows: list[Row]) -> tuple[int, int]:
    """(lines added, lines removed)."""
    added = sum(1 for r in rows if r.kind in ("add", "chg") and r.new_no is not None)
    removed = sum(1 for r in rows if r.kind in ("del", "chg") and r.old_no is not None)
    return added, removed
