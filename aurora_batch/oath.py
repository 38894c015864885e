"""The OATH data set (Clausen & Nickisch 2018): reader, feature cache, the 5-split protocol.

Layout of ``oath_v1.1`` (``classification/`` and ``classification.csv`` are accepted too)::

    classifications/classifications.csv    18 licence lines framed by dashes, then
                                           class2,class6,picNum,picType,rotAng
    classifications/train_test_split.csv   5 lines × N indices written as %.18e floats,
                                           0-based rows of the table; first round(0.7·N) train
    images/cropped_scaled/NNNNN.png        256×256 RGB
    images/cropped_scaled_rotated/NNNNN_<rotAng>.png   (optional, after rotate.sh)
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .classify import CLASSES6, LinearHead, fit_head, to_class2

__all__ = ["OathDataset", "OathFormatError", "read_oath", "oath_features", "evaluate", "train", "write_synthetic_oath",
           "TRAIN_FRACTION"]

log = logging.getLogger(__name__)
TRAIN_FRACTION = 0.7
HEADER = ["class2", "class6", "picNum", "picType", "rotAng"]
TYPE_NAMES = {"arc": 0, "diffuse": 1, "discrete": 2, "cloudy": 3, "moon": 4, "noaurora": 5, "clear": 5}


class OathFormatError(ValueError):
    """A missing or malformed part of an OATH tree; the message names the file."""


@dataclasses.dataclass
class OathDataset:
    root: Path
    table: pd.DataFrame  #: class2, class6, picNum, picType, rotAng, path
    splits: np.ndarray  #: (5, N) int, rows of ``table``
    synthetic: bool = False

    @property
    def n_train(self) -> int:
        return int(round(TRAIN_FRACTION * len(self.table)))

    def split(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(train rows, test rows) of split ``k``."""
        if not 0 <= k < len(self.splits):
            raise IndexError(f"split {k} out of range 0..{len(self.splits) - 1}")
        return self.splits[k, :self.n_train], self.splits[k, self.n_train:]

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.table[HEADER].to_csv(index=False).encode())
        return h.hexdigest()[:16]


def _find(root: Path, *candidates: str) -> Path:
    for c in candidates:
        if (root / c).exists():
            return root / c
    raise OathFormatError(f"{root / candidates[0]} is missing (is {root} an unpacked oath_v1.1 tree?)")


def _read_table(path: Path) -> pd.DataFrame:
    lines = path.read_text(errors="replace").splitlines()
    start = next((i for i, line in enumerate(lines) if line.replace(" ", "").startswith("class2,class6")), None)
    if start is None:
        raise OathFormatError(f"{path}: header line '{','.join(HEADER)}' not found")
    try:
        table = pd.read_csv(io.StringIO("\n".join(lines[start:])), dtype={"picNum": str}, skipinitialspace=True)
    except Exception as err:
        raise OathFormatError(f"{path}: cannot parse the table after line {start + 1} ({err})") from None
    if list(table.columns[:5]) != HEADER:
        raise OathFormatError(f"{path}: columns {list(table.columns)} are not {HEADER}")
    for col in ("class2", "class6", "rotAng"):
        bad = pd.to_numeric(table[col], errors="coerce").isna()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise OathFormatError(f"{path}, line {start + 2 + row}: {col} {table[col].iloc[row]!r} is not a number")
        table[col] = table[col].astype(int)
    if not table["class6"].between(0, 5).all():
        row = int(np.flatnonzero(~table["class6"].between(0, 5))[0])
        raise OathFormatError(f"{path}, line {start + 2 + row}: class6 must be 0..5")
    if (to_class2(table["class6"]) != table["class2"]).any():
        row = int(np.flatnonzero(to_class2(table["class6"]) != table["class2"])[0])
        raise OathFormatError(f"{path}, line {start + 2 + row}: class2 does not agree with class6")
    table["picNum"] = table["picNum"].str.strip().str.zfill(5)
    return table[HEADER]


