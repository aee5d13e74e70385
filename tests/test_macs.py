"""Tests for grosslib.macs: hooked and analytic MAC / parameter counts against FlopCounterMode."""
from __future__ import annotations

import copy
import re
from collections.abc import Sequence

import pytest
import torch
from gross_helpers import random_gross
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import grosslib.macs as macs
from grosslib import GroSSConv2d
from grosslib.macs import (
    MacTable,
    cached_mac_table,
    clear_mac_cache,
    config_macs,
    config_params,
    count_macs,
    count_params,
    mac_table,
)
from grosslib.models import build_papernet, search_space, set_config, uniform_config


def flop_counter_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Reference: FlopCounterMode's total on a one-sample forward, halved (it counts 2 FLOPs per MAC)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_shape))
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2


@pytest.fixture(scope="module")
def gross_net() -> nn.Module:
    return random_gross(build_papernet(seed=0)).eval()


# ---------------------------------------------------------------------------------------------------------


def test_full_papernet_hand_count() -> None:
    # conv1 32*32*32*3*9, conv2 16*16*32*32*9, conv3 8*8*64*32*9, conv4 4*4*64*64*9, fc1 256*256, fc2 256*10
    expected = {3: 884736 + 2359296 + 1179648 + 589824 + 65536 + 2560,
                1: 294912 + 2359296 + 1179648 + 589824 + 65536 + 2560}
    for channels, macs_expected in expected.items():
        net = build_papernet(in_channels=channels)
        assert count_macs(net, (channels, 32, 32)) == macs_expected
        assert count_macs(net, (5, channels, 32, 32)) == macs_expected  # batched shape: per image
        assert flop_counter_macs(net, (channels, 32, 32)) == macs_expected
        assert count_params(net) == sum(p.numel() for p in net.parameters())


def test_every_papernet_configuration_matches_flop_counter(gross_net: nn.Module) -> None:
    configs = search_space(gross_net)
    assert len(configs) == 252
    table = mac_table(gross_net, (3, 32, 32))
    seen = set()
    for config in configs:
        set_config(gross_net, config)
        reference = flop_counter_macs(gross_net, (3, 32, 32))
        assert count_macs(gross_net, (3, 32, 32)) == reference, config
        assert config_macs(gross_net, config) == reference, config
        assert table.macs(config) == reference, config
        assert count_params(gross_net) == config_params(gross_net, config) == table.params(config), config
        seen.add(reference)
    assert len(seen) > 100  # costs really vary with the configuration


@pytest.mark.parametrize("config", [(1, 1, 1), (2, 32, 64), (8, 4, 16)])
def test_params_equal_exported_network(gross_net: nn.Module, config: tuple[int, ...]) -> None:
    exported = copy.deepcopy(build_papernet())
    for name, s in zip(("conv2", "conv3", "conv4"), config):
        setattr(exported, name, getattr(gross_net, name).to_bottleneck(s))
    params = sum(p.numel() for p in exported.parameters())
    assert config_params(gross_net, config) == params
    set_config(gross_net, config)
    assert count_params(gross_net) == params
    assert count_macs(exported, (3, 32, 32)) == config_macs(gross_net, config)


def test_docstring_table_matches_counts(gross_net: nn.Module) -> None:
    doc = macs.__doc__
    assert doc is not None
    rows = {m.group(1).strip(): (int(m.group(2).replace(",", "")), int(m.group(3).replace(",", "")))
            for m in re.finditer(r"^(full.*?input|fixed \d+ \(\S+\))\s+([\d,]+)\s+([\d,]+)$", doc, re.M)}
    assert len(rows) == 6
    for channels in (3, 1):
        net = build_papernet(in_channels=channels)
        key = f"full, {channels} x 32 x 32 input"
        assert rows[key] == (count_macs(net, (channels, 32, 32)), count_params(net))
    for s in (1, 4, 16, 32):
        config = uniform_config(gross_net, s)
        key = f"fixed {s} ({'-'.join(map(str, config))})"
        set_config(gross_net, config)
        assert rows[key] == (flop_counter_macs(gross_net, (3, 32, 32)), count_params(gross_net))
        assert rows[key] == (config_macs(gross_net, config), config_params(gross_net, config))


