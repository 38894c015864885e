"""fsspec helpers: every path in aurora-batch is a URL (file://, memory://, s3://, gs://).

Credentials come from ``storage_options`` or the environment (fsspec's ``FSSPEC_S3_*``,
``AWS_*``, profiles); they are never logged or written into stores.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from typing import Any

import fsspec
from fsspec.core import url_to_fs


@functools.lru_cache(maxsize=32)
def _cached(protocol: str, options_json: str):
    return url_to_fs(protocol, **json.loads(options_json))[0]


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The (filesystem, path) pair for ``url``; one filesystem instance per process and options.

    An S3 endpoint given in ``storage_options`` (``endpoint_url`` or ``client_kwargs.endpoint_url``)
    wins over fsspec's ``FSSPEC_S3_ENDPOINT_URL``, which applies otherwise.
    """
    protocol = url.split("://", 1)[0] + "://" if "://" in url else "file://"
    options = dict(storage_options or {})
    client = dict(options.get("client_kwargs") or {})
    if protocol in ("s3://", "s3a://") and "endpoint_url" in client:  # both given: s3fs would get two endpoints
        options["endpoint_url"] = client.pop("endpoint_url")
        options["client_kwargs"] = client
    if protocol in ("file://", "local://"):
        options.setdefault("auto_mkdir", True)  # writers never pre-create folders
    elif protocol != "memory://":
        # Workers live long and other processes write the same prefixes: a cached listing
        # would hide a new staged part from a commit, or a new file from a nightly run.
        options.setdefault("use_listings_cache", False)
    fs = _cached(protocol, json.dumps(options, sort_keys=True, default=str))
    return fs, fs._strip_protocol(url)


class StorageError(OSError):
    """A storage location a job cannot use: its endpoint unreachable, no credentials, access denied, no bucket."""


