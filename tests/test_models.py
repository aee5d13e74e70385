"""Tests for grosslib.models: PaperNet, its GroSS decomposition, configurations; plus torchvision."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from reference import randn
from torch import nn

from grosslib import Bottleneck, GroSSConv2d, btd, btd_series
from grosslib.models import (
    PaperNet,
    build_papernet,
    config_name,
    decompose,
    fixed_config_network,
    get_config,
    largest_config,
    search_space,
    set_config,
    uniform_config,
)

FAST = dict(tol=1e-8, max_iter=2)
DECOMPOSED = ("conv2", "conv3", "conv4")


def papernet_forward_ref(net: nn.Module, x: torch.Tensor, replacements: dict[str, nn.Module]) -> torch.Tensor:
    """PaperNet's forward written out by hand (eval mode), with some convs replaced."""
    for i in range(1, 5):
        conv = replacements.get(f"conv{i}", getattr(net, f"conv{i}"))
        x = F.max_pool2d(F.relu(conv(x)), 2)
    x = F.relu(net.fc1(x.flatten(1)))
    return net.fc2(x)


@pytest.fixture(scope="module")
def net64():
    torch.manual_seed(0)
    return build_papernet(3, 10, seed=0).double().eval()


@pytest.fixture(scope="module")
def decomposed(net64):
    return decompose(net64, **FAST).eval()


@pytest.fixture(scope="module")
def series_results(net64):
    """Per-layer btd_series results, computed independently of decompose()."""
    out = {}
    for name in DECOMPOSED:
        conv = getattr(net64, name)
        sizes = [2 ** k for k in range(7) if 2 ** k <= conv.in_channels]
        out[name] = btd_series(conv.weight.detach(), sizes, **FAST)
    return out


# ----------------------------------------------------------------------------------------- PaperNet
def test_papernet_output_shape_and_structure():
    net = build_papernet(3, 10, seed=0).eval()
    assert isinstance(net, PaperNet)
    out = net(randn(4, 3, 32, 32, seed=0, dtype=torch.float32))
    assert out.shape == (4, 10)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 32), (32, 32), (32, 64), (64, 64)]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) and c.stride == (1, 1) for c in convs)
    assert all(c.bias is not None for c in convs)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(fc.in_features, fc.out_features) for fc in linears] == [(256, 256), (256, 10)]
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 4
    dropouts = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 1 and dropouts[0].p == 0.5


