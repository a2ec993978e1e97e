"""The command line's old import paths warn, and still give the same objects.

``rbd_driver.commands`` and ``commands_backup|golden|provision`` moved into
the ``rbd_driver.cli`` package; for one release they re-export from there
and emit a ``DeprecationWarning`` on import.
"""

from __future__ import annotations

import importlib
import sys

import pytest

from rbd_driver.cli import _common, backup, cluster, disks, golden, output, provision

OLD = {
    "rbd_driver.commands": {
        "HANDLERS": {**cluster.HANDLERS, **disks.HANDLERS}, "Handler": _common.Handler,
        "Result": _common.Result, "UsageError": _common.UsageError,
        "positive_int": _common.positive_int, "progress_bar": output.progress_bar,
        "status": cluster.status, "pool_info": cluster.pool_info,
        "list_disks": disks.list_disks, "clone": disks.clone,
        "import_file": disks.import_file, "export_file": disks.export_file,
        "snapshot": disks.snapshot, "cleanup": disks.cleanup},
    "rbd_driver.commands_backup": {"HANDLERS": backup.HANDLERS,
                                   "add_parsers": backup.add_parsers,
                                   "backup": backup.backup, "restore": backup.restore},
    "rbd_driver.commands_golden": {"HANDLERS": golden.HANDLERS,
                                   "add_parsers": golden.add_parsers, "golden": golden.golden},
    "rbd_driver.commands_provision": {"HANDLERS": provision.HANDLERS,
                                      "add_parsers": provision.add_parsers,
                                      "provision_cmd": provision.provision_cmd},
}


@pytest.mark.parametrize("name", sorted(OLD))
def test_old_path_warns_and_re_exports(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.warns(DeprecationWarning, match=name.replace(".", r"\.") + " is deprecated"):
        module = importlib.import_module(name)
    for attr, expected in OLD[name].items():
        assert getattr(module, attr) == expected, attr
    assert set(module.__all__) == set(OLD[name])

