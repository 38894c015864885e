import json
import subprocess
import sys

import pytest

from aurora_batch.core.lock import LockHeld, OutputLock


def test_second_lock_is_refused_and_release_frees(tmp_path):
    out = f"file://{tmp_path}/out"
    with OutputLock(out, purpose="season"):
        with pytest.raises(LockHeld, match="locked by another season"):
            OutputLock(out).acquire()
    with OutputLock(out):  # released: free again
        pass
    assert not (tmp_path / "out" / "_lock.json").exists()


def test_stale_locks_are_taken_over(tmp_path):
    out = f"file://{tmp_path}/out"
    (tmp_path / "out").mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    rec = {
        "owner": "x",
        "purpose": "season",
        "host": __import__("socket").gethostname(),
        "pid": int(dead.stdout),
        "acquired": "2026-01-01T00:00:00+00:00",
        "expires": "2999-01-01T00:00:00+00:00",
    }
    (tmp_path / "out" / "_lock.json").write_text(json.dumps(rec))
    with OutputLock(out) as lock:  # holder process is gone
        assert lock.holder()["owner"] == lock.owner
    rec.update(host="elsewhere", pid=1, expires="2000-01-01T00:00:00+00:00")
    (tmp_path / "out" / "_lock.json").write_text(json.dumps(rec))
    with OutputLock(out) as lock:  # expired
        assert lock.holder()["owner"] == lock.owner


def test_heartbeat_extends_expiry(tmp_path):
    out = f"file://{tmp_path}/out"
    with OutputLock(out, ttl_s=0.4) as lock:
        first = lock.holder()["expires"]
        import time

        time.sleep(0.5)
        assert lock.holder()["expires"] > first
        with pytest.raises(LockHeld):
            OutputLock(out).acquire()


def test_lock_on_s3(s3_server, bucket):
    out = f"s3://{bucket}/out"
    with OutputLock(out, s3_server.storage_options):
        with pytest.raises(LockHeld):
            OutputLock(out, s3_server.storage_options).acquire()
    with OutputLock(out, s3_server.storage_options):
        pass
