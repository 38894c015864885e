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


def _wavelengths(store, station: str) -> dict[int, str]:
    """``{wavelength (Å, 0: unfiltered): group path}`` of ``station`` in one month store."""
    import zarr

    found = {}
    for path in list_groups(store):
        name, _, sub = path.partition("/")
        if name != station:
            continue
        if sub:  # NYA/5577, or NYA/None for unfiltered frames beside filtered ones
            found[0 if sub == "None" else int(sub)] = path
        else:  # the month's only wavelength: read it
            found[int(zarr.open_group(store=store, path=path, mode="r")["wavelength"][0])] = path
    return found


def _pick(found: dict[int, str], station: str, wavelength: int | None, where: str) -> str | None:
    """The group of ``wavelength`` among ``found``; with None, the only one (an error if several)."""
    if wavelength is not None:
        return found.get(int(wavelength))
    if len(found) > 1:
        raise ValueError(f"{where}: station {station} has wavelengths {', '.join(map(str, sorted(found)))}; "
                         "pass wavelength=")
    return next(iter(found.values()), None)


def open_station(output: str, station: str, start=None, end=None, *, wavelength: int | None = None,
                 storage_options: Mapping[str, Any] | None = None) -> xr.Dataset:
    """One lazy dataset of ``station``'s images in [start, end) (UTC) over every month store under ``output``.

    ``wavelength`` (Å; 0 for unfiltered frames) picks one where the station has several, in one
    month or across months; without it, a station with several is an error.  Time is strictly
    increasing; variables written in only some months (``proba`` after a head was added,
    ``cbh`` after a join) are NaN in the others.  Raises ``FileNotFoundError`` when no
    month holds the station.
    """
    station = station.upper()
    opts = dict(storage_options or {})
    months = {url: _wavelengths(zarr_store(url, opts), station)
              for url in month_stores(output, start, end, opts).values()}
    if wavelength is None:  # one wavelength in every month, and the same in all
        _pick({wl: "" for found in months.values() for wl in found}, station, None, output)
    parts = []
    for url, found in months.items():
        group = _pick(found, station, wavelength, url)
        if group is not None:
            parts.append(xr.open_zarr(zarr_store(url, opts), group=group, consolidated=None))
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
    with several wavelengths over the range (``/GILL/0``: its unfiltered frames), each node holding
    that wavelength's frames from every month."""
    opts = dict(storage_options or {})
    found: dict[str, set[int]] = {}
    for url in month_stores(output, start, end, opts).values():
        store = zarr_store(url, opts)
        for station in {p.split("/")[0] for p in list_groups(store)}:
            found.setdefault(station, set()).update(_wavelengths(store, station))
    nodes = {}
    for station, wls in sorted(found.items()):
        for wl in sorted(wls):
            several = len(wls) > 1
            nodes[f"/{station}/{wl}" if several else f"/{station}"] = open_station(
                output, station, start, end, wavelength=wl if several else None, storage_options=opts)
    if not nodes:
        raise FileNotFoundError(f"no month store under {output} in [{start}, {end})")
    return xr.DataTree.from_dict(nodes)
