"""Sphinx configuration for the rbd_driver documentation."""

project = "rbd_driver"
author = "rbd_driver developers"
extensions = [
    "sphinx.ext.autodoc",
    "oslo_config.sphinxext",
    "stevedore.sphinxext",
]
exclude_patterns = ["_build"]
html_static_path = ["_static"]
autodoc_mock_imports = ["rados", "rbd"]
