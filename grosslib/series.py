"""The GroSS series layer: every group size of a conv's BTD in one differentiable module.

For group sizes ``s_1 < ... < s_N`` with per-size bottleneck weights ``(P_i, R_i, Q_i)`` the layer
stores the terms (docs/method.md, eqs. 6-7)::

    p_1 = P_1,  p_i = P_i - P_{i-1};   q likewise;   r_1 = R_1,  r_i = R_i - Psi(s_{i-1} -> s_i)(R_{i-1})

and at group size ``s_k`` runs the bottleneck with ``P = sum_{i<=k} p_i``, ``Q = sum_{i<=k} q_i`` and
``R = sum_{i<=k} Psi(s_i -> s_k)(r_i)``, which telescopes to exactly ``(P_k, R_k, Q_k)``. Training at
``s_k`` therefore updates the terms ``1..k`` only.
"""
from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .bottleneck import bottleneck_convs, check_conv, orthonormalize_blocks
from .btd import BTDResult, btd_series
from .psi import check_group_size, psi

__all__ = ["GroSSConv2d", "conv_output_hw", "default_group_sizes"]


def default_group_sizes(channels: int) -> tuple[int, ...]:
    """Powers of two that divide ``channels`` (1, 2, 4, ... up to the largest one <= channels)."""
    sizes, s = [], 1
    while s <= channels:
        if channels % s == 0:
            sizes.append(s)
        s *= 2
    return tuple(sizes)


def conv_output_hw(input_hw: Sequence[int], kernel_size: Sequence[int], stride: Sequence[int],
                   padding: Sequence[int] | str, dilation: Sequence[int]) -> tuple[int, int]:
    """Spatial output size of a convolution (PyTorch's formula; ``'same'`` keeps the size)."""
    if padding == "same":
        return int(input_hw[0]), int(input_hw[1])
    if padding == "valid":
        padding = (0, 0)
    return tuple(  # type: ignore[return-value]
        (int(n) + 2 * p - d * (k - 1) - 1) // st + 1
        for n, k, st, p, d in zip(input_hw, kernel_size, stride, padding, dilation))


