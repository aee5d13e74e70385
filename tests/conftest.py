"""Shared test setup: one thread per test process (the machine is shared between engineers)."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def f64():
    """Float64 dtype, for tests that compare against the float64 references to ~1e-10."""
    return torch.float64
