# SPDX-License-Identifier: Apache-2.0
"""A tiny test guest built from the host's Debian packages, not a downloaded image.

:func:`build_guest` takes the host's kernel (``linux-image-amd64``: a
``/boot/vmlinuz-<version>`` with its ``/lib/modules/<version>``) and
``busybox-static``, and writes an initramfs whose ``/init`` loads the virtio
block modules and then runs the steps named on the kernel command line
(``rg.do=step,step,...``), printing one ``RG ...`` line per result on the
serial console:

``report``
    ``RG disk <dev> sectors=<n> data=<text>`` for every virtio disk: its size
    in 512-byte sectors and the words (runs of 3 or more of ``[A-Za-z0-9._=-]``)
    of its first sector.
``read:<dev>:<sector>``
    ``RG read <dev> <sector> data=<text>``, the words of that sector.
``write:<dev>:<sector>:<text>``
    writes ``<text>`` at that sector, syncs, then ``RG wrote <dev> <sector> <text>``.
``wait:<dev>`` / ``gone:<dev>``
    waits (up to 5 minutes) for a hot-plugged disk to appear / to go:
    ``RG appeared <dev>`` / ``RG gone <dev>``.
``grow:<dev>:<sectors>``
    waits until the disk has at least that many sectors:
    ``RG grown <dev> sectors=<n>``.
``count:<dev>:<sector>:<n>``
    writes ``C<i>`` (``i`` = 1, 2, ... ``n``, 8 digits, zero-padded to a
    sector) to sector ``<sector> + i``, each with ``O_DIRECT`` and an fsync,
    without pause, and prints ``RG count <i>`` once a write has returned (so
    every printed value was acknowledged by the disk); ``RG error count <i>``
    on a failed write. For live-migration tests.
``hold``
    prints ``RG holding`` and waits to be stopped.
``iops:<dev>:<count>``
    reads ``<count>`` blocks of 4 KiB with O_DIRECT, one at a time, timed:
    ``RG iops <dev> ops=<count> centiseconds=<elapsed>``.
``fill:<dev>:<offset_mib>:<mib>`` / ``zero:<dev>:<offset_mib>:<mib>``
    writes that range with non-zero data / with zeroes, then fsyncs:
    ``RG filled <dev> <offset_mib> <mib>`` / ``RG zeroed ...``.
``discard:<dev>:<offset_mib>:<mib>``
    ``blkdiscard`` of that range: ``RG discarded <dev> <offset_mib> <mib>``.
``write4k:<dev>:<count>:<flag>``
    writes ``<count>`` blocks of 4 KiB at 4 KiB-aligned offsets from ``shuf``
    within the first 64 MiB, each by one ``dd``, O_DIRECT (``<flag>`` ``direct``)
    and also fsynced (``fsync``: a flush after each write), timed:
    ``RG write4k <dev> <flag> ops=<count> centiseconds=<elapsed>``.
``stream4k:<dev>:<count>:direct``
    the same from one ``dd`` at consecutive offsets (no process per write):
    ``RG stream4k <dev> <flag> ops=<count> centiseconds=<elapsed>``.
``seqwrite:<dev>:<mib>``
    writes ``<mib>`` MiB from offset 0 and fsyncs, timed:
    ``RG seqwrite <dev> mib=<mib> centiseconds=<elapsed>``.
``mark:<dev>:<n>``
    writes record ``<i>`` (``MARK<i>`` in its own 4 KiB block ``<i>``) for
    i = 1..n, fsyncing after each and then printing ``RG flushed <i>``;
    then ``RG holding`` (the host kills the guest).

After the last step it prints ``RG done`` and powers off. The kernel is
stored uncompressed when it can boot through PVH (QEMU then loads the ELF
directly), since decompressing it inside a TCG guest takes seconds. The guest is
cached, keyed by the kernel version and a digest of what went into it, under
``$RBD_DRIVER_CACHE`` or ``$XDG_CACHE_HOME/rbd_driver`` (``~/.cache/rbd_driver``),
so the suite builds it once per machine (it takes well under a second).
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GuestImage", "GuestUnavailable", "MODULES", "build_guest", "kernel_cmdline",
           "parse_console"]

# Debian's kernel has virtio block support as modules; each needs the ones before it.
MODULES = ("virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
           "virtio_pci", "virtio_blk")

INIT = r"""#!/bin/sh
# rbd_driver test guest: run the steps of rg.do= on the kernel command line.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in __MODULES__; do
    [ -e /lib/modules/$m.ko ] && { insmod /lib/modules/$m.ko || echo "RG error insmod $m"; }
