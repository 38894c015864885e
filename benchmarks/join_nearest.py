"""Nearest-time join at season scale: 5 M image rows × 50 M magnetometer rows, 10 stations.

Runs ``aurora_batch.join.nearest`` on Dask DataFrames (threads, partitioned by 30 days; images
in arbitrary order -> windowed path, images time-indexed -> dask merge_asof path) and
a plain ``pandas.merge_asof(direction="nearest")`` of the same data, each in its own child
process so that its peak memory is its own, and checks they agree.  Both timings include
generating the synthetic data (the Dask graph generates it chunk by chunk).  Usage::

    python benchmarks/join_nearest.py [--left 5000000] [--right 50000000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import numpy as np
import pandas as pd

STATIONS = [f"S{i:02d}" for i in range(10)]
T0 = pd.Timestamp("2010-01-01")
CHUNK_DAYS = 30


def _span_days(n_right: int) -> int:
    return int(np.ceil(n_right / len(STATIONS) * 10 / 86400))  # 10-s magnetometer cadence


def right_chunk(k: int, n_right: int) -> pd.DataFrame:
    """Magnetometer rows of days [30k, 30k+30): every station at 10 s, sorted by time."""
    days = _span_days(n_right)
    start, stop = k * CHUNK_DAYS * 8640, min((k + 1) * CHUNK_DAYS, days) * 8640
    stop = min(stop, n_right // len(STATIONS))
    steps = np.arange(start, stop)
    t = np.repeat(T0.value + steps * 10_000_000_000, len(STATIONS))
    rng = np.random.default_rng(k)
    frame = pd.DataFrame(
        {
            "time": pd.to_datetime(t),
            "station": np.tile(STATIONS, len(steps)),
            "x": rng.normal(size=len(t)).astype(np.float32),
        }
    )
    return frame.set_index(pd.DatetimeIndex(frame["time"], name="time"))


def left_chunk(k: int, n_left: int, n_right: int) -> pd.DataFrame:
    days = _span_days(n_right)
    n_chunks = int(np.ceil(days / CHUNK_DAYS))
    n = n_left // n_chunks
    rng = np.random.default_rng(10_000 + k)
    lo = T0 + pd.Timedelta(days=k * CHUNK_DAYS)
    hi = min(T0 + pd.Timedelta(days=(k + 1) * CHUNK_DAYS), T0 + pd.Timedelta(days=days))
    t = lo.value + rng.integers(0, hi.value - lo.value, n)
    return pd.DataFrame({"time": pd.to_datetime(t), "station": rng.choice(STATIONS, n)})


def _n_chunks(n_right):
    return int(np.ceil(_span_days(n_right) / CHUNK_DAYS))


def _left_indexed(k, n_left, n_right):
    frame = left_chunk(k, n_left, n_right).sort_values("time")
    return frame.set_index(pd.DatetimeIndex(frame["time"], name="time"))


def run_dask(n_left, n_right, q, indexed=False):
    import dask
    import dask.dataframe as dd

    from aurora_batch.instruments.join import nearest

    k = list(range(_n_chunks(n_right)))
    divisions = [T0 + pd.Timedelta(days=i * CHUNK_DAYS) for i in k] + [
        T0 + pd.Timedelta(days=_span_days(n_right), hours=1)
    ]
    right = dd.from_map(right_chunk, k, n_right=n_right, divisions=divisions)
    if indexed:  # images sorted by time with known divisions: dask's merge_asof path
        left = dd.from_map(_left_indexed, k, n_left=n_left, n_right=n_right, divisions=divisions)
    else:  # images in arbitrary order: the windowed path
        left = dd.from_map(left_chunk, k, n_left=n_left, n_right=n_right)
    t0 = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=2):
        out = nearest(left, right, tolerance="60s")
        matched, checksum = dask.compute(out["x"].count(), out["x"].sum())
        matched, checksum = int(matched), float(checksum)
    q.put(
        (
            "dask merge_asof" if indexed else "dask windowed",
            time.perf_counter() - t0,
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            matched,
            checksum,
        )
    )


def run_pandas(n_left, n_right, q):
    t0 = time.perf_counter()  # like the Dask run, the timing includes making the data
    k = range(_n_chunks(n_right))
    right = pd.concat([right_chunk(i, n_right) for i in k]).reset_index(drop=True)
    left = pd.concat([left_chunk(i, n_left, n_right) for i in k], ignore_index=True)
    out = pd.merge_asof(
        left.sort_values("time"), right, on="time", by="station", tolerance=pd.Timedelta("60s"), direction="nearest"
    )
    q.put(
        (
            "pandas merge_asof",
            time.perf_counter() - t0,
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            int(out["x"].notna().sum()),
            float(out["x"].sum()),
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--left", type=int, default=5_000_000)
    ap.add_argument("--right", type=int, default=50_000_000)
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    results = []
    for fn, extra in ((run_dask, (False,)), (run_dask, (True,)), (run_pandas, ())):
        q = ctx.Queue()
        p = ctx.Process(target=fn, args=(args.left, args.right, q, *extra))
        p.start()
        results.append(q.get())
        p.join()
    n_left = args.left // _n_chunks(args.right) * _n_chunks(args.right)
    print(f"{n_left:,} image rows x {args.right:,} magnetometer rows, {len(STATIONS)} stations, tolerance 60 s")
    for name, seconds, rss_kb, matched, _ in results:
        print(
            f"  {name:18s} {seconds:7.1f} s  {n_left / seconds:12,.0f} rows/s  peak RSS {rss_kb / 1e6:5.2f} GB"
            f"  matched {matched:,}"
        )
    _, t_p, m_p, match_p, sum_p = results[-1]
    for name, t_d, m_d, match_d, sum_d in results[:-1]:
        assert match_d == match_p and abs(sum_d - sum_p) < 1e-3 * max(1.0, abs(sum_p)), f"{name} differs"
        print(f"  {name} / pandas: time {t_d / t_p:.2f}, peak memory {m_d / m_p:.2f} (results identical)")


if __name__ == "__main__":
    main()
