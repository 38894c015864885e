"""Object storage for real: a SeaweedFS server on 127.0.0.1, s3:// in and out."""

import os
import subprocess
import sys

import pytest
from conftest import make_job
from helpers import check_season, open_group

from aurora_batch.core.fs import create_exclusive, publish_tree
from aurora_batch.datasets.synth import write_archive
from aurora_batch.plan.catalog import list_images
from aurora_batch.runner.season import run_season


def test_list_images_s3_many_prefixes(s3_server, bucket):
    fs = s3_server.filesystem()
    names = {f"{bucket}/arch/p{i % 7}/d{i % 3}/nya4_20101201_{i:06d}_5577_cal.png": b"" for i in range(300)}
    names[f"{bucket}/arch/top_level.png"] = b""
    names[f"{bucket}/arch/p0/readme.txt"] = b""
    fs.pipe(names)
    listing = list_images(f"s3://{bucket}/arch", s3_server.storage_options)
    assert len(listing) == 301
    assert all(u.startswith(f"s3://{bucket}/arch/") for u in listing["url"])


def test_exclusive_create_and_publish_on_s3(s3_server, bucket):
    opts = s3_server.storage_options
    url = f"s3://{bucket}/lock.json"
    assert create_exclusive(url, b"first", opts)
    assert not create_exclusive(url, b"second", opts)
    fs = s3_server.filesystem()
    assert fs.cat_file(f"{bucket}/lock.json") == b"first"
    fs.pipe(
        {
            f"{bucket}/new/zarr.json": b"{}",
            f"{bucket}/new/g/zarr.json": b"{}",
            f"{bucket}/new/g/c/0": b"x",
            f"{bucket}/old/zarr.json": b"old",
            f"{bucket}/old/stale": b"y",
        }
    )
    publish_tree(f"s3://{bucket}/new", f"s3://{bucket}/old", opts)
    assert sorted(fs.find(f"{bucket}/old")) == [
        f"{bucket}/old/g/c/0",
        f"{bucket}/old/g/zarr.json",
        f"{bucket}/old/zarr.json",
    ]
    assert [p for p in fs.find(f"{bucket}/new") if p != f"{bucket}/new"] == []  # SeaweedFS keeps a folder entry


@pytest.mark.slow
def test_season_s3_to_s3(s3_server, bucket, dask_client):
    opts = s3_server.storage_options
    labels = write_archive(
        f"s3://{bucket}/archive",
        ["NYA", "LYR"],
        "2010-12-01",
        "2010-12-02",
        cadence="40min",
        seed=5,
        corrupt=3,
        storage_options=opts,
    )
    job = make_job(f"s3://{bucket}/archive", f"s3://{bucket}/out", storage_options=opts, output_storage_options=opts)
    summary = run_season(job, client=dask_client, progress=False)
    check_season(summary, job, len(labels) + 3)
    assert summary.stores == [f"s3://{bucket}/out/2010-12.icechunk"]  # object storage: a versioned month
    ds = open_group(job.output, "2010-12", "NYA", opts)
    assert ds.sizes["time"] > 0 and ds["features"].shape[1] == 1280
    # Credentials never land in the stores (metadata, snapshots, manifests, chunks) or the catalog.
    fs = s3_server.filesystem()
    for path in fs.find(f"{bucket}/out"):
        assert b"testing" not in fs.cat_file(path), path