done
say() { echo "RG $*"; }
text() {  # the words (3 or more of [A-Za-z0-9._=-]) in sector $2 of /dev/$1
    dd if=/dev/$1 bs=512 skip=$2 count=1 2>/dev/null | tr -c 'A-Za-z0-9._=-' ' ' \
        | awk '{for (i = 1; i <= NF; i++) if (length($i) > 2) printf "%s%s", (n++ ? " " : ""), $i}'
}
wait_until() {  # run "$@" every 0.2 s for up to 5 minutes
    n=0
    while ! "$@"; do
        n=$((n + 1)); [ $n -gt 1500 ] && return 1
        sleep 0.2
    done
}
sectors() { cat /sys/block/$1/size 2>/dev/null || echo 0; }
centiseconds() { awk '{printf "%d", $1 * 100}' /proc/uptime; }
at_least() { [ "$(sectors $1)" -ge "$2" ]; }
steps=""
for arg in $(cat /proc/cmdline); do
    case "$arg" in rg.do=*) steps="${arg#rg.do=}" ;; esac
done
say ready
for step in $(echo "$steps" | tr ',' ' '); do
    set -- $(echo "$step" | tr ':' ' ')
    case "$1" in
    report)
        for d in /sys/block/vd*; do
            [ -e "$d" ] || continue
            n=${d##*/}
            say "disk $n sectors=$(sectors $n) data=$(text $n 0)"
        done ;;
    read) say "read $2 $3 data=$(text $2 $3)" ;;
    write)
        printf '%s' "$4" | dd of=/dev/$2 bs=512 seek=$3 conv=notrunc 2>/dev/null \
            && sync && say "wrote $2 $3 $4" || say "error write $2" ;;
    wait) wait_until [ -e /sys/block/$2 ] && say "appeared $2" || say "error wait $2" ;;
    gone) wait_until [ ! -e /sys/block/$2 ] && say "gone $2" || say "error gone $2" ;;
    grow) wait_until at_least $2 $3 && say "grown $2 sectors=$(sectors $2)" || say "error grow $2" ;;
    count)
        i=0
        while [ $i -lt $4 ]; do
            i=$((i + 1))
            printf 'C%08d' $i | dd of=/dev/$2 bs=512 seek=$(($3 + i)) conv=sync,notrunc,fsync \
                oflag=direct 2>/dev/null && say "count $i" || { say "error count $i"; break; }
        done ;;
    hold) say holding; while :; do sleep 1; done ;;
    iops)
        t0=$(centiseconds)
        dd if=/dev/$2 of=/dev/null bs=4096 count=$3 iflag=direct 2>/dev/null || say "error iops $2"
        say "iops $2 ops=$3 centiseconds=$(($(centiseconds) - t0))" ;;
    fill)
        yes RBDDRIVERFILL | dd of=/dev/$2 bs=1M seek=$3 count=$4 iflag=fullblock \
            conv=notrunc,fsync 2>/dev/null && say "filled $2 $3 $4" || say "error fill $2" ;;
    zero)
        dd if=/dev/zero of=/dev/$2 bs=1M seek=$3 count=$4 conv=notrunc,fsync 2>/dev/null \
            && say "zeroed $2 $3 $4" || say "error zero $2" ;;
    discard)
        blkdiscard -o $(($3 * 1048576)) -l $(($4 * 1048576)) /dev/$2 \
            && say "discarded $2 $3 $4" || say "error discard $2" ;;
    write4k)
        offsets=$(shuf -i 0-16383 -n $3)
        conv=notrunc; [ "$4" = fsync ] && conv=notrunc,fsync
        t0=$(centiseconds)
        for o in $offsets; do
            yes RBDDRIVER4K | dd of=/dev/$2 bs=4096 seek=$o count=1 iflag=fullblock \
                oflag=direct conv=$conv 2>/dev/null || { say "error write4k $2"; break; }
        done
        say "write4k $2 $4 ops=$3 centiseconds=$(($(centiseconds) - t0))" ;;
    stream4k)
        t0=$(centiseconds)
        yes RBDDRIVER4K | dd of=/dev/$2 bs=4096 count=$3 iflag=fullblock oflag=direct \
            conv=notrunc 2>/dev/null || say "error stream4k $2"
        say "stream4k $2 $4 ops=$3 centiseconds=$(($(centiseconds) - t0))" ;;
    seqwrite)
        t0=$(centiseconds)
        yes RBDDRIVERSEQ | dd of=/dev/$2 bs=1M count=$3 iflag=fullblock conv=notrunc,fsync \
            2>/dev/null || say "error seqwrite $2"
        say "seqwrite $2 mib=$3 centiseconds=$(($(centiseconds) - t0))" ;;
    mark)
        i=1
        while [ $i -le $3 ]; do
            printf 'MARK%d' $i | dd of=/dev/$2 bs=4096 seek=$i count=1 conv=notrunc,sync,fsync \
                2>/dev/null && say "flushed $i" || { say "error mark $2"; break; }
            i=$((i + 1))
        done
        say holding; while :; do sleep 1; done ;;
    *) say "error unknown step $1" ;;
    esac
