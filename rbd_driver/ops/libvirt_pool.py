# SPDX-License-Identifier: Apache-2.0
"""libvirt's RBD storage pool on the library's pool, as the ``[rbd]`` options describe it.

CloudStack's KVM agent keeps its RBD disks in a libvirt storage pool of type
``rbd``. :func:`provision_libvirt_pool` defines one on ``[rbd] pool``, so that
libvirt and the library see the same disks: every monitor of the cluster
(the library's :class:`~rbd_driver.storage.monitors.MonitorCache`), and
``<auth>`` as ``[rbd] user`` with the library's libvirt ceph secret. The
XML and the libvirt calls are :mod:`rbd_driver.libvirt.storage_pool`.
"""

from __future__ import annotations

from typing import Any

from rbd_driver import exception
from rbd_driver.libvirt import storage_pool
from rbd_driver.libvirt.storage_pool import PoolResult
from rbd_driver.storage.monitors import MonitorCache
from rbd_driver.storage.rados_client import RadosClient

__all__ = ["pool_source", "provision_libvirt_pool"]


def pool_source(conf: Any, client: RadosClient, libvirt_conn: Any) -> storage_pool.RbdPoolSource:
    """Return what a libvirt RBD pool on ``[rbd] pool`` points at, checked.

    :raises ConfigError: ``[rbd] user`` is unset.
    :raises PoolNotFound: ``[rbd] pool`` does not exist.
    :raises LibvirtPoolError: no ceph secret for the user on ``libvirt_conn``.
    """
    group = conf.rbd
    if not group.user:
        raise exception.ConfigError(detail="[rbd] user must name the cephx user the libvirt "
                                           "pool authenticates as")
    with client.ioctx(group.pool, op="check the pool of a libvirt RBD pool"):
        pass
    monitors = MonitorCache(client, ttl=group.monitor_cache_ttl).get()
    hosts = tuple(m.preferred for m in monitors)
    secret_uuid = storage_pool.find_ceph_secret(group.user, group.secret_uuid, libvirt_conn)
    return storage_pool.RbdPoolSource(group.pool, hosts, group.user, secret_uuid)


def provision_libvirt_pool(conf: Any, client: RadosClient, name: str, *, autostart: bool = True,
                           libvirt_conn: Any = None) -> PoolResult:
    """Define, start and autostart libvirt's RBD storage pool ``name`` on ``[rbd] pool``.

    The pool lists every monitor (asked through ``client``) and
    authenticates as ``[rbd] user`` with the libvirt ceph secret ``[rbd]
    secret_uuid`` (else the one the library defined for the user), on
    ``libvirt_conn`` or ``[rbd] libvirt_uri``. Idempotent: a pool ``name``
    with the same definition is kept (and started);
    :func:`~rbd_driver.libvirt.storage_pool.define_rbd_pool` says the rest.

    :raises ConfigError: ``[rbd] user`` is unset.
    :raises PoolNotFound: ``[rbd] pool`` does not exist (checked before libvirt is asked).
    :raises LibvirtPoolError: no such secret; a pool ``name`` with another
        definition; or libvirt refused.
    """
    with storage_pool.connection(conf.rbd.libvirt_uri, name, libvirt_conn) as conn:
        source = pool_source(conf, client, conn)
        return storage_pool.define_rbd_pool(name, source, autostart=autostart, conn=conn)
