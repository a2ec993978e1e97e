# SPDX-License-Identifier: Apache-2.0
"""Configuration options of rbd_driver, all in group ``[rbd]``.

Nothing is registered at import time. A caller registers the options on its
own ``ConfigOpts`` with :func:`register_opts`; ``oslo-config-generator
--namespace rbd_driver`` finds them through :func:`list_opts`.
"""

from __future__ import annotations

from typing import Any

from oslo_config import cfg

__all__ = ["GROUP", "QOS_LIMITS", "list_opts", "option_default", "register_opts"]

GROUP = "rbd"


def _group() -> cfg.OptGroup:
    # A new OptGroup for every ConfigOpts: oslo.config copies a registered
    # group only shallowly, so one shared OptGroup object would make two
    # ConfigOpts share their overrides.
    return cfg.OptGroup(
        GROUP,
        title="Ceph RBD options",
        help="Where and how rbd_driver keeps instance disks in Ceph RBD.",
    )

connection_opts = [
    cfg.StrOpt(
        "pool",
        default="vms",
        help="""
RADOS pool that holds instance disks.

The pool must exist and have the ``rbd`` application enabled; the configured
``user`` needs ``profile rbd`` caps on it.

Possible values:

* The name of an existing pool.

Related options:

* ``user``: must be allowed to write to this pool.
""",
    ),
    cfg.StrOpt(
        "ceph_conf",
        default="/etc/ceph/ceph.conf",
        help="""
Path to the ceph.conf of the cluster that holds the disks.

It must list the monitors (``mon host``). It is read by librados in this
process and passed by path (never by content) to QEMU.

Possible values:

* An absolute path to a readable file.

Related options:

* ``keyring``: where the cephx key is, if ceph.conf does not say.
""",
    ),
    cfg.StrOpt(
        "user",
        default=None,
        help="""
Cephx user (without the ``client.`` prefix) that rbd_driver connects as.

Use a dedicated least-privilege user (``profile rbd`` on the instance pool,
``profile rbd-read-only`` on image pools) rather than ``admin``.

Possible values:

* A cephx user name such as ``compute``.
* Unset: librados' default, ``client.admin``.

Related options:

* ``keyring``, ``secret_uuid``.
""",
    ),
    cfg.StrOpt(
        "keyring",
        default=None,
        help="""
Path to the keyring file of ``user``.

The key is read by librados from this file; it is never put on a command
line, in an environment variable or in a log. The file should be mode 0600.

Possible values:

* An absolute path to a keyring file.
* Unset: the ``keyring`` setting of ceph.conf (by default
  ``/etc/ceph/$cluster.$name.keyring``).

Related options:

* ``user``, ``ceph_conf``.
""",
    ),
    cfg.StrOpt(
        "secret_uuid",
        default=None,
        help="""
UUID of the libvirt secret that holds the cephx key of ``user``.

It goes into the ``<auth>`` element of the disk XML, so that QEMU started by
libvirt can authenticate without the key appearing anywhere.

Possible values:

* A UUID of a libvirt secret with usage type ``ceph``.
* Unset: no ``<auth>`` element (only for clusters without cephx).

Related options:

* ``user``: the secret must hold this user's key.
""",
    ),
    cfg.IntOpt(
        "connect_timeout",
        default=5,
        min=1,
        help="""
Seconds to wait when connecting to the cluster before giving up.

Applied as librados' ``client_mount_timeout``. An unreachable or frozen
monitor then fails with ``ClusterConnectionError`` instead of hanging.

Possible values:

* A positive number of seconds.

Related options:

* ``op_timeout``: the limit for each operation once connected.
""",
    ),
    cfg.IntOpt(
        "op_timeout",
        default=30,
        min=0,
        help="""
Seconds each monitor or OSD operation may take before it fails.

Applied as librados' ``rados_mon_op_timeout`` and ``rados_osd_op_timeout``,
so a frozen monitor or a stuck placement group raises ``OperationTimeout``
instead of blocking a thread forever.

Possible values:

* A positive number of seconds.
* 0: wait forever (not recommended: a stuck cluster hangs the caller).

Related options:

* ``connect_timeout``.
""",
    ),
]

