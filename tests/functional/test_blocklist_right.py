# SPDX-License-Identifier: Apache-2.0
"""Taking over the lock of a crashed writer needs the right to blocklist it.

A client holding a disk's exclusive lock is SIGKILLed (a crashed host). A
second client, as a cephx user whose mon caps are the old ``allow r``
(without ``osd blocklist``), cannot take the lock over: its write fails and
the dead client still owns the lock. ``rbd-driver check`` says so;
``rbd-driver provision user`` (``profile rbd`` on the mon) fixes it, after
which ``check`` passes and the same user's write breaks the dead client's
lock, blocklisting it. Oracles: ``rbd lock ls``, ``ceph osd blocklist ls``,
``ceph auth get`` and ``rbd export`` as admin, and the writers' own exit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rbd_driver import cli
from rbd_driver.testing.local_cluster import ClusterState

pytestmark = pytest.mark.functional

SECTOR = 512

# One librbd client that opens the image, writes one sector and says so.
WRITER = r"""
import sys, time, rados, rbd
conf, user, keyring, name, offset, hold = sys.argv[1:7]
cluster = rados.Rados(conffile=conf, rados_id=user)
cluster.conf_set("keyring", keyring)
cluster.connect()
ioctx = cluster.open_ioctx("vms")
image = rbd.Image(ioctx, name)
try:
    image.write(user.encode().ljust(512, b"\0"), int(offset))
except Exception as err:
    print("failed", type(err).__name__, err, flush=True)
    sys.exit(3)
print("wrote", flush=True)
if hold == "hold":
    time.sleep(3600)
image.close(); ioctx.close(); cluster.shutdown()
"""


def _writer(ceph_cluster: ClusterState, user: str, keyring: str, name: str, offset: int,
            hold: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, ceph_cluster.conf_path, user, keyring, name, str(offset),
         "hold" if hold else "once"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _check(tmp_path: Any, ceph_cluster: ClusterState, user: str, keyring: str,
           capsys: Any) -> tuple[int, dict[str, Any]]:
    conf = tmp_path / f"{user}.conf"
    conf.write_text(f"[rbd]\nceph_conf = {ceph_cluster.conf_path}\nuser = {user}\n"
                    f"keyring = {keyring}\npool = vms\n")
    capsys.readouterr()
    code = cli.main(["--config-file", str(conf), "--json", "check"])
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture
def weak_user(ceph_cluster, ceph_admin, tmp_path) -> Iterator[tuple[str, str]]:
    """A user with the old, too narrow mon caps; deleted after the test."""
    user = f"weak-{uuid.uuid4().hex[:8]}"
    keyring = str(tmp_path / f"{user}.keyring")
    subprocess.run(["ceph", "-c", ceph_cluster.conf_path, "auth", "get-or-create",
                    f"client.{user}", "mon", "allow r", "osd", "profile rbd pool=vms",
                    "-o", keyring], check=True, capture_output=True, timeout=60)
    yield user, keyring
    ceph_admin("ceph", "auth", "del", f"client.{user}", check=False)


@pytest.fixture
def image(ceph_cluster) -> Iterator[str]:
    name = f"takeover-{uuid.uuid4().hex[:8]}"
    rbd = ["rbd", "-c", ceph_cluster.conf_path]
    subprocess.run([*rbd, "create", "--size", "16M", f"vms/{name}"], check=True,
                   capture_output=True, timeout=60)
    yield name
    subprocess.run([*rbd, "rm", "--no-progress", f"vms/{name}"], capture_output=True,
                   timeout=120, check=False)


def _locks(ceph_admin, name: str) -> list[dict[str, Any]]:
    return list(ceph_admin("rbd", "lock", "ls", f"vms/{name}") or [])


def _blocklist(ceph_cluster: ClusterState) -> str:
    return subprocess.run(["ceph", "-c", ceph_cluster.conf_path, "osd", "blocklist", "ls"],
                          capture_output=True, text=True, timeout=60, check=True).stdout


def _sector(ceph_cluster: ClusterState, name: str, offset: int, tmp_path: Any) -> bytes:
    target = tmp_path / f"{name}.raw"
    subprocess.run(["rbd", "-c", ceph_cluster.conf_path, "export", "--no-progress",
                    f"vms/{name}", str(target)], check=True, capture_output=True, timeout=120)
    with open(target, "rb") as f:
        f.seek(offset)
        data = f.read(SECTOR)
    os.unlink(target)
    return data.rstrip(b"\0")


def test_user_without_blocklist_right_cannot_take_over_a_dead_writers_lock_until_provisioned(
        ceph_cluster, ceph_admin, weak_user, image, tmp_path, capsys) -> None:
    user, keyring = weak_user
    code, doc = _check(tmp_path, ceph_cluster, user, keyring, capsys)
    assert (code, doc["ok"], doc["checks"][0]["ok"]) == (1, False, False), doc
    code, doc = _check(tmp_path, ceph_cluster, ceph_cluster.user, ceph_cluster.user_keyring,
                       capsys)
    assert (code, doc["ok"]) == (0, True), doc

    # The crashed host: a writer holds the exclusive lock and is SIGKILLed.
    holder = _writer(ceph_cluster, ceph_cluster.user, ceph_cluster.user_keyring, image, 0,
                     hold=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "wrote"
        [dead] = _locks(ceph_admin, image)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.communicate(timeout=30)
    try:
        # The user without the right: librbd waits for the dead watch to time
        # out, fails to blocklist the owner, and the write fails.
        weak = _writer(ceph_cluster, user, keyring, image, SECTOR)
        out, _ = weak.communicate(timeout=240)
        assert weak.returncode == 3 and "failed" in out, out
        assert "[errno 13]" in out, out  # EACCES: the blocklist was refused
        assert _locks(ceph_admin, image) == [dead]
        assert dead["address"] not in _blocklist(ceph_cluster)
        assert _sector(ceph_cluster, image, SECTOR, tmp_path) == b""

        # Provisioning gives the user profile rbd on the mon, and the check passes.
        capsys.readouterr()
        assert cli.main(["--config-file", str(tmp_path / f"{user}.conf"), "--json",
                         "provision", "user", user, "--writable", "vms",
                         "--admin-keyring", ceph_cluster.admin_keyring]) == 0
        caps = ceph_admin("ceph", "auth", "get", f"client.{user}")[0]["caps"]
        assert caps["mon"] == "profile rbd", caps
        code, doc = _check(tmp_path, ceph_cluster, user, keyring, capsys)
        assert (code, doc["ok"]) == (0, True), doc

        # Now the same user takes the lock over: the dead owner is blocklisted.
        again = _writer(ceph_cluster, user, keyring, image, SECTOR)
        out, err = again.communicate(timeout=240)
        assert again.returncode == 0 and out.strip() == "wrote", (out, err)
        assert dead["address"] in _blocklist(ceph_cluster)
        assert _sector(ceph_cluster, image, SECTOR, tmp_path) == user.encode()
        assert _sector(ceph_cluster, image, 0, tmp_path) == ceph_cluster.user.encode()
    finally:
        subprocess.run(["ceph", "-c", ceph_cluster.conf_path, "osd", "blocklist", "rm",
                        dead["address"]], capture_output=True, timeout=60, check=False)
