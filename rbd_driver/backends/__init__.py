"""Image backends: policy, one plugin a module (entry points ``rbd_driver.image_backends``).

- :mod:`~rbd_driver.backends.rbd`: ``Rbd``, instance disks in Ceph RBD (clone
  or copy, which checks, cleanup reports, disk XML);
- :mod:`~rbd_driver.backends.flat`: ``Flat``, disks as local raw files;
- :mod:`~rbd_driver.backends.instance_snapshot`: ``direct_snapshot``, an
  instance snapshot turned into a golden image inside the cluster;
- :mod:`~rbd_driver.backends.clone_depth`: the clone-depth policy of launches;
- :mod:`~rbd_driver.backends.encrypted`: encrypted disks (a clone of an
  encrypted golden, or a per-disk copy with the disk's own key);
- :mod:`~rbd_driver.backends.qos`: librbd's QoS limits of a disk (``set_qos``).

The librados/librbd calls are in :mod:`rbd_driver.storage`.
"""
