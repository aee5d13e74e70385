"""CIFAR-style residual networks (He et al. 2016, section 4.2): 3 stages of n basic blocks, for 32x32 inputs.

The network of the paper's CIFAR-10 experiments (Deep Residual Learning for Image Recognition, section
4.2): a 3x3 stem convolution, then three stages of ``n`` basic blocks each (feature maps 32, 16 and 8
pixels wide, ``widths`` channels; the first block of stages 2 and 3 halves the resolution with a stride-2
convolution), global average pooling and one fully connected layer: ``6n + 2`` weighted layers
(``depth`` 8, 14, 20, 32, 44, 56, 110, ...). Every convolution is followed by BatchNorm.

A basic block is ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``. The shortcut is the identity
when the shape is kept and, where it changes, a 1x1 convolution (stride 2) and BatchNorm: He et al.'s
*option B* (their CIFAR-10 networks use option A, zero-padded identity shortcuts, without parameters).
With option B, ResNet-20 has 272,474 parameters (option A: 269,722, the paper's "0.27M").

For GroSS, :func:`grosslib.models.decompose`'s default rule takes every 3x3 convolution of the blocks
(``layer1.0.conv1``, ...) and leaves the stem (the network's first conv) and the 1x1 shortcut
convolutions as they are.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["BasicBlock", "CifarResNet", "blocks_per_stage", "build_cifar_resnet"]


def blocks_per_stage(depth: int) -> int:
    """``n`` of a ``6n + 2``-layer network; ``ValueError`` for any other depth."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, ...), got {depth!r}")
    return (depth - 2) // 6


class BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers with a residual connection (option-B projection when needed)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            projection = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            self.downsample = nn.Sequential(projection, nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class CifarResNet(nn.Module):
    """ResNet-``depth`` for 32x32 images: stem, three stages of ``(depth - 2) / 6`` basic blocks, pool, FC.

    Attributes ``in_channels``, ``num_classes``, ``image_size`` (32), ``depth``, ``widths``; modules
    ``conv1``/``bn1`` (stem), ``layer1``..``layer3`` (``nn.Sequential`` of :class:`BasicBlock`), ``fc``.
    """

    def __init__(self, depth: int = 20, widths: Sequence[int] = (16, 32, 64), in_channels: int = 3,
                 num_classes: int = 10) -> None:
        super().__init__()
        n = blocks_per_stage(depth)
        widths = tuple(int(w) for w in widths)
        if len(widths) != 3 or any(w < 1 for w in widths):
            raise ValueError(f"widths must be three positive channel counts, got {widths}")
        self.depth, self.widths = depth, widths
        self.in_channels, self.num_classes, self.image_size = int(in_channels), int(num_classes), 32
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        channels = widths[0]
        for stage, width in enumerate(widths, start=1):
            blocks = []
            for i in range(n):
                stride = 2 if stage > 1 and i == 0 else 1
                blocks.append(BasicBlock(channels, width, stride))
                channels = width
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """He init of the convs (normal, fan_out, ReLU); BatchNorm 1 and 0; FC uniform +-1/sqrt(fan_in)."""
        for module in self.modules():
            with torch.no_grad():
                if isinstance(module, nn.Conv2d):
                    fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
                    module.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=generator)
                elif isinstance(module, nn.BatchNorm2d):
                    module.weight.fill_(1.0)
                    module.bias.zero_()
                    module.reset_running_stats()
                elif isinstance(module, nn.Linear):
                    bound = 1.0 / module.in_features ** 0.5
                    module.weight.uniform_(-bound, bound, generator=generator)
                    module.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def build_cifar_resnet(depth: int = 20, widths: Sequence[int] = (16, 32, 64), in_channels: int = 3,
                       num_classes: int = 10, seed: int = 0) -> CifarResNet:
    """A freshly initialised :class:`CifarResNet`, deterministic in ``seed``."""
    net = CifarResNet(depth, widths, in_channels, num_classes)
    net.reset_parameters(torch.Generator().manual_seed(seed))
    return net
