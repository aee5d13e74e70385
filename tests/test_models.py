"""Tests for grosslib.models: PaperNet, its GroSS decomposition, configurations, collapsed baselines."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from gross_helpers import random_gross
from reference import btd_reconstruct_ref, conv_like, randn, sequential_ref
from torch import nn

from grosslib import Bottleneck, GroSSConv2d, btd, btd_series
from grosslib.models import (
    PaperNet,
    build_papernet,
    collapse_to_config,
    config_name,
    decompose,
    decomposed_layers,
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


# -------------------------------------------------------------------------------- collapse_to_config
COLLAPSE_CONFIGS = [(1, 1, 1), (4, 4, 4), (2, 32, 64), (8, 16, 64), (32, 32, 32), (16, 1, 8)]


def state_snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items() if isinstance(v, torch.Tensor)}


class DenseConv(nn.Module):
    """``conv``'s geometry with another weight (the BTD reconstruction), via tests/reference.py."""

    def __init__(self, conv: nn.Conv2d, weight: torch.Tensor) -> None:
        super().__init__()
        self.conv, self.weight = conv, weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_like(self.conv, x, self.weight, self.conv.bias)


def assert_collapsed_layers(gross: nn.Module, collapsed: nn.Module, config: tuple[int, ...]) -> None:
    """Each collapsed layer: one term of exactly size s with the original's merged weights, bias and error."""
    pairs = list(zip(decomposed_layers(gross), decomposed_layers(collapsed), config))
    assert len(pairs) == len(config) == len(decomposed_layers(collapsed))
    for (name, layer), (name_c, single), s in pairs:
        assert name_c == name and type(single) is GroSSConv2d and single is not layer
        assert single.group_sizes == (s,) and single.group_size == s
        assert len(single.p_terms) == len(single.r_terms) == len(single.q_terms) == 1
        assert len(list(single.parameters())) == 3
        for got, expected in zip(single.weights(s), layer.weights(s)):
            assert got.dtype == expected.dtype and torch.equal(got.detach(), expected.detach())
        for got, expected in zip((single.p_terms[0], single.r_terms[0], single.q_terms[0]), layer.weights(s)):
            assert torch.equal(got.detach(), expected.detach())  # the one term is the merged weight itself
        assert (single.bias is None) == (layer.bias is None)
        if layer.bias is not None:
            assert torch.equal(single.bias, layer.bias) and single.bias.data_ptr() != layer.bias.data_ptr()
        assert single.btd_errors == ({s: layer.btd_errors[s]} if s in layer.btd_errors else {})
        geometry = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                    "padding_mode")
        assert all(getattr(single, a) == getattr(layer, a) for a in geometry)


@pytest.mark.parametrize("config", COLLAPSE_CONFIGS, ids=config_name)
def test_collapse_to_config_equals_gross_at_that_config(net64, decomposed, series_results, config):
    before, config_before = state_snapshot(decomposed), get_config(decomposed)
    collapsed = collapse_to_config(decomposed, config).eval()
    # the original network is not modified: same weights, same active sizes, full series everywhere
    assert get_config(decomposed) == config_before == largest_config(decomposed)
    after = state_snapshot(decomposed)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert [len(getattr(decomposed, n).group_sizes) for n in DECOMPOSED] == [6, 6, 7]

    assert get_config(collapsed) == config and search_space(collapsed) == [config]
    assert_collapsed_layers(decomposed, collapsed, config)
    assert torch.equal(collapsed.conv1.weight, decomposed.conv1.weight)
    assert torch.equal(collapsed.fc1.weight, decomposed.fc1.weight)
    assert collapsed.conv1.weight.data_ptr() != decomposed.conv1.weight.data_ptr()  # a copy

    x = randn(3, 3, 32, 32, seed=sum(config))
    with torch.no_grad():
        set_config(decomposed, config)
        try:
            expected = decomposed(x)
        finally:
            set_config(decomposed, config_before)
        got = collapsed(x)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
        # and the network with each conv replaced by the dense conv with the per-size BTD reconstruction
        dense = {name: DenseConv(getattr(net64, name), btd_reconstruct_ref(
            series_results[name][s].cores, series_results[name][s].out_factors,
            series_results[name][s].in_factors)) for name, s in zip(DECOMPOSED, config)}
        torch.testing.assert_close(got, papernet_forward_ref(net64, x, dense), rtol=0, atol=1e-10)


