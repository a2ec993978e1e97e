# SPDX-License-Identifier: Apache-2.0
"""Encrypted disks on the fake librbd: the contract, key managers, clone or per-disk copy."""

from __future__ import annotations

import os
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from rbd_driver import encryption, exception
from rbd_driver.backends import encrypted
from rbd_driver.encryption import DiskEncryption
from rbd_driver.libvirt.passphrase import LibvirtKeyManager
from rbd_driver.storage import encryption as crypt
from rbd_driver.storage.location import parse_location
from rbd_driver.testing.fakes import crypto as fake_crypto
from tests.unit.backends.test_rbd import RAW, Env

MARKER = b"golden-marker-7f3a" * 8
SIZE = 64 << 20


class Keys:
    """A key_dir with passphrases, set as the [encryption] file key manager."""

    def __init__(self, env: Env, tmp_path: Any) -> None:
        self.dir = tmp_path / "keys"
        self.dir.mkdir()
        env.conf.set_override("key_manager", "file", group="encryption")
        env.conf.set_override("key_dir", str(self.dir), group="encryption")

    def add(self, passphrase: bytes, mode: int = 0o600) -> str:
        u = str(uuid.uuid4())
        path = self.dir / u
        path.write_bytes(passphrase + b"\n")
        os.chmod(path, mode)
        return u


@pytest.fixture
def keys(env: Env, tmp_path: Any) -> Keys:
    return Keys(env, tmp_path)


def _golden(env: Env, tmp_path: Any, secret: str | None, passphrase: bytes = b"",
            name: str = "golden") -> str:
    """An image-pool golden holding MARKER at 1 MiB; encrypted with ``secret`` if given."""
    src = tmp_path / f"{name}.raw"
    with open(src, "wb") as f:
        f.truncate(SIZE)
        f.seek(1 << 20)
        f.write(MARKER)
    client = env.driver.client
    if secret:
        crypt.import_encrypted(client, str(src), "images", name,
                               crypt.Key("luks2", secret, passphrase))
    else:
        env.driver.import_file(str(src), name, "images")
    env.driver.create_snap(name, "snap", protect=True, pool="images")
    return f"rbd://{env.fsid}/images/{name}/snap"


def _raw(env: Env, pool: str, name: str) -> bytes:
    return env.cluster.image(pool, name).read()


def _plain(env: Env, name: str, key: crypt.Key) -> bytes:
    with crypt.open_encrypted(env.driver.client, "vms", name, key, read_only=True) as image:
        return bytes(image.read(0, image.size()))


# -- the contract -------------------------------------------------------------------------

def test_disk_encryption_validates_and_is_canonical() -> None:
    u = uuid.uuid4()
    assert DiskEncryption(format="luks1", secret_uuid=str(u).upper()).secret_uuid == str(u)
    with pytest.raises(exception.InvalidArgument, match="not one of luks1, luks2"):
        DiskEncryption(format="aes", secret_uuid=str(u))
    with pytest.raises(exception.InvalidArgument, match="is not a UUID"):
        DiskEncryption(format="luks2", secret_uuid="../etc/passwd")


def test_a_key_never_shows_its_passphrase() -> None:
    key = crypt.Key("luks2", str(uuid.uuid4()), b"s3cret-pass")
    assert "s3cret" not in repr(key) and "s3cret" not in str(key)


def test_flat_backend_refuses_encryption(env: Env) -> None:
    from rbd_driver.backends.flat import Flat

    with pytest.raises(exception.NotSupported, match="cannot encrypt"):
        Flat("i", "disk", env.conf, encryption=DiskEncryption("luks2", str(uuid.uuid4())))


# -- key managers ---------------------------------------------------------------------------

def test_file_key_manager_is_loaded_by_stevedore_and_reads_0600_files(env: Env,
                                                                      keys: Keys) -> None:
    u = keys.add(b"pass one")
    manager = encryption.load_key_manager(env.conf)
    assert isinstance(manager, encryption.FileKeyManager)
    assert manager.get_passphrase(u) == b"pass one"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o400, 0o660])
def test_file_key_manager_refuses_other_modes(env: Env, keys: Keys, mode: int) -> None:
    u = keys.add(b"pass-mode", mode=mode)
    with pytest.raises(exception.KeyManagerError, match="only 0600") as info:
        encryption.load_key_manager(env.conf).get_passphrase(u)
    assert "pass-mode" not in str(info.value)


