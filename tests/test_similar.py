"""Similarity search: each month group's index follows its commits, and a search gives what an exact search over
the stored features gives, for a stored frame or an image file featurised as the season did."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import make_job
from helpers import part_rows

from aurora_batch import cli, similar
from aurora_batch.core.keys import PartitionKey
from aurora_batch.month.build import build_month, common_attrs, join_fingerprint, month_inputs
from aurora_batch.products.results import open_station
from aurora_batch.runner.season import run_season
from aurora_batch.store.layout import staging_url
from aurora_batch.store.parts import write_part

DIM = 32
CENTRES = np.random.default_rng(42).random((8, DIM), dtype=np.float32) * 3


def _stage(job, name: str, times, seed: int) -> None:
    """Features around 8 centres, as a CNN's cluster around sky types."""
    key, rng = PartitionKey.parse(name), np.random.default_rng(seed)
    features = CENTRES[rng.integers(0, 8, len(times))] + rng.normal(0, 0.3, (len(times), DIM)).astype(np.float32)
    write_part(staging_url(job.output, key), part_rows(key.station, key.wavelength, times), {"features": features})


def _night(day: str, n: int = 200):
    return pd.date_range(pd.Timestamp(day) + pd.Timedelta(hours=20), periods=n, freq="3s")


def _build(job, month: str):
    return build_month(job, month_inputs(job, month), common_attrs(job), join_fingerprint(job, month))


def _exact(job, query, k, stations=("NYA", "LYR"), start=None, end=None) -> list[tuple[str, pd.Timestamp]]:
    """The top ``k`` by cosine over every stored frame: the reference."""
    rows = []
    for station in stations:
        ds = open_station(job.output, station, start, end)
        x = ds["features"].to_numpy()
        cos = x @ query / np.linalg.norm(x, axis=1) / np.linalg.norm(query)
        rows += [(station, pd.Timestamp(t), c) for t, c in zip(ds["time"].to_numpy(), cos)]
    return [(s, t) for s, t, _ in sorted(rows, key=lambda r: -r[2])[:k]]


def _hits(frame: pd.DataFrame) -> list[tuple[str, pd.Timestamp]]:
    return list(zip(frame["station"], frame["time"].dt.tz_localize(None)))


