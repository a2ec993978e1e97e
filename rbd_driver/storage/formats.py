# SPDX-License-Identifier: Apache-2.0
"""Sniff a disk image's format from its first (and last) bytes.

An image labelled ``raw`` is written to RBD and handed to QEMU as raw. If
its bytes are really qcow2 (or VMDK, ...), anything that later probes the
format, or a careless conversion, follows the image's own metadata: a qcow2
backing file or a VMDK extent can name any host path, such as
``/etc/passwd``. So the caller reads :data:`HEADER_BYTES` from the start of
the image, and :data:`TAIL_BYTES` from its end, and refuses an image labelled
raw that :func:`detect_format` does not call ``'raw'``.

Detection is deliberately at least as broad as QEMU's own probes: it looks
only at magic numbers, not at whether the rest of the header is sane, so a
damaged or truncated header still counts as that format. Every function
takes arbitrary bytes (empty, short, random) and only ever returns.

Two results are not formats QEMU would probe:

* ``'iso'``: an ISO 9660 filesystem. To QEMU it is raw bytes, so it is safe
  to use as raw; it is reported so the caller can decide (e.g. accept it for
  a CD-ROM, or log it).
* ``'vhd'`` of a *fixed* VHD and ``'dmg'``: their metadata sits in a trailer
  that only *tail* shows; QEMU itself probes neither by content.
"""

from __future__ import annotations

import re

__all__ = [
    "FORMATS",
    "HEADER_BYTES",
    "TAIL_BYTES",
    "detect_format",
    "is_raw",
    "qcow2_backing_file",
]

#: Leading bytes the caller must read (fewer if the image is shorter). The
#: farthest magic is ISO 9660's ``CD001`` at 0x9001; rounded up to 64 KiB.
HEADER_BYTES = 64 * 1024

#: Trailing bytes the caller should read: a VHD footer or a DMG trailer.
TAIL_BYTES = 512

#: Every value :func:`detect_format` can return.
FORMATS = frozenset({
    "raw", "qcow", "qcow2", "qed", "vmdk", "vhd", "vhdx", "vdi", "luks",
    "parallels", "bochs", "cloop", "dmg", "iso",
})

_QCOW_MAGIC = b"QFI\xfb"

# Magics at offset 0, other than qcow's (which needs its version).
_PREFIXES = (
    (b"QED\x00", "qed"),
    (b"KDMV", "vmdk"),  # hosted sparse extent
    (b"COWD", "vmdk"),  # ESX sparse extent; QEMU probes it too
    (b"conectix", "vhd"),  # dynamic VHDs copy the footer to offset 0
    (b"vhdxfile", "vhdx"),
    (b"LUKS\xba\xbe", "luks"),
    (b"WithoutFreeSpace", "parallels"),
    (b"WithouFreSpacExt", "parallels"),
    (b"Bochs Virtual HD Image", "bochs"),
    (b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0", "cloop"),
    # A descriptor may omit this line; _is_vmdk_descriptor covers that.
    (b"# Disk DescriptorFile", "vmdk"),
)

_VDI_SIGNATURE = (0x40, b"\x7f\x10\xda\xbe")  # 0xbeda107f, little-endian
_ISO_OFFSETS = (0x8001, 0x8801, 0x9001)  # volume descriptors 16, 17, 18
_VMDK_VERSION = re.compile(rb"[ \t]*version[ \t]*=[ \t]*[0-9]+[ \t\r]*")


def detect_format(header: bytes, tail: bytes | None = None) -> str:
    """Return the format of an image, one of :data:`FORMATS`.

    *header* is the image's first :data:`HEADER_BYTES` (or all of it, if
    shorter); *tail* its last :data:`TAIL_BYTES`, or ``None`` if unknown,
    in which case a fixed VHD or a DMG is reported as ``'raw'``. Returns
    ``'raw'`` when no known magic is found. Never raises on bytes input.
    """
    head = bytes(header[:HEADER_BYTES])
    if head.startswith(_QCOW_MAGIC):
        # QEMU's qcow driver claims version 1 and qcow2 the rest; an
        # unknown version is still no raw image.
        return "qcow" if head[4:8] == b"\x00\x00\x00\x01" else "qcow2"
    for magic, name in _PREFIXES:
        if head.startswith(magic):
            return name
    if _is_vmdk_descriptor(head):
        return "vmdk"
    offset, signature = _VDI_SIGNATURE
    if head[offset:offset + len(signature)] == signature:
        return "vdi"
    end = bytes(tail[-TAIL_BYTES:]) if tail else b""
    # A fixed VHD has its footer only at the end: 512 bytes, or 511 from
    # some old Microsoft tools.
    if (len(end) >= 512 and end[-512:].startswith(b"conectix")) or (
            len(end) >= 511 and end[-511:].startswith(b"conectix")):
        return "vhd"
    if len(end) == TAIL_BYTES and end.startswith(b"koly"):
        return "dmg"
    # Last: an ISO is raw to QEMU, so any real container format wins.
    if any(head[o:o + 5] == b"CD001" for o in _ISO_OFFSETS):
        return "iso"
    return "raw"


def is_raw(header: bytes, tail: bytes | None = None) -> bool:
    """Return whether :func:`detect_format` calls the image ``'raw'``.

    An ISO gives ``False``: callers that accept ISOs as raw must ask
    :func:`detect_format`.
    """
    return detect_format(header, tail) == "raw"


def qcow2_backing_file(header: bytes) -> str | None:
    """Return the backing-file name recorded in a qcow2 (or qcow) header.

    Returns ``None`` when *header* is not qcow/qcow2, records no backing
    file, or the name does not lie entirely within *header*. Bytes that are
    not UTF-8 come back backslash-escaped. The name is attacker-controlled:
    quote it with ``repr()`` (and shorten it) before showing it.
    """
    head = bytes(header)
    if len(head) < 20 or not head.startswith(_QCOW_MAGIC):
        return None
    # Same layout in qcow v1 and qcow2: big-endian u64 offset, u32 size.
    offset = int.from_bytes(head[8:16], "big")
    size = int.from_bytes(head[16:20], "big")
    if offset == 0 or size == 0 or offset + size > len(head):
        return None
    return head[offset:offset + size].decode("utf-8", "backslashreplace")


def _is_vmdk_descriptor(head: bytes) -> bool:
    """Return whether *head* reads as a VMDK text descriptor.

    Like QEMU's probe: comment and blank lines, then a ``version=N`` line.
    """
    pos = 0
    while (end := head.find(b"\n", pos)) >= 0:
        line, pos = head[pos:end], end + 1
        if line.startswith(b"#") or not line.strip(b" \t\r"):
            continue
        return _VMDK_VERSION.fullmatch(line) is not None
    return False
