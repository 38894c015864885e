import datetime as dt
import re

import pytest

from aurora_batch.config import JobConfig, JobSpecError, load_job

MINIMAL = "input: file:///a\noutput: file:///b\nstations: [NYA]\nstart: 2010-12-01\nend: 2010-12-02\n"


def test_minimal_spec_gets_defaults(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text(MINIMAL)
    job = load_job(p)
    assert job.filter.sun_max_alt == -12.0 and job.filter.moon_max_alt == 0.0
    assert job.features.backbone == "efficientnet-lite0"
    assert job.start == dt.datetime(2010, 12, 1)
    assert job.cluster.scheduler is None


def test_overrides(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text(MINIMAL)
    assert load_job(p, **{"cluster.scheduler": "tcp://127.0.0.1:8786"}).cluster.scheduler == "tcp://127.0.0.1:8786"


@pytest.mark.parametrize(
    "extra, field",
    [
        ("stations: [XXX]\n", "stations"),
        ("end: 2010-11-01\n", "end"),
        ("filter: {sun_max_alt: 200}\n", "filter.sun_max_alt"),
        ("features: {recipe: nope}\n", "features"),
        ("featurs: {}\n", "featurs"),
        ("layout: nope\n", "layout"),
    ],
)
def test_bad_field_is_named(tmp_path, extra, field):
    lines = {line.split(":")[0]: line for line in MINIMAL.splitlines(keepends=True)}
    lines[extra.split(":")[0]] = extra
    p = tmp_path / "job.yaml"
    p.write_text("".join(lines.values()))
    with pytest.raises(JobSpecError) as err:
        load_job(p)
    assert f"  {field}" in str(err.value)


def test_missing_required_and_bad_yaml(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text("input: file:///a\n")
    with pytest.raises(JobSpecError, match="output: Field required"):
        load_job(p)
    p.write_text("input: [unclosed\n")
    with pytest.raises(JobSpecError, match="not valid YAML"):
        load_job(p)
    with pytest.raises(JobSpecError, match="does not exist"):
        load_job(tmp_path / "missing.yaml")


def test_tz_aware_times_become_utc():
    job = JobConfig.from_dict(
        dict(input="a", output="b", stations="NYA,LYR", start="2010-12-01T01:00:00+01:00", end="2010-12-02")
    )
    assert job.start == dt.datetime(2010, 12, 1, 0, 0) and job.stations == ["NYA", "LYR"]


def test_memory_urls_use_threads_or_refuse_remote():
    base = dict(input="memory://in", output="memory://out", stations=["NYA"], start="2010-12-01", end="2010-12-02")
    assert JobConfig.from_dict(base).cluster.processes is False
    with pytest.raises(JobSpecError, match="memory:// URLs live in one process"):
        JobConfig.from_dict({**base, "cluster": {"scheduler": "tcp://127.0.0.1:8786"}})


def test_file_checks_run_when_a_job_starts(tmp_path):
    """Validation reads no files; a missing head or weights file is refused when the job starts, before any output."""
    from aurora_batch.runner.season import run_season

    job = JobConfig.from_dict(
        dict(
            input=f"file://{tmp_path}/in",
            output=f"file://{tmp_path}/out",
            stations=["NYA"],
            start="2010-12-01",
            end="2010-12-02",
            classify={"head": str(tmp_path / "no.npz")},
            features={"weights": str(tmp_path / "w.pt")},
        )
    )
    with pytest.raises(JobSpecError) as err:
        run_season(job, progress=False)
    assert "classify.head: head file" in str(err.value) and "features.weights:" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_misspelt_fields_get_a_suggestion():
    from aurora_batch.config import JobConfig, JobSpecError

    spec = dict(
        input="file:///a",
        output="file:///b",
        stations=["NYA"],
        start="2010-12-01",
        end="2010-12-02",
        features={"recipie": "lite128"},
        strat="2010-12-01",
        join={"ceilometer": [{"url": "u", "format": "pangaea", "stations": {"NYA": "NYA"}, "tolerence": "5min"}]},
        planning={"xyzzy": 1},
    )
    with pytest.raises(JobSpecError) as err:
        JobConfig.from_dict(spec)
    text = str(err.value)
    assert "features.recipie: Extra inputs are not permitted; did you mean `recipe`?" in text
    assert "strat: Extra inputs are not permitted; did you mean `start`?" in text
    assert "join.ceilometer.0.tolerence: Extra inputs are not permitted; did you mean `tolerance`?" in text
    assert "planning.xyzzy: Extra inputs are not permitted; known: prune, folder_margin" in text


def test_durations_are_strings_with_units_and_old_spellings_still_load(tmp_path):
    """Every duration is a pandas-style string; the old float-seconds fields load with a FutureWarning."""
    from aurora_batch.config import seconds

    job = JobConfig.from_dict(
        {"input": "file:///a", "output": "file:///b", "stations": ["NYA"], "start": "2010-12-01", "end": "2010-12-02"}
    )
    assert (job.cluster.timeout, job.nightly.lock_ttl, job.nightly.lookback) == ("10min", "5min", "6h")
    assert seconds(job.cluster.timeout) == 600 and seconds(job.nightly.lock_ttl) == 300
    p = tmp_path / "old.yaml"
    p.write_text(
        MINIMAL + "cluster: {timeout_s: 90}\nnightly: {lock_ttl_s: 120.5}\n"
        "layout: [{name: cam, pattern: 'cam-{station}-{time:%Y%m%dT%H%M%S}.jpg', span_s: 60}]\n"
    )
    with pytest.warns(FutureWarning, match=r"cluster.timeout_s is deprecated: write cluster.timeout: '90s'"):
        old = load_job(p)
    assert (old.cluster.timeout, old.nightly.lock_ttl, old.layout[0].span) == ("90s", "120.5s", "60s")
    assert old.formats()[0].span_s == 60.0
    for bad, message in (
        ("cluster: {timeout: 90}\n", "cluster.timeout: 90 is not a time span: write it with its unit"),
        ("nightly: {lookback: soon}\n", "nightly.lookback: 'soon' is not a time span like '60s'"),
        ("cluster: {timeout: 0s}\n", "cluster.timeout: '0s' must be positive"),
        ("planning: {folder_margin: -1D}\n", "planning.folder_margin: '-1D' must be zero or more"),
        ("cluster: {timeout: 5min, timeout_s: 300}\n", "give timeout only"),
    ):
        p.write_text(MINIMAL + bad)
        with pytest.raises(JobSpecError, match=re.escape(message)):
            load_job(p)
