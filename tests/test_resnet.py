"""Tests for grosslib.resnet: CIFAR-style ResNets, their size, determinism and GroSS eligibility."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grosslib.macs import config_macs, count_macs
from grosslib.models import conv_eligibility, decompose, decomposed_layers, export, search_space, set_config
from grosslib.resnet import BasicBlock, CifarResNet, blocks_per_stage, build_cifar_resnet

FAST = dict(tol=1e-8, max_iter=2)


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("depth, widths", [(8, (8, 16, 32)), (14, (4, 8, 16)), (20, (16, 32, 64))])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_shapes(depth: int, widths: tuple[int, int, int], in_channels: int) -> None:
    net = build_cifar_resnet(depth, widths, in_channels, num_classes=7).eval()
    assert net(torch.randn(2, in_channels, 32, 32)).shape == (2, 7)
    n = (depth - 2) // 6
    assert [len(getattr(net, f"layer{i}")) for i in (1, 2, 3)] == [n, n, n]
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert sum(tuple(c.kernel_size) == (3, 3) for c in convs) + 1 == depth       # 6n + 1 convs + the FC
    assert (net.in_channels, net.num_classes, net.image_size) == (in_channels, 7, 32)
    features = nn.Sequential(net.conv1, net.bn1, net.relu, net.layer1, net.layer2, net.layer3)
    assert features(torch.randn(1, in_channels, 32, 32)).shape == (1, widths[2], 8, 8)


def test_bad_depth_and_widths() -> None:
    for depth in (7, 10, 2, 20.0, True):
        with pytest.raises(ValueError, match="6n \\+ 2"):
            blocks_per_stage(depth)            # type: ignore[arg-type]
    with pytest.raises(ValueError, match="widths"):
        CifarResNet(8, (8, 16))


def test_deterministic_in_seed() -> None:
    a, b, c = (build_cifar_resnet(8, (8, 16, 32), seed=s) for s in (3, 3, 4))
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.layer1[0].conv1.weight, c.layer1[0].conv1.weight)
    std = a.layer3[0].conv2.weight.std().item()                # He normal, fan_out = 32 * 9
    assert abs(std - (2 / (32 * 9)) ** 0.5) < 0.1 * (2 / (32 * 9)) ** 0.5


def test_resnet20_parameter_count() -> None:
    """He et al.'s 0.27M, derived by hand: convs, BatchNorm (2 per channel), the option-B shortcuts, FC."""
    stem = 3 * 16 * 9 + 2 * 16
    stage1 = 6 * 16 * 16 * 9 + 6 * 2 * 16
    stage2 = 16 * 32 * 9 + 5 * 32 * 32 * 9 + 6 * 2 * 32
    stage3 = 32 * 64 * 9 + 5 * 64 * 64 * 9 + 6 * 2 * 64
    shortcuts = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    fc = 64 * 10 + 10
    assert stem + stage1 + stage2 + stage3 + fc == 269_722          # option A: the paper's 0.27M
    net = build_cifar_resnet()
    assert n_params(net) == stem + stage1 + stage2 + stage3 + shortcuts + fc == 272_474
    downsample = [name for name, m in net.named_modules() if isinstance(m, BasicBlock) and m.downsample]
    assert downsample == ["layer2.0", "layer3.0"]


def test_eligible_convs_are_the_blocks_3x3() -> None:
    net = build_cifar_resnet(14, (4, 8, 16))
    rows = {name: (ok, why) for name, ok, why in conv_eligibility(net)}
    blocks = [f"layer{s}.{b}.conv{c}" for s in (1, 2, 3) for b in (0, 1) for c in (1, 2)]
    assert rows["conv1"] == (False, "the network's first conv")
    assert rows["layer2.0.downsample.0"] == (False, "1x1 kernel")
    assert rows["layer3.0.downsample.0"] == (False, "1x1 kernel")
    assert [n for n, (ok, _) in rows.items() if ok] == blocks
    gross = decompose(net, **FAST)
    layers = decomposed_layers(gross)
    assert [n for n, _ in layers] == blocks
    assert isinstance(gross.conv1, nn.Conv2d) and isinstance(gross.layer2[0].downsample[0], nn.Conv2d)
    sizes = [layer.group_sizes for _, layer in layers]
    assert sizes[:5] == [(1, 2, 4)] * 5 and sizes[5:] == [(1, 2, 4, 8)] * 4 + [(1, 2, 4, 8, 16)] * 3
    product = 1
    for s in sizes:
        product *= len(s)
    assert len(search_space(gross)) == product == 3 ** 5 * 4 ** 4 * 5 ** 3
    # MACs without input_hw (image_size = 32), equal to the exported network's count
    config = tuple(s[1] for s in sizes)
    exported = export(gross, config)
    assert config_macs(gross, config) == count_macs(exported, (3, 32, 32))
    set_config(gross, config)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(gross.eval()(x), exported.eval()(x), rtol=1e-5, atol=1e-5)


def block_ref(block: BasicBlock, x: torch.Tensor) -> torch.Tensor:
    """One basic block written with torch.nn.functional (eval-mode BatchNorm)."""
    def bn(m: nn.BatchNorm2d, h: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(h, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    c1, c2 = block.conv1, block.conv2
    h = F.relu(bn(block.bn1, F.conv2d(x, c1.weight, None, c1.stride, 1)))
    h = bn(block.bn2, F.conv2d(h, c2.weight, None, 1, 1))
    if block.downsample is None:
        shortcut = x
    else:
        proj, proj_bn = block.downsample
        shortcut = bn(proj_bn, F.conv2d(x, proj.weight, None, proj.stride))
    return F.relu(h + shortcut)


@pytest.mark.parametrize("where", ["layer1.0", "layer2.0", "layer3.1"])
def test_block_matches_functional_reference(where: str) -> None:
    net = build_cifar_resnet(14, (4, 8, 16), seed=1)
    generator = torch.Generator().manual_seed(0)
    for m in net.modules():                                    # non-trivial running statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1, generator=generator)
            m.running_var.uniform_(0.5, 1.5, generator=generator)
            m.weight.data.uniform_(0.5, 1.5, generator=generator)
            m.bias.data.normal_(0, 0.1, generator=generator)
    net.eval()
    block = net.get_submodule(where)
    x = torch.randn(2, block.conv1.in_channels, 16, 16, generator=generator)
    torch.testing.assert_close(block(x), block_ref(block, x), rtol=1e-5, atol=1e-6)
    # and the whole network: stem, blocks, pooling, FC
    y = torch.randn(2, 3, 32, 32, generator=generator)
    h = F.relu(F.batch_norm(F.conv2d(y, net.conv1.weight, None, 1, 1), net.bn1.running_mean,
                            net.bn1.running_var, net.bn1.weight, net.bn1.bias, False, 0.0, net.bn1.eps))
    for stage in (net.layer1, net.layer2, net.layer3):
        for b in stage:
            h = block_ref(b, h)
    logits = F.linear(h.mean(dim=(2, 3)), net.fc.weight, net.fc.bias)
    torch.testing.assert_close(net(y), logits, rtol=1e-5, atol=1e-5)
