"""The OATH protocol on a miniature tree in the real v1.1 format, and heads in season stores."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import make_job
from PIL import Image

from aurora_batch import cli
from aurora_batch.config import JobSpecError
from aurora_batch.datasets.oath import OathFormatError, read_oath, write_synthetic_oath
from aurora_batch.datasets.synth import render_frame
from aurora_batch.model.heads import CLASSES6, fit_head, load_head, to_class2
from aurora_batch.products.oath import evaluate, oath_features

N = 60


def write_mini_oath(root, n=N, seed=3):
    """A miniature OATH tree written here, independently of aurora-batch's writer."""
    rng = np.random.default_rng(seed)
    (root / "classifications").mkdir(parents=True)
    (root / "images" / "cropped_scaled").mkdir(parents=True)
    class6 = np.arange(n) % 6
    names = ["arc", "diffuse", "discrete", "cloudy", "moon", "noaurora"]
    header = ["-" * 70] + [f"OATH licence text line {i}" for i in range(16)] + ["-" * 70]
    rows = [f"{0 if c < 3 else 1},{c},{i + 1:05d},{names[c]},{(37 * i) % 360}" for i, c in enumerate(class6)]
    (root / "classifications" / "classifications.csv").write_text(
        "\n".join(header + ["class2,class6,picNum,picType,rotAng"] + rows) + "\n"
    )
    splits = np.stack([rng.permutation(n) for _ in range(5)])
    np.savetxt(root / "classifications" / "train_test_split.csv", splits.astype(float), fmt="%.18e", delimiter=",")
    for i, c in enumerate(class6):
        frame = render_frame(CLASSES6[c], pd.Timestamp("2010-12-01") + pd.Timedelta(minutes=i), rng)
        grey = (np.clip(frame / np.percentile(frame, 99.8), 0, 1) * 255).astype(np.uint8)
        Image.fromarray(np.dstack([grey] * 3)).save(root / "images" / "cropped_scaled" / f"{i + 1:05d}.png")
    return splits


@pytest.fixture(scope="module")
def mini_oath(tmp_path_factory):
    root = tmp_path_factory.mktemp("oath_v1.1")
    splits = write_mini_oath(root)
    return root, splits


def test_reader_and_split_semantics(mini_oath):
    root, splits = mini_oath
    ds = read_oath(root)
    assert len(ds.table) == N and ds.n_train == round(0.7 * N) == 42
    assert ds.table["picNum"].iloc[0] == "00001" and ds.table["class6"].iloc[7] == 1
    train, test = ds.split(2)
    np.testing.assert_array_equal(train, splits[2, :42])
    np.testing.assert_array_equal(test, splits[2, 42:])
    assert not set(train) & set(test)
    assert str(ds.table["path"].iloc[5]).endswith("images/cropped_scaled/00006.png")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: (r / "classifications" / "train_test_split.csv").unlink(), "train_test_split.csv is missing"),
        (lambda r: (r / "images" / "cropped_scaled" / "00007.png").unlink(), "00007.png"),
        (lambda r: _edit(r, "class2,class6,picNum", "klass2,class6,picNum"), "header line"),
        (lambda r: _edit(r, "\n0,2,00003,discrete", "\n0,9,00003,discrete"), "line 22: class6 must be 0..5"),
        (lambda r: _edit(r, "\n0,2,00003,discrete", "\n1,2,00003,discrete"), "line 22: class2 does not agree"),
        (lambda r: (r / "classifications" / "train_test_split.csv").write_text("1.0,2.0\n"), "line 1: expected a perm"),
    ],
)
def test_format_errors_name_file_and_line(mini_oath, tmp_path, damage, message):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(mini_oath[0], root)
    damage(root)
    with pytest.raises(OathFormatError, match=message):
        read_oath(root)


def _edit(root, old, new):
    p = root / "classifications" / "classifications.csv"
    p.write_text(p.read_text().replace(old, new, 1))


def test_train_and_evaluate_cli_end_to_end(mini_oath, tmp_path, capsys):
    """The CLI's ``evaluate`` and ``train`` (called in this process; tests/test_cli.py runs the entry point)."""
    root, _ = mini_oath
    cache = tmp_path / "cache"
    common = ["--recipe", "lite128", "--cache", str(cache)]
    assert cli.main(["evaluate", str(root), "--out", str(tmp_path / "ev"), *common]) == 0
    scores = json.loads((tmp_path / "ev" / "scores.json").read_text())
    for key in ("accuracy6_mean", "accuracy6_std", "accuracy2_mean", "accuracy2_std", "per_split", "confusion6"):
        assert key in scores
    assert len(scores["per_split"]) == 5 and all(s["n_test"] == 18 for s in scores["per_split"])
    assert np.array(scores["confusion6"]).sum() == 5 * 18
    assert np.array(scores["confusion6"]).sum(axis=1).tolist() == [
        sum(int((np.arange(N) % 6)[read_oath(root).split(k)[1]].tolist().count(c)) for k in range(5)) for c in range(6)
    ]
    assert 0 <= scores["accuracy6_mean"] <= 1 and scores["accuracy2_mean"] >= scores["accuracy6_mean"] - 1e-9
    assert (tmp_path / "ev" / "scores.png").stat().st_size > 1000
    assert "6-class accuracy" in capsys.readouterr().out
    assert list(cache.glob("oath-features-*.zarr"))

    assert (
        cli.main(["train", str(root), "--out", str(tmp_path / "heads" / "oath-ridge.npz"), "--split", "1", *common])
        == 0
    )
    head = load_head(tmp_path / "heads" / "oath-ridge.npz")
    side = json.loads((tmp_path / "heads" / "oath-ridge.json").read_text())
    assert side["backbone"] == "efficientnet-lite0" and side["recipe"] == "lite128" and side["split"] == 1
    assert side["classes"] == list(CLASSES6) and side["n_train"] == 42 and "accuracy6" in side["scores"]
    assert head.coef.shape == (6, 1280)


