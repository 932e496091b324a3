"""A private one-node Slurm for tests: munged, slurmctld and slurmd in one temporary directory.

    cluster = start_cluster()             # or the session fixture `slurm_cluster` (see conftest.py)
    cluster.run("sbatch", "--parsable", "--wrap", "true")    # any client, with SLURM_CONF set
    subprocess.run([...], env={**os.environ, **cluster.env})
    cluster.stop()

Needs root (slurmd starts jobs as their submitter) but no systemd. Each cluster has its own munge
key and socket, free ports, state, spool and logs, so several test sessions on one host coexist.
Finished jobs are queryable without slurmdbd through jobcomp/filetxt: `sacct -c ...`.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("munge", "unmunge", "sbatch", "squeue", "sacct", "scancel", "sinfo", "scontrol")
PARTITION = "lab"
LOG_TAIL = 40
T = TypeVar("T")


class SlurmStartError(RuntimeError):
    """The cluster did not come up; the message carries the daemons' logs."""


def find_binary(name: str) -> str | None:
    """PATH first, then the sbin directories a non-root PATH often lacks."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")


def missing_binaries() -> list[str]:
    return [name for name in (*DAEMONS, *CLIENTS) if find_binary(name) is None]


def wait_until(probe: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `probe` until it returns something truthy; AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def _die_with_parent() -> None:
    """Runs in each daemon before exec: SIGTERM it if the test process dies without stop()."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _node_hardware() -> str:
    """What slurmd detects ('CPUs=2 Boards=1 ... RealMemory=24105'): a node declared otherwise drains."""
    line = subprocess.run([find_binary("slurmd"), "-C"], capture_output=True, text=True, check=True,
                          timeout=60).stdout.splitlines()[0]
    return " ".join(t for t in line.split() if not t.startswith(("NodeName=", "UpTime=")))


