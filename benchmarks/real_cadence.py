"""Month stores at a real imager's cadence: what a nightly writes, and what a month costs.

Staged parts are fabricated with the project's own staging code at a THEMIS cadence (a frame every
3 s, ``--frames`` per station-night, 1,280 features and two 256-sample keogram lines each: one part is
about 77 MiB), for ``--days`` days of December 2010 and ``--stations`` stations.  For each backend
(a local disk with plain Zarr; SeaweedFS on 127.0.0.1 with Icechunk) it measures, in one run:

- a **1-day month build** from only the new day's parts (its time, and its bytes in the store: "the new
  day's bytes");
- the month of ``--days`` days built whole (time, store bytes, object count);
- the **nightly** that adds the next day to that month: its time, the bytes it wrote into the month
  store (files with a new inode on a local disk; repository growth on S3, where Icechunk never
  rewrites an object), and the staged part's bytes, each against the 1-day figures.

Ratios are taken within the run; the CPU model is printed.  Usage::

    python benchmarks/real_cadence.py [--stations 1 4] [--days 30] [--frames 14400] [--backends local s3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_model  # noqa: E402

STATIONS = ["GILL", "FSMI", "ATHA", "RANK", "FSIM", "PINA", "KAPU", "TPAS"]  #: THEMIS sites in the station table
MiB = 2**20


def stage(job, station: str, day, frames: int, seed: int) -> None:
    """One station-night: ``frames`` images at 3 s from 02:00 UTC, staged as a partition stages them."""
    import numpy as np
    import pandas as pd

    from aurora_batch.core.keys import PartitionKey, Status
    from aurora_batch.partition.fingerprint import feature_fingerprint
    from aurora_batch.store.layout import staging_url
    from aurora_batch.store.parts import write_part

    rng = np.random.default_rng(seed)
    times = pd.Timestamp(day) + pd.Timedelta(hours=2) + pd.to_timedelta(np.arange(frames) * 3, unit="s")
    rows = pd.DataFrame(
        {
            "url": [
                f"s3://themis/stream0/{t:%Y/%m/%d}/{station.lower()}_themis/"
                f"{t:%Y%m%d_%H%M}_{station.lower()}_themis_full.pgm.gz"
                for t in times
            ],
            "station": station,
            "time": times,
            "wavelength": pd.array([None] * frames, "Int64"),
            "format": "themis_pgm",
            "status": Status.KEPT,
            "detail": "",
            "sun_alt": rng.uniform(-40, -12, frames),
            "moon_alt": rng.uniform(-30, 0, frames),
            "moon_illumination": 0.3,
            "frame": np.int32(np.arange(frames) % 20),
            "saturated": np.float32(0.0),
            "size": 40_000,
        }
    )
    # Features like a pooled CNN output: non-negative, many near zero (compressible as real ones are, a little).
    features = np.maximum(rng.normal(0.0, 1.0, (frames, 1280)).astype(np.float32), 0)
    keogram = (rng.random((frames, 2, 256), dtype=np.float32) * 4000).round()
    write_part(
        staging_url(job.output, PartitionKey(station, None, pd.Timestamp(day).date())),
        rows,
        {"features": features, "keogram_ns": keogram[:, 0], "keogram_ew": keogram[:, 1]},
        job.output_storage_options,
        feature_fingerprint(job),
    )


def build(job, month: str = "2010-12", force: bool = False, map_tasks=None):
    from aurora_batch.month.build import build_month, common_attrs, month_inputs

    t0 = time.perf_counter()
    result = build_month(
        job, month_inputs(job, month), common_attrs(job), "", command="nightly", force=force, map_tasks=map_tasks
    )
    return time.perf_counter() - t0, result


def build_on_cluster(job, client) -> float:
    """The month rebuilt whole by one task of ``client``'s cluster, its stations written as tasks in parallel."""
    from aurora_batch.runner.season import map_on_cluster

    return client.submit(lambda: build(job, force=True, map_tasks=map_on_cluster)[0], pure=False).result()


