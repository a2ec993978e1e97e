# SPDX-License-Identifier: Apache-2.0
"""Thin shim: all metadata lives in setup.cfg."""
import setuptools

setuptools.setup()
