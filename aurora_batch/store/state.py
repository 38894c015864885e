"""What a published month records of what it was built from (in its root attributes): each staged part's
version, and per group its parts in order with their image counts.  Read by incremental commits
(:mod:`aurora_batch.month.increment`) and by per-file resume of a compacted part."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


def part_name(url: str) -> str:
    """A staged part's file name (``NYA_5577_20101201.parquet``): how a month records it."""
    return url.rsplit("/", 1)[-1]


@dataclasses.dataclass(frozen=True)
class MonthState:
    """What a month was built from: ``parts`` (part file name → version), ``groups`` (group path → its parts,
    in order, with their image counts) and ``layout`` (:func:`layout_key`)."""

    parts: dict[str, str]
    groups: dict[str, list[tuple[str, int]]]
    layout: str = ""

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> MonthState | None:
        """The state in a month's root attributes; None for a month published before they were recorded."""
        parts, groups = attrs.get("parts"), attrs.get("group_parts")
        if not isinstance(parts, dict) or not isinstance(groups, dict):
            return None
        return cls(
            {str(k): str(v) for k, v in parts.items()},
            {g: [(str(n), int(c)) for n, c in members] for g, members in groups.items()},
            str(attrs.get("layout", "")),
        )

    def attrs(self) -> dict[str, Any]:
        return {
            "parts": dict(sorted(self.parts.items())),
            "group_parts": {g: [[n, c] for n, c in members] for g, members in sorted(self.groups.items())},
            "layout": self.layout,
        }

    def offsets(self, group: str) -> dict[str, tuple[int, int]]:
        """Part name → (first row, rows) in ``group``."""
        out, row = {}, 0
        for name, n in self.groups.get(group, []):
            out[name] = (row, n)
            row += n
        return out
