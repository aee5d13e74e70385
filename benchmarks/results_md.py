"""Sections of benchmarks/RESULTS.md: each benchmark rewrites its own ``## heading`` section, keeps the rest.

:func:`machine_info` is the machine every section records. A section runs from its ``## `` line to the
next ``## `` line (or the end of the file). Shared by every
``bench_*.py`` (run as scripts, so ``from results_md import replace_section`` resolves here).

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "RESULTS.md"
>>> replace_section(path, "## A", "## A\\n\\none")
>>> replace_section(path, "## B", "## B\\n\\ntwo")
>>> replace_section(path, "## A", "## A\\n\\nthree")
>>> print(path.read_text())
# Benchmark results
<BLANKLINE>
## A
<BLANKLINE>
three
<BLANKLINE>
## B
<BLANKLINE>
two
<BLANKLINE>
"""
from __future__ import annotations

import os
import platform
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["cpu_name", "machine_info", "read_section", "replace_section", "split_sections"]

DEFAULT_PREAMBLE = "# Benchmark results\n"


def split_sections(content: str) -> tuple[str, list[str]]:
    """``(preamble, sections)``: the text before the first ``## `` line, then each ``## `` section."""
    parts = re.split(r"(?m)^(?=## )", content)
    return parts[0], parts[1:]


def _title(section: str) -> str:
    return section.split("\n", 1)[0].strip()


def read_section(path: Path, heading: str) -> str | None:
    """The section titled ``heading`` in ``path`` (with its heading line), or None."""
    if not path.exists():
        return None
    _, sections = split_sections(path.read_text())
    return next((s for s in sections if _title(s) == heading.strip()), None)


def replace_section(path: Path, heading: str, text: str, *, after_prefix: str | None = None,
                    drop: Sequence[str] = ()) -> None:
    """Write ``text`` (which starts with ``heading``) as the section ``heading`` of ``path``.

    An existing section of that title is replaced in place; otherwise the new one goes after the last
    section whose title starts with ``after_prefix`` (if any), else at the end. Sections titled as in
    ``drop`` (superseded headings) are removed. Other sections are kept byte for byte, separated by one
    blank line. The file is replaced atomically.
    """
    if not text.lstrip().startswith(heading.strip()):
        raise ValueError(f"section text must start with its heading {heading!r}")
    content = path.read_text() if path.exists() else DEFAULT_PREAMBLE
    preamble, sections = split_sections(content)
    titles = [_title(s) for s in sections]
    new = text.strip("\n") + "\n"
    if heading.strip() in titles:
        sections[titles.index(heading.strip())] = new
    else:
        related = [i for i, t in enumerate(titles) if after_prefix and t.startswith(after_prefix)]
        sections.insert(related[-1] + 1 if related else len(sections), new)
    sections = [s for s in sections if _title(s) not in set(drop)]
    sections = [s.rstrip("\n") + "\n" for s in sections]
    preamble = preamble.rstrip("\n") + "\n" if preamble.strip() else ""
    out = "\n".join([preamble, *sections]) if preamble else "\n".join(sections)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(out)
    os.replace(tmp, path)


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere what :mod:`platform` knows)."""
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine_info() -> dict[str, str]:
    """Platform, Python, CPU, CPU count (usable), torch version and its thread count, as strings."""
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu_name(),
            "cpu count": f"{os.cpu_count()} ({usable} usable)", "torch": torch.__version__,
            "torch threads": str(torch.get_num_threads())}