done
say done
sync
poweroff -f
""".replace("__MODULES__", " ".join(MODULES))

# Bumped whenever the way a guest is built changes, so old caches are not reused.
_LAYOUT = b"layout 5: kernel (a PVH vmlinux when possible) and initramfs.cpio\n"

_LINE = re.compile(r"^RG (.*?)\s*$", re.MULTILINE)


class GuestUnavailable(Exception):
    """The host lacks what the guest is built from; the message says what."""


@dataclass(frozen=True)
class GuestImage:
    """A bootable test guest: kernel, initramfs and the kernel's version."""

    kernel: str
    initramfs: str
    version: str


def kernel_cmdline(steps: list[str] | tuple[str, ...] = ("report",)) -> str:
    """Return the kernel command line that runs ``steps`` on the serial console."""
    for step in steps:
        if not re.fullmatch(r"[A-Za-z0-9._=:-]+", step):
            raise ValueError(f"a guest step has only [A-Za-z0-9._=:-]: {step!r}")
    # quiet keeps the kernel's messages out of the console the tests read.
    return f"console=ttyS0 quiet panic=-1 rg.do={','.join(steps)}"


def parse_console(text: str) -> list[str]:
    """Return the guest's ``RG`` lines from its console output, without the prefix."""
    return _LINE.findall(text.replace("\r", ""))


def _cache_root() -> Path:
    explicit = os.environ.get("RBD_DRIVER_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rbd_driver"


def _version_key(version: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", version)]


def _find_kernel(boot: Path, modules_root: Path) -> tuple[Path, str]:
    candidates = []
    for vmlinuz in boot.glob("vmlinuz-*"):
        version = vmlinuz.name[len("vmlinuz-"):]
        if (modules_root / version / "kernel").is_dir():
            candidates.append((version, vmlinuz))
    if not candidates:
        raise GuestUnavailable(f"no kernel with modules: no {boot}/vmlinuz-<v> with "
                               f"{modules_root}/<v> (install linux-image-amd64)")
    version, vmlinuz = max(candidates, key=lambda item: _version_key(item[0]))
    if not os.access(vmlinuz, os.R_OK):
        raise GuestUnavailable(f"{vmlinuz} is not readable")
    return vmlinuz, version


# Magic numbers of the payloads a bzImage may carry, and how to unpack each.
_PAYLOADS = ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"))


def _uncompressed_kernel(bzimage: bytes) -> bytes | None:
    """Return the ELF vmlinux inside a bzImage if it can boot through PVH, else None.

    QEMU boots such an ELF directly (its PVH entry note), which skips the
    real-mode setup and the in-guest decompression: several seconds under TCG.
    """
    for magic, kind in _PAYLOADS:
        start = bzimage.find(magic)
        while start != -1:
            try:
                if kind == "xz":
                    elf = lzma.LZMADecompressor().decompress(bzimage[start:])
                elif kind == "gzip":
                    elf = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(bzimage[start:])
                else:
                    elf = subprocess.run(["zstd", "-dc"], input=bzimage[start:], capture_output=True,
                                         timeout=60, check=False).stdout
            except (lzma.LZMAError, zlib.error, OSError):
                elf = b""
            # Xen's PHYS32_ENTRY note (type 18) marks a PVH-bootable kernel.
            if elf[:4] == b"\x7fELF" and b"Xen\0" in elf and _has_pvh_note(elf):
                return elf
            start = bzimage.find(magic, start + 1)
    return None


def _has_pvh_note(elf: bytes) -> bool:
    if elf[4] != 2:  # ELFCLASS64 only
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for index in range(phnum):
        ptype, = struct.unpack_from("<I", elf, phoff + index * phentsize)
        if ptype != 4:  # PT_NOTE
            continue
        offset, = struct.unpack_from("<Q", elf, phoff + index * phentsize + 8)
        size, = struct.unpack_from("<Q", elf, phoff + index * phentsize + 32)
        pos = offset
        while pos + 12 <= offset + size:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz]
            if name == b"Xen\0" and ntype == 18:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def _module_files(modules_dir: Path) -> dict[str, Path | None]:
    """Map each needed module to its file, or None when it is built into the kernel."""
    builtin = set()
    with_builtin = modules_dir / "modules.builtin"
    if with_builtin.exists():
        builtin = {Path(line.strip()).name.split(".ko")[0]
                   for line in with_builtin.read_text().splitlines()}
    found: dict[str, Path] = {}
    for path in (modules_dir / "kernel").rglob("*.ko*"):
        name = path.name.split(".ko")[0]
        if name in MODULES:
            found[name] = path
    files: dict[str, Path | None] = {}
    for name in MODULES:
        if name in found:
            files[name] = found[name]
        elif name.replace("-", "_") in builtin or name in builtin:
            files[name] = None
        else:
            raise GuestUnavailable(f"module {name} is neither in {modules_dir} nor built in")
    return files


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.zst"):
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True,
                              timeout=60).stdout
    return data


