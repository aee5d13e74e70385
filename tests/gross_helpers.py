"""Shared test helpers that build grosslib objects (tests/reference.py stays grosslib-free)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from grosslib import GroSSConv2d


def random_gross(net: nn.Module, names: Sequence[str] = ("conv2", "conv3", "conv4"), seed: int = 0,
                 scale: float = 0.3) -> nn.Module:
    """A copy of ``net`` with the named convs replaced by GroSS layers with random series terms.

    Same structure as :func:`grosslib.models.decompose` without the (slow) BTD: costs and exactness do not
    depend on where the weights come from.
    """
    net = copy.deepcopy(net)
    generator = torch.Generator().manual_seed(seed)
    for name in names:
        conv = getattr(net, name)
        sizes = [s for s in (1, 2, 4, 8, 16, 32, 64) if s <= conv.in_channels and conv.in_channels % s == 0]
        layer = GroSSConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, sizes, stride=conv.stride,
                            padding=conv.padding, dilation=conv.dilation, bias=conv.bias is not None)
        with torch.no_grad():
            for p in layer.parameters():
                p.normal_(0.0, scale, generator=generator)
        setattr(net, name, layer)
    return net