cleanup_opts = [
    cfg.IntOpt(
        "destroy_retries",
        default=12,
        min=0,
        help="""
How many times to retry removing a busy disk before giving up on it.

A disk that a client has open (a watcher: a running guest, here or on
another host) is not retried: it is left in place at once and reported as
busy, never removed or trashed. These retries are for a disk nobody has
open that librbd still reports busy (an operation on it that is finishing).
After the last retry that disk is moved to the RBD trash and reported,
never silently left behind.

The background removal of the temporary disk snapshot of
``direct_snapshot`` is retried as many times after a failure of any kind.

Possible values:

* 0 or more retries.

Related options:

* ``destroy_retry_interval``: the wait between retries.
""",
    ),
    cfg.FloatOpt(
        "destroy_retry_interval",
        default=5.0,
        min=0,
        help="""
Seconds to wait between retries when removing a busy disk.

Possible values:

* 0 or more seconds.

Related options:

* ``destroy_retries``: retries times interval bounds the total wait.
""",
    ),
    cfg.IntOpt(
        "cleanup_concurrency",
        default=16,
        min=1,
        max=64,
        help="""
How many disks a bulk cleanup removes at once.

``Rbd.cleanup_instances``, ``cleanup_volumes`` and ``rbd-driver cleanup``
with several instances keep this many removals in flight on the driver's one
connection. A removal mostly waits for the OSDs, so several in flight
multiply the throughput; each costs some client CPU, so past a few dozen there
is little to gain. Measured on a one-OSD bluestore cluster with two cores
(``benchmarks/bench_fleet.py``): 44 disks/s with 4 in flight, 55 with 8, 72
with 16 and 72 with 32. A cluster with more OSDs, or further away, gains from
more. A disk waiting out ``destroy_retries`` holds its slot while it waits.

Possible values:

* 1 (one after another) to 64.

Related options:

* ``destroy_retries``, ``destroy_retry_interval``.
""",
    ),
]

backend_opts = [
    cfg.StrOpt(
        "images_type",
        default="rbd",
        help="""
Image backend that holds instance disks when the caller names none.

Backends are plugins in the entry-point namespace
``rbd_driver.image_backends``.

Possible values:

* ``rbd``: disks are RBD images in ``pool`` (copy-on-write clones when
  possible).
* ``flat``: raw files on local disk, under ``[flat] instances_path``.
* The name of any other installed plugin.

Related options:

* ``pool``, ``[flat] instances_path``.
""",
    ),
    cfg.IntOpt(
        "clone_spares",
        default=0,
        min=0,
        max=64,
        help="""
How many ready-made clones ("spares") of each golden snapshot to keep in
``pool``, so that a launch takes one instead of cloning.

A librbd clone costs about 35 ms, most of it client CPU; taking a spare is
a rename done with four small RADOS calls (about 4 ms). After each launch
from a snapshot, one background thread per driver clones new spares of it
until the pool holds this many again. A burst of launches faster than that
thread can refill falls back to ordinary clones.

The count is the pool's, not the host's: every host sharing ``pool`` counts
and takes the spares any host made (found by name prefix in the pool
directory), so the pool holds about this many spares per golden snapshot
whatever the number of hosts. Hosts refilling the same snapshot at the same
moment may overshoot it by one spare each. Give every host the same value.

The cost: spares are real images in ``pool``, named
``rbd-driver-spare.<pool id>.<image id>.<snapshot id>.<random>``, visible
in ``rbd ls`` and ``rbd children``. Each holds only metadata (a clone with
no data of its own), but each is a child of its golden snapshot, so the
golden image cannot be removed with ``rbd rm`` while they exist:
``GoldenImages.delete`` removes them first, and
``RBDDriver.remove_spares()`` removes them on demand. Spares of a snapshot
are only made after a launch from it.

Possible values:

* 0: no spares; every launch clones (the default).
* 1 to 64: spares kept per golden snapshot launched from. About the
  number of launches from one image expected within a few hundred
  milliseconds.

Related options:

* ``pool``: where the spares are kept.
""",
    ),
]

