"""The join job: attach ceilometer and magnetometer samples to every image in the month stores.

For each month store and station group, the images' times are joined with
:func:`aurora_batch.join.nearest` to the instrument rows of that month widened by the
tolerance (so rows near month borders find their true partner), and written as variables
``cbh``, ``cloud_detected``, ``cbh_dt`` (ceilometer) and ``mag_<element>``, ``mag_dt``
(magnetometer).  Re-running replaces these variables; it never duplicates them.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd
import xarray as xr

from .config import InstrumentSource, JobConfig
from .fs import filesystem
from .join import nearest
from .lock import OutputLock
from .readers import CEILOMETER_READERS, MAGNETOMETER_READERS, read_many
from .store import consolidate, list_groups, store_url, zarr_store

__all__ = ["JoinSummary", "run_join", "month_stores", "load_instruments"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class JoinSummary:
    stores: list[str]
    matched: dict[str, int]  #: variable prefix -> images with a partner
    images: int

    def format(self) -> str:
        parts = ", ".join(f"{k}: {v}/{self.images}" for k, v in sorted(self.matched.items()))
        return f"aurora-batch join: {len(self.stores)} store(s), {self.images} images; matched {parts}"


def month_stores(job: JobConfig) -> list[tuple[str, str]]:
    """(month, store URL) of the stores under ``job.output`` inside [start, end)."""
    fs, path = filesystem(job.output, job.output_storage_options)
    months = []
    for p in sorted(fs.glob(f"{path}/*.zarr")):
        month = p.rstrip("/").rsplit("/", 1)[-1][:-5]
        try:
            m0 = pd.Timestamp(month + "-01")
        except ValueError:
            continue
        if m0 < pd.Timestamp(job.end) and m0 + pd.offsets.MonthBegin(1) > pd.Timestamp(job.start):
            months.append((month, store_url(job.output, month)))
    return months


def load_instruments(sources: list[InstrumentSource], kind: str) -> list[tuple[InstrumentSource, pd.DataFrame]]:
    """Read every source, rename instrument stations to image stations."""
    readers = CEILOMETER_READERS if kind == "ceilometer" else MAGNETOMETER_READERS
    out = []
    for src in sources:
        kw = {"station": next(iter(src.stations.values()))} if kind == "ceilometer" else {}
        frame = read_many(readers[src.format], src.url, src.storage_options, **kw)
        back = {inst: img for img, inst in src.stations.items()}
        mine = frame[frame["station"].isin(back)]
        mine = mine.assign(station=mine["station"].map(back)).reset_index(drop=True)
        mine.attrs = dict(frame.attrs)  # the reader's units
        out.append((src, mine))
    return out


def _variables(joined: pd.DataFrame, kind: str, columns: list[str], cloud_max_cbh: float,
               units: dict[str, str]) -> dict[str, tuple]:
    """The store variables of one joined instrument kind; magnetometer units are the readers' (nT, arcmin)."""
    dt_s = joined["dt"].dt.total_seconds().to_numpy(np.float32)
    if kind == "ceilometer":
        det = joined["cloud_detected"].astype("Float64").to_numpy(np.float32, na_value=np.nan)
        cbh = joined["cbh"].to_numpy(np.float32)
        cloudy = np.where(np.isnan(det), np.nan, ((det == 1) & (cbh < cloud_max_cbh)).astype(np.float32))
        return {
            "cbh": (cbh, {"long_name": "ceilometer cloud base height (lowest)", "units": "m"}),
            "cloud_detected": (det, {"long_name": "ceilometer detected a cloud base (1), none (0), unknown (NaN)"}),
            "ceilometer_cloudy": (cloudy.astype(np.float32), {"long_name": f"cloud base below {cloud_max_cbh} m",
                                                              "units": "1"}),
            "cbh_dt": (dt_s, {"long_name": "ceilometer time - image time", "units": "s"}),
        }
    out = {f"mag_{c}": (joined[c].to_numpy(np.float32),
                        {"long_name": f"magnetometer {c.upper()}", **({"units": units[c]} if c in units else {})})
           for c in columns}
    out["mag_dt"] = (dt_s, {"long_name": "magnetometer time - image time", "units": "s"})
    return out


def _join_kind(left: pd.DataFrame, sources: list[tuple[InstrumentSource, pd.DataFrame]], station: str,
               m0: pd.Timestamp, m1: pd.Timestamp) -> pd.DataFrame | None:
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


def run_join(job: JobConfig) -> JoinSummary:
    """Join the configured instruments into every month store of ``job``."""
    if not (job.join.ceilometer or job.join.magnetometer):
        raise ValueError("join: the job spec names no ceilometer or magnetometer sources")
    instruments = [(kind, src, frame) for kind in ("ceilometer", "magnetometer")
                   for src, frame in load_instruments(getattr(job.join, kind), kind)]
    matched: dict[str, int] = {k: 0 for k, _, _ in instruments}
    images = 0
    stores = []
    with OutputLock(job.output, job.output_storage_options, purpose="join"):
        for month, url in month_stores(job):
            store = zarr_store(url, job.output_storage_options)
            m0 = pd.Timestamp(month + "-01")
            m1 = m0 + pd.offsets.MonthBegin(1)
            for gpath in list_groups(store):
                station = gpath.split("/")[0]
                with xr.open_zarr(store, group=gpath, consolidated=False) as ds:
                    times = ds["time"].to_numpy()
                left = pd.DataFrame({"time": times, "station": station})
                images += len(left)
                new: dict[str, tuple] = {}
                for kind in ("ceilometer", "magnetometer"):
                    joined = _join_kind(left, [(src, f) for k, src, f in instruments if k == kind], station, m0, m1)
                    if joined is None:
                        continue
                    matched[kind] += int(joined["dt"].notna().sum())
                    values = [c for c in joined.columns if c not in ("time", "station", "dt")]
                    units = {c: u for k, _, f in instruments if k == kind for c, u in f.attrs.get("units", {}).items()}
                    new.update(_variables(joined, kind, values, job.join.cloud_max_cbh, units))
                out = xr.Dataset({k: ("time", v, a) for k, (v, a) in new.items()}, coords={"time": times})
                out = out.drop_vars("time")  # the coordinate is already in the store
                out.to_zarr(store, group=gpath, mode="a", zarr_format=3, consolidated=False)
            consolidate(store)
            stores.append(url)
    return JoinSummary(stores, matched, images)
