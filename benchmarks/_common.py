"""Shared pieces of the benchmarks: plain inference rates, seasons on a fresh LocalCluster, peak memory."""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # s3server, latency_proxy

CORES = os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's model name and the vector units the figures depend on, e.g. ``AMD EPYC (AVX-512, VNNI, BF16)``."""
    from aurora_batch.model.runtimes import cpu_flags

    name, flags = platform.processor() or "unknown CPU", cpu_flags()
    try:
        name = next(line for line in open("/proc/cpuinfo") if line.startswith("model name")).split(":", 1)[1].strip()
    except (OSError, StopIteration):
        pass
    units = [
        label
        for flag, label in (
            ("avx512f", "AVX-512"),
            ("avx512_vnni", "VNNI"),
            ("avx512_bf16", "BF16"),
            ("amx_tile", "AMX"),
        )
        if flag in flags
    ]
    units = units or (["AVX2"] if "avx2" in flags else ["no AVX2"])
    return f"{name} ({', '.join(units)})" if flags else name


def plain_inference_rate(
    size: int = 128,
    batch_size: int = 64,
    threads: int = CORES,
    compile: bool = False,
    seconds: float = 10.0,
    device: str = "cpu",
    backbone: str = "efficientnet-lite0",
    runtime: str = "torch",
    precision: str = "float32",
) -> float:
    """Images/s of ``backbone`` alone on random ``(batch, 3, size, size)`` batches (after a warm-up), in
    ``runtime`` (:mod:`aurora_batch.model.runtimes`) at ``precision``."""
    import torch

    from aurora_batch.model.features import FeatureExtractor, tune_process

    tune_process(threads)
    batch = np.random.default_rng(0).random((batch_size, 3, size, size), dtype=np.float32) * 2 - 1
    extractor = FeatureExtractor(
        backbone,
        device=device,
        batch_size=batch_size,
        compile=compile,
        input_size=size,
        runtime=runtime,
        precision=precision,
    )
    extractor.push(batch)
    extractor.result()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        extractor.push(batch)
        n += batch_size
    extractor.result()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def decoding_rate(paths, recipe: str = "lite128", threads: int = CORES) -> float:
    """Images/s of decoding (at the recipe's reduced scale) + preprocessing alone, in ``threads`` threads."""
    from concurrent.futures import ThreadPoolExecutor

    from aurora_batch.formats.files import read_file
    from aurora_batch.model.recipes import get_recipe

    rec = get_recipe(recipe)

    def prepare(path):
        return [rec(img) for img in read_file(path.read_bytes(), path.name, min_side=rec.min_side).images]

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(prepare, paths[:threads]))
        t0 = time.perf_counter()
        frames = sum(len(f) for f in pool.map(prepare, paths))
    return frames / (time.perf_counter() - t0)


def _write_part(args) -> pd.DataFrame:  # noqa: F821
    from aurora_batch.datasets.synth import write_archive, write_colour_archive

    kind, url, station, start, end, cadence, seed, storage_options = args
    if kind == "colour":
        return write_colour_archive(
            url, station, start, end, cadence=cadence, seed=seed, storage_options=storage_options
        )
    return write_archive(url, [station], start, end, cadence=cadence, seed=seed, storage_options=storage_options)


def write_synthetic_archive(
    url: str,
    station: str,
    start,
    images: int,
    days: float,
    kind: str = "asim",
    storage_options: dict | None = None,
    processes: int = CORES,
) -> tuple:
    """A SYNTHETIC archive of ``images`` frames over ``days``, written by ``processes`` in parallel.

    ``kind``: ``asim`` (256² 16-bit PNGs, :func:`~aurora_batch.synth.write_archive`) or ``colour``
    (2832² JPEGs, :func:`~aurora_batch.synth.write_colour_archive`).  Returns ``(start, end,
    labels)``: the frames' time range (UTC) and the writers' label tables.
    """
    from concurrent.futures import ProcessPoolExecutor

    import pandas as pd

    start = pd.Timestamp(start)
    cadence = pd.Timedelta(days=days) / images
    bounds = [start + cadence * (images * i // processes) for i in range(processes + 1)]
    with ProcessPoolExecutor(processes) as pool:
        labels = pd.concat(
            pool.map(
                _write_part,
                [
                    (kind, url, station, a, b, cadence, i, storage_options)
                    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))
                ],
            )
        )
    assert len(labels) == images, (len(labels), images)
    return bounds[0], bounds[-1], labels


def cpu_roof(decoding: float, network: float) -> float:
    """Images/s when decoding and the network share the same cores: 1 / (1/decoding + 1/network)."""
    return 1 / (1 / decoding + 1 / network)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_season_on_local_cluster(job, workers: int = CORES, **cluster_kwargs):
    """``(summary, busiest worker's peak RSS in MB)`` for ``job`` on a fresh LocalCluster (started before timing)."""
    from distributed import Client, LocalCluster

    from aurora_batch.runner.season import run_season

    kwargs = dict(n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0")
    kwargs.update(cluster_kwargs)
    with LocalCluster(**kwargs) as cluster, Client(cluster) as client:
        client.run(lambda: None)
        summary = run_season(job, client=client, progress=False)
        peak = max(client.run(_peak_mb).values())
    return summary, peak


def season_job(
    input_url: str,
    output_url: str,
    station: str,
    start,
    end,
    layout: str = "asim",
    storage_options: dict | None = None,
    **features,
):
    """A job that processes every frame (Sun and Moon tests off), one torch thread per worker."""
    from aurora_batch.config import JobConfig

    return JobConfig(
        input=input_url,
        output=output_url,
        stations=[station],
        start=start,
        end=end,
        layout=layout,
        filter={"sun_max_alt": 90, "moon_max_alt": None},
        storage_options=storage_options or {},
        features={"torch_threads": 1, **features},
    )
