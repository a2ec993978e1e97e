# SPDX-License-Identifier: Apache-2.0
"""Non-raw images (qcow2, vmdk, ...) converted to raw with ``qemu-img``.

This is the one place rbd_driver runs an external command, through
oslo.concurrency's ``processutils`` with a time limit. A command line names
only paths (the ceph.conf and keyring), never a key.

Safety: the source format is always given with ``-f`` (detected by our own
sniffing, never by QEMU probing), and an image that would make qemu-img read
other host files is refused: a qcow2 with a backing file or an external data
file, a vmdk whose descriptor points at extents (anything but
``monolithicSparse`` and ``streamOptimized``).
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from oslo_concurrency import processutils

from rbd_driver import exception
from rbd_driver.storage import formats
from rbd_driver.storage.localfile import atomic_file
from rbd_driver.storage.sigterm import SigtermGuard

__all__ = [
    "SAFE_VMDK_TYPES",
    "check_source",
    "EXPORT_FORMATS",
    "convert_from_rbd",
    "convert_to_raw_file",
    "convert_to_rbd",
    "qemu_escape",
    "rbd_spec",
    "sniff_file",
]

SAFE_VMDK_TYPES = frozenset({"monolithicSparse", "streamOptimized"})
# qemu-img info parses untrusted headers: bound its memory and CPU.
_INFO_LIMITS = processutils.ProcessLimits(address_space=1 << 30, cpu_time=30)
# Formats qemu-img can read that we accept as sources.
CONVERTIBLE = frozenset({"qcow2", "qcow", "vmdk", "vhd", "vhdx", "vdi", "qed", "parallels"})
_QEMU_NAMES = {"vhd": "vpc"}
#: Formats :func:`convert_from_rbd` writes from a raw RBD image.
EXPORT_FORMATS = ("qcow2",)


def qemu_escape(value: str) -> str:
    """Escape a value for QEMU's ``rbd:`` filename, which splits on ':'."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


def rbd_spec(pool: str, name: str, user: str | None, ceph_conf: str,
             keyring: str | None = None, snapshot: str | None = None) -> str:
    """Return ``rbd:pool/name[@snapshot]:id=user:conf=path[:keyring=path]``; never a key."""
    spec = f"rbd:{qemu_escape(pool)}/{qemu_escape(name)}"
    if snapshot:
        spec += f"@{qemu_escape(snapshot)}"
    if user:
        spec += f":id={qemu_escape(user)}"
    spec += f":conf={qemu_escape(ceph_conf)}"
    if keyring:
        spec += f":keyring={qemu_escape(keyring)}"
    return spec


def sniff_file(path: str) -> str:
    """Return the format of a local image file from its first and last bytes."""
    with open(path, "rb") as f:
        head = f.read(formats.HEADER_BYTES)
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - formats.TAIL_BYTES))
        tail = f.read(formats.TAIL_BYTES)
    return formats.detect_format(head, tail)


def _qemu_img(*args: str, timeout: int, limits: Any = None, **kwargs: Any) -> str:
    try:
        out, _err = processutils.execute("qemu-img", *args, timeout=timeout, prlimit=limits,
                                         **kwargs)
    except processutils.ProcessExecutionError as err:
        raise exception.ImageConversionFailed(
            path=args[-1], source_format=args[2] if len(args) > 2 else "?",
            detail=(err.stderr or str(err)).strip()[:500]) from err
    return str(out)


