# SPDX-License-Identifier: Apache-2.0
"""Provisioning: pools, least-privilege cephx users, keyrings, cache tiers.

What operators of other platforms do by hand with the ``ceph`` CLI (and
often with ``allow *`` caps and keys on command lines), done in-process
through ``mon_command`` and librbd, with an admin-level connection.

* :meth:`Provisioner.create_pool` creates a pool with a PG count, enables
  the ``rbd`` application and initialises it for RBD; it is idempotent.
* :meth:`Provisioner.ensure_user` creates or updates a cephx user with the
  least privilege a compute host needs: ``profile rbd`` on the instance pool
  (and any other writable pool, such as the image cache pool),
  ``profile rbd-read-only`` on image pools, and the same on any cache tier
  in front of those pools; it writes the keyring atomically, mode 0600.
* :meth:`Provisioner.rotate_key` gives a user a new key, keeping its caps.

Keys are held in :class:`~rbd_driver.storage.cephx.CephxKey` and never
logged, printed or put in an exception message. Pool and user names are
checked before use: they end up inside cap strings, where a space or comma
would let a name grant more than intended.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from rbd_driver import exception
from rbd_driver.storage import cephx
from rbd_driver.storage.cephx import CephxKey, validate_name
from rbd_driver.storage.rados_client import RadosClient

__all__ = [
    "CephxUser",
    "PoolResult",
    "ProvisionReport",
    "Provisioner",
    "default_keyring_path",
    "provision_from_conf",
    "snapshot_pools",
    "user_caps",
]

LOG = logging.getLogger(__name__)

DEFAULT_PG_NUM = 32
# Users that provisioning must never rewrite: changing their caps or key
# would lock operators or daemons out of the cluster.
_PROTECTED_USERS = frozenset({"admin"})


@dataclasses.dataclass(frozen=True)
class PoolResult:
    """A pool after :meth:`Provisioner.create_pool`: ``created`` is False if it existed."""

    name: str
    created: bool
    pg_num: int


@dataclasses.dataclass(frozen=True)
class CephxUser:
    """A cephx client user: its caps per service, its key (masked in repr), its keyring."""

    user: str
    caps: dict[str, str]
    key: CephxKey
    keyring: str | None = None

    @property
    def entity(self) -> str:
        return f"client.{self.user}"


@dataclasses.dataclass
class ProvisionReport:
    """What :func:`provision_from_conf` set up."""

    pools: list[PoolResult]
    user: CephxUser
    secret_uuid: str | None = None


def default_keyring_path(user: str) -> str:
    """Return where Ceph looks for ``user``'s keyring by default."""
    return f"/etc/ceph/ceph.client.{user}.keyring"


def _user_name(user: str) -> str:
    name = user[len("client."):] if user.startswith("client.") else user
    validate_name("cephx user", name)
    if name in _PROTECTED_USERS:
        raise exception.InvalidName(kind="cephx user", target=name,
                                    reason="provisioning never changes this user")
    return name


def user_caps(writable: Sequence[str], read_only: Sequence[str] = ()) -> dict[str, str]:
    """Return least-privilege caps: ``profile rbd`` on ``writable`` pools and
    ``profile rbd-read-only`` on ``read_only`` ones (a pool in both is writable).

    :raises InvalidName: a pool name is unsafe.
    :raises ValueError: no writable pool.
    """
    if not writable:
        raise ValueError("a user needs at least one writable pool")
    rw = list(dict.fromkeys(validate_name("pool", p) for p in writable))
    ro = [p for p in dict.fromkeys(validate_name("pool", p) for p in read_only) if p not in rw]
    osd = [f"profile rbd pool={p}" for p in rw] + [f"profile rbd-read-only pool={p}" for p in ro]
    return {
        "mon": "profile rbd",
        "osd": ", ".join(osd),
        "mgr": ", ".join(f"profile rbd pool={p}" for p in rw),
    }


def _flat_caps(caps: dict[str, str]) -> list[str]:
    return [item for service in sorted(caps) for item in (service, caps[service])]


