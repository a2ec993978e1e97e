# SPDX-License-Identifier: Apache-2.0
"""Image metadata (``rbd image-meta``): read and change an image's key/value pairs.

librbd reads the keys named ``conf_<option>`` as overrides of its own
options whenever a client opens the image, so a limit stored as
``conf_rbd_qos_iops_limit`` binds every client (QEMU here or on another
host, ``rbd bench``, an export); other keys are free for their owner (the
Ganeti provider keeps ``VOL_METADATA`` under ``ganeti.metadata``). The policy
of which keys mean what lives above (:mod:`rbd_driver.backends.qos`,
:mod:`rbd_driver.ops.ganeti`); this module only moves them, and ``rbd
image-meta get POOL/IMAGE KEY`` shows what it wrote.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping

from rbd_driver.storage.rados_client import RadosClient

__all__ = ["get_metadata", "update_metadata"]


def get_metadata(client: RadosClient, pool: str, name: str, prefix: str = "") -> dict[str, str]:
    """Return the metadata of image ``pool/name`` whose keys start with ``prefix``.

    :raises ImageNotFound: no such image.
    """
    with client.open_image(pool, name, read_only=True, op="read image metadata") as image:
        return {key: value for key, value in image.metadata_list() if key.startswith(prefix)}


def update_metadata(client: RadosClient, pool: str, name: str, changes: Mapping[str, str],
                    remove: Iterable[str] = ()) -> None:
    """Set the keys of ``changes`` and remove those of ``remove`` (absent ones are fine).

    One open of the image for all of them. librbd tells the image's other
    clients, which re-read their overrides when they next refresh.

    :raises ImageNotFound: no such image.
    :raises PermissionDenied: the user may not change the image.
    """
    with client.open_image(pool, name, op="change image metadata") as image:
        for key in remove:
            with contextlib.suppress(KeyError):  # librbd's "no metadata <key>"
                image.metadata_remove(key)
        for key, value in changes.items():
            image.metadata_set(key, value)
