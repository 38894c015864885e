"""Cross-validated ridge regression from sufficient statistics: a season's features never held at once.

TAME predicts the magnetic perturbation from image features with a ridge model.  Over a
season (hundreds of thousands of 1280-float rows) the rows are read chunk by chunk and only
each fold's sums are kept: ``n``, ``Σx``, ``Σy``, ``Σxxᵀ``, ``Σxy``, ``Σy²`` (13 MB a fold at
1280 features).  Training on all folds but ``k`` subtracts fold ``k``'s sums from the totals,
so every fold's model and its held-out R² come out as scikit-learn's
``make_pipeline(StandardScaler(), Ridge(alpha))`` gives them on the rows themselves (to float
rounding; tested).  One difference: a feature whose variance over the training folds is within
n·eps of its second moment, which the subtraction of sums cannot tell from zero, counts as
constant and is left unscaled, as StandardScaler leaves exact constants.
"""

from __future__ import annotations

import numpy as np


class RidgeStats:
    """Per-fold sums of rows ``(x, y)``; :meth:`fit` and :meth:`r2` for one held-out fold."""

    def __init__(self, folds: int, dim: int):
        self.n = np.zeros(folds)
        self.sx = np.zeros((folds, dim))
        self.sy = np.zeros(folds)
        self.sxx = np.zeros((folds, dim, dim))
        self.sxy = np.zeros((folds, dim))
        self.syy = np.zeros(folds)
        self.shift: np.ndarray | None = None  #: subtracted from every x (the first chunk's mean): exact sums

    def add(self, x: np.ndarray, y: np.ndarray, fold: np.ndarray) -> None:
        """Add rows ``x`` (n, dim), targets ``y`` (n,) to their folds ``fold`` (n,); fold < 0: left out."""
        x = np.asarray(x, np.float64)
        if self.shift is None and len(x):
            self.shift = x.mean(0)
        for k in np.unique(fold[fold >= 0]):
            rows = fold == k
            xs, ys = x[rows] - self.shift, np.asarray(y, np.float64)[rows]
            self.n[k] += len(xs)
            self.sx[k] += xs.sum(0)
            self.sy[k] += ys.sum()
            self.sxx[k] += xs.T @ xs
            self.sxy[k] += xs.T @ ys
            self.syy[k] += ys @ ys

    def _train(self, k: int):
        keep = np.arange(len(self.n)) != k
        return (
            self.n[keep].sum(),
            self.sx[keep].sum(0),
            self.sy[keep].sum(),
            self.sxx[keep].sum(0),
            self.sxy[keep].sum(0),
        )

    def fit(self, k: int, alpha: float) -> tuple[float, np.ndarray]:
        """``(intercept, coef)`` of the standardised ridge trained on every fold but ``k``, in the
        units of the original ``x``: predict ``intercept + x @ coef``."""
        n, sx, sy, sxx, sxy = self._train(k)
        mu, ybar = sx / n, sy / n
        cov = sxx - n * np.outer(mu, mu)  # centred Σxxᵀ
        var = np.diag(cov) / n
        sigma = np.sqrt(np.clip(var, 0, None))
        # A feature constant over the training folds (a dead unit, or one that varies only in the held-out
        # fold) is left unscaled, as StandardScaler leaves constants; its variance here is rounding left
        # from the subtraction above, bounded by n·eps times the second moment it was taken from.
        sigma[var <= n * np.finfo(float).eps * np.diag(sxx) / n] = 1.0
        gram = cov / np.outer(sigma, sigma)
        w = np.linalg.solve(gram + alpha * np.eye(len(mu)), (sxy - n * mu * ybar) / sigma)
        coef = w / sigma
        return float(ybar - mu @ coef - self.shift @ coef), coef

    def r2(self, k: int, intercept: float, coef: np.ndarray) -> float:
        """Coefficient of determination of ``intercept + x @ coef`` on fold ``k``'s rows."""
        n, sx, sy, sxx, sxy, syy = (self.n[k], self.sx[k], self.sy[k], self.sxx[k], self.sxy[k], self.syy[k])
        a = intercept + self.shift @ coef  # the same model on shifted rows
        pred_sq = n * a * a + 2 * a * (sx @ coef) + coef @ sxx @ coef
        cross = a * sy + coef @ sxy
        residual = syy - 2 * cross + pred_sq
        total = syy - sy * sy / n
        return float(1 - residual / total) if total > 0 else float("nan")
