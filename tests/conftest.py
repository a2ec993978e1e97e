# SPDX-License-Identifier: Apache-2.0
pytest_plugins = ["rbd_driver.testing.fixtures", "tests.functional.secret_scanner"]