datapath_opts = [
    cfg.IntOpt(
        "io_window",
        default=16,
        min=1,
        max=256,
        help="""
How many reads or writes a copy keeps in flight at once.

More overlaps more network and OSD latency; each in-flight operation holds
one buffer (2 MiB for an import, 4 MiB for an export), so a copy uses about
``io_window`` x that (32 or 64 MiB by default) whatever the image size.

Possible values:

* 1 (strictly sequential) to 256.

Related options:

* ``image_cache_pool``: imports into the cache use the same engine.
""",
    ),
    cfg.StrOpt(
        "convert_via",
        default="direct",
        choices=[
            ("direct", "qemu-img writes straight into the RBD image"),
            ("local", "qemu-img writes a local raw file, then rbd_driver imports it"),
        ],
        help="""
How a non-raw image (qcow2, vmdk, ...) is converted to a raw RBD image.

``direct`` measured faster on the reference machine (see the benchmarks
page) and needs no local scratch space; ``local`` needs free space for the
whole raw image next to the downloaded file.

Possible values:

* ``direct`` or ``local``.

Related options:

* ``convert_timeout``.
""",
    ),
    cfg.IntOpt(
        "convert_timeout",
        default=3600,
        min=1,
        help="""
Seconds a ``qemu-img`` conversion may run before it is killed.

Possible values:

* A positive number of seconds.

Related options:

* ``convert_via``.
""",
    ),
    cfg.StrOpt(
        "image_cache_pool",
        default=None,
        help="""
Pool where images that cannot be cloned where they live are imported once.

When set, the first launch of such an image imports it into this pool as a
golden image (``cached-<image_id>`` with a protected snapshot ``snap``) and
clones the disk from it; every later launch, on any hypervisor, clones
directly. A cluster-wide lock ensures only one host imports an image.

Possible values:

* The name of a pool with the ``rbd`` application, writable by ``user``.
* Unset: every such launch copies the whole image into its disk.

Related options:

* ``image_cache_lock_timeout``, ``image_cache_lock_lease``.
""",
    ),
    cfg.IntOpt(
        "image_cache_lock_timeout",
        default=1800,
        min=1,
        help="""
Seconds to wait for another host importing the same image into the cache.

Possible values:

* A positive number of seconds; longer than the slowest import.

Related options:

* ``image_cache_pool``, ``image_cache_lock_lease``.
""",
    ),
    cfg.IntOpt(
        "image_cache_lock_lease",
        default=30,
        min=3,
        help="""
Seconds the cache-import lock lives without renewal.

The holder renews it every third of this time while it imports. If the
holder dies, the lock expires after at most this long and the next host
takes over: stale locks break themselves.

Possible values:

* 3 or more seconds.

Related options:

* ``image_cache_pool``, ``image_cache_lock_timeout``.
""",
    ),
]

