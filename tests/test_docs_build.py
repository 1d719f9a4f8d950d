"""Checks of the documentation that the Sphinx builds (``make docs``, ``make doctest``) do not
make themselves: every public name is in the API reference, intersphinx never needs the network,
the committed figure is there and small, and the built HTML reads offline (the equations render
with the bundled MathJax, no page loads a remote script, stylesheet or font)."""

from __future__ import annotations

import importlib
import re
import runpy
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import mtobjectives as mt

DOCS = Path(__file__).resolve().parents[1] / "docs"
DOCUMENTED_MODULES = ("functional", "metrics", "heads", "io", "recipes", "adapters")


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


# -- the built HTML reads offline ---------------------------------------------------------------
# One HTML build (the command of ``make docs``) into a temporary folder, shared by the tests below.


@pytest.fixture(scope="module")
def html_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sphinx")
    out = tmp_path_factory.mktemp("html")
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-q", "-W", "--keep-going", "-b", "html", str(DOCS),
         str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return out


class _Resources(HTMLParser):
    """The URLs a browser loads by itself when it opens a page (not the links a reader follows):
    ``<script src>``, ``<link href>`` other than navigation links, ``<img src>``, ``<iframe src>``,
    and ``url(...)`` / ``@import`` inside ``<style>`` blocks and ``style`` attributes."""

    NAVIGATION = {"index", "search", "next", "prev", "canonical", "author", "license", "help",
                  "alternate"}

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "script" and a.get("src"):
            self.urls.append(("script", a["src"]))
        elif tag == "link" and a.get("href"):
            if not set(a.get("rel", "").lower().split()) <= self.NAVIGATION:
                self.urls.append((f"link rel={a.get('rel')}", a["href"]))
        elif tag in ("img", "iframe", "source", "video", "audio") and a.get("src"):
            self.urls.append((tag, a["src"]))
        if a.get("style"):
            self.urls += [("style attribute", u) for u in css_urls(a["style"])]
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False if tag == "style" else self._in_style

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.urls += [("style", u) for u in css_urls(data)]


def css_urls(css: str) -> list[str]:
    """The targets of ``url(...)`` and ``@import "..."`` in a stylesheet (``data:`` URIs kept:
    they are local)."""
    found = re.findall(r"url\(\s*['\"]?([^'\")]+)", css)
    found += re.findall(r"@import\s+['\"]([^'\"]+)", css)
    return [u.strip() for u in found]


def is_remote(url: str) -> bool:
    """True for a URL that needs a network: ``http(s)://``, ``ftp://`` or ``//host/...``."""
    parts = urlsplit(url.strip())
    return parts.scheme.lower() in ("http", "https", "ftp") or url.strip().startswith("//")


def page_resources(page: Path) -> list[tuple[str, str]]:
    parser = _Resources()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.urls


def remote_resources(html: Path) -> list[str]:
    """Every remote URL that a built page or one of its local stylesheets loads by itself."""
    problems = []
    for page in sorted(html.rglob("*.html")):
        for what, url in page_resources(page):
            if is_remote(url):
                problems.append(f"{page.relative_to(html)}: {what} {url}")
    for sheet in sorted(html.rglob("*.css")):
        for url in css_urls(sheet.read_text(encoding="utf-8", errors="replace")):
            if is_remote(url):
                problems.append(f"{sheet.relative_to(html)}: url {url}")
    return problems


def math_pages(html: Path) -> list[Path]:
    """The built pages that hold an equation (Sphinx marks them with the class ``math``)."""
    return [
        page for page in sorted(html.rglob("*.html"))
        if re.search(r'class="math[ "]', page.read_text(encoding="utf-8"))
    ]


def mathjax_scripts(page: Path) -> list[str]:
    return [url for what, url in page_resources(page)
            if what == "script" and "mathjax" in url.lower()]


def test_built_html_loads_nothing_from_the_network(html_dir):
    assert list(html_dir.rglob("*.html")), "the build wrote no page"
    assert remote_resources(html_dir) == []


def test_every_page_with_equations_loads_a_bundled_mathjax(html_dir):
    pages = math_pages(html_dir)
    names = {p.relative_to(html_dir).as_posix() for p in pages}
    # the objective pages are written around their equations: they must be among them
    assert {"objectives/multi_nt_xent.html", "objectives/gdwg.html"} <= names, sorted(names)
    for page in pages:
        scripts = mathjax_scripts(page)
        assert len(scripts) == 1, (page, scripts)
        assert not is_remote(scripts[0]), f"{page.name} loads MathJax from {scripts[0]}"
        script = (page.parent / urlsplit(scripts[0]).path).resolve()
        assert script.is_relative_to(html_dir.resolve()), script
        assert script.is_file(), f"{page.name} loads {scripts[0]}, which the build does not hold"
        assert script.stat().st_size > 100_000, script  # the real MathJax, not a stub


def test_bundled_mathjax_has_its_fonts_and_components_beside_it(html_dir):
    page = math_pages(html_dir)[0]
    script = (page.parent / urlsplit(mathjax_scripts(page)[0]).path).resolve()
    root = script.parent  # MathJax 3 loads fonts and components relative to its own script
    fonts = root / "output" / "chtml" / "fonts" / "woff-v2"
    assert (fonts / "MathJax_Main-Regular.woff").is_file()
    assert (fonts / "MathJax_Math-Italic.woff").is_file()
    assert (root / "input" / "tex" / "extensions").is_dir()  # TeX packages loaded on demand
