"""Which instrument files a time window needs: each file's time span, from its name or from a small index.

A month's join reads only the files whose span overlaps the month widened by the source's tolerance, so its
cost follows that month's instrument data, not the archive (20 stations × 10 years of daily files is 73,000
files; a month needs about 600).  Spans come from the file name where the format dates it (IAGA-2002 daily,
monthly and yearly files such as ``bou20141101vmin.min`` and ``BOU202005vmin.min``; CL51 netCDF files named
by their day), else from an index of every other file's first and last time (``{output}/_instruments/spans.parquet``),
read once per file and read again when its size or modification time changes.  A file whose span cannot be
told is always read.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd

from aurora_batch.core.fs import filesystem, is_local, url_maker, write_bytes_atomic

Span = tuple[pd.Timestamp, pd.Timestamp]  #: [first, end) in UTC, tz-naive

_IAGA = re.compile(r"^[a-z]{3}(\d{4})(\d{2})?(\d{2})?[vqdp](?:sec|min|hor|day|mon)\.(?:sec|min|hor|day|mon)$", re.I)
_DAY = re.compile(r"(?<!\d)((?:19|20)\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?!\d)")
_COMPRESSED = re.compile(r"\.(gz|bz2)$", re.I)
ONE_DAY = pd.Timedelta(days=1)


@dataclasses.dataclass(frozen=True)
class InstrumentFile:
    url: str
    size: int
    version: str  #: modification time (or ETag) as the file system reports it


def list_files(url: str, storage_options: Mapping[str, Any] | None = None) -> list[InstrumentFile]:
    """The files of ``url`` (a URL or glob), sorted, with their sizes and versions from one listing;
    ``FileNotFoundError`` when none match."""
    fs, path = filesystem(url, storage_options)
    parent, _, pattern = path.rpartition("/")
    if is_local(fs) and not any(c in parent for c in "*?[") and any(c in pattern for c in "*?["):
        infos = _scan_local(parent, pattern)  # a folder of a station-decade's daily files: 4x faster than glob
    elif any(c in path for c in "*?["):
        infos = fs.glob(path, detail=True)
    else:
        infos = {path: fs.info(path)}
    if not infos:
        raise FileNotFoundError(f"no files match {url}")
    to_url = url_maker(fs)
    return [
        InstrumentFile(to_url(p), int(i.get("size") or 0), _version(i))
        for p, i in sorted(infos.items())
        if i.get("type", "file") == "file"
    ]


def _scan_local(folder: str, pattern: str) -> dict[str, dict[str, Any]]:
    """``fs.glob(folder/pattern, detail=True)`` on a local disk, for a pattern in the last component only."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return {}
    out = {}
    for e in entries:
        if fnmatch.fnmatchcase(e.name, pattern) and e.is_file():
            st = e.stat()
            out[f"{folder}/{e.name}"] = {"size": st.st_size, "mtime": st.st_mtime, "type": "file"}
    return out


def _version(info: Mapping[str, Any]) -> str:
    return str(info.get("mtime") or info.get("LastModified") or info.get("ETag") or info.get("created"))


def name_span(url: str, fmt: str) -> Span | None:
    """The span a file's name dates, for formats whose files are named by their period (else None)."""
    name = _COMPRESSED.sub("", url.rsplit("/", 1)[-1])
    if fmt == "iaga2002" and (m := _IAGA.match(name)):
        year, month, day = m.groups()
        if day:
            return _day_span(year, month, day)
        if month:
            start = pd.Timestamp(int(year), int(month), 1)
            return start, start + pd.offsets.MonthBegin(1)
        return pd.Timestamp(int(year), 1, 1), pd.Timestamp(int(year) + 1, 1, 1)
    if fmt == "cl51" and len(days := _DAY.findall(name)) == 1:
        return _day_span(*days[0])
    return None


@functools.lru_cache(maxsize=2**16)
def _day_span(year: str, month: str, day: str) -> Span:
    """One UTC day (a station-decade of daily files names 3,650, every station the same ones)."""
    start = pd.Timestamp(int(year), int(month), int(day))
    return start, start + ONE_DAY


def file_spans(
    files: Sequence[InstrumentFile],
    fmt: str,
    read_times: Callable[[str], pd.Series],
    index_url: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Span | None]:
    """Each file's span: from its name, else from the index at ``index_url`` (matched by URL, size and version),
    else its times read with ``read_times`` (recorded in the index).  None: a file with no times."""
    out: dict[str, Span | None] = {f.url: name_span(f.url, fmt) for f in files}
    unnamed = [f for f in files if out[f.url] is None]
    if not unnamed:
        return out
    index = _read_index(index_url, storage_options)
    known = {(r.url, r.size, r.version): (r.first, r.end) for r in index.itertuples()} if len(index) else {}
    missing = [f for f in unnamed if (f.url, f.size, f.version) not in known]
    with ThreadPoolExecutor(8) as pool:
        read = dict(zip([f.url for f in missing], pool.map(lambda f: _span_of(read_times(f.url)), missing)))
    for f in unnamed:
        out[f.url] = read[f.url] if f.url in read else known[(f.url, f.size, f.version)]
    if missing and index_url is not None:
        fresh = pd.DataFrame(
            [
                {"url": f.url, "size": f.size, "version": f.version, "first": s[0], "end": s[1]}
                for f in missing
                if (s := read[f.url]) is not None
            ]
        )
        kept = index[~index["url"].isin([f.url for f in missing])] if len(index) else index
        _write_index(index_url, pd.concat([kept, fresh], ignore_index=True), storage_options)
    return out


def overlapping(files: Iterable[InstrumentFile], spans: Mapping[str, Span | None], start, end) -> list[InstrumentFile]:
    """The files whose span meets [start, end); a file whose span is unknown is kept."""
    lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    return [f for f in files if (s := spans.get(f.url)) is None or (s[0] < hi and s[1] > lo)]


def _span_of(times: pd.Series) -> Span | None:
    times = pd.to_datetime(times).dropna()
    if times.dt.tz is not None:
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    if times.empty:
        return None
    return pd.Timestamp(times.min()), pd.Timestamp(times.max()) + pd.Timedelta("1us")


def _read_index(url: str | None, options: Mapping[str, Any] | None) -> pd.DataFrame:
    if url is None:
        return pd.DataFrame()
    fs, path = filesystem(url, options)
    try:
        with fs.open(path, "rb") as f:
            return pd.read_parquet(f)
    except FileNotFoundError:
        return pd.DataFrame()


def _write_index(url: str, index: pd.DataFrame, options: Mapping[str, Any] | None) -> None:
    write_bytes_atomic(url, index.reset_index(drop=True).to_parquet(index=False), options)
