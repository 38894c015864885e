"""Classify a handful of files in this process: no job spec, no cluster, no output store.

The season's own input pipeline (name parsing, readers, per-frame Sun/Moon, not-sky checks,
recipe, network, head) runs in-process, so the numbers are the ones a season would store::

    import aurora_batch as ab
    table = ab.classify_files(["s3://bucket/nya4/5577/2010/20101205/*.png"], "heads/oath-ridge.npz",
                              storage_options={"anon": True})
    table[["time", "label", "aurora_proba"]]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from aurora_batch.config import FeatureConfig, FilterConfig, JobSpecError, layout_formats
from aurora_batch.core.fs import filesystem
from aurora_batch.core.keys import WHOLE_FILE, Status
from aurora_batch.formats.names import match_name
from aurora_batch.model.heads import load_head
from aurora_batch.partition.featurise import FeaturiseSettings, featurise
from aurora_batch.plan.catalog import IMAGE_EXTENSIONS

KEEP_ALL = FilterConfig(sun_max_alt=90.0, moon_max_alt=None)  #: nothing is dropped for the Sun or the Moon


def expand_inputs(urls: str | Iterable[str], storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Files of ``urls``: each a file, a glob, or a folder (searched recursively for images)."""
    out: list[str] = []
    for url in [urls] if isinstance(urls, str) else list(urls):
        fs, path = filesystem(url, dict(storage_options or {}))
        if any(c in path for c in "*?["):
            found = sorted(fs.glob(path))
        elif fs.isdir(path):
            found = sorted(p for p in fs.find(path) if p.lower().endswith(IMAGE_EXTENSIONS))
        else:
            found = [path]
        if not found:
            raise FileNotFoundError(f"no files match {url}")
        out += [fs.unstrip_protocol(p) for p in found]
    return list(dict.fromkeys(out))


def classify_files(
    urls: str | Iterable[str],
    head: str | None = None,
    *,
    recipe: str | None = None,
    backbone: str | None = None,
    device: str = "auto",
    storage_options: Mapping[str, Any] | None = None,
    layout: Any = "auto",
    features: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """One row per frame of ``urls``: url, frame, station, time (UTC, when the name or file gives it),
    status, detail, Sun and Moon altitudes (degrees; NaN for a station not in the table), and

    - with a ``head``: ``p_<class>`` per class, ``label`` and ``aurora_proba``;
    - with ``features``: the feature vector, ``f0000`` … (float32).

    Frames that are not kept (unreadable, not sky) have a status and NaN values.  ``recipe`` and
    ``backbone`` default to the head's (else ``lite128`` and the shipped backbone); a head trained
    with other settings is refused (:class:`~aurora_batch.model.heads.HeadMismatch`).
    """
    meta = load_head(head).meta if head else {}
    try:
        network = FeatureConfig(
            recipe=recipe or meta.get("recipe", "lite128"), device=device, backbone=backbone or _backbone_from(meta)
        )
        formats = layout_formats(layout)
    except ValidationError as err:
        raise JobSpecError(f"classify_files: {err}") from None
    network.check_files(head)  # a head that does not fit the features is refused here
    settings = FeaturiseSettings(network, KEEP_ALL, formats, dict(storage_options or {}))
    rows = _parse(expand_inputs(urls, storage_options), formats)
    from tqdm.auto import tqdm

    unsupported = {f.name: f.note for f in formats if f.reader == "unsupported"}
    out: list[dict] = [
        {**r, "status": Status.UNSUPPORTED, "detail": unsupported[r["format"]], "frame": WHOLE_FILE}
        for r in rows
        if r["format"] in unsupported
    ]
    rows = [r for r in rows if r["format"] not in unsupported]
    arrays: list[np.ndarray] = []
    with tqdm(total=len(rows), desc="classify", unit="file", disable=not progress) as bar:
        for station in sorted({r["station"] or "" for r in rows}):
            todo = [r for r in rows if (r["station"] or "") == station]
            got, _ = featurise(settings, todo, out, tick=lambda: bar.update(1))
            arrays.append(got["features"])
    return _table(out, np.concatenate(arrays) if arrays else np.empty((0, 0), np.float32), head, features)


def _backbone_from(meta: dict) -> str:
    """A head's backbone; a model-file backbone is named by identity and must be given explicitly."""
    name = meta.get("backbone", "efficientnet-lite0")
    if "@sha256:" in name:
        raise ValueError(f"the head was trained on the model file {name}: pass backbone=<that file>")
    return name


def _parse(files: list[str], formats) -> list[dict]:
    rows = []
    for url in files:
        try:
            p = match_name(url, formats)
            rows.append(
                {"url": url, "station": p.station, "time": p.time, "format": p.format, "wavelength": p.wavelength}
            )
        except ValueError:  # not a known archive name: still an image, of no known station or time
            rows.append({"url": url, "station": None, "time": pd.NaT, "format": None, "wavelength": None})
    return rows


def _table(out: list[dict], features: np.ndarray, head: str | None, with_features: bool) -> pd.DataFrame:
    table = pd.DataFrame(out)
    kept = (table["status"] == Status.KEPT).to_numpy()
    cols = {}
    if head:
        from aurora_batch.model.heads import class_outputs

        h = load_head(head)
        proba = np.full((len(table), len(h.classes)), np.nan, np.float32)
        if len(features):
            proba[kept] = h.predict_proba(features)
        cols.update({f"p_{c}": proba[:, i] for i, c in enumerate(h.classes)})
        outputs = class_outputs(proba[kept], h.classes) if kept.any() else {}
        cols["label"] = np.full(len(table), None, object)
        cols["aurora_proba"] = np.full(len(table), np.nan, np.float32)
        for name, values in outputs.items():
            cols[name][kept] = values
    if with_features and len(features):
        full = np.full((len(table), features.shape[1]), np.nan, np.float32)
        full[kept] = features
        cols.update({f"f{i:04d}": full[:, i] for i in range(features.shape[1])})
    table = table.assign(
        frame=table["frame"].fillna(WHOLE_FILE).astype(int), time=pd.to_datetime(table["time"]).astype("datetime64[ns]")
    )
    base = ["url", "frame", "station", "time", "status", "detail", "sun_alt", "moon_alt", "saturated"]
    return pd.concat([table.reindex(columns=base), pd.DataFrame(cols, index=table.index)], axis=1)


def feature_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if len(c) == 5 and c[0] == "f" and c[1:].isdigit()]