def _busybox(path: Path) -> bytes:
    if not path.exists():
        raise GuestUnavailable(f"no {path} (install busybox-static)")
    data = path.read_bytes()
    if b"ld-linux" in data[:4096] or b"/lib64/ld-" in data[:4096]:
        raise GuestUnavailable(f"{path} is dynamically linked (install busybox-static)")
    return data


class _Cpio:
    """A ``newc`` cpio archive, the format the kernel unpacks as an initramfs."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.ino = 1

    @staticmethod
    def _pad(data: bytes) -> bytes:
        return data + b"\0" * (-len(data) % 4)

    def add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        self.chunks.append(self._pad(header + encoded) + self._pad(data))
        self.ino += 1

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return b"".join(self.chunks)


def _initramfs(busybox: bytes, modules: dict[str, bytes]) -> bytes:
    archive = _Cpio()
    for directory in ("bin", "dev", "proc", "sys", "lib", "lib/modules"):
        archive.add(directory, 0o040755)
    # init needs a console before it mounts devtmpfs.
    archive.add("dev/console", 0o020600, rdev=(5, 1))
    archive.add("bin/busybox", 0o100755, busybox)
    for applet in ("sh", "mount", "insmod", "cat", "dd", "tr", "awk", "sleep", "sync",
                   "poweroff", "printf", "echo", "[", "yes", "blkdiscard", "shuf"):
        archive.add(f"bin/{applet}", 0o120777, b"busybox")
    archive.add("init", 0o100755, INIT.encode())
    for name, data in modules.items():
        archive.add(f"lib/modules/{name}.ko", 0o100644, data)
    return archive.finish()


def build_guest(cache_dir: str | os.PathLike[str] | None = None, *, boot: str = "/boot",
                modules_root: str = "/lib/modules", busybox: str = "/bin/busybox") -> GuestImage:
    """Build (or reuse from the cache) the test guest; return its files.

    :raises GuestUnavailable: no kernel with its modules, or no static busybox.
    """
    vmlinuz, version = _find_kernel(Path(boot), Path(modules_root))
    module_paths = _module_files(Path(modules_root) / version)
    busybox_data = _busybox(Path(busybox))
    digest = hashlib.sha256(_LAYOUT + INIT.encode() + busybox_data)
    digest.update(f"{vmlinuz}:{vmlinuz.stat().st_mtime_ns}".encode())
    for name, path in module_paths.items():
        digest.update(f"{name}={path}:{path.stat().st_mtime_ns if path else 0}".encode())
    root = Path(cache_dir) if cache_dir is not None else _cache_root()
    target = root / f"guest-{version}-{digest.hexdigest()[:12]}"
    image = GuestImage(str(target / "kernel"), str(target / "initramfs.cpio"), version)
    def complete() -> bool:
        return os.path.exists(image.kernel) and os.path.exists(image.initramfs)

    if complete():
        return image
    root.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so concurrent builders never see half a guest.
    staging = Path(tempfile.mkdtemp(prefix=".guest-", dir=root))
    try:
        bzimage = vmlinuz.read_bytes()
        (staging / "kernel").write_bytes(_uncompressed_kernel(bzimage) or bzimage)
        modules = {name: _module_bytes(path) for name, path in module_paths.items() if path}
        (staging / "initramfs.cpio").write_bytes(_initramfs(busybox_data, modules))
        for path in staging.iterdir():
            path.chmod(0o644)
        staging.chmod(0o755)
        try:
            staging.rename(target)
        except OSError:
            if complete():
                return image  # another builder won the race
            shutil.rmtree(target, ignore_errors=True)  # left half-built by a crash
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return image
