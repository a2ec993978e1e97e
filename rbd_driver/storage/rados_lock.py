# SPDX-License-Identifier: Apache-2.0
"""A cluster-wide advisory lock on a RADOS object, with a lease.

Used so that N hypervisors do not import the same image at the same time.
The lock is a ``cls_lock`` exclusive lock held for ``lease`` seconds and
renewed by a background thread while the holder works. If the holder dies
(a crashed hypervisor), the lease runs out and the OSD lets the next waiter
take the lock: stale locks break themselves, no operator needed.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from rbd_driver import exception
from rbd_driver.storage.rados_client import RadosClient

__all__ = ["cluster_lock"]

LOG = logging.getLogger(__name__)

# librados' LIBRADOS_LOCK_FLAG_MAY_RENEW, not exported by the Python binding.
_MAY_RENEW = 1
LOCK_NAME = "rbd_driver"


@contextlib.contextmanager
def cluster_lock(
    client: RadosClient,
    pool: str,
    key: str,
    timeout: float,
    lease: int = 30,
    poll: float = 0.5,
) -> Iterator[None]:
    """Hold an exclusive lock on object ``key`` in ``pool`` for the block.

    Waits up to ``timeout`` seconds for another holder. The lease is renewed
    every ``lease / 3`` seconds while the block runs.

    :raises OperationTimeout: the lock was not free within ``timeout``.
    :raises RbdDriverError: the lock object cannot be written (caps).
    """
    rados = client.rados
    ioctx = client.get_ioctx(pool)
    cookie = f"{socket.gethostname()}-{uuid.uuid4().hex[:12]}"
    desc = f"rbd_driver on {socket.gethostname()}"
    deadline = time.monotonic() + timeout
    with client.translate("take cluster lock", pool=pool):
        while True:
            try:
                ioctx.lock_exclusive(key, LOCK_NAME, cookie, desc, lease, 0)
                break
            except rados.ObjectBusy:
                if time.monotonic() >= deadline:
                    raise exception.OperationTimeout(
                        op="take cluster lock", target=f"{pool}/{key}",
                        detail=f"another host held it for more than {timeout}s") from None
                time.sleep(poll)
    LOG.debug("took cluster lock %s/%s (%s)", pool, key, cookie)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(client, ioctx, key, cookie, desc, lease, stop),
                               name=f"rbd-driver-lease-{key}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        with contextlib.suppress(Exception):  # an expired lease is already gone
            ioctx.unlock(key, LOCK_NAME, cookie)


def _renew(client: RadosClient, ioctx: Any, key: str, cookie: str, desc: str, lease: int,
           stop: threading.Event) -> None:
    while not stop.wait(lease / 3):
        try:
            ioctx.lock_exclusive(key, LOCK_NAME, cookie, desc, lease, _MAY_RENEW)
        except Exception as err:  # the work goes on; the next renewal may succeed
            LOG.warning("could not renew cluster lock on %s: %s", key, err)
