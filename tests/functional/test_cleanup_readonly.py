# SPDX-License-Identifier: Apache-2.0
"""Cleanup and a disk some client has open only for reading: real cluster, non-admin user.

What Ceph can see of a reader decides what cleanup can do. A librbd client that
opens an image read-only (``rbd_open_read_only``: ``rbd export``, a backup, the
Python binding's ``read_only=True``) registers no watch and cannot take the
exclusive lock, so nothing in the cluster shows it, and cleanup removes the disk
under it; the reader then reads zeros, with no error. QEMU is another matter:
its rbd driver always opens images read-write in librbd, so a guest (or
qemu-io) with a read-only disk is a watcher like any other, and its disk is
left in place. The oracles are the Ceph CLI as admin (``rbd status``, ``rados
listwatchers``, ``rbd lock ls``, ``rbd ls``) and the readers themselves.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import rados
import rbd

from rbd_driver import imagebackend
from rbd_driver.testing.local_cluster import ClusterState

DATA = b"\x5a" * 4096


@pytest.fixture
def made(rbd_conf, ceph_admin) -> Iterator[Callable[[], tuple[Any, Any, str]]]:
    """A factory of instance disks holding DATA: (backend class, disk, name)."""
    rbd_conf.set_override("destroy_retries", 0, group="rbd")
    with imagebackend.Backend(rbd_conf) as backend:
        driver = backend.driver("rbd")
        names: list[str] = []

        def make() -> tuple[Any, Any, str]:
            inst = str(uuid.uuid4())
            name = f"{inst}_disk"
            driver.create(name, 8 << 20)
            names.append(name)
            with driver.client.open_image("vms", name) as image:
                image.write(DATA, 0)
            return backend.backend("rbd"), backend.by_name(inst, "disk", image_type="rbd"), name

        yield make
        for name in names:
            assert driver.remove_image(name).ok


def _seen_by_ceph(ceph_cluster: ClusterState, ceph_admin: Callable[..., Any],
                  name: str) -> dict[str, Any]:
    """Every view of an image's clients the admin CLI offers."""
    header = "rbd_header." + ceph_admin("rbd", "info", f"vms/{name}")["id"]
    proc = subprocess.run(["rados", "-c", ceph_cluster.conf_path, "-p", "vms", "listwatchers",
                           header], capture_output=True, text=True, timeout=60, check=True)
    return {"rbd status": ceph_admin("rbd", "status", f"vms/{name}")["watchers"],
            "rados listwatchers": proc.stdout.split("\n")[:-1],
            "rbd lock ls": ceph_admin("rbd", "lock", "ls", f"vms/{name}") or []}


def test_a_read_only_librbd_client_is_invisible_and_its_disk_is_removed_under_it(
        made, rbd_conf, ceph_cluster, ceph_admin) -> None:
    cls, disk, name = made()
    client = rados.Rados(conffile=ceph_cluster.conf_path, rados_id=ceph_cluster.user)
    client.conf_set("keyring", ceph_cluster.user_keyring)
    client.connect()
    try:
        with client.open_ioctx("vms") as ioctx, rbd.Image(ioctx, name, read_only=True) as reader:
            assert reader.read(0, len(DATA)) == DATA
            # Nothing in the cluster shows it, and it cannot make itself seen by a lock.
            assert _seen_by_ceph(ceph_cluster, ceph_admin, name) == {
                "rbd status": [], "rados listwatchers": [], "rbd lock ls": []}
            with pytest.raises(rbd.InvalidArgument):
                reader.lock_acquire(rbd.RBD_LOCK_MODE_EXCLUSIVE)

            report = cls.cleanup_instance(rbd_conf, disk.instance_uuid, driver=disk.driver)
            assert report.removed == [name] and report.ok  # removed under the reader
            assert name not in (ceph_admin("rbd", "ls", "vms") or [])
            assert reader.read(0, len(DATA)) == b"\0" * len(DATA)  # zeros, and no error
    finally:
        client.shutdown()


def _qemu_io(proc: subprocess.Popen[str], command: str) -> str:
    """Send one command to an interactive qemu-io; return its output line."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(command + "\n")
    proc.stdin.flush()
    while True:
        line = proc.stdout.readline()
        assert line, "qemu-io exited"
        if "at offset" in line or "failed" in line.lower():
            return line


def test_qemu_with_a_read_only_disk_is_a_watcher_and_its_disk_stays(
        made, rbd_conf, ceph_cluster, ceph_admin) -> None:
    cls, disk, name = made()
    qemu = subprocess.Popen(["qemu-io", "-r", "-f", "raw", disk.path], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "read 4096/4096 bytes at offset 0" in _qemu_io(qemu, "read -P 0x5a 0 4096")
        (watcher,) = _seen_by_ceph(ceph_cluster, ceph_admin, name)["rbd status"]

        report = cls.cleanup_instance(rbd_conf, disk.instance_uuid, driver=disk.driver)
        assert list(report.busy) == [name] and watcher["address"] in report.busy[name]
        assert not report.removed and not report.trashed
        assert name in (ceph_admin("rbd", "ls", "vms") or [])
        assert "read 4096/4096 bytes at offset 0" in _qemu_io(qemu, "read -P 0x5a 0 4096")
    finally:
        assert qemu.stdin is not None
        qemu.stdin.write("quit\n")
        qemu.communicate(timeout=60)
    assert qemu.returncode == 0
    report = cls.cleanup_instance(rbd_conf, disk.instance_uuid, driver=disk.driver)
    assert report.removed == [name] and report.ok
