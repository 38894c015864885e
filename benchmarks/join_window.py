"""What a month's join reads as the instrument archive grows: one month's sources found and loaded from archives
of 1 and N years of daily 1-minute IAGA-2002 files (one station), and a ceilometer file a month (undated names,
spans from the index), against reading the whole archive as joins did before.  Prints time, files read and peak
memory of each, with the CPU model.  Usage::

    python benchmarks/join_window.py [--years 1,4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc

import pandas as pd
from _common import cpu_model

from aurora_batch.config import JobConfig
from aurora_batch.datasets.synth import write_instruments
from aurora_batch.instruments.readers import read_iaga2002, read_many, read_pangaea_ceilometer
from aurora_batch.month.join import load_sources, month_sources


def _archive(root: str, years: int) -> None:
    for y in range(years):
        for m in range(1, 13):
            start = pd.Timestamp(f"{2010 + y}-{m:02d}-01")
            times = pd.date_range(start, start + pd.offsets.MonthBegin(1), freq="1h", inclusive="left")
            labels = pd.DataFrame({"station": "NYA", "time": times, "label": "cloudy"})
            write_instruments(f"{root}/{start:%Y%m}", labels, seed=m)


def _job(root: str) -> JobConfig:
    inst = f"file://{root}/inst"
    join = {
        "ceilometer": [{"url": f"{inst}/*/ceilometer/*.tab", "format": "pangaea", "stations": {"NYA": "NYA"}}],
        "magnetometer": [{"url": f"{inst}/*/magnetometer/*.min", "format": "iaga2002", "stations": {"NYA": "NAL"}}],
    }
    spec = {
        "input": "file:///in",
        "output": f"file://{root}/out",
        "stations": ["NYA"],
        "start": "2010-06-01",
        "end": "2010-07-01",
        "join": join,
    }
    return JobConfig.from_dict(spec)


def _measure(fn):
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out, seconds, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--years", default="1,4")
    args = ap.parse_args()
    print(f"join window on {cpu_model()}: one station, daily 1-minute IAGA-2002 files, a ceilometer file a month")
    for years in map(int, args.years.split(",")):
        root = tempfile.mkdtemp(prefix="aurora-join-")
        _archive(f"file://{root}/inst", years)
        job = _job(root)
        month_sources(job, "2010-06")  # the index of undated files, once
        sources, t_find, _ = _measure(lambda: month_sources(job, "2010-06"))
        frames, t_load, peak = _measure(lambda: load_sources(sources))
        files = sum(len(s.files) for s in sources)
        rows = sum(len(f) for _, _, f in frames)
        _, t_all, peak_all = _measure(
            lambda: (
                read_many(read_iaga2002, f"file://{root}/inst/*/magnetometer/*.min"),
                read_many(read_pangaea_ceilometer, f"file://{root}/inst/*/ceilometer/*.tab", station="NYA"),
            )
        )
        print(
            f"  {years:2d} year(s): month window {files} files, {rows:,} rows: "
            f"find {t_find:.2f} s + load {t_load:.2f} s, "
            f"peak {peak:.0f} MiB; whole archive {t_all:.2f} s, peak {peak_all:.0f} MiB"
        )


if __name__ == "__main__":
    main()