def test_file_key_manager_refuses_missing_symlinked_and_empty(env: Env, keys: Keys) -> None:
    manager = encryption.load_key_manager(env.conf)
    with pytest.raises(exception.KeyManagerError, match="no file"):
        manager.get_passphrase(str(uuid.uuid4()))
    target = keys.add(b"linked")
    link = str(uuid.uuid4())
    os.symlink(keys.dir / target, keys.dir / link)
    with pytest.raises(exception.KeyManagerError, match="cannot open"):
        manager.get_passphrase(link)
    empty = keys.add(b"")
    with pytest.raises(exception.KeyManagerError, match="is empty"):
        manager.get_passphrase(empty)


def test_unknown_key_manager_is_a_library_error(env: Env) -> None:
    env.conf.set_override("key_manager", "vault", group="encryption")
    with pytest.raises(exception.KeyManagerError, match="could not be loaded"):
        encryption.load_key_manager(env.conf)


class _LibvirtError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"libvirt error {code}")
        self.code = code

    def get_error_code(self) -> int:
        return self.code

    def get_error_message(self) -> str:
        return f"libvirt error {self.code}"


class _FakeLibvirt:
    libvirtError = _LibvirtError
    VIR_ERR_NO_SECRET = 66

    def __init__(self, secrets: dict[str, bytes]) -> None:
        self.secrets = secrets
        self.closed = 0

    def open(self, uri: str) -> Any:
        return self

    def close(self) -> None:
        self.closed += 1

    def secretLookupByUUIDString(self, u: str) -> Any:  # noqa: N802 - libvirt's name
        if u not in self.secrets:
            raise _LibvirtError(66)
        value = self.secrets[u]

        class Secret:
            def value(self, flags: int = 0) -> bytes:
                if value is None:
                    raise _LibvirtError(55)  # a private secret
                return value

        return Secret()


def test_libvirt_key_manager_reads_the_secret_value(env: Env) -> None:
    u, private = str(uuid.uuid4()), str(uuid.uuid4())
    fake = _FakeLibvirt({u: b"from libvirt", private: None})  # type: ignore[dict-item]
    manager = LibvirtKeyManager(env.conf, libvirt_module=fake)  # type: ignore[arg-type]
    assert manager.get_passphrase(u) == b"from libvirt"
    assert fake.closed == 1
    with pytest.raises(exception.KeyManagerError, match="no secret with this UUID"):
        manager.get_passphrase(str(uuid.uuid4()))
    with pytest.raises(exception.KeyManagerError, match="private='no'"):
        manager.get_passphrase(private)


def test_a_failing_plugin_error_is_wrapped_without_its_text(env: Env) -> None:
    class Leaky(encryption.KeyManager):
        name = "leaky"

        def get_passphrase(self, secret_uuid: str) -> bytes:
            raise RuntimeError("the passphrase is hunter2")

    with pytest.raises(exception.KeyManagerError) as info:
        encryption.key_for(Leaky(env.conf), DiskEncryption("luks2", str(uuid.uuid4())))
    assert "hunter2" not in str(info.value) and info.value.__cause__ is None


# -- the fake follows the real binding -------------------------------------------------------

def test_fake_encryption_constants_and_methods_follow_the_real_binding() -> None:
    real = pytest.importorskip("rbd")
    for name, value in fake_crypto.CONSTANTS.items():
        assert getattr(real, name) == value, name
    for method in ("encryption_format", "encryption_load", "metadata_get", "metadata_set",
                   "metadata_remove", "metadata_list"):
        assert callable(getattr(real.Image, method)), method


def test_fake_layer_shifts_by_the_header_and_stores_ciphertext(env: Env) -> None:
    rbd, cluster = env.rbd, env.cluster
    cluster.add_image("vms", "e", 64 << 20)
    with env.driver.client.ioctx("vms") as ioctx:
        with rbd.Image(ioctx, "e") as image:
            image.encryption_format(rbd.RBD_ENCRYPTION_FORMAT_LUKS2, "pw")
            assert image.size() == 48 << 20  # 16 MiB of LUKS2 header, as librbd
            image.write(b"PLAIN", 0)
            assert image.read(4096, 8) == bytes(8)  # never written: zeros
        assert cluster.image("vms", "e").read(0, 6) == b"LUKS\xba\xbe"
        assert b"PLAIN" not in cluster.image("vms", "e").read()
        with rbd.Image(ioctx, "e") as image:
            with pytest.raises(rbd.PermissionError):
                image.encryption_load(rbd.RBD_ENCRYPTION_FORMAT_LUKS2, "wrong")
        with rbd.Image(ioctx, "e") as image:
            with pytest.raises(rbd.InvalidArgument):
                image.encryption_load(rbd.RBD_ENCRYPTION_FORMAT_LUKS1, "pw")
        with rbd.Image(ioctx, "e") as image:
            image.encryption_load(rbd.RBD_ENCRYPTION_FORMAT_LUKS2, b"pw")
            assert image.read(0, 5) == b"PLAIN"


