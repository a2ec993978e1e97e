# SPDX-License-Identifier: Apache-2.0
"""Options of the guest's IO path, in ``[rbd]``: discard, zero detection, librbd limits.

Kept beside :mod:`rbd_driver.conf` (which registers them with the rest of
``[rbd]`` and is their one source of truth) so that conf.py stays small.
"""

from __future__ import annotations

from oslo_config import cfg

__all__ = ["QOS_LIMITS", "guest_io_opts"]

#: The librbd limits of :meth:`Rbd.set_qos <rbd_driver.backends.rbd.Rbd.set_qos>`,
#: each with what it limits; ``[rbd] qos_<name>`` is its default for new disks.
QOS_LIMITS = (
    ("iops", "read and write operations per second, together"),
    ("read_iops", "read operations per second"),
    ("write_iops", "write operations per second"),
    ("bps", "bytes read and written per second, together"),
    ("read_bps", "bytes read per second"),
    ("write_bps", "bytes written per second"),
    ("iops_per_gib", "operations per second per GiB of the disk's size (sets the iops "
                     "limit, recomputed when the disk grows)"),
    ("bps_per_gib", "bytes per second per GiB of the disk's size (sets the bps limit, "
                    "recomputed when the disk grows)"),
)


def _qos_opt(name: str, what: str) -> cfg.IntOpt:
    return cfg.IntOpt(
        f"qos_{name}",
        default=0,
        min=0,
        help=f"""
Default librbd limit of every new instance disk: {what}.

Stored in the disk's image metadata (``conf_rbd_qos_*``), where librbd
enforces it for every client that opens the disk: the guest's QEMU on any
host, but also exports and backups. Applied when the disk is created (by
``direct_fetch``, ``create_image`` or ``import_file``) to the limits the disk
does not have yet; change one disk's limits with ``rbd-driver qos set``.
For a per-flavor limit of the guest alone use the flavor's
``quota:disk_*`` extra specs instead (libvirt ``<iotune>``).

Possible values:

* 0 (default): no limit.
* a positive integer.

Related options:

* the other ``qos_*`` options; ``qos_iops`` and ``qos_iops_per_gib`` (and
  ``qos_bps`` and ``qos_bps_per_gib``) set the same limit: the per-GiB one wins.
""",
    )


guest_io_opts = [
    cfg.StrOpt(
        "cache_mode",
        default="none",
        choices=("none", "writeback", "writethrough", "directsync"),
        help="""
QEMU cache mode of instance disks when the caller of ``libvirt_info`` names none.

Chosen by measurement (``benchmarks/bench_cache_mode.py``, the guest's own
writes; see the benchmarks page): ``writeback`` (librbd's cache) makes 4 KiB
writes that are never flushed 1.6 to 7 times faster, but makes every flush
dearer: 4 KiB writes each followed by fsync ran at 0.29 times the rate of
``none``, and a 64 MiB sequential write ending in fsync at 0.79 times. Guests
already cache in their own page cache, and the applications that bypass it
(databases) flush after their writes: ``none`` serves them better. Both modes
keep every write the guest flushed when QEMU is killed (a functional test).
``unsafe`` is not offered: it drops the guest's flushes.

Possible values:

* none (default): no host cache; each write goes to the cluster.
* writeback: librbd's cache (write-through until the guest's first flush).
* writethrough, directsync: as libvirt defines them.

Related options:

* none.
""",
    ),
    cfg.StrOpt(
        "hw_disk_discard",
        default="unmap",
        choices=("unmap", "ignore"),
        help="""
What QEMU does with a guest's discard (TRIM/UNMAP) requests on instance disks.

As Nova's ``[libvirt] hw_disk_discard``. With ``unmap`` a block the guest
frees (``fstrim``, a file system mounted with ``discard``, ``blkdiscard``) is
given back to Ceph, so the pool holds what the guests' file systems hold
rather than everything they ever wrote. Volumes follow their
``connection_info`` (``discard``), not this option.

Possible values:

* unmap (default): pass discards to librbd, which frees the space.
* ignore: drop them; freed blocks stay allocated in the pool.

Related options:

* ``detect_zeroes``.
""",
    ),
    cfg.BoolOpt(
        "detect_zeroes",
        default=True,
        help="""
Also free the space of blocks a guest overwrites with zeroes.

With ``hw_disk_discard = unmap`` the disk XML gets ``detect_zeroes='unmap'``:
QEMU checks each write for all-zero data and turns it into a discard. It
helps guests that reclaim space by writing zeroes rather than by discarding
(Windows' ``sdelete -z``, ``dd if=/dev/zero`` over free space, guests without
a discard-capable driver), and it costs a scan of each written buffer, which
stops at the first non-zero byte. Ignored with ``hw_disk_discard = ignore``
(libvirt would then write the zeroes anyway).

Possible values:

* true (default): ``detect_zeroes='unmap'`` on disks that discard.
* false: no zero detection.

Related options:

* ``hw_disk_discard``.
""",
    ),
] + [_qos_opt(name, what) for name, what in QOS_LIMITS]
