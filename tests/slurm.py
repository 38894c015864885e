"""A real single-node SLURM (Debian's slurmctld, slurmd, munge) started for the tests, on 127.0.0.1.

Needs the Debian packages slurmctld, slurmd, slurm-client and munge (.ci/run installs them)
and root, as in CI.  Daemons run without systemd or cgroups, state under a temporary folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

CONF = """ClusterName=aurora
SlurmctldHost=localhost(127.0.0.1)
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
JobCompType=jobcomp/none
SchedulerType=sched/backfill
InactiveLimit=0
KillWait=5
MinJobAge=30
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=20000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class LocalSlurm:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.procs: list[subprocess.Popen] = []

    @property
    def env(self) -> dict:
        return {"SLURM_CONF": str(self.root / "slurm.conf")}

    def start(self, timeout: float = 60) -> LocalSlurm:
        missing = [b for b in ("slurmctld", "slurmd", "munged", "sbatch", "sinfo") if not shutil.which(b)]
        if missing:
            raise RuntimeError(
                f"SLURM is not installed ({missing} missing): apt-get install slurmctld slurmd slurm-client munge"
            )
        from s3server import free_port

        for d in ("state", "spool", "munge", "munge-run", "logs"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o700)
        os.chmod(self.root / "munge-run", 0o755)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        self.socket = self.root / "munge-run" / "munge.socket.2"
        (self.root / "slurm.conf").write_text(
            CONF.format(root=self.root, ctld_port=free_port(), d_port=free_port(), cpus=os.cpu_count() or 2)
        )
        env = {**os.environ, **self.env}
        subprocess.run(
            [
                "munged",
                "--force",
                f"--key-file={key}",
                f"--socket={self.socket}",
                f"--pid-file={self.root / 'munge-run' / 'munged.pid'}",
                f"--log-file={self.root / 'munge.log'}",
                f"--seed-file={self.root / 'munge' / 'seed'}",
            ],
            check=True,
            env=env,
        )
        # slurm finds munge's socket through the default path; point it at ours
        default = Path("/run/munge/munge.socket.2")
        default.parent.mkdir(parents=True, exist_ok=True)
        if default.exists() or default.is_symlink():
            default.unlink()
        default.symlink_to(self.socket)
        self.procs.append(
            subprocess.Popen(
                ["slurmctld", "-D", "-f", str(self.root / "slurm.conf")],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        self.procs.append(
            subprocess.Popen(
                ["slurmd", "-D", "-f", str(self.root / "slurm.conf"), "-N", "localhost"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env)
            if r.returncode == 0 and r.stdout.strip() in ("idle", "mix", "alloc"):
                return self
            time.sleep(0.5)
        raise RuntimeError(
            f"SLURM did not come up in {timeout} s: {r.stdout} {r.stderr}; "
            f"see {self.root / 'slurmctld.log'} and {self.root / 'slurmd.log'}"
        )

    def stop(self) -> None:
        subprocess.run(["scancel", "--user", "root"], env={**os.environ, **self.env}, capture_output=True)
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
        pid = self.root / "munge-run" / "munged.pid"
        if pid.exists():
            try:
                os.kill(int(pid.read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
