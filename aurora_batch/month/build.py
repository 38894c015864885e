"""The month build: staged partitions → classes → joined instruments → one published Zarr store.

Every published month is written the same way, by ``season``, ``nightly`` and ``join`` alike
(:func:`aurora_batch.month.commit.commit_month`): a month already published grows by the rows of its
new or changed parts (:mod:`aurora_batch.month.increment`), one built for the first time (or whose
model, head, join or chunking changed) is built whole; when the job has a ``join:`` section the
ceilometer and magnetometer samples nearest to every image written (:func:`aurora_batch.instruments.join.nearest`,
over the month widened by each source's tolerance, so images near month borders find their true
partner) are written beside them as ``cbh``, ``cloud_detected``, ``ceilometer_cloudy``, ``cbh_dt``
and ``mag_<element>``, ``mag_dt``; then the month is published atomically (a rename, or one
Icechunk commit).

A month is written only when a staged part is not the version it was built from (size and
modification time, kept per part in its root attributes), or the join's inputs changed (their
files' sizes and modification times, and the join settings: :func:`join_fingerprint`).  So an
idle nightly or a repeated ``join`` leaves every chunk as it was, and a run killed after staging
its partitions but before publishing their month is completed by the next run, which finds
every partition staged and the month behind them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from aurora_batch._version import __version__
from aurora_batch.config import JobConfig
from aurora_batch.core.fs import exists, filesystem, join_url
from aurora_batch.core.keys import PartitionKey
from aurora_batch.core.stations import get_station
from aurora_batch.model.backbones import feature_dim, is_model_file, model_file_sha256
from aurora_batch.model.heads import load_head
from aurora_batch.model.quantize import INT8_SCHEME
from aurora_batch.model.recipes import get_recipe
from aurora_batch.month.commit import Publication, commit_month
from aurora_batch.month.increment import layout_key
from aurora_batch.month.join import SourceFiles, join_group, load_sources, month_sources
from aurora_batch.month.labels import write_labels
from aurora_batch.month.similarity import write_indexes
from aurora_batch.partition.fingerprint import feature_fingerprint
from aurora_batch.store.layout import catalog_url, month_url, store_url
from aurora_batch.store.ledger import write_month_catalog
from aurora_batch.store.parts import compact_parts
from aurora_batch.store.state import MonthState, part_name
from aurora_batch.store.zarrs import zarr_store

log = logging.getLogger(__name__)


@dataclasses.dataclass
class MonthInputs:
    """What a month is built from: its staged parts with their versions, and what this run knows of them."""

    month: str
    parts: dict[str, str]  #: staged part URL -> its version (size and modification time)
    kept: dict[str, int]  #: part file name -> kept images, where this run's results tell
    digest: str = ""  #: of the parts' names, sizes and modification times: what the month is built from
    published: tuple[str, dict] | None = None  #: the published month store and its root attributes, when read


@dataclasses.dataclass
class MonthBuild:
    month: str
    counts: dict[str, int]  #: images per group path, of the groups written
    matched: dict[str, int]  #: instrument kind -> images written with a partner within tolerance
    rows_written: int = 0  #: image rows written
    incremental: bool = False  #: appended to the published month rather than rebuilt whole
    labels: int = 0  #: rows written to the label table


def _staged(job: JobConfig, month: str, folder: str = "") -> dict[str, dict]:
    """The month's staged parts (or those in ``folder``, ``published``: the compacted ones): URL -> listing details
    (size, modification time or ETag)."""
    fs, path = filesystem(
        join_url(job.output, "_staging", month, *([folder] if folder else [])), job.output_storage_options
    )
    return {fs.unstrip_protocol(p): info for p, info in sorted(fs.glob(f"{path}/*.parquet", detail=True).items())}


def _version_of(info: dict) -> str:
    """What changes when an object is rewritten: its size and modification time (or ETag)."""
    changed = info.get("mtime") or info.get("ETag") or info.get("LastModified") or info.get("created")
    return f"{info.get('size')}:{changed}"


def month_inputs(job: JobConfig, month: str, results=()) -> MonthInputs:
    """The parts of ``month``: this run's partition results, plus the month's other days staged by earlier runs,
    each with its version; kept images are known for this run's parts (the others' are read if needed)."""
    staged = _staged(job, month)
    # A part the published month was built from stays in, even when the listing lags and misses it (a HEAD
    # tells whether it is there): a lagging listing must never publish the month without one of its days.
    fs, _ = filesystem(job.output, job.output_storage_options)

    def head(url: str) -> dict:  # past the listing cache
        path = fs._strip_protocol(url)
        fs.invalidate_cache(path)
        return fs.info(path)

    published = published_attrs(job, month)
    compacted = {part_name(u) for u in _staged(job, month, "published")}
    for name in published[1].get("parts", []) if published else []:
        url = fs.unstrip_protocol(fs._strip_protocol(join_url(job.output, "_staging", month, name)))
        if url not in staged and name not in compacted:
            with contextlib.suppress(FileNotFoundError):  # deleted since: the month keeps it as it is
                staged[url] = head(url)
    # This run's parts were written moments ago: a listing may not show them yet, or show an overwritten
    # part's earlier version (then the next run's digest differs and it rebuilds the month for nothing).
    results = [r for r in results if not r.published]  # resumed from a compacted part: in the month already
    for r in results:
        staged[r.url] = head(r.url)
    versions = {u: _version_of(staged[u]) for u in sorted(staged)}
    record = [(part_name(u), v) for u, v in versions.items()]
    return MonthInputs(
        month,
        versions,
        {part_name(r.url): r.images for r in results},
        hashlib.sha256(json.dumps(record).encode()).hexdigest(),
        published,
    )


def join_fingerprint(job: JobConfig, month: str, sources: list[SourceFiles] | None = None) -> str:
    """What ``month``'s joined variables depend on: the join settings and the size and modification time of
    every instrument file its join reads (:func:`~aurora_batch.month.join.month_sources`)."""
    if not (job.join.ceilometer or job.join.magnetometer):
        return ""
    described = [
        {
            "kind": s.kind,
            **s.source.model_dump(exclude={"storage_options"}),
            "files": [[f.url, f.size, f.version] for f in s.files],
        }
        for s in (month_sources(job, month) if sources is None else sources)
    ]
    record = {"cloud_max_cbh": job.join.cloud_max_cbh, "sources": described}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def published_attrs(job: JobConfig, month: str) -> tuple[str, dict] | None:
    """The published month store and its root attributes, or None when there is none."""
    import zarr

    url = month_url(job.output, month, job.output_storage_options)
    if url is None:
        return None
    return url, dict(zarr.open_group(store=zarr_store(url, job.output_storage_options), mode="r").attrs)


def update_labels(job: JobConfig, month: str) -> int | None:
    """Bring the label table and similarity index of a published ``month`` up to its store (months published before
    they existed, or whose tables a killed run left behind); None when the month has no store or no recorded
    state.  Returns the label rows written."""
    published = published_attrs(job, month)
    state = MonthState.from_attrs(published[1]) if published else None
    if published is None or state is None:
        return None
    store = zarr_store(published[0], job.output_storage_options)
    write_indexes(job.output, month, store, state, job.output_storage_options)
    return write_labels(job.output, month, store, state, label_identity(published[1]), job.output_storage_options)


def label_identity(attrs: Mapping[str, Any]) -> dict[str, str]:
    """The model and head a month's labels come from, for every row of its label table."""
    return {k: str(attrs.get(k, "")) for k in ("backbone", "recipe", "head", "head_sha256")}