def test_papernet_forward_matches_hand_written_forward():
    net = build_papernet(3, 10, seed=1).double().eval()
    x = randn(2, 3, 32, 32, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(net(x), papernet_forward_ref(net, x, {}), rtol=0, atol=0)


@pytest.mark.parametrize("in_channels,num_classes", [(3, 10), (1, 7)])
def test_papernet_parameter_count(in_channels, num_classes):
    net = build_papernet(in_channels, num_classes, seed=0)
    widths = [in_channels, 32, 32, 64, 64]
    expected = sum(widths[i] * widths[i + 1] * 9 + widths[i + 1] for i in range(4))
    expected += 256 * 256 + 256 + 256 * num_classes + num_classes
    assert sum(p.numel() for p in net.parameters()) == expected
    out = net.eval()(torch.zeros(1, in_channels, 32, 32))
    assert out.shape == (1, num_classes)


@pytest.mark.parametrize("seed", [0, 1])
def test_papernet_init_statistics(seed):
    net = build_papernet(3, 10, seed=seed)
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            w = module.weight.detach().double()
            fan_out = w.shape[0] * w.shape[2] * w.shape[3]
            expected_std = math.sqrt(2.0 / fan_out)
        elif isinstance(module, nn.Linear):
            w = module.weight.detach().double()
            expected_std = 0.01
        else:
            continue
        n = w.numel()
        assert abs(float(w.mean())) <= 5 * expected_std / math.sqrt(n)
        assert abs(float(w.std()) - expected_std) <= 5 * expected_std / math.sqrt(2 * n)
        assert torch.count_nonzero(module.bias) == 0


def test_build_papernet_is_deterministic_in_seed():
    a, b, c = build_papernet(seed=3), build_papernet(seed=3), build_papernet(seed=4)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
        if name.endswith("weight"):
            assert not torch.equal(pa, pc)


# ---------------------------------------------------------------------------------------- decompose
def test_decompose_replaces_all_but_first(net64, decomposed):
    assert type(decomposed.conv1) is nn.Conv2d
    assert torch.equal(decomposed.conv1.weight, net64.conv1.weight)
    for name in DECOMPOSED:
        assert isinstance(getattr(decomposed, name), GroSSConv2d)
        assert type(getattr(net64, name)) is nn.Conv2d  # the original network is left untouched
    assert torch.equal(decomposed.fc1.weight, net64.fc1.weight)


def test_search_space(decomposed):
    space = search_space(decomposed)
    assert len(space) == 252 == 6 * 6 * 7
    assert len(set(space)) == 252
    assert {c[0] for c in space} == {1, 2, 4, 8, 16, 32}
    assert {c[1] for c in space} == {1, 2, 4, 8, 16, 32}
    assert {c[2] for c in space} == {1, 2, 4, 8, 16, 32, 64}
    assert space == sorted(space)
    assert space[0] == (1, 1, 1) and space[-1] == (32, 32, 64)
    assert [layer.group_sizes for layer in (decomposed.conv2, decomposed.conv3, decomposed.conv4)] == [
        (1, 2, 4, 8, 16, 32), (1, 2, 4, 8, 16, 32), (1, 2, 4, 8, 16, 32, 64)]


def test_configs(decomposed):
    assert largest_config(decomposed) == (32, 32, 64)
    assert get_config(decomposed) == (32, 32, 64)
    assert uniform_config(decomposed, 4) == (4, 4, 4)
    assert uniform_config(decomposed, 32) == (32, 32, 32)
    assert uniform_config(decomposed, 64) == (32, 32, 64)
    assert config_name((2, 32, 64)) == "2-32-64"
    assert config_name((8, 16, 64)) == "8-16-64"
    set_config(decomposed, (2, 8, 16))
    try:
        assert get_config(decomposed) == (2, 8, 16)
        layers = (decomposed.conv2, decomposed.conv3, decomposed.conv4)
        assert tuple(layer.group_size for layer in layers) == (2, 8, 16)
    finally:
        set_config(decomposed, (32, 32, 64))


def test_config_errors(decomposed):
    with pytest.raises(ValueError, match="has 2 group sizes"):
        set_config(decomposed, (2, 8))
    with pytest.raises(ValueError, match="has 4 group sizes"):
        set_config(decomposed, (2, 8, 8, 8))
    with pytest.raises(ValueError, match="not in this layer's series"):
        set_config(decomposed, (3, 8, 8))
    with pytest.raises(ValueError, match="not available"):
        uniform_config(decomposed, 3)
    with pytest.raises(ValueError, match="decompose it first"):
        search_space(build_papernet(seed=0))
    set_config(decomposed, (32, 32, 64))


def test_decomposed_net_equals_series_bottlenecks_at_every_config(net64, decomposed, series_results):
    """At each of the 252 configs, the GroSS network equals PaperNet with Bottleneck(conv, btd_series[s])."""
    bottlenecks = {name: {s: Bottleneck(getattr(net64, name), r).eval() for s, r in results.items()}
                   for name, results in series_results.items()}
    x = randn(1, 3, 32, 32, seed=5)
    with torch.no_grad():
        for config in search_space(decomposed):
            set_config(decomposed, config)
            replacements = {name: bottlenecks[name][s] for name, s in zip(DECOMPOSED, config)}
            expected = papernet_forward_ref(net64, x, replacements)
            torch.testing.assert_close(decomposed(x), expected, rtol=0, atol=1e-10)
    set_config(decomposed, largest_config(decomposed))


def test_decomposed_layers_record_series_errors(decomposed, series_results):
    for name in DECOMPOSED:
        layer = getattr(decomposed, name)
        assert layer.btd_errors == {s: r.error for s, r in series_results[name].items()}
        sizes = sorted(layer.btd_errors)
        errors = [layer.btd_errors[s] for s in sizes]
        assert all(b <= a + 1e-12 for a, b in zip(errors, errors[1:]))


@pytest.mark.parametrize("config", [(4, 4, 4), (2, 32, 64), (1, 16, 8)])
def test_fixed_config_network_equals_single_size_bottlenecks(net64, config):
    fixed = fixed_config_network(net64, config, **FAST).eval()
    assert get_config(fixed) == config
    assert [getattr(fixed, name).group_sizes for name in DECOMPOSED] == [(s,) for s in config]
    assert len(search_space(fixed)) == 1
    replacements = {}
    for name, s in zip(DECOMPOSED, config):
        conv = getattr(net64, name)
        replacements[name] = Bottleneck(conv, btd(conv.weight.detach(), s, **FAST))
    x = randn(2, 3, 32, 32, seed=6)
    with torch.no_grad():
        torch.testing.assert_close(fixed(x), papernet_forward_ref(net64, x, replacements), rtol=0, atol=1e-10)


def test_fixed_config_network_wrong_length_raises(net64):
    with pytest.raises(ValueError, match="has 2 group sizes"):
        fixed_config_network(net64, (4, 4))


def test_decompose_options(net64):
    only = decompose(net64, {"conv4": (8, 64)}, **FAST)
    assert isinstance(only.conv4, GroSSConv2d) and only.conv4.group_sizes == (8, 64)
    assert only.conv2.group_sizes == (1, 2, 4, 8, 16, 32)  # unnamed layers get the defaults
    with pytest.raises(ValueError, match="not decomposed"):
        decompose(net64, {"conv1": (1,)}, **FAST)
    everything = decompose(build_papernet(seed=0), (1,), skip_first=False, tol=1e-8, max_iter=1)
    assert all(isinstance(getattr(everything, f"conv{i}"), GroSSConv2d) for i in range(1, 5))
    with pytest.raises(ValueError, match="no convolution"):
        decompose(nn.Sequential(nn.Conv2d(3, 4, 3)), **FAST)


def test_decompose_with_bad_group_sizes_raises(net64):
    with pytest.raises(ValueError, match="does not divide"):
        decompose(net64, (1, 3), **FAST)


# ---------------------------------------------------------------------------------------- torchvision
def test_torchvision_ops_nms():
    import torchvision

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [20.0, 20.0, 30.0, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep = torchvision.ops.nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
