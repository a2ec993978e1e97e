# SPDX-License-Identifier: Apache-2.0
"""Encrypted instance disks: what a caller asks for, and where passphrases come from.

A compute driver asks for an encrypted disk with a :class:`DiskEncryption`::

    from rbd_driver.encryption import DiskEncryption
    disk = backend.by_name(instance_uuid, "disk",
                           encryption=DiskEncryption(format="luks2", secret_uuid=u))

It names the secret by UUID only. The passphrase is never passed by value
through the public API: the library looks it up through the key manager of
``[encryption] key_manager``, a plugin of the entry-point namespace
``rbd_driver.key_managers`` (:data:`NAMESPACE`):

* ``libvirt`` (default, :class:`rbd_driver.libvirt.passphrase.LibvirtKeyManager`):
  the value of the libvirt secret with that UUID, the secret QEMU is also
  given in the disk XML;
* ``file`` (:class:`FileKeyManager`): the file ``[encryption] key_dir/<uuid>``,
  refused unless its mode is 0600.

A key manager is one method (:meth:`KeyManager.get_passphrase`). Its errors
are :class:`~rbd_driver.exception.KeyManagerError`, which, like every other
error of the library, never holds a passphrase.
"""

from __future__ import annotations

import abc
import dataclasses
import os
import stat
import uuid as uuid_module
from typing import Any, cast

import stevedore
from oslo_config import cfg

from rbd_driver import exception
from rbd_driver.storage.encryption import FORMATS, Key

__all__ = ["FORMATS", "NAMESPACE", "DiskEncryption", "FileKeyManager", "KeyManager",
           "key_for", "load_key_manager"]

#: The entry-point namespace of key-manager plugins.
NAMESPACE = "rbd_driver.key_managers"


@dataclasses.dataclass(frozen=True)
class DiskEncryption:
    """An encrypted disk's format (``luks2`` or ``luks1``) and the UUID of its secret.

    :raises InvalidArgument: unknown format, or ``secret_uuid`` not a UUID.
    """

    format: str = "luks2"
    secret_uuid: str = ""

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise exception.InvalidArgument(
                op="encryption", target="disk",
                detail=f"format {self.format!r} is not one of {', '.join(FORMATS)}")
        try:
            canonical = str(uuid_module.UUID(str(self.secret_uuid)))
        except ValueError:
            raise exception.InvalidArgument(
                op="encryption", target="disk",
                detail=f"secret_uuid {self.secret_uuid!r} is not a UUID") from None
        object.__setattr__(self, "secret_uuid", canonical)


class KeyManager(abc.ABC):
    """Gives the passphrase of a secret, by UUID. Plugins take the caller's conf."""

    #: The name under :data:`~rbd_driver.encryption.NAMESPACE`, for messages.
    name = "?"

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf

    @abc.abstractmethod
    def get_passphrase(self, secret_uuid: str) -> bytes:
        """Return the passphrase of secret ``secret_uuid`` (canonical UUID form).

        :raises KeyManagerError: unknown secret, or the store refused or failed;
            the message never holds the passphrase.
        """


class FileKeyManager(KeyManager):
    """Passphrases in ``[encryption] key_dir``, one file per secret named by its UUID.

    A file that anyone but its owner may read or write (mode other than
    0600), a symlink, or an empty file is refused. A trailing newline is not
    part of the passphrase.
    """

    name = "file"

    def get_passphrase(self, secret_uuid: str) -> bytes:
        key_dir = self.conf.encryption.key_dir
        return self.read_file(os.path.join(key_dir, str(uuid_module.UUID(secret_uuid))),
                              secret_uuid)

    def read_file(self, path: str, secret_uuid: str) -> bytes:
        """Return the passphrase in the file ``path``, under the rules above.

        :raises KeyManagerError:
        """
        def refuse(detail: str) -> exception.KeyManagerError:
            return exception.KeyManagerError(manager=self.name, target=f"secret {secret_uuid}",
                                             detail=detail)

        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise refuse(f"no file {path}") from None
        except OSError as err:
            raise refuse(f"cannot open {path}: {err.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise refuse(f"{path} is not a regular file")
            mode = stat.S_IMODE(info.st_mode)
            if mode != 0o600:
                raise refuse(f"{path} has mode {mode:04o}; only 0600 is accepted "
                             f"(chmod 600 {path})")
            data = os.read(fd, 1 << 16)
        finally:
            os.close(fd)
        passphrase = data[:-1] if data.endswith(b"\n") else data
        if not passphrase:
            raise refuse(f"{path} is empty")
        return passphrase


def load_key_manager(conf: cfg.ConfigOpts,
                     manager: stevedore.DriverManager[KeyManager] | None = None) -> KeyManager:
    """Return the key manager ``[encryption] key_manager`` names, loaded by stevedore.

    :raises KeyManagerError: no such plugin, or it failed to load.
    """
    name = conf.encryption.key_manager
    try:
        manager = manager or stevedore.DriverManager(NAMESPACE, name, invoke_on_load=True,
                                                     invoke_args=(conf,))
    except Exception as err:  # stevedore's NoMatches, an ImportError in the plugin...
        raise exception.KeyManagerError(
            manager=name, target="any secret",
            detail=f"it could not be loaded from {NAMESPACE}: {type(err).__name__}: {err}"
        ) from err
    # invoke_on_load: the driver is the instance stevedore made, never the class.
    return cast(KeyManager, manager.driver)


def key_for(manager: KeyManager, encryption: DiskEncryption | None,
            fmt: str | None = None, secret_uuid: str | None = None) -> Key:
    """Return the storage :class:`~rbd_driver.storage.encryption.Key` of ``encryption``
    (or of ``fmt``/``secret_uuid``).

    :raises KeyManagerError: the key manager failed (its errors become this one,
        without the passphrase).
    """
    fmt = fmt or (encryption.format if encryption else "luks2")
    secret_uuid = secret_uuid or (encryption.secret_uuid if encryption else "")
    try:
        passphrase = manager.get_passphrase(secret_uuid)
    except exception.KeyManagerError:
        raise
    except Exception as err:
        # A plugin's own error could quote what it read: keep only its type.
        raise exception.KeyManagerError(manager=manager.name, target=f"secret {secret_uuid}",
                                        detail=f"it failed ({type(err).__name__})") from None
    if not isinstance(passphrase, bytes) or not passphrase:
        raise exception.KeyManagerError(manager=manager.name, target=f"secret {secret_uuid}",
                                        detail="it returned no passphrase")
    return Key(fmt, secret_uuid, passphrase)


def describe(encryption: DiskEncryption | None) -> dict[str, Any] | None:
    """The JSON-able description of ``encryption`` (format and UUID), for reports."""
    if encryption is None:
        return None
    return {"format": encryption.format, "secret_uuid": encryption.secret_uuid}
