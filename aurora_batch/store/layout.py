"""Where things live under an output: staged parts, their ledgers, month stores and the catalog."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aurora_batch.core.fs import (
    exists,
    join_url,
)
from aurora_batch.core.keys import PartitionKey


def staging_url(output: str, key: PartitionKey) -> str:
    """``{output}/_staging/{YYYY-MM}/{NYA_5577_20101201}.parquet``."""
    return join_url(output, "_staging", key.month, f"{key.name}.parquet")


def ledger_url(output: str, key: PartitionKey) -> str:
    """``{output}/_staging/{YYYY-MM}/published/{NYA_5577_20101201}.parquet``: a published part's rows without its
    arrays, which its month holds (``store.keep_staging: false``)."""
    return join_url(output, "_staging", key.month, "published", f"{key.name}.parquet")


def store_url(output: str, month: str, fmt: str = "zarr") -> str:
    """``{output}/{YYYY-MM}.zarr`` (a plain Zarr tree) or ``{output}/{YYYY-MM}.icechunk`` (a repository)."""
    return join_url(output, f"{month}.{fmt}")


def month_url(output: str, month: str, storage_options: Mapping[str, Any] | None = None) -> str | None:
    """The published store of ``month``: its Icechunk repository if there is one, else its plain Zarr tree
    (while being replaced on object storage, a plain tree has no root metadata and is not published)."""
    from aurora_batch.store import versions

    options = dict(storage_options or {})
    url = store_url(output, month, "icechunk")
    if exists(url, options) and versions.is_repository(url, options):
        return url
    url = store_url(output, month)
    return url if exists(join_url(url, "zarr.json"), options) else None


def catalog_url(output: str) -> str:
    """The catalog is a Parquet dataset: one file per month plus ``undated.parquet``."""
    return join_url(output, "catalog")
