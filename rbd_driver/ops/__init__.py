# SPDX-License-Identifier: Apache-2.0
"""The managers operators drive, each behind a ``rbd-driver`` subcommand.

- :mod:`~rbd_driver.ops.backup`: backups to secondary storage and restores;
- :mod:`~rbd_driver.ops.golden`: golden images and their clones;
- :mod:`~rbd_driver.ops.provision`: pools, least-privilege cephx users, keyrings;
- :mod:`~rbd_driver.ops.libvirt_pool`: libvirt's RBD storage pool on ``[rbd] pool``;
- :mod:`~rbd_driver.ops.snapshots`: in-cluster snapshots of instance disks;
- :mod:`~rbd_driver.ops.collector`: the health and capacity document;
- :mod:`~rbd_driver.ops.libvirt_pool`: libvirt's RBD storage pool on ``[rbd] pool``;
- :mod:`~rbd_driver.ops.checks`: what an operator checks before trusting a host
  (may ``[rbd] user`` blocklist a dead client, to take over its disk's lock?);
- :mod:`~rbd_driver.ops.ganeti`: Ganeti's ExtStorage provider ``rbd_driver``, one
  method a script; :mod:`~rbd_driver.ops.ganeti_install`: writes its scripts.

Policy only: the librados/librbd calls are in :mod:`rbd_driver.storage`.
"""
