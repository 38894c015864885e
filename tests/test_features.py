import numpy as np
import pytest
import torch

from aurora_batch.model.backbones import BACKBONES, load_backbone
from aurora_batch.model.features import FeatureExtractor, extract_features


def test_pretrained_features_shape_and_determinism():
    rng = np.random.default_rng(0)
    x = rng.random((5, 3, 128, 128), dtype=np.float32) * 2 - 1
    a = extract_features(x, device="cpu", batch_size=2)
    b = extract_features(x[::-1].copy(), device="cpu", batch_size=5)
    assert a.shape == (5, 1280) and a.dtype == np.float32
    np.testing.assert_allclose(a[::-1], b, rtol=1e-4, atol=1e-4)  # batching does not change results
    assert np.isfinite(a).all() and a.std() > 0


def test_pretrained_weights_are_not_random():
    model = load_backbone("efficientnet-lite0", None, "cpu")
    fresh = BACKBONES["efficientnet-lite0"].build()
    key = "body._conv_stem.weight"
    assert model.state_dict()[key].shape == fresh.state_dict()[key].shape
    assert not torch.allclose(model.state_dict()[key], fresh.state_dict()[key])


def test_batch_norms_fold_into_convolutions():
    import copy

    from aurora_batch.model.backbones import fold_batchnorm

    spec = BACKBONES["efficientnet-lite0"]
    model = spec.build().eval()
    torch.manual_seed(0)
    for m in model.modules():  # non-trivial statistics, as in trained weights
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.2, 0.2)
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded, spec.conv_bn_pairs) == 49
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.from_numpy(np.random.default_rng(0).random((2, 3, 96, 96), dtype=np.float32))
    with torch.inference_mode():
        a, b = model(x), folded(x)
    assert float((a - b).norm() / a.norm()) < 1e-4


def test_symmetric_same_padding_moves_into_the_convolutions():
    import copy

    from aurora_batch.model.backbones import fold_same_padding

    model = BACKBONES["efficientnet-lite0"].build().eval()
    moved = copy.deepcopy(model)
    assert fold_same_padding(moved) == 12  # every stride-1 3x3/5x5 convolution
    left = [
        m.static_padding.padding
        for m in moved.modules()
        if isinstance(getattr(m, "static_padding", None), torch.nn.ZeroPad2d)
    ]
    assert left and all(p[0] != p[1] for p in left)  # only the asymmetric (stride-2) paddings stay
    x = torch.from_numpy(np.random.default_rng(0).random((2, 3, 128, 128), dtype=np.float32))
    with torch.inference_mode():
        assert torch.equal(model(x), moved(x))


def test_user_weights_file(tmp_path):
    model = BACKBONES["efficientnet-lite0"].build()
    torch.manual_seed(1)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.01)
    path = tmp_path / "mine.pth"
    torch.save(model.body.state_dict(), path)
    x = np.zeros((2, 3, 64, 64), np.float32)
    mine = extract_features(x, weights=str(path), device="cpu")
    shipped = extract_features(x, device="cpu")
    assert not np.allclose(mine, shipped)


def test_bad_weights_file(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="do not fit"):
        load_backbone("efficientnet-lite0", str(path), "cpu")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_backbone("efficientnet-lite0", str(tmp_path / "missing.pth"), "cpu")


def _batch(n, seed=0):
    return np.random.default_rng(seed).random((n, 3, 96, 96), dtype=np.float32) * 2 - 1


def test_extractor_splits_and_keeps_order():
    x = _batch(7)
    ext = FeatureExtractor(device="cpu", batch_size=3)
    ext.push(x[:5])
    ext.push(x[5:])
    out = ext.result()
    np.testing.assert_allclose(out, extract_features(x, device="cpu"), rtol=1e-4, atol=1e-4)
    assert ext.result().shape == (0, 1280)  # result() resets


def test_bfloat16_autocast_returns_float32_close_to_float32():
    x = _batch(4)
    ref = extract_features(x, device="cpu")
    ext = FeatureExtractor(device="cpu", precision="bfloat16")
    ext.push(x)
    out = ext.result()
    assert out.dtype == np.float32
    cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() > 0.98 and not np.array_equal(out, ref)


def test_compiled_backbone_pads_the_last_batch(tmp_path):
    """torch.compile (Inductor) on a small exported network: a cold compile takes seconds, not the
    60-90 s of the shipped backbone, and the padding logic is the same; the graph lands in compile_cache."""
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    ).eval()
    path = str(tmp_path / "small.pt2")
    torch.export.save(
        torch.export.export(net, (torch.rand(2, 3, 96, 96),), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},)), path
    )
    x = _batch(5)
    cache = tmp_path / "inductor"
    ext = FeatureExtractor(path, device="cpu", batch_size=4, compile=True, input_size=96, compile_cache=str(cache))
    ext.push(x)  # 4 + 1: the last batch is padded to 4, so the graph is not rebuilt
    out = ext.result()
    assert out.shape == (5, 32)
    assert any(p.is_file() for p in cache.rglob("*"))  # the compiled graph is in the cache later processes read
    np.testing.assert_allclose(out, extract_features(x, path, device="cpu"), rtol=1e-4, atol=1e-5)
