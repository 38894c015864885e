"""Versioned months on object storage (Icechunk on a real SeaweedFS server): never missing, never mixed."""

import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
from conftest import make_job

import aurora_batch as ab
from aurora_batch import cli
from aurora_batch.datasets.synth import write_archive, write_instruments
from aurora_batch.month.commit import Publication, commit_month
from aurora_batch.partition.fingerprint import feature_fingerprint
from aurora_batch.runner.joins import run_join
from aurora_batch.runner.nightly import run_nightly
from aurora_batch.runner.season import run_season
from aurora_batch.store.layout import month_url
from aurora_batch.store.versions import MonthConflictError

pytestmark = pytest.mark.slow
NIGHTS = [
    ("2010-12-01T12:00", "2010-12-02T12:00"),
    ("2010-12-02T12:00", "2010-12-03T12:00"),
    ("2010-12-03T12:00", "2010-12-04T12:00"),
]


def _job(s3, bucket, out="out", **kw):
    opts = s3.storage_options
    spec = dict(
        storage_options=opts,
        output_storage_options=opts,
        end="2010-12-10",
        filter={"moon_max_alt": None, "sun_max_alt": -5.0},
        nightly={"lookback": "3h"},
    )
    return make_job(f"s3://{bucket}/archive", f"s3://{bucket}/{out}", **{**spec, **kw})


def _night(s3, bucket, i, seed=None):
    start, end = NIGHTS[i]
    return write_archive(
        f"s3://{bucket}/archive",
        ["NYA", "LYR"],
        start,
        end,
        cadence="30min",
        seed=seed or i + 1,
        storage_options=s3.storage_options,
    )


def _count(job, **kw):
    return ab.open_station(job.output, "NYA", storage_options=job.output_storage_options, **kw).sizes["time"]


def test_a_reader_never_sees_a_missing_or_mixed_month(s3_server, bucket, dask_client):
    job = _job(s3_server, bucket)
    _night(s3_server, bucket, 0)
    run_season(job, client=dask_client, progress=False)
    old = _count(job)
    _night(s3_server, bucket, 1)
    seen, failures, stop = [], [], threading.Event()

    def read():
        while not stop.is_set():
            t = time.perf_counter()
            try:
                ds = ab.open_station(job.output, "NYA", storage_options=job.output_storage_options)
                seen.append((t, ds.sizes["time"], int(ds["features"].shape[0]), len(set(ds["url"].to_numpy()))))
            except Exception as err:  # noqa: BLE001 - any failure to read is what this test forbids
                failures.append(repr(err))
            time.sleep(0.05)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        t0 = time.perf_counter()
        night = run_nightly(job, client=dask_client)
        t1 = time.perf_counter()
        deadline = time.time() + 30
        while not (seen and seen[-1][0] > t1) and time.time() < deadline:  # a read after the new version too
            time.sleep(0.05)
    finally:
        stop.set()
        reader.join()
    assert night.status == "ok", night.error
    new = _count(job)
    assert new > old and not failures, failures[:3]
    assert sum(t0 <= t <= t1 for t, *_ in seen) >= 3  # reads while the month was rebuilt
    assert {n for _, n, _, _ in seen} <= {old, new} and seen[-1][1] == new
    assert all(n == rows == files for _, n, rows, files in seen)  # every variable from one version


