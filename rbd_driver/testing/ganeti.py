# SPDX-License-Identifier: Apache-2.0
"""A throwaway one-node Ganeti 3.0 cluster whose KVM (TCG) instances run on RBD disks.

:class:`GanetiCluster` brings up, as root, everything Ganeti needs on this
machine and takes all of it away again, also when a test failed or the start
itself did:

- a Linux bridge with no ports (:data:`BRIDGE`) holding the node's address
  :data:`NODE_IP`; Ganeti adds the cluster address :data:`CLUSTER_IP` to it.
  Nothing of it reaches beyond this machine (never ``eth0``);
- ``/etc/hosts`` lines for :data:`NODE` and :data:`CLUSTER` (removed again,
  the rest of the file untouched);
- a UTS namespace whose host name is :data:`NODE`, held by one ``unshare``
  process: every Ganeti command and daemon runs in it (``nsenter``), so the
  host's own name never changes for the other programs of the machine;
- a private ``sshd`` on :data:`NODE_IP`, by which root reaches itself with a
  key (root's ``~/.ssh`` is saved first and put back at the end);
- ``gnt-cluster init`` with the KVM hypervisor under TCG, the ``ext`` disk
  template only, routed NICs, the test guest's kernel and initramfs
  (:mod:`rbd_driver.testing.guest`), an instance policy that allows small
  disks and no NICs; the ExtStorage provider ``rbd_driver``
  (``rbd-driver ganeti install``) and an OS definition :data:`OS_NAME`
  (API 20) whose ``create`` copies the OS parameter ``image`` (a raw file)
  into the disk through ``DISK_0_URI`` when given, and whose ``export``
  writes the disk to stdout.

:meth:`GanetiCluster.stop` destroys the cluster, stops by PID every process
that runs in the namespace (Ganeti's daemons, QEMU, sshd) and the holder,
removes the bridge, the ``/etc/hosts`` lines, the provider, the OS
definition and the files Ganeti made, and restores root's ``~/.ssh``.

Guests print on a serial console written to a file per instance
(:meth:`GanetiCluster.console`); the kernel command line holds the test
guest's steps (``rg.do=...``, see :func:`rbd_driver.testing.guest.kernel_cmdline`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable
from types import TracebackType

from rbd_driver.ops.ganeti_install import DEFAULT_DIR, install_provider
from rbd_driver.testing.guest import GuestImage, kernel_cmdline, parse_console

__all__ = ["BRIDGE", "CLUSTER", "CLUSTER_IP", "GanetiCluster", "GanetiError", "NODE",
           "NODE_IP", "OS_NAME", "ganeti_unavailable_reason"]

#: The node's host name and address (on :data:`BRIDGE`).
NODE, NODE_IP = "vm.example.test", "10.254.0.1"
#: The cluster's name and the address Ganeti adds to the bridge.
CLUSTER, CLUSTER_IP = "cluster.example.test", "10.254.0.10"
#: The Linux bridge, with no ports, that holds both addresses.
BRIDGE = "rbdgnt0"
#: The OS definition of the test instances.
OS_NAME = "rbdtest"
PROVIDER_DIR = DEFAULT_DIR
OS_DIR = f"/srv/ganeti/os/{OS_NAME}"
HOSTS = "/etc/hosts"
ROOT_SSH = "/root/.ssh"
#: Directories Ganeti fills; what it adds there goes at stop.
GANETI_STATE = ("/var/lib/ganeti", "/var/run/ganeti", "/var/log/ganeti", "/srv/ganeti")
_HOSTS_MARK = "# rbd_driver ganeti test cluster"

_OS_CREATE = r"""#!/bin/sh
# rbd_driver test OS: with the OS parameter image, copy that raw file into disk 0.
set -e
[ -n "$OSP_IMAGE" ] || exit 0
[ -n "$DISK_0_URI" ] || { echo "no DISK_0_URI: the disk is not userspace" >&2; exit 1; }
exec qemu-img convert -n -f raw -O raw "$OSP_IMAGE" "$DISK_0_URI"
"""

# export: write disk 0 to stdout. The URI is rbd:POOL/IMAGE:id=USER:conf=PATH[:keyring=PATH].
_OS_EXPORT = r"""#!/bin/sh
# rbd_driver test OS: write disk 0 (its userspace URI) to stdout with the rbd CLI.
set -e
uri="${DISK_0_URI#rbd:}"
image="${uri%%:*}"
opts="${uri#*:}"
set --
for kv in $(echo "$opts" | tr ':' ' '); do
    case "$kv" in
    id=*) set -- "$@" --id "${kv#id=}" ;;
    conf=*) set -- "$@" --conf "${kv#conf=}" ;;
    keyring=*) set -- "$@" --keyring "${kv#keyring=}" ;;
    esac
