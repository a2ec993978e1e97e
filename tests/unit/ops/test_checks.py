# SPDX-License-Identifier: Apache-2.0
"""``rbd-driver check`` and :mod:`rbd_driver.ops.checks` on the fake cluster.

The fake monitor answers ``osd blocklist`` as pacific does: a user with
``profile rbd`` on the mon may run ``blocklistop=add`` with an address of the
form ``*/nonce`` and then gets EINVAL for an address it cannot parse; a user
without it gets EACCES before any parsing. The functional test
``tests/functional/test_blocklist_right.py`` shows the same against a real
monitor, and what a user without the right cannot do.
"""

from __future__ import annotations

import errno
import json
import re
from typing import Any

import pytest

from rbd_driver import cli, exception
from rbd_driver.ops import checks
from tests.unit.cli.test_admin import Env


class BlocklistMon:
    def __init__(self, cluster: Any, allowed: bool) -> None:
        self.allowed = allowed
        self.commands: list[dict[str, Any]] = []
        self.blocklisted: list[str] = []
        cluster.mon_commands["osd blocklist"] = self.handle

    def handle(self, cmd: dict[str, Any], inbuf: bytes) -> tuple[int, bytes, str]:
        self.commands.append(cmd)
        addr = str(cmd.get("addr", ""))
        if not (self.allowed and cmd.get("blocklistop") == "add"
                and re.fullmatch(r"[^/]+/[0-9]+", addr)):
            return -errno.EACCES, b"", "access denied"
        if not re.fullmatch(r"\d+\.\d+\.\d+\.\d+:\d+/\d+", addr):
            return -errno.EINVAL, b"", f"unable to parse address {addr}"
        self.blocklisted.append(addr)
        return 0, b"", f"blocklisting {addr}"


def _check(env: Env, *extra: str) -> tuple[int, str, str]:
    code = cli.main(["--config-file", str(env.conf), *extra, "check"])
    out, err = env.capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("allowed", [True, False])
def test_check_tells_whether_the_user_may_blocklist_and_blocklists_nothing(env, allowed) -> None:
    mon = BlocklistMon(env.cluster, allowed)
    code, out, err = _check(env, "--json")
    doc = json.loads(out)
    assert (code, doc["ok"], err) == (0 if allowed else 1, allowed, "")
    assert doc["user"] == "compute"
    [check] = doc["checks"]
    assert (check["name"], check["ok"]) == ("blocklist", allowed)
    assert mon.commands and all(c["addr"] == checks.BLOCKLIST_PROBE_ADDR
                                and c["blocklistop"] == "add" for c in mon.commands)
    assert mon.blocklisted == []


def test_check_text_names_the_user_and_the_fix(env) -> None:
    BlocklistMon(env.cluster, allowed=False)
    code, out, _ = _check(env)
    assert code == 1
    assert out.splitlines()[0] == "user: client.compute"
    assert "blocklist: FAILED: client.compute may not run 'osd blocklist add'" in out
    assert "fix: give client.compute 'profile rbd' on the mon" in out
    BlocklistMon(env.cluster, allowed=True)
    code, out, _ = _check(env)
    assert code == 0 and "blocklist: ok:" in out and "fix:" not in out


def test_blocklist_right_results(env) -> None:
    from rbd_driver.storage.rados_client import RadosClient

    client = RadosClient(str(env.tmp / "ceph.conf"), user="compute")
    mon = BlocklistMon(env.cluster, allowed=True)
    assert checks.blocklist_right(client).ok is True
    mon.allowed = False
    denied = checks.blocklist_right(client)
    assert denied.ok is False and "client.compute" in denied.detail
    assert denied.fix and "profile rbd" in denied.fix
    # An EINVAL that is not about the address (an unknown command) is not a pass.
    env.cluster.mon_commands.pop("osd blocklist")
    assert checks.blocklist_right(client).ok is None
    client.close()


def test_report_ok_only_when_every_check_passed() -> None:
    passed = checks.Check("a", True, "fine")
    assert checks.CheckReport("u", [passed]).ok
    assert not checks.CheckReport("u", [passed, checks.Check("b", None, "?")]).ok
    assert not checks.CheckReport("u", [checks.Check("b", False, "no", "fix")]).as_dict()["ok"]


def test_an_unreachable_cluster_is_an_error_not_a_failed_check(env, monkeypatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise exception.ClusterConnectionError(detail="no monitor answered")

    monkeypatch.setattr(checks.RadosClient, "connect", refuse)
    err = env.run("check", expect=1)
    assert "no monitor answered" in err
