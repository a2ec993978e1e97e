# SPDX-License-Identifier: Apache-2.0
"""Real guests boot from encrypted disks with the library's XML (libvirt key manager).

The passphrases live only in the private libvirtd, as secrets the library
defined (``HypervisorScope.define_passphrase_secret``); the ``libvirt`` key
manager reads them there for the library's own work (registering the
encrypted golden, the per-disk copy), and QEMU gets them from libvirt through
``<encryption engine='librbd'>``. The guest prints the first sector of its
disk: the golden's marker, which Ceph itself never holds in plaintext.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rbd_driver import exception, imagebackend
from rbd_driver.backends import encrypted
from rbd_driver.backends.rbd import Rbd
from rbd_driver.encryption import DiskEncryption
from rbd_driver.ops.golden import GoldenImages
from rbd_driver.testing.guest import GuestImage
from rbd_driver.testing.hypervisor import HypervisorScope
from tests.functional.test_encryption import SECTOR, SIZE, _assert_ciphertext, _export

pytestmark = pytest.mark.functional

RAW = {"disk_format": "raw"}


@pytest.fixture
def lv_backend(libvirt_rbd_conf: Any, hypervisor: HypervisorScope
               ) -> Iterator[imagebackend.Backend]:
    libvirt_rbd_conf.set_override("key_manager", "libvirt", group="encryption")
    libvirt_rbd_conf.set_override("libvirt_uri", hypervisor.uri, group="rbd")
    with imagebackend.Backend(libvirt_rbd_conf) as backend:
        yield backend


@pytest.fixture
def secrets(hypervisor: HypervisorScope, secret_scanner: Any) -> Iterator[Any]:
    """``define()`` makes a passphrase secret in the private libvirtd; returns its UUID."""
    watched: list[str] = []

    def define(passphrase: str | None = None, secret_uuid: str | None = None) -> str:
        value = passphrase or f"lv-{uuid.uuid4().hex}"
        secret_scanner.watch_passphrase(value, "libvirt")
        watched.append(value)
        return hypervisor.define_passphrase_secret(secret_uuid or str(uuid.uuid4()),
                                                   value.encode())

    yield define
    for value in watched:
        secret_scanner.unwatch(value)


def _golden(backend: imagebackend.Backend, tmp_path: Path, secret: str, marker: str) -> Any:
    src = tmp_path / "golden.raw"
    with open(src, "wb") as f:
        f.write(marker.encode().ljust(SECTOR, b"\0"))
        f.truncate(SIZE)
    with GoldenImages.from_conf(backend.conf, backend.driver("rbd")) as images:
        return images.register(f"lv-golden-{uuid.uuid4().hex[:8]}", str(src),
                               encryption=DiskEncryption("luks2", secret))


def test_guests_boot_from_an_encrypted_clone_and_a_per_disk_copy(
        lv_backend, secrets, hypervisor, guest_image: GuestImage, ceph_cluster,
        tmp_path) -> None:
    marker = f"LVGOLD-{uuid.uuid4().hex[:8]}"
    golden_secret, own_secret = secrets(), secrets()
    golden = _golden(lv_backend, tmp_path, golden_secret, marker)
    instances: list[str] = []
    try:
        disks = []
        for secret, method in ((golden_secret, encrypted.CLONE), (own_secret, encrypted.COPY)):
            inst = str(uuid.uuid4())
            instances.append(inst)
            disk = lv_backend.by_name(inst, "disk", image_type="rbd",
                                      encryption=DiskEncryption("luks2", secret))
            disk.direct_fetch("golden", RAW, [{"url": golden.location}])
            assert disk.encryption_method == method
            _assert_ciphertext(_export(ceph_cluster, f"vms/{disk.rbd_name}", tmp_path), marker)
            disks.append(disk)
        for disk in disks:
            xml = disk.libvirt_info()
            assert "engine=\"librbd\"" in xml or "engine='librbd'" in xml
            vm = hypervisor.boot(guest_image, [xml], ["report"])
            seen = vm.wait_for(r"^disk vda sectors=(\d+) data=(.*)$")
            assert (seen[2], int(seen[1]) * SECTOR) == (marker, SIZE), disk.encryption_method
            vm.wait_shutoff()

        # A wrong passphrase behind the same secret UUID: libvirt cannot start the guest.
        secrets("a-wrong-passphrase-0123456789", secret_uuid=own_secret)
        libvirt = pytest.importorskip("libvirt")
        with pytest.raises(libvirt.libvirtError) as info:
            hypervisor.boot(guest_image, [disks[1].libvirt_info()], ["report"])
        assert "encryption" in str(info.value).lower() or "permitted" in str(info.value)
        # ... and the library says so too, naming the secret, never the passphrase.
        with pytest.raises(exception.EncryptionKeyRejected, match="passphrase is wrong") as err:
            disks[1].get_disk_size()
        assert "a-wrong-passphrase" not in str(err.value)
    finally:
        hypervisor.destroy_guests()
        for inst in reversed(instances):
            Rbd.cleanup_instance(lv_backend.conf, inst, driver=lv_backend.driver("rbd"))
        lv_backend.driver("rbd").remove_image(golden.name, "images")
    # Cleanup removed the disks, never the golden's secret.
    assert hypervisor.conn.secretLookupByUUIDString(golden_secret).value(0)


def test_provision_defines_the_passphrase_secret_and_golden_register_encrypts(
        hypervisor, ceph_cluster, tmp_path, secret_scanner, rbd_conf) -> None:
    import json
    import subprocess
    import sys

    conf = tmp_path / "rbd-driver.conf"
    conf.write_text(f"[rbd]\nceph_conf = {ceph_cluster.conf_path}\nuser = {ceph_cluster.user}\n"
                    f"keyring = {ceph_cluster.user_keyring}\nlibvirt_uri = {hypervisor.uri}\n"
                    "[encryption]\nkey_manager = libvirt\n")
    secret_uuid, path = str(uuid.uuid4()), tmp_path / "pass"

    def cli(*args: str) -> Any:
        proc = subprocess.run([sys.executable, "-m", "rbd_driver.cli", "--config-file",
                               str(conf), "--json", *args],
                              capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    try:
        out = cli("provision", "passphrase-secret", secret_uuid, "--generate", str(path))
        value = path.read_bytes()
        secret_scanner.watch_passphrase(value, "generated")
        assert out == {"secret_uuid": secret_uuid, "uri": hypervisor.uri, "file": str(path)}
        assert (path.stat().st_mode & 0o777) == 0o600
        assert bytes(hypervisor.conn.secretLookupByUUIDString(secret_uuid).value(0)) == value

        marker = f"CLIGOLD-{uuid.uuid4().hex[:8]}"
        src = tmp_path / "golden.raw"
        src.write_bytes(marker.encode().ljust(SECTOR, b"\0") + bytes(SIZE - SECTOR))
        name = f"cli-golden-{uuid.uuid4().hex[:6]}"
        out = cli("golden", "register", "--encrypt", secret_uuid, name, str(src))
        assert out["encryption"] == {"format": "luks2", "secret_uuid": secret_uuid}
        try:
            listed = {g["name"]: g for g in cli("golden", "ls")}
            assert listed[name]["encryption"] == out["encryption"]  # read back from Ceph
            _assert_ciphertext(_export(ceph_cluster, f"images/{name}@snap", tmp_path), marker)
        finally:
            cli("golden", "rm", name)
    finally:
        secret_scanner.unwatch(path.read_text()) if path.exists() else None
        from rbd_driver.libvirt.passphrase import remove_passphrase_secret

        remove_passphrase_secret(secret_uuid, conn=hypervisor.conn)
