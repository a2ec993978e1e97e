# SPDX-License-Identifier: Apache-2.0
"""Volume attachments: connection_info checks, disk XML, kernelspace with a fake sysfs."""

from __future__ import annotations

import copy
import logging
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from oslo_config import cfg

from rbd_driver import conf as conf_module
from rbd_driver import exception, volumes
from rbd_driver.storage import cephx
from tests.unit.storage.test_krbd import KEY, LOCAL, Env

SECRET = "6e9c0f40-8c1f-4e57-9d3b-2f1f3c0f5a11"
OTHER_KEY = cephx.generate_key()


def connection_info(**data: Any) -> dict[str, Any]:
    """What Cinder's RBD driver returns, plus what the volume manager and Nova add."""
    info: dict[str, Any] = {
        "driver_volume_type": "rbd",
        "serial": "0b6d3f86-7d5e-4c39-9d0b-3c7b86b1a001",
        "data": {
            "name": "volumes/volume-0b6d3f86",
            "hosts": ["192.0.2.1", "2001:db8::1", "192.0.2.3"],
            "ports": ["6789", "6789", "6789"],
            "cluster_name": "ceph",
            "auth_enabled": True,
            "auth_username": "cinder",
            "secret_type": "ceph",
            "secret_uuid": SECRET,
            "volume_id": "0b6d3f86-7d5e-4c39-9d0b-3c7b86b1a001",
            "discard": True,
            "keyring": None,
            "access_mode": "rw",
            "qos_specs": None,
        },
    }
    info["data"].update(data)
    return info


def _conf(**overrides: Any) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    conf_module.register_opts(conf)
    conf([], project="rbd_driver", default_config_files=[])
    for key, value in overrides.items():
        conf.set_override(key, value, group="rbd")
    return conf


def _parse(xml: str) -> ET.Element:
    return ET.fromstring(xml)


# -- userspace ---------------------------------------------------------------------------


def test_network_disk_with_every_monitor_auth_discard_and_serial() -> None:
    disk = _parse(volumes.volume_disk_xml(connection_info()))
    assert (disk.get("type"), disk.get("device")) == ("network", "disk")
    source = disk.find("source")
    assert source is not None
    assert source.attrib == {"protocol": "rbd", "name": "volumes/volume-0b6d3f86"}
    assert [(h.get("name"), h.get("port")) for h in source.findall("host")] == [
        ("192.0.2.1", "6789"), ("2001:db8::1", "6789"), ("192.0.2.3", "6789")]
    auth = disk.find("auth")
    assert auth is not None and auth.get("username") == "cinder"
    assert disk.find("auth/secret").attrib == {"type": "ceph", "uuid": SECRET}
    assert disk.find("driver").get("discard") == "unmap"
    assert disk.find("target").attrib == {"dev": "vdb", "bus": "virtio"}
    assert disk.find("readonly") is None
    assert disk.findtext("serial") == "0b6d3f86-7d5e-4c39-9d0b-3c7b86b1a001"
    assert disk.find("iotune") is None


def test_read_only_volume_without_auth_or_discard() -> None:
    info = connection_info(access_mode="ro", auth_enabled=False, discard=False,
                           auth_username=None, secret_uuid=None)
    disk = _parse(volumes.volume_disk_xml(info, target_dev="sdb", target_bus="scsi"))
    assert disk.find("readonly") is not None
    assert disk.find("auth") is None
    assert disk.find("driver").get("discard") is None
    assert disk.find("target").attrib == {"dev": "sdb", "bus": "scsi"}


def test_qos_specs_become_iotune_and_foreign_keys_are_skipped() -> None:
    info = connection_info(qos_specs={"total_bytes_sec": "10485760", "read_iops_sec": 500,
                                      "write_iops_sec_max": "0", "consumer": "front-end",
                                      "total_iops_sec_per_gb": "3"})
    iotune = _parse(volumes.volume_disk_xml(info)).find("iotune")
    assert iotune is not None
    assert {child.tag: child.text for child in iotune} == {
        "total_bytes_sec": "10485760", "read_iops_sec": "500"}


def test_optional_keys_may_be_absent() -> None:
    info = {"driver_volume_type": "rbd",
            "data": {"name": "volumes/v", "hosts": ["mon-a.example.org"], "ports": [6789]}}
    disk = _parse(volumes.volume_disk_xml(info))
    assert [(h.get("name"), h.get("port")) for h in disk.iter("host")] == [
        ("mon-a.example.org", "6789")]
    assert disk.find("auth") is None and disk.find("readonly") is None
    assert disk.find("serial") is None


