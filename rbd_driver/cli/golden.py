# SPDX-License-Identifier: Apache-2.0
"""``rbd-driver golden register|ls|children|rm``.

The command-line face of :class:`rbd_driver.ops.golden.GoldenImages`: the
parsers, the handlers and their text (the contract of :mod:`rbd_driver.cli._common`).
``--pool`` overrides ``[rbd] golden_pool``; the snapshot is ``[rbd]
golden_snapshot``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

from oslo_config import cfg

from rbd_driver import imagebackend
from rbd_driver.cli._common import Handler, Renderer, Result
from rbd_driver.cli.output import fields, human_size, progress_bar, table
from rbd_driver.encryption import DiskEncryption, describe
from rbd_driver.ops.golden import GoldenImages

__all__ = ["HANDLERS", "TEXT", "add_parsers", "golden"]


def add_parsers(sub: Any) -> None:
    """Add ``golden`` and its actions to the subparsers ``sub``."""
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--pool", help="pool of the golden images (default: [rbd] golden_pool)")

    gd = sub.add_parser("golden", help="golden images: imported once, cloned by many disks")
    actions = gd.add_subparsers(dest="action", required=True, metavar="ACTION")
    reg = actions.add_parser("register", parents=[where],
                             help="import a local image file, snapshot and protect it")
    reg.add_argument("name", metavar="NAME", help="name of the golden image")
    reg.add_argument("file", metavar="FILE",
                     help="raw, iso, or a format qemu-img converts (qcow2, vmdk...)")
    reg.add_argument("--encrypt", metavar="SECRET_UUID",
                     help="encrypt it (LUKS2, by librbd) with the passphrase of this secret, "
                          "looked up through [encryption] key_manager; disks asking for the "
                          "same secret are clones of it")
    actions.add_parser("ls", parents=[where], help="golden images and their rbd:// locations")
    children = actions.add_parser("children", parents=[where],
                                  help="disks cloned from a golden image")
    children.add_argument("name", metavar="NAME", help="name of the golden image")
    rm = actions.add_parser("rm", parents=[where],
                            help="delete a golden image (refused while it has clones)")
    rm.add_argument("name", metavar="NAME", help="name of the golden image")
    rm.add_argument("--force", action="store_true",
                    help="with clones: move it to the RBD trash, where they can still read it")
    rm.add_argument("--flatten-images", action="store_true",
                    help="first flatten the golden images made from it in its pool "
                         "(instance snapshots sharing its data), a full copy each")


@contextlib.contextmanager
def _golden_images(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Iterator[GoldenImages]:
    if args.pool:
        conf.set_override("golden_pool", args.pool, group="rbd")
    with imagebackend.Backend(conf) as backend, \
            GoldenImages.from_conf(conf, backend.driver("rbd")) as golden:
        yield golden


def golden(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    with _golden_images(args, conf) as images:
        where = f"{images.pool}/{getattr(args, 'name', '')}@{images.snapshot}"
        if args.action == "ls":
            return [{**dataclasses.asdict(image), "encryption": images.encryption_of(image.name)}
                    for image in images.list()], 0
        if args.action == "children":
            return {"golden": where, "children": images.children(args.name)}, 0
        if args.action == "rm":
            outcome = images.delete(args.name, force=args.force,
                                    flatten_images=args.flatten_images,
                                    progress=progress_bar(not args.json))
            return {"golden": where, "outcome": outcome}, 0
        started = time.monotonic()
        encryption = (DiskEncryption(format="luks2", secret_uuid=args.encrypt)
                      if getattr(args, "encrypt", None) else None)
        image = images.register(args.name, args.file, progress=progress_bar(not args.json),
                                encryption=encryption)
        return {**dataclasses.asdict(image), "encryption": describe(encryption),
                "seconds": round(time.monotonic() - started, 2)}, 0




def _golden_text(result: Any, args: argparse.Namespace) -> list[str]:
    if args.action == "ls":
        return table(["NAME", "SIZE", "LOCATION"],
                     [[g["name"], human_size(g["size"]), g["location"]] for g in result],
                     right=(1,)) if result else []
    if args.action == "children":
        return ([f"golden:    {result['golden']}"]
                + [f"child:     {child}" for child in result["children"]]
                if result["children"] else [f"golden:    {result['golden']}", "children:  none"])
    return fields(result)


HANDLERS: dict[str, Handler] = {"golden": golden}
TEXT: dict[str, Renderer] = {"golden": _golden_text}
