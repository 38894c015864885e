"""TAME's backbone table: speed and OATH-protocol accuracy of every available feature extractor.

For the shipped backbone at 128 px (recipe ``lite128``) and 224 px (recipe ``tame``), and for
every model file given with ``--file`` (TorchScript ``.pt`` or ``torch.export`` ``.pt2``, fed by
``--file-recipe``), prints images/s of the network alone on this machine (and its ratio to the
first row, run in the same process), the 6- and 2-class accuracy over OATH's 5 fixed splits
with a linear head, and draws accuracy against speed.  Without ``--oath`` the accuracy comes from
a small SYNTHETIC OATH-format tree and says so.  First it times the shipped network with its
'same' padding moved into the convolutions (:func:`~aurora_batch.features.fold_same_padding`)
against the separate padding layers, in the same process, and checks the outputs are identical.
Usage::

    python benchmarks/backbones.py --oath /data/oath [--file net.pt2 ...] [--plot backbones.png]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
from _common import CORES, plain_inference_rate

warnings.filterwarnings("ignore", message=r".*torch\.jit.*is deprecated")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--oath", help="OATH-format tree (images, classifications.csv, train_test_split.csv); default: a SYNTHETIC one"
    )
    ap.add_argument("--file", action="append", default=[], help="model file (.pt/.pt2): (N,3,S,S) -> (N,D)")
    ap.add_argument("--file-recipe", default="tame", help="recipe (and so input size) for the files (default tame)")
    ap.add_argument("--head", default="ridge", choices=["ridge", "svm", "logistic"])
    ap.add_argument("--seconds", type=float, default=8.0, help="timing per backbone")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cache", help="folder for OATH feature caches (reruns skip extraction)")
    ap.add_argument("--plot", default="backbones.png", help="runtime-versus-accuracy PNG")
    args = ap.parse_args()

    from aurora_batch.datasets.oath import read_oath, write_synthetic_oath
    from aurora_batch.model.backbones import backbone_id, feature_dim
    from aurora_batch.model.features import DEFAULT_BATCH_SIZE
    from aurora_batch.model.recipes import get_recipe
    from aurora_batch.products.oath import evaluate, oath_features

    if args.device == "cpu":
        padding_check(args.seconds)
    root = args.oath or write_synthetic_oath(Path(tempfile.mkdtemp()) / "oath-synthetic", n_per_class=40, seed=0)
    ds = read_oath(root)
    rows = [("efficientnet-lite0", "lite128"), ("efficientnet-lite0", "tame")]
    rows += [(f, args.file_recipe) for f in args.file]
    results = []
    for backbone, recipe in rows:
        size = get_recipe(recipe).size
        rate = plain_inference_rate(
            size,
            DEFAULT_BATCH_SIZE["cpu" if args.device == "cpu" else "cuda"],
            CORES,
            seconds=args.seconds,
            device=args.device,
            backbone=backbone,
        )
        feats = oath_features(ds, backbone, recipe, device=args.device, cache=args.cache, progress=False)
        scores = evaluate(ds, feats, args.head)
        results.append(
            {
                "backbone": backbone_id(backbone) if Path(backbone).suffix else backbone,
                "short": Path(backbone).name,
                "size": size,
                "dim": feature_dim(backbone, size),
                "rate": rate,
                **{k: scores[k] for k in ("accuracy6_mean", "accuracy6_std", "accuracy2_mean", "accuracy2_std")},
            }
        )
    print(
        f"OATH protocol on {ds.root} ({len(ds.table):,} images, {len(ds.splits)} splits, {args.head} head)"
        + (" — SYNTHETIC data: the accuracies say nothing about real skies" if ds.synthetic else "")
    )
    print(f"network alone on {args.device}, {CORES} cores, default batches of random images; ratio to the first row")
    print(f"{'backbone':<44}{'input':>6}{'dim':>6}{'img/s':>9}{'ratio':>7}{'6-class %':>14}{'2-class %':>14}")
    for r in results:
        print(
            f"{r['backbone']:<44}{r['size']:>6}{r['dim']:>6}{r['rate']:>9.1f}{r['rate'] / results[0]['rate']:>7.2f}"
            f"{100 * r['accuracy6_mean']:>8.1f} ± {100 * r['accuracy6_std']:<4.1f}"
            f"{100 * r['accuracy2_mean']:>8.1f} ± {100 * r['accuracy2_std']:<4.1f}"
        )
    _plot(results, args.plot, ds.synthetic)
    print(f"plot: {args.plot}")


def padding_check(seconds: float, batch: int = 16) -> None:
    """Images/s of the shipped network with padding moved vs separate, alternating runs; identical outputs."""
    import copy
    import time

    import torch

    from aurora_batch.model.backbones import BACKBONES, fold_batchnorm, fold_same_padding
    from aurora_batch.model.features import tune_process

    tune_process(CORES)
    spec = BACKBONES["efficientnet-lite0"]
    separate = spec.build().eval()
    fold_batchnorm(separate, spec.conv_bn_pairs)
    moved = copy.deepcopy(separate)
    fold_same_padding(moved)
    for size in (128, 224):
        x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
        nets = [m.to(memory_format=torch.channels_last) for m in (separate, moved)]
        best = [0.0, 0.0]
        with torch.inference_mode():
            same = torch.equal(nets[0](x), nets[1](x))
            for _ in range(3):
                for i, net in enumerate(nets):
                    n, t0 = 0, time.perf_counter()
                    while time.perf_counter() - t0 < seconds / 6:
                        net(x)
                        n += batch
                    best[i] = max(best[i], n / (time.perf_counter() - t0))
        print(
            f"shipped network @{size}, batch {batch}: padding layers {best[0]:.1f} img/s, padding in the "
            f"convolutions {best[1]:.1f} img/s: ratio {best[1] / best[0]:.2f}; identical outputs: {same}"
        )


def _plot(results: list[dict], path: str, synthetic: bool) -> None:
    """Accuracy (6-class, error bar: std over splits) against images/s, one labelled point per backbone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for r in results:
        ax.errorbar(r["rate"], 100 * r["accuracy6_mean"], yerr=100 * r["accuracy6_std"], fmt="o", capsize=3)
        ax.annotate(
            f"{r['short']} @{r['size']}",
            (r["rate"], 100 * r["accuracy6_mean"]),
            textcoords="offset points",
            xytext=(6, 6),
            fontsize=8,
        )
    ax.set_xscale("log")
    ax.set_xlabel("images/s (network alone)")
    ax.set_ylabel("6-class accuracy, OATH protocol (%)")
    ax.set_title("Backbones: runtime vs accuracy" + (" — SYNTHETIC data" if synthetic else ""))
    rates = np.array([r["rate"] for r in results])
    ax.set_xlim(rates.min() / 2, rates.max() * 2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
