"""Sphinx configuration for trajmoe.

Builds offline: intersphinx is off unless ``TRAJMOE_DOCS_INTERSPHINX=1``; sphinx-gallery is used only
when it is installed and ``examples/`` has its README; modules that do not import yet produce autodoc
warnings, never a failed build.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS))   # helpers of this folder (_gallery_order)

# Gallery examples and doctests read the real data next to the checkout unless told otherwise.
# A relative TRAJMOE_DATA is read from the checkout's root, as the README and CONTRIBUTING give it
# (``make -C docs`` runs here, and the examples run in examples/).
os.environ["TRAJMOE_DATA"] = str((ROOT / Path(os.environ.get("TRAJMOE_DATA", "../shared/data")).expanduser()).resolve())

# -- Project -----------------------------------------------------------------------------------
project = "trajmoe"
author = "The trajmoe developers"
copyright = "2025, The trajmoe developers"  # noqa: A001

from trajmoe import __version__ as release  # noqa: E402  (the checkout's, trajmoe/_version.py)

version = ".".join(release.split(".")[:2])

# -- Extensions (each optional one only when importable) ---------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


if _have("numpydoc"):
    extensions.append("numpydoc")
else:  # napoleon understands numpydoc sections well enough
    extensions.append("sphinx.ext.napoleon")
    napoleon_google_docstring = False
    napoleon_numpy_docstring = True

if os.environ.get("TRAJMOE_DOCS_INTERSPHINX") == "1":  # needs network: off by default
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable/", None),
        "pandas": ("https://pandas.pydata.org/docs/", None),
        "sklearn": ("https://scikit-learn.org/stable/", None),
        "torch": ("https://pytorch.org/docs/stable/", None),
        "skorch": ("https://skorch.readthedocs.io/en/stable/", None),
    }

_EXAMPLES = ROOT / "examples"
_has_gallery = (
    _have("sphinx_gallery")
    and _have("matplotlib")
    and any((_EXAMPLES / name).is_file() for name in ("README.rst", "README.txt", "GALLERY_HEADER.rst"))
)
if _has_gallery:
    extensions.append("sphinx_gallery.gen_gallery")
    sphinx_gallery_conf = {
        "examples_dirs": str(_EXAMPLES),
        "gallery_dirs": "auto_examples",
        "filename_pattern": r"/plot_",
        "download_all_examples": False,
        "within_subsection_order": "_gallery_order.ExampleOrder",   # docs/_gallery_order.py
        "abort_on_example_error": False,
    }
    exclude_gallery: list[str] = []
else:
    exclude_gallery = ["gallery.rst"]

# -- autodoc / autosummary / numpydoc -----------------------------------------------------------
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    "member-order": "bysource",
    # scikit-learn's metadata-routing helpers, inherited by every estimator
    "exclude-members": "set_fit_request, set_partial_fit_request, set_predict_request, "
                       "set_score_request, set_transform_request, set_split_request",
}
autodoc_typehints = "none"  # types are written in the numpydoc parameter lists
autosummary_generate = True
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True

# -- General -------------------------------------------------------------------------------------
templates_path: list[str] = []
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", *exclude_gallery]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
default_role = "code"
# A module that does not import yet must not break the build: report it, keep going.
suppress_warnings = ["autosummary.import_cycle"]

# -- HTML ----------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme" if _have("pydata_sphinx_theme") else "alabaster"
html_title = f"trajmoe {release}"
html_static_path: list[str] = []


def _drop_gallery_entry(app, docname, source):
    """Remove the gallery from the index toctree when the gallery is not built (no warning)."""
    if docname == "index" and not _has_gallery:
        source[0] = "\n".join(line for line in source[0].splitlines() if line.strip() != "gallery")


def setup(app):
    app.connect("source-read", _drop_gallery_entry)
