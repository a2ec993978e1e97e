# SPDX-License-Identifier: Apache-2.0
"""Volume attachments: the ``<disk>`` XML of a volume the volume service created.

The volume service's RBD driver hands a compute driver a ``connection_info``
like this (Cinder's ``initialize_connection``; the compute side adds
``serial``, and the volume manager ``access_mode`` and ``qos_specs``)::

    {"driver_volume_type": "rbd",
     "serial": "<volume id>",
     "data": {"name": "volumes/volume-<id>",          # pool/volume
              "hosts": ["192.0.2.1", "2001:db8::1"],   # monitors, IPv6 bare
              "ports": ["6789", "6789"],               # one per host, strings
              "cluster_name": "ceph",
              "auth_enabled": True,
              "auth_username": "cinder",
              "secret_type": "ceph",
              "secret_uuid": "<libvirt secret uuid>",
              "keyring": "<keyring file text, or None>",
              "volume_id": "<volume id>",
              "discard": True,
              "access_mode": "rw",                     # or "ro"
              "qos_specs": {"total_bytes_sec": "10485760", "read_iops_sec": "500"}}}

:func:`volume_disk_xml` checks all of it before anything happens and turns it
into a ``<disk>``: with ``[rbd] access = userspace`` (the default, and
without a ``conf``) a ``<disk type='network'>`` that QEMU opens with librbd,
authenticating through the libvirt secret; with ``kernelspace`` the volume
is mapped through krbd (:mod:`rbd_driver.storage.krbd`) and a ``<disk type='block'>``
is returned. :func:`disconnect_volume` unmaps it again. Bad input raises
:class:`~rbd_driver.exception.InvalidConnectionInfo` naming the key at fault.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
import uuid
from collections.abc import Mapping
from typing import Any

from oslo_config import cfg

from rbd_driver import exception
from rbd_driver.libvirt import disk_xml, iotune
from rbd_driver.storage import cephx, krbd
from rbd_driver.storage.monitors import MonitorAddress, MonitorCache
from rbd_driver.storage.rados_client import RadosClient

__all__ = ["VolumeAttacher", "VolumeConnection", "disconnect_volume", "parse_connection_info",
           "volume_disk_xml"]

LOG = logging.getLogger(__name__)

ACCESS_MODES = ("rw", "ro")
# A DNS host name: dot-separated labels of letters, digits and inner hyphens.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_MSGR2_PORT = 3300  # librados reads a bare host:port as messenger v1 unless the port is this


@dataclasses.dataclass(frozen=True)
class VolumeConnection:
    """A checked ``connection_info``: where the volume is and how to reach it."""

    pool: str
    image: str
    hosts: tuple[tuple[str, int], ...]
    auth_username: str | None
    secret_uuid: str | None
    readonly: bool
    discard: bool
    iotune: Mapping[str, int]
    serial: str | None
    cluster_name: str | None
    keyring: str | None = dataclasses.field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"{self.pool}/{self.image}"


def _bad(target: str, key: str, detail: str) -> exception.InvalidConnectionInfo:
    return exception.InvalidConnectionInfo(target=target, key=key, detail=detail)


def _show(value: Any) -> str:
    """``repr(value)``, cut short: a message quotes bad input, it does not dump it."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _optional_str(data: Mapping[str, Any], key: str, target: str,
                  secret: bool = False) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        shown = f"a {type(value).__name__}" if secret else _show(value)
        raise _bad(target, f"data[{key!r}]", f"must be a non-blank string, not {shown}")
    return value


def _flag(data: Mapping[str, Any], key: str, target: str) -> bool:
    value = data.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad(target, f"data[{key!r}]", f"must be true or false, not {_show(value)}")
    return value


def _host(value: Any, key: str, target: str) -> str:
    """Return ``value`` as a bare host: an IP address or a DNS host name."""
    if not isinstance(value, str):
        raise _bad(target, key, f"must be a string, not {_show(value)}")
    bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if bare != value or not _HOSTNAME.fullmatch(bare) or len(bare) > 253 \
            or re.fullmatch(r"[0-9.]+", bare):
        raise _bad(target, key, f"is {_show(value)}, which is not an IP address or a host name")
    return bare


def _port(value: Any, key: str, target: str) -> int:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not text.isascii() or not text.isdigit() \
            or not 0 < int(text) < 65536:
        raise _bad(target, key, f"is {_show(value)}, which is not a port number (1-65535)")
    return int(text)


