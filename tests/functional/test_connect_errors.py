# SPDX-License-Identifier: Apache-2.0
"""The first mistakes of an operator name their cause, not the monitors.

Each case runs ``rbd-driver ls`` with a config the way an operator writes
it, and checks the one line it prints: the cause, the path or user at
fault, and the next step. The oracle is the cluster itself (the admin
``ceph`` CLI makes the users), and a loopback port nobody listens on.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rbd_driver import exception
from rbd_driver.storage.rados_client import RadosClient


def _rbd_driver(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rbd_driver.cli", "--config-file", str(conf),
                           *args], capture_output=True, text=True, timeout=120)


def _write_conf(path: Path, ceph_conf: str, user: str, keyring: str | None = None,
                connect_timeout: int = 5) -> Path:
    lines = ["[rbd]", f"ceph_conf = {ceph_conf}", f"user = {user}", "pool = vms",
             f"connect_timeout = {connect_timeout}"]
    if keyring:
        lines.append(f"keyring = {keyring}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "next:" in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def scratch_user(ceph_cluster, tmp_path) -> Iterator[tuple[str, Path]]:
    """A cephx user made by admin with no caps at all, and its keyring (mode 0600)."""
    user = f"first-hour-{uuid.uuid4().hex[:6]}"
    keyring = tmp_path / f"ceph.client.{user}.keyring"
    base = ["ceph", "-c", ceph_cluster.conf_path]
    subprocess.run(base + ["auth", "get-or-create", f"client.{user}", "-o", str(keyring)],
                   check=True, capture_output=True, timeout=60)
    keyring.chmod(0o600)
    try:
        yield user, keyring
    finally:
        subprocess.run(base + ["auth", "del", f"client.{user}"], capture_output=True, timeout=60)


def test_missing_keyring_is_named_with_its_path(ceph_cluster, tmp_path) -> None:
    # The trap of finding 3: [rbd] keyring unset, and the user's keyring in
    # none of the places ceph.conf looks.
    conf = _write_conf(tmp_path / "rbd.conf", ceph_cluster.conf_path, "compute-nokeyring")
    line = _one_error_line(_rbd_driver(conf, "ls"))
    assert "no keyring for client.compute-nokeyring at " in line, line
    # Where it was looked for, as Ceph's own ceph-conf says.
    looked = subprocess.run(["ceph-conf", "-c", ceph_cluster.conf_path, "--name",
                             "client.compute-nokeyring", "--lookup", "keyring"],
                            capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    assert looked and f" at {looked}; next:" in line, (looked, line)
    assert "monitor" not in line and "within" not in line, line


def test_explicit_keyring_that_does_not_exist(ceph_cluster, tmp_path) -> None:
    path = tmp_path / "nowhere.keyring"
    conf = _write_conf(tmp_path / "rbd.conf", ceph_cluster.conf_path, ceph_cluster.user,
                       keyring=str(path))
    line = _one_error_line(_rbd_driver(conf, "ls"))
    assert f"no keyring for client.{ceph_cluster.user} at {path}" in line, line


def test_wrong_key_is_rejected_not_a_timeout(ceph_cluster, scratch_user, tmp_path) -> None:
    user, _ = scratch_user
    bad = tmp_path / "bad.keyring"
    other_key = subprocess.run(["ceph-authtool", "--gen-print-key"], capture_output=True,
                               text=True, check=True, timeout=30).stdout.strip()
    bad.write_text(f"[client.{user}]\n\tkey = {other_key}\n")
    bad.chmod(0o600)
    conf = _write_conf(tmp_path / "rbd.conf", ceph_cluster.conf_path, user, keyring=str(bad))
    line = _one_error_line(_rbd_driver(conf, "ls"))
    assert f"key rejected for client.{user}" in line and str(bad) in line, line
    assert "within" not in line, line
    # ...and the library raises the class a caller can catch.
    client = RadosClient(ceph_cluster.conf_path, user=user, keyring=str(bad))
    with pytest.raises(exception.KeyRejected):
        client.connect()
    assert not client.connected


def test_malformed_key_names_the_keyring(ceph_cluster, scratch_user, tmp_path) -> None:
    user, _ = scratch_user
    bad = tmp_path / "garbled.keyring"
    bad.write_text(f"[client.{user}]\n\tkey = AQBnotbase64!!\n")
    bad.chmod(0o600)
    conf = _write_conf(tmp_path / "rbd.conf", ceph_cluster.conf_path, user, keyring=str(bad))
    line = _one_error_line(_rbd_driver(conf, "ls"))
    assert f"no usable key for client.{user} in {bad}" in line, line


def test_user_without_caps_is_told_it_lacks_caps(ceph_cluster, scratch_user, tmp_path) -> None:
    user, keyring = scratch_user
    # Read-only on the monitors, nothing on the OSDs: it connects, and
    # listing the pool's images is refused by the OSDs.
    subprocess.run(["ceph", "-c", ceph_cluster.conf_path, "auth", "caps", f"client.{user}",
                    "mon", "allow r"], check=True, capture_output=True, timeout=60)
    conf = _write_conf(tmp_path / "rbd.conf", ceph_cluster.conf_path, user,
                       keyring=str(keyring))
    line = _one_error_line(_rbd_driver(conf, "ls"))
    assert f"client.{user} lacks cephx caps for " in line and "pool vms" in line, line


def test_no_monitor_answered_only_on_a_real_timeout(tmp_path) -> None:
    with socket.socket() as sock:  # a loopback port that nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ceph_conf = tmp_path / "ceph.conf"
    ceph_conf.write_text(f"[global]\nmon host = 127.0.0.1:{port}\n")
    keyring = tmp_path / "k.keyring"
    key = subprocess.run(["ceph-authtool", "--gen-print-key"], capture_output=True, text=True,
                         check=True, timeout=30).stdout.strip()
    keyring.write_text(f"[client.compute]\n\tkey = {key}\n")
    keyring.chmod(0o600)
    conf = _write_conf(tmp_path / "rbd.conf", str(ceph_conf), "compute", keyring=str(keyring),
                       connect_timeout=2)
    line = _one_error_line(_rbd_driver(conf, "ls"))
    assert line.startswith("rbd-driver: error: no monitor answered within 2 s"), line
    assert f"127.0.0.1:{port}" in line and str(ceph_conf) in line, line


def test_rotate_key_then_the_old_keyring_is_rejected(ceph_cluster, scratch_user, tmp_path) -> None:
    user, keyring = scratch_user
    subprocess.run(["ceph", "-c", ceph_cluster.conf_path, "auth", "caps", f"client.{user}",
                    "mon", "profile rbd", "osd", "profile rbd pool=vms"],
                   check=True, capture_output=True, timeout=60)
    old = tmp_path / "old.keyring"
    old.write_bytes(keyring.read_bytes())
    old.chmod(0o600)
    conf = _write_conf(tmp_path / "rbd.conf", ceph_cluster.conf_path, user, keyring=str(keyring))
    rotated = _rbd_driver(conf, "provision", "rotate-key", "--admin-keyring",
                          ceph_cluster.admin_keyring)
    assert rotated.returncode == 0, rotated.stderr
    assert "rbd-driver secret define" in rotated.stdout and "key =" not in rotated.stdout
    assert _rbd_driver(conf, "ls").returncode == 0  # the rewritten [rbd] keyring works
    stale = _write_conf(tmp_path / "stale.conf", ceph_cluster.conf_path, user, keyring=str(old))
    line = _one_error_line(_rbd_driver(stale, "ls"))
    assert f"key rejected for client.{user}" in line, line
