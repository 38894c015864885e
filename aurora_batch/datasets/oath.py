"""The OATH data set (Clausen & Nickisch 2018): its tree read, and a SYNTHETIC one written in its layout.

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
from pathlib import Path

import numpy as np
import pandas as pd

from aurora_batch.core.classes import to_class2

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
        return self.splits[k, : self.n_train], self.splits[k, self.n_train :]

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
            raise OathFormatError(f"{path}, line {i + 1}: expected a permutation of 0..{n - 1} ({len(values)} values)")
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


def write_synthetic_oath(root: str | Path, n_per_class: int = 40, seed: int = 0, n_splits: int = 5) -> Path:
    """A SYNTHETIC tree in the exact OATH v1.1 format, drawn by the sky model (demos, tests)."""
    from PIL import Image

    from aurora_batch.datasets.synth import CLASSES, render_frame

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
    licence = [
        dashes,
        "SYNTHETIC stand-in for the OATH data set, written by aurora-batch.",
        "It is NOT the data of Clausen & Nickisch (2018); frames come from a sky model.",
    ]
    licence += [f"(licence and header line {i})" for i in range(4, 18)]
    licence[-1] = dashes
    (root / "classifications" / "classifications.csv").write_text("\n".join(licence + [",".join(HEADER)] + rows) + "\n")
    splits = [",".join(f"{v:.18e}" for v in rng.permutation(len(labels))) for _ in range(n_splits)]
    (root / "classifications" / "train_test_split.csv").write_text("\n".join(splits) + "\n")
    (root / "SYNTHETIC").write_text("This OATH-format tree is synthetic (aurora-batch sky model).\n")
    return root