def test_serial_falls_back_to_the_volume_id_and_may_be_given() -> None:
    info = connection_info(volume_id="vol-id")
    del info["serial"]
    assert _parse(volumes.volume_disk_xml(info)).findtext("serial") == "vol-id"
    assert _parse(volumes.volume_disk_xml(info, serial="mine")).findtext("serial") == "mine"


def test_bracketed_ipv6_hosts_are_written_bare() -> None:
    info = connection_info(hosts=["[2001:db8::7]"], ports=["3300"])
    [host] = _parse(volumes.volume_disk_xml(info)).iter("host")
    assert (host.get("name"), host.get("port")) == ("2001:db8::7", "3300")


def test_this_hosts_secret_stands_in_when_the_volume_service_sets_none() -> None:
    conf = _conf(secret_uuid="11111111-2222-3333-4444-555555555555", user="compute")
    disk = _parse(volumes.volume_disk_xml(connection_info(secret_uuid=None), conf=conf))
    assert disk.find("auth").get("username") == "compute"
    assert disk.find("auth/secret").get("uuid") == "11111111-2222-3333-4444-555555555555"
    # The volume service's own secret wins when it gives one.
    disk = _parse(volumes.volume_disk_xml(connection_info(), conf=conf))
    assert disk.find("auth").get("username") == "cinder"
    assert disk.find("auth/secret").get("uuid") == SECRET


def test_the_parsed_connection_holds_no_keyring_in_its_repr() -> None:
    text = cephx.keyring_text("client.cinder", KEY)
    parsed = volumes.parse_connection_info(connection_info(keyring=text))
    assert parsed.keyring == text and KEY.reveal() not in repr(parsed)
    assert parsed.hosts[1] == ("2001:db8::1", 6789) and parsed.readonly is False


# -- bad input -------------------------------------------------------------------------------

BAD: list[tuple[str, Any, str]] = [
    # (id, change applied to a good connection_info, the key the error must name)
    ("no-type", lambda i: i.pop("driver_volume_type"), "['driver_volume_type'] is missing"),
    ("iscsi", lambda i: i.update(driver_volume_type="iscsi"), "'iscsi'"),
    ("no-data", lambda i: i.pop("data"), "['data'] is missing"),
    ("data-list", lambda i: i.update(data=["x"]), "['data'] must be a mapping"),
    ("no-name", lambda i: i["data"].pop("name"), "data['name'] is missing"),
    ("name-without-pool", lambda i: i["data"].update(name="volume-1"), "data['name']"),
    ("name-empty-pool", lambda i: i["data"].update(name="/volume-1"), "data['name']"),
    ("name-empty-volume", lambda i: i["data"].update(name="volumes/"), "data['name']"),
    ("name-two-slashes", lambda i: i["data"].update(name="a/b/c"), "data['name']"),
    ("name-not-str", lambda i: i["data"].update(name=7), "data['name']"),
    ("no-hosts", lambda i: i["data"].pop("hosts"), "data['hosts'] is missing"),
    ("no-ports", lambda i: i["data"].pop("ports"), "data['ports'] is missing"),
    ("hosts-str", lambda i: i["data"].update(hosts="192.0.2.1"), "data['hosts'] must be a list"),
    ("hosts-empty", lambda i: i["data"].update(hosts=[], ports=[]), "data['hosts'] is empty"),
    ("host-with-port", lambda i: i["data"]["hosts"].__setitem__(1, "192.0.2.2:6789"),
     "data['hosts'][1]"),
    ("host-bad-ip", lambda i: i["data"]["hosts"].__setitem__(0, "999.1.1.1"), "data['hosts'][0]"),
    ("host-blank", lambda i: i["data"]["hosts"].__setitem__(2, ""), "data['hosts'][2]"),
    ("host-spaces", lambda i: i["data"]["hosts"].__setitem__(2, "mon a"), "data['hosts'][2]"),
    ("host-markup", lambda i: i["data"]["hosts"].__setitem__(0, "a'/><x"), "data['hosts'][0]"),
    ("host-int", lambda i: i["data"]["hosts"].__setitem__(0, 17), "data['hosts'][0]"),
    ("ports-short", lambda i: i["data"]["ports"].pop(), "data['ports'] has 2 entries"),
    ("port-text", lambda i: i["data"]["ports"].__setitem__(0, "mon"), "data['ports'][0]"),
    ("port-zero", lambda i: i["data"]["ports"].__setitem__(1, "0"), "data['ports'][1]"),
    ("port-big", lambda i: i["data"]["ports"].__setitem__(2, 70000), "data['ports'][2]"),
    ("auth-str", lambda i: i["data"].update(auth_enabled="yes"), "data['auth_enabled']"),
    ("auth-no-user", lambda i: i["data"].pop("auth_username"), "data['auth_username'] is missing"),
    ("auth-no-secret", lambda i: i["data"].pop("secret_uuid"), "data['secret_uuid'] is missing"),
    ("auth-bad-secret", lambda i: i["data"].update(secret_uuid="not-a-uuid"),
     "data['secret_uuid']"),
    ("auth-bad-user", lambda i: i["data"].update(auth_username="a b"), "data['auth_username']"),
    ("secret-type", lambda i: i["data"].update(secret_type="iscsi"), "data['secret_type']"),
    ("access-mode", lambda i: i["data"].update(access_mode="rx"), "data['access_mode']"),
    ("discard-str", lambda i: i["data"].update(discard="true"), "data['discard']"),
    ("qos-str", lambda i: i["data"].update(qos_specs="fast"), "data['qos_specs']"),
    ("qos-negative", lambda i: i["data"].update(qos_specs={"read_iops_sec": "-1"}),
     "data['qos_specs']['read_iops_sec']"),
    ("qos-float", lambda i: i["data"].update(qos_specs={"total_bytes_sec": 1.5}),
     "data['qos_specs']['total_bytes_sec']"),
    ("serial-int", lambda i: i.update(serial=5), "['serial']"),
    ("not-a-mapping", None, "connection_info itself must be a mapping"),
]


