"""Multi-megapixel colour JPEGs: season throughput, the decoding roof, and what reduced decoding changes.

Writes a SYNTHETIC archive of ``--images`` 2832×2832 colour JPEGs with sky-like content
(about 1 MB each, like a modern all-sky camera's) and runs a season over it (``kiruna``
layout, recipe ``--recipe``).  Prints, measured in this run:

- the season's images/s against plain inference of the same backbone and input size, its steady state
  (images over the partitions' wall time), its fixed costs (the run's phases) and the CPU time per stage;
  ``season_throughput.py --kind jpeg`` gives the marginal steady state between two season sizes;
- the decoding roof: images/s of decoding + preprocessing alone on all cores, and the CPU
  roof when decoding and the network share those cores (1 / (1/decoding + 1/network));
  no pipeline beats them on this machine;
- the busiest worker's peak memory;
- how far preprocessing at reduced scale (JPEG DCT scaling) moves the features from the
  same recipe at full resolution: relative L2 difference and cosine similarity.

Usage::

    python benchmarks/large_images.py [--images 600] [--days 12] [--recipe lite128]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import (
    CORES,
    cpu_model,
    cpu_roof,
    decoding_rate,
    plain_inference_rate,
    run_season_on_local_cluster,
    season_job,
    write_synthetic_archive,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--days", type=int, default=12, help="nights the frames spread over (one partition each)")
    ap.add_argument("--recipe", default="lite128")
    ap.add_argument("--workers", type=int, default=CORES)
    args = ap.parse_args()

    from aurora_batch.formats.decode import decode
    from aurora_batch.model.features import extract_features
    from aurora_batch.model.recipes import get_recipe

    tmp = Path(tempfile.mkdtemp(prefix="aurora-large-"))
    t0 = time.perf_counter()
    start, end, labels = write_synthetic_archive(
        f"file://{tmp}/archive", "LYR", "2010-12-10", args.images, args.days, kind="colour"
    )
    print(f"large images on {cpu_model()}, {CORES} cores")
    print(
        f"synthetic archive: {len(labels)} colour JPEGs 2832x2832, mean {labels['bytes'].mean() / 1e6:.2f} MB, "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    recipe = get_recipe(args.recipe)
    files = sorted((tmp / "archive").rglob("*.jpg"))

    plain = plain_inference_rate(recipe.size, 64, CORES)
    print(f"plain inference: {plain:.1f} img/s (batch 64, {recipe.size} px, {CORES} threads)")

    roof = decoding_rate(files, args.recipe)
    shared = cpu_roof(roof, plain)
    print(
        f"decoding roof: {roof:.1f} img/s (decode at reduced scale + {args.recipe}, {CORES} threads, no network); "
        f"CPU roof with the network on the same cores: {shared:.1f} img/s"
    )

    job = season_job(
        f"file://{tmp}/archive",
        f"file://{tmp}/out",
        "LYR",
        start.to_pydatetime(),
        end.ceil("D").to_pydatetime(),
        layout="kiruna",
        recipe=args.recipe,
    )
    summary, peak = run_season_on_local_cluster(job, args.workers)
    rate = summary.images / summary.seconds
    print(
        f"season: {summary.images} images in {summary.seconds:.1f} s -> {rate:.1f} img/s "
        f"({args.workers} workers; busiest worker peak RSS {peak:.0f} MB)"
    )
    print(f"ratio season/plain inference: {rate / plain:.2f}; season/CPU roof: {rate / shared:.2f}")
    inside = summary.images / summary.timings["partitions"]
    print(
        f"steady state (images over the partitions' wall time): {inside:.1f} img/s ({inside / shared:.2f} of the "
        f"CPU roof); fixed cost {summary.seconds - summary.timings['partitions']:.1f} s ("
        + ", ".join(f"{k} {v:.1f} s" for k, v in summary.timings.items() if k != "partitions")
        + ")"
    )
    print(
        "CPU per image (ms): "
        + ", ".join(
            f"{k} {1000 * v / summary.images:.2f}" for k, v in sorted(summary.stage_cpu.items(), key=lambda kv: -kv[1])
        )
    )

    sample = files[:: max(1, len(files) // 24)]
    full = np.stack([recipe(decode(p.read_bytes(), p.name)) for p in sample])
    reduced = np.stack([recipe(decode(p.read_bytes(), p.name, recipe.min_side)) for p in sample])
    fa, fr = extract_features(full, device="cpu"), extract_features(reduced, device="cpu")
    rel = np.linalg.norm(fa - fr, axis=1) / np.linalg.norm(fa, axis=1)
    cos = (fa * fr).sum(1) / (np.linalg.norm(fa, axis=1) * np.linalg.norm(fr, axis=1))
    print(
        f"reduced vs full-resolution preprocessing ({len(sample)} frames): input max |diff| "
        f"{np.abs(full - reduced).max():.3f} (range [-1, 1]); features relative L2 median {np.median(rel):.3f}, "
        f"max {rel.max():.3f}; cosine min {cos.min():.4f}"
    )


if __name__ == "__main__":
    main()
