"""Publishing a month on object storage: plain Zarr against Icechunk, and how long readers go without it.

A month of ``--images`` staged images (2 stations, every day of December 2010, 1,280 features and
two 256-sample keogram lines each; the staged parts are written directly, as partitions stage
them) on a local SeaweedFS S3 server.  For each store format, the month is built and published
twice (the second time replacing the first, as a nightly run does), while a reader opens it
every 50 ms: the build times, their ratio, and the time the reader could not open the month
(its unavailability window) are printed, in one run, with the CPU model.  Usage::

    python benchmarks/publish.py [--images 20000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import cpu_model  # noqa: E402


def stage_month(job, images: int) -> None:
    """Staged parts for every (station, day) of December 2010, ``images`` rows in all."""
    import numpy as np
    import pandas as pd

    from aurora_batch.core.keys import PartitionKey, Status
    from aurora_batch.partition.fingerprint import feature_fingerprint
    from aurora_batch.store.layout import staging_url
    from aurora_batch.store.parts import write_part

    rng = np.random.default_rng(0)
    days = pd.date_range("2010-12-01", periods=31, freq="1D")
    per_part = images // (2 * len(days)) + 1
    for station in ("NYA", "LYR"):
        for day in days:
            times = day + pd.to_timedelta(np.sort(rng.choice(86_400, per_part, replace=False)), unit="s")
            rows = pd.DataFrame(
                {
                    "url": [f"s3://archive/{station}_{t:%Y%m%d_%H%M%S}.png" for t in times],
                    "station": station,
                    "time": times,
                    "wavelength": pd.array([5577] * per_part, "Int64"),
                    "format": "asim",
                    "status": Status.KEPT,
                    "detail": "",
                    "sun_alt": -20.0,
                    "moon_alt": -5.0,
                    "moon_illumination": 0.3,
                    "frame": np.int32(0),
                    "saturated": np.float32(0.0),
                }
            )
            arrays = {
                "features": rng.random((per_part, 1280), dtype=np.float32),
                "keogram_ns": rng.random((per_part, 256), dtype=np.float32) * 4000,
                "keogram_ew": rng.random((per_part, 256), dtype=np.float32) * 4000,
            }
            url = staging_url(job.output, PartitionKey(station, 5577, day.date()))
            write_part(url, rows, arrays, job.output_storage_options, feature_fingerprint(job))


def publish(job) -> float:
    from aurora_batch.month.build import build_month, common_attrs, month_inputs

    t0 = time.perf_counter()
    build_month(job, month_inputs(job, "2010-12"), common_attrs(job), "", force=True)
    return time.perf_counter() - t0


def poll(job, stop: threading.Event, log: list) -> None:
    """Open the month every 50 ms; log (time, images or the error)."""
    import aurora_batch as ab

    while not stop.is_set():
        t = time.perf_counter()
        try:
            ds = ab.open_station(job.output, "NYA", storage_options=job.output_storage_options)
            log.append((t, ds.sizes["time"]))
        except Exception as err:  # noqa: BLE001 - what the reader meets
            log.append((t, repr(err)[:80]))
        time.sleep(0.05)


def unavailable(log: list) -> tuple[float, int, int]:
    """(seconds from the first failed open to the next good one, summed; failed opens; opens)."""
    gap, start, failed = 0.0, None, 0
    for t, result in log:
        if isinstance(result, str):
            failed += 1
            start = t if start is None else start
        elif start is not None:
            gap += t - start
            start = None
    return gap, failed, len(log)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20_000)
    args = ap.parse_args()
    from s3server import SeaweedServer

    from aurora_batch.config import JobConfig

    print(f"publish benchmark on {cpu_model()}: a month of ~{args.images:,} images on SeaweedFS (127.0.0.1)")
    server = SeaweedServer(Path(tempfile.mkdtemp(prefix="aurora-publish-"))).start()
    results = {}
    try:
        server.filesystem().mkdir("publish")
        for fmt in ("zarr", "icechunk"):
            opts = server.storage_options
            job = JobConfig(
                input="s3://publish/archive",
                output=f"s3://publish/{fmt}",
                stations=["NYA", "LYR"],
                start="2010-12-01",
                end="2011-01-01",
                storage_options=opts,
                output_storage_options=opts,
                store={"format": fmt},
            )
            stage_month(job, args.images)
            first = publish(job)
            log, stop = [], threading.Event()
            reader = threading.Thread(target=poll, args=(job, stop, log))
            reader.start()
            time.sleep(0.5)
            second = publish(job)
            time.sleep(0.5)
            stop.set()
            reader.join()
            gap, failed, opens = unavailable(log)
            counts = {r for _, r in log if not isinstance(r, str)}
            results[fmt] = (first, second)
            print(
                f"  {fmt:8s}: build and publish {first:6.2f} s, rebuild {second:6.2f} s; reader: {opens} opens, "
                f"{failed} failed, month unavailable {gap:.2f} s, image counts seen {sorted(counts)}"
            )
        ratio = [results["icechunk"][i] / results["zarr"][i] for i in range(2)]
        print(f"  icechunk / zarr: {ratio[0]:.2f} (first), {ratio[1]:.2f} (rebuild) (goal <= 1.2)")
    finally:
        server.stop(kill=True)


if __name__ == "__main__":
    main()
