"""The month build with joins, end to end: season with a head and a join → joined stores → re-join → report."""

import json
import os
import re
import time

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from browser import rendered_images
from conftest import make_job

from aurora_batch.core.stations import get_station
from aurora_batch.datasets.synth import write_archive, write_instruments
from aurora_batch.instruments.join import nearest
from aurora_batch.instruments.readers import read_iaga2002, read_many
from aurora_batch.products.keogram import night_of
from aurora_batch.products.report import make_report
from aurora_batch.runner.joins import run_join
from aurora_batch.runner.season import run_season

pytestmark = pytest.mark.slow


def test_join_and_report(tmp_path, synthetic_head, dask_client):
    archive = f"file://{tmp_path}/archive"
    labels = write_archive(archive, ["NYA", "LYR"], "2010-12-01", "2010-12-03", cadence="30min", seed=4)
    write_instruments(f"file://{tmp_path}/instruments", labels, seed=4)
    inst = f"file://{tmp_path}/instruments"
    join = {
        "ceilometer": [
            {
                "url": f"{inst}/ceilometer/nya_cbh.tab",
                "format": "pangaea",
                "stations": {"NYA": "NYA"},
                "tolerance": "5min",
            },
            {
                "url": f"{inst}/ceilometer/lyr_cbh.tab",
                "format": "pangaea",
                "stations": {"LYR": "LYR"},
                "tolerance": "5min",
            },
        ],
        "magnetometer": [
            {
                "url": f"{inst}/magnetometer/*.min",
                "format": "iaga2002",
                "stations": {"NYA": "NAL", "LYR": "LYR"},
                "tolerance": "60s",
            }
        ],
    }
    job = make_job(
        archive, f"file://{tmp_path}/out", end="2010-12-03", classify={"head": str(synthetic_head[0])}, join=join
    )
    summary = run_season(job, client=dask_client, progress=False)
    store = f"{tmp_path}/out/2010-12.zarr"
    nya = xr.open_zarr(store, group="NYA").load()  # joined by the season's month build itself
    for var in ("cbh", "cloud_detected", "ceilometer_cloudy", "cbh_dt", "mag_x", "mag_y", "mag_z", "mag_dt"):
        assert var in nya and nya[var].sizes == {"time": nya.sizes["time"]}
        assert nya[var].notnull().any() or var == "cbh"
    assert nya["mag_x"].attrs["units"] == "nT" and nya["cbh"].attrs["units"] == "m"
    assert nya["mag_dt"].notnull().all() and nya["cbh_dt"].notnull().all()  # every image has its partners
    # The joined values are the exact nearest magnetometer samples.
    mag = read_many(read_iaga2002, f"{inst}/magnetometer/nal*.min")
    ref = nearest(pd.DataFrame({"time": nya["time"].to_numpy(), "station": "NAL"}), mag, tolerance="60s")
    np.testing.assert_allclose(nya["mag_x"].to_numpy(), ref["x"].to_numpy(), equal_nan=True)
    # No cloud base is never a height: where the ceilometer saw no cloud, cbh is NaN.
    assert nya["cbh"].where(nya["cloud_detected"] == 0).isnull().all()

    # A re-join with unchanged instruments changes no byte; new instrument data rebuild the month, staged.
    def digest():
        return {p: p.read_bytes() for p in (tmp_path / "out" / "2010-12.zarr").rglob("*") if p.is_file()}

    before = digest()
    again = run_join(job)
    assert again.stores == [] and len(again.unchanged) == 1
    assert digest() == before
    ceilometer = tmp_path / "instruments" / "ceilometer" / "nya_cbh.tab"
    ceilometer.write_text(ceilometer.read_text().replace("\t", "\t", 1) + "\n")
    os.utime(ceilometer, ns=(time.time_ns(), time.time_ns() + 10**9))
    rejoined = run_join(job)
    assert len(rejoined.stores) == 1 and rejoined.images == summary.images
    assert rejoined.matched["magnetometer"] == rejoined.images == rejoined.matched["ceilometer"]
    rebuilt = xr.open_zarr(store, group="NYA").load()
    assert rebuilt.attrs.pop("join_fingerprint") != nya.attrs.pop("join_fingerprint")  # the new inputs are recorded
    xr.testing.assert_identical(rebuilt, nya)  # a trailing blank line changes no value
    assert not list(tmp_path.glob("out/*.building-*"))

    result = make_report(job, tmp_path / "report", max_points=100)  # fewer than a station's frames: subsampled
    page = result.html.read_text()
    assert set(result.embeddings) == {"NYA 2010-12", "LYR 2010-12"}
    assert len(re.findall(r"src='data:image/png;base64,", page)) == 6 + 2
    assert {"label_timeline", "find_similar"} <= set(result.figures)  # from the label table and the indexes
    nights = {
        f"{s} {n:%Y-%m-%d}"
        for s in ("NYA", "LYR")
        for n in night_of(
            pd.DatetimeIndex(xr.open_zarr(store, group=s)["time"].to_numpy()), get_station(s).longitude
        ).unique()
    }
    assert set(result.keograms) == nights and len(nights) == 6  # 2 stations x 3 nights (evenings of Nov 30-Dec 2)
    # What a reader sees: every figure, map and keogram decoded by a real browser, laid out on its page (the
    # keograms on one page per station, linked from the report).
    shown = {img["alt"]: img for img in rendered_images(result.html)}
    assert len(shown) == 6 + 2 and all(img["visible"] for img in shown.values()), shown
    for station in ("NYA", "LYR"):
        assert f"href='keograms_{station}.html'" in page
        shown.update({img["alt"]: img for img in rendered_images(result.html.parent / f"keograms_{station}.html")})
    assert len(shown) == 6 + 2 + 6 and all(img["visible"] for img in shown.values()), shown
    for key in result.embeddings:
        assert shown[f"embedding {key}"]["width"] >= 500
    for key, path in result.keograms.items():
        assert shown[f"keogram {key}"]["width"] >= 1000 and shown[f"keogram {key}"]["src"].endswith(path.name)
    assert "Built from SYNTHETIC demo data" in page  # the archive says so in its README.txt
    assert all(p.stat().st_size > 5000 for p in result.figures.values())
    assert result.numbers["cloud_roc_auc"] > 0.7  # the synthetic ceilometer follows the synthetic clouds
    assert "magnetometer_ridge_r2_mean" in result.numbers
    assert not result.notes
    # Written again over the same stores: no keogram is drawn again; a month that changed has its nights redrawn.
    drawn = {p: p.stat().st_mtime_ns for p in result.keograms.values()}
    again = make_report(job, tmp_path / "report", max_points=100)
    assert again.numbers == result.numbers and {p: p.stat().st_mtime_ns for p in again.keograms.values()} == drawn
    record = tmp_path / "report" / "keograms" / "_drawn.json"
    stale = sorted(drawn)[0]
    record.write_text(json.dumps({**json.loads(record.read_text()), stale.name: "an older month"}))
    make_report(job, tmp_path / "report", max_points=100)
    assert [p for p in drawn if p.stat().st_mtime_ns != drawn[p]] == [stale]


