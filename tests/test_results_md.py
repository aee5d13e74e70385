"""benchmarks/results_md.py: each benchmark rewrites its own section of RESULTS.md and keeps the rest."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from results_md import read_section, replace_section  # noqa: E402

TEXT = "# Benchmark results\n\nintro\n\n## BTD one\n\na\n\n## BTD two\n\nb\n\n## Other\n\nc\n"


def test_rewriting_every_committed_section_unchanged_keeps_the_file(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    original = (BENCHMARKS / "RESULTS.md").read_text()
    path.write_text(original)
    headings = [line for line in original.splitlines() if line.startswith("## ")]
    assert len(headings) >= 5
    for heading in headings:
        replace_section(path, heading, read_section(path, heading))
    assert path.read_text() == original


def test_replace_in_place_insert_after_prefix_and_drop(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text(TEXT)
    replace_section(path, "## BTD two", "## BTD two\n\nB")
    assert path.read_text() == TEXT.replace("\nb\n", "\nB\n")
    replace_section(path, "## BTD three", "## BTD three\n\nd", after_prefix="## BTD", drop=("## BTD one",))
    titles = [line for line in path.read_text().splitlines() if line.startswith("## ")]
    assert titles == ["## BTD two", "## BTD three", "## Other"]
    assert path.read_text().startswith("# Benchmark results\n\nintro\n\n## BTD two\n")
    replace_section(path, "## New", "## New\n\ne")
    assert path.read_text().endswith("## Other\n\nc\n\n## New\n\ne\n")
    assert read_section(path, "## Missing") is None


def test_a_new_file_gets_the_preamble_and_text_must_carry_its_heading(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "RESULTS.md"
    replace_section(path, "## A", "## A\n\nx\n\n\n")
    assert path.read_text() == "# Benchmark results\n\n## A\n\nx\n"
    with pytest.raises(ValueError, match="must start with its heading"):
        replace_section(path, "## A", "## B\n\ny")
