"""The catalog ledger: one Parquet table per month (``{output}/catalog/{YYYY-MM}.parquet``) of every input
file and what became of it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from aurora_batch.core.fs import (
    filesystem,
    join_url,
)
from aurora_batch.core.keys import FRAME_COUNT_COLUMNS
from aurora_batch.store.layout import catalog_url
from aurora_batch.store.parts import write_parquet

#: one schema for every month's catalog file, so the folder reads as one Parquet dataset even when a month has no
#: wavelength (THEMIS) or the undated file has no station
CATALOG_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("station", pa.string()),
        ("time", pa.timestamp("ns", tz="UTC")),
        ("wavelength", pa.int64()),
        ("format", pa.string()),
        ("status", pa.string()),
        ("detail", pa.string()),
        ("sun_alt", pa.float64()),
        ("moon_alt", pa.float64()),
        ("moon_illumination", pa.float64()),
    ]
    + [(c, pa.int64()) for c in FRAME_COUNT_COLUMNS]
)


def write_month_catalog(
    output: str, month: str, rows: pd.DataFrame, storage_options: Mapping[str, Any] | None = None
) -> None:
    """Write the catalog rows of one month (or ``undated``) as ``{output}/catalog/{month}.parquet``.

    Frame counts a row lacks are 0 (a file whose name does not parse has no frames read)."""
    rows = rows.sort_values(["station", "wavelength", "time", "url"], na_position="last", kind="stable")
    rows = rows.assign(
        time=pd.to_datetime(rows["time"]).dt.tz_localize("UTC"), **{c: 0 for c in FRAME_COUNT_COLUMNS if c not in rows}
    )
    rows = rows.reindex(columns=CATALOG_SCHEMA.names)
    write_parquet(join_url(catalog_url(output), f"{month}.parquet"), rows, storage_options, schema=CATALOG_SCHEMA)


def read_month_catalog(output: str, month: str, storage_options: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The catalog rows of one month (or ``undated``), with naive UTC times as the planner makes them;
    ``FileNotFoundError`` when there are none yet."""
    fs, path = filesystem(join_url(catalog_url(output), f"{month}.parquet"), dict(storage_options or {}))
    rows = pq.read_table(io.BytesIO(fs.cat_file(path))).to_pandas()
    rows["time"] = pd.to_datetime(rows["time"]).dt.tz_localize(None).astype("datetime64[ns]")
    return rows


def read_catalog(output: str, storage_options: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The whole catalog ledger under ``output`` (all months and the undated rows)."""
    fs, path = filesystem(catalog_url(output), dict(storage_options or {}))
    files = sorted(fs.glob(f"{path}/*.parquet"))
    frames = []
    for f in files:
        frames.append(pq.read_table(io.BytesIO(fs.cat_file(f))).to_pandas())
    if not frames:
        raise FileNotFoundError(f"no catalog under {catalog_url(output)}")
    return pd.concat(frames, ignore_index=True)