def _read_splits(path: Path, n: int) -> np.ndarray:
    rows = []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            values = np.array([float(v) for v in line.split(",")])
        except ValueError as err:
            raise OathFormatError(f"{path}, line {i + 1}: {err}") from None
        if len(values) != n or not np.array_equal(np.sort(values), np.arange(n)):
            raise OathFormatError(f"{path}, line {i + 1}: expected a permutation of 0..{n - 1} "
                                  f"({len(values)} values)")
        rows.append(values.astype(np.int64))
    if not rows:
        raise OathFormatError(f"{path}: no splits")
    return np.stack(rows)


def read_oath(root: str | Path, rotated: bool = False) -> OathDataset:
    """Read an unpacked OATH tree; every image is checked to exist."""
    root = Path(root)
    if not root.is_dir():
        raise OathFormatError(f"OATH directory {root} does not exist")
    cls_dir = _find(root, "classifications", "classification")
    table = _read_table(_find(cls_dir, "classifications.csv", "classification.csv"))
    splits = _read_splits(_find(cls_dir, "train_test_split.csv"), len(table))
    if rotated:
        folder = _find(root, "images/cropped_scaled_rotated")
        table["path"] = [folder / f"{p}_{a}.png" for p, a in zip(table["picNum"], table["rotAng"])]
    else:
        folder = _find(root, "images/cropped_scaled")
        table["path"] = [folder / f"{p}.png" for p in table["picNum"]]
    missing = [str(p) for p in table["path"] if not p.exists()]
    if missing:
        raise OathFormatError(f"{len(missing)} image(s) missing, first {missing[0]}")
    return OathDataset(root, table, splits, synthetic=(root / "SYNTHETIC").exists())


def oath_features(ds: OathDataset, backbone: str = "efficientnet-lite0", recipe: str = "oath",
                  weights: str | None = None, cache: str | Path | None = None, device: str = "auto",
                  batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """(N, D) features of every image, cached in a Zarr store under ``cache``."""
    import xarray as xr

    from .features import backbone_id, extract_features, tune_process
    from .imaging import decode, get_recipe

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
    for i in tqdm(range(0, len(paths), batch_size), desc=f"OATH features ({backbone}, {recipe})", unit="batch",
                  disable=not progress, file=sys.stderr):
        # Decoded at the recipe's resolution, exactly as seasons do, so heads fit season features.
        batch = np.stack([rec(decode(p.read_bytes(), str(p), rec.min_side)) for p in paths[i:i + batch_size]])
        out.append(extract_features(batch, backbone, weights, device, batch_size))
    feats = np.concatenate(out)
    if store is not None:
        xr.Dataset({"features": (("image", "feature"), feats),
                    "picNum": ("image", ds.table["picNum"].to_numpy(dtype=object))},
                   attrs={"backbone": backbone, "recipe": recipe, "oath": str(ds.root)}).to_zarr(
            store, mode="w", zarr_format=3, consolidated=False)
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
        per_split.append({"split": k, "accuracy6": float((p == y6[test]).mean()),
                          "accuracy2": float((to_class2(p) == to_class2(y6[test])).mean()),
                          "n_train": len(train), "n_test": len(test)})
        conf += confusion_matrix(y6[test], p, labels=range(6))
        truth.append(y6[test])
        pred.append(p)
    prec, rec, f1, support = precision_recall_fscore_support(np.concatenate(truth), np.concatenate(pred),
                                                             labels=range(6), zero_division=0)
    a6 = np.array([s["accuracy6"] for s in per_split])
    a2 = np.array([s["accuracy2"] for s in per_split])
    return {
        "head": kind, **({"alpha": alpha} if kind == "ridge" else {"C": c}),
        "n_images": len(ds.table), "n_splits": len(ds.splits), "synthetic": ds.synthetic,
        "accuracy6_mean": float(a6.mean()), "accuracy6_std": float(a6.std()),
        "accuracy2_mean": float(a2.mean()), "accuracy2_std": float(a2.std()),
        "per_split": per_split,
        "per_class": {CLASSES6[i]: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                                    "support": int(support[i])} for i in range(6)},
        "confusion6": conf.tolist(), "classes": list(CLASSES6),
    }


