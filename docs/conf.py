"""Sphinx configuration for the regmgr documentation.

Build: ``python -m sphinx -W -b html docs docs/_build/html``; the code
examples run with ``python -m sphinx -W -b doctest docs docs/_build/doctest``.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath("_ext"))
sys.path.insert(0, os.path.abspath(".."))

from regmgr import __version__  # noqa: E402

project = "regmgr"
author = "the regmgr authors"
copyright = "2026, the regmgr authors"  # noqa: A001 (Sphinx's name)
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinxarg.ext",
    "benchtable",
]

html_theme = "furo"
html_title = f"regmgr {release}"
exclude_patterns = ["_build"]
nitpicky = False

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

# Every doctest block gets a quiet log and gevent; blocks that need a
# registry use the one ``.. testsetup::`` of their page starts.
doctest_global_setup = """
import logging
logging.basicConfig(level=logging.CRITICAL)
"""
