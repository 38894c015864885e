"""Joining a month's image rows to ceilometer and magnetometer series, nearest in time within each source's
tolerance; the joined variables are written beside the images.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import numpy as np
import pandas as pd
import xarray as xr

from aurora_batch.config import InstrumentSource, JobConfig
from aurora_batch.core.fs import join_url
from aurora_batch.instruments.join import nearest
from aurora_batch.instruments.readers import CEILOMETER_READERS, MAGNETOMETER_READERS, read_many
from aurora_batch.instruments.spans import InstrumentFile, file_spans, list_files, overlapping
from aurora_batch.month.dataset import chunk_encoding

log = logging.getLogger(__name__)
INSTRUMENT_KINDS = ("ceilometer", "magnetometer")


# --- instruments --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SourceFiles:
    """One instrument source and the files of it that a month's join reads."""

    kind: str  #: ceilometer or magnetometer
    source: InstrumentSource
    files: list[InstrumentFile]
    schema_file: str  #: a file whose columns an empty month still gets (as NaN)


def month_sources(job: JobConfig, month: str) -> list[SourceFiles]:
    """Per configured source, its files whose span meets ``month`` (YYYY-MM) widened by the source's tolerance
    (:mod:`aurora_batch.instruments.spans`): one listing per source, and a file read only the first time its
    span is asked for, when its name does not date it."""
    start = pd.Timestamp(f"{month}-01")
    end = start + pd.offsets.MonthBegin(1)
    index = join_url(job.output, "_instruments/spans.parquet")
    out = []
    for kind in INSTRUMENT_KINDS:
        for src in getattr(job.join, kind):
            files = list_files(src.url, src.storage_options)
            times = functools.partial(_times, kind, src)
            spans = file_spans(files, src.format, times, index, job.output_storage_options)
            tolerance = pd.Timedelta(src.tolerance)
            out.append(
                SourceFiles(kind, src, overlapping(files, spans, start - tolerance, end + tolerance), files[0].url)
            )
    return out


def load_sources(sources: list[SourceFiles]) -> list[tuple[str, InstrumentSource, pd.DataFrame]]:
    """Read each source's files, its stations renamed to the image stations (keeping the readers' units); a
    source with no file in the window gives no rows, with the columns its files have."""
    out = []
    for s in sources:
        frame = _read(s.kind, s.source, [f.url for f in s.files] or [s.schema_file])
        if not s.files:
            frame = frame.iloc[:0]
        back = {inst: img for img, inst in s.source.stations.items()}
        mine = frame[frame["station"].isin(back)]
        mine = mine.assign(station=mine["station"].map(back)).reset_index(drop=True)
        mine.attrs = dict(frame.attrs)  # the reader's units
        out.append((s.kind, s.source, mine))
    return out


def _times(kind: str, src: InstrumentSource, url: str) -> pd.Series:
    return _read(kind, src, [url])["time"]


def _read(kind: str, src: InstrumentSource, urls: list[str]) -> pd.DataFrame:
    readers = CEILOMETER_READERS if kind == "ceilometer" else MAGNETOMETER_READERS
    kw = {"station": next(iter(src.stations.values()))} if kind == "ceilometer" else {}
    return read_many(readers[src.format], urls, src.storage_options, **kw)


