"""Cheap checks of the documentation that the Sphinx builds (``make docs``, ``make doctest``) do
not make themselves: every public name is in the API reference, intersphinx never needs the
network, and the committed figure is there and small."""

from __future__ import annotations

import importlib
import re
import runpy
from pathlib import Path

import pytest

import mtobjectives as mt

DOCS = Path(__file__).resolve().parents[1] / "docs"
DOCUMENTED_MODULES = ("functional", "metrics", "heads", "io")


def public_package_names() -> list[str]:
    """Top-level names that are not documented with the module they come from."""
    in_modules = {
        name
        for module in DOCUMENTED_MODULES
        for name in importlib.import_module(f"mtobjectives.{module}").__all__
    }
    return [
        n for n in mt.__all__
        if not n.startswith("_") and n not in DOCUMENTED_MODULES and n not in in_modules
    ]


@pytest.mark.parametrize("name", public_package_names())
def test_every_public_name_of_the_package_has_an_api_entry(name):
    api = (DOCS / "api.rst").read_text()
    assert re.search(rf"^\.\. auto(class|function|data):: {name}$", api, re.M), name


@pytest.mark.parametrize("module", DOCUMENTED_MODULES)
def test_every_public_module_is_autodocumented_with_its_members(module):
    api = (DOCS / "api.rst").read_text()
    assert f".. automodule:: mtobjectives.{module}\n   :members:" in api
    assert importlib.import_module(f"mtobjectives.{module}").__all__  # :members: follows __all__


def test_intersphinx_reads_only_local_inventories():
    conf = runpy.run_path(str(DOCS / "conf.py"))
    assert set(conf["intersphinx_mapping"]) == {"python", "torch", "numpy"}
    for _base, location in conf["intersphinx_mapping"].values():
        assert "://" not in location
        assert Path(location).is_file()
        assert Path(location).read_bytes().startswith(b"# Sphinx inventory version 2")


def test_gdwg_figure_is_committed_and_small():
    figure = DOCS / "_static" / "gdwg_weights.png"
    assert figure.is_file()
    assert figure.stat().st_size < 200 * 1024
