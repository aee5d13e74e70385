"""Saving notebook figures under one naming scheme, and the plotting style every notebook uses.

Figures are written as ``<figures dir>/NN_name.png`` where ``NN`` is the notebook's two-digit
number. PNG metadata is fixed (no software/version string, no timestamp), so re-running a notebook
on unchanged results rewrites byte-identical files.
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.figure import Figure

from . import paths

DPI = 120
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


def figure_path(notebook_number: int, name: str, *, directory: str | Path | None = None) -> Path:
    """``<directory>/NN_name.png`` (directory defaults to :func:`grosslib.paths.figures_dir`)."""
    valid = isinstance(notebook_number, int) and not isinstance(notebook_number, bool)
    if not valid or not 0 <= notebook_number < 100:
        raise ValueError(f"notebook_number must be an int in 0..99, got {notebook_number!r}")
    if not _NAME.match(name):
        raise ValueError(f"figure name must be letters, digits, '_' or '-' without extension, got {name!r}")
    folder = Path(directory).expanduser() if directory else paths.figures_dir()
    return folder / f"{notebook_number:02d}_{name}.png"


def save_figure(fig: Figure, notebook_number: int, name: str, *, directory: str | Path | None = None,
                dpi: int = DPI) -> Path:
    """Save ``fig`` as ``NN_name.png`` with deterministic metadata and return the path."""
    path = figure_path(notebook_number, name, directory=directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return path


def set_style() -> None:
    """The seaborn theme shared by all notebooks (white grid, colour-blind palette)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": DPI, "axes.titlesize": "medium",
                         "image.cmap": "RdBu_r"})
