"""The format registry and its readers, on the real samples in tests/data, checked against independent readers."""

import datetime as dt
import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aurora_batch.core.keys import Status
from aurora_batch.formats.decode import ImageError, decode
from aurora_batch.formats.files import read_file
from aurora_batch.formats.names import FORMATS, Format, get_formats, match_name, parse_name
from aurora_batch.model.recipes import get_recipe
from aurora_batch.partition.sky import saturated_fraction, sky_problem

DATA = Path(__file__).parent / "data"
AUTO = get_formats(["auto"])
#: trimmed real samples (see tests/data/SOURCES.md): format, station, frames kept in the trimmed copy
REAL = {
    "20140310_0605_gill_themis19_full.pgm.gz": ("themis", "GILL", None, 3),
    "20220307_0601_gill_nir-216_8446.pgm.gz": ("trex_nir", "GILL", 8446, 3),
    "20220308_0601_gill_blue-814_full.pgm.gz": ("trex_blue", "GILL", 4861, 2),
    "20200508_060500_122643_gill_rgb-04_320ms_full.png": ("trex_rgb_png", "GILL", None, 1),
    "thg_l1_asf_gako_2011010617_v01.cdf": ("themis_cdf", "GAKO", None, 3),
}


@pytest.mark.parametrize("fmt", list(FORMATS.values()), ids=list(FORMATS))
def test_every_builtin_parses_its_example_and_composes_names(fmt: Format):
    p = match_name(fmt.example, AUTO)
    assert p.format == fmt.name  # auto picks this format, not an earlier one
    fields = parse_name(fmt.example, fmt)
    name = fmt.compose(
        fields.station,
        fields.time,
        camera=4,
        wavelength=fields.wavelength or 5577,
        version=1,
        exposure=320,
        imager="nascam",
        tag="x",
    )
    again = parse_name(name, fmt)
    assert (again.station, again.time) == (fields.station, fields.time)


@pytest.mark.parametrize("name", list(REAL))
def test_auto_reads_real_samples(name):
    fmt, station, wavelength, n = REAL[name]
    p = match_name(name, AUTO)
    assert (p.format, p.station, p.wavelength) == (fmt, station, wavelength)
    frames = read_file((DATA / name).read_bytes(), name, FORMATS[fmt])
    assert len(frames.images) == len(frames.times) == n
    assert all(img.dtype in (np.uint8, np.uint16) for img in frames.images)


def _official(name: str):
    """UCalgary's own reader (pyucalgarysrs, test-only) for a stream0 file: images flipped for display."""
    import pyucalgarysrs  # a test dependency: its absence fails the test rather than skipping it

    readers = pyucalgarysrs.PyUCalgarySRS().data.readers
    reader = {
        "themis": readers.read_themis,
        "trex_nir": readers.read_trex_nir,
        "trex_blue": readers.read_trex_blue,
        "trex_rgb_png": readers.read_trex_rgb,
    }[REAL[name][0]]
    data = reader(str(DATA / name), quiet=True)
    assert not data.problematic_files
    return data


@pytest.mark.parametrize("name", [n for n in REAL if not n.endswith(".cdf")])
def test_pixels_and_times_equal_the_official_readers(name):
    """Our frames are the file's rows as stored; UCalgary's readers flip them vertically for display."""
    ours = read_file((DATA / name).read_bytes(), name, FORMATS[REAL[name][0]])
    official = _official(name)
    assert official.data.shape[-1] == len(ours.images)
    for i, img in enumerate(ours.images):
        np.testing.assert_array_equal(img, np.flip(official.data[..., i], axis=0))
    times = [t if t is not None else parse_name(name, FORMATS[REAL[name][0]]).time for t in ours.times]
    assert times == list(official.timestamp)


def test_cdf_frames_equal_cdflib():
    import cdflib

    name = "thg_l1_asf_gako_2011010617_v01.cdf"
    ours = read_file((DATA / name).read_bytes(), name, FORMATS["themis_cdf"])
    cdf = cdflib.CDF(str(DATA / name))
    np.testing.assert_array_equal(np.stack(ours.images), cdf.varget("thg_asf_gako"))
    epochs = cdflib.cdfepoch.to_datetime(cdf.varget("thg_asf_gako_epoch"))
    assert [np.datetime64(t) for t in ours.times] == list(epochs)
    assert ours.times[0] == dt.datetime(2011, 1, 6, 17, 0, 0, 53000)


