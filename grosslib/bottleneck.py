"""The BTD bottleneck of Table 1: 1x1 conv -> grouped kxk conv -> 1x1 conv."""
from __future__ import annotations

import torch
from torch import nn

from .btd import BTDResult


def check_conv(conv: nn.Module) -> nn.Conv2d:
    """Raise ValueError unless ``conv`` is an ungrouped, finite ``nn.Conv2d``."""
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"expected an nn.Conv2d, got {type(conv).__name__}")
    if conv.groups != 1:
        raise ValueError(f"the source conv must have groups=1 to be decomposed, got groups={conv.groups}")
    bias_finite = conv.bias is None or bool(torch.isfinite(conv.bias).all())
    if not torch.isfinite(conv.weight).all() or not bias_finite:
        raise ValueError("the conv's weight or bias contains NaN or Inf values")
    return conv


def bottleneck_convs(conv: nn.Conv2d, group_size: int, *, bias: bool = True,
                     device: torch.device | str | None = None,
                     dtype: torch.dtype | None = None) -> tuple[nn.Conv2d, nn.Conv2d, nn.Conv2d]:
    """Three empty convs shaped as the bottleneck of ``conv`` for ``group_size`` (Table 1)."""
    t, u = conv.in_channels, conv.out_channels
    options = dict(device=device if device is not None else conv.weight.device,
                   dtype=dtype if dtype is not None else conv.weight.dtype)
    first = nn.Conv2d(t, t, 1, bias=False, **options)
    grouped = nn.Conv2d(t, t, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                        dilation=conv.dilation, groups=t // group_size, bias=False,
                        padding_mode=conv.padding_mode, **options)
    last = nn.Conv2d(t, u, 1, bias=bias and conv.bias is not None, **options)
    return first, grouped, last


class Bottleneck(nn.Sequential):
    """A conv replaced by its BTD: ``P`` (1x1, t->t), ``R`` (grouped kxk, t->t), ``Q`` (1x1, t->u).

    ``R`` keeps the original stride, padding, dilation and padding mode; ``Q`` carries the original
    bias. The output equals ``conv2d(x, result.reconstruct(), bias, ...)`` up to rounding.
    """

    def __init__(self, conv: nn.Conv2d, result: BTDResult) -> None:
        conv = check_conv(conv)
        expected = (conv.out_channels, conv.in_channels)
        got = (result.out_factors.shape[1], result.in_factors.shape[1])
        if got != expected or tuple(result.cores.shape[3:]) != tuple(conv.kernel_size):
            raise ValueError(f"BTD result of shape (out, in)={got}, kernel {tuple(result.cores.shape[3:])} "
                             f"does not match the conv {expected}, kernel {tuple(conv.kernel_size)}")
        first, grouped, last = bottleneck_convs(conv, result.group_size)
        weights = result.bottleneck_weights()
        with torch.no_grad():
            for module, weight in zip((first, grouped, last), weights):
                module.weight.copy_(weight.to(module.weight.dtype))
            if conv.bias is not None:
                last.bias.copy_(conv.bias)
        super().__init__(first, grouped, last)
        self.group_size = result.group_size
