# SPDX-License-Identifier: Apache-2.0
"""The Rbd backend against a real cluster, as the non-admin cephx user.

The Ceph CLI (as admin) and QEMU/libvirt tools are used only as independent
oracles of what the library did.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rbd_driver import exception, imagebackend
from rbd_driver.backends.rbd import Rbd
from rbd_driver.storage.rbd_utils import RBDDriver
from rbd_driver.testing.local_cluster import ClusterState
from tests.functional.conftest import CLONE_POOLS, ClonePools

GOLDEN_SIZE = 64 << 20


def _images_pool(backend: imagebackend.Backend) -> str:
    """The golden pool paired with the backend's disk pool (``images-v2`` for ``vms-v2``)."""
    pool = backend.conf.rbd.pool
    return next((p.images for p in CLONE_POOLS.values() if p.vms == pool), "images")


@pytest.fixture
def make_golden(backend: imagebackend.Backend) -> Iterator[Callable[..., str]]:
    """Create golden images in the pool paired with the disk pool (`images` for `vms`),
    snapshot `snap` protected unless asked otherwise; yield a factory of their URLs."""
    driver = backend.driver("rbd")
    images = _images_pool(backend)
    made: list[str] = []

    def make(data: bytes = b"golden raw data\n" * 256, size: int = GOLDEN_SIZE,
             protect: bool = True) -> str:
        name = f"golden-{uuid.uuid4().hex[:8]}"
        driver.create(name, size, pool=images)
        made.append(name)
        with driver.client.open_image(images, name) as image:
            image.write(data, 0)
        driver.create_snap(name, "snap", protect=protect, pool=images)
        return f"rbd://{driver.fsid}/{images}/{name}/snap"

    yield make
    for name in made:
        report = driver.remove_image(name, pool=images)
        assert report.removed == [name], report


@pytest.fixture
def instances(backend: imagebackend.Backend, make_golden: Any) -> Iterator[list[str]]:
    """Instance UUIDs whose disks are cleaned up after the test (before the goldens)."""
    uuids: list[str] = []
    yield uuids
    cls = backend.backend("rbd")
    for inst in uuids:
        report = cls.cleanup_instance(backend.conf, inst, driver=backend.driver("rbd"))
        assert report.ok and not report.trashed, report


def _new_instance(instances: list[str]) -> str:
    inst = str(uuid.uuid4())
    instances.append(inst)
    return inst


def _rbd_ls(ceph_admin: Callable[..., Any], pool: str = "vms") -> list[str]:
    return list(ceph_admin("rbd", "ls", pool) or [])


RAW = {"disk_format": "raw"}


def _is_clone_v2(info: dict[str, Any]) -> bool:
    """``rbd info`` of a clone: format 2 clones carry the ``clone-child`` op feature."""
    return "clone-child" in info.get("op_features", [])


def test_clone_parent_seen_by_rbd_cli(backend, make_golden, instances, ceph_admin,
                                      pools: ClonePools) -> None:
    url = make_golden()
    golden = url.split("/")[-2]
    disk = backend.by_name(_new_instance(instances), "disk", image_type="rbd")
    assert isinstance(disk, Rbd)
    disk.direct_fetch("image-1", RAW, [{"url": url, "metadata": {}}])
    info = ceph_admin("rbd", "info", f"{pools.vms}/{disk.rbd_name}")
    assert info["parent"]["pool"] == pools.images
    assert info["parent"]["image"] == golden
    assert info["parent"]["snapshot"] == "snap"
    assert info["size"] == GOLDEN_SIZE
    assert _is_clone_v2(info) is (pools.format == 2)
    assert disk.parent_info() == (pools.images, golden, "snap")


def test_direct_fetch_is_a_noop_when_the_disk_exists(backend, make_golden, instances,
                                                     ceph_admin, pools: ClonePools) -> None:
    url, other = make_golden(), make_golden()
    disk = backend.by_name(_new_instance(instances), "disk")
    disk.direct_fetch("img", RAW, [{"url": url}])
    spec = f"{pools.vms}/{disk.rbd_name}"
    before, listed = ceph_admin("rbd", "info", spec), sorted(_rbd_ls(ceph_admin, pools.vms))
    with backend.driver("rbd").client.open_image(pools.vms, disk.rbd_name) as image:
        image.write(b"guest data", 0)
    # A second call does nothing and raises nothing: not with garbage locations,
    # not with a good location of another golden (the disk is not re-cloned).
    disk.direct_fetch("img", RAW, [{"url": "not a url"}])
    disk.direct_fetch("img", RAW, [{"url": other}])
    after = ceph_admin("rbd", "info", spec)
    assert after["id"] == before["id"]
    assert after["parent"] == before["parent"]
    assert after["parent"]["image"] == url.split("/")[-2]
    assert sorted(_rbd_ls(ceph_admin, pools.vms)) == listed
    with backend.driver("rbd").client.open_image(pools.vms, disk.rbd_name,
                                                 read_only=True) as image:
        assert image.read(0, 10) == b"guest data"