def _only_entry(out: Any, entity: str) -> dict[str, Any]:
    entries = out if isinstance(out, list) else [out]
    for entry in entries:
        if isinstance(entry, dict) and entry.get("entity") == entity:
            return entry
    raise exception.ProvisioningError(target=entity, detail="the monitor returned no key for it")


class Provisioner:
    """Sets up pools and users through one admin-level connection.

    :param client: a :class:`~rbd_driver.storage.rados_client.RadosClient` whose user may run ``osd pool
        create`` and ``auth`` commands (e.g. ``client.admin``). It is not
        closed here.
    """

    def __init__(self, client: RadosClient) -> None:
        self.client = client

    # -- pools ------------------------------------------------------------------

    def _osd_pools(self) -> dict[str, dict[str, Any]]:
        dump = self.client.mon_command("osd dump")
        return {p["pool_name"]: p for p in dump.get("pools", [])}

    def create_pool(self, pool: str, pg_num: int = DEFAULT_PG_NUM, init: bool = True) -> PoolResult:
        """Create ``pool`` with ``pg_num`` PGs, enable ``rbd`` on it and initialise it.

        Idempotent: an existing pool keeps its PG count, and is only given
        the ``rbd`` application and initialised (``init``) if it lacks them.

        :raises InvalidName: the pool name is unsafe.
        :raises ProvisioningError: ``pg_num`` is not positive, or the pool is
            already used by another application.
        :raises PermissionDenied: the connection's user may not create pools.
        """
        validate_name("pool", pool)
        if not isinstance(pg_num, int) or pg_num < 1:
            raise exception.ProvisioningError(target=f"pool {pool}",
                                              detail=f"pg_num must be a positive integer, not {pg_num!r}")
        existing = self._osd_pools().get(pool)
        if existing is None:
            self.client.mon_command("osd pool create", pool=pool, pg_num=pg_num, pgp_num=pg_num,
                                    pool_type="replicated")
            LOG.info("created pool %s with %d PGs", pool, pg_num)
        apps = self.client.mon_command("osd pool application get", pool=pool) or {}
        if "rbd" not in apps:
            if apps:
                raise exception.ProvisioningError(
                    target=f"pool {pool}",
                    detail=f"it is used by application(s) {', '.join(sorted(apps))}, not rbd; "
                    "choose another pool")
            self.client.mon_command("osd pool application enable", pool=pool, app="rbd")
        if init:
            self.client.pool_init(pool)
        actual = int(existing["pg_num"]) if existing else pg_num
        if existing and actual != pg_num:
            LOG.info("pool %s exists with %d PGs (asked %d); left unchanged", pool, actual, pg_num)
        return PoolResult(pool, existing is None, actual)

    def add_cache_tier(self, base: str, cache: str, pg_num: int = DEFAULT_PG_NUM) -> PoolResult:
        """Put pool ``cache`` (created if missing) in front of ``base`` as a writeback tier.

        Idempotent. The tier gets a bloom hit set, as a writeback tier needs.

        :raises PoolNotFound: ``base`` does not exist.
        :raises ProvisioningError: ``cache`` is already a tier of another pool.
        """
        validate_name("pool", base)
        pools = self._osd_pools()
        if base not in pools:
            raise exception.PoolNotFound(pool=base)
        result = self.create_pool(cache, pg_num, init=False)
        pools = self._osd_pools()
        tier_of = pools[cache].get("tier_of", -1)
        if tier_of not in (-1, pools[base]["pool"]):
            raise exception.ProvisioningError(target=f"pool {cache}",
                                              detail="it is already a cache tier of another pool")
        if tier_of == -1:
            self.client.mon_command("osd tier add", pool=base, tierpool=cache)
        self.client.mon_command("osd tier cache-mode", pool=cache, mode="writeback")
        if pools[base].get("read_tier", -1) != pools[cache]["pool"]:
            self.client.mon_command("osd tier set-overlay", pool=base, overlaypool=cache)
        for var, val in (("hit_set_type", "bloom"), ("hit_set_count", "1"),
                         ("hit_set_period", "3600")):
            self.client.mon_command("osd pool set", pool=cache, var=var, val=val)
        LOG.info("pool %s is a writeback cache tier of %s", cache, base)
        return result

    def cache_tiers(self, pools: Iterable[str]) -> dict[str, list[str]]:
        """Return the cache-tier pools in front of each of ``pools`` (missing pools: none)."""
        by_name = self._osd_pools()
        by_id = {p["pool"]: name for name, p in by_name.items()}
        return {pool: sorted(by_id[t] for t in by_name[pool].get("tiers", []) if t in by_id)
                for pool in pools if pool in by_name}

    # -- users ------------------------------------------------------------------

    def caps_for(self, writable: Sequence[str], read_only: Sequence[str] = ()) -> dict[str, str]:
        """Return :func:`user_caps` for the pools plus the cache tiers in front of them.

        A tier gets the same profile as the pool it fronts, since client I/O
        to that pool is redirected to it.
        """
        tiers = self.cache_tiers([*writable, *read_only])
        rw = [name for p in writable for name in (p, *tiers.get(p, []))]
        ro = [name for p in read_only for name in (p, *tiers.get(p, []))]
        return user_caps(rw, ro)

    def ensure_user(self, user: str, writable: Sequence[str], read_only: Sequence[str] = (),
                    keyring: str | None = None, owner: tuple[int, int] | None = None) -> CephxUser:
        """Create ``client.<user>`` with least-privilege caps, or bring its caps to them.

        The key of an existing user is kept. When ``keyring`` is given, the
        key is written there atomically with mode 0600 (``owner``: optional
        ``(uid, gid)``).

        :raises InvalidName: the user or a pool name is unsafe, or the user is
            ``admin``.
        :raises KeyringError: the keyring could not be written.
        :raises PermissionDenied: the connection's user may not manage users.
        """
        name = _user_name(user)
        entity = f"client.{name}"
        caps = self.caps_for(writable, read_only)
        if keyring:
            cephx.check_keyring_path(keyring)  # before the user exists, not after
        try:
            out = self.client.mon_command("auth get-or-create", entity=entity,
                                          caps=_flat_caps(caps))
        except exception.InvalidArgument:
            # It exists with other caps: set exactly ours (narrowing too).
            self.client.mon_command("auth caps", entity=entity, caps=_flat_caps(caps))
            out = self.client.mon_command("auth get", entity=entity)
            LOG.warning("cephx user %s existed with other caps; set them to %s", entity, caps)
        entry = _only_entry(out, entity)
        key = CephxKey(str(entry.get("key", "")), source=f"the monitor's answer for {entity}")
        if keyring:
            cephx.write_keyring(keyring, entity, key, owner=owner)
        LOG.info("cephx user %s has caps %s%s", entity, caps,
                 f"; keyring {keyring}" if keyring else "")
        return CephxUser(name, caps, key, keyring)

    def get_user(self, user: str) -> CephxUser:
        """Return ``client.<user>`` with its caps and key.

        :raises ProvisioningError: the user does not exist or cannot be read.
        """
        name = _user_name(user)
        entity = f"client.{name}"
        try:
            out = self.client.mon_command("auth get", entity=entity)
        except exception.RbdDriverError as err:
            raise exception.ProvisioningError(target=entity, detail=f"cannot read it: {err}") from err
        entry = _only_entry(out, entity)
        key = CephxKey(str(entry.get("key", "")), source=f"the monitor's answer for {entity}")
        return CephxUser(name, dict(entry.get("caps", {})), key)

    def rotate_key(self, user: str, keyring: str | None = None,
                   owner: tuple[int, int] | None = None) -> CephxUser:
        """Give ``client.<user>`` a new random key, keeping its caps.

        The new key goes to the monitors in one ``auth import`` (in the input
        buffer, never in the command), then to ``keyring`` if given.
        Connections already open keep working until their tickets expire;
        new ones need the new key. Update the libvirt secret too
        (:func:`rbd_driver.libvirt.secret.define_ceph_secret`).

        :raises ProvisioningError: the user does not exist.
        :raises KeyringError: the keyring could not be written (the cluster
            already has the new key: write it again with
            :func:`~rbd_driver.storage.cephx.write_keyring`).
        """
        current = self.get_user(user)
        new_key = cephx.generate_key()
        text = cephx.keyring_text(current.entity, new_key, current.caps)
        self.client.mon_command("auth import", inbuf=text.encode())
        if keyring:
            cephx.write_keyring(keyring, current.entity, new_key, owner=owner)
        LOG.info("rotated the key of %s", current.entity)
        return dataclasses.replace(current, key=new_key, keyring=keyring)

    def delete_user(self, user: str) -> None:
        """Remove ``client.<user>``; a missing user is not an error."""
        self.client.mon_command("auth del", entity=f"client.{_user_name(user)}")
        LOG.info("removed cephx user client.%s", user)


