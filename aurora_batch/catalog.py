"""The catalog: one row per input file, with station, time (UTC), wavelength and status.

Archive layouts are declared, not coded: a :class:`Layout` is a regular expression over the
file name with named groups, plus the strftime format of its date and time.  The status
column is the job's ledger: ``kept``, or the reason a file was dropped.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from .fs import filesystem

__all__ = ["Layout", "LAYOUTS", "Status", "parse_name", "list_images", "build_catalog",
           "IMAGE_EXTENSIONS", "CATALOG_COLUMNS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".pgm", ".pgm.gz", ".pgm.bz2")


class Status:
    """Values of the catalog's ``status`` column."""

    KEPT = "kept"
    PENDING = "pending"  #: passed the ephemeris filter, not yet read
    SUN = "sun"
    MOON = "moon"
    UNPARSEABLE = "unparseable_name"
    UNREADABLE = "unreadable_image"
    DUPLICATE = "duplicate"


CATALOG_COLUMNS = ["url", "station", "time", "wavelength", "status", "detail",
                   "sun_alt", "moon_alt", "moon_illumination"]


@dataclasses.dataclass(frozen=True)
class Layout:
    """How station, time and wavelength are encoded in an archive's file names.

    ``pattern`` is matched against the file's base name and must define the groups
    ``station``, ``date`` and ``time``; ``wavelength`` (Å) is optional.
    ``time_format`` is the strptime format of ``f"{date}_{time}"``.
    """

    name: str
    pattern: str
    time_format: str = "%Y%m%d_%H%M%S"
    default_wavelength: int | None = None

    @property
    def regex(self) -> re.Pattern:
        return re.compile(self.pattern, re.IGNORECASE)

    def __post_init__(self):
        try:
            groups = set(self.regex.groupindex)
        except re.error as err:
            raise ValueError(f"layout {self.name!r}: bad pattern ({err})") from None
        missing = {"station", "date", "time"} - groups
        if missing:
            raise ValueError(f"layout {self.name!r}: pattern lacks the named group(s) {sorted(missing)}")


LAYOUTS: dict[str, Layout] = {
    # UiO ASIM, flat or in its <loc>/<wvl>/<YYYY>/<YYYYMMDD>/ tree: nya4_20101207_233450_5577_cal.png
    "asim": Layout(
        "asim",
        r"^(?P<station>[a-z]+)(?P<camera>\d)_(?P<date>\d{8})_(?P<time>\d{6})_(?P<wavelength>\d{4})(?:_cal)?\.png$",
    ),
    # THEMIS ASI stream0, one file a minute, ~20 frames each: 20080305_0600_gill_themis19_full.pgm.gz
    "themis": Layout(
        "themis",
        r"^(?P<date>\d{8})_(?P<time>\d{4})_(?P<station>[a-z]{4})_themis(?P<camera>\d{2})_full\.pgm(?:\.gz|\.bz2)?$",
        time_format="%Y%m%d_%H%M",
    ),
    # Kiruna-style colour JPEGs named by station, date and time: KIR_20101201_221500.jpg
    "kiruna": Layout(
        "kiruna",
        r"^(?P<station>[a-z]{3})_?(?P<date>\d{8})_?(?P<time>\d{6})(?:_[a-z0-9]+)?\.jpe?g$",
    ),
}


@dataclasses.dataclass(frozen=True)
class ParsedName:
    station: str
    time: dt.datetime
    wavelength: int | None


def parse_name(name: str, layout: Layout) -> ParsedName:
    """Parse a file's base name; raises ``ValueError`` saying why it does not fit ``layout``."""
    base = name.rsplit("/", 1)[-1]
    m = layout.regex.match(base)
    if not m:
        raise ValueError(f"{base!r} does not match the {layout.name!r} layout")
    groups = m.groupdict()
    try:
        time = dt.datetime.strptime(f"{groups['date']}_{groups['time']}", layout.time_format)
    except ValueError as err:
        raise ValueError(f"{base!r}: bad date/time ({err})") from None
    wl = groups.get("wavelength")
    return ParsedName(groups["station"].upper(), time, int(wl) if wl else layout.default_wavelength)


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


def build_catalog(urls: Iterable[str], layout: Layout, stations: Sequence[str],
                  start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """Parse ``urls`` into a catalog restricted to ``stations`` and [start, end).

    Files whose names do not parse are kept as rows with status ``unparseable_name``; files
    of other stations or times are not inputs of this job and are left out.  A second file
    with the same (station, wavelength, time) is marked ``duplicate``.
    """
    wanted = {s.upper() for s in stations}
    rows = []
    for url in urls:
        try:
            p = parse_name(url, layout)
        except ValueError as err:
            rows.append((url, None, pd.NaT, pd.NA, Status.UNPARSEABLE, str(err)))
            continue
        if p.station in wanted and start <= p.time < end:
            rows.append((url, p.station, p.time, p.wavelength if p.wavelength is not None else pd.NA,
                         Status.PENDING, ""))
    cat = pd.DataFrame(rows, columns=["url", "station", "time", "wavelength", "status", "detail"])
    cat["time"] = pd.to_datetime(cat["time"]).astype("datetime64[ns]")
    cat["wavelength"] = cat["wavelength"].astype("Int64")
    cat["station"] = cat["station"].astype(object)
    for col in ("sun_alt", "moon_alt", "moon_illumination"):
        cat[col] = np.nan
    cat = cat.sort_values(["station", "wavelength", "time", "url"], na_position="last", kind="stable")
    dup = cat["status"].eq(Status.PENDING) & cat.duplicated(["station", "wavelength", "time"], keep="first")
    cat.loc[dup, "status"] = Status.DUPLICATE
    cat.loc[dup, "detail"] = "another file has the same station, wavelength and time"
    return cat.reset_index(drop=True)[CATALOG_COLUMNS]


def partition_key(station: str, wavelength: Any, day: pd.Timestamp) -> str:
    """Name of the (station, wavelength, day) unit of work, e.g. ``NYA_5577_20101201``."""
    wl = "all" if pd.isna(wavelength) else str(int(wavelength))
    return f"{station}_{wl}_{day:%Y%m%d}"
