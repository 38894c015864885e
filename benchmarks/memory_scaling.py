"""Memory as a season grows: peak RSS of the workers and the driver for N and k·N images.

Each season runs on a fresh 2-worker LocalCluster over a SYNTHETIC archive spread over one
night per 250 images (like a real season: more nights, not bigger nights).  Prints the
peak resident memory of the busiest worker and the driver's growth, and their ratios.
Usage::

    python benchmarks/memory_scaling.py [--images 1000] [--factor 4]
"""

from __future__ import annotations

import argparse
import resource
import tempfile


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _season(n: int):
    import pandas as pd
    from distributed import Client, LocalCluster

    from aurora_batch.config import JobConfig
    from aurora_batch.datasets.synth import write_archive
    from aurora_batch.runner.season import run_season

    tmp = tempfile.mkdtemp(prefix="aurora-mem-")
    days = max(1, n // 250)
    start = pd.Timestamp("2010-12-10")
    cadence = pd.Timedelta(days=days) / n
    write_archive(f"file://{tmp}/archive", ["NYA"], start, start + cadence * n, cadence=cadence, seed=1)
    job = JobConfig(
        input=f"file://{tmp}/archive",
        output=f"file://{tmp}/out",
        stations=["NYA"],
        start=start.to_pydatetime(),
        end=(start + pd.Timedelta(days=days)).to_pydatetime(),
        filter={"sun_max_alt": 90, "moon_max_alt": None},
        features={"torch_threads": 1},
    )
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster,
        Client(cluster) as client,
    ):
        import os

        import psutil

        driver = psutil.Process(os.getpid()).memory_info().rss / 2**20
        summary = run_season(job, client=client, progress=False)
        driver_after = psutil.Process(os.getpid()).memory_info().rss / 2**20
        worker_peak = max(client.run(_peak_mb).values())
    return summary.images, worker_peak, driver_after - driver


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--factor", type=int, default=4)
    args = ap.parse_args()
    rows = [_season(args.images), _season(args.images * args.factor)]
    for n, worker, driver in rows:
        print(f"season of {n:6d} images: busiest worker peak RSS {worker:7.0f} MB, driver grew {driver:6.1f} MB")
    (n1, w1, d1), (n2, w2, d2) = rows
    print(f"images x{n2 / n1:.1f} -> worker peak x{w2 / w1:.2f}, driver growth {d1:.1f} -> {d2:.1f} MB")


if __name__ == "__main__":
    main()
