"""The BTD bottleneck of Table 1: 1x1 conv -> grouped kxk conv -> 1x1 conv."""
from __future__ import annotations

import torch
from torch import nn

from .btd import BTDResult

__all__ = ["Bottleneck", "bottleneck_convs", "check_conv", "orthonormalize_blocks"]


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


def orthonormalize_blocks(result: BTDResult) -> BTDResult:
    """The same approximation with orthonormal factors in every block (cores absorb the rest).

    A BTD is defined up to an invertible change of basis inside each block: ``C_r G_r B_r^T =
    (C_r T) (T^-1 G_r S^-T) (B_r S)^T``. ALS leaves that scaling arbitrary, and badly scaled 1x1
    factors make the bottleneck hard to fine-tune. With ``C_r = Q_c T_c`` and ``B_r = Q_b T_b``
    (QR), the block becomes ``Q_c (T_c G_r T_b^T) Q_b^T``: ``W_hat`` is unchanged.
    """
    q_out, t_out = torch.linalg.qr(result.out_factors, mode="reduced")    # (R, u, s), (R, s, s)
    q_in, t_in = torch.linalg.qr(result.in_factors, mode="reduced")       # (R, t, s), (R, s, s)
    if q_out.shape[-1] < result.group_size:                               # u < s: pad to s columns
        pad = result.group_size - q_out.shape[-1]
        q_out = torch.cat([q_out, q_out.new_zeros(*q_out.shape[:-1], pad)], dim=-1)
        t_out = torch.cat([t_out, t_out.new_zeros(t_out.shape[0], pad, t_out.shape[-1])], dim=-2)
    cores = torch.einsum("rac,rcdyx,rbd->rabyx", t_out, result.cores, t_in)
    return BTDResult(cores, q_out, q_in, list(result.errors), result.initial_error, result.converged)


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
        weights = orthonormalize_blocks(result).bottleneck_weights()
        with torch.no_grad():
            for module, weight in zip((first, grouped, last), weights):
                module.weight.copy_(weight.to(module.weight.dtype))
            if conv.bias is not None:
                last.bias.copy_(conv.bias)
        super().__init__(first, grouped, last)
        self.group_size = result.group_size
