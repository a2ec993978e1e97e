# SPDX-License-Identifier: Apache-2.0
"""Where ``rbd-driver`` finds its config file, and what it warns about in it.

As oslo projects do, the command reads ``/etc/rbd_driver/rbd_driver.conf``
when no ``--config-file`` is given. With neither, it says once on stderr
which defaults it uses (connecting as ``client.admin`` to pool ``vms``
silently was finding 2 of issue 26). A keyring that other users can read
draws a warning, as does a keyring written where ``[rbd] keyring`` will not
find it.
"""

from __future__ import annotations

import os
import stat
import sys

from oslo_config import cfg

from rbd_driver import conf as conf_module

__all__ = ["DEFAULT_CONFIG_FILES", "keyring_mode_warning", "load_conf", "warn"]

# Looked for, in this order, when no --config-file is given.
DEFAULT_CONFIG_FILES: tuple[str, ...] = ("/etc/rbd_driver/rbd_driver.conf",)


def warn(message: str) -> None:
    """Print one ``rbd-driver: warning:`` line on stderr."""
    print(f"rbd-driver: warning: {message}", file=sys.stderr)


def _defaults_notice(conf: cfg.ConfigOpts) -> str:
    group = conf.rbd
    user = group.user or "admin (librados' default)"
    return (f"no config file (--config-file, or {' or '.join(DEFAULT_CONFIG_FILES)}): using "
            f"the defaults ceph_conf={group.ceph_conf}, user={user}, pool={group.pool}; "
            "see step 1 of the provisioning guide for one to start from")


def keyring_mode_warning(path: str | None) -> str | None:
    """The warning for a keyring file that users other than its owner's group can read."""
    if not path:
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # a missing keyring is the connection's error to name
    if mode & stat.S_IROTH:
        return (f"keyring {path} is readable by every user (mode {stat.S_IMODE(mode):04o}); "
                f"next: chmod 600 {path}")
    return None


def load_conf(files: list[str]) -> cfg.ConfigOpts:
    """Read ``files``, else the default config file; warn on stderr as the module says.

    :raises cfg.ConfigFilesNotFoundError: a file given does not exist.
    """
    conf = cfg.ConfigOpts()
    conf_module.register_opts(conf)
    if not files:
        files = [path for path in DEFAULT_CONFIG_FILES if os.path.isfile(path)]
    args: list[str] = []
    for path in files:
        args += ["--config-file", path]
    conf(args, project="rbd_driver", default_config_files=[])
    if not files:
        warn(_defaults_notice(conf))
    mode_warning = keyring_mode_warning(conf.rbd.keyring)
    if mode_warning:
        warn(mode_warning)
    return conf
