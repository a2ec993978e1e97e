# SPDX-License-Identifier: Apache-2.0
"""Health and capacity data collector: one versioned JSON document.

What Ganeti's design asked a Ceph data collector for, gathered in-process
through librados/librbd with a bounded run time::

    {"version": 1, "timestamp": "...", "elapsed_s": 0.4, "complete": true,
     "errors": [],
     "cluster": {"fsid", "health": {"status", "checks"},
                 "monitors": {"total", "in_quorum", "quorum_names"},
                 "osds": {"total", "up", "in"},
                 "pgs": {"total", "by_state", "all_active_clean"}},
     "pools": [{"name", "stored", "used", "max_avail", "objects"}],
     "images": [{"pool", "name", "provisioned", "used", "parent"}]}

Per-image ``used`` comes from ``diff_iterate`` over whole objects (the object
map makes that a metadata walk with fast-diff), never from reading data.
A section that fails or runs out of time is reported in ``errors`` and
``complete`` is false; the call itself still returns.
"""

from __future__ import annotations

import copy
import datetime
import math
import threading
import time
from collections.abc import Iterable
from typing import Any

from rbd_driver.storage.rados_client import RadosClient
from rbd_driver.storage.usage import image_names, image_usage

__all__ = ["SCHEMA_VERSION", "collect", "collect_from_conf", "image_usage"]

SCHEMA_VERSION = 1


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> int:
        """Whole seconds left for the next monitor call (at least 1)."""
        return max(1, int(self.end - time.monotonic()))

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.end


def _cluster_section(client: RadosClient, deadline: _Deadline) -> dict[str, Any]:
    status = client.mon_command("status", timeout=deadline.left())
    health = status.get("health", {})
    osdmap = status.get("osdmap", {})
    osdmap = osdmap.get("osdmap", osdmap)  # older releases nest it once more
    pgmap = status.get("pgmap", {})
    by_state = {s["state_name"]: s["count"] for s in pgmap.get("pgs_by_state", [])}
    total_pgs = int(pgmap.get("num_pgs", 0))
    return {
        "fsid": status.get("fsid"),
        "health": {
            "status": health.get("status"),
            "checks": {
                name: {"severity": check.get("severity"),
                       "summary": check.get("summary", {}).get("message")}
                for name, check in health.get("checks", {}).items()
            },
        },
        "monitors": {
            "total": status.get("monmap", {}).get("num_mons"),
            "in_quorum": len(status.get("quorum_names", [])),
            "quorum_names": status.get("quorum_names", []),
        },
        "osds": {"total": osdmap.get("num_osds"), "up": osdmap.get("num_up_osds"),
                 "in": osdmap.get("num_in_osds")},
        "pgs": {"total": total_pgs, "by_state": by_state,
                "all_active_clean": by_state.get("active+clean", 0) == total_pgs},
    }


def _pools_section(client: RadosClient, deadline: _Deadline) -> list[dict[str, Any]]:
    df = client.mon_command("df", timeout=deadline.left())
    return [
        {"name": p["name"], "stored": p["stats"].get("stored"),
         "used": p["stats"].get("bytes_used"), "max_avail": p["stats"].get("max_avail"),
         "objects": p["stats"].get("objects")}
        for p in df.get("pools", [])
    ]


def _images_section(client: RadosClient, pools: Iterable[str], deadline: _Deadline,
                    errors: list[str]) -> list[dict[str, Any]]:
    images: list[dict[str, Any]] = []
    for pool in pools:
        names = image_names(client, pool)
        for index, name in enumerate(names):
            if deadline.passed:
                errors.append(f"images: time bound reached after {index} of {len(names)} "
                              f"images in pool {pool}")
                return images
            try:
                images.append(image_usage(client, pool, name))
            except Exception as err:  # one bad image must not hide the others
                errors.append(f"images: {pool}/{name}: {err}")
    return images


def _new_doc() -> dict[str, Any]:
    return {
        "version": SCHEMA_VERSION,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "errors": [],
        "cluster": None,
        "pools": [],
        "images": [],
        "complete": False,
    }


def collect(client: RadosClient, pools: Iterable[str] = (), time_bound: float = 10.0,
            images: bool = True, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the health and capacity document (see the module docstring).

    :param pools: pools whose images are measured (cluster and pool sections
        always cover the whole cluster).
    :param time_bound: seconds after which no new section or image is
        started; a call already waiting on an OSD is bounded by the client's
        ``op_timeout`` (use :func:`collect_from_conf` for a hard bound).
    :param doc: a document to fill in place (for a caller that may give up).

    Never raises for cluster errors: they land in ``errors``.
    """
    started = time.monotonic()
    deadline = _Deadline(time_bound)
    doc = doc if doc is not None else _new_doc()
    errors: list[str] = doc["errors"]
    sections = [("cluster", lambda: _cluster_section(client, deadline)),
                ("pools", lambda: _pools_section(client, deadline))]
    if images:
        sections.append(("images", lambda: _images_section(client, pools, deadline, errors)))
    for key, gather in sections:
        if deadline.passed:
            errors.append(f"{key}: not gathered, time bound of {time_bound}s reached")
            continue
        try:
            doc[key] = gather()
        except Exception as err:  # report, never raise: this runs on a sick cluster
            errors.append(f"{key}: {err}")
    doc["complete"] = not errors
    doc["elapsed_s"] = round(time.monotonic() - started, 3)
    return doc


def collect_from_conf(conf: Any, pools: Iterable[str] | None = None, time_bound: float = 10.0,
                      images: bool = True) -> dict[str, Any]:
    """Collect with a private connection, returning within about ``time_bound`` seconds.

    The work runs in a thread that owns its connection; if it is not done by
    the bound, what was gathered is returned, marked incomplete, and the
    thread closes its connection when its last call times out.
    ``pools`` defaults to ``[rbd] pool`` and ``image_cache_pool``.
    """
    bound = max(1, int(math.ceil(time_bound)))
    client = RadosClient(conf.rbd.ceph_conf, user=conf.rbd.user, keyring=conf.rbd.keyring,
                         connect_timeout=min(conf.rbd.connect_timeout, bound),
                         op_timeout=bound)
    if pools is None:
        pools = [p for p in (conf.rbd.pool, conf.rbd.image_cache_pool) if p]
    pools = list(pools)
    doc = _new_doc()
    started = time.monotonic()

    def work() -> None:
        try:
            collect(client, pools, time_bound, images, doc=doc)
        finally:
            client.close()

    worker = threading.Thread(target=work, name="rbd-driver-collector", daemon=True)
    worker.start()
    worker.join(time_bound + 1)
    if worker.is_alive():
        partial = copy.deepcopy(doc)
        partial["errors"].append(f"time bound of {time_bound}s reached; the rest was abandoned")
        partial["complete"] = False
        partial["elapsed_s"] = round(time.monotonic() - started, 3)
        return partial
    return doc