def _slurm_conf(root: Path, node: str, hardware: str, ctld_port: int, slurmd_port: int) -> str:
    return "\n".join([
        f"ClusterName=lab{ctld_port}",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={root}/munge/munge.socket",
        f"StateSaveLocation={root}/state",
        f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/run/slurmctld.pid",
        f"SlurmdPidFile={root}/run/slurmd.pid",
        f"SlurmctldLogFile={root}/log/slurmctld.log",
        f"SlurmdLogFile={root}/log/slurmd.log",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={root}/log/jobcomp.txt",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "ReturnToService=2",
        "SchedulerParameters=batch_sched_delay=0",  # start batch jobs at once, not up to 3 s later
        f"NodeName={node} NodeAddr=127.0.0.1 {hardware} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


@dataclass
class SlurmCluster:
    root: Path
    node: str
    cpus: int
    partition: str = PARTITION
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """What a Slurm client needs to talk to this cluster (add it to os.environ)."""
        return {"SLURM_CONF": str(self.root / "slurm.conf")}

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """One client command (sbatch, squeue, ...) against this cluster."""
        proc = subprocess.run([find_binary(args[0]) or args[0], *map(str, args[1:])], capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, **self.env})
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc

    def logs(self) -> str:
        """The last lines of every daemon log and captured output, for error messages."""
        parts = []
        for path in sorted([*self.root.glob("log/*.log"), *self.root.glob("*.out")]):
            lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL:]
            parts.append(f"--- {path.name} ---\n" + "\n".join(lines))
        return "\n".join(parts)

    def cancel_all(self, timeout: float = 60) -> None:
        """scancel every job in the partition and wait until none is left (completing ones included)."""
        self.run("scancel", f"--partition={self.partition}", check=False)
        wait_until(lambda: not self.run("squeue", "-h", "-o", "%i", check=False).stdout.strip(),
                   timeout, "the cancelled jobs to leave the queue")

    def stop(self) -> None:
        """Cancel the jobs, stop slurmd, slurmctld and munged, remove the directory."""
        try:
            if self._alive("slurmctld") and self._alive("slurmd"):
                self.cancel_all()
        finally:
            for name in reversed(DAEMONS):
                self._terminate(name)
            shutil.rmtree(self.root, ignore_errors=True)

    def _alive(self, name: str) -> bool:
        proc = self.processes.get(name)
        return proc is not None and proc.poll() is None

    def _terminate(self, name: str) -> None:
        proc = self.processes.get(name)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)

    def _spawn(self, name: str, *args: str) -> None:
        with open(self.root / f"{name}.out", "wb") as out:
            self.processes[name] = subprocess.Popen(
                [find_binary(name), *args], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, **self.env}, start_new_session=True, preexec_fn=_die_with_parent)

    def _wait(self, probe: Callable[[], object], timeout: float, what: str) -> None:
        """wait_until, but fail at once with the logs when a daemon has exited."""
        def probe_or_fail():
            dead = [name for name in self.processes if not self._alive(name)]
            if dead:
                raise SlurmStartError(f"{', '.join(dead)} exited while waiting for {what}\n{self.logs()}")
            return probe()
        try:
            wait_until(probe_or_fail, timeout, what)
        except AssertionError as exc:
            raise SlurmStartError(f"{exc}\n{self.logs()}") from None

    def start(self, timeout: float) -> None:
        self._start_munge(timeout)
        self._spawn("slurmctld", "-D")
        self._wait(lambda: self.run("scontrol", "ping", check=False).returncode == 0, timeout, "slurmctld")
        self._spawn("slurmd", "-D", "-N", self.node)
        self._wait(self._node_idle, timeout, f"node {self.node} to be idle")

    def _start_munge(self, timeout: float) -> None:
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o600)
        munge_dir = self.root / "munge"
        self._spawn("munged", "-F", f"--socket={self.munge_socket}", f"--key-file={key}",
                    f"--log-file={self.root / 'log' / 'munged.log'}", f"--pid-file={munge_dir / 'munged.pid'}",
                    f"--seed-file={munge_dir / 'munged.seed'}")
        self._wait(self._munge_works, timeout, "munged")

    def _munge_works(self) -> bool:
        encoded = subprocess.run([find_binary("munge"), "-n", "-S", str(self.munge_socket)], capture_output=True,
                                 timeout=10)
        return encoded.returncode == 0 and subprocess.run(
            [find_binary("unmunge"), "-S", str(self.munge_socket)], input=encoded.stdout, capture_output=True,
            timeout=10).returncode == 0

    def _node_idle(self) -> bool:
        return self.run("sinfo", "-h", "-N", "-n", self.node, "-o", "%t", check=False).stdout.strip() == "idle"


def _new_cluster() -> SlurmCluster:
    # munged requires every directory above its socket to be searchable by all.
    root = Path(tempfile.mkdtemp(prefix="lab-slurm-"))
    root.chmod(0o755)
    for sub in ("munge", "state", "spool", "log", "run"):
        (root / sub).mkdir(mode=0o755)
    hardware = _node_hardware()
    cpus = int(next(t for t in hardware.split() if t.startswith("CPUs=")).split("=")[1])
    node = socket.gethostname().split(".")[0]
    (root / "slurm.conf").write_text(_slurm_conf(root, node, hardware, *_free_ports(2)))
    return SlurmCluster(root=root, node=node, cpus=cpus)


def start_cluster(timeout: float = 60, attempts: int = 3) -> SlurmCluster:
    """A running cluster with an idle node; retried when a port picked free was taken meanwhile."""
    if os.geteuid() != 0:
        raise SlurmStartError("a private Slurm needs root: slurmd starts each job as its submitting user")
    for attempt in range(1, attempts + 1):
        cluster = _new_cluster()
        try:
            cluster.start(timeout)
            return cluster
        except SlurmStartError as exc:
            cluster.stop()
            if attempt == attempts or "Address already in use" not in str(exc):
                raise


@pytest.fixture(scope="session")
def slurm_cluster():
    """One cluster for the whole session; skipped only when Slurm or munge is not installed."""
    missing = missing_binaries()
    if missing:
        pytest.skip(f"Slurm is not installed (no {', '.join(missing)}): "
                    "apt-get install slurmctld slurmd slurm-client munge")
    cluster = start_cluster()
    yield cluster
    cluster.stop()
