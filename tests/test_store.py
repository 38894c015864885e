import numpy as np
import pandas as pd
import pytest
import xarray as xr
from helpers import part_rows

from aurora_batch.core.keys import PartitionKey, Status
from aurora_batch.month.commit import commit_month
from aurora_batch.month.increment import chunk_rows, group_paths
from aurora_batch.store.layout import staging_url
from aurora_batch.store.parts import read_part, read_staged_if, write_part


def _rows(station, wl, times, statuses=None):
    urls = [f"memory://in/{station}{wl}_{i}_{t:%H%M%S}.png" for i, t in enumerate(times)]
    return part_rows(station, wl, times, urls, statuses)


def test_part_roundtrip_keeps_features_of_kept_rows_only(tmp_path):
    rows = _rows(
        "NYA",
        5577,
        pd.date_range("2010-12-01", periods=4, freq="1min"),
        [Status.KEPT, Status.UNREADABLE, Status.KEPT, Status.KEPT],
    )
    feats = np.arange(3 * 5, dtype=np.float32).reshape(3, 5)
    url = f"file://{tmp_path}/part.parquet"
    write_part(url, rows, {"features": feats}, fingerprint="lite0|shipped|lite128")
    back, arrays = read_part(url)
    f = arrays["features"]
    assert read_staged_if(url, "lite0|shipped|other") is None  # other settings: recompute
    assert read_staged_if(url, "lite0|shipped|lite128")["url"].tolist() == rows["url"].tolist()
    np.testing.assert_array_equal(f, feats)
    assert back["status"].tolist() == rows["status"].tolist()
    assert (back["time"].to_numpy() == rows["time"].to_numpy()).all()
    assert not list(tmp_path.glob("*.tmp-*"))  # the atomic write left no temporary file


def test_group_paths():
    paths = group_paths([("NYA", 5577), ("NYA", 6300), ("LYR", 5577)])
    assert paths == {("NYA", 5577): "NYA/5577", ("NYA", 6300): "NYA/6300", ("LYR", 5577): "LYR"}


@pytest.mark.parametrize("output", ["file", "memory"])
def test_commit_month_layout(tmp_path, output):
    out = f"file://{tmp_path}/out" if output == "file" else "memory://commit-test/out"
    rng = np.random.default_rng(0)
    parts = []
    day1 = pd.date_range("2010-12-01T20:00", periods=700, freq="10s")  # > one time chunk
    day2 = pd.date_range("2010-12-02T00:00", periods=30, freq="1min")
    for key, rows in {
        "NYA_5577_20101201": _rows("NYA", 5577, day1),
        "NYA_6300_20101201": _rows("NYA", 6300, day1[:5]),
        "NYA_5577_20101202": _rows("NYA", 5577, day2),
        "LYR_5577_20101202": _rows("LYR", 5577, day2, [Status.KEPT, Status.UNREADABLE] * 15),
    }.items():
        url = staging_url(out, PartitionKey.parse(key))
        kept = int((rows["status"] == Status.KEPT).sum())
        write_part(url, rows, {"features": rng.random((kept, 8), dtype=np.float32)})
        parts.append(url)
    built = commit_month(
        out,
        "2010-12",
        parts,
        {"NYA": {"station": "NYA"}, "LYR": {"station": "LYR"}},
        {"recipe": "lite128", "sun_max_alt": -12.0},
    )
    counts = built.counts
    assert counts == {"NYA/5577": 730, "NYA/6300": 5, "LYR": 15}
    assert len(built.catalog) == 730 + 5 + 30 and (built.catalog["status"] == Status.UNREADABLE).sum() == 15
    store = f"{out}/2010-12.zarr"
    tree = xr.open_datatree(store, engine="zarr")
    assert set(tree.groups) >= {"/", "/NYA", "/NYA/5577", "/NYA/6300", "/LYR"}
    # chunks=None: numpy-backed reads, so no Dask client (whose workers cannot see memory://) is involved.
    ds = xr.open_zarr(store, group="NYA/5577", chunks=None)
    assert ds.sizes == {"time": 730, "feature": 8}
    t = ds["time"].to_numpy()
    assert (np.diff(t) > np.timedelta64(0)).all()
    assert ds.attrs["recipe"] == "lite128" and ds.attrs["station"] == "NYA"
    assert ds["sun_alt"].attrs["units"] == "degrees"
    # time chunks sized by a row's bytes; features sharded into inner chunks, read a few rows at a time
    assert ds["features"].encoding["shards"] == (chunk_rows(8 * 4, 2), 8)
    assert ds["features"].encoding["chunks"] == (2**13, 8)  # 256 KiB of 8 floats a row
    assert ds["url"].encoding["chunks"] == (1024,) and ds["url"].encoding["shards"] == (chunk_rows(64, 1),)
    assert ds["sun_alt"].encoding["chunks"] == (chunk_rows(4, 1),) and ds["sun_alt"].encoding.get("shards") is None
    assert chunk_rows(1280 * 4, 2) == 2048 and chunk_rows(4, 1) == 2**18  # 10 MiB of features, 1 MiB of floats
    lyr = xr.open_zarr(store, group="LYR", chunks=None)
    assert lyr.sizes["time"] == 15 and lyr["url"].to_numpy()[0].startswith("memory://in/LYR")
    # Re-committing is idempotent: same stores, nothing duplicated, no temporary tree left.
    known = {
        "NYA_5577_20101201.parquet": 700,
        "NYA_6300_20101201.parquet": 5,
        "NYA_5577_20101202.parquet": 30,
        "LYR_5577_20101202.parquet": 15,
    }
    assert commit_month(out, "2010-12", parts, {}, {}, kept=known).counts == counts  # counts given: same layout
    assert xr.open_zarr(store, group="NYA/5577", chunks=None).sizes["time"] == 730
    import fsspec

    fs, path = fsspec.core.url_to_fs(out)
    assert sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)) == ["2010-12.zarr", "_staging"]


