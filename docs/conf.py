"""Sphinx configuration of the Django Q documentation (`make docs`; warnings are errors there)."""

import os
import sys
from pathlib import Path

import django

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE / "_ext")]
# Autodoc imports django_q's modules, which need configured settings: a
# throwaway project (docs/_settings.py) with the app installed.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "docs._settings")
django.setup()

project = "Django Q"
author = "The Django Q cluster authors"
copyright = "2026, The Django Q cluster authors"
release = version = "0.1.0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "djq_reference",
]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "examples", "_ext", "README.md"]

# The docstrings write code between single backquotes, as Markdown does.
default_role = "code"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"undoc-members": False}
# Django's own names and annotations that point outside these pages.
nitpicky = False
suppress_warnings = ["myst.xref_missing"]

html_theme = "furo"
html_title = "Django Q"
html_static_path = ["_static"]
html_css_files = ["extra.css"]
