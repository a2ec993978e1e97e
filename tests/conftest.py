pytest_plugins = ["rbd_driver.testing.fixtures", "tests.functional.secret_scanner"]
