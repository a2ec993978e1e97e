# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from oslo_config import cfg, generator

import rbd_driver
from rbd_driver import conf as conf_module

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = {"pool", "ceph_conf", "user", "secret_uuid", "connect_timeout", "op_timeout",
            "destroy_retries", "destroy_retry_interval"}


def _fresh() -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    rbd_driver.register_opts(conf)
    conf([], project="rbd_driver", default_config_files=[])
    return conf


def test_required_options_exist_with_defaults() -> None:
    conf = _fresh()
    names = {opt.dest for opt in conf_module.ALL_OPTS}
    assert REQUIRED <= names
    assert conf.rbd.connect_timeout == 5
    assert conf.rbd.pool == "vms"


def test_import_registers_nothing_globally() -> None:
    # In a fresh interpreter, importing the package leaves cfg.CONF untouched.
    code = ("from oslo_config import cfg; import rbd_driver, rbd_driver.storage.rados_client;"
            "import sys; sys.exit('rbd' in cfg.CONF)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_register_twice_is_harmless_and_confs_are_independent() -> None:
    a, b = _fresh(), _fresh()
    rbd_driver.register_opts(a)
    a.set_override("pool", "other", group="rbd")
    assert a.rbd.pool == "other"
    assert b.rbd.pool == "vms"


def test_every_option_has_actionable_help() -> None:
    for opt in conf_module.ALL_OPTS:
        assert "Possible values" in opt.help, opt.dest
        assert "Related options" in opt.help, opt.dest


def test_timeout_bounds_are_enforced() -> None:
    conf = _fresh()
    try:
        conf.set_override("connect_timeout", 0, group="rbd")
    except ValueError:
        return
    raise AssertionError("connect_timeout 0 was accepted")


def test_list_opts_is_the_registered_entry_point() -> None:
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="oslo.config.opts") if e.name == "rbd_driver"]
    groups = {str(group): {opt.dest for opt in opts} for group, opts in ep.load()()}
    assert groups["rbd"] == {opt.dest for opt in conf_module.ALL_OPTS}
    # Plugin options are listed too, walked from the backend namespace.
    assert groups["flat"] == {"instances_path"}


def test_committed_sample_config_is_up_to_date() -> None:
    gen_conf = cfg.ConfigOpts()
    generator.register_cli_opts(gen_conf)
    gen_conf(["--namespace", "rbd_driver", "--wrap-width", "79"])
    out = io.StringIO()
    generator.generate(gen_conf, output_file=out)
    committed = (ROOT / "doc/source/_static/rbd_driver.conf.sample").read_text()
    assert out.getvalue() == committed, "run oslo-config-generator (see README)"
    for name in REQUIRED:
        assert f"#{name} = " in committed
