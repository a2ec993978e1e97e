# SPDX-License-Identifier: Apache-2.0
"""``rbd-driver secret define``: the libvirt secret of a compute host, without admin creds.

On a hypervisor, QEMU reads the cephx key of ``[rbd] user`` from a libvirt
secret (``[rbd] secret_uuid``). This command defines it, or sets its value,
in the local libvirtd (``[rbd] libvirt_uri``) from the user's own keyring
(``[rbd] keyring``, else ``/etc/ceph/ceph.client.<user>.keyring``). It first
connects to the cluster as that user, so a wrong or stale keyring is named
before libvirt is touched. No admin key is needed, and the key is never
printed: only the secret's UUID and usage.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from oslo_config import cfg

from rbd_driver.cli._common import Handler, Renderer, Result
from rbd_driver.cli.errors import CommandError
from rbd_driver.cli.output import fields
from rbd_driver.ops.provision import default_keyring_path
from rbd_driver.storage import cephx
from rbd_driver.storage.rados_client import RadosClient

__all__ = ["HANDLERS", "TEXT", "add_parsers", "secret"]


def add_parsers(sub: Any) -> None:
    """Add ``secret`` and its action to the subparsers ``sub``."""
    sc = sub.add_parser("secret", help="the libvirt secret of [rbd] user on this host "
                                       "(no admin credentials needed)")
    actions = sc.add_subparsers(dest="action", required=True, metavar="ACTION")
    define = actions.add_parser("define", help="define or update the secret [rbd] secret_uuid "
                                               "from the keyring of [rbd] user")
    define.add_argument("--uri", metavar="URI",
                        help="libvirt connection (default: [rbd] libvirt_uri)")


def _quiet_libvirt() -> None:
    try:
        import libvirt
    except ImportError:
        return  # define_ceph_secret names what is missing
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def secret(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    from rbd_driver.libvirt import secret as libvirt_secret

    group = conf.rbd
    if not group.user:
        raise CommandError("[rbd] user is unset: it names the cephx user whose key the "
                           "secret holds; next: set it in the config file")
    keyring = group.keyring or default_keyring_path(group.user)
    if not os.access(keyring, os.R_OK):
        raise CommandError(f"no keyring for client.{group.user} at {keyring}; next: copy it "
                           "there from the host that ran 'rbd-driver provision from-conf', or "
                           "set [rbd] keyring")
    key = cephx.read_key(keyring, f"client.{group.user}")
    with RadosClient(group.ceph_conf, user=group.user, keyring=keyring,
                     connect_timeout=group.connect_timeout,
                     op_timeout=group.op_timeout) as client:
        fsid = client.get_fsid()  # the key works: KeyRejected etc. otherwise
    _quiet_libvirt()
    uri = args.uri or group.libvirt_uri
    uuid = libvirt_secret.define_ceph_secret(group.user, key, secret_uuid=group.secret_uuid,
                                             uri=uri)
    result = {"secret_uuid": uuid, "usage": libvirt_secret.usage_name(group.user),
              "uri": uri, "keyring": keyring, "cluster": fsid}
    if not group.secret_uuid:
        result["next"] = f"set [rbd] secret_uuid = {uuid} in the config file"
    return result, 0


HANDLERS: dict[str, Handler] = {"secret": secret}
TEXT: dict[str, Renderer] = {"secret": lambda result, args: fields(result)}
