"""Month stores as Zarr: opened from a URL (plain Zarr, or an Icechunk repository at a version), their
groups listed, their metadata consolidated.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from aurora_batch.core.fs import (
    filesystem,
    is_local,
)


def zarr_store(
    url: str, storage_options: Mapping[str, Any] | None = None, version: str | None = None, as_of: Any = None
):
    """A zarr v3 store object for any fsspec URL; a month's Icechunk repository (``*.icechunk``) opens read-only
    at its newest version, or at ``version`` (tag or snapshot id) or ``as_of`` (UTC)."""
    from zarr.storage import FsspecStore, LocalStore

    if url.rstrip("/").endswith(".icechunk"):
        from aurora_batch.store import versions

        return versions.open_store(url, storage_options, version, as_of)
    if version is not None or as_of is not None:
        raise LookupError(f"{url} is a plain Zarr store: it has no versions (store.format: icechunk keeps them)")
    fs, path = filesystem(url, dict(storage_options or {}))
    if is_local(fs):
        return LocalStore(path)
    return FsspecStore.from_url(url, storage_options=dict(storage_options or {}) or None)


def check_store_format(output: str, fmt: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """``ValueError`` when plain months would be written beside Icechunk ones (readers open a month's repository
    first, so a new plain store would stay hidden behind it)."""
    if fmt != "zarr":
        return
    fs, root = filesystem(output, dict(storage_options or {}))
    try:
        found = sorted(
            p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False) if p.rstrip("/").endswith(".icechunk")
        )
    except FileNotFoundError:
        return
    if found:
        raise ValueError(
            f"store.format is zarr, but {output} holds Icechunk repositories ({', '.join(found[:3])}), "
            "which readers open before plain months: keep store.format: icechunk for this output"
        )


def consolidate(store) -> None:
    """Consolidate a store's metadata (an extension in Zarr v3 that xarray reads: fast opens)."""
    import zarr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(store)


def list_groups(store, root: str = "") -> list[str]:
    """Paths of the groups in a month store that hold images (``NYA``, ``NYA/5577``, ...)."""
    import zarr

    group = zarr.open_group(store=store, mode="r", path=root or None)
    paths = []
    for name, sub in group.groups():
        full = f"{root}/{name}" if root else name
        if "time" in sub.array_keys():
            paths.append(full)
        paths += list_groups(store, full)
    return paths
