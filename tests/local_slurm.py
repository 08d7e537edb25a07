"""A real single-node SLURM with accounting on localhost, for the SLURM integration test.

Debian's packages (``slurm-wlm``, ``slurmdbd``, ``munge``, ``mariadb-server``) are installed with
apt-get when missing. Without systemd, every daemon runs in the foreground as a child of its own
session, with its configuration, sockets, ports, logs and data in one state folder
(``/tmp/msw-slurm`` unless ``MSW_SLURM_DIR`` names another): a private munged socket and key, a
private MariaDB data folder on 127.0.0.1:16306, slurmdbd on 16819, slurmctld on 16817 and slurmd on
16818. The clients find this cluster through the ``SLURM_CONF`` of :attr:`LocalSlurm.env`, and
``/etc/slurm/slurm.conf`` links to its configuration while it runs (see SYSTEM_CONF); a machine
whose SLURM is configured there already is left alone (``Unavailable``), and so is its MariaDB.

The node is virtual in size (``SlurmdParameters=config_overrides``): 16 CPUs, 64 GB and two GPUs
(a ``gpu`` GRES whose device files are stand-ins for /dev/null), so that the requests of
``profiles/slurm`` (GPUs, CPUs and memory of a cluster node) are scheduled as on a cluster. Jobs run on this machine's real cores; the
caller limits how many run at once. Partitions ``cpu`` (default) and ``gpu`` hold the node; the
accounting database holds cluster ``msw``, account ``msw_test`` and the user running the tests.

``start()`` first stops daemons that a previous session left running (found through the pid files
in the state folder, each checked to be one of ours by its command line or environment) and starts
from an empty state folder; ``stop()`` cancels every job, ends the daemons and deletes the
database, leaving the configuration and logs for a look afterwards. Both can be called repeatedly;
``acquire()`` keeps two test sessions on one machine from sharing the cluster.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("MSW_SLURM_DIR", "/tmp/msw-slurm"))
PACKAGES = ["slurm-wlm", "slurmdbd", "munge", "mariadb-server"]
PROGRAMS = [
    "munged",
    "mariadb-install-db",
    "mariadbd",
    "mariadb",
    "slurmdbd",
    "slurmctld",
    "slurmd",
    "sbatch",
    "srun",
    "sacct",
    "sacctmgr",
    "squeue",
    "sinfo",
    "scancel",
    "scontrol",
]
CLUSTER = "msw"
ACCOUNT = "msw_test"
CPU_PARTITION = "cpu"
GPU_PARTITION = "gpu"
NODE = {"CPUs": 16, "RealMemory": 64000, "gpus": 2}
PORTS = {"slurmctld": 16817, "slurmd": 16818, "slurmdbd": 16819, "mariadb": 16306}
DB_PASSWORD = "msw-test-only"
# The plugin's job step (snakemake-executor-plugin-slurm-jobstep 0.6.1) removes SLURM_CONF from
# the environment of the srun it starts inside each job, so srun reads SLURM's default path: it is
# made a link to this cluster's slurm.conf while the cluster runs (never replacing a real file).
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
# Daemons in start order; stop() goes backwards.
DAEMONS = ["munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd"]


class Unavailable(Exception):
    """SLURM cannot be installed or started here; the message says why."""


def missing_programs() -> list[str]:
    return [name for name in PROGRAMS if shutil.which(name, path=_path()) is None]


def _path() -> str:
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def why_not() -> str | None:
    """Why this machine cannot run the local SLURM, or None when it can (installing what is missing)."""
    if os.environ.get("MSW_TEST_SLURM") == "0":
        return "MSW_TEST_SLURM=0"
    if not sys.platform.startswith("linux"):
        return f"SLURM needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "starting SLURM daemons and installing packages needs root"
    if missing_programs() and shutil.which("apt-get") is None:
        return f"SLURM is not installed ({', '.join(missing_programs())} missing) and apt-get is absent"
    return None


def install(timeout: float = 600) -> float:
    """apt-get the packages when a program is missing; the seconds it took (0 when nothing was missing)."""
    if not missing_programs():
        return 0.0
    started = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "PATH": _path()}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
    ):
        try:
            done = subprocess.run(
                ["timeout", "-s", "KILL", str(int(timeout)), *command],
                capture_output=True,
                text=True,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except OSError as error:
            raise Unavailable(f"{' '.join(command)}: {error}") from error
        if done.returncode != 0:
            raise Unavailable(f"{' '.join(command)} failed ({done.returncode}): {(done.stderr or done.stdout)[-500:]}")
    if missing_programs():
        raise Unavailable(f"still missing after apt-get install: {', '.join(missing_programs())}")
    return time.monotonic() - started


class LocalSlurm:
    """Start, use and stop the single-node cluster described in the module docstring."""

    def __init__(self, state: Path = STATE):
        self.state = Path(state)
        self._lock = None
        self.host = socket.gethostname().split(".")[0]
        self.user = getpass.getuser()
        self.conf = self.state / "etc" / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), "PATH": _path()}
        for name in [k for k in self.env if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))]:
            if name != "SLURM_CONF":
                del self.env[name]  # a test session started inside a SLURM job must not leak into ours

    # ---- running things -------------------------------------------------------------------------

    def command(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        """A SLURM client (or any program) with this cluster's environment, killed after ``timeout`` s."""
        done = subprocess.run(
            ["timeout", "-s", "KILL", str(int(timeout)), *args],
            capture_output=True,
            text=True,
            env=self.env,
            stdin=subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({done.returncode}): {done.stdout[-1000:]}{done.stderr[-2000:]}"
            )
        return done

    def _spawn(self, name: str, args: list[str]) -> None:
        with (self.state / "log" / f"{name}.out").open("ab") as log:  # the child keeps its own handle
            process = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )
        (self.state / "run" / f"{name}.pid").write_text(str(process.pid))
        self._children[name] = process

    def _wait(self, what: str, ready, timeout: float = 60, daemon: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if daemon and self._children[daemon].poll() is not None:
                raise RuntimeError(f"{daemon} exited ({self._children[daemon].returncode}):\n{self.log_tail(daemon)}")
            try:
                if ready():
                    return
            except (OSError, RuntimeError, subprocess.SubprocessError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}:\n{self.log_tail(daemon or '')}")

    def log_tail(self, name: str, chars: int = 3000) -> str:
        texts = []
        for path in sorted((self.state / "log").glob(f"{name}*")):
            texts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(texts)

    # ---- start and stop -------------------------------------------------------------------------

    def acquire(self, timeout: float) -> None:
        """Hold the cluster for this process: another test session on this machine waits (at most
        ``timeout`` s, then Unavailable) instead of restarting the daemons under a running test.
        The lock dies with the process, so a killed session never blocks the next one."""
        self.state.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(f"{self.state}.lock", "w")  # noqa: SIM115 (held until release())
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self.release()
                    raise Unavailable(f"another test session held {self.state}.lock for {timeout:.0f} s") from None
                time.sleep(2)

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file drops the lock
            self._lock = None

    def start(self) -> None:
        if (SYSTEM_CONF.exists() or SYSTEM_CONF.is_symlink()) and not self._owns_system_conf():
            raise Unavailable(f"{SYSTEM_CONF} configures another SLURM on this machine")
        self.stop()
        if self.state.exists():
            shutil.rmtree(self.state)
        for sub in ("etc", "run", "log", "munge", "mysql", "ctld", "spool"):
            (self.state / sub).mkdir(parents=True)
        self.state.chmod(0o755)
        (self.state / "munge").chmod(0o711)  # munged: clients need to reach the socket
        self._children: dict[str, subprocess.Popen] = {}
        self._write_configs()
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.symlink_to(self.conf)

        key = self.state / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._spawn(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",
                f"--socket={self.state / 'munge' / 'munge.socket'}",
                f"--key-file={key}",
                f"--pid-file={self.state / 'munge' / 'munged.pid'}",
                f"--seed-file={self.state / 'munge' / 'munged.seed'}",
                f"--log-file={self.state / 'log' / 'munged.log'}",
            ],
        )
        self._wait("munged", lambda: (self.state / "munge" / "munge.socket").exists(), daemon="munged")

        mysql = self.state / "mysql"
        self.command(
            "mariadb-install-db",
            "--no-defaults",
            f"--datadir={mysql}",
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            timeout=120,
        )
        self._spawn(
            "mariadbd",
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={mysql}",
                "--user=root",
                f"--socket={self.state / 'run' / 'mysql.sock'}",
                f"--port={PORTS['mariadb']}",
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                f"--pid-file={self.state / 'run' / 'mariadbd.own.pid'}",
                f"--log-error={self.state / 'log' / 'mariadbd.log'}",
                "--innodb-buffer-pool-size=64M",
                "--innodb-lock-wait-timeout=900",
            ],
        )
        sql = [
            "mariadb",
            "--no-defaults",
            f"--socket={self.state / 'run' / 'mysql.sock'}",
            "-u",
            "root",
            "-e",
        ]
        self._wait("MariaDB", lambda: self.command(*sql, "SELECT 1", timeout=10).returncode == 0, daemon="mariadbd")
        self.command(
            *sql,
            f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}'; "
            "GRANT ALL ON msw_slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;",
        )

        self._spawn("slurmdbd", ["slurmdbd", "-D"])
        sacctmgr = ["sacctmgr", "-i"]
        self._wait(
            "slurmdbd",
            lambda: self.command(*sacctmgr, "list", "cluster", timeout=10).returncode == 0,
            daemon="slurmdbd",
        )
        self.command(*sacctmgr, "add", "cluster", CLUSTER)
        self.command(
            *sacctmgr, "add", "account", ACCOUNT, f"cluster={CLUSTER}", "description=tests", "organization=msw"
        )
        self.command(*sacctmgr, "add", "user", self.user, f"account={ACCOUNT}", f"cluster={CLUSTER}")

        self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-f", str(self.conf)])
        self._wait(
            "slurmctld", lambda: self.command("scontrol", "ping", timeout=10).returncode == 0, daemon="slurmctld"
        )
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.host])
        self._wait("an idle node", self.node_is_idle, daemon="slurmd")

    def node_is_idle(self) -> bool:
        done = self.command("sinfo", "-h", "-N", "-o", "%T", timeout=10, check=False)
        return done.returncode == 0 and done.stdout.split() != [] and all(s == "idle" for s in done.stdout.split())

    def stop(self) -> None:
        """Cancel every job, then end our daemons (and nothing else), newest first."""
        run = self.state / "run"
        if (run / "slurmctld.pid").exists() and self._is_ours(_read_pid(run / "slurmctld.pid")):
            self.command("scancel", "--full", "-u", self.user, timeout=20, check=False)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                queue = self.command("squeue", "-h", "-o", "%i", timeout=10, check=False)
                if queue.returncode != 0 or not queue.stdout.strip():
                    break
                time.sleep(0.5)
        for name in reversed(DAEMONS):
            pid = _read_pid(run / f"{name}.pid")
            if pid is not None and self._is_ours(pid):
                _terminate(pid)
            (run / f"{name}.pid").unlink(missing_ok=True)
        if self._owns_system_conf():
            SYSTEM_CONF.unlink()
        shutil.rmtree(self.state / "mysql", ignore_errors=True)  # 180 MB; logs and configs stay
        for process in getattr(self, "_children", {}).values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=1)

    def _owns_system_conf(self) -> bool:
        return SYSTEM_CONF.is_symlink() and os.readlink(SYSTEM_CONF) == str(self.conf)

    def _is_ours(self, pid: int | None) -> bool:
        """Whether the process is alive and one of this state folder's daemons (its command line or
        environment names the folder): a recycled pid never ends someone else's process."""
        if pid is None:
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return False
        marker = str(self.state).encode()
        return marker in cmdline or b"SLURM_CONF=" + str(self.conf).encode() + b"\0" in environ

    def _write_configs(self) -> None:
        s = self.state
        auth = f"AuthInfo=socket={s / 'munge' / 'munge.socket'}"
        slurm_conf = f"""\
ClusterName={CLUSTER}
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={PORTS["slurmctld"]}
SlurmdPort={PORTS["slurmd"]}
AuthType=auth/munge
CredType=cred/munge
{auth}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={s / "ctld"}
SlurmdSpoolDir={s / "spool"}
SlurmctldPidFile={s / "run" / "slurmctld.own.pid"}
SlurmdPidFile={s / "run" / "slurmd.own.pid"}
SlurmctldLogFile={s / "log" / "slurmctld.log"}
SlurmdLogFile={s / "log" / "slurmd.log"}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SlurmdParameters=config_overrides
ReturnToService=2
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={PORTS["slurmdbd"]}
AccountingStoragePass={s / "munge" / "munge.socket"}
AccountingStorageTRES=gres/gpu
AccountingStorageEnforce=associations
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
MinJobAge=300
KillWait=5
InactiveLimit=0
Waittime=0
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={NODE["CPUs"]} RealMemory={NODE["RealMemory"]} Gres=gpu:{NODE["gpus"]} State=UNKNOWN
PartitionName={CPU_PARTITION} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
PartitionName={GPU_PARTITION} Nodes={self.host} MaxTime=INFINITE State=UP
"""
        self.conf.write_text(slurm_conf)
        # SLURM drops a GPU without a device file: character devices like /dev/null stand in.
        (s / "dev").mkdir()
        for index in range(NODE["gpus"]):
            os.mknod(s / "dev" / f"gpu{index}", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        (s / "etc" / "gres.conf").write_text(
            f"NodeName={self.host} Name=gpu File={s / 'dev' / 'gpu'}[0-{NODE['gpus'] - 1}]\n"
        )
        dbd = s / "etc" / "slurmdbd.conf"
        dbd.write_text(
            f"""\
AuthType=auth/munge
{auth}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={PORTS["slurmdbd"]}
SlurmUser=root
LogFile={s / "log" / "slurmdbd.log"}
PidFile={s / "run" / "slurmdbd.own.pid"}
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={PORTS["mariadb"]}
StorageUser=slurm
StoragePass={DB_PASSWORD}
StorageLoc=msw_slurm_acct_db
"""
        )
        dbd.chmod(0o600)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _terminate(pid: int, wait: float = 15) -> None:
    """SIGTERM, then SIGKILL after ``wait`` seconds."""
    for sig, patience in ((signal.SIGTERM, wait), (signal.SIGKILL, 5)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
                return
            time.sleep(0.2)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True
