"""Comments and docs that stay true: every repository path a docstring, comment or document names exists, and every
relative link of the Markdown documents resolves to a file and, where it names one, a heading of it."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import REPO

TOP = ("pipeline", "stages", "benchmarks", "experiments", "tests", "docs", "scripts")
PATH = re.compile(rf"(?<![\w/.])((?:{'|'.join(TOP)})(?:/[\w.-]*\w)+)(?![\w*<{{-])")
SUFFIXES = {".py", ".md", ".yaml", ".sh", ".json", ".jsonl", ".js", ".css", ".html", ".parquet", ".png"}
NOT_YET_WRITTEN = {
    "stages/probe.py",             # a file a test writes in a temporary copy, named in that test's docstring
    "experiments/backbones.jsonl",  # what the GPU backbone comparison writes, named where docs/ say how to run it
}


def _texts() -> list[Path]:
    files = [p for top in TOP for p in (REPO / top).rglob("*") if p.suffix in {".py", ".md", ".sh", ".js", ".yaml"}]
    return files + [REPO / name for name in ("README.md", "dvc.yaml", "Makefile", "params.yaml", ".ci/run")]


def _exists(reference: str) -> bool:
    path = REPO / reference
    if path.suffix in SUFFIXES:
        return path.exists()
    module, _, _ = reference.partition(".")  # pipeline/evaluation/metrics or pipeline/training/losses.clip_loss
    return (REPO / module).is_dir() or (REPO / f"{module}.py").is_file()


def test_every_path_named_in_code_and_docs_exists():
    broken = [f"{file.relative_to(REPO)}: {reference}" for file in _texts()
              for reference in PATH.findall(file.read_text(errors="replace"))
              if reference not in NOT_YET_WRITTEN and not _exists(reference)]
    assert not broken, "paths that do not exist: " + "; ".join(broken)


LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$", re.MULTILINE)
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "benchmarks").glob("*.md"))]


def _anchors(document: Path) -> set[str]:
    """The anchors GitHub gives a document's headings: lower case, punctuation dropped, spaces as hyphens."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in HEADING.findall(FENCE.sub("", document.read_text())):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_every_relative_link_of_the_documents_resolves():
    broken = []
    for document in _documents():
        for target in LINK.findall(FENCE.sub("", document.read_text())):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not this repository's
            path, _, anchor = target.partition("#")
            linked = (document.parent / path).resolve() if path else document
            if not linked.exists():
                broken.append(f"{document.relative_to(REPO)}: {target}")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{document.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "links that do not resolve: " + "; ".join(broken)
