"""Real imager files end to end: per-frame Sun and Moon, site checks, recipes on raw counts, skymaps, a season."""

import dataclasses
import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import make_job
from test_ephemeris import _full_skyfield
from test_formats import DATA, REAL

from aurora_batch.core.keys import PartitionKey, Status
from aurora_batch.formats.files import read_file
from aurora_batch.formats.names import FORMATS, get_formats, match_name
from aurora_batch.formats.skymap import elevation_mask, find_skymaps, skymap_for
from aurora_batch.model.recipes import get_recipe, lite128, resize, to_grey
from aurora_batch.partition.fingerprint import feature_fingerprint
from aurora_batch.partition.frames import judge_frames
from aurora_batch.partition.process import process_partition
from aurora_batch.store.layout import staging_url
from aurora_batch.store.ledger import read_catalog
from aurora_batch.store.parts import read_part
from aurora_batch.store.zarrs import list_groups, zarr_store

GAKO = (62.407, -145.158, 0.0)
NO_FILTER = {"sun_max_alt": 90, "moon_max_alt": None}


def _hourly_cdf(path: Path, start: dt.datetime, every_s: int = 20, side: int = 64) -> list[dt.datetime]:
    """A THEMIS L1-shaped CDF with a frame every ``every_s`` seconds across the hour (synthetic pixels)."""
    import cdflib
    from cdflib.cdfwrite import CDF

    times = [start + dt.timedelta(seconds=every_s * i) for i in range(3600 // every_s)]
    rng = np.random.default_rng(3)
    images = rng.integers(2000, 12000, (len(times), side, side), dtype=np.uint16)
    epochs = cdflib.cdfepoch.compute_epoch([[t.year, t.month, t.day, t.hour, t.minute, t.second, 0] for t in times])
    w = CDF(str(path), cdf_spec={"Majority": "row_major"})
    for name, kind, dims, data in (
        ("thg_asf_gako", CDF.CDF_UINT2, [side, side], images),
        ("thg_asf_gako_epoch", CDF.CDF_EPOCH, [], np.asarray(epochs)),
    ):
        w.write_var(
            {"Variable": name, "Data_Type": kind, "Num_Elements": 1, "Rec_Vary": True, "Dim_Sizes": dims},
            var_attrs={},
            var_data=data,
        )
    w.close()
    return times


def _rows(urls, station, job):
    from aurora_batch.core.ephemeris import annotate_catalog
    from aurora_batch.plan.catalog import build_catalog
    from aurora_batch.plan.planner import drop_whole_files

    cat = annotate_catalog(
        build_catalog(urls, job.formats(), [station], dt.datetime(2000, 1, 1), dt.datetime(2030, 1, 1))
    )
    return drop_whole_files(cat, job, {f.name: f.span_s for f in job.formats()})


def test_hourly_cdf_is_judged_frame_by_frame(tmp_path):
    """The Sun rises through -12 deg at Gakona at 16:56 UTC: frames after it are dropped, the file is kept."""
    path = tmp_path / "in" / "thg_l1_asf_gako_2011010616_v01.cdf"
    path.parent.mkdir()
    times = _hourly_cdf(path, dt.datetime(2011, 1, 6, 16))
    job = make_job(
        f"file://{tmp_path}/in", f"file://{tmp_path}/out", stations=["GAKO"], start="2011-01-06", end="2011-01-07"
    )
    rows = _rows([f"file://{path}"], "GAKO", job)
    assert rows["status"].tolist() == [Status.PENDING]  # the name's time alone would keep (or drop) every frame
    result = process_partition(job, PartitionKey.parse("GAKO_all_20110106"), rows)
    staged, arrays = read_part(staging_url(job.output, PartitionKey.parse("GAKO_all_20110106")))
    assert staged["time"].tolist() == [pd.Timestamp(t) for t in times]
    sun, _ = _full_skyfield(staged["time"], *GAKO)
    assert np.abs(staged["sun_alt"].to_numpy() - sun).max() < 0.01  # each frame at its own time
    assert staged["sun_alt"].iloc[-1] - staged["sun_alt"].iloc[0] > 6  # moving with time
    expected = np.where(sun > -12.0, Status.SUN, Status.KEPT)
    assert staged["status"].tolist() == expected.tolist()
    assert 150 < (expected == Status.KEPT).sum() < 180 and len(arrays["features"]) == (expected == Status.KEPT).sum()
    assert result.statuses == {Status.KEPT: 1} and result.images == (expected == Status.KEPT).sum()


def test_whole_file_dropped_by_name_only_when_safe(tmp_path):
    """An hourly file is dropped whole only when both ends of its hour fail, by the sag margin."""
    job = make_job("file:///in", "file:///out", stations=["GAKO"], start="2011-01-06", end="2011-01-07")
    urls = [f"file:///in/thg_l1_asf_gako_20110106{h:02d}_v01.cdf" for h in (15, 16, 17, 18, 22)]
    rows = _rows(urls, "GAKO", job)
    # 15 h: dark throughout; 16 h: crosses -12 deg; 17 h: starts at -11.76 deg, within the 0.51 deg margin of
    # an hour; 18 h and 22 h: the Sun is far above -12 deg throughout
    assert rows["status"].tolist() == [Status.PENDING] * 3 + [Status.SUN] * 2


def test_site_position_and_raw_range_warnings(tmp_path):
    name = "20140310_0605_gill_themis19_full.pgm.gz"
    shutil.copy(DATA / name, tmp_path / name)
    for station, warned in (("GILL", False), ("RANK", True)):
        job = make_job(
            f"file://{tmp_path}",
            f"file://{tmp_path}/out-{station}",
            stations=["GILL"],
            start="2014-03-10",
            end="2014-03-11",
            filter=NO_FILTER,
            features={"recipe": "kvammen"},
        )
        rows = _rows([f"file://{tmp_path}/{name}"], "GILL", job).assign(station=station)
        result = process_partition(job, PartitionKey.parse(f"{station}_all_20140310"), rows)
        site = [w for w in result.warnings if "site position" in w]
        assert bool(site) == warned
        if warned:
            assert name in site[0] and "RANK" in site[0]
        low = [w for w in result.warnings if "kvammen_stretch" in w]
        assert low and name in low[0]  # raw THEMIS counts use a few % of 65535


def test_stretch_variants_use_the_range_of_raw_frames():
    frames = read_file((DATA / "20140310_0605_gill_themis19_full.pgm.gz").read_bytes(), "x.pgm.gz")
    img = frames.images[0]
    for paper, stretched in (("oath", "oath_stretch"), ("kvammen", "kvammen_stretch")):
        raw, fixed = get_recipe(paper)(img), get_recipe(stretched)(img)
        assert raw.std() < 0.06 and fixed.std() > 0.3, (paper, raw.std(), fixed.std())


def test_skymap_mask_differs_from_the_circle_only_through_the_field_of_view(tmp_path):
    """lite128 with the GAKO skymap: zero below 10 deg elevation, stretched over exactly the pixels above it."""
    cdf = "thg_l1_asf_gako_2011010617_v01.cdf"
    frames = read_file((DATA / cdf).read_bytes(), cdf, FORMATS["themis_cdf"])
    maps = find_skymaps(str(DATA), "GAKO")
    assert skymap_for(maps, frames.times[0]) is None  # valid from 2011-03-05 08 UT, open-ended
    skymap = skymap_for(maps, dt.datetime(2020, 1, 1))
    assert skymap is not None and skymap.valid_start == dt.datetime(2011, 3, 5, 8)
    assert abs(skymap.longitude - (214.84 - 360)) < 1e-3  # 0-360 in the file
    img = frames.images[0]
    mask = elevation_mask(skymap, img.shape, 10.0)
    ours = lite128(img, mask)
    grey = to_grey(img)
    lo, hi = np.percentile(grey[mask], [1.0, 99.5])
    unit = np.where(mask, np.clip((grey - lo) / (hi - lo), 0, 1), 0).astype(np.float32)
    np.testing.assert_allclose(ours[0], resize(unit, 128) * 2 - 1, atol=1e-6)
    assert not np.allclose(ours, lite128(img))  # the circle differs
    assert 0.5 < mask.mean() < 0.7 and not mask[0, 0]
    with pytest.raises(ValueError, match="a skymap of site GAKO, given for station GILL"):
        find_skymaps({"GILL": str(DATA / "themis_skymap_gako_20110305-+_vXX.sav.gz")}, "GILL")


def test_skymap_from_the_job_spec_changes_features_and_fingerprint(tmp_path):
    cdf = "thg_l1_asf_gako_2011010617_v01.cdf"
    shutil.copy(DATA / cdf, tmp_path / cdf)
    common = dict(
        stations={"GAKO": {"skymap": str(DATA / "themis_skymap_gako_20110305-+_vXX.sav.gz")}},
        start="2011-01-06",
        end="2011-01-07",
        filter=NO_FILTER,
    )
    with_map = make_job(f"file://{tmp_path}", f"file://{tmp_path}/a", **common)
    assert with_map.skymaps == {"GAKO": str(DATA / "themis_skymap_gako_20110305-+_vXX.sav.gz")}
    without = make_job(f"file://{tmp_path}", f"file://{tmp_path}/b", **{**common, "stations": ["GAKO"]})
    assert feature_fingerprint(with_map) != feature_fingerprint(without)
    # The skymap is valid from 2011-03-05: these January frames have none, so they use the circle.
    feats = {}
    for job in (with_map, without):
        rows = _rows([f"file://{tmp_path}/{cdf}"], "GAKO", job)
        process_partition(job, PartitionKey.parse("GAKO_all_20110106"), rows)
        feats[job.output] = read_part(staging_url(job.output, PartitionKey.parse("GAKO_all_20110106")))[1]["features"]
    np.testing.assert_array_equal(*feats.values())
    frames = read_file((DATA / cdf).read_bytes(), cdf)
    row = {"url": cdf, "time": pd.Timestamp("2011-01-06T17:00"), "station": "GAKO"}
    (skymap,) = find_skymaps(with_map.skymaps, "GAKO")
    january = dataclasses.replace(skymap, valid_start=dt.datetime(2010, 1, 1))  # as if it covered these frames
    masked = judge_frames(frames, row, get_recipe("lite128"), GAKO, with_map.filter, [january], 30.0)
    circle = judge_frames(frames, row, get_recipe("lite128"), GAKO, with_map.filter, [skymap], 30.0)
    assert not np.allclose(masked.inputs[0], circle.inputs[0])
    np.testing.assert_array_equal(circle.inputs[0], get_recipe("lite128")(frames.images[0]))


@pytest.mark.slow
def test_every_real_sample_through_auto_in_a_local_cluster_season(tmp_path, synthetic_head, capfd):
    """layout: auto on a LocalCluster with worker processes: right frames, times and stations, as the readers say;
    classify_files in this process gives the probabilities the season stored.  No process warns (skyfield-data's
    stale Earth-orientation file is not even looked at)."""
    archive = tmp_path / "archive"
    for name in REAL:
        (archive / REAL[name][1].lower()).mkdir(parents=True, exist_ok=True)
        shutil.copy(DATA / name, archive / REAL[name][1].lower() / name)
    (archive / "gill" / "README.txt").write_text("not an image")
    (archive / "gill" / "20140310_0607_gill_themis19_full.pgm").write_bytes(b"P5\n256 256\n65535\n")  # truncated
    job = make_job(
        f"file://{archive}",
        f"file://{tmp_path}/out",
        stations=["GILL", "GAKO"],
        start="2011-01-01",
        end="2022-12-31",
        filter=NO_FILTER,
        cluster={"n_workers": 1},
        classify={"head": str(synthetic_head[0])},
    )
    assert job.layout == "auto"
    from aurora_batch.runner.season import run_season

    capfd.readouterr()
    summary = run_season(job, progress=False)
    assert "Warning" not in capfd.readouterr().err  # the driver and its worker process (which share stderr)
    cat = read_catalog(job.output).set_index("url")
    # The catalog folder is one Parquet dataset, although THEMIS months have no wavelength (README: read_parquet).
    assert len(pd.read_parquet(f"{tmp_path}/out/catalog")) == len(cat)
    by_name = {u.rsplit("/", 1)[-1]: r for u, r in cat.iterrows()}
    for name, (fmt, station, _, n) in REAL.items():
        r = by_name[name]
        assert (r["format"], r["station"], r["status"], r["frames"]) == (fmt, station, Status.KEPT, n)
    assert by_name["20140310_0607_gill_themis19_full.pgm"]["status"] == Status.UNREADABLE
    assert summary.images == sum(v[3] for v in REAL.values())
    stored, probas = [], []
    for store in summary.stores:
        for group in list_groups(zarr_store(store)):
            with xr.open_zarr(store, group=group, chunks=None) as ds:
                stored += [
                    (u.rsplit("/", 1)[-1], pd.Timestamp(t), ds.attrs["station"], float(s))
                    for u, t, s in zip(ds["url"].values, ds["time"].values, ds["sun_alt"].values)
                ]
                index = pd.MultiIndex.from_arrays([ds["url"].values, ds["frame"].values], names=["url", "frame"])
                probas.append(
                    pd.DataFrame(ds["proba"].values, index, [f"p_{c}" for c in ds["class"].values]).assign(
                        label=ds["label"].values
                    )
                )
                assert (ds["saturated_fraction"] >= 0).all()
    for name in REAL:
        frames = read_file((DATA / name).read_bytes(), name)
        want = [t or match_name(name, get_formats(["auto"])).time for t in frames.times]
        assert [t for n, t, _, _ in stored if n == name] == [pd.Timestamp(t) for t in want]
    gako = [(t, s) for n, t, st, s in stored if st == "GAKO"]
    sun, _ = _full_skyfield(pd.DatetimeIndex([t for t, _ in gako]), *GAKO)
    np.testing.assert_allclose([s for _, s in gako], sun, atol=0.01)

    from aurora_batch import classify_files

    table = classify_files(f"file://{archive}", str(synthetic_head[0]), progress=False)
    assert set(table.loc[table["status"] == Status.UNREADABLE, "url"].str.rsplit("/", n=1).str[-1]) == {
        "20140310_0607_gill_themis19_full.pgm"
    }
    kept = table[table["status"] == Status.KEPT].set_index(["url", "frame"]).sort_index()
    season = pd.concat(probas).sort_index()
    assert len(kept) == len(season) == summary.images
    p = [c for c in season if c.startswith("p_")]
    np.testing.assert_allclose(kept[p].to_numpy(), season[p].to_numpy(), atol=1e-4)
    assert (kept["label"] == season["label"]).all()

    # The report on real formats: the typical frame of each class re-read from PGM, CDF and PNG files
    # (frame by frame within multi-frame files), and a keogram per station-night.
    from aurora_batch.products.report import make_report

    report = make_report(job, tmp_path / "report", max_points=50)
    assert not [n for n in report.notes if "could not be re-read" in n or "keograms" in n], report.notes
    groups = {f"{g} {s.rsplit('/', 1)[-1][:7]}" for s in summary.stores for g in list_groups(zarr_store(s))}
    assert set(report.embeddings) == groups  # one map per store group and month
    # GILL has unfiltered (THEMIS, TREx RGB) and two filtered (TREx NIR, blueline) wavelengths: a keogram
    # per wavelength and night, each frame in one of them only.
    assert set(report.keograms) == {
        "GAKO 2011-01-05",
        "GILL/0 2014-03-09",
        "GILL/0 2020-05-07",
        "GILL/4861 2022-03-07",
        "GILL/8446 2022-03-06",
    }


def test_skymap_orientation_is_the_official_readers_undone_like_the_frames(tmp_path):
    """pyucalgarysrs flips stream0 frames and THEMIS skymaps north-south alike: ours keep both as stored, so a
    frame and its skymap are aligned exactly as the official readers align them."""
    import gzip

    import pyucalgarysrs

    from aurora_batch.formats.skymap import read_skymap

    raw = tmp_path / "themis_skymap_gako_20110305-+_vXX.sav"
    raw.write_bytes(gzip.decompress((DATA / f"{raw.name}.gz").read_bytes()))
    readers = pyucalgarysrs.PyUCalgarySRS().data.readers
    official_map = readers.read_skymap(str(raw), quiet=True).data[0]
    ours = read_skymap(str(raw))
    assert np.array_equal(ours.elevation, np.flip(official_map.full_elevation, axis=0), equal_nan=True)
    assert not np.array_equal(ours.elevation, official_map.full_elevation, equal_nan=True)  # not symmetric
    name = "20140310_0605_gill_themis19_full.pgm.gz"
    frames = read_file((DATA / name).read_bytes(), name, FORMATS["themis"])
    official_frames = readers.read_themis(str(DATA / name), quiet=True)
    np.testing.assert_array_equal(frames.images[0], np.flip(official_frames.data[..., 0], axis=0))
