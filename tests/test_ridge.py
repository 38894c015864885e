"""The streamed ridge regression equals scikit-learn's on the rows themselves."""

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from aurora_batch.products.ridge import RidgeStats


def test_fold_sums_give_sklearns_standardised_ridge():
    rng = np.random.default_rng(0)
    n, d = 600, 40
    x = rng.normal(3, 2, (n, d)).astype(np.float32)  # stored features are float32
    x[:, 5] = 1.0  # a dead unit: constant everywhere
    y = x[:, :3] @ [2.0, -1.0, 0.5] + rng.normal(0, 1, n) + 10
    nights = rng.integers(0, 9, n)
    fold = np.full(n, -1)
    for k, (_, test) in enumerate(GroupKFold(n_splits=5).split(x, groups=nights)):
        fold[test] = k
    fold[::7] = -1  # rows without a partner are left out
    # Units constant over fold 2's training rows but not its test rows: their variance from the sums is
    # rounding (either sign), and must not scale them up into the held-out predictions.
    x[:, 10:30] = np.where((fold == 2)[:, None], 7.3, rng.uniform(0, 5, 20)).astype(np.float32)
    stats = RidgeStats(5, d)
    for lo in range(0, n, 128):  # chunk by chunk, as the report reads a season
        stats.add(x[lo : lo + 128], y[lo : lo + 128], fold[lo : lo + 128])
    for k in range(5):
        train, test = (fold >= 0) & (fold != k), fold == k
        model = make_pipeline(StandardScaler(), Ridge(alpha=100.0)).fit(x[train], y[train])
        intercept, coef = stats.fit(k, 100.0)
        np.testing.assert_allclose(intercept + x[test] @ coef, model.predict(x[test]), rtol=1e-5)
        assert abs(stats.r2(k, intercept, coef) - model.score(x[test], y[test])) < 1e-5
