"""Open what a season wrote: one station over many months, or every station as a tree.

The monthly stores (``{output}/{YYYY-MM}.zarr``, one group per station, a subgroup per
wavelength when a station has several) are opened lazily with xarray and joined along time,
like TAME's ``Provider.get_asim(date_start, date_end, location)`` over its monthly files::

    import aurora_batch as ab
    nya = ab.open_station("s3://bucket/season", "NYA", "2010-12-01", "2011-02-01",
                          storage_options={"anon": False})
    nya["aurora_proba"].resample(time="1h").mean().plot()
    tree = ab.open_season("s3://bucket/season")          # xarray.DataTree: /NYA, /LYR, ...
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .fs import filesystem
from .store import list_groups, store_url, zarr_store

__all__ = ["open_station", "open_season", "month_stores"]

_MONTH = re.compile(r"(\d{4}-\d{2})\.zarr$")


def month_stores(output: str, start=None, end=None, storage_options: Mapping[str, Any] | None = None
                 ) -> dict[str, str]:
    """``{YYYY-MM: store URL}`` of the published months under ``output`` that overlap [start, end) (UTC)."""
    fs, root = filesystem(output, dict(storage_options or {}))
    found = {}
    for path in fs.ls(root, detail=False):
        m = _MONTH.search(path.rstrip("/"))
        if m and fs.exists(f"{path.rstrip('/')}/zarr.json"):  # published (a store being replaced has none)
            found[m.group(1)] = store_url(output, m.group(1))
    lo = pd.Timestamp(start).to_period("M") if start is not None else None
    hi = pd.Timestamp(end) if end is not None else None
    return {m: u for m, u in sorted(found.items())
            if (lo is None or pd.Period(m, "M") >= lo) and (hi is None or pd.Period(m, "M").start_time < hi)}


def _group(store, station: str, wavelength: int | None, url: str) -> str | None:
    """The group path of ``station`` (at ``wavelength``) in one month store, or None when absent."""
    paths = list_groups(store)
    subs = sorted(p.split("/")[1] for p in paths if p.startswith(f"{station}/"))
    if wavelength is None:
        if subs:
            raise ValueError(f"{url}: station {station} has wavelengths {', '.join(subs)}; pass wavelength=")
        return station if station in paths else None
    if str(wavelength) in subs:
        return f"{station}/{wavelength}"
    if station in paths:  # one wavelength that month: the group itself, if it is that one
        with xr.open_zarr(store, group=station, chunks=None) as ds:
            return station if int(ds["wavelength"][0]) in (wavelength, 0) else None
    return None


def open_station(output: str, station: str, start=None, end=None, *, wavelength: int | None = None,
                 storage_options: Mapping[str, Any] | None = None) -> xr.Dataset:
    """One lazy dataset of ``station``'s images in [start, end) (UTC) over every month store under ``output``.

    ``wavelength`` (Å) picks a subgroup where the station has several.  Time is strictly
    increasing; variables written in only some months (``proba`` after a head was added,
    ``cbh`` after a join) are NaN in the others.  Raises ``FileNotFoundError`` when no
    month holds the station.
    """
    station = station.upper()
    opts = dict(storage_options or {})
    parts = []
    for month, url in month_stores(output, start, end, opts).items():
        store = zarr_store(url, opts)
        group = _group(store, station, wavelength, url)
        if group is not None:
            parts.append(xr.open_zarr(store, group=group, consolidated=None))
    if not parts:
        what = station if wavelength is None else f"{station} at {wavelength} Å"
        raise FileNotFoundError(f"no month store under {output} holds {what} in [{start}, {end})")
    ds = parts[0] if len(parts) == 1 else xr.concat(parts, dim="time", data_vars="minimal", coords="minimal",
                                                     compat="override", join="outer", combine_attrs="drop_conflicts")
    times = ds["time"].to_numpy()
    keep = np.ones(len(times), bool)
    if start is not None:
        keep &= times >= np.datetime64(pd.Timestamp(start).tz_localize(None), "ns")
    if end is not None:
        keep &= times < np.datetime64(pd.Timestamp(end).tz_localize(None), "ns")
    if not keep.all():
        ds = ds.isel(time=np.flatnonzero(keep))
    if len(ds["time"]) > 1 and not (np.diff(ds["time"].to_numpy()) > np.timedelta64(0)).all():
        raise ValueError(f"{output}: the times of {station} are not strictly increasing across months")
    return ds


def open_season(output: str, start=None, end=None, *, storage_options: Mapping[str, Any] | None = None
                ) -> xr.DataTree:
    """Every station (and wavelength subgroup) under ``output`` as an ``xarray.DataTree`` of
    :func:`open_station` datasets: ``/NYA``, ``/LYR``, or ``/NYA/5577`` and ``/NYA/6300`` for a station
    with several wavelengths in some month (its single-wavelength months join their wavelength's node)."""
    opts = dict(storage_options or {})
    paths: set[str] = set()
    for url in month_stores(output, start, end, opts).values():
        paths.update(list_groups(zarr_store(url, opts)))
    split = {p.split("/")[0] for p in paths if "/" in p}  # stations with several wavelengths in some month
    nodes = {}
    for path in sorted(p for p in paths if p not in split):
        station, _, wl = path.partition("/")
        nodes[f"/{path}"] = open_station(output, station, start, end, wavelength=int(wl) if wl else None,
                                         storage_options=opts)
    if not nodes:
        raise FileNotFoundError(f"no month store under {output} in [{start}, {end})")
    return xr.DataTree.from_dict(nodes)
