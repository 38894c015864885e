import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "aurora_batch.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


@pytest.mark.parametrize("cmd", [[], ["synth"], ["season"]])
def test_help(cmd):
    r = _cli(*cmd, "--help")
    assert r.returncode == 0 and "usage: aurora-batch" in r.stdout


def test_synth_writes_labelled_archive(tmp_path):
    r = _cli(
        "synth",
        f"file://{tmp_path}/a",
        "--stations",
        "NYA",
        "--start",
        "2010-12-01",
        "--end",
        "2010-12-01T02:00",
        "--cadence",
        "20min",
        "--seed",
        "3",
    )
    assert r.returncode == 0, r.stderr
    assert "SYNTHETIC" in r.stdout
    labels = pd.read_csv(tmp_path / "a" / "labels.csv")
    assert len(labels) == 6
    assert all((tmp_path / "a" / f).exists() for f in labels["file"])
    assert "SYNTHETIC" in (tmp_path / "a" / "README.txt").read_text()


def test_bad_spec_names_field(tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "input: file:///x\noutput: file:///y\nstations: [NYA]\nstart: 2010-12-01\nend: 2010-12-02\n"
        "filter: {sun_max_alt: hot}\n"
    )
    r = _cli("season", str(spec))
    assert r.returncode == 2
    assert "filter.sun_max_alt" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_classify_tables_keep_features_out_of_csv(tmp_path, capsys):
    """On a real OATH frame: the CSV has the light columns; features go to Parquet or NPZ, on request."""
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    from aurora_batch import cli

    image = str(Path(__file__).parent / "data" / "oath_00001.png")
    assert cli.main(["classify", image, "--out", str(tmp_path / "t.csv"), "-q"]) == 0
    table = pd.read_csv(tmp_path / "t.csv")
    assert list(table.columns) == [
        "url",
        "frame",
        "station",
        "time",
        "status",
        "detail",
        "sun_alt",
        "moon_alt",
        "saturated",
    ] and table["status"].tolist() == ["kept"]
    assert cli.main(["classify", image, "--features", "--out", str(tmp_path / "t.parquet"), "-q"]) == 0
    parquet = pq.read_table(tmp_path / "t.parquet")
    assert parquet.schema.field("features").type.list_size == 1280 and "f0000" not in parquet.column_names
    assert cli.main(["classify", image, "--features", "--out", str(tmp_path / "t.npz"), "-q"]) == 0
    npz = np.load(tmp_path / "t.npz")
    assert npz["features"].shape == (1, 1280) and npz["status"].tolist() == ["kept"]
    np.testing.assert_allclose(npz["features"][0], parquet.column("features")[0].as_py(), rtol=1e-6)
    capsys.readouterr()
    assert cli.main(["classify", image, "--features", "--out", str(tmp_path / "t.csv"), "-q"]) == 1
    assert "--features needs --out TABLE.parquet or TABLE.npz" in capsys.readouterr().err