def common_attrs(job: JobConfig) -> dict:
    """Attributes on every group: model, recipe, thresholds, head, version."""
    f = job.features
    attrs = {
        "aurora_batch_version": __version__,
        "backbone": os.path.basename(f.backbone),
        "feature_dim": feature_dim(f.backbone, get_recipe(f.recipe).size),
        "weights": (
            os.path.basename(f.weights)
            if f.weights
            else "in the backbone file"
            if is_model_file(f.backbone)
            else "pretrained (shipped)"
        ),
        "recipe": f.recipe,
        "precision": f.precision if f.precision != "int8" else INT8_SCHEME,
        "runtime": job.feature_runtime(),
        "sun_max_alt": job.filter.sun_max_alt,
        "moon_max_alt": job.filter.moon_max_alt,
        "moon_min_illumination": job.filter.moon_min_illumination,
        "threshold_units": "degrees (altitudes), 1 (illumination)",
        "time_standard": "UTC",
    }
    if is_model_file(f.backbone):
        attrs["backbone_sha256"] = model_file_sha256(f.backbone)
    if job.classify.head:
        meta = load_head(job.classify.head).meta
        attrs.update(
            {
                "head": os.path.basename(job.classify.head),
                "head_kind": meta["kind"],
                "head_sha256": meta["sha256"],
                "head_trained_on": meta.get("trained_on", "?"),
                "head_synthetic": bool(meta.get("synthetic", False)),
            }
        )
        if meta.get("synthetic"):
            attrs["head_note"] = "SYNTHETIC demo head, trained on sky-model images: not for science"
    return attrs