# -- direct_fetch: clone or per-disk copy ------------------------------------------------------

def test_encrypted_golden_gives_a_clone_that_opens_with_its_key(env: Env, keys: Keys,
                                                               tmp_path: Any) -> None:
    u = keys.add(b"golden pass")
    url = _golden(env, tmp_path, u, b"golden pass")
    disk = env.disk()
    disk = type(disk)(disk.instance_uuid, "disk", env.conf, driver=env.driver,
                      encryption=DiskEncryption("luks2", u))
    disk.direct_fetch("img", RAW, [{"url": url}])
    assert disk.encryption_method == encrypted.CLONE
    assert disk.parent_info() == ("images", "golden", "snap")
    assert crypt.recorded(env.driver.client, "vms", disk.rbd_name) == ("luks2", u)
    assert MARKER not in _raw(env, "vms", disk.rbd_name)
    assert _plain(env, disk.rbd_name, crypt.Key("luks2", u, b"golden pass"))[1 << 20:][
        :len(MARKER)] == MARKER
    assert disk.get_disk_size() == SIZE
    disk.resize_image(SIZE + (32 << 20))
    assert disk.get_disk_size() == SIZE + (32 << 20)
    env.driver.close()
    env.cluster.assert_no_open_handles()


def _encrypted_disk(env: Env, u: str) -> Any:
    from rbd_driver.backends.rbd import Rbd

    return Rbd(str(uuid.uuid4()), "disk", env.conf, driver=env.driver,
               encryption=DiskEncryption("luks2", u))


def test_another_key_gives_a_per_disk_copy(env: Env, keys: Keys, tmp_path: Any) -> None:
    golden_u, disk_u = keys.add(b"golden pass"), keys.add(b"disk pass")
    url = _golden(env, tmp_path, golden_u, b"golden pass")
    disk = _encrypted_disk(env, disk_u)
    disk.direct_fetch("img", RAW, [{"url": url}])
    assert disk.encryption_method == encrypted.COPY
    assert disk.parent_info() is None
    assert crypt.recorded(env.driver.client, "vms", disk.rbd_name) == ("luks2", disk_u)
    assert MARKER not in _raw(env, "vms", disk.rbd_name)
    plain = _plain(env, disk.rbd_name, crypt.Key("luks2", disk_u, b"disk pass"))
    assert plain[1 << 20:(1 << 20) + len(MARKER)] == MARKER and len(plain) == SIZE
    with pytest.raises(exception.EncryptionKeyRejected, match="passphrase is wrong"):
        _plain(env, disk.rbd_name, crypt.Key("luks2", golden_u, b"golden pass"))


def test_unencrypted_golden_asked_encrypted_is_copied(env: Env, keys: Keys,
                                                      tmp_path: Any) -> None:
    u = keys.add(b"disk pass")
    url = _golden(env, tmp_path, None)
    disk = _encrypted_disk(env, u)
    disk.direct_fetch("img", RAW, [{"url": url}])
    assert disk.encryption_method == encrypted.COPY
    assert _raw(env, "vms", disk.rbd_name).startswith(b"LUKS\xba\xbe")
    assert MARKER not in _raw(env, "vms", disk.rbd_name)


def test_copy_refused_when_allow_copy_is_false(env: Env, keys: Keys, tmp_path: Any) -> None:
    env.conf.set_override("allow_copy", False, group="encryption")
    golden_u, disk_u = keys.add(b"golden pass"), keys.add(b"disk pass")
    url = _golden(env, tmp_path, golden_u, b"golden pass")
    with pytest.raises(exception.ImageUnacceptable, match="allow_copy is false") as info:
        _encrypted_disk(env, disk_u).direct_fetch("img", RAW, [{"url": url}])
    assert f"encrypted with secret {golden_u}" in str(info.value)
    assert env.vms() == []


