# SPDX-License-Identifier: Apache-2.0
"""RBD image features: the ``RBD_FEATURE_*`` constants and the rules librbd applies to them.

The values are those of the real ``rbd`` module (a unit test compares them).
:func:`parse_features` reads an ``rbd_default_features`` setting,
:func:`validate_features` and :func:`validate_order` raise what librbd raises
for combinations it refuses.
"""

from __future__ import annotations

import errno

from rbd_driver.testing.fakes.errors import rbd_error

__all__ = [
    "CONSTANTS",
    "IMPLICIT_FEATURES",
    "RBD_FEATURE_DEEP_FLATTEN",
    "RBD_FEATURE_EXCLUSIVE_LOCK",
    "RBD_FEATURE_LAYERING",
    "RBD_FEATURES_ALL",
    "parse_features",
    "validate_features",
    "validate_order",
]

RBD_FEATURE_LAYERING = 1
RBD_FEATURE_STRIPINGV2 = 2
RBD_FEATURE_EXCLUSIVE_LOCK = 4
RBD_FEATURE_OBJECT_MAP = 8
RBD_FEATURE_FAST_DIFF = 16
RBD_FEATURE_DEEP_FLATTEN = 32
RBD_FEATURE_JOURNALING = 64
RBD_FEATURE_DATA_POOL = 128
RBD_FEATURE_OPERATIONS = 256
RBD_FEATURE_MIGRATING = 512
RBD_FEATURE_NON_PRIMARY = 1024
RBD_FEATURES_ALL = 4095

# What make_modules() puts into the fake rbd module's namespace.
CONSTANTS: dict[str, int] = {
    "RBD_FEATURE_LAYERING": RBD_FEATURE_LAYERING,
    "RBD_FEATURE_STRIPINGV2": RBD_FEATURE_STRIPINGV2,
    "RBD_FEATURE_EXCLUSIVE_LOCK": RBD_FEATURE_EXCLUSIVE_LOCK,
    "RBD_FEATURE_OBJECT_MAP": RBD_FEATURE_OBJECT_MAP,
    "RBD_FEATURE_FAST_DIFF": RBD_FEATURE_FAST_DIFF,
    "RBD_FEATURE_DEEP_FLATTEN": RBD_FEATURE_DEEP_FLATTEN,
    "RBD_FEATURE_JOURNALING": RBD_FEATURE_JOURNALING,
    "RBD_FEATURE_DATA_POOL": RBD_FEATURE_DATA_POOL,
    "RBD_FEATURE_OPERATIONS": RBD_FEATURE_OPERATIONS,
    "RBD_FEATURE_MIGRATING": RBD_FEATURE_MIGRATING,
    "RBD_FEATURE_NON_PRIMARY": RBD_FEATURE_NON_PRIMARY,
    "RBD_FEATURES_ALL": RBD_FEATURES_ALL,
    "RBD_FEATURES_INCOMPATIBLE": 2179,
    "RBD_FEATURES_RW_INCOMPATIBLE": 4095,
    "RBD_FEATURES_MUTABLE": 3164,
    "RBD_FEATURES_SINGLE_CLIENT": 2140,
}

# Features a clone does not inherit from its parent: they describe the
# parent's layout or state, not what the clone supports.
IMPLICIT_FEATURES = (
    RBD_FEATURE_STRIPINGV2
    | RBD_FEATURE_DATA_POOL
    | RBD_FEATURE_OPERATIONS
    | RBD_FEATURE_MIGRATING
    | RBD_FEATURE_NON_PRIMARY
)

_FEATURE_NAMES: dict[str, int] = {
    "layering": RBD_FEATURE_LAYERING,
    "striping": RBD_FEATURE_STRIPINGV2,
    "exclusive-lock": RBD_FEATURE_EXCLUSIVE_LOCK,
    "object-map": RBD_FEATURE_OBJECT_MAP,
    "fast-diff": RBD_FEATURE_FAST_DIFF,
    "deep-flatten": RBD_FEATURE_DEEP_FLATTEN,
    "journaling": RBD_FEATURE_JOURNALING,
    "data-pool": RBD_FEATURE_DATA_POOL,
    "operations": RBD_FEATURE_OPERATIONS,
    "migrating": RBD_FEATURE_MIGRATING,
    "non-primary": RBD_FEATURE_NON_PRIMARY,
}


def parse_features(value: str | None) -> int:
    """Return the feature bits of an ``rbd_default_features`` value (a number or names)."""
    value = (value or "").strip()
    if value.isdigit():
        return int(value)
    bits = 0
    for name in filter(None, (n.strip() for n in value.split(","))):
        if name not in _FEATURE_NAMES:
            raise rbd_error(errno.EINVAL, f"unknown feature {name!r} in rbd_default_features")
        bits |= _FEATURE_NAMES[name]
    return bits


def validate_features(features: int) -> None:
    """Raise FunctionNotSupported (unknown bits) or InvalidArgument (missing dependency)."""
    if features & ~RBD_FEATURES_ALL:
        raise rbd_error(errno.ENOSYS, "librbd does not support requested features")
    if features & RBD_FEATURE_OBJECT_MAP and not features & RBD_FEATURE_EXCLUSIVE_LOCK:
        raise rbd_error(errno.EINVAL, "cannot use object map without exclusive lock")
    if features & RBD_FEATURE_FAST_DIFF and not features & RBD_FEATURE_OBJECT_MAP:
        raise rbd_error(errno.EINVAL, "cannot use fast diff without object map")
    if features & RBD_FEATURE_JOURNALING and not features & RBD_FEATURE_EXCLUSIVE_LOCK:
        raise rbd_error(errno.EINVAL, "cannot use journaling without exclusive lock")


def validate_order(order: int) -> None:
    """Raise ArgumentOutOfRange unless objects are 4 KiB to 32 MiB, as librbd requires."""
    if not 12 <= order <= 25:
        raise rbd_error(errno.EDOM, "order must be in the range [12, 25]")
