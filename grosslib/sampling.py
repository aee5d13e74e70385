"""The temperature distribution over group sizes used in GroSS training (paper, eq. 8)."""
from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["GroupSizeSampler"]


class GroupSizeSampler:
    """Samples a group size with ``p(s_i) = exp(-alpha i) / sum_j exp(-alpha j)``, i = 1 smallest.

    Parameters
    ----------
    group_sizes : sequence of int
        The available sizes (sorted ascending internally).
    alpha : float
        Temperature; 0 gives the uniform distribution, larger values favour small sizes.
    generator : torch.Generator, int or None
        Source of randomness (an int seeds a new generator).
    """

    def __init__(self, group_sizes: Sequence[int], alpha: float = 4.0,
                 generator: torch.Generator | int | None = None) -> None:
        if len(group_sizes) == 0:
            raise ValueError("group_sizes is empty")
        if len(set(group_sizes)) != len(group_sizes):
            raise ValueError(f"group sizes must be distinct, got {list(group_sizes)}")
        if any(int(s) != s or s < 1 for s in group_sizes):
            raise ValueError(f"group sizes must be positive integers, got {list(group_sizes)}")
        if not (alpha == alpha) or alpha in (float("inf"), float("-inf")):
            raise ValueError(f"alpha must be finite, got {alpha}")
        self.group_sizes = tuple(sorted(int(s) for s in group_sizes))
        self.alpha = float(alpha)
        index = torch.arange(1, len(self.group_sizes) + 1, dtype=torch.float64)
        self.probs = torch.softmax(-self.alpha * index, dim=0)
        if isinstance(generator, int) or generator is None:
            generator = torch.Generator().manual_seed(0 if generator is None else generator)
        self.generator = generator

    def sample(self) -> int:
        """One group size."""
        return self.group_sizes[int(torch.multinomial(self.probs, 1, generator=self.generator))]

    def sample_many(self, n: int) -> list[int]:
        """``n`` independent group sizes."""
        draws = torch.multinomial(self.probs, n, replacement=True, generator=self.generator)
        return [self.group_sizes[int(i)] for i in draws]

    def __repr__(self) -> str:
        return f"GroupSizeSampler(group_sizes={self.group_sizes}, alpha={self.alpha})"