class GroSSConv2d(nn.Module):
    """A convolution decomposed by BTD at several group sizes at once, as a series.

    Build it with :meth:`from_conv`. ``layer.group_size = s`` switches the active size;
    ``layer(x)`` then equals the ``s``-th BTD bottleneck. Only the series terms are parameters;
    the original bias is a frozen buffer.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 group_sizes: Sequence[int], *, stride: int | Sequence[int] = 1,
                 padding: int | Sequence[int] | str = 0, dilation: int | Sequence[int] = 1,
                 padding_mode: str = "zeros", bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        template = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                             dilation=dilation, padding_mode=padding_mode, bias=bias, device="meta")
        group_sizes = tuple(group_sizes)
        for s in group_sizes:  # before any conversion: int(True) or int(2.5) would pass silently
            check_group_size(in_channels, s, "group size")
        sizes = tuple(operator.index(s) for s in group_sizes)
        if not sizes:
            raise ValueError("group_sizes is empty")
        if tuple(sorted(set(sizes))) != sizes:
            raise ValueError(f"group sizes must be distinct and ascending, got {list(group_sizes)}")
        for small, large in zip(sizes, sizes[1:]):
            if large % small:
                raise ValueError(f"group size {small} does not divide {large}: "
                                 "each size of a series must divide the next")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = template.kernel_size, template.stride
        self.padding, self.dilation = template.padding, template.dilation
        self.padding_mode = padding_mode
        self._reversed_padding_repeated_twice = template._reversed_padding_repeated_twice
        self.group_sizes = sizes
        options = dict(device=device, dtype=dtype)
        t, u = in_channels, out_channels
        self.p_terms = nn.ParameterList([torch.zeros(t, t, 1, 1, **options) for _ in sizes])
        self.r_terms = nn.ParameterList([torch.zeros(t, s, *self.kernel_size, **options) for s in sizes])
        self.q_terms = nn.ParameterList([torch.zeros(u, t, 1, 1, **options) for _ in sizes])
        self.register_buffer("bias", torch.zeros(u, **options) if bias else None)
        self.btd_errors: dict[int, float] = {}
        self._group_size = sizes[-1]

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_conv(cls, conv: nn.Conv2d, group_sizes: Sequence[int] | None = None,
                  **btd_options: Any) -> GroSSConv2d:
        """Decompose ``conv`` at every group size (default: powers of 2 up to its input channels).

        ``btd_options`` go to :func:`grosslib.btd` (tol, max_iter, init, random_state, ...); each
        size is warm-started from the one below.
        """
        conv = check_conv(conv)
        if group_sizes is None:
            sizes = default_group_sizes(conv.in_channels)
        else:
            group_sizes = tuple(group_sizes)
            for s in group_sizes:
                check_group_size(conv.in_channels, s, "group size")
            sizes = tuple(sorted(operator.index(s) for s in group_sizes))
        results = btd_series(conv.weight.detach(), sizes, **btd_options)
        return cls.from_btd(conv, results)

    @classmethod
    def from_btd(cls, conv: nn.Conv2d, results: dict[int, BTDResult]) -> GroSSConv2d:
        """Build the series from per-size BTD results of ``conv``'s weight."""
        conv = check_conv(conv)
        sizes = tuple(sorted(results))
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, sizes, stride=conv.stride,
                    padding=conv.padding, dilation=conv.dilation, padding_mode=conv.padding_mode,
                    bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
        previous: tuple[torch.Tensor, ...] | None = None
        with torch.no_grad():
            for i, s in enumerate(sizes):
                if results[s].group_size != s:
                    raise ValueError(f"results[{s}] holds a BTD of group size {results[s].group_size}")
                first, grouped, last = orthonormalize_blocks(results[s]).bottleneck_weights()
                if previous is None:
                    p, r, q = first, grouped, last
                else:
                    p = first - previous[0]
                    r = grouped - psi(previous[1], sizes[i - 1], s)
                    q = last - previous[2]
                layer.p_terms[i].copy_(p)
                layer.r_terms[i].copy_(r)
                layer.q_terms[i].copy_(q)
                previous = (first, grouped, last)
                layer.btd_errors[s] = results[s].error
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)
        return layer

    # ------------------------------------------------------------------ group size
    @property
    def group_size(self) -> int:
        """The active group size."""
        return self._group_size

    @group_size.setter
    def group_size(self, value: int) -> None:
        self._group_size = self._check_size(value)

    def _check_size(self, group_size: int | None) -> int:
        if group_size is None:
            return self._group_size
        if group_size not in self.group_sizes:
            raise ValueError(f"group size {group_size!r} is not in this layer's series {self.group_sizes}")
        check_group_size(self.in_channels, group_size, "group size")  # True == 1, 2.0 == 2: reject like psi
        return operator.index(group_size)

    # ------------------------------------------------------------------ weights and forward
    def weights(self, group_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The merged bottleneck weights ``(P, R, Q)`` at ``group_size`` (default: the active one)."""
        s = self._check_size(group_size)
        k = self.group_sizes.index(s) + 1
        first = self.p_terms[0] if k == 1 else torch.stack(list(self.p_terms[:k])).sum(0)
        last = self.q_terms[0] if k == 1 else torch.stack(list(self.q_terms[:k])).sum(0)
        grouped = self.r_terms[k - 1]
        for i in range(k - 1):
            grouped = grouped + psi(self.r_terms[i], self.group_sizes[i], s)
        return first, grouped, last

    def grouped_conv(self, x: torch.Tensor, weight: torch.Tensor, group_size: int) -> torch.Tensor:
        """The middle kxk grouped convolution with the original stride, padding and dilation."""
        groups = self.in_channels // group_size
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv2d(x, weight, None, self.stride, 0, self.dilation, groups)
        return F.conv2d(x, weight, None, self.stride, self.padding, self.dilation, groups)

    def forward(self, x: torch.Tensor, group_size: int | None = None) -> torch.Tensor:
        s = self._check_size(group_size)
        first, grouped, last = self.weights(s)
        x = F.conv2d(x, first)
        x = self.grouped_conv(x, grouped, s)
        return F.conv2d(x, last, self.bias)

    # ------------------------------------------------------------------ export and costs
    def to_bottleneck(self, group_size: int | None = None) -> nn.Sequential:
        """A plain ``nn.Sequential`` of three ``nn.Conv2d`` with the merged weights at ``group_size``."""
        s = self._check_size(group_size)
        template = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
                             padding=self.padding, dilation=self.dilation, padding_mode=self.padding_mode,
                             bias=self.bias is not None, device="meta")
        ref = self.p_terms[0]
        convs = bottleneck_convs(template, s, device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            for conv, weight in zip(convs, self.weights(s)):
                conv.weight.copy_(weight)
            if self.bias is not None:
                convs[2].bias.copy_(self.bias)
        return nn.Sequential(*convs)

    def output_hw(self, input_hw: Sequence[int]) -> tuple[int, int]:
        """Spatial size of the output for an input of spatial size ``input_hw``."""
        return conv_output_hw(input_hw, self.kernel_size, self.stride, self.padding, self.dilation)

    def macs(self, group_size: int | None, input_hw: Sequence[int]) -> int:
        """Multiply-accumulates of the bottleneck at ``group_size`` for one input of size ``input_hw``.

        1x1 ``t -> t`` at the input resolution, grouped ``kxk`` and 1x1 ``t -> u`` at the output
        resolution; biases are not counted (docs/method.md's convention).
        """
        s = self._check_size(group_size)
        t, u = self.in_channels, self.out_channels
        h_out, w_out = self.output_hw(input_hw)
        kh, kw = self.kernel_size
        return int(input_hw[0]) * int(input_hw[1]) * t * t + h_out * w_out * (t * s * kh * kw + u * t)

    def num_params(self, group_size: int | None = None) -> int:
        """Parameters of the exported bottleneck at ``group_size`` (bias included)."""
        s = self._check_size(group_size)
        t, u = self.in_channels, self.out_channels
        kh, kw = self.kernel_size
        return t * t + t * s * kh * kw + u * t + (u if self.bias is not None else 0)

    # ------------------------------------------------------------------ checkpoints
    def get_extra_state(self) -> dict[str, Any]:
        return {"group_sizes": self.group_sizes, "group_size": self._group_size,
                "btd_errors": dict(self.btd_errors)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        sizes = tuple(state.get("group_sizes", ()))
        if sizes != self.group_sizes:
            raise ValueError(f"checkpoint holds a series with group sizes {sizes}, this layer has "
                             f"{self.group_sizes}")
        self._group_size = int(state.get("group_size", self.group_sizes[-1]))
        self.btd_errors = dict(state.get("btd_errors", {}))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, group_sizes={self.group_sizes}, "
                f"group_size={self._group_size}")
