"""Sphinx configuration for the pytest-overlay documentation."""

project = "pytest-overlay"
author = "the pytest-overlay authors"
copyright = "2026, the pytest-overlay authors"

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
exclude_patterns = ["_build"]
html_theme = "alabaster"
# The docs are built offline in CI: no intersphinx inventories.
nitpicky = False