def test_cdf_records_inflate_with_libdeflate():
    """cdflib inflates a CDF's compressed records with the ``deflate`` package where it is installed (a
    dependency: 1.6× faster THEMIS CDF reads); the frames equal zlib's, record by record."""
    import gzip

    import cdflib.cdfread

    assert cdflib.cdfread.gzip_inflate.__module__.startswith("deflate")
    name = "thg_l1_asf_gako_2011010617_v01.cdf"
    fast = read_file((DATA / name).read_bytes(), name, FORMATS["themis_cdf"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cdflib.cdfread, "gzip_inflate", gzip.decompress)
        plain = read_file((DATA / name).read_bytes(), name, FORMATS["themis_cdf"])
    np.testing.assert_array_equal(np.stack(fast.images), np.stack(plain.images))


def test_stream0_states_its_site():
    name = "20220307_0601_gill_nir-216_8446.pgm.gz"
    assert read_file((DATA / name).read_bytes(), name).site == (56.376723, -94.643664)
    name = "20140310_0605_gill_themis19_full.pgm.gz"
    assert read_file((DATA / name).read_bytes(), name).site == (56.3539, -94.6557)  # "Geodetic latitude"


def test_oath_16bit_rgb_png_keeps_every_bit():
    """Pillow reads this real OATH PNG as 8-bit RGB (mean 13); OpenCV, an independent decoder, gives uint16."""
    import cv2

    data = (DATA / "oath_00001.png").read_bytes()
    ours = decode(data, "oath_00001.png")
    theirs = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)[..., ::-1]  # BGR -> RGB
    assert ours.dtype == np.uint16 and ours.shape == (256, 256, 3)
    np.testing.assert_array_equal(ours, theirs)
    assert ours.max() > 255


def test_trex_rgb_hdf5_frames_and_times(tmp_path):
    """The documented TREx RGB stream0 layout: data/images (H, W, 3, N) uint8, data/timestamp strings."""
    import h5py

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (48, 55, 3, 4), dtype=np.uint8)
    stamps = [f"2021-02-05 06:00:{3 * i:02d}.{i:06d} UTC".encode() for i in range(4)]
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f["data/images"] = images
        f["data/timestamp"] = np.array(stamps)
    name = "20210205_0600_gill_rgb-04_full.h5"
    assert match_name(name, AUTO).format == "trex_rgb_h5"
    frames = read_file(buf.getvalue(), name, FORMATS["trex_rgb_h5"])
    assert frames.times[3] == dt.datetime(2021, 2, 5, 6, 0, 9, 3)
    np.testing.assert_array_equal(frames.images[2], images[..., 2])
    with pytest.raises(ImageError, match=name):
        read_file(b"not hdf5 at all", name, FORMATS["trex_rgb_h5"])


def test_nascam_16bit_grey_png():
    import imagecodecs

    img = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16
    name = "20101205_221500_nya_nascam_5577_2000ms.png"
    p = match_name(name, AUTO)
    assert (p.format, p.station, p.wavelength) == ("nascam", "NYA", 5577)
    np.testing.assert_array_equal(read_file(imagecodecs.png_encode(img), name).images[0], img)


def test_not_sky_frames_are_named():
    rec = get_recipe("lite128")
    assert "constant" in sky_problem(np.zeros((256, 256), np.uint16), rec)
    nan = np.full((64, 64), np.nan, np.float32)
    assert "non-finite" in sky_problem(nan, rec)
    assert "smaller" in sky_problem(np.ones((1, 1), np.uint8), rec)
    assert "aspect" in sky_problem(np.arange(4000 * 40, dtype=np.uint16).reshape(4000, 40), rec)
    assert "smaller" in sky_problem(np.arange(4000 * 3, dtype=np.uint16).reshape(4000, 3), rec)
    assert "smaller" in sky_problem(np.arange(200 * 200, dtype=np.uint16).reshape(200, 200), get_recipe("kvammen"))
    assert sky_problem(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64), rec) is None


def test_float_tiff_full_of_nan_is_not_sky():
    import imagecodecs

    data = imagecodecs.tiff_encode(np.full((64, 64), np.nan, np.float32))
    img = decode(data, "x.tif")
    assert img.dtype == np.float32 and "non-finite" in sky_problem(img, get_recipe("lite128"))