def _fabricated_season(root, months: int, nights: int = 2, frames: int = 10_000, dim: int = 16):
    """``months`` months of ``nights`` NYA nights of ``frames`` frames at 3 s, with a head's probabilities and
    keogram lines, published as commits publish them; returns the job that reads them."""
    from helpers import part_rows

    from aurora_batch.core.keys import PartitionKey
    from aurora_batch.model.heads import fit_head
    from aurora_batch.month.build import build_month, common_attrs, join_fingerprint, month_inputs
    from aurora_batch.store.layout import staging_url
    from aurora_batch.store.parts import write_part

    rng = np.random.default_rng(months)
    meta = {"backbone": "efficientnet-lite0", "recipe": "lite128", "weights": "shipped"}
    fit_head(rng.random((60, dim)), np.arange(60) % 6, "logistic", meta=meta).save(root / "head.npz")
    days = [pd.Timestamp(f"2011-{m + 1:02d}-{d + 1:02d}") for m in range(months) for d in range(nights)]
    job = make_job(
        "file:///in", f"file://{root}/out", stations=["NYA"], start=days[0], end=days[-1] + pd.Timedelta(days=1),
        classify={"head": str(root / "head.npz")},
    )  # fmt: skip
    for day in days:
        times = day + pd.Timedelta(hours=18) + pd.to_timedelta(np.arange(frames) * 3, unit="s")
        logits = rng.normal(0, 2, (frames, 6))
        arrays = {
            "features": rng.random((frames, dim), dtype=np.float32),
            "proba": (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32),
            "keogram_ns": rng.random((frames, 16), dtype=np.float32),
            "keogram_ew": rng.random((frames, 16), dtype=np.float32),
        }
        key = PartitionKey("NYA", None, day.date())
        write_part(staging_url(job.output, key), part_rows("NYA", None, times), arrays)
    for month in sorted({f"{d:%Y-%m}" for d in days}):
        build_month(job, month_inputs(job, month), common_attrs(job), join_fingerprint(job, month))
    return job


def test_report_memory_stays_flat_as_the_season_grows(tmp_path):
    """The report's peak of traced allocations over four months is that over one: no table of every row."""
    import tracemalloc

    import dask

    peaks, images = {}, {}
    for months in (1, 1, 4):  # the first warms imports and caches
        root = tmp_path / f"m{months}-{len(peaks)}"
        root.mkdir()
        job = _fabricated_season(root, months)
        # The local threaded scheduler, whatever other tests left: a distributed Client made the default by the
        # suite's in-process cluster would add its scheduler's bookkeeping of every task to the traced peak.
        with dask.config.set(scheduler="threads"):
            tracemalloc.start()
            result = make_report(job, root / "report", max_points=200, workers=1)
            peaks[months], images[months] = tracemalloc.get_traced_memory()[1], result.numbers["images"]
            tracemalloc.stop()
    assert images[4] == 4 * images[1] == 80_000
    assert peaks[4] < 1.25 * peaks[1], {m: f"{p / 2**20:.1f} MiB" for m, p in peaks.items()}
