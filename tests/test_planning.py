"""Planning that costs what the window costs: pruned listing, array-at-a-time names, planning on the workers."""

import datetime as dt
import random
import string
import tracemalloc
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest
from conftest import make_job

from aurora_batch.core.keys import Status
from aurora_batch.datasets.synth import asim_name
from aurora_batch.formats.names import FORMATS, Format, NameParser, match_name
from aurora_batch.plan import planner as planning
from aurora_batch.plan.listing import FolderLayout, _shape_fields, _station_code, folder_time_span, walk
from aurora_batch.plan.planner import merge_partition_rows, reference_plan
from aurora_batch.runner.planning import plan_run, write_undated


def _touch(root: Path, rels) -> None:
    for rel in rels:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def _ucalgary(station: str, t: pd.Timestamp, kind: str = "themis19", suffix: str = ".gz") -> str:
    """``2014/03/10/gill_themis19/ut06/20140310_0601_gill_themis19_full.pgm.gz``, as UCalgary's stream0 tree."""
    s = station.lower()
    return f"{t:%Y/%m/%d}/{s}_{kind}/ut{t:%H}/{t:%Y%m%d_%H%M}_{s}_{kind}_full.pgm{suffix}"


# --- names --------------------------------------------------------------------------------------------

CUSTOM = [
    Format("dated", "{station}-{date:%Y%m%d}_{time:%H%M%S}.png"),
    Format("doy", "{station}_{time:%Y%j_%H%M}.jpg"),  # %j: not vectorised, goes name by name
    Format("wl", "{station}_{time:%Y%m%dT%H%M%S}_{wavelength}.png", default_wavelength=6300),
]


def _mutated(n: int, seed: int = 0) -> list[str]:
    """Real-format names with random edits: digits, letters, case, deletions, non-ASCII text."""
    rng = random.Random(seed)
    bases = [f.example for f in FORMATS.values()] + [
        "nya-20101207_233450.png",
        "kir_2010341_2215.jpg",
        "lyr_20101207T233450_5577.png",
        "lyr_20101207T233450_.png",
    ]
    out = []
    for _ in range(n):
        b = list(rng.choice(bases))
        for _ in range(rng.randint(0, 3)):
            i = rng.randrange(len(b))
            op = rng.random()
            if op < 0.4:
                b[i] = rng.choice(string.digits)
            elif op < 0.6:
                b[i] = rng.choice(string.ascii_letters + "_-. ")
            elif op < 0.7:
                b.insert(i, rng.choice(string.digits + "_"))
            elif op < 0.8:
                del b[i]
            elif op < 0.9:
                b[i] = b[i].upper()
            else:
                b[i] = rng.choice("é\t")
        out.append("s3://bucket/a/" + "".join(b))
    return out + [
        "nya4_20100431_000000_5577_cal.png",
        "nya4_20101207_235960_5577_cal.png",
        "NYA4_20101207_233450_5577_CAL.PNG.BZ2",
        "20200508_060500_-12345_gill_rgb-04_320ms_full.png",
        "20101205_221500_nya_nascam__2000ms.png",
        "KIR_20101201_221500_x.JPG",
        "x.png",
        "",
    ]


@pytest.mark.parametrize(
    "formats", [list(FORMATS.values()), CUSTOM + list(FORMATS.values())], ids=["built-in", "custom+built-in"]
)
def test_name_parser_equals_match_name(formats):
    names = _mutated(6000)
    got = NameParser(formats).parse(names)
    assert len(got) == len(names)
    parsed = 0
    for name, row in zip(names, got.itertuples()):
        try:
            ref = match_name(name, formats)
        except ValueError as err:
            assert row.format is None and row.detail == str(err), name
            continue
        parsed += 1
        wl = None if pd.isna(row.wavelength) else int(row.wavelength)
        assert (row.station, pd.Timestamp(row.time), wl, row.format) == (
            ref.station,
            pd.Timestamp(ref.time),
            ref.wavelength,
            ref.format,
        ), name
    assert 1000 < parsed < len(names)  # both outcomes are exercised


