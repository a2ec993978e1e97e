pytest_plugins = ["rbd_driver.testing.fixtures"]
