# SPDX-License-Identifier: Apache-2.0
"""The Backend factory (stevedore): entry points, the configured default, one driver."""

from __future__ import annotations

import pytest
import stevedore
from oslo_config import cfg
from stevedore.extension import Extension

import rbd_driver
from rbd_driver import exception, imagebackend
from rbd_driver.backends.flat import Flat


def _conf(tmp_path) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    rbd_driver.register_opts(conf)
    conf([], project="rbd_driver", default_config_files=[])
    return conf


def test_entry_points_load_both_backends(tmp_path) -> None:
    backend = imagebackend.Backend(_conf(tmp_path))
    assert backend.available == ["flat", "rbd"]
    assert backend.backend("flat") is Flat
    assert backend.backend("rbd").__name__ == "Rbd"


def test_unknown_backend_lists_available(tmp_path) -> None:
    backend = imagebackend.Backend(_conf(tmp_path))
    with pytest.raises(exception.BackendNotFound) as info:
        backend.backend("qcow2")
    assert "'qcow2'" in str(info.value) and "flat, rbd" in str(info.value)


def test_default_type_comes_from_config(tmp_path) -> None:
    conf = _conf(tmp_path)
    backend = imagebackend.Backend(conf)
    conf.set_override("images_type", "flat", group="rbd")
    conf.set_override("instances_path", str(tmp_path), group="flat")
    disk = backend.by_name("inst", "disk")
    assert isinstance(disk, Flat) and disk.path == str(tmp_path / "inst" / "disk")


def test_test_instance_bypasses_discovery(tmp_path) -> None:
    class Probe(Flat):
        pass

    manager = stevedore.ExtensionManager.make_test_instance(
        [Extension("probe", None, Probe, None)], namespace=imagebackend.NAMESPACE)
    backend = imagebackend.Backend(_conf(tmp_path), extension_manager=manager)
    assert backend.available == ["probe"]
    assert isinstance(backend.by_name("i", "d", image_type="probe"), Probe)


def test_disks_of_one_backend_share_one_driver(tmp_path) -> None:
    backend = imagebackend.Backend(_conf(tmp_path))
    a = backend.by_name("a", "disk", image_type="rbd")
    b = backend.by_name("b", "disk", image_type="rbd")
    assert a.driver is b.driver
    assert not a.driver.client.connected  # nothing connects until needed
    backend.close()