access_opts = [
    cfg.StrOpt(
        "access",
        default="userspace",
        choices=[
            ("userspace", "QEMU opens the image itself through librbd"),
            ("kernelspace", "the image is mapped to /dev/rbdN by the kernel (krbd)"),
        ],
        help="""
How a guest reaches its disk, as Ganeti's ``access`` disk parameter.

``userspace``: a ``<disk type='network'>`` with protocol ``rbd``; QEMU talks
to Ceph through librbd, authenticating with the libvirt secret of
``secret_uuid``. ``kernelspace``: the image is mapped through
``/sys/bus/rbd`` to a ``/dev/rbdN`` block device, given to the guest as a
``<disk type='block'>``. A kernelspace mapping is refused on a host that
runs an OSD of the pool (a kernel client next to a local OSD can deadlock,
Ceph tracker #3076).

Possible values:

* ``userspace`` (recommended).
* ``kernelspace``: needs the rbd kernel module.

Related options:

* ``secret_uuid``: used by userspace access.
* ``keyring``: kernelspace passes its key to the kernel keyring.
""",
    ),
    cfg.ListOpt(
        "image_pools",
        default=["images"],
        help="""
Pools holding golden images that instance disks are cloned from.

Provisioning gives ``user`` ``profile rbd-read-only`` caps on them: it may
read and clone from them but never write to them.

Possible values:

* A comma-separated list of pool names; empty for none.

Related options:

* ``pool``: where the clones go (``profile rbd``).
* ``image_cache_pool``: writable, so it gets ``profile rbd``.
""",
    ),
    cfg.StrOpt(
        "cache_tier_pool",
        default=None,
        help="""
Cache-tier pool in front of ``pool``.

Provisioning adds it as a writeback tier of ``pool`` and gives ``user``
caps on it too: client I/O to ``pool`` is redirected to the tier, so a user
without caps there cannot read or write its disks. Any tier already in
front of a pool the user may use gets the same caps.

Possible values:

* The name of a pool (created when missing).
* Unset: no cache tier.

Related options:

* ``pool``.
""",
    ),
    cfg.IntOpt(
        "monitor_cache_ttl",
        default=300,
        min=0,
        help="""
Seconds the list of monitors (from ``mon dump``) is reused before it is
asked again.

Disk XML and kernelspace mappings list every monitor. When a refresh fails,
the last known list is used and the refresh is retried on the next call.

Possible values:

* 0: ask every time.
* A positive number of seconds.

Related options:

* ``access``.
""",
    ),
    cfg.StrOpt(
        "libvirt_uri",
        default="qemu:///system",
        help="""
libvirt connection URI where provisioning defines the ceph secret of
``user``.

Possible values:

* A libvirt URI such as ``qemu:///system``.

Related options:

* ``secret_uuid``: the UUID of the secret defined there.
""",
    ),
]

backup_opts = [
    cfg.StrOpt(
        "backup_dir",
        default="/var/lib/rbd_driver/backups",
        help="""
Directory on secondary storage (in production an NFS mount) where backups
are written.

Each source disk gets ``<backup_dir>/<pool>/<image>/``, holding one data file
(``.raw``, ``.qcow2`` or ``.diff``) and one JSON manifest per backup. Files
are written under a temporary name and renamed when complete.

Possible values:

* An absolute path to a writable directory.

Related options:

* ``backup_retention``, ``backup_checksum``.
""",
    ),
    cfg.IntOpt(
        "backup_retention",
        default=7,
        min=1,
        help="""
How many backup snapshots to keep on each source disk, and how many restore
points to keep on secondary storage.

After each backup, backup snapshots older than the newest N are removed
from the source, and so are the files and manifests of older backups that
no kept incremental backup still needs as its parent.

Possible values:

* 1 or more.

Related options:

* ``backup_dir``.
""",
    ),
    cfg.StrOpt(
        "backup_checksum",
        default="crc32",
        choices=[
            ("crc32", "zlib CRC-32: about 2 GB/s; detects corruption and truncation"),
            ("sha256", "SHA-256: about 0.2 GB/s here; cryptographic strength"),
        ],
        help="""
Checksum recorded in each backup manifest and verified before a restore.

It is computed while the backup streams, so a slow algorithm slows every
backup down. The manifests sit next to the files they describe, so a
cryptographic hash only helps when the manifests are kept elsewhere too.

Possible values:

* ``crc32`` or ``sha256``.

Related options:

* ``backup_dir``.
""",
    ),
    cfg.BoolOpt(
        "backup_fsync",
        default=True,
        help="""
Make each backup durable before it is reported complete.

With true, every backup file and manifest is fsynced before it is renamed
into place, and the directory after, so a backup that returned survives a
power cut; the data is handed to the disk while the backup streams, so
most of it is written by the time the backup ends. With false, the files
are still written under a temporary name and renamed only when complete
(no reader sees a partial backup), but they may sit in the page cache for
some seconds after the call returns, as with ``rbd export``: a crash then
can lose a backup that was reported complete (a restore detects the
damage by its checksum and refuses). Turn it off only where the secondary
storage makes writes durable by itself, or when you sync it afterwards.

Possible values:

* true (default): durable when reported complete.
* false: complete and atomic, durable when the filesystem writes it back.

Related options:

* ``backup_dir``.
""",
    ),
]