def test_huge_frame_refused_from_its_header_before_decoding():
    """A 12000×12000 blank PNG: refused by features.max_pixels without allocating its 144 MB."""
    import tracemalloc

    import imagecodecs

    data = imagecodecs.png_encode(np.zeros((12000, 12000), np.uint8), level=1)
    tracemalloc.start()
    with pytest.raises(ImageError, match=r"12000×12000 pixels is more than the limit of 64000000"):
        read_file(data, "nya4_20101201_000000_5577_cal.png", FORMATS["asim"], max_pixels=64_000_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20e6


def test_saturated_fraction():
    img = np.zeros((10, 10), np.uint16)
    img[:2] = 65535
    assert saturated_fraction(img) == 0.2
    assert np.isnan(saturated_fraction(img.astype(np.float32)))
    assert saturated_fraction(np.full((4, 4), 255, np.uint8)) == 1.0


def test_catalog_keeps_one_row_per_file_with_frame_counts():
    from aurora_batch.core.keys import WHOLE_FILE, file_ledger

    rows = pd.DataFrame(
        {
            "url": ["a"] * 4 + ["b"] * 2 + ["c"],
            "status": [Status.KEPT, Status.SUN, Status.KEPT, Status.NOT_SKY, Status.SUN, Status.SUN, Status.UNREADABLE],
            "detail": ["", "Sun above -12.0 deg", "", "constant frame", "Sun above -12.0 deg", "Sun", "truncated"],
            "frame": [0, 1, 2, 3, 0, 1, WHOLE_FILE],
            "time": pd.date_range("2011-01-06", periods=7, freq="3s"),
        }
    )
    files = file_ledger(rows).set_index("url")
    assert files.loc["a", ["status", "frames", "frames_sun", "frames_not_sky"]].tolist() == [Status.KEPT, 2, 1, 1]
    assert files.loc["b", "status"] == Status.SUN and "all 2 frame(s)" in files.loc["b", "detail"]
    assert files.loc["c", ["status", "frames", "frames_sun"]].tolist() == [Status.UNREADABLE, 0, 0]


BURST_TIMES = ["060500_122643", "060500_455976", "060500_789310"]


def _burst_files(tmp_path):
    """A real TREx RGB frame (tests/data) under burst names: one PNG, and a minute's tar of three."""
    import tarfile

    png = (DATA / "20200508_060500_122643_gill_rgb-04_320ms_full.png").read_bytes()
    names = [f"20200508_{t}_gill_rgb-04_320ms_burst.png" for t in BURST_TIMES]
    single = tmp_path / names[0]
    single.write_bytes(png)
    bundle = tmp_path / "20200508_0605_gill_rgb-04_burst.png.tar"
    with tarfile.open(bundle, "w") as tar:
        for i, name in enumerate(names):
            (tmp_path / f"m{i}.png").write_bytes(png)
            tar.add(tmp_path / f"m{i}.png", arcname=name)
    return single, bundle


def test_trex_rgb_burst_frames_and_minute_tars_equal_the_official_reader(tmp_path):
    import pyucalgarysrs

    official = pyucalgarysrs.PyUCalgarySRS().data.readers.read_trex_rgb
    for path, fmt, frames in zip(_burst_files(tmp_path), ("trex_rgb_burst", "trex_rgb_burst_tar"), (1, 3)):
        assert match_name(path.name, get_formats(["auto"])).format == fmt
        ours = read_file(path.read_bytes(), path.name, FORMATS[fmt])
        theirs = official(str(path), quiet=True)
        assert not theirs.problematic_files and len(ours.images) == theirs.data.shape[-1] == frames
        for i, img in enumerate(ours.images):
            np.testing.assert_array_equal(img, np.flip(theirs.data[..., i], axis=0))
        times = [t or parse_name(path.name, FORMATS[fmt]).time for t in ours.times]
        assert (
            times
            == list(theirs.timestamp)
            == [dt.datetime.strptime(f"20200508_{t}", "%Y%m%d_%H%M%S_%f") for t in BURST_TIMES[:frames]]
        )


@pytest.mark.slow
def test_unsupported_products_are_recorded_by_name(tmp_path, dask_client):
    """THEMIS thumbnail CDFs and TREx RGB stream0 PGMs: a clear status, with station and date (was an anonymous
    unreadable_image); the real full-resolution CDF beside them is read as before."""
    from cdflib.cdfwrite import CDF
    from conftest import make_job

    from aurora_batch.runner.season import run_season
    from aurora_batch.store.ledger import read_catalog

    archive = tmp_path / "archive"
    archive.mkdir()
    thumbs = archive / "thg_l1_ast_gako_20110106_v01.cdf"
    w = CDF(str(thumbs), cdf_spec={"Majority": "row_major"})
    w.write_var(
        {
            "Variable": "thg_ast_gako",
            "Data_Type": CDF.CDF_UINT2,
            "Num_Elements": 1,
            "Rec_Vary": True,
            "Dim_Sizes": [32, 32],
        },
        var_attrs={},
        var_data=np.ones((4, 32, 32), np.uint16),
    )
    w.close()
    shutil.copy(DATA / "thg_l1_asf_gako_2011010617_v01.cdf", archive)
    (archive / "20110106_0600_gill_rgb-04_full.pgm.gz").write_bytes(b"not read")
    job = make_job(
        f"file://{archive}",
        f"file://{tmp_path}/out",
        stations=["GAKO", "GILL"],
        start="2011-01-06",
        end="2011-01-07",
        filter={"sun_max_alt": 90, "moon_max_alt": None},
    )
    summary = run_season(job, client=dask_client, progress=False)
    cat = read_catalog(job.output).set_index("url")
    row = cat.loc[f"file://{thumbs}"]
    assert (row["status"], row["station"], row["format"]) == ("unsupported_product", "GAKO", "themis_ast")
    assert row["time"] == pd.Timestamp("2011-01-06", tz="UTC") and "thumbnails" in row["detail"]
    pgm = cat.loc[f"file://{archive}/20110106_0600_gill_rgb-04_full.pgm.gz"]
    assert (pgm["status"], pgm["station"]) == ("unsupported_product", "GILL") and "stream0 PGM" in pgm["detail"]
    assert summary.kept == 1 and summary.dropped == {"unsupported_product": 2}
