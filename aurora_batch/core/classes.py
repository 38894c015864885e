"""The sky classes every stage speaks of: OATH's six (arc 0, diffuse 1, discrete 2, cloudy 3, moon 4, clear 5)
and its two (aurora 0: arc, diffuse, discrete; no aurora 1), with the colour each has in every figure."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

CLASSES6 = ("arc", "diffuse", "discrete", "cloudy", "moon", "clear")  #: OATH class6 codes 0..5
#: the colour of each class in every figure: aurora in greens, cloud grey, moon amber, clear night blue
CLASS_COLOURS = dict(zip(CLASSES6, ("#2ca02c", "#98df8a", "#17becf", "#7f7f7f", "#ffbb78", "#1f1f5f")))
AURORA_CLASSES = (0, 1, 2)  #: class2 = 0 (aurora) for these class6 codes, 1 (no aurora) otherwise


def to_class2(class6: npt.ArrayLike) -> np.ndarray:
    """OATH's 2-class label: 0 aurora (arc, diffuse, discrete), 1 no aurora (cloudy, moon, clear)."""
    return np.where(np.isin(np.asarray(class6), AURORA_CLASSES), 0, 1)
