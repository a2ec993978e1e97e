"""The ``rbd-driver`` command for operators.

It reads the same oslo.config file as the library (``--config-file``, options
in ``[rbd]``), prints text or, with ``--json``, one JSON document. Exit codes:
0 success, 1 error, 2 usage. An error prints one line naming what is wrong;
``--debug`` adds the traceback. See ``rbd-driver --help`` and the operator
guide for every subcommand.

The parsers of the disk-level subcommands are here (their handlers are in
:mod:`rbd_driver.commands`); ``backup``/``restore``, ``golden`` and
``provision`` bring their own parser and handlers, in
:mod:`rbd_driver.commands_backup`, :mod:`rbd_driver.commands_golden` and
:mod:`rbd_driver.commands_provision`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from typing import Any

from oslo_config import cfg

from rbd_driver import commands, commands_backup, commands_golden, commands_provision
from rbd_driver import conf as conf_module
from rbd_driver import exception
from rbd_driver.demo import run_demo
from rbd_driver.testing import cluster as dev_cluster

__all__ = ["main"]

_GROUPS = (commands_backup, commands_golden, commands_provision)
HANDLERS: dict[str, commands.Handler] = {
    **commands.HANDLERS, **{name: handler for group in _GROUPS
                            for name, handler in group.HANDLERS.items()}}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rbd-driver", description="Operate rbd_driver and the Ceph RBD disks it manages.")
    parser.add_argument("--config-file", action="append", default=[], metavar="PATH",
                        help="oslo.config file with an [rbd] section (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
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

    demo = sub.add_parser("demo", help="launch disks from a golden image on a throwaway cluster")
    demo.add_argument("--instances", type=int, default=20,
                      help="instance disks to launch (default 20)")

    st = sub.add_parser("status", help="cluster health and capacity (the data collector)")
    st.add_argument("--pool", action="append", help="measure images of this pool (repeatable)")
    st.add_argument("--time-bound", type=float, default=10.0, help="seconds (default 10)")
    st.add_argument("--no-images", action="store_true", help="skip per-image usage")

    pi = sub.add_parser("pool-info", help="total, free and used bytes of a pool")
    pi.add_argument("pool", nargs="?", help="default: [rbd] pool")

    ls = sub.add_parser("ls", help="disks with parent, provisioned size and used bytes")
    ls.add_argument("--all", action="store_true",
                    help="also list spare clones ([rbd] clone_spares)")
    ls.add_argument("--pool", help="default: [rbd] pool")

    cl = sub.add_parser("clone", help="launch an instance disk from an rbd:// location")
    cl.add_argument("url", help="rbd://fsid/pool/image/snapshot of a raw golden image")
    cl.add_argument("instance", help="instance UUID")
    cl.add_argument("--disk", default="disk", help="disk name (default disk)")
    cl.add_argument("--image-id", help="image id for messages (default: the URL)")

    im = sub.add_parser("import", help="copy a local image file into a new RBD image")
    im.add_argument("file")
    im.add_argument("name")
    im.add_argument("--pool", help="default: [rbd] pool")

    ex = sub.add_parser("export", help="copy an RBD image or snapshot to a sparse local file")
    ex.add_argument("name")
    ex.add_argument("file")
    ex.add_argument("--pool", help="default: [rbd] pool")
    ex.add_argument("--snapshot")

    sn = sub.add_parser("snapshot", help="snapshots of an instance disk")
    sn.add_argument("action", choices=("create", "ls", "rollback", "rm"))
    sn.add_argument("instance", help="instance UUID")
    sn.add_argument("name", nargs="?", help="snapshot name (not for ls)")
    sn.add_argument("--disk", default="disk")
    sn.add_argument("--protect", action="store_true", help="create: protect it")
    sn.add_argument("--force", action="store_true", help="rm: unprotect it first")

    cu = sub.add_parser("cleanup", help="remove every disk of one or more instances")
    cu.add_argument("instance", nargs="+",
                    help="instance UUID; several are cleaned up concurrently "
                         "([rbd] cleanup_concurrency disks at once)")
    cu.add_argument("--dry-run", action="store_true", help="only list what would go")

    for group in _GROUPS:
        group.add_parsers(sub)
    return parser


def _load_conf(files: list[str]) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    conf_module.register_opts(conf)
    args: list[str] = []
    for path in files:
        args += ["--config-file", path]
    conf(args, project="rbd_driver", default_config_files=[])
    return conf


def _print(result: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    elif isinstance(result, list):
        for item in result:
            print("  ".join(f"{k}={v}" for k, v in item.items()) if isinstance(item, dict)
                  else item)
    elif isinstance(result, dict):
        for key, value in result.items():
            print(f"{key:18} {json.dumps(value, default=str) if isinstance(value, (dict, list)) else value}")
    else:
        print(result)


def _run(args: argparse.Namespace) -> int:
    if args.command == "dev-cluster":
        return dev_cluster.run_action(args)
    if args.command == "demo":
        report = run_demo(args.instances, say=(lambda line: None) if args.json else print)
        if args.json:
            _print(report, True)
        ok = (report.get("left_in_vms") == 0 and not report["cleanup"]["failed"]
              and not report["cleanup"].get("busy")
              and len(report["launches"]) == args.instances)
        return 0 if ok else 1
    if args.command == "snapshot" and args.action != "ls" and not args.name:
        raise SystemExit(_usage(f"snapshot {args.action} needs a snapshot name"))
    conf = _load_conf(args.config_file)
    result, code = HANDLERS[args.command](args, conf)
    _print(result, args.json)
    return code


def _usage(message: str) -> int:
    print(f"rbd-driver: usage error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rbd-driver``; returns the exit code."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING)
    try:
        return _run(args)
    except commands.UsageError as err:
        return _usage(str(err))
    except (exception.RbdDriverError, dev_cluster.ClusterStartError, cfg.Error,
            OSError) as err:
        if args.debug:
            traceback.print_exc()
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"rbd-driver: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
