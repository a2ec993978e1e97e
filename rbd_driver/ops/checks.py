# SPDX-License-Identifier: Apache-2.0
"""Checks that the configured cephx user can do what a compute host needs.

:func:`blocklist_right`: can the user blocklist a dead client? A disk's
exclusive lock (librbd ``exclusive-lock``) belongs to one client at a time.
When that client dies with the lock (its host crashed, its QEMU was
SIGKILLed), the next client to write, on a host that takes over the guest
(evacuation, a migration whose source died, a restarted guest), must
*break* the lock, and librbd breaks it only after blocklisting the dead
client in the OSD map, so that the dead one can never write again. The mon
command for that is ``osd blocklist add``; ``profile rbd`` on the mon grants
it (``allow command "osd blocklist" with blocklistop=add`` and an address of
the form ``*/nonce``), an older ``mon 'allow r'`` does not. Without it the
takeover fails with EACCES after the dead client's watch times out, and the
guest cannot write its disk.

How the check asks without changing anything: it sends ``osd blocklist add``
with an address that matches the cap's pattern but that no monitor can parse
(``rbd-driver-probe/0``). The monitor checks caps first: a user without the
right gets EACCES; a user with it gets EINVAL "unable to parse address",
and nothing is blocklisted. (The user cannot read its own caps: ``auth get``
needs more than ``profile rbd``; and ``osd blocklist ls`` is not granted by
``profile rbd`` either, so listing cannot tell.)

``rbd-driver provision`` gives users ``profile rbd`` on the mon, which holds
this right; ``rbd-driver check`` runs these checks and says what to fix.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rbd_driver import exception
from rbd_driver.storage.rados_client import RadosClient

__all__ = ["BLOCKLIST_PROBE_ADDR", "Check", "CheckReport", "blocklist_right", "check_from_conf"]

# Matches profile rbd's address pattern (^[^/]+/[0-9]+$) but is no address.
BLOCKLIST_PROBE_ADDR = "rbd-driver-probe/0"


@dataclasses.dataclass(frozen=True)
class Check:
    """One check: ``ok`` is True (passed), False (failed) or None (could not tell)."""

    name: str
    ok: bool | None
    detail: str
    fix: str | None = None


@dataclasses.dataclass
class CheckReport:
    """Every check run for one cephx user."""

    user: str
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"user": self.user, "ok": self.ok,
                "checks": [dataclasses.asdict(check) for check in self.checks]}


def _fix(user: str) -> str:
    return (f"give client.{user} 'profile rbd' on the mon: rbd-driver provision from-conf "
            f"(or: ceph auth caps client.{user} mon 'profile rbd' osd '<its osd caps>')")


def blocklist_right(client: RadosClient) -> Check:
    """Return whether ``client``'s user may blocklist a dead lock owner (see the module doc)."""
    user = client.user or "admin"
    try:
        client.mon_command("osd blocklist", blocklistop="add", addr=BLOCKLIST_PROBE_ADDR)
    except exception.PermissionDenied:
        return Check("blocklist", False,
                     f"client.{user} may not run 'osd blocklist add': it cannot take over the "
                     "exclusive lock of a disk whose last writer died (crashed host, killed "
                     "QEMU); guests taken over there cannot write", _fix(user))
    except exception.InvalidArgument as err:
        if "parse" in str(err):
            return Check("blocklist", True,
                         f"client.{user} may blocklist a dead lock owner (osd blocklist add)")
        return Check("blocklist", None, f"unexpected answer to the probe: {err}")
    except exception.RbdDriverError as err:
        return Check("blocklist", None, f"could not probe: {err}")
    # A monitor that blocklisted the probe address would be a surprise: say so.
    return Check("blocklist", None, f"the monitor accepted the probe address "
                                    f"{BLOCKLIST_PROBE_ADDR}; check 'ceph osd blocklist ls'")


def check_from_conf(conf: Any, **modules: Any) -> CheckReport:
    """Connect as ``[rbd] user`` and run every check.

    :raises ClusterConnectionError: the user cannot connect at all.
    """
    with RadosClient.from_conf(conf, **modules) as client:
        client.connect()
        return CheckReport(client.user or "admin", [blocklist_right(client)])
