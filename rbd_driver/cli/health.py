# SPDX-License-Identifier: Apache-2.0
"""``rbd-driver status`` and ``rbd-driver pool-info``: health and capacity.

``status`` prints the data collector's document (:mod:`rbd_driver.ops.collector`)
with ``--json``; as text, a summary to take in at a glance, in the order of
``ceph -s`` and ``ceph df``: health and its checks first, then monitors,
OSDs and PGs, each pool's stored, used and free space, the measured images'
provisioned and used bytes per pool, and what the collector could not
gather.
"""

from __future__ import annotations

import argparse
from typing import Any

from oslo_config import cfg

from rbd_driver import imagebackend
from rbd_driver.cli._common import Handler, Renderer, Result
from rbd_driver.cli.errors import CommandError
from rbd_driver.cli.output import fields, human_size, table
from rbd_driver.ops import collector

__all__ = ["HANDLERS", "TEXT", "add_parsers", "pool_info", "status", "status_text"]


def add_parsers(sub: Any) -> None:
    """Add ``status`` and ``pool-info`` to the subparsers ``sub``."""
    st = sub.add_parser("status", help="cluster health and capacity (the data collector)")
    st.add_argument("--pool", action="append", help="measure images of this pool (repeatable)")
    st.add_argument("--time-bound", type=float, default=10.0,
                    help="return within about this many seconds, with what was gathered "
                         "(default 10)")
    st.add_argument("--no-images", action="store_true", help="skip per-image usage")

    pi = sub.add_parser("pool-info", help="total, free and used bytes of a pool")
    pi.add_argument("pool", nargs="?", help="default: [rbd] pool")


def status(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    pools = args.pool or None
    doc = collector.collect_from_conf(conf, pools=pools, time_bound=args.time_bound,
                                      images=not args.no_images)
    if doc["cluster"] is None:
        # Nothing was collected: the first error is the answer (the connection's).
        raise CommandError(doc["errors"][0] if doc["errors"] else "no answer from the cluster")
    known = {p.get("name") for p in doc.get("pools") or []}
    missing = [p for p in pools or [] if p not in known]
    if missing and known:
        raise CommandError(f"pool {', '.join(missing)} does not exist (pools: "
                           f"{', '.join(sorted(str(p) for p in known))}); next: check --pool")
    return doc, 0


def pool_info(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    with imagebackend.Backend(conf) as backend:
        info = backend.driver("rbd").get_pool_info(args.pool or conf.rbd.pool)
    return {"pool": args.pool or conf.rbd.pool, **info}, 0


def _cluster_lines(cluster: dict[str, Any]) -> list[str]:
    health = cluster.get("health") or {}
    lines = [f"health:   {health.get('status') or 'unknown'}"]
    for name, check in sorted((health.get("checks") or {}).items()):
        lines.append(f"          {name}: {check.get('summary') or ''} "
                     f"({check.get('severity') or '?'})".rstrip())
    mons = cluster.get("monitors") or {}
    osds = cluster.get("osds") or {}
    pgs = cluster.get("pgs") or {}
    quorum = ",".join(mons.get("quorum_names") or []) or "none"
    by_state = sorted((pgs.get("by_state") or {}).items(), key=lambda kv: (-kv[1], kv[0]))
    lines += [
        f"cluster:  {cluster.get('fsid') or 'unknown'}",
        f"mon:      {mons.get('total')} daemons, {mons.get('in_quorum')} in quorum ({quorum})",
        f"osd:      {osds.get('total')} osds: {osds.get('up')} up, {osds.get('in')} in",
        f"pgs:      {pgs.get('total')} pgs: "
        + (", ".join(f"{count} {state}" for state, count in by_state) or "none"),
    ]
    return lines


def _images_by_pool(images: list[dict[str, Any]]) -> list[list[Any]]:
    totals: dict[str, list[int]] = {}
    for image in images:
        count = totals.setdefault(image["pool"], [0, 0, 0])
        count[0] += 1
        count[1] += int(image.get("provisioned") or 0)
        count[2] += int(image.get("used") or 0)
    return [[pool, n, human_size(provisioned), human_size(used)]
            for pool, (n, provisioned, used) in sorted(totals.items())]


def status_text(doc: dict[str, Any], args: argparse.Namespace | None = None) -> list[str]:
    """Return the status summary of a collector document (see the module docstring)."""
    cluster = doc.get("cluster")
    lines = (_cluster_lines(cluster) if cluster is not None
             else ["health:   unknown (the cluster did not answer)"])
    if doc.get("pools"):
        lines += ["", "POOLS:"]
        lines += ["  " + line for line in table(
            ["NAME", "STORED", "USED", "MAX AVAIL", "OBJECTS"],
            [[p["name"], human_size(p.get("stored")), human_size(p.get("used")),
              human_size(p.get("max_avail")), p.get("objects")] for p in doc["pools"]],
            right=(1, 2, 3, 4))]
    if doc.get("images"):
        lines += ["", "IMAGES:"]
        lines += ["  " + line for line in table(
            ["POOL", "IMAGES", "PROVISIONED", "USED"], _images_by_pool(doc["images"]),
            right=(1, 2, 3))]
    if doc.get("errors"):
        lines += ["", "ERRORS:"] + [f"  {error}" for error in doc["errors"]]
    lines += ["", f"collected {doc.get('timestamp')} in {doc.get('elapsed_s')} s"
              + ("" if doc.get("complete") else " (incomplete)")]
    return lines


HANDLERS: dict[str, Handler] = {"status": status, "pool-info": pool_info}
TEXT: dict[str, Renderer] = {"status": status_text, "pool-info": lambda doc, args: fields(doc)}
