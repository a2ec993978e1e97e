# SPDX-License-Identifier: Apache-2.0
"""pytest fixtures backed by a real throwaway Ceph cluster, or by the fake one.

Enable them in a ``conftest.py`` with::

    pytest_plugins = ["rbd_driver.testing.fixtures"]

Environment variables:

``RBD_DRIVER_TEST_CEPH_CONF``
    use an already running local cluster (the ceph.conf printed by
    ``rbd-driver throwaway start``) instead of starting one.
``RBD_DRIVER_TEST_OSDS`` / ``RBD_DRIVER_TEST_OBJECTSTORE``
    shape of the cluster started for the session (default 1, bluestore).
``RBD_DRIVER_CACHE``
    where the test guest is cached (default ``~/.cache/rbd_driver``).

When the session cluster comes up, and before each test that uses it (in
``pytest_runtest_setup``, before any of the test's fixtures can write),
``osd dump`` is read once (as admin, about a millisecond); if an OSD or a pool
is full the run stops at once with Ceph's health checks, since a full cluster
blocks writes rather than failing them.

Guests: ``guest_image`` builds the test guest from the host's kernel and
busybox (:mod:`rbd_driver.testing.guest`); ``hypervisor_daemon`` starts a
private libvirtd for the session (:mod:`rbd_driver.testing.hypervisor`) and
``hypervisor`` gives each test a scope whose guests and ceph secrets are
removed after it, pass or fail; ``libvirt_rbd_conf`` is ``rbd_conf`` with
``[rbd] secret_uuid`` set to the test user's secret, defined through
:func:`rbd_driver.libvirt.secret.define_ceph_secret`. They skip the test,
with the reason, only where ``qemu-system-x86_64`` cannot run at all.

The fake cluster: :class:`FakeEnv` is what a unit test starts from, the fake
``rados``/``rbd`` modules of :mod:`rbd_driver.testing.fakes` with pools on
them, an ``[rbd]`` conf pointing at them and an ``RBDDriver`` that never
sleeps; ``fake_env`` gives each test one with pools ``vms`` and ``images``,
closed after it and checked for leaked handles. Tests subclass
:class:`FakeEnv` for their own helpers and pick the pools, the clone format,
the options and the driver's settings by its parameters.

A cluster the session started is stopped at the end of the session, also
when the run is interrupted: ^C, and SIGTERM (turned into the same
interruption, so fixtures tear down), and at interpreter exit as a last
resort. Only SIGKILL leaves it running; ``rbd-driver throwaway stop``
then stops it by its recorded PIDs.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from oslo_config import cfg

from rbd_driver import conf as conf_module
from rbd_driver.storage.cephx import read_key
from rbd_driver.storage.rados_client import RadosClient
from rbd_driver.storage.rbd_utils import RBDDriver
from rbd_driver.testing import fakes
from rbd_driver.testing.guest import GuestImage, build_guest
from rbd_driver.testing.hypervisor import Hypervisor, HypervisorScope, qemu_unavailable_reason
from rbd_driver.testing.local_cluster import (
    ClusterState,
    LocalCluster,
    connect_admin,
    load_state,
    make_conf,
    mon_command,
)

__all__ = ["FakeEnv", "ceph_cluster", "fake_env", "guest_image", "hypervisor",
           "hypervisor_daemon", "libvirt_rbd_conf", "rbd_conf", "rados_client", "unique_name"]


#: The session cluster's object store. bluestore, as real clusters run: a
#: memstore OSD once counted its used bytes below zero in a full suite run
#: (``ceph -s``: "16 EiB used", the OSD full, every write blocked), and
#: bluestore ran the backend and golden tests as fast (168 s against 170 s).
SESSION_OBJECTSTORE = "bluestore"


@pytest.fixture(scope="session")
def ceph_cluster() -> Iterator[ClusterState]:
    """A running cluster for the whole session; stopped at the end if we started it."""
    existing = os.environ.get("RBD_DRIVER_TEST_CEPH_CONF")
    if existing:
        state = load_state(existing)
        with _full_guard(state):
            yield state
        return
    cluster = LocalCluster(
        osds=int(os.environ.get("RBD_DRIVER_TEST_OSDS", "1")),
        objectstore=os.environ.get("RBD_DRIVER_TEST_OBJECTSTORE", SESSION_OBJECTSTORE),
    )
    previous = _interrupt_on_sigterm()
    atexit.register(cluster.stop)
    try:
        state = cluster.start()
        with _full_guard(state):
            yield state
    finally:
        cluster.stop()
        atexit.unregister(cluster.stop)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


#: What signal.signal() returns: a handler, SIG_DFL/SIG_IGN, or None (not set from Python).
_SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def _interrupt_on_sigterm() -> _SignalHandler:
    """Make SIGTERM interrupt the run like ^C, so that teardown stops the cluster.

    Returns the handler it replaced (None when not in the main thread,
    where handlers cannot be set).
    """
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    return signal.signal(signal.SIGTERM, interrupt)


#: The session cluster's admin connection while it runs (see _full_guard).
_guard_admin: Any = None


@contextlib.contextmanager
def _full_guard(state: ClusterState) -> Iterator[None]:
    """Keep an admin connection for the full-cluster check while the session
    cluster runs; check once at once (a reused dev cluster may be full already)."""
    global _guard_admin
    admin = connect_admin(state)
    try:
        stop_if_full(admin)
        _guard_admin = admin
        yield
    finally:
        _guard_admin = None
        admin.shutdown()


def full_osds(osd_dump: dict[str, Any]) -> list[str]:
    """Return the OSDs (``osd.N``) and pools that ``osd dump`` marks full."""
    found = [f"osd.{o['osd']}" for o in osd_dump.get("osds", []) if "full" in o.get("state", [])]
    found += [f"pool {p['pool_name']}" for p in osd_dump.get("pools", [])
              if "full" in str(p.get("flags_names", "")).split(",")]
    return found


def stop_if_full(admin: Any) -> None:
    """Stop the whole run if ``osd dump`` marks an OSD or a pool full.

    A full OSD blocks every write without an error, so each later test would
    hang until its timeout: better one clear stop, with what Ceph says.
    """
    full = full_osds(mon_command(admin, "osd dump"))
    if full:
        status = mon_command(admin, "status")
        pytest.exit(f"the test cluster is full ({', '.join(full)}): writes would hang. "
                    f"health: {json.dumps(status.get('health', {}).get('checks', {}))}; "
                    f"pgmap: {json.dumps(status.get('pgmap', {}))}", returncode=3)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before a test that uses the session cluster, and before any of its
    fixtures (session-scoped ones too) write to it, stop the run if it is full."""
    if _guard_admin is not None and "ceph_cluster" in getattr(item, "fixturenames", ()):
        stop_if_full(_guard_admin)


