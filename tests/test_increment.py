"""Incremental month commits: a nightly writes what the night adds, and the result equals a rebuild value for value."""

import os

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import make_job
from helpers import part_rows

from aurora_batch.core.keys import PartitionKey, Status
from aurora_batch.datasets.synth import write_instruments
from aurora_batch.month import increment
from aurora_batch.month.build import build_month, common_attrs, join_fingerprint, month_inputs
from aurora_batch.month.increment import Tail, plan_tails
from aurora_batch.store.layout import month_url, staging_url
from aurora_batch.store.ledger import read_month_catalog
from aurora_batch.store.parts import write_part
from aurora_batch.store.state import MonthState
from aurora_batch.store.zarrs import list_groups, zarr_store

DIM = 16  #: features per image: 64 B a row, so that small test parts cross chunks (CHUNK_BYTES set low below)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setitem(increment.CHUNK_BYTES, 1, 1024)  # 256 float32 rows
    monkeypatch.setitem(increment.CHUNK_BYTES, 2, 4096)  # 64 rows of features


def _stage(job, name: str, times, seed: int, statuses=None) -> None:
    key = PartitionKey.parse(name)
    rows = part_rows(key.station, key.wavelength, times, statuses=statuses)
    kept = int((rows["status"] == Status.KEPT).sum())
    rng = np.random.default_rng(seed)
    write_part(
        staging_url(job.output, key),
        rows,
        {
            "features": rng.random((kept, DIM), dtype=np.float32),
            "keogram_ns": rng.random((kept, 8), dtype=np.float32),
            "keogram_ew": rng.random((kept, 8), dtype=np.float32),
        },
    )


def _night(day: str, n: int = 150, offset_s: int = 0):
    """``n`` frames from 20:00 of ``day`` at a 3 s cadence."""
    return pd.date_range(pd.Timestamp(day) + pd.Timedelta(hours=20, seconds=offset_s), periods=n, freq="3s")


def _build(job, month: str, force: bool = False):
    return build_month(
        job, month_inputs(job, month), common_attrs(job), join_fingerprint(job, month), force=force, command="nightly"
    )


def _month(job, month: str) -> dict[str, xr.Dataset]:
    store = zarr_store(month_url(job.output, month), job.output_storage_options)
    out = {}
    for gpath in list_groups(store):
        with xr.open_zarr(store, group=gpath, consolidated=False, chunks=None) as ds:
            out[gpath] = ds.load()
            out[gpath].attrs["_chunks"] = {v: ds[v].encoding.get("chunks") for v in ds.data_vars}
    return out


def _same(a: dict[str, xr.Dataset], b: dict[str, xr.Dataset]) -> None:
    assert sorted(a) == sorted(b)
    for gpath in a:
        xr.testing.assert_identical(a[gpath], b[gpath])
        t = a[gpath]["time"].to_numpy()
        assert (np.diff(t) > np.timedelta64(0)).all(), gpath  # strictly increasing and unique


@pytest.fixture
def joined_job(tmp_path):
    labels = pd.DataFrame(
        {"station": "NYA", "time": pd.date_range("2010-12-29", "2011-01-03", freq="30min"), "label": "arc"}
    )
    write_instruments(f"file://{tmp_path}/inst", labels, seed=2)
    join = {
        "magnetometer": [
            {
                "url": f"file://{tmp_path}/inst/magnetometer/*.min",
                "format": "iaga2002",
                "stations": {"NYA": "NAL"},
                "tolerance": "60s",
            }
        ]
    }
    return join