def _monitors(data: Mapping[str, Any], target: str) -> tuple[tuple[str, int], ...]:
    for key in ("hosts", "ports"):
        if key not in data:
            raise _bad(target, f"data[{key!r}]", "is missing")
        if not isinstance(data[key], (list, tuple)):
            raise _bad(target, f"data[{key!r}]", f"must be a list, not {_show(data[key])}")
    hosts, ports = data["hosts"], data["ports"]
    if not hosts:
        raise _bad(target, "data['hosts']", "is empty: it must name the volume's monitors")
    if len(hosts) != len(ports):
        raise _bad(target, "data['ports']",
                   f"has {len(ports)} entries for {len(hosts)} hosts: it needs one per host")
    return tuple((_host(h, f"data['hosts'][{i}]", target),
                  _port(p, f"data['ports'][{i}]", target))
                 for i, (h, p) in enumerate(zip(hosts, ports, strict=True)))


def _iotune(data: Mapping[str, Any], target: str) -> dict[str, int]:
    """The ``qos_specs`` limits libvirt knows (others, e.g. a back-end's, are skipped)."""
    specs = data.get("qos_specs")
    if specs is None:
        return {}
    if not isinstance(specs, Mapping):
        raise _bad(target, "data['qos_specs']", f"must be a mapping, not {_show(specs)}")
    try:
        return iotune.parse_iotune(specs)
    except iotune.InvalidLimit as err:
        raise _bad(target, f"data['qos_specs'][{err.key!r}]", err.detail) from None


def _auth(data: Mapping[str, Any], target: str,
          conf: cfg.ConfigOpts | None) -> tuple[str | None, str | None]:
    """Return (cephx user, libvirt secret uuid) for ``<auth>``, or (None, None) without."""
    secret_type = data.get("secret_type")
    if secret_type not in (None, "ceph"):
        raise _bad(target, "data['secret_type']", f"is {_show(secret_type)}; rbd needs 'ceph'")
    if not _flag(data, "auth_enabled", target):
        return None, None
    user = _optional_str(data, "auth_username", target)
    secret = _optional_str(data, "secret_uuid", target)
    if secret is None and conf is not None and conf.rbd.secret_uuid:
        # The volume service does not know this host's secret: use ours, and
        # the user whose key it holds (as Nova's [libvirt] rbd_secret_uuid does).
        secret, user = conf.rbd.secret_uuid, conf.rbd.user or user
    if user is None:
        raise _bad(target, "data['auth_username']", "is missing, and auth_enabled is true")
    if secret is None:
        raise _bad(target, "data['secret_uuid']",
                   "is missing, and auth_enabled is true: the volume service sets it from its "
                   "rbd_secret_uuid, or this host's [rbd] secret_uuid is used")
    try:
        cephx.validate_name("cephx user", user.removeprefix("client."))
    except exception.InvalidName as err:
        raise _bad(target, "data['auth_username']", str(err)) from err
    try:
        secret = str(uuid.UUID(secret))
    except ValueError:
        raise _bad(target, "data['secret_uuid']",
                   f"is {_show(secret)}, which is not a UUID") from None
    return user.removeprefix("client."), secret


