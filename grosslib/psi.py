"""Psi: expanding a grouped-convolution weight to a larger group size (docs/method.md, eq. 5).

A grouped weight of group size ``g`` has shape ``(t, g, kh, kw)``: output channel ``o`` reads the
``g`` input channels of its group. ``psi(W, g, h)`` returns the block-diagonal weight of shape
``(t, h, kh, kw)`` that a convolution with group size ``h`` needs to give exactly the same output:
output channel ``o`` keeps its ``g`` weights at offset ``((o // g) * g) % h`` of its ``h``-wide
input block, every other entry is zero.
"""
from __future__ import annotations

import operator

import torch

__all__ = ["check_group_size", "psi", "psi_offsets"]


def check_group_size(channels: int, group_size: int, what: str = "group size") -> None:
    """Raise ValueError unless ``group_size`` is a positive divisor of ``channels``."""
    try:
        size = operator.index(group_size)
    except TypeError:
        size = None
    if size is None or isinstance(group_size, bool) or size < 1:
        raise ValueError(f"{what} must be a positive integer, got {group_size!r}")
    if channels % size != 0:
        raise ValueError(f"{what} {group_size} does not divide the {channels} channels")


def psi_offsets(channels: int, from_group_size: int, to_group_size: int) -> torch.Tensor:
    """Column offset, within its ``to_group_size``-wide block, of each output channel's weights."""
    rows = torch.arange(channels)
    return ((rows // from_group_size) * from_group_size) % to_group_size


def psi(weight: torch.Tensor, from_group_size: int, to_group_size: int) -> torch.Tensor:
    """Expand a grouped weight from group size ``g`` to group size ``h`` (``g`` divides ``h``).

    Parameters
    ----------
    weight : Tensor of shape (t, g, kh, kw)
        Weight of a convolution with ``t`` input and output channels and ``t / g`` groups.
    from_group_size, to_group_size : int
        ``g`` and ``h``; both must divide ``t`` and ``g`` must divide ``h``.

    Returns
    -------
    Tensor of shape (t, h, kh, kw)
        ``conv(x, weight, groups=t/g) == conv(x, psi(weight, g, h), groups=t/h)``. Linear in
        ``weight``, so gradients flow through it.
    """
    if weight.dim() != 4:
        raise ValueError(f"psi expects a 4-d conv weight (t, g, kh, kw), got shape {tuple(weight.shape)}")
    channels, width = weight.shape[0], weight.shape[1]
    g, h = from_group_size, to_group_size
    if width != g:
        raise ValueError(f"weight has {width} input channels per group but from_group_size is {g}")
    check_group_size(channels, g, "from_group_size")
    check_group_size(channels, h, "to_group_size")
    if h < g:
        raise ValueError(f"psi only expands: to_group_size {h} is smaller than from_group_size {g}")
    if h % g != 0:
        raise ValueError(f"from_group_size {g} does not divide to_group_size {h}")
    if h == g:
        return weight
    out = weight.new_zeros(channels, h, *weight.shape[2:])
    columns = psi_offsets(channels, g, h).to(weight.device)[:, None] + torch.arange(g, device=weight.device)
    index = columns[:, :, None, None].expand_as(weight)
    return out.scatter(1, index, weight)