@pytest.mark.parametrize("fmt", ["zarr", "icechunk"])
def test_nightly_commits_append_and_equal_a_rebuild(tmp_path, fmt, joined_job):
    job = make_job(
        "file:///in",
        f"file://{tmp_path}/out",
        start="2010-12-01",
        end="2011-02-01",
        store={"format": fmt},
        join=joined_job,
    )
    for i, day in enumerate(["2010-12-28", "2010-12-29", "2010-12-30"]):
        _stage(job, f"NYA_5577_{day.replace('-', '')}", _night(day), seed=i)
        _stage(job, f"LYR_5577_{day.replace('-', '')}", _night(day, 40), seed=10 + i)
    first = _build(job, "2010-12")
    assert not first.incremental and first.counts == {"NYA": 450, "LYR": 120}
    if fmt == "zarr":
        chunk0 = tmp_path / "out" / "2010-12.zarr" / "NYA" / "features" / "c" / "0" / "0"
        inode = chunk0.stat().st_ino

    # A nightly across the month border: NYA's 31 December and 1 January.  December is appended to (LYR untouched),
    # January is new.
    _stage(job, "NYA_5577_20101231", _night("2010-12-31", 130), seed=3)
    _stage(job, "NYA_5577_20110101", _night("2011-01-01", 70), seed=4)
    dec = _build(job, "2010-12")
    assert dec.incremental and dec.counts == {"NYA": 580} and dec.rows_written == 130
    assert dec.matched["magnetometer"] == 130  # the join ran over the rows written
    assert not _build(job, "2011-01").incremental
    if fmt == "zarr":  # the first chunk of the features was neither rewritten nor copied
        assert chunk0.stat().st_ino == inode and chunk0.stat().st_nlink == 1
        assert not list((tmp_path / "out").glob("*.building-*")) and not list((tmp_path / "out").glob("*.old-*"))
    appended = _month(job, "2010-12")
    assert _build(job, "2010-12") is None  # idle: nothing to write
    _build(job, "2010-12", force=True)
    _same(appended, _month(job, "2010-12"))

    # A late file for the 29th: NYA is rewritten from that day on (the 30th and 31st again, from their parts).
    late = _night("2010-12-29").append(pd.DatetimeIndex([pd.Timestamp("2010-12-29T23:59:00")]))
    _stage(job, "NYA_5577_20101229", late, seed=1)
    mid = _build(job, "2010-12")
    assert mid.incremental and mid.counts == {"NYA": 581} and mid.rows_written == 581 - 150
    changed = _month(job, "2010-12")
    _build(job, "2010-12", force=True)
    rebuilt = _month(job, "2010-12")
    _same(changed, rebuilt)
    assert pd.Timestamp("2010-12-29T23:59:00") in rebuilt["NYA"].indexes["time"]
    xr.testing.assert_identical(changed["LYR"], appended["LYR"])
    catalog = read_month_catalog(job.output, "2010-12")
    assert len(catalog) == 581 + 120 and catalog["url"].is_unique
    # A catalog lost (a run killed between publishing the month and writing it): the next append rebuilds it
    # from the parts' own ledgers, not only from the parts it reads.
    os.remove(f"{tmp_path}/out/catalog/2010-12.parquet")
    again = _build(job, "2010-12")  # the same parts: no rows written, the catalog written again
    assert again is not None and again.rows_written == 0
    assert len(read_month_catalog(job.output, "2010-12")) == 581 + 120
    os.remove(f"{tmp_path}/out/catalog/2010-12.parquet")
    _stage(job, "NYA_5577_20101231", _night("2010-12-31", 131), seed=3)
    assert _build(job, "2010-12").incremental
    catalog = read_month_catalog(job.output, "2010-12")
    assert len(catalog) == 582 + 120 and catalog["url"].is_unique


def test_a_published_part_no_longer_staged_is_read_from_the_month(tmp_path):
    """Staged parts are a write-ahead log: once published, a part may go, and a later rewrite of its group from an
    earlier day reads its rows from the published month."""
    job = make_job("file:///in", f"file://{tmp_path}/out", stations=["NYA"], start="2010-12-01", end="2011-01-01")
    for i, day in enumerate(["20101201", "20101202", "20101203"]):
        _stage(job, f"NYA_5577_{day}", _night(f"{day[:4]}-{day[4:6]}-{day[6:]}"), seed=i)
    _build(job, "2010-12")
    whole = _month(job, "2010-12")
    os.remove(staging_url(job.output, PartitionKey.parse("NYA_5577_20101203")).removeprefix("file://"))
    _stage(job, "NYA_5577_20101202", _night("2010-12-02"), seed=1)  # the same rows, staged again
    again = _build(job, "2010-12")
    assert again.incremental and again.rows_written == 300  # the 2nd from its part, the 3rd from the month
    _same(whole, _month(job, "2010-12"))


