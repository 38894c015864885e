"""Staged partitions and the monthly Zarr stores built from them.

Write path (see docs/design.md):

1. Each unit of work, a (station, wavelength, day) partition, writes **one** Parquet object
   ``{output}/_staging/{YYYY-MM}/{key}.parquet`` holding its catalog rows and, for kept
   images, the feature vectors.  One object is written atomically, so a partition is
   either staged completely or not at all, and its presence is the resume marker.
2. Once every partition of a month is staged, a single task commits the month: it writes
   ``{output}/{YYYY-MM}.zarr`` group by group, appending partitions in time order.  Only
   that task writes the month, so no two writers ever share a Zarr chunk.

Layout: one group per station (``NYA``); a station seen at several wavelengths in a month
gets one subgroup per wavelength (``NYA/5577``, ``NYA/6300``).
"""
from __future__ import annotations

import io
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import xarray as xr

from .catalog import CATALOG_COLUMNS, Status
from .fs import filesystem, join_url, write_bytes_atomic

__all__ = ["month_of", "staging_url", "store_url", "write_part", "read_part", "commit_month",
           "group_paths", "TIME_CHUNK"]

TIME_CHUNK = 512  #: images per Zarr chunk along time (features: 512 × 1280 float32 = 2.6 MB)
TIME_ENCODING = {"units": "microseconds since 1970-01-01T00:00:00", "calendar": "proleptic_gregorian",
                 "dtype": "int64"}

VARIABLE_ATTRS = {
    "features": {"long_name": "CNN feature vector", "units": "1"},
    "sun_alt": {"long_name": "apparent altitude of the Sun (no refraction)", "units": "degrees"},
    "moon_alt": {"long_name": "apparent altitude of the Moon (no refraction)", "units": "degrees"},
    "moon_illumination": {"long_name": "illuminated fraction of the Moon's disc", "units": "1"},
    "url": {"long_name": "source image URL"},
    "wavelength": {"long_name": "filter wavelength", "units": "angstrom"},
}


def month_of(time: pd.Timestamp) -> str:
    return f"{time:%Y-%m}"


def staging_url(output: str, month: str, key: str) -> str:
    return join_url(output, "_staging", month, f"{key}.parquet")


def store_url(output: str, month: str) -> str:
    return join_url(output, f"{month}.zarr")


def write_part(url: str, rows: pd.DataFrame, features: np.ndarray | None,
               storage_options: Mapping[str, Any] | None = None) -> None:
    """Stage one partition: catalog rows plus a feature vector per kept row, atomically."""
    table = pa.Table.from_pandas(rows[CATALOG_COLUMNS].reset_index(drop=True), preserve_index=False)
    n = len(rows)
    if features is not None and features.size:
        dim = features.shape[1]
        full = np.zeros((n, dim), dtype=np.float32)
        kept = (rows["status"] == Status.KEPT).to_numpy()
        full[kept] = features
        values = pa.array(full.reshape(-1), type=pa.float32())
        arr = pa.FixedSizeListArray.from_arrays(values, dim, mask=pa.array(~kept))
        table = table.append_column("features", arr)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_bytes_atomic(url, buf.getvalue(), dict(storage_options or {}))


