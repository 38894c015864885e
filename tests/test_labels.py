"""The label table follows its month (only the parts a commit changes are rewritten), and queries over it read
only the months and stations asked for and give what the stores hold."""

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_job
from helpers import part_rows

from aurora_batch import query
from aurora_batch.core.keys import PartitionKey
from aurora_batch.datasets.synth import write_instruments
from aurora_batch.model.heads import fit_head, load_head
from aurora_batch.month.build import build_month, common_attrs, join_fingerprint, month_inputs, update_labels
from aurora_batch.products.query import label_files
from aurora_batch.products.results import open_station
from aurora_batch.store.layout import staging_url
from aurora_batch.store.ledger import read_month_catalog
from aurora_batch.store.parts import write_part

DIM = 16
CLASSES = ("arc", "diffuse", "discrete", "cloudy", "moon", "clear")


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    rng = np.random.default_rng(0)
    fitted = fit_head(
        rng.random((120, DIM)),
        np.arange(120) % 6,
        "logistic",
        meta={"backbone": "efficientnet-lite0", "recipe": "lite128", "weights": "shipped"},
    )
    path = tmp_path_factory.mktemp("head") / "head.npz"
    fitted.save(path)
    return path, fitted


def _stage(job, head, name: str, times, seed: int) -> None:
    key, n = PartitionKey.parse(name), len(times)
    rows = part_rows(key.station, key.wavelength, times)
    features = np.random.default_rng(seed).random((n, DIM), dtype=np.float32)
    arrays = {"features": features, "proba": head.predict_proba(features).astype(np.float32)}
    write_part(staging_url(job.output, key), rows, arrays)


def _night(day: str, n: int = 240):
    """``n`` frames from 20:00 of ``day`` at a 3 s cadence (12 minutes: two 10-minute bins and part of a third)."""
    return pd.date_range(pd.Timestamp(day) + pd.Timedelta(hours=20), periods=n, freq="3s")


def _build(job, month: str):
    return build_month(
        job, month_inputs(job, month), common_attrs(job), join_fingerprint(job, month), command="nightly"
    )


def _mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.glob("labels*/**/*.parquet")}


@pytest.fixture
def labelled(tmp_path, head):
    inst = f"file://{tmp_path}/inst"
    truth = pd.DataFrame({"station": "NYA", "time": pd.date_range("2010-12-28", "2011-01-03", freq="30min")})
    write_instruments(inst, truth.assign(label=np.where(truth["time"].dt.hour % 2, "cloudy", "clear")), seed=2)
    join = {
        "ceilometer": [{"url": f"{inst}/ceilometer/nya*.tab", "format": "pangaea", "stations": {"NYA": "NYA"}}],
        "magnetometer": [{"url": f"{inst}/magnetometer/*.min", "format": "iaga2002", "stations": {"NYA": "NAL"}}],
    }
    job = make_job(
        "file:///in",
        f"file://{tmp_path}/out",
        start="2010-12-01",
        end="2011-02-01",
        classify={"head": str(head[0])},
        join=join,
    )
    for i, day in enumerate(["2010-12-28", "2010-12-29", "2010-12-30"]):
        _stage(job, head[1], f"NYA_5577_{day.replace('-', '')}", _night(day), seed=i)
    _stage(job, head[1], "LYR_5577_20101229", _night("2010-12-29", 100), seed=9)
    _stage(job, head[1], "NYA_5577_20110101", _night("2011-01-01"), seed=7)
    assert _build(job, "2010-12").labels == 3 * 240 + 100
    assert _build(job, "2011-01").labels == 240
    return job, tmp_path / "out"