@pytest.mark.parametrize("change,key", [(c, k) for _, c, k in BAD], ids=[b[0] for b in BAD])
def test_bad_input_names_the_key(change: Any, key: str) -> None:
    info: Any = connection_info()
    if change is None:
        info = [info]
    else:
        change(info)
    with pytest.raises(exception.InvalidConnectionInfo) as err:
        volumes.volume_disk_xml(info)
    assert key in str(err.value), str(err.value)
    assert "nothing was attached" in str(err.value)
    assert isinstance(err.value, exception.RbdDriverError)


def test_a_bad_keyring_is_never_quoted() -> None:
    secret = KEY.reveal().encode()
    with pytest.raises(exception.InvalidConnectionInfo) as err:
        volumes.volume_disk_xml(connection_info(keyring=secret))
    assert "data['keyring']" in str(err.value) and KEY.reveal() not in str(err.value)


def test_long_bad_values_are_cut_short() -> None:
    with pytest.raises(exception.InvalidConnectionInfo) as err:
        volumes.volume_disk_xml(connection_info(access_mode="x" * 1000))
    assert len(str(err.value)) < 300


# -- kernelspace with a fake sysfs --------------------------------------------------------------


@pytest.fixture
def kenv(tmp_path: Path) -> Any:
    env = Env(tmp_path)
    env.cluster.add_pool("volumes")
    env.conf = _conf(access="kernelspace", user="compute", keyring=env.keyring_path)
    env.attacher = volumes.VolumeAttacher(
        env.conf, env.client, sysfs_root=str(tmp_path / "sys"), writer=env.kernel,
        kernel_keyring=env.keyring, addresses=[LOCAL], hostname="compute-1")
    yield env
    env.client.close()
    env.cluster.assert_no_open_handles()


def test_kernelspace_maps_with_the_volumes_monitors_and_user(kenv) -> None:
    text = cephx.keyring_text("client.cinder", KEY)
    info = connection_info(keyring=text, qos_specs={"write_bytes_sec": "1048576"})
    disk = _parse(kenv.attacher.disk_xml(info))
    assert disk.get("type") == "block"
    assert disk.find("source").attrib == {"dev": "/dev/rbd0"}
    assert disk.find("driver").get("discard") == "unmap"
    assert disk.findtext("iotune/write_bytes_sec") == "1048576"
    assert disk.findtext("serial") == "0b6d3f86-7d5e-4c39-9d0b-3c7b86b1a001"
    [parsed] = kenv.kernel.parsed
    assert parsed["mons"] == ["192.0.2.1:6789", "[2001:db8::1]:6789", "192.0.2.3:6789"]
    assert parsed["options"]["name"] == "cinder" and "ro" not in parsed["options"]
    assert (parsed["pool"], parsed["image"], parsed["snap"]) == ("volumes", "volume-0b6d3f86",
                                                                 None)
    assert kenv.keyring.log == ["add client.cinder", "remove client.cinder"]
    assert all(KEY.reveal() not in line for _, line in kenv.kernel.writes)


