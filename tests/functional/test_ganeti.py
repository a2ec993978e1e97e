# SPDX-License-Identifier: Apache-2.0
"""Ganeti 3.0 runs instances on the ExtStorage provider rbd_driver, for real.

A one-node cluster (:class:`rbd_driver.testing.ganeti.GanetiCluster`) boots
the test guest under KVM/TCG from disks the provider made, as a
least-privilege cephx user (``profile rbd`` on ``vms``, read-only on
``images``). The oracles are outside the library: the guest's console, the
admin ``rbd`` CLI (``ls``, ``info``, ``du``, ``export``, ``snap ls``) and
Ganeti's own answers (``gnt-storage diagnose``, the errors it prints).
"""

from __future__ import annotations

import glob
import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rbd_driver.ops import provision
from rbd_driver.storage.cephx import read_key
from rbd_driver.storage.rados_client import RadosClient
from rbd_driver.testing.ganeti import NODE, GanetiCluster, GanetiError
from rbd_driver.testing.guest import GuestImage
from rbd_driver.testing.local_cluster import ClusterState

MIB = 1 << 20
GIB = 1 << 30
SECTOR = 512
GOLDEN_SIZE = 64 * MIB
GOLDEN_DATA = 32 * MIB  # what a full copy has to write


@pytest.fixture(scope="module")
def admin(ceph_cluster: ClusterState) -> Iterator[RadosClient]:
    with RadosClient(ceph_cluster.conf_path, user="admin",
                     keyring=ceph_cluster.admin_keyring) as client:
        yield client


@pytest.fixture(scope="module")
def user(ceph_cluster: ClusterState, admin: RadosClient) -> Iterator[dict[str, str]]:
    """A least-privilege user (vms writable, images read-only) and the provider's config."""
    name = f"gnt-{uuid.uuid4().hex[:6]}"
    keyring = os.path.join(ceph_cluster.directory, f"ceph.client.{name}.keyring")
    provision.Provisioner(admin).ensure_user(name, ["vms"], ["images"], keyring=keyring)
    config = os.path.join(ceph_cluster.directory, f"rbd_driver-{name}.conf")
    with open(config, "w", encoding="ascii") as f:
        f.write(f"[rbd]\nceph_conf = {ceph_cluster.conf_path}\nuser = {name}\n"
                f"keyring = {keyring}\npool = vms\ngolden_pool = images\n"
                "golden_snapshot = snap\n")
    try:
        yield {"name": name, "keyring": keyring, "config": config}
    finally:
        provision.Provisioner(admin).delete_user(name)
        for path in (keyring, config):
            if os.path.exists(path):
                os.unlink(path)


