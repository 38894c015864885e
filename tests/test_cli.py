import subprocess
import sys

import pandas as pd
import pytest


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "aurora_batch.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


@pytest.mark.parametrize("cmd", [[], ["synth"], ["season"]])
def test_help(cmd):
    r = _cli(*cmd, "--help")
    assert r.returncode == 0 and "usage: aurora-batch" in r.stdout


def test_synth_writes_labelled_archive(tmp_path):
    r = _cli("synth", f"file://{tmp_path}/a", "--stations", "NYA", "--start", "2010-12-01",
             "--end", "2010-12-01T02:00", "--cadence", "20min", "--seed", "3")
    assert r.returncode == 0, r.stderr
    assert "SYNTHETIC" in r.stdout
    labels = pd.read_csv(tmp_path / "a" / "labels.csv")
    assert len(labels) == 6
    assert all((tmp_path / "a" / f).exists() for f in labels["file"])
    assert "SYNTHETIC" in (tmp_path / "a" / "README.txt").read_text()


def test_bad_spec_names_field(tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text("input: file:///x\noutput: file:///y\nstations: [NYA]\nstart: 2010-12-01\nend: 2010-12-02\n"
                    "filter: {sun_max_alt: hot}\n")
    r = _cli("season", str(spec))
    assert r.returncode == 2
    assert "filter.sun_max_alt" in r.stderr and "Traceback" not in r.stderr
