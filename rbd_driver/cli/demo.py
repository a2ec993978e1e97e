# SPDX-License-Identifier: Apache-2.0
"""The demo behind ``rbd-driver throwaway demo`` (and ``./run.sh demo``).

It plays both sides of a cloud on a throwaway local cluster:

1. as an image service, it stores a golden RAW image in pool ``images`` with
   a protected snapshot ``snap``, and records its ``rbd://`` location;
2. as a compute driver, it loads the ``rbd`` backend through stevedore and
   launches N instance disks with ``direct_fetch`` (copy-on-write clones);
3. it launches one disk from a qcow2 image: ``direct_fetch`` refuses with a
   reason, and ``create_image`` falls back to fetch, convert and copy;
4. it boots one more instance in a real guest (libvirt and QEMU, TCG), from
   the disk XML of ``libvirt_info()`` with the ceph secret defined through
   :mod:`rbd_driver.libvirt.secret`, and prints the guest's console line
   that shows the golden's data, with the time from ``direct_fetch`` to that
   line; where no hypervisor can run it says so in one line and goes on;
5. it prints one disk's libvirt XML, cleans the instances up and stops the
   cluster.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from oslo_concurrency import processutils

from rbd_driver import exception, imagebackend
from rbd_driver.backends.rbd import Rbd
from rbd_driver.storage.cephx import read_key
from rbd_driver.storage.location import format_location
from rbd_driver.testing.local_cluster import ClusterState, LocalCluster, make_conf

__all__ = ["run_demo"]

GOLDEN_SIZE = 1 << 30
# What the golden's boot sector says; the guest prints it from its disk.
GOLDEN_MARKER = b"rbd-driver demo golden image"


def _store_image(driver: Any, name: str, data: bytes, size: int) -> str:
    """Act as the image service: an image with a protected snapshot; return its URL."""
    driver.create(name, size, pool="images")
    with driver.client.open_image("images", name, op="upload") as image:
        image.write(data, 0)
    driver.create_snap(name, "snap", protect=True, pool="images")
    return format_location(driver.fsid, "images", name, "snap")


def _rbd_disk(backend: imagebackend.Backend, instance_uuid: str) -> Rbd:
    """The instance's disk in the ``rbd`` backend, whose image names and parents the demo shows."""
    disk = backend.by_name(instance_uuid, "disk", image_type="rbd")
    assert isinstance(disk, Rbd)
    return disk


def _qcow2_bytes(workdir: str) -> bytes:
    path = os.path.join(workdir, "cirros-like.qcow2")
    processutils.execute("qemu-img", "create", "-q", "-f", "qcow2", path, "256M")
    processutils.execute("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 1M", path)
    with open(path, "rb") as f:
        return f.read()


def _boot_guest(backend: imagebackend.Backend, conf: Any, state: ClusterState, url: str,
                meta: dict[str, Any], uuids: list[str], say: Callable[[str], None]) -> dict[str, Any]:
    """Launch one more instance and boot it in a guest; return what the guest printed.

    The private libvirtd stands for the one a compute host already runs, so
    it is started (and its secret defined) before the clock starts.
    """
    from rbd_driver.testing.guest import GuestUnavailable, build_guest
    from rbd_driver.testing.hypervisor import GuestTimeout, Hypervisor, HypervisorUnavailable

    try:
        guest = build_guest()
        hypervisor = Hypervisor().start()
    except (GuestUnavailable, HypervisorUnavailable) as err:
        reason = str(err).splitlines()[0]
        say(f"no guest boot: no hypervisor can run here ({reason})")
        return {"skipped": reason}
    try:
        user = state.user
        key = read_key(state.user_keyring, f"client.{user}")
        conf.set_override("secret_uuid", hypervisor.define_ceph_secret(user, key), group="rbd")
        inst = str(uuid.uuid4())
        uuids.append(inst)
        disk = _rbd_disk(backend, inst)
        t0 = time.perf_counter()
        disk.direct_fetch("golden-raw", meta, [{"url": url, "metadata": {}}])
        vm = hypervisor.boot(guest, [disk.libvirt_info()], ["report"])
        try:
            seen = vm.wait_for(r"^disk vda .*$", timeout=180)
        except GuestTimeout as err:
            say(f"guest boot failed: {str(err).splitlines()[0]}")
            return {"disk": disk.rbd_name, "error": str(err)}
        seconds = round(time.perf_counter() - t0, 2)
        line = f"RG {seen[0]}"
        say(f"guest booted from {disk.rbd_name}: {seconds} s from direct_fetch to its line")
        say(f"  guest console: {line}")
        vm.wait_shutoff()  # closes the disk, so cleanup finds it idle
        return {"disk": disk.rbd_name, "line": line, "s": seconds}
    finally:
        hypervisor.stop()
        conf.clear_override("secret_uuid", group="rbd")


