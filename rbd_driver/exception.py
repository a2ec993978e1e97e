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
     │    ├── ClusterConnectionError  could not connect (or timed out)
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
     ├── EncryptionError              an encrypted disk cannot be made or opened
     │    ├── KeyManagerError         the key manager could not give a passphrase
     │    └── EncryptionKeyRejected   the passphrase (or format) does not open the image
     ├── InvalidConnectionInfo        a volume's connection_info cannot be attached
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
    "LibvirtSecretError",
    "EncryptionError",
    "KeyManagerError",
    "EncryptionKeyRejected",
    "InvalidConnectionInfo",
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
        "Could not connect to the Ceph cluster of %(conf)s as client.%(user)s "
        "within %(timeout)ss: %(detail)s"
    )


class OperationTimeout(ClusterError):
    message = "Ceph operation %(op)s on %(target)s timed out: %(detail)s"


class PermissionDenied(ClusterError):
    message = (
        "Permission denied for %(op)s on %(target)s: check the cephx caps of "
        "%(user)s (%(detail)s)"
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