def _variables(
    joined: pd.DataFrame, kind: str, columns: list[str], cloud_max_cbh: float, units: dict[str, str]
) -> dict[str, tuple]:
    """The store variables of one joined instrument kind; magnetometer units are the readers' (nT, arcmin)."""
    dt_s = joined["dt"].dt.total_seconds().to_numpy(np.float32)
    if kind == "ceilometer":
        det = joined["cloud_detected"].astype("Float64").to_numpy(np.float32, na_value=np.nan)
        cbh = joined["cbh"].to_numpy(np.float32)
        cloudy = np.where(np.isnan(det), np.nan, ((det == 1) & (cbh < cloud_max_cbh)).astype(np.float32))
        return {
            "cbh": (cbh, {"long_name": "ceilometer cloud base height (lowest)", "units": "m"}),
            "cloud_detected": (det, {"long_name": "ceilometer detected a cloud base (1), none (0), unknown (NaN)"}),
            "ceilometer_cloudy": (
                cloudy.astype(np.float32),
                {"long_name": f"cloud base below {cloud_max_cbh} m", "units": "1"},
            ),
            "cbh_dt": (dt_s, {"long_name": "ceilometer time - image time", "units": "s"}),
        }
    out = {
        f"mag_{c}": (
            joined[c].to_numpy(np.float32),
            {"long_name": f"magnetometer {c.upper()}", **({"units": units[c]} if c in units else {})},
        )
        for c in columns
    }
    out["mag_dt"] = (dt_s, {"long_name": "magnetometer time - image time", "units": "s"})
    return out


def _join_kind(
    left: pd.DataFrame,
    sources: list[tuple[InstrumentSource, pd.DataFrame]],
    station: str,
    m0: pd.Timestamp,
    m1: pd.Timestamp,
) -> pd.DataFrame | None:
    """Join one instrument kind; with several sources a row takes its partner from whichever has one."""
    combined = None
    for src, frame in sources:
        tol = pd.Timedelta(src.tolerance)
        sel = frame[(frame["station"] == station) & (frame["time"] >= m0 - tol) & (frame["time"] < m1 + tol)]
        joined = nearest(left, sel, tolerance=tol)
        if combined is None:
            combined = joined
            continue
        take = combined["dt"].isna() & joined["dt"].notna()
        for c in joined.columns:
            base = combined[c] if c in combined else pd.Series(np.nan, index=combined.index)
            combined[c] = base.where(~take, joined[c])
    return combined


def join_group(
    store,
    gpath: str,
    month: str,
    instruments: list[tuple[str, InstrumentSource, pd.DataFrame]],
    cloud_max_cbh: float,
    offset: int = 0,
) -> dict[str, int]:
    """Write the joined variables of every instrument kind into group ``gpath`` of a month being written, for
    its images from row ``offset`` on (the rows a commit wrote; the joined arrays already hold the rows before).

    Returns the number of those images with a partner per kind.
    """
    station = gpath.split("/")[0]
    with xr.open_zarr(store, group=gpath, consolidated=False, chunks=None) as ds:
        times, group_attrs, existing = ds["time"].to_numpy()[offset:], dict(ds.attrs), set(ds.data_vars)
    left = pd.DataFrame({"time": times, "station": station})
    m0 = pd.Timestamp(month + "-01")
    m1 = m0 + pd.offsets.MonthBegin(1)
    new: dict[str, tuple] = {}
    matched = {}
    for kind in INSTRUMENT_KINDS:
        sources = [(src, f) for k, src, f in instruments if k == kind]
        joined = _join_kind(left, sources, station, m0, m1) if sources else None
        if joined is None:
            continue
        matched[kind] = int(joined["dt"].notna().sum())
        values = [c for c in joined.columns if c not in ("time", "station", "dt")]
        units = {c: u for _, f in sources for c, u in f.attrs.get("units", {}).items()}
        new.update(_variables(joined, kind, values, cloud_max_cbh, units))
    if not new:
        return matched
    out = xr.Dataset({k: ("time", v, a) for k, (v, a) in new.items()})
    if offset and set(new) <= existing:  # the arrays were cut at the offset and grown with the images
        out.to_zarr(
            store,
            group=gpath,
            region={"time": slice(offset, offset + len(times))},
            mode="r+",
            zarr_format=3,
            consolidated=False,
        )
    else:
        if offset:
            raise ValueError(
                f"group {gpath}: joined variables {sorted(set(new) - existing)} missing from a month "
                "being appended to (a join change rebuilds the month)"
            )
        out.attrs = group_attrs  # to_zarr(mode="a") rewrites the group's attributes with the dataset's
        out.to_zarr(store, group=gpath, mode="a", zarr_format=3, consolidated=False, encoding=chunk_encoding(out))
    return matched
