"""Writing matplotlib figures: one way for every product."""

from __future__ import annotations

import gc
from pathlib import Path


def save_png(fig, path: str | Path, dpi: int = 90, tight: bool = True) -> Path:
    """Write ``fig`` to ``path`` (its folder made), close it, and free it now.

    A figure is a web of reference cycles (tens of thousands of artists and transforms): closed, it waits for
    the cyclic collector, so how much of it a report held at its peak depended on when the collector last ran
    (measured on the report of 1 and 4 fabricated months: traced peak 17.5 / 17.9 MiB, then 13.8 / 15.4 MiB).
    """
    import matplotlib.pyplot as plt

    if tight:
        fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    gc.collect()
    return path
