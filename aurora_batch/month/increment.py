"""Incremental month commits, planned: which rows of which groups a commit writes.

A published month records what it was built from (:class:`MonthState`, in its root attributes):
every staged part's version (size and modification time), and for each group the parts that
fill it, in order, with their image counts.  A group's rows are its parts' kept images, part
after part in name (so day) order.  A commit whose parts are those of the published month
except some new or changed ones rewrites, in each group they fall in, only the rows from the
first changed part on (:class:`Tail`): a nightly appends its day, a late file for last week
rewrites that group from that day on, and every other chunk is left as it is.  A month is
rebuilt whole when it has no recorded state, or its layout (settings, join, chunking) differs,
or a group path would change (a second wavelength appears) or a group would be emptied.

Pure functions of names and counts: no I/O here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from aurora_batch.core.keys import PartitionKey
from aurora_batch.store.state import MonthState

#: target uncompressed bytes of one time chunk: of a 1-D variable, and of a variable with a vector per image
#: (features, keogram lines).  Rows per chunk depend on a row's bytes, never on how many rows a month has, so
#: an appended month is chunked exactly as one built whole.
CHUNK_BYTES = {1: 2**20, 2: 8 * 2**20}
CHUNKING = "rows-by-bytes-v1"  #: in the layout key: changing how chunks are chosen rebuilds months
OBJECT_ROW_BYTES = 64  #: assumed bytes of a string (URL, label) when sizing chunks


def chunk_rows(row_bytes: int, ndim: int) -> int:
    """Rows per time chunk: the power of two nearest (in log) to ``CHUNK_BYTES[ndim] / row_bytes``, at least 64."""
    rows = CHUNK_BYTES[min(ndim, 2)] / max(1, row_bytes)
    return max(64, 2 ** round(math.log2(max(rows, 1.0))))


def layout_key(attrs: Mapping[str, Any], join_fingerprint: str, classes: Iterable[str], fmt: str) -> str:
    """What a month's existing chunks depend on: the group attributes but the package version, the join, the
    classes, the publication format and the chunking.  A commit may append to a month only with the same key."""
    record = {
        "attrs": {k: v for k, v in attrs.items() if k != "aurora_batch_version"},
        "join": join_fingerprint,
        "classes": list(classes),
        "format": fmt,
        "chunking": CHUNKING,
        "chunk_bytes": CHUNK_BYTES,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def group_paths(pairs: Iterable[tuple[str, int | None]]) -> dict[tuple[str, int | None], str]:
    """Group path for each (station, wavelength): ``NYA``, or ``NYA/5577`` when a station has several."""
    by_station: dict[str, set] = {}
    for station, wl in pairs:
        by_station.setdefault(station, set()).add(wl)
    return {
        (station, wl): station if len(wls) == 1 else f"{station}/{wl}"
        for station, wls in by_station.items()
        for wl in wls
    }


@dataclasses.dataclass(frozen=True)
class Tail:
    """The rows of group ``path`` that a commit writes: every row from ``offset`` on, from ``parts`` in order."""

    path: str
    offset: int
    parts: list[str]


def _group_key(name: str) -> tuple[str, int | None]:
    key = PartitionKey.parse(name)
    return key.station, key.wavelength


def plan_tails(
    old: MonthState, versions: Mapping[str, str], kept: Mapping[str, int], layout: str
) -> tuple[dict[str, Tail], MonthState] | None:
    """The tails to write and the month's new state, or None when the month must be rebuilt whole.

    ``versions``: part name → version of every part the month is built from (published parts no
    longer staged keep their recorded version: they are in the month and stay as they are);
    ``kept``: images of each new or changed part.  Groups are paths of the (station, wavelength)
    pairs with images (:func:`group_paths`).
    """
    if layout != old.layout:
        return None
    changed = {n for n, v in versions.items() if old.parts.get(n) != v}
    paths = group_paths(
        {_group_key(n) for n in changed if kept[n]}
        | {_group_key(n) for members in old.groups.values() for n, c in members if c and n not in changed}
    )
    for old_path, old_members in old.groups.items():  # a group must keep its path (a new wavelength splits a station)
        if any(paths.get(_group_key(n)) != old_path for n, _ in old_members):
            return None
    groups = {g: dict(members) for g, members in old.groups.items()}
    for name in changed:
        gpath = paths.get(_group_key(name))
        if gpath is None:
            continue  # no images in a group that has none: the part adds only ledger rows
        groups.setdefault(gpath, {})[name] = kept[name]
    tails = {}
    for gpath, members in groups.items():
        order = sorted(members)
        first = next((i for i, n in enumerate(order) if n in changed), None)
        if first is None:
            continue
        if not sum(members.values()):
            return None  # the group would be emptied: a rebuild drops it
        offset = sum(members[n] for n in order[:first])
        tails[gpath] = Tail(gpath, offset, order[first:])
    state = MonthState(dict(versions), {g: [(n, m[n]) for n in sorted(m)] for g, m in groups.items()}, layout)
    return tails, state


def full_plan(versions: Mapping[str, str], kept: Mapping[str, int], layout: str) -> tuple[dict[str, Tail], MonthState]:
    """Every group written from its first row: a month built whole."""
    plan = plan_tails(MonthState({}, {}, layout), versions, kept, layout)
    assert plan is not None  # nothing published: nothing to keep apart
    return plan
