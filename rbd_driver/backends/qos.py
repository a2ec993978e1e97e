# SPDX-License-Identifier: Apache-2.0
"""Limits and space on the guest's IO path: libvirt ``<iotune>``, librbd QoS, discard.

Two places can limit an instance disk, and they answer different questions:

- the flavor's ``quota:disk_*`` extra specs become ``<iotune>`` in the disk
  XML (:func:`disk_io`): QEMU throttles that one guest's device, on that host,
  for as long as that XML runs it. Nothing else that opens the image is held;
- :class:`QosMixin` (``Rbd.set_qos``) stores librbd's own limits in the
  image's metadata (``conf_rbd_qos_*_limit``): librbd enforces them in every
  client that opens the image, QEMU on any host after a migration, exports,
  backups, ``rbd bench``. They can scale with the disk: ``iops_per_gib``
  and ``bps_per_gib`` are kept as rules in the metadata too
  (``rbd_driver.qos_*_per_gib``) and the limit is recomputed whenever the
  disk grows (:meth:`QosMixin.refresh_qos`, called by ``resize_image``).

The operator guide (``doc/source/operators.rst``, "Limits") says which to use.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from oslo_config import cfg

from rbd_driver import exception
from rbd_driver.conf import QOS_LIMITS
from rbd_driver.libvirt import iotune
from rbd_driver.storage import image_meta
from rbd_driver.storage.rbd_utils import RBDDriver

__all__ = ["FLAVOR_PREFIX", "LIBRBD_KEYS", "PER_GIB", "QOS_NAMES", "RULE_KEYS", "QosMixin",
           "disk_io", "flavor_iotune", "per_gib_limit", "with_default_qos"]

GIB = 1 << 30
FLAVOR_PREFIX = "quota:disk_"
QOS_NAMES = tuple(name for name, _ in QOS_LIMITS)
#: The per-GiB rules and the limit each one sets.
PER_GIB = {"iops_per_gib": "iops", "bps_per_gib": "bps"}
#: librbd's metadata keys (``conf_`` + the librbd option) of the plain limits.
LIBRBD_KEYS = {name: f"conf_rbd_qos_{name}_limit"
               for name in QOS_NAMES if name not in PER_GIB}
#: Where the per-GiB rules are remembered (librbd ignores keys without ``conf_``).
RULE_KEYS = {name: f"rbd_driver.qos_{name}" for name in PER_GIB}

_F = TypeVar("_F", bound=Callable[..., Any])


def flavor_iotune(extra_specs: Any, target: str = "the disk") -> dict[str, int]:
    """Return the ``<iotune>`` limits of a flavor's ``quota:disk_*`` extra specs.

    Keys and values as Nova reads them (``quota:disk_read_iops_sec`` ->
    ``read_iops_sec``); other extra specs are not ours and are skipped.

    :raises InvalidExtraSpecs: an unknown ``quota:disk_*`` key, a value that
        is not a whole number >= 0, or limits libvirt refuses together.
    """
    if not extra_specs:
        return {}
    if not isinstance(extra_specs, Mapping):
        raise exception.InvalidExtraSpecs(key="itself", target=target,
                                          detail=f"must be a mapping, not {type(extra_specs)}")
    try:
        return iotune.parse_iotune(extra_specs, prefix=FLAVOR_PREFIX, reject_unknown=True)
    except iotune.InvalidLimit as err:
        raise exception.InvalidExtraSpecs(key=repr(err.key), detail=err.detail,
                                          target=target) from None


def disk_io(conf: cfg.ConfigOpts, extra_specs: Any, target: str = "the disk") -> dict[str, Any]:
    """Return the IO keywords of an instance disk's XML: iotune, discard, detect_zeroes.

    :raises InvalidExtraSpecs: see :func:`flavor_iotune`.
    """
    discard = conf.rbd.hw_disk_discard
    zeroes = "unmap" if discard == "unmap" and conf.rbd.detect_zeroes else None
    return {"iotune": flavor_iotune(extra_specs, target), "discard": discard, "detect_zeroes": zeroes}


def per_gib_limit(per_gib: int, size: int) -> int:
    """Return the limit for a disk of ``size`` bytes: ``per_gib`` per GiB, rounded up, >= 1."""
    return max(1, -(-per_gib * size // GIB))


def _whole(name: str, value: Any, target: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise exception.InvalidArgument(op="set_qos", target=target,
                                        detail=f"{name} must be a whole number >= 0, "
                                               f"not {value!r}")
    return value


class QosMixin:
    """``set_qos``/``get_qos``/``clear_qos`` of an instance disk (a mixin of ``Rbd``)."""

    conf: cfg.ConfigOpts
    driver: RBDDriver
    pool: str
    rbd_name: str

    def _metadata(self) -> dict[str, str]:
        meta = image_meta.get_metadata(self.driver.client, self.pool, self.rbd_name)
        keys = set(LIBRBD_KEYS.values()) | set(RULE_KEYS.values())
        return {k: v for k, v in meta.items() if k in keys}

    def get_qos(self) -> dict[str, int | None]:
        """Return the librbd limits in force on this disk, every name of ``set_qos``
        with its value or None; a per-GiB rule also shows the limit it set.

        :raises ImageNotFound: no such disk.
        """
        meta = self._metadata()
        found: dict[str, int | None] = {}
        for name in QOS_NAMES:
            key = RULE_KEYS[name] if name in PER_GIB else LIBRBD_KEYS[name]
            value = meta.get(key)
            found[name] = int(value) if value and value.isdigit() and int(value) else None
        return found

    def set_qos(self, *, iops: int | None = None, read_iops: int | None = None,
                write_iops: int | None = None, bps: int | None = None,
                read_bps: int | None = None, write_bps: int | None = None,
                iops_per_gib: int | None = None,
                bps_per_gib: int | None = None) -> dict[str, int | None]:
        """Set librbd limits of this disk in its metadata; return :meth:`get_qos`.

        A name left None keeps its limit, 0 removes it. ``iops`` and
        ``iops_per_gib`` set the same limit (so do ``bps`` and
        ``bps_per_gib``): the one given last replaces the other. A per-GiB
        rule is computed from the disk's size now (rounded up, at least 1)
        and again on every ``resize_image``.

        :raises InvalidArgument: a value that is not a whole number >= 0, or a
            limit and its per-GiB form both non-zero; nothing was changed.
        :raises ImageNotFound: no such disk.
        """
        target = f"{self.pool}/{self.rbd_name}"
        given = {name: _whole(name, value, target) for name, value in (
            ("iops", iops), ("read_iops", read_iops), ("write_iops", write_iops),
            ("bps", bps), ("read_bps", read_bps), ("write_bps", write_bps),
            ("iops_per_gib", iops_per_gib), ("bps_per_gib", bps_per_gib)) if value is not None}
        for rule, limit in PER_GIB.items():
            if given.get(rule) and given.get(limit):
                raise exception.InvalidArgument(
                    op="set_qos", target=target,
                    detail=f"{limit} and {rule} set the same limit; give one of them")
        changes: dict[str, str] = {}
        remove: list[str] = []
        size = self.driver.size(self.rbd_name) if any(given.get(r) for r in PER_GIB) else 0
        for name, value in given.items():
            if name in PER_GIB:
                limit = PER_GIB[name]
                if value:
                    changes[RULE_KEYS[name]] = str(value)
                    changes[LIBRBD_KEYS[limit]] = str(per_gib_limit(value, size))
                else:
                    remove.append(RULE_KEYS[name])
                    if limit not in given:  # the limit the rule set goes with it
                        remove.append(LIBRBD_KEYS[limit])
            else:
                if value:
                    changes[LIBRBD_KEYS[name]] = str(value)
                else:
                    remove.append(LIBRBD_KEYS[name])
                rule = f"{name}_per_gib"
                if rule in RULE_KEYS and not given.get(rule):  # a plain limit ends the rule
                    remove.append(RULE_KEYS[rule])
        image_meta.update_metadata(self.driver.client, self.pool, self.rbd_name, changes,
                                   remove)
        return self.get_qos()

    def clear_qos(self) -> None:
        """Remove every librbd limit and per-GiB rule of this disk.

        :raises ImageNotFound: no such disk.
        """
        image_meta.update_metadata(self.driver.client, self.pool, self.rbd_name, {},
                                   [*LIBRBD_KEYS.values(), *RULE_KEYS.values()])

    def refresh_qos(self) -> None:
        """Recompute the limits of this disk's per-GiB rules from its size now."""
        meta = self._metadata()
        rules = {name: int(meta[key]) for name, key in RULE_KEYS.items()
                 if meta.get(key, "").isdigit() and int(meta[key])}
        if not rules:
            return
        size = self.driver.size(self.rbd_name)
        changes = {LIBRBD_KEYS[PER_GIB[name]]: str(per_gib_limit(per_gib, size))
                   for name, per_gib in rules.items()}
        changes = {k: v for k, v in changes.items() if meta.get(k) != v}
        if changes:
            image_meta.update_metadata(self.driver.client, self.pool, self.rbd_name, changes)

    def apply_default_qos(self) -> None:
        """Give this disk the ``[rbd] qos_*`` limits it does not have yet."""
        defaults = {name: getattr(self.conf.rbd, f"qos_{name}") for name in QOS_NAMES}
        defaults = {name: value for name, value in defaults.items() if value}
        if not defaults:
            return
        current = self.get_qos()
        for rule, limit in PER_GIB.items():
            if rule in defaults:
                defaults.pop(limit, None)  # the per-GiB default wins
                if current[limit] is not None:
                    defaults.pop(rule)
        chosen = {name: value for name, value in defaults.items() if current[name] is None}
        if chosen:
            self.set_qos(**chosen)


def with_default_qos(method: _F) -> _F:
    """Decorate a method of ``Rbd`` that may create the disk: a disk it created
    gets the ``[rbd] qos_*`` defaults (:meth:`QosMixin.apply_default_qos`)."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not any(getattr(self.conf.rbd, f"qos_{name}") for name in QOS_NAMES):
            return method(self, *args, **kwargs)  # no defaults: the launch path pays nothing
        existed = self.exists()
        result = method(self, *args, **kwargs)
        if not existed and self.exists():
            self.apply_default_qos()
        return result

    return wrapper  # type: ignore[return-value]
