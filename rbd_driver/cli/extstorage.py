# SPDX-License-Identifier: Apache-2.0
"""The one entry point of the Ganeti ExtStorage scripts of ``rbd-driver ganeti install``.

Every script is ``exec PYTHON -m rbd_driver.cli.extstorage ACTION --config-file
FILE``: this reads the library's config file, takes the pool from
``EXTP_POOL`` (else ``[rbd] pool``), runs the action of
:class:`rbd_driver.ops.ganeti.ExtStorage` on the volume of Ganeti's
environment and prints what Ganeti reads (``attach``: the device line and the
``kvm:`` URI). On an error it prints ``rbd_driver ACTION VOL_NAME: <the
library's message>`` on stderr and exits 1; Ganeti shows that line. Nothing
it prints or logs holds a key: the scripts carry only paths.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping

from oslo_config import cfg

from rbd_driver import conf as conf_module
from rbd_driver import exception, imagebackend
from rbd_driver.ops.ganeti import ACTIONS, ExtStorage

__all__ = ["main", "run"]


def run(action: str, config_files: list[str], env: Mapping[str, str]) -> str:
    """Run ``action`` for the volume in ``env``; return what the script prints.

    :raises RbdDriverError: / :raises cfg.Error: the action failed, or the config.
    """
    conf = cfg.ConfigOpts()
    conf_module.register_opts(conf)
    args: list[str] = []
    for path in config_files:
        args += ["--config-file", path]
    conf(args, project="rbd_driver", default_config_files=[])
    pool = env.get("EXTP_POOL", "").strip()
    if pool:
        conf.set_override("pool", pool, group="rbd")
    with imagebackend.Backend(conf) as backend:
        return ExtStorage(conf, backend.driver("rbd")).run(action, env)


def main(argv: list[str] | None = None) -> int:
    """Run one ExtStorage action; returns the exit code (0, or 1 with the reason on stderr)."""
    parser = argparse.ArgumentParser(
        prog="rbd_driver extstorage",
        description="Ganeti ExtStorage provider rbd_driver: one action, volume in the environment")
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("--config-file", action="append", default=[], metavar="PATH")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="rbd_driver %(levelname)s: %(message)s")
    env = dict(os.environ)
    try:
        out = run(args.action, args.config_file, env)
    except (exception.RbdDriverError, cfg.Error, OSError) as err:
        volume = env.get("VOL_NAME", "")
        print(f"rbd_driver {args.action} {volume}: {err}".replace("  ", " "), file=sys.stderr)
        return 1
    sys.stdout.write(out)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