def format_table(scores: dict) -> str:
    lines = [f"OATH protocol, {scores['n_splits']} splits, head {scores['head']}"
             + (" (SYNTHETIC data)" if scores.get("synthetic") else ""),
             f"  6-class accuracy: {100 * scores['accuracy6_mean']:.1f} ± {100 * scores['accuracy6_std']:.1f} %",
             f"  2-class accuracy: {100 * scores['accuracy2_mean']:.1f} ± {100 * scores['accuracy2_std']:.1f} %",
             f"  {'class':<9}{'precision':>10}{'recall':>8}{'F1':>7}{'n':>6}"]
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
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(ds: OathDataset, feats: np.ndarray, kind: str = "ridge", split: int | None = 0, alpha: float = 0.03,
          c: float = 1.0, meta: dict | None = None) -> LinearHead:
    """Fit a head on split ``split``'s training rows (all rows when ``split`` is None), scored on its test rows."""
    y6 = ds.table["class6"].to_numpy()
    rows = np.arange(len(y6)) if split is None else ds.split(split)[0]
    head = fit_head(feats[rows], y6[rows], kind, alpha=alpha, c=c, meta=meta)
    head.meta.update({"trained_on": str(ds.root), "split": split, "n_train": int(len(rows)),
                      "synthetic": ds.synthetic})
    if split is not None:
        test = ds.split(split)[1]
        p = head.predict(feats[test])
        head.meta["scores"] = {"accuracy6": float((p == y6[test]).mean()),
                               "accuracy2": float((to_class2(p) == to_class2(y6[test])).mean()),
                               "n_test": int(len(test))}
    return head


def write_synthetic_oath(root: str | Path, n_per_class: int = 40, seed: int = 0, n_splits: int = 5) -> Path:
    """A SYNTHETIC tree in the exact OATH v1.1 format, drawn by the sky model (demos, tests)."""
    from PIL import Image

    from .synth import CLASSES, render_frame

    root = Path(root)
    rng = np.random.default_rng(seed)
    img_dir = root / "images" / "cropped_scaled"
    img_dir.mkdir(parents=True, exist_ok=True)
    (root / "classifications").mkdir(exist_ok=True)
    labels = rng.permutation(np.repeat(np.arange(6), n_per_class))
    times = pd.Timestamp("2010-12-01") + pd.to_timedelta(rng.integers(0, 86400 * 30, len(labels)), unit="s")
    rows = []
    for i, (cls, t) in enumerate(zip(labels, times), start=1):
        frame = render_frame(CLASSES[cls], t, rng).astype(np.float32)
        lo, hi = np.percentile(frame, [1, 99.8])
        grey = (np.clip((frame - lo) / max(hi - lo, 1), 0, 1) * 255).astype(np.uint8)
        Image.fromarray(np.dstack([grey] * 3)).save(img_dir / f"{i:05d}.png")
        name = "noaurora" if cls == 5 else CLASSES[cls]
        rows.append(f"{int(to_class2([cls])[0])},{cls},{i:05d},{name},{int(rng.integers(0, 360))}")
    dashes = "-" * 78
    licence = [dashes, "SYNTHETIC stand-in for the OATH data set, written by aurora-batch.",
               "It is NOT the data of Clausen & Nickisch (2018); frames come from a sky model."]
    licence += [f"(licence and header line {i})" for i in range(4, 18)]
    licence[-1] = dashes
    (root / "classifications" / "classifications.csv").write_text(
        "\n".join(licence + [",".join(HEADER)] + rows) + "\n")
    splits = [",".join(f"{v:.18e}" for v in rng.permutation(len(labels))) for _ in range(n_splits)]
    (root / "classifications" / "train_test_split.csv").write_text("\n".join(splits) + "\n")
    (root / "SYNTHETIC").write_text("This OATH-format tree is synthetic (aurora-batch sky model).\n")
    return root
