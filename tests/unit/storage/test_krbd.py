# SPDX-License-Identifier: Apache-2.0
"""Kernelspace mapping with a fake sysfs, a fake kernel keyring and a fake monitor.

There is no rbd kernel module on the test machines, so :class:`FakeKernel`
plays the kernel: it is the ``writer`` of :class:`KernelRbd`, parses what is
written to ``add_single_major``/``remove_single_major`` as the kernel does,
checks the key is in the (fake) kernel keyring at that moment, and creates or
removes ``devices/<id>`` entries in a temporary sysfs tree.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import ipaddress
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from rbd_driver import exception
from rbd_driver.storage import cephx, krbd
from rbd_driver.storage.monitors import MonitorCache
from rbd_driver.testing.fixtures import FakeEnv

KEY = cephx.generate_key()
LOCAL = ipaddress.ip_address("10.0.0.5")


class FakeKeyring:
    """The process keyring: ``keys`` holds what is there now."""

    def __init__(self, refuse: int | None = None) -> None:
        self.keys: dict[int, tuple[str, bytes]] = {}
        self.log: list[str] = []
        self.refuse = refuse
        self._next = 1000

    def add(self, description: str, payload: bytes) -> int:
        if self.refuse:
            raise OSError(self.refuse, os.strerror(self.refuse))
        self._next += 1
        self.keys[self._next] = (description, payload)
        self.log.append(f"add {description}")
        return self._next

    def remove(self, key_id: int) -> None:
        description, _ = self.keys.pop(key_id)
        self.log.append(f"remove {description}")


class FakeKernel:
    """The rbd driver behind /sys/bus/rbd, as the ``writer`` of KernelRbd."""

    def __init__(self, root: Path, keyring: FakeKeyring, single_major: bool = True) -> None:
        self.bus = root / "bus" / "rbd"
        (self.bus / "devices").mkdir(parents=True)
        self.add = self.bus / ("add_single_major" if single_major else "add")
        self.remove = self.bus / ("remove_single_major" if single_major else "remove")
        for path in (self.add, self.remove):
            path.write_text("")
        self.keyring = keyring
        self.writes: list[tuple[str, str]] = []
        self.busy: set[int] = set()
        self.fail_add: int | None = None
        self.parsed: list[dict[str, Any]] = []

    def __call__(self, path: str, data: str) -> None:
        self.writes.append((path, data))
        if path == str(self.add):
            self._map(data)
        elif path == str(self.remove):
            self._unmap(data)
        else:
            raise OSError(errno.EACCES, "not a writable rbd file")

    def _map(self, data: str) -> None:
        if self.fail_add:
            raise OSError(self.fail_add, os.strerror(self.fail_add))
        mons, options, pool, image, *snap = data.split(" ")
        opts = dict(o.partition("=")[::2] for o in options.split(","))
        if "key" in opts:  # the kernel looks the key up now, by description
            held = [p for d, p in self.keyring.keys.values() if d == opts["key"]]
            if held != [KEY.raw()]:
                raise OSError(errno.ENOKEY, "Required key not available")
        elif opts.get("secret") != KEY.reveal():
            raise OSError(errno.EPERM, "Operation not permitted")
        self.parsed.append({"mons": mons.split(","), "options": opts, "pool": pool,
                            "image": image, "snap": snap[0] if snap else None})
        ids = [int(p.name) for p in (self.bus / "devices").iterdir()]
        new = self.bus / "devices" / str(min(set(range(len(ids) + 1)) - set(ids)))
        new.mkdir()
        (new / "pool").write_text(pool + "\n")
        (new / "name").write_text(image + "\n")
        (new / "current_snap").write_text((snap[0] if snap else "-") + "\n")
        (new / "pool_ns").write_text("\n")

    def _unmap(self, data: str) -> None:
        dev_id, *force = data.split(" ")
        device = self.bus / "devices" / dev_id
        if not device.exists():
            raise OSError(errno.ENOENT, "No such device")
        if int(dev_id) in self.busy and force != ["force"]:
            raise OSError(errno.EBUSY, "Device or resource busy")
        for child in device.iterdir():
            child.unlink()
        device.rmdir()


def _osd(osd_id: int, ip: str, up: int = 1) -> dict[str, Any]:
    v2, v1 = f"{ip}:6800", f"{ip}:6801"
    if ":" in ip:
        v2, v1 = f"[{ip}]:6800", f"[{ip}]:6801"
    return {"osd": osd_id, "up": up, "in": 1,
            "public_addrs": {"addrvec": [{"type": "v2", "addr": v2, "nonce": 1},
                                         {"type": "v1", "addr": v1, "nonce": 1}]},
            "cluster_addrs": {"addrvec": [{"type": "v2", "addr": v2, "nonce": 1}]},
            "public_addr": f"{v1}/1", "cluster_addr": f"{v1}/1"}


class Env(FakeEnv):
    def __init__(self, tmp_path: Path, single_major: bool = True) -> None:
        self.keyring_path = str(tmp_path / "ceph.client.compute.keyring")
        cephx.write_keyring(self.keyring_path, "client.compute", KEY)
        super().__init__(tmp_path, pools=("vms",))
        self.osds = [_osd(0, "10.0.0.1"), _osd(1, "10.0.0.2"), _osd(2, "10.0.0.3")]
        self.pgs: list[dict[str, Any]] | None = [{"pgid": "1.0", "up": [0, 1], "acting": [0, 1]},
                                                 {"pgid": "1.1", "up": [1], "acting": [1]}]
        self.hostnames = {0: "store-a", 1: "store-b", 2: "store-c"}
        self.mons: list[dict[str, Any]] = [
            {"rank": 0, "name": "a", "public_addrs": {"addrvec": [
                {"type": "v2", "addr": "10.0.0.1:3300"}, {"type": "v1", "addr": "10.0.0.1:6789"}]}},
            {"rank": 1, "name": "b", "public_addrs": {"addrvec": [
                {"type": "v2", "addr": "[2001:db8::9]:3300"},
                {"type": "v1", "addr": "[2001:db8::9]:6789"}]}}]
        mc = self.cluster.mon_commands
        mc["osd dump"] = lambda cmd, inbuf: self._json(
            {"pools": [{"pool_name": p, "pool": i} for i, p in enumerate(self.cluster.pools)],
             "osds": self.osds})
        mc["pg ls-by-pool"] = self._pgs
        mc["osd metadata"] = lambda cmd, inbuf: self._json(
            [{"id": i, "hostname": h} for i, h in self.hostnames.items()])
        mc["mon dump"] = lambda cmd, inbuf: self._json({"mons": self.mons})
        self.client = self.new_client()
        self.keyring = FakeKeyring()
        self.kernel = FakeKernel(tmp_path / "sys", self.keyring, single_major)

    @staticmethod
    def _json(data: Any) -> tuple[int, bytes, str]:
        return 0, json.dumps(data).encode(), ""

    def _pgs(self, cmd: dict[str, Any], inbuf: bytes) -> tuple[int, bytes, str]:
        if self.pgs is None:
            return -errno.EACCES, b"", "access denied"
        return self._json({"pg_ready": True, "pg_stats": self.pgs})

    def krbd(self, **kwargs: Any) -> krbd.KernelRbd:
        options: dict[str, Any] = {
            "sysfs_root": str(self.tmp / "sys"), "writer": self.kernel,
            "kernel_keyring": self.keyring, "addresses": [LOCAL], "hostname": "compute-1"}
        options.update(kwargs)
        return krbd.KernelRbd(self.client, MonitorCache(self.client), "compute",
                              self.keyring_path, **options)


# -- mapping --------------------------------------------------------------------------


def test_map_writes_one_line_with_every_monitor_and_the_key_by_name(env) -> None:
    device = env.krbd().map("vms", "inst_disk")
    assert device == "/dev/rbd0"
    [(path, line)] = env.kernel.writes
    assert path == str(env.kernel.add)
    assert line == ("10.0.0.1:6789,[2001:db8::9]:6789 name=compute,key=client.compute "
                    "vms inst_disk")
    assert KEY.reveal() not in line
    # The key was in the kernel keyring during the write, and is gone now.
    assert env.keyring.log == ["add client.compute", "remove client.compute"]
    assert env.keyring.keys == {}


def test_map_a_snapshot_read_only(env) -> None:
    kernel = env.krbd()
    assert kernel.map("vms", "golden", "snap", read_only=True) == "/dev/rbd0"
    parsed = env.kernel.parsed[-1]
    assert "ro" in parsed["options"] and parsed["snap"] == "snap"
    assert kernel.find("vms", "golden", "snap") == krbd.Mapping(0, "vms", "golden", "snap",
                                                                "/dev/rbd0")
    assert kernel.find("vms", "golden") is None


def test_map_is_idempotent_and_devices_are_distinct(env) -> None:
    kernel = env.krbd()
    first = kernel.map("vms", "a")
    second = kernel.map("vms", "b")
    assert (first, second) == ("/dev/rbd0", "/dev/rbd1")
    assert kernel.map("vms", "a") == first
    assert len(env.kernel.writes) == 2
    assert [m.image for m in kernel.mapped()] == ["a", "b"]


def test_older_kernels_without_single_major(tmp_path) -> None:
    env = Env(tmp_path, single_major=False)
    kernel = env.krbd()
    assert kernel.map("vms", "a") == "/dev/rbd0"
    assert env.kernel.writes[0][0].endswith("/bus/rbd/add")
    assert kernel.unmap("vms", "a")
    assert env.kernel.writes[1] == (str(env.kernel.remove), "0")


def test_msgr2_only_monitors_use_ms_mode(env) -> None:
    env.mons = [{"rank": 0, "name": "a", "public_addrs": {"addrvec": [
        {"type": "v2", "addr": "10.0.0.1:3300"}]}}]
    env.krbd().map("vms", "a")
    parsed = env.kernel.parsed[-1]
    assert parsed["mons"] == ["10.0.0.1:3300"] and parsed["options"]["ms_mode"] == "prefer-crc"


def test_without_a_kernel_keyring_the_key_goes_only_into_the_sysfs_write(env, caplog) -> None:
    env.keyring.refuse = errno.ENOSYS
    caplog.set_level(logging.DEBUG)
    assert env.krbd().map("vms", "a") == "/dev/rbd0"
    assert env.kernel.parsed[-1]["options"]["secret"] == KEY.reveal()
    assert "kernel keyring unavailable" in caplog.text and KEY.reveal() not in caplog.text


def test_without_a_kernel_keyring_sysfs_secrets_can_be_refused(env) -> None:
    env.keyring.refuse = errno.EPERM
    with pytest.raises(exception.KernelRbdError) as info:
        env.krbd(allow_sysfs_secret=False).map("vms", "a")
    assert "vms/a" in str(info.value) and "keyring" in str(info.value)
    assert env.kernel.writes == []


def test_a_refused_mapping_names_the_image_and_never_the_key(env, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    env.kernel.fail_add = errno.ENOENT
    with pytest.raises(exception.KernelRbdError) as info:
        env.krbd().map("vms", "missing", "snap")
    message = str(info.value)
    assert "map of vms/missing@snap" in message and "dmesg" in message
    assert KEY.reveal() not in message and KEY.reveal() not in caplog.text
    assert isinstance(info.value.__cause__, OSError)
    assert env.keyring.keys == {}  # removed even on failure


def test_a_missing_keyring_is_a_keyring_error(env, tmp_path) -> None:
    kernel = env.krbd()
    kernel.keyring = str(tmp_path / "absent")
    with pytest.raises(exception.KeyringError) as info:
        kernel.map("vms", "a")
    assert "absent" in str(info.value)
    assert env.kernel.writes == [] and env.keyring.log == []


def test_without_a_keyring_option_ceph_confs_keyring_is_used(env) -> None:
    kernel = env.krbd()
    kernel.keyring = None
    env.client.connect().conf_set("keyring", f"/nonexistent/k,{env.keyring_path}")
    assert kernel.map("vms", "a") == "/dev/rbd0"


@pytest.mark.parametrize("image,snap", [("with space", None), ("a", "snap shot"), ("a\tb", None)])
def test_blank_names_are_refused(env, image, snap) -> None:
    with pytest.raises(exception.InvalidName):
        env.krbd().map("vms", image, snap)
    assert env.kernel.writes == []


def test_no_rbd_module_says_so_and_suggests_userspace(env, tmp_path) -> None:
    kernel = env.krbd(sysfs_root=str(tmp_path / "empty-sys"))
    with pytest.raises(exception.KernelRbdUnavailable) as info:
        kernel.map("vms", "a")
    assert "bus/rbd" in str(info.value) and "access = userspace" in str(info.value)
    assert kernel.mapped() == []


# -- unmapping ---------------------------------------------------------------------------------


def test_unmap_by_image_and_by_device(env) -> None:
    kernel = env.krbd()
    kernel.map("vms", "a")
    kernel.map("vms", "b")
    assert kernel.unmap("vms", "a") is True
    assert env.kernel.writes[-1] == (str(env.kernel.remove), "0")
    kernel.unmap_device("/dev/rbd1")
    assert env.kernel.writes[-1] == (str(env.kernel.remove), "1")
    assert kernel.mapped() == []
    assert kernel.unmap("vms", "a") is False
    with pytest.raises(exception.KernelRbdError, match="/dev/rbd7.*not mapped"):
        kernel.unmap_device("/dev/rbd7")


def test_a_busy_device_is_reported_and_force_unmaps_it(env) -> None:
    kernel = env.krbd()
    kernel.map("vms", "a")
    env.kernel.busy.add(0)
    with pytest.raises(exception.KernelRbdError) as info:
        kernel.unmap("vms", "a")
    assert "/dev/rbd0" in str(info.value) and "in use" in str(info.value)
    assert kernel.unmap("vms", "a", force=True)
    assert env.kernel.writes[-1] == (str(env.kernel.remove), "0 force")


# -- the loopback guard -----------------------------------------------------------------------


def test_a_local_osd_serving_the_pool_is_refused(env, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    env.osds[1] = _osd(1, str(LOCAL))
    with pytest.raises(exception.LocalOsdRefused) as info:
        env.krbd().map("vms", "a")
    message = str(info.value)
    assert "osd.1 (at 10.0.0.5)" in message and "pool vms" in message
    assert "deadlock" in message and "3076" in message and "access = userspace" in message
    assert env.kernel.writes == [] and env.keyring.log == []


def test_remote_osds_are_allowed(env) -> None:
    assert env.krbd().map("vms", "a") == "/dev/rbd0"


def test_a_local_osd_not_serving_the_pool_is_allowed(env) -> None:
    env.osds[2] = _osd(2, str(LOCAL))  # osd.2 is in no PG of the pool
    assert env.krbd().map("vms", "a") == "/dev/rbd0"


def test_loopback_addresses_are_always_local(env) -> None:
    env.osds[0] = _osd(0, "127.0.0.1")
    with pytest.raises(exception.LocalOsdRefused, match="osd.0 .at 127.0.0.1"):
        env.krbd(addresses=[]).check_not_loopback("vms")
    env.osds[0] = _osd(0, "::1")
    with pytest.raises(exception.LocalOsdRefused, match="osd.0 .at ::1"):
        env.krbd(addresses=[]).check_not_loopback("vms")


def test_an_ipv6_local_address_is_matched(env) -> None:
    env.osds[1] = _osd(1, "2001:db8::5")
    with pytest.raises(exception.LocalOsdRefused, match="2001:db8::5"):
        env.krbd(addresses=[ipaddress.ip_address("2001:db8::5")]).check_not_loopback("vms")


def test_an_osd_on_this_host_name_is_refused(env) -> None:
    env.hostnames[0] = "compute-1.example.org"
    with pytest.raises(exception.LocalOsdRefused, match="osd.0 .on host compute-1.example.org"):
        env.krbd(hostname="compute-1").check_not_loopback("vms")


def test_unknown_pgs_make_every_osd_count(env, caplog) -> None:
    env.pgs = None
    env.osds[2] = _osd(2, str(LOCAL))
    with caplog.at_level(logging.WARNING):
        with pytest.raises(exception.LocalOsdRefused, match="osd.2"):
            env.krbd().check_not_loopback("vms")
    assert "every OSD counts" in caplog.text


def test_a_local_osd_that_is_down_but_in_counts(env) -> None:
    env.osds[2] = _osd(2, str(LOCAL), up=0)
    with pytest.raises(exception.LocalOsdRefused, match="osd.2"):
        env.krbd().check_not_loopback("vms")


def test_the_guard_needs_the_pool(env) -> None:
    with pytest.raises(exception.PoolNotFound, match="absent"):
        env.krbd().check_not_loopback("absent")


def test_from_conf(env) -> None:
    from oslo_config import cfg

    from rbd_driver import conf as conf_module

    conf = cfg.ConfigOpts()
    conf_module.register_opts(conf)
    conf([], project="rbd_driver", default_config_files=[])
    conf.set_override("user", "compute", group="rbd")
    conf.set_override("keyring", env.keyring_path, group="rbd")
    conf.set_override("access", "kernelspace", group="rbd")
    kernel = krbd.KernelRbd.from_conf(conf, env.client, sysfs_root=str(env.tmp / "sys"),
                                      writer=env.kernel, kernel_keyring=env.keyring,
                                      addresses=[LOCAL], hostname="x")
    assert kernel.map("vms", "a") == "/dev/rbd0"
    assert kernel.monitors.ttl == 300


# -- this host ------------------------------------------------------------------------------


def test_local_addresses_include_loopback() -> None:
    found = krbd.local_addresses()
    assert ipaddress.ip_address("127.0.0.1") in found


def _keyutils() -> Any:
    name = ctypes.util.find_library("keyutils")
    return ctypes.CDLL(name, use_errno=True) if name else None


@pytest.mark.parametrize("raw_syscall", [False, True])
def test_the_real_kernel_keyring_adds_and_invalidates(raw_syscall) -> None:
    # Key type "user" needs no Ceph kernel module; "ceph" would.
    keyring = krbd.LinuxKeyring(key_type="user")
    if raw_syscall:
        keyring._keyutils = None
    lib = _keyutils()
    if lib is None:
        pytest.skip("libkeyutils is needed to read a key back")
    payload = os.urandom(28)
    try:
        key_id = keyring.add(f"rbd-driver-test-{os.getpid()}", payload)
    except OSError as err:
        pytest.skip(f"the kernel keyring is not usable here: {err}")
    buf = ctypes.create_string_buffer(64)
    lib.keyctl_read.restype = ctypes.c_long
    assert lib.keyctl_read(ctypes.c_int32(key_id), buf, ctypes.c_size_t(64)) == 28
    assert buf.raw[:28] == payload
    keyring.remove(key_id)
    assert lib.keyctl_read(ctypes.c_int32(key_id), buf, ctypes.c_size_t(64)) < 0
