"""fsspec helpers: every path in aurora-batch is a URL (file://, memory://, s3://, gs://)."""
from __future__ import annotations

import functools
import json
from typing import Any

import fsspec
from fsspec.core import url_to_fs

__all__ = ["filesystem", "join_url", "read_bytes", "write_bytes_atomic"]


@functools.lru_cache(maxsize=32)
def _cached(url_prefix: str, options_json: str):
    return url_to_fs(url_prefix, **json.loads(options_json))[0]


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The (filesystem, path) pair for ``url``; one filesystem instance per process and options."""
    protocol = url.split("://", 1)[0] + "://" if "://" in url else "file://"
    options = dict(storage_options or {})
    if protocol in ("file://", "local://"):
        options.setdefault("auto_mkdir", True)  # writers never pre-create folders
    options = json.dumps(options, sort_keys=True, default=str)
    fs = _cached(protocol, options)
    return fs, fs._strip_protocol(url)


def join_url(url: str, *parts: str) -> str:
    """Join path parts onto a URL with '/' (no os.path: URLs are not local paths)."""
    return "/".join([url.rstrip("/"), *(p.strip("/") for p in parts)])


def read_bytes(url: str, storage_options: dict[str, Any] | None = None) -> bytes:
    fs, path = filesystem(url, storage_options)
    return fs.cat_file(path)


def write_bytes_atomic(url: str, data: bytes, storage_options: dict[str, Any] | None = None) -> None:
    """Write ``data`` so that a reader sees the old object or the new one, never a partial one.

    Object stores make a single PUT atomic; on local disks we write a temporary file and
    rename it into place.
    """
    fs, path = filesystem(url, storage_options)
    if "file" in fs.protocol or "local" in fs.protocol:
        import os
        import uuid

        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)
