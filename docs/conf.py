"""Sphinx configuration of the mtobjectives documentation.

Build with ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (warnings are errors) and
``sphinx-build -W -b doctest docs docs/_build/doctest`` (runs every ``>>>`` example and every
``.. doctest::`` block, including the docstrings pulled in by autodoc).

Intersphinx never touches the network: the inventories of Python, PyTorch and NumPy are written
here, at configuration time, from the short table below (the names our signatures and pages
actually mention) into ``docs/_build/intersphinx/``, and ``intersphinx_mapping`` points at those
local files. Links go to the real online documentation; building needs no connection and a build
on a machine without one emits no warning.

The equations render without a network too: the package ``sphinx-mathjax-offline`` (the ``docs``
extra) holds MathJax 3.2.2 (the script, its fonts and its lazily loaded components); its folder
is one of ``html_static_path``, so the HTML build copies it to ``_build/html/_static/mathjax/``,
and ``mathjax_path`` points there instead of at Sphinx's default CDN script. (The package's own
Sphinx extension does the same copy, but declares no parallel safety, which ``-j`` turns into a
warning, and copies for every builder.) Without the package an HTML build stops and says so.
"""

from __future__ import annotations

import doctest
import importlib.util
import warnings
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sphinx.application import Sphinx

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
import mtobjectives  # noqa: E402  (installed, editable, by `make docs`)

# sphinx-autodoc-typehints 3.6 calls an API that Sphinx 9 deprecates; that Python warning is not a
# documentation problem (and not a Sphinx warning), so keep it out of the build log.
warnings.filterwarnings("ignore", message=".*set_application.*is deprecated")

# -- Project -------------------------------------------------------------------------------------
project = "mtobjectives"
author = "mtobjectives developers"
copyright = "mtobjectives developers"  # noqa: A001
release = mtobjectives.__version__
version = ".".join(release.split(".")[:2])