def snapshot_pools(conf: Any) -> list[str]:
    """Return the pools ``direct_snapshot`` may write to under ``conf``: ``[rbd]
    snapshot_pool`` (if set) and the ``image_pools`` (a disk's snapshot goes to
    its golden image's pool by default).

    :raises ConfigError: neither is set.
    """
    group = conf.rbd
    pools = list(dict.fromkeys(([group.snapshot_pool] if group.snapshot_pool else [])
                               + list(group.image_pools)))
    if not pools:
        raise exception.ConfigError(
            detail="allowing instance snapshots needs [rbd] snapshot_pool or [rbd] image_pools "
                   "to name the pool(s) they are written to")
    return pools


def provision_from_conf(conf: Any, admin: RadosClient, *, keyring: str | None = None,
                        pg_num: int = DEFAULT_PG_NUM, define_secret: bool = False,
                        libvirt_conn: Any = None,
                        allow_snapshots: bool = False) -> ProvisionReport:
    """Set up what the ``[rbd]`` options describe, for ``[rbd] user``.

    Creates ``pool`` (and ``image_cache_pool``, and ``cache_tier_pool`` as a
    tier of ``pool``) when missing; creates or updates the user with
    ``profile rbd`` on them and ``profile rbd-read-only`` on ``image_pools``;
    writes its keyring to ``keyring`` (default ``[rbd] keyring``, else
    ``/etc/ceph/ceph.client.<user>.keyring``). With ``define_secret``, also
    defines the libvirt ceph secret (``[rbd] secret_uuid`` if set) on
    ``libvirt_conn`` or ``[rbd] libvirt_uri``.

    With ``allow_snapshots`` (off by default: least privilege), the user gets
    ``profile rbd`` instead of ``rbd-read-only`` on the pools instance
    snapshots are written to (:func:`snapshot_pools`), which ``direct_snapshot``
    needs; ``snapshot_pool`` is created if missing.

    :raises ConfigError: ``[rbd] user`` is unset; ``allow_snapshots`` without
        a pool to allow (checked before anything is created).
    :raises KeyringError: the keyring's directory is missing or not writable
        (checked before anything is created).
    """
    group = conf.rbd
    if not group.user:
        raise exception.ConfigError(detail="[rbd] user must name the cephx user to provision")
    path = keyring or group.keyring or default_keyring_path(group.user)
    # Before any pool is made: a half-done provisioning is worse than none.
    cephx.check_keyring_path(path, "keyring argument" if keyring else
                             "[rbd] keyring" if group.keyring else "default keyring path")
    extra = snapshot_pools(conf) if allow_snapshots else []
    prov = Provisioner(admin)
    writable = [group.pool] + ([group.image_cache_pool] if group.image_cache_pool else [])
    if allow_snapshots and group.snapshot_pool:
        writable.append(group.snapshot_pool)
    writable = list(dict.fromkeys(writable))
    pools = [prov.create_pool(p, pg_num) for p in writable]
    writable += [p for p in extra if p not in writable]
    if group.cache_tier_pool:
        pools.append(prov.add_cache_tier(group.pool, group.cache_tier_pool, pg_num))
    user = prov.ensure_user(group.user, writable, list(group.image_pools), keyring=path)
    secret_uuid = None
    if define_secret:
        from rbd_driver.libvirt import secret as libvirt_secret

        secret_uuid = libvirt_secret.define_ceph_secret(
            user.user, user.key, secret_uuid=group.secret_uuid, conn=libvirt_conn,
            uri=group.libvirt_uri)
    return ProvisionReport(pools, user, secret_uuid)
