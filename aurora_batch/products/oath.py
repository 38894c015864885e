"""The OATH protocol (Clausen & Nickisch 2018): features of the OATH images (cached), linear heads over its
five fixed splits, and the table and figure of their accuracies.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

from aurora_batch.datasets.oath import OathDataset
from aurora_batch.model.heads import CLASSES6, LinearHead, fit_head, to_class2
from aurora_batch.products.figures import save_png

log = logging.getLogger(__name__)


def oath_features(
    ds: OathDataset,
    backbone: str = "efficientnet-lite0",
    recipe: str = "oath",
    weights: str | None = None,
    cache: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 64,
    progress: bool = True,
) -> np.ndarray:
    """(N, D) features of every image, cached in a Zarr store under ``cache``."""
    import xarray as xr

    from aurora_batch.formats.decode import decode
    from aurora_batch.model.backbones import backbone_id
    from aurora_batch.model.features import extract_features, tune_process
    from aurora_batch.model.recipes import get_recipe

    key = f"{ds.fingerprint()}-{backbone_id(backbone)}-{Path(weights).name if weights else 'shipped'}-{recipe}"
    store = Path(cache) / f"oath-features-{key}.zarr" if cache else None
    if store is not None and (store / "zarr.json").exists():
        cached = xr.open_zarr(store, consolidated=False)
        if list(cached["picNum"].to_numpy()) == list(ds.table["picNum"]):
            log.info("features from cache %s", store)
            return cached["features"].to_numpy()
    tune_process()
    rec = get_recipe(recipe)
    from tqdm.auto import tqdm

    out = []
    paths = list(ds.table["path"])
    for i in tqdm(
        range(0, len(paths), batch_size),
        desc=f"OATH features ({backbone}, {recipe})",
        unit="batch",
        disable=not progress,
        file=sys.stderr,
    ):
        # Decoded at the recipe's resolution, exactly as seasons do, so heads fit season features.
        batch = np.stack([rec(decode(p.read_bytes(), str(p), rec.min_side)) for p in paths[i : i + batch_size]])
        out.append(extract_features(batch, backbone, weights, device, batch_size))
    feats = np.concatenate(out)
    if store is not None:
        xr.Dataset(
            {"features": (("image", "feature"), feats), "picNum": ("image", ds.table["picNum"].to_numpy(dtype=object))},
            attrs={"backbone": backbone, "recipe": recipe, "oath": str(ds.root)},
        ).to_zarr(store, mode="w", zarr_format=3, consolidated=False)
    return feats


def evaluate(ds: OathDataset, feats: np.ndarray, kind: str = "ridge", alpha: float = 0.03, c: float = 1.0) -> dict:
    """The OATH protocol: fit on each split's first 70 %, score on the rest.

    Returns accuracy (6- and 2-class, mean and std over splits as fractions), per-class
    precision/recall/F1 and the confusion matrix summed over splits (rows: truth).
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y6 = ds.table["class6"].to_numpy()
    per_split, conf = [], np.zeros((6, 6), dtype=int)
    truth, pred = [], []
    for k in range(len(ds.splits)):
        train, test = ds.split(k)
        head = fit_head(feats[train], y6[train], kind, alpha=alpha, c=c)
        p = head.predict(feats[test])
        per_split.append(
            {
                "split": k,
                "accuracy6": float((p == y6[test]).mean()),
                "accuracy2": float((to_class2(p) == to_class2(y6[test])).mean()),
                "n_train": len(train),
                "n_test": len(test),
            }
        )
        conf += confusion_matrix(y6[test], p, labels=range(6))
        truth.append(y6[test])
        pred.append(p)
    prec, rec, f1, support = precision_recall_fscore_support(
        np.concatenate(truth), np.concatenate(pred), labels=range(6), zero_division=0
    )
    a6 = np.array([s["accuracy6"] for s in per_split])
    a2 = np.array([s["accuracy2"] for s in per_split])
    return {
        "head": kind,
        **({"alpha": alpha} if kind == "ridge" else {"C": c}),
        "n_images": len(ds.table),
        "n_splits": len(ds.splits),
        "synthetic": ds.synthetic,
        "accuracy6_mean": float(a6.mean()),
        "accuracy6_std": float(a6.std()),
        "accuracy2_mean": float(a2.mean()),
        "accuracy2_std": float(a2.std()),
        "per_split": per_split,
        "per_class": {
            CLASSES6[i]: {
                "precision": float(prec[i]),
                "recall": float(rec[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in range(6)
        },
        "confusion6": conf.tolist(),
        "classes": list(CLASSES6),
    }


def format_table(scores: dict) -> str:
    lines = [
        f"OATH protocol, {scores['n_splits']} splits, head {scores['head']}"
        + (" (SYNTHETIC data)" if scores.get("synthetic") else ""),
        f"  6-class accuracy: {100 * scores['accuracy6_mean']:.1f} ± {100 * scores['accuracy6_std']:.1f} %",
        f"  2-class accuracy: {100 * scores['accuracy2_mean']:.1f} ± {100 * scores['accuracy2_std']:.1f} %",
        f"  {'class':<9}{'precision':>10}{'recall':>8}{'F1':>7}{'n':>6}",
    ]
    for name, m in scores["per_class"].items():
        lines.append(f"  {name:<9}{m['precision']:>10.2f}{m['recall']:>8.2f}{m['f1']:>7.2f}{m['support']:>6}")
    lines.append("  confusion (rows truth, columns predicted): " + " ".join(c[:4] for c in scores["classes"]))
    lines += ["    " + " ".join(f"{v:>4}" for v in row) for row in scores["confusion6"]]
    return "\n".join(lines)


def plot_scores(scores: dict, path: str | Path) -> None:
    """Confusion matrix and per-class F1 as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = np.array(scores["confusion6"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    norm = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    a.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(6):
        for j in range(6):
            a.text(j, i, conf[i, j], ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
    a.set_xticks(range(6), scores["classes"], rotation=45)
    a.set_yticks(range(6), scores["classes"])
    a.set_xlabel("predicted")
    a.set_ylabel("true")
    a.set_title(f"6 classes: {100 * scores['accuracy6_mean']:.1f} ± {100 * scores['accuracy6_std']:.1f} %")
    f1 = [scores["per_class"][c]["f1"] for c in scores["classes"]]
    b.bar(scores["classes"], f1, color="tab:green")
    b.set_ylim(0, 1)
    b.set_ylabel("F1")
    b.set_title(f"2 classes: {100 * scores['accuracy2_mean']:.1f} ± {100 * scores['accuracy2_std']:.1f} %")
    synth = " — SYNTHETIC data" if scores.get("synthetic") else ""
    fig.suptitle(f"OATH protocol, {scores['head']} head{synth}")
    save_png(fig, path, dpi=100)


def train(
    ds: OathDataset,
    feats: np.ndarray,
    kind: str = "ridge",
    split: int | None = 0,
    alpha: float = 0.03,
    c: float = 1.0,
    meta: dict | None = None,
) -> LinearHead:
    """Fit a head on split ``split``'s training rows (all rows when ``split`` is None), scored on its test rows."""
    y6 = ds.table["class6"].to_numpy()
    rows = np.arange(len(y6)) if split is None else ds.split(split)[0]
    head = fit_head(feats[rows], y6[rows], kind, alpha=alpha, c=c, meta=meta)
    head.meta.update({"trained_on": str(ds.root), "split": split, "n_train": int(len(rows)), "synthetic": ds.synthetic})
    if split is not None:
        test = ds.split(split)[1]
        p = head.predict(feats[test])
        head.meta["scores"] = {
            "accuracy6": float((p == y6[test]).mean()),
            "accuracy2": float((to_class2(p) == to_class2(y6[test])).mean()),
            "n_test": int(len(test)),
        }
    return head