def test_searches_equal_an_exact_search_and_follow_the_month(tmp_path):
    job = make_job("file:///in", f"file://{tmp_path}/out", start="2010-12-01", end="2011-02-01")
    for i, day in enumerate(["2010-12-28", "2010-12-29", "2010-12-30"]):
        _stage(job, f"NYA_5577_{day.replace('-', '')}", _night(day), seed=i)
        _stage(job, f"LYR_5577_{day.replace('-', '')}", _night(day, 80), seed=10 + i)
    _build(job, "2010-12")
    index_dir = tmp_path / "out" / "similarity" / "month=2010-12"
    assert sorted(p.name for p in index_dir.glob("NYA/t600/*")) == [
        "NYA_5577_20101228.npy",
        "NYA_5577_20101229.npy",
        "NYA_5577_20101230.npy",
        "_quantiser.faiss",
    ]

    t0 = pd.Timestamp("2010-12-29T20:01:00")
    query = open_station(job.output, "NYA", t0, t0 + pd.Timedelta("1s"))["features"].to_numpy()[0]
    hits = similar(job.output, ("NYA", t0), k=15)
    assert list(hits.columns) == ["station", "time", "url", "frame", "similarity"]
    assert _hits(hits)[0] == ("NYA", t0) and hits["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-6)
    assert _hits(hits) == _exact(job, query, 15) and hits["similarity"].is_monotonic_decreasing
    assert str(hits["time"].dt.tz) == "UTC" and hits["url"].str.startswith("file:///in/").all()
    lyr = similar(job.output, ("NYA", t0), k=5, stations=["lyr"], start="2010-12-30", end="2010-12-31")
    assert _hits(lyr) == _exact(job, query, 5, ["LYR"], "2010-12-30", "2010-12-31")
    filtered = similar(job.output, ("NYA", t0), k=5, where="station = 'LYR' AND time >= '2010-12-30'")
    assert _hits(filtered) == _hits(lyr)  # the same frames, chosen by the label table

    # A nightly appends the 31st: it writes the 31st's index file, and no other.
    def written() -> dict[str, int]:
        return {str(p.relative_to(index_dir)): p.stat().st_mtime_ns for p in index_dir.rglob("*.npy")}

    before = written()
    _stage(job, "NYA_5577_20101231", _night("2010-12-31", 120), seed=3)
    _build(job, "2010-12")
    after = written()
    assert {p for p in after if after[p] != before.get(p)} == {"NYA/t600/NYA_5577_20101231.npy"}
    record = json.loads((index_dir / "_written.json").read_text())["groups"]["NYA"]
    assert record["trained"] == 600 and len(record["parts"]) == 4
    t1 = pd.Timestamp("2010-12-31T20:02:00")
    assert _hits(similar(job.output, ("NYA", t1), k=1)) == [("NYA", t1)]
    # A late file for the 28th moves every NYA row after it: only the 28th is indexed again (ids are a part's
    # rows, shifted by where the part starts in the month when a search merges the parts).
    late = _night("2010-12-28").append(pd.DatetimeIndex([pd.Timestamp("2010-12-28T23:00")]))
    _stage(job, "NYA_5577_20101228", late, seed=0)
    _build(job, "2010-12")
    again = written()
    assert {p for p in again if again[p] != after[p]} == {"NYA/t600/NYA_5577_20101228.npy"}
    query = open_station(job.output, "NYA", t0, t0 + pd.Timedelta("1s"))["features"].to_numpy()[0]
    assert _hits(similar(job.output, ("NYA", t0), k=15)) == _exact(job, query, 15)
    # The index grown by these commits answers as one built whole from the same parts.
    whole = job.model_copy(update={"output": f"file://{tmp_path}/whole"})
    shutil.copytree(tmp_path / "out" / "_staging", tmp_path / "whole" / "_staging")
    _build(whole, "2010-12")
    for t in (t0, t1, pd.Timestamp("2010-12-28T23:00")):
        pd.testing.assert_frame_equal(similar(whole.output, ("NYA", t), k=10), similar(job.output, ("NYA", t), k=10))
    with pytest.raises(LookupError, match="no stored frame of NYA"):
        similar(job.output, ("NYA", "2010-12-29T12:00"))


def test_an_image_file_finds_itself_and_the_cli_draws_a_sheet(small_archive, tmp_path, dask_client, capsys):
    url, _ = small_archive
    job = make_job(url, f"file://{tmp_path}/out", filter={"sun_max_alt": 90, "moon_max_alt": None})
    run_season(job, client=dask_client, progress=False)
    nya = open_station(job.output, "NYA")
    image, t = str(nya["url"].values[5]), pd.Timestamp(nya["time"].values[5])
    hits = similar(job.output, image, k=3)  # featurised as the season did: the same features
    assert _hits(hits)[0] == ("NYA", t) and hits["similarity"].iloc[0] > 0.9999
    spec = tmp_path / "job.yaml"
    spec.write_text(f"input: {url}\noutput: {job.output}\nstations: [NYA, LYR]\nstart: 2010-12-01\nend: 2010-12-02\n")
    sheet = tmp_path / "hits.png"
    args = ["similar", str(spec), "--station", "nya", "--time", str(t), "-k", "4", "--sheet", str(sheet)]
    assert cli.main([*args, "--out", str(tmp_path / "hits.csv")]) == 0
    assert pd.read_csv(tmp_path / "hits.csv")["url"].iloc[0] == image
    assert sheet.stat().st_size > 10_000 and f"wrote {sheet}" in capsys.readouterr().out


def test_a_group_grown_fourfold_is_trained_again_and_a_stale_part_is_left_out(tmp_path, caplog):
    job = make_job("file:///in", f"file://{tmp_path}/out", start="2010-12-01", end="2011-01-01")
    _stage(job, "NYA_5577_20101201", _night("2010-12-01"), seed=1)
    _build(job, "2010-12")
    index_dir = tmp_path / "out" / "similarity" / "month=2010-12" / "NYA"
    assert [p.name for p in index_dir.iterdir()] == ["t200"]
    for i, day in enumerate(["02", "03", "04", "05"]):
        _stage(job, f"NYA_5577_201012{day}", _night(f"2010-12-{day}"), seed=2 + i)
    _build(job, "2010-12")
    assert [p.name for p in index_dir.iterdir()] == ["t1000"]  # 1,000 rows > 4 × 200: a new quantiser
    t = pd.Timestamp("2010-12-04T20:05:00")
    query = open_station(job.output, "NYA", t, t + pd.Timedelta("1s"))["features"].to_numpy()[0]
    assert _hits(similar(job.output, ("NYA", t), k=12)) == _exact(job, query, 12, ["NYA"])

    # The month republished with a part its index does not have (as after a commit killed before indexing):
    # searches use the parts indexed at the published version, and say what they left out.
    record = tmp_path / "out" / "similarity" / "month=2010-12" / "_written.json"
    kept = record.read_bytes()
    _stage(job, "NYA_5577_20101206", _night("2010-12-06"), seed=9)
    _build(job, "2010-12")
    record.write_bytes(kept)
    with caplog.at_level("WARNING"):
        hits = similar(job.output, ("NYA", "2010-12-06T20:00:00"), k=3)
    assert "1 of 6 parts not indexed" in caplog.text
    assert not (hits["time"] >= "2010-12-06").any() and len(hits) == 3
