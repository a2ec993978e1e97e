# SPDX-License-Identifier: Apache-2.0
"""The libvirt secret that holds an encrypted disk's passphrase.

QEMU started by libvirt opens a LUKS disk of librbd with the value of a
libvirt secret (usage type ``volume``) named in the disk XML by UUID
(``<encryption engine='librbd'><secret type='passphrase' uuid=.../>``).
The ``libvirt`` key manager (:class:`LibvirtKeyManager`) reads the same
value for the library's own work on the disk (formatting, copies through
the encryption layer), so one secret serves both. libvirt hands a value back
only for a secret defined with ``private='no'``: :func:`define_passphrase_secret`
defines it so; anyone with an administrative libvirt connection on the host
can read it, as they can attach to the guest.

The passphrase goes from memory to libvirt's API and back; never on a
command line, in a file, a log or an error message.
"""

from __future__ import annotations

import contextlib
import uuid as uuid_module
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from oslo_config import cfg

from rbd_driver import exception
from rbd_driver.encryption import KeyManager
from rbd_driver.libvirt.secret import error_message, libvirt_api

__all__ = ["LibvirtKeyManager", "define_passphrase_secret", "passphrase_secret_xml",
           "remove_passphrase_secret"]

# virSecretUsageType VIR_SECRET_USAGE_TYPE_VOLUME.
_USAGE_TYPE_VOLUME = 1
_NO_SECRET = 66  # VIR_ERR_NO_SECRET


def passphrase_secret_xml(secret_uuid: str, description: str | None = None) -> str:
    """Return ``<secret>`` XML (persistent, readable back) of a disk passphrase.

    :raises ValueError: ``secret_uuid`` is not a UUID.
    """
    canonical = str(uuid_module.UUID(secret_uuid))
    secret = ET.Element("secret", ephemeral="no", private="no")
    ET.SubElement(secret, "uuid").text = canonical
    ET.SubElement(secret, "description").text = description or "rbd_driver disk passphrase"
    usage = ET.SubElement(secret, "usage", type="volume")
    # libvirt wants an absolute path here; it only has to be unique.
    ET.SubElement(usage, "volume").text = f"/rbd_driver/passphrase/{canonical}"
    return ET.tostring(secret, encoding="unicode")


def _libvirt(module: ModuleType | None, target: str) -> ModuleType:
    return libvirt_api(module, lambda detail: exception.LibvirtSecretError(
        target=target, detail=detail))


_message = error_message


@contextlib.contextmanager
def _connection(libvirt: ModuleType, conn: Any, uri: str, target: str) -> Iterator[Any]:
    if conn is not None:
        yield conn
        return
    try:
        opened = libvirt.open(uri)
    except libvirt.libvirtError as err:
        raise exception.LibvirtSecretError(
            target=target, detail=f"cannot connect to {uri}: {_message(err)}") from None
    try:
        yield opened
    finally:
        with contextlib.suppress(Exception):
            opened.close()


def define_passphrase_secret(secret_uuid: str, passphrase: bytes, *,
                             uri: str = "qemu:///system", conn: Any = None,
                             libvirt_module: ModuleType | None = None) -> str:
    """Define (or reuse) the passphrase secret ``secret_uuid`` and set its value.

    Returns the UUID. An existing secret with that UUID keeps its definition
    and gets the new value.

    :raises LibvirtSecretError: libvirt is unavailable or refused; the message
        never holds the passphrase.
    """
    canonical = str(uuid_module.UUID(secret_uuid))
    target = f"passphrase {canonical}"
    libvirt = _libvirt(libvirt_module, target)
    with _connection(libvirt, conn, uri, target) as c:
        try:
            try:
                secret = c.secretLookupByUUIDString(canonical)
            except libvirt.libvirtError as err:
                if err.get_error_code() != getattr(libvirt, "VIR_ERR_NO_SECRET", _NO_SECRET):
                    raise
                secret = c.secretDefineXML(passphrase_secret_xml(canonical), 0)
            secret.setValue(passphrase, 0)
        except libvirt.libvirtError as err:
            raise exception.LibvirtSecretError(
                target=target, detail=f"defining it failed: {_message(err)}") from None
    return canonical


def remove_passphrase_secret(secret_uuid: str, *, uri: str = "qemu:///system", conn: Any = None,
                             libvirt_module: ModuleType | None = None) -> bool:
    """Undefine the passphrase secret; return False if there was none."""
    canonical = str(uuid_module.UUID(secret_uuid))
    target = f"passphrase {canonical}"
    libvirt = _libvirt(libvirt_module, target)
    with _connection(libvirt, conn, uri, target) as c:
        try:
            c.secretLookupByUUIDString(canonical).undefine()
        except libvirt.libvirtError as err:
            if err.get_error_code() == getattr(libvirt, "VIR_ERR_NO_SECRET", _NO_SECRET):
                return False
            raise exception.LibvirtSecretError(
                target=target, detail=f"undefining it failed: {_message(err)}") from None
    return True


class LibvirtKeyManager(KeyManager):
    """The value of the libvirt secret with the disk's ``secret_uuid``, at ``[rbd] libvirt_uri``.

    ``conn`` and ``libvirt_module`` are injectable for tests.
    """

    name = "libvirt"

    def __init__(self, conf: cfg.ConfigOpts, conn: Any = None,
                 libvirt_module: ModuleType | None = None) -> None:
        super().__init__(conf)
        self._conn = conn
        self._libvirt = libvirt_module

    def get_passphrase(self, secret_uuid: str) -> bytes:
        uri = self.conf.rbd.libvirt_uri

        def fail(detail: str) -> exception.KeyManagerError:
            return exception.KeyManagerError(manager=self.name, target=f"secret {secret_uuid}",
                                             detail=detail)

        try:
            libvirt = _libvirt(self._libvirt, f"passphrase {secret_uuid}")
        except exception.LibvirtSecretError as err:
            raise fail(str(err)) from None
        try:
            conn = self._conn or libvirt.open(uri)
        except libvirt.libvirtError as err:
            raise fail(f"cannot connect to {uri}: {_message(err)}") from None
        try:
            try:
                secret = conn.secretLookupByUUIDString(secret_uuid)
            except libvirt.libvirtError as err:
                if err.get_error_code() == getattr(libvirt, "VIR_ERR_NO_SECRET", _NO_SECRET):
                    raise fail(f"libvirt at {uri} has no secret with this UUID") from None
                raise fail(f"lookup at {uri} failed: {_message(err)}") from None
            try:
                value = secret.value(0)
            except libvirt.libvirtError as err:
                raise fail(f"libvirt at {uri} will not give its value ({_message(err)}); "
                           "a passphrase secret must be defined with private='no'") from None
        finally:
            if self._conn is None:
                with contextlib.suppress(Exception):
                    conn.close()
        return bytes(value)
