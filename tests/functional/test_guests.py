# SPDX-License-Identifier: Apache-2.0
"""Real guests booted by libvirt and QEMU (TCG) from disks this library made.

Each guest is the busybox test guest (:mod:`rbd_driver.testing.guest`): it
prints what it reads from its disks on the serial console and writes markers
where its kernel command line says. QEMU reaches the disks as the non-admin
cephx user, authenticated by the ceph secret that the library defined, with
the ``<disk>`` XML of ``Rbd.libvirt_info()``. What the guest wrote is read
back with the ``rbd`` CLI as admin, the independent oracle.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rbd_driver import imagebackend
from rbd_driver.backends.rbd import Rbd
from rbd_driver.storage.location import format_location
from rbd_driver.testing.guest import GuestImage
from rbd_driver.testing.hypervisor import HypervisorScope
from rbd_driver.testing.local_cluster import ClusterState

pytestmark = pytest.mark.functional

GOLDEN_SIZE = 64 << 20
SECTOR = 512
RAW = {"disk_format": "raw"}


@pytest.fixture
def guest_backend(libvirt_rbd_conf: Any) -> Iterator[imagebackend.Backend]:
    with imagebackend.Backend(libvirt_rbd_conf) as backend:
        yield backend


@pytest.fixture
def golden(guest_backend: imagebackend.Backend) -> Iterator[dict[str, str]]:
    """A golden image in pool ``images`` with a marker in its first sector."""
    driver = guest_backend.driver("rbd")
    name = f"golden-{uuid.uuid4().hex[:8]}"
    marker = f"GOLDEN-{uuid.uuid4().hex[:8]}"
    driver.create(name, GOLDEN_SIZE, pool="images")
    with driver.client.open_image("images", name) as image:
        image.write(marker.encode().ljust(SECTOR, b"\0"), 0)
    driver.create_snap(name, "snap", protect=True, pool="images")
    yield {"name": name, "marker": marker,
           "url": format_location(driver.fsid, "images", name, "snap")}
    report = driver.remove_image(name, pool="images")
    assert report.removed == [name], report


@pytest.fixture
def instances(guest_backend: imagebackend.Backend, golden: dict[str, str],
              hypervisor: HypervisorScope) -> Iterator[list[str]]:
    """Instance UUIDs; after the test their guests are stopped and their disks
    removed (the last instance first: a later one may be a clone of an earlier one)."""
    uuids: list[str] = []
    yield uuids
    hypervisor.destroy_guests()
    for inst in reversed(uuids):
        report = Rbd.cleanup_instance(guest_backend.conf, inst,
                                      driver=guest_backend.driver("rbd"))
        assert report.ok and not report.trashed, report


def _instance(instances: list[str]) -> str:
    inst = str(uuid.uuid4())
    instances.append(inst)
    return inst


def _clone(backend: imagebackend.Backend, golden: dict[str, str], inst: str,
           name: str = "disk") -> Rbd:
    disk = backend.by_name(inst, name, image_type="rbd")
    assert isinstance(disk, Rbd)
    disk.direct_fetch("golden", RAW, [{"url": golden["url"], "metadata": {}}])
    return disk


def _admin_read(ceph_cluster: ClusterState, spec: str, offset: int, length: int,
                tmp_path: Path) -> bytes:
    """Read bytes of an image (or snapshot) with ``rbd export`` as admin."""
    target = tmp_path / f"export-{uuid.uuid4().hex}"
    subprocess.run(["rbd", "-c", ceph_cluster.conf_path, "export", "--no-progress", spec,
                    str(target)], check=True, capture_output=True, timeout=120)
    try:
        with open(target, "rb") as f:
            f.seek(offset)
            return f.read(length)
    finally:
        os.unlink(target)


def _rbd_ls(ceph_admin: Callable[..., Any], *args: str) -> list[Any]:
    return list(ceph_admin("rbd", *args) or [])


def test_guest_boots_from_a_direct_fetch_clone_and_writes_to_the_clone_only(
        guest_backend, golden, instances, hypervisor, guest_image: GuestImage,
        ceph_cluster, tmp_path) -> None:
    disk = _clone(guest_backend, golden, _instance(instances))
    assert disk.parent_info() == ("images", golden["name"], "snap")
    written = f"WRITTEN-{uuid.uuid4().hex[:8]}"
    vm = hypervisor.boot(guest_image, [disk.libvirt_info()],
                         ["report", f"write:vda:8:{written}", "read:vda:8"])
    seen = vm.wait_for(r"^disk vda sectors=(\d+) data=(.*)$")
    assert seen[2] == golden["marker"]
    assert int(seen[1]) * SECTOR == GOLDEN_SIZE
    vm.wait_for(rf"^read vda 8 data={written}$")
    vm.wait_shutoff()
    assert _admin_read(ceph_cluster, f"vms/{disk.rbd_name}", 8 * SECTOR, len(written),
                       tmp_path) == written.encode()
    for golden_spec in (f"images/{golden['name']}", f"images/{golden['name']}@snap"):
        assert _admin_read(ceph_cluster, golden_spec, 8 * SECTOR, len(written),
                           tmp_path) == b"\0" * len(written)


def test_guest_boots_from_a_fallback_copy_and_cleanup_after_leaves_no_image(
        guest_backend, golden, instances, hypervisor, guest_image, ceph_cluster,
        ceph_admin, tmp_path) -> None:
    inst = _instance(instances)
    disk = guest_backend.by_name(inst, "disk", image_type="rbd")
    marker = f"COPIED-{uuid.uuid4().hex[:8]}"

    def download(target: str) -> None:
        with open(target, "wb") as f:
            f.write(marker.encode().ljust(SECTOR, b"\0"))
            f.truncate(32 << 20)

    disk.create_image(download, str(tmp_path / "base.raw"), 48 << 20)
    assert disk.parent_info() is None
    vm = hypervisor.boot(guest_image, [disk.libvirt_info()], ["report", "write:vda:8:KEPT"])
    seen = vm.wait_for(r"^disk vda sectors=(\d+) data=(.*)$")
    assert (seen[2], int(seen[1]) * SECTOR) == (marker, 48 << 20)
    vm.wait_for(r"^wrote vda 8 KEPT$")
    vm.wait_shutoff()
    assert _admin_read(ceph_cluster, f"vms/{disk.rbd_name}", 8 * SECTOR, 4, tmp_path) == b"KEPT"

    report = Rbd.cleanup_instance(guest_backend.conf, inst, driver=guest_backend.driver("rbd"))
    assert report.removed == [disk.rbd_name] and report.ok, report
    assert [n for n in _rbd_ls(ceph_admin, "ls", "vms") if n.startswith(inst)] == []
    assert [e for e in _rbd_ls(ceph_admin, "trash", "ls", "vms")
            if e.get("name", "").startswith(inst)] == []


def test_hot_plug_an_instance_disk_into_a_running_guest(
        guest_backend, golden, instances, hypervisor, guest_image) -> None:
    inst = _instance(instances)
    root = _clone(guest_backend, golden, inst)
    extra = _clone(guest_backend, golden, inst, "disk.eph0")
    extra.resize_image(80 << 20)
    vm = hypervisor.boot(guest_image, [root.libvirt_info()],
                         ["report", "wait:vdb", "report", "gone:vdb", "hold"])
    vm.wait_for(r"^disk vda ")
    extra_xml = extra.libvirt_info({"dev": "vdb"})
    vm.attach(extra_xml)
    vm.wait_for(r"^appeared vdb$")
    seen = vm.wait_for(r"^disk vdb sectors=(\d+) data=(.*)$")
    assert (int(seen[1]) * SECTOR, seen[2]) == (80 << 20, golden["marker"])
    vm.detach(extra_xml)
    vm.wait_for(r"^gone vdb$")
    assert vm.domain.XMLDesc(0).count("<disk ") == 1


def test_hot_plug_a_volume_from_its_connection_info(
        guest_backend, golden, instances, hypervisor, guest_image, ceph_cluster) -> None:
    from rbd_driver import volumes

    inst = _instance(instances)
    root = _clone(guest_backend, golden, inst)
    driver = guest_backend.driver("rbd")
    # As a volume service would: an image of its own, here named under the
    # instance so that the instance's cleanup removes it after the guest.
    volume = f"{inst}_volume"
    marker = f"VOLUME-{uuid.uuid4().hex[:8]}"
    driver.create(volume, 40 << 20)
    with driver.client.open_image("vms", volume) as image:
        image.write(marker.encode().ljust(SECTOR, b"\0"), 0)
    monitors = [m.preferred for m in driver.get_monitors()]
    conf = guest_backend.conf
    connection_info = {
        "driver_volume_type": "rbd", "serial": volume,
        "data": {"name": f"vms/{volume}", "hosts": [host for host, _ in monitors],
                 "ports": [str(port) for _, port in monitors], "auth_enabled": True,
                 "auth_username": ceph_cluster.user, "secret_type": "ceph",
                 "secret_uuid": conf.rbd.secret_uuid, "access_mode": "rw"}}
    xml = volumes.volume_disk_xml(connection_info, "vdb")
    vm = hypervisor.boot(guest_image, [root.libvirt_info()],
                         ["report", "wait:vdb", "report", "gone:vdb", "hold"])
    vm.wait_for(r"^disk vda ")
    vm.attach(xml)
    seen = vm.wait_for(r"^disk vdb sectors=(\d+) data=(.*)$")
    assert (int(seen[1]) * SECTOR, seen[2]) == (40 << 20, marker)
    vm.detach(xml)
    vm.wait_for(r"^gone vdb$")


def test_online_grow_is_seen_by_the_running_guest(
        guest_backend, golden, instances, hypervisor, guest_image, ceph_admin) -> None:
    disk = _clone(guest_backend, golden, _instance(instances))
    grown = 96 << 20
    vm = hypervisor.boot(guest_image, [disk.libvirt_info()],
                         ["report", f"grow:vda:{grown // SECTOR}"])
    seen = vm.wait_for(r"^disk vda sectors=(\d+) ")
    assert int(seen[1]) * SECTOR == GOLDEN_SIZE
    disk.resize_image(grown)
    assert ceph_admin("rbd", "info", f"vms/{disk.rbd_name}")["size"] == grown
    vm.block_resize("vda", grown)
    vm.wait_for(rf"^grown vda sectors={grown // SECTOR}$")
    vm.wait_shutoff()


def test_snapshot_of_a_running_guest_boots_in_a_second_guest(
        guest_backend, golden, instances, hypervisor, guest_image) -> None:
    disk = _clone(guest_backend, golden, _instance(instances))
    written = f"BEFORESNAP-{uuid.uuid4().hex[:8]}"
    first = hypervisor.boot(guest_image, [disk.libvirt_info()],
                            [f"write:vda:16:{written}", "hold"])
    first.wait_for(r"^holding$")
    image_id = f"snap-{uuid.uuid4().hex[:8]}"
    first.suspend()
    try:
        # The instance snapshot becomes an image of the image pool, inside Ceph.
        location = disk.direct_snapshot("instance-snap", "raw", image_id)
    finally:
        first.resume()
    copy_inst = _instance(instances)
    copy = guest_backend.by_name(copy_inst, "disk", image_type="rbd")
    assert isinstance(copy, Rbd)
    try:
        copy.direct_fetch(image_id, {"disk_format": "raw"}, [{"url": location}])
        second = hypervisor.boot(guest_image, [copy.libvirt_info()],
                                 ["report", "read:vda:16"])
        seen = second.wait_for(r"^disk vda sectors=\d+ data=(.*)$")
        assert seen[1] == golden["marker"]
        second.wait_for(rf"^read vda 16 data={written}$")
        second.wait_shutoff()
        assert first.is_running()
    finally:
        # The new image has a clone (the copy): guests off, the copy first, then it.
        hypervisor.destroy_guests()
        Rbd.cleanup_instance(guest_backend.conf, copy_inst, driver=guest_backend.driver("rbd"))
        disk.cleanup_direct_snapshot(location, also_destroy_volume=True)


def test_cleanup_while_the_guest_runs_reports_the_busy_disk(
        guest_backend, golden, instances, hypervisor, guest_image, ceph_admin) -> None:
    inst = _instance(instances)
    disk = _clone(guest_backend, golden, inst)
    vm = hypervisor.boot(guest_image, [disk.libvirt_info()], ["hold"])
    vm.wait_for(r"^holding$")
    report = Rbd.cleanup_instance(guest_backend.conf, inst, driver=guest_backend.driver("rbd"))
    assert disk.rbd_name in report.busy, report
    assert disk.rbd_name in _rbd_ls(ceph_admin, "ls", "vms")
    assert disk.rbd_name not in [e.get("name") for e in _rbd_ls(ceph_admin, "trash", "ls", "vms")]
    assert vm.is_running()