# -- General -------------------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # before sphinx_autodoc_typehints, as that extension asks
    "sphinx_autodoc_typehints",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
]
exclude_patterns = ["_build", "scripts", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []
root_doc = "index"
default_role = "code"  # `x` renders as inline code instead of guessing a cross-reference
pygments_style = "sphinx"
pygments_dark_style = "monokai"

# -- autodoc / napoleon / type hints --------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": True, "exclude-members": "extra_repr"}
autodoc_class_signature = "mixed"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
# "Shape:" is kornia's and PyTorch's section for tensor shapes; render it as a titled section.
napoleon_custom_sections = ["Shape"]
typehints_use_signature = False
typehints_use_signature_return = False
typehints_document_rtype = True
always_use_bars_union = True
typehints_defaults = "comma"

# -- doctest ---------------------------------------------------------------------------------------
# Docstring examples run here as well as under ``pytest --doctest-modules``. Under pytest an
# example sees its module's globals (``torch``, the module's own classes); here every example of a
# page shares this setup, so it provides what a module namespace would: torch, numpy and every
# public name of the package. The pages' own examples import what they use, as a reader would.
doctest_global_setup = """
import numpy as np
import torch
import mtobjectives as mt
_public = getattr(mt, "__all__", None) or list(getattr(mt, "_LAZY", {}))
globals().update({_n: getattr(mt, _n) for _n in _public})
from mtobjectives.functional import *
from mtobjectives.metrics import *
from mtobjectives.heads import *
torch.manual_seed(0)
"""
doctest_default_flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# -- HTML ----------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"mtobjectives {release}"
html_static_path = ["_static"]

# -- MathJax, offline ----------------------------------------------------------------------------
_MATHJAX_PACKAGE = importlib.util.find_spec("sphinx-mathjax-offline")
_MATHJAX_STATIC = (
    Path(_MATHJAX_PACKAGE.submodule_search_locations[0]) / "static"
    if _MATHJAX_PACKAGE is not None and _MATHJAX_PACKAGE.submodule_search_locations
    else None
)
if _MATHJAX_STATIC is not None:
    html_static_path.append(str(_MATHJAX_STATIC))  # its mathjax/ folder -> _static/mathjax/
mathjax_path = "mathjax/tex-chtml.js"  # relative: served from _static/, no CDN


def _require_bundled_mathjax(app: Sphinx) -> None:
    if app.builder.format == "html" and (
        _MATHJAX_STATIC is None or not (_MATHJAX_STATIC / mathjax_path).is_file()
    ):
        raise RuntimeError(
            "the HTML pages bundle MathJax from the package 'sphinx-mathjax-offline' (so that "
            "the equations render offline), which is not installed: pip install -e '.[docs]' "
            "or pip install sphinx-mathjax-offline"
        )


def setup(app: Sphinx) -> None:
    app.connect("builder-inited", _require_bundled_mathjax)

# -- Intersphinx, offline ------------------------------------------------------------------------
# name -> (base URL of the online docs, {object name: (domain:role, page)}); the anchor on the page
# is the object's full name (``$`` in an inventory URI stands for it) unless the page is given with
# its own ``#anchor``.
def _same(role: str, page: str, names: str) -> dict[str, tuple[str, str]]:
    return {name: (role, page) for name in names.split()}


def _own_page(role: str, prefix: str, names: str) -> dict[str, tuple[str, str]]:
    return {f"{prefix}{n}": (role, f"generated/{prefix}{n}.html") for n in names.split()}


_INVENTORIES: dict[str, tuple[str, dict[str, tuple[str, str]]]] = {
    "python": (
        "https://docs.python.org/3/",
        {
            **_same("py:class", "library/functions.html", "int float bool object"),
            **_same("py:class", "library/stdtypes.html", "str dict list tuple set frozenset bytes"),
            **_same("py:exception", "library/exceptions.html", "ValueError TypeError KeyError"),
            "None": ("py:data", "library/constants.html"),
            **_same(
                "py:class",
                "library/collections.abc.html",
                " ".join(
                    f"collections.abc.{n}"
                    for n in "Mapping Sequence Callable Iterable Iterator Collection".split()
                ),
            ),
            **_same(
                "py:data",
                "library/typing.html",
                " ".join(f"typing.{n}" for n in "Any Literal Optional Union TypeAlias".split()),
            ),
            **_same(
                "py:class",
                "library/typing.html",
                " ".join(f"typing.{n}" for n in "NamedTuple TypedDict Protocol".split()),
            ),
            "dataclasses.dataclass": ("py:function", "library/dataclasses.html"),
            "pathlib.Path": ("py:class", "library/pathlib.html"),
            "os.PathLike": ("py:class", "library/os.html"),
        },
    ),
    "torch": (
        "https://docs.pytorch.org/docs/stable/",
        {
            "torch.Tensor": ("py:class", "tensors.html"),
            **_same("py:class", "tensor_attributes.html", "torch.dtype torch.device"),
            "torch.distributed.all_reduce": ("py:function", "distributed.html"),
            "torch.distributed": ("py:module", "distributed.html#module-torch.distributed"),
            # where autodoc finds nn.Module (its __module__), for "Bases: Module"
            "torch.nn.modules.module.Module": (
                "py:class", "generated/torch.nn.Module.html#torch.nn.Module"
            ),
            **_own_page(
                "py:class",
                "torch.nn.",
                "Module ModuleDict Linear LayerNorm Tanh Dropout GELU Sequential SmoothL1Loss "
                "CrossEntropyLoss Parameter",
            ),
            **{
                f"torch.nn.Module.{n}": ("py:method", "generated/torch.nn.Module.html")
                for n in "state_dict load_state_dict train eval forward".split()
            },
            **_own_page(
                "py:function",
                "torch.nn.functional.",
                "smooth_l1_loss cross_entropy normalize cosine_similarity",
            ),
            **_own_page("py:function", "torch.", "manual_seed logsumexp softmax"),
            **_own_page("py:class", "torch.optim.", "AdamW"),
        },
    ),
    "numpy": (
        "https://numpy.org/doc/stable/",
        {
            **{
                f"numpy.{n}": (role, f"reference/generated/numpy.{n}.html")
                for role, names in (("py:class", "ndarray"), ("py:function", "round clip corrcoef"))
                for n in names.split()
            },
        },
    ),
}


def _write_inventory(path: Path, project_name: str, entries: dict[str, tuple[str, str]]) -> None:
    """Write a Sphinx (version 2) ``objects.inv`` holding ``entries``."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project_name}\n"
        "# Version: \n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    body = "".join(
        f"{name} {role} 1 {uri if '#' in uri else uri + '#$'} -\n"
        for name, (role, uri) in sorted(entries.items())
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.encode() + zlib.compress(body.encode()))


intersphinx_mapping: dict[str, tuple[str, str]] = {}
for _name, (_base, _entries) in _INVENTORIES.items():
    _path = DOCS / "_build" / "intersphinx" / f"{_name}.inv"
    _write_inventory(_path, _name, _entries)
    intersphinx_mapping[_name] = (_base, str(_path))  # a local path: read, never fetched
intersphinx_timeout = 1
intersphinx_cache_limit = -1