def test_first_cloneable_location_wins(backend, make_golden, instances, pools) -> None:
    good = make_golden()
    bad = good.replace("/snap", "/nosnap")
    disk = backend.by_name(_new_instance(instances), "disk")
    disk.direct_fetch("img", RAW, [{"url": "rbd://x"}, {"url": bad}, {"url": good}])
    assert disk.parent_info()[1] == good.split("/")[-2]


@pytest.fixture(scope="session")
def vms_only_user(ceph_cluster: ClusterState) -> Iterator[tuple[str, str]]:
    """A cephx user with caps on pool vms only; yields (user, keyring path)."""
    name = "vms-only"
    keyring = os.path.join(ceph_cluster.directory, f"ceph.client.{name}.keyring")
    osd_caps = ", ".join(f"profile rbd pool={p.vms}" for p in CLONE_POOLS.values())
    subprocess.run(
        ["ceph", "-c", ceph_cluster.conf_path, "auth", "get-or-create", f"client.{name}",
         "mon", "profile rbd", "osd", osd_caps, "-o", keyring],
        check=True, capture_output=True, timeout=60,
    )
    os.chmod(keyring, 0o600)
    yield name, keyring
    subprocess.run(["ceph", "-c", ceph_cluster.conf_path, "auth", "del", f"client.{name}"],
                   check=False, capture_output=True, timeout=60)


def _qcow2_header(tmp_path, backing: str | None = None) -> bytes:
    path = tmp_path / "evil.qcow2"
    cmd = ["qemu-img", "create", "-f", "qcow2"]
    if backing:
        cmd += ["-b", backing, "-F", "raw", "-u"]
    subprocess.run([*cmd, str(path), "64M"], check=True, capture_output=True, timeout=60)
    return path.read_bytes()[:65536]


@pytest.mark.parametrize("case", [
    "other-fsid", "qcow2-metadata", "qcow2-bytes-labelled-raw", "missing-snapshot",
    "no-caps-on-pool", "malformed-url", "too-large", "unprotected-snapshot",
])
def test_refusals_leave_nothing_behind(case, backend, make_golden, instances, ceph_admin,
                                       vms_only_user, tmp_path, rbd_conf,
                                       pools: ClonePools) -> None:
    meta: dict[str, Any] = dict(RAW)
    max_size = 0
    expect = {
        "other-fsid": "not in this cluster",
        "qcow2-metadata": "disk_format is 'qcow2'",
        "qcow2-bytes-labelled-raw": "the data is qcow2 with backing file '/etc/passwd'",
        "missing-snapshot": "does not exist",
        "no-caps-on-pool": "cannot be opened read-only as client.vms-only",
        "malformed-url": "malformed location",
        "too-large": "more than max_size",
        "unprotected-snapshot": "clone failed",
    }[case]
    if case == "unprotected-snapshot" and pools.format == 2:
        _unprotected_snapshot_clones(backend, make_golden, instances, ceph_admin, pools)
        return
    if case == "qcow2-bytes-labelled-raw":
        url = make_golden(data=_qcow2_header(tmp_path, backing="/etc/passwd"))
    elif case == "unprotected-snapshot":
        url = make_golden(protect=False)
    else:
        url = make_golden()
    if case == "other-fsid":
        url = url.replace(url.split("/")[2], str(uuid.uuid4()))
    elif case == "qcow2-metadata":
        meta["disk_format"] = "qcow2"
    elif case == "missing-snapshot":
        url = url[: -len("snap")] + "gone"
    elif case == "malformed-url":
        url = url.rsplit("/", 1)[0] + "/%20"
    elif case == "too-large":
        max_size = GOLDEN_SIZE - 1
    if case == "no-caps-on-pool":
        user, keyring = vms_only_user
        rbd_conf.set_override("user", user, group="rbd")
        rbd_conf.set_override("keyring", keyring, group="rbd")
        backend = imagebackend.Backend(rbd_conf)
    before = sorted(_rbd_ls(ceph_admin, pools.vms))
    disk = backend.by_name(_new_instance(instances), "disk")
    with pytest.raises(exception.ImageUnacceptable) as info:
        disk.direct_fetch("image-x", meta, [{"url": url, "metadata": {}}], max_size=max_size)
    assert expect in str(info.value)
    assert "image-x" in str(info.value)
    assert not disk.exists()
    assert sorted(_rbd_ls(ceph_admin, pools.vms)) == before
    if case == "no-caps-on-pool":
        backend.close()