def write_table(table: pd.DataFrame, path: str) -> str:
    """Write a :func:`classify_files` table by the file's suffix: ``.csv`` (light columns only), ``.parquet``
    (features, if any, as one fixed-size list column ``features``) or ``.npz`` (a column per array, and
    ``features`` as one (N, D) float32 array); the path written."""
    from pathlib import Path

    out = Path(path)
    feats = feature_columns(table)
    light = table.drop(columns=feats)
    if out.suffix not in (".csv", ".parquet", ".npz"):
        raise ValueError(f"{out}: write a table as .csv, .parquet or .npz")
    if feats and out.suffix == ".csv":
        raise ValueError(f"{out}: features ({len(feats)} columns) go to a .parquet or .npz file, not a CSV")
    out.parent.mkdir(parents=True, exist_ok=True)
    matrix = table[feats].to_numpy(np.float32) if feats else None
    if out.suffix == ".csv":
        light.to_csv(out, index=False)
    elif out.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrow = pa.Table.from_pandas(light, preserve_index=False)
        if matrix is not None:
            arrow = arrow.append_column(
                "features", pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])
            )
        pq.write_table(arrow, out)
    else:
        arrays: dict[str, np.ndarray] = {
            c: light[c].to_numpy()
            if light[c].dtype.kind in "fiubM"
            else np.array(light[c].astype(str).tolist(), dtype=str)
            for c in light.columns
        }  # loads without pickle
        extra = {"features": matrix} if matrix is not None else {}
        # the keys are column names, never savez's keyword allow_pickle, which mypy cannot tell
        np.savez_compressed(out, **arrays, **extra)  # type: ignore[arg-type]
    return str(out)


def describe(table: pd.DataFrame) -> str:
    """A few lines for a terminal: frames by status and, with a head, by label."""
    lines = [
        f"{len(table)} frame(s) of {table['url'].nunique()} file(s): "
        + ", ".join(f"{k} {v}" for k, v in table["status"].value_counts().items())
    ]
    if "label" in table:
        counts = table["label"].dropna().value_counts()
        lines.append("labels: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none"))
    return "\n".join(lines)
