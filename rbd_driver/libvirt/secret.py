# SPDX-License-Identifier: Apache-2.0
"""The libvirt secret that holds a cephx user's key, for ``<auth>`` in disk XML.

QEMU started by libvirt authenticates to Ceph with the value of a libvirt
secret of usage type ``ceph``; the disk XML names only the secret's UUID.
:func:`define_ceph_secret` defines that secret (private, persistent) through
the libvirt Python API and sets its value, idempotently: a secret already
defined for the user is reused and its value replaced (which is also how a
rotated key reaches libvirt). The key goes from memory to libvirt's API; it
is never on a command line (no ``virsh secret-set-value``), in a file, in a
log or in an error message.

The libvirt module is imported on first use, so the rest of rbd_driver works
without python3-libvirt; it and the connection are injectable for tests.
"""

from __future__ import annotations

import contextlib
import uuid as uuid_module
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from rbd_driver import exception
from rbd_driver.storage.cephx import CephxKey, validate_name

__all__ = ["define_ceph_secret", "error_message", "libvirt_api", "remove_ceph_secret", "secret_xml",
           "usage_name"]

# virSecretUsageType VIR_SECRET_USAGE_TYPE_CEPH, for a libvirt too old to name it.
_USAGE_TYPE_CEPH = 2


def usage_name(user: str) -> str:
    """Return the usage name of ``client.<user>``'s secret: ``client.<user> secret``."""
    return f"client.{user} secret"


def secret_xml(user: str, secret_uuid: str | None = None, description: str | None = None) -> str:
    """Return ``<secret>`` XML of usage type ``ceph`` for ``client.<user>``.

    The secret is persistent (``ephemeral='no'``) and private (libvirt never
    hands its value back through its API).

    :raises InvalidName: the user name is unsafe.
    :raises ValueError: ``secret_uuid`` is not a UUID.
    """
    validate_name("cephx user", user)
    secret = ET.Element("secret", ephemeral="no", private="yes")
    if secret_uuid:
        ET.SubElement(secret, "uuid").text = str(uuid_module.UUID(secret_uuid))
    ET.SubElement(secret, "description").text = description or f"cephx key of client.{user}"
    usage = ET.SubElement(secret, "usage", type="ceph")
    ET.SubElement(usage, "name").text = usage_name(user)
    return ET.tostring(secret, encoding="unicode")


def libvirt_api(module: ModuleType | None, missing: Callable[[str], Exception]) -> ModuleType:
    """Return ``module`` if given (tests), else the libvirt Python bindings.

    :raises: ``missing(detail)`` when python3-libvirt is not installed.
    """
    if module is not None:
        return module
    try:
        import libvirt
    except ImportError as err:
        raise missing("the libvirt Python API is not available "
                      "(install python3-libvirt)") from err
    bindings: ModuleType = libvirt  # no stubs: typed here as the module it is
    return bindings


def _libvirt(module: ModuleType | None, user: str) -> ModuleType:
    return libvirt_api(module, lambda detail: exception.LibvirtSecretError(
        target=f"client.{user}", detail=detail))


@contextlib.contextmanager
def _connection(libvirt: ModuleType, conn: Any, uri: str, user: str) -> Iterator[Any]:
    if conn is not None:
        yield conn
        return
    try:
        opened = libvirt.open(uri)
    except libvirt.libvirtError as err:
        raise exception.LibvirtSecretError(target=f"client.{user}",
                                           detail=f"cannot connect to {uri}: {_message(err)}") from err
    try:
        yield opened
    finally:
        with contextlib.suppress(Exception):
            opened.close()


def error_message(err: Any) -> str:
    """libvirt's own message of a ``libvirtError``, else ``str(err)``."""
    get = getattr(err, "get_error_message", None)
    return str(get() if callable(get) else err)


_message = error_message


def _lookup(libvirt: ModuleType, conn: Any, user: str) -> Any:
    usage_type = getattr(libvirt, "VIR_SECRET_USAGE_TYPE_CEPH", _USAGE_TYPE_CEPH)
    try:
        return conn.secretLookupByUsage(usage_type, usage_name(user))
    except libvirt.libvirtError as err:
        if err.get_error_code() == getattr(libvirt, "VIR_ERR_NO_SECRET", 66):
            return None
        raise exception.LibvirtSecretError(target=f"client.{user}",
                                           detail=f"lookup failed: {_message(err)}") from err


def define_ceph_secret(user: str, key: CephxKey, *, secret_uuid: str | None = None,
                       uri: str = "qemu:///system", conn: Any = None,
                       libvirt_module: ModuleType | None = None) -> str:
    """Define (or reuse) the ceph secret of ``client.<user>`` and set it to ``key``.

    ``conn`` is an open libvirt connection (not closed here); without it
    ``uri`` is opened and closed. Returns the secret's UUID.

    :raises LibvirtSecretError: libvirt is unavailable or refused; or a
        secret for this user already exists under a UUID other than
        ``secret_uuid``. The message never holds the key.
    """
    libvirt = _libvirt(libvirt_module, user)
    wanted = str(uuid_module.UUID(secret_uuid)) if secret_uuid else None
    xml = secret_xml(user, wanted)
    with _connection(libvirt, conn, uri, user) as c:
        secret = _lookup(libvirt, c, user)
        if secret is not None and wanted and secret.UUIDString() != wanted:
            raise exception.LibvirtSecretError(
                target=f"client.{user}",
                detail=f"a secret for it already exists with UUID {secret.UUIDString()}, not "
                f"{wanted}; set [rbd] secret_uuid to it or undefine it")
        try:
            if secret is None:
                secret = c.secretDefineXML(xml, 0)
            secret.setValue(key.raw(), 0)
            return str(secret.UUIDString())
        except libvirt.libvirtError as err:
            raise exception.LibvirtSecretError(
                target=f"client.{user}", detail=f"defining it failed: {_message(err)}") from err


def remove_ceph_secret(user: str, *, uri: str = "qemu:///system", conn: Any = None,
                       libvirt_module: ModuleType | None = None) -> bool:
    """Undefine the ceph secret of ``client.<user>``; return False if there was none.

    :raises LibvirtSecretError: libvirt is unavailable or refused.
    """
    libvirt = _libvirt(libvirt_module, user)
    with _connection(libvirt, conn, uri, user) as c:
        secret = _lookup(libvirt, c, user)
        if secret is None:
            return False
        try:
            secret.undefine()
        except libvirt.libvirtError as err:
            raise exception.LibvirtSecretError(
                target=f"client.{user}", detail=f"undefining it failed: {_message(err)}") from err
        return True
