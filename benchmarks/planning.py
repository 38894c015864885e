"""Planning cost against archive size: nightly windows over old archives, and whole-window season plans.

Archives are empty files with ASIM names in nested date folders (``nya4/5577/2010/20101207/...``),
4 stations, one frame every 10 minutes, written once under ``--root`` (reused by later runs).
Every figure is measured in this run, with the CPU model beside it:

1. **Nightly windows**: a one-day window (the archive's last day) over archives of 30, 300 and
   3,000 days, planned as ``aurora-batch nightly`` plans it; seconds (median of 3, warm), listing
   requests, files listed; the ratio 3,000-day / 30-day (goal ≤ 1.3).  The reference planner
   (everything listed and parsed name by name, as before) is timed on the 30- and 300-day ones.
2. **Object storage**: the same on SeaweedFS behind a proxy adding 30 ms to every request, for
   30 and 300 days (goal ≤ 1.3), with the HTTP requests the proxy saw.
3. **Where to plan**: a LocalCluster (2 workers) planning windows of 1 to 64 station-days in the
   driver and on the workers: where the switch belongs.
4. **Season plans**: whole-window plans of 0.3 M, 1 M and 3 M files on a LocalCluster (2 workers),
   each in a fresh driver process: files/s and the driver's peak RSS (goals: < 1 GB at 3 M,
   growth ≤ 100 bytes a file, ≥ 50,000 files/s).

Usage::

    python benchmarks/planning.py [--root /tmp/aurora-planning] [--parts 1,2,3,4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import cpu_model  # noqa: E402

STATIONS = ["NYA", "LYR", "KIR", "GILL"]
CLUSTER = {"n_workers": 2, "threads_per_worker": 1, "host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}
START = "2000-01-01"
CADENCE = "10min"


def _names(args) -> list[str]:
    import pandas as pd

    from aurora_batch.datasets.synth import asim_name

    station, first, last = args
    return [asim_name(station, t) for t in pd.date_range(first, last, freq=CADENCE, inclusive="left")]


def _touch_day_range(args) -> int:
    root, station, first, last = args
    made = set()
    names = _names((station, first, last))
    for rel in names:
        path = f"{root}/{rel}"
        folder = path.rsplit("/", 1)[0]
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
    return len(names)


def local_archive(root: Path, days: int) -> Path:
    """An archive of ``days`` days of empty files (written once; a marker file says it is complete)."""
    import pandas as pd

    path = root / f"archive-{days}d"
    marker = path / ".complete"
    if marker.exists():
        return path
    t0 = time.perf_counter()
    start = pd.Timestamp(START)
    chunks = [
        (str(path), s, start + pd.Timedelta(days=d), start + pd.Timedelta(days=min(days, d + 100)))
        for s in STATIONS
        for d in range(0, days, 100)
    ]
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        n = sum(pool.map(_touch_day_range, chunks))
    marker.touch()
    print(f"  wrote {n:,} empty files ({days} days) in {time.perf_counter() - t0:.0f} s")
    return path


LAYOUTS = {"auto": "auto (folders dated by their names)", "asim": "asim (declared folders, composed)"}


def _job(url: str, days_in_archive: int, window_days: int = 1, layout: str = "auto", **extra):
    import pandas as pd

    from aurora_batch.config import JobConfig

    end = pd.Timestamp(START) + pd.Timedelta(days=days_in_archive)
    return JobConfig(
        input=url,
        output="memory://planning-bench",
        stations=STATIONS,
        layout=layout,
        start=(end - pd.Timedelta(days=window_days)).to_pydatetime(),
        end=end.to_pydatetime(),
        **extra,
    )


def _median_time(fn, repeats: int = 7):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def nightly(root: Path, days_list=(30, 300, 3000)) -> None:
    from aurora_batch.plan.planner import reference_plan
    from aurora_batch.runner.planning import plan_run

    print(f"\n1. Nightly: a one-day window over older archives (local disk; {cpu_model()})")
    times: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
    reference = []
    for days in days_list:
        path = local_archive(root, days)
        for layout, label in LAYOUTS.items():
            job = _job(f"file://{path}", days, layout=layout)
            plan_run(job)  # warm: compiled patterns, ephemeris nodes
            seconds, plan = _median_time(lambda: plan_run(job))
            times[layout].append(seconds)
            print(
                f"  {days:5d} days ({days * 576:>9,} files), layout {label}: plan {seconds:6.3f} s, "
                f"{plan.requests:3d} listing requests, {plan.listed:5d} files listed, {plan.files} in the window"
            )
        if days <= 300:
            seconds, _ = _median_time(lambda: reference_plan(job), repeats=1)
            reference.append(seconds)
            print(f"  {days:5d} days: reference planner (everything listed and parsed, in the driver) {seconds:6.2f} s")
    for layout, label in LAYOUTS.items():
        print(
            f"  ratio {days_list[-1]}-day / {days_list[0]}-day, layout {label}: "
            f"{times[layout][-1] / times[layout][0]:.2f} (goal <= 1.3)"
        )
    if len(reference) > 1:
        print(f"  reference planner: {reference[1] / reference[0]:.1f} for {days_list[1]} / {days_list[0]} days")


def _count_s3_requests(job) -> list[str]:
    """A list that grows by the operation name of every S3 request the job's filesystem sends."""
    from aurora_batch.core.fs import filesystem

    fs, _ = filesystem(job.input, job.storage_options)
    sent: list[str] = []
    fs.s3.meta.events.register(
        "before-send.s3", lambda request, **kw: sent.append(kw.get("event_name", "?").rsplit(".", 1)[-1])
    )
    return sent