@pytest.mark.parametrize("config", [(1, 1, 1), (2, 32, 64), (32, 32, 32)], ids=config_name)
def test_collapsed_layer_is_the_per_size_btd_bottleneck(net64, decomposed, series_results, config):
    """Layer by layer: the collapsed bottleneck is the dense conv with that size's BTD reconstruction."""
    collapsed = collapse_to_config(decomposed, config)
    for i, (name, s) in enumerate(zip(DECOMPOSED, config)):
        conv, single, result = getattr(net64, name), getattr(collapsed, name), series_results[name][s]
        w_hat = btd_reconstruct_ref(result.cores, result.out_factors, result.in_factors)
        for hw in ((5, 7), (8, 8)):
            x = randn(2, conv.in_channels, *hw, seed=10 * i + hw[0])
            with torch.no_grad():
                expected = conv_like(conv, x, w_hat, conv.bias)
                torch.testing.assert_close(single(x), expected, rtol=0, atol=1e-10)
                torch.testing.assert_close(single.to_bottleneck()(x), expected, rtol=0, atol=1e-10)
                merged = [w.detach() for w in single.weights()]
                torch.testing.assert_close(sequential_ref(x, *merged, conv.bias, conv), expected,
                                           rtol=0, atol=1e-10)
        assert single.btd_errors == {s: result.error}
        if result.error > 1e-6:  # the reconstruction is not the original conv: the comparison has teeth
            assert not torch.allclose(single(x).detach(), conv(x), atol=1e-6)


def small_net(dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """Convs of several geometries (stride, non-square kernel, dilation, no bias, reflect padding)."""
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 12, (3, 1), stride=2, padding=(1, 0)), nn.ReLU(),
        nn.Conv2d(12, 8, 1), nn.ReLU(),
        nn.Conv2d(8, 6, 3, padding=2, dilation=2, bias=False),
        nn.Conv2d(6, 6, 3, padding=1, padding_mode="reflect"),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)).to(dtype).eval()


SMALL_SIZES = {"2": (1, 2, 4, 8), "4": (1, 3, 12), "6": (2, 8), "7": (1, 2, 6)}


@pytest.mark.parametrize("seed", [0, 1])
def test_collapse_to_config_on_a_small_net_of_several_geometries(seed):
    net = small_net()
    gross = decompose(net, SMALL_SIZES, include=list(SMALL_SIZES), tol=1e-8, max_iter=3).eval()
    results = {name: btd_series(net.get_submodule(name).weight.detach(), sizes, tol=1e-8, max_iter=3)
               for name, sizes in SMALL_SIZES.items()}
    space = search_space(gross)
    order = torch.randperm(len(space), generator=torch.Generator().manual_seed(seed))[:5].tolist()
    for config in [space[i] for i in order] + [largest_config(gross)]:
        collapsed = collapse_to_config(gross, config).eval()
        assert_collapsed_layers(gross, collapsed, config)
        inputs: dict[str, torch.Tensor] = {}
        handles = [layer.register_forward_hook(lambda m, a, out, name=name, seen=inputs: seen.__setitem__(
            name, a[0])) for name, layer in decomposed_layers(collapsed)]
        try:
            for hw in ((9, 9), (6, 11)):
                x = randn(2, 3, *hw, seed=seed + hw[1])
                with torch.no_grad():
                    set_config(gross, config)
                    got = collapsed(x)
                    torch.testing.assert_close(got, gross(x), rtol=0, atol=1e-12)
                    for name, s in zip(SMALL_SIZES, config):  # each layer: the dense conv with its W_hat
                        conv, result = net.get_submodule(name), results[name][s]
                        w_hat = btd_reconstruct_ref(result.cores, result.out_factors, result.in_factors)
                        torch.testing.assert_close(collapsed.get_submodule(name)(inputs[name]),
                                                   conv_like(conv, inputs[name], w_hat, conv.bias),
                                                   rtol=0, atol=1e-10)
        finally:
            for handle in handles:
                handle.remove()
    set_config(gross, largest_config(gross))


