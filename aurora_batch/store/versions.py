"""Versioned month stores: each month an `Icechunk <https://icechunk.io>`_ repository, each change one commit.

A month is written straight into a writable session of ``{output}/{YYYY-MM}.icechunk`` opened
when the build began (no scratch copy), and **one commit publishes it**: a reader sees the old
month or the new one, never none and never a mixture, on S3, GCS or a local disk alike.  A
nightly writes only the tails of the groups it changes (:mod:`aurora_batch.month.increment`), so a new
version shares every other chunk with the one before, and history costs what changed.  Commits carry what made the month
(the feature fingerprint, model, head, window, image counts, package version, command), so
:func:`history` tells which version a figure came from, and readers open any version
(``version=``: a snapshot id or a tag; ``as_of=``: a UTC time).

Writers are kept apart by the output lock; a commit that still meets another writer's commit
fails (:class:`MonthConflictError`) and never overwrites it.  ``store.keep_versions`` expires
older snapshots after each commit and garbage-collects their chunks.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from typing import Any

import pandas as pd

SUFFIX = ".icechunk"


class MonthConflictError(RuntimeError):
    """Another writer committed to the month while this build ran; nothing was overwritten."""


def storage(url: str, storage_options: Mapping[str, Any] | None = None):
    """An ``icechunk.Storage`` for an fsspec URL and its options (S3-compatible endpoints, GCS, local paths).

    S3 credentials and endpoint come from ``storage_options`` (``key``, ``secret``, ``token``,
    ``client_kwargs.endpoint_url``/``region_name``, ``endpoint_url``) or fsspec's environment
    (``FSSPEC_S3_ENDPOINT_URL``, ``FSSPEC_S3_KEY``, ``FSSPEC_S3_SECRET``), else the AWS chain.
    """
    import icechunk

    opts = dict(storage_options or {})
    protocol, _, path = url.partition("://") if "://" in url else ("file", "", url)
    if protocol in ("file", "local"):
        icechunk.set_logs_filter("error")  # its warning about concurrent local commits: the output lock prevents them
        return icechunk.local_filesystem_storage(os.path.abspath(path))
    bucket, _, prefix = path.partition("/")
    if protocol in ("s3", "s3a"):
        client = dict(opts.get("client_kwargs") or {})
        endpoint = client.get("endpoint_url") or opts.get("endpoint_url") or os.environ.get("FSSPEC_S3_ENDPOINT_URL")
        key = opts.get("key") or os.environ.get("FSSPEC_S3_KEY")
        secret = opts.get("secret") or os.environ.get("FSSPEC_S3_SECRET")
        region = client.get("region_name") or os.environ.get("AWS_REGION") or ("us-east-1" if endpoint else None)
        credentials = (
            {"access_key_id": key, "secret_access_key": secret, "session_token": opts.get("token")}
            if key and secret
            else {"anonymous": True}
            if opts.get("anon")
            else {"from_env": True}
        )
        return icechunk.s3_storage(
            bucket=bucket,
            prefix=prefix or None,
            region=region,
            endpoint_url=endpoint,
            allow_http=bool(endpoint and endpoint.startswith("http://")),
            force_path_style=bool(endpoint),
            **credentials,
        )
    if protocol in ("gs", "gcs"):
        token = opts.get("token")
        kwargs = (
            {"service_account_file": token}
            if isinstance(token, str) and os.path.exists(token)
            else {"anonymous": True}
            if token == "anon"
            else {"from_env": True}
        )
        return icechunk.gcs_storage(bucket=bucket, prefix=prefix or None, **kwargs)
    raise ValueError(f"store.format icechunk: {url} is not on S3, GCS or a local disk; use store.format: zarr")


def is_repository(url: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    import icechunk

    return icechunk.Repository.exists(storage(url, storage_options))


def repository(url: str, storage_options: Mapping[str, Any] | None = None, create: bool = False):
    """The month's repository (created when ``create`` and it does not exist yet)."""
    import icechunk

    where = storage(url, storage_options)
    if create:
        return icechunk.Repository.open_or_create(where)
    return icechunk.Repository.open(where)


def open_store(
    url: str, storage_options: Mapping[str, Any] | None = None, version: str | None = None, as_of: Any = None
):
    """A read-only Zarr store of the month: the newest version, ``version`` (a tag or snapshot id), or the
    version current at ``as_of`` (UTC).  ``LookupError`` when ``version`` is not in this month."""
    repo = repository(url, storage_options)
    if version is not None:
        if version in repo.list_tags():
            return repo.readonly_session(tag=version).store
        try:
            return repo.readonly_session(snapshot_id=version).store
        except Exception as err:  # icechunk raises its own error for an unknown snapshot
            raise LookupError(f"{url} has no version {version!r} (a tag or snapshot id)") from err
    if as_of is not None:
        when = pd.Timestamp(as_of)
        when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
        try:
            return repo.readonly_session(branch="main", as_of=when.to_pydatetime()).store
        except Exception as err:
            raise LookupError(f"{url} has no version as of {when}") from err
    return repo.readonly_session(branch="main").store


def begin(url: str, storage_options: Mapping[str, Any] | None = None):
    """A writable session of the month on ``main``, opened now: a commit made by anyone else before this
    session commits is a conflict."""
    return repository(url, storage_options, create=True).writable_session("main")


def commit(session, message: str, metadata: Mapping[str, Any], url: str = "") -> str:
    """Commit what was written into ``session``'s store; the snapshot id (the session's own when nothing was
    written: no version is added).  Raises :class:`MonthConflictError` when another writer committed since the
    session began."""
    import icechunk

    if not session.has_uncommitted_changes:
        return session.snapshot_id
    try:
        return session.commit(message, metadata=dict(metadata))
    except icechunk.ConflictError as err:
        raise MonthConflictError(
            f"{url or 'month'}: another writer committed a new version while this one was "
            f"built ({err}); nothing was overwritten: run the job again"
        ) from None


def history(url: str, storage_options: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The month's commits, newest first: ``id``, ``time`` (UTC), ``message``, ``command``, ``images``,
    ``fingerprint`` and the whole commit ``metadata``."""
    repo = repository(url, storage_options)
    rows = [
        {
            "id": s.id,
            "time": pd.Timestamp(s.written_at),
            "message": s.message,
            "command": s.metadata.get("command"),
            "images": s.metadata.get("images"),
            "fingerprint": s.metadata.get("feature_fingerprint"),
            "metadata": dict(s.metadata),
        }
        for s in repo.ancestry(branch="main")
        if not s.metadata.get("__root")
    ]
    return pd.DataFrame(rows, columns=["id", "time", "message", "command", "images", "fingerprint", "metadata"])


def expire(url: str, keep: int, storage_options: Mapping[str, Any] | None = None) -> int:
    """Keep the ``keep`` newest versions: expire older snapshots and delete their chunks; the versions expired."""
    repo = repository(url, storage_options)
    versions = [s for s in repo.ancestry(branch="main") if not s.metadata.get("__root")]
    if len(versions) <= keep:
        return 0
    cutoff: dt.datetime = versions[keep - 1].written_at
    expired = repo.expire_snapshots(older_than=cutoff)
    repo.garbage_collect(delete_object_older_than=cutoff)
    return len(expired)
