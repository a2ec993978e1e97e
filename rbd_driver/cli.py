"""The ``rbd-driver`` command for operators.

Subcommands so far:

``rbd-driver dev-cluster start|stop|status``
    a throwaway local Ceph cluster (see :mod:`rbd_driver.testing.cluster`);
    ``start`` prints the path of its ceph.conf.
``rbd-driver demo``
    start a throwaway cluster, run the library against it as a non-admin
    cephx user, print what happened, and stop the cluster.

Exit codes: 0 success, 1 error, 2 usage. Errors print one line; ``--debug``
adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from typing import Any

from oslo_config import cfg

from rbd_driver import conf as conf_module
from rbd_driver import exception
from rbd_driver.storage.rados_client import RadosClient
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
    demo.add_argument("--size-mib", type=int, default=64, help="size of the demo disk")
    return parser


def _demo(args: argparse.Namespace) -> dict[str, Any]:
    """Start a cluster, use the library as a non-admin user, stop the cluster."""
    report: dict[str, Any] = {}
    started = time.monotonic()
    with dev_cluster.LocalCluster() as local:
        report["cluster_boot_s"] = round(time.monotonic() - started, 1)
        conf = cfg.ConfigOpts()
        conf_module.register_opts(conf)
        conf([], project="rbd_driver", default_config_files=[])
        conf.set_override("ceph_conf", local.conf_path, group="rbd")
        conf.set_override("user", local.user, group="rbd")
        conf.set_override("keyring", local.user_keyring, group="rbd")
        pool = conf.rbd.pool
        name = "demo-disk"
        payload = b"rbd_driver demo " * 4096
        with RadosClient.from_conf(conf) as client:
            report["fsid"] = client.get_fsid()
            report["user"] = f"client.{local.user}"
            with client.ioctx(pool, op="create image") as ioctx:
                client.rbd.RBD().create(ioctx, name, args.size_mib << 20)
            with client.open_image(pool, name, op="write") as image:
                image.write(payload, 0)
                report["disk"] = f"{pool}/{name}"
                report["size_bytes"] = image.size()
            with client.open_image(pool, name, read_only=True, op="read") as image:
                report["read_back_ok"] = image.read(0, len(payload)) == payload
            with client.ioctx(pool, op="remove image") as ioctx:
                client.rbd.RBD().remove(ioctx, name)
                report["removed"] = name not in client.rbd.RBD().list(ioctx)
        report["health"] = local.health()["health"]["status"]
    return report


def _run(args: argparse.Namespace) -> int:
    if args.command == "dev-cluster":
        return dev_cluster.run_action(args)
    if args.command == "demo":
        report = _demo(args)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            for key, value in report.items():
                print(f"{key:16} {value}")
        ok = report.get("read_back_ok") and report.get("removed")
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
