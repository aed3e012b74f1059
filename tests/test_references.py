"""Every reference a reader can follow resolves inside the repository: the notebooks' and docs'
links and file paths exist, their anchors name a heading, and the notebooks cite
`docs/method.md` by its path (a bare "method.md" or an unnamed "issue #N" cannot be opened)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
DOCS = [ROOT / "README.md", ROOT / "notebooks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
# a repository path in backticks: a top-level folder of the project, then a file with a suffix
PATH = re.compile(r"`(?:\.\./)?((?:docs|scripts|notebooks|tests|causal_wsss|bench|figures)/[\w./-]+\.\w+)`")
GENERATED = ("runs/", "data/")  # written by runs, never committed


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(md: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", md.read_text(encoding="utf-8"),
                                                   flags=re.MULTILINE)}


def _problems(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".py":  # a jupytext notebook: its Markdown and comments, not its code
        text = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    problems = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # a web address, or an anchor of the same page
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve()
        if not resolved.exists():
            problems.append(f"link to a missing file: {target}")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            problems.append(f"link to a missing heading: {target}")
    for rel in PATH.findall(text):
        if "*" in rel or "{" in rel or "<" in rel or rel.startswith(GENERATED):
            continue
        if not (ROOT / rel).exists():
            problems.append(f"path of a missing file: {rel}")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS + DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_references_resolve_inside_the_repository(path: Path):
    problems = _problems(path)
    assert not problems, f"{path.relative_to(ROOT)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_cite_the_method_page_by_its_path(path: Path):
    text = path.read_text(encoding="utf-8")
    bare = [m.start() for m in re.finditer(r"method\.md", text)
            if not text[:m.start()].endswith("docs/")]
    assert not bare, (f"{path.name}: cite `docs/method.md` (a link: ../docs/method.md#...), not a "
                      f"bare method.md, at characters {bare}")
    unnamed = re.findall(r"(?<![/\w])issue #\d+", text)
    assert not unnamed, f"{path.name}: say whose issue and link it: {unnamed}"


def test_the_checker_catches_a_missing_file(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n[ok](page.md#title) [gone](nothere.md) [bad](page.md#nope) "
                    "`docs/no_such_file.md` `runs/demo/report.json` [web](https://arxiv.org)\n")
    assert _problems(page) == ["link to a missing file: nothere.md",
                               "link to a missing heading: page.md#nope",
                               "path of a missing file: docs/no_such_file.md"]
    assert _slug("4. Full multi-round procedure and hyper-parameters") == \
        "4-full-multi-round-procedure-and-hyper-parameters"
