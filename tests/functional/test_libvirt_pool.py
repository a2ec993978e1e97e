# SPDX-License-Identifier: Apache-2.0
"""libvirt's RBD storage pool on the library's pool: the path CloudStack's KVM agent takes.

A private libvirtd (:mod:`rbd_driver.testing.hypervisor`) with its RBD storage
backend (Debian package libvirt-daemon-driver-storage-rbd) gets a pool of type
``rbd`` from ``rbd-driver provision libvirt-pool``, on ``vms``, as the
non-admin cephx user with the library's libvirt secret. libvirt and the
library must then see one set of disks. The oracles: ``virsh`` (libvirt's own
view) and the ``rbd``/``ceph`` CLI as admin; guests read and write their disks.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rbd_driver import imagebackend
from rbd_driver.backends.rbd import Rbd
from rbd_driver.libvirt import storage_pool
from rbd_driver.ops.libvirt_pool import provision_libvirt_pool
from rbd_driver.storage.cephx import read_key
from rbd_driver.storage.location import format_location
from rbd_driver.storage.monitors import split_addr
from rbd_driver.testing.hypervisor import HypervisorScope
from rbd_driver.testing.local_cluster import ClusterState

pytestmark = pytest.mark.functional

MiB = 1 << 20
SECTOR = 512
RAW = {"disk_format": "raw"}
_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


# -- helpers -------------------------------------------------------------------


def virsh(hypervisor: HypervisorScope, *args: str, expect: int = 0) -> str:
    """Run ``virsh`` on the private daemon; return stdout (stderr when it must fail)."""
    proc = subprocess.run(["virsh", "-c", hypervisor.uri, *args], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == expect, (args, proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout if expect == 0 else proc.stderr


def vol_list(hypervisor: HypervisorScope, pool: str) -> dict[str, dict[str, Any]]:
    """``virsh vol-list --details`` after ``pool-refresh``: name -> path, type, capacity."""
    virsh(hypervisor, "pool-refresh", pool)
    rows = {}
    lines = virsh(hypervisor, "vol-list", "--details", pool).splitlines()
    for line in lines[2:]:
        if not line.strip():
            continue
        name, path, kind, capacity, _allocation = re.split(r"\s{2,}", line.strip())
        value, unit = capacity.split()
        rows[name] = {"path": path, "type": kind, "capacity": round(float(value) * _UNITS[unit])}
    return rows


def admin_size(ceph_admin: Callable[..., Any], spec: str) -> int:
    return int(ceph_admin("rbd", "info", spec)["size"])


def admin_read(ceph_cluster: ClusterState, spec: str, offset: int, length: int,
               tmp_path: Path) -> bytes:
    target = tmp_path / f"export-{uuid.uuid4().hex}"
    subprocess.run(["rbd", "-c", ceph_cluster.conf_path, "export", "--no-progress", spec,
                    str(target)], check=True, capture_output=True, timeout=120)
    with open(target, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    target.unlink()
    return data


# -- fixtures ------------------------------------------------------------------


@pytest.fixture
def pool_backend(libvirt_rbd_conf: Any) -> Iterator[imagebackend.Backend]:
    with imagebackend.Backend(libvirt_rbd_conf) as backend:
        yield backend


@pytest.fixture
def libvirt_pool(pool_backend: imagebackend.Backend,
                 hypervisor: HypervisorScope) -> Iterator[str]:
    """libvirt's RBD pool on ``vms``, made by the library; destroyed and undefined after."""
    name = f"rbd-{uuid.uuid4().hex[:8]}"
    result = provision_libvirt_pool(pool_backend.conf, pool_backend.driver("rbd").client, name,
                                    libvirt_conn=hypervisor.conn)
    assert result.defined and result.started
    yield name
    _remove_pool(hypervisor, name)


def _remove_pool(hypervisor: HypervisorScope, name: str) -> None:
    pool = hypervisor.conn.storagePoolLookupByName(name)
    if pool.isActive():
        pool.destroy()
    pool.undefine()


@pytest.fixture
def golden(pool_backend: imagebackend.Backend) -> Iterator[dict[str, str]]:
    """A golden image in ``images`` with a marker in its first sector."""
    driver = pool_backend.driver("rbd")
    name = f"golden-{uuid.uuid4().hex[:8]}"
    marker = f"GOLDEN-{uuid.uuid4().hex[:8]}"
    driver.create(name, 64 * MiB, pool="images")
    with driver.client.open_image("images", name) as image:
        image.write(marker.encode().ljust(SECTOR, b"\0"), 0)
    driver.create_snap(name, "snap", protect=True, pool="images")
    yield {"name": name, "marker": marker,
           "url": format_location(driver.fsid, "images", name, "snap")}
    report = driver.remove_image(name, pool="images")
    assert report.removed == [name], report