def test_month_build_joins_instruments_and_skips_when_nothing_changed():
    """The month build as a plain function on memory://: staged parts + instruments -> a joined, published month."""
    import fsspec
    from conftest import make_job

    from aurora_batch.datasets.synth import write_instruments
    from aurora_batch.month.build import build_month, common_attrs, join_fingerprint, month_inputs
    from aurora_batch.store.ledger import read_catalog

    root = f"memory://month-build-{np.random.default_rng().integers(1e9)}"
    times = pd.date_range("2010-12-01T20:00", periods=40, freq="3min")
    labels = pd.DataFrame({"station": "NYA", "time": times, "label": ["arc", "cloudy"] * 20})
    write_instruments(f"{root}/inst", labels, seed=2)
    join = {
        "ceilometer": [
            {
                "url": f"{root}/inst/ceilometer/nya_cbh.tab",
                "format": "pangaea",
                "stations": {"NYA": "NYA"},
                "tolerance": "5min",
            }
        ],
        "magnetometer": [
            {
                "url": f"{root}/inst/magnetometer/*.min",
                "format": "iaga2002",
                "stations": {"NYA": "NAL"},
                "tolerance": "60s",
            }
        ],
    }
    job = make_job(f"{root}/in", f"{root}/out", stations=["NYA"], join=join)
    for key, sel in (("NYA_5577_20101201", slice(0, 25)), ("NYA_5577_20101202", slice(25, 40))):
        rows = _rows("NYA", 5577, times[sel])
        write_part(
            staging_url(job.output, PartitionKey.parse(key)), rows, {"features": np.ones((len(rows), 4), np.float32)}
        )
    fp = join_fingerprint(job, "2010-12")
    build = build_month(job, month_inputs(job, "2010-12"), common_attrs(job), fp)
    assert build.counts == {"NYA": 40} and build.matched == {"ceilometer": 40, "magnetometer": 40}
    ds = xr.open_zarr(f"{root}/out/2010-12.zarr", group="NYA", chunks=None)
    assert ds["mag_dt"].notnull().all() and ds["cbh_dt"].notnull().all() and ds.sizes["time"] == 40
    assert ds.attrs["join_fingerprint"] == fp and ds.attrs["station"] == "NYA"  # the join keeps the group's attrs
    assert len(read_catalog(job.output)) == 40
    # Nothing changed: not rebuilt.  New instrument data: rebuilt, staged and published again.
    assert build_month(job, month_inputs(job, "2010-12"), common_attrs(job), fp) is None
    fs = fsspec.filesystem("memory")
    path = f"{root.removeprefix('memory://')}/inst/ceilometer/nya_cbh.tab"
    fs.pipe_file(path, fs.cat_file(path) + b"\n")
    assert join_fingerprint(job, "2010-12") != fp
    again = build_month(job, month_inputs(job, "2010-12"), common_attrs(job), join_fingerprint(job, "2010-12"))
    assert again is not None and again.counts == {"NYA": 40}
    assert build_month(job, month_inputs(job, "2010-12"), common_attrs(job), join_fingerprint(job, "2010-12")) is None
    # A part staged again (a run killed after staging, before publishing): the month is rebuilt from it.
    rows = _rows("NYA", 5577, times[25:40])
    write_part(
        staging_url(job.output, PartitionKey.parse("NYA_5577_20101202")),
        rows,
        {"features": np.full((len(rows), 4), 2, np.float32)},
    )
    restaged = build_month(job, month_inputs(job, "2010-12"), common_attrs(job), join_fingerprint(job, "2010-12"))
    assert restaged is not None
    assert (xr.open_zarr(f"{root}/out/2010-12.zarr", group="NYA", chunks=None)["features"][-1] == 2).all()
    assert not fs.glob(f"{root.removeprefix('memory://')}/out/*.building-*")
    with pytest.raises(FileNotFoundError, match="month 2011-01: no staged parts"):  # never published empty
        build_month(job, month_inputs(job, "2011-01"), common_attrs(job), fp, force=True)


