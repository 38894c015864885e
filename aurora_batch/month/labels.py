"""The label table: every frame's class, confidence and conditions as plain Parquet, written with its month.

``{output}/labels/month=YYYY-MM/station=XXX/<part>.parquet`` holds one row per stored frame of one staged part
(a station, wavelength and UTC day): time (UTC), wavelength, label, confidence (the highest class
probability), aurora_proba, ``proba_<class>``, cloud_detected, cbh (m), sun_alt and moon_alt (degrees), url,
frame, and the head and backbone that gave them.  ``{output}/labels_10min/`` holds, per station and 10 minutes,
the majority label, the mean probabilities and the frame count, as AuroraX serves machine labels.

A commit writes only the files of parts new or changed since the table was last written (an appended night
writes that night's files; a changed join or head, every file), read back from the published month.  pandas,
DuckDB, Spark or :func:`aurora_batch.products.query.query` read them without this package, pruning by the
``month=`` and ``station=`` folders.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from aurora_batch.core.fs import filesystem, join_url, read_bytes, remove, write_bytes_atomic
from aurora_batch.store.parts import write_parquet
from aurora_batch.store.state import MonthState

TABLES = ("labels", "labels_10min")
RECORD = "_written.json"  #: in labels/month=YYYY-MM/: the part versions its files were written from
BIN = "10min"  #: the summary table's time bins
#: the store's 1-D variables a label row takes, where the month has them
VARIABLES = ("wavelength", "label", "aurora_proba", "cloud_detected", "cbh", "sun_alt", "moon_alt", "url", "frame")


def table_url(output: str, table: str, month: str, station: str) -> str:
    """The folder of one station-month of a label table (``table``: labels or labels_10min)."""
    return join_url(output, f"{table}/month={month}/station={station}")


def label_rows(ds: xr.Dataset, identity: Mapping[str, str]) -> pd.DataFrame:
    """One row per frame of a month group's rows ``ds``: its classes, confidence, conditions and source.  The
    station and month are not columns: they are the folders (``station=``, ``month=``), as Hive partitions."""
    frame = pd.DataFrame({"time": pd.DatetimeIndex(ds["time"].values).tz_localize("UTC")})
    for name in VARIABLES:
        if name in ds:
            values = ds[name].values
            frame[name] = values.astype(object) if values.dtype.kind in "OUT" else values
    if "proba" in ds:
        proba = np.asarray(ds["proba"].values, np.float32)
        frame["confidence"] = proba.max(axis=1) if len(proba) else np.empty(0, np.float32)
        for i, c in enumerate(ds["class"].values):
            frame[f"proba_{c}"] = proba[:, i]
    for key, value in identity.items():
        frame[key] = value
    return frame


def ten_minutes(labels: pd.DataFrame) -> pd.DataFrame:
    """Per wavelength and 10-minute bin (``time`` its start, UTC) of one station's ``labels``: the majority
    ``label``, the mean of every probability and the ``frames`` count.  Empty without a head."""
    if "label" not in labels or labels.empty:
        return pd.DataFrame()
    keys = ["wavelength", labels["time"].dt.floor(BIN).rename("time")]
    grouped = labels.groupby(keys, sort=True)
    means = [c for c in labels if c == "aurora_proba" or c == "confidence" or c.startswith("proba_")]
    out = grouped[means].mean().astype(np.float32)
    out.insert(0, "label", grouped["label"].agg(lambda s: s.value_counts().index[0]))
    out["frames"] = grouped.size().astype(np.int32)
    return out.reset_index()


def write_labels(
    output: str,
    month: str,
    store,
    state: MonthState,
    identity: Mapping[str, str],
    storage_options: Mapping[str, Any] | None = None,
) -> int:
    """Bring the label files of ``month`` up to its published ``store`` (built from ``state``): the files of parts
    new or changed since they were last written (a record in the month's folder says which, so a commit killed
    before its labels is caught up by the next), read back from the store; files of parts no longer in the
    month are removed.  Returns the rows written."""
    record_url = join_url(output, f"labels/month={month}/{RECORD}")
    done = _read_record(record_url, state.layout, storage_options)
    todo = {n for n, v in state.parts.items() if done.get(n) != v}
    if not todo and set(done) <= set(state.parts):
        return 0
    rows = 0
    for gpath, members in sorted(state.groups.items()):
        station, offsets = gpath.split("/")[0], state.offsets(gpath)
        parts = [(name, *offsets[name]) for name, _ in members if name in todo]
        if not parts:
            continue
        lo, hi = parts[0][1], parts[-1][1] + parts[-1][2]
        with xr.open_zarr(store, group=gpath, consolidated=False, chunks=None) as ds:
            span = ds[[v for v in (*VARIABLES, "proba") if v in ds]].isel(time=slice(lo, hi)).load()
        for name, start, n in parts:
            labels = label_rows(span.isel(time=slice(start - lo, start - lo + n)), identity)
            for table, frame in zip(TABLES, (labels, ten_minutes(labels))):
                url = join_url(table_url(output, table, month, station), name)
                if len(frame):
                    write_parquet(url, frame, storage_options)
                else:  # a part whose frames were all dropped has no rows
                    remove(url, storage_options)
            rows += len(labels)
    _remove_parts_not_in(output, month, set(state.parts), storage_options)
    record = {"layout": state.layout, "parts": dict(sorted(state.parts.items()))}
    write_bytes_atomic(record_url, json.dumps(record, indent=1).encode(), storage_options)
    return rows


def _read_record(url: str, layout: str, options: Mapping[str, Any] | None) -> dict[str, str]:
    """Part name -> version of the label files written, as the month's record says (none under another layout)."""
    try:
        record = json.loads(read_bytes(url, options))
    except FileNotFoundError:
        return {}
    return dict(record.get("parts", {})) if record.get("layout") == layout else {}


def _remove_parts_not_in(output: str, month: str, keep: set[str], options: Mapping[str, Any] | None) -> None:
    for table in TABLES:
        fs, path = filesystem(join_url(output, f"{table}/month={month}"), options)
        try:
            files = fs.find(path)
        except FileNotFoundError:
            continue
        for stale in [f for f in files if f.endswith(".parquet") and f.rsplit("/", 1)[-1] not in keep]:
            fs.rm(stale)