def _rbd(ceph_cluster: ClusterState, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rbd", "-c", ceph_cluster.conf_path, *args], capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def golden(ceph_cluster: ClusterState, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[dict[str, Any]]:
    """A golden image in ``images`` (marker in sector 0, 32 MiB of data), made by admin,
    and the same bytes as a local raw file (what an OS create script would copy)."""
    name = f"gnt-golden-{uuid.uuid4().hex[:6]}"
    marker = f"GOLDEN-{uuid.uuid4().hex[:8]}"
    raw = tmp_path_factory.mktemp("ganeti") / f"{name}.raw"
    with open(raw, "wb") as f:
        f.write(marker.encode().ljust(SECTOR, b"\0"))
        block = (b"rbd_driver golden data " * 50000)[:MIB]
        f.seek(MIB)
        for _ in range(GOLDEN_DATA // MIB - 1):
            f.write(block)
        f.truncate(GOLDEN_SIZE)
    for args in (["import", "--no-progress", str(raw), f"images/{name}"],
                 ["snap", "create", f"images/{name}@snap"],
                 ["snap", "protect", f"images/{name}@snap"]):
        proc = _rbd(ceph_cluster, *args)
        assert proc.returncode == 0, proc.stderr
    fsid = ceph_cluster.fsid
    yield {"name": name, "marker": marker, "raw": str(raw),
           "url": f"rbd://{fsid}/images/{name}/snap"}
    _rbd(ceph_cluster, "snap", "unprotect", f"images/{name}@snap")
    _rbd(ceph_cluster, "snap", "purge", f"images/{name}")
    _rbd(ceph_cluster, "rm", "--no-progress", f"images/{name}")


@pytest.fixture(scope="module")
def ganeti(guest_image: GuestImage, user: dict[str, str]) -> Iterator[GanetiCluster]:
    """The one-node cluster; destroyed and every trace removed after the module."""
    def trace() -> tuple[Any, ...]:
        with open("/etc/hosts", encoding="utf-8") as f:
            hosts = f.read()
        ssh = sorted((p, os.stat(p).st_size) for p in glob.glob("/root/.ssh/*"))
        # Only our own link: other programs of the machine may add and remove theirs.
        bridge = subprocess.run(["ip", "link", "show", "rbdgnt0"], capture_output=True,
                                check=False).returncode == 0
        return hosts, ssh, bridge, sorted(glob.glob("/var/lib/ganeti/**", recursive=True))

    before = trace()
    with GanetiCluster(guest_image, user["config"]) as cluster:
        yield cluster
    assert trace() == before


@pytest.fixture
def instances(ganeti: GanetiCluster) -> Iterator[list[str]]:
    """Instance names; the ones still there after the test are removed."""
    names: list[str] = []
    yield names
    for name in names:
        ganeti.gnt("gnt-instance", "remove", "--force", "--shutdown-timeout=0", name,
                   check=False)


def _name(instances: list[str]) -> str:
    name = f"i{uuid.uuid4().hex[:8]}.example.test"
    instances.append(name)
    return name


def _vms(ceph_cluster: ClusterState) -> set[str]:
    proc = _rbd(ceph_cluster, "ls", "vms")
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


def _disk(golden: dict[str, Any], size: str = "1G", **extra: str) -> str:
    params = {"size": size, "provider": "rbd_driver", "origin": golden["name"],
              "access": "userspace", **extra}
    return ",".join(f"{k}={v}" for k, v in params.items() if v)


def _read_admin(ceph_cluster: ClusterState, spec: str, offset: int, length: int,
                tmp: Any) -> bytes:
    target = tmp / f"export-{uuid.uuid4().hex}"
    proc = _rbd(ceph_cluster, "export", "--no-progress", spec, str(target))
    assert proc.returncode == 0, proc.stderr
    with open(target, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    os.unlink(target)
    return data


def _info(ceph_cluster: ClusterState, spec: str) -> dict[str, Any]:
    import json

    proc = _rbd(ceph_cluster, "info", "--format", "json", spec)
    assert proc.returncode == 0, proc.stderr
    info: dict[str, Any] = json.loads(proc.stdout)
    return info


def _holding_the_key(paths: list[str], user: dict[str, str]) -> list[str]:
    """The files among ``paths`` that hold the user's key (read here, so that no
    traceback of a test shows it)."""
    key = read_key(user["keyring"], f"client.{user['name']}").reveal().encode()
    found = []
    for path in paths:
        if os.path.isfile(path):
            with open(path, "rb") as f:
                if key in f.read():
                    found.append(path)
    return found


def test_gnt_storage_diagnose_lists_the_provider_as_valid(ganeti) -> None:
    out = ganeti.gnt("gnt-storage", "diagnose").stdout
    assert "Provider: rbd_driver" in out
    assert "status: valid" in out and "[parameters: origin, pool]" in out


def test_an_instance_boots_from_a_clone_and_writes_only_to_it(
        ganeti, golden, instances, ceph_cluster, tmp_path, user) -> None:
    name = _name(instances)
    wrote = f"GANETI-{uuid.uuid4().hex[:8]}"
    ganeti.add_instance(name, _disk(golden),
                        steps=["report", f"write:vda:8:{wrote}", "read:vda:8"])
    seen = ganeti.wait_for(name, r"^disk vda sectors=(\d+) data=(\S*)")
    assert seen.group(2) == golden["marker"]
    assert int(seen.group(1)) * SECTOR == GIB
    ganeti.wait_for(name, rf"^read vda 8 data={wrote}$")
    ganeti.wait_for(name, r"^done$")
    volume = ganeti.instance_disk(name)
    assert volume in _vms(ceph_cluster)
    info = _info(ceph_cluster, f"vms/{volume}")
    assert info["size"] == GIB
    assert (info["parent"]["pool"], info["parent"]["image"], info["parent"]["snapshot"]) == (
        "images", golden["name"], "snap")
    # setinfo: Ganeti's VOL_METADATA is kept as image metadata.
    meta = _rbd(ceph_cluster, "image-meta", "get", f"vms/{volume}", "ganeti.metadata")
    assert meta.stdout.strip() == f"originstname+{name}", meta.stderr
    assert wrote.encode() in _read_admin(ceph_cluster, f"vms/{volume}", 8 * SECTOR, SECTOR,
                                         tmp_path)
    assert wrote.encode() not in _read_admin(ceph_cluster, f"images/{golden['name']}@snap",
                                             8 * SECTOR, SECTOR, tmp_path)
    # No key in what Ganeti ran or wrote: the QEMU command line, its runtime, its logs.
    places = glob.glob("/var/log/ganeti/**/*", recursive=True) + \
        glob.glob("/var/run/ganeti/**/*", recursive=True) + \
        glob.glob("/usr/share/ganeti/extstorage/rbd_driver/*")
    leaked = _holding_the_key(places, user)
    assert not leaked, f"the user's key is in {leaked}"
    ganeti.gnt("gnt-instance", "remove", "--force", "--shutdown-timeout=0", name)
    assert volume not in _vms(ceph_cluster)


def test_ten_instances_take_only_what_they_wrote(ganeti, golden, instances,
                                                 ceph_cluster) -> None:
    names = [_name(instances) for _ in range(10)]
    for index, name in enumerate(names):
        ganeti.add_instance(name, _disk(golden), steps=[f"write:vda:8:TEN-{index}"])
    for name in names:
        ganeti.wait_for(name, r"^done$", timeout=600)
    volumes = [ganeti.instance_disk(name) for name in names]
    import json

    proc = _rbd(ceph_cluster, "du", "--format", "json", "-p", "vms")
    assert proc.returncode == 0, proc.stderr
    used = {i["name"]: i["used_size"] for i in json.loads(proc.stdout)["images"]
            if i.get("snapshot") is None}
    golden_du = json.loads(_rbd(ceph_cluster, "du", "--format", "json",
                                f"images/{golden['name']}").stdout)["images"]
    golden_used = max(i["used_size"] for i in golden_du)
    total = sum(used[v] for v in volumes)
    # Each clone holds the one object its write copied up, nothing of the golden's rest.
    assert all(used[v] <= 4 * MIB for v in volumes), {v: used[v] for v in volumes}
    assert golden_used >= GOLDEN_DATA
    print(f"rbd du: ten instances {total / MIB:.0f} MiB; ten full copies "
          f"{10 * golden_used / MIB:.0f} MiB")


def test_grow_disk_grows_the_image_and_the_restarted_guest_sees_it(
        ganeti, golden, instances, ceph_cluster) -> None:
    name = _name(instances)
    ganeti.add_instance(name, _disk(golden))
    ganeti.wait_for(name, r"^done$")
    volume = ganeti.instance_disk(name)
    ganeti.gnt("gnt-instance", "shutdown", "--timeout=0", name)
    ganeti.gnt("gnt-instance", "grow-disk", "--no-wait-for-sync", name, "0", "512M")
    assert _info(ceph_cluster, f"vms/{volume}")["size"] == GIB + 512 * MIB
    ganeti.set_steps(name, ["report"])
    os.unlink(ganeti.console_path(name))
    ganeti.gnt("gnt-instance", "start", name)
    seen = ganeti.wait_for(name, r"^disk vda sectors=(\d+) data=(\S*)")
    assert (int(seen.group(1)) * SECTOR, seen.group(2)) == (GIB + 512 * MIB, golden["marker"])


def test_remove_of_a_disk_another_client_holds_fails_and_leaves_it(
        ganeti, golden, instances, ceph_cluster, admin) -> None:
    name = _name(instances)
    ganeti.add_instance(name, _disk(golden), start=False)
    volume = ganeti.instance_disk(name)
    ioctx = admin.get_ioctx("vms")
    holder = admin.rbd.Image(ioctx, volume)  # another client with the disk open
    try:
        proc = ganeti.gnt("gnt-instance", "remove", "--force", "--shutdown-timeout=0", name,
                          check=False)
        assert proc.returncode != 0
        out = proc.stdout + proc.stderr
        assert f"RBD image vms/{volume} is in use by client." in out, out
        assert volume in _vms(ceph_cluster)
        assert name in ganeti.gnt("gnt-instance", "list", "--no-headers", "-o", "name").stdout
    finally:
        holder.close()
    ganeti.gnt("gnt-instance", "remove", "--force", "--shutdown-timeout=0", name)
    assert volume not in _vms(ceph_cluster)
    trash = _rbd(ceph_cluster, "trash", "ls", "vms").stdout
    assert volume not in trash


def test_backup_export_goes_through_the_snapshot_script(
        ganeti, golden, instances, ceph_cluster) -> None:
    name = _name(instances)
    # Ganeti snapshots only the disks of a running instance (admin state up).
    ganeti.add_instance(name, _disk(golden), steps=["report", "hold"])
    ganeti.wait_for(name, r"^holding$")
    volume = ganeti.instance_disk(name)
    proc = ganeti.gnt("gnt-backup", "export", "-n", NODE, "--noshutdown", name, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Creating a snapshot of disk/0" in out and "Removing snapshot of disk/0" in out, out
    exported = glob.glob(f"/var/lib/ganeti/export/{name}/*")
    assert exported, out
    data_files = [p for p in exported if not p.endswith("config.ini")]
    with open(data_files[0], "rb") as f:
        assert f.read(SECTOR).startswith(golden["marker"].encode())
    # The snapshot volume and the snapshot under it are gone again.
    assert _vms(ceph_cluster) & {f"{volume}.snap"} == set()
    snaps = _rbd(ceph_cluster, "snap", "ls", f"vms/{volume}").stdout
    assert snaps.strip() == "", snaps


@pytest.fixture(scope="module")
def other_pool(admin: RadosClient) -> Iterator[str]:
    """A pool the provider's user has no caps on."""
    pool = f"gnt-nocaps-{uuid.uuid4().hex[:6]}"
    provision.Provisioner(admin).create_pool(pool, pg_num=8)
    yield pool
    admin.mon_command("osd pool rm", pool=pool, pool2=pool, yes_i_really_really_mean_it=True)


@pytest.mark.parametrize("case", ["missing golden", "other cluster", "malformed origin",
                                  "too small", "no rights"])
def test_a_failed_create_leaves_nothing_and_ganeti_shows_the_reason(
        ganeti, golden, instances, ceph_cluster, case, other_pool, user) -> None:
    missing = f"nosuch-{uuid.uuid4().hex[:6]}"
    disk, reason = {
        "missing golden": (_disk(golden, origin=missing),
                           f"snapshot images/{missing}@snap cannot be opened read-only as "
                           f"client.{user['name']}"),
        "other cluster": (_disk(golden, origin=f"rbd://{uuid.uuid4()}/images/"
                                               f"{golden['name']}/snap"),
                          f"not in this cluster {ceph_cluster.fsid}"),
        "malformed origin": (_disk(golden, origin="rbd://images/x"), "malformed location"),
        "too small": (_disk(golden, size="32M"),
                      "the disk size 32 MiB (33554432 bytes) is smaller than the golden "
                      "image's 64 MiB (67108864 bytes)"),
        "no rights": (_disk(golden, pool=other_pool),
                      f"client.{user['name']} lacks cephx caps for"),
    }[case]
    before = _vms(ceph_cluster)
    name = _name(instances)
    proc = ganeti.add_instance(name, disk, start=False, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "rbd_driver create" in out and reason in out, out
    assert _vms(ceph_cluster) == before
    listed = _rbd(ceph_cluster, "ls", other_pool).stdout.split()
    assert listed == []
    assert name not in ganeti.gnt("gnt-instance", "list", "--no-headers", "-o", "name").stdout


def test_the_cluster_leaves_no_trace(guest_image, user) -> None:
    """Start and stop a second time (the module's cluster runs): refused, nothing changed."""
    with open("/etc/hosts", encoding="utf-8") as f:
        hosts = f.read()
    with pytest.raises(GanetiError, match="bridge rbdgnt0 exists"):
        GanetiCluster(guest_image, user["config"]).start()
    with open("/etc/hosts", encoding="utf-8") as f:
        assert f.read() == hosts
