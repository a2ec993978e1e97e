# SPDX-License-Identifier: Apache-2.0
"""A throwaway Ceph cluster on loopback, for tests, demos and benchmarks.

It runs one mon, one mgr and N OSDs as ordinary child processes (no systemd),
as root, with every file (config, keyrings, data, logs, sockets) under one
temporary directory. The monitor listens on free loopback ports, so several
such clusters and a real one can run side by side.

Use it from Python::

    with LocalCluster(osds=1) as cluster:
        print(cluster.conf_path, cluster.user)

from pytest (the ``ceph_cluster`` fixture of :mod:`rbd_driver.testing.fixtures`),
or from a shell::

    python -m rbd_driver.testing.local_cluster start      # prints the ceph.conf path
    python -m rbd_driver.testing.local_cluster status
    python -m rbd_driver.testing.local_cluster stop

Stopping kills only the daemons this cluster started, by the PIDs it
recorded (after checking that each PID still runs one of its daemons), then
removes the directory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ClusterStartError", "ClusterState", "LocalCluster", "main", "make_conf"]

DEFAULT_POOLS = ("rbd", "vms", "images")
DEFAULT_USER = "rbd-driver-test"
STATE_FILE = "cluster.json"
# Where the shell command remembers the last cluster it started, so that
# `stop` and `status` work without arguments.
POINTER = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local/state")) / (
    "rbd-driver/dev-cluster"
)

REQUIRED_BINARIES = ("ceph-mon", "ceph-mgr", "ceph-osd", "ceph-authtool", "monmaptool")


class ClusterStartError(RuntimeError):
    """The local cluster could not be started; the message says which step failed."""


@dataclass
class ClusterState:
    """What a running local cluster recorded about itself (cluster.json)."""

    directory: str
    conf_path: str
    fsid: str
    mon_addr: str
    user: str
    user_keyring: str
    admin_keyring: str
    pools: list[str]
    objectstore: str
    pids: dict[str, int] = field(default_factory=dict)


def make_conf(state: ClusterState, pool: str = "vms") -> Any:
    """Return a fresh ``ConfigOpts`` pointing at the cluster as its non-admin user."""
    from oslo_config import cfg

    from rbd_driver import conf as conf_module

    conf = cfg.ConfigOpts()
    conf_module.register_opts(conf)
    conf([], project="rbd_driver", default_config_files=[])
    conf.set_override("ceph_conf", state.conf_path, group="rbd")
    conf.set_override("user", state.user, group="rbd")
    conf.set_override("keyring", state.user_keyring, group="rbd")
    conf.set_override("pool", pool, group="rbd")
    return conf


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            # The state letter follows the parenthesised command name.
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False


def _pid_is_ours(pid: int, directory: str) -> bool:
    """True if ``pid`` runs a daemon started with a config inside ``directory``.

    Guards against PID reuse: we only ever signal our own daemons.
    """
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(arg.startswith(directory.encode()) for arg in cmdline)


class LocalCluster:
    """A one-host Ceph cluster under a temporary directory.

    :param osds: number of OSDs (1 or 3 are typical; 3 allows fault tests).
    :param objectstore: ``memstore`` (fast, in RAM) or ``bluestore`` (on a
        sparse file per OSD; realistic for benchmarks).
    :param pools: pools to create, with the ``rbd`` application enabled.
    :param pool_size: replica count of those pools (at most ``osds``).
    :param osd_size_gib: memstore capacity or bluestore file size per OSD.
    :param base_dir: parent of the temporary directory (default: $TMPDIR).
    """

    def __init__(
        self,
        osds: int = 1,
        objectstore: str = "memstore",
        pools: tuple[str, ...] | list[str] = DEFAULT_POOLS,
        pool_size: int | None = None,
        pg_num: int = 8,
        osd_size_gib: int = 4,
        user: str = DEFAULT_USER,
        base_dir: str | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        if osds < 1:
            raise ValueError("a cluster needs at least one OSD")
        if objectstore not in ("memstore", "bluestore"):
            raise ValueError(f"objectstore must be memstore or bluestore, not {objectstore!r}")
        self.osds = osds
        self.objectstore = objectstore
        self.pools = list(pools)
        self.pool_size = pool_size or min(osds, 3)
        self.pg_num = pg_num
        self.osd_size_gib = osd_size_gib
        self.user = user
        self.base_dir = base_dir
        self.start_timeout = start_timeout
        self.state: ClusterState | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._admin: Any = None

    # -- paths -------------------------------------------------------------

    @property
    def directory(self) -> Path:
        assert self.state is not None, "cluster not started"
        return Path(self.state.directory)

    @property
    def conf_path(self) -> str:
        assert self.state is not None, "cluster not started"
        return self.state.conf_path

    @property
    def fsid(self) -> str:
        assert self.state is not None, "cluster not started"
        return self.state.fsid

    @property
    def user_keyring(self) -> str:
        assert self.state is not None, "cluster not started"
        return self.state.user_keyring

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ClusterState:
        """Create and boot the cluster; return its state once HEALTH_OK.

        :raises ClusterStartError: a binary is missing or a daemon failed;
            whatever was started is stopped and the directory removed.
        """
        missing = [b for b in REQUIRED_BINARIES if shutil.which(b) is None]
        if missing:
            raise ClusterStartError(
                "missing Ceph binaries %s: install ceph-mon ceph-mgr ceph-osd "
                "ceph-common (see README)" % ", ".join(missing)
            )
        directory = tempfile.mkdtemp(prefix="rbd-driver-cluster-", dir=self.base_dir)
        os.chmod(directory, 0o700)
        port1, port2 = _free_port(), _free_port()
        self.state = ClusterState(
            directory=directory,
            conf_path=os.path.join(directory, "ceph.conf"),
            fsid=str(uuid.uuid4()),
            mon_addr=f"[v2:127.0.0.1:{port2},v1:127.0.0.1:{port1}]",
            user=self.user,
            user_keyring=os.path.join(directory, f"ceph.client.{self.user}.keyring"),
            admin_keyring=os.path.join(directory, "ceph.client.admin.keyring"),
            pools=list(self.pools),
            objectstore=self.objectstore,
        )
        try:
            self._write_conf()
            self._start_mon()
            self._start_mgr()
            for osd in range(self.osds):
                self._start_osd(osd)
            self._create_pools_and_user()
            self.wait_healthy(self.start_timeout)
        except BaseException:
            self.stop()
            raise
        return self.state

    def stop(self) -> None:
        """Kill this cluster's daemons by recorded PID and remove its directory."""
        if self.state is None:
            return
        self._close_admin()
        _stop_pids(self.state.directory, self.state.pids)
        for proc in self._procs.values():
            with contextlib.suppress(Exception):
                proc.wait(timeout=1)
        self._procs.clear()
        shutil.rmtree(self.state.directory, ignore_errors=True)
        self.state = None

    # -- daemon control, for fault tests ------------------------------------

    def kill_daemon(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one daemon (``mon.a``, ``mgr.x``, ``osd.0``...)."""
        assert self.state is not None
        pid = self.state.pids[name]
        if _pid_is_ours(pid, self.state.directory):
            os.kill(pid, sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self._reap(name, pid)

    def restart_osd(self, osd: int) -> None:
        """Start ``osd.N`` again after it was killed."""
        self._spawn(f"osd.{osd}", ["ceph-osd", "-f", "-i", str(osd)])

    # -- health --------------------------------------------------------------

    def mon_command(self, prefix: str, inbuf: bytes = b"", **args: Any) -> Any:
        """Run a monitor command as admin; return its parsed JSON output (or None).

        :raises ClusterStartError: the command failed.
        """
        return mon_command(self._admin_client(), prefix, inbuf, **args)

    def health(self) -> dict[str, Any]:
        """Return ``ceph status`` as a dict."""
        return dict(self.mon_command("status"))

    def wait_healthy(self, timeout: float = 120.0) -> None:
        """Wait for HEALTH_OK with every PG active+clean.

        :raises ClusterStartError: not healthy within ``timeout`` seconds;
            the message holds the last health checks seen.
        """
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self._check_daemons()
            try:
                status = self.health()
            except Exception:  # the mon may still be electing itself
                time.sleep(0.5)
                continue
            pgs = status.get("pgmap", {})
            total = pgs.get("num_pgs", 0)
            clean = sum(
                s["count"] for s in pgs.get("pgs_by_state", []) if s["state_name"] == "active+clean"
            )
            if status.get("health", {}).get("status") == "HEALTH_OK" and clean == total:
                return
            time.sleep(0.5)
        checks = json.dumps(status.get("health", {}).get("checks", {}))
        raise ClusterStartError(f"cluster not HEALTH_OK after {timeout:.0f}s: {checks}")

    # -- internals -----------------------------------------------------------

    def _write_conf(self) -> None:
        assert self.state is not None
        d = self.state.directory
        for sub in ("run", "log", "mon", "mgr", "osd"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        store = {
            "memstore": f"memstore device bytes = {self.osd_size_gib << 30}\n",
            "bluestore": (
                f"bluestore block path = {d}/osd/$cluster-$id.block\n"
                "bluestore block create = true\n"
                f"bluestore block size = {self.osd_size_gib << 30}\n"
                "bluestore fsck on mount = false\n"
            ),
        }[self.objectstore]
        conf = f"""[global]
fsid = {self.state.fsid}
mon host = {self.state.mon_addr}
public addr = 127.0.0.1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = {d}/$cluster.$name.keyring
run dir = {d}/run
admin socket = {d}/run/$name.$pid.asok
pid file = {d}/run/$name.pid
log file = {d}/log/$name.log
mon cluster log file = {d}/log/cluster.log
crash dir = {d}/crash
osd pool default size = {self.pool_size}
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
mon data avail warn = 2
mon data avail crit = 1
ms bind ipv4 = true
ms bind ipv6 = false

[mon]
mon data = {d}/mon/$cluster-$id
keyring = $mon_data/keyring
mon cluster log to file = true

[mgr]
mgr data = {d}/mgr/$cluster-$id
keyring = $mgr_data/keyring

[osd]
osd data = {d}/osd/$cluster-$id
keyring = $osd_data/keyring
osd objectstore = {self.objectstore}
{store}"""
        Path(self.state.conf_path).write_text(conf)

    def _run(self, *argv: str, inbuf: bytes | None = None) -> str:
        assert self.state is not None
        proc = subprocess.run(
            list(argv), input=inbuf, capture_output=True, timeout=60, check=False
        )
        if proc.returncode != 0:
            raise ClusterStartError(
                f"{argv[0]} failed ({proc.returncode}): {proc.stderr.decode(errors='replace').strip()}"
            )
        return proc.stdout.decode()

    def _spawn(self, name: str, argv: list[str]) -> None:
        """Start one daemon in the foreground as our child, and record its PID."""
        assert self.state is not None
        log = open(os.path.join(self.state.directory, "log", f"{name}.out"), "ab")
        with log:
            proc = subprocess.Popen(
                [*argv, "-c", self.state.conf_path],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a ^C in the test run must not kill it first
            )
        self._procs[name] = proc
        self.state.pids[name] = proc.pid
        self._save_state()

    def _save_state(self) -> None:
        assert self.state is not None
        path = Path(self.state.directory, STATE_FILE)
        path.write_text(json.dumps(asdict(self.state), indent=2))

    def _check_daemons(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None and self.state and self.state.pids.get(name) == proc.pid:
                raise ClusterStartError(
                    f"{name} exited with {proc.returncode}; see "
                    f"{self.state.directory}/log/{name}.log and {name}.out"
                )

    def _reap(self, name: str, pid: int) -> None:
        proc = self._procs.get(name)
        if proc is not None and proc.pid == pid:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            del self._procs[name]

    def _start_mon(self) -> None:
        assert self.state is not None
        d = self.state.directory
        mon_keyring = os.path.join(d, "mon.keyring")
        self._run("ceph-authtool", "--create-keyring", mon_keyring, "--gen-key", "-n", "mon.",
                  "--cap", "mon", "allow *")
        self._run("ceph-authtool", "--create-keyring", self.state.admin_keyring, "--gen-key",
                  "-n", "client.admin", "--cap", "mon", "allow *", "--cap", "osd", "allow *",
                  "--cap", "mgr", "allow *", "--cap", "mds", "allow *")
        self._run("ceph-authtool", mon_keyring, "--import-keyring", self.state.admin_keyring)
        monmap = os.path.join(d, "monmap")
        self._run("monmaptool", "--create", "--fsid", self.state.fsid,
                  "--addv", "a", self.state.mon_addr, monmap)
        self._run("ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap, "--keyring", mon_keyring,
                  "-c", self.state.conf_path)
        self._spawn("mon.a", ["ceph-mon", "-f", "-i", "a"])

    def _admin_client(self) -> Any:
        if self._admin is None:
            assert self.state is not None
            self._admin = connect_admin(self.state)
        return self._admin

    def _close_admin(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.shutdown()
            self._admin = None

    def _start_mgr(self) -> None:
        assert self.state is not None
        mgr_dir = os.path.join(self.state.directory, "mgr", "ceph-x")
        os.makedirs(mgr_dir, exist_ok=True)
        out = self.mon_command("auth get-or-create", entity="mgr.x",
                               caps=["mon", "allow profile mgr", "osd", "allow *",
                                     "mds", "allow *"], format="plain")
        _write_keyring(os.path.join(mgr_dir, "keyring"), out)
        self._spawn("mgr.x", ["ceph-mgr", "-f", "-i", "x"])

    def _start_osd(self, osd: int) -> None:
        assert self.state is not None
        osd_uuid = str(uuid.uuid4())
        secret = self._run("ceph-authtool", "--gen-print-key").strip()
        # The same UUID for `osd new` and `--mkfs --osd-uuid`, or the mon
        # refuses the boot ("clashes with existing osd: different fsid").
        created = self.mon_command(
            "osd new", inbuf=json.dumps({"cephx_secret": secret}).encode(),
            uuid=osd_uuid, id=osd,
        )
        osd_id = int(created["osdid"]) if isinstance(created, dict) else osd
        osd_dir = os.path.join(self.state.directory, "osd", f"ceph-{osd_id}")
        os.makedirs(osd_dir, exist_ok=True)
        _write_keyring(os.path.join(osd_dir, "keyring"),
                       f"[osd.{osd_id}]\n\tkey = {secret}\n")
        self._run("ceph-osd", "-i", str(osd_id), "--mkfs", "--osd-uuid", osd_uuid,
                  "-c", self.state.conf_path)
        self._spawn(f"osd.{osd_id}", ["ceph-osd", "-f", "-i", str(osd_id)])

    def _create_pools_and_user(self) -> None:
        import rados
        import rbd

        assert self.state is not None
        client = self._admin_client()
        for pool in self.pools:
            self.mon_command("osd pool create", pool=pool, pg_num=self.pg_num,
                             pgp_num=self.pg_num)
            self.mon_command("osd pool application enable", pool=pool, app="rbd")
        for pool in self.pools:
            ioctx = client.open_ioctx(pool)
            try:
                rbd.RBD().pool_init(ioctx, True)
            finally:
                ioctx.close()
        out = self.mon_command(
            "auth get-or-create", entity=f"client.{self.user}",
            caps=["mon", "profile rbd", "osd", "profile rbd", "mgr", "profile rbd"],
            format="plain",
        )
        _write_keyring(self.state.user_keyring, out)
        del rados


def connect_admin(state: ClusterState, timeout: float = 30,
                  op_timeout: float | None = None) -> Any:
    """Return a librados connection to the cluster as ``client.admin``.

    :param timeout: seconds to wait for the monitors (``client_mount_timeout``).
    :param op_timeout: seconds a monitor command may take (``rados_mon_op_timeout``).
    """
    import rados

    client = rados.Rados(conffile=state.conf_path, rados_id="admin")
    client.conf_set("client_mount_timeout", str(timeout))
    if op_timeout is not None:
        client.conf_set("rados_mon_op_timeout", str(op_timeout))
    client.connect()
    return client


def mon_command(admin: Any, prefix: str, inbuf: bytes = b"", **args: Any) -> Any:
    """Run a monitor command on an admin connection; return its parsed JSON output
    (or None; the text with ``format="plain"``).

    :raises ClusterStartError: the command failed.
    """
    cmd = {"prefix": prefix, "format": "json", **args}
    ret, out, err = admin.mon_command(json.dumps(cmd), inbuf, timeout=30)
    if ret != 0:
        raise ClusterStartError(f"ceph {prefix} failed ({ret}): {err}")
    if cmd["format"] != "json":
        return out.decode()
    return json.loads(out) if out.strip() else None


def _write_keyring(path: str, content: Any) -> None:
    """Write a keyring with mode 0600 from the start (never world-readable)."""
    data = content if isinstance(content, str) else json.dumps(content)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(data if data.endswith("\n") else data + "\n")


def _strays(directory: str, recorded: set[int]) -> dict[str, int]:
    """Daemons started with this cluster's ceph.conf that are not recorded.

    A daemon started twice (a restart racing a slow death) leaves the first
    one unrecorded; the cluster's unique directory in its command line still
    proves it is this cluster's.
    """
    conf = os.path.join(directory, "ceph.conf").encode()
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in recorded:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if conf in argv and argv and os.path.basename(argv[0]).startswith(b"ceph-"):
            found[f"stray.{entry.name}"] = int(entry.name)
    return found


def _stop_pids(directory: str, pids: dict[str, int], timeout: float = 20.0) -> None:
    """SIGTERM then SIGKILL each recorded daemon that is still ours, and any
    unrecorded daemon of this cluster (see :func:`_strays`)."""
    ours = {n: p for n, p in pids.items() if _pid_alive(p) and _pid_is_ours(p, directory)}
    ours.update(_strays(directory, set(ours.values())))
    # OSDs first, then mgr, mon last, so nothing waits on a dead monitor.
    order = sorted(ours, key=lambda n: {"stray": 0, "osd": 0, "mgr": 1,
                                        "mon": 2}.get(n.split(".")[0], 3))
    for name in order:
        with contextlib.suppress(ProcessLookupError):
            os.kill(ours[name], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_pid_alive(p) for p in ours.values()):
        time.sleep(0.1)
    for pid in ours.values():
        if _pid_alive(pid) and _pid_is_ours(pid, directory):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_pid_alive(p) for p in ours.values()):
        time.sleep(0.1)


# -- the shell command --------------------------------------------------------


def load_state(conf_or_dir: str | None = None) -> ClusterState:
    """Read the state of a running cluster from its ceph.conf path or directory.

    :raises FileNotFoundError: no such cluster (or none started yet).
    """
    if conf_or_dir is None:
        if not POINTER.exists():
            raise FileNotFoundError("no dev cluster has been started (no %s)" % POINTER)
        conf_or_dir = POINTER.read_text().strip()
    path = Path(conf_or_dir)
    directory = path if path.is_dir() else path.parent
    state_file = directory / STATE_FILE
    if not state_file.exists():
        raise FileNotFoundError(f"no dev cluster at {directory} (no {STATE_FILE})")
    return ClusterState(**json.loads(state_file.read_text()))


def stop_state(state: ClusterState) -> None:
    """Stop a cluster started by another process, from its recorded state."""
    _stop_pids(state.directory, state.pids)
    shutil.rmtree(state.directory, ignore_errors=True)
    if POINTER.exists() and POINTER.read_text().strip() == state.conf_path:
        POINTER.unlink()


def state_status(state: ClusterState) -> dict[str, Any]:
    """Return which recorded daemons are alive, and the health if reachable."""
    alive = {n: _pid_alive(p) and _pid_is_ours(p, state.directory) for n, p in state.pids.items()}
    report: dict[str, Any] = {"conf": state.conf_path, "fsid": state.fsid, "daemons": alive}
    if any(alive.values()):
        try:
            client = connect_admin(state, timeout=5, op_timeout=5)
            try:
                ret, out, err = client.mon_command(json.dumps({"prefix": "health", "format": "json"}), b"")
                report["health"] = json.loads(out)["status"] if ret == 0 else err
            finally:
                client.shutdown()
        except Exception as err:  # report, don't fail: status is for diagnosis
            report["health"] = f"unreachable: {err}"
    return report


@contextlib.contextmanager
def _started(cluster: LocalCluster) -> Iterator[LocalCluster]:
    cluster.start()
    yield cluster


def main(argv: list[str] | None = None) -> int:
    """``python -m rbd_driver.testing.local_cluster start|stop|status``."""
    parser = argparse.ArgumentParser(prog="python -m rbd_driver.testing.local_cluster",
                                     description="Throwaway local Ceph cluster on loopback.")
    sub = parser.add_subparsers(dest="action", required=True)
    start = sub.add_parser("start", help="start a cluster and print its ceph.conf path")
    start.add_argument("--osds", type=int, default=1)
    start.add_argument("--objectstore", choices=("memstore", "bluestore"), default="memstore")
    start.add_argument("--osd-size-gib", type=int, default=4)
    start.add_argument("--base-dir", default=None)
    for name in ("stop", "status"):
        p = sub.add_parser(name, help=f"{name} a cluster (default: the last one started)")
        p.add_argument("conf", nargs="?", help="its ceph.conf path or directory")
    args = parser.parse_args(argv)
    return run_action(args)


def run_action(args: argparse.Namespace) -> int:
    """Carry out a parsed ``throwaway`` action; shared with the ``rbd-driver`` command."""
    if args.action == "start":
        cluster = LocalCluster(osds=args.osds, objectstore=args.objectstore,
                               osd_size_gib=args.osd_size_gib, base_dir=args.base_dir)
        state = cluster.start()
        # Leave the daemons running after we exit: forget the Popen handles.
        cluster._close_admin()
        cluster._procs.clear()
        POINTER.parent.mkdir(parents=True, exist_ok=True)
        POINTER.write_text(state.conf_path + "\n")
        print(state.conf_path)
        return 0
    try:
        state = load_state(args.conf)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.action == "stop":
        stop_state(state)
        print(f"stopped {state.directory}")
        return 0
    report = state_status(state)
    print(json.dumps(report, indent=2))
    return 0 if report.get("health") == "HEALTH_OK" else 1


if __name__ == "__main__":
    sys.exit(main())
