"""Every Python block of README.md and docs/ runs, so the documentation cannot drift from the code.

The blocks are found by pytest-markdown-docs' parser (its fence options: ``notest`` marks a block
that is deliberately not run, in the plain ``python notest`` form on GitHub pages and the
``{.python notest}`` form that MkDocs renders). Blocks of one page share one namespace and run in
order, as a reader runs them, in one test per page: pytest-markdown-docs alone would either
isolate each block or re-run every earlier block for each (``continuation``), and its per-block
items could land on different xdist workers. Each page runs in a fresh folder (files it writes
stay there) with numpy as the process default, which is restored afterwards.
"""

from __future__ import annotations

import pathlib
import re

import pytest
from markdown_it import MarkdownIt

import wframe as wf

md_plugin = pytest.importorskip("pytest_markdown_docs.plugin")

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _blocks(page: pathlib.Path):
    """The page's runnable Python blocks, each padded with blank lines to its line in the page
    (so a traceback points at the page's line)."""
    return list(
        md_plugin.extract_fence_tests(
            MarkdownIt("commonmark"),
            page.read_text("utf8"),
            start_line_offset=0,
            source_path=page,
            fence_syntax=md_plugin.FenceSyntax.superfences,
        )
    )


RUNNABLE = [p for p in PAGES if _blocks(p)]


def test_pages_with_examples_are_found():
    """The README and the guides hold runnable examples (a parser change would silently skip
    them all)."""
    names = {p.relative_to(ROOT).as_posix() for p in RUNNABLE}
    assert {"README.md", "docs/getting-started.md", "docs/training.md"} <= names


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    default = wf.get_backend().name
    wf.set_backend("numpy")
    try:
        for block in _blocks(page):
            code = compile(block.source, str(page), "exec", dont_inherit=True)
            exec(code, namespace)  # the page's own code, as a reader runs it
    finally:
        wf.set_backend(default)


def test_version_matches_pyproject_and_changelog():
    """``wframe.__version__``, pyproject.toml's version and the changelog's latest release are
    one number (bumped together)."""
    pyproject = (ROOT / "pyproject.toml").read_text("utf8")
    declared = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    changelog = (ROOT / "CHANGELOG.md").read_text("utf8")
    released = re.search(r"^## \[(\d[^\]]*)\]", changelog, re.M).group(1)
    assert wf.__version__ == declared == released


def _slug(heading: str) -> str:
    """GitHub's (and MkDocs') anchor of a Markdown heading: lower case, punctuation dropped,
    spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def test_readme_links_resolve():
    """README.md is not part of the site's --strict build, so its links into docs/ are checked
    here: every relative link names a file that exists and, with #anchor, a heading in it."""
    readme = (ROOT / "README.md").read_text("utf8")
    links = re.findall(r"\]\(([^)#\s]+)(?:#([^)\s]+))?\)", readme)
    local = [(path, anchor) for path, anchor in links if "://" not in path]
    assert local, "README.md links into docs/"
    for path, anchor in local:
        target = ROOT / path
        assert target.exists(), f"README.md links to {path}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", target.read_text("utf8"), re.M)
            assert anchor in {_slug(h) for h in headings}, f"README.md: no #{anchor} in {path}"
