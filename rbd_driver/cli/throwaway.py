# SPDX-License-Identifier: Apache-2.0
"""``rbd-driver throwaway start|stop|status|demo``: daemons for trying things out.

Everything under ``throwaway`` starts (or stops) Ceph daemons of a local
cluster on loopback, in a temporary directory (:mod:`rbd_driver.testing.local_cluster`):
for development, tests and a first look, never for a production cluster.
They read no config file. ``start`` prints the new cluster's ``ceph.conf``
path; ``status`` its daemons and health (text, or ``--json``); ``demo``
prints its steps as it goes, or with ``--json`` only its report.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from oslo_config import cfg

from rbd_driver.cli._common import Handler, Renderer, Result, positive_int
from rbd_driver.cli.demo import run_demo
from rbd_driver.cli.errors import CommandError
from rbd_driver.cli.output import fields
from rbd_driver.testing import local_cluster as dev_cluster

__all__ = ["HANDLERS", "NEEDS_CONF", "TEXT", "add_parsers"]

# The handlers read no config file: they are given an empty ConfigOpts.
NEEDS_CONF = False


def add_parsers(sub: Any) -> None:
    """Add ``throwaway`` and its actions to the subparsers ``sub``."""
    tw = sub.add_parser("throwaway", help="start a throwaway local Ceph cluster (daemons on "
                                          "loopback, for development and a first look)")
    actions = tw.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = actions.add_parser("start", help="start one and print its ceph.conf path")
    start.add_argument("--osds", type=positive_int, default=1, help="number of OSDs (default 1)")
    start.add_argument("--objectstore", choices=("memstore", "bluestore"), default="memstore",
                       help="memstore (RAM, fast) or bluestore (on a sparse file)")
    start.add_argument("--osd-size-gib", type=positive_int, default=4, metavar="GIB",
                       help="capacity per OSD in GiB (default 4)")
    start.add_argument("--base-dir", default=None, metavar="DIR",
                       help="existing directory under which its temporary directory is made "
                            "(default: the system's temporary directory)")
    for name in ("stop", "status"):
        p = actions.add_parser(name, help=f"{name} a throwaway cluster (default: the last "
                                          "started)")
        p.add_argument("conf", nargs="?", metavar="CONF",
                       help="its ceph.conf path or directory (default: the last started)")
    demo = actions.add_parser("demo", help="on a new throwaway cluster: launch disks from a "
                                           "golden image, boot one, clean up")
    demo.add_argument("--instances", type=positive_int, default=20,
                      help="instance disks to launch (default 20)")


def _state(conf: str | None) -> Any:
    try:
        return dev_cluster.load_state(conf)
    except FileNotFoundError as err:
        raise CommandError(f"{err}; next: rbd-driver throwaway start") from None


def throwaway(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    """Carry out the action; ``start`` and ``demo`` (as text) print as they go."""
    if args.action == "demo":
        report = run_demo(args.instances, say=(lambda line: None) if args.json else print)
        ok = (report.get("left_in_vms") == 0 and not report["cleanup"]["failed"]
              and not report["cleanup"].get("busy")
              and len(report["launches"]) == args.instances)
        return (report if args.json else None), 0 if ok else 1
    if args.action == "start":
        if args.base_dir and not os.path.isdir(args.base_dir):
            raise CommandError(f"--base-dir {args.base_dir} is not a directory; next: create "
                               "it, or leave --base-dir out")
        return None, dev_cluster.run_action(args)
    state = _state(args.conf)
    if args.action == "stop":
        dev_cluster.stop_state(state)
        return {"stopped": state.directory}, 0
    report = dev_cluster.state_status(state)
    return report, 0 if report.get("health") == "HEALTH_OK" else 1


HANDLERS: dict[str, Handler] = {"throwaway": throwaway}
TEXT: dict[str, Renderer] = {"throwaway": lambda result, args: fields(result)}