@pytest.fixture
def instances(pool_backend: imagebackend.Backend,
              hypervisor: HypervisorScope) -> Iterator[list[str]]:
    """Instance UUIDs whose guests are stopped and disks removed by the library after."""
    uuids: list[str] = []
    yield uuids
    hypervisor.destroy_guests()
    for inst in reversed(uuids):
        report = Rbd.cleanup_instance(pool_backend.conf, inst, driver=pool_backend.driver("rbd"))
        assert report.ok and not report.trashed, report


def _clone(backend: imagebackend.Backend, golden: dict[str, str], inst: str,
           name: str = "disk") -> Rbd:
    disk = backend.by_name(inst, name, image_type="rbd")
    assert isinstance(disk, Rbd)
    disk.direct_fetch("golden", RAW, [{"url": golden["url"], "metadata": {}}])
    return disk


def _new_instance(instances: list[str]) -> str:
    inst = str(uuid.uuid4())
    instances.append(inst)
    return inst


# -- the pool ------------------------------------------------------------------


def test_cli_defines_and_starts_the_pool_as_the_user_with_every_monitor_idempotently(
        ceph_cluster, ceph_admin, hypervisor, libvirt_rbd_conf, tmp_path) -> None:
    name = f"rbd-{uuid.uuid4().hex[:8]}"
    group = libvirt_rbd_conf.rbd
    conf = tmp_path / "rbd-driver.conf"
    conf.write_text(f"[rbd]\nceph_conf = {group.ceph_conf}\nuser = {group.user}\n"
                    f"keyring = {group.keyring}\npool = vms\nsecret_uuid = {group.secret_uuid}\n"
                    f"libvirt_uri = {hypervisor.uri}\n")

    def cli(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "rbd_driver.cli", "--config-file", str(conf),
                               *args], capture_output=True, text=True, timeout=180, check=False)
        assert proc.returncode == expect, (args, proc.stdout, proc.stderr)
        return proc

    try:
        first = cli("provision", "libvirt-pool", name).stdout
        assert re.search(r"defined:\s+yes", first) and re.search(r"started:\s+yes", first), first
        info = virsh(hypervisor, "pool-info", name)
        assert re.search(r"State:\s+running", info) and re.search(r"Autostart:\s+yes", info), info
        dumped = virsh(hypervisor, "pool-dumpxml", "--inactive", name)
        xml_file = tmp_path / "pool.xml"
        xml_file.write_text(dumped)
        subprocess.run(["virt-xml-validate", str(xml_file), "storagepool"], check=True,
                       capture_output=True, timeout=60)
        pool = ET.fromstring(dumped)
        assert pool.get("type") == "rbd"
        assert pool.findtext("source/name") == "vms"
        mons = ceph_admin("ceph", "mon", "dump")["mons"]
        v1 = {split_addr(a["addr"]) for m in mons for a in m["public_addrs"]["addrvec"]
              if a["type"] == "v1"}
        assert len(v1) == len(mons)
        assert {(h.get("name"), int(h.get("port"))) for h in pool.findall("source/host")} == v1
        auth = pool.find("source/auth")
        assert auth is not None and auth.get("type") == "ceph"
        assert auth.get("username") == ceph_cluster.user != "admin"
        assert auth.find("secret").get("uuid") == group.secret_uuid
        key = read_key(ceph_cluster.user_keyring, f"client.{ceph_cluster.user}")
        assert key.reveal() not in dumped + virsh(hypervisor, "pool-dumpxml", name)

        again = cli("--json", "provision", "libvirt-pool", name).stdout
        assert '"defined": false' in again and '"started": false' in again, again

        other = conf.read_text().replace("pool = vms", "pool = images")
        conf.write_text(other)
        refused = cli("provision", "libvirt-pool", name, expect=1).stderr
        assert "another definition" in refused and "Ceph pool vms (wanted images)" in refused
        assert "Traceback" not in refused
        assert ET.fromstring(virsh(hypervisor, "pool-dumpxml", name)).findtext(
            "source/name") == "vms"
    finally:
        if name in virsh(hypervisor, "pool-list", "--all", "--name").split():
            _remove_pool(hypervisor, name)


