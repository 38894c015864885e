"""Season-job throughput against plain model inference, in the same process.

Writes a SYNTHETIC archive of 256² 16-bit PNGs, runs the season on a LocalCluster (started
before timing) with the backbone compiled (``features.compile: true``; its warm-up is part
of the season's time) and eager, and times plain eager inference with all cores, at batch
64 (this benchmark's earlier baseline) and at batch 16 (the best eager rate on this CPU).
Prints images/s of each and the ratios.  Usage::

    python benchmarks/season_throughput.py [--images 20000] [--workers 2] [--precision bfloat16]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import (CORES, cpu_roof, decoding_rate, plain_inference_rate, run_season_on_local_cluster, season_job,
                     write_synthetic_archive)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20000, help="frames in the synthetic archive")
    ap.add_argument("--days", type=int, default=10, help="nights the frames spread over (one partition each)")
    ap.add_argument("--workers", type=int, default=CORES)
    ap.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--no-eager-season", action="store_true", help="skip the eager season")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="aurora-bench-")
    t0 = time.perf_counter()
    # Polar night at Ny-Ålesund, Moon test off: every frame is processed.
    start, end, _ = write_synthetic_archive(f"file://{tmp}/archive", "NYA", "2010-12-10", args.images, args.days)
    print(f"synthetic archive: {args.images} frames (256² 16-bit PNG) in {time.perf_counter() - t0:.1f} s")

    plain = {bs: plain_inference_rate(128, bs, CORES) for bs in (64, 16)}
    for bs, rate in plain.items():
        print(f"plain eager inference: {rate:.1f} img/s (batch {bs}, 128 px, {CORES} threads, float32)")
    roof = decoding_rate(sorted(Path(tmp, "archive").rglob("*.png"))[:2000])
    shared = cpu_roof(roof, max(plain.values()))
    print(f"decoding roof: {roof:.1f} img/s (decode + lite128, {CORES} threads, no network); "
          f"CPU roof with the eager network on the same cores: {shared:.1f} img/s")
    modes = [("compiled", True)] + ([] if args.no_eager_season else [("eager", False)])
    for name, compile in modes:
        job = season_job(f"file://{tmp}/archive", f"file://{tmp}/out-{name}", "NYA", start.to_pydatetime(),
                         end.to_pydatetime(), compile=compile, precision=args.precision)
        summary, peak = run_season_on_local_cluster(job, args.workers)
        rate = summary.images / summary.seconds
        print(f"season, {name} {args.precision}: {summary.images} images in {summary.seconds:.1f} s -> "
              f"{rate:.1f} img/s ({args.workers} workers, batch {job.features.batch_size or 'default'}; busiest "
              f"worker peak RSS {peak:.0f} MB); ratio to plain eager batch 64: {rate / plain[64]:.2f}, "
              f"batch 16: {rate / plain[16]:.2f}; to the eager CPU roof: {rate / shared:.2f}")


if __name__ == "__main__":
    main()
