# SPDX-License-Identifier: Apache-2.0
"""``rbd-driver provision pool|user|from-conf|rotate-key|libvirt-pool``.

The command-line face of :class:`rbd_driver.ops.provision.Provisioner`: the
parsers, the handlers and their text (the contract of :mod:`rbd_driver.cli._common`).

Provisioning needs a user allowed to create pools and cephx users, which the
``[rbd] user`` of a compute host is not: these commands connect as
``--admin-id`` (default ``admin``) with ``--admin-keyring`` (default: the
keyring ceph.conf names), to ``[rbd] ceph_conf``; ``libvirt-pool`` connects as
``[rbd] user``, whose monitors and secret the pool uses. No key is ever printed:
results carry the entity, its caps and the keyring *path*.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import secrets
from collections.abc import Iterator
from typing import Any

from oslo_config import cfg

from rbd_driver import exception
from rbd_driver.cli._common import Handler, Renderer, Result, positive_int
from rbd_driver.cli.config import warn
from rbd_driver.cli.output import fields, table
from rbd_driver.encryption import FileKeyManager
from rbd_driver.ops import libvirt_pool, provision
from rbd_driver.ops.provision import CephxUser, Provisioner
from rbd_driver.storage import cephx, monitors
from rbd_driver.storage.rados_client import RadosClient

__all__ = ["HANDLERS", "TEXT", "add_parsers", "provision_cmd"]


def add_parsers(sub: Any) -> None:
    """Add ``provision`` and its actions to the subparsers ``sub``."""
    admin = argparse.ArgumentParser(add_help=False)
    admin.add_argument("--admin-id", default="admin", metavar="USER",
                       help="cephx user that may create pools and users, without 'client.' "
                            "(default admin)")
    admin.add_argument("--admin-keyring", metavar="PATH",
                       help="its keyring (default: the keyring ceph.conf names)")
    pg = argparse.ArgumentParser(add_help=False)
    pg.add_argument("--pg-num", type=positive_int, default=provision.DEFAULT_PG_NUM, metavar="N",
                    help=f"PGs of a pool it creates (default {provision.DEFAULT_PG_NUM}); "
                         "an existing pool keeps its own")

    pv = sub.add_parser("provision", help="pools and least-privilege cephx users "
                                          "(needs admin credentials)")
    actions = pv.add_subparsers(dest="action", required=True, metavar="ACTION")
    pool = actions.add_parser("pool", parents=[admin, pg],
                              help="create a pool for RBD (application rbd, initialised)")
    pool.add_argument("name", metavar="NAME", help="pool name")
    user = actions.add_parser("user", parents=[admin],
                              help="create a cephx user with profile rbd caps, or fix its caps")
    user.add_argument("name", metavar="NAME", help="cephx user, without 'client.'")
    user.add_argument("--writable", action="append", required=True, metavar="POOL",
                      help="grant 'profile rbd' on this pool (repeatable, at least one)")
    user.add_argument("--read-only", action="append", default=[], metavar="POOL",
                      help="grant 'profile rbd-read-only' on this pool (repeatable)")
    user.add_argument("--keyring", metavar="PATH",
                      help="write its keyring here, mode 0600 (default: none is written)")
    ps = actions.add_parser("passphrase-secret",
                            help="define an encrypted disk's passphrase secret on "
                                 "[rbd] libvirt_uri (never on the command line)")
    ps.add_argument("secret_uuid", metavar="SECRET_UUID",
                    help="UUID of the libvirt passphrase secret (DiskEncryption.secret_uuid)")
    given = ps.add_mutually_exclusive_group(required=True)
    given.add_argument("--from-file", metavar="PATH",
                       help="the passphrase is in this file (mode 0600), as the file key "
                            "manager keeps it")
    given.add_argument("--generate", metavar="PATH",
                       help="make a random passphrase, write it to this new file (mode 0600)")
    fc = actions.add_parser("from-conf", parents=[admin, pg],
                            help="the pools and the [rbd] user that the config file describes")
    fc.add_argument("--keyring", metavar="PATH",
                    help="where to write the user's keyring (default: [rbd] keyring, else "
                         "/etc/ceph/ceph.client.<user>.keyring)")
    fc.add_argument("--define-secret", action="store_true",
                    help="also define the libvirt ceph secret on [rbd] libvirt_uri")
    fc.add_argument("--allow-snapshots", action="store_true",
                    help="grant 'profile rbd' (not read-only) on [rbd] snapshot_pool and "
                         "[rbd] image_pools, so that direct_snapshot can write instance "
                         "snapshots there (default: read-only, least privilege)")
    rk = actions.add_parser("rotate-key", parents=[admin],
                            help="give a user a new key (caps kept) and rewrite its keyring")
    rk.add_argument("name", nargs="?", metavar="NAME",
                    help="cephx user, without 'client.' (default: [rbd] user)")
    rk.add_argument("--keyring", metavar="PATH",
                    help="where to write its new keyring (default: [rbd] keyring, else "
                         "/etc/ceph/ceph.client.<user>.keyring)")
    lp = actions.add_parser("libvirt-pool",
                            help="define and start libvirt's RBD storage pool on [rbd] pool, "
                                 "as [rbd] user with its libvirt secret (needs no admin)")
    lp.add_argument("name", metavar="NAME", help="libvirt storage pool name")
    lp.add_argument("--no-autostart", action="store_true",
                    help="do not mark the pool autostart (default: autostart)")


def _quiet_libvirt() -> None:
    # libvirt's default error handler prints every error to stderr as well;
    # the error still reaches us as an exception, reported as one line.
    try:
        import libvirt
    except ImportError:
        return  # define_ceph_secret reports that itself
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


@contextlib.contextmanager
def _provisioner(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Iterator[Provisioner]:
    if args.admin_keyring and not os.access(args.admin_keyring, os.R_OK):
        raise exception.ConfigError(detail=(
            f"admin keyring {args.admin_keyring} does not exist or is not readable "
            "(--admin-keyring)"))
    group = conf.rbd
    with RadosClient(group.ceph_conf, user=args.admin_id, keyring=args.admin_keyring,
                     connect_timeout=group.connect_timeout,
                     op_timeout=group.op_timeout) as client:
        yield Provisioner(client)


def _user_doc(user: CephxUser) -> dict[str, Any]:
    # Never the key: the entity, its caps and where its keyring is.
    return {"entity": user.entity, "caps": user.caps, "keyring": user.keyring}


def _rotate_key(prov: Provisioner, args: argparse.Namespace, conf: cfg.ConfigOpts,
                keyring: str | None) -> dict[str, Any]:
    user = args.name or conf.rbd.user
    if not user:
        raise exception.ConfigError(detail="provision rotate-key needs NAME or [rbd] user")
    path = keyring or conf.rbd.keyring or provision.default_keyring_path(user)
    cephx.check_keyring_path(path, "--keyring" if keyring else "[rbd] keyring")
    rotated = prov.rotate_key(user, keyring=path)
    return {**_user_doc(rotated),
            "next": f"copy {path} to each compute host, then run 'rbd-driver secret define' "
                    "there (running guests keep their connections)"}


def _keyring_mismatch(keyring: str | None, conf: cfg.ConfigOpts) -> str | None:
    """The warning when ``--keyring`` writes where ``[rbd] keyring`` will not read."""
    configured = conf.rbd.keyring
    if not keyring:
        return None
    if configured and os.path.abspath(configured) == os.path.abspath(keyring):
        return None
    if not configured and os.path.abspath(keyring) == provision.default_keyring_path(
            conf.rbd.user or ""):
        return None  # where ceph.conf's default keyring search finds it
    if configured:
        return (f"the keyring goes to {keyring} (--keyring) but [rbd] keyring is {configured}, "
                "where every other command reads it; next: set [rbd] keyring = "
                f"{keyring}, or drop --keyring")
    return (f"the keyring goes to {keyring} (--keyring) but [rbd] keyring is unset, so other "
            f"commands look where ceph.conf says; next: set [rbd] keyring = {keyring}")


def _passphrase_secret(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    from rbd_driver.libvirt import passphrase as libvirt_passphrase

    path = args.from_file or args.generate
    if args.generate:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    manager = FileKeyManager(conf)  # the same 0600 rule as the file key manager
    value = manager.read_file(path, args.secret_uuid)
    _quiet_libvirt()
    defined = libvirt_passphrase.define_passphrase_secret(args.secret_uuid, value,
                                                          uri=conf.rbd.libvirt_uri)
    return {"secret_uuid": defined, "uri": conf.rbd.libvirt_uri, "file": path}, 0


def provision_cmd(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    if args.action == "libvirt-pool":
        return _libvirt_pool(args, conf)
    if args.action == "passphrase-secret":
        return _passphrase_secret(args, conf)
    keyring = getattr(args, "keyring", None)
    if keyring:  # before connecting; the library checks again before it creates anything
        cephx.check_keyring_path(keyring, "--keyring")
    with _provisioner(args, conf) as prov:
        if args.action == "pool":
            return dataclasses.asdict(prov.create_pool(args.name, args.pg_num)), 0
        if args.action == "rotate-key":
            return _rotate_key(prov, args, conf, keyring), 0
        if args.action == "user":
            user = prov.ensure_user(args.name, args.writable, args.read_only, keyring=keyring)
            return _user_doc(user), 0
        mismatch = _keyring_mismatch(keyring, conf)
        if mismatch:
            warn(mismatch)
        if args.define_secret:
            _quiet_libvirt()
        report = provision.provision_from_conf(conf, prov.client, keyring=keyring,
                                               pg_num=args.pg_num,
                                               define_secret=args.define_secret,
                                               allow_snapshots=args.allow_snapshots)
    return {"pools": [dataclasses.asdict(p) for p in report.pools],
            "user": _user_doc(report.user), "secret_uuid": report.secret_uuid}, 0


def _libvirt_pool(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    # As [rbd] user, not admin: it only reads the monitors, and the pool uses it.
    _quiet_libvirt()
    with RadosClient.from_conf(conf) as client:
        result = libvirt_pool.provision_libvirt_pool(conf, client, args.name,
                                                     autostart=not args.no_autostart)
    doc = dataclasses.asdict(result)
    source = doc.pop("source")
    return {**doc, "ceph_pool": source["pool"], "user": source["user"],
            "secret_uuid": source["secret_uuid"],
            "monitors": [monitors.host_port(tuple(h)) for h in source["hosts"]]}, 0


def _provision_text(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    if args.action != "from-conf":
        return fields(result)
    # from-conf:
    lines = table(["POOL", "CREATED", "PG_NUM"],
                  [[p["name"], "yes" if p["created"] else "no (exists)", p["pg_num"]]
                   for p in result["pools"]], right=(2,))
    return lines + [""] + fields({"user": result["user"], "secret_uuid": result["secret_uuid"]})


HANDLERS: dict[str, Handler] = {"provision": provision_cmd}
TEXT: dict[str, Renderer] = {"provision": _provision_text}
