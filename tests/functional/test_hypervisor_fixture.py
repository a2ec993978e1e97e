# SPDX-License-Identifier: Apache-2.0
"""The hypervisor fixture cleans up after itself: guests, secrets, daemon, QEMU.

The oracle is /proc (which processes still run) and libvirt's own listing.
"""

from __future__ import annotations

import os

import pytest

from rbd_driver.libvirt import secret as libvirt_secret
from rbd_driver.storage.cephx import generate_key
from rbd_driver.testing.hypervisor import Hypervisor, _processes_mentioning, qemu_unavailable_reason

pytestmark = [pytest.mark.functional,
              pytest.mark.skipif(qemu_unavailable_reason() is not None,
                                 reason=f"no hypervisor: {qemu_unavailable_reason()}")]


def test_a_failing_test_leaves_no_guest_and_no_secret(hypervisor_daemon, guest_image) -> None:
    user = "rbd-driver-fixture-check"
    with pytest.raises(RuntimeError, match="the test failed"):
        with hypervisor_daemon.scope() as scope:
            vm = scope.boot(guest_image, [], ["hold"])
            scope.define_ceph_secret(user, generate_key())
            assert vm.name in [d.name() for d in hypervisor_daemon.conn.listAllDomains(0)]
            raise RuntimeError("the test failed")
    assert vm.name not in [d.name() for d in hypervisor_daemon.conn.listAllDomains(0)]
    usages = [s.usageID() for s in hypervisor_daemon.conn.listAllSecrets(0)]
    assert libvirt_secret.usage_name(user) not in usages


def test_stop_leaves_no_daemon_no_qemu_and_no_directory(guest_image) -> None:
    with Hypervisor() as hv:
        directory, daemon = hv.directory, hv.pid
        assert directory is not None and daemon is not None
        vm = hv.boot(guest_image, [], ["hold"])
        vm.wait_for(r"^holding$")
        assert os.path.exists(f"/proc/{daemon}")
        assert _processes_mentioning(directory), "no QEMU names the hypervisor's directory"
    assert _processes_mentioning(directory) == []
    assert not os.path.exists(f"/proc/{daemon}")
    assert not os.path.exists(directory)