def _kinds(sent: list[str]) -> str:
    from collections import Counter

    return ", ".join(f"{k} {v / 7:.0f}" for k, v in Counter(sent).items())


def object_storage(root: Path, days_list=(30, 300), latency_s: float = 0.030) -> None:
    import pandas as pd
    from latency_proxy import LatencyProxy
    from s3server import SeaweedServer

    from aurora_batch.runner.planning import plan_run

    print(f"\n2. Nightly on SeaweedFS with {latency_s * 1000:.0f} ms added to every request ({cpu_model()})")
    server = SeaweedServer(Path(tempfile.mkdtemp(prefix="aurora-planning-s3-", dir=root))).start()
    try:
        fs = server.filesystem()
        results: dict[str, list[float]] = {}
        for days in days_list:
            bucket = f"archive-{days}d"
            fs.mkdir(bucket)
            t0 = time.perf_counter()
            start = pd.Timestamp(START)
            names = [n for s in STATIONS for n in _names((s, start, start + pd.Timedelta(days=days)))]
            for i in range(0, len(names), 5000):
                fs.pipe({f"{bucket}/{n}": b"" for n in names[i : i + 5000]})
            print(f"  put {len(names):,} empty objects in {time.perf_counter() - t0:.0f} s")
            proxy = LatencyProxy(server.port, latency_s=latency_s)
            options = {**server.storage_options, "client_kwargs": {"endpoint_url": proxy.endpoint}}
            for layout, label in LAYOUTS.items():
                job = _job(f"s3://{bucket}", days, layout=layout, storage_options=options)
                plan_run(job)
                sent = _count_s3_requests(job)
                seconds, plan = _median_time(lambda: plan_run(job))
                results.setdefault(layout, []).append(seconds)
                print(
                    f"  {days:5d} days, layout {label}: plan {seconds:6.3f} s, {plan.requests} listing requests "
                    f"({len(sent) / 7:.0f} S3 requests: {_kinds(sent)}), {plan.listed} files listed, "
                    f"{plan.files} in the window"
                )
            proxy.close()
        for layout, label in LAYOUTS.items():
            print(
                f"  ratio {days_list[-1]}-day / {days_list[0]}-day, layout {label}: "
                f"{results[layout][-1] / results[layout][0]:.2f} (goal <= 1.3)"
            )
    finally:
        server.stop(kill=True)


def where_to_plan(root: Path) -> None:
    from distributed import Client, LocalCluster

    import aurora_batch.runner.season  # noqa: F401  (what a real driver has imported)
    from aurora_batch.runner.planning import plan_run
    from aurora_batch.runner.worker import register_worker_setup

    print(f"\n3. Where to plan: the driver against 2 workers of a LocalCluster ({cpu_model()})")
    path = local_archive(root, 300)
    with LocalCluster(**CLUSTER) as cluster, Client(cluster) as client:
        register_worker_setup(client)
        for window in (1, 4, 16, 64, 256):
            times, tasks = {}, {}
            for where in ("driver", "workers", "auto"):
                job = _job(f"file://{path}", 300, window, planning={"where": where})
                plan_run(job, client)
                times[where], plan = _median_time(lambda: plan_run(job, client))
                tasks[where] = plan.tasks
            print(
                f"  {window:3d} days x 4 stations ({plan.files:>7,} files): driver {times['driver']:6.3f} s, "
                f"workers {times['workers']:6.3f} s ({tasks['workers']} tasks): ratio "
                f"{times['workers'] / times['driver']:.2f}; auto {times['auto']:6.3f} s ({plan.where})"
            )


