"""A month group's arrays: staged rows and features → an ``xarray.Dataset`` with units and conventions, and
the chunking it is written with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from aurora_batch.month.increment import (
    OBJECT_ROW_BYTES,
    chunk_rows,
)
from aurora_batch.partition.sky import KEOGRAM_CONVENTION

TIME_ENCODING = {"units": "microseconds since 1970-01-01T00:00:00", "calendar": "proleptic_gregorian", "dtype": "int64"}

VARIABLE_ATTRS = {
    "features": {"long_name": "CNN feature vector", "units": "1"},
    "sun_alt": {"long_name": "apparent altitude of the Sun (no refraction)", "units": "degrees"},
    "moon_alt": {"long_name": "apparent altitude of the Moon (no refraction)", "units": "degrees"},
    "moon_illumination": {"long_name": "illuminated fraction of the Moon's disc", "units": "1"},
    "url": {"long_name": "source file URL"},
    "frame": {"long_name": "frame index within the source file (multi-frame formats)"},
    "saturated_fraction": {
        "long_name": "fraction of pixels at the integer container's maximum, as decoded",
        "units": "1",
    },
    "wavelength": {"long_name": "filter wavelength (0: unfiltered)", "units": "angstrom"},
    "proba": {"long_name": "class probability from the linear head", "units": "1"},
    "label": {"long_name": "most probable class"},
    "aurora_proba": {"long_name": "probability of aurora (arc, diffuse or discrete)", "units": "1"},
    "keogram_ns": {
        "long_name": "north-south line of pixels through zenith",
        "units": "counts",
        "comment": KEOGRAM_CONVENTION,
    },
    "keogram_ew": {
        "long_name": "east-west line of pixels through zenith",
        "units": "counts",
        "comment": KEOGRAM_CONVENTION,
    },
}


def wavelength_key(w) -> int | None:
    return None if pd.isna(w) else int(w)


def month_dataset(rows: pd.DataFrame, arrays: Mapping[str, np.ndarray], classes: Sequence[str] = ()) -> xr.Dataset:
    feats = arrays["features"]
    data = {
        "features": (("time", "feature"), feats),
        "sun_alt": ("time", rows["sun_alt"].to_numpy(np.float32)),
        "moon_alt": ("time", rows["moon_alt"].to_numpy(np.float32)),
        "moon_illumination": ("time", rows["moon_illumination"].to_numpy(np.float32)),
        "url": ("time", rows["url"].to_numpy(dtype=object)),
        "frame": ("time", rows["frame"].to_numpy(np.int32)),
        "saturated_fraction": ("time", rows["saturated"].to_numpy(np.float32)),
        "wavelength": ("time", rows["wavelength"].fillna(0).to_numpy(np.int32)),
    }
    coords = {
        "time": ("time", rows["time"].to_numpy("datetime64[ns]"), {"timezone": "UTC"}),
        "feature": np.arange(feats.shape[1], dtype=np.int32),
    }
    for name, dim in (("keogram_ns", "ns"), ("keogram_ew", "ew")):
        if name in arrays:
            data[name] = (("time", dim), arrays[name])
    if "proba" in arrays:
        from aurora_batch.model.heads import class_outputs

        data["proba"] = (("time", "class"), arrays["proba"])
        data.update({name: ("time", values) for name, values in class_outputs(arrays["proba"], classes).items()})
        coords["class"] = np.asarray(classes, dtype=object)
    ds = xr.Dataset(data, coords=coords)
    for name, attrs in VARIABLE_ATTRS.items():
        if name in ds:
            ds[name].attrs.update(attrs)
    return ds


#: variables read a few rows at a time (a similarity search's exact rerank and its hits' URLs, a stored frame as
#: its query), with the rows of their inner chunks: each time chunk is one object (as unsharded) of inner chunks.
#: Measured on 72,000 rows on local disk (AMD EPYC, 2 cores), read by :func:`aurora_batch.store.rows.read_rows`,
#: where decompressing whole inner chunks is most of the cost: 40 random rows of 1,280 floats take 166 ms
#: unsharded (in Zarr, a row costs its whole 8 MiB chunk), 20 / 18-19 / 25-31 ms with 32 / 64 / 128-row inner
#: chunks; the whole array 0.81 / 0.69-0.89 / 0.49-0.83 s (0.30 s unsharded).  10 URLs take 12.8 ms unsharded,
#: 4.5 ms with 1,024-row inner chunks (the whole array 22 -> 30 ms).  Given in bytes (the nearest power of two
#: of rows), so that narrower features keep as few inner chunks: 64 rows of 1,280 floats, 1,024 URLs.
ROW_READ_BYTES = {"features": 2**18, "url": 2**16}


def chunk_encoding(ds: xr.Dataset) -> dict:
    """Time chunks sized by a row's bytes (:func:`~aurora_batch.month.increment.chunk_rows`), never by how many
    rows there are: a month grown by appends is chunked exactly as one built whole.  The variables of
    :data:`ROW_READ_BYTES` are sharded: each time chunk is one object (as unsharded) of small inner chunks."""
    enc: dict[str, dict] = {"time": dict(TIME_ENCODING, chunks=(chunk_rows(8, 1),))} if "time" in ds.coords else {}
    for name, var in ds.data_vars.items():
        row_bytes = (OBJECT_ROW_BYTES if var.dtype.kind in "OUST" else var.dtype.itemsize) * int(np.prod(var.shape[1:]))
        rows = chunk_rows(row_bytes, var.ndim)
        inner = 2 ** round(math.log2(ROW_READ_BYTES[str(name)] / row_bytes)) if name in ROW_READ_BYTES else 0
        if 0 < inner < rows:
            enc[str(name)] = {"chunks": (inner, *var.shape[1:]), "shards": (rows, *var.shape[1:])}
        else:
            enc[str(name)] = {"chunks": (rows, *var.shape[1:])}
    return enc
