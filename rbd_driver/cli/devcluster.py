"""``rbd-driver dev-cluster start|stop|status`` and ``rbd-driver demo``.

Both run on a throwaway local cluster (:mod:`rbd_driver.testing.cluster`)
and read no config file. ``dev-cluster`` prints as it always has (the
``ceph.conf`` path, or the status as JSON); ``demo`` prints its steps as it
goes, or with ``--json`` only its report.
"""

from __future__ import annotations

import argparse
from typing import Any

from oslo_config import cfg

from rbd_driver.cli._common import Handler, Renderer, Result
from rbd_driver.demo import run_demo
from rbd_driver.testing import cluster as dev_cluster

__all__ = ["HANDLERS", "NEEDS_CONF", "TEXT", "add_parsers"]

# The handlers read no config file: they are given an empty ConfigOpts.
NEEDS_CONF = False


def add_parsers(sub: Any) -> None:
    """Add ``dev-cluster`` (with its actions) and ``demo`` to the subparsers ``sub``."""
    dc = sub.add_parser("dev-cluster", help="throwaway local Ceph cluster on loopback")
    dc_sub = dc.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = dc_sub.add_parser("start", help="start one and print its ceph.conf path")
    start.add_argument("--osds", type=int, default=1, help="number of OSDs (default 1)")
    start.add_argument("--objectstore", choices=("memstore", "bluestore"), default="memstore",
                       help="memstore (RAM, fast) or bluestore (on a sparse file)")
    start.add_argument("--osd-size-gib", type=int, default=4, help="capacity per OSD (GiB)")
    start.add_argument("--base-dir", default=None, help="parent of its temporary directory")
    for name in ("stop", "status"):
        p = dc_sub.add_parser(name, help=f"{name} a dev cluster (default: the last started)")
        p.add_argument("conf", nargs="?", help="its ceph.conf path or directory")

    demo = sub.add_parser("demo", help="launch disks from a golden image on a throwaway cluster")
    demo.add_argument("--instances", type=int, default=20,
                      help="instance disks to launch (default 20)")


def dev_cluster_cmd(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    """Carry out the action; it prints its own output (``None`` result)."""
    return None, dev_cluster.run_action(args)


def demo(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    """Run the demo: its steps are printed as text, its report returned for ``--json``."""
    report = run_demo(args.instances, say=(lambda line: None) if args.json else print)
    ok = (report.get("left_in_vms") == 0 and not report["cleanup"]["failed"]
          and not report["cleanup"].get("busy")
          and len(report["launches"]) == args.instances)
    return (report if args.json else None), 0 if ok else 1


HANDLERS: dict[str, Handler] = {"dev-cluster": dev_cluster_cmd, "demo": demo}
TEXT: dict[str, Renderer] = {}
