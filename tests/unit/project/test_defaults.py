# SPDX-License-Identifier: Apache-2.0
"""One source of truth for every default: the ``[rbd]`` option definitions.

Every function or constructor in the package whose parameter mirrors an
option (by the option's name, or one of the aliases below) must default to
the option's default, so a changed default cannot drift again (as
``RBDDriver(cleanup_concurrency=1)`` did from the option's 16).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import rbd_driver
from rbd_driver import conf

OPTIONS = {opt.name: opt.default for opt in conf.ALL_OPTS}
# Parameter names that mirror an option under another name.
ALIASES = {
    "window": "io_window",
    "retention": "backup_retention",
    "checksum": "backup_checksum",
    "fsync": "backup_fsync",
    "soft_limit": "clone_depth_soft_limit",
    "ttl": "monitor_cache_ttl",
}
# Where a parameter mirrors an option only in one place: (qualname, parameter).
PLACES = {
    ("rbd_driver.ops.golden.GoldenImages.__init__", "pool"): "golden_pool",
    ("rbd_driver.ops.golden.GoldenImages.__init__", "snapshot"): "golden_snapshot",
    ("rbd_driver.storage.flatten_queue.FlattenQueue.__init__", "concurrency"):
        "flatten_concurrency",
}
# Parameter names that match an option but mean the target of one call (the
# driver's own pool when None), not a setting.
NOT_SETTINGS = {"pool"}
# (qualname, parameter) that share an option's name but not its meaning, with why.
UNRELATED = {
    ("rbd_driver.encryption.DiskEncryption.__init__", "secret_uuid"):
        "the LUKS passphrase's libvirt secret, not [rbd] secret_uuid (the cephx key's)",
}


def _callables():
    for info in pkgutil.walk_packages(rbd_driver.__path__, "rbd_driver."):
        if info.name.endswith("__main__") or ".testing" in info.name:
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj):
                yield module.__name__, name, obj
            elif inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if inspect.isfunction(member):
                        yield module.__name__, f"{name}.{attr}", member


def _mirrored():
    for module, qualname, func in _callables():
        for param in inspect.signature(func).parameters.values():
            place = (f"{module}.{qualname}", param.name)
            option = PLACES.get(place) or ALIASES.get(param.name, param.name)
            if (param.default in (inspect.Parameter.empty, None) or option not in OPTIONS
                    or (place not in PLACES and param.name in NOT_SETTINGS)
                    or place in UNRELATED):
                continue
            yield f"{module}.{qualname}({param.name})", option, param.default


MIRRORED = sorted(_mirrored())


def test_the_walk_finds_the_constructors_that_drifted_once() -> None:
    found = {where for where, _, _ in MIRRORED}
    assert "rbd_driver.storage.rbd_utils.RBDDriver.__init__(cleanup_concurrency)" in found
    assert "rbd_driver.ops.golden.GoldenImages.__init__(soft_limit)" in found
    assert "rbd_driver.ops.backup.BackupManager.__init__(retention)" in found


@pytest.mark.parametrize("where, option, default", MIRRORED, ids=[m[0] for m in MIRRORED])
def test_a_parameter_that_mirrors_an_option_defaults_to_it(where, option, default) -> None:
    assert default == OPTIONS[option], f"{where} defaults to {default!r}, [rbd] {option} " \
                                       f"to {OPTIONS[option]!r}"


def test_option_default_names_an_unknown_option() -> None:
    assert conf.option_default("cleanup_concurrency") == OPTIONS["cleanup_concurrency"]
    with pytest.raises(KeyError, match="no_such"):
        conf.option_default("no_such")
