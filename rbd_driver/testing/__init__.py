# SPDX-License-Identifier: Apache-2.0
"""Test helpers shipped to users: a fake librados/librbd and a real throwaway cluster.

- :mod:`~rbd_driver.testing.local_cluster`: a throwaway one-node Ceph cluster;
- :mod:`~rbd_driver.testing.guest`: a test guest (the host's kernel and busybox);
- :mod:`~rbd_driver.testing.hypervisor`: a private libvirtd that boots it under QEMU;
- :mod:`~rbd_driver.testing.fixtures`: their pytest fixtures, and the fake
  cluster with a conf and a driver on it that unit tests start from (``FakeEnv``);
- :mod:`~rbd_driver.testing.migration`: live migration between two private
  libvirt daemons, and the guest's counter watched across it;
- :mod:`~rbd_driver.testing.ganeti`: a one-node Ganeti cluster on a portless
  bridge, restored on the way out;
- :mod:`~rbd_driver.testing.extra_mon`: a second monitor added to a throwaway
  cluster (a monitor address change);
- :mod:`~rbd_driver.testing.fakes`: the fake ``rados``/``rbd`` modules.
"""
