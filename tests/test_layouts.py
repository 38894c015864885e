"""Archive layouts: THEMIS multi-frame PGM, Kiruna-style JPEG, and a user pattern from the job spec."""

import datetime as dt
import io

import fsspec
import numpy as np
import pandas as pd
import pytest
from conftest import make_job
from PIL import Image

from aurora_batch.config import JobSpecError
from aurora_batch.datasets.synth import render_frame
from aurora_batch.formats.decode import ImageError, read_pgm_frames, write_pgm_frames
from aurora_batch.formats.files import read_file
from aurora_batch.formats.names import FORMATS, Format, parse_name
from aurora_batch.runner.season import run_season
from aurora_batch.store.ledger import read_catalog


def _themis_frames(start, n=20):
    rng = np.random.default_rng(0)
    return [(start + dt.timedelta(seconds=3 * i), render_frame("arc", pd.Timestamp(start), rng)) for i in range(n)]


def test_pgm_reader_roundtrip_and_times():
    frames = _themis_frames(dt.datetime(2008, 3, 5, 6, 0, 0, 21000), n=4)
    for comp in ("", "gz", "bz2"):
        name = "20080305_0600_gill_themis19_full.pgm" + (f".{comp}" if comp else "")
        out = read_file(write_pgm_frames(frames, "gill", comp), name, FORMATS["themis"])
        assert out.times == [t for t, _ in frames]
        np.testing.assert_array_equal(out.images[2], frames[2][1])


def test_pgm_8bit_comment_between_tokens_and_no_time():
    raw = b"P5\n# just a note\n3 # width\n2\n255\n" + bytes(range(6))
    ((t, img),) = read_pgm_frames(raw, "x.pgm")
    assert t is None and img.tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize(
    "data, why",
    [
        (b"", "empty file"),
        (b"P6\n2 2\n255\n" + bytes(12), "magic"),
        (write_pgm_frames(_themis_frames(dt.datetime(2008, 3, 5), 2), "gill")[:-100], "frame 1 is truncated"),
        (b"P5\n2 x\n255\n", "bad header"),
    ],
)
def test_pgm_errors_name_the_problem(data, why):
    with pytest.raises(ImageError, match=why):
        read_pgm_frames(data, "20080305_0600_gill_themis19_full.pgm")


def test_layout_names():
    p = parse_name("20080305_0600_gill_themis19_full.pgm.gz", FORMATS["themis"])
    assert (p.station, p.time, p.wavelength) == ("GILL", dt.datetime(2008, 3, 5, 6, 0), None)
    p = parse_name("KIR_20101201_221506.jpg", FORMATS["kiruna"])
    assert (p.station, p.time) == ("KIR", dt.datetime(2010, 12, 1, 22, 15, 6))
    with pytest.raises(ValueError, match="needs the fields"):
        Format("bad", "{station}.png")


@pytest.mark.slow
def test_themis_season_stores_every_frame():
    fs = fsspec.filesystem("memory")
    root = "/themis-season/archive"
    minutes = pd.date_range("2008-01-10T06:00", periods=4, freq="1min")  # deep night at Gillam
    for t in minutes:
        data = write_pgm_frames(_themis_frames(t.to_pydatetime(), n=5), "gill", "gz")
        fs.pipe_file(f"{root}/gill/{t:%Y%m%d_%H%M}_gill_themis19_full.pgm.gz", data)
    fs.pipe_file(f"{root}/gill/20080110_0610_gill_themis19_full.pgm.gz", b"\x1f\x8b broken")
    job = make_job(
        f"memory://{root}",
        "memory://themis-season/out",
        stations=["GILL"],
        layout="themis",
        start="2008-01-10",
        end="2008-01-11",
        filter={"moon_max_alt": None},
        cluster={"n_workers": 1},
    )
    summary = run_season(job, progress=False)
    cat = read_catalog(job.output)
    assert len(cat) == 5 and summary.kept == 4 and summary.images == 20
    assert cat.set_index("url")["frames"].sum() == 20
    bad = cat[cat["status"] == "unreadable_image"]
    assert len(bad) == 1 and "decompress" in bad["detail"].iloc[0]
    import xarray as xr

    ds = xr.open_zarr(summary.stores[0], group="GILL", chunks=None)
    assert ds.sizes["time"] == 20 and list(ds["frame"].to_numpy()[:5]) == [0, 1, 2, 3, 4]
    assert pd.Timestamp(ds["time"].to_numpy()[1]) == pd.Timestamp("2008-01-10T06:00:03")


@pytest.mark.slow
def test_kiruna_jpeg_and_custom_layout_from_spec(tmp_path):
    fs = fsspec.filesystem("memory")
    rng = np.random.default_rng(1)
    for t in pd.date_range("2010-12-20T20:00", periods=3, freq="1min"):
        grey = (render_frame("diffuse", t, rng) / 64).clip(0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(np.dstack([grey] * 3)).resize((720, 479)).save(buf, format="JPEG")
        fs.pipe_file(f"/kir-season/a/KIR_{t:%Y%m%d_%H%M%S}.jpg", buf.getvalue())
        fs.pipe_file(f"/kir-season/b/cam-KIR-{t:%Y%m%dT%H%M%S}.jpg", buf.getvalue())
    base = dict(
        stations=["KIR"], start="2010-12-20", end="2010-12-21", filter={"moon_max_alt": None}, cluster={"n_workers": 1}
    )
    job = make_job("memory://kir-season/a", "memory://kir-season/out-a", layout="kiruna", **base)
    assert run_season(job, progress=False).images == 3
    custom = {"name": "cam", "pattern": "cam-{station}-{time:%Y%m%dT%H%M%S}.jpg"}
    job = make_job("memory://kir-season/b", "memory://kir-season/out-b", layout=custom, **base)
    assert run_season(job, progress=False).images == 3
    with pytest.raises(JobSpecError, match="regular expression"):
        make_job("a", "b", layout={"pattern": "^(?P<station>x)$"})
    with pytest.raises(JobSpecError, match="needs the fields"):
        make_job("a", "b", layout={"pattern": "{station}.jpg"})
