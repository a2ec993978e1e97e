# SPDX-License-Identifier: Apache-2.0
"""Encrypted disks (LUKS by librbd) against a real cluster, with outside oracles.

The library runs as the non-admin user. The oracles are the admin ``rbd export``
(the bytes Ceph holds: never the plaintext marker, a LUKS header where there
should be one), QEMU's own rbd driver (``qemu-img convert`` with
``encrypt.format`` and the passphrase in a 0600 file: the plaintext through the
key), and a real guest under libvirt that reads the golden's marker through
the library's ``<encryption engine='librbd'>`` XML. Every passphrase is
watched by the secret scanner (process lists, environments, logs, reports).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from oslo_config import cfg

from rbd_driver import exception, imagebackend
from rbd_driver.backends import encrypted
from rbd_driver.backends.rbd import Rbd
from rbd_driver.encryption import DiskEncryption
from rbd_driver.ops.backup import BackupManager
from rbd_driver.ops.golden import GoldenImages
from rbd_driver.storage import encryption as crypt
from rbd_driver.testing.local_cluster import ClusterState

pytestmark = pytest.mark.functional

SIZE = 64 << 20
SECTOR = 512
LUKS = b"LUKS\xba\xbe"
RAW = {"disk_format": "raw"}


class Keys:
    """Passphrases of the ``file`` key manager (0600 files), watched by the scanner."""

    def __init__(self, directory: Path, scanner: Any) -> None:
        self.dir, self.scanner = directory, scanner
        self.passphrases: dict[str, bytes] = {}

    def add(self, passphrase: bytes | None = None) -> str:
        u = str(uuid.uuid4())
        value = passphrase or f"pp-{uuid.uuid4().hex}".encode()
        path = self.dir / u
        path.write_bytes(value)
        os.chmod(path, 0o600)
        self.passphrases[u] = value
        self.scanner.watch_passphrase(value, u[:8])
        return u

    def path(self, u: str) -> str:
        return str(self.dir / u)


@pytest.fixture
def keys(tmp_path: Path, secret_scanner: Any, rbd_conf: cfg.ConfigOpts) -> Iterator[Keys]:
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    rbd_conf.set_override("key_manager", "file", group="encryption")
    rbd_conf.set_override("key_dir", str(directory), group="encryption")
    found = Keys(directory, secret_scanner)
    yield found
    for value in found.passphrases.values():
        secret_scanner.unwatch(value.decode())


@pytest.fixture
def enc_backend(rbd_conf: cfg.ConfigOpts, keys: Keys) -> Iterator[imagebackend.Backend]:
    with imagebackend.Backend(rbd_conf) as backend:
        yield backend


@pytest.fixture
def made(enc_backend: imagebackend.Backend) -> Iterator[list[tuple[str, str]]]:
    """(pool, image) to remove after the test, last first (clones before parents)."""
    images: list[tuple[str, str]] = []
    yield images
    driver = enc_backend.driver("rbd")
    for pool, name in reversed(images):
        driver.remove_image(name, pool)


def _marker() -> str:
    return f"ENCMARK-{uuid.uuid4().hex[:12]}"


def _golden(enc_backend: imagebackend.Backend, made: list[tuple[str, str]], tmp_path: Path,
            secret: str | None, marker: str) -> str:
    """Register a golden holding ``marker`` in its first sector and at 5 MiB; return its URL."""
    src = tmp_path / f"golden-{uuid.uuid4().hex[:6]}.raw"
    with open(src, "wb") as f:
        f.write(marker.encode().ljust(SECTOR, b"\0"))
        f.seek(5 << 20)
        f.write(marker.encode())
        f.truncate(SIZE)
    name = f"enc-golden-{uuid.uuid4().hex[:8]}"
    with GoldenImages.from_conf(enc_backend.conf, enc_backend.driver("rbd")) as images:
        golden = images.register(name, str(src), encryption=DiskEncryption(
            "luks2", secret) if secret else None)
    made.append(("images", name))
    return golden.location


def _export(ceph_cluster: ClusterState, spec: str, tmp_path: Path) -> bytes:
    """The bytes Ceph holds, by admin ``rbd export``."""
    target = tmp_path / f"export-{uuid.uuid4().hex}"
    subprocess.run(["rbd", "-c", ceph_cluster.conf_path, "export", "--no-progress", spec,
                    str(target)], check=True, capture_output=True, timeout=300)
    try:
        return target.read_bytes()
    finally:
        target.unlink()


def _qemu_read(ceph_cluster: ClusterState, pool: str, image: str, key_file: str,
               tmp_path: Path, fmt: str = "luks2", snapshot: str | None = None
               ) -> subprocess.CompletedProcess[bytes] | bytes:
    """Plaintext through QEMU's rbd driver with the passphrase in ``key_file``; the
    CompletedProcess when QEMU refuses."""
    out = tmp_path / f"plain-{uuid.uuid4().hex}"
    opts = (f"driver=rbd,pool={pool},image={image},conf={ceph_cluster.conf_path},"
            f"encrypt.format={fmt},encrypt.key-secret=sec0"
            + (f",snapshot={snapshot}" if snapshot else ""))
    proc = subprocess.run(["qemu-img", "convert", "--object", f"secret,id=sec0,file={key_file}",
                           "--image-opts", opts, "-O", "raw", str(out)],
                          capture_output=True, timeout=300, check=False)
    if proc.returncode != 0:
        return proc
    try:
        return out.read_bytes()
    finally:
        out.unlink()


def _assert_ciphertext(data: bytes, marker: str) -> None:
    assert data.startswith(LUKS), data[:16]
    assert marker.encode() not in data


def _disk(backend: imagebackend.Backend, made: list[tuple[str, str]], secret: str,
          fmt: str = "luks2") -> Rbd:
    disk = backend.by_name(str(uuid.uuid4()), "disk", image_type="rbd",
                           encryption=DiskEncryption(fmt, secret))
    assert isinstance(disk, Rbd)
    made.append((disk.pool, disk.rbd_name))
    return disk


def test_encrypted_golden_gives_an_encrypted_clone_read_by_qemu_with_its_key(
        enc_backend, keys, made, ceph_cluster, tmp_path) -> None:
    marker = _marker()
    secret = keys.add()
    url = _golden(enc_backend, made, tmp_path, secret, marker)
    golden_name = url.split("/")[-2]
    _assert_ciphertext(_export(ceph_cluster, f"images/{golden_name}@snap", tmp_path), marker)

    disk = _disk(enc_backend, made, secret)
    disk.direct_fetch("img", RAW, [{"url": url}])
    assert disk.encryption_method == encrypted.CLONE
    assert disk.parent_info() == ("images", golden_name, "snap")
    _assert_ciphertext(_export(ceph_cluster, f"vms/{disk.rbd_name}", tmp_path), marker)
    plain = _qemu_read(ceph_cluster, "vms", disk.rbd_name, keys.path(secret), tmp_path)
    assert isinstance(plain, bytes) and len(plain) == SIZE
    assert plain[:len(marker)] == marker.encode()
    assert plain[5 << 20:(5 << 20) + len(marker)] == marker.encode()

    # The guest sees the size asked, the header left out.
    disk.resize_image(SIZE + (16 << 20))
    assert disk.get_disk_size() == SIZE + (16 << 20)
    info = subprocess.run(["rbd", "-c", ceph_cluster.conf_path, "info", "--format", "json",
                           f"vms/{disk.rbd_name}"], capture_output=True, text=True, check=True)
    assert f'"size":{SIZE + (32 << 20)}' in info.stdout.replace(" ", "")


def test_another_key_gives_a_per_disk_copy_that_only_its_key_opens(
        enc_backend, keys, made, ceph_cluster, tmp_path) -> None:
    marker = _marker()
    golden_secret, disk_secret = keys.add(), keys.add()
    url = _golden(enc_backend, made, tmp_path, golden_secret, marker)
    disk = _disk(enc_backend, made, disk_secret)
    disk.direct_fetch("img", RAW, [{"url": url}])
    assert disk.encryption_method == encrypted.COPY
    assert disk.parent_info() is None
    _assert_ciphertext(_export(ceph_cluster, f"vms/{disk.rbd_name}", tmp_path), marker)
    plain = _qemu_read(ceph_cluster, "vms", disk.rbd_name, keys.path(disk_secret), tmp_path)
    assert isinstance(plain, bytes) and plain[:len(marker)] == marker.encode()
    # Every byte the guest sees is the golden's (the copy reads only its extents).
    golden = _qemu_read(ceph_cluster, "images", url.split("/")[-2], keys.path(golden_secret),
                        tmp_path, snapshot="snap")
    assert isinstance(golden, bytes) and plain == golden
    refused = _qemu_read(ceph_cluster, "vms", disk.rbd_name, keys.path(golden_secret),
                         tmp_path)
    assert isinstance(refused, subprocess.CompletedProcess)
    assert b"Operation not permitted" in refused.stderr


def test_unencrypted_golden_asked_encrypted_is_copied_or_refused(
        enc_backend, keys, made, ceph_cluster, tmp_path, ceph_admin) -> None:
    marker = _marker()
    url = _golden(enc_backend, made, tmp_path, None, marker)
    secret = keys.add()
    disk = _disk(enc_backend, made, secret)
    disk.direct_fetch("img", RAW, [{"url": url}])
    assert disk.encryption_method == encrypted.COPY
    _assert_ciphertext(_export(ceph_cluster, f"vms/{disk.rbd_name}", tmp_path), marker)
    plain = _qemu_read(ceph_cluster, "vms", disk.rbd_name, keys.path(secret), tmp_path)
    assert isinstance(plain, bytes) and plain[:len(marker)] == marker.encode()

    enc_backend.conf.set_override("allow_copy", False, group="encryption")
    refused = _disk(enc_backend, made, secret)
    with pytest.raises(exception.ImageUnacceptable, match="allow_copy is false"):
        refused.direct_fetch("img", RAW, [{"url": url}])
    assert refused.rbd_name not in (ceph_admin("rbd", "ls", "vms") or [])


def test_encrypted_golden_is_never_a_plaintext_disk_and_a_wrong_key_leaves_nothing(
        enc_backend, keys, made, tmp_path, ceph_admin) -> None:
    marker = _marker()
    secret = keys.add()
    url = _golden(enc_backend, made, tmp_path, secret, marker)
    plain_disk = enc_backend.by_name(str(uuid.uuid4()), "disk", image_type="rbd")
    with pytest.raises(exception.ImageUnacceptable, match="never made a plaintext disk"):
        plain_disk.direct_fetch("img", RAW, [{"url": url}])

    # The same secret UUID, but the key manager now gives another passphrase.
    (keys.dir / secret).write_bytes(b"not-the-golden-passphrase")
    disk = _disk(enc_backend, made, secret)
    with pytest.raises(exception.EncryptionKeyRejected) as info:
        disk.direct_fetch("img", RAW, [{"url": url}])
    assert "passphrase is wrong" in str(info.value) and secret in str(info.value)
    for value in (*keys.passphrases.values(), b"not-the-golden-passphrase"):
        assert value.decode() not in str(info.value)
    assert not [n for n in ceph_admin("rbd", "ls", "vms") or []
                if n.startswith(disk.instance_uuid)]


def test_import_file_extract_and_snapshot_stay_encrypted(
        enc_backend, keys, made, ceph_cluster, tmp_path) -> None:
    marker = _marker()
    secret = keys.add()
    src = tmp_path / "config.iso"
    src.write_bytes(marker.encode().ljust(SECTOR, b"\0") + bytes(4 << 20))
    disk = _disk(enc_backend, made, secret)
    disk.import_file(str(src))
    _assert_ciphertext(_export(ceph_cluster, f"vms/{disk.rbd_name}", tmp_path), marker)
    assert disk.get_disk_size() == src.stat().st_size

    out = tmp_path / "extracted.raw"
    disk.snapshot_extract(str(out), "raw")
    assert out.read_bytes() == src.read_bytes()
    assert (out.stat().st_mode & 0o777) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("extracted")) == \
        ["extracted.raw"]  # plaintext only in the file named


def test_direct_snapshot_stays_encrypted_with_the_same_key(
        enc_backend, keys, made, ceph_cluster, tmp_path) -> None:
    marker = _marker()
    secret = keys.add()
    url = _golden(enc_backend, made, tmp_path, secret, marker)
    disk = _disk(enc_backend, made, secret)
    disk.direct_fetch("img", RAW, [{"url": url}])
    written = _marker()
    with crypt.open_encrypted(disk.driver.client, "vms", disk.rbd_name,
                              crypt.Key("luks2", secret, keys.passphrases[secret])) as image:
        image.write(written.encode(), 8 << 20)
    image_id = f"encsnap-{uuid.uuid4().hex[:8]}"
    made.append(("images", image_id))
    location = disk.direct_snapshot("isnap", "raw", image_id)
    data = _export(ceph_cluster, f"images/{image_id}@snap", tmp_path)
    _assert_ciphertext(data, marker)
    assert written.encode() not in data
    assert crypt.recorded(disk.driver.client, "images", image_id) == ("luks2", secret)
    plain = _qemu_read(ceph_cluster, "images", image_id, keys.path(secret), tmp_path,
                       snapshot="snap")
    assert isinstance(plain, bytes)
    assert plain[8 << 20:(8 << 20) + len(written)] == written.encode()
    # ... and it launches as a clone with the same key.
    again = _disk(enc_backend, made, secret)
    again.direct_fetch(image_id, RAW, [{"url": location}])
    assert again.encryption_method == encrypted.CLONE
    _assert_ciphertext(_export(ceph_cluster, f"vms/{again.rbd_name}", tmp_path), written)


def test_backups_stay_ciphertext_and_restore_with_the_key(
        enc_backend, keys, made, ceph_cluster, tmp_path, rbd_conf) -> None:
    marker = _marker()
    secret = keys.add()
    key = crypt.Key("luks2", secret, keys.passphrases[secret])
    url = _golden(enc_backend, made, tmp_path, secret, marker)
    disk = _disk(enc_backend, made, secret)
    disk.direct_fetch("img", RAW, [{"url": url}])
    rbd_conf.set_override("backup_dir", str(tmp_path / "backups"), group="rbd")
    later = _marker()
    manager = BackupManager.from_conf(rbd_conf, enc_backend.driver("rbd"))
    full = manager.full_backup(disk.rbd_name)
    with crypt.open_encrypted(disk.driver.client, "vms", disk.rbd_name, key) as image:
        image.write(later.encode(), 12 << 20)
    incremental = manager.incremental_backup(disk.rbd_name)
    for backup in (full, incremental):
        data = Path(backup.data_path).read_bytes()
        assert marker.encode() not in data and later.encode() not in data, backup.kind
    assert Path(full.data_path).read_bytes().startswith(LUKS)
    restored = f"{disk.rbd_name}-restored"
    manager.restore(incremental, restored)
    made.append(("vms", restored))
    _assert_ciphertext(_export(ceph_cluster, f"vms/{restored}", tmp_path), marker)
    plain = _qemu_read(ceph_cluster, "vms", restored, keys.path(secret), tmp_path)
    assert isinstance(plain, bytes)
    assert plain[:len(marker)] == marker.encode()
    assert plain[12 << 20:(12 << 20) + len(later)] == later.encode()
