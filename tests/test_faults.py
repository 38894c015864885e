"""Faults: killed jobs, concurrent jobs, an S3 server that crashes and restarts mid-run.

Each run is compared with an uninterrupted run over the same SYNTHETIC archive: every input
file exactly once in the catalog, nothing lost or duplicated, identical stores.  A worker
killed mid-run is in ``test_clusters.py`` (separate scheduler and worker processes).
"""

import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
from conftest import make_job
from helpers import assert_same_stores, check_season, store_snapshot

from aurora_batch.datasets.synth import write_archive
from aurora_batch.runner.season import run_season

pytestmark = pytest.mark.slow
N_BROKEN = 3


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("fault-archive")
    labels = write_archive(
        f"file://{root}", ["NYA", "LYR"], "2010-12-01", "2010-12-04", cadence="45min", seed=11, corrupt=N_BROKEN
    )
    return f"file://{root}", len(labels) + N_BROKEN


def _job(archive_url, out, **kw):
    return make_job(archive_url, out, end="2010-12-04", **kw)


@pytest.fixture(scope="module")
def reference(archive, tmp_path_factory, dask_client):
    url, n = archive
    job = _job(url, f"file://{tmp_path_factory.mktemp('ref')}/out")
    summary = run_season(job, client=dask_client, progress=False)
    return check_season(summary, job, n), store_snapshot(job)


def _same_as_reference(summary, job, reference, n):
    cat = check_season(summary, job, n)
    ref_cat, ref_stores = reference
    cols = ["url", "status", "frames"]
    pd.testing.assert_frame_equal(
        cat[cols].sort_values("url").reset_index(drop=True), ref_cat[cols].sort_values("url").reset_index(drop=True)
    )
    assert_same_stores(store_snapshot(job), ref_stores)


def _spec(tmp_path, input_url, output_url, extra=""):
    spec = tmp_path / f"job-{time.monotonic_ns()}.yaml"
    spec.write_text(
        f"input: {input_url}\noutput: {output_url}\nstations: [NYA, LYR]\nstart: 2010-12-01\n"
        f"end: 2010-12-04\ncluster: {{n_workers: 2, processes: false}}\n{extra}"
    )  # threads: fast start
    return spec


def _start_cli(spec, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "aurora_batch.cli", "season", str(spec), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def _wait_for(predicate, timeout=300, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def test_concurrent_job_refused_then_holder_killed_and_resumed(archive, reference, tmp_path, dask_client):
    """Two jobs on one output: one is refused while the other holds the lock; the holder is killed
    (SIGKILL) after staging a part; a third run takes the dead job's lock over and resumes."""
    url, n = archive
    out = f"file://{tmp_path}/out"
    procs = [_start_cli(_spec(tmp_path, url, out)) for _ in range(2)]
    staging = tmp_path / "out" / "_staging"
    _wait_for(lambda: any(p.poll() is not None for p in procs), what="one job to be refused")
    refused = next(p for p in procs if p.poll() is not None)
    holder = next(p for p in procs if p is not refused)
    _, err = refused.communicate()
    assert refused.returncode == 3 and "is locked by another season" in err and "Traceback" not in err, err
    _wait_for(lambda: len(list(staging.rglob("*.parquet"))) >= 1 or holder.poll() is not None, what="a staged part")
    assert holder.poll() is None, f"job ended before it could be killed: {holder.communicate()}"
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    staged_before = len(list(staging.rglob("*.parquet")))
    assert not (tmp_path / "out" / "catalog" / "undated.parquet").exists()  # the job did not finish
    job = _job(url, out)
    summary = run_season(job, client=dask_client, progress=False)  # stale lock of the dead job is taken over
    assert summary.resumed_partitions >= staged_before >= 1
    _same_as_reference(summary, job, reference, n)
    assert not list((tmp_path / "out").glob("*.building-*"))


def test_s3_server_crash_and_restart_mid_run(tmp_path, dask_client, s3_server, bucket):
    """The session's server is killed and comes back (same port, same data) while a job runs from and to it."""
    labels = write_archive(
        f"s3://{bucket}/archive",
        ["NYA", "LYR"],
        "2010-12-01",
        "2010-12-03",
        cadence="30min",
        seed=11,
        storage_options=s3_server.storage_options,
    )
    job = make_job(
        f"s3://{bucket}/archive",
        f"s3://{bucket}/out",
        end="2010-12-03",
        storage_options=s3_server.storage_options,
        output_storage_options=s3_server.storage_options,
    )
    box = {}

    def season():
        try:
            box["summary"] = run_season(job, client=dask_client, progress=False)
        except Exception as exc:  # noqa: BLE001 - failing is allowed, but clearly
            box["error"] = exc

    t = threading.Thread(target=season)
    t.start()
    fs = s3_server.filesystem()
    _wait_for(
        lambda: bool(fs.glob(f"{bucket}/out/_staging/*/*.parquet")) or not t.is_alive(), what="a staged part on S3"
    )
    assert t.is_alive(), f"the season ended before the server went down: {box}"
    s3_server.restart(kill=True)
    t.join(timeout=600)
    if "error" in box:
        assert isinstance(box["error"], OSError) and str(box["error"]), repr(box["error"])
    summary = run_season(job, client=dask_client, progress=False)  # resumes, or finds everything done
    check_season(summary, job, len(labels), broken=False)
