"""Instrument readers on real files and on files written here in the exact formats, quirks included."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aurora_batch.instruments.readers import (
    ReaderError,
    read_cl51_netcdf,
    read_iaga2002,
    read_image_column,
    read_many,
    read_pangaea_ceilometer,
)

DATA = Path(__file__).parent / "data"


def test_iaga2002_real_files():
    day = read_iaga2002(f"file://{DATA / 'bou20141101vmin.min'}")  # CRLF line ends
    assert len(day) == 1440 and list(day.columns) == ["time", "station", "h", "d", "z", "f"]
    assert day["time"].iloc[0] == pd.Timestamp("2014-11-01") and day["time"].is_monotonic_increasing
    assert day.attrs["units"]["h"] == "nT" and day.attrs["units"]["d"] == "arcmin"
    hen = read_iaga2002(f"file://{DATA / 'BOU202005vmin.min'}")  # HENULNUL: NUL columns dropped
    assert list(hen.columns) == ["time", "station", "h", "e"]
    sec = read_iaga2002(f"file://{DATA / 'BOU20200101vsec.sec'}")
    assert (sec["time"].diff().dropna() == pd.Timedelta("1s")).all()


IAGA_HEADER = """\
 Format                 IAGA-2002                                    |
 Source of Data         Synthetic test                               |
 Station Name           Ny Alesund                                   |
 IAGA CODE              NAL                                          |
 Geodetic Latitude      78.920                                       |
 Geodetic Longitude     11.950                                       |
 Elevation              7                                            |
 Reported               XYZF                                         |
 Sensor Orientation     XYZ                                          |
 Digital Sampling       1 second                                     |
 Data Interval Type     10-second                                    |
 Data Type              provisional                                  |
 # A comment record with a | in it                                   |
