# SPDX-License-Identifier: Apache-2.0
"""``rbd-driver``'s config file: the default path, the defaults notice, keyring warnings."""

from __future__ import annotations

import os

import pytest

from rbd_driver.cli import config
from tests.unit.cli.test_admin import Env


def test_default_config_file_is_read(tmp_path, monkeypatch, capsys) -> None:
    path = tmp_path / "rbd_driver.conf"
    path.write_text("[rbd]\npool = fromdefault\nuser = compute\n")
    monkeypatch.setattr(config, "DEFAULT_CONFIG_FILES", (str(tmp_path / "no.conf"), str(path)))
    conf = config.load_conf([])
    assert conf.rbd.pool == "fromdefault"
    assert capsys.readouterr().err == ""


def test_without_any_config_the_defaults_are_said_once(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(config, "DEFAULT_CONFIG_FILES", (str(tmp_path / "no.conf"),))
    conf = config.load_conf([])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("rbd-driver: warning: no config file")
    assert str(tmp_path / "no.conf") in err[0]
    assert f"ceph_conf={conf.rbd.ceph_conf}" in err[0] and "user=admin" in err[0]
    assert f"pool={conf.rbd.pool}" in err[0]


def test_a_given_file_hides_the_default(tmp_path, monkeypatch, capsys) -> None:
    default = tmp_path / "default.conf"
    default.write_text("[rbd]\npool = fromdefault\n")
    given = tmp_path / "given.conf"
    given.write_text("[rbd]\npool = given\n")
    monkeypatch.setattr(config, "DEFAULT_CONFIG_FILES", (str(default),))
    assert config.load_conf([str(given)]).rbd.pool == "given"
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("mode, warned", [(0o600, False), (0o640, False), (0o644, True)])
def test_keyring_readable_by_others_draws_a_warning(tmp_path, capsys, mode, warned) -> None:
    keyring = tmp_path / "k.keyring"
    keyring.write_text("")
    os.chmod(keyring, mode)
    path = tmp_path / "rbd.conf"
    path.write_text(f"[rbd]\nkeyring = {keyring}\n")
    config.load_conf([str(path)])
    err = capsys.readouterr().err
    assert (f"keyring {keyring} is readable by every user (mode {mode:04o})" in err) == warned
    if warned:
        assert f"chmod 600 {keyring}" in err


def _stderr_of(env: Env, *args: str) -> str:
    from rbd_driver import cli

    assert cli.main(["--config-file", str(env.conf), *args]) == 0
    return env.capsys.readouterr().err


def test_from_conf_warns_when_keyring_goes_elsewhere(env, monkeypatch) -> None:
    from tests.unit.ops.test_provision import FakeMon

    FakeMon(env.cluster)
    configured = env.tmp / "configured.keyring"
    written = env.tmp / "written.keyring"
    env.conf.write_text(env.conf.read_text() + f"keyring = {configured}\n")
    err = _stderr_of(env, "provision", "from-conf", "--keyring", str(written))
    assert written.exists()
    assert f"the keyring goes to {written} (--keyring) but [rbd] keyring is {configured}" in err


def test_from_conf_writes_where_rbd_keyring_says_without_warning(env) -> None:
    from tests.unit.ops.test_provision import FakeMon

    FakeMon(env.cluster)
    configured = env.tmp / "configured.keyring"
    env.conf.write_text(env.conf.read_text() + f"keyring = {configured}\n")
    assert "warning" not in _stderr_of(env, "provision", "from-conf")
    assert configured.exists()


def test_the_config_to_start_from_is_the_one_the_readme_shows_and_it_loads(capsys) -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    path = os.path.join(root, "etc", "rbd_driver", "rbd_driver.conf")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    with open(os.path.join(root, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert text[text.index("[rbd]"):].rstrip() in readme
    conf = config.load_conf([path])
    assert (conf.rbd.ceph_conf, conf.rbd.user, conf.rbd.pool) == (
        "/etc/ceph/ceph.conf", "compute", "vms")
    assert conf.rbd.keyring == "/etc/ceph/ceph.client.compute.keyring" and conf.rbd.secret_uuid