# --- folders ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, parent, expected",
    [
        ("2014", {}, {"Y": 2014}),
        ("20140310", {}, {"Y": 2014, "m": 3, "d": 10}),
        ("2014-03-10", {}, {"Y": 2014, "m": 3, "d": 10}),
        ("2014_03", {}, {"Y": 2014, "m": 3}),
        ("03", {"Y": 2014}, {"m": 3}),
        ("10", {"Y": 2014, "m": 3}, {"d": 10}),
        ("069", {"Y": 2014}, {"j": 69}),
        ("ut06", {"Y": 2014, "m": 3, "d": 10}, {"H": 6}),
        ("5577", {}, None),  # a wavelength, not a year
        ("13", {"Y": 2014}, None),  # no month 13
        ("31", {"Y": 2014, "m": 2}, None),
        ("20140230", {}, None),
        ("03", {}, None),  # a two-digit name says nothing without a year above it
    ],
)
def test_folder_shapes(name, parent, expected):
    assert _shape_fields(name, parent) == expected


def test_folder_station_codes_and_spans():
    assert [_station_code(n) for n in ("nya4", "gill_themis19", "KIR", "snapshots", "stream0", "2014")] == [
        "NYA",
        "GILL",
        "KIR",
        None,
        None,
        None,
    ]
    assert folder_time_span({"Y": 2010, "m": 12}) == (dt.datetime(2010, 12, 1), dt.datetime(2011, 1, 1))
    assert folder_time_span({"Y": 2012, "j": 60}) == (dt.datetime(2012, 2, 29), dt.datetime(2012, 3, 1))
    assert folder_time_span({"m": 3}) is None
    layout = FolderLayout.of(FORMATS["asim"].folders)
    assert layout.parse(0, "nya4") == {"station": "NYA"} and layout.parse(0, "backup") is None
    assert layout.parse(2, "5577") is None and layout.parse(3, "20101207") == {"Y": 2010, "m": 12, "d": 7}


