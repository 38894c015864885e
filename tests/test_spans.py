"""A month's join reads only the instrument files whose span meets the month (± tolerance): spans from IAGA-2002
and CL51 names, else from an index of first and last times read once per file version."""

import os

import pandas as pd
import pytest
from conftest import make_job

from aurora_batch.datasets.synth import write_instruments
from aurora_batch.instruments import readers
from aurora_batch.instruments.spans import name_span
from aurora_batch.month.build import join_fingerprint
from aurora_batch.month.join import load_sources, month_sources


@pytest.mark.parametrize(
    "name,fmt,span",
    [
        ("bou20141101vmin.min", "iaga2002", ("2014-11-01", "2014-11-02")),
        ("BOU20200101vsec.sec.gz", "iaga2002", ("2020-01-01", "2020-01-02")),
        ("BOU202005vmin.min", "iaga2002", ("2020-05-01", "2020-06-01")),
        ("abk2019dhor.hor", "iaga2002", ("2019-01-01", "2020-01-01")),
        ("20101231_nya_cl51.nc", "cl51", ("2010-12-31", "2011-01-01")),
        ("nya_cbh.tab", "pangaea", None),
        ("notes20101201.txt", "iaga2002", None),
        ("cl51_20101201_20101202.nc", "cl51", None),  # two dates: not a day's file
    ],
)
def test_names_that_date_their_files(name, fmt, span):
    got = name_span(f"file:///x/{name}", fmt)
    assert got == (tuple(pd.Timestamp(t) for t in span) if span else None)


@pytest.fixture
def archive(tmp_path):
    """Daily IAGA-2002 magnetometer files from 1 November to 31 January, and ceilometer files (undated names)
    of November, of December and of January."""
    inst = f"file://{tmp_path}/inst"
    for month, start, end in (
        ("11", "2010-11-01", "2010-12-01"),
        ("12", "2010-12-01", "2011-01-01"),
        ("01", "2011-01-01", "2011-02-01"),
    ):
        times = pd.date_range(start, end, freq="1h", inclusive="left")
        write_instruments(f"{inst}/{month}", pd.DataFrame({"station": "NYA", "time": times, "label": "cloudy"}))
    join = {
        "ceilometer": [
            {"url": f"{inst}/*/ceilometer/*.tab", "format": "pangaea", "stations": {"NYA": "NYA"}, "tolerance": "5min"}
        ],
        "magnetometer": [
            {
                "url": f"{inst}/*/magnetometer/*.min",
                "format": "iaga2002",
                "stations": {"NYA": "NAL"},
                "tolerance": "60s",
            }
        ],
    }
    return make_job("file:///in", f"file://{tmp_path}/out", start="2010-12-01", end="2011-01-01", join=join)


def test_a_month_reads_only_its_instrument_files(archive, tmp_path, monkeypatch):
    reads = []
    for table in (readers.CEILOMETER_READERS, readers.MAGNETOMETER_READERS):
        for name, reader in list(table.items()):
            monkeypatch.setitem(table, name, lambda url, *a, _r=reader, **k: reads.append(url) or _r(url, *a, **k))
    sources = {s.kind: s for s in month_sources(archive, "2010-12")}
    mag = sorted(f.url.rsplit("/", 1)[-1] for f in sources["magnetometer"].files)
    days = [f"nal201012{d:02d}vmin.min" for d in range(1, 32)]
    assert mag == ["nal20101130vmin.min", *days, "nal20110101vmin.min"]  # the tolerance reaches into both
    ceil = [f.url.split("/inst/")[1] for f in sources["ceilometer"].files]
    assert ceil == ["01/ceilometer/nya_cbh.tab", "11/ceilometer/nya_cbh.tab", "12/ceilometer/nya_cbh.tab"]
    assert sorted(r.split("/inst/")[1] for r in reads) == sorted(ceil)  # undated names: read once for the index
    assert os.path.exists(tmp_path / "out" / "_instruments" / "spans.parquet")

    # The index knows them now: another month reads no file to find its spans, and skips the ones it does not need.
    reads.clear()
    november = {s.kind: s for s in month_sources(archive, "2010-11")}
    assert reads == [] and len(november["magnetometer"].files) == 31  # 1-30 November and 1 December
    assert [f.url.split("/inst/")[1] for f in november["ceilometer"].files] == [
        "11/ceilometer/nya_cbh.tab",
        "12/ceilometer/nya_cbh.tab",
    ]
    loaded = {kind: frame for kind, _, frame in load_sources(list(november.values()))}
    assert loaded["magnetometer"]["time"].min() == pd.Timestamp("2010-11-01")
    assert loaded["magnetometer"]["time"].max() == pd.Timestamp("2010-12-01T23:59")
    assert set(loaded["magnetometer"]["station"]) == {"NYA"}

    # A file of another month changes: December's join inputs do not (its month is not re-joined); November's do.
    december, november_fp = join_fingerprint(archive, "2010-12"), join_fingerprint(archive, "2010-11")
    path = tmp_path / "inst" / "11" / "magnetometer" / "nal20101115vmin.min"
    path.write_text(path.read_text().replace("10400", "10401", 1))
    assert join_fingerprint(archive, "2010-12") == december and join_fingerprint(archive, "2010-11") != november_fp
    # A changed undated file is read again for its span (its size or modification time differs).
    reads.clear()
    ceil_path = tmp_path / "inst" / "01" / "ceilometer" / "nya_cbh.tab"
    ceil_path.write_text(ceil_path.read_text() + "2011-02-03T00:00\t500\n")
    month_sources(archive, "2010-12")
    assert [r.split("/inst/")[1] for r in reads] == ["01/ceilometer/nya_cbh.tab"]


def test_a_month_with_no_instrument_file_gets_the_columns_without_rows(archive):
    empty = archive.model_copy(update={"start": pd.Timestamp("2011-05-01"), "end": pd.Timestamp("2011-06-01")})
    loaded = {kind: frame for kind, _, frame in load_sources(month_sources(empty, "2011-05"))}
    assert loaded["magnetometer"].empty and {"time", "station", "x"} <= set(loaded["magnetometer"].columns)
    assert loaded["ceilometer"].empty and "cbh" in loaded["ceilometer"]