def endpoint_of(url: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """Where ``url`` is served from, for messages: an S3 endpoint, or the protocol's default."""
    options = dict(storage_options or {})
    return (
        options.get("endpoint_url")
        or dict(options.get("client_kwargs") or {}).get("endpoint_url")
        or (os.environ.get("FSSPEC_S3_ENDPOINT_URL") if url.startswith("s3") else None)
        or f"the default {url.split('://', 1)[0]} endpoint"
    )


def _storage_cause(err: BaseException | None, endpoint: str) -> str | None:
    """Why storage failed, in one phrase, when ``err`` (or what caused it) is a storage failure."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        name, text = type(err).__name__, str(err)
        if (
            name in ("EndpointConnectionError", "ClientConnectorError", "ConnectTimeoutError", "ConnectionRefusedError")
            or "Could not connect" in text
        ):
            return f"cannot reach {endpoint} ({text.splitlines()[0][:160]})"
        if name in ("NoCredentialsError", "PartialCredentialsError"):
            return (
                "no credentials (storage_options key and secret, FSSPEC_S3_KEY and FSSPEC_S3_SECRET, "
                "or AWS_* variables or a profile)"
            )
        if isinstance(err, PermissionError) or any(
            k in text for k in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden")
        ):
            return f"access denied at {endpoint}: check the key, the secret and the bucket's policy ({name})"
        if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
            return f"no such bucket at {endpoint}"
        err = err.__cause__ or err.__context__
    return None


@contextlib.contextmanager
def storage_errors(url: str, storage_options: Mapping[str, Any] | None = None):
    """Turn a storage failure inside the block into one :class:`StorageError` naming ``url``, its endpoint and
    the cause; other errors pass unchanged."""
    try:
        yield
    except StorageError:
        raise
    except Exception as err:
        cause = _storage_cause(err, endpoint_of(url, storage_options))
        if cause is None:
            raise
        raise StorageError(f"{url}: {cause}") from err


def exists(url: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    fs, path = filesystem(url, storage_options)
    return fs.exists(path)


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in fs.protocol or "local" in fs.protocol


def url_maker(fs: fsspec.AbstractFileSystem):
    """A fast ``fs.unstrip_protocol``: the protocol prefix added to each listed path (one check per call)."""
    sample = "/x/y" if is_local(fs) or "memory" in fs.protocol else "x/y"
    prefix = fs.unstrip_protocol(sample)[: -len(sample)] if fs.unstrip_protocol(sample).endswith(sample) else None

    def url(path: str) -> str:
        return prefix + path if prefix is not None else fs.unstrip_protocol(path)

    return url


def join_url(url: str, *parts: str) -> str:
    """Join path parts onto a URL with '/' (no os.path: URLs are not local paths)."""
    return "/".join([url.rstrip("/"), *(p.strip("/") for p in parts)])


def read_bytes(url: str, storage_options: Mapping[str, Any] | None = None) -> bytes:
    fs, path = filesystem(url, storage_options)
    return fs.cat_file(path)


def write_bytes_atomic(url: str, data: bytes, storage_options: Mapping[str, Any] | None = None) -> None:
    """Write ``data`` so that a reader sees the old object or the new one, never a partial one.

    Object stores make a single PUT atomic; on local disks we write a temporary file and
    rename it into place.
    """
    fs, path = filesystem(url, storage_options)
    if not is_local(fs):
        fs.pipe_file(path, data)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove(url: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Delete the file or folder at ``url``; nothing where it is already gone."""
    fs, path = filesystem(url, storage_options)
    try:
        fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass


def create_exclusive(url: str, data: bytes, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Create ``url`` only if it does not exist; True when this call created it.

    Local disks use ``O_CREAT|O_EXCL``; object stores a conditional PUT (``If-None-Match: *``),
    which S3, GCS and SeaweedFS honour.
    """
    fs, path = filesystem(url, storage_options)
    if is_local(fs):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    if fs.protocol in ("memory", ("memory",)):  # one process: check-then-write cannot race with another
        if fs.exists(path):
            return False
        fs.pipe_file(path, data)
        return True
    try:
        fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    except OSError as err:
        if "pre-condition" in str(err).lower() or "precondition" in str(err).lower() or "412" in str(err):
            return False
        raise
    return True


def failpoint(name: str) -> None:
    """Fault injection for tests of killed runs: with ``AURORA_BATCH_FAILPOINT=NAME:FILE`` in the environment,
    reaching failpoint ``NAME`` creates ``FILE`` and waits there (to be killed).  Does nothing otherwise."""
    spec = os.environ.get("AURORA_BATCH_FAILPOINT", "")
    if spec.partition(":")[0] == name:
        import time

        with open(spec.partition(":")[2], "w") as marker:
            marker.write(f"{os.getpid()}\n")
        while True:
            time.sleep(1)


def link_tree(src: str, dst: str) -> int:
    """Make local folder ``dst`` a copy of ``src`` made of hard links (a copy where links cannot be made);
    the files linked.  Writers that replace files (Zarr's local store writes a temporary file and renames it)
    then change ``dst`` and never ``src``."""
    n = 0
    for folder, _, files in os.walk(src):
        target = os.path.join(dst, os.path.relpath(folder, src))
        os.makedirs(target, exist_ok=True)
        for name in files:
            try:
                os.link(os.path.join(folder, name), os.path.join(target, name))
            except OSError:  # another file system, or no links allowed
                shutil.copy2(os.path.join(folder, name), os.path.join(target, name))
            n += 1
    return n


def publish_tree(src_url: str, dst_url: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Replace the tree ``dst_url`` by ``src_url`` so that readers never see a mixture.

    Local disks (``src_url`` on the same disk as ``dst_url``): two renames (the old tree is
    moved aside, then deleted); a reader sees the old store, briefly no store, or the new one.
    Object stores (``src_url`` a local folder, or a tree on the same store): the old root
    metadata (``zarr.json``) is deleted first, so the old store stops being a store; data
    objects are uploaded (or copied) next, concurrently, then the metadata, the root
    ``zarr.json`` at the very end.  ``storage_options`` are those of ``dst_url``.
    """
    fs, dst = filesystem(dst_url, storage_options)
    src_fs, src = filesystem(src_url, None if src_url.startswith(("/", "file://")) else storage_options)
    if is_local(fs):
        old = f"{dst}.old-{uuid.uuid4().hex}"
        if os.path.exists(dst):
            os.replace(dst, old)
        os.replace(src, dst)
        if os.path.exists(old):
            fs.rm(old, recursive=True)
        return
    if fs.exists(f"{dst}/zarr.json"):
        fs.rm_file(f"{dst}/zarr.json")
    if fs.exists(dst):
        fs.rm(dst, recursive=True)
    files = sorted(f for f in src_fs.find(src) if f.rstrip("/") != src.rstrip("/"))  # not a folder marker
    root = f"{src.rstrip('/')}/zarr.json"
    data = [f for f in files if not f.endswith("zarr.json")]
    meta = [f for f in files if f.endswith("zarr.json") and f != root]
    transfer = fs.put if is_local(src_fs) else fs.copy
    for group in (data, meta, [root] if root in files else []):
        if group:
            transfer(group, [dst + f[len(src.rstrip("/")) :] for f in group])
    if is_local(src_fs):
        shutil.rmtree(src, ignore_errors=True)
    else:
        src_fs.rm(src, recursive=True)
