"""The report as a season grows: time and peak memory of ``make_report`` over 1 and N station-months at a THEMIS
cadence (3 s, ``--frames`` a night, ``--nights`` a month; a head's probabilities, a joined ceilometer and
magnetometer), this tree against another (``--baseline PATH``, e.g. a worktree of an earlier commit), each in
its own process.  Features are ``--dim`` floats (the statistics read them chunk by chunk whatever their width).
Prints the CPU model.  Usage::

    python benchmarks/report_scale.py [--months 1,3] [--nights 8] [--frames 14400] [--baseline ../old]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _stage(job, station: str, day, frames: int, dim: int, seed: int) -> None:
    import numpy as np
    import pandas as pd

    from aurora_batch.catalog import PartitionKey, Status  # old paths: both trees import them
    from aurora_batch.store import staging_url, write_part

    rng = np.random.default_rng(seed)
    times = pd.Timestamp(day) + pd.Timedelta(hours=18) + pd.to_timedelta(np.arange(frames) * 3, unit="s")
    rows = pd.DataFrame(
        {
            "url": [f"file:///themis/{t:%Y%m%d_%H%M%S}_{station.lower()}.pgm.gz" for t in times],
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
        }
    )
    features = np.maximum(rng.normal(0.0, 1.0, (frames, dim)).astype(np.float32), 0)
    logits = rng.normal(0, 2, (frames, 6))
    proba = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    keogram = (rng.random((frames, 2, 256), dtype=np.float32) * 4000).round()
    arrays = {"features": features, "proba": proba, "keogram_ns": keogram[:, 0], "keogram_ew": keogram[:, 1]}
    write_part(staging_url(job.output, PartitionKey(station, None, pd.Timestamp(day).date())), rows, arrays)


def build(months: int, nights: int, frames: int, dim: int) -> str:
    """Build ``months`` station-months under a new folder; returns the job spec (JSON) that reads them."""
    import numpy as np
    import pandas as pd

    from aurora_batch.classify import fit_head
    from aurora_batch.config import JobConfig
    from aurora_batch.month import build_month, common_attrs, join_fingerprint, month_inputs
    from aurora_batch.synth import write_instruments

    root = Path(tempfile.mkdtemp(prefix="aurora-report-"))
    head = fit_head(
        np.random.default_rng(0).random((60, dim)),
        np.arange(60) % 6,
        "logistic",
        meta={"backbone": "efficientnet-lite0", "recipe": "lite128", "weights": "shipped"},
    )
    head.save(root / "head.npz")
    days = [pd.Timestamp(f"2011-{m + 1:02d}-01") + pd.Timedelta(days=d) for m in range(months) for d in range(nights)]
    inst = f"file://{root}/inst"
    minutes = pd.date_range(days[0], days[-1] + pd.Timedelta(days=1), freq="30min")
    labels = pd.DataFrame({"station": "NYA", "time": minutes, "label": np.where(minutes.hour % 3, "cloudy", "arc")})
    write_instruments(inst, labels, seed=2)
    join = {
        "ceilometer": [{"url": f"{inst}/ceilometer/*.tab", "format": "pangaea", "stations": {"NYA": "NYA"}}],
        "magnetometer": [{"url": f"{inst}/magnetometer/*.min", "format": "iaga2002", "stations": {"NYA": "NAL"}}],
    }
    job = JobConfig.from_dict(
        {
            "input": "file:///in",
            "output": f"file://{root}/out",
            "stations": ["NYA"],
            "start": days[0],
            "end": days[-1] + pd.Timedelta(days=1),
            "join": join,
            "classify": {"head": str(root / "head.npz")},
        }
    )
    for i, day in enumerate(days):
        _stage(job, "NYA", day, frames, dim, seed=i)
    for month in sorted({f"{d:%Y-%m}" for d in days}):
        try:
            fp = join_fingerprint(job, month)
        except TypeError:  # before joins read only their month's files
            fp = join_fingerprint(job)
        build_month(job, month_inputs(job, month), common_attrs(job), fp)
    return job.model_dump_json()


def report(spec: str) -> dict:
    """Time the report of the job ``spec`` in this fresh process, with its peak memory."""
    from aurora_batch.config import JobConfig
    from aurora_batch.report import make_report

    job = JobConfig.model_validate_json(spec)
    t0 = time.perf_counter()
    result = make_report(job, job.output.removeprefix("file://") + "-report", max_points=1000)
    return {
        "seconds": time.perf_counter() - t0,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "images": result.numbers["images"],
        "auc": result.numbers.get("cloud_roc_auc"),
        "r2": result.numbers.get("magnetometer_ridge_r2_mean"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--months", default="1,3")
    ap.add_argument("--nights", type=int, default=8)
    ap.add_argument("--frames", type=int, default=14400)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--baseline", help="the tree (repository root) to compare with")
    ap.add_argument("--build", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--report", help=argparse.SUPPRESS)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    if args.build:
        print(build(args.build, args.nights, args.frames, args.dim))
        return
    if args.report:
        print(json.dumps(report(args.report)))
        return
    from _common import cpu_model

    print(f"report over station-months of {args.nights} nights x {args.frames} frames (3 s) on {cpu_model()}")
    trees = {"this tree": HERE.parent, **({"baseline": Path(args.baseline).resolve()} if args.baseline else {})}
    for months in map(int, args.months.split(",")):
        for name, tree in trees.items():
            env = {**os.environ, "PYTHONPATH": f"{tree}:{HERE}"}
            me = [sys.executable, str(HERE / "report_scale.py"), "--nights", str(args.nights)]
            sizes = ["--frames", str(args.frames), "--dim", str(args.dim)]
            built = subprocess.run([*me, *sizes, "--build", str(months)], env=env, capture_output=True, text=True)
            run = (
                built
                if built.returncode
                else subprocess.run(
                    [*me, "--report", built.stdout.strip().splitlines()[-1]], env=env, capture_output=True, text=True
                )
            )
            if run.returncode:
                print(f"  {months} month(s), {name}: failed\n{run.stderr[-2000:]}")
                continue
            r = json.loads(run.stdout.strip().splitlines()[-1])
            print(
                f"  {months} month(s), {name}: {r['images']:,.0f} images, report {r['seconds']:.1f} s, "
                f"peak {r['peak_mib']:.0f} MiB (AUC {r['auc']}, ridge R² {r['r2']})"
            )


if __name__ == "__main__":
    main()
