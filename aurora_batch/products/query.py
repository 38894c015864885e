"""Queries over the label table: an SQL condition over every frame of a season, reading only what can match.

::

    import aurora_batch as ab
    arcs = ab.query("s3://bucket/out", "label = 'arc' AND aurora_proba > 0.8 AND cloud_detected = 0",
                    stations=["GILL"], start="2014-01-01", end="2014-02-01")

Only the ``month=`` and ``station=`` folders of the window and stations are listed and read (pyarrow, through
the output's own fsspec file system, so any object store works with its ``storage_options``), and DuckDB runs
the condition over them with its filters and columns pushed into the Parquet reads.  The table's columns are
described in :mod:`aurora_batch.month.labels`; ``labels_10min`` (the 10-minute summaries) is queried the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd

from aurora_batch.core.fs import filesystem, is_local, join_url
from aurora_batch.month.labels import TABLES


def _month(t: Any) -> str:
    return pd.Timestamp(t).strftime("%Y-%m")


def _utc(t: Any) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def label_files(
    output: str,
    table: str = "labels",
    stations: Sequence[str] | None = None,
    start: Any = None,
    end: Any = None,
    storage_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """The Parquet files of ``table`` in the months overlapping [start, end) and the ``stations`` (all: None),
    found by listing only those folders.  ``FileNotFoundError`` when the output has no such table."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; the label tables are {', '.join(TABLES)}")
    fs, root = filesystem(join_url(output, table), storage_options)
    if not fs.exists(root):
        raise FileNotFoundError(
            f"{join_url(output, table)} does not exist: month commits write it (aurora-batch season), and "
            "'aurora-batch labels JOB.yaml' writes it for months published before"
        )
    lo, hi = (_month(start) if start is not None else None), (_month(_utc(end) - pd.Timedelta("1us")) if end else None)
    months = [
        p
        for p in fs.ls(root, detail=False)
        if "month=" in p and (lo is None or p.rsplit("=", 1)[-1] >= lo) and (hi is None or p.rsplit("=", 1)[-1] <= hi)
    ]
    wanted = {s.upper() for s in stations} if stations else None
    folders = [
        s
        for m in months
        for s in fs.ls(m, detail=False)
        if "station=" in s and (wanted is None or s.rsplit("=", 1)[-1] in wanted)
    ]
    with ThreadPoolExecutor(16) as pool:  # one listing request per station-month, 16 in flight
        found = pool.map(lambda f: [p for p in fs.ls(f, detail=False) if p.endswith(".parquet")], folders)
    return sorted(p for files in found for p in files)


def query(
    output: str,
    where: str | None = None,
    stations: Sequence[str] | None = None,
    start: Any = None,
    end: Any = None,
    storage_options: Mapping[str, Any] | None = None,
    table: str = "labels",
    columns: Sequence[str] | None = None,
    order_by: str = "station, time",
    limit: int | None = None,
) -> pd.DataFrame:
    """Rows of the label table under ``output`` matching ``where``, an SQL condition over its columns (e.g.
    ``"label = 'arc' AND aurora_proba > 0.8 AND cloud_detected = 0"``), in [start, end) (UTC) and ``stations``.

    Sorted by ``order_by`` (SQL, e.g. ``"confidence DESC"``), at most ``limit`` rows: the top rows of a season
    without holding every match.  ``columns`` (default: all) picks the columns returned.  Months that were
    written with different heads or joins may lack some columns: they read as NULL there.
    """
    import duckdb
    import pyarrow as pa
    import pyarrow.dataset as pads
    from pyarrow.fs import FSSpecHandler, LocalFileSystem, PyFileSystem

    files = label_files(output, table, stations, start, end, storage_options)
    fs, root = filesystem(join_url(output, table), storage_options)
    if not files:
        return pd.DataFrame(columns=["station", "time", *(columns or [])])
    pafs = LocalFileSystem() if is_local(fs) else PyFileSystem(FSSpecHandler(fs))  # Arrow's own reads where it can
    with ThreadPoolExecutor(16) as pool:  # footers only: one ranged read per file
        schemas = list(pool.map(lambda f: pads.dataset(f, filesystem=pafs, format="parquet").schema, files))
    partitioning = pads.partitioning(pa.schema([("month", pa.string()), ("station", pa.string())]), flavor="hive")
    data = pads.dataset(
        files,
        schema=pa.unify_schemas([*schemas, partitioning.schema], promote_options="permissive"),
        filesystem=pafs,
        format="parquet",
        partitioning=partitioning,
        partition_base_dir=root,
    )
    conditions = [f"({where})"] if where else []
    if start is not None:
        conditions.append(f"time >= TIMESTAMPTZ '{_utc(start).isoformat()}'")
    if end is not None:
        conditions.append(f"time < TIMESTAMPTZ '{_utc(end).isoformat()}'")
    picked = ", ".join(f'"{c}"' for c in dict.fromkeys(["station", "time", *(columns or ["*"])]))
    picked = picked.replace('"*"', "* EXCLUDE (station, time)")
    sql = f"SELECT {picked} FROM data {'WHERE ' + ' AND '.join(conditions) if conditions else ''} ORDER BY {order_by}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    try:
        con.register("data", data)
        result = con.sql(sql).df()
    except duckdb.Error as err:
        raise ValueError(f"query {where!r} over {join_url(output, table)}: {err}") from None
    finally:
        con.close()
    if "time" in result and result["time"].dt.tz is None:
        result["time"] = result["time"].dt.tz_localize("UTC")
    return result
