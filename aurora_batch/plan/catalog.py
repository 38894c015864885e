"""The catalog: one row per input file, with station, time (UTC), wavelength, format and status.

Archive conventions are declared, not coded: :mod:`aurora_batch.formats` binds file-name
patterns to readers.  The status column is the job's ledger: ``kept``, or the reason a file
was dropped.  A multi-frame file keeps one row; its frames dropped by the Sun, the Moon or as
not sky are counted in ``frames_sun``, ``frames_moon`` and ``frames_not_sky``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from aurora_batch.core.fs import filesystem
from aurora_batch.core.keys import CATALOG_COLUMNS, Status
from aurora_batch.formats.names import FORMATS, Format, extensions, match_name

IMAGE_EXTENSIONS = extensions(list(FORMATS.values()))


def list_images(
    url: str,
    storage_options: dict[str, Any] | None = None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    max_workers: int = 16,
) -> pd.DataFrame:
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
    rows = sorted(
        (fs.unstrip_protocol(p), int(info.get("size") or 0)) for p, info in found.items() if p.lower().endswith(exts)
    )
    return pd.DataFrame(rows, columns=["url", "size"])


def build_catalog(
    urls: Iterable[str], formats: Sequence[Format], stations: Sequence[str], start: dt.datetime, end: dt.datetime
) -> pd.DataFrame:
    """Parse ``urls`` with the first of ``formats`` that fits into a catalog of ``stations`` in [start, end).

    Files whose names do not parse are kept as rows with status ``unparseable_name``; files
    of other stations or times are not inputs of this job and are left out.  A second file
    with the same (station, wavelength, time) is marked ``duplicate``.  Name by name: the
    reference for :mod:`aurora_batch.plan.planner`, which parses whole arrays.
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
    if dated:
        urls_, stations_, times, wavelengths, fmts = (list(c) for c in zip(*dated))
        found = catalog_frame(urls_, stations_, times, wavelengths, fmts)
    else:
        found = catalog_frame([])
    cat = pd.concat(
        [
            found,
            catalog_frame([u for u, _ in bad], status=Status.UNPARSEABLE, detail=[d for _, d in bad]),
        ],
        ignore_index=True,
    )
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


def catalog_frame(
    urls: Sequence[str],
    stations: Sequence | None = None,
    times=None,
    wavelengths=None,
    formats: Sequence | None = None,
    status: str = Status.PENDING,
    detail: str | Sequence[str] = "",
) -> pd.DataFrame:
    """Catalog rows with the catalog's column types (times UTC, wavelengths Å); Sun and Moon not yet known."""
    n = len(urls)
    missing = [None] * n
    return pd.DataFrame(
        {
            "url": pd.Series(list(urls), dtype="str"),
            "station": pd.Series(missing if stations is None else list(stations), dtype=object),
            "time": pd.Series(pd.NaT if times is None else times, index=range(n), dtype="datetime64[ns]"),
            "wavelength": pd.Series(pd.array([pd.NA] * n if wavelengths is None else wavelengths, dtype="Int64")),
            "format": pd.Series(missing if formats is None else list(formats), dtype=object),
            "status": pd.Series([status] * n, dtype="str"),
            "detail": pd.Series([detail] * n if isinstance(detail, str) else list(detail), dtype="str"),
            "sun_alt": np.full(n, np.nan),
            "moon_alt": np.full(n, np.nan),
            "moon_illumination": np.full(n, np.nan),
        }
    )


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