golden_opts = [
    cfg.StrOpt(
        "golden_pool",
        default="images",
        help="""
Pool where golden images are registered (imported, snapshotted, protected).

Registering writes to this pool, so it needs a user with ``profile rbd`` on
it (an operator's, not the compute user's read-only caps).

Possible values:

* The name of a pool with the ``rbd`` application.

Related options:

* ``golden_snapshot``, ``image_pools``.
""",
    ),
    cfg.StrOpt(
        "golden_snapshot",
        default="snap",
        help="""
Name of the protected snapshot that clones of a golden image are made from.

Possible values:

* A snapshot name (no ``/`` or ``@``).

Related options:

* ``golden_pool``.
""",
    ),
    cfg.IntOpt(
        "max_clone_depth",
        default=5,
        min=1,
        help="""
Deepest chain of copy-on-write parents a clone may have.

A golden image has depth 0 and its clones depth 1; a golden image registered
from an instance snapshot makes deeper chains. Every read of unwritten data
walks the chain, so a clone that would be deeper than this is flattened
before it is returned: it then has no parent.

Possible values:

* 1 or more.

Related options:

* ``clone_depth_soft_limit``, ``flatten_concurrency``.
""",
    ),
    cfg.IntOpt(
        "clone_depth_soft_limit",
        default=3,
        min=1,
        help="""
Clone depth above which a new clone is flattened in the background.

The clone is returned at once and a flatten is queued; it runs with at most
``flatten_concurrency`` others.

Possible values:

* 1 or more; at least ``max_clone_depth`` disables background flattening.

Related options:

* ``max_clone_depth``, ``flatten_concurrency``.
""",
    ),
    cfg.IntOpt(
        "flatten_concurrency",
        default=2,
        min=1,
        max=64,
        help="""
How many background flattens run at once.

Each flatten copies a whole image's data through the cluster, so a small
number keeps the cluster's other clients responsive.

Possible values:

* 1 to 64.

Related options:

* ``clone_depth_soft_limit``.
""",
    ),
]

snapshot_opts = [
    cfg.StrOpt(
        "snapshot_pool",
        default=None,
        help="""
Pool where ``direct_snapshot`` writes an instance snapshot as a new golden
image, when neither the caller (``parent_pool``) nor the disk says where.

Which pool wins: the ``parent_pool`` argument; else the pool of the golden
image the disk was cloned from; else this option. With none of the three,
``direct_snapshot`` refuses (``ImageUnacceptable``) and the caller falls back
to ``snapshot_extract`` and an upload.

Writing there needs ``profile rbd`` on the pool for ``user``; provisioning
grants it only when asked (``rbd-driver provision from-conf
--allow-snapshots``), since a compute user that may write to the image pool
may also overwrite other tenants' images.

Possible values:

* The name of a pool with the ``rbd`` application (usually the image pool).
* Unset (default): only ``parent_pool`` or the disk's parent decide.

Related options:

* ``image_pools``, ``snapshot_flatten``.
""",
    ),
    cfg.BoolOpt(
        "snapshot_flatten",
        default=False,
        help="""
Make every instance snapshot a full, standalone copy.

By default, when the disk is a clone of a golden image in the pool the
snapshot goes to (and that golden is shallow enough, see
``clone_depth_soft_limit``), the new image is made a clone of the same golden
snapshot holding only what the instance changed: much less data is copied,
but the golden image then has a child in its own pool, so it can only be
deleted after that snapshot image is (or with ``golden rm --force``, which
moves it to the RBD trash, where it stays readable). With true, the new
image is flattened: a full copy with no parent.

Possible values:

* false (default): share the golden image's data when possible.
* true: always a full copy.

Related options:

* ``snapshot_pool``, ``max_clone_depth``.
""",
    ),
]

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


