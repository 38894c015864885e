import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def dask_client():
    """A real LocalCluster on 127.0.0.1: one worker process with two threads (one process to start per
    test session; several worker processes are in test_season, test_clusters and the SLURM test)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=2,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            memory_limit="4GiB",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="session")
def small_archive(tmp_path_factory):
    """A SYNTHETIC two-station, one-day archive at 30 min cadence with 3 broken files."""
    from aurora_batch.datasets.synth import write_archive

    root = tmp_path_factory.mktemp("archive")
    url = f"file://{root}"
    labels = write_archive(url, ["NYA", "LYR"], "2010-12-01", "2010-12-02", cadence="30min", seed=7, corrupt=3)
    return url, labels


def make_job(input_url, output_url, **kw):
    from aurora_batch.config import JobConfig

    data = dict(input=input_url, output=output_url, stations=["NYA", "LYR"], start="2010-12-01", end="2010-12-02")
    data.update(kw)
    return JobConfig.from_dict(data)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real SeaweedFS S3 server on 127.0.0.1, started for the session."""
    from s3server import SeaweedServer

    server = SeaweedServer(tmp_path_factory.mktemp("seaweed")).start()
    yield server
    server.stop(kill=True)  # throwaway data: no graceful shutdown to wait for


@pytest.fixture
def bucket(s3_server, request):
    """A fresh bucket per test."""
    import re
    import uuid

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:6]
    fs = s3_server.filesystem()
    fs.mkdir(name)
    return name


@pytest.fixture(scope="session")
def synthetic_head(tmp_path_factory):
    """A head trained on a SYNTHETIC OATH-format tree (recipe lite128)."""
    from aurora_batch.datasets.oath import read_oath, write_synthetic_oath
    from aurora_batch.products.oath import oath_features, train

    root = write_synthetic_oath(tmp_path_factory.mktemp("synth-oath"), n_per_class=25, seed=1)
    ds = read_oath(root)
    feats = oath_features(ds, recipe="lite128", progress=False)
    head = train(
        ds,
        feats,
        "logistic",
        split=None,
        meta={"backbone": "efficientnet-lite0", "recipe": "lite128", "weights": "shipped"},
    )
    path = tmp_path_factory.mktemp("head") / "synthetic.npz"
    head.save(path)
    return path, ds, feats


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A real single-node SLURM for the session (fails loudly when it cannot start)."""
    from slurm import LocalSlurm

    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm")).start()
    old = os.environ.get("SLURM_CONF")
    os.environ.update(cluster.env)  # sbatch/squeue/scancel from dask-jobqueue find it
    yield cluster
    cluster.stop()
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old


@pytest.fixture(scope="session")
def oath_tree(tmp_path_factory):
    """A SYNTHETIC OATH tree (40 images a class) and its images through ``lite128``: ``(OathDataset, inputs)``."""
    import numpy as np

    from aurora_batch.datasets.oath import read_oath, write_synthetic_oath
    from aurora_batch.formats.decode import decode
    from aurora_batch.model.recipes import get_recipe

    ds = read_oath(write_synthetic_oath(tmp_path_factory.mktemp("oath"), n_per_class=40, seed=3))
    recipe = get_recipe("lite128")
    inputs = np.stack([recipe(decode(p.read_bytes(), str(p), recipe.min_side)) for p in ds.table["path"]])
    return ds, inputs
