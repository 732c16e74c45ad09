"""docs/results.md, the index of benchmarks/results/: every page listed, and regenerating it gives the committed file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks import index

ROW = re.compile(r"^\| \[([\w.-]+\.md)\]\(")


def _without_git_columns(text: str) -> str:
    """The index with each row's date and commit cells blanked: they come from git, which a copy may lack."""
    out = []
    for line in text.splitlines():
        if ROW.match(line):
            cells = line.split(" | ")
            line = " | ".join(cells[:-2] + ["-", "- |"])
        out.append(line)
    return "\n".join(out)


def test_every_results_page_is_in_the_committed_index():
    listed = {m.group(1) for line in index.INDEX_PATH.read_text().splitlines() if (m := ROW.match(line))}
    pages = {p.name for p in index.result_pages()}
    assert pages, "no results pages found"
    assert not pages - listed, f"pages missing from docs/results.md (run `python -m benchmarks.index`): {sorted(pages - listed)}"
    assert not listed - pages, f"docs/results.md lists pages that no longer exist: {sorted(listed - pages)}"


def test_regenerating_the_index_gives_the_committed_file():
    # Compared without git's date and commit so a fresh clone, a shallow one or an export without .git passes
    # alike; everything read from the pages (title, status, headline, command) must match exactly.
    committed = index.INDEX_PATH.read_text()
    assert _without_git_columns(index.build_index(git=False)) == _without_git_columns(committed), (
        "docs/results.md is out of date with benchmarks/results/: run `python -m benchmarks.index`")


def test_every_page_says_whether_it_is_current():
    unmarked = [p.name for p in index.result_pages() if index.read_page(p, git=False).status == "not marked"]
    assert not unmarked, f"add a 'Status: current' or 'Status: superseded by X.md' line to {unmarked}"


def test_a_page_is_read_for_title_status_headline_and_command(tmp_path):
    page = tmp_path / "old.md"
    page.write_text("# Old measurement\n\nStatus: superseded by new.md (remeasured)\n\n"
                    "Ran with:\n\n    python -m jobs.evaluate --models a \\\n        --splits 0\n\n"
                    "| model | median r2 |\n| --- | ---: |\n| a | 0.5 |\n")
    (tmp_path / "new.md").write_text("# New\n\nStatus: current\n\nHeadline: 0.7, up from 0.5\n\n`make demo` then more\n")
    old = index.read_page(page, git=False)
    assert (old.title, old.status, old.superseded_by, old.status_note) == ("Old measurement", "superseded", "new.md", "(remeasured)")
    assert old.headline == "model: a; median r2: 0.5"  # no Headline line: the first table's first row
    assert old.command == "python -m jobs.evaluate --models a --splits 0"
    new = index.read_page(tmp_path / "new.md", git=False)
    assert (new.status, new.headline, new.command) == ("current", "0.7, up from 0.5", "make demo")
    text = index.build_index(tmp_path, git=False)
    assert "1 current, 1 superseded" in text and "[new.md](../benchmarks/results/new.md) (remeasured)" in text


def test_a_status_naming_a_page_that_does_not_exist_is_an_error(tmp_path):
    (tmp_path / "a.md").write_text("# A\n\nStatus: superseded by gone.md\n")
    with pytest.raises(ValueError, match="gone.md"):
        index.build_index(tmp_path, git=False)


def test_check_reports_a_stale_index(tmp_path, monkeypatch, capsys):
    (tmp_path / "a.md").write_text("# A\n\nStatus: current\n")
    monkeypatch.setattr(index, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(index, "INDEX_PATH", tmp_path / "results.md")
    monkeypatch.setattr(index, "build_index", lambda: index.render_index([index.read_page(tmp_path / "a.md", git=False)]))
    assert index.main(["--check"]) == 1  # no index yet
    assert index.main([]) == 0
    assert index.main(["--check"]) == 0
    (tmp_path / "b.md").write_text("# B\n\nStatus: current\n")
    monkeypatch.setattr(index, "build_index", lambda: index.render_index(
        [index.read_page(p, git=False) for p in index.result_pages(tmp_path)]))
    assert index.main(["--check"]) == 1


def test_a_freshly_written_benchmark_page_is_current(tmp_path):
    from benchmarks._report import markdown_page

    page = tmp_path / "fresh.md"
    page.write_text(markdown_page(["# Fresh", "", "| a |", "| - |", "| 1 |"], {"machine": "x"}))
    entry = index.read_page(page, git=False)
    assert (entry.title, entry.status, entry.headline) == ("Fresh", "current", "a: 1")
    assert markdown_page(["# Old", "Status: superseded by fresh.md"], {}).count("Status:") == 1
