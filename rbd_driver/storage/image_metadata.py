"""Image metadata (librbd's ``image-meta``): small key/value strings kept with an image.

``rbd image-meta get POOL/IMAGE KEY`` shows what :func:`set_metadata` wrote.
Keys starting with ``conf_`` are librbd settings of that image (say,
``conf_rbd_qos_iops_limit``); other keys are free for their owner to use.
"""

from __future__ import annotations

from rbd_driver.storage.rados_client import RadosClient

__all__ = ["get_metadata", "set_metadata"]


def set_metadata(client: RadosClient, pool: str, image: str, key: str, value: str) -> None:
    """Set metadata ``key`` of ``pool/image`` to ``value``.

    :raises ImageNotFound: no such image.
    :raises PermissionDenied: the user may not write the image.
    """
    with client.open_image(pool, image, op="set image metadata") as handle, \
            client.translate("set image metadata", pool=pool, image=image):
        handle.metadata_set(key, value)


def get_metadata(client: RadosClient, pool: str, image: str, key: str) -> str | None:
    """Return metadata ``key`` of ``pool/image``, or None when it is not set.

    :raises ImageNotFound: no such image.
    """
    with client.open_image(pool, image, read_only=True, op="get image metadata") as handle, \
            client.translate("get image metadata", pool=pool, image=image):
        try:
            return str(handle.metadata_get(key))
        except KeyError:  # librbd's answer for a key that is not set
            return None
