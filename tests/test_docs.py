"""The README and the documentation site's sources: short, true links, every page in the navigation, every
public name documented. (`.ci/run` builds the site itself with `mkdocs build --strict` and opens it in
headless Chromium with `.ci/check_site.py`.)"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import pyro_vae

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def relative_links(path: Path) -> list[str]:
    """The targets of a Markdown file's links that point into the repository."""
    return [t for t in LINK.findall(path.read_text()) if "://" not in t and not t.startswith("mailto:")]


def test_the_readme_is_short_and_names_no_development_paths():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    assert "shared/data" not in text and "/work/" not in text


@pytest.mark.parametrize(
    "page", ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))]
)
def test_every_relative_link_names_a_file_that_exists(page):
    source = ROOT / page
    missing = [t for t in relative_links(source) if not (source.parent / t).exists()]
    assert not missing, f"{page} links to missing files: {missing}"


def test_every_docs_page_is_in_the_site_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert {p for p in pages if f": {p}" not in nav} == set()


def public_members(obj) -> list[tuple[str, object]]:
    """A class's own public functions and properties (not inherited from object or dataclass machinery)."""
    members = []
    for name, value in vars(obj).items():
        if name.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if inspect.isfunction(value) or isinstance(value, property):
            members.append((name, value))
    return members


@pytest.mark.parametrize("name", pyro_vae.__all__)
def test_every_public_name_and_its_methods_have_a_docstring(name):
    obj = getattr(pyro_vae, name)
    assert inspect.getdoc(obj), f"pyro_vae.{name} has no docstring"
    if inspect.isclass(obj):
        undocumented = [m for m, value in public_members(obj) if not (value.__doc__ or "").strip()]
        assert not undocumented, f"pyro_vae.{name} members without a docstring: {undocumented}"


def test_the_version_is_written_once():
    assert re.fullmatch(r"\d+\.\d+\.\d+", pyro_vae.__version__)
    assert "version =" not in (ROOT / "pyproject.toml").read_text().split("[project]")[1].split("[")[0]
