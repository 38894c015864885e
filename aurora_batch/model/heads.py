"""Linear heads on CNN features: OATH's six classes and aurora vs no aurora.

A head is fitted with scikit-learn (ridge, linear SVM or logistic regression, on
standardised features) and saved as plain arrays: ``HEAD.npz`` (loaded with
``allow_pickle=False``, so a shared head file can never run code) plus ``HEAD.json``, a
sidecar naming the backbone, weights, recipe, classes and scores.  Probabilities are the
softmax of the decision function (for logistic regression this is exactly its model).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aurora_batch._version import __version__
from aurora_batch.core.classes import AURORA_CLASSES, CLASS_COLOURS, CLASSES6, to_class2  # noqa: F401  (re-exported)

HEAD_KINDS = ("ridge", "svm", "logistic")
FORMAT_VERSION = 1


class HeadMismatch(ValueError):
    """A head used with features it was not trained on."""


def _estimator(kind: str, alpha: float, c: float):
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.svm import LinearSVC

    if kind == "ridge":
        return RidgeClassifier(alpha=alpha)
    if kind == "svm":
        return LinearSVC(C=c, max_iter=5000)
    if kind == "logistic":
        return LogisticRegression(C=c, max_iter=2000)
    raise ValueError(f"unknown head {kind!r}; choose from {HEAD_KINDS}")


@dataclasses.dataclass
class LinearHead:
    kind: str
    mean: np.ndarray  #: (D,) feature means
    scale: np.ndarray  #: (D,) feature standard deviations
    coef: np.ndarray  #: (K, D)
    intercept: np.ndarray  #: (K,)
    classes: tuple[str, ...]
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def decision(self, features: np.ndarray) -> np.ndarray:
        z = (np.asarray(features, np.float32) - self.mean) / self.scale
        return z @ self.coef.T + self.intercept

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """(N, K) probabilities summing to 1 per row."""
        d = self.decision(features).astype(np.float64)
        d -= d.max(axis=1, keepdims=True)
        e = np.exp(d)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.argmax(self.decision(features), axis=1)

    def check_compatible(self, backbone: str, recipe: str, weights: str | None = None) -> None:
        """Raise :class:`HeadMismatch` when this head was trained on other features."""
        want = {"backbone": backbone, "recipe": recipe, "weights": _weights_name(weights)}
        have = {k: self.meta.get(k) for k in want}
        bad = [f"{k}: head has {have[k]!r}, job has {want[k]!r}" for k in want if have[k] != want[k]]
        if bad:
            raise HeadMismatch(
                f"head {self.meta.get('path', '?')} does not fit this job's features (" + "; ".join(bad) + ")"
            )

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.npz) and its JSON sidecar; returns the sidecar path."""
        path = Path(path).with_suffix(".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            mean=self.mean,
            scale=self.scale,
            coef=self.coef,
            intercept=self.intercept,
            classes=np.array(self.classes),
        )
        meta = {
            **self.meta,
            "format": "aurora-batch linear head",
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "classes": list(self.classes),
            "feature_dim": int(self.coef.shape[1]),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "aurora_batch_version": __version__,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        meta.pop("path", None)
        sidecar = path.with_suffix(".json")
        sidecar.write_text(json.dumps(meta, indent=2, default=_json_default))
        return sidecar


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def _weights_name(weights: str | None) -> str:
    return Path(weights).name if weights else "shipped"


def fit_head(
    features: np.ndarray,
    labels: np.ndarray,
    kind: str = "ridge",
    classes: tuple[str, ...] = CLASSES6,
    alpha: float = 0.03,
    c: float = 1.0,
    meta: Mapping[str, Any] | None = None,
) -> LinearHead:
    """Fit a linear head on standardised features; ``labels`` index into ``classes``.

    ``alpha`` is the ridge penalty (OATH used 0.03); ``c`` the SVM/logistic inverse penalty.
    """
    x = np.asarray(features, np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-8] = 1.0
    est = _estimator(kind, alpha, c).fit((x - mean) / scale, labels)
    coef = np.zeros((len(classes), x.shape[1]))
    intercept = np.full(len(classes), -1e9)  # classes absent from training never win
    fitted = np.asarray(est.classes_)
    if len(fitted) == 2:  # binary sklearn models keep one row: class 1 vs class 0
        coef[fitted[1]], intercept[fitted[1]] = est.coef_[0], np.ravel(est.intercept_)[0]
        coef[fitted[0]], intercept[fitted[0]] = -est.coef_[0], -np.ravel(est.intercept_)[0]
    else:
        coef[fitted], intercept[fitted] = est.coef_, est.intercept_
    info = {"alpha": alpha} if kind == "ridge" else {"C": c}
    return LinearHead(
        kind,
        mean.astype(np.float32),
        scale.astype(np.float32),
        coef.astype(np.float32),
        intercept.astype(np.float32),
        tuple(classes),
        {**info, **dict(meta or {})},
    )


def class_outputs(proba: np.ndarray, classes: Sequence[str]) -> dict[str, np.ndarray]:
    """Per image, from ``(N, K)`` probabilities over ``classes``: ``label`` (the most probable class)
    and ``aurora_proba`` (the summed probability of arc, diffuse and discrete)."""
    aurora = [i for i, c in enumerate(classes) if c in {CLASSES6[k] for k in AURORA_CLASSES}]
    return {
        "label": np.asarray(classes, dtype=object)[np.asarray(proba).argmax(axis=1)],
        "aurora_proba": np.asarray(proba)[:, aurora].sum(axis=1),
    }


def load_head(path: str | Path) -> LinearHead:
    """Load a head saved by :meth:`LinearHead.save`; errors name the file.

    Cached per process until either file changes (path, size and modification time), so the
    many callers of one job (validation, every partition, the commit) read and hash it once.
    Treat the returned head as read-only.
    """
    path = Path(path).with_suffix(".npz")
    stamps = []
    for p in (path, path.with_suffix(".json")):
        if not p.exists():
            raise FileNotFoundError(f"head file {p} does not exist")
        st = p.stat()
        stamps += [st.st_size, st.st_mtime_ns]
    return _load_head(str(path.resolve()), tuple(stamps))


@functools.lru_cache(maxsize=8)
def _load_head(path_str: str, stamps: tuple[int, ...]) -> LinearHead:
    """The uncached load; ``stamps`` (sizes and mtimes of both files) only key the cache."""
    path = Path(path_str)
    sidecar = path.with_suffix(".json")
    try:
        meta = json.loads(sidecar.read_text())
    except ValueError as err:
        raise ValueError(f"head sidecar {sidecar} is not valid JSON: {err}") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{sidecar}: unsupported head format version {meta.get('format_version')!r}")
    if meta.get("sha256") != hashlib.sha256(path.read_bytes()).hexdigest():
        raise ValueError(f"{path} does not match the checksum in {sidecar}")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in ("mean", "scale", "coef", "intercept", "classes")}
    meta["path"] = str(path)
    return LinearHead(
        meta["kind"],
        arrays["mean"],
        arrays["scale"],
        arrays["coef"],
        arrays["intercept"],
        tuple(str(c) for c in arrays["classes"]),
        meta,
    )
