"""What makes a staged part reusable: the settings its features, keograms and statuses were computed with.

A part staged under another fingerprint is recomputed; the fingerprint also goes into each month
store's attributes and version metadata, so features of different settings never mix in a month.
"""

from __future__ import annotations

from aurora_batch.config import JobConfig
from aurora_batch.model.backbones import backbone_id
from aurora_batch.model.heads import load_head
from aurora_batch.model.quantize import INT8_SCHEME
from aurora_batch.partition.sky import KEOGRAM_PIXELS


def feature_fingerprint(job: JobConfig) -> str:
    """What makes a staged part reusable: backbone, weights, recipe, runtime, head and filter thresholds."""
    f = job.features
    head = ""
    if job.classify.head:
        head = "|head:" + load_head(job.classify.head).meta.get("sha256", "")
    flt = job.filter
    precision = {"float32": "", "int8": f"|{INT8_SCHEME}"}.get(f.precision, f"|{f.precision}")
    runtime = job.feature_runtime()
    precision += "" if runtime == "torch" else f"|rt:{runtime}"
    skymaps = f"|skymaps:{job.skymaps}>={f.min_elevation}" if job.skymaps else ""
    return (
        f"{backbone_id(f.backbone)}|{f.weights or 'shipped'}|{f.recipe}{precision}{head}{skymaps}"
        f"|keogram{KEOGRAM_PIXELS}"
        f"|sun<{flt.sun_max_alt}|moon<{flt.moon_max_alt}@{flt.moon_min_illumination}|px<{f.max_pixels}"
    )