def parse_connection_info(connection_info: Any, conf: cfg.ConfigOpts | None = None,
                          serial: str | None = None) -> VolumeConnection:
    """Check ``connection_info`` and return what it says, or raise naming the key at fault.

    Required: ``driver_volume_type`` ``rbd``, and in ``data`` the ``name``
    (``pool/volume``), ``hosts`` (IP addresses or host names) and ``ports``
    (one per host). With ``auth_enabled`` true, ``auth_username`` and
    ``secret_uuid`` too, unless ``conf`` has ``[rbd] secret_uuid``, which
    then stands in with ``[rbd] user``. Optional: ``access_mode`` (``rw``
    or ``ro``; default ``rw``), ``discard``, ``qos_specs`` (the limits named
    in :data:`~rbd_driver.libvirt.disk_xml.IOTUNE_KEYS`; other keys are
    skipped), ``keyring`` (the text of a keyring, used by kernelspace
    access), ``cluster_name``. ``serial`` defaults to the top-level
    ``serial``, else ``data['volume_id']``.

    :raises InvalidConnectionInfo: naming the key and what is wrong with it.
    """
    if not isinstance(connection_info, Mapping):
        raise _bad("(unknown)", "itself", f"must be a mapping, not {_show(connection_info)}")
    data = connection_info.get("data")
    name = data.get("name") if isinstance(data, Mapping) else None
    target = name[:100] if isinstance(name, str) and name else "(unknown)"
    kind = connection_info.get("driver_volume_type")
    if kind is None:
        raise _bad(target, "['driver_volume_type']", "is missing")
    if kind != "rbd":
        raise _bad(target, "['driver_volume_type']",
                   f"is {_show(kind)}; rbd_driver attaches only 'rbd' volumes")
    if not isinstance(data, Mapping):
        raise _bad(target, "['data']", "is missing" if data is None else
                   f"must be a mapping, not {_show(data)}")
    if name is None:
        raise _bad(target, "data['name']", "is missing")
    if not isinstance(name, str) or name.count("/") != 1 or any(
            not part or part != part.strip() or not part.isprintable() or "@" in part
            for part in name.split("/")):
        raise _bad(target, "data['name']",
                   f"is {_show(name)}; it must be 'pool/volume', both parts non-blank, "
                   "without '@'")
    pool, image = name.split("/")
    hosts = _monitors(data, target)
    user, secret = _auth(data, target, conf)
    mode = data.get("access_mode") or "rw"
    if mode not in ACCESS_MODES:
        raise _bad(target, "data['access_mode']", f"is {_show(mode)}; it must be 'rw' or 'ro'")
    serial = serial or connection_info.get("serial") or data.get("volume_id")
    if serial is not None and not isinstance(serial, str):
        raise _bad(target, "['serial']", f"must be a string, not {_show(serial)}")
    return VolumeConnection(
        pool=pool, image=image, hosts=hosts, auth_username=user, secret_uuid=secret,
        readonly=mode == "ro", discard=_flag(data, "discard", target),
        iotune=_iotune(data, target), serial=serial,
        cluster_name=_optional_str(data, "cluster_name", target),
        keyring=_optional_str(data, "keyring", target, secret=True))


class _GivenMonitors(MonitorCache):
    """The monitors a connection_info names, in place of asking the cluster."""

    def __init__(self, hosts: tuple[tuple[str, int], ...]) -> None:
        self._given = [MonitorAddress(f"mon{i}", None if port == _MSGR2_PORT else (host, port),
                                      (host, port) if port == _MSGR2_PORT else None)
                       for i, (host, port) in enumerate(hosts)]

    def get(self) -> list[MonitorAddress]:
        return list(self._given)

    def refresh(self) -> list[MonitorAddress]:
        return self.get()

    def invalidate(self) -> None:
        pass