def test_the_label_table_holds_what_the_month_holds_and_follows_its_commits(labelled, head):
    job, out = labelled
    table = query(job.output)
    assert len(table) == 4 * 240 + 100 and list(table.columns[:2]) == ["station", "time"]
    assert str(table["time"].dt.tz) == "UTC"
    for station in ("NYA", "LYR"):
        ds = open_station(job.output, station)
        rows = table[table["station"] == station]
        np.testing.assert_array_equal(rows["time"].dt.tz_localize(None).to_numpy(), ds["time"].values)
        np.testing.assert_array_equal(rows["label"].to_numpy(), ds["label"].values.astype(object))
        np.testing.assert_array_equal(rows["url"].to_numpy(), ds["url"].values.astype(object))
        np.testing.assert_allclose(rows["aurora_proba"], ds["aurora_proba"].values)
        for i, c in enumerate(CLASSES):
            np.testing.assert_allclose(rows[f"proba_{c}"], ds["proba"].values[:, i])
        np.testing.assert_allclose(rows["confidence"], ds["proba"].values.max(axis=1))
        if station == "NYA":  # joined: the ceilometer's cloud base where it saw one
            np.testing.assert_array_equal(rows["cbh"], ds["cbh"].values)
            np.testing.assert_array_equal(rows["cloud_detected"], ds["cloud_detected"].values)
            assert rows["cloud_detected"].notna().mean() > 0.9
    assert (table["head_sha256"] == load_head(head[0]).meta["sha256"]).all()

    summary = query(job.output, table="labels_10min")
    assert summary["frames"].sum() == len(table)
    first = table[(table["station"] == "NYA") & (table["time"] < pd.Timestamp("2010-12-28T20:10", tz="UTC"))]
    row = summary.iloc[((summary["station"] == "NYA") & (summary["time"] == first["time"].min())).argmax()]
    assert row["frames"] == len(first) == 200 and row["label"] == first["label"].value_counts().index[0]
    assert row["aurora_proba"] == pytest.approx(first["aurora_proba"].mean(), rel=1e-5)

    # A nightly appends the 31st: only its files are written; every other file is left as it was.
    before = _mtimes(out)
    _stage(job, head[1], "NYA_5577_20101231", _night("2010-12-31", 90), seed=3)
    assert _build(job, "2010-12").labels == 90
    after = _mtimes(out)
    new = {k for k in after if k not in before}
    assert new == {f"{t}/month=2010-12/station=NYA/NYA_5577_20101231.parquet" for t in ("labels", "labels_10min")}
    assert all(after[k] == v for k, v in before.items())

    # A late file for the 29th rewrites that day's files only (the month's rows after it move, the labels do not).
    before = after
    _stage(job, head[1], "NYA_5577_20101229", _night("2010-12-29", 241), seed=1)
    assert _build(job, "2010-12").labels == 241
    after = _mtimes(out)
    assert {k for k in after if after[k] != before[k]} == {
        f"{t}/month=2010-12/station=NYA/NYA_5577_20101229.parquet" for t in ("labels", "labels_10min")
    }
    assert len(query(job.output, stations=["NYA"], start="2010-12-01", end="2011-01-01")) == 240 + 241 + 240 + 90
    # The table grown by these commits equals one written whole from the same parts.
    whole = job.model_copy(update={"output": f"file://{out.parent}/whole"})
    shutil.copytree(out / "_staging", out.parent / "whole" / "_staging")
    _build(whole, "2010-12")
    for table in ("labels", "labels_10min"):
        december = {"table": table, "start": "2010-12-01", "end": "2011-01-01"}
        pd.testing.assert_frame_equal(query(whole.output, **december), query(job.output, **december))


def test_a_commit_killed_before_its_labels_is_caught_up(labelled):
    """Labels are written after the month is published and before its catalog: a run killed between the two
    leaves the month not idle, and the next commit writes every label file its record lacks."""
    job, out = labelled
    whole = query(job.output)
    for path in (out / "labels").glob("month=2010-12/**/*.parquet"):
        path.unlink()
    os.remove(out / "labels" / "month=2010-12" / "_written.json")
    os.remove(out / "catalog" / "2010-12.parquet")
    again = _build(job, "2010-12")
    assert again.rows_written == 0 and again.labels == 3 * 240 + 100
    pd.testing.assert_frame_equal(query(job.output), whole)
    assert len(read_month_catalog(job.output, "2010-12")) == 3 * 240 + 100
    assert update_labels(job, "2010-12") == 0  # up to date: nothing written


