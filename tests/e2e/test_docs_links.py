"""The documentation's own links hold: every relative link in README.md, POLICY.md, docs/, bench/ and envoy/ Markdown
names a file that exists and, with a #fragment into a Markdown file, a heading there (GitHub's anchor rules:
lower case, punctuation other than - and _ dropped, spaces to -). Sections move between README and docs/; a
link left behind is a dead end for a reader."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted(
    [REPO / "README.md", REPO / "POLICY.md"]
    + list((REPO / "docs").glob("*.md"))
    + list((REPO / "bench").glob("*.md"))
    + list((REPO / "envoy").rglob("*.md"))
)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    found, in_code = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        m = None if in_code else re.match(r"^#{1,6} (.*)$", line)
        if m:
            found.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return found


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page: Path):
    dead = []
    for target in links(page):
        path, _, fragment = target.partition("#")
        file = page if not path else (page.parent / path)
        if not file.exists():
            dead.append(f"{target}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            dead.append(f"{target}: no heading #{fragment} in {file.relative_to(REPO)}")
    assert dead == [], dead
