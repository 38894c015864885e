"""The catalog: one row per input file, with station, time (UTC), wavelength, format and status.

Archive conventions are declared, not coded: :mod:`aurora_batch.formats` binds file-name
patterns to readers.  The status column is the job's ledger: ``kept``, or the reason a file
was dropped.  A multi-frame file keeps one row; its frames dropped by the Sun, the Moon or as
not sky are counted in ``frames_sun``, ``frames_moon`` and ``frames_not_sky``.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from .formats import FORMATS, Format, extensions, match_name
from .fs import filesystem

__all__ = ["Status", "list_images", "build_catalog", "catalog_frame", "mark_duplicates", "IMAGE_EXTENSIONS",
           "CATALOG_COLUMNS", "FRAME_COUNT_COLUMNS", "file_ledger", "mark_unsupported", "WHOLE_FILE", "PartitionKey"]

IMAGE_EXTENSIONS = extensions(list(FORMATS.values()))


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


CATALOG_COLUMNS = ["url", "station", "time", "wavelength", "format", "status", "detail",
                   "sun_alt", "moon_alt", "moon_illumination"]
WHOLE_FILE = -1  #: the ``frame`` of a staged row that stands for a whole file whose frames were not read
#: per-file counts of frames, by what became of them, in the month catalogs
FRAME_COUNT_COLUMNS = {"frames": Status.KEPT, "frames_sun": Status.SUN, "frames_moon": Status.MOON,
                       "frames_not_sky": Status.NOT_SKY}


def list_images(url: str, storage_options: dict[str, Any] | None = None,
                extensions: Sequence[str] = IMAGE_EXTENSIONS, max_workers: int = 16) -> pd.DataFrame:
    """Every image under ``url`` (recursively), as a frame of ``url`` and ``size`` (bytes).

    Uses the filesystem's bulk listing (``find(detail=True)``: one paginated request per
    1,000 objects on S3, not one per object), run concurrently over up to ``max_workers``
    prefixes found by descending a few folder levels.
    """
    fs, root = filesystem(url, storage_options)
    if not fs.exists(root):
        raise FileNotFoundError(f"input {url} does not exist")
    found: dict[str, dict] = {}
    prefixes = [root]
    with ThreadPoolExecutor(max_workers) as pool:
        # Descend a few levels (cheap delimiter listings) until there are prefixes to spread over.
        for _ in range(4):
            if len(prefixes) >= max_workers:
                break
            entries = [e for level in pool.map(lambda p: fs.ls(p, detail=True), prefixes) for e in level]
            found.update((e["name"], e) for e in entries if e["type"] != "directory")
            deeper = [e["name"] for e in entries if e["type"] == "directory" and e["name"].rstrip("/") not in prefixes]
            if not deeper:
                prefixes = []
                break
            prefixes = deeper
        for part in pool.map(lambda p: fs.find(p, detail=True), prefixes):
            found.update(part)
    exts = tuple(e.lower() for e in extensions)
    rows = sorted((fs.unstrip_protocol(p), int(info.get("size") or 0))
                  for p, info in found.items() if p.lower().endswith(exts))
    return pd.DataFrame(rows, columns=["url", "size"])


def build_catalog(urls: Iterable[str], formats: Sequence[Format], stations: Sequence[str],
                  start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """Parse ``urls`` with the first of ``formats`` that fits into a catalog of ``stations`` in [start, end).

    Files whose names do not parse are kept as rows with status ``unparseable_name``; files
    of other stations or times are not inputs of this job and are left out.  A second file
    with the same (station, wavelength, time) is marked ``duplicate``.  Name by name: the
    reference for :mod:`aurora_batch.planning`, which parses whole arrays.
    """
    wanted = {s.upper() for s in stations}
    dated, bad = [], []
    for url in urls:
        try:
            p = match_name(url, formats)
        except ValueError as err:
            bad.append((url, str(err)))
            continue
        if p.station in wanted and start <= p.time < end:
            dated.append((url, p.station, p.time, p.wavelength, p.format))
    cat = pd.concat([catalog_frame(*(list(c) for c in zip(*dated))) if dated else catalog_frame([]),
                     catalog_frame([u for u, _ in bad], status=Status.UNPARSEABLE, detail=[d for _, d in bad])],
                    ignore_index=True)
    return mark_duplicates(mark_unsupported(cat, formats)).reset_index(drop=True)[CATALOG_COLUMNS]


def mark_unsupported(rows: pd.DataFrame, formats: Sequence[Format]) -> pd.DataFrame:
    """Files of products recognised but not read (``Format.reader == "unsupported"``): ``unsupported_product``,
    with the format's note as the detail; they never take part in duplicate marking."""
    notes = {f.name: f.note for f in formats if f.reader == "unsupported"}
    hit = rows["format"].isin(list(notes)) & rows["status"].eq(Status.PENDING)
    if hit.any():
        rows.loc[hit, "status"] = Status.UNSUPPORTED
        rows.loc[hit, "detail"] = rows.loc[hit, "format"].map(notes)
    return rows


