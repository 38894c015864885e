"""Notebook products: model-file backbones, keograms, open_station/open_season over S3, the keogram CLI."""

import hashlib

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from conftest import make_job

from aurora_batch import cli, open_season, open_station
from aurora_batch.config import JobSpecError
from aurora_batch.datasets.synth import write_archive
from aurora_batch.formats.decode import decode
from aurora_batch.formats.files import FileFrames
from aurora_batch.formats.skymap import Skymap
from aurora_batch.model.backbones import backbone_id, feature_dim
from aurora_batch.model.features import extract_features
from aurora_batch.model.recipes import get_recipe
from aurora_batch.partition.frames import judge_frames
from aurora_batch.partition.sky import keogram_lines
from aurora_batch.products.query import label_files, query
from aurora_batch.runner.season import run_season


class TinyNet(torch.nn.Module):
    """(N, 3, S, S) -> (N, 8): a convolution, ReLU and global mean."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def _torchscript(path, seed=0):
    torch.jit.script(TinyNet(seed).eval()).save(str(path))
    return str(path)


def test_model_files_give_the_network_outputs(tmp_path):
    net = TinyNet().eval()
    program = torch.export.export(
        net, (torch.rand(4, 3, 128, 128),), dynamic_shapes={"x": {0: torch.export.Dim.DYNAMIC}}
    )
    torch.export.save(program, str(tmp_path / "net.pt2"))
    batch = np.random.default_rng(0).random((3, 3, 128, 128), dtype=np.float32)
    want = net(torch.from_numpy(batch)).detach().numpy()
    for path in (_torchscript(tmp_path / "net.pt"), str(tmp_path / "net.pt2")):
        assert feature_dim(path, 128) == 8
        np.testing.assert_allclose(extract_features(batch, path, device="cpu"), want, atol=1e-5)
    first = backbone_id(str(tmp_path / "net.pt"))
    _torchscript(tmp_path / "net.pt", seed=1)  # another network under the same name: another identity
    assert backbone_id(str(tmp_path / "net.pt")) != first
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.pt is not a loadable TorchScript module"):
        feature_dim(str(tmp_path / "bad.pt"), 128)
    with pytest.raises(JobSpecError, match="features.backbone: model file .*missing.pt does not exist"):
        make_job("file:///x", "file:///y", features={"backbone": str(tmp_path / "missing.pt")}).check_files()


def test_keogram_lines_follow_the_skymap_zenith():
    img = np.arange(64 * 80, dtype=np.uint16).reshape(64, 80)
    elevation = np.full((64, 80), 10.0)
    elevation[20, 50] = 89.9  # zenith off the centre
    skymap = Skymap("GAKO", "synthetic", pd.Timestamp("2011-01-01").to_pydatetime(), None, 62.4, -145.2, elevation)
    row = {"url": "x.png", "station": "GAKO", "time": pd.Timestamp("2011-01-06T10:00")}
    flt = make_job("file:///x", "file:///y", filter={"sun_max_alt": 90, "moon_max_alt": None}).filter
    judged = judge_frames(FileFrames([None], [img]), row, get_recipe("lite128"), None, flt, [skymap], 5.0)
    ns, ew = judged.keograms[0]
    resample = lambda line: np.interp(np.linspace(0, len(line) - 1, 256), np.arange(len(line)), line)  # noqa: E731
    np.testing.assert_allclose(ns, resample(img[:, 50].astype(float)), rtol=1e-6)
    np.testing.assert_allclose(ew, resample(img[20, :].astype(float)), rtol=1e-6)
    np.testing.assert_array_equal(keogram_lines(np.zeros((256, 256, 3)) + img[:1, :1, None])[0], 0)


@pytest.mark.slow
def test_season_products_on_s3(tmp_path, s3_server, bucket, dask_client, capsys):
    """A TorchScript backbone, keograms, two months and a wavelength subgroup, read back from S3."""
    archive = f"file://{tmp_path}/archive"
    write_archive(archive, ["NYA", "LYR"], "2010-12-31T18:00", "2011-01-01T06:00", cadence="1h", seed=5)
    write_archive(archive, ["NYA"], "2011-01-01T00:00", "2011-01-01T06:00", cadence="1h", seed=6, wavelength=6300)
    model = _torchscript(tmp_path / "tiny.pt")
    opts = s3_server.storage_options
    out = f"s3://{bucket}/season"
    job = make_job(
        archive,
        out,
        start="2010-12-31",
        end="2011-01-02",
        output_storage_options=opts,
        filter={"sun_max_alt": 90, "moon_max_alt": None},
        features={"backbone": model},
    )
    summary = run_season(job, client=dask_client, progress=False)
    assert summary.images == 12 + 12 + 6

    nya = open_station(out, "NYA", wavelength=5577, storage_options=opts)  # December "NYA", January "NYA/5577"
    assert nya.sizes["time"] == 12 and nya["time"].to_index().is_monotonic_increasing
    assert {pd.Timestamp(t).month for t in nya["time"].values} == {12, 1}
    assert nya.sizes["feature"] == 8 and nya.attrs["feature_dim"] == 8
    assert nya.attrs["backbone_sha256"] == hashlib.sha256(open(model, "rb").read()).hexdigest()
    assert nya.attrs["weights"] == "in the backbone file"
    with pytest.raises(ValueError, match="has wavelengths 5577, 6300; pass wavelength="):
        open_station(out, "NYA", "2011-01-01", storage_options=opts)
    red = open_station(out, "NYA", "2011-01-01", "2011-01-01T03:00", wavelength=6300, storage_options=opts)
    assert red.sizes["time"] == 3 and (red["wavelength"] == 6300).all()
    # The label table on S3 (no head: conditions and sources), read for January's NYA files only.
    files = label_files(out, stations=["NYA"], start="2011-01-01", end="2011-01-02", storage_options=opts)
    assert len(files) == 2 and all("/labels/month=2011-01/station=NYA/" in f for f in files)
    hits = query(out, "wavelength = 6300", ["NYA"], "2011-01-01", "2011-01-01T03:00", opts)
    assert list(hits["url"]) == [str(u) for u in red["url"].values] and (hits["station"] == "NYA").all()

    # Each keogram line is the frame's central column (row), read back from the source PNG.
    for i in (0, 7):
        url = str(nya["url"].values[i])
        frame = decode(open(url.removeprefix("file://"), "rb").read(), url)
        np.testing.assert_array_equal(nya["keogram_ns"].values[i], frame[:, 128].astype(np.float32))
        np.testing.assert_array_equal(nya["keogram_ew"].values[i], frame[128, :].astype(np.float32))
    assert "zenith" in nya["keogram_ns"].attrs["comment"]

    tree = open_season(out, storage_options=opts)
    assert sorted(n.path for n in tree.leaves) == ["/LYR", "/NYA/5577", "/NYA/6300"]
    assert isinstance(tree["LYR"].to_dataset(), xr.Dataset) and tree["LYR"].sizes["time"] == 12

    spec = tmp_path / "job.yaml"
    spec.write_text(
        f"input: {archive}\noutput: {out}\nstations: [LYR]\nstart: 2010-12-01\nend: 2011-02-01\n"
        f"output_storage_options: {{key: testing, secret: testing, client_kwargs: "
        f"{{endpoint_url: '{s3_server.endpoint}'}}}}\n"
    )
    png = tmp_path / "k.png"
    assert cli.main(["keogram", str(spec), "--station", "LYR", "--night", "2010-12-31", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert "wrote" in capsys.readouterr().out


def test_embedding_is_bounded_and_shows_one_example_per_class():
    from aurora_batch.products.embedding import embed, exemplars, subsample

    pick = subsample(5000, 300, seed=1)
    assert len(pick) == 300 == len(np.unique(pick)) and (np.diff(pick) > 0).all() and pick[-1] < 5000
    assert (subsample(40, 300) == np.arange(40)).all()
    # Three well-separated clusters of features stay three clusters in the map.
    rng = np.random.default_rng(0)
    labels = np.repeat(["arc", "cloudy", "clear"], 40)
    feats = rng.normal(0, 1, (120, 64)) + np.repeat(np.eye(3, 64) * 25, 40, axis=0)
    xy = embed(feats)
    assert xy.shape == (120, 2)
    centres = np.array([xy[labels == c].mean(0) for c in ("arc", "cloudy", "clear")])
    spread = max(np.linalg.norm(xy[labels == c] - xy[labels == c].mean(0), axis=1).max() for c in ("arc", "cloudy"))
    assert min(np.linalg.norm(centres[i] - centres[j]) for i in range(3) for j in range(i)) > spread
    ex = exemplars(xy, labels)
    assert set(ex) == {"arc", "cloudy", "clear"} and all(labels[i] == c for c, i in ex.items())
    assert embed(feats[:3]).shape == (3, 2) and embed(feats[:1]).shape == (1, 2)


def test_keogram_time_grid_whatever_the_time_unit(tmp_path):
    """Stores may decode time as datetime64[us] (pandas 3): the grid is still one column per frame."""
    from aurora_batch.products.keogram import _regular, plot_keogram

    times = pd.date_range("2010-12-01T12:00", periods=240, freq="1min", unit="us").delete([100, 101, 102])
    ds = xr.Dataset(
        {
            "keogram_ns": (("time", "ns"), np.arange(237 * 8, dtype=np.float32).reshape(237, 8)),
            "label": ("time", np.array(["arc"] * 237, dtype=object)),
        },
        coords={"time": times},
    )
    grid, lines, labels = _regular(ds, "keogram_ns")
    assert len(grid) == 240 and np.isnan(lines[100:103]).all() and labels[100] is None
    np.testing.assert_array_equal(lines[:100], ds["keogram_ns"].to_numpy()[:100])
    assert plot_keogram(ds, tmp_path / "k.png").stat().st_size > 5000