class Odd(nn.Sequential):
    """Stride 2, dilation, groups, no bias, non-square input and a GroSS layer with stride 2."""

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, (3, 5), padding=(2, 1), dilation=2, groups=4, bias=False),
            GroSSConv2d(8, 12, 3, (1, 2, 4, 8), stride=2, padding=0),
            nn.AdaptiveAvgPool2d((2, 3)),
            nn.Flatten(),
            nn.Linear(72, 7),
        )


@pytest.mark.parametrize("hw", [(20, 28), (17, 23), (32, 32)])
def test_odd_network_matches_flop_counter(hw: tuple[int, int]) -> None:
    net = Odd().eval()
    gross = net[3]
    table = mac_table(net, (3, *hw))
    for s in gross.group_sizes:
        gross.group_size = s
        reference = flop_counter_macs(net, (3, *hw))
        assert count_macs(net, (3, *hw)) == reference
        assert table.macs((s,)) == reference
    h1, w1 = (hw[0] - 1) // 2 + 1, (hw[1] - 1) // 2 + 1  # stride-2 conv, padding 1
    h2, w2 = h1 + 4 - 2 * 2, w1 + 2 - 2 * 4  # dilated 3x5 kernel, padding (2, 1)
    assert table.input_hw == (((h2, w2),),)
    assert table.fixed == h1 * w1 * 8 * 3 * 9 + h2 * w2 * 8 * 2 * 15 + 72 * 7


def test_linear_only_and_leading_dims() -> None:
    net = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    assert count_macs(net, (10,)) == 10 * 20 + 20 * 5
    assert count_macs(net, (4, 10)) == 10 * 20 + 20 * 5  # (N, features): per sample
    assert count_macs(net, (7, 10)) == 300 and count_macs(net, (7, 10), batched=False) == 7 * 300
    assert count_macs(net, (3, 7, 10)) == 3 * 7 * 300  # leading dims other than the batch count
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, 7, 10))
    assert counter.get_total_flops() == 2 * 3 * 7 * 300
    assert count_params(net) == 10 * 20 + 20 + 20 * 5 + 5


def test_gross_layer_explicit_group_size_and_no_double_count() -> None:
    layer = GroSSConv2d(8, 16, 3, (1, 2, 8), padding=1)

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = layer
            self.head = nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.layer(x, group_size=2) + self.layer(x)  # called twice, once at an explicit size
            return self.head(y.mean((2, 3)))

    layer.group_size = 8
    expected = layer.macs(2, (6, 6)) + layer.macs(8, (6, 6)) + 16 * 3
    assert count_macs(Wrapper(), (8, 6, 6)) == expected == flop_counter_macs(Wrapper(), (8, 6, 6))
    # parameters: the exported bottleneck, not the series terms
    assert count_params(layer) == layer.num_params(8) == 8 * 8 + 8 * 8 * 9 + 16 * 8 + 16
    assert count_params(layer) != sum(p.numel() for p in layer.parameters())


def test_counting_restores_modes_and_config(gross_net: nn.Module) -> None:
    set_config(gross_net, (2, 32, 64))
    gross_net.train()
    count_macs(gross_net, (3, 32, 32))
    mac_table(gross_net, (3, 32, 32))
    assert all(m.training for m in gross_net.modules())
    assert [layer.group_size for layer in (gross_net.conv2, gross_net.conv3, gross_net.conv4)] == [2, 32, 64]
    gross_net.eval()


def test_transposed_conv_rejected() -> None:
    with pytest.raises(ValueError, match="transposed"):
        count_macs(nn.Sequential(nn.ConvTranspose2d(3, 4, 3)), (3, 8, 8))


