"""End to end: SYNTHETIC archive → season on a real LocalCluster (worker processes) → stores."""
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from aurora_batch.catalog import Status
from aurora_batch.season import run_season
from conftest import make_job

pytestmark = pytest.mark.slow


def _check_invariants(summary, job, labels):
    cat = pd.read_parquet(summary.catalog)
    # Every input file exactly once: the synthetic frames plus the 3 broken files.
    assert cat["url"].is_unique
    assert len(cat) == len(labels) + 3
    counts = cat["status"].value_counts().to_dict()
    assert counts[Status.UNREADABLE] == 2 and counts[Status.UNPARSEABLE] == 1
    assert counts[Status.SUN] > 0 and counts[Status.MOON] > 0
    assert Status.PENDING not in counts
    kept = cat[cat["status"] == Status.KEPT]
    assert (kept["sun_alt"] <= job.filter.sun_max_alt).all()
    assert (kept["moon_alt"] <= job.filter.moon_max_alt).all()
    rows = 0
    tree = xr.open_datatree(summary.stores[0], engine="zarr")
    for station in ("NYA", "LYR"):
        ds = xr.open_zarr(summary.stores[0], group=station)
        rows += ds.sizes["time"]
        assert ds.attrs["station_latitude"] > 78 and ds.attrs["backbone"] == "efficientnet-lite0"
        assert (ds["sun_alt"] <= job.filter.sun_max_alt).all()
        assert ds["features"].dtype == np.float32 and ds.sizes["feature"] == 1280
        assert set(ds["url"].to_numpy()) == set(kept.loc[kept["station"] == station, "url"])
        assert tree[station].ds.sizes["time"] == ds.sizes["time"]
    assert rows == len(kept) == summary.kept
    return cat


def test_season_end_to_end_and_rerun(small_archive, tmp_path, dask_client):
    url, labels = small_archive
    job = make_job(url, f"file://{tmp_path}/out")
    first = run_season(job, client=dask_client, progress=False)
    cat = _check_invariants(first, job, labels)
    assert first.resumed_partitions == 0 and first.partitions == 2  # two stations × one day
    before = xr.open_zarr(first.stores[0], group="NYA").load()
    # A second run reuses every staged partition and rebuilds identical stores.
    second = run_season(job, client=dask_client, progress=False)
    assert second.resumed_partitions == second.partitions
    pd.testing.assert_frame_equal(pd.read_parquet(second.catalog), cat)
    xr.testing.assert_identical(xr.open_zarr(second.stores[0], group="NYA").load(), before)


def test_season_on_its_own_local_cluster(small_archive, tmp_path):
    """The embedded default: run_season starts and stops its own LocalCluster."""
    url, labels = small_archive
    job = make_job(url, f"file://{tmp_path}/out", cluster={"n_workers": 2, "memory_limit": "4GiB"})
    summary = run_season(job, progress=False)
    _check_invariants(summary, job, labels)


def test_season_memory_filesystem(tmp_path):
    """memory:// in and out: the embedded cluster then runs worker threads in this process."""
    from aurora_batch.synth import write_archive

    labels = write_archive("memory://season-mem/archive", ["NYA"], "2010-12-01T00:00", "2010-12-01T03:00",
                           cadence="15min", seed=2)
    job = make_job("memory://season-mem/archive", "memory://season-mem/out", stations=["NYA"],
                   cluster={"n_workers": 1, "threads_per_worker": 2})
    summary = run_season(job, progress=False)
    import fsspec

    with fsspec.open(summary.catalog, "rb") as f:
        cat = pd.read_parquet(f)
    assert len(cat) == len(labels)
    ds = xr.open_zarr(summary.stores[0], group="NYA", chunks=None)
    assert ds.sizes["time"] == summary.kept == (cat["status"] == Status.KEPT).sum() > 0
