"""The manual's links and commands: every relative link (and #anchor) in README.md and docs/ resolves,
every ``python -m`` module it names exists, and the front page stays a front page."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
MODULE = re.compile(r"python -m ([a-z_][\w.]*)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return out


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [m for m in LINK.findall(text) if not m.startswith(("http://", "https://", "mailto:"))]


def test_every_relative_link_resolves() -> None:
    broken = []
    for page in PAGES:
        for link in links(page):
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.exists():
                broken.append(f"{page.name}: {link} (no such file)")
            elif anchor and target.suffix == ".md" and anchor not in anchors(target):
                broken.append(f"{page.name}: {link} (no such heading)")
    assert broken == []


def test_every_module_the_docs_run_exists() -> None:
    missing = sorted({f"{page.name}: {name}" for page in PAGES for name in MODULE.findall(page.read_text())
                      if importlib.util.find_spec(name) is None})
    assert missing == []


def test_the_readme_is_a_front_page_that_links_every_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme) <= 15_000
    linked = {Path(link.partition("#")[0]).name for link in links(ROOT / "README.md")}
    assert {p.name for p in PAGES[1:]} <= linked


def test_the_checks_see_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [bad](missing.md) [bad anchor](#nope)\n")
    assert links(page) == ["#title", "missing.md", "#nope"] and anchors(page) == {"title"}


def test_every_path_the_docs_name_exists() -> None:
    pattern = r"`((?:tests|gateway|experiments|config|deploy|models|docs)/[\w./-]+)`"
    named = {(page.name, p) for page in PAGES for p in re.findall(pattern, page.read_text())}
    assert sorted(f"{page}: {p}" for page, p in named if not (ROOT / p).exists()) == []
