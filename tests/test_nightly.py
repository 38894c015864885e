"""Nightly incremental runs on the real S3 server."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import make_job
from helpers import assert_same_stores, open_group, store_snapshot

from aurora_batch import cli
from aurora_batch.datasets.synth import write_archive, write_instruments
from aurora_batch.products.results import store_history
from aurora_batch.runner.nightly import read_watermarks, run_nightly
from aurora_batch.runner.season import run_season
from aurora_batch.store.layout import month_url

pytestmark = pytest.mark.slow


def _join(root):
    """Instruments for every image of the nights below: written once, before any run."""
    times = pd.date_range("2010-12-01", "2010-12-05", freq="30min", inclusive="left")
    labels = pd.concat(
        [pd.DataFrame({"station": s, "time": times, "label": ["cloudy", "clear", "arc"] * 64}) for s in ("NYA", "LYR")]
    )
    write_instruments(f"file://{root}", labels, seed=3)
    return {
        "ceilometer": [
            {
                "url": f"file://{root}/ceilometer/{s.lower()}_cbh.tab",
                "format": "pangaea",
                "stations": {s: s},
                "tolerance": "5min",
            }
            for s in ("NYA", "LYR")
        ],
        "magnetometer": [
            {
                "url": f"file://{root}/magnetometer/*.min",
                "format": "iaga2002",
                "stations": {"NYA": "NAL", "LYR": "LYR"},
                "tolerance": "60s",
            }
        ],
    }


def _assert_joined(s3, bucket, out="out"):
    """Every image of every group carries its ceilometer and magnetometer partners."""
    for station in ("NYA", "LYR"):
        ds = open_group(f"s3://{bucket}/{out}", "2010-12", station, s3.storage_options)
        for var in ("cbh", "cloud_detected", "cbh_dt", "mag_x", "mag_y", "mag_z", "mag_dt"):
            assert var in ds and ds[var].sizes == {"time": ds.sizes["time"]}, (station, var)
        assert ds["cbh_dt"].notnull().all() and ds["mag_dt"].notnull().all()
        assert ds["cloud_detected"].notnull().mean() > 0.9


def _job(s3, bucket, out="out", **kw):
    opts = s3.storage_options
    return make_job(
        f"s3://{bucket}/archive",
        f"s3://{bucket}/{out}",
        storage_options=opts,
        output_storage_options=opts,
        end="2010-12-10",
        filter={"moon_max_alt": None, "sun_max_alt": -5.0},
        nightly={"lookback": "3h"},
        **kw,
    )


def _add_night(s3, bucket, start, end, seed):
    return write_archive(
        f"s3://{bucket}/archive",
        ["NYA", "LYR"],
        start,
        end,
        cadence="30min",
        seed=seed,
        storage_options=s3.storage_options,
    )


def _digest(s3, bucket, out="out"):
    """Every object of the month store (an Icechunk repository on S3: snapshots, manifests, chunks)."""
    fs = s3.filesystem()
    url = month_url(f"s3://{bucket}/{out}", "2010-12", s3.storage_options)
    return {p: hashlib.sha256(fs.cat_file(p)).hexdigest() for p in fs.find(url.removeprefix("s3://"))}


def _times(s3, bucket, station="NYA", out="out"):
    ds = open_group(f"s3://{bucket}/{out}", "2010-12", station, s3.storage_options)
    return pd.DatetimeIndex(ds["time"].to_numpy())


def test_nightly_new_idempotent_and_late(s3_server, bucket, dask_client, tmp_path):
    """A season with a join, then nightly runs: every published month keeps its joined variables."""
    job = _job(s3_server, bucket, join=_join(tmp_path / "instruments"))
    _add_night(s3_server, bucket, "2010-12-01T12:00", "2010-12-02T12:00", seed=1)
    first = run_season(job, client=dask_client, progress=False)
    assert first.partitions == 4  # 2 stations x 2 UTC days
    _assert_joined(s3_server, bucket)
    before = _times(s3_server, bucket)

    # New files arrive: only their partitions are processed; old and new images are joined.
    _add_night(s3_server, bucket, "2010-12-02T12:00", "2010-12-03T12:00", seed=2)
    second = run_nightly(job, client=dask_client)
    s = second.season
    assert s.partitions - s.resumed_partitions == 4  # day 2 (changed: new files) and day 3, per station
    assert pd.Timestamp(second.watermarks["NYA"]) == pd.Timestamp("2010-12-03T11:30")
    assert read_watermarks(job) == second.watermarks
    after = _times(s3_server, bucket)
    assert set(before) < set(after) and after.is_unique and after.is_monotonic_increasing
    assert "status=ok" in second.line() and "new_partitions=4" in second.line()
    _assert_joined(s3_server, bucket)

    # Nothing new: nothing is written; every object of the repository is byte-identical, and no version is added.
    digest, versions = _digest(s3_server, bucket), store_history(job.output, "2010-12", job.output_storage_options)
    third = run_nightly(job, client=dask_client)
    assert third.season.partitions == third.season.resumed_partitions and third.season.stores == []
    assert _digest(s3_server, bucket) == digest and len(digest) > 10
    pd.testing.assert_frame_equal(store_history(job.output, "2010-12", job.output_storage_options), versions)
    assert list(versions["command"]) == ["nightly", "season"]
    assert "stores_written=0" in third.line()

    # A late file, inside the look-back (3 h behind the watermark), is picked up.
    late = pd.Timestamp("2010-12-03T10:05:00")
    import io

    import numpy as np
    from PIL import Image

    from aurora_batch.datasets.synth import asim_name, render_frame

    buf = io.BytesIO()
    Image.fromarray(render_frame("arc", late, np.random.default_rng(0))).save(buf, format="PNG")
    s3_server.filesystem().pipe_file(f"{bucket}/archive/{asim_name('NYA', late)}", buf.getvalue())
    fourth = run_nightly(job, client=dask_client)
    assert fourth.status == "ok" and late in _times(s3_server, bucket)
    assert fourth.season.partitions - fourth.season.resumed_partitions == 1
    # One late file costs one file: the other 24 files of NYA's 3 December come from its staged part (and LYR's
    # 24 of that day from its part, staged with the same files).
    assert (fourth.season.computed, fourth.season.reused) == (1, 48)
    assert "frames_computed=1 frames_reused=48" in fourth.line()
    commit = store_history(job.output, "2010-12", job.output_storage_options)["metadata"][0]
    assert commit["incremental"] and commit["rows_written"] == 25  # NYA from the 3rd on; LYR untouched
    _assert_joined(s3_server, bucket)


def _spec(tmp_path, s3, bucket, out, options=False):
    """A nightly job spec; the S3 endpoint from fsspec's environment variables, or in the spec (``options``)."""
    spec = tmp_path / f"{out}-{int(options)}.yaml"
    opts = "".join(f"{k}: {json.dumps(s3.storage_options)}\n" for k in ("storage_options", "output_storage_options"))
    spec.write_text(
        f"input: s3://{bucket}/archive\noutput: s3://{bucket}/{out}\nstations: [NYA, LYR]\n"
        f"start: 2010-12-01\nend: 2010-12-10\nfilter: {{moon_max_alt: null, sun_max_alt: -5.0}}\n"
        f"cluster: {{n_workers: 2, processes: false}}\nnightly: {{lookback: 3h}}\n"  # threads: fast start
        + (opts if options else "")
    )
    return spec