def test_queries_read_only_the_window_and_stations_and_match_pandas(labelled):
    job, _ = labelled
    everything = query(job.output)
    files = label_files(job.output, stations=["nya"], start="2011-01-01", end="2011-01-02")
    assert [f.rsplit("/", 3)[1:] for f in files] == [["month=2011-01", "station=NYA", "NYA_5577_20110101.parquet"]]
    assert len(label_files(job.output, start="2010-12-31T12:00", end="2011-01-01")) == 4  # December only
    where = "label IN ('arc', 'discrete') AND aurora_proba > 0.3 AND cloud_detected = 0"
    got = query(job.output, where, ["NYA"], "2010-12-29", "2011-01-02", columns=["label", "aurora_proba"])
    t = everything
    expected = t[
        t["label"].isin(["arc", "discrete"])
        & (t["aurora_proba"] > 0.3)
        & (t["cloud_detected"] == 0)
        & (t["station"] == "NYA")
        & (t["time"] >= pd.Timestamp("2010-12-29", tz="UTC"))
        & (t["time"] < pd.Timestamp("2011-01-02", tz="UTC"))
    ]
    assert len(expected) > 0
    pd.testing.assert_frame_equal(
        got, expected[["station", "time", "label", "aurora_proba"]].reset_index(drop=True), check_dtype=False
    )
    top = query(job.output, "label = 'arc'", order_by="confidence DESC, station, time", limit=3)
    arcs = t[t["label"] == "arc"].sort_values(["confidence", "station", "time"], ascending=[False, True, True])
    pd.testing.assert_frame_equal(top, arcs.head(3).reset_index(drop=True), check_dtype=False)
    with pytest.raises(ValueError, match='Referenced column "lable" not found'):
        query(job.output, "lable = 'arc'")
    with pytest.raises(FileNotFoundError, match="aurora-batch labels JOB.yaml"):
        query(f"{job.output}/nothing-here")


def test_query_and_labels_commands(labelled, capsys):
    from aurora_batch import cli

    job, out = labelled
    spec = out.parent / "job.yaml"
    spec.write_text(
        f"input: file:///in\noutput: {job.output}\nstations: [NYA, LYR]\nstart: 2010-12-01\nend: 2011-02-01\n"
    )
    where = "label = 'arc' AND aurora_proba > 0.2"
    assert cli.main(["query", str(spec), "--where", where, "--stations", "LYR", "--out", str(out / "hits.csv")]) == 0
    hits = pd.read_csv(out / "hits.csv")
    assert len(hits) == len(query(job.output, where, ["LYR"])) > 0 and set(hits["station"]) == {"LYR"}
    top = ["query", str(spec), "--where", where, "--order-by", "aurora_proba DESC", "--limit", "2"]
    assert cli.main([*top, "--out", str(out / "top.csv")]) == 0
    best = pd.read_csv(out / "top.csv")["aurora_proba"].to_numpy()
    assert len(best) == 2 and best[0] == pytest.approx(query(job.output, where)["aurora_proba"].max(), rel=1e-6)
    assert cli.main(["query", str(spec), "--table", "labels_10min", "--stations", "NYA", "--start", "2011-01-01"]) == 0
    assert "2011-01-01 20:10:00+00:00" in capsys.readouterr().out
    for path in (out / "labels").glob("month=2011-01/**/*.parquet"):
        path.unlink()
    assert cli.main(["labels", str(spec)]) == 0
    assert capsys.readouterr().out.splitlines() == ["2010-12: 0 rows written", "2011-01: 0 rows written"]
    os.remove(out / "labels" / "month=2011-01" / "_written.json")
    assert cli.main(["labels", str(spec)]) == 0  # a month without its record is written again
    assert "2011-01: 240 rows written" in capsys.readouterr().out
    assert len(query(job.output, start="2011-01-01")) == 240
