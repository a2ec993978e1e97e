# SPDX-License-Identifier: Apache-2.0
"""The Rbd backend's policy on the fake librados/librbd: checks, copy, cleanup."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from rbd_driver import exception
from rbd_driver.backends.rbd import Rbd
from rbd_driver.testing.fixtures import FakeEnv

GOLDEN = 64 << 20
RAW = {"disk_format": "raw"}


class Env(FakeEnv):
    """A fake cluster with pools vms/images, a golden image, and an Rbd factory."""

    def __init__(self, tmp_path: Any) -> None:
        super().__init__(tmp_path, driver_options={"destroy_retries": 3,
                                                   "destroy_retry_interval": 2.5})
        self.cluster.mon_commands["mon dump"] = self._mon_dump
        self.fsid = self.driver.fsid

    @staticmethod
    def _mon_dump(cmd: dict[str, Any], inbuf: bytes) -> tuple[int, bytes, str]:
        mons = [
            {"name": "a", "public_addrs": {"addrvec": [
                {"type": "v2", "addr": "10.0.0.1:3300", "nonce": 0},
                {"type": "v1", "addr": "10.0.0.1:6789", "nonce": 0}]}},
            {"name": "b", "public_addrs": {"addrvec": [
                {"type": "v2", "addr": "[2001:db8::2]:3300", "nonce": 0}]}},
        ]
        return 0, json.dumps({"mons": mons}).encode(), ""

    def golden(self, data: bytes = b"plain raw bytes", protect: bool = True,
               size: int = GOLDEN, name: str = "golden") -> str:
        image = self.cluster.add_image("images", name, size, data=data)
        image.create_snap("snap", protect=protect)
        return f"rbd://{self.fsid}/images/{name}/snap"

    def disk(self, inst: str | None = None, name: str = "disk") -> Rbd:
        return Rbd(inst or str(uuid.uuid4()), name, self.conf, driver=self.driver)

    def vms(self) -> list[str]:
        with self.driver.client.ioctx("vms") as ioctx:
            return sorted(self.rbd.RBD().list(ioctx))

    def trash(self, pool: str = "vms") -> list[str]:
        with self.driver.client.ioctx(pool) as ioctx:
            return sorted(e["name"] for e in self.rbd.RBD().trash_list(ioctx))


def test_clone_from_a_good_location(env) -> None:
    url = env.golden()
    disk = env.disk()
    disk.direct_fetch("img", RAW, [{"url": url, "metadata": {}}])
    assert disk.parent_info() == ("images", "golden", "snap")
    assert disk.get_disk_size() == GOLDEN
    env.driver.close()
    env.cluster.assert_no_open_handles()


def _refusal(env: Env, locations: list[Any], meta: dict[str, Any] | None = None,
             max_size: int = 0) -> str:
    disk = env.disk()
    with pytest.raises(exception.ImageUnacceptable) as info:
        disk.direct_fetch("img-7", RAW if meta is None else meta, locations, max_size=max_size)
    assert "img-7" in str(info.value)
    assert env.vms() == []  # nothing was created
    return str(info.value)


@pytest.mark.parametrize("url,reason", [
    ("rbd://image", "has 1 parts"),
    ("rbd://{fsid}/images//snap", "image is blank"),
    ("rbd://{fsid}/%20%20/golden/snap", "pool is blank"),
    ("rbd://{fsid}/images/golden/snap/", "trailing '/'"),
    ("rbd://{fsid}/images/golden/snap/extra", "has 5 parts"),
    ("http://{fsid}/images/golden/snap", "does not start with rbd://"),
    ("rbd://{fsid}/images/gol%zzden/snap", "malformed percent-escape"),
    ("rbd://{fsid}/images/gol%2Fden/snap", "contains '/'"),
    ("rbd://not-a-uuid/images/golden/snap", "is not a UUID"),
    ("", "does not start with rbd://"),
])
def test_malformed_urls_are_refused(env, url, reason) -> None:
    env.golden()
    message = _refusal(env, [{"url": url.format(fsid=env.fsid)}])
    assert "malformed location" in message and reason in message


def test_percent_encoded_names_are_decoded(env) -> None:
    env.golden(name="golden image")
    disk = env.disk()
    disk.direct_fetch("img", RAW, [{"url": f"rbd://{env.fsid}/images/golden%20image/snap"}])
    assert disk.parent_info() == ("images", "golden image", "snap")


@pytest.mark.parametrize("location", [{"url": None}, {"nourl": "x"}, "rbd://string", None])
def test_location_without_a_url_string_is_refused(env, location) -> None:
    assert "location 1" in _refusal(env, [location])


def test_other_fsid_is_refused(env) -> None:
    url = env.golden().replace(env.fsid, str(uuid.uuid4()))
    assert f"not in this cluster {env.fsid}" in _refusal(env, [{"url": url}])


@pytest.mark.parametrize("meta", [{"disk_format": "qcow2"}, {}, {"disk_format": "RAW"},
                                  {"disk_format": "iso"}, {"disk_format": None}])
def test_non_raw_metadata_is_refused(env, meta) -> None:
    url = env.golden()
    assert "only 'raw' can be cloned" in _refusal(env, [{"url": url}], meta=meta)


def _qcow2_header(backing: bytes = b"") -> bytes:
    header = bytearray(512)
    header[0:4] = b"QFI\xfb"
    header[4:8] = (3).to_bytes(4, "big")
    if backing:
        header[8:16] = (200).to_bytes(8, "big")
        header[16:20] = len(backing).to_bytes(4, "big")
        header[200:200 + len(backing)] = backing
    return bytes(header)


@pytest.mark.parametrize("data,found", [
    (_qcow2_header(b"/etc/shadow"), "qcow2 with backing file '/etc/shadow'"),
    (_qcow2_header(), "the data is qcow2;"),
    (b"KDMV" + bytes(100), "the data is vmdk"),
    (b"conectix" + bytes(100), "the data is vhd"),
    (b"vhdxfile" + bytes(100), "the data is vhdx"),
    (b"LUKS\xba\xbe" + bytes(100), "the data is luks"),
    (bytes(0x40) + b"\x7f\x10\xda\xbe", "the data is vdi"),
])
def test_non_raw_bytes_labelled_raw_are_refused(env, data, found) -> None:
    url = env.golden(data=data)
    assert found in _refusal(env, [{"url": url}])


def test_fixed_vhd_footer_at_the_end_is_refused(env) -> None:
    image = env.cluster.add_image("images", "golden", GOLDEN)
    image.write(b"conectix" + bytes(504), GOLDEN - 512)
    image.create_snap("snap", protect=True)
    assert "the data is vhd" in _refusal(env, [{"url": f"rbd://{env.fsid}/images/golden/snap"}])


def test_iso_bytes_are_raw_enough(env) -> None:
    data = bytearray(0x8006)
    data[0x8001:0x8006] = b"CD001"
    disk = env.disk()
    disk.direct_fetch("img", RAW, [{"url": env.golden(data=bytes(data))}])
    assert disk.exists()


def test_missing_snapshot_image_and_pool_are_refused(env) -> None:
    url = env.golden()
    message = _refusal(env, [
        {"url": url.replace("/snap", "/other")},
        {"url": url.replace("/golden/", "/ghost/")},
        {"url": url.replace("/images/", "/nopool/")},
    ])
    assert "location 1" in message and "images/golden@other does not exist" in message
    assert "location 2" in message and "images/ghost" in message and "does not exist" in message
    assert "location 3" in message and "Pool nopool does not exist" in message


def test_unreadable_snapshot_is_refused(env) -> None:
    url = env.golden()
    # No read caps on the pool: every way of reading the snapshot is refused.
    env.cluster.fail_next("Ioctx.read", env.rados.PermissionError, times=None)
    env.cluster.fail_next("Ioctx.operate_read_op", env.rados.PermissionError, times=None)
    env.cluster.fail_next("Image.__init__", env.rbd.PermissionError, times=None)
    message = _refusal(env, [{"url": url}])
    assert "cannot be opened read-only as client.compute" in message
    assert "lacks cephx caps" in message


def test_format_verdict_is_remembered_by_snapshot_identity(env) -> None:
    url = env.golden(data=b"raw " * 1000)
    env.disk().direct_fetch("img", RAW, [{"url": url}])
    opens = sum(1 for c in env.cluster.calls if "Image.__init__" in str(c))
    assert opens >= 1  # the first launch did open the snapshot
    env.disk().direct_fetch("img", RAW, [{"url": url}])
    env.disk().direct_fetch("img", RAW, [{"url": url}])
    # Later launches from the same snapshot do not open it again.
    assert sum(1 for c in env.cluster.calls if "Image.__init__" in str(c)) == opens


def test_recreated_golden_is_checked_again(env) -> None:
    url = env.golden(data=b"raw " * 1000)
    env.disk().direct_fetch("img", RAW, [{"url": url}])
    # Same names, new image: now qcow2 bytes. The old verdict must not apply.
    for child in env.vms():
        env.driver.remove_image(child)
    assert env.driver.remove_image("golden", pool="images").removed == ["golden"]
    env.golden(data=_qcow2_header(b"/etc/shadow"))
    assert "the data is qcow2" in _refusal(env, [{"url": url}])


def test_max_size(env) -> None:
    url = env.golden()
    assert "more than max_size" in _refusal(env, [{"url": url}], max_size=GOLDEN - 1)
    disk = env.disk()
    disk.direct_fetch("img", RAW, [{"url": url}], max_size=GOLDEN)
    assert disk.exists()


def test_unprotected_snapshot_fails_the_clone_and_says_so(env) -> None:
    env.cluster.clone_format = 1
    url = env.golden(protect=False)
    assert "clone failed" in _refusal(env, [{"url": url}])


def test_every_reason_is_reported_and_the_first_good_one_wins(env) -> None:
    url = env.golden()
    disk = env.disk()
    disk.direct_fetch("img", RAW, [{"url": "rbd://x"}, {"url": url.replace("snap", "s2")},
                                   {"url": url}, {"url": "never looked at"}])
    assert disk.parent_info() == ("images", "golden", "snap")


def test_existing_disk_means_nothing_to_do(env) -> None:
    disk = env.disk()
    env.cluster.add_image("vms", disk.rbd_name, 1 << 20)
    calls = len(env.cluster.calls)
    disk.direct_fetch("img", {"disk_format": "qcow2"}, [{"url": "garbage"}])
    assert not any("clone" in str(c) for c in env.cluster.calls[calls:])


def test_no_locations(env) -> None:
    assert "no locations were given" in _refusal(env, [])


# -- create_image ----------------------------------------------------------------


def test_create_image_copies_sparse_and_grows(env, tmp_path) -> None:
    base = tmp_path / "base.raw"
    with open(base, "wb") as f:
        f.truncate(32 << 20)
        f.seek(20 << 20)
        f.write(b"data")
    calls = []
    disk = env.disk()
    disk.create_image(lambda target, **kw: calls.append((target, kw)), str(base), 48 << 20,
                      image_id="i")
    assert calls == [(str(base), {"image_id": "i"})]
    image = env.cluster.image("vms", disk.rbd_name)
    assert image.size == 48 << 20
    assert image.object_count == 1  # only the one chunk holding data
    assert image.read(20 << 20, 4) == b"data"
    assert [n for n in env.vms() if "importing" in n] == []


def test_create_image_refuses_to_shrink_before_copying(env, tmp_path) -> None:
    base = tmp_path / "base.raw"
    base.write_bytes(b"x" * (2 << 20))
    disk = env.disk()
    with pytest.raises(exception.DiskSizeTooSmall, match=disk.rbd_name):
        disk.create_image(lambda target, **kw: None, str(base), 1 << 20)
    assert env.vms() == []


def test_create_image_uses_what_prepare_template_cloned(env, tmp_path) -> None:
    url = env.golden()
    disk = env.disk()
    disk.create_image(
        lambda target, **kw: disk.direct_fetch("img", RAW, [{"url": url}]),
        str(tmp_path / "never-written"), GOLDEN * 2)
    assert disk.parent_info() == ("images", "golden", "snap")
    assert disk.get_disk_size() == GOLDEN * 2


def test_failed_copy_removes_the_temporary_image(env, tmp_path) -> None:
    base = tmp_path / "base.raw"
    base.write_bytes(b"y" * (12 << 20))
    env.cluster.fail_next("Image.aio_write", env.rbd.IOError, after=1)
    disk = env.disk()
    with pytest.raises(exception.StorageError):
        disk.create_image(lambda target, **kw: None, str(base), None)
    assert env.vms() == []


def test_resize_is_grow_only(env) -> None:
    disk = env.disk()
    disk.direct_fetch("img", RAW, [{"url": env.golden()}])
    disk.resize_image(GOLDEN)  # equal: nothing to do
    with pytest.raises(exception.DiskSizeTooSmall):
        disk.resize_image(GOLDEN - 1)
    disk.resize_image(GOLDEN + (1 << 20))
    assert disk.get_disk_size() == GOLDEN + (1 << 20)


# -- cleanup ---------------------------------------------------------------------------


def _disks(env: Env, inst: str, names: tuple[str, ...] = ("disk", "disk.local")) -> list[str]:
    for name in names:
        env.cluster.add_image("vms", f"{inst}_{name}", 1 << 20)
    return [f"{inst}_{n}" for n in names]


def test_cleanup_removes_only_that_instance(env) -> None:
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    names = _disks(env, mine)
    kept = _disks(env, other)
    env.cluster.image("vms", names[0]).create_snap("s", protect=True)
    report = Rbd.cleanup_instance(env.conf, mine, driver=env.driver)
    assert sorted(report.removed) == sorted(names)
    assert report.ok and not report.trashed
    assert env.vms() == sorted(kept)


def test_cleanup_retries_while_busy_then_succeeds(env) -> None:
    inst = str(uuid.uuid4())
    (name,) = _disks(env, inst, ("disk",))
    env.cluster.fail_next("RBD.remove", env.rbd.ImageBusy, times=2)
    report = Rbd.cleanup_instance(env.conf, inst, driver=env.driver)
    assert report.removed == [name]
    assert env.slept == [2.5, 2.5]
    assert env.vms() == [] and env.trash() == []


def test_cleanup_trashes_after_the_last_retry(env) -> None:
    inst = str(uuid.uuid4())
    (name,) = _disks(env, inst, ("disk",))
    env.cluster.fail_next("RBD.remove", env.rbd.ImageBusy, times=None)
    report = Rbd.cleanup_instance(env.conf, inst, driver=env.driver)
    assert report.removed == [] and report.ok
    assert name in report.trashed and "busy" in report.trashed[name]
    assert env.slept == [2.5] * 3  # retries, not retries + 1
    assert env.vms() == []
    with env.driver.client.ioctx("vms") as ioctx:
        assert [e["name"] for e in env.rbd.RBD().trash_list(ioctx)] == [name]


def test_cleanup_reports_what_it_could_not_remove(env, caplog) -> None:
    inst = str(uuid.uuid4())
    (name,) = _disks(env, inst, ("disk",))
    env.cluster.fail_next("RBD.remove", env.rbd.ImageBusy, times=None)
    env.cluster.fail_next("RBD.trash_move", env.rbd.PermissionError, times=None)
    report = Rbd.cleanup_instance(env.conf, inst, driver=env.driver)
    assert not report.ok
    assert "busy" in report.failed[name] and "trash failed too" in report.failed[name]
    assert env.vms() == [name]
    assert any(name in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


def test_remove_raises_when_the_disk_is_left(env) -> None:
    disk = env.disk()
    env.cluster.add_image("vms", disk.rbd_name, 1 << 20)
    env.cluster.fail_next("RBD.remove", env.rbd.ImageBusy, times=None)
    env.cluster.fail_next("RBD.trash_move", env.rbd.ImageBusy, times=None)
    with pytest.raises(exception.CleanupFailed, match=disk.rbd_name):
        disk.remove()


def test_snapshot_with_clones_is_not_retried(env) -> None:
    url = env.golden()
    env.disk(name="child").direct_fetch("img", RAW, [{"url": url}])
    report = env.driver.remove_image("golden", pool="images")
    assert env.slept == []
    assert "golden" in report.trashed and "has clones" in report.trashed["golden"]
    assert env.trash("images") == ["golden"]
    with env.driver.client.ioctx("images") as ioctx:
        assert list(env.rbd.RBD().list(ioctx)) == []


def test_missing_disk_counts_as_removed(env) -> None:
    disk = env.disk()
    disk.remove()
    assert env.driver.remove_image("absent").removed == ["absent"]


# -- identity and XML ---------------------------------------------------------------


def test_path_has_user_and_conf_but_no_key(env) -> None:
    disk = env.disk("inst")
    conf_path = env.conf.rbd.ceph_conf
    assert disk.path == f"rbd:vms/inst_disk:id=compute:conf={conf_path}"
    env.conf.set_override("user", None, group="rbd")
    assert ":id=" not in disk.path


def test_path_escapes_colons() -> None:
    from rbd_driver.storage.convert import qemu_escape

    assert qemu_escape("a:b\\c") == "a\\:b\\\\c"


def test_get_disk_size_accepts_every_spelling(env) -> None:
    disk = env.disk()
    env.cluster.add_image("vms", disk.rbd_name, 5 << 20)
    env.cluster.add_image("images", "other", 7 << 20)
    assert disk.get_disk_size(disk.path) == 5 << 20
    assert disk.get_disk_size(disk.rbd_name) == 5 << 20
    assert disk.get_disk_size("images/other") == 7 << 20
    assert disk.get_disk_size("rbd:images/other:id=x") == 7 << 20
    with pytest.raises(exception.ImageNotFound):
        disk.get_disk_size("missing")


def test_libvirt_xml_lists_every_monitor_and_auth(env) -> None:
    env.conf.set_override("secret_uuid", "11111111-2222-4333-8444-555555555555", group="rbd")
    xml = env.disk("inst").libvirt_info({"dev": "vdb", "bus": "scsi"}, "writeback")
    assert '<host name="10.0.0.1" port="6789" />' in xml  # v1 preferred
    assert '<host name="2001:db8::2" port="3300" />' in xml  # v2-only, no brackets
    assert '<auth username="compute"><secret type="ceph" uuid="11111111' in xml
    assert '<target dev="vdb" bus="scsi" />' in xml and 'cache="writeback"' in xml


def test_disk_xml_asks_todays_monitors_and_refreshes_the_drivers_one_cache(env) -> None:
    asked: list[str] = []
    dump = env.cluster.mon_commands["mon dump"]
    env.cluster.mon_commands["mon dump"] = lambda cmd, inbuf: (asked.append("mon dump"),
                                                               dump(cmd, inbuf))[1]
    assert env.driver.get_monitors()[0].v1 == ("10.0.0.1", 6789)  # cached from here on
    for name in ("inst", "other"):
        assert '<host name="10.0.0.1" port="6789" />' in env.disk(name).libvirt_info()
    assert asked == ["mon dump"] * 3  # each XML asked now: a guest keeps what it is given
    assert env.driver.get_monitors()[0].v1 == ("10.0.0.1", 6789)
    assert asked == ["mon dump"] * 3  # krbd and volumes reuse the refreshed list

    def unreachable(cmd: Any, inbuf: bytes) -> tuple[int, bytes, str]:
        return -110, b"", "timed out"

    env.cluster.mon_commands["mon dump"] = unreachable
    assert '<host name="10.0.0.1"' in env.disk("inst").libvirt_info()  # the last list known


def test_libvirt_xml_without_secret_has_no_auth(env) -> None:
    assert "<auth" not in env.disk().libvirt_info()


def test_purge_trash_retries_busy_entries_then_reports(env) -> None:
    inst = str(uuid.uuid4())
    a, b = _disks(env, inst)
    with env.driver.client.ioctx("vms") as ioctx:
        for name in (a, b):
            env.rbd.RBD().trash_move(ioctx, name, 0)
    env.cluster.fail_next("RBD.trash_remove", env.rbd.ImageBusy, times=2)
    report = env.driver.purge_trash(names=lambda n: n == a, wait=30, poll=0.5)
    assert report.removed == [a] and not report.failed
    assert env.slept == [0.5, 0.5]
    env.cluster.fail_next("RBD.trash_remove", env.rbd.ImageBusy, times=None)
    report = env.driver.purge_trash(wait=0)
    assert report.removed == [] and "busy" in report.failed[b]
    with env.driver.client.ioctx("vms") as ioctx:
        assert [e["name"] for e in env.rbd.RBD().trash_list(ioctx)] == [b]


def test_flatten_is_idempotent(env) -> None:
    disk = env.disk()
    disk.direct_fetch("img", RAW, [{"url": env.golden()}])
    disk.flatten()
    assert disk.parent_info() is None
    disk.flatten()  # already flat: nothing to do, no error
    assert disk.parent_info() is None


def test_kernelspace_access_maps_and_gives_block_xml(env, monkeypatch) -> None:
    from rbd_driver.storage import krbd

    mapped: list[tuple[str, str]] = []

    class FakeKrbd:
        def map(self, pool: str, image: str) -> str:
            mapped.append((pool, image))
            return "/dev/rbd7"

    monkeypatch.setattr(krbd.KernelRbd, "from_conf",
                        classmethod(lambda cls, conf, client, monitors=None: FakeKrbd()))
    env.conf.set_override("access", "kernelspace", group="rbd")
    disk = env.disk("inst")
    xml = disk.libvirt_info({"dev": "vdb"})
    assert mapped == [("vms", "inst_disk")]
    assert '<disk type="block" device="disk">' in xml and '<source dev="/dev/rbd7" />' in xml
    assert 'dev="vdb"' in xml and "<auth" not in xml


def test_kernelspace_without_the_rbd_module_says_what_to_do(env, tmp_path, monkeypatch) -> None:
    from rbd_driver.storage import krbd

    real = krbd.KernelRbd.from_conf.__func__

    def no_sysfs(cls, conf, client, monitors=None):  # a host without the rbd module
        made = real(cls, conf, client, monitors)
        made.bus = str(tmp_path / "no-sys" / "bus" / "rbd")
        return made

    monkeypatch.setattr(krbd.KernelRbd, "from_conf", classmethod(no_sysfs))
    env.conf.set_override("access", "kernelspace", group="rbd")
    with pytest.raises(exception.KernelRbdUnavailable) as info:
        env.disk("inst").libvirt_info()
    assert "vms/inst_disk" in str(info.value) and "access = userspace" in str(info.value)


class _KernelMaps:
    """A fake /sys/bus/rbd with existing mappings; records unmaps (busy ones refuse)."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.devices = root / "bus" / "rbd" / "devices"
        self.devices.mkdir(parents=True)
        (root / "bus" / "rbd" / "remove_single_major").write_text("")
        self.busy: set[int] = set()
        self.unmapped: list[int] = []

    def add(self, pool: str, image: str, snap: str = "-") -> int:
        dev_id = len(list(self.devices.iterdir()))
        entry = self.devices / str(dev_id)
        entry.mkdir()
        for key, value in (("pool", pool), ("name", image), ("current_snap", snap)):
            (entry / key).write_text(value + "\n")
        return dev_id

    def write(self, path: str, data: str) -> None:
        import errno
        import shutil

        assert path.endswith("remove_single_major") and " force" not in data, (path, data)
        if int(data) in self.busy:
            raise OSError(errno.EBUSY, "Device or resource busy")
        shutil.rmtree(self.devices / data)
        self.unmapped.append(int(data))

    def install(self, monkeypatch: Any) -> None:
        from rbd_driver.storage import krbd

        real = krbd.KernelRbd.from_conf.__func__
        maps = self

        def from_conf(cls, conf, client, monitors=None):
            return real(cls, conf, client, monitors, sysfs_root=str(maps.root),
                        writer=maps.write)

        monkeypatch.setattr(krbd.KernelRbd, "from_conf", classmethod(from_conf))