def _peak_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited across exec), MB."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _season_child(path: str, days_in_archive: int, window_days: int) -> None:
    """One season plan in this (fresh) process; prints a JSON line."""
    from distributed import Client, LocalCluster

    from aurora_batch.runner.planning import plan_run
    from aurora_batch.runner.worker import register_worker_setup

    job = _job(f"file://{path}", days_in_archive, window_days)
    with LocalCluster(**CLUSTER) as cluster, Client(cluster) as client:
        register_worker_setup(client)  # as run_season does: glibc thresholds the nanny sets would slow planning 3x
        base = _peak_mb()
        result = {"base_mb": base}
        for run in ("cold", "warm"):  # cold: the file tree's metadata not yet in the page cache (disk-bound)
            t0 = time.perf_counter()
            plan = plan_run(job, client)
            result[run] = time.perf_counter() - t0
            result.update(
                files=plan.files,
                tasks=plan.tasks,
                where=plan.where,
                partitions=len(plan.counts),
                requests=plan.requests,
                peak_mb=max(result.get("peak_mb", 0), _peak_mb()),
            )
            del plan  # its rows leave the workers
        print(json.dumps(result))


def season_plans(root: Path, sizes=(300_000, 1_000_000, 3_000_000)) -> None:
    print(f"\n4. Season plans on a LocalCluster (2 workers), each in a fresh driver process ({cpu_model()})")
    days_in_archive = max(sizes) // (len(STATIONS) * 144) + 1
    path = local_archive(root, days_in_archive)
    out = []
    for n in sizes:
        window = n // (len(STATIONS) * 144) + 1
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(path), str(days_in_archive), str(window)],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        out.append(r)
        print(
            f"  {r['files']:>9,} files ({window} days, {r['partitions']:,} partitions, {r['tasks']} tasks): "
            f"{r['cold']:6.1f} s cold ({r['files'] / r['cold']:>8,.0f} files/s), {r['warm']:6.1f} s warm "
            f"({r['files'] / r['warm']:>8,.0f} files/s); driver peak {r['peak_mb']:.0f} MB "
            f"({r['base_mb']:.0f} MB before planning)"
        )
    a, b = out[0], out[-1]
    growth = (b["peak_mb"] - a["peak_mb"]) * 2**20 / (b["files"] - a["files"])
    print(
        f"  driver growth {growth:.1f} bytes a file (goal <= 100); peak at {b['files']:,} files "
        f"{b['peak_mb']:.0f} MB (goal < 1024); {b['files'] / b['cold']:,.0f} files/s cold, "
        f"{b['files'] / b['warm']:,.0f} warm (goal >= 50,000); "
        f"{(b['peak_mb'] - b['base_mb']) * 1024 / b['partitions']:.1f} KB a partition"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _season_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--root",
        default=os.path.join(tempfile.gettempdir(), "aurora-planning"),
        help="where the archives are written (and reused)",
    )
    ap.add_argument("--parts", default="1,2,3,4", help="which parts to run")
    ap.add_argument("--nightly-days", default="30,300,3000")
    ap.add_argument("--s3-days", default="30,300")
    ap.add_argument("--season-files", default="300000,1000000,3000000")
    args = ap.parse_args()
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    parts = set(args.parts.split(","))
    print(f"aurora-batch planning benchmark on {cpu_model()}, {os.cpu_count()} cores")
    if "1" in parts:
        nightly(root, [int(d) for d in args.nightly_days.split(",")])
    if "2" in parts:
        object_storage(root, [int(d) for d in args.s3_days.split(",")])
    if "3" in parts:
        where_to_plan(root)
    if "4" in parts:
        season_plans(root, [int(n) for n in args.season_files.split(",")])


if __name__ == "__main__":
    main()
