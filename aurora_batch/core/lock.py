"""A lock object in the output (``{output}/_lock.json``): owner, host, pid and expiry.

Two jobs on one output cannot interleave: the second is refused with a message naming the
holder.  The holder refreshes the expiry from a heartbeat thread; a lock whose expiry has
passed, or whose holder process is gone from this host, is stale and is taken over.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import socket
import threading
import uuid
from typing import Any

from aurora_batch.core.fs import create_exclusive, filesystem, join_url, write_bytes_atomic

log = logging.getLogger(__name__)


class LockHeld(RuntimeError):
    """Another live job holds the output lock."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclasses.dataclass
class OutputLock:
    output: str
    storage_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    purpose: str = "season"
    ttl_s: float = 120.0  #: the expiry is refreshed every ttl_s / 4 (seconds)
    owner: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        self.url = join_url(self.output, "_lock.json")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> bytes:
        return json.dumps(
            {
                "owner": self.owner,
                "purpose": self.purpose,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "acquired": _now().isoformat(),
                "expires": (_now() + dt.timedelta(seconds=self.ttl_s)).isoformat(),
            }
        ).encode()

    def holder(self) -> dict | None:
        fs, path = filesystem(self.url, self.storage_options)
        try:
            return json.loads(fs.cat_file(path))
        except FileNotFoundError:
            return None
        except ValueError:
            return {"owner": "?", "expires": "1970-01-01T00:00:00+00:00"}  # unreadable: treat as stale

    @staticmethod
    def is_stale(rec: dict) -> bool:
        if dt.datetime.fromisoformat(rec["expires"]) < _now():
            return True
        return rec.get("host") == socket.gethostname() and not _pid_alive(int(rec.get("pid", -1)))

    def acquire(self) -> OutputLock:
        for _ in range(3):
            if create_exclusive(self.url, self._record(), self.storage_options):
                self._start_heartbeat()
                return self
            rec = self.holder()
            if rec is None:
                continue  # released between our two calls
            if not self.is_stale(rec):
                raise LockHeld(
                    f"output {self.output} is locked by another {rec.get('purpose', 'job')} "
                    f"(host {rec.get('host')}, pid {rec.get('pid')}, since {rec.get('acquired')}, "
                    f"expires {rec.get('expires')}); try again later"
                )
            log.warning("taking over stale lock %s held by %s", self.url, rec)
            fs, path = filesystem(self.url, self.storage_options)
            if self.holder() == rec:  # still the same stale record
                fs.rm_file(path)
        raise LockHeld(f"could not acquire the lock {self.url}")

    def _start_heartbeat(self) -> None:
        def beat():
            while not self._stop.wait(self.ttl_s / 4):
                rec = self.holder()
                if rec is None or rec.get("owner") != self.owner:
                    log.error("lock %s was taken over by %s", self.url, rec)
                    return
                write_bytes_atomic(self.url, self._record(), self.storage_options)

        self._thread = threading.Thread(target=beat, name="aurora-batch-lock", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        rec = self.holder()
        if rec and rec.get("owner") == self.owner:
            fs, path = filesystem(self.url, self.storage_options)
            fs.rm_file(path)

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