def _asim_tree(root: Path, days: int, stations=("NYA", "LYR"), start="2010-11-01", cadence="1h") -> list[str]:
    times = pd.date_range(start, periods=days * pd.Timedelta("1D") // pd.Timedelta(cadence), freq=cadence)
    rels = [asim_name(s, t) for s in stations for t in times]
    _touch(root, rels)
    return rels


def _window(job, **starts):
    return planning.job_window(job, {k: pd.Timestamp(v) for k, v in starts.items()} or None)


def test_date_folder_walk_lists_only_the_window(tmp_path):
    """ASIM-style date folders, one day asked of 60: the days of the window and one day either side, per station."""
    _asim_tree(tmp_path, 60)
    _touch(tmp_path, ["broken/nya4_notadate.png", "README.png"])
    job = make_job(f"file://{tmp_path}", "memory://x", start="2010-12-10", end="2010-12-11", layout="kiruna")
    fs = fsspec.filesystem("file")
    exts = (".png",)
    out = walk(fs, str(tmp_path), _window(job), extensions=exts)
    days = {p.rsplit("/", 1)[-1] for p in out.subtrees}
    assert days == {"20101209", "20101210", "20101211"}
    assert {p.rsplit("/", 2)[-2] for p in out.subtrees} == {"2010"}
    # root, 2 stations, 2 wavelengths, 2 years, 6 days; and the undated folder
    assert out.calls == 1 + 2 + 2 + 2 + 6 + 1
    full = walk(fs, str(tmp_path), _window(job), extensions=exts, prune=False)
    assert full.calls == 1 and len(full.files) == 60 * 24 * 2 + 2
    in_window = {p for p, _ in full.files if "20101209" in p or "20101210" in p or "20101211" in p}
    assert {p for p, _ in out.files} == in_window | {f"{tmp_path}/broken/nya4_notadate.png", f"{tmp_path}/README.png"}
    # One station: the other station's folder is not entered.
    out = walk(
        fs,
        str(tmp_path),
        _window(make_job(f"file://{tmp_path}", "memory://x", stations=["LYR"], start="2010-12-10", end="2010-12-11")),
        extensions=exts,
    )
    assert all("/lyr4/" in p or "broken" in p or "README" in p for p, _ in out.files)


def test_ucalgary_walk_composes_across_a_year(tmp_path):
    """The stream0 tree, a window over a new year: composed day folders, exact (no margin), .gz and .bz2 alike."""
    times = pd.date_range("2010-12-01", "2011-01-31", freq="2h")
    _touch(tmp_path, [_ucalgary(s, t, suffix=".gz" if t.hour % 4 else ".bz2") for s in ("GILL", "FSMI") for t in times])
    job = make_job(
        f"file://{tmp_path}",
        "memory://x",
        stations=["GILL"],
        start="2010-12-31T18:00",
        end="2011-01-02T03:00",
        layout="themis",
    )
    settings = planning._Settings.of(job)
    assert settings.compose
    fs = fsspec.filesystem("file")
    out = walk(fs, str(tmp_path), _window(job), settings.layouts, settings.extensions, compose=True)
    # days 2010-12-31, 2011-01-01 and 2011-01-02 (whole days), listed day folder then the station's folder
    assert sorted(p[len(str(tmp_path)) + 1 :] for p in out.subtrees) == [
        "2010/12/31/gill_themis19",
        "2011/01/01/gill_themis19",
        "2011/01/02/gill_themis19",
    ]
    assert out.calls == 3 + 3
    assert len(out.files) == 3 * 12 and {p[-4:] for p, _ in out.files} == {".bz2", "m.gz"}
    # declared but not composed (layout auto): the same files, more requests
    auto = planning._Settings.of(make_job(f"file://{tmp_path}", "memory://x"))
    listed = walk(fs, str(tmp_path), _window(job), auto.layouts, auto.extensions)
    assert sorted(listed.files) == sorted(out.files) and listed.calls > out.calls


def test_composition_falls_back_to_listing(tmp_path):
    """A job that names the stream0 layout over a flat folder: nothing composed exists, so the root is listed."""
    times = pd.date_range("2011-01-01", periods=30, freq="1h")
    _touch(tmp_path, [_ucalgary("GILL", t).rsplit("/", 1)[-1] for t in times])
    job = make_job(
        f"file://{tmp_path}", "memory://x", stations=["GILL"], start="2011-01-01", end="2011-01-02", layout="themis"
    )
    settings = planning._Settings.of(job)
    out = walk(
        fsspec.filesystem("file"), str(tmp_path), _window(job), settings.layouts, settings.extensions, compose=True
    )
    assert len(out.files) == 30 and str(tmp_path) in out.direct


# --- plans ----------------------------------------------------------------------------------------------


def _mixed_tree(root: Path) -> None:
    """ASIM and stream0 trees, a flat folder, a backup copy (duplicates across folders), names that do not parse,
    other stations, out-of-window days, compressed names."""
    _asim_tree(root / "asim", 20, start="2010-12-01", cadence="2h")
    times = pd.date_range("2010-12-05", "2010-12-12", freq="3h")
    _touch(root / "stream0", [_ucalgary(s, t) for s in ("GILL", "FSMI") for t in times])
    _touch(root / "flat", [f"KIR_{t:%Y%m%d_%H%M%S}.jpg" for t in times])
    _touch(root / "backup", [asim_name("NYA", t) for t in pd.date_range("2010-12-07", periods=5, freq="2h")])
    _touch(root / "flat", ["notes.png", "nya4_2010_bad.png", "20101207_0100_gill_themis19_full.pgm.bz2"])
    _touch(root / "asim/nya4/5577/2010/20101208", ["nya4_20101208_999999_5577_cal.png"])


def _normalised(partitions: dict) -> pd.DataFrame:
    rows = pd.concat([merge_partition_rows(v if isinstance(v, list) else [v]) for _, v in sorted(partitions.items())])
    return rows.sort_values(["station", "wavelength", "time", "url"]).reset_index(drop=True)


def test_plans_on_workers_equal_the_driver_and_the_reference(tmp_path, dask_client, monkeypatch):
    _mixed_tree(tmp_path)
    job = make_job(
        f"file://{tmp_path}",
        f"file://{tmp_path}/out",
        stations=["NYA", "LYR", "GILL", "KIR"],
        start="2010-12-06",
        end="2010-12-09",
    )
    ref_catalog, ref_parts = reference_plan(job)
    expected = _normalised(ref_parts)
    assert (expected["status"] == Status.DUPLICATE).sum() == 5  # the backup copies (all inside the window)
    assert set(expected["station"]) == {"NYA", "LYR", "GILL", "KIR"}
    driver = plan_run(job)
    assert driver.where == "driver" and driver.files == len(expected)
    pd.testing.assert_frame_equal(_normalised(driver.rows), expected)
    # On the workers, with budgets so small that listing tasks hand folders on to further tasks.
    tiny = {"where": "workers", "task_max_requests": 3}
    workers = plan_run(job.model_copy(update={"planning": job.planning.model_copy(update=tiny)}), dask_client)
    assert workers.where == "workers" and workers.tasks > 4
    assert all(not isinstance(r, pd.DataFrame) for rows in workers.rows.values() for r in rows)  # futures only
    gathered = {
        k: dask_client.gather([dask_client.submit(planning.part_rows, p, k) for p in parts])
        for k, parts in workers.rows.items()
    }
    pd.testing.assert_frame_equal(_normalised(gathered), expected)
    assert workers.counts == driver.counts
    # Unparseable names: the same rows, found by the driver or gathered from the tasks.
    ref_bad = ref_catalog[ref_catalog["status"] == Status.UNPARSEABLE].sort_values("url")
    for undated in (
        pd.concat([r for r, _ in driver.undated_parts]),
        pd.concat([r for r, _ in dask_client.gather(workers.undated_parts)]),
    ):
        assert sorted(undated["url"]) == sorted(ref_bad["url"])
        assert set(undated["detail"]) == set(ref_bad["detail"])
    assert workers.unparseable == driver.unparseable == len(ref_bad) == 3


def test_undated_ledger_keeps_folders_a_run_did_not_list(tmp_path):
    from aurora_batch.store.ledger import read_month_catalog

    _asim_tree(tmp_path, 10, start="2010-12-01")
    _touch(tmp_path, ["nya4/5577/2010/20101202/nya4_bad_1.png", "nya4/5577/2010/20101208/nya4_bad_2.png"])
    season = make_job(f"file://{tmp_path}", f"file://{tmp_path}/out", start="2010-12-01", end="2010-12-11")
    write_undated(season, plan_run(season).undated_parts)
    assert len(read_month_catalog(season.output, "undated")) == 2
    (tmp_path / "nya4/5577/2010/20101208/nya4_bad_2.png").unlink()
    nightly = season.model_copy(update={"start": dt.datetime(2010, 12, 8), "end": dt.datetime(2010, 12, 9)})
    write_undated(nightly, plan_run(nightly).undated_parts)
    kept = read_month_catalog(season.output, "undated")
    assert list(kept["url"]) == [f"file://{tmp_path}/nya4/5577/2010/20101202/nya4_bad_1.png"]  # 20101208 was listed
    assert (kept["status"] == Status.UNPARSEABLE).all() and (kept["frames"] == 0).all()


def test_folders_that_misstate_their_dates_turn_pruning_off(tmp_path):
    """A season folder named by its first year (NYA/2010/ holds Nov 2010 to Feb 2011): the first run that lists
    it sees January files in a '2010' folder, plans again listing everything, and later runs list whole."""
    times = pd.date_range("2010-11-01", "2011-03-01", freq="6h", inclusive="left")
    _touch(tmp_path, [f"NYA/2010/{asim_name('NYA', t).rsplit('/', 1)[-1]}" for t in times])
    season = make_job(
        f"file://{tmp_path}", f"file://{tmp_path}/out", stations=["NYA"], start="2010-12-20", end="2011-01-20"
    )
    plan = plan_run(season)
    assert plan.files == 31 * 4 and plan.misdated and "folders are listed whole" in plan.warnings[0]
    assert "2011-01" in (tmp_path / "out" / "_planning.json").read_text()
    january = season.model_copy(update={"start": dt.datetime(2011, 1, 10), "end": dt.datetime(2011, 1, 11)})
    plan = plan_run(january)  # pruned, the '2010' folder would not even be entered
    assert plan.files == 4 and not plan.misdated and "delete" in plan.warnings[0]


def test_a_lagging_station_does_not_widen_the_others(tmp_path):
    """Per-station windows: a station whose watermark is a month old lists its month; the others their day."""
    _asim_tree(tmp_path, 45, start="2010-11-01")
    job = make_job(f"file://{tmp_path}", "memory://x", start="2010-11-01", end="2010-12-15")
    plan = plan_run(job, starts={"NYA": pd.Timestamp("2010-12-14T03:00"), "LYR": pd.Timestamp("2010-11-14T03:00")})
    days = {k.station: sorted(d.day.isoformat() for d in plan.counts if d.station == k.station) for k in plan.counts}
    assert days["NYA"] == ["2010-12-14"] and len(days["LYR"]) == 31
    assert plan.listed < 24 * (31 + 1 + 2 * 2 + 1)  # LYR's month and NYA's day, with a day either side


def _traced_peak(fn):
    tracemalloc.start()
    try:
        result = fn()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_driver_memory_stays_flat_as_the_archive_grows(tmp_path):
    """A one-day plan over 10 and 60 days of archive: the same requests, and the same driver memory (the
    listing reads sibling folder names, never the other days' files), unlike the reference planner's."""
    peaks, requests = [], []
    for days in (10, 60):
        root = tmp_path / f"a{days}"
        _asim_tree(root, days, cadence="10min", start="2010-09-01")
        job = make_job(f"file://{root}", "memory://x", start="2010-09-05", end="2010-09-06")
        plan_run(job)  # warm: compiled patterns, ephemeris
        peak, plan = _traced_peak(lambda: plan_run(job))
        peaks.append(peak)
        requests.append(plan.requests)
        assert plan.files == 2 * 144
    reference, _ = _traced_peak(lambda: reference_plan(job))
    assert requests[0] == requests[1]
    assert peaks[1] < peaks[0] + 2**20 and peaks[1] < reference / 20, (peaks, reference)


# --- whole runs -------------------------------------------------------------------------------------------


def _store_bytes(output: str, month: str) -> dict[str, bytes]:
    """Every object of a month store; the root's ``parts_digest`` and part versions (staged parts' modification
    times, which differ between outputs) left out."""
    import json

    root = Path(output.removeprefix("file://")) / f"{month}.zarr"
    out = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    meta = json.loads(out["zarr.json"])
    assert meta["attributes"].pop("parts_digest")
    meta["attributes"]["parts"] = sorted(meta["attributes"]["parts"])  # names, without their versions
    out["zarr.json"] = json.dumps(meta).encode()
    return out


def _themis_minute(t: pd.Timestamp, rng) -> bytes:
    from aurora_batch.datasets.synth import render_frame
    from aurora_batch.formats.decode import write_pgm_frames

    frames = [((t + pd.Timedelta(seconds=3 * i)).to_pydatetime(), render_frame("arc", t, rng)) for i in range(3)]
    return write_pgm_frames(frames, "gill", "gz")


def _nested_archive(root: Path, layout: str) -> dict:
    """40 days of empty files in nested folders, and real images on one night (2010-12-05): the date-folder
    (ASIM) layout for NYA and LYR, or UCalgary's stream0 layout for GILL (THEMIS PGM minutes)."""
    from aurora_batch.datasets.synth import write_archive

    days = pd.date_range("2010-11-15", "2010-12-25", freq="1D")
    if layout == "asim":
        _touch(
            root,
            [
                asim_name(s, d + pd.Timedelta(hours=h))
                for s in ("NYA", "LYR")
                for d in days
                if d.day != 5
                for h in range(0, 24, 3)
            ],
        )
        write_archive(f"file://{root}", ["NYA", "LYR"], "2010-12-05T18:00", "2010-12-06T06:00", cadence="1h", seed=4)
        return {"stations": ["NYA", "LYR"], "layout": "auto", "filter": {"moon_max_alt": None}}
    rng = np.random.default_rng(2)
    _touch(root, [_ucalgary("GILL", d + pd.Timedelta(hours=h)) for d in days if d.day != 5 for h in (2, 8)])
    for t in pd.date_range("2010-12-05T04:00", periods=4, freq="1h"):
        path = root / _ucalgary("GILL", t)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_themis_minute(t, rng))
    return {"stations": ["GILL"], "layout": "themis", "filter": {"moon_max_alt": None}}


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["asim", "themis"])
def test_windowed_nightly_lists_its_window_and_matches_a_full_listing(tmp_path, dask_client, layout):
    from aurora_batch.runner.nightly import run_nightly
    from aurora_batch.store.ledger import read_catalog

    spec = _nested_archive(tmp_path / "archive", layout)
    runs = {}
    for prune in (True, False):
        out = f"file://{tmp_path}/out-{prune}"
        job = make_job(
            f"file://{tmp_path}/archive", out, start="2010-12-05", end="2010-12-06", planning={"prune": prune}, **spec
        )
        night = run_nightly(job, client=dask_client)
        assert night.status == "ok", night.error
        runs[prune] = (night.season.plan, read_catalog(out), _store_bytes(out, "2010-12"), night.season)
    pruned, full = runs[True][0], runs[False][0]
    assert full.listed > 10 * pruned.listed and full.requests == 1
    if layout == "themis":  # composed: the day folder, then the station's folder in it
        assert pruned.listed == 4 and pruned.requests == 2
    else:  # root, 2 stations, 2 wavelengths, 2 years, the night's folder (dated exactly by ASIM's declared layout)
        assert pruned.listed == 12 and pruned.requests == 1 + 2 + 2 + 2 + 2
    assert runs[True][3].images == runs[False][3].images > 0
    pd.testing.assert_frame_equal(runs[True][1], runs[False][1])
    assert runs[True][2] == runs[False][2]  # every chunk and metadata object, byte for byte