def run_demo(instances: int = 20, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo; ``say`` gets progress lines. Return a report dict."""
    report: dict[str, Any] = {"launches": []}
    started = time.monotonic()
    with LocalCluster() as local, tempfile.TemporaryDirectory() as workdir:
        report["cluster_boot_s"] = round(time.monotonic() - started, 1)
        report["cluster_conf"] = local.conf_path
        say(f"cluster up in {report['cluster_boot_s']} s: {local.conf_path}")
        state = local.state
        assert state is not None  # the with statement started it
        conf = make_conf(state)
        with imagebackend.Backend(conf) as backend:
            driver = backend.driver("rbd")
            report["user"] = f"client.{local.user}"
            golden = b"\xeb\x63\x90" + GOLDEN_MARKER.ljust(509, b"\0") + b"\x55\xaa"
            url = _store_image(driver, "golden-raw", golden * 2048, GOLDEN_SIZE)
            say(f"image service stored golden-raw at {url}")
            meta = {"disk_format": "raw", "size": GOLDEN_SIZE}
            uuids = [str(uuid.uuid4()) for _ in range(instances)]
            for inst in uuids:
                disk = _rbd_disk(backend, inst)
                t0 = time.perf_counter()
                disk.direct_fetch("golden-raw", meta, [{"url": url, "metadata": {}}])
                ms = (time.perf_counter() - t0) * 1000
                info = disk.parent_info()  # a clone's parent: pool, image, snapshot
                parent = "{}/{}@{}".format(*info) if info else "none"
                report["launches"].append({"disk": disk.rbd_name, "ms": round(ms, 1),
                                           "parent": parent})
                say(f"  launched {disk.rbd_name}  {ms:6.1f} ms  parent {parent}")
            times = sorted(item["ms"] for item in report["launches"])
            report["median_clone_ms"] = times[len(times) // 2] if times else None

            report["guest"] = _boot_guest(backend, conf, state, url, meta, uuids, say)

            qcow_url = _store_image(driver, "golden-qcow2", _qcow2_bytes(workdir), 256 << 20)
            odd = str(uuid.uuid4())
            uuids.append(odd)
            disk = _rbd_disk(backend, odd)  # [rbd] images_type is rbd: the default backend
            try:
                disk.direct_fetch("golden-qcow2", {"disk_format": "qcow2"}, [{"url": qcow_url}])
            except exception.ImageUnacceptable as err:
                report["refusal"] = str(err)
                say(f"qcow2 image refused: {err}")

            def fetch_and_convert(target: str) -> None:
                # What an image service client does: download, then convert to raw.
                src = os.path.join(workdir, "download.qcow2")
                with driver.client.open_image("images", "golden-qcow2", snapshot="snap",
                                              read_only=True) as image, open(src, "wb") as f:
                    f.write(image.read(0, image.size()))
                processutils.execute("qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw",
                                     src, target)

            t0 = time.perf_counter()
            disk.create_image(fetch_and_convert, os.path.join(workdir, "base.raw"), 512 << 20)
            report["fallback_copy"] = {"disk": disk.rbd_name,
                                       "s": round(time.perf_counter() - t0, 2),
                                       "size": disk.get_disk_size(), "parent": disk.parent_info()}
            say(f"fallback copy made {disk.rbd_name} in {report['fallback_copy']['s']} s "
                f"(flat, {disk.get_disk_size() >> 20} MiB)")

            report["libvirt_xml"] = backend.by_name(uuids[0], "disk").libvirt_info()
            say("libvirt XML of the first disk:\n  " + report["libvirt_xml"])

            # Every instance at once, as a host tears down many (cleanup_instances).
            results = Rbd.cleanup_instances(conf, uuids, driver=driver)
            cleanup: dict[str, Any] = {"removed": 0, "trashed": 0, "busy": {}, "failed": {}}
            for result in results.instances.values():
                cleanup["removed"] += len(result.removed)
                cleanup["trashed"] += len(result.trashed)
                cleanup["busy"].update(result.busy)
                cleanup["failed"].update(result.failed)
            report["cleanup"] = cleanup
            report["left_in_vms"] = len(driver.list_images("vms"))
            say(f"cleanup: {cleanup['removed']} disks removed, {cleanup['trashed']} trashed, "
                f"{len(cleanup['busy'])} busy, {len(cleanup['failed'])} failed; "
                f"{report['left_in_vms']} images left in vms")
        report["health"] = local.health()["health"]["status"]
    say("cluster stopped")
    return report