def test_vol_list_shows_the_library_disks_with_their_sizes(
        pool_backend, libvirt_pool, hypervisor, golden, instances, ceph_admin) -> None:
    inst = _new_instance(instances)
    root = _clone(pool_backend, golden, inst)
    extra = _clone(pool_backend, golden, inst, "disk.eph0")
    extra.resize_image(96 * MiB)
    before = set(ceph_admin("rbd", "ls", "vms"))
    listed = vol_list(hypervisor, libvirt_pool)
    after = set(ceph_admin("rbd", "ls", "vms"))
    for disk, size in ((root, 64 * MiB), (extra, 96 * MiB)):
        assert admin_size(ceph_admin, f"vms/{disk.rbd_name}") == size
        assert listed[disk.rbd_name] == {"path": f"vms/{disk.rbd_name}", "type": "network",
                                         "capacity": size}
    # libvirt lists the whole pool, as Ceph does (images other tests made or
    # removed meanwhile may or may not be in it).
    assert before & after <= set(listed) <= before | after


def test_a_volume_libvirt_creates_is_a_disk_the_library_lists_resizes_and_removes(
        pool_backend, libvirt_pool, hypervisor, instances, ceph_admin) -> None:
    inst = _new_instance(instances)
    name = f"{inst}_disk"
    virsh(hypervisor, "vol-create-as", libvirt_pool, name, "24M")
    assert admin_size(ceph_admin, f"vms/{name}") == 24 * MiB

    driver = pool_backend.driver("rbd")
    assert driver.list_images_named(f"{inst}_") == [name]
    disk = pool_backend.by_name(inst, "disk", image_type="rbd")
    assert disk.exists() and disk.get_disk_size(disk.path) == 24 * MiB
    disk.resize_image(40 * MiB)
    assert admin_size(ceph_admin, f"vms/{name}") == 40 * MiB
    assert vol_list(hypervisor, libvirt_pool)[name]["capacity"] == 40 * MiB

    report = Rbd.cleanup_instance(pool_backend.conf, inst, driver=driver)
    assert report.removed == [name] and report.ok and not report.trashed, report
    assert name not in ceph_admin("rbd", "ls", "vms")
    assert name not in vol_list(hypervisor, libvirt_pool)


# -- guests --------------------------------------------------------------------


def test_a_guest_boots_from_a_library_clone_named_through_the_pool(
        pool_backend, libvirt_pool, hypervisor, golden, instances, guest_image, ceph_cluster,
        tmp_path) -> None:
    disk = _clone(pool_backend, golden, _new_instance(instances))
    virsh(hypervisor, "pool-refresh", libvirt_pool)
    pool = hypervisor.conn.storagePoolLookupByName(libvirt_pool)
    volume = pool.storageVolLookupByName(disk.rbd_name)
    assert volume.path() == f"vms/{disk.rbd_name}"

    # libvirt 9.0 does not let a guest name an rbd pool's volume directly...
    by_volume = (f"<disk type='volume' device='disk'><driver name='qemu' type='raw'/>"
                 f"<source pool='{libvirt_pool}' volume='{disk.rbd_name}'/>"
                 "<target dev='vda' bus='virtio'/></disk>")
    with pytest.raises(Exception, match="using 'rbd' pools for backing 'volume' disks"):
        hypervisor.boot(guest_image, [by_volume], ["report"])

    # ...so, as CloudStack's agent does, the disk is written from the pool's source.
    xml = storage_pool.volume_disk_xml(pool.XMLDesc(0), volume.path())
    written = f"WRITTEN-{uuid.uuid4().hex[:8]}"
    vm = hypervisor.boot(guest_image, [xml], ["report", f"write:vda:8:{written}"])
    seen = vm.wait_for(r"^disk vda sectors=(\d+) data=(.*)$")
    assert (seen[2], int(seen[1]) * SECTOR) == (golden["marker"], 64 * MiB)
    vm.wait_for(rf"^wrote vda 8 {written}$")
    vm.wait_shutoff()
    assert admin_read(ceph_cluster, f"vms/{disk.rbd_name}", 8 * SECTOR, len(written),
                      tmp_path) == written.encode()
    assert admin_read(ceph_cluster, f"images/{golden['name']}@snap", 8 * SECTOR, len(written),
                      tmp_path) == b"\0" * len(written)


