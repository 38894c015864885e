"""End to end: SYNTHETIC archive → season on a real LocalCluster (worker processes) → stores."""

import pandas as pd
import pytest
from conftest import make_job
from helpers import assert_same_stores, check_season, store_snapshot

from aurora_batch.partition.fingerprint import feature_fingerprint
from aurora_batch.runner.season import run_season
from aurora_batch.store.ledger import read_catalog

pytestmark = pytest.mark.slow


def test_season_end_to_end_and_rerun(small_archive, tmp_path, dask_client):
    url, labels = small_archive
    job = make_job(url, f"file://{tmp_path}/out")
    first = run_season(job, client=dask_client, progress=False)
    cat = check_season(first, job, len(labels) + 3)
    assert (cat["status"] == "sun").any() and (cat["status"] == "moon").any()
    assert first.resumed_partitions == 0 and first.partitions == 2  # two stations × one day
    before = store_snapshot(job)
    # A second run reuses every staged partition and rebuilds identical stores.
    second = run_season(job, client=dask_client, progress=False)
    assert second.resumed_partitions == second.partitions
    pd.testing.assert_frame_equal(read_catalog(job.output), cat)
    assert_same_stores(store_snapshot(job), before)
    # Changing the recipe or weights invalidates the staged features.
    assert feature_fingerprint(job) != feature_fingerprint(make_job(url, "x", features={"weights": "/w.pth"}))


def test_season_on_its_own_local_cluster(small_archive, tmp_path):
    """The embedded default: run_season starts and stops its own LocalCluster."""
    url, labels = small_archive
    job = make_job(url, f"file://{tmp_path}/out", cluster={"n_workers": 2, "memory_limit": "4GiB"})
    check_season(run_season(job, progress=False), job, len(labels) + 3)


def test_season_memory_filesystem():
    """memory:// in and out: the embedded cluster then runs worker threads in this process."""
    from aurora_batch.datasets.synth import write_archive

    labels = write_archive(
        "memory://season-mem/archive", ["NYA"], "2010-12-01T00:00", "2010-12-01T03:00", cadence="15min", seed=2
    )
    job = make_job(
        "memory://season-mem/archive",
        "memory://season-mem/out",
        stations=["NYA"],
        filter={"moon_max_alt": None},
        cluster={"n_workers": 1, "threads_per_worker": 2},
    )
    summary = run_season(job, progress=False)
    check_season(summary, job, len(labels), stations=("NYA",), broken=False)
    assert summary.kept == len(labels)


def test_a_partition_shared_between_tasks_stores_what_one_task_stores(
    small_archive, tmp_path, dask_client, monkeypatch
):
    """A run with fewer partitions than threads splits each partition's files over several tasks (a one-station
    nightly uses every worker); the staged part, the catalog and the stores are those of one task."""

    import aurora_batch.runner.season as season

    url, labels = small_archive
    stores, catalogs = {}, {}
    for name, min_files in (("one task", 10**9), ("shared", 5)):
        monkeypatch.setattr(season, "MIN_CHUNK_FILES", min_files)
        job = make_job(url, f"file://{tmp_path}/{name.replace(' ', '-')}", stations=["NYA"])
        summary = run_season(job, client=dask_client, progress=False)
        assert summary.partitions == 1 and summary.images > 0
        stores[name], catalogs[name] = store_snapshot(job, stations=("NYA",)), read_catalog(job.output)
    assert season.chunks_per_partition(1, len(labels) // 2, 2) == 4  # 2 threads: 4 shares of >= 5 files
    pd.testing.assert_frame_equal(catalogs["shared"], catalogs["one task"])
    assert_same_stores(stores["shared"], stores["one task"])
