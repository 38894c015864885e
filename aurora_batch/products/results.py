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

from aurora_batch.core.fs import filesystem
from aurora_batch.store.layout import month_url
from aurora_batch.store.zarrs import list_groups, zarr_store

_MONTH = re.compile(r"(\d{4}-\d{2})\.(zarr|icechunk)$")


def month_stores(output: str, start=None, end=None, storage_options: Mapping[str, Any] | None = None) -> dict[str, str]:
    """``{YYYY-MM: store URL}`` of the published months under ``output`` that overlap [start, end) (UTC):
    a month's Icechunk repository where it has one, else its plain Zarr store."""
    fs, root = filesystem(output, dict(storage_options or {}))
    lo = pd.Timestamp(start).to_period("M") if start is not None else None
    hi = pd.Timestamp(end) if end is not None else None
    months = set()
    for path in fs.ls(root, detail=False):
        m = _MONTH.search(path.rstrip("/"))
        if (
            m
            and (lo is None or pd.Period(m.group(1), "M") >= lo)
            and (hi is None or pd.Period(m.group(1), "M").start_time < hi)
        ):
            months.add(m.group(1))
    found = {m: month_url(output, m, storage_options) for m in sorted(months)}
    return {m: u for m, u in found.items() if u is not None}


def store_history(output: str, month: str, storage_options: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The versions of ``month`` (``YYYY-MM``), newest first: ``id`` (open it with ``version=``), ``time``
    (UTC), ``message``, ``command``, ``images``, ``fingerprint``, ``metadata``.  A plain Zarr month
    has no history: ``LookupError``."""
    from aurora_batch.store.versions import history

    url = month_url(output, month, storage_options)
    if url is None:
        raise FileNotFoundError(f"no month {month} under {output}")
    if not url.endswith(".icechunk"):
        raise LookupError(f"{url} is a plain Zarr store: it keeps no versions (store.format: icechunk does)")
    return history(url, storage_options)


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
            var = zarr.open_group(store=store, path=path, mode="r")["wavelength"]
            assert isinstance(var, zarr.Array)  # a variable of the group, not a subgroup
            found[int(np.asarray(var[0]))] = path
    return found


def _season_groups(months: Mapping[str, tuple[str, Any]]) -> dict[tuple[str, str], tuple[str, int, bool]]:
    """``{(month, group path): (station, wavelength, several)}``: ``several`` where the station has more than one
    wavelength over ``months``."""
    found: dict[tuple[str, str], tuple[str, int]] = {}
    wavelengths: dict[str, set[int]] = {}
    for month, (_, store) in months.items():
        for station in {p.split("/")[0] for p in list_groups(store)}:
            for wl, path in _wavelengths(store, station).items():
                found[(month, path)] = (station, wl)
                wavelengths.setdefault(station, set()).add(wl)
    return {key: (s, wl, len(wavelengths[s]) > 1) for key, (s, wl) in found.items()}


def season_names(months: Mapping[str, tuple[str, Any]]) -> dict[tuple[str, str], str]:
    """``{(month, group path): name}``: each month group's name in the season's tree (:func:`open_season`),
    ``NYA``, or ``GILL/0`` and ``GILL/4861`` for a station with several wavelengths over ``months``."""
    return {key: f"{s}/{wl}" if several else s for key, (s, wl, several) in _season_groups(months).items()}


def _pick(found: dict[int, str], station: str, wavelength: int | None, where: str) -> str | None:
    """The group of ``wavelength`` among ``found``; with None, the only one (an error if several)."""
    if wavelength is not None:
        return found.get(int(wavelength))
    if len(found) > 1:
        raise ValueError(
            f"{where}: station {station} has wavelengths {', '.join(map(str, sorted(found)))}; pass wavelength="
        )
    return next(iter(found.values()), None)


def open_months(
    output: str,
    start=None,
    end=None,
    storage_options: Mapping[str, Any] | None = None,
    version: str | None = None,
    as_of=None,
) -> dict[str, tuple[str, Any]]:
    """``{YYYY-MM: (store URL, zarr store)}`` of the months overlapping [start, end): the newest version of
    each, or at ``version``/``as_of`` the versioned months where they resolve (``LookupError`` if none)."""
    opts = dict(storage_options or {})
    out = {}
    for month, url in month_stores(output, start, end, opts).items():
        try:
            out[month] = (url, zarr_store(url, opts, version, as_of))
        except LookupError:  # a plain month, or a version of another month
            if version is None and as_of is None:
                raise
    if not out and (version is not None or as_of is not None):
        raise LookupError(
            f"no month under {output} has version {version!r}"
            if version is not None
            else f"no versioned month under {output} existed at {as_of}"
        )
    return out


def open_station(
    output: str,
    station: str,
    start=None,
    end=None,
    *,
    wavelength: int | None = None,
    version: str | None = None,
    as_of=None,
    storage_options: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """One lazy dataset of ``station``'s images in [start, end) (UTC) over every month store under ``output``.

    ``wavelength`` (Å; 0 for unfiltered frames) picks one where the station has several, in one
    month or across months; without it, a station with several is an error.  ``version`` (a
    snapshot id from :func:`store_history`, or a tag) or ``as_of`` (a UTC time) open versioned
    months as they were (months where the version does not exist are left out).  Time is
    strictly increasing; variables written in only some months (``proba`` after a head was
    added, ``cbh`` after a join) are NaN in the others.  Raises ``FileNotFoundError`` when no
    month holds the station.
    """
    station = station.upper()
    opts = dict(storage_options or {})
    stores = dict(open_months(output, start, end, opts, version, as_of).values())
    months = {url: _wavelengths(store, station) for url, store in stores.items()}
    if wavelength is None:  # one wavelength in every month, and the same in all
        _pick({wl: "" for found in months.values() for wl in found}, station, None, output)
    parts = []
    for url, found in months.items():
        group = _pick(found, station, wavelength, url)
        if group is not None:
            parts.append(xr.open_zarr(stores[url], group=group, consolidated=None))
    if not parts:
        what = station if wavelength is None else f"{station} at {wavelength} Å"
        raise FileNotFoundError(f"no month store under {output} holds {what} in [{start}, {end})")
    ds = (
        parts[0]
        if len(parts) == 1
        else xr.concat(
            parts,
            dim="time",
            data_vars="minimal",
            coords="minimal",
            compat="override",
            join="outer",
            combine_attrs="drop_conflicts",
        )
    )
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


def open_season(
    output: str,
    start=None,
    end=None,
    *,
    version: str | None = None,
    as_of=None,
    storage_options: Mapping[str, Any] | None = None,
) -> xr.DataTree:
    """Every station (and wavelength subgroup) under ``output`` as an ``xarray.DataTree`` of
    :func:`open_station` datasets: ``/NYA``, ``/LYR``, or ``/NYA/5577`` and ``/NYA/6300`` for a station
    with several wavelengths over the range (``/GILL/0``: its unfiltered frames), each node holding
    that wavelength's frames from every month (``version``, ``as_of``: as in :func:`open_station`)."""
    opts = dict(storage_options or {})
    groups = _season_groups(open_months(output, start, end, opts, version, as_of))
    nodes = {}
    for station, wl, several in sorted(set(groups.values())):
        nodes[f"/{station}/{wl}" if several else f"/{station}"] = open_station(
            output,
            station,
            start,
            end,
            wavelength=wl if several else None,
            version=version,
            as_of=as_of,
            storage_options=opts,
        )
    if not nodes:
        raise FileNotFoundError(f"no month store under {output} in [{start}, {end})")
    return xr.DataTree.from_dict(nodes)