def test_vol_delete_of_a_disk_a_running_guest_holds_is_refused_by_ceph_and_loses_nothing(
        pool_backend, libvirt_pool, hypervisor, golden, instances, guest_image, ceph_cluster,
        ceph_admin, tmp_path) -> None:
    """Ceph refuses; the guest writes on. Once it is gone, libvirt removes the disk at once."""
    inst = _new_instance(instances)
    disk = _clone(pool_backend, golden, inst)
    other = _clone(pool_backend, golden, inst, "disk.eph0")
    virsh(hypervisor, "pool-refresh", libvirt_pool)
    pool = hypervisor.conn.storagePoolLookupByName(libvirt_pool)
    xml = storage_pool.volume_disk_xml(pool.XMLDesc(0), f"vms/{disk.rbd_name}")
    vm = hypervisor.boot(guest_image, [xml],
                         ["write:vda:8:BEFORE", "wait:vdb", "write:vda:16:AFTER"])
    vm.wait_for(r"^wrote vda 8 BEFORE$")
    assert ceph_admin("rbd", "status", f"vms/{disk.rbd_name}")["watchers"]

    refused = virsh(hypervisor, "vol-delete", "--pool", libvirt_pool, disk.rbd_name, expect=1)
    # librbd refuses to remove an image with watchers (EBUSY); libvirt 9.0
    # reports it with a stale errno text, not librbd's code.
    assert f"failed to remove volume 'vms/{disk.rbd_name}'" in refused, refused
    assert disk.rbd_name in ceph_admin("rbd", "ls", "vms")
    assert disk.rbd_name in vol_list(hypervisor, libvirt_pool)

    # The guest still owns its disk: it writes again once told to go on.
    vm.attach(other.libvirt_info({"dev": "vdb"}))
    vm.wait_for(r"^wrote vda 16 AFTER$")
    vm.wait_shutoff()
    data = admin_read(ceph_cluster, f"vms/{disk.rbd_name}", 0, 17 * SECTOR, tmp_path)
    assert data[:len(golden["marker"])] == golden["marker"].encode()
    assert data[8 * SECTOR:8 * SECTOR + 6] == b"BEFORE"
    assert data[16 * SECTOR:16 * SECTOR + 5] == b"AFTER"
    assert ceph_admin("rbd", "info", f"vms/{disk.rbd_name}")["parent"]["image"] == golden["name"]

    # Once no client holds it, libvirt removes it at once: no library rule applies.
    virsh(hypervisor, "vol-delete", "--pool", libvirt_pool, disk.rbd_name)
    assert disk.rbd_name not in ceph_admin("rbd", "ls", "vms")
    assert not [e for e in ceph_admin("rbd", "trash", "ls", "vms") if e["name"] == disk.rbd_name]


def test_vol_delete_of_a_golden_image_with_clones_is_refused_and_the_clone_reads_on(
        pool_backend, libvirt_pool, hypervisor, ceph_admin, ceph_cluster, tmp_path) -> None:
    # A golden image in the instance pool itself, so that libvirt's pool lists it.
    driver = pool_backend.driver("rbd")
    golden = f"golden-{uuid.uuid4().hex[:8]}"
    inst = str(uuid.uuid4())
    driver.create(golden, 16 * MiB)
    try:
        with driver.client.open_image("vms", golden) as image:
            image.write(b"GOLD".ljust(SECTOR, b"\0"), 0)
        driver.create_snap(golden, "snap", protect=True)
        disk = _clone(pool_backend,
                      {"url": format_location(driver.fsid, "vms", golden, "snap")}, inst)
        assert golden in vol_list(hypervisor, libvirt_pool)

        # Without --delete-snapshots librbd refuses an image with snapshots; with
        # it, libvirt's first step, unprotecting the snapshot, fails: it has a clone.
        for flags, step in (((), "failed to remove volume"),
                            (("--delete-snapshots",), "failed to unprotect snapshot")):
            refused = virsh(hypervisor, "vol-delete", "--pool", libvirt_pool, *flags, golden,
                            expect=1)
            assert f"{step} 'vms/{golden}" in refused, refused
            assert golden in ceph_admin("rbd", "ls", "vms")
            assert [s["name"] for s in ceph_admin("rbd", "snap", "ls", f"vms/{golden}")] == [
                "snap"]
        assert admin_read(ceph_cluster, f"vms/{disk.rbd_name}", 0, 4, tmp_path) == b"GOLD"
    finally:
        report = Rbd.cleanup_instance(pool_backend.conf, inst, driver=driver)
        assert report.ok and not report.trashed, report
        assert driver.remove_image(golden).removed == [golden]