@pytest.mark.slow
def test_season_cli_with_fsspec_environment(s3_server, bucket, tmp_path):
    """No storage options anywhere: fsspec's FSSPEC_S3_* variables configure s3fs."""
    write_archive(
        f"s3://{bucket}/archive",
        ["NYA"],
        "2010-12-01T00:00",
        "2010-12-01T04:00",
        cadence="30min",
        seed=6,
        storage_options=s3_server.storage_options,
    )
    spec = tmp_path / "job.yaml"
    spec.write_text(
        f"input: s3://{bucket}/archive\noutput: s3://{bucket}/out\nstations: [NYA]\n"
        f"start: 2010-12-01\nend: 2010-12-02\nfilter: {{moon_max_alt: null}}\n"
        f"cluster: {{n_workers: 1, processes: false}}\n"
    )  # a worker thread: no second process to start
    env = {**os.environ, **s3_server.env}
    r = subprocess.run(
        [sys.executable, "-m", "aurora_batch.cli", "season", str(spec), "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "8 files seen, 8 kept" in r.stdout
    assert "testing" not in r.stdout + r.stderr
    ds = open_group(f"s3://{bucket}/out", "2010-12", "NYA", s3_server.storage_options)  # the endpoint from the env
    assert ds.sizes["time"] == 8


def _spec_file(tmp_path, name, input_url, output_url, input_options, output_options):
    import json

    spec = tmp_path / f"{name}.yaml"
    spec.write_text(
        f"input: {input_url}\noutput: {output_url}\nstations: [NYA]\nstart: 2010-12-01\n"
        f"end: 2010-12-02\nstorage_options: {json.dumps(input_options)}\n"
        f"output_storage_options: {json.dumps(output_options)}\n"
    )
    return str(spec)


@pytest.mark.slow
def test_storage_failures_are_one_clear_line(s3_server, bucket, tmp_path, capsys, monkeypatch):
    """Unreachable endpoint, wrong or missing credentials, a missing bucket: one line naming the URL, the endpoint
    and the cause, exit code 4, the traceback only with --debug; the spec's endpoint wins over fsspec's."""
    from aurora_batch import cli
    from aurora_batch.core.fs import StorageError

    write_archive(
        f"s3://{bucket}/archive",
        ["NYA"],
        "2010-12-01T00:00",
        "2010-12-01T01:00",
        cadence="30min",
        seed=6,
        storage_options=s3_server.storage_options,
    )
    good = s3_server.storage_options
    import s3fs

    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)  # s3fs's own back-off: about 15 s for a closed port
    fast = {"config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}}}
    closed = {**good, **fast, "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}
    wrong = {**good, **fast, "secret": "not-the-secret"}
    nokey = {k: v for k, v in {**good, **fast}.items() if k not in ("key", "secret")}
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "FSSPEC_S3_KEY", "FSSPEC_S3_SECRET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    cases = {
        "closed": ((f"s3://{bucket}/archive", closed), "cannot reach http://127.0.0.1:9"),
        "wrong": ((f"s3://{bucket}/archive", wrong), f"access denied at {s3_server.endpoint}"),
        "nokey": ((f"s3://{bucket}/archive", nokey), "no credentials"),
        "nobucket": (
            ("s3://no-such-bucket-anywhere/archive", good),
            f"no such bucket 'no-such-bucket-anywhere' at {s3_server.endpoint}",
        ),
    }
    for name, ((input_url, options), says) in cases.items():
        spec = _spec_file(tmp_path, name, input_url, f"s3://{bucket}/out-{name}", options, options)
        assert cli.main(["season", spec, "-q"]) == 4, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err and input_url in err and "Traceback" not in err, (name, err)
    # The output unreachable: a nightly run still prints its status line for monitoring, and exits 4.
    spec = _spec_file(tmp_path, "out-closed", f"s3://{bucket}/archive", f"s3://{bucket}/o", good, closed)
    assert cli.main(["nightly", spec, "-q"]) == 4
    captured = capsys.readouterr()
    assert "status=failed" in captured.out and "cannot reach http://127.0.0.1:9" in captured.out
    with pytest.raises(StorageError):
        cli.main(
            [
                "--debug",
                "season",
                _spec_file(tmp_path, "debug", f"s3://{bucket}/archive", f"s3://{bucket}/o", closed, closed),
                "-q",
            ]
        )
    # fsspec's environment and the spec both name an endpoint: the spec's is used (before: an aiobotocore TypeError).
    monkeypatch.setenv("FSSPEC_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    spec = _spec_file(tmp_path, "both", f"s3://{bucket}/archive", f"s3://{bucket}/out-both", good, good)
    assert cli.main(["season", spec, "-q"]) == 0, capsys.readouterr().err
