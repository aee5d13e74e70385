"""GroSS on a network that is not PaperNet: torchvision's ResNet-18 (10 classes, 32 x 32 input).

The decomposition, configurations by tuple and by name, export to a plain torch network, MAC and parameter
counts against ``FlopCounterMode``, exactness at the largest group size against tests/reference.py, layer
selection, the error messages, and the (plain, non-Sequential) exhaustive evaluation.
"""
from __future__ import annotations

import copy
import io
import zipfile

import pytest
import torch
import torch.nn.functional as F
import torchvision
from reference import conv_like, sequential_ref
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from grosslib import GroSSConv2d
from grosslib.macs import cached_mac_table, config_macs, config_params, count_macs, count_params
from grosslib.models import (
    as_config,
    decompose,
    decomposed_layers,
    export,
    get_config,
    largest_config,
    set_config,
)
from grosslib.search import evaluate_all, select

HW = (32, 32)
BTD = dict(init="svd", max_iter=0)  # the SVD start only: fast, and exact at each layer's largest group size


def resnet() -> nn.Module:
    """A seeded ResNet-18 in eval mode whose batch norms are not the identity (random stats and affine)."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=10)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0.0, 0.2, generator=g)
    return net.eval()


def expected_gross_names(net: nn.Module) -> list[str]:
    """Every 3x3 ungrouped conv but the stem, found without grosslib."""
    return [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
            and m.groups == 1 and n != "conv1"]


@pytest.fixture(scope="module")
def base() -> nn.Module:
    return resnet()


@pytest.fixture(scope="module")
def gross(base: nn.Module) -> nn.Module:
    return decompose(base, **BTD).eval()


def random_configs(net: nn.Module, n: int, seed: int) -> list[tuple[int, ...]]:
    g = torch.Generator().manual_seed(seed)
    return [tuple(layer.group_sizes[int(torch.randint(len(layer.group_sizes), (), generator=g))]
                  for _, layer in decomposed_layers(net)) for _ in range(n)]


def images(n: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(n, 3, *HW, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def flop_counter_macs(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2


def names_of(net: nn.Module) -> list[str]:
    return [name for name, _ in decomposed_layers(net)]


# --------------------------------------------------------------------------------------------- structure
def test_exactly_the_eligible_convs_are_decomposed(base: nn.Module, gross: nn.Module) -> None:
    expected = expected_gross_names(base)
    assert len(expected) == 16 and "conv1" not in expected
    assert names_of(gross) == expected
    modules = dict(gross.named_modules())
    assert isinstance(modules["conv1"], nn.Conv2d) and modules["conv1"].kernel_size == (7, 7)
    downsample = [n for n, m in base.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert downsample == ["layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0"]
    for name in downsample:
        assert type(modules[name]) is nn.Conv2d
        torch.testing.assert_close(modules[name].weight, base.get_submodule(name).weight, rtol=0, atol=0)
    for name, layer in decomposed_layers(gross):
        conv = base.get_submodule(name)
        t = conv.in_channels
        assert layer.group_sizes == tuple(2 ** k for k in range(t.bit_length()) if 2 ** k <= t), name
        assert layer.group_sizes[-1] == t  # 64, 128, 256, 512: powers of two, so the full size is there
        assert (layer.in_channels, layer.out_channels, layer.stride) == (t, conv.out_channels, conv.stride)
    assert {layer.group_sizes[-1] for _, layer in decomposed_layers(gross)} == {64, 128, 256, 512}
    assert get_config(gross) == largest_config(gross)


def test_btd_options_reach_the_decomposition(base: nn.Module, gross: nn.Module) -> None:
    one = dict(include="layer1.0.conv1", group_sizes=(8,))
    same = decompose(base, **one, **BTD).get_submodule("layer1.0.conv1")
    more = decompose(base, **one, init="svd", max_iter=30).get_submodule("layer1.0.conv1")
    assert same.btd_errors[8] == pytest.approx(gross.get_submodule("layer1.0.conv1").btd_errors[8], rel=1e-12)
    assert more.btd_errors[8] < same.btd_errors[8]  # max_iter was honoured: iterations lowered the error
    with pytest.raises(TypeError, match="not_an_option"):
        decompose(base, **one, not_an_option=1)


# --------------------------------------------------------------------------------------------- export
@pytest.fixture(scope="module")
def gross64(gross: nn.Module) -> nn.Module:
    return copy.deepcopy(gross).double()


@pytest.mark.parametrize("index", range(3))
def test_export_equals_the_gross_network(gross64: nn.Module, index: int) -> None:
    config = random_configs(gross64, 3, seed=7)[index]
    as_dict = dict(zip(names_of(gross64), config))
    before = get_config(gross64)
    x = images(2, seed=index, dtype=torch.float64)
    by_tuple, by_dict = export(gross64, config), export(gross64, as_dict)
    assert get_config(gross64) == before  # export does not change the active configuration
    assert not any(isinstance(m, GroSSConv2d) for m in by_tuple.modules())
    assert isinstance(by_tuple, torchvision.models.ResNet)
    set_config(gross64, as_dict)
    try:
        with torch.no_grad():
            expected = gross64(x)
            torch.testing.assert_close(by_tuple(x), expected, rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(by_dict(x), expected, rtol=0, atol=0)
    finally:
        set_config(gross64, before)
    assert expected.abs().max() > 1e-3  # the comparison is not between two zero outputs


def test_exported_network_loads_with_torch_alone(gross: nn.Module, tmp_path) -> None:
    config = random_configs(gross, 1, seed=3)[0]
    exported = export(gross, config)
    torch.save(exported, tmp_path / "net.pt")
    torch.save(exported.state_dict(), tmp_path / "state.pt")
    with zipfile.ZipFile(tmp_path / "net.pt") as archive:
        pickles = b"".join(archive.read(n) for n in archive.namelist() if n.endswith(".pkl"))
    assert b"torchvision" in pickles and b"grosslib" not in pickles  # no grosslib class is needed to load
    loaded = torch.load(tmp_path / "net.pt", weights_only=False)
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    fresh = torch.load(io.BytesIO((tmp_path / "net.pt").read_bytes()), weights_only=False)
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    fresh.load_state_dict(state)  # strict: the state dict matches the architecture exactly
    x = images(2, seed=11)
    set_config(gross, config)
    try:
        with torch.no_grad():
            reference = gross(x)
            torch.testing.assert_close(loaded.eval()(x), reference, rtol=0, atol=0)
            torch.testing.assert_close(fresh.eval()(x), reference, rtol=0, atol=0)
    finally:
        set_config(gross, largest_config(gross))


# --------------------------------------------------------------------------------------------- costs
@pytest.mark.parametrize("index", range(2))
def test_macs_and_params_match_flop_counter_and_export(gross: nn.Module, index: int) -> None:
    config = random_configs(gross, 2, seed=5)[index]
    exported = export(gross, config)
    x = torch.zeros(1, 3, *HW)
    assert x.shape == (1, 3, 32, 32)
    reference = flop_counter_macs(exported, x)
    set_config(gross, config)
    try:
        assert count_macs(gross, (3, *HW)) == reference
    finally:
        set_config(gross, largest_config(gross))
    assert count_macs(exported, (1, 3, *HW)) == reference
    assert config_macs(gross, config, input_hw=HW) == reference
    assert config_macs(gross, dict(zip(names_of(gross), config)), input_hw=HW) == reference
    params = sum(p.numel() for p in exported.parameters())
    assert count_params(exported) == config_params(gross, config) == params
    assert config_params(gross, dict(zip(names_of(gross), config))) == params


def test_costs_track_the_configuration(gross: nn.Module) -> None:
    table = cached_mac_table(gross, HW)
    smallest = tuple(layer.group_sizes[0] for _, layer in decomposed_layers(gross))
    assert table.macs(smallest) < table.macs(largest_config(gross))
    assert table.input_hw[0] == ((8, 8),) and table.input_hw[-1] == ((1, 1),)  # stem /2, maxpool /2, ...


# --------------------------------------------------------------------------------------------- exactness
def test_largest_group_size_reproduces_the_conv(base: nn.Module, gross: nn.Module) -> None:
    conv = copy.deepcopy(base.get_submodule("layer1.0.conv1")).double()
    layer = copy.deepcopy(gross.get_submodule("layer1.0.conv1")).double()
    assert (conv.in_channels, conv.out_channels) == (64, 64) and layer.group_sizes[-1] == 64
    assert layer.btd_errors[64] < 1e-6 < layer.btd_errors[32]  # one full-rank block is exact, smaller are not
    x = torch.randn(2, 64, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    reference = conv_like(conv, x, conv.weight.detach(), conv.bias)
    with torch.no_grad():
        by_hand = sequential_ref(x, *layer.weights(64), layer.bias, conv)
        out = layer(x, group_size=64)
    scale = reference.abs().max()
    # the series terms are stored in float32: the merged weight is exact to ~1e-7 relative
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-5 * float(scale))
    torch.testing.assert_close(by_hand, reference, rtol=0, atol=1e-5 * float(scale))
    with torch.no_grad():
        small = layer(x, group_size=8)
    assert (small - reference).abs().max() > 1e-2 * scale  # a smaller size really is an approximation


# --------------------------------------------------------------------------------------------- selection
def test_include_selects_layers(base: nn.Module) -> None:
    layer1 = [n for n in expected_gross_names(base) if n.startswith("layer1.")]
    assert names_of(decompose(base, include="layer1.*", **BTD)) == layer1
    by_callable = decompose(base, include=lambda name, m: name.startswith("layer1."), **BTD)
    assert names_of(by_callable) == layer1
    one_by_one = decompose(base, include="layer2.0.downsample.0", **BTD)
    assert names_of(one_by_one) == ["layer2.0.downsample.0"]
    layer = one_by_one.get_submodule("layer2.0.downsample.0")
    assert layer.kernel_size == (1, 1) and layer.stride == (2, 2) and layer.group_sizes[-1] == 64


def test_exclude_removes_layers(base: nn.Module) -> None:
    expected = [n for n in expected_gross_names(base) if not n.startswith("layer4.")]
    net = decompose(base, exclude="layer4.*", group_sizes=(64,), **BTD)  # one size per layer: cheap
    assert names_of(net) == expected
    layer4 = [m for n, m in net.named_modules() if n.startswith("layer4.") and "conv" in n]
    assert len(layer4) == 4 and all(type(m) is nn.Conv2d for m in layer4)
    assert all(layer.group_sizes == (64,) for _, layer in decomposed_layers(net))
    kept = decompose(base, exclude=lambda name, m: not name.startswith("layer1.0."), **BTD)
    assert names_of(kept) == ["layer1.0.conv1", "layer1.0.conv2"]
    with pytest.raises(ValueError, match=r"'layer9\.\*'"):
        decompose(base, include="layer9.*", **BTD)
    with pytest.raises(ValueError, match=r"'nothing'"):
        decompose(base, exclude=["layer4.*", "nothing"], **BTD)
    with pytest.raises(ValueError, match="no convolution to decompose"):
        decompose(base, exclude="layer*", **BTD)


# --------------------------------------------------------------------------------------------- bad inputs
def test_unknown_layer_names_and_sizes_are_rejected(gross: nn.Module) -> None:
    names = names_of(gross)
    config = dict.fromkeys(names, 1)
    with pytest.raises(ValueError, match=r"'layer5\.0\.conv1'.*layer1\.0\.conv1"):
        set_config(gross, {**config, "layer5.0.conv1": 1})
    with pytest.raises(ValueError, match=r"'layer5\.0\.conv1'.*layer1\.0\.conv1"):
        config_macs(gross, {**config, "layer5.0.conv1": 1}, input_hw=HW)
    with pytest.raises(ValueError, match=r"lacks GroSS layers \['layer4\.1\.conv2'\]"):
        export(gross, {n: s for n, s in config.items() if n != "layer4.1.conv2"})
    bad = {**config, "layer2.0.conv1": 128}  # layer2.0.conv1 reads 64 channels: sizes 1..64
    with pytest.raises(ValueError, match=r"group size 128 is not in layer layer2\.0\.conv1's series"):
        config_macs(gross, bad, input_hw=HW)
    with pytest.raises(ValueError, match=r"group size 128 is not in GroSS layer layer2\.0\.conv1's series"):
        config_params(gross, bad)
    for call in (as_config, set_config, export):
        with pytest.raises(ValueError, match=r"GroSS layer layer2\.0\.conv1: group size 128 is not in"):
            call(gross, bad)
    assert get_config(gross) == largest_config(gross)  # nothing was set by the failed calls


def test_a_network_without_an_eligible_conv_is_rejected() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 1))
    with pytest.raises(ValueError, match="no convolution to decompose.*kernel larger than 1x1.*first conv"):
        decompose(net, **BTD)


def test_config_macs_needs_input_hw_without_image_size(gross: nn.Module) -> None:
    with pytest.raises(ValueError, match=r"ResNet has no image_size attribute: pass input_hw"):
        config_macs(gross, largest_config(gross))


# --------------------------------------------------------------------------------------------- search
def test_plain_evaluation_and_selection(gross: nn.Module) -> None:
    configs = random_configs(gross, 2, seed=9)
    x = images(8, seed=12)
    labels = torch.arange(8) % 10
    df = evaluate_all(gross, (x, labels), configs=configs, batch_size=4, progress=False)
    assert df.attrs["evaluation"] == "plain" and df.attrs["num_images"] == 8
    assert get_config(gross) == largest_config(gross)  # restored
    assert [tuple(c) for c in df["config"]] == configs
    assert list(df["s_layer1_0_conv1"]) == [c[0] for c in configs]
    for row in df.itertuples():
        exported = export(gross, row.config)
        with torch.no_grad():
            logits = exported(x)
        correct = int((logits.argmax(1) == labels).sum())
        assert row.correct == correct and row.accuracy == correct / 8
        assert row.loss == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-5)
        assert row.macs == config_macs(gross, row.config, input_hw=HW)
        assert row.params == config_params(gross, row.config)
    assert select(df, max_macs=df["macs"].max())["macs"] <= df["macs"].max()
    with pytest.raises(ValueError, match="no configuration fits"):
        select(df, max_macs=df["macs"].min() - 1)
