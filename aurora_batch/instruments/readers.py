"""Readers for the instruments joined to the images: magnetometers and ceilometers.

Every reader takes an fsspec URL or glob and returns a tidy ``pandas.DataFrame``: a UTC
``time`` column (datetime64, sorted), a ``station`` column and typed value columns whose
units are in ``frame.attrs["units"]``.  Missing-value sentinels become NaN, never 0 and
never a fake "no cloud" height; a ceilometer's "no cloud detected" is an explicit
``cloud_detected = False``.  A malformed file raises :class:`ReaderError` naming the file
and line.

Formats:

- IAGA-2002 (INTERMAGNET, USGS, IMAGE): 70-character header records ending in ``|``,
  comment records `` # ...``, a column header ``DATE TIME DOY <CODE>X ...``; 99999 and 88888
  mean missing.
- IMAGE column text: fixed widths 4,3,3,3,3,3 (YYYY MM DD HH MM SS), 11, then 8-character
  columns headed like ``NAL X``; lines whose year is ``----`` are separators.  Unit 1 nT;
  99999.9 (any value ≥ 99999) means missing.
- PANGAEA tab-separated exports: a ``/* ... */`` metadata block, then ``Date/Time<TAB>CBH [m]``;
  -1 means missing, 32767 "no cloud".
- Vaisala CL51 netCDF as written by cl2nc: ``time`` (s since 1970), ``cbh_1..3`` (m),
  ``detection_status`` (0 no significant backscatter, 1–3 that many cloud bases, 4 full
  obscuration, 5 some obscuration).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from aurora_batch.core.fs import filesystem


class ReaderError(ValueError):
    """A malformed instrument file; the message names the file (and line)."""


def expand_urls(url: str, storage_options: Mapping[str, Any] | None) -> list[str]:
    """The files of ``url``, a URL or a glob, sorted; ``FileNotFoundError`` when a glob matches none."""
    fs, path = filesystem(url, dict(storage_options or {}))
    paths = sorted(fs.glob(path)) if any(c in path for c in "*?[") else [path]
    if not paths:
        raise FileNotFoundError(f"no files match {url}")
    return [fs.unstrip_protocol(p) for p in paths]


def read_many(
    reader: Callable[..., pd.DataFrame],
    url: str | Sequence[str],
    storage_options: Mapping[str, Any] | None = None,
    **kw,
) -> pd.DataFrame:
    """Apply ``reader`` to every file of ``url`` (a URL or glob, or a list of file URLs); one sorted frame,
    duplicates removed."""
    urls = expand_urls(url, storage_options) if isinstance(url, str) else list(url)
    frames = [reader(u, storage_options=storage_options, **kw) for u in urls]
    out = pd.concat(frames, ignore_index=True)
    out = out.drop_duplicates(["station", "time"], keep="last").sort_values(["station", "time"], kind="stable")
    out.attrs = frames[0].attrs
    return out.reset_index(drop=True)


def _text(url: str, storage_options) -> str:
    fs, path = filesystem(url, dict(storage_options or {}))
    with fs.open(path, "rb", compression="infer") as f:  # .gz and .bz2 as INTERMAGNET distributes them
        raw = f.read()
    return raw.decode("latin-1")


def _finish(frame: pd.DataFrame, units: dict[str, str]) -> pd.DataFrame:
    frame = frame.sort_values(["station", "time"], kind="stable").reset_index(drop=True)
    frame.attrs["units"] = units
    return frame


# --- magnetometers ------------------------------------------------------------------------------------------


def read_iaga2002(url: str, storage_options: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """One IAGA-2002 file: columns ``time``, ``station`` and one per reported element (lower case, nT;
    D and I in minutes of arc).  Unused ``NUL`` columns are dropped."""
    lines = _text(url, storage_options).splitlines()
    header: dict[str, str] = {}
    start = None
    for i, line in enumerate(lines):
        if line.startswith("DATE"):
            start = i
            break
        if line.startswith(" #") or not line.strip():
            continue
        body = line.rstrip().rstrip("|")
        if len(body) >= 24 and line.startswith(" "):
            header[body[:24].strip()] = body[24:].strip()
        else:
            raise ReaderError(f"{url}, line {i + 1}: not an IAGA-2002 header record: {line[:40]!r}")
    if start is None:
        raise ReaderError(f"{url}: no 'DATE TIME DOY ...' column header (is this IAGA-2002?)")
    code = header.get("IAGA CODE") or header.get("IAGA Code")
    if not code:
        raise ReaderError(f"{url}: header record 'IAGA CODE' is missing")
    names = lines[start].rstrip().rstrip("|").split()
    if names[:3] != ["DATE", "TIME", "DOY"] or len(names) < 4:
        raise ReaderError(f"{url}, line {start + 1}: bad column header {lines[start]!r}")
    elements = [n[len(code) :].lower() if n.upper().startswith(code.upper()) else n.lower() for n in names[3:]]
    rows = []
    for i, line in enumerate(lines[start + 1 :], start=start + 2):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 + len(elements):
            raise ReaderError(f"{url}, line {i}: expected {3 + len(elements)} fields, found {len(parts)}")
        rows.append(parts)
    if not rows:
        raise ReaderError(f"{url}: no data rows")
    data = np.array(rows, dtype=object)
    try:
        time = pd.to_datetime(pd.Series(data[:, 0] + "T" + data[:, 1]), format="ISO8601")
        values = data[:, 3:].astype(float)
    except ValueError as err:
        raise ReaderError(f"{url}: bad date or value in the data rows ({err})") from None
    values[values >= 88888] = np.nan  # 88888: not recorded; 99999: missing
    frame = pd.DataFrame(values, columns=elements)
    frame = frame.drop(columns=[c for c in frame.columns if c == "nul"])
    frame.insert(0, "station", code.upper())
    frame.insert(0, "time", time.dt.tz_localize(None).astype("datetime64[ns]"))
    units = {c: ("arcmin" if c in ("d", "i") else "nT") for c in frame.columns if c not in ("time", "station")}
    return _finish(frame, units)


_IMAGE_WIDTHS = [4, 3, 3, 3, 3, 3, 11]


def read_image_column(url: str, storage_options: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """IMAGE network column text: ``time``, ``station``, ``x``, ``y``, ``z`` (nT, geographic), long format."""
    lines = _text(url, storage_options).splitlines()
    head = next((i for i, line in enumerate(lines) if line.startswith("YYYY")), None)
    if head is None:
        raise ReaderError(f"{url}: no 'YYYY MM DD HH MM SS' column header (is this IMAGE column text?)")
    offset = sum(_IMAGE_WIDTHS)
    labels = lines[head][offset:]
    cols = [labels[k : k + 8].strip() for k in range(0, len(labels.rstrip()), 8)]
    parsed = []
    for c in cols:
        m = re.fullmatch(r"([A-Z0-9]{3})\s+([XYZ])", c)
        if not m:
            raise ReaderError(f"{url}, line {head + 1}: column label {c!r} is not like 'NAL X'")
        parsed.append((m.group(1), m.group(2).lower()))
    rows, times = [], []
    for i, line in enumerate(lines[head + 1 :], start=head + 2):
        if not line.strip() or line.startswith("----"):
            continue
        try:
            pos, stamp = 0, []
            for w in _IMAGE_WIDTHS[:6]:
                stamp.append(int(line[pos : pos + w]))
                pos += w
            values = [float(line[offset + 8 * k : offset + 8 * k + 8]) for k in range(len(cols))]
        except ValueError:
            raise ReaderError(f"{url}, line {i}: cannot read {line[:60]!r}") from None
        times.append(pd.Timestamp(*stamp))
        rows.append(values)
    if not rows:
        raise ReaderError(f"{url}: no data rows")
    grid = np.array(rows)
    grid[grid >= 99999] = np.nan
    wide = pd.DataFrame(grid, columns=pd.MultiIndex.from_tuples(parsed, names=["station", "element"]))
    wide.index = pd.DatetimeIndex(times, name="time")
    tidy = wide.stack("station", future_stack=True).reset_index()
    tidy.columns.name = None
    for c in ("x", "y", "z"):
        if c not in tidy:
            tidy[c] = np.nan
    tidy["time"] = tidy["time"].astype("datetime64[ns]")
    return _finish(tidy[["time", "station", "x", "y", "z"]], {"x": "nT", "y": "nT", "z": "nT"})


# --- ceilometers --------------------------------------------------------------------------------------------


def read_pangaea_ceilometer(
    url: str,
    station: str,
    storage_options: Mapping[str, Any] | None = None,
    no_cloud: float = 32767,
    missing: float = -1,
) -> pd.DataFrame:
    """A PANGAEA tab export: ``time``, ``station``, ``cbh`` (m, NaN when none), ``cloud_detected``."""
    text = _text(url, storage_options)
    body = text
    if text.lstrip().startswith("/*"):
        end = text.find("*/")
        if end < 0:
            raise ReaderError(f"{url}: the '/* ... */' metadata block is not closed")
        body = text[end + 2 :].lstrip("\r\n")
    try:
        table = pd.read_csv(io.StringIO(body), sep="\t")
    except Exception as err:
        raise ReaderError(f"{url}: cannot read the tab-separated table ({err})") from None
    time_col = next((c for c in table.columns if c.startswith("Date/Time")), None)
    cbh_col = next((c for c in table.columns if c.split(" [")[0].strip() == "CBH"), None)
    if time_col is None or cbh_col is None:
        raise ReaderError(f"{url}: expected columns 'Date/Time' and 'CBH [m]', found {list(table.columns)}")
    header_line = text[: len(text) - len(body)].count("\n") + 1
    time = pd.to_datetime(table[time_col], format="ISO8601", errors="coerce")
    cbh = pd.to_numeric(table[cbh_col], errors="coerce").astype(float)
    bad = time.isna() | (cbh.isna() & table[cbh_col].notna())
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ReaderError(f"{url}, line {header_line + 1 + k}: bad row {table.iloc[k].tolist()}")
    detected = pd.array(np.where(cbh == no_cloud, False, True), dtype="boolean")
    detected[(cbh == missing) | cbh.isna()] = pd.NA
    cbh[(cbh == no_cloud) | (cbh == missing) | (cbh < 0)] = np.nan
    frame = pd.DataFrame(
        {
            "time": time.dt.tz_localize(None).astype("datetime64[ns]"),
            "station": station.upper(),
            "cbh": cbh,
            "cloud_detected": detected,
        }
    )
    return _finish(frame, {"cbh": "m"})


def read_cl51_netcdf(url: str, station: str, storage_options: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """A cl2nc CL51 file: ``time``, ``station``, ``cbh`` (lowest base), ``cbh_2``, ``cbh_3`` (m),
    ``detection_status`` and ``cloud_detected``."""
    import xarray as xr

    fs, path = filesystem(url, dict(storage_options or {}))
    try:
        with fs.open(path, "rb") as f, xr.open_dataset(f, engine="h5netcdf", decode_times=False) as ds:
            missing = [v for v in ("time", "cbh_1", "detection_status") if v not in ds.variables]
            if missing:
                raise ReaderError(f"{url}: variables {missing} missing (is this a cl2nc CL51 file?)")
            t = ds["time"].to_numpy().astype(float)
            cbh = {
                k: ds[k].to_numpy().astype(float) if k in ds else np.full(len(t), np.nan)
                for k in ("cbh_1", "cbh_2", "cbh_3")
            }
            status = ds["detection_status"].to_numpy().astype(float)
    except ReaderError:
        raise
    except Exception as err:
        raise ReaderError(f"{url}: cannot read as netCDF ({err})") from None
    status[(status < 0) | (status > 5)] = np.nan
    for v in cbh.values():
        v[(v <= 0) | (v >= 99999)] = np.nan  # fill values and negative heights are not heights
    detected = pd.array(np.where(status == 0, False, True), dtype="boolean")
    detected[np.isnan(status)] = pd.NA
    frame = pd.DataFrame(
        {
            "time": pd.to_datetime(t, unit="s").astype("datetime64[ns]"),
            "station": station.upper(),
            "cbh": cbh["cbh_1"],
            "cbh_2": cbh["cbh_2"],
            "cbh_3": cbh["cbh_3"],
            "detection_status": pd.array(status, dtype="Float64").astype("Int64"),
            "cloud_detected": detected,
        }
    )
    return _finish(frame, {"cbh": "m", "cbh_2": "m", "cbh_3": "m"})


MAGNETOMETER_READERS = {"iaga2002": read_iaga2002, "image-column": read_image_column}
CEILOMETER_READERS = {"pangaea": read_pangaea_ceilometer, "cl51": read_cl51_netcdf}