#: The guest's IO path: cache mode, discard, zero detection, librbd limits.
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

ALL_OPTS = (connection_opts + cleanup_opts + backend_opts + datapath_opts + access_opts
            + backup_opts + golden_opts + snapshot_opts + guest_io_opts)


def option_default(name: str) -> Any:
    """The default of the ``[rbd]`` option ``name``: the one source of truth.

    A constructor or function whose parameter mirrors an option takes its
    default from here rather than repeating the literal
    (``tests/unit/project/test_defaults.py`` holds every such parameter to it).

    :raises KeyError: ``name`` is not an ``[rbd]`` option.
    """
    for opt in ALL_OPTS:
        if opt.name == name:
            return opt.default
    raise KeyError(f"no [rbd] option {name!r}")


ENCRYPTION_GROUP = "encryption"

encryption_opts = [
    cfg.StrOpt(
        "key_manager",
        default="libvirt",
        help="""
Where the passphrase of an encrypted disk is looked up, by the UUID of its
secret (a plugin of entry-point namespace ``rbd_driver.key_managers``).

Possible values:

* ``libvirt``: the value of the libvirt secret with that UUID, at
  ``[rbd] libvirt_uri`` (the secret QEMU is given in the disk XML).
* ``file``: the file named by the UUID in ``key_dir`` (mode 0600 only).

Related options:

* ``key_dir``, ``[rbd] libvirt_uri``.
""",
    ),
    cfg.StrOpt(
        "key_dir",
        default="/etc/rbd_driver/keys",
        help="""
Directory of the ``file`` key manager: one file per secret, named by the
secret's UUID, holding the passphrase. A file readable or writable by anyone
but its owner (mode other than 0600) is refused.

Possible values:

* An absolute directory path.

Related options:

* ``key_manager``.
""",
    ),
    cfg.BoolOpt(
        "allow_copy",
        default=True,
        help="""
Whether an encrypted disk that cannot be a clone sharing its golden image's
key (another key asked for, or an unencrypted golden) may be made as a
per-disk copy: a new image with its own key and the golden's data copied
in, one full copy per launch.

Possible values:

* ``true``: copy, and report the method used.
* ``false``: refuse with ``ImageUnacceptable`` and the reason.

Related options:

* ``key_manager``.
""",
    ),
]


def _encryption_group() -> cfg.OptGroup:
    return cfg.OptGroup(ENCRYPTION_GROUP, title="Encrypted disks",
                        help="LUKS encryption of instance disks by librbd.")


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register every rbd_driver option on ``conf``, in groups ``[rbd]`` and ``[encryption]``.

    Registering twice on the same ``conf`` is harmless.
    """
    group = _group()
    conf.register_group(group)
    conf.register_opts(ALL_OPTS, group=group)
    encryption = _encryption_group()
    conf.register_group(encryption)
    conf.register_opts(encryption_opts, group=encryption)


def list_opts() -> list[tuple[cfg.OptGroup | str, list[cfg.Opt]]]:
    """Return the options for ``oslo-config-generator`` and the docs.

    Besides ``[rbd]``, it walks the image-backend plugins so that each
    plugin's own options appear in the sample config too.
    """
    from importlib.metadata import entry_points

    result: list[tuple[cfg.OptGroup | str, list[cfg.Opt]]] = [
        (_group(), list(ALL_OPTS)), (_encryption_group(), list(encryption_opts))]
    for ep in sorted(entry_points(group="rbd_driver.image_backends"), key=lambda e: e.name):
        plugin = ep.load()
        opts, group = getattr(plugin, "opts", None), getattr(plugin, "opt_group", None)
        if opts and group:
            result.append((group, list(opts)))
    return result