def test_kernelspace_cleanup_unmaps_the_instances_disks_first(env, tmp_path, monkeypatch) -> None:
    maps = _KernelMaps(tmp_path / "sys")
    maps.install(monkeypatch)
    env.conf.set_override("access", "kernelspace", group="rbd")
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    names = _disks(env, mine)
    kept = _disks(env, other, ("disk",))
    ids = [maps.add("vms", n) for n in names]
    other_id = maps.add("vms", kept[0])
    snap_id = maps.add("vms", names[0], "backup")  # a snapshot mapping is not the disk's
    report = Rbd.cleanup_instance(env.conf, mine, driver=env.driver)
    assert sorted(maps.unmapped) == sorted(ids)
    assert report.ok and sorted(report.removed) == sorted(names)
    assert env.vms() == kept
    assert sorted(int(p.name) for p in maps.devices.iterdir()) == sorted([other_id, snap_id])


def test_kernelspace_cleanup_leaves_a_disk_whose_device_is_in_use(env, tmp_path,
                                                                 monkeypatch) -> None:
    maps = _KernelMaps(tmp_path / "sys")
    maps.install(monkeypatch)
    env.conf.set_override("access", "kernelspace", group="rbd")
    inst = str(uuid.uuid4())
    in_use, idle = _disks(env, inst)
    busy_id = maps.add("vms", in_use)
    maps.add("vms", idle)
    maps.busy.add(busy_id)
    report = Rbd.cleanup_instance(env.conf, inst, driver=env.driver)
    assert report.removed == [idle] and not report.trashed and not report.failed
    assert f"/dev/rbd{busy_id} on this host" in report.busy[in_use]
    assert env.vms() == [in_use]  # never removed under a running guest
    assert env.trash() == []
    with pytest.raises(exception.ImageInUse, match=f"/dev/rbd{busy_id}"):
        Rbd(inst, "disk", env.conf, driver=env.driver).remove()
    assert env.vms() == [in_use]


def test_userspace_cleanup_never_looks_at_kernel_mappings(env, monkeypatch) -> None:
    from rbd_driver.storage import krbd

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("krbd consulted with access = userspace")

    monkeypatch.setattr(krbd.KernelRbd, "from_conf", classmethod(refuse))
    inst = str(uuid.uuid4())
    names = _disks(env, inst)
    report = Rbd.cleanup_instance(env.conf, inst, driver=env.driver)
    assert sorted(report.removed) == sorted(names)
    assert env.vms() == []
