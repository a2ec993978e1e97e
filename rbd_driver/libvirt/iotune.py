# SPDX-License-Identifier: Apache-2.0
"""The one check of ``<iotune>`` limits, for volumes' ``qos_specs`` and flavors' extra specs.

Both come as a mapping of names to whole numbers, often strings; both must
end as limits libvirt accepts (:data:`~rbd_driver.libvirt.disk_xml.IOTUNE_KEYS`),
or fail naming the key at fault before any XML is made.
"""

from __future__ import annotations

from collections.abc import Mapping

from rbd_driver.libvirt.disk_xml import IOTUNE_KEYS

__all__ = ["InvalidLimit", "parse_iotune"]


class InvalidLimit(ValueError):
    """A limit given to :func:`parse_iotune` is unknown or malformed; ``key`` names it."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"{key} {detail}")
        self.key = key
        self.detail = detail


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_iotune(specs: Mapping[str, object], prefix: str = "",
                 reject_unknown: bool = False) -> dict[str, int]:
    """Return the ``<iotune>`` limits in ``specs``, keyed as in
    :data:`~rbd_driver.libvirt.disk_xml.IOTUNE_KEYS`.

    The one check of limits, for a volume's ``qos_specs`` (``prefix`` empty:
    keys that are not libvirt limits belong to another consumer and are
    skipped) and for a flavor's extra specs (``prefix`` ``quota:disk_``
    with ``reject_unknown``: any other key under the prefix is a typo and
    refused; keys without the prefix are not ours and skipped). A value is
    a whole number >= 0, as an int or a string of digits. As libvirt and
    QEMU demand, a total limit and its read/write pair are never both set,
    and a ``*_max`` burst needs its base limit.

    :raises InvalidLimit: naming the key as given (with its prefix).
    """
    limits: dict[str, int] = {}
    given: dict[str, str] = {}
    for key, value in specs.items():
        if not isinstance(key, str) or not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name not in IOTUNE_KEYS:
            if reject_unknown:
                raise InvalidLimit(key, "is not a disk limit; the known ones are "
                                   + ", ".join(prefix + k for k in IOTUNE_KEYS))
            continue
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(text, str) or not text.isascii() or not text.isdigit():
            raise InvalidLimit(key, f"is {_show(value)}, which is not a whole number >= 0")
        limits[name] = int(text)
        given[name] = key
    for unit in ("bytes_sec", "iops_sec"):
        for suffix in ("", "_max"):
            total = f"total_{unit}{suffix}"
            pair = [f"{side}_{unit}{suffix}" for side in ("read", "write")]
            both = [n for n in pair if limits.get(n)]
            if limits.get(total) and both:
                raise InvalidLimit(given[total], f"cannot be set together with {given[both[0]]}"
                                   " (libvirt refuses a total and a read/write limit at once)")
    for name, value in limits.items():
        base = name.removesuffix("_max")
        if name != base and value and not limits.get(base):
            raise InvalidLimit(given[name], f"is a burst limit and needs {prefix}{base} too")
    return limits