def test_plan_tails():
    old = MonthState(
        {"NYA_all_20101201.parquet": "a", "NYA_all_20101202.parquet": "b", "LYR_all_20101201.parquet": "c"},
        {
            "NYA": [("NYA_all_20101201.parquet", 10), ("NYA_all_20101202.parquet", 5)],
            "LYR": [("LYR_all_20101201.parquet", 7)],
        },
        "L",
    )
    versions = {**old.parts, "NYA_all_20101203.parquet": "d"}
    tails, state = plan_tails(old, versions, {"NYA_all_20101203.parquet": 4}, "L")
    assert tails == {"NYA": Tail("NYA", 15, ["NYA_all_20101203.parquet"])}
    assert state.groups["NYA"][-1] == ("NYA_all_20101203.parquet", 4) and state.groups["LYR"] == old.groups["LYR"]
    late = {**versions, "NYA_all_20101201.parquet": "a2"}
    tails, _ = plan_tails(old, late, {"NYA_all_20101201.parquet": 11, "NYA_all_20101203.parquet": 4}, "L")
    assert tails["NYA"].offset == 0 and len(tails["NYA"].parts) == 3
    assert plan_tails(old, versions, {"NYA_all_20101203.parquet": 4}, "other layout") is None
    split = {**old.parts, "NYA_5577_20101203.parquet": "e"}  # a second NYA wavelength would move NYA: rebuild
    assert plan_tails(old, split, {"NYA_5577_20101203.parquet": 3}, "L") is None
    emptied = {**old.parts, "LYR_all_20101201.parquet": "c2"}  # LYR's only part now without images: rebuild
    assert plan_tails(old, emptied, {"LYR_all_20101201.parquet": 0}, "L") is None
    assert plan_tails(old, dict(old.parts), {}, "L") == ({}, old)  # idle


@pytest.mark.slow
def test_compacted_staging_resumes_per_file_from_the_month(tmp_path, dask_client):
    """store.keep_staging: false: once a month is published, its parts keep only their ledgers (each feature vector
    is stored once, in the month); a late file then costs one file, its partition's other files coming from the
    ledger and the month; the stores equal those of a run that kept its parts, and a rebuild reads the month."""
    import io

    from PIL import Image

    from aurora_batch.datasets.synth import asim_name, render_frame, write_archive
    from aurora_batch.runner.season import run_season

    archive = f"file://{tmp_path}/archive"
    write_archive(archive, ["NYA", "LYR"], "2010-12-01T12:00", "2010-12-02T12:00", cadence="30min", seed=5)
    flt = {"moon_max_alt": None, "sun_max_alt": -5.0}
    compact = make_job(
        archive, f"file://{tmp_path}/compact", end="2010-12-03", filter=flt, store={"keep_staging": False}
    )
    kept = make_job(archive, f"file://{tmp_path}/kept", end="2010-12-03", filter=flt)
    run_season(compact, client=dask_client, progress=False)
    staging = tmp_path / "compact" / "_staging" / "2010-12"
    assert not list(staging.glob("*.parquet")) and len(list((staging / "published").glob("*.parquet"))) == 4
    assert sum(p.stat().st_size for p in (staging / "published").glob("*")) < 0.2 * sum(
        p.stat().st_size for p in (tmp_path / "compact" / "2010-12.zarr").rglob("*") if p.is_file()
    )

    late = pd.Timestamp("2010-12-01T23:05:00")
    buf = io.BytesIO()
    Image.fromarray(render_frame("arc", late, np.random.default_rng(0))).save(buf, format="PNG")
    (tmp_path / "archive" / asim_name("NYA", late)).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "archive" / asim_name("NYA", late)).write_bytes(buf.getvalue())
    second = run_season(compact, client=dask_client, progress=False)
    assert second.computed == 1 and second.reused == 24 * 4  # 24 files of NYA's 1st from its ledger and month
    assert not list(staging.glob("*.parquet"))  # compacted again once published
    run_season(kept, client=dask_client, progress=False)
    _same(_month(compact, "2010-12"), _month(kept, "2010-12"))
    assert len(read_month_catalog(compact.output, "2010-12")) == len(read_month_catalog(kept.output, "2010-12"))

    def tree():
        return {p: p.stat().st_mtime_ns for p in (tmp_path / "compact" / "2010-12.zarr").rglob("*")}

    before = tree()
    idle = run_season(compact, client=dask_client, progress=False)
    assert idle.stores == [] and idle.computed == 0 and tree() == before  # idle: nothing written
    rebuilt = run_season(compact, client=dask_client, progress=False, rebuild=True)
    assert rebuilt.stores and rebuilt.computed == 0
    _same(_month(compact, "2010-12"), _month(kept, "2010-12"))
