# SPDX-License-Identifier: Apache-2.0
"""What the fake monitor answers to ``Rados.mon_command``.

:func:`default_handlers` gives the handlers a :class:`FakeCluster` starts
with: ``status``, ``health``, ``fsid``, ``df`` and ``mon dump``, each
answering from the cluster's current state, as JSON when the command asks
for ``"format": "json"`` and as plain text otherwise. Tests add or replace
handlers through ``cluster.mon_commands`` (prefix -> handler).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rbd_driver.testing.fakes.fake_cluster import FakeCluster

__all__ = ["MON_ADDR", "default_handlers"]

Reply = tuple[int, bytes, str]
Handler = Callable[[dict[str, Any], bytes], Reply]

# The one fake monitor, on a documentation address (RFC 5737) nothing listens on.
MON_ADDR = "192.0.2.1"


def _reply(cmd: dict[str, Any], data: Any, text: str) -> Reply:
    if str(cmd.get("format", "")).startswith("json"):
        return 0, json.dumps(data).encode(), ""
    return 0, text.encode(), ""


def _health(cluster: FakeCluster) -> dict[str, Any]:
    return {"status": cluster.health, "checks": {}, "mutes": []}


def _status(cluster: FakeCluster, cmd: dict[str, Any]) -> Reply:
    used = cluster.used_bytes()
    data = {
        "fsid": cluster.fsid,
        "health": _health(cluster),
        "election_epoch": 3,
        "quorum": [0],
        "quorum_names": ["a"],
        "monmap": {"epoch": 1, "min_mon_release_name": "pacific", "num_mons": 1},
        "osdmap": {"epoch": 10, "num_osds": 3, "num_up_osds": 3, "num_in_osds": 3},
        "pgmap": {
            "num_pools": len(cluster.pools),
            "num_objects": sum(p.usage()[1] for p in cluster.pools.values()),
            "bytes_used": used,
            "bytes_avail": max(0, cluster.total_bytes - used),
            "bytes_total": cluster.total_bytes,
        },
    }
    text = f"  cluster:\n    id:     {cluster.fsid}\n    health: {cluster.health}\n"
    return _reply(cmd, data, text)


def _df(cluster: FakeCluster, cmd: dict[str, Any]) -> Reply:
    total = cluster.total_bytes
    used = cluster.used_bytes()
    avail = max(0, total - used)
    pools = []
    for pool in cluster.pools.values():
        pool_used, objects = pool.usage()
        stats = {
            "stored": pool_used,
            "objects": objects,
            "kb_used": (pool_used + 1023) // 1024,
            "bytes_used": pool_used,
            "percent_used": pool_used / total if total else 0.0,
            "max_avail": avail,
        }
        pools.append({"name": pool.name, "id": pool.id, "stats": stats})
    data = {
        "stats": {
            "total_bytes": total,
            "total_avail_bytes": avail,
            "total_used_bytes": used,
            "total_used_raw_bytes": used,
            "total_used_raw_ratio": used / total if total else 0.0,
        },
        "pools": pools,
    }
    return _reply(cmd, data, f"TOTAL {total} AVAIL {avail} USED {used}\n")


def _mon_dump(cluster: FakeCluster, cmd: dict[str, Any]) -> Reply:
    v2, v1 = f"{MON_ADDR}:3300", f"{MON_ADDR}:6789"
    mon = {
        "rank": 0,
        "name": "a",
        "public_addrs": {
            "addrvec": [{"type": "v2", "addr": v2, "nonce": 0}, {"type": "v1", "addr": v1, "nonce": 0}]
        },
        "addr": f"{v1}/0",
        "public_addr": f"{v1}/0",
    }
    data = {"epoch": 1, "fsid": cluster.fsid, "min_mon_release_name": "pacific", "mons": [mon], "quorum": [0]}
    text = f"epoch 1\nfsid {cluster.fsid}\n0: [v2:{v2}/0,v1:{v1}/0] mon.a\n"
    return _reply(cmd, data, text)


def default_handlers(cluster: FakeCluster) -> dict[str, Handler]:
    """Return the prefix -> handler map a new cluster answers with."""
    return {
        "status": lambda cmd, inbuf: _status(cluster, cmd),
        "health": lambda cmd, inbuf: _reply(cmd, _health(cluster), cluster.health),
        "fsid": lambda cmd, inbuf: _reply(cmd, {"fsid": cluster.fsid}, cluster.fsid),
        "df": lambda cmd, inbuf: _df(cluster, cmd),
        "mon dump": lambda cmd, inbuf: _mon_dump(cluster, cmd),
    }
