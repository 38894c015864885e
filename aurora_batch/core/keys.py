"""Partition keys and the statuses of the catalog: what names a unit of work, and what became of each file.

The status column is the job's ledger: ``kept``, or the reason a file was dropped.  A multi-frame file keeps
one row; its frames dropped by the Sun, the Moon or as not sky are counted in ``frames_sun``, ``frames_moon``
and ``frames_not_sky`` (:func:`file_ledger`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pandas as pd


class Status:
    """Values of the catalog's ``status`` column (files) and of staged rows (frames)."""

    KEPT = "kept"
    PENDING = "pending"  #: passed the ephemeris filter, not yet read
    SUN = "sun"
    MOON = "moon"
    NOT_SKY = "not_sky"  #: a frame that is no sky image (constant, non-finite, too small or too large, odd shape)
    UNPARSEABLE = "unparseable_name"
    UNREADABLE = "unreadable_image"
    UNSUPPORTED = "unsupported_product"  #: a product recognised by its name that aurora-batch does not read
    DUPLICATE = "duplicate"


CATALOG_COLUMNS = [
    "url",
    "station",
    "time",
    "wavelength",
    "format",
    "status",
    "detail",
    "sun_alt",
    "moon_alt",
    "moon_illumination",
]
WHOLE_FILE = -1  #: the ``frame`` of a staged row that stands for a whole file whose frames were not read
#: per-file counts of frames, by what became of them, in the month catalogs
FRAME_COUNT_COLUMNS = {
    "frames": Status.KEPT,
    "frames_sun": Status.SUN,
    "frames_moon": Status.MOON,
    "frames_not_sky": Status.NOT_SKY,
}


def file_ledger(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per file from staged rows (one per frame): the file's status and its frame counts.

    A file is ``kept`` when any of its frames is; one whose frames were all dropped takes the
    most frequent frame reason (``sun``, ``moon``, ``not_sky``), with a detail that counts
    them.  Files decided as a whole, without reading frames (``frame`` is
    :data:`WHOLE_FILE`: unreadable, duplicate, filtered by name), keep their row as it is.
    The time, Sun and Moon columns are those of the file's first frame.
    """
    read = rows[rows["frame"] != WHOLE_FILE]
    counts = read.groupby(["url", "status"], sort=False, observed=True).size().unstack(fill_value=0)
    files = rows.drop_duplicates("url").set_index("url")
    for column, status in FRAME_COUNT_COLUMNS.items():
        files[column] = counts[status].reindex(files.index).fillna(0).astype(int) if status in counts else 0
    frame_reasons = ["frames_sun", "frames_moon", "frames_not_sky"]
    multi = files[frame_reasons].sum(axis=1) > 0
    kept = files["frames"] > 0
    files.loc[kept, ["status", "detail"]] = [Status.KEPT, ""]
    dropped = multi & ~kept
    if dropped.any():
        worst = files.loc[dropped, frame_reasons].idxmax(axis=1)
        files.loc[dropped, "status"] = worst.map({c: FRAME_COUNT_COLUMNS[c] for c in frame_reasons})
        n = files.loc[dropped, frame_reasons].sum(axis=1)
        files.loc[dropped, "detail"] = [
            f"all {k} frame(s) dropped: {d}" for k, d in zip(n, files.loc[dropped, "detail"])
        ]
    return files.reset_index().reindex(columns=[*CATALOG_COLUMNS, *FRAME_COUNT_COLUMNS])


@dataclasses.dataclass(frozen=True, order=True)
class PartitionKey:
    """The unit of work: one station, one wavelength (Å; None: unfiltered or unknown), one UTC day."""

    station: str
    wavelength: int | None
    day: dt.date

    @classmethod
    def of(cls, station: str, wavelength: Any, day: Any) -> PartitionKey:
        return cls(station, None if pd.isna(wavelength) else int(wavelength), pd.Timestamp(day).date())

    @property
    def name(self) -> str:
        """``NYA_5577_20101201``: staged part and Dask task names."""
        return f"{self.station}_{'all' if self.wavelength is None else self.wavelength}_{self.day:%Y%m%d}"

    @property
    def month(self) -> str:
        return f"{self.day:%Y-%m}"

    @classmethod
    def parse(cls, name: str) -> PartitionKey:
        """The key of a :attr:`name` (or a staged part's file name)."""
        stem = name.rsplit("/", 1)[-1].removesuffix(".parquet")
        try:
            station, wl, day = stem.rsplit("_", 2)
            return cls(station, None if wl == "all" else int(wl), dt.datetime.strptime(day, "%Y%m%d").date())
        except ValueError:
            raise ValueError(f"{name!r} is not a partition name like NYA_5577_20101201") from None