def test_encrypted_golden_asked_unencrypted_is_refused(env: Env, keys: Keys,
                                                       tmp_path: Any) -> None:
    u = keys.add(b"golden pass")
    url = _golden(env, tmp_path, u, b"golden pass")
    with pytest.raises(exception.ImageUnacceptable, match="never made a plaintext disk"):
        env.disk().direct_fetch("img", RAW, [{"url": url}])
    assert env.vms() == []


def test_wrong_passphrase_for_the_golden_leaves_nothing_and_no_passphrase(
        env: Env, keys: Keys, tmp_path: Any) -> None:
    u = keys.add(b"not the golden's")
    url = _golden(env, tmp_path, u, b"the real one")
    with pytest.raises(exception.EncryptionKeyRejected) as info:
        _encrypted_disk(env, u).direct_fetch("img", RAW, [{"url": url}])
    assert "passphrase is wrong" in str(info.value) and u in str(info.value)
    assert "not the golden's" not in str(info.value) and "the real one" not in str(info.value)
    assert env.vms() == []
    env.driver.close()
    env.cluster.assert_no_open_handles()


def test_missing_secret_is_a_key_manager_error_and_leaves_nothing(env: Env, keys: Keys,
                                                                  tmp_path: Any) -> None:
    url = _golden(env, tmp_path, None)
    with pytest.raises(exception.KeyManagerError, match="no file"):
        _encrypted_disk(env, str(uuid.uuid4())).direct_fetch("img", RAW, [{"url": url}])
    assert env.vms() == []


# -- the other paths ----------------------------------------------------------------------

def test_libvirt_info_names_the_passphrase_secret(env: Env, keys: Keys, tmp_path: Any) -> None:
    u = keys.add(b"pass")
    disk = _encrypted_disk(env, u)
    xml = disk.libvirt_info({"dev": "vda", "bus": "virtio", "type": "disk"})
    crypt_el = ET.fromstring(xml).find("source/encryption")
    assert crypt_el is not None and crypt_el.attrib == {"engine": "librbd", "format": "luks2"}
    assert crypt_el.find("secret").attrib == {"type": "passphrase", "uuid": u}  # type: ignore
    assert "pass" not in xml.replace("passphrase", "")


def test_import_file_extract_and_create_image_stay_encrypted(env: Env, keys: Keys,
                                                             tmp_path: Any) -> None:
    u = keys.add(b"disk pass")
    src = tmp_path / "config.iso"
    src.write_bytes(bytes(4096) + MARKER + bytes(1 << 20))
    disk = _encrypted_disk(env, u)
    disk.import_file(str(src))
    assert MARKER not in _raw(env, "vms", disk.rbd_name)
    assert disk.get_disk_size() == src.stat().st_size
    out = tmp_path / "out.raw"
    disk.snapshot_extract(str(out), "raw")
    assert out.read_bytes() == src.read_bytes() and (out.stat().st_mode & 0o777) == 0o600
    with pytest.raises(exception.UnsupportedFormat):
        disk.snapshot_extract(str(tmp_path / "out.qcow2"), "qcow2")

    other = _encrypted_disk(env, u)
    other.create_image(lambda target, **kw: None, str(src), 8 << 20)
    assert MARKER not in _raw(env, "vms", other.rbd_name)
    assert other.get_disk_size() == 8 << 20


def test_golden_register_encrypted_records_the_secret_and_clones(env: Env, keys: Keys,
                                                                 tmp_path: Any) -> None:
    from rbd_driver.ops.golden import GoldenImages

    u = keys.add(b"tenant pass")
    src = tmp_path / "golden.raw"
    src.write_bytes(bytes(1 << 20) + MARKER + bytes(1 << 20))
    with GoldenImages.from_conf(env.conf, env.driver) as images:
        golden = images.register("tenant-golden", str(src),
                                 encryption=DiskEncryption("luks2", u))
    raw = _raw(env, "images", "tenant-golden")
    assert raw.startswith(b"LUKS\xba\xbe") and MARKER not in raw and b"tenant pass" not in raw
    assert crypt.recorded(env.driver.client, "images", "tenant-golden") == ("luks2", u)
    disk = _encrypted_disk(env, u)
    disk.direct_fetch("img", RAW, [{"url": golden.location}])
    assert disk.encryption_method == encrypted.CLONE


