# SPDX-License-Identifier: Apache-2.0
"""Image backends: policy, one plugin a module (entry points ``rbd_driver.image_backends``).

- :mod:`~rbd_driver.backends.rbd`: ``Rbd``, instance disks in Ceph RBD: the
  disk itself (name, size, the creation lock), assembled from one mixin per
  concern:

  - :mod:`~rbd_driver.backends.rbd_clone`: ``direct_fetch``, a clone when
    every check of the location passes (spare clones, the clone depth);
  - :mod:`~rbd_driver.backends.rbd_copy`: ``create_image``, the fallback
    copy, and the image cache (import once, then clone);
  - :mod:`~rbd_driver.backends.rbd_snapshots`: snapshots, ``direct_snapshot``,
    and the disk to or from a local file (``snapshot_extract``, ``import_file``);
  - :mod:`~rbd_driver.backends.rbd_cleanup`: ``remove``, ``cleanup_instance(s)``
    and their reports;
  - :mod:`~rbd_driver.backends.rbd_xml`: the disk XML (``libvirt_info``);
  - :mod:`~rbd_driver.backends.rbd_disk`: what each of them knows of the
    disk (their common base);
- :mod:`~rbd_driver.backends.flat`: ``Flat``, disks as local raw files;
- :mod:`~rbd_driver.backends.instance_snapshot`: ``direct_snapshot``, an
  instance snapshot turned into a golden image inside the cluster;
- :mod:`~rbd_driver.backends.clone_depth`: the clone-depth policy of launches;
- :mod:`~rbd_driver.backends.encrypted`: encrypted disks (a clone of an
  encrypted golden, or a per-disk copy with the disk's own key);
- :mod:`~rbd_driver.backends.qos`: librbd's QoS limits of a disk (``set_qos``,
  a mixin of ``Rbd`` too) and the flavor's ``<iotune>``.

The librados/librbd calls are in :mod:`rbd_driver.storage`.
"""
