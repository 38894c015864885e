import datetime as dt

import fsspec
import pandas as pd
import pytest

from aurora_batch.core.keys import Status
from aurora_batch.formats.names import FORMATS, parse_name
from aurora_batch.plan.catalog import build_catalog, list_images

ASIM = FORMATS["asim"]


def test_parse_asim_name():
    p = parse_name("nya4_20101207_233450_5577_cal.png", ASIM)
    assert p.station == "NYA"
    assert p.time == dt.datetime(2010, 12, 7, 23, 34, 50)
    assert p.wavelength == 5577


def test_parse_full_url_uses_basename():
    p = parse_name("s3://bucket/nya4/6300/2010/20101207/lyr5_20101207_000001_6300_cal.png", ASIM)
    assert (p.station, p.wavelength, p.time.second) == ("LYR", 6300, 1)


@pytest.mark.parametrize(
    "name, why",
    [
        ("nya_20101207_233450_5577_cal.png", "does not match"),  # no camera digit
        ("nya4_2010127_233450_5577_cal.png", "does not match"),  # short date
        ("nya4_20101307_233450_5577_cal.png", "does not match"),  # month 13
        ("nya4_20101207_256000_5577_cal.png", "does not match"),  # hour 25
        ("nya4_20101207_233450_5577_cal.jpg", "does not match"),  # wrong extension
        ("README.png", "does not match"),
    ],
)
def test_parse_bad_names(name, why):
    with pytest.raises(ValueError, match=why) as err:
        parse_name(name, ASIM)
    assert name in str(err.value)


def test_build_catalog_statuses_and_duplicates():
    urls = [
        "memory://a/nya4_20101201_000000_5577_cal.png",
        "memory://b/nya4_20101201_000000_5577_cal.png",  # same key again: duplicate
        "memory://a/nya4_20101201_000000_6300_cal.png",  # other wavelength: not a duplicate
        "memory://a/lyr4_20101201_010000_5577_cal.png",
        "memory://a/kir4_20101201_010000_5577_cal.png",  # station not in the job
        "memory://a/nya4_20101203_000000_5577_cal.png",  # outside the time range
        "memory://a/garbage.png",
    ]
    cat = build_catalog(urls, [ASIM], ["NYA", "LYR"], dt.datetime(2010, 12, 1), dt.datetime(2010, 12, 2))
    assert len(cat) == 5
    assert cat["url"].is_unique
    counts = cat["status"].value_counts().to_dict()
    assert counts == {Status.PENDING: 3, Status.DUPLICATE: 1, Status.UNPARSEABLE: 1}
    bad = cat[cat["status"] == Status.UNPARSEABLE].iloc[0]
    assert "garbage.png" in bad["detail"] and pd.isna(bad["time"])


def test_list_images_memory_filesystem():
    fs = fsspec.filesystem("memory")
    for name in [
        "x/nya4_20101201_000000_5577_cal.png",
        "x/deep/er/lyr4_20101201_000000_5577_cal.png",
        "x/notes.txt",
        "x/frame.JPG",
    ]:
        fs.pipe_file(f"/cat-test/{name}", b"123")
    listing = list_images("memory://cat-test/x")
    assert len(listing) == 3
    assert all(u.startswith("memory://") for u in listing["url"])
    assert set(listing["size"]) == {3}


def test_list_images_missing_root_names_it():
    with pytest.raises(FileNotFoundError, match="nowhere-at-all"):
        list_images("memory://nowhere-at-all")


def test_station_table_has_required_sites():
    from aurora_batch.core.stations import get_station, station_table

    nya, lyr = get_station("NYA"), get_station("lyr")
    assert (nya.latitude, nya.longitude) == (78.92, 11.93)
    assert (lyr.latitude, lyr.longitude) == (78.15, 16.04)
    table = station_table()
    assert {"THEMIS", "REGO"} <= set(table["network"])
    assert {"GILL", "FSMI", "ATHA", "RESU"} <= set(table.index)
    with pytest.raises(KeyError, match="XXXX"):
        get_station("XXXX")
