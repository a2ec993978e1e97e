# SPDX-License-Identifier: Apache-2.0
"""Exceptions raised by rbd_driver.

Every error that reaches a caller derives from :class:`RbdDriverError`. When
it was caused by librados/librbd, it is raised ``from`` that error, so the
original stays available as ``__cause__``. The translation from rados/rbd
errors happens in one place, :mod:`rbd_driver.storage.rados_client`.

Each class carries a ``message`` template filled from keyword arguments, and
every template names the pool, image, snapshot or path at fault::

    RbdDriverError
     ├── ConfigError                  bad or missing configuration
     │    └── CephConfNotFound        ceph.conf path does not exist
     ├── ClusterError                 talking to the cluster failed
     │    ├── ClusterConnectionError  could not connect
     │    │    ├── KeyringNotFound    no keyring for the user where it was looked for
     │    │    ├── KeyringInvalid     the keyring holds no usable key for the user
     │    │    ├── KeyRejected        the monitors refused the user's key
     │    │    └── MonitorTimeout     no monitor answered within connect_timeout
     │    ├── OperationTimeout        an operation passed its timeout
     │    ├── PermissionDenied        the cephx user lacks the caps
     │    ├── NoSpace                 the cluster or a quota is full
     │    └── StorageError            any other librados/librbd error
     ├── PoolNotFound
     ├── ImageNotFound
     ├── SnapshotNotFound
     ├── ImageExists
     ├── ImageBusy                    open elsewhere (watchers, children)
     │    ├── SnapshotHasClones       a snapshot still has clones
     │    │    └── GoldenImageHasClones  a golden image to delete has clones
     │    └── ImageInUse              a client has it open: never removed nor trashed
     │                                (also a CleanupFailed)
     ├── ImageHasSnapshots
     ├── ReadOnlyImage
     ├── InvalidArgument
     │    └── UnsupportedFormat       a disk cannot be written to a file in that format
     ├── NotSupported                 the cluster or image lacks a feature
     ├── DiskSizeTooSmall             a disk can only grow
     ├── BackendNotFound              unknown image_type
     ├── CleanupFailed                a disk could be neither removed nor trashed
     ├── OperationCancelled           a long copy was cancelled or interrupted
     ├── ImageConversionFailed        qemu-img could not convert an image
     ├── BackupError                  a backup, restore or prune failed
     │    ├── BackupNotFound          no such backup (manifest) on secondary storage
     │    ├── BackupCorrupt           a backup file or manifest fails its checks
     │    └── BackupChainBroken       an incremental lacks its parent or base snapshot
     ├── ImageUnacceptable            direct_fetch refused every location
     ├── InvalidName                  a pool or cephx user name that is unsafe
     ├── ProvisioningError            a pool or user could not be set up
     ├── KeyringError                 a keyring file is missing, unsafe or bad
     ├── LibvirtSecretError           the libvirt secret could not be defined
     ├── LibvirtPoolError             libvirt's RBD storage pool could not be set up
     ├── EncryptionError              an encrypted disk cannot be made or opened
     │    ├── KeyManagerError         the key manager could not give a passphrase
     │    └── EncryptionKeyRejected   the passphrase (or format) does not open the image
     ├── InvalidConnectionInfo        a volume's connection_info cannot be attached
     ├── InvalidExtraSpecs            a flavor's quota:disk_* extra spec is unknown or bad
     └── KernelRbdError               kernelspace (krbd) map or unmap failed
          ├── KernelRbdUnavailable    no rbd kernel module (no /sys/bus/rbd)
          └── LocalOsdRefused         an OSD of the pool runs on this host
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "RbdDriverError",
    "ConfigError",
    "CephConfNotFound",
    "ClusterError",
    "ClusterConnectionError",
    "KeyringNotFound",
    "KeyringInvalid",
    "KeyRejected",
    "MonitorTimeout",
    "OperationTimeout",
    "PermissionDenied",
    "NoSpace",
    "StorageError",
    "PoolNotFound",
    "ImageNotFound",
    "SnapshotNotFound",
    "ImageExists",
    "ImageBusy",
    "ImageInUse",
    "SnapshotHasClones",
    "ImageHasSnapshots",
    "ReadOnlyImage",
    "InvalidArgument",
    "UnsupportedFormat",
    "NotSupported",
    "DiskSizeTooSmall",
    "BackendNotFound",
    "CleanupFailed",
    "OperationCancelled",
    "ImageConversionFailed",
    "BackupError",
    "BackupNotFound",
    "BackupCorrupt",
    "BackupChainBroken",
    "GoldenImageHasClones",
    "ImageUnacceptable",
    "InvalidName",
    "ProvisioningError",
    "KeyringError",
    "LibvirtPoolError",
    "LibvirtSecretError",
    "EncryptionError",
    "KeyManagerError",
    "EncryptionKeyRejected",
    "InvalidConnectionInfo",
    "InvalidExtraSpecs",
    "KernelRbdError",
    "KernelRbdUnavailable",
    "LocalOsdRefused",
]


class RbdDriverError(Exception):
    """Base class of every rbd_driver error.

    Subclasses set ``message`` to a ``%``-template; the keyword arguments
    given to the constructor fill it and stay available as ``self.kwargs``.
    A missing keyword never hides the real error: the template is then shown
    with the keywords that were given.
    """

    message = "An unknown rbd_driver error occurred: %(detail)s"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        self.kwargs = kwargs
        if message is None:
            try:
                message = self.message % kwargs
            except (KeyError, TypeError, ValueError):
                message = f"{self.message} ({kwargs!r})"
        super().__init__(message)

    @property
    def msg(self) -> str:
        """The formatted message."""
        return str(self.args[0]) if self.args else ""


class ConfigError(RbdDriverError):
    message = "Invalid configuration: %(detail)s"


class CephConfNotFound(ConfigError):
    message = (
        "Ceph configuration file %(path)s does not exist or is not readable; "
        "set [rbd] ceph_conf to the cluster's ceph.conf"
    )


class ClusterError(RbdDriverError):
    message = "Ceph cluster error: %(detail)s"


class ClusterConnectionError(ClusterError):
    message = (
        "Could not connect to the Ceph cluster of %(conf)s as client.%(user)s: %(detail)s"
    )


# The connection errors below say what went wrong, then, after "; next:",
# the one step that fixes it most often.

class KeyringNotFound(ClusterConnectionError):
    message = (
        "no keyring for client.%(user)s at %(path)s; next: copy the user's keyring "
        "there (rbd-driver provision from-conf writes it) or set [rbd] keyring to "
        "where it is"
    )


class KeyRejected(ClusterConnectionError):
    message = (
        "key rejected for client.%(user)s (keyring %(path)s, cluster of %(conf)s): the "
        "user does not exist or the key is not its current key; next: compare with "
        "'ceph auth get client.%(user)s' run as admin, or 'rbd-driver provision rotate-key'"
    )


class KeyringInvalid(ClusterConnectionError):
    message = (
        "no usable key for client.%(user)s in %(path)s (librados: %(detail)s); next: "
        "check the file has a [client.%(user)s] section with a 'key = ' line, as "
        "'ceph auth get client.%(user)s' prints it"
    )


class MonitorTimeout(ClusterConnectionError):
    message = (
        "no monitor answered within %(timeout)s s (client.%(user)s, mon host %(mon_host)s "
        "from %(conf)s); "
        "next: check that address in ceph.conf, the network, and 'ceph -s' on a monitor "
        "host; [rbd] connect_timeout sets the wait"
    )


class OperationTimeout(ClusterError):
    message = "Ceph operation %(op)s on %(target)s timed out: %(detail)s"


class PermissionDenied(ClusterError):
    message = (
        "%(user)s lacks cephx caps for %(op)s on %(target)s (%(detail)s); next: compare "
        "'ceph auth get %(user)s' with the caps in the provisioning guide, or rerun "
        "'rbd-driver provision from-conf' as admin"
    )


class NoSpace(ClusterError):
    message = "No space left for %(op)s on %(target)s: %(detail)s"


class StorageError(ClusterError):
    message = "Ceph operation %(op)s on %(target)s failed: %(detail)s"


class PoolNotFound(RbdDriverError):
    message = "Pool %(pool)s does not exist (or the user cannot see it)"


class ImageNotFound(RbdDriverError):
    message = "RBD image %(pool)s/%(image)s does not exist"


class SnapshotNotFound(RbdDriverError):
    message = "Snapshot %(pool)s/%(image)s@%(snapshot)s does not exist"


class ImageExists(RbdDriverError):
    message = "RBD image %(pool)s/%(image)s already exists"


class ImageBusy(RbdDriverError):
    message = "RBD image %(pool)s/%(image)s is busy: %(detail)s"


class SnapshotHasClones(ImageBusy):
    message = (
        "Snapshot %(pool)s/%(image)s@%(snapshot)s has clones: %(children)s; "
        "flatten or remove them first"
    )


class ImageHasSnapshots(RbdDriverError):
    message = "RBD image %(pool)s/%(image)s still has snapshots: %(detail)s"


class ReadOnlyImage(RbdDriverError):
    message = "RBD image %(pool)s/%(image)s is read-only: %(detail)s"


class InvalidArgument(RbdDriverError):
    message = "Invalid argument for %(op)s on %(target)s: %(detail)s"


class UnsupportedFormat(InvalidArgument):
    message = (
        "Cannot write %(target)s as %(out_format)s: the supported formats are "
        "%(supported)s"
    )


class NotSupported(RbdDriverError):
    message = "Operation %(op)s on %(target)s is not supported: %(detail)s"


class ImageUnacceptable(RbdDriverError):
    message = "Image %(image_id)s is unacceptable: %(reason)s"


class DiskSizeTooSmall(RbdDriverError):
    message = (
        "Requested size %(size)s bytes for %(pool)s/%(image)s is smaller than "
        "its current %(current)s bytes; disks can only grow"
    )


class BackendNotFound(RbdDriverError):
    message = "Unknown image backend '%(image_type)s'; available: %(available)s"


class CleanupFailed(RbdDriverError):
    message = "Could not remove or trash %(pool)s/%(image)s: %(detail)s"


class ImageInUse(ImageBusy, CleanupFailed):
    """A client has the image open (a watcher), so it is left where it is.

    A running guest's disk looks like this; so does the disk of an evacuated
    instance now running on another host. ``watchers`` names each client.
    """

    message = (
        "RBD image %(pool)s/%(image)s is in use by %(watchers)s; it was neither "
        "removed nor moved to the trash. Stop the client that has it open "
        "(a guest, a mapping), then clean up again"
    )


class OperationCancelled(RbdDriverError):
    message = "%(op)s of %(target)s was cancelled after %(done)s of %(total)s bytes"


class ImageConversionFailed(RbdDriverError):
    message = "Converting %(path)s from %(source_format)s failed: %(detail)s"


class BackupError(RbdDriverError):
    message = "Backup operation on %(target)s failed: %(detail)s"


class BackupNotFound(BackupError):
    message = "No backup %(backup_id)s of %(target)s under %(path)s"


class BackupCorrupt(BackupError):
    message = "Backup file %(path)s is corrupt: %(detail)s"


class BackupChainBroken(BackupError):
    message = "Backup chain of %(target)s is broken at %(backup_id)s: %(detail)s"


class GoldenImageHasClones(SnapshotHasClones):
    message = (
        "Golden image %(pool)s/%(image)s@%(snapshot)s still has clones: %(children)s; "
        "flatten or remove them first, or pass force=True to move the golden image "
        "to the RBD trash"
    )


class InvalidName(RbdDriverError):
    message = (
        "Invalid %(kind)s name '%(target)s': %(reason)s (use letters, digits, "
        "'.', '_' and '-', starting with a letter or digit)"
    )


class ProvisioningError(RbdDriverError):
    message = "Provisioning %(target)s failed: %(detail)s"


class KeyringError(RbdDriverError):
    message = "Keyring %(path)s: %(detail)s"


class LibvirtSecretError(RbdDriverError):
    message = "libvirt secret for %(target)s: %(detail)s"


class LibvirtPoolError(RbdDriverError):
    message = "libvirt storage pool %(target)s: %(detail)s"


class EncryptionError(RbdDriverError):
    """Never holds a passphrase: only the secret's UUID names the key."""

    message = "Encryption of %(target)s: %(detail)s"


