"""Sphinx configuration of adamkit's documentation: Markdown pages (MyST), the API from the docstrings, and one
page per optimizer generated from its declaration (``_ext/adamkit_docs.py``). ``make docs`` builds it with
warnings as errors; ``make test`` builds it too (tests/test_docs.py)."""
from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS.parent / "src"), str(DOCS / "_ext")]  # this checkout's adamkit, not an installed one

from adamkit._version import __version__  # noqa: E402

project = "adamkit"
author = "the adamkit authors"
copyright = "the adamkit authors, Apache-2.0"
release = version = __version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "adamkit_docs"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

# nothing is fetched at build time (no intersphinx): references to torch's and Python's own names stay plain text
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|collections|typing|os|pathlib|numpy)\..*"),
    (r"py:.*", r"(Tensor|Any|Iterable|Mapping|Callable|PathLike|Coefficients|Hyperparameter|FusedKernel)"),
    (r"py:.*", r"adamkit\.(optim|kernels|bench|core)\..*"),  # internal modules: not part of the API reference
    (r"py:class", r"(optional|callable)"),
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "alabaster"
html_title = f"adamkit {__version__}"
html_theme_options = {"description": "The modern Adam family for PyTorch, exact to the authors' code",
                      "fixed_sidebar": True}
html_static_path: list[str] = []
