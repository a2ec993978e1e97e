# SPDX-License-Identifier: Apache-2.0
"""libvirt's RBD storage pool on the library's Ceph pool.

CloudStack's KVM agent (and anyone who drives libvirt's storage API) keeps
RBD disks in a libvirt storage pool of type ``rbd``: libvirtd's storage
driver (Debian package ``libvirt-daemon-driver-storage-rbd``) lists, creates,
resizes and deletes the images of one Ceph pool through librados/librbd, and
a guest's ``<disk type='volume'>`` names a volume of that pool. When such a
pool sits on ``[rbd] pool``, libvirt and the library see one set of disks.

:func:`pool_xml` writes the ``<pool type='rbd'>`` definition: the Ceph pool,
every monitor as a ``<host>``, and ``<auth type='ceph'>`` naming the cephx
user and the UUID of the libvirt secret that holds its key. The key itself is
never in the XML: libvirtd reads it from the secret and hands it to librados
in-process. :func:`define_rbd_pool` defines, starts and (optionally)
autostarts the pool through the libvirt Python API, idempotently: a pool of
that name with the same definition is kept; one with another definition is
an error that names each difference. :func:`find_ceph_secret` checks that the
secret ``<auth>`` will name exists and is a ceph secret.

A guest cannot name such a volume as ``<disk type='volume'>``: libvirt (9.0
here) refuses it ("using 'rbd' pools for backing 'volume' disks isn't yet
supported"). CloudStack's agent builds a ``<disk type='network'>`` from the
pool's source and the volume's path instead; :func:`volume_disk_xml` does
the same.

The libvirt module is imported on first use and, like the connection, is
injectable for tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import uuid as uuid_module
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

from rbd_driver import exception
from rbd_driver.libvirt import disk_xml
from rbd_driver.libvirt import secret as libvirt_secret
from rbd_driver.storage.cephx import validate_name

__all__ = ["PoolResult", "RbdPoolSource", "connection", "define_rbd_pool", "differences",
           "find_ceph_secret", "parse_pool_xml", "pool_xml", "volume_disk_xml"]

LOG = logging.getLogger(__name__)

# virStoragePoolXMLFlags VIR_STORAGE_XML_INACTIVE: the persistent definition.
_XML_INACTIVE = 1
# virErrorNumber VIR_ERR_NO_STORAGE_POOL, VIR_ERR_NO_SECRET.
_NO_STORAGE_POOL = 49
_NO_SECRET = 66


@dataclasses.dataclass(frozen=True)
class RbdPoolSource:
    """What a libvirt RBD pool points at: a Ceph pool, its monitors, a user and a secret.

    ``hosts`` are (host, port) pairs, IPv6 hosts bare (no brackets).
    """

    pool: str
    hosts: tuple[tuple[str, int], ...]
    user: str
    secret_uuid: str


@dataclasses.dataclass(frozen=True)
class PoolResult:
    """A libvirt pool after :func:`define_rbd_pool`.

    ``defined``: this call defined it (False: it existed with the same
    definition); ``started``: this call started it; ``autostart``: its
    autostart flag now.
    """

    name: str
    uuid: str
    source: RbdPoolSource
    defined: bool
    started: bool
    autostart: bool


def pool_xml(name: str, source: RbdPoolSource) -> str:
    """Return ``<pool type='rbd'>`` XML named ``name`` for ``source``.

    :raises InvalidName: the Ceph pool or user name is unsafe.
    :raises ValueError: no monitor, or ``secret_uuid`` is not a UUID.
    """
    validate_name("pool", source.pool)
    validate_name("cephx user", source.user)
    if not name or "/" in name:
        raise ValueError(f"a libvirt pool name must be non-empty without '/', not {name!r}")
    if not source.hosts:
        raise ValueError("an RBD pool needs at least one monitor host")
    secret_uuid = str(uuid_module.UUID(source.secret_uuid))
    pool = ET.Element("pool", type="rbd")
    ET.SubElement(pool, "name").text = name
    src = ET.SubElement(pool, "source")
    ET.SubElement(src, "name").text = source.pool
    for host, port in source.hosts:
        ET.SubElement(src, "host", name=host.strip("[]"), port=str(port))
    auth = ET.SubElement(src, "auth", type="ceph", username=source.user)
    ET.SubElement(auth, "secret", uuid=secret_uuid)
    return ET.tostring(pool, encoding="unicode")


def parse_pool_xml(xml: str) -> tuple[str, RbdPoolSource | None]:
    """Return the name of the pool in ``xml`` and its RBD source (None: not an RBD pool).

    A source without ``<auth>`` has an empty user and secret UUID.
    """
    root = ET.fromstring(xml)
    name = root.findtext("name") or ""
    if root.get("type") != "rbd":
        return name, None
    src = root.find("source")
    if src is None:
        return name, RbdPoolSource("", (), "", "")
    hosts = tuple((h.get("name", ""), int(h.get("port") or 0)) for h in src.findall("host"))
    auth = src.find("auth")
    user = auth.get("username", "") if auth is not None else ""
    secret = auth.find("secret") if auth is not None else None
    secret_uuid = secret.get("uuid", "") if secret is not None else ""
    return name, RbdPoolSource(src.findtext("name") or "", hosts, user, secret_uuid)


def differences(wanted: RbdPoolSource, actual: RbdPoolSource | None) -> list[str]:
    """Return what ``actual`` has other than ``wanted``, one phrase each (empty: the same).

    Monitor hosts compare as a set: libvirt may list them in any order.
    """
    if actual is None:
        return ["it is not an RBD pool"]
    found = []
    for label, have, want in (("Ceph pool", actual.pool, wanted.pool),
                              ("cephx user", actual.user, wanted.user),
                              ("secret UUID", actual.secret_uuid.lower(),
                               wanted.secret_uuid.lower())):
        if have != want:
            found.append(f"{label} {have or '(none)'} (wanted {want})")
    if set(actual.hosts) != set(wanted.hosts):
        found.append(f"monitors {_hosts(actual.hosts)} (wanted {_hosts(wanted.hosts)})")
    return found


def _hosts(hosts: Sequence[tuple[str, int]]) -> str:
    return ",".join(f"{h}:{p}" for h, p in sorted(hosts)) or "(none)"


def volume_disk_xml(pool_definition: str, volume_path: str, **disk: Any) -> str:
    """Return the ``<disk type='network'>`` of a volume of an RBD pool, as CloudStack's
    agent writes it: the monitors and ``<auth>`` of ``pool_definition`` (the pool's
    XML) and the image of ``volume_path`` (``virStorageVol.path()``: ``pool/image``).

    ``disk`` goes to :func:`rbd_driver.libvirt.disk_xml.network_disk_xml`
    (``target_dev``, ``cache_mode``...).

    :raises ValueError: not an RBD pool, or a path that is not ``pool/image``.
    """
    _, source = parse_pool_xml(pool_definition)
    ceph_pool, _, image = volume_path.partition("/")
    if source is None:
        raise ValueError("the pool definition is not of an RBD pool")
    if not ceph_pool or not image or "/" in image:
        raise ValueError(f"an RBD volume path is pool/image, not {volume_path!r}")
    return disk_xml.network_disk_xml(ceph_pool, image, source.hosts, user=source.user or None,
                                     secret_uuid=source.secret_uuid or None, **disk)


def _libvirt(module: ModuleType | None, name: str) -> ModuleType:
    return libvirt_secret.libvirt_api(module, lambda detail: exception.LibvirtPoolError(
        target=name, detail=detail))


_message = libvirt_secret.error_message


@contextlib.contextmanager
def connection(uri: str, name: str, conn: Any = None,
               libvirt_module: ModuleType | None = None) -> Iterator[Any]:
    """Yield ``conn`` if given (left open), else a connection to ``uri``, closed on exit.

    :raises LibvirtPoolError: libvirt is unavailable or ``uri`` cannot be opened
        (the message names the pool ``name`` it was for).
    """
    if conn is not None:
        yield conn
        return
    libvirt = _libvirt(libvirt_module, name)
    try:
        opened = libvirt.open(uri)
    except libvirt.libvirtError as err:
        raise exception.LibvirtPoolError(
            target=name, detail=f"cannot connect to {uri}: {_message(err)}") from err
    try:
        yield opened
    finally:
        with contextlib.suppress(Exception):
            opened.close()


def find_ceph_secret(user: str, secret_uuid: str | None, conn: Any,
                     libvirt_module: ModuleType | None = None) -> str:
    """Return the UUID of the ceph secret a pool of ``client.<user>`` authenticates with.

    With ``secret_uuid``, that secret must exist and be of usage type ceph;
    without, the secret the library defines for the user (usage name
    ``client.<user> secret``) is looked up.

    :raises LibvirtPoolError: no such secret, or not a ceph secret.
    """
    libvirt = _libvirt(libvirt_module, f"of client.{user}")
    ceph = getattr(libvirt, "VIR_SECRET_USAGE_TYPE_CEPH", 2)
    no_secret = getattr(libvirt, "VIR_ERR_NO_SECRET", _NO_SECRET)
    target = f"of client.{user}"
    how = ("define it with 'rbd-driver provision from-conf --define-secret' and set "
           "[rbd] secret_uuid")
    try:
        if secret_uuid:
            secret = conn.secretLookupByUUIDString(str(uuid_module.UUID(secret_uuid)))
        else:
            secret = conn.secretLookupByUsage(ceph, libvirt_secret.usage_name(user))
    except libvirt.libvirtError as err:
        if err.get_error_code() == no_secret:
            which = (f"[rbd] secret_uuid {secret_uuid}" if secret_uuid
                     else f"secret with usage name {libvirt_secret.usage_name(user)!r}")
            raise exception.LibvirtPoolError(
                target=target, detail=f"libvirt has no {which}; {how}") from err
        raise exception.LibvirtPoolError(target=target,
                                         detail=f"secret lookup failed: {_message(err)}") from err
    if secret.usageType() != ceph:
        raise exception.LibvirtPoolError(
            target=target, detail=f"secret {secret.UUIDString()} is not of usage type ceph")
    if secret.usageID() != libvirt_secret.usage_name(user):
        LOG.warning("libvirt secret %s has usage name %r, not %r: check that it holds the key "
                    "of client.%s", secret.UUIDString(), secret.usageID(),
                    libvirt_secret.usage_name(user), user)
    return str(secret.UUIDString())


def _existing(libvirt: ModuleType, conn: Any, name: str) -> Any:
    try:
        return conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as err:
        if err.get_error_code() == getattr(libvirt, "VIR_ERR_NO_STORAGE_POOL", _NO_STORAGE_POOL):
            return None
        raise exception.LibvirtPoolError(target=name,
                                         detail=f"lookup failed: {_message(err)}") from err


def _definition(libvirt: ModuleType, pool: Any, name: str) -> str:
    """Return the persistent XML of ``pool`` (the live one where libvirt has no other)."""
    try:
        return str(pool.XMLDesc(_XML_INACTIVE))
    except libvirt.libvirtError:
        pass  # the test driver, for one, refuses the flag
    try:
        return str(pool.XMLDesc(0))
    except libvirt.libvirtError as err:
        raise exception.LibvirtPoolError(target=name,
                                         detail=f"reading it failed: {_message(err)}") from err


def define_rbd_pool(name: str, source: RbdPoolSource, *, autostart: bool = True,
                    uri: str = "qemu:///system", conn: Any = None,
                    libvirt_module: ModuleType | None = None) -> PoolResult:
    """Define, start and (with ``autostart``) autostart the RBD pool ``name`` on ``source``.

    Idempotent: an existing pool ``name`` with the same source is started if
    inactive and given the autostart flag asked for. ``conn`` is an open
    libvirt connection (not closed here); without it ``uri`` is opened and
    closed. If this call defined the pool and starting it fails, the
    definition is removed again.

    :raises LibvirtPoolError: libvirt is unavailable or refused; or a pool
        ``name`` exists with another definition (each difference named).
    """
    xml = pool_xml(name, source)
    libvirt = _libvirt(libvirt_module, name)
    with connection(uri, name, conn, libvirt) as c:
        pool = _existing(libvirt, c, name)
        defined = pool is None
        if pool is not None:
            _, actual = parse_pool_xml(_definition(libvirt, pool, name))
            diff = differences(source, actual)
            if diff:
                raise exception.LibvirtPoolError(
                    target=name, detail="it exists with another definition: " + "; ".join(diff)
                    + f". Undefine it (virsh pool-destroy {name}; virsh pool-undefine {name}) "
                    "or choose another name")
        step = "defining it"
        try:
            if pool is None:
                pool = c.storagePoolDefineXML(xml, 0)
            step = "starting it"
            started = not pool.isActive()
            if started:
                pool.create(0)
            step = "setting its autostart flag"
            if bool(pool.autostart()) != autostart:
                pool.setAutostart(1 if autostart else 0)
        except libvirt.libvirtError as err:
            if defined and pool is not None:
                with contextlib.suppress(Exception):
                    if pool.isActive():
                        pool.destroy()
                with contextlib.suppress(Exception):
                    pool.undefine()
            raise exception.LibvirtPoolError(
                target=name, detail=f"{step} failed: {_message(err)}") from err
        LOG.info("libvirt RBD pool %s on Ceph pool %s as client.%s (%s%s)", name, source.pool,
                 source.user, "defined" if defined else "existed",
                 ", started" if started else "")
        return PoolResult(name, str(pool.UUIDString()), source, defined, started,
                          bool(pool.autostart()))
