"""Season-job throughput against plain model inference, in the same process.

Writes a SYNTHETIC archive, runs a season on a LocalCluster (started before timing), and
times plain ``extract_features`` on the same batch shape with the same total thread count.
Prints images/s of each and their ratio.  Usage::

    python benchmarks/season_throughput.py [--images 2000] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore", message="The file finals2000A.all has expired")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000, help="frames in the synthetic archive")
    ap.add_argument("--days", type=int, default=6, help="nights the frames spread over (one partition each)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    import pandas as pd
    import torch
    from distributed import Client, LocalCluster

    from aurora_batch.config import JobConfig
    from aurora_batch.features import extract_features
    from aurora_batch.season import run_season
    from aurora_batch.synth import write_archive

    tmp = tempfile.mkdtemp(prefix="aurora-bench-")
    # Polar night at Ny-Ålesund, Moon test off: every frame is processed.
    start = pd.Timestamp("2010-12-20T00:00")
    cadence = pd.Timedelta(days=args.days) / args.images
    end = start + cadence * args.images
    t0 = time.perf_counter()
    write_archive(f"file://{tmp}/archive", ["NYA"], start, end, cadence=cadence, seed=1)
    print(f"synthetic archive: {args.images} frames in {time.perf_counter() - t0:.1f} s")
    job = JobConfig(input=f"file://{tmp}/archive", output=f"file://{tmp}/out", stations=["NYA"],
                    start=start.to_pydatetime(), end=end.to_pydatetime(),
                    filter={"sun_max_alt": 90, "moon_max_alt": None},
                    features={"batch_size": args.batch_size,
                              "torch_threads": max(1, (os.cpu_count() or 1) // args.workers)})
    cores = os.cpu_count() or 1
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        client.run(lambda: None)
        summary = run_season(job, client=client, progress=False)
    job_rate = summary.kept / summary.seconds
    print(f"season job: {summary.kept} images in {summary.seconds:.1f} s -> {job_rate:.1f} img/s "
          f"({args.workers} workers)")

    torch.set_num_threads(cores)
    batch = np.random.default_rng(0).random((args.batch_size, 3, 128, 128), dtype=np.float32) * 2 - 1
    extract_features(batch, device="cpu")  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 10:
        extract_features(batch, device="cpu", batch_size=args.batch_size)
        n += len(batch)
    infer_rate = n / (time.perf_counter() - t0)
    print(f"plain inference: {infer_rate:.1f} img/s (batch {args.batch_size}, 128 px, {cores} threads)")
    print(f"ratio season/inference: {job_rate / infer_rate:.2f}")


if __name__ == "__main__":
    main()
