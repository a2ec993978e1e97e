# SPDX-License-Identifier: Apache-2.0
"""What libvirt is given for an RBD disk: the ``<disk>`` XML and the cephx secret.

- :mod:`~rbd_driver.libvirt.disk_xml`: ``<disk>`` elements, network rbd
  (userspace) and block (kernelspace);
- :mod:`~rbd_driver.libvirt.iotune`: ``<iotune>`` from Nova's ``quota:disk_*``
  flavor keys and the volume service's ``qos_specs``;
- :mod:`~rbd_driver.libvirt.passphrase`: the passphrase secret of an encrypted
  disk, and the ``libvirt`` key manager's lookup;
- :mod:`~rbd_driver.libvirt.secret`: the libvirt secret of usage type
  ``ceph`` that ``<auth>`` names, defined through the libvirt Python API;
- :mod:`~rbd_driver.libvirt.storage_pool`: libvirt's own RBD storage pool on
  the library's pool (the path CloudStack's agent takes).

This package is ``rbd_driver.libvirt``; inside it, as everywhere in
rbd_driver, ``import libvirt`` is absolute and means the libvirt Python
bindings (python3-libvirt), never this package.
"""
