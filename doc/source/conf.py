# SPDX-License-Identifier: Apache-2.0
"""Sphinx configuration for the rbd_driver documentation."""

import dataclasses
import inspect
import sys
import typing

import rbd_driver

project = "rbd_driver"
author = "rbd_driver developers"
# The one version: rbd_driver.__version__, which setup.cfg reads too.
version = release = rbd_driver.__version__
extensions = [
    "sphinx.ext.autodoc",
    "oslo_config.sphinxext",
    "stevedore.sphinxext",
]
exclude_patterns = ["_build"]
html_static_path = ["_static"]
autodoc_mock_imports = ["rados", "rbd"]

# The gates build nitpicky (sphinx -n): every cross-reference must resolve.
# Our own names always must. Other projects' inventories cannot be fetched
# (intersphinx needs the network, and the docs build offline), so references
# to their types are let through, one package a line, and nothing else.
nitpick_ignore_regex = [
    # Python's standard library, in signatures (no objects.inv offline).
    ("py:class", r"(collections\.abc|concurrent\.futures|contextlib|datetime|ipaddress|os"
                 r"|pathlib|re|subprocess|threading|types)\..*"),
    # oslo.config: ConfigOpts, Opt, OptGroup (the caller's conf).
    ("py:class", r"oslo_config\..*"),
    # stevedore: the plugin managers.
    ("py:class", r"stevedore\..*"),
    # The libvirt Python bindings (python3-libvirt): libvirtError.
    ("py:(class|exc)", r"libvirt\.[A-Za-z]+"),
    # pytest: the fixtures' request object.
    ("py:class", r"_pytest\..*"),
]


def _readable_defaults(app, what, name, obj, options, signature, return_annotation):
    """Write defaults whose repr is not Python as the call or the name they are.

    A dataclass field's ``<factory>`` or a ``<built-in function monotonic>``
    default makes Sphinx give up parsing the signature and split it at every
    comma, so that ``dict[str, str]`` becomes a reference to ``dict[str``.
    """
    if not signature or "<" not in signature:
        return None
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
        for field in dataclasses.fields(obj):
            factory = field.default_factory
            if field.init and factory is not dataclasses.MISSING:
                signature = signature.replace("<factory>", f"{_name(factory)}()", 1)
    try:
        parameters = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        parameters = []
    for parameter in parameters:
        if callable(parameter.default) and repr(parameter.default).startswith("<"):
            signature = signature.replace(repr(parameter.default), _name(parameter.default))
    return signature, return_annotation


def _name(function):
    module = getattr(function, "__module__", None)
    qualname = function.__qualname__
    return qualname if module in (None, "builtins") else f"{module}.{qualname}"


def _type_variable(app, env, node, contnode):
    """A type variable (``_T``) in a signature has no page: show it as text.

    Only names that import as a :class:`typing.TypeVar` are let through, so a
    reference to a class that is not documented still fails the build.
    """
    if node.get("refdomain") != "py" or node.get("reftype") != "class":
        return None
    module_name, _, attribute = node.get("reftarget", "").rpartition(".")
    module = sys.modules.get(module_name)
    if isinstance(getattr(module, attribute, None), typing.TypeVar):
        return contnode
    return None


def setup(app):
    app.connect("autodoc-process-signature", _readable_defaults)
    app.connect("missing-reference", _type_variable)