@pytest.mark.parametrize("config", [(1, 1, 1), (2, 32, 64), (16, 4, 8)], ids=config_name)
def test_collapse_to_config_uses_the_trained_merged_weights(config):
    """After GroSS training the terms are no BTD: collapsed layers take the merged weights, no BTD error."""
    gross = random_gross(build_papernet(seed=2), seed=4).double().eval()
    with torch.no_grad():  # PaperNet's biases start at zero: make them count
        for i, (_, layer) in enumerate(decomposed_layers(gross)):
            layer.bias.copy_(randn(layer.out_channels, seed=20 + i))
    before = state_snapshot(gross)
    collapsed = collapse_to_config(gross, config).eval()
    assert_collapsed_layers(gross, collapsed, config)
    assert all(getattr(collapsed, n).btd_errors == {} for n in DECOMPOSED)  # random_gross records none
    x = randn(2, 3, 32, 32, seed=7)
    with torch.no_grad():
        set_config(gross, config)
        expected = gross(x)
        torch.testing.assert_close(collapsed(x), expected, rtol=0, atol=1e-12)
        singles = {name: getattr(gross, name).to_bottleneck(s) for name, s in zip(DECOMPOSED, config)}
        torch.testing.assert_close(papernet_forward_ref(gross, x, singles), expected, rtol=0, atol=1e-10)
        other = next(c for c in search_space(gross) if c != config)
        set_config(gross, other)
        assert not torch.allclose(gross(x), expected, atol=1e-6)  # configurations differ: the test has teeth
    set_config(gross, largest_config(gross))
    assert all(torch.equal(v, before[k]) for k, v in state_snapshot(gross).items())
    # training the collapsed network leaves the GroSS network alone
    collapsed.conv3(randn(1, 32, 4, 4, seed=8)).square().sum().backward()
    with torch.no_grad():
        for param in collapsed.parameters():
            if param.grad is not None:
                param -= 0.1 * param.grad
    assert all(torch.equal(v, before[k]) for k, v in state_snapshot(gross).items())
    assert not torch.equal(collapsed.conv3.p_terms[0], gross.conv3.weights(config[1])[0])


def test_collapse_to_config_bad_configs_raise(decomposed):
    before = state_snapshot(decomposed)
    unavailable = "not in this layer's series"
    for config, message in [((4, 4), "has 2 group sizes"), ((4, 4, 4, 4), "has 4 group sizes"),
                            ((), "has 0 group sizes"), ((3, 4, 4), unavailable), ((4, 64, 4), unavailable),
                            ((4, 4, 128), unavailable)]:
        with pytest.raises(ValueError, match=message):
            collapse_to_config(decomposed, config)
    single = collapse_to_config(decomposed, (4, 4, 4))
    with pytest.raises(ValueError, match="not in this layer's series"):  # a collapsed net keeps one size
        collapse_to_config(single, (4, 4, 8))
    assert get_config(collapse_to_config(single, (4, 4, 4))) == (4, 4, 4)
    assert get_config(decomposed) == largest_config(decomposed)
    assert all(torch.equal(v, before[k]) for k, v in state_snapshot(decomposed).items())
    with pytest.raises(ValueError, match="has 3 group sizes but the network has 0"):
        collapse_to_config(build_papernet(seed=0), (4, 4, 4))


@pytest.mark.parametrize("bad", [2.5, True, "2"])
def test_set_config_and_collapse_refuse_non_integer_sizes(bad: object) -> None:
    """``int(2.5)`` would silently pick size 2: configurations must hold integer sizes of each series."""
    net = decompose(build_papernet(seed=0), max_iter=0)
    before = get_config(net)
    with pytest.raises((TypeError, ValueError)):
        set_config(net, (1, bad, 1))
    assert get_config(net) == before                          # nothing changed: checked before any is set
    with pytest.raises((TypeError, ValueError)):
        collapse_to_config(net, (1, bad, 1))
