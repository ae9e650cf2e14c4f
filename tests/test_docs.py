"""The README and docs/: the option reference matches the schema, every
relative link leads somewhere, and the README stays short."""

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from handbone import reference

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+).*?\1")


def _prose(text: str) -> list[str]:
    """The lines of a markdown file outside fenced code blocks."""
    lines, fence = [], None
    for line in text.splitlines():
        marker = re.match(r"\s*(```+|~~~+)", line)
        if marker and (fence is None or marker.group(1)[0] == fence[0] and len(marker.group(1)) >= len(fence)):
            fence = None if fence else marker.group(1)
            continue
        if fence is None:
            lines.append(line)
    return lines


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: the text as rendered (links by their
    text, no code ticks or emphasis), lower case, punctuation but - and _
    dropped, spaces turned into -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for line in _prose(path.read_text()):
        heading = re.match(r" {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = _slug(heading.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def links(path: Path) -> list[str]:
    found = []
    for line in _prose(path.read_text()):
        found += LINK.findall(CODE_SPAN.sub("", line))
    return found


def test_the_slug_is_githubs():
    assert _slug("Ensemble, post-processing and the submission") == "ensemble-post-processing-and-the-submission"
    assert _slug("`pseudo_label`") == "pseudo_label"
    assert _slug("Models and GPU memory") == "models-and-gpu-memory"


def test_the_configuration_page_is_generated_from_the_schema():
    page = DOCS / "configuration.md"
    assert reference.generated_part(page.read_text(), page) == reference.configuration_markdown(), (
        "docs/configuration.md does not match workflow/schemas/config.schema.yaml and config.yaml: "
        "run `python -m handbone.reference` to regenerate it"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_leads_to_a_file_and_heading(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # https:, mailto:, ...
        file, _, anchor = unquote(target).partition("#")
        destination = (page.parent / file).resolve() if file else page
        if not destination.exists():
            broken.append(
                f"{target}: {destination.relative_to(REPO) if destination.is_relative_to(REPO) else destination} does not exist"
            )
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading #{anchor} in {destination.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_every_docs_page_is_listed_in_the_index():
    listed = {(DOCS / link.partition("#")[0]).resolve() for link in links(DOCS / "index.md")}
    missing = [page.name for page in DOCS.glob("*.md") if page.name != "index.md" and page.resolve() not in listed]
    assert not missing, f"docs/index.md does not link {missing}"


def test_the_readme_is_at_most_200_lines():
    lines = len((REPO / "README.md").read_text().splitlines())
    assert lines <= 200, f"README.md has {lines} lines; move reference text into docs/ (at most 200)"