class Local:
    """Plain Zarr months on a local disk: bytes written are the files with a new inode."""

    name = "local disk, plain Zarr"

    def __init__(self, root: Path):
        self.root = root

    def job(self, name: str, stations: list[str]):
        from aurora_batch.config import JobConfig

        return JobConfig(
            input="file:///in",
            output=f"file://{self.root}/{name}",
            stations=stations,
            start="2010-12-01",
            end="2011-01-01",
            store={"format": "zarr"},
        )

    def store(self, job) -> Path:
        return Path(job.output.removeprefix("file://")) / "2010-12.zarr"

    def snapshot(self, job) -> dict[int, int]:
        return {p.stat().st_ino: p.stat().st_size for p in self.store(job).rglob("*") if p.is_file()}

    def written(self, before: dict[int, int], job) -> int:
        return sum(size for ino, size in self.snapshot(job).items() if ino not in before)

    def size(self, job) -> tuple[int, int]:
        snap = self.snapshot(job)
        return sum(snap.values()), len(snap)

    def staged_bytes(self, job, name: str) -> int:
        return (Path(job.output.removeprefix("file://")) / "_staging" / "2010-12" / name).stat().st_size


class S3(Local):
    """Icechunk months on SeaweedFS: Icechunk writes new objects only, so what a nightly writes is the growth."""

    name = "SeaweedFS (127.0.0.1), Icechunk"

    def __init__(self, server):
        self.server = server
        self.fs = server.filesystem()
        self.fs.mkdir("cadence")

    def job(self, name: str, stations: list[str]):
        from aurora_batch.config import JobConfig

        opts = self.server.storage_options
        return JobConfig(
            input="s3://cadence/in",
            output=f"s3://cadence/{name}",
            stations=stations,
            start="2010-12-01",
            end="2011-01-01",
            storage_options=opts,
            output_storage_options=opts,
            store={"format": "icechunk"},
        )

    def snapshot(self, job) -> dict[str, int]:
        path = job.output.removeprefix("s3://") + "/2010-12.icechunk"
        self.fs.invalidate_cache()
        return {p: info["size"] for p, info in self.fs.find(path, detail=True).items()}

    def written(self, before: dict, job) -> int:
        return sum(size for p, size in self.snapshot(job).items() if p not in before)

    def staged_bytes(self, job, name: str) -> int:
        return self.fs.info(job.output.removeprefix("s3://") + f"/_staging/2010-12/{name}")["size"]


def run(backend, stations: list[str], days: int, frames: int, client=None) -> dict[str, float]:
    import pandas as pd

    label = f"{len(stations)} station(s), {days} days + 1, {frames:,} frames a night"
    dec = pd.date_range("2010-12-01", periods=days + 1, freq="1D")
    new_day = dec[-1]
    one = backend.job(f"one-{len(stations)}", stations)
    month = backend.job(f"month-{len(stations)}", stations)
    t0 = time.perf_counter()
    for i, station in enumerate(stations):
        for j, day in enumerate(dec[:-1]):
            stage(month, station, day, frames, seed=1000 * i + j)
    for i, station in enumerate(stations):
        stage(one, station, new_day, frames, seed=1000 * i + days)
    staging = time.perf_counter() - t0
    one_s, _ = build(one)
    new_bytes, _ = backend.size(one)
    whole_s, _ = build(month)
    month_bytes, objects = backend.size(month)
    before = backend.snapshot(month)
    for i, station in enumerate(stations):
        stage(month, station, new_day, frames, seed=1000 * i + days)
    staged = sum(backend.staged_bytes(month, f"{s}_all_{new_day:%Y%m%d}.parquet") for s in stations)
    nightly_s, result = build(month)
    written = backend.written(before, month)
    assert result is not None and result.incremental, "the nightly should append"
    after_bytes, after_objects = backend.size(month)
    out = {
        "one_day_build_s": one_s,
        "new_day_bytes": new_bytes,
        "month_build_s": whole_s,
        "month_bytes": month_bytes,
        "month_objects": objects,
        "nightly_s": nightly_s,
        "written": written,
        "growth": after_bytes - month_bytes,
        "staged": staged,
    }
    print(f"  {backend.name}, {label} (fabricated in {staging:.0f} s):")
    print(f"    1-day month build {one_s:6.2f} s; the new day in the store {new_bytes / MiB:8.1f} MiB")
    print(
        f"    {days}-day month built whole {whole_s:6.2f} s, {month_bytes / MiB:8.1f} MiB in {objects} objects "
        f"({objects / len(stations):.0f} a station)"
    )
    print(
        f"    nightly adding day {days + 1}: {nightly_s:6.2f} s = {nightly_s / one_s:.2f} x the 1-day build "
        "(goal <= 1.5)"
    )
    print(
        f"      bytes written into the month {written / MiB:8.1f} MiB = {written / new_bytes:.2f} x the new day "
        "(goal <= 1.5)"
    )
    print(
        f"      store growth {out['growth'] / MiB:8.1f} MiB = {out['growth'] / new_bytes:.2f} x the new day "
        "(goal <= 1.3)"
    )
    print(f"      staging log {staged / MiB:8.1f} MiB = {staged / new_bytes:.2f} x the new day (goal <= 1.1)")
    print(f"      month after: {after_objects} objects ({after_objects / len(stations):.0f} a station)")
    if client is not None and len(stations) > 1:
        serial_s, _ = build(month, force=True)
        parallel_s = build_on_cluster(month, client)
        workers = len(client.scheduler_info()["workers"])
        print(
            f"    {days + 1}-day month rebuilt whole: {serial_s:6.2f} s by one task, {parallel_s:6.2f} s with its "
            f"stations on {workers} workers = {parallel_s / serial_s:.2f} (goal <= 0.6); scratch disk: none "
            "(written in place: beside the store, or into an Icechunk session)"
        )
    return out


