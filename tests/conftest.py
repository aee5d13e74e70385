"""Shared test setup: one thread per test process, and nothing written into the repository.

Figures and interactive run directories default to folders inside the repository (``figures/``,
``runs/``); the tests, and the notebook kernels that papermill and nbval start from this process
(they inherit its environment), write them to a temporary folder instead, so ``git status`` stays
clean after the test suite.
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

torch.set_num_threads(1)

_SCRATCH = tempfile.mkdtemp(prefix="gross-tests-")
os.environ.setdefault("GROSS_FIGURES", os.path.join(_SCRATCH, "figures"))
os.environ.setdefault("GROSS_RUNS", os.path.join(_SCRATCH, "runs"))


@pytest.fixture
def f64():
    """Float64 dtype, for tests that compare against the float64 references to ~1e-10."""
    return torch.float64