def test_a_killed_nightly_leaves_the_previous_version_and_the_next_completes(s3_server, bucket, tmp_path, dask_client):
    job = _job(s3_server, bucket)
    _night(s3_server, bucket, 0)
    run_season(job, client=dask_client, progress=False)
    before = ab.open_station(job.output, "NYA", storage_options=job.output_storage_options).load()
    season_chunks = set(s3_server.filesystem().find(f"{bucket}/out/2010-12.icechunk/chunks"))
    _night(s3_server, bucket, 1)
    spec = tmp_path / "nightly.yaml"
    spec.write_text(
        f"input: s3://{bucket}/archive\noutput: s3://{bucket}/out\nstations: [NYA, LYR]\n"
        "start: 2010-12-01\nend: 2010-12-10\nfilter: {moon_max_alt: null, sun_max_alt: -5.0}\n"
        "cluster: {n_workers: 2, processes: false}\nnightly: {lookback: 3h}\n"
    )
    marker = tmp_path / "writing"
    proc = subprocess.Popen(
        [sys.executable, "-m", "aurora_batch.cli", "nightly", str(spec), "-q"],
        env={**os.environ, **s3_server.env, "AURORA_BATCH_FAILPOINT": f"before-publish:{marker}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, f"the nightly ended before its month build: {proc.communicate()}"
    chunks = set(s3_server.filesystem().find(f"{bucket}/out/2010-12.icechunk/chunks"))
    os.killpg(proc.pid, signal.SIGKILL)  # mid-commit: the new rows are written into the session, not committed
    proc.wait()
    history = ab.store_history(job.output, "2010-12", job.output_storage_options)
    assert list(history["command"]) == ["season"]
    after = ab.open_station(job.output, "NYA", storage_options=job.output_storage_options).load()
    assert after.identical(before)
    assert run_nightly(job, client=dask_client).status == "ok"
    assert _count(job) > before.sizes["time"]
    assert list(ab.store_history(job.output, "2010-12", job.output_storage_options)["command"]) == ["nightly", "season"]
    assert chunks > season_chunks  # the killed run had written chunks into its session (left for garbage collection)


def test_history_versions_and_retention(s3_server, bucket, tmp_path, dask_client, capsys, caplog):
    labels = pd.concat([_night(s3_server, bucket, i) for i in range(2)])
    write_instruments(f"file://{tmp_path}/instruments", labels.assign(time=pd.to_datetime(labels["time"])), seed=2)
    join = {
        "magnetometer": [
            {
                "url": f"file://{tmp_path}/instruments/magnetometer/*.min",
                "format": "iaga2002",
                "stations": {"NYA": "NAL", "LYR": "LYR"},
                "tolerance": "60s",
            }
        ]
    }
    job = _job(s3_server, bucket, end="2010-12-02T12:00", join=join)
    first = run_season(job, client=dask_client, progress=False)
    one = _count(job)
    t_first = pd.Timestamp.now(tz="UTC")
    time.sleep(1.0)
    job = _job(s3_server, bucket, join=join)
    assert run_nightly(job, client=dask_client).status == "ok"  # new files: a second version
    with caplog.at_level("INFO", logger="aurora_batch.month.build"):
        again = run_nightly(job, client=dask_client)
    why = [r.getMessage() for r in caplog.records if ": written" in r.getMessage()]
    assert again.season.stores == [], why  # nothing new: no version
    # New instrument data: a re-join is one more version.
    mag = sorted((tmp_path / "instruments" / "magnetometer").glob("*.min"))[0]
    mag.write_text(mag.read_text())
    os.utime(mag, (time.time() + 5, time.time() + 5))
    assert run_join(job).stores
    history = ab.store_history(job.output, "2010-12", job.output_storage_options)
    assert list(history["command"]) == ["join", "nightly", "season"]
    assert history["images"].iloc[-1] == first.images and history["images"].iloc[0] > first.images
    assert (history["fingerprint"] == feature_fingerprint(job)).all()
    season_meta = history["metadata"].iloc[-1]
    assert season_meta["aurora_batch_version"] == ab.__version__ and season_meta["backbone"] == "efficientnet-lite0"
    assert season_meta["window_end"] == "2010-12-02T12:00:00Z" and set(season_meta["groups"]) == {"NYA", "LYR"}
    assert history["message"].iloc[-1].startswith("season 2010-12:")
    # The first version, by its id or by a time after it, after two later versions.
    oldest = history["id"].iloc[-1]
    assert _count(job, version=oldest) == one < _count(job)
    assert _count(job, as_of=t_first) == one
    with pytest.raises(LookupError, match="no month"):
        _count(job, version="NOSUCHSNAPSHOT00000")
    spec = tmp_path / "job.yaml"
    spec.write_text(
        f"input: s3://{bucket}/archive\noutput: s3://{bucket}/out\nstations: [NYA, LYR]\n"
        f"start: 2010-12-01\nend: 2010-12-10\noutput_storage_options: {s3_server.storage_options}\n"
    )
    assert cli.main(["history", str(spec), "--month", "2010-12"]) == 0
    printed = capsys.readouterr().out
    assert "3 version(s)" in printed and oldest in printed and "join" in printed
    # Retention: keep two versions; the oldest goes, with its chunks.
    kept = job.model_copy(update={"store": job.store.model_copy(update={"keep_versions": 2})})
    os.utime(mag, (time.time() + 10, time.time() + 10))
    assert run_join(kept).stores
    history = ab.store_history(job.output, "2010-12", job.output_storage_options)
    assert list(history["command"]) == ["join", "join"]
    with pytest.raises(LookupError):
        _count(job, version=oldest)


def test_racing_writers_one_commits_the_other_fails_clearly(s3_server, bucket, dask_client):
    """Two builds of one month from the same version: the first commit wins, the second is refused with a clear
    message and overwrites nothing."""
    job = _job(s3_server, bucket, store={"keep_staging": True})  # the parts, whole, for the two builds
    _night(s3_server, bucket, 0)
    run_season(job, client=dask_client, progress=False)
    fs = s3_server.filesystem()
    parts = sorted(f"s3://{p}" for p in fs.glob(f"{bucket}/out/_staging/2010-12/*.parquet"))
    attrs = {s: {"station": s} for s in ("NYA", "LYR")}
    publication = Publication("icechunk", "racing writer", {"command": "test"})
    won = {}

    def second_writer(store, gpath, offset):  # runs while the first writer's build is open
        if won:
            return {}
        won["counts"] = {}
        won["counts"] = commit_month(
            job.output,
            "2010-12",
            parts[:1],
            attrs,
            {},
            job.output_storage_options,
            publication=Publication("icechunk", "winner", {"command": "winner"}),
        ).counts
        return {}

    with pytest.raises(MonthConflictError, match="another writer committed.*nothing was overwritten"):
        commit_month(
            job.output,
            "2010-12",
            parts,
            attrs,
            {},
            job.output_storage_options,
            finish=second_writer,
            publication=publication,
        )
    history = ab.store_history(job.output, "2010-12", job.output_storage_options)
    assert list(history["command"]) == ["winner", "season"]  # the winner's version stands, the loser added none
    assert set(won["counts"]) == {"LYR"}  # the winner built one partition: LYR's first day
    lyr = ab.open_station(job.output, "LYR", storage_options=job.output_storage_options)
    assert lyr.sizes["time"] == won["counts"]["LYR"]


def test_plain_months_are_read_then_converted_in_one_commit(s3_server, bucket, dask_client):
    plain = _job(s3_server, bucket, store={"format": "zarr"})
    _night(s3_server, bucket, 0)
    run_season(plain, client=dask_client, progress=False)
    assert month_url(plain.output, "2010-12", plain.output_storage_options).endswith("2010-12.zarr")
    before = ab.open_station(plain.output, "NYA", storage_options=plain.output_storage_options).load()
    with pytest.raises(LookupError, match="plain Zarr"):
        ab.store_history(plain.output, "2010-12", plain.output_storage_options)
    job = _job(s3_server, bucket)  # store.format auto: icechunk on S3
    summary = run_season(job, client=dask_client, progress=False)
    assert summary.resumed_partitions == summary.partitions and summary.stores  # nothing recomputed, converted
    assert month_url(job.output, "2010-12", job.output_storage_options).endswith("2010-12.icechunk")
    fs = s3_server.filesystem()
    assert [p for p in fs.find(f"{bucket}/out/2010-12.zarr") if p != f"{bucket}/out/2010-12.zarr"] == []  # removed
    assert ab.open_station(job.output, "NYA", storage_options=job.output_storage_options).load().identical(before)
    assert list(ab.store_history(job.output, "2010-12", job.output_storage_options)["command"]) == ["season"]
    with pytest.raises(ValueError, match="Icechunk repositor"):  # back to plain would hide new data behind them
        run_season(plain, client=dask_client, progress=False)