def test_kernelspace_read_only_and_detach(kenv) -> None:
    info = connection_info(access_mode="ro", keyring=cephx.keyring_text("client.cinder", KEY))
    disk = _parse(kenv.attacher.disk_xml(info, target_dev="vdc"))
    assert disk.find("readonly") is not None and "ro" in kenv.kernel.parsed[-1]["options"]
    assert kenv.attacher.disconnect(info) is True
    assert kenv.kernel.writes[-1] == (str(kenv.kernel.remove), "0")
    assert kenv.attacher.disconnect(info) is False  # nothing mapped any more


def test_kernelspace_without_a_keyring_in_the_info_reads_the_configured_one(kenv) -> None:
    # The keyring file of the fixture holds client.compute's key: auth off means our user.
    info = connection_info(auth_enabled=False)
    assert _parse(kenv.attacher.disk_xml(info)).find("source").get("dev") == "/dev/rbd0"
    assert kenv.kernel.parsed[-1]["options"]["name"] == "compute"


def test_kernelspace_msgr2_port_uses_ms_mode(kenv) -> None:
    info = connection_info(hosts=["192.0.2.1"], ports=["3300"],
                           keyring=cephx.keyring_text("client.cinder", KEY))
    kenv.attacher.disk_xml(info)
    parsed = kenv.kernel.parsed[-1]
    assert parsed["mons"] == ["192.0.2.1:3300"] and parsed["options"]["ms_mode"] == "prefer-crc"


def test_kernelspace_bad_input_maps_nothing(kenv, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    bad = copy.deepcopy(connection_info())
    bad["data"]["hosts"][0] = "not an address"
    with pytest.raises(exception.InvalidConnectionInfo):
        kenv.attacher.disk_xml(bad)
    # A keyring without the user's key: refused before the kernel is asked.
    wrong = connection_info(keyring=cephx.keyring_text("client.other", OTHER_KEY))
    with pytest.raises(exception.InvalidConnectionInfo) as err:
        kenv.attacher.disk_xml(wrong)
    assert "data['keyring']" in str(err.value) and "client.cinder" in str(err.value)
    assert OTHER_KEY.reveal() not in str(err.value) + caplog.text
    assert kenv.kernel.writes == [] and kenv.keyring.log == []


def test_kernelspace_refused_next_to_a_local_osd(kenv) -> None:
    kenv.osds[1] = {**kenv.osds[1], "public_addrs": {"addrvec": [
        {"type": "v1", "addr": f"{LOCAL}:6801", "nonce": 1}]}}
    info = connection_info(keyring=cephx.keyring_text("client.cinder", KEY))
    with pytest.raises(exception.LocalOsdRefused):
        kenv.attacher.disk_xml(info)
    assert kenv.kernel.writes == []


def test_module_function_opens_and_closes_its_own_connection(kenv, monkeypatch) -> None:
    # Without a client, one is made from conf and closed again.
    made = []
    real = volumes.RadosClient.from_conf

    def from_conf(conf: Any, **modules: Any) -> Any:
        client = real(conf, rados=kenv.rados, rbd=kenv.rbd)
        made.append(client)
        return client

    monkeypatch.setattr(volumes.RadosClient, "from_conf", from_conf)
    ceph_conf = kenv.tmp / "ceph.conf"
    kenv.conf.set_override("ceph_conf", str(ceph_conf), group="rbd")
    monkeypatch.setattr(volumes, "VolumeAttacher", _with_fake_kernel(kenv))
    info = connection_info(keyring=cephx.keyring_text("client.cinder", KEY))
    assert "/dev/rbd0" in volumes.volume_disk_xml(info, conf=kenv.conf)
    assert volumes.disconnect_volume(info, conf=kenv.conf) is True
    assert len(made) == 2
    kenv.cluster.assert_no_open_handles()


def _with_fake_kernel(kenv: Any) -> type[volumes.VolumeAttacher]:
    """The real VolumeAttacher, given the fake sysfs and kernel the module functions
    cannot pass (its own constructor runs; only kernel_options are added)."""

    class Attacher(volumes.VolumeAttacher):
        def __init__(self, conf: Any = None, client: Any = None, **kernel_options: Any) -> None:
            super().__init__(conf, client, sysfs_root=str(kenv.tmp / "sys"), writer=kenv.kernel,
                             kernel_keyring=kenv.keyring, addresses=[LOCAL],
                             hostname="compute-1", **kernel_options)

    return Attacher


def test_userspace_disconnect_has_nothing_to_undo() -> None:
    assert volumes.disconnect_volume(connection_info()) is False
    assert volumes.disconnect_volume(connection_info(), conf=_conf()) is False
