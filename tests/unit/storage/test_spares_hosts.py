# SPDX-License-Identifier: Apache-2.0
"""Spares shared by hosts: clone_spares counts the pool's spares, and a golden
delete holds every host's refills (fakes; each driver is another host)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from rbd_driver import exception
from rbd_driver.ops import golden as golden_module
from rbd_driver.ops.golden import GoldenImages
from rbd_driver.storage.location import parse_location
from tests.unit.storage.test_spares import Env


def test_clone_spares_is_the_pools_count_whichever_host_made_them(env: Env) -> None:
    hosts = [env.driver, env.new_driver(), env.new_driver()]
    for round_ in range(3):
        for host in hosts:
            disk = env.launch(host)
            assert disk.exists()
            for other in hosts:
                assert other.wait_spares(5)
            assert len(env.spares()) == 2, (round_, env.spares())
    # Nine launches: one clone, two spares, then each claim refilled by one clone.
    assert env.cluster.calls.count("RBD.clone") == 1 + 2 + 8


def test_a_host_takes_spares_another_host_made(env: Env) -> None:
    env.launch()
    assert env.driver.wait_spares(5)
    made = {env.cluster.image("vms", s).id for s in env.spares()}
    other = env.new_driver()
    clones = env.cluster.calls.count("RBD.clone")
    with env.refills_deferred(other):
        disk = env.launch(other)
        assert env.cluster.image("vms", disk.rbd_name).id in made
        assert env.cluster.calls.count("RBD.clone") == clones  # no clone at launch
    assert "RBD.list" not in env.cluster.calls  # found by name prefix, not a pool listing


def test_a_hold_stops_every_hosts_refills_until_it_ends(env: Env) -> None:
    env.launch()
    assert env.driver.wait_spares(5)
    other = env.new_driver()
    identity = env.identity()
    with env.driver.spares.hold_everywhere(identity):
        assert env.cluster.pool("images").objects  # the hold object is in the golden's pool
        env.launch(other)  # claims one; its refill is held
        assert other.wait_spares(5)
        assert len(env.spares()) == 1
    assert not [k for k in env.cluster.pool("images").objects if "spares_hold" in k]
    env.launch(other)
    assert other.wait_spares(5)
    assert len(env.spares()) == 2


def test_an_expired_hold_does_not_hold(env: Env) -> None:
    env.launch()
    assert env.driver.wait_spares(5)
    with env.driver.spares.hold_everywhere(env.identity(), seconds=-1):
        other = env.new_driver()
        env.launch(other)
        assert other.wait_spares(5)
        assert len(env.spares()) == 2


def test_a_spare_finished_after_a_hold_began_is_removed_by_its_maker(env: Env) -> None:
    """A clone started before the hold finishes after it: its maker removes it."""
    other = env.new_driver()
    cloned, release = threading.Event(), threading.Event()
    real_clone = other.clone

    def slow_clone(location: Any, name: str, pool: str | None = None) -> None:
        real_clone(location, name, pool)
        if name.startswith("rbd-driver-spare-making.") and not cloned.is_set():
            cloned.set()
            assert release.wait(5)

    other.clone = slow_clone  # type: ignore[method-assign]
    env.launch(other)  # the refill's first clone is made, then waits
    assert cloned.wait(5)
    with env.driver.spares.hold_everywhere(env.identity()):
        release.set()
        assert other.wait_spares(5)
        assert env.spares() == []  # made, then removed by its maker
    assert env.cluster.calls.count("RBD.clone") >= 2


# -- the losing interleavings, forced ------------------------------------------------
#
# Each test below stops two hosts at the points where the race was lost (events,
# never sleeps) and fails when the fix it names is taken out of the product.

WAIT = 30  # seconds an event may take before the test fails (never reached when green)
MAKING = "rbd-driver-spare-making."


@pytest.fixture(params=[1, 2], ids=["clone-v1", "clone-v2"])
def both(tmp_path: Any, request: pytest.FixtureRequest, monkeypatch: Any) -> Any:
    """The env on both clone formats; a golden delete looks again without pausing."""
    monkeypatch.setattr(golden_module, "SPARES_POLL", 0.0)
    env = Env(tmp_path, spares=1, clone_format=request.param)
    yield env
    env.close()
    env.cluster.assert_no_open_handles()


def _ours(env: Env, identity: Any) -> list[str]:
    """Every image in vms named for a spare of ``identity``: made, being made or removed."""
    ids = f".{env.cluster.pool('images').id}.{identity.image_id}.{identity.snap_id}."
    return [n for n in env.cluster.pool("vms").image_names()
            if n.startswith("rbd-driver-spare") and ids in n]


def _refill(env: Env, host: Any) -> None:
    """Ask ``host`` for one spare of the golden, in the background."""
    assert host.spares.refill(parse_location(env.url), env.identity(), 1)


class _Delete(threading.Thread):
    """A golden delete on its own thread; ``outcome`` is its result or its error."""

    def __init__(self, env: Env, **kwargs: Any) -> None:
        super().__init__(daemon=True)
        self.golden = GoldenImages(env.driver, pool="images")
        self.kwargs = kwargs
        self.outcome: Any = None

    def run(self) -> None:
        try:
            self.outcome = self.golden.delete("golden", **self.kwargs)
        except exception.RbdDriverError as err:
            self.outcome = err

    def result(self) -> Any:
        self.join(WAIT)
        assert not self.is_alive(), "the delete did not finish"
        return self.outcome


def test_a_clone_landing_between_the_deletes_looks_is_removed_and_the_golden_too(
        both: Env, monkeypatch: Any) -> None:
    """Holds GoldenImages.delete's retry loop: the other host's clone is in flight when
    the delete looks for spares, and attached when it looks for clones."""
    env, other = both, both.new_driver()
    identity = env.identity()
    in_clone, looked, cloned, checked = (threading.Event() for _ in range(4))
    real_clone, real_children = other.clone, env.driver.snap_children
    looks: list[list[str]] = []

    def clone(location: Any, name: str, pool: str | None = None) -> None:
        if name.startswith(MAKING) and not in_clone.is_set():
            in_clone.set()
            assert looked.wait(WAIT)  # past the hold check, not attached yet
            real_clone(location, name, pool)
            cloned.set()
            assert checked.wait(WAIT)  # attached when the delete looks for clones
            return
        real_clone(location, name, pool)

    def children(name: str, snap: str, pool: str | None = None) -> list[dict[str, Any]]:
        found = real_children(name, snap, pool)
        looks.append([c["image"] for c in found])
        if len(looks) == 1:  # _remove_spares' look
            assert in_clone.is_set() and not cloned.is_set()
            looked.set()
            assert cloned.wait(WAIT)
        elif len(looks) == 2:  # _delete's look
            checked.set()
        return found

    monkeypatch.setattr(other, "clone", clone)
    monkeypatch.setattr(env.driver, "snap_children", children)
    _refill(env, other)
    assert in_clone.wait(WAIT)
    delete = _Delete(env)
    delete.start()
    assert delete.result() == "removed"
    assert looks[0] == [] and looks[1] and all(n.startswith(MAKING) for n in looks[1])
    assert other.wait_spares(WAIT)
    assert env.cluster.pool("images").image_names() == []
    assert _ours(env, identity) == []
    env.check_consistent()


def test_a_spare_whose_maker_died_after_the_deletes_last_look_is_swept(
        both: Env, monkeypatch: Any) -> None:
    """Holds GoldenImages.delete's final sweep: the clone attaches after the delete's
    last look, just before the golden goes, and its maker dies before it can remove it."""
    env, other = both, both.new_driver()
    identity = env.identity()
    in_clone, go, cloned, finished = (threading.Event() for _ in range(4))
    real_clone, real_remove = other.clone, env.driver.remove_image

    def clone(location: Any, name: str, pool: str | None = None) -> None:
        if name.startswith(MAKING) and not in_clone.is_set():
            in_clone.set()
            assert go.wait(WAIT)
            real_clone(location, name, pool)
            cloned.set()
            assert finished.wait(WAIT)
            raise RuntimeError("the maker died")  # its making- clone is left behind
        real_clone(location, name, pool)

    def remove_image(name: str, pool: str | None = None) -> Any:
        if name == "golden" and not go.is_set():
            assert _ours(env, identity) == []  # the delete's last look found nothing
            go.set()
            assert cloned.wait(WAIT)
        return real_remove(name, pool)

    monkeypatch.setattr(other, "clone", clone)
    monkeypatch.setattr(env.driver, "remove_image", remove_image)
    _refill(env, other)
    assert in_clone.wait(WAIT)
    delete = _Delete(env)
    delete.start()
    outcome = delete.result()
    finished.set()
    assert other.wait_spares(WAIT)
    # Attached when librbd removed it, the golden went to the trash; what held it is gone.
    assert outcome == "trashed"
    assert env.cluster.pool("images").image_names() == []
    assert _ours(env, identity) == []
    env.check_consistent()


def test_a_spare_finished_after_its_golden_was_replaced_is_removed_by_its_maker(
        both: Env, monkeypatch: Any) -> None:
    """Holds Spares._still_wanted: a clone started from the golden's location lands on a
    new golden of the same name (deleted and registered again meanwhile)."""
    env, other = both, both.new_driver()
    old = env.identity()
    in_clone, replaced = threading.Event(), threading.Event()
    real_clone = other.clone

    def clone(location: Any, name: str, pool: str | None = None) -> None:
        if name.startswith(MAKING) and not in_clone.is_set():
            in_clone.set()
            assert replaced.wait(WAIT)
        real_clone(location, name, pool)

    monkeypatch.setattr(other, "clone", clone)
    _refill(env, other)
    assert in_clone.wait(WAIT)
    assert GoldenImages(env.driver, pool="images").delete("golden") == "removed"
    env.golden()  # same name, new image id
    new = env.identity()
    assert new != old
    replaced.set()
    assert other.wait_spares(WAIT)
    assert _ours(env, old) == []  # the clone of the new golden under the old name went
    assert env.driver.snap_children("golden", "snap", "images") == []
    env.check_consistent()


def test_a_making_spare_is_moved_by_its_maker_or_its_remover_never_both(
        both: Env, monkeypatch: Any) -> None:
    """Holds Spares.remove's claim of a making- spare: its maker's clone has returned and
    it is about to publish the spare when a remover, mid-removal (librbd resolved the
    name, then removes by id), lets it go on."""
    env, other = both, both.new_driver()
    identity = env.identity()
    publishing, go, done = threading.Event(), threading.Event(), threading.Event()
    published: list[bool] = []
    real_claim = other.claims.claim_rename

    def claim_rename(src: str, dst: str, pool: str | None = None) -> bool:
        if not src.startswith(MAKING):
            return real_claim(src, dst, pool)
        publishing.set()
        assert go.wait(WAIT)
        try:
            published.append(real_claim(src, dst, pool))
            return published[-1]
        finally:
            done.set()

    def in_the_remove() -> None:
        go.set()
        assert done.wait(WAIT)

    monkeypatch.setattr(other.claims, "claim_rename", claim_rename)
    _refill(env, other)
    assert publishing.wait(WAIT)
    [making] = _ours(env, identity)
    assert making.startswith(MAKING)
    env.cluster.pause_in("RBD.remove", in_the_remove)
    removed = env.driver.remove_spares("vms", identity)
    assert go.is_set(), "the remover never removed anything"
    assert other.wait_spares(WAIT)
    # The remover claimed it first, so the maker's publish found nothing to move.
    assert removed == [making] and published == [False]
    assert _ours(env, identity) == []
    env.check_consistent()