def test_table_lookup_errors_and_cache(gross_net: nn.Module) -> None:
    table = cached_mac_table(gross_net)
    assert isinstance(table, MacTable) and table.input_shape == (3, 32, 32)
    assert cached_mac_table(gross_net) is table  # cached
    assert table.layer_names == ("conv2", "conv3", "conv4")
    assert table.input_hw == (((16, 16),), ((8, 8),), ((4, 4),))
    for bad in [(1, 1), (1, 1, 1, 1), (3, 1, 1), (1, 1, 128)]:
        with pytest.raises(ValueError):
            table.macs(bad)
        with pytest.raises(ValueError):
            table.params(bad)
        with pytest.raises(ValueError):
            config_macs(gross_net, bad)
        with pytest.raises(ValueError):
            config_params(gross_net, bad)
    # replacing a child invalidates the cache
    net = copy.deepcopy(gross_net)
    set_config(net, (1, 1, 1))
    before = config_macs(net, (1, 1, 1))
    net.fc1 = nn.Linear(256, 512)
    net.fc2 = nn.Linear(512, 10)
    assert config_macs(net, (1, 1, 1)) == before - 256 * 256 - 256 * 10 + 256 * 512 + 512 * 10
    assert config_params(net, (1, 1, 1)) == count_params(net)
    clear_mac_cache(net)
    clear_mac_cache()


def test_input_hw_needed_without_image_size() -> None:
    net = nn.Sequential(GroSSConv2d(4, 4, 3, (1, 4), padding=1), nn.Flatten())
    with pytest.raises(ValueError, match="input_hw"):
        config_macs(net, (1,))
    assert config_macs(net, (4,), input_hw=(5, 6)) == net[0].macs(4, (5, 6))


def test_dict_configs_equal_tuple_configs(gross_net: nn.Module) -> None:
    table = cached_mac_table(gross_net)
    for config in [(1, 1, 1), (2, 32, 64), (8, 4, 16)]:
        as_dict = dict(reversed(list(zip(("conv2", "conv3", "conv4"), config))))  # order does not matter
        assert config_macs(gross_net, as_dict) == config_macs(gross_net, config)
        assert table.macs(as_dict) == table.macs(config)
        assert config_params(gross_net, as_dict) == config_params(gross_net, config)
        assert table.params(as_dict) == table.params(config)
    # the dict really selects per layer: swapping two layers' sizes changes the count
    assert config_macs(gross_net, {"conv2": 1, "conv3": 32, "conv4": 4}) != config_macs(gross_net, (4, 32, 1))
    assert config_macs(gross_net, {"conv2": 1, "conv3": 32, "conv4": 4}) == config_macs(gross_net, (1, 32, 4))


@pytest.mark.parametrize("config, match", [
    ({"conv2": 1, "conv3": 1, "conv4": 1, "conv9": 2}, r"unknown GroSS layers \['conv9'\]; valid names: "
                                                       r"\['conv2', 'conv3', 'conv4'\]"),
    ({"conv2": 1, "conv4": 1}, r"lacks GroSS layers \['conv3'\]"),
    ({"conv2": 1, "conv3": 3, "conv4": 1}, r"group size 3 is not in (GroSS )?layer conv3's series"),
])
def test_bad_dict_configs_name_the_layers(gross_net: nn.Module, config: dict, match: str) -> None:
    table = cached_mac_table(gross_net)
    for count in (lambda c: config_macs(gross_net, c), lambda c: config_params(gross_net, c), table.macs,
                  table.params):
        with pytest.raises(ValueError, match=match):
            count(config)


def test_input_hw_message_names_the_fix() -> None:
    class Headless(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = GroSSConv2d(4, 4, 3, (1, 4), padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    message = "Headless has no image_size attribute: pass input_hw=(H, W)"
    with pytest.raises(ValueError, match=re.escape(message)):
        config_macs(Headless(), {"conv": 1})
    assert config_macs(Headless(), {"conv": 1}, input_hw=(3, 5)) == Headless().conv.macs(1, (3, 5))
