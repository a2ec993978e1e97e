# SPDX-License-Identifier: Apache-2.0
"""Policy of encrypted disks: which of the two ways a disk is made, and with which key.

On Ceph 16 (librbd 16.2) a clone cannot be given a key of its own, so an
encrypted disk is made one of two ways, and :attr:`Rbd.encryption_method
<rbd_driver.backends.rbd.Rbd.encryption_method>` says which (also logged):

* ``clone``: a copy-on-write clone of an *encrypted golden* whose recorded
  secret is the one asked for; it opens with the golden's key (fast; one key
  per golden, for example per tenant);
* ``copy``: a *per-disk key*: a new flat image formatted with the asked key
  and the golden's data copied in through the encryption layer (one full
  copy), when the golden has another key or none. Refused, with the reason,
  when ``[encryption] allow_copy`` is false.

An encrypted golden asked for *without* encryption is refused (its bytes are
LUKS, never turned into a plaintext disk), by the format check of
:meth:`Rbd.check_location
<rbd_driver.backends.rbd.Rbd.check_location>`. The mechanics are in
:mod:`rbd_driver.storage.encryption`; the passphrase comes from the key
manager (:mod:`rbd_driver.encryption`) and goes only to librbd.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, Protocol

from rbd_driver import encryption as encryption_api
from rbd_driver import exception
from rbd_driver.storage import encryption as crypt
from rbd_driver.storage.location import RbdLocation
from rbd_driver.storage.rbd_utils import RBDDriver

__all__ = ["CLONE", "COPY", "copy_in", "direct_fetch", "disk_key", "extract", "guest_size",
           "record_disk", "resize"]

LOG = logging.getLogger(__name__)

CLONE = "clone"
COPY = "copy"

# Golden snapshots whose key was checked, keyed with a salted digest of the
# passphrase (never the passphrase): (fsid, identity, secret, format, digest).
CHECKED_CACHE_SIZE = 4096
_checked: dict[tuple[Any, ...], None] = {}
_checked_lock = threading.Lock()
_SALT = os.urandom(16)


class Disk(Protocol):
    """What this module uses of an encrypted :class:`~rbd_driver.backends.rbd.Rbd` disk."""

    conf: Any
    driver: RBDDriver
    pool: str
    rbd_name: str
    encryption: encryption_api.DiskEncryption | None
    encryption_method: str | None


class CloningDisk(Disk, Protocol):
    """What :func:`direct_fetch` also uses: the location checks of ``Rbd``."""

    def _check_location(self, url: Any, image_meta: dict[str, Any], max_size: int = 0,
                        accept: tuple[str, ...] = ...) -> tuple[RbdLocation, Any]: ...


def key_manager(disk: Disk) -> encryption_api.KeyManager:
    """The key manager of ``[encryption] key_manager``, loaded once per disk object.

    :raises KeyManagerError: it could not be loaded.
    """
    manager = getattr(disk, "_key_manager", None)
    if manager is None:
        manager = encryption_api.load_key_manager(disk.conf)
        disk._key_manager = manager  # type: ignore[attr-defined]
    return manager


def disk_key(disk: Disk) -> crypt.Key:
    """The key of the disk's own secret, from the key manager.

    :raises KeyManagerError:
    """
    return encryption_api.key_for(key_manager(disk), disk.encryption)


def _golden_key(disk: Disk, recorded: tuple[str, str]) -> crypt.Key:
    fmt, secret_uuid = recorded
    return encryption_api.key_for(key_manager(disk), None, fmt=fmt, secret_uuid=secret_uuid)


def direct_fetch(disk: CloningDisk, image_id: str, image_meta: dict[str, Any],
                 image_locations: list[dict[str, Any]], max_size: int = 0) -> str:
    """Make the encrypted disk from the first usable location; return the method used.

    :raises ImageUnacceptable: no location qualified (each one's reason given);
        nothing was created.
    :raises KeyManagerError: / :raises EncryptionKeyRejected: the key of the
        disk or of the golden could not be had or does not open it; nothing
        was created.
    """
    wanted = disk.encryption
    assert wanted is not None
    client = disk.driver.client
    reasons = []
    for index, loc in enumerate(image_locations or []):
        url = loc.get("url") if isinstance(loc, dict) else None
        label = f"location {index + 1} ({_shorten(url)})"
        try:
            location, identity = disk._check_location(url, image_meta, max_size,
                                                      accept=("raw", "iso", "luks"))
        except ValueError as err:
            reasons.append(f"{label}: {err}")
            continue
        golden = crypt.recorded(client, location.pool, location.image, location.snapshot)
        if golden == (wanted.format, wanted.secret_uuid):
            _clone(disk, location, identity)
            method = CLONE
        else:
            why = (f"the golden is encrypted with secret {golden[1]} ({golden[0]})" if golden
                   else "the golden is not encrypted")
            if not disk.conf.encryption.allow_copy:
                reasons.append(
                    f"{label}: {why}, so a disk with secret {wanted.secret_uuid} needs a "
                    "per-disk copy (librbd before Ceph 18 cannot give a clone its own key), "
                    "and [encryption] allow_copy is false")
                continue
            if golden is None and _is_luks(disk, location):
                reasons.append(f"{label}: its data is LUKS but it records no secret; "
                               "register it with its secret (golden register --encrypt)")
                continue
            src_key = _golden_key(disk, golden) if golden else None
            key = disk_key(disk)
            crypt.copy_into_encrypted(client, location.pool, location.image, location.snapshot,
                                      src_key, disk.pool, disk.rbd_name, key,
                                      window=disk.driver.io_window)
            LOG.info("%s: %s; made a per-disk encrypted copy", disk.rbd_name, why)
            method = COPY
        disk.encryption_method = method
        LOG.info("made encrypted disk %s (%s, secret %s) from %s for image %s by %s",
                 disk.rbd_name, wanted.format, wanted.secret_uuid, location.url, image_id,
                 method)
        return method
    if not reasons:
        reasons.append("no locations were given")
    raise exception.ImageUnacceptable(image_id=image_id, reason="; ".join(reasons))


def _is_luks(disk: Disk, location: RbdLocation) -> bool:
    head, _, _ = disk.driver.read_edges(location, 6, 0)
    return bytes(head).startswith(b"LUKS\xba\xbe")


def _check_golden_key(disk: Disk, location: RbdLocation, key: crypt.Key,
                      identity: Any) -> None:
    """Check that ``key`` opens the golden snapshot, once per snapshot, secret and
    passphrase in this process (a LUKS unlock costs seconds of key derivation by
    design; a snapshot never changes, and its clones hold its header).

    :raises EncryptionKeyRejected: it does not.
    """
    digest = hashlib.sha256(_SALT + key.passphrase).digest()
    cache_key = (disk.driver.fsid, identity or location.url, key.secret_uuid, key.format, digest)
    with _checked_lock:
        if identity is not None and cache_key in _checked:
            return
    with crypt.open_encrypted(disk.driver.client, location.pool, location.image, key,
                              snapshot=location.snapshot, read_only=True,
                              op="check the golden's key"):
        pass
    with _checked_lock:
        if len(_checked) >= CHECKED_CACHE_SIZE:
            _checked.pop(next(iter(_checked)))
        _checked[cache_key] = None


def _clone(disk: Disk, location: RbdLocation, identity: Any) -> None:
    """Check the key opens the encrypted golden, then clone it: the clone holds the
    golden's header, so it opens with the same key, and librbd copies the golden's
    metadata into it, so it records the same secret."""
    key = disk_key(disk)  # before the clone: a key manager failure leaves nothing
    _check_golden_key(disk, location, key, identity)
    disk.driver.clone(location, disk.rbd_name)


def record_disk(disk: Disk) -> None:
    """Note the disk's secret UUID and format in its metadata."""
    assert disk.encryption is not None
    crypt.record(disk.driver.client, disk.pool, disk.rbd_name, disk.encryption.format,
                 disk.encryption.secret_uuid)


def copy_in(disk: Disk, base: str, progress: Callable[[int, int], None] | None = None) -> None:
    """Copy the local raw file ``base`` into the disk, formatted with the disk's key.

    :raises UnsupportedFormat: ``base`` is not raw (convert it first).
    """
    from rbd_driver.storage import convert

    found = convert.sniff_file(base)
    if found not in ("raw", "iso"):
        raise exception.UnsupportedFormat(
            target=base, out_format=found,
            supported="raw (an encrypted disk is filled from raw data only)")
    crypt.import_encrypted(disk.driver.client, base, disk.pool, disk.rbd_name, disk_key(disk),
                           window=disk.driver.io_window, progress=progress)
    disk.encryption_method = COPY


def guest_size(disk: Disk) -> int:
    """The size the guest sees (the LUKS header left out)."""
    return crypt.guest_size(disk.driver.client, disk.pool, disk.rbd_name, disk_key(disk))[0]


def resize(disk: Disk, size: int) -> None:
    """Grow the disk so that the guest sees ``size`` bytes.

    :raises DiskSizeTooSmall: ``size`` is smaller than the guest sees now.
    """
    key = disk_key(disk)
    current, _ = crypt.guest_size(disk.driver.client, disk.pool, disk.rbd_name, key)
    if size < current:
        raise exception.DiskSizeTooSmall(size=size, pool=disk.pool, image=disk.rbd_name,
                                         current=current)
    if size > current:
        crypt.resize_guest(disk.driver.client, disk.pool, disk.rbd_name, key, size)


def extract(disk: Disk, target: str, out_format: str, snapshot: str | None,
            progress: Callable[[int, int], None] | None) -> None:
    """Write the plaintext of the disk into ``target`` only (raw, atomic, mode 0600).

    :raises UnsupportedFormat: ``out_format`` is not ``raw`` (a conversion would
        put plaintext into a second file).
    """
    if out_format != "raw":
        raise exception.UnsupportedFormat(
            target=target, out_format=out_format,
            supported="raw (an encrypted disk is extracted as raw plaintext into the "
            "named file only)")
    crypt.export_decrypted(disk.driver.client, disk.pool, disk.rbd_name, target,
                           disk_key(disk), snapshot=snapshot, window=disk.driver.io_window,
                           progress=progress)


def _shorten(url: Any) -> str:
    text = repr(url)
    return text if len(text) <= 120 else text[:117] + "..."