def _unprotected_snapshot_clones(backend, make_golden, instances, ceph_admin,
                                 pools: ClonePools) -> None:
    """Clone format 2: an unprotected snapshot is cloned, and the clone reads the golden."""
    url = make_golden(protect=False)
    disk = backend.by_name(_new_instance(instances), "disk")
    disk.direct_fetch("image-x", RAW, [{"url": url, "metadata": {}}])
    info = ceph_admin("rbd", "info", f"{pools.vms}/{disk.rbd_name}")
    assert (info["parent"]["image"], info["parent"]["snapshot"]) == (url.split("/")[-2], "snap")
    assert _is_clone_v2(info)
    golden_snap = ceph_admin("rbd", "info", f"{pools.images}/{url.split('/')[-2]}@snap")
    assert golden_snap["protected"] == "false"
    with backend.driver("rbd").client.open_image(pools.vms, disk.rbd_name,
                                                 read_only=True) as image:
        assert image.read(0, 16) == b"golden raw data\n"


def test_no_locations_is_refused(backend, instances) -> None:
    disk = backend.by_name(_new_instance(instances), "disk")
    with pytest.raises(exception.ImageUnacceptable, match="no locations"):
        disk.direct_fetch("img", RAW, [])


def test_cleanup_instance_with_three_disks_and_protected_snapshot(
        backend, make_golden, instances, ceph_admin, spawned, pools: ClonePools) -> None:
    url = make_golden()
    victim, bystander = _new_instance(instances), _new_instance(instances)
    for name in ("disk", "disk.local", "disk.swap"):
        backend.by_name(victim, name).direct_fetch("img", RAW, [{"url": url}])
    other = backend.by_name(bystander, "disk")
    other.direct_fetch("img", RAW, [{"url": url}])
    backend.by_name(victim, "disk").create_snap("before-upgrade", protect=True)
    assert ceph_admin("rbd", "snap", "ls", f"{pools.vms}/{victim}_disk")[0]["protected"] == "true"

    calls = spawned()
    report = backend.backend("rbd").cleanup_instance(backend.conf, victim,
                                                     driver=backend.driver("rbd"))
    assert spawned()[len(calls):] == []
    assert sorted(report.removed) == sorted(f"{victim}_{n}" for n in
                                            ("disk", "disk.local", "disk.swap"))
    assert report.ok and not report.trashed
    left = _rbd_ls(ceph_admin, pools.vms)
    assert not [n for n in left if n.startswith(victim)]
    assert f"{bystander}_disk" in left
    assert other.exists()
    assert not ceph_admin("rbd", "trash", "ls", pools.vms)


def test_get_disk_size_is_librbd_size(backend, make_golden, instances, ceph_admin) -> None:
    disk = backend.by_name(_new_instance(instances), "disk")
    disk.direct_fetch("img", RAW, [{"url": make_golden()}])
    disk.resize_image(GOLDEN_SIZE * 2)
    expected = ceph_admin("rbd", "info", f"vms/{disk.rbd_name}")["size"]
    assert expected == GOLDEN_SIZE * 2
    assert disk.get_disk_size(disk.path) == expected
    assert disk.get_disk_size() == expected
    assert disk.get_disk_size(f"vms/{disk.rbd_name}") == expected
    with pytest.raises(exception.DiskSizeTooSmall, match=disk.rbd_name):
        disk.resize_image(GOLDEN_SIZE)


def test_nothing_spawns_a_process(backend, make_golden, instances, spawned, pools) -> None:
    url = make_golden()
    disk = backend.by_name(_new_instance(instances), "disk")
    calls = spawned()
    disk.direct_fetch("img", RAW, [{"url": url}])
    assert disk.exists()
    disk.get_disk_size(disk.path)
    with pytest.raises(exception.ImageUnacceptable):
        backend.by_name(_new_instance(instances), "disk").direct_fetch(
            "img", {"disk_format": "raw"}, [{"url": url.replace("snap", "nope")}])
    backend.backend("rbd").cleanup_instance(backend.conf, disk.instance_uuid,
                                            driver=backend.driver("rbd"))
    assert spawned()[len(calls):] == []