def build_month(
    job: JobConfig,
    inputs: MonthInputs,
    attrs: dict,
    join_fp: str,
    allow_shrink: bool = True,
    force: bool = False,
    command: str = "season",
    map_tasks=None,
    sources: list[SourceFiles] | None = None,
) -> MonthBuild | None:
    """Build and publish one month from ``inputs`` (see the module docs); None when the published month was
    built from the same parts, join and store format.

    The published month is appended to where it can be (:mod:`aurora_batch.month.increment`); with
    ``force`` it is rebuilt whole regardless.  ``command`` (season, nightly, join) is recorded in
    the commit of a versioned month; ``map_tasks`` runs the stations' writes (a cluster's map).  ``sources``:
    the instrument files ``join_fp`` was computed from (:func:`~aurora_batch.month.join.month_sources`), so that
    the join reads what its fingerprint records (default: listed again).
    """
    published = inputs.published
    previous = MonthState.from_attrs(published[1]) if published is not None else None
    if not inputs.parts and previous is None:
        raise FileNotFoundError(
            f"month {inputs.month}: no staged parts under {join_url(job.output, '_staging')} to build it from"
        )
    if not force and _unchanged(job, inputs, previous, join_fp):
        return None
    names = [*(previous.parts if previous else ()), *map(part_name, inputs.parts)]
    group_attrs = {s: get_station(s).attrs() for s in sorted({PartitionKey.parse(n).station for n in names})}
    classes = load_head(job.classify.head).classes if job.classify.head else ()
    instruments = load_sources(month_sources(job, inputs.month) if sources is None else sources) if join_fp else []

    def join_into(store, gpath: str, offset: int) -> dict[str, int]:
        station = gpath.split("/")[0]
        mine = [(kind, src, frame[frame["station"] == station]) for kind, src, frame in instruments]
        return join_group(store, gpath, inputs.month, mine, job.join.cloud_max_cbh, offset)

    fmt, attrs = job.store_format(), {**attrs, "join_fingerprint": join_fp}
    built = commit_month(
        job.output,
        inputs.month,
        inputs.parts,
        group_attrs,
        attrs,
        job.output_storage_options,
        classes,
        allow_shrink=allow_shrink,
        kept=inputs.kept,
        finish=join_into if instruments else None,
        publication=_publication(job, inputs, attrs, join_fp, command),
        root_attrs={"parts_digest": inputs.digest},
        previous=previous,
        layout=layout_key(attrs, join_fp, classes, fmt),
        whole=force,
        map_tasks=map_tasks,
    )
    labels = 0
    if built.state is not None:  # before the catalog, whose presence makes the month idle
        store = zarr_store(store_url(job.output, inputs.month, fmt), job.output_storage_options)
        labels = write_labels(
            job.output, inputs.month, store, built.state, label_identity(attrs), job.output_storage_options
        )
        write_indexes(job.output, inputs.month, store, built.state, job.output_storage_options)
    write_month_catalog(job.output, inputs.month, built.catalog, job.output_storage_options)
    if not job.keep_staging():  # the month holds the parts' arrays now: keep only their ledgers
        compact_parts(inputs.parts, job.output_storage_options)
    matched = {kind: built.matched.get(kind, 0) for kind, _, _ in instruments}
    return MonthBuild(inputs.month, built.counts, matched, built.rows_written, built.incremental, labels)


def _unchanged(job: JobConfig, inputs: MonthInputs, previous: MonthState | None, join_fp: str) -> bool:
    """Whether the published month was built from the same parts, join and store format, and has its catalog
    (a month whose catalog a killed run did not write gets it now); logs why a published month is written."""
    published = inputs.published
    if published is None:
        return False
    same_parts = (
        all(previous.parts.get(part_name(u)) == v for u, v in inputs.parts.items())
        if previous
        else published[1].get("parts_digest") == inputs.digest
    )
    same_join = published[1].get("join_fingerprint", "") == join_fp
    if (
        same_parts
        and same_join
        and published[0].endswith(f".{job.store_format()}")  # a plain month is converted to a repository
        and exists(join_url(catalog_url(job.output), f"{inputs.month}.parquet"), job.output_storage_options)
    ):
        return True
    parts = "the same" if same_parts else [part_name(u) for u in inputs.parts]
    log.info("month %s: written (parts %s; join %s)", inputs.month, parts, "same" if same_join else "changed")
    return False


def _publication(job: JobConfig, inputs: MonthInputs, attrs: dict, join_fp: str, command: str) -> Publication:
    """How ``inputs.month`` is published; for a versioned month, what its commit records."""
    fmt = job.store_format()
    if fmt != "icechunk":
        return Publication(fmt)
    keys = [PartitionKey.parse(u) for u in inputs.parts]
    metadata = {
        "command": command,
        "feature_fingerprint": feature_fingerprint(job),
        "join_fingerprint": join_fp,
        "window_start": f"{job.start:%Y-%m-%dT%H:%M:%SZ}",
        "window_end": f"{job.end:%Y-%m-%dT%H:%M:%SZ}",
        "partitions": len(keys),
        "days": sorted({k.day.isoformat() for k in keys}),
    }
    metadata.update(
        {
            k: attrs[k]
            for k in ("aurora_batch_version", "backbone", "backbone_sha256", "weights", "recipe", "head", "head_sha256")
            if k in attrs
        }
    )
    message = f"{command} {inputs.month}: {len(keys)} partitions ({', '.join(sorted({k.station for k in keys}))})"
    return Publication(fmt, message, metadata, job.store.keep_versions)