def read_part(url: str, storage_options: Mapping[str, Any] | None = None,
              columns: Sequence[str] | None = None) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Rows of a staged partition and, if present and asked for, the features of its kept rows."""
    fs, path = filesystem(url, dict(storage_options or {}))
    with fs.open(path, "rb") as f:
        table = pq.read_table(f, columns=list(columns) if columns else None)
    feats = None
    if "features" in table.column_names:
        col = table.column("features").combine_chunks()
        table = table.drop_columns(["features"])
        rows = table.to_pandas()
        kept = (rows["status"] == Status.KEPT).to_numpy()
        dim = col.type.list_size
        flat = col.flatten().to_numpy(zero_copy_only=False) if len(col) else np.empty(0, np.float32)
        # flatten() skips null slots, which are exactly the rejected rows.
        feats = flat.reshape(-1, dim).astype(np.float32, copy=False)
        assert len(feats) == kept.sum(), f"{url}: features do not match kept rows"
    else:
        rows = table.to_pandas()
    if "time" in rows:
        rows["time"] = pd.to_datetime(rows["time"]).astype("datetime64[ns]")
    return rows, feats


def group_paths(pairs: Iterable[tuple[str, int | None]]) -> dict[tuple[str, int | None], str]:
    """Group path for each (station, wavelength): ``NYA``, or ``NYA/5577`` when a station has several."""
    by_station: dict[str, set] = defaultdict(set)
    for station, wl in pairs:
        by_station[station].add(wl)
    paths = {}
    for station, wls in by_station.items():
        for wl in wls:
            paths[(station, wl)] = station if len(wls) == 1 else f"{station}/{wl}"
    return paths


def _dataset(rows: pd.DataFrame, feats: np.ndarray) -> xr.Dataset:
    ds = xr.Dataset(
        {
            "features": (("time", "feature"), feats),
            "sun_alt": ("time", rows["sun_alt"].to_numpy(np.float32)),
            "moon_alt": ("time", rows["moon_alt"].to_numpy(np.float32)),
            "moon_illumination": ("time", rows["moon_illumination"].to_numpy(np.float32)),
            "url": ("time", rows["url"].to_numpy(dtype=object)),
            "wavelength": ("time", rows["wavelength"].fillna(0).to_numpy(np.int32)),
        },
        coords={"time": ("time", rows["time"].to_numpy("datetime64[ns]"), {"timezone": "UTC"}),
                "feature": np.arange(feats.shape[1], dtype=np.int32)},
    )
    for name, attrs in VARIABLE_ATTRS.items():
        ds[name].attrs.update(attrs)
    return ds


def _encoding(ds: xr.Dataset) -> dict:
    enc: dict[str, dict] = {"time": dict(TIME_ENCODING, chunks=(TIME_CHUNK * 8,))}
    for name, var in ds.data_vars.items():
        chunks = (TIME_CHUNK, var.shape[1]) if var.ndim == 2 else (TIME_CHUNK * 8,)
        enc[name] = {"chunks": chunks}
    return enc


def commit_month(output: str, month: str, part_urls: Sequence[str], group_attrs: Mapping[str, Mapping[str, Any]],
                 common_attrs: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None) -> dict:
    """Build ``{output}/{month}.zarr`` from staged partitions; returns kept images per group.

    ``group_attrs`` maps a station code to its group attributes (site description);
    ``common_attrs`` (model, recipe, thresholds, version) go on every group.  Partitions are
    appended in time order per group, one partition in memory at a time.
    """
    import zarr

    options = dict(storage_options or {})
    url = store_url(output, month)
    fs, path = filesystem(url, options)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    # Which groups exist, from the light catalog columns only.
    parts = sorted(part_urls, key=lambda u: u.rsplit("/", 1)[-1])
    keys = set()
    for u in parts:
        rows, _ = read_part(u, options, columns=["station", "wavelength", "status"])
        kept = rows[rows["status"] == Status.KEPT]
        keys.update((s, None if pd.isna(w) else int(w)) for s, w in zip(kept["station"], kept["wavelength"]))
    paths = group_paths(keys)
    counts: dict[str, int] = defaultdict(int)
    started: set[str] = set()
    store = _zarr_store(url, options)
    root = zarr.open_group(store=store, mode="w", zarr_format=3)
    root.attrs.update({"title": f"aurora-batch features for {month}", **dict(common_attrs)})
    for u in parts:
        rows, feats = read_part(u, options)
        kept_mask = (rows["status"] == Status.KEPT).to_numpy()
        rows = rows[kept_mask].reset_index(drop=True)
        if not len(rows):
            continue
        wl_key = rows["wavelength"].map(lambda w: None if pd.isna(w) else int(w))
        for (station, wl), idx in rows.groupby([rows["station"], wl_key], dropna=False).groups.items():
            gpath = paths[(station, None if pd.isna(wl) else int(wl))]
            sub = rows.loc[idx].sort_values("time")
            ds = _dataset(sub, feats[sub.index.to_numpy()])
            ds.attrs.update({**dict(common_attrs), **dict(group_attrs.get(station, {}))})  # appends rewrite attrs
            if gpath not in started:
                ds.to_zarr(store, group=gpath, mode="w", zarr_format=3, consolidated=False,
                           encoding=_encoding(ds))
                started.add(gpath)
            else:
                ds.to_zarr(store, group=gpath, append_dim="time", zarr_format=3, consolidated=False)
            counts[gpath] += len(sub)
    with warnings.catch_warnings():  # consolidated metadata is an extension in v3; xarray reads it
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(store)
    return dict(counts)


def _zarr_store(url: str, options: Mapping[str, Any]):
    from zarr.storage import FsspecStore, LocalStore

    fs, path = filesystem(url, dict(options))
    if "file" in fs.protocol or "local" in fs.protocol:
        return LocalStore(path)
    return FsspecStore.from_url(url, storage_options=dict(options) or None)
