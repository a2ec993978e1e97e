# SPDX-License-Identifier: Apache-2.0
"""A private libvirt daemon and QEMU (TCG) guests, for tests that boot from RBD disks.

:class:`Hypervisor` starts its own ``libvirtd`` in session mode, in a
temporary directory, and connects to it with
``qemu:///session?socket=<dir>/run/libvirt/libvirt-sock``. Why not the
system daemon: ``qemu:///system`` is shared by the whole host (a compute
host's real guests, other test runs) and, without systemd, someone must
start it, and only one can run per host; a private session daemon belongs
to one test run, can be started and stopped by PID, and leaves nothing
behind. As root, libvirt's session URI would go to the system socket, so
the daemon runs as an unprivileged user (``nobody`` by default), which
QEMU then runs as too. The guest's files are copied into the directory,
since root's cache is not readable by that user.

Guests are transient domains of type ``qemu`` (TCG: ``/dev/kvm`` may exist
and still hang a guest in containers) with ``<features><acpi/></features>``
(without it ``poweroff -f`` only halts) and the serial console in a file.

Everything a :class:`HypervisorScope` booted or defined (domains, ceph
secrets) is removed when the scope closes, also when a test failed;
:meth:`Hypervisor.stop` destroys every domain and storage pool of the daemon
(a test defines libvirt's RBD pool with
:func:`rbd_driver.ops.libvirt_pool.provision_libvirt_pool`), stops the
daemon by its recorded PID, kills any QEMU it left (found by the directory
in their command line) and removes the directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from rbd_driver.libvirt import secret as libvirt_secret
from rbd_driver.storage.cephx import CephxKey
from rbd_driver.testing.guest import GuestImage, kernel_cmdline, parse_console

__all__ = ["Guest", "GuestTimeout", "Hypervisor", "HypervisorScope", "HypervisorUnavailable",
           "qemu_unavailable_reason"]

QEMU = "qemu-system-x86_64"
LIBVIRTD = "libvirtd"


class HypervisorUnavailable(Exception):
    """The hypervisor cannot be started; the message says why."""


class GuestTimeout(AssertionError):
    """A guest did not print what was awaited; the message holds its console."""


def qemu_unavailable_reason() -> str | None:
    """Return why ``qemu-system-x86_64`` cannot run here, or None when it can."""
    binary = shutil.which(QEMU)
    if binary is None:
        return f"{QEMU} is not installed (Debian package qemu-system-x86)"
    try:
        proc = subprocess.run([binary, "--version"], capture_output=True, text=True,
                              timeout=30, check=False)
    except OSError as err:
        return f"{QEMU} cannot run: {err}"
    if proc.returncode != 0:
        return f"{QEMU} cannot run: {proc.stderr.strip()[:200]}"
    return None


def _libvirt() -> Any:
    try:
        import libvirt
    except ImportError as err:
        raise HypervisorUnavailable("the libvirt Python API is missing "
                                    "(Debian package python3-libvirt)") from err
    return libvirt


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def domain_xml(name: str, guest: GuestImage, disks: list[str], cmdline: str, console: str,
               memory_mib: int = 160) -> str:
    """Return the XML of a TCG guest booting ``guest`` with ``disks`` (``<disk>`` XML)."""
    domain = ET.Element("domain", type="qemu")
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "memory", unit="MiB").text = str(memory_mib)
    ET.SubElement(domain, "vcpu").text = "1"
    os_el = ET.SubElement(domain, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(os_el, "kernel").text = guest.kernel
    ET.SubElement(os_el, "initrd").text = guest.initramfs
    ET.SubElement(os_el, "cmdline").text = cmdline
    features = ET.SubElement(domain, "features")
    ET.SubElement(features, "acpi")
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        ET.SubElement(domain, event).text = "destroy"
    devices = ET.SubElement(domain, "devices")
    for disk in disks:
        devices.append(ET.fromstring(disk))
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=console)
    ET.SubElement(serial, "target", port="0")
    ET.SubElement(devices, "memballoon", model="none")
    return ET.tostring(domain, encoding="unicode")


class Guest:
    """A running guest: its domain and its serial console."""

    def __init__(self, domain: Any, console: str) -> None:
        self.domain = domain
        self.name: str = domain.name()
        self.console_path = console
        self.booted_at = time.monotonic()

    def console(self) -> str:
        """Return everything the guest printed so far."""
        try:
            with open(self.console_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def lines(self) -> list[str]:
        """Return the guest's ``RG`` lines so far (see :mod:`rbd_driver.testing.guest`)."""
        return parse_console(self.console())

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        """Wait for an ``RG`` line matching ``pattern`` (a regex); return its match.

        :raises GuestTimeout: not within ``timeout`` s, or the guest reported
            an error or stopped first.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines()
            for line in lines:
                found = regex.search(line)
                if found:
                    return found
            errors = [line for line in lines if line.startswith("error")]
            stopped = not self.is_running()
            if errors or stopped or time.monotonic() > deadline:
                why = (f"reported {errors}" if errors else "stopped" if stopped
                       else f"timed out after {timeout} s")
                raise GuestTimeout(f"guest {self.name} {why} before /{pattern}/; console:\n"
                                   + self.console()[-3000:])
            time.sleep(0.1)

    def is_running(self) -> bool:
        """Return True while the domain exists and has not shut off."""
        try:
            return bool(self.domain.isActive())
        except Exception:
            return False

    def wait_shutoff(self, timeout: float = 60) -> None:
        """Wait for the guest to power itself off.

        :raises GuestTimeout: it still runs after ``timeout`` s.
        """
        deadline = time.monotonic() + timeout
        while self.is_running():
            if time.monotonic() > deadline:
                raise GuestTimeout(f"guest {self.name} still runs after {timeout} s; console:\n"
                                   + self.console()[-3000:])
            time.sleep(0.1)

    def attach(self, disk_xml: str) -> None:
        """Hot-plug a ``<disk>`` into the running guest."""
        self.domain.attachDevice(disk_xml)

    def detach(self, disk_xml: str) -> None:
        """Hot-unplug a ``<disk>`` (the guest must release it: ACPI eject)."""
        self.domain.detachDevice(disk_xml)

    def block_resize(self, target_dev: str, size: int) -> None:
        """Tell QEMU and the guest that disk ``target_dev`` now has ``size`` bytes."""
        libvirt = _libvirt()
        self.domain.blockResize(target_dev, size, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)

    def suspend(self) -> None:
        self.domain.suspend()

    def resume(self) -> None:
        self.domain.resume()

    def destroy(self) -> None:
        """Stop the guest now (a transient domain is then gone)."""
        with contextlib.suppress(Exception):
            self.domain.destroy()


class Hypervisor:
    """A private libvirt daemon (session mode) for guests in tests.

    :param user: the unprivileged user the daemon and QEMU run as when
        started by root (default ``nobody``); ignored otherwise.
    :param ceph_timeout: seconds QEMU's librbd waits for the monitors
        (``client mount timeout``), so a disk that cannot connect fails fast.
    :param host_uuid: the UUID the daemon reports as its host's (``host_uuid``
        in its libvirtd.conf; default a random one), so that two daemons on
        one machine look like two hosts: libvirt refuses to migrate a guest
        to a daemon with its own host UUID.
    """

    def __init__(self, user: str = "nobody", directory: str | None = None,
                 ceph_timeout: int = 20, host_uuid: str | None = None) -> None:
        self.user = user
        self.host_uuid = host_uuid or str(uuid.uuid4())
        self.ceph_timeout = ceph_timeout
        self._parent = directory
        self.directory: str | None = None
        self.pid: int | None = None
        self._conn: Any = None
        self._uid: int | None = None
        self._gid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ------------------------------------------------------

    def __enter__(self) -> Hypervisor:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def socket(self) -> str:
        assert self.directory is not None
        return os.path.join(self.directory, "run", "libvirt", "libvirt-sock")

    @property
    def uri(self) -> str:
        """The URI of this daemon's QEMU driver."""
        return f"qemu:///session?socket={self.socket}"

    @property
    def conn(self) -> Any:
        """The open libvirt connection (started by :meth:`start`)."""
        if self._conn is None:
            raise HypervisorUnavailable("the hypervisor is not started")
        return self._conn

    def start(self, timeout: float = 60) -> Hypervisor:
        """Start the daemon and connect; return self.

        :raises HypervisorUnavailable: QEMU, libvirtd or the Python API is
            missing, or the daemon did not come up (its log is in the message).
        """
        reason = qemu_unavailable_reason()
        if reason:
            raise HypervisorUnavailable(reason)
        libvirtd = shutil.which(LIBVIRTD) or (
            "/usr/sbin/libvirtd" if os.path.exists("/usr/sbin/libvirtd") else None)
        if libvirtd is None:
            raise HypervisorUnavailable("libvirtd is not installed (Debian packages "
                                        "libvirt-daemon and libvirt-daemon-driver-qemu)")
        libvirt = _libvirt()
        # Errors are raised as libvirtError; libvirt's default handler would
        # also print each one (a vanished transient domain, say) on stderr.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        self.directory = tempfile.mkdtemp(prefix="rbd-driver-hv-", dir=self._parent)
        os.chmod(self.directory, 0o755)
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam(self.user)
            except KeyError as err:
                self.stop()
                raise HypervisorUnavailable(f"no user {self.user!r} to run libvirtd as") from err
            self._uid, self._gid = entry.pw_uid, entry.pw_gid
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
        for var, sub in (("HOME", "home"), ("XDG_CONFIG_HOME", "config"),
                         ("XDG_CACHE_HOME", "cache"), ("XDG_RUNTIME_DIR", "run"),
                         ("XDG_DATA_HOME", "data")):
            env[var] = self._mkdir(sub)
        self._mkdir("guests")
        # QEMU's librbd reads $HOME/.ceph/ceph.conf when no /etc/ceph/ceph.conf
        # exists: a guest whose disk cannot connect (bad auth, say) then fails
        # to start in seconds instead of hanging libvirt for librbd's 300 s.
        ceph_dir = os.path.join(env["HOME"], ".ceph")
        os.makedirs(ceph_dir, exist_ok=True)
        with open(os.path.join(ceph_dir, "ceph.conf"), "w", encoding="utf-8") as f:
            f.write(f"[client]\nclient mount timeout = {self.ceph_timeout}\n"
                    "admin socket =\nlog file =\n")
        self._chown_tree(env["HOME"])
        qemu_conf = os.path.join(env["XDG_CONFIG_HOME"], "libvirt")
        os.makedirs(qemu_conf, exist_ok=True)
        with open(os.path.join(qemu_conf, "qemu.conf"), "w", encoding="utf-8") as f:
            # QEMU writes its own log: no virtlogd daemon to start and stop.
            f.write('stdio_handler = "file"\n')
        with open(os.path.join(qemu_conf, "libvirtd.conf"), "w", encoding="utf-8") as f:
            f.write(f'host_uuid = "{self.host_uuid}"\n')
        self._chown_tree(env["XDG_CONFIG_HOME"])
        log = open(os.path.join(self.directory, "libvirtd.log"), "wb")  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                [libvirtd], env=env, cwd=self.directory, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                user=self._uid, group=self._gid, extra_groups=[] if self._uid is not None else None)
        finally:
            log.close()
        self._proc = proc
        self.pid = proc.pid
        with open(os.path.join(self.directory, "libvirtd.pid"), "w", encoding="ascii") as f:
            f.write(f"{proc.pid}\n")
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                self._fail(f"libvirtd exited with {proc.returncode}")
            if os.path.exists(self.socket):
                try:
                    self._conn = libvirt.open(self.uri)
                    break
                except libvirt.libvirtError:
                    pass
            if time.monotonic() > deadline:
                self._fail(f"libvirtd did not answer within {timeout} s")
            time.sleep(0.1)
        # libvirt probes QEMU's capabilities once, on first use: do it now, not
        # in the first guest's boot time (a compute host's libvirtd has long done it).
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.getDomainCapabilities(None, "x86_64", None, "qemu", 0)
        return self

    def _mkdir(self, sub: str) -> str:
        assert self.directory is not None
        path = os.path.join(self.directory, sub)
        os.makedirs(path, mode=0o700, exist_ok=True)
        if self._uid is not None:
            os.chown(path, self._uid, self._gid or 0)
        return path

    def _chown_tree(self, top: str) -> None:
        if self._uid is None:
            return
        for root, dirs, files in os.walk(top):
            for name in dirs + files:
                os.chown(os.path.join(root, name), self._uid, self._gid or 0)

    def _fail(self, why: str) -> None:
        assert self.directory is not None
        with open(os.path.join(self.directory, "libvirtd.log"), encoding="utf-8",
                  errors="replace") as f:
            tail = f.read()[-2000:]
        self.stop()
        raise HypervisorUnavailable(f"{why}; its log:\n{tail}")

    def stop(self) -> None:
        """Destroy every guest and storage pool, stop the daemon, kill what it left,
        remove the directory."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                for domain in self._conn.listAllDomains(0):
                    with contextlib.suppress(Exception):
                        domain.destroy()
                    with contextlib.suppress(Exception):
                        domain.undefine()
            with contextlib.suppress(Exception):
                for pool in self._conn.listAllStoragePools(0):
                    with contextlib.suppress(Exception):
                        pool.destroy()
                    with contextlib.suppress(Exception):
                        pool.undefine()
            with contextlib.suppress(Exception):
                for secret in self._conn.listAllSecrets(0):
                    with contextlib.suppress(Exception):
                        secret.undefine()
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=15)
            self._proc = None
            self.pid = None
        if self.directory is not None:
            # QEMU (and anything else the daemon spawned) names our directory.
            for pid in _processes_mentioning(self.directory):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    # -- guests ---------------------------------------------------------

    def install(self, guest: GuestImage) -> GuestImage:
        """Copy ``guest`` where the daemon's user can read it; return the copy."""
        assert self.directory is not None
        target = os.path.join(self.directory, f"guest-{guest.version}")
        if not os.path.isdir(target):
            os.makedirs(target)
            os.chmod(target, 0o755)
            for path in (guest.kernel, guest.initramfs):
                copy = os.path.join(target, os.path.basename(path))
                try:
                    os.link(path, copy)  # the cached files are 0644: a link is enough
                except OSError:
                    shutil.copyfile(path, copy)
                    os.chmod(copy, 0o644)
        return GuestImage(os.path.join(target, os.path.basename(guest.kernel)),
                          os.path.join(target, os.path.basename(guest.initramfs)),
                          guest.version)

    def boot(self, guest: GuestImage, disks: list[str], steps: list[str] | tuple[str, ...],
             name: str | None = None, memory_mib: int = 160) -> Guest:
        """Boot a transient guest with ``disks`` that runs ``steps``; return it."""
        assert self.directory is not None
        name = name or f"rbd-driver-{uuid.uuid4().hex[:10]}"
        console = os.path.join(self.directory, "guests", f"{name}.console")
        xml = domain_xml(name, self.install(guest), disks, kernel_cmdline(steps), console,
                         memory_mib)
        return Guest(self.conn.createXML(xml, 0), console)

    def define_ceph_secret(self, user: str, key: CephxKey) -> str:
        """Define the ceph secret of ``client.<user>`` through the library; return its UUID."""
        return libvirt_secret.define_ceph_secret(user, key, conn=self.conn)

    @contextlib.contextmanager
    def scope(self) -> Iterator[HypervisorScope]:
        """Yield a scope whose guests and secrets are removed when it closes."""
        scope = HypervisorScope(self)
        try:
            yield scope
        finally:
            scope.close()