def test_qemu_img_opens_the_path_as_the_non_admin_user(backend, make_golden, instances,
                                                       ceph_cluster) -> None:
    disk = backend.by_name(_new_instance(instances), "disk")
    disk.direct_fetch("img", RAW, [{"url": make_golden()}])
    path = disk.path
    assert f":id={ceph_cluster.user}:" in path and "key=" not in path
    out = subprocess.run(["qemu-img", "info", "--output=json", path], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    import json

    info = json.loads(out.stdout)
    assert info["virtual-size"] == GOLDEN_SIZE
    assert info["format"] == "raw"
    # Read through the clone: the golden data is visible.
    read = subprocess.run(["qemu-io", "-f", "raw", "-r", "-c", "read -P 0x67 0 1", path],
                          capture_output=True, text=True, timeout=60)
    assert read.returncode == 0 and "read 1/1 bytes" in read.stdout, read.stdout + read.stderr


def test_disk_xml_validates_in_a_domain(backend, make_golden, instances, rbd_conf,
                                        tmp_path) -> None:
    rbd_conf.set_override("secret_uuid", "9f8e7d6c-5b4a-4392-8170-6a5b4c3d2e1f", group="rbd")
    disk = backend.by_name(_new_instance(instances), "disk")
    disk.direct_fetch("img", RAW, [{"url": make_golden()}])
    xml = disk.libvirt_info({"dev": "vda", "bus": "virtio", "type": "disk"}, "none",
                            boot_order="1")
    assert "<auth username=\"rbd-driver-test\">" in xml
    assert 'protocol="rbd"' in xml and f'name="vms/{disk.rbd_name}"' in xml
    assert "key" not in xml.replace("secret", "")
    domain = tmp_path / "domain.xml"
    domain.write_text(
        "<domain type='kvm'><name>t</name><memory>131072</memory>"
        "<os><type arch='x86_64'>hvm</type></os><devices>" + xml + "</devices></domain>")
    out = subprocess.run(["virt-xml-validate", str(domain), "domain"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_monitors_in_xml_match_mon_dump(backend, make_golden, instances, ceph_admin) -> None:
    disk = backend.by_name(_new_instance(instances), "disk")
    xml = disk.libvirt_info()
    mons = ceph_admin("ceph", "mon", "dump")["mons"]
    for mon in mons:
        v1 = [a["addr"] for a in mon["public_addrs"]["addrvec"] if a["type"] == "v1"][0]
        host, port = v1.rsplit(":", 1)
        assert f'<host name="{host}" port="{port}" />' in xml


def _sparse_file(path, size: int, chunks: dict[int, bytes]) -> str:
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in chunks.items():
            f.seek(offset)
            f.write(data)
    return str(path)


def test_create_image_falls_back_to_a_sparse_copy(backend, instances, tmp_path,
                                                  ceph_admin) -> None:
    data = {0: os.urandom(4096), 40 << 20: os.urandom(1 << 20)}
    base = tmp_path / "base.raw"
    fetched = []

    def prepare_template(target: str, **kwargs: Any) -> None:
        fetched.append(kwargs)
        _sparse_file(target, 64 << 20, data)

    disk = backend.by_name(_new_instance(instances), "disk")
    progress: list[tuple[int, int]] = []
    disk.create_image(prepare_template, str(base), 128 << 20, image_id="x",
                      progress=lambda d, t: progress.append((d, t)))
    assert fetched == [{"image_id": "x"}]
    assert disk.get_disk_size() == 128 << 20
    assert progress[-1] == (64 << 20, 64 << 20)
    du = ceph_admin("rbd", "du", f"vms/{disk.rbd_name}")["images"][0]
    assert du["used_size"] <= 2 * (4 << 20)  # two written objects, not 64 MiB
    driver = backend.driver("rbd")
    with driver.client.open_image("vms", disk.rbd_name, read_only=True) as image:
        for offset, chunk in data.items():
            assert image.read(offset, len(chunk)) == chunk
        assert image.read(8 << 20, 4096) == bytes(4096)
    # A second create_image neither fetches nor copies again.
    disk.create_image(prepare_template, str(base), 128 << 20)
    assert len(fetched) == 1


def test_create_image_refuses_to_shrink_and_creates_nothing(backend, instances,
                                                            tmp_path) -> None:
    base = _sparse_file(tmp_path / "base.raw", 64 << 20, {0: b"x"})
    disk = backend.by_name(_new_instance(instances), "disk")
    with pytest.raises(exception.DiskSizeTooSmall) as info:
        disk.create_image(lambda target, **kw: None, base, 32 << 20)
    assert disk.rbd_name in str(info.value) and str(32 << 20) in str(info.value)
    assert not disk.exists()


def test_failed_copy_leaves_no_image(backend, instances, tmp_path, ceph_admin,
                                     monkeypatch) -> None:
    base = _sparse_file(tmp_path / "base.raw", 16 << 20, {0: b"x" * 4096, 8 << 20: b"y"})
    disk = backend.by_name(_new_instance(instances), "disk")
    before = sorted(_rbd_ls(ceph_admin))

    def explode(done: int, total: int) -> None:
        if done > 4 << 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        disk.create_image(lambda target, **kw: None, base, None, progress=explode)
    assert sorted(_rbd_ls(ceph_admin)) == before
    assert not disk.exists()


def test_snapshots_create_protect_rollback_remove(backend, instances, make_golden,
                                                  pools: ClonePools) -> None:
    disk = backend.by_name(_new_instance(instances), "disk")
    disk.direct_fetch("img", RAW, [{"url": make_golden()}])
    driver = backend.driver("rbd")
    disk.create_snap("s1", protect=True)
    with driver.client.open_image(pools.vms, disk.rbd_name) as image:
        image.write(b"changed", 0)
    with pytest.raises(exception.ImageBusy, match="protected"):
        disk.remove_snap("s1")
    disk.rollback_to_snap("s1")
    with driver.client.open_image(pools.vms, disk.rbd_name) as image:
        assert image.read(0, 7) == b"golden "
    disk.remove_snap("s1", force=True)
    assert driver.list_snaps(disk.rbd_name) == []
    with pytest.raises(exception.SnapshotNotFound, match="s1"):
        disk.remove_snap("s1")


def test_flatten_detaches_from_golden(backend, instances, make_golden, ceph_admin,
                                      pools: ClonePools) -> None:
    disk = backend.by_name(_new_instance(instances), "disk")
    disk.direct_fetch("img", RAW, [{"url": make_golden()}])
    disk.flatten()
    assert "parent" not in ceph_admin("rbd", "info", f"{pools.vms}/{disk.rbd_name}")
    assert disk.parent_info() is None


def test_many_threads_clone_one_golden_snapshot(backend, make_golden, instances,
                                                ceph_admin, pools: ClonePools) -> None:
    url = make_golden()
    disks = [backend.by_name(_new_instance(instances), "disk") for _ in range(16)]
    errors: list[BaseException] = []

    def launch(disk: Any) -> None:
        try:
            disk.direct_fetch("img", RAW, [{"url": url}])
        except BaseException as err:  # collected, asserted below
            errors.append(err)

    threads = [threading.Thread(target=launch, args=(d,)) for d in disks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    golden = url.split("/")[-2]
    for disk in disks:
        assert ceph_admin("rbd", "info", f"{pools.vms}/{disk.rbd_name}")["parent"]["image"] == golden


def test_same_disk_from_many_threads_is_created_once(backend, make_golden, instances,
                                                     ceph_admin, monkeypatch,
                                                     pools: ClonePools) -> None:
    url = make_golden()
    inst = _new_instance(instances)
    errors: list[BaseException] = []
    made: list[str] = []  # the image id of every clone the cluster accepted
    real_clone = RBDDriver.clone

    def counting_clone(self: RBDDriver, location: Any, name: str, pool: str | None = None) -> None:
        real_clone(self, location, name, pool)  # ImageExists from the cluster propagates
        made.append(ceph_admin("rbd", "info", f"{pool or self.pool}/{name}")["id"])

    monkeypatch.setattr(RBDDriver, "clone", counting_clone)
    barrier = threading.Barrier(8)

    def launch() -> None:
        try:
            disk = backend.by_name(inst, "disk")
            barrier.wait(30)
            disk.direct_fetch("img", RAW, [{"url": url}])
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=launch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert len(made) == 1, made  # one clone created it; the others found it
    assert [n for n in _rbd_ls(ceph_admin, pools.vms) if n.startswith(inst)] == [f"{inst}_disk"]
    assert ceph_admin("rbd", "info", f"{pools.vms}/{inst}_disk")["id"] == made[0]
    assert not [e for e in ceph_admin("rbd", "trash", "ls", pools.vms) or []
                if e["name"].startswith(inst)]


def test_pool_info_matches_ceph_df(backend, ceph_admin, instances, make_golden) -> None:
    driver = backend.driver("rbd")
    # Data in the pool, so "used" is not trivially 0 on both sides: 24 MiB written.
    disk = backend.by_name(_new_instance(instances), "disk")
    disk.direct_fetch("img", RAW, [{"url": make_golden()}])
    with driver.client.open_image("vms", disk.rbd_name) as image:
        for offset in range(0, 24 << 20, 4 << 20):
            image.write(os.urandom(4 << 20), offset)
    deadline = time.monotonic() + 60
    while True:  # the mgr reports pool statistics every few seconds
        df = {p["name"]: p["stats"] for p in ceph_admin("ceph", "df")["pools"]}["vms"]
        info = driver.get_pool_info()
        if df["stored"] >= 24 << 20 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert df["stored"] >= 24 << 20, df
    # Both read the same mgr report; only writes of other tests in between differ.
    assert info["used"] == pytest.approx(df["stored"], abs=8 << 20)
    assert info["free"] == pytest.approx(df["max_avail"], rel=0.05)
    cluster = ceph_admin("ceph", "df")["stats"]
    assert info["used"] + info["free"] <= cluster["total_bytes"]


def test_unknown_backend_lists_the_available_ones(backend) -> None:
    with pytest.raises(exception.BackendNotFound) as info:
        backend.by_name("i", "disk", image_type="lvm")
    assert "'lvm'" in str(info.value) and "flat, rbd" in str(info.value)


def test_checksum_of_clone_equals_golden(backend, make_golden, instances,
                                         pools: ClonePools) -> None:
    payload = os.urandom(1 << 20)
    url = make_golden(data=payload)
    disk = backend.by_name(_new_instance(instances), "disk")
    disk.direct_fetch("img", RAW, [{"url": url}])
    with backend.driver("rbd").client.open_image(pools.vms, disk.rbd_name, read_only=True) as im:
        assert hashlib.sha256(im.read(0, len(payload))).digest() == \
            hashlib.sha256(payload).digest()


@pytest.mark.parametrize("protect", [True, False])
def test_removing_a_golden_with_clones_names_them_and_does_not_wait(
        backend, make_golden, instances, rbd_conf, ceph_admin, protect, monkeypatch,
        pools: ClonePools) -> None:
    url = make_golden(protect=protect)
    golden = url.split("/")[-2]
    disk = backend.by_name(_new_instance(instances), "disk")
    if not protect and pools.format == 1:  # clone v1 refuses an unprotected snapshot
        with pytest.raises(exception.ImageUnacceptable, match="clone failed"):
            disk.direct_fetch("img", RAW, [{"url": url}])
        assert not [n for n in _rbd_ls(ceph_admin, pools.vms) if n == disk.rbd_name]
        return
    disk.direct_fetch("img", RAW, [{"url": url}])
    driver = backend.driver("rbd")
    assert driver.destroy_retries > 0  # retrying would be possible: it must not happen
    sleeps: list[float] = []  # every retry sleeps first
    monkeypatch.setattr(driver, "_sleep", lambda seconds: sleeps.append(seconds))
    started = time.monotonic()
    with pytest.raises(exception.SnapshotHasClones) as info:
        driver.remove_snap(golden, "snap", force=True, pool=pools.images)
    assert f"{pools.vms}/{disk.rbd_name}" in str(info.value)
    assert f"{pools.images}/{golden}@snap" in str(info.value)
    snaps = ceph_admin("rbd", "snap", "ls", "--all", f"{pools.images}/{golden}")
    assert [(s["name"], s["namespace"]["type"]) for s in snaps] == [("snap", "user")]  # not trashed
    assert (snaps[0]["protected"] == "true") is protect
    report = driver.remove_image(golden, pool=pools.images)
    elapsed = time.monotonic() - started
    assert "has clones" in report.trashed[golden]
    assert sleeps == [] and elapsed < 10, (sleeps, elapsed)  # no retry: clones do not go away
    assert golden in [e["name"] for e in ceph_admin("rbd", "trash", "ls", pools.images)]
    with driver.client.ioctx(pools.images) as ioctx:  # restore for the fixture's cleanup
        for entry in driver.rbd.RBD().trash_list(ioctx):
            if entry["name"] == golden:
                driver.rbd.RBD().trash_restore(ioctx, entry["id"], golden)
