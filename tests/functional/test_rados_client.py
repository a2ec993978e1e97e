# SPDX-License-Identifier: Apache-2.0
"""rados_client against a real cluster, as the non-admin cephx user."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest
import rados
import rbd

from rbd_driver import exception
from rbd_driver.storage.rados_client import RadosClient


def test_user_is_not_admin(rados_client: RadosClient, ceph_cluster) -> None:
    assert rados_client.user == ceph_cluster.user != "admin"
    # profile rbd cannot list cephx keys; admin could.
    with pytest.raises(exception.PermissionDenied) as info:
        rados_client.mon_command("auth ls")
    assert "auth ls" in str(info.value)


def test_create_write_read_remove(rados_client: RadosClient, unique_name: str) -> None:
    pool = "vms"
    data = os.urandom(3 << 20) + b"tail"
    with rados_client.ioctx(pool, op="create") as ioctx:
        rbd.RBD().create(ioctx, unique_name, 64 << 20)
    try:
        with rados_client.open_image(pool, unique_name) as image:
            image.write(data, 1 << 20)
        with rados_client.open_image(pool, unique_name, read_only=True) as image:
            back = image.read(1 << 20, len(data))
            assert image.size() == 64 << 20
        assert hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        with rados_client.ioctx(pool, op="remove") as ioctx:
            rbd.RBD().remove(ioctx, unique_name)
    with rados_client.ioctx(pool) as ioctx:
        assert unique_name not in rbd.RBD().list(ioctx)


def test_fsid_matches_cluster(rados_client: RadosClient, ceph_cluster) -> None:
    assert rados_client.get_fsid() == ceph_cluster.fsid


def test_timeouts_are_applied_to_the_connection(rbd_conf) -> None:
    rbd_conf.set_override("op_timeout", 17, group="rbd")
    rbd_conf.set_override("connect_timeout", 4, group="rbd")
    with RadosClient.from_conf(rbd_conf) as client:
        handle = client.connect()
        assert handle.conf_get("rados_osd_op_timeout") == "17"
        assert handle.conf_get("rados_mon_op_timeout") == "17"
        assert handle.conf_get("client_mount_timeout") == "4"


def test_one_connection_shared_by_threads(rados_client: RadosClient) -> None:
    handles, ioctxs, errors = [], [], []

    def work() -> None:
        try:
            handles.append(rados_client.connect())
            ioctxs.append(rados_client.get_ioctx("vms"))
        except Exception as err:  # collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len({id(h) for h in handles}) == 1
    assert len({id(i) for i in ioctxs}) == 1


def test_missing_pool_is_named(rados_client: RadosClient) -> None:
    with pytest.raises(exception.PoolNotFound) as info:
        rados_client.get_ioctx("no-such-pool-xyz")
    assert "no-such-pool-xyz" in str(info.value)
    assert isinstance(info.value.__cause__, rados.ObjectNotFound)
    # Nothing half-open was kept for the missing pool.
    assert "no-such-pool-xyz" not in rados_client._ioctxs


def test_missing_image_is_named_and_chained(rados_client: RadosClient) -> None:
    with pytest.raises(exception.ImageNotFound) as info:
        with rados_client.open_image("vms", "no-such-image"):
            pass
    assert "vms/no-such-image" in str(info.value)
    assert isinstance(info.value.__cause__, rbd.ImageNotFound)


def test_missing_snapshot_is_named(rados_client: RadosClient, unique_name: str) -> None:
    with rados_client.ioctx("vms") as ioctx:
        rbd.RBD().create(ioctx, unique_name, 1 << 20)
    try:
        with pytest.raises(exception.SnapshotNotFound) as info:
            with rados_client.open_image("vms", unique_name, snapshot="nosnap", read_only=True):
                pass
        assert f"vms/{unique_name}@nosnap" in str(info.value)
    finally:
        with rados_client.ioctx("vms") as ioctx:
            rbd.RBD().remove(ioctx, unique_name)


def test_image_closed_when_block_raises(rados_client: RadosClient, unique_name: str) -> None:
    with rados_client.ioctx("vms") as ioctx:
        rbd.RBD().create(ioctx, unique_name, 1 << 20)
    opened = []
    with pytest.raises(RuntimeError):
        with rados_client.open_image("vms", unique_name) as image:
            opened.append(image)
            raise RuntimeError("boom")
    # A closed librbd image refuses further calls.
    with pytest.raises(rbd.InvalidArgument):
        opened[0].size()
    with rados_client.ioctx("vms") as ioctx:
        rbd.RBD().remove(ioctx, unique_name)  # would be ImageBusy if still open


def test_missing_ceph_conf_names_the_path(tmp_path) -> None:
    path = str(tmp_path / "nowhere" / "ceph.conf")
    client = RadosClient(path, user="x")
    with pytest.raises(exception.CephConfNotFound) as info:
        client.connect()
    assert path in str(info.value)
    assert not client.connected


def test_missing_keyring_names_the_path(ceph_cluster, tmp_path) -> None:
    path = str(tmp_path / "missing.keyring")
    client = RadosClient(ceph_cluster.conf_path, user="x", keyring=path)
    with pytest.raises(exception.KeyringNotFound) as info:
        client.connect()
    assert f"no keyring for client.x at {path};" in str(info.value)


@pytest.mark.parametrize("timeout", [1, 3])
def test_unreachable_monitor_fails_within_timeout(tmp_path, timeout: int) -> None:
    conf = tmp_path / "ceph.conf"
    conf.write_text("[global]\nmon host = 127.0.0.1:1\n")
    client = RadosClient(str(conf), user="nobody", connect_timeout=timeout)
    started = time.monotonic()
    with pytest.raises(exception.ClusterConnectionError) as info:
        client.get_ioctx("vms")
    elapsed = time.monotonic() - started
    assert elapsed < timeout + 2, elapsed
    assert str(conf) in str(info.value)
    assert isinstance(info.value.__cause__, rados.Error)
    assert not client.connected


def test_wrong_key_is_a_connection_error(ceph_cluster, tmp_path) -> None:
    keyring = tmp_path / "bad.keyring"
    keyring.write_text(f"[client.{ceph_cluster.user}]\n\tkey = AQBwrongwrongwrongwrongwrongwrongwrong==\n")
    client = RadosClient(ceph_cluster.conf_path, user=ceph_cluster.user, keyring=str(keyring),
                         connect_timeout=3)
    with pytest.raises(exception.ClusterConnectionError):
        client.connect()
    assert not client.connected


def test_client_reconnects_after_close(rados_client: RadosClient) -> None:
    first = rados_client.get_fsid()
    rados_client.close()
    assert not rados_client.connected
    assert rados_client.get_fsid() == first