@pytest.mark.parametrize("fmt", ["zarr", "icechunk"])
def test_a_month_with_every_file_dropped_gets_a_ledger_and_no_store(tmp_path, fmt):
    from aurora_batch.month.commit import Publication
    from aurora_batch.store.layout import month_url

    out = f"file://{tmp_path}/out"
    times = pd.date_range("2010-12-01T10:00", periods=6, freq="10min")
    url = staging_url(out, PartitionKey.parse("NYA_5577_20101201"))
    write_part(url, _rows("NYA", 5577, times, [Status.SUN] * 4 + [Status.UNREADABLE, Status.MOON]))
    built = commit_month(out, "2010-12", [url], {}, {}, publication=Publication(fmt))
    assert built.counts == {} and len(built.catalog) == 6
    assert set(built.catalog["status"]) == {Status.SUN, Status.UNREADABLE, Status.MOON}
    assert month_url(out, "2010-12") is None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["_staging"]  # no store, no repository


def test_month_digest_reads_this_runs_parts_past_a_stale_listing(tmp_path, monkeypatch):
    """A listing that still shows an overwritten part's earlier version must not enter the month's digest
    (the next run would see another digest and rebuild the month for nothing); earlier runs' parts come
    from the listing."""
    import pandas as pd
    from conftest import make_job

    from aurora_batch.core.keys import PartitionKey
    from aurora_batch.month import build as month_module
    from aurora_batch.partition.process import PartitionResult
    from aurora_batch.store.layout import staging_url
    from aurora_batch.store.parts import write_part

    job = make_job("file:///in", f"file://{tmp_path}/out")
    key = PartitionKey.parse("NYA_5577_20101201")
    url = staging_url(job.output, key)
    rows = pd.DataFrame({"url": ["file:///in/a.png"], "status": ["kept"], "time": [pd.Timestamp("2010-12-01")]})
    write_part(url, rows)
    result = PartitionResult(key, url, "", {"kept": 1}, 1, pd.Timestamp("2010-12-01"), resumed=False)
    fresh = month_module.month_inputs(job, "2010-12", [result]).digest
    real_listing = month_module._staged
    monkeypatch.setattr(
        month_module,
        "_staged",
        lambda job, month, folder="": {u: {"size": 1, "mtime": 0.0} for u in real_listing(job, month, folder)},
    )
    assert month_module.month_inputs(job, "2010-12", [result]).digest == fresh  # this run's part: a HEAD
    assert month_module.month_inputs(job, "2010-12").digest != fresh  # an earlier run's part: as listed
