"""Every Markdown table in README.md and docs/ renders: the separator row and every body row have as many cells
as the header (GitHub drops or mangles a table whose rows disagree)."""
from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SEPARATOR = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def cells(line: str) -> int:
    """Cells of a table row; a `|` inside code spans or escaped as \\| does not split."""
    text = re.sub(r"`[^`]*`", "code", line.strip()).replace("\\|", "")
    return len(text.strip("|").split("|"))


def tables(text: str):
    """(line number, header, [(line number, row)…]) of each table outside fenced code."""
    lines, fenced = text.splitlines(), False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or "|" not in line or i + 1 >= len(lines) or not SEPARATOR.match(lines[i + 1]):
            continue
        rows, j = [], i + 1
        while j < len(lines) and "|" in lines[j] and lines[j].strip():
            rows.append((j + 1, lines[j]))
            j += 1
        yield i + 1, line, rows


def test_the_counter_sees_a_broken_table():
    broken = "| a | b |\n|---|---|---|\n| 1 | 2 |\n"
    (_, header, rows), = tables(broken)
    assert cells(header) == 2 and cells(rows[0][1]) == 3
    assert cells("| `a|b` | c \\| d |") == 2


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_every_row_has_as_many_cells_as_its_header(path):
    bad = [f"{path.name}:{n}: {cells(row)} cells, header (line {start}) has {cells(header)}"
           for start, header, rows in tables(path.read_text()) for n, row in rows if cells(row) != cells(header)]
    assert bad == []
