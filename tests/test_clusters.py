"""Real distributed engines: separate dask scheduler/worker processes, and a real local SLURM."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import make_job
from helpers import assert_same_stores, check_season, store_snapshot
from s3server import free_port

from aurora_batch.datasets.synth import write_archive
from aurora_batch.runner.season import run_season

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster-archive")
    labels = write_archive(
        f"file://{root}", ["NYA", "LYR"], "2010-12-01", "2010-12-04", cadence="60min", seed=21, corrupt=3
    )
    return f"file://{root}", len(labels) + 3


@pytest.fixture(scope="module")
def local_result(archive, tmp_path_factory, dask_client):
    url, n = archive
    job = make_job(url, f"file://{tmp_path_factory.mktemp('local')}/out", end="2010-12-04")
    check_season(run_season(job, client=dask_client, progress=False), job, n)
    return store_snapshot(job)


def _bin(name):
    return os.path.join(os.path.dirname(sys.executable), name)


def test_season_on_separate_scheduler_and_workers_survives_sigkill(archive, local_result, tmp_path):
    url, n = archive
    port = free_port()
    procs = [
        subprocess.Popen(
            [
                _bin("dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--dashboard-address",
                "127.0.0.1:0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    ]
    try:
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        _bin("dask"),
                        "worker",
                        f"tcp://127.0.0.1:{port}",
                        "--host",
                        "127.0.0.1",
                        "--nthreads",
                        "1",
                        "--dashboard-address",
                        "127.0.0.1:0",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        from distributed import Client

        with Client(f"tcp://127.0.0.1:{port}", timeout="30s") as client:
            client.wait_for_workers(2, timeout=120)
            pids = client.run(os.getpid)
            job = make_job(
                url, f"file://{tmp_path}/out", end="2010-12-04", cluster={"scheduler": client.scheduler.address}
            )
            box = {}
            t = threading.Thread(target=lambda: box.update(s=run_season(job, progress=False)))
            t.start()
            deadline = time.time() + 120
            while time.time() < deadline and not any(
                str(k).startswith("partition-") for ks in client.processing().values() for k in ks
            ):
                time.sleep(0.05)
            victim = next(a for a, ks in client.processing().items() if ks)
            time.sleep(1.0)  # well inside the task: model loaded, images being read
            os.kill(pids[victim], signal.SIGKILL)  # the worker process (its nanny restarts it)
            t.join(timeout=600)
            # The worker plugin ran on every worker, the restarted one too: allocator and torch threads read back.
            client.wait_for_workers(2, timeout=120)
            assert pids[victim] not in client.run(os.getpid).values()  # the killed process was replaced
            setups = client.run(lambda dask_worker: getattr(dask_worker, "aurora_setup", None))
            threads = client.run(lambda: __import__("torch").get_num_threads())
        assert "s" in box, "season did not finish after a worker was killed"
        check_season(box["s"], job, n)
        assert_same_stores(store_snapshot(job), local_result)
        from aurora_batch.runner.worker import owned_cores

        assert len(setups) == 2 and set(setups) == set(threads)
        for address, setup in setups.items():
            assert setup["malloc_tuned"] is True and setup["nthreads"] == 1
            # two one-thread workers on this host share its cores
            assert setup["torch_threads"] == threads[address] == max(1, owned_cores() // 2) == setup["cores"]
    finally:
        for p in procs[::-1]:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=30)


def test_season_through_real_slurm(archive, local_result, tmp_path, slurm):
    url, n = archive
    logs = tmp_path / "slurm-logs"
    logs.mkdir()
    job = make_job(
        url,
        f"file://{tmp_path}/out",
        end="2010-12-04",
        cluster={
            "kind": "slurm",
            "dashboard_address": "127.0.0.1:0",
            "slurm": {
                "jobs": 2,
                "cores": 1,
                "memory": "3GB",
                "queue": "debug",
                "walltime": "00:30:00",
                "log_directory": str(logs),
            },
        },
    )
    summary = run_season(job, progress=False)
    check_season(summary, job, n)
    assert_same_stores(store_snapshot(job), local_result)
    # The workers really were SLURM jobs: their batch logs exist.
    assert list(logs.glob("*.err")) or list(logs.glob("*.out"))


def test_partitions_route_to_gpu_workers(archive, tmp_path):
    """A worker that offers GPU=1 gets every partition's CNN tasks (its chunks); plain workers get none.

    No CUDA device here: the routing is what is tested; features.device 'auto' then runs on CPU.
    Scheduler and both workers are real, over TCP, in this process (the routing is the scheduler's).
    """
    from distributed import Client, Scheduler, SpecCluster, Worker, get_task_stream

    url, _ = archive
    workers = {
        "gpu": {"cls": Worker, "options": {"nthreads": 1, "resources": {"GPU": 1}, "host": "127.0.0.1"}},
        "cpu": {"cls": Worker, "options": {"nthreads": 1, "host": "127.0.0.1"}},
    }
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}}
    with SpecCluster(workers=workers, scheduler=scheduler) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=120)
        gpu = next(a for a, w in client.scheduler_info()["workers"].items() if w["resources"].get("GPU"))
        job = make_job(url, f"file://{tmp_path}/out", end="2010-12-02")  # one day: two partitions
        with get_task_stream(client) as ts:
            summary = run_season(job, client=client, progress=False)
        ran = {t["key"]: t["worker"] for t in ts.data}
        partitions = [k for k in ran if str(k).startswith("partition-")]
        cnn = {k: w for k, w in ran.items() if str(k).startswith("chunk-")}  # decoding and the network
        assert len(partitions) == summary.partitions == 2 and len(cnn) >= 2 and set(cnn.values()) == {gpu}
        assert summary.images == summary.kept > 0