@pytest.fixture
def rbd_conf(ceph_cluster: ClusterState) -> cfg.ConfigOpts:
    """A fresh ConfigOpts pointing at the cluster as its non-admin user."""
    conf = make_conf(ceph_cluster)
    # Busy-disk retries are quick in tests; production keeps the defaults.
    conf.set_override("destroy_retry_interval", 0.5, group="rbd")
    conf.set_override("destroy_retries", 4, group="rbd")
    return conf


@pytest.fixture
def rados_client(rbd_conf: cfg.ConfigOpts) -> Iterator[RadosClient]:
    """A connected-on-demand client as the non-admin user, closed afterwards."""
    with RadosClient.from_conf(rbd_conf) as client:
        yield client


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name no other test uses, for images and snapshots."""
    return f"t-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")


class FakeEnv:
    """A fake cluster, an ``[rbd]`` conf pointing at it, and a driver on it.

    ``rados``/``rbd`` are fake modules (:func:`rbd_driver.testing.fakes.make_modules`)
    sharing ``cluster``, with ``pools`` added; ``clone_format`` and
    ``aio_mode`` set the cluster's (its defaults when None). ``ceph_conf`` is
    an empty ``[global]`` file under ``tmp_path`` (the fakes read nothing of
    it). ``conf`` has every option registered and ``[rbd] ceph_conf``,
    ``user`` and ``keyring`` (those not None) and ``options`` set.
    ``driver`` is made on first use: an
    :class:`~rbd_driver.storage.rbd_utils.RBDDriver` on pool ``pool`` whose
    client connects as ``user`` with ``keyring``, and whose sleeps between
    removal retries are recorded in ``slept`` instead of taken;
    ``driver_options`` are its other arguments (``destroy_retries`` 0 unless
    given). :meth:`new_driver` makes another one on its own connection
    (another process, another host), :meth:`new_client` a client alone.
    :meth:`close` closes every driver and client made here.
    """

    def __init__(self, tmp_path: Path | str, *, pools: Iterable[str] = ("vms", "images"),
                 pool: str = "vms", clone_format: int | None = None,
                 aio_mode: str | None = None, user: str | None = "compute",
                 keyring: str | None = None, options: dict[str, Any] | None = None,
                 driver_options: dict[str, Any] | None = None, fsid: str | None = None) -> None:
        self.tmp = Path(tmp_path)
        self.ceph_conf = self.tmp / "ceph.conf"
        self.ceph_conf.write_text("[global]\n")
        self.rados, self.rbd = fakes.make_modules(fsid)
        self.cluster: fakes.FakeCluster = self.rados._cluster
        if clone_format is not None:
            self.cluster.clone_format = clone_format
        if aio_mode is not None:
            self.cluster.aio_mode = aio_mode
        for name in pools:
            self.cluster.add_pool(name)
        self.pool, self.user, self.keyring = pool, user, keyring
        self.conf = cfg.ConfigOpts()
        conf_module.register_opts(self.conf)
        self.conf([], project="rbd_driver", default_config_files=[])
        settings = {"ceph_conf": str(self.ceph_conf), "user": user, "keyring": keyring}
        for key, value in {**settings, **(options or {})}.items():
            if value is not None:
                self.conf.set_override(key, value, group="rbd")
        self.slept: list[float] = []
        self.driver_options: dict[str, Any] = {"destroy_retries": 0, "sleep": self.slept.append,
                                               **(driver_options or {})}
        self.clients: list[RadosClient] = []
        self.drivers: list[RBDDriver] = []
        self._driver: RBDDriver | None = None
        self._client: RadosClient | None = None

    def new_client(self, **kwargs: Any) -> RadosClient:
        """A client of the fake cluster as ``user`` (``kwargs``: RadosClient's others)."""
        options = {"user": self.user, "keyring": self.keyring, **kwargs}
        client = RadosClient(str(self.ceph_conf), rados=self.rados, rbd=self.rbd, **options)
        self.clients.append(client)
        return client

    def new_driver(self, **kwargs: Any) -> RBDDriver:
        """Another driver on its own connection (``kwargs`` override ``driver_options``)."""
        driver = RBDDriver(self.new_client(), pool=self.pool, **{**self.driver_options, **kwargs})
        self.drivers.append(driver)
        return driver

    @property
    def driver(self) -> RBDDriver:
        if self._driver is None:
            self._driver = self.new_driver()
        return self._driver

    @driver.setter
    def driver(self, driver: RBDDriver) -> None:
        self._driver = driver

    @property
    def client(self) -> RadosClient:
        """The client set here (a test of the client alone), else the driver's."""
        return self._client if self._client is not None else self.driver.client

    @client.setter
    def client(self, client: RadosClient) -> None:
        self._client = client

    def close(self) -> None:
        """Close every driver (its workers and connection) and client made here."""
        for driver in self.drivers:
            driver.close()
        for client in self.clients:
            client.close()

    def close_and_check(self) -> None:
        """:meth:`close`, then fail if a connection, ioctx or image handle is left open."""
        self.close()
        self.cluster.assert_no_open_handles()


@pytest.fixture
def fake_env(tmp_path: Path) -> Iterator[FakeEnv]:
    """A :class:`FakeEnv` with pools ``vms`` and ``images``; closed, and checked for
    leaked handles, after the test."""
    env = FakeEnv(tmp_path)
    yield env
    env.close_and_check()


def _skip_without_qemu() -> None:
    reason = qemu_unavailable_reason()
    if reason:
        pytest.skip(f"no hypervisor: {reason}")


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    """The test guest (kernel and busybox initramfs), built once and cached."""
    _skip_without_qemu()
    return build_guest()


def _running_daemon() -> Iterator[Hypervisor]:
    """Start a private libvirtd (its own host UUID); stop it, with its guests, at the end."""
    daemon = Hypervisor()
    atexit.register(daemon.stop)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        atexit.unregister(daemon.stop)


@pytest.fixture(scope="session")
def hypervisor_daemon() -> Iterator[Hypervisor]:
    """A private libvirtd for the session, stopped (with its guests) at the end."""
    _skip_without_qemu()
    yield from _running_daemon()


@pytest.fixture(scope="session")
def destination_daemon() -> Iterator[Hypervisor]:
    """A second private libvirtd (another host UUID): a migration's destination host."""
    yield from _running_daemon()


@pytest.fixture
def destination(destination_daemon: Hypervisor) -> Iterator[HypervisorScope]:
    """Like ``hypervisor``, on the destination daemon."""
    with destination_daemon.scope() as scope:
        yield scope


@pytest.fixture
def hypervisor(hypervisor_daemon: Hypervisor) -> Iterator[HypervisorScope]:
    """Boot guests and define secrets; all removed after the test, pass or fail."""
    with hypervisor_daemon.scope() as scope:
        yield scope


@pytest.fixture
def libvirt_rbd_conf(rbd_conf: cfg.ConfigOpts, hypervisor: HypervisorScope,
                     ceph_cluster: ClusterState) -> cfg.ConfigOpts:
    """``rbd_conf`` whose ``[rbd] secret_uuid`` is the test user's secret on ``hypervisor``."""
    key = read_key(ceph_cluster.user_keyring, f"client.{ceph_cluster.user}")
    secret_uuid = hypervisor.define_ceph_secret(ceph_cluster.user, key)
    rbd_conf.set_override("secret_uuid", secret_uuid, group="rbd")
    return rbd_conf
