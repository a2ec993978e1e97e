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

# Nitpicky builds (sphinx -n) resolve every cross-reference. The standard
# library's and other projects' inventories are not fetched (the docs build
# offline), so references to their types are not checked.
nitpick_ignore_regex = [
    ("py:class", r"(collections\.abc|threading|os|types|concurrent\.futures|typing|pathlib"
                 r"|subprocess|datetime|io|ipaddress|re|contextlib|oslo_config|stevedore"
                 r"|libvirt|_pytest)\..*"),
    # Type variables and private protocols in signatures.
    ("py:class", r"rbd_driver\..*\._[A-Za-z]+"),
]