def test_cli_golden_register_takes_encrypt() -> None:
    import argparse

    from rbd_driver.cli import golden as cli_golden

    parser = argparse.ArgumentParser()
    cli_golden.add_parsers(parser.add_subparsers(dest="command"))
    u = str(uuid.uuid4())
    args = parser.parse_args(["golden", "register", "--encrypt", u, "g", "/tmp/f"])
    assert (args.encrypt, args.name, args.file) == (u, "g", "/tmp/f")


def test_a_clone_cannot_be_formatted_and_layered_encryption_is_not_claimed(
        env: Env, keys: Keys, tmp_path: Any) -> None:
    url = _golden(env, tmp_path, None)
    env.driver.clone(parse_location(url), "c")
    key = crypt.Key("luks2", str(uuid.uuid4()), b"pw-for-the-clone")
    with env.driver.client.open_image("vms", "c") as image:
        with pytest.raises(exception.NotSupported) as info:
            crypt.format_image(env.driver.client, image, key, pool="vms", name="c",
                               size=SIZE)
    assert "pw-for-the-clone" not in str(info.value)
    assert crypt.layered_supported(env.driver.client) is False  # pacific: no encryption_load2


def test_guest_size_resize_and_record_on_a_luks1_disk(env: Env, keys: Keys,
                                                     tmp_path: Any) -> None:
    u = keys.add(b"luks one")
    src = tmp_path / "small.raw"
    src.write_bytes(MARKER + bytes((4 << 20) - len(MARKER)))
    from rbd_driver.backends.rbd import Rbd

    disk = Rbd(str(uuid.uuid4()), "disk", env.conf, driver=env.driver,
               encryption=DiskEncryption("luks1", u))
    disk.import_file(str(src))
    key = crypt.Key("luks1", u, b"luks one")
    assert crypt.guest_size(env.driver.client, "vms", disk.rbd_name, key) == (4 << 20, 6 << 20)
    disk.resize_image(8 << 20)
    assert crypt.guest_size(env.driver.client, "vms", disk.rbd_name, key) == (8 << 20, 10 << 20)
    with pytest.raises(exception.DiskSizeTooSmall):
        disk.resize_image(1 << 20)
    assert crypt.recorded(env.driver.client, "vms", disk.rbd_name) == ("luks1", u)
    xml = disk.libvirt_info()
    assert "format=\"luks\"" in xml or "format='luks'" in xml  # libvirt's name for LUKS1
    with pytest.raises(exception.EncryptionKeyRejected, match="not a luks2 image"):
        crypt.guest_size(env.driver.client, "vms", disk.rbd_name,
                         crypt.Key("luks2", u, b"luks one"))


def test_the_golden_key_is_checked_once_and_a_changed_passphrase_is_checked_again(
        env: Env, keys: Keys, tmp_path: Any) -> None:
    u = keys.add(b"golden pass")
    url = _golden(env, tmp_path, u, b"golden pass")
    for _ in range(3):
        disk = _encrypted_disk(env, u)
        disk.direct_fetch("img", RAW, [{"url": url}])
        assert disk.encryption_method == encrypted.CLONE
    assert env.cluster.calls.count("Image.encryption_load") == 1  # key derivation once
    (keys.dir / u).write_bytes(b"changed")
    with pytest.raises(exception.EncryptionKeyRejected):
        _encrypted_disk(env, u).direct_fetch("img", RAW, [{"url": url}])
    assert env.cluster.calls.count("Image.encryption_load") == 2


def test_encrypted_create_image_skips_the_plain_cache_and_kernelspace_is_refused(
        env: Env, keys: Keys, tmp_path: Any) -> None:
    u = keys.add(b"disk pass")
    env.cluster.add_pool("rbd")
    env.conf.set_override("image_cache_pool", "rbd", group="rbd")
    src = tmp_path / "base.raw"
    src.write_bytes(MARKER + bytes(1 << 20))
    disk = _encrypted_disk(env, u)
    disk.create_image(lambda target, **kw: None, str(src), None, image_id="img-1")
    assert disk.parent_info() is None  # not a clone of a plain cached golden
    assert MARKER not in _raw(env, "vms", disk.rbd_name)
    env.conf.set_override("access", "kernelspace", group="rbd")
    with pytest.raises(exception.NotSupported, match="kernelspace"):
        disk.libvirt_info()