def check_source(path: str, source_format: str) -> dict[str, Any]:
    """Return ``qemu-img info`` of ``path`` read as ``source_format``, if safe to convert.

    :raises ImageConversionFailed: unsupported format, or the image refers to
        other files (backing file, external data file, vmdk extents).
    """
    if source_format not in CONVERTIBLE:
        raise exception.ImageConversionFailed(
            path=path, source_format=source_format,
            detail=f"not a format rbd_driver converts ({', '.join(sorted(CONVERTIBLE))})")
    qemu_format = _QEMU_NAMES.get(source_format, source_format)
    info = json.loads(_qemu_img("info", "-f", qemu_format, "--output=json", path,
                                timeout=60, limits=_INFO_LIMITS))
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise exception.ImageConversionFailed(
            path=path, source_format=source_format,
            detail=f"it has a backing file {str(info.get('backing-filename'))[:200]!r}")
    specific = info.get("format-specific", {}).get("data", {})
    if specific.get("data-file"):
        raise exception.ImageConversionFailed(
            path=path, source_format=source_format,
            detail=f"it has an external data file {str(specific['data-file'])[:200]!r}")
    if source_format == "vmdk" and specific.get("create-type") not in SAFE_VMDK_TYPES:
        raise exception.ImageConversionFailed(
            path=path, source_format=source_format,
            detail=f"vmdk subformat {specific.get('create-type')!r} refers to other files; "
                   f"only {', '.join(sorted(SAFE_VMDK_TYPES))} are accepted")
    return dict(info)


def convert_to_raw_file(src: str, dest: str, source_format: str, timeout: int = 3600) -> None:
    """Convert ``src`` to a sparse raw file ``dest``, atomically (temp file, rename).

    :raises ImageConversionFailed: qemu-img failed or the source is unsafe.
    """
    check_source(src, source_format)
    with atomic_file(dest, sync=False) as (_, temp):
        _qemu_img("convert", "-f", _QEMU_NAMES.get(source_format, source_format), "-O", "raw",
                  "-W", "-m", "16", "-S", "4k", src, temp, timeout=timeout)


def convert_to_rbd(src: str, source_format: str, spec: str, timeout: int = 3600) -> None:
    """Convert ``src`` straight into a new RBD image at ``spec`` (see :func:`rbd_spec`).

    qemu-img creates the image; the caller picks a temporary name, renames it
    on success and removes it on failure.

    :raises ImageConversionFailed: qemu-img failed or the source is unsafe.
    """
    check_source(src, source_format)
    _qemu_img("convert", "-f", _QEMU_NAMES.get(source_format, source_format), "-O", "raw",
              "-W", "-m", "16", src, spec, timeout=timeout)


def convert_from_rbd(spec: str, dest: str, out_format: str, timeout: int = 3600,
                     size: int | None = None) -> None:
    """Write the raw RBD image at ``spec`` (see :func:`rbd_spec`) to the local file
    ``dest`` in ``out_format``, atomically.

    qemu-img reads the image through librbd, sparse, and writes
    ``dest.part-<hex>`` beside ``dest``, renamed over it when complete. ``size``
    (the image's, when known) only completes a cancellation's message. On
    any failure, ^C or SIGTERM (in the main thread) qemu-img is killed and
    the temporary file removed; ``dest`` is left as it was.

    :raises UnsupportedFormat: ``out_format`` is not in :data:`EXPORT_FORMATS`.
    :raises ImageConversionFailed: qemu-img failed.
    :raises OperationCancelled: a SIGTERM came (then re-raised to its handler).
    """
    if out_format not in EXPORT_FORMATS:
        raise exception.UnsupportedFormat(target=dest, out_format=out_format,
                                          supported=", ".join(EXPORT_FORMATS))
    started: list[subprocess.Popen[Any]] = []

    def cancelled() -> exception.OperationCancelled:
        return exception.OperationCancelled(op=f"writing {out_format}", target=dest,
                                            done="an unknown part",
                                            total="?" if size is None else size)

    # The file is made first, mode 0600 (disks hold private data); qemu-img keeps the mode.
    with SigtermGuard(cancelled) as guard, \
            atomic_file(dest, sync=False, before_rename=guard.disarm) as (_, temp):
        try:
            _qemu_img("convert", "-f", "raw", "-O", out_format, "-m", "16", spec, temp,
                      timeout=timeout, on_execute=started.append)
        except exception.ImageConversionFailed as err:
            raise exception.ImageConversionFailed(
                path=spec, source_format="raw",
                detail=f"writing {out_format} to {dest}: {err.kwargs.get('detail')}"
            ) from err.__cause__
        except BaseException:
            for proc in started:  # interrupted mid-copy: qemu-img must not write on
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            raise
