"""The ``rbd-driver`` command for operators.

Subcommands so far:

``rbd-driver dev-cluster start|stop|status``
    a throwaway local Ceph cluster (see :mod:`rbd_driver.testing.cluster`);
    ``start`` prints the path of its ceph.conf.
``rbd-driver demo``
    start a throwaway cluster, launch instance disks from a golden image as
    a compute driver would, show a refusal and the fallback copy, clean up
    and stop the cluster (see :mod:`rbd_driver.demo`).

Exit codes: 0 success, 1 error, 2 usage. Errors print one line; ``--debug``
adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback

from rbd_driver import exception
from rbd_driver.demo import run_demo
from rbd_driver.testing import cluster as dev_cluster

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rbd-driver", description="Operate rbd_driver and the Ceph RBD disks it manages."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    demo = sub.add_parser("demo", help="run the library against a throwaway cluster")
    demo.add_argument("--instances", type=int, default=20,
                      help="instance disks to launch from the golden image (default 20)")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "dev-cluster":
        return dev_cluster.run_action(args)
    if args.command == "demo":
        quiet = args.json
        report = run_demo(args.instances, say=(lambda line: None) if quiet else print)
        if args.json:
            print(json.dumps(report, indent=2))
        ok = (report.get("left_in_vms") == 0 and not report["cleanup"]["failed"]
              and len(report["launches"]) == args.instances)
        return 0 if ok else 1
    raise AssertionError(args.command)  # argparse rejects unknown commands


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rbd-driver``; returns the exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING)
    try:
        return _run(args)
    except (exception.RbdDriverError, dev_cluster.ClusterStartError, OSError) as err:
        if args.debug:
            traceback.print_exc()
        print(f"rbd-driver: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
