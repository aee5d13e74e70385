"""The temperature distribution over group sizes used in GroSS training (paper, eq. 8), in two readings.

Eq. 8, ``p(s_i) ~ exp(-alpha i)`` with ``i = 1`` for the smallest size, read literally (``"literal"``)
makes alpha 4 and 8 nearly the same: at alpha 4, p = 0.982, 0.018, 3e-4, ... The paper does not say how
``i`` is scaled; the ``"normalized"`` reading divides it by the number of sizes N,
``p(s_i) ~ exp(-alpha i / N)``, which keeps the three temperatures of the paper (0, 4, 8) apart. Alpha 0
is uniform in both (the authors' public code samples uniformly only).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["READINGS", "GroupSizeSampler", "temperature_probs"]

#: The readings of eq. 8: ``"literal"`` exp(-alpha i), ``"normalized"`` exp(-alpha i / N).
READINGS: tuple[str, ...] = ("literal", "normalized")


def temperature_probs(n_sizes: int, alpha: float, reading: str = "literal") -> torch.Tensor:
    """``p_i ~ exp(-alpha i)`` (literal) or ``exp(-alpha i / N)`` (normalized), i = 1..N, float64.

    >>> [round(p, 3) for p in temperature_probs(3, 4.0).tolist()]
    [0.982, 0.018, 0.0]
    >>> [round(p, 3) for p in temperature_probs(3, 4.0, "normalized").tolist()]
    [0.75, 0.198, 0.052]
    """
    check_reading(reading)
    index = torch.arange(1, n_sizes + 1, dtype=torch.float64)
    scale = n_sizes if reading == "normalized" else 1
    return torch.softmax(-float(alpha) * index / scale, dim=0)


def check_reading(reading: str) -> str:
    """``reading`` if it is one of :data:`READINGS`; else one clear line naming them."""
    if reading not in READINGS:
        raise ValueError(f"the reading of eq. 8 must be one of {READINGS}, got {reading!r}")
    return reading


class GroupSizeSampler:
    """Samples a group size with ``p(s_i) = exp(-alpha i) / sum_j exp(-alpha j)``, i = 1 smallest
    (``reading="normalized"``: ``i / N`` in place of ``i``, N the number of sizes).

    Parameters
    ----------
    group_sizes : sequence of int
        The available sizes (sorted ascending internally).
    alpha : float
        Temperature; 0 gives the uniform distribution, larger values favour small sizes.
    generator : torch.Generator, int or None
        Source of randomness (an int seeds a new generator).
    reading : {"literal", "normalized"}
        How eq. 8's index is read (module docstring).
    """

    def __init__(self, group_sizes: Sequence[int], alpha: float = 4.0,
                 generator: torch.Generator | int | None = None, reading: str = "literal") -> None:
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
        self.reading = check_reading(reading)
        self.probs = temperature_probs(len(self.group_sizes), self.alpha, reading)
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
        return (f"GroupSizeSampler(group_sizes={self.group_sizes}, alpha={self.alpha}, "
                f"reading={self.reading!r})")