class KeyManagerError(EncryptionError):
    message = "Key manager %(manager)s could not give the passphrase of %(target)s: %(detail)s"


class EncryptionKeyRejected(EncryptionError):
    message = ("The passphrase of secret %(secret_uuid)s does not open %(target)s as "
               "%(format)s: %(detail)s")


class InvalidConnectionInfo(RbdDriverError):
    message = (
        "Cannot attach volume %(target)s: connection_info %(key)s %(detail)s; "
        "nothing was attached"
    )


class InvalidExtraSpecs(RbdDriverError):
    message = "Flavor extra_specs %(key)s %(detail)s; no disk XML was made for %(target)s"


class KernelRbdError(RbdDriverError):
    message = "Kernel RBD %(op)s of %(target)s failed: %(detail)s"


class KernelRbdUnavailable(KernelRbdError):
    message = (
        "Kernel RBD %(op)s of %(target)s is impossible: %(path)s does not exist "
        "(the rbd kernel module is not loaded); load it, or set "
        "[rbd] access = userspace"
    )


class LocalOsdRefused(KernelRbdError):
    message = (
        "Refusing to map %(target)s in kernelspace: %(osds)s serving pool "
        "%(pool)s run on this host (%(addresses)s). A kernel RBD client on a "
        "host with a local OSD of its pool can deadlock under memory pressure "
        "(Ceph tracker #3076). Userspace access avoids it: set "
        "[rbd] access = userspace."
    )
