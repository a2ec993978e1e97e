# SPDX-License-Identifier: Apache-2.0
"""Provisioning on the real cluster: a pool with a cache tier, a least-privilege
user, its keyring, what the user can and cannot do, QEMU as that user, key
rotation, the kernelspace loopback guard, and the secret scanner's self-test.

Provisioning runs as ``client.admin``; everything the new user does runs as
that user. The Ceph CLI (as admin) is only an oracle.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rbd_driver import exception
from rbd_driver.ops import provision
from rbd_driver.storage import cephx, convert, krbd
from rbd_driver.storage.location import RbdLocation
from rbd_driver.storage.monitors import MonitorCache
from rbd_driver.storage.rados_client import RadosClient
from rbd_driver.storage.rbd_utils import RBDDriver
from rbd_driver.testing.local_cluster import ClusterState, make_conf
from tests.functional.secret_scanner import SecretScanner

GOLDEN = b"provisioning golden data\n" * 100


@pytest.fixture(scope="module")
def admin(ceph_cluster: ClusterState) -> Iterator[RadosClient]:
    with RadosClient(ceph_cluster.conf_path, user="admin",
                     keyring=ceph_cluster.admin_keyring) as client:
        yield client


@pytest.fixture(scope="module")
def golden(ceph_cluster: ClusterState) -> Iterator[RbdLocation]:
    """A golden image in pool `images` with a protected snapshot, made by the test user."""
    driver = RBDDriver.from_conf(make_conf(ceph_cluster, pool="images"))
    name = f"prov-golden-{uuid.uuid4().hex[:8]}"
    driver.create(name, 8 << 20)
    with driver.client.open_image("images", name) as image:
        image.write(GOLDEN, 0)
    driver.create_snap(name, "snap", protect=True)
    yield RbdLocation(driver.fsid, "images", name, "snap")
    driver.remove_image(name)
    driver.close()


def _remove_pool(admin: RadosClient, pool: str, tier: str | None = None) -> None:
    if tier:
        admin.mon_command("osd tier remove-overlay", pool=pool)
        admin.mon_command("osd tier remove", pool=pool, tierpool=tier)
        admin.mon_command("osd pool rm", pool=tier, pool2=tier, yes_i_really_really_mean_it=True)
    admin.mon_command("osd pool rm", pool=pool, pool2=pool, yes_i_really_really_mean_it=True)


@pytest.fixture(scope="module")
def provisioned(ceph_cluster: ClusterState, admin: RadosClient,
                secret_scanner: SecretScanner) -> Iterator[dict[str, Any]]:
    """provision_from_conf: a pool with a writeback cache tier, and a user for it.

    The keyring goes where the cluster's ceph.conf looks for it
    (``$cluster.$name.keyring`` in the cluster directory), so QEMU needs only
    ``id=`` and ``conf=``.
    """
    tag = uuid.uuid4().hex[:6]
    user, pool, tier = f"prov-{tag}", f"prov-{tag}", f"prov-{tag}-cache"
    keyring = os.path.join(ceph_cluster.directory, f"ceph.client.{user}.keyring")
    conf = make_conf(ceph_cluster, pool=pool)
    conf.set_override("user", user, group="rbd")
    conf.set_override("keyring", keyring, group="rbd")
    conf.set_override("cache_tier_pool", tier, group="rbd")
    conf.set_override("image_pools", ["images"], group="rbd")
    started = time.monotonic()
    try:
        report = provision.provision_from_conf(conf, admin, pg_num=8)
        secret_scanner.watch(report.user.key, f"key of client.{user}")
        yield {"conf": conf, "user": user, "pool": pool, "tier": tier, "keyring": keyring,
               "report": report, "seconds": time.monotonic() - started}
    finally:
        provision.Provisioner(admin).delete_user(user)
        if os.path.exists(keyring):
            os.unlink(keyring)
        pools = {p["pool_name"] for p in admin.mon_command("osd dump")["pools"]}
        if pool in pools:
            _remove_pool(admin, pool, tier if tier in pools else None)


@pytest.fixture
def as_user(provisioned: dict[str, Any]) -> Iterator[RBDDriver]:
    """An RBDDriver connected as the provisioned user."""
    driver = RBDDriver.from_conf(provisioned["conf"])
    yield driver
    for name in driver.list_images():
        report = driver.remove_image(name)
        assert report.ok, report
    driver.close()


def test_pool_is_created_with_its_pg_count_rbd_application_and_init(
        provisioned, admin, ceph_admin) -> None:
    pool = provisioned["pool"]
    assert provisioned["report"].pools[0] == provision.PoolResult(pool, True, 8)
    assert ceph_admin("ceph", "osd", "pool", "get", pool, "pg_num")["pg_num"] == 8
    assert "rbd" in ceph_admin("ceph", "osd", "pool", "application", "get", pool)
    with admin.ioctx(pool) as ioctx:
        ioctx.stat("rbd_info")  # written by rbd pool init
    # Idempotent: a second call changes nothing and says it existed.
    again = provision.Provisioner(admin).create_pool(pool, pg_num=16)
    assert again == provision.PoolResult(pool, False, 8)
    assert ceph_admin("ceph", "osd", "pool", "get", pool, "pg_num")["pg_num"] == 8


@pytest.mark.parametrize("bad", ["bad name", "a,b", "x;allow *", "", "-lead", "ünicode"])
def test_bad_pool_name_is_refused_clearly_and_nothing_is_created(admin, bad) -> None:
    before = admin.mon_command("osd pool ls")
    with pytest.raises(exception.InvalidName) as info:
        provision.Provisioner(admin).create_pool(bad, pg_num=8)
    assert f"'{bad}'" in str(info.value)
    assert admin.mon_command("osd pool ls") == before


def test_cache_tier_is_in_front_of_the_pool(provisioned, ceph_admin) -> None:
    pools = {p["pool_name"]: p for p in ceph_admin("ceph", "osd", "dump")["pools"]}
    base, tier = pools[provisioned["pool"]], pools[provisioned["tier"]]
    assert base["tiers"] == [tier["pool"]] and base["read_tier"] == tier["pool"]
    assert tier["cache_mode"] == "writeback"


def test_user_has_least_privilege_caps(provisioned, ceph_admin) -> None:
    user, pool, tier = provisioned["user"], provisioned["pool"], provisioned["tier"]
    entry = ceph_admin("ceph", "auth", "get", f"client.{user}")[0]
    assert entry["caps"] == {
        "mon": "profile rbd",
        "osd": f"profile rbd pool={pool}, profile rbd pool={tier}, "
               "profile rbd-read-only pool=images",
        "mgr": f"profile rbd pool={pool}, profile rbd pool={tier}",
    }
    assert all("*" not in cap for cap in entry["caps"].values())


def test_keyring_is_mode_0600_holds_the_key_and_no_temp_file_is_left(provisioned) -> None:
    path = provisioned["keyring"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = cephx.read_key(path, f"client.{provisioned['user']}")
    assert key == provisioned["report"].user.key
    leftovers = [n for n in os.listdir(os.path.dirname(path)) if n.endswith(".tmp")]
    assert leftovers == []


def test_user_can_create_and_clone_in_its_pool(provisioned, as_user, golden, ceph_admin) -> None:
    pool = provisioned["pool"]
    as_user.create("plain", 4 << 20)
    as_user.clone(golden, "clone")
    info = ceph_admin("rbd", "info", f"{pool}/clone")
    assert (info["parent"]["pool"], info["parent"]["image"]) == ("images", golden.image)
    with as_user.client.open_image(pool, "clone") as image:
        assert image.read(0, len(GOLDEN)) == GOLDEN  # through the cache tier
        image.write(b"mine", 0)
    assert sorted(as_user.list_images()) == ["clone", "plain"]


def test_user_reads_but_cannot_write_the_image_pool(as_user, golden) -> None:
    with as_user.client.open_image("images", golden.image, snapshot="snap",
                                   read_only=True) as image:
        assert image.read(0, len(GOLDEN)) == GOLDEN
    with pytest.raises(exception.PermissionDenied) as info:
        as_user.create("intruder", 1 << 20, pool="images")
    assert "images/intruder" in str(info.value)
    with pytest.raises(exception.RbdDriverError) as info:
        with as_user.client.open_image("images", golden.image) as image:
            image.write(b"x", 0)
    assert "images" in str(info.value)
    assert isinstance(info.value, (exception.PermissionDenied, exception.ReadOnlyImage))


def test_pool_without_caps_fails_naming_the_pool(as_user) -> None:
    with pytest.raises(exception.PermissionDenied) as info:
        as_user.create("nope", 1 << 20, pool="rbd")
    assert "rbd/nope" in str(info.value)
    assert "cephx caps" in str(info.value)
    assert isinstance(info.value.__cause__, Exception)


def test_qemu_img_opens_a_disk_as_the_user_with_id_and_conf_only(
        provisioned, as_user, ceph_cluster) -> None:
    as_user.create("qemu", 16 << 20)
    with as_user.client.open_image(provisioned["pool"], "qemu") as image:
        image.write(b"\x5a" * 4096, 1 << 20)
    spec = convert.rbd_spec(provisioned["pool"], "qemu", provisioned["user"],
                            provisioned["conf"].rbd.ceph_conf)
    assert ":keyring=" not in spec and ":key=" not in spec
    proc = subprocess.run(["qemu-img", "info", "--output=json", "-f", "raw", spec],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert '"virtual-size": 16777216' in proc.stdout
    # QEMU reads what the user wrote...
    read = subprocess.run(["qemu-io", "-f", "raw", "-r", "-c", "read -P 0x5a 1M 4k", spec],
                          capture_output=True, text=True, timeout=60, check=False)
    assert read.returncode == 0 and "read 4096/4096 bytes" in read.stdout, read.stdout + read.stderr
    # ... and it is that user, with its narrow caps, not an identity that could
    # open anything: an image in pool vms (no caps there) is refused to it.
    outside = f"outside-{uuid.uuid4().hex[:6]}"
    subprocess.run(["rbd", "-c", ceph_cluster.conf_path, "create", "--size", "1M",
                    f"vms/{outside}"], check=True, capture_output=True, timeout=60)
    try:
        denied = subprocess.run(
            ["qemu-img", "info", "-f", "raw",
             convert.rbd_spec("vms", outside, provisioned["user"],
                              provisioned["conf"].rbd.ceph_conf)],
            capture_output=True, text=True, timeout=60, check=False)
        assert denied.returncode != 0
        assert "Operation not permitted" in denied.stderr or "ermission" in denied.stderr, \
            denied.stderr
    finally:
        subprocess.run(["rbd", "-c", ceph_cluster.conf_path, "rm", "--no-progress",
                        f"vms/{outside}"], check=True, capture_output=True, timeout=60)


def test_ensure_user_is_idempotent_and_narrows_widened_caps(provisioned, admin, ceph_admin) -> None:
    user = provisioned["user"]
    before = ceph_admin("ceph", "auth", "get", f"client.{user}")[0]
    subprocess.run(["ceph", "-c", provisioned["conf"].rbd.ceph_conf, "auth", "caps",
                    f"client.{user}", "mon", "allow *", "osd", "allow *"],
                   check=True, capture_output=True, timeout=60)
    again = provision.Provisioner(admin).ensure_user(
        user, [provisioned["pool"]], ["images"], keyring=provisioned["keyring"])
    after = ceph_admin("ceph", "auth", "get", f"client.{user}")[0]
    assert after["caps"] == before["caps"]
    assert after["key"] == before["key"]  # the key is kept
    assert again.key == provisioned["report"].user.key


def test_admin_is_never_provisioned(admin) -> None:
    with pytest.raises(exception.InvalidName, match="admin"):
        provision.Provisioner(admin).ensure_user("client.admin", ["vms"])


def test_rotate_key_keeps_caps_and_retires_the_old_key(
        ceph_cluster, admin, ceph_admin, tmp_path, secret_scanner) -> None:
    user = f"rot-{uuid.uuid4().hex[:6]}"
    prov = provision.Provisioner(admin)
    keyring = str(tmp_path / "new.keyring")
    try:
        first = prov.ensure_user(user, ["vms"], ["images"], keyring=keyring)
        secret_scanner.watch(first.key, f"first key of client.{user}")
        old_keyring = str(tmp_path / "old.keyring")
        cephx.write_keyring(old_keyring, first.entity, first.key)
        rotated = prov.rotate_key(user, keyring=keyring)
        secret_scanner.watch(rotated.key, f"rotated key of client.{user}")
        assert rotated.key != first.key and rotated.caps == first.caps
        entry = ceph_admin("ceph", "auth", "get", f"client.{user}")[0]
        assert entry["key"] == rotated.key.reveal() and entry["caps"] == first.caps
        assert cephx.read_key(keyring, first.entity) == rotated.key
        with RadosClient(ceph_cluster.conf_path, user=user, keyring=keyring) as client:
            client.get_fsid()
        with pytest.raises(exception.ClusterConnectionError):
            with RadosClient(ceph_cluster.conf_path, user=user, keyring=old_keyring,
                             connect_timeout=3) as client:
                client.get_fsid()
    finally:
        prov.delete_user(user)


def test_loopback_guard_refuses_kernelspace_next_to_the_local_osd(
        ceph_cluster, rados_client, tmp_path) -> None:
    # The OSDs of this cluster listen on 127.0.0.1: they are local by
    # definition, so a kernel mapping must be refused before anything is
    # written to sysfs (here a fake one: there is no rbd module).
    (tmp_path / "bus" / "rbd" / "devices").mkdir(parents=True)
    writes: list[tuple[str, str]] = []
    kernel = krbd.KernelRbd(rados_client, MonitorCache(rados_client), "rbd-driver-test",
                            ceph_cluster.user_keyring, sysfs_root=str(tmp_path),
                            writer=lambda path, data: writes.append((path, data)),
                            addresses=[], hostname="not-this-host")
    with pytest.raises(exception.LocalOsdRefused) as info:
        kernel.map("vms", "disk")
    message = str(info.value)
    assert "osd.0" in message and "127.0.0.1" in message and "pool vms" in message
    assert "3076" in message and "userspace" in message
    assert writes == []


def test_secret_scanner_detects_a_planted_key(secret_scanner: SecretScanner) -> None:
    """The scanner must see a key in a child's argv and environment, and in a log."""
    with secret_scanner.planted() as key:
        before = len(secret_scanner.expected_findings)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)", key],
                                 env={**os.environ, "LEAKED": key})
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                where = [f.where for f in secret_scanner.expected_findings[before:]]
                if any(w.endswith("environ") for w in where) and \
                        any("cmdline" in w for w in where):
                    break
                time.sleep(0.02)  # the poller thread, not this test, does the finding
        finally:
            child.kill()
            child.wait()
        logging.getLogger("rbd_driver.planted").debug("oops %s", key)
        found = secret_scanner.expected_findings[before:]
    kinds = {f.kind for f in found}
    assert {"audit", "proc", "log"} <= kinds, found
    assert any(f.where == f"/proc/{child.pid}/environ" for f in found)
    assert all(key not in f.where and key not in f.label for f in found)
    assert secret_scanner.findings == [], secret_scanner.report(secret_scanner.findings)


