"""Every filesystem location the project uses, in one place.

Notebooks and library code take paths from here, never from the working directory.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["BENCHMARKS_DIR", "FASHION_MNIST_DEBIAN_DIR", "FIGURES_DIR", "NOTEBOOKS_DIR", "REPO_ROOT",
           "RESULTS_DIR", "RUNS_DIR", "STUDY_RESULTS_DIR", "data_dir", "figures_dir", "runs_dir"]

REPO_ROOT: Path = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR: Path = REPO_ROOT / "notebooks"
FIGURES_DIR: Path = REPO_ROOT / "figures"
RUNS_DIR: Path = REPO_ROOT / "runs"
BENCHMARKS_DIR: Path = REPO_ROOT / "benchmarks"
RESULTS_DIR: Path = REPO_ROOT / "results"
#: The committed records of the Fashion-MNIST study (what notebook 06 reads by default).
STUDY_RESULTS_DIR: Path = RESULTS_DIR / "fashion-mnist-study"
FASHION_MNIST_DEBIAN_DIR: Path = Path("/usr/share/datasets/fashion-mnist")


def data_dir() -> Path:
    """Dataset cache: ``$GROSS_DATA`` if set, else ``~/.cache/gross`` (XDG_CACHE_HOME respected)."""
    env = os.environ.get("GROSS_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "gross"


def figures_dir() -> Path:
    """Where figures are written by default (``$GROSS_FIGURES`` overrides: the tests point it elsewhere)."""
    env = os.environ.get("GROSS_FIGURES")
    return Path(env).expanduser() if env else FIGURES_DIR


def runs_dir() -> Path:
    """Where run directories go by default (``$GROSS_RUNS`` overrides: the tests point it elsewhere)."""
    env = os.environ.get("GROSS_RUNS")
    return Path(env).expanduser() if env else RUNS_DIR