class HypervisorScope:
    """Boots guests and defines secrets on a :class:`Hypervisor`, and removes them on close."""

    def __init__(self, hypervisor: Hypervisor) -> None:
        self.hypervisor = hypervisor
        self.guests: list[Guest] = []
        self.secret_users: list[str] = []
        self.passphrase_secrets: list[str] = []

    @property
    def conn(self) -> Any:
        return self.hypervisor.conn

    @property
    def uri(self) -> str:
        return self.hypervisor.uri

    def boot(self, guest: GuestImage, disks: list[str], steps: list[str] | tuple[str, ...],
             name: str | None = None, memory_mib: int = 160) -> Guest:
        """Like :meth:`Hypervisor.boot`; the guest is destroyed when the scope closes."""
        booted = self.hypervisor.boot(guest, disks, steps, name, memory_mib)
        self.guests.append(booted)
        return booted

    def define_ceph_secret(self, user: str, key: CephxKey) -> str:
        """Like :meth:`Hypervisor.define_ceph_secret`; undefined when the scope closes."""
        secret_uuid = self.hypervisor.define_ceph_secret(user, key)
        self.secret_users.append(user)
        return secret_uuid

    def define_passphrase_secret(self, secret_uuid: str, passphrase: bytes) -> str:
        """Define an encrypted disk's passphrase secret through the library; undefined
        when the scope closes."""
        from rbd_driver.libvirt import passphrase as libvirt_passphrase

        defined = libvirt_passphrase.define_passphrase_secret(secret_uuid, passphrase,
                                                              conn=self.conn)
        self.passphrase_secrets.append(defined)
        return defined

    def destroy_guests(self) -> None:
        """Stop every guest of this scope (before its disks are removed)."""
        for guest in reversed(self.guests):
            guest.destroy()
        self.guests.clear()

    def close(self) -> None:
        self.destroy_guests()
        for user in reversed(self.secret_users):
            with contextlib.suppress(Exception):
                libvirt_secret.remove_ceph_secret(user, conn=self.conn)
        self.secret_users.clear()
        if self.passphrase_secrets:
            from rbd_driver.libvirt import passphrase as libvirt_passphrase

            for secret_uuid in reversed(self.passphrase_secrets):
                with contextlib.suppress(Exception):
                    libvirt_passphrase.remove_passphrase_secret(secret_uuid, conn=self.conn)
            self.passphrase_secrets.clear()
