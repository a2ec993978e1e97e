# SPDX-License-Identifier: Apache-2.0
"""Mechanics of librados and librbd: the only room that touches the bindings.

It decides nothing (the backends and the managers do) and hands up library
types and library errors only.

- :mod:`~rbd_driver.storage.rados_client`: the one connection per driver and
  the one point where rados/rbd errors are translated;
- :mod:`~rbd_driver.storage.rbd_utils`: ``RBDDriver``, every librbd operation
  the backends need; :mod:`~rbd_driver.storage.removal`, its removal engine;
- :mod:`~rbd_driver.storage.datapath`: the one copy engine (imports,
  exports); :mod:`~rbd_driver.storage.backup_io` and
  :mod:`~rbd_driver.storage.diff_format`: backup streams and Ceph's
  export-diff format; :mod:`~rbd_driver.storage.sources`: what an import reads;
  :mod:`~rbd_driver.storage.localfile`: local files written atomically;
- :mod:`~rbd_driver.storage.snapshot_copy`,
  :mod:`~rbd_driver.storage.flatten_queue` and
  :mod:`~rbd_driver.storage.snapshot_removal`: instance-snapshot copies,
  interruptible and background flattens, background snapshot removals;
- :mod:`~rbd_driver.storage.spares` and :mod:`~rbd_driver.storage.claim`:
  spare clones and claims by rename;
- :mod:`~rbd_driver.storage.location` and :mod:`~rbd_driver.storage.formats`:
  ``rbd://`` locations, image format sniffing;
  :mod:`~rbd_driver.storage.convert`: qemu-img, the one external command;
- :mod:`~rbd_driver.storage.monitors`: the monitor list and its cache;
  :mod:`~rbd_driver.storage.usage`: what an image holds;
  :mod:`~rbd_driver.storage.image_meta`: image metadata (librbd's QoS limits);
  :mod:`~rbd_driver.storage.encryption`: librbd's LUKS layer (format, load,
  copies through it, the secret recorded in image metadata);
  :mod:`~rbd_driver.storage.rados_lock`: cluster-wide leased locks;
- :mod:`~rbd_driver.storage.cephx`: keys and keyrings;
  :mod:`~rbd_driver.storage.krbd` and
  :mod:`~rbd_driver.storage.kernel_keyring`: kernelspace mapping;
  :mod:`~rbd_driver.storage.sigterm`: SIGTERM turned into a cancellation.
"""