LEAKY_TEST = '''
import logging, subprocess
from rbd_driver.storage import cephx

def test_leaks_through_argv(secret_scanner):
    key = cephx.generate_key().reveal()
    secret_scanner.watch(key, "key of client.leaky")
    subprocess.run(["/bin/true", "--key=" + key], check=True)

def test_leaks_through_a_log(secret_scanner):
    key = cephx.generate_key().reveal()
    secret_scanner.watch(key, "key of client.chatty")
    logging.getLogger("rbd_driver.chatty").debug("connecting with key %s", key)

def test_clean(secret_scanner):
    secret_scanner.watch(cephx.generate_key(), "key of client.quiet")
'''


def test_secret_scanner_fails_the_test_that_leaks(tmp_path) -> None:
    """A leak of a watched key fails its test and the session, without showing the key."""
    (tmp_path / "test_leaky.py").write_text(LEAKY_TEST)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", os.devnull, "--rootdir", str(tmp_path),
         "-p", "no:cacheprovider", "-p", "tests.functional.secret_scanner", "-q",
         str(tmp_path / "test_leaky.py")],
        cwd=root, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": root})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "2 errors" in out and "3 passed" in out, out
    assert "key of client.leaky: in subprocess.Popen argv/env at spawn" in out, out
    assert "key of client.chatty: in log record of rbd_driver.chatty" in out, out
    assert "client.quiet" not in out
    assert "AQ" not in out.replace("AQUA", "")  # no key (they all start with AQ)