def catalog_frame(urls: Sequence[str], stations: Sequence | None = None, times=None, wavelengths=None,
                  formats: Sequence | None = None, status: str = Status.PENDING,
                  detail: str | Sequence[str] = "") -> pd.DataFrame:
    """Catalog rows with the catalog's column types (times UTC, wavelengths Å); Sun and Moon not yet known."""
    n = len(urls)
    missing = [None] * n
    return pd.DataFrame({
        "url": pd.Series(list(urls), dtype="str"),
        "station": pd.Series(missing if stations is None else list(stations), dtype=object),
        "time": pd.Series(pd.NaT if times is None else times, index=range(n), dtype="datetime64[ns]"),
        "wavelength": pd.Series(pd.array([pd.NA] * n if wavelengths is None else wavelengths, dtype="Int64")),
        "format": pd.Series(missing if formats is None else list(formats), dtype=object),
        "status": pd.Series([status] * n, dtype="str"),
        "detail": pd.Series([detail] * n if isinstance(detail, str) else list(detail), dtype="str"),
        "sun_alt": np.full(n, np.nan), "moon_alt": np.full(n, np.nan), "moon_illumination": np.full(n, np.nan),
    })


DUPLICATE_DETAIL = "another file has the same station, wavelength and time"


def mark_duplicates(rows: pd.DataFrame) -> pd.DataFrame:
    """Sort ``rows`` into catalog order and mark a second file of one (station, wavelength, time) ``duplicate``.

    Only dated rows count (still pending, or dropped by the Sun or Moon by name); the first in
    URL order is kept.
    """
    rows = rows.sort_values(["station", "wavelength", "time", "url"], na_position="last", kind="stable")
    dated = rows["status"].isin([Status.PENDING, Status.SUN, Status.MOON])
    dup = dated & rows.duplicated(["station", "wavelength", "time"], keep="first")
    rows.loc[dup, "status"] = Status.DUPLICATE
    rows.loc[dup, "detail"] = DUPLICATE_DETAIL
    return rows


def file_ledger(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per file from staged rows (one per frame): the file's status and its frame counts.

    A file is ``kept`` when any of its frames is; one whose frames were all dropped takes the
    most frequent frame reason (``sun``, ``moon``, ``not_sky``), with a detail that counts
    them.  Files decided as a whole, without reading frames (``frame`` is
    :data:`WHOLE_FILE`: unreadable, duplicate, filtered by name), keep their row as it is.
    The time, Sun and Moon columns are those of the file's first frame.
    """
    read = rows[rows["frame"] != WHOLE_FILE]
    counts = pd.crosstab(read["url"], read["status"])
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
        files.loc[dropped, "detail"] = [f"all {k} frame(s) dropped: {d}"
                                        for k, d in zip(n, files.loc[dropped, "detail"])]
    return files.reset_index().reindex(columns=[*CATALOG_COLUMNS, *FRAME_COUNT_COLUMNS])


@dataclasses.dataclass(frozen=True, order=True)
class PartitionKey:
    """The unit of work: one station, one wavelength (Å; None: unfiltered or unknown), one UTC day."""

    station: str
    wavelength: int | None
    day: dt.date

    @classmethod
    def of(cls, station: str, wavelength: Any, day: Any) -> "PartitionKey":
        return cls(station, None if pd.isna(wavelength) else int(wavelength), pd.Timestamp(day).date())

    @property
    def name(self) -> str:
        """``NYA_5577_20101201``: staged part and Dask task names."""
        return f"{self.station}_{'all' if self.wavelength is None else self.wavelength}_{self.day:%Y%m%d}"

    @property
    def month(self) -> str:
        return f"{self.day:%Y-%m}"

    @classmethod
    def parse(cls, name: str) -> "PartitionKey":
        """The key of a :attr:`name` (or a staged part's file name)."""
        stem = name.rsplit("/", 1)[-1].removesuffix(".parquet")
        try:
            station, wl, day = stem.rsplit("_", 2)
            return cls(station, None if wl == "all" else int(wl), dt.datetime.strptime(day, "%Y%m%d").date())
        except ValueError:
            raise ValueError(f"{name!r} is not a partition name like NYA_5577_20101201") from None