@pytest.mark.slow
def test_season_planned_on_workers_equals_the_driver_plan(tmp_path, dask_client, monkeypatch):
    """A mixed tree with a backup copy (duplicates across folders) and names that do not parse: planned on
    the workers with folders pruned, or in the driver with everything listed, the same catalog and stores."""
    import shutil

    from aurora_batch.datasets.synth import write_archive
    from aurora_batch.runner.season import run_season
    from aurora_batch.store.ledger import read_catalog

    archive = tmp_path / "archive"
    write_archive(
        f"file://{archive}", ["NYA", "LYR"], "2010-12-01T18:00", "2010-12-02T06:00", cadence="1h", seed=5, corrupt=3
    )
    backup = archive / "backup" / "nya4"
    shutil.copytree(archive / "nya4", backup)
    _asim_tree(archive, 30, start="2010-10-20")  # empty files of other days, outside the window
    stores = {}
    for where, prune in (("workers", True), ("driver", False)):
        out = f"file://{tmp_path}/out-{where}"
        job = make_job(
            f"file://{archive}",
            out,
            planning={"where": where, "prune": prune, "task_max_requests": 4},
            filter={"moon_max_alt": None},
        )
        summary = run_season(job, client=dask_client, progress=False)
        assert summary.plan.where == where
        stores[where] = (read_catalog(out), _store_bytes(out, "2010-12"), summary)
    cat = stores["workers"][0]
    assert (cat["status"] == Status.DUPLICATE).sum() == 6 and (cat["status"] == Status.UNPARSEABLE).sum() == 1
    pd.testing.assert_frame_equal(cat, stores["driver"][0])
    assert stores["workers"][1] == stores["driver"][1]
    assert stores["workers"][2].plan.tasks > 2 and stores["workers"][2].images == stores["driver"][2].images > 0
