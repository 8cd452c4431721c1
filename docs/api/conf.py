# SPDX-License-Identifier: Apache-2.0
# Sphinx configuration of the API reference: `make docs` (warnings are errors).
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(__file__, "..", "..", "..")))
import pyro_kvae  # noqa: E402

project = "pyro-kvae"
author = "pyro-kvae developers"
release = version = pyro_kvae.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
autodoc_default_options = {"members": True, "show-inheritance": True, "member-order": "bysource", "undoc-members": True}
autodoc_typehints = "description"
autodoc_mock_imports = ["pymunk"]
nitpicky = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
suppress_warnings = ["duplicate_object_description"]
autodoc_inherit_docstrings = False