def late_file(root: Path, frames: int) -> None:
    """``aurora-batch nightly`` runs over one SYNTHETIC station-night at 3 s cadence (``frames`` PNGs): the first
    processes it, the second is idle, the third finds one late file.  Wall times of the CLI, and its frame counts."""
    import re
    import subprocess

    import pandas as pd

    from aurora_batch.datasets.synth import asim_name, render_frame, write_archive

    archive = root / "late-archive"
    start = pd.Timestamp("2010-12-01T18:00")
    end = start + pd.Timedelta(seconds=3 * frames)
    t0 = time.perf_counter()
    write_archive(f"file://{archive}", ["NYA"], start, end, cadence="3s", seed=7)
    written = time.perf_counter() - t0
    spec = root / "late.yaml"
    spec.write_text(
        f"input: file://{archive}\noutput: file://{root}/late-out\nstations: [NYA]\n"
        f"start: 2010-12-01\nend: 2010-12-03\nfilter: {{moon_max_alt: null, sun_max_alt: -5.0}}\n"
        "nightly: {lookback: 24h}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

    def nightly() -> tuple[float, str]:
        t = time.perf_counter()
        out = (
            subprocess.run(
                [sys.executable, "-m", "aurora_batch.cli", "nightly", str(spec), "-q"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        return time.perf_counter() - t, out

    first_s, first = nightly()
    idle_s, idle = nightly()
    late = end - pd.Timedelta(minutes=30) + pd.Timedelta(seconds=1)  # between two frames, inside the look-back
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(render_frame("arc", late, np.random.default_rng(0))).save(buf, format="PNG")
    path = archive / asim_name("NYA", late)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    late_s, line = nightly()

    def field(text: str, name: str) -> str:
        m = re.search(rf"{name}=(\S+)", text)
        return m.group(1) if m else "?"

    print(f"  aurora-batch nightly over {frames:,} frames at 3 s (PNG, written in {written:.0f} s), local disk:")
    print(
        f"    first {first_s:6.1f} s ({field(first, 'frames_computed')} frames computed); idle {idle_s:6.1f} s "
        f"({field(idle, 'stores_written')} stores written)"
    )
    print(
        f"    one late file {late_s:6.1f} s = idle + {late_s - idle_s:.1f} s (goal <= 3 s); frames computed "
        f"{field(line, 'frames_computed')} (goal 1), reused {field(line, 'frames_reused')}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stations", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--frames", type=int, default=14_400, help="frames per station-night (3 s for 12 h: 14,400)")
    ap.add_argument("--backends", nargs="+", default=["local", "s3"], choices=["local", "s3"])
    ap.add_argument("--workers", type=int, default=2, help="workers of the LocalCluster for the parallel build")
    ap.add_argument(
        "--late-frames", type=int, default=14_400, help="frames of the night of the late-file nightly (0: skip it)"
    )
    args = ap.parse_args()
    print(f"real-cadence month stores on {cpu_model()}")
    root = Path(tempfile.mkdtemp(prefix="aurora-cadence-"))
    server = None
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=args.workers,
        threads_per_worker=1,
        dashboard_address="127.0.0.1:0",
        host="127.0.0.1",
        memory_limit="6GiB",
    )
    client = Client(cluster)
    try:
        if args.late_frames:
            late_file(root, args.late_frames)
        for kind in args.backends:
            if kind == "local":
                backend = Local(root / "local")
            else:
                sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
                from s3server import SeaweedServer

                server = SeaweedServer(root / "seaweed").start()
                backend = S3(server)
            for n in args.stations:
                run(backend, STATIONS[:n], args.days, args.frames, client)
            if server is not None:
                server.stop(kill=True)
                server = None
    finally:
        client.close()
        cluster.close()
        if server is not None:
            server.stop(kill=True)
        shutil.rmtree(root, ignore_errors=True)
        os.sync()


if __name__ == "__main__":
    main()
