# SPDX-License-Identifier: Apache-2.0
"""What an image holds, measured without reading its data.

The mechanics behind the health collector (:mod:`rbd_driver.ops.collector`)
and ``rbd-driver ls``: the names in a pool, and per image its provisioned
size, the bytes in its allocated objects and its parent.
"""

from __future__ import annotations

from typing import Any

from rbd_driver.storage.rados_client import RadosClient

__all__ = ["image_names", "image_usage"]


def image_names(client: RadosClient, pool: str) -> list[str]:
    """Return the names of the images in ``pool``, sorted.

    :raises PoolNotFound: / :raises PermissionDenied:
    """
    with client.ioctx(pool, op="list images") as ioctx:
        return sorted(client.rbd.RBD().list(ioctx))


def image_usage(client: RadosClient, pool: str, name: str) -> dict[str, Any]:
    """Return provisioned size, bytes in allocated objects, and parent of one image.

    ``used`` comes from ``diff_iterate`` over whole objects (with fast-diff a
    walk of the object map), never from reading data.

    :raises ImageNotFound: / :raises PermissionDenied:
    """
    with client.open_image(pool, name, read_only=True, op="measure image") as image:
        size = int(image.size())
        used = 0

        def count(offset: int, length: int, exists: bool) -> int:
            nonlocal used
            if exists:
                used += length
            return 0

        image.diff_iterate(0, size, None, count, include_parent=False, whole_object=True)
        found = client.parent_of(image)
    parent = "{}/{}@{}".format(*found) if found is not None else None
    return {"pool": pool, "name": name, "provisioned": size, "used": used, "parent": parent}
