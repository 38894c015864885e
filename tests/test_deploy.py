"""Every deployment file parses and carries its required fields; Kubernetes objects are checked
against the official client's models, the jobqueue config is rendered into a real job script."""

import configparser
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def _k8s(data, kind):
    from kubernetes.client import ApiClient

    return ApiClient()._ApiClient__deserialize(data, kind)  # raises on missing required fields


def _docs(name):
    return list(yaml.safe_load_all((DEPLOY / "kubernetes" / name).read_text()))


def test_cronjob_nightly():
    (doc,) = _docs("cronjob-nightly.yaml")
    cron = _k8s(doc, "V1CronJob")
    assert cron.spec.concurrency_policy == "Forbid"
    assert len(cron.spec.schedule.split()) == 5
    container = cron.spec.job_template.spec.template.spec.containers[0]
    assert container.args[0] == "nightly"
    assert container.env_from[0].secret_ref.name == _docs("secret.example.yaml")[0]["metadata"]["name"]


def test_secret_example_has_fsspec_variables():
    (doc,) = _docs("secret.example.yaml")
    secret = _k8s(doc, "V1Secret")
    assert {"FSSPEC_S3_ENDPOINT_URL", "FSSPEC_S3_KEY", "FSSPEC_S3_SECRET"} <= set(secret.string_data)


def test_daskjob_and_gpu_worker_group():
    job, group = _docs("daskjob-season.yaml")
    assert job["apiVersion"] == "kubernetes.dask.org/v1" and job["kind"] == "DaskJob"
    driver = _k8s(job["spec"]["job"]["spec"], "V1PodSpec").containers[0]
    assert driver.args[:2] == ["season", "/config/season.yaml"] and "$(DASK_SCHEDULER_ADDRESS)" in driver.args
    cluster = job["spec"]["cluster"]["spec"]
    workers = _k8s(cluster["worker"]["spec"], "V1PodSpec")
    assert cluster["worker"]["replicas"] >= 1 and workers.containers[0].command[:2] == ["dask", "worker"]
    _k8s(cluster["scheduler"]["spec"], "V1PodSpec")
    _k8s(cluster["scheduler"]["service"], "V1ServiceSpec")
    assert group["kind"] == "DaskWorkerGroup" and group["spec"]["cluster"] == job["metadata"]["name"]
    gpu = _k8s(group["spec"]["worker"]["spec"], "V1PodSpec").containers[0]
    assert str(gpu.resources.limits["nvidia.com/gpu"]) == "1" and "GPU=1" in gpu.command
    assert ":cuda" in gpu.image and ":cpu" in workers.containers[0].image


def test_jobqueue_config_renders_a_gpu_job_script(tmp_path):
    import dask
    from dask_jobqueue import SLURMCluster

    config = yaml.safe_load((DEPLOY / "slurm" / "jobqueue.yaml").read_text())
    slurm = config["jobqueue"]["slurm"]
    assert slurm["queue"] == "accel" and "--gres=gpu:1" in slurm["job-extra-directives"]
    slurm.update({"interface": None, "local-directory": str(tmp_path), "log-directory": str(tmp_path)})
    with dask.config.set({f"jobqueue.slurm.{k}": v for k, v in slurm.items()}):  # merged over the defaults
        with SLURMCluster(scheduler_options={"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}) as cluster:
            script = cluster.job_script()
    for line in ("#SBATCH -p accel", "#SBATCH -A nnXXXXk", "#SBATCH --gres=gpu:1", "#SBATCH -t 06:00:00"):
        assert line in script
    assert "--resources GPU=1" in script


def test_sbatch_script_and_its_job_spec():
    script = DEPLOY / "slurm" / "season.sbatch"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert re.search(r"^#SBATCH --time=", text, re.M) and "aurora-batch season" in text
    from aurora_batch.config import load_job

    job = load_job(ROOT / "jobs" / "season-saga.yaml")
    assert job.cluster.kind == "slurm" and job.cluster.slurm.gpus == 1
    nightly = load_job(ROOT / "jobs" / "nightly.yaml")
    assert nightly.nightly.lookback == "6h"
    assert nightly.join.ceilometer and nightly.join.magnetometer  # the shipped nightly publishes joined months


def test_cron_and_systemd():
    lines = [
        line
        for line in (DEPLOY / "cron" / "crontab").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(lines) == 1
    fields = lines[0].split(None, 5)
    assert len(fields) == 6 and "aurora-batch nightly" in fields[5]
    service = configparser.ConfigParser()
    service.read(DEPLOY / "cron" / "aurora-nightly.service")
    assert service["Service"]["Type"] == "oneshot" and "aurora-batch nightly" in service["Service"]["ExecStart"]
    timer = configparser.ConfigParser()
    timer.read(DEPLOY / "cron" / "aurora-nightly.timer")
    assert timer["Timer"]["OnCalendar"].endswith("06:15:00 UTC") and timer["Install"]["WantedBy"] == "timers.target"


def test_dockerfile_has_cpu_and_cuda_images():
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)\s+AS\s+(\w+)", text, re.M)
    assert [s for _, s in stages] == ["cpu", "cuda"] and "nvidia/cuda" in stages[1][0]
    assert text.count('ENTRYPOINT ["aurora-batch"]') == 2
    assert text.count("torch==2.13.0") == 2 and "whl/cpu" in text


@pytest.mark.parametrize("name", ["demo.yaml", "season-saga.yaml", "nightly.yaml"])
def test_job_specs_parse(name):
    data = yaml.safe_load((ROOT / "jobs" / name).read_text())
    assert {"input", "output", "stations", "start", "end"} <= set(data)