class VolumeAttacher:
    """Builds volume ``<disk>`` XML as ``[rbd] access`` says, and undoes kernel mappings.

    :param conf: the caller's ``ConfigOpts`` with rbd_driver's options, or
        None for userspace access with only what the connection_info says.
    :param client: the connection used by kernelspace access (its loopback
        guard asks this cluster); default one from ``conf``, closed after use.
    :param kernel_options: passed to :class:`~rbd_driver.storage.krbd.KernelRbd`
        (``sysfs_root``, ``writer``... injected by tests).
    """

    def __init__(self, conf: cfg.ConfigOpts | None = None, client: RadosClient | None = None,
                 **kernel_options: Any) -> None:
        self.conf = conf
        self.client = client
        self.kernel_options = kernel_options

    @property
    def kernelspace(self) -> bool:
        return self.conf is not None and self.conf.rbd.access == "kernelspace"

    def disk_xml(self, connection_info: Any, target_dev: str = "vdb",
                 target_bus: str = "virtio", *, device: str = "disk", cache_mode: str = "none",
                 serial: str | None = None) -> str:
        """Return the ``<disk>`` XML of the volume; kernelspace maps it first.

        :raises InvalidConnectionInfo: bad input; nothing was mapped.
        :raises KernelRbdUnavailable: / :raises LocalOsdRefused: /
            :raises KernelRbdError: kernelspace only.
        """
        volume = parse_connection_info(connection_info, self.conf, serial)
        common: dict[str, Any] = {
            "target_dev": target_dev, "target_bus": target_bus, "device": device,
            "cache_mode": cache_mode, "readonly": volume.readonly, "serial": volume.serial,
            "discard": "unmap" if volume.discard else None, "iotune": volume.iotune,
        }
        if not self.kernelspace:
            return disk_xml.network_disk_xml(
                volume.pool, volume.image, volume.hosts, user=volume.auth_username,
                secret_uuid=volume.secret_uuid, **common)
        with self._kernel(volume) as kernel:
            path = kernel.map(volume.pool, volume.image, read_only=volume.readonly)
        LOG.info("volume %s mapped at %s", volume.name, path)
        return disk_xml.block_disk_xml(path, **common)

    def disconnect(self, connection_info: Any) -> bool:
        """Undo what :meth:`disk_xml` did on this host: unmap a kernelspace volume.

        Returns True if a mapping was removed; userspace access has nothing
        to undo (QEMU closes the image when the disk is detached).

        :raises InvalidConnectionInfo: bad input.
        :raises KernelRbdError: the device is still in use.
        """
        volume = parse_connection_info(connection_info, self.conf)
        if not self.kernelspace:
            return False
        with self._kernel(volume, need_key=False) as kernel:
            return kernel.unmap(volume.pool, volume.image)

    def _kernel(self, volume: VolumeConnection, need_key: bool = True) -> _KernelSession:
        assert self.conf is not None
        user = volume.auth_username or self.conf.rbd.user
        key = None
        if need_key and volume.keyring is not None:
            entity = f"client.{user or 'admin'}"
            try:
                key = cephx.parse_keyring(volume.keyring, entity, source="connection_info")
            except exception.KeyringError as err:
                raise _bad(volume.name, "data['keyring']",
                           f"holds no valid key for {entity}") from err
        return _KernelSession(self.conf, self.client, volume, user, key, self.kernel_options)


class _KernelSession:
    """A KernelRbd for one volume, with a connection opened (and closed) if none was given."""

    def __init__(self, conf: cfg.ConfigOpts, client: RadosClient | None, volume: VolumeConnection,
                 user: str | None, key: cephx.CephxKey | None, options: dict[str, Any]) -> None:
        self._conf, self._client, self._owned = conf, client, client is None
        self._args = (volume, user, key, options)

    def __enter__(self) -> krbd.KernelRbd:
        volume, user, key, options = self._args
        if self._client is None:
            self._client = RadosClient.from_conf(self._conf)
        return krbd.KernelRbd(self._client, _GivenMonitors(volume.hosts), user,
                              self._conf.rbd.keyring, key=key, **options)

    def __exit__(self, *exc: object) -> None:
        if self._owned and self._client is not None:
            self._client.close()


def volume_disk_xml(connection_info: Any, target_dev: str = "vdb", target_bus: str = "virtio",
                    *, device: str = "disk", cache_mode: str = "none", serial: str | None = None,
                    conf: cfg.ConfigOpts | None = None, client: RadosClient | None = None) -> str:
    """Return the ``<disk>`` XML that attaches the volume of ``connection_info``.

    Without ``conf``, or with ``[rbd] access = userspace``: a ``<disk
    type='network'>`` with every monitor, ``<auth>`` with the ceph secret
    when ``auth_enabled``, ``<readonly/>`` for ``access_mode`` ``ro``,
    ``discard='unmap'`` when ``discard`` is true, and ``<iotune>`` from
    ``qos_specs``. With ``[rbd] access = kernelspace``: the volume is
    mapped through krbd and a ``<disk type='block'>`` is returned; undo it
    with :func:`disconnect_volume`. See :func:`parse_connection_info`.

    :raises InvalidConnectionInfo: naming the key at fault; nothing was attached.
    :raises KernelRbdError: kernelspace mapping failed (see :mod:`rbd_driver.storage.krbd`).
    """
    return VolumeAttacher(conf, client).disk_xml(connection_info, target_dev, target_bus,
                                                 device=device, cache_mode=cache_mode,
                                                 serial=serial)


def disconnect_volume(connection_info: Any, conf: cfg.ConfigOpts | None = None,
                      client: RadosClient | None = None) -> bool:
    """Unmap a volume :func:`volume_disk_xml` mapped in kernelspace; True if it did.

    :raises KernelRbdError: the device is still in use.
    """
    return VolumeAttacher(conf, client).disconnect(connection_info)