def test_feature_cache_is_reused(mini_oath, tmp_path, monkeypatch):
    ds = read_oath(mini_oath[0])
    first = oath_features(ds, recipe="lite128", cache=tmp_path, progress=False)
    import aurora_batch.model.features as features

    def no_inference(*a, **k):
        raise AssertionError("features were recomputed despite the cache")

    monkeypatch.setattr(features, "extract_features", no_inference)
    np.testing.assert_array_equal(oath_features(ds, recipe="lite128", cache=tmp_path, progress=False), first)


def test_head_roundtrip_probabilities_and_tamper(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 16)).astype(np.float32)
    y = np.arange(120) % 6
    x[np.arange(120), y] += 4  # separable
    for kind in ("ridge", "svm", "logistic"):
        head = fit_head(x, y, kind, meta={"backbone": "b", "recipe": "r", "weights": "shipped"})
        p = head.predict_proba(x)
        np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
        assert (p.argmax(axis=1) == y).mean() > 0.9
        head.save(tmp_path / f"{kind}.npz")
        again = load_head(tmp_path / f"{kind}.npz")
        np.testing.assert_allclose(again.predict_proba(x), p, rtol=1e-5)
    np.testing.assert_array_equal(to_class2([0, 1, 2, 3, 4, 5]), [0, 0, 0, 1, 1, 1])
    (tmp_path / "ridge.npz").write_bytes((tmp_path / "ridge.npz").read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ValueError, match="checksum"):
        load_head(tmp_path / "ridge.npz")
    with pytest.raises(ValueError, match="sidecar"):
        (tmp_path / "svm.json").write_text("{not json")
        load_head(tmp_path / "svm.npz")


def test_synthetic_head_separates_held_out_sky_images(synthetic_head, tmp_path):
    path, ds, feats = synthetic_head
    assert evaluate(ds, feats, "ridge")["accuracy6_mean"] > 0.6  # chance: 1/6
    held_out = read_oath(write_synthetic_oath(tmp_path / "held-out", n_per_class=15, seed=99))
    head = load_head(path)
    pred = head.predict(oath_features(held_out, recipe="lite128", progress=False))
    truth = held_out.table["class6"].to_numpy()
    assert (pred == truth).mean() > 0.6
    assert (to_class2(pred) == to_class2(truth)).mean() > 0.8
    assert head.meta["synthetic"] is True


def test_head_mismatch_is_refused(synthetic_head):
    """Checked when a job starts (JobConfig.check_files), naming the field."""
    path = str(synthetic_head[0])
    make_job("a", "b", classify={"head": path}, features={"recipe": "lite128"}).check_files()  # fits
    with pytest.raises(JobSpecError, match=r"classify.head: .*recipe: head has 'lite128', job has 'kvammen'"):
        make_job("a", "b", classify={"head": path}, features={"recipe": "kvammen"}).check_files()
    with pytest.raises(JobSpecError, match="classify.head: head file .* does not exist"):
        make_job("a", "b", classify={"head": "/nowhere/head.npz"}).check_files()


@pytest.mark.slow
def test_season_with_head_writes_probabilities(small_archive, synthetic_head, tmp_path, dask_client):
    import xarray as xr

    from aurora_batch.runner.season import run_season

    url, labels = small_archive
    job = make_job(url, f"file://{tmp_path}/out", classify={"head": str(synthetic_head[0])})
    summary = run_season(job, client=dask_client, progress=False)
    for station in ("NYA", "LYR"):
        ds = xr.open_zarr(summary.stores[0], group=station)
        proba = ds["proba"].to_numpy()
        assert proba.shape == (ds.sizes["time"], 6)
        np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
        assert list(ds["class"].to_numpy()) == list(CLASSES6)
        assert set(ds["label"].to_numpy()) <= set(CLASSES6)
        np.testing.assert_allclose(ds["aurora_proba"].to_numpy(), proba[:, :3].sum(axis=1), rtol=1e-5)
        assert ds.attrs["head_synthetic"] and "SYNTHETIC" in ds.attrs["head_note"]
    # The synthetic sky classes are recovered on the season's frames too.
    truth = labels.assign(url=lambda d: url + "/" + d["file"]).set_index("url")["label"]
    ds = xr.open_zarr(summary.stores[0], group="NYA")
    pred = pd.Series(ds["label"].to_numpy(), index=ds["url"].to_numpy())
    assert (pred == truth.reindex(pred.index)).mean() > 0.5