done
exec rbd "$@" export "$image" -
"""

_OS_FILES = {
    "create": _OS_CREATE,
    "export": _OS_EXPORT,
    "import": "#!/bin/sh\necho 'rbd_driver test OS: import is not supported' >&2\nexit 1\n",
    "rename": "#!/bin/sh\nexit 0\n",
    "verify": "#!/bin/sh\nexit 0\n",
}


class GanetiError(AssertionError):
    """A Ganeti command failed; the message holds its output."""


def ganeti_unavailable_reason() -> str | None:
    """Return why no Ganeti cluster can be made here, or None when it can."""
    for tool in ("gnt-cluster", "/usr/sbin/sshd", "unshare", "nsenter", "ip", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (Debian packages ganeti, openssh-server)"
    if os.geteuid() != 0:
        return "a Ganeti cluster needs root"
    return None


def _run(cmd: list[str], timeout: float = 300, check: bool = True,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                          env=env)
    if check and proc.returncode != 0:
        raise GanetiError(f"{shlex.join(cmd)} exited {proc.returncode}:\n"
                          f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _uts_ns(pid: int) -> str | None:
    with contextlib.suppress(OSError):
        return os.readlink(f"/proc/{pid}/ns/uts")
    return None


def _files_under(roots: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for root in roots:
        for top, dirs, files in os.walk(root):
            found.add(top)
            found.update(os.path.join(top, name) for name in dirs + files)
    return found


class GanetiCluster:
    """A one-node Ganeti cluster for tests (see the module); a context manager.

    :param guest: the test guest whose kernel and initramfs instances boot.
    :param provider_config: the library's config file the provider's scripts read.
    """

    def __init__(self, guest: GuestImage, provider_config: str) -> None:
        self.guest = guest
        self.provider_config = provider_config
        self.directory = ""
        self.holder: subprocess.Popen[bytes] | None = None
        self.sshd: subprocess.Popen[bytes] | None = None
        self._ssh_saved: str | None = None  # "copied" or "absent" once saved
        self._state_before: set[str] | None = None
        self._made_dirs: list[str] = []
        self._bridge_made = False
        self.started_seconds = 0.0

    def __enter__(self) -> GanetiCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- running commands on the node ------------------------------------------

    def run(self, *cmd: str, timeout: float = 600, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in the node's namespace; :raises GanetiError: it failed (with ``check``)."""
        assert self.holder is not None, "the cluster is not started"
        full = ["nsenter", "-t", str(self.holder.pid), "-u", "--", *cmd]
        return _run(full, timeout=timeout, check=check, env=env)

    def gnt(self, *cmd: str, timeout: float = 600,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a ``gnt-*`` command on the node (see :meth:`run`)."""
        return self.run(*cmd, timeout=timeout, check=check)

    # -- start -------------------------------------------------------------------

    def start(self) -> GanetiCluster:
        """Bring the cluster up; on any failure everything done so far is undone."""
        reason = ganeti_unavailable_reason()
        if reason:
            raise GanetiError(f"no Ganeti cluster here: {reason}")
        if _run(["ip", "link", "show", BRIDGE], check=False).returncode == 0:
            raise GanetiError(f"bridge {BRIDGE} exists: another Ganeti test cluster runs")
        started = time.monotonic()
        self.directory = tempfile.mkdtemp(prefix="rbd-driver-ganeti-")
        try:
            self._state_before = _files_under(GANETI_STATE)
            self._save_ssh()
            self._network()
            self._hosts()
            self._namespace()
            self._ssh()
            self._install()
            self._init()
        except BaseException:
            self.stop()
            raise
        self.started_seconds = time.monotonic() - started
        return self

    def _save_ssh(self) -> None:
        if os.path.isdir(ROOT_SSH):
            shutil.copytree(ROOT_SSH, os.path.join(self.directory, "root-ssh"), symlinks=True)
            self._ssh_saved = "copied"
        else:
            self._ssh_saved = "absent"

    def _network(self) -> None:
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        self._bridge_made = True
        _run(["ip", "address", "add", f"{NODE_IP}/24", "dev", BRIDGE])
        _run(["ip", "link", "set", BRIDGE, "up"])

    def _hosts(self) -> None:
        with open(HOSTS, "a", encoding="utf-8") as f:
            f.write(f"{NODE_IP} {NODE} {_HOSTS_MARK}\n{CLUSTER_IP} {CLUSTER} {_HOSTS_MARK}\n")

    def _namespace(self) -> None:
        self.holder = subprocess.Popen(["unshare", "--uts", "--", "sleep", "infinity"],
                                       stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while _uts_ns(self.holder.pid) == _uts_ns(os.getpid()):
            if time.monotonic() > deadline or self.holder.poll() is not None:
                raise GanetiError("unshare --uts did not make a namespace")
            time.sleep(0.05)
        self.run("hostname", NODE)

    def _ssh(self) -> None:
        os.makedirs(ROOT_SSH, mode=0o700, exist_ok=True)
        key = os.path.join(ROOT_SSH, "id_rsa")
        if not os.path.exists(key):
            _run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", key])
        with open(key + ".pub", encoding="ascii") as f:
            public = f.read().strip()
        authorized = os.path.join(ROOT_SSH, "authorized_keys")
        with open(authorized, "a", encoding="ascii") as f:
            f.write(public + "\n")
        os.chmod(authorized, 0o600)
        if not os.path.exists("/etc/ssh/ssh_host_ed25519_key"):
            _run(["ssh-keygen", "-A"])
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        config = os.path.join(self.directory, "sshd_config")
        with open(config, "w", encoding="ascii") as f:
            f.write(f"ListenAddress {NODE_IP}\nPort 22\nPermitRootLogin prohibit-password\n"
                    "PubkeyAuthentication yes\nPasswordAuthentication no\nUsePAM no\n"
                    f"PidFile {self.directory}/sshd.pid\nAuthorizedKeysFile .ssh/authorized_keys\n"
                    "HostKey /etc/ssh/ssh_host_rsa_key\nHostKey /etc/ssh/ssh_host_ecdsa_key\n"
                    "HostKey /etc/ssh/ssh_host_ed25519_key\n")
        assert self.holder is not None
        with open(os.path.join(self.directory, "sshd.log"), "wb") as log:
            self.sshd = subprocess.Popen(
                ["nsenter", "-t", str(self.holder.pid), "-u", "--", "/usr/sbin/sshd", "-D",
                 "-e", "-f", config], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        known = os.path.join(ROOT_SSH, "known_hosts")
        while True:
            scan = _run(["ssh-keyscan", "-T", "5", NODE_IP], check=False, timeout=30)
            if scan.returncode == 0 and scan.stdout.strip():
                break
            if time.monotonic() > deadline or self.sshd.poll() is not None:
                raise GanetiError(f"sshd did not come up on {NODE_IP}: {self.sshd_log()}")
            time.sleep(0.2)
        with open(known, "a", encoding="ascii") as f:
            for line in scan.stdout.splitlines():
                host, rest = line.split(" ", 1)
                f.write(f"{NODE},{NODE_IP} {rest}\n")
        self.run("ssh", "-o", "BatchMode=yes", f"root@{NODE}", "true", timeout=60)

    def sshd_log(self) -> str:
        with contextlib.suppress(OSError), \
                open(os.path.join(self.directory, "sshd.log"), encoding="utf-8",
                     errors="replace") as f:
            return f.read()[-2000:]
        return ""

    def _install(self) -> None:
        for path in ("/var/log/ganeti/extstorage", "/var/log/ganeti/os", "/srv/ganeti/os"):
            if not os.path.isdir(path):
                os.makedirs(path)
                self._made_dirs.append(path)
        install_provider(PROVIDER_DIR, self.provider_config)
        os.makedirs(OS_DIR, exist_ok=True)
        for name, text in _OS_FILES.items():
            path = os.path.join(OS_DIR, name)
            with open(path, "w", encoding="ascii") as f:
                f.write(text)
            os.chmod(path, 0o755)
        with open(os.path.join(OS_DIR, "ganeti_api_version"), "w", encoding="ascii") as f:
            f.write("20\n")
        with open(os.path.join(OS_DIR, "parameters.list"), "w", encoding="ascii") as f:
            f.write("image a raw file that create copies into disk 0\n")

    def _hvparams(self, console: str | None = None, steps: Iterable[str] = ("report",)) -> str:
        extra = "-accel tcg" + (f" -serial file:{console}" if console else "")
        params = {
            "kvm_path": shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64",
            "kernel_path": self.guest.kernel, "initrd_path": self.guest.initramfs,
            "root_path": "/dev/vda", "serial_console": "false", "kvm_flag": "disabled",
            "kvm_extra": extra, "use_chroot": "false", "security_model": "none",
            "disk_type": "paravirtual", "reboot_behavior": "exit", "vnc_bind_address": "",
            # Ganeti gives QEMU "-serial none" first, so the console file is ttyS1;
            # a comma in an -H value is written "\,".
            "kernel_args": kernel_cmdline(list(steps)).replace("console=ttyS0", "console=ttyS1")
            .replace(",", "\\,"),
        }
        return ",".join(f"{key}={value}" for key, value in params.items())

    def _init(self) -> None:
        self.gnt("gnt-cluster", "init", "--no-etc-hosts", f"--master-netdev={BRIDGE}",
                 "--master-netmask=24", "--enabled-hypervisors=kvm",
                 "--enabled-disk-templates=ext", "--ipolicy-disk-templates=ext",
                 "-N", "mode=routed,link=100", "-B", "memory=256M,vcpus=1",
                 "-H", "kvm:" + self._hvparams(), CLUSTER)
        self.gnt("gnt-cluster", "modify", "--ipolicy-bounds-specs",
                 "min:disk-size=1,cpu-count=1,disk-count=1,memory-size=128,nic-count=0,"
                 "spindle-use=0/max:disk-size=1048576,cpu-count=8,disk-count=16,"
                 "memory-size=32768,nic-count=8,spindle-use=12")

    # -- instances ------------------------------------------------------------------

    def console_path(self, instance: str) -> str:
        """Return the file that instance ``instance``'s serial console is written to."""
        return os.path.join(self.directory, f"console-{instance}.log")

    def add_instance(self, name: str, disk: str, *, steps: Iterable[str] = ("report",),
                     start: bool = True, os_params: str = "",
                     check: bool = True) -> subprocess.CompletedProcess[str]:
        """``gnt-instance add -t ext --disk 0:<disk>`` of instance ``name`` (no NIC).

        The guest runs ``steps`` and writes its console to :meth:`console_path`.
        """
        cmd = ["gnt-instance", "add", "-t", "ext", "--disk", f"0:{disk}",
               "-o", OS_NAME, "-n", NODE, "--no-nics",
               "--no-name-check", "--no-ip-check", "-H",
               "kvm:" + self._hvparams(self.console_path(name), steps)]
        # The OS create script always runs (it copies nothing without the OS
        # parameter image), since --no-install would also mean --no-start.
        if os_params:
            cmd += ["-O", os_params]
        if not start:
            cmd += ["--no-start"]
        return self.gnt(*cmd, name, check=check)

    def set_steps(self, name: str, steps: Iterable[str]) -> None:
        """Make the next boot of ``name`` run ``steps``."""
        # add's -H takes "hypervisor:params" (so values may hold ':'), modify's only params.
        self.gnt("gnt-instance", "modify", "-H", self._hvparams(self.console_path(name), steps),
                 name)

    def console(self, name: str) -> list[str]:
        """The ``RG`` lines of the instance's console so far."""
        with contextlib.suppress(FileNotFoundError), \
                open(self.console_path(name), encoding="utf-8", errors="replace") as f:
            return parse_console(f.read())
        return []

    def wait_for(self, name: str, pattern: str, timeout: float = 180) -> re.Match[str]:
        """Wait for a console line of ``name`` matching ``pattern``; return the match."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            for line in self.console(name):
                match = regex.search(line)
                if match:
                    return match
            if time.monotonic() > deadline:
                raise GanetiError(f"{name}: no console line matching {pattern!r} in "
                                  f"{timeout:.0f} s; console: {self.console(name)}")
            time.sleep(0.1)

    def instance_disk(self, name: str) -> str:
        """The RBD image name (Ganeti's volume name) of disk 0 of ``name``."""
        out = self.gnt("gnt-instance", "info", "--static", name).stdout
        match = re.search(r"logical_id:\s*\['rbd_driver',\s*'([^']+)'\]", out) or \
            re.search(r"\(rbd_driver,\s*([^)\s]+)\)", out) or \
            re.search(r"rbd_driver[,/ ]+\s*'?([0-9a-f-]{36}\.ext\.disk0)", out)
        if not match:
            raise GanetiError(f"no rbd_driver volume in gnt-instance info of {name}:\n{out}")
        return match.group(1)

    # -- stop -------------------------------------------------------------------------

    def _namespace_pids(self) -> list[int]:
        if self.holder is None:
            return []
        ns = _uts_ns(self.holder.pid)
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != self.holder.pid and _uts_ns(int(entry)) == ns:
                pids.append(int(entry))
        return pids

    def stop(self) -> None:
        """Undo everything :meth:`start` did (see the module); safe to call twice."""
        errors: list[str] = []
        if self.holder is not None and self.holder.poll() is None:
            if os.path.exists("/var/lib/ganeti/config.data"):
                for cmd in (["gnt-instance", "list", "--no-headers", "-o", "name"],):
                    proc = self.run(*cmd, check=False, timeout=120)
                    for inst in proc.stdout.split():
                        self.run("gnt-instance", "remove", "--force", "--shutdown-timeout=0",
                                 "--ignore-failures", inst, check=False, timeout=300)
                proc = self.run("gnt-cluster", "destroy", "--yes-do-it", check=False,
                                timeout=300)
                if proc.returncode != 0:
                    errors.append(f"gnt-cluster destroy: {proc.stdout} {proc.stderr}")
            for sig in (signal.SIGTERM, signal.SIGKILL):
                pids = self._namespace_pids()
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                deadline = time.monotonic() + 10
                while self._namespace_pids() and time.monotonic() < deadline:
                    time.sleep(0.1)
            self.holder.kill()
        for proc_ in (self.sshd, self.holder):
            if proc_ is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc_.wait(timeout=10)
        self.sshd = None
        if self._bridge_made:
            _run(["ip", "link", "del", BRIDGE], check=False)
            self._bridge_made = False
        self._restore_hosts()
        self._restore_ssh()
        for path in (PROVIDER_DIR, OS_DIR):
            shutil.rmtree(path, ignore_errors=True)
        if self._state_before is not None:
            for path in sorted(_files_under(GANETI_STATE) - self._state_before, reverse=True):
                with contextlib.suppress(OSError):
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        os.unlink(path)
            self._state_before = None
        for path in reversed(self._made_dirs):
            shutil.rmtree(path, ignore_errors=True)
        self._made_dirs = []
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = ""
        self.holder = None
        if errors:
            raise GanetiError("; ".join(errors))

    def _restore_hosts(self) -> None:
        with open(HOSTS, encoding="utf-8") as f:
            lines = f.readlines()
        kept = [line for line in lines if _HOSTS_MARK not in line]
        if kept != lines:
            with open(HOSTS, "w", encoding="utf-8") as f:
                f.writelines(kept)

    def _restore_ssh(self) -> None:
        if self._ssh_saved is None:
            return
        shutil.rmtree(ROOT_SSH, ignore_errors=True)
        if self._ssh_saved == "copied":
            shutil.copytree(os.path.join(self.directory, "root-ssh"), ROOT_SSH, symlinks=True)
        self._ssh_saved = None