def _cli(spec, s3):
    return subprocess.Popen(
        [sys.executable, "-m", "aurora_batch.cli", "nightly", str(spec), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **s3.env},
        start_new_session=True,
    )


def _wait(predicate, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    raise TimeoutError


def test_overlapping_nightly_runs_and_kill_resume(s3_server, bucket, tmp_path, dask_client, capsys):
    _add_night(s3_server, bucket, "2010-12-01T12:00", "2010-12-02T12:00", seed=3)  # 4 partitions
    fs = s3_server.filesystem()
    # Reference: an uninterrupted nightly run into another output.
    ref_job = _job(s3_server, bucket, out="ref")
    assert run_nightly(ref_job, client=dask_client).status == "ok"

    spec = _spec(tmp_path, s3_server, bucket, "out")
    first = _cli(spec, s3_server)
    _wait(lambda: fs.exists(f"{bucket}/out/_lock.json") or first.poll() is not None)
    # A second run (the CLI, in this process: the endpoint is in its spec) is refused while the first holds the lock.
    here = _spec(tmp_path, s3_server, bucket, "out", options=True)
    assert cli.main(["nightly", str(here), "-q"]) == 3
    out2, err2 = capsys.readouterr()
    assert "is locked by another nightly" in err2 and "status=failed" in out2
    # Kill the running one mid-way, then run again: the same store as the uninterrupted run.
    _wait(lambda: bool(fs.glob(f"{bucket}/out/_staging/*/*.parquet")) or first.poll() is not None)
    assert first.poll() is None, first.communicate()
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert cli.main(["nightly", str(here), "-q"]) == 0  # the dead run's lock is taken over
    out, err = capsys.readouterr()
    assert out.strip().splitlines()[-1].startswith("aurora-batch nightly: status=ok"), err
    job = _job(s3_server, bucket)
    assert_same_stores(store_snapshot(job), store_snapshot(ref_job))
    assert read_watermarks(job) == read_watermarks(ref_job)
