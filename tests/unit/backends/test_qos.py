# SPDX-License-Identifier: Apache-2.0
"""Limits and space on the guest's IO path (backends/qos.py) on the fake librbd:
flavor extra specs -> <iotune>, discard, librbd limits in image metadata."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from rbd_driver import exception
from rbd_driver.backends import qos
from rbd_driver.libvirt import iotune
from rbd_driver.storage import image_meta
from tests.unit.backends.test_rbd import RAW, Env

GIB = 1 << 30


def _driver(xml: str) -> ET.Element:
    found = ET.fromstring(xml).find("driver")
    assert found is not None
    return found


def _iotune(xml: str) -> dict[str, str]:
    element = ET.fromstring(xml).find("iotune")
    return {} if element is None else {child.tag: child.text or "" for child in element}


# -- flavor extra specs -> <iotune> ------------------------------------------------


def test_flavor_quota_disk_keys_become_iotune_and_other_specs_are_skipped(env) -> None:
    specs = {"quota:disk_read_iops_sec": "50", "quota:disk_write_bytes_sec": 1048576,
             "quota:disk_total_iops_sec_max": "0", "quota:cpu_shares": "2048",
             "hw:cpu_policy": "dedicated"}
    xml = env.disk("inst").libvirt_info({"dev": "vda"}, "none", specs)
    assert _iotune(xml) == {"read_iops_sec": "50", "write_bytes_sec": "1048576"}


def test_no_extra_specs_no_iotune(env) -> None:
    assert _iotune(env.disk("inst").libvirt_info({"dev": "vda"}, "none", None)) == {}
    assert _iotune(env.disk("inst").libvirt_info({"dev": "vda"}, "none", {})) == {}


@pytest.mark.parametrize("specs, key, words", [
    ({"quota:disk_read_iops": "50"}, "quota:disk_read_iops", "not a disk limit"),
    ({"quota:disk_read_iops_sec": "fifty"}, "quota:disk_read_iops_sec", "not a whole number"),
    ({"quota:disk_read_iops_sec": "-5"}, "quota:disk_read_iops_sec", "not a whole number"),
    ({"quota:disk_read_iops_sec": 1.5}, "quota:disk_read_iops_sec", "not a whole number"),
    ({"quota:disk_read_iops_sec": True}, "quota:disk_read_iops_sec", "not a whole number"),
    ({"quota:disk_total_iops_sec": "9", "quota:disk_read_iops_sec": "5"},
     "quota:disk_total_iops_sec", "quota:disk_read_iops_sec"),
    ({"quota:disk_read_bytes_sec_max": "9"}, "quota:disk_read_bytes_sec_max",
     "needs quota:disk_read_bytes_sec"),
])
def test_bad_flavor_limit_is_an_error_naming_the_key(env, specs, key, words) -> None:
    with pytest.raises(exception.InvalidExtraSpecs) as caught:
        env.disk("inst").libvirt_info({"dev": "vda"}, "none", specs)
    assert repr(key) in str(caught.value) and words in str(caught.value)
    assert "vms/inst_disk" in str(caught.value)


def test_volumes_and_flavors_share_one_check() -> None:
    # The volume path skips foreign keys but refuses the same bad values.
    assert iotune.parse_iotune({"read_iops_sec": "5", "consumer": "back-end"}) == {
        "read_iops_sec": 5}
    with pytest.raises(iotune.InvalidLimit) as caught:
        iotune.parse_iotune({"total_bytes_sec": "1", "write_bytes_sec": "2"})
    assert caught.value.key == "total_bytes_sec"


# -- discard and detect_zeroes -----------------------------------------------------


def test_instance_disks_discard_and_detect_zeroes_by_default(env) -> None:
    driver = _driver(env.disk("inst").libvirt_info({"dev": "vda"}))
    assert (driver.get("discard"), driver.get("detect_zeroes")) == ("unmap", "unmap")


def test_hw_disk_discard_ignore_and_detect_zeroes_off(env) -> None:
    env.conf.set_override("hw_disk_discard", "ignore", group="rbd")
    driver = _driver(env.disk("inst").libvirt_info({"dev": "vda"}))
    assert (driver.get("discard"), driver.get("detect_zeroes")) == ("ignore", None)
    env.conf.set_override("hw_disk_discard", "unmap", group="rbd")
    env.conf.set_override("detect_zeroes", False, group="rbd")
    driver = _driver(env.disk("inst").libvirt_info({"dev": "vda"}))
    assert (driver.get("discard"), driver.get("detect_zeroes")) == ("unmap", None)


def test_hw_disk_discard_takes_only_nova_values(env) -> None:
    with pytest.raises(ValueError):
        env.conf.set_override("hw_disk_discard", "trim", group="rbd")


# -- librbd limits in image metadata ------------------------------------------------


def _meta(env: Env, name: str) -> dict[str, str]:
    return image_meta.get_metadata(env.driver.client, "vms", name)


def _disk_of(env: Env, size: int) -> object:
    disk = env.disk("inst")
    env.driver.create(disk.rbd_name, size)
    return disk


def test_set_qos_stores_librbd_keys_and_get_qos_reads_them(env) -> None:
    disk = _disk_of(env, 10 * GIB)
    got = disk.set_qos(read_iops=50, write_bps=1 << 20)
    assert _meta(env, disk.rbd_name) == {"conf_rbd_qos_read_iops_limit": "50",
                                         "conf_rbd_qos_write_bps_limit": "1048576"}
    assert got == disk.get_qos() == {
        "iops": None, "read_iops": 50, "write_iops": None, "bps": None, "read_bps": None,
        "write_bps": 1048576, "iops_per_gib": None, "bps_per_gib": None}
    disk.set_qos(read_iops=0, iops=100)  # 0 removes one, others stay
    assert _meta(env, disk.rbd_name) == {"conf_rbd_qos_iops_limit": "100",
                                         "conf_rbd_qos_write_bps_limit": "1048576"}


def test_clear_qos_removes_every_limit_and_rule_and_nothing_else(env) -> None:
    disk = _disk_of(env, 10 * GIB)
    image_meta.update_metadata(env.driver.client, "vms", disk.rbd_name, {"other": "kept"})
    disk.set_qos(iops_per_gib=3, read_bps=7)
    disk.clear_qos()
    assert _meta(env, disk.rbd_name) == {"other": "kept"}
    assert set(disk.get_qos().values()) == {None}


def test_per_gib_limit_is_computed_from_the_size_and_recomputed_on_grow(env) -> None:
    disk = _disk_of(env, 10 * GIB)
    got = disk.set_qos(iops_per_gib=10, bps_per_gib=1 << 20)
    assert (got["iops"], got["iops_per_gib"], got["bps"]) == (100, 10, 10 << 20)
    disk.resize_image(25 * GIB)
    got = disk.get_qos()
    assert (got["iops"], got["bps"]) == (250, 25 << 20)
    assert _meta(env, disk.rbd_name)["conf_rbd_qos_iops_limit"] == "250"


def test_per_gib_rounds_up_and_is_at_least_one(env) -> None:
    assert qos.per_gib_limit(10, (GIB * 3) // 2) == 15
    assert qos.per_gib_limit(1, 1 << 20) == 1
    assert qos.per_gib_limit(3, GIB + 1) == 4


def test_a_plain_limit_ends_the_per_gib_rule_and_back(env) -> None:
    disk = _disk_of(env, 4 * GIB)
    disk.set_qos(iops_per_gib=5)
    disk.set_qos(iops=7)
    disk.resize_image(8 * GIB)
    assert (disk.get_qos()["iops"], disk.get_qos()["iops_per_gib"]) == (7, None)
    disk.set_qos(iops_per_gib=5)
    assert (disk.get_qos()["iops"], disk.get_qos()["iops_per_gib"]) == (40, 5)
    disk.set_qos(iops_per_gib=0)  # the limit it set goes with it
    assert disk.get_qos()["iops"] is None


@pytest.mark.parametrize("kwargs", [{"iops": -1}, {"bps": "5"}, {"read_iops": True},
                                    {"iops": 5, "iops_per_gib": 1}])
def test_bad_set_qos_changes_nothing(env, kwargs) -> None:
    disk = _disk_of(env, GIB)
    disk.set_qos(write_iops=9)
    with pytest.raises(exception.InvalidArgument):
        disk.set_qos(**kwargs)
    assert _meta(env, disk.rbd_name) == {"conf_rbd_qos_write_iops_limit": "9"}


def test_set_qos_on_a_missing_disk(env) -> None:
    with pytest.raises(exception.ImageNotFound):
        env.disk("nothing").set_qos(iops=5)


def test_defaults_apply_to_new_disks_only(env) -> None:
    env.conf.set_override("qos_read_iops", 300, group="rbd")
    env.conf.set_override("qos_iops", 999, group="rbd")
    env.conf.set_override("qos_iops_per_gib", 2, group="rbd")
    url = env.golden()
    disk = env.disk("inst")
    disk.direct_fetch("golden", RAW, [{"url": url}])
    disk.resize_image(GIB)
    got = disk.get_qos()
    assert (got["read_iops"], got["iops_per_gib"], got["iops"]) == (300, 2, 2)
    disk.set_qos(read_iops=0)
    disk.direct_fetch("golden", RAW, [{"url": url}])  # exists: nothing new, no default
    assert disk.get_qos()["read_iops"] is None


def test_defaults_reach_copied_and_imported_disks(env, tmp_path) -> None:
    env.conf.set_override("qos_write_bps", 4096, group="rbd")
    base = tmp_path / "base.raw"
    base.write_bytes(b"raw" * 100)
    disk = env.disk("inst")
    disk.create_image(lambda target: None, str(base), 8 << 20)
    assert disk.get_qos()["write_bps"] == 4096
    config = env.disk("inst", "disk.config")
    config.import_file(str(base))
    assert config.get_qos()["write_bps"] == 4096


def test_no_default_no_metadata(env) -> None:
    disk = env.disk("inst")
    disk.direct_fetch("golden", RAW, [{"url": env.golden()}])
    assert _meta(env, disk.rbd_name) == {}


# -- cache mode -----------------------------------------------------------------------


def test_cache_mode_defaults_to_the_option_and_the_caller_wins(env) -> None:
    assert _driver(env.disk("inst").libvirt_info({"dev": "vda"})).get("cache") == "none"
    env.conf.set_override("cache_mode", "writeback", group="rbd")
    assert _driver(env.disk("inst").libvirt_info({"dev": "vda"})).get("cache") == "writeback"
    assert _driver(env.disk("inst").libvirt_info({"dev": "vda"}, "none")).get("cache") == "none"
    with pytest.raises(ValueError):
        env.conf.set_override("cache_mode", "unsafe", group="rbd")


def test_without_defaults_a_launch_makes_no_extra_call(env) -> None:
    url = env.golden()
    disk = env.disk("inst")
    calls: list[str] = []
    real_exists = disk.exists
    disk.exists = lambda: calls.append("exists") or real_exists()  # type: ignore[method-assign]
    disk.direct_fetch("golden", RAW, [{"url": url}])
    assert calls.count("exists") == 1  # direct_fetch's own check only


# -- rbd-driver qos (through cli.main on the fake cluster) -------------------------------


def test_qos_cli_set_show_clear(tmp_path, monkeypatch, capsys) -> None:
    from tests.unit.cli.test_admin import Env as CliEnv

    cenv = CliEnv(tmp_path, monkeypatch, capsys)
    cenv.cluster.add_image("vms", "inst_disk", 4 * GIB)
    doc = cenv.run("qos", "set", "inst", "--write-iops", "30", "--bps-per-gib", "1048576")
    assert (doc["disk"], doc["limits"]["write_iops"], doc["limits"]["bps"]) == (
        "vms/inst_disk", 30, 4 << 20)
    text = cenv.run("qos", "show", "inst", as_json=False)
    assert "write_iops:    30/s" in text and "bps_per_gib:   1 MiB/s per GiB" in text
    assert set(cenv.run("qos", "clear", "inst")["limits"].values()) == {None}
    assert "needs at least one limit" in cenv.run("qos", "set", "inst", expect=2)
    assert "--iops" in cenv.run("qos", "show", "inst", "--iops", "5", expect=2)  # set only
    assert "must be at least 0" in cenv.run("qos", "set", "inst", "--iops", "-1", expect=2)
