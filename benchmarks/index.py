"""`python -m benchmarks.index`: write docs/results.md, the index of every page under benchmarks/results/.

Everything in the index is read from the pages themselves (and from git for when each page last changed), so
it cannot drift from them: rerun this after adding or editing a page; `--check` exits 1 when the committed
index differs from what the pages say (the test suite runs the same comparison).

What a page contributes:
- title: its first `# ` line;
- status: a `Status: current` or `Status: superseded by OTHER.md (why)` line near the top (a page without one is
  listed as "not marked");
- headline: a `Headline: ...` line when the page has one, else the first data row of its first table;
- command: the first `python -m ...` in it (a `\\`-continued command is joined), else the first `make ...`;
- date and commit: `git log -1` of the page (blank outside a git checkout).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
INDEX_PATH = ROOT / "docs" / "results.md"

_STATUS = re.compile(r"^Status:\s*(current|superseded by\s+`?([\w.-]+\.md)`?)\s*(.*)$", re.MULTILINE)
_HEADLINE = re.compile(r"^Headline:\s*(.+)$", re.MULTILINE)
_PYTHON_COMMAND = re.compile(r"(?:PYTHONPATH=\S+\s+)?python -m [^`\n]+")
_MAKE_COMMAND = re.compile(r"`(make [\w-]+[^`\n]*)`")
_MAX_CELL = 160  # characters of a headline or command in the index; the page has the rest


@dataclass(frozen=True)
class PageEntry:
    """One row of the index: what a results page measures, how to remake it, and whether it still stands."""

    name: str  # file name under benchmarks/results/
    title: str
    status: str  # "current", "superseded" or "not marked"
    superseded_by: str  # the page that replaces it ("" unless superseded)
    status_note: str  # the rest of the Status line (why it was superseded)
    headline: str
    command: str
    date: str  # YYYY-MM-DD of the last commit that changed the page ("" outside git)
    commit: str  # that commit's short hash ("" outside git)


def read_page(path: Path, *, git: bool = True) -> PageEntry:
    """The index entry of one page, parsed from its text (and `git log` when `git`)."""
    text = path.read_text(encoding="utf-8")
    title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), path.stem)
    status, superseded_by, note = "not marked", "", ""
    match = _STATUS.search(text)
    if match:
        status = "current" if match.group(1) == "current" else "superseded"
        superseded_by = match.group(2) or ""
        note = match.group(3).strip()
    headline_match = _HEADLINE.search(text)
    headline = headline_match.group(1).strip() if headline_match else _first_table_row(text)
    commit, date = git_stamp(path) if git else ("", "")
    return PageEntry(path.name, title, status, superseded_by, note, headline, _first_command(text), date, commit)


def _first_table_row(text: str) -> str:
    """The first data row of the page's first markdown table, as `header: cell` pairs ("" without a table)."""
    lines = text.splitlines()
    for i in range(len(lines) - 2):
        if lines[i].startswith("|") and re.match(r"^\|[\s:|-]+\|$", lines[i + 1].strip()) and lines[i + 2].startswith("|"):
            header = [c.strip() for c in lines[i].strip().strip("|").split("|")]
            cells = [c.strip() for c in lines[i + 2].strip().strip("|").split("|")]
            return "; ".join(f"{h}: {c}" for h, c in zip(header, cells) if c)
    return ""


def _first_command(text: str) -> str:
    """The first `python -m ...` command (its continuation lines joined), else the first `make` target."""
    match = _PYTHON_COMMAND.search(text)
    if match:
        command = match.group(0).rstrip()
        rest = text[match.end():]
        while command.endswith("\\"):  # a shell continuation inside a code block
            nxt, _, rest = rest.lstrip("\n").partition("\n")
            command = command[:-1].rstrip() + " " + nxt.strip()
        return command.strip()
    make = _MAKE_COMMAND.search(text)
    return make.group(1).strip() if make else ""


def git_stamp(path: Path) -> tuple[str, str]:
    """(short commit, date) of the last commit that changed `path`; ("", "") without git or history."""
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%h %ad", "--date=short", "--", str(path)], cwd=ROOT,
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "", ""
    parts = out.stdout.split()
    return (parts[0], parts[1]) if out.returncode == 0 and len(parts) == 2 else ("", "")


def result_pages(results_dir: Path = RESULTS_DIR) -> list[Path]:
    return sorted(results_dir.glob("*.md"))


def render_index(entries: list[PageEntry]) -> str:
    """docs/results.md: current pages first, then superseded ones (each naming its replacement)."""
    by_status = {s: [e for e in entries if e.status == s] for s in ("current", "superseded", "not marked")}
    lines = [
        "# Results index",
        "",
        "Every page under `benchmarks/results/`: what it measures, its headline number, the command that remakes it,",
        "when it last changed, and whether it still stands. Written by `python -m benchmarks.index` from the pages",
        "themselves (their `Status:` and `Headline:` lines); do not edit by hand, rerun it.",
        "",
        f"{len(entries)} pages: {len(by_status['current'])} current, {len(by_status['superseded'])} superseded"
        + (f", {len(by_status['not marked'])} not marked." if by_status["not marked"] else "."),
    ]
    sections = (("Current", "current"), ("Superseded", "superseded"), ("Not marked (add a `Status:` line)", "not marked"))
    for heading, status in sections:
        if not by_status[status]:
            continue
        lines += ["", f"## {heading}", ""]
        if status == "superseded":
            lines += ["| page | what it measures | headline | superseded by | command | date | commit |",
                      "| --- | --- | --- | --- | --- | --- | --- |"]
        else:
            lines += ["| page | what it measures | headline | command | date | commit |",
                      "| --- | --- | --- | --- | --- | --- |"]
        for e in by_status[status]:
            page = f"[{e.name}](../benchmarks/results/{e.name})"
            command = f"`{_cell(e.command)}`" if e.command else "-"
            cells = [page, _cell(e.title), _cell(e.headline) or "-"]
            if status == "superseded":
                why = f" {_cell(e.status_note)}" if e.status_note else ""
                cells.append(f"[{e.superseded_by}](../benchmarks/results/{e.superseded_by}){why}")
            cells += [command, e.date or "-", e.commit or "-"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    text = " ".join(text.split()).replace("|", "\\|").replace("`", "")
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 3].rstrip() + "..."


def build_index(results_dir: Path = RESULTS_DIR, *, git: bool = True) -> str:
    entries = [read_page(p, git=git) for p in result_pages(results_dir)]
    missing = sorted({e.superseded_by for e in entries if e.superseded_by} - {e.name for e in entries})
    if missing:
        raise ValueError(f"results pages name {', '.join(missing)} in their 'Status: superseded by' line, but "
                         f"{results_dir} has no such page; fix the Status line")
    return render_index(entries)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write docs/results.md, the index of benchmarks/results/ pages.")
    p.add_argument("--check", action="store_true", help="exit 1 if docs/results.md differs from the pages")
    args = p.parse_args(argv)
    text = build_index()
    if args.check:
        current = INDEX_PATH.read_text(encoding="utf-8") if INDEX_PATH.is_file() else ""
        if current != text:
            print(f"{INDEX_PATH} is out of date: run `python -m benchmarks.index`", file=sys.stderr)
            return 1
        print(f"{INDEX_PATH} is up to date")
        return 0
    INDEX_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {INDEX_PATH}: {next(line for line in text.splitlines() if line.endswith(('current.', 'superseded.', 'not marked.')))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