DATE       TIME         DOY     NALX      NALY      NALZ      NALF   |
"""


def test_iaga2002_sentinels_midnight_and_month_boundary(tmp_path):
    rows = [
        "2010-11-30 23:59:50.000 334     10485.30    812.40  52001.00  53000.00",
        "2010-12-01 00:00:00.000 335     99999.00    812.50  52001.10  88888.00",
        "2010-12-01 00:00:10.000 335     10485.50  99999.00  52001.20  53000.20",
    ]
    p = tmp_path / "nal20101130.sec"
    p.write_text(IAGA_HEADER + "\n".join(rows) + "\n")
    frame = read_iaga2002(f"file://{p}")
    assert frame["station"].unique().tolist() == ["NAL"]
    assert (
        frame["time"].tolist()
        == pd.to_datetime(["2010-11-30T23:59:50", "2010-12-01T00:00:00", "2010-12-01T00:00:10"]).tolist()
    )
    assert np.isnan(frame.loc[1, "x"]) and np.isnan(frame.loc[1, "f"]) and np.isnan(frame.loc[2, "y"])
    assert frame.loc[0, "x"] == 10485.30 and (frame[["x", "y", "z", "f"]].fillna(1) != 0).all().all()


@pytest.mark.parametrize(
    "text, where",
    [
        (IAGA_HEADER + "2010-12-01 00:00:00.000 335     10485.30    812.40\n", "line 15: expected 7 fields"),
        (IAGA_HEADER.replace(" IAGA CODE              NAL", " IAGA KODE              NAL"), "IAGA CODE"),
        ("garbage\n", "line 1: not an IAGA-2002 header"),
        (IAGA_HEADER, "no data rows"),
    ],
)
def test_iaga2002_bad_files(tmp_path, text, where):
    p = tmp_path / "bad.min"
    p.write_text(text)
    with pytest.raises(ReaderError, match=where) as err:
        read_iaga2002(f"file://{p}")
    assert "bad.min" in str(err.value)


def _image_column(rows):
    head = "YYYY MM DD HH MM SS" + " " * 11 + "".join(f"{s:>4} {c:<3}" for s in ("NAL", "LYR") for c in "XYZ")
    lines = [head]
    for stamp, values in rows:
        lines.append(
            f"{stamp[0]:4d}{stamp[1]:3d}{stamp[2]:3d}{stamp[3]:3d}{stamp[4]:3d}{stamp[5]:3d}"
            + " " * 11
            + "".join(f"{v:8.1f}" for v in values)
        )
    return "\n".join(lines) + "\n"


def test_image_column_text(tmp_path):
    text = _image_column(
        [
            ((2010, 12, 31, 23, 59, 50), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            ((2011, 1, 1, 0, 0, 0), [1.5, 99999.9, 3.5, 4.5, 5.5, 6.5]),
        ]
    )
    lines = text.splitlines()
    text = "\n".join(lines[:2] + ["---- -- -- -- -- --"] + lines[2:]) + "\n"  # a separator line
    p = tmp_path / "image.txt"
    p.write_text(text)
    frame = read_image_column(f"file://{p}")
    assert len(frame) == 4 and set(frame["station"]) == {"NAL", "LYR"}
    nal = frame[frame["station"] == "NAL"].reset_index(drop=True)
    assert nal["time"].tolist() == [pd.Timestamp("2010-12-31T23:59:50"), pd.Timestamp("2011-01-01")]
    assert nal.loc[0, ["x", "y", "z"]].tolist() == [1.0, 2.0, 3.0] and np.isnan(nal.loc[1, "y"])
    p.write_text(text.replace(" 1.5", " x.5"))
    with pytest.raises(ReaderError, match=r"image.txt, line \d+: cannot read"):
        read_image_column(f"file://{p}")


PANGAEA = """/* DATA DESCRIPTION:
Citation:\tMaturilli, M; Ebell, K (synthetic test export)
Parameter(s):\tDATE/TIME (Date/Time)
\tCloud base height (CBH) [m]
*/
Date/Time\tCBH [m]
2010-11-30T23:59\t850
2010-12-01T00:00\t32767
2010-12-01T00:01\t-1
2010-12-01T00:02\t1200
"""


def test_pangaea_sentinels_never_become_heights(tmp_path):
    p = tmp_path / "nya_cbh.tab"
    p.write_text(PANGAEA)
    frame = read_pangaea_ceilometer(f"file://{p}", station="NYA")
    assert frame["cbh"].tolist()[0] == 850 and frame["cbh"].tolist()[3] == 1200
    assert frame["cbh"].isna().tolist() == [False, True, True, False]
    assert frame["cloud_detected"].tolist() == [True, False, pd.NA, True]
    assert frame["time"].iloc[0] == pd.Timestamp("2010-11-30T23:59") and frame.attrs["units"]["cbh"] == "m"
    p.write_text(PANGAEA.replace("2010-12-01T00:02\t1200", "2010-12-01T00:02\tlow"))
    with pytest.raises(ReaderError, match=r"nya_cbh.tab, line 10: bad row"):
        read_pangaea_ceilometer(f"file://{p}", station="NYA")
    p.write_text(PANGAEA.replace("CBH [m]", "Height [m]"))
    with pytest.raises(ReaderError, match="CBH"):
        read_pangaea_ceilometer(f"file://{p}", station="NYA")


def test_cl51_netcdf(tmp_path):
    import xarray as xr

    t = (
        (
            pd.to_datetime(["2010-12-31T23:59:45", "2011-01-01T00:00:00", "2011-01-01T00:00:15"])
            - pd.Timestamp("1970-01-01")
        )
        .total_seconds()
        .to_numpy()
    )
    ds = xr.Dataset(
        {
            "cbh_1": ("time", [650.0, -1.0, 1200.0]),
            "cbh_2": ("time", [2400.0, -1.0, -1.0]),
            "cbh_3": ("time", [-1.0, -1.0, -1.0]),
            "detection_status": ("time", np.array([2, 0, 1], "i1")),
            "vertical_visibility": ("time", [-1.0, -1.0, -1.0]),
        },
        coords={"time": ("time", t)},
    )
    ds["time"].attrs["units"] = "seconds since 1970-01-01 00:00:00"
    p = tmp_path / "cl51.nc"
    ds.to_netcdf(p, engine="h5netcdf")
    frame = read_cl51_netcdf(f"file://{p}", station="LYR")
    assert frame["time"].iloc[1] == pd.Timestamp("2011-01-01")
    assert frame["cbh"].isna().tolist() == [False, True, False] and frame["cbh_2"].iloc[0] == 2400
    assert frame["cloud_detected"].tolist() == [True, False, True]
    p.write_bytes(b"not netcdf")
    with pytest.raises(ReaderError, match="cl51.nc: cannot read as netCDF"):
        read_cl51_netcdf(f"file://{p}", station="LYR")


def test_read_many_glob(tmp_path):
    for day, rows in (
        ("30", "2010-11-30 23:59:50.000 334     1.00    2.00  3.00  4.00"),
        ("01", "2010-12-01 00:00:00.000 335     5.00    6.00  7.00  8.00"),
    ):
        (tmp_path / f"nal201011{day}.sec").write_text(IAGA_HEADER + rows + "\n")
    frame = read_many(read_iaga2002, f"file://{tmp_path}/nal*.sec")
    assert frame["x"].tolist() == [1.0, 5.0]
    with pytest.raises(FileNotFoundError, match="no files match"):
        read_many(read_iaga2002, f"file://{tmp_path}/none*.sec")


@pytest.mark.parametrize("suffix, compress", [(".gz", "gzip"), (".bz2", "bz2")])
def test_compressed_instrument_files_read_like_plain_ones(tmp_path, suffix, compress):
    """INTERMAGNET distributes IAGA-2002 files gzip-compressed (``ott20181201vsec.sec.gz``)."""
    import bz2
    import gzip

    raw = (DATA / "bou20141101vmin.min").read_bytes()
    packed = tmp_path / f"bou20141101vmin.min{suffix}"
    packed.write_bytes(gzip.compress(raw) if compress == "gzip" else bz2.compress(raw))
    plain = read_iaga2002(f"file://{DATA / 'bou20141101vmin.min'}")
    pd.testing.assert_frame_equal(read_iaga2002(f"file://{packed}"), plain)


def test_join_takes_units_from_the_reader():
    from aurora_batch.month.join import _variables

    mag = read_iaga2002(f"file://{DATA / 'bou20141101vmin.min'}")
    joined = mag.assign(dt=pd.Timedelta(0))
    out = _variables(joined, "magnetometer", ["h", "d", "z"], 2000.0, mag.attrs["units"])
    assert out["mag_d"][1]["units"] == "arcmin" and out["mag_h"][1]["units"] == "nT"
