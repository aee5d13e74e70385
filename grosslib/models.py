"""The paper's network (PaperNet), its GroSS decomposition, configurations, and the input normalisation."""
from __future__ import annotations

import copy
import fnmatch
import itertools
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .series import GroSSConv2d

__all__ = ["Config", "PaperNet", "as_config", "build_papernet", "channel_stats", "check_config_length",
           "collapse_to_config", "config_name", "conv_eligibility", "decompose", "decomposed_layers",
           "export", "fixed_config_network",
           "get_config", "largest_config", "normalize", "search_space", "set_config", "sizes_in_layer_order",
           "uniform_config"]

Config = tuple[int, ...]


class PaperNet(nn.Sequential):
    """The 4-conv network of the paper (section 4.2).

    conv3x3 ``in -> 32 -> 32 -> 64 -> 64`` (bias, stride 1, padding 1), each followed by ReLU and
    2x2 max-pooling; then FC 256 -> 256, ReLU, dropout 0.5, FC 256 -> classes. Input 32x32.

    Init: convs He normal (fan_out, ReLU); FCs normal with mean 0 and *standard deviation* 0.01
    (we read the paper's "0.01 variance" as the common ``normal_(0, 0.01)`` idiom); biases 0.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, widths: Sequence[int] = (32, 32, 64, 64),
                 hidden: int = 256, dropout: float = 0.5, image_size: int = 32) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels, size = in_channels, image_size
        for i, width in enumerate(widths, start=1):
            layers[f"conv{i}"] = nn.Conv2d(channels, width, 3, padding=1)
            layers[f"relu{i}"] = nn.ReLU(inplace=True)
            layers[f"pool{i}"] = nn.MaxPool2d(2)
            channels, size = width, size // 2
        layers["flatten"] = nn.Flatten()
        layers["fc1"] = nn.Linear(channels * size * size, hidden)
        layers[f"relu{len(widths) + 1}"] = nn.ReLU(inplace=True)
        layers["dropout"] = nn.Dropout(dropout)
        layers["fc2"] = nn.Linear(hidden, num_classes)
        super().__init__(layers)
        self.in_channels, self.num_classes, self.image_size = in_channels, num_classes, image_size
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """The paper's initialisation (optionally from ``generator``)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
                with torch.no_grad():
                    module.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=generator)
            elif isinstance(module, nn.Linear):
                with torch.no_grad():
                    module.weight.normal_(0.0, 0.01, generator=generator)
            if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
                nn.init.zeros_(module.bias)


def build_papernet(in_channels: int = 3, num_classes: int = 10, seed: int = 0) -> PaperNet:
    """A freshly initialised PaperNet, deterministic in ``seed``."""
    net = PaperNet(in_channels, num_classes)
    net.reset_parameters(torch.Generator().manual_seed(seed))
    return net


def decomposed_layers(net: nn.Module) -> list[tuple[str, GroSSConv2d]]:
    """The GroSS layers of ``net`` in forward (definition) order, with their names."""
    return [(name, m) for name, m in net.named_modules() if isinstance(m, GroSSConv2d)]


def _set_submodule(net: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, child, module)


Selector = str | Sequence[str] | Callable[[str, nn.Module], bool] | None


def conv_eligibility(model: nn.Module, skip_first: bool = True) -> list[tuple[str, bool, str]]:
    """``(name, eligible, reason)`` per ``nn.Conv2d`` of ``model`` under :func:`decompose`'s default rule."""
    rows = []
    for i, (name, m) in enumerate((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)):
        if skip_first and i == 0:
            rows.append((name, False, "the network's first conv"))
        elif m.groups != 1:
            rows.append((name, False, f"grouped (groups={m.groups})"))
        elif tuple(m.kernel_size) == (1, 1):
            rows.append((name, False, "1x1 kernel"))
        else:
            rows.append((name, True, "eligible"))
    return rows


def _matcher(selector: Selector, what: str, names: Sequence[str], modules: dict[str, nn.Module]) -> set[str]:
    """The names among ``names`` that ``selector`` selects; a pattern matching none raises ValueError."""
    if callable(selector):
        return {n for n in names if selector(n, modules[n])}
    patterns = [selector] if isinstance(selector, str) else list(selector)
    chosen: set[str] = set()
    for pattern in patterns:
        hits = {n for n in names if fnmatch.fnmatchcase(n, pattern)}
        if not hits:
            raise ValueError(f"{what} pattern {pattern!r} matches no nn.Conv2d with groups == 1; "
                             f"candidates: {list(names)}")
        chosen |= hits
    return chosen


def _selected_convs(model: nn.Module, skip_first: bool, include: Selector,
                    exclude: Selector) -> list[tuple[str, nn.Conv2d]]:
    modules = dict(model.named_modules())
    if include is None:
        names = [n for n, ok, _ in conv_eligibility(model, skip_first) if ok]
        why = "no nn.Conv2d with groups == 1 and a kernel larger than 1x1" + (
            " besides the first conv" if skip_first else "")
    else:
        candidates = [n for n, m in modules.items() if isinstance(m, nn.Conv2d) and m.groups == 1]
        chosen = _matcher(include, "include", candidates, modules)
        names = [n for n in candidates if n in chosen]
        why = "include selects no conv"
    if exclude is not None:
        candidates = [n for n, m in modules.items() if isinstance(m, nn.Conv2d) and m.groups == 1]
        dropped = _matcher(exclude, "exclude", candidates, modules)
        if names and all(n in dropped for n in names):
            why = "exclude removes every eligible conv"
        names = [n for n in names if n not in dropped]
    if not names:
        raise ValueError(f"the network has no convolution to decompose: {why}")
    return [(n, modules[n]) for n in names]  # type: ignore[misc]


def decompose(model: nn.Module, group_sizes: Sequence[int] | dict[str, Sequence[int]] | None = None,
              skip_first: bool = True, *, include: Selector = None, exclude: Selector = None,
              **btd_options: Any) -> nn.Module:
    """A deep copy of any CNN ``model`` whose eligible convs are :class:`GroSSConv2d` series.

    Eligible by default (``include=None``): every ``nn.Conv2d`` with ``groups == 1`` and a kernel larger
    than 1x1, except the network's first conv (``named_modules`` order; ``skip_first=False`` keeps it).
    ``include`` (an fnmatch pattern on layer names, a list of them, or ``(name, module) -> bool``)
    instead selects among *all* ``nn.Conv2d`` with ``groups == 1`` (1x1 and first conv included when
    named); ``exclude`` (same forms) then removes layers. A pattern matching no such conv raises
    ValueError, as does a network left with no conv to decompose.

    ``group_sizes``: None (powers of 2 dividing each layer's input channels: 48 channels give
    1, 2, 4, 8, 16, so the largest size is not the full channel count and no configuration reproduces
    that conv ungrouped), one sequence for every layer, or a dict from layer name to sequence.
    ``btd_options`` go to :func:`grosslib.btd`.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
    >>> gross = decompose(net, init="svd", max_iter=0)
    >>> [name for name, _ in decomposed_layers(gross)], gross[2].group_sizes
    (['2'], (1, 2, 4, 8))
    """
    decomposed = copy.deepcopy(model)
    convs = _selected_convs(decomposed, skip_first, include, exclude)
    names = [name for name, _ in convs]
    if isinstance(group_sizes, dict):
        unknown = set(group_sizes) - set(names)
        if unknown:
            raise ValueError(f"group_sizes names layers that are not decomposed: {sorted(unknown)}; "
                             f"decomposable: {names}")
    for name, conv in convs:
        sizes = group_sizes.get(name) if isinstance(group_sizes, dict) else group_sizes
        _set_submodule(decomposed, name, GroSSConv2d.from_conv(conv, sizes, **btd_options))
    return decomposed


def export(net: nn.Module, config: Sequence[int] | Mapping[str, int] | None = None) -> nn.Module:
    """A deep copy of GroSS network ``net`` with each GroSS layer replaced by its plain bottleneck.

    Each :class:`GroSSConv2d` becomes ``layer.to_bottleneck(s)`` (``nn.Sequential`` of three
    ``nn.Conv2d``) at ``config`` (None: the active configuration). ``net`` is not modified. Other
    modules keep their classes (a PaperNet stays a PaperNet).
    """
    exported = copy.deepcopy(net)
    layers = decomposed_layers(exported)
    sizes = get_config(exported) if config is None else as_config(exported, config)
    for (name, layer), s in zip(layers, sizes):
        _set_submodule(exported, name, layer.to_bottleneck(s))
    return exported


def fixed_config_network(net: nn.Module, config: Sequence[int], skip_first: bool = True,
                         **btd_options: Any) -> nn.Module:
    """``net`` decomposed at one group size per layer (a one-term series each): a fixed baseline."""
    convs = [name for name, ok, _ in conv_eligibility(net, skip_first) if ok]
    check_config_length(config, convs, "decomposable convs")
    return decompose(net, {name: (int(s),) for name, s in zip(convs, config)}, skip_first, **btd_options)


def check_config_length(config: Sequence[int], layer_names: Sequence[str],
                        what: str = "GroSS layers") -> None:
    """Raise ``ValueError`` unless ``config`` holds one group size per layer of ``layer_names``."""
    if len(config) != len(layer_names):
        raise ValueError(f"config {tuple(config)} has {len(config)} group sizes but the network has "
                         f"{len(layer_names)} {what} {list(layer_names)}")


def get_config(net: nn.Module) -> Config:
    """The active group size of every GroSS layer."""
    return tuple(layer.group_size for _, layer in decomposed_layers(net))


def sizes_in_layer_order(config: Sequence[int] | Mapping[str, int],
                         layer_names: Sequence[str]) -> Sequence[int]:
    """``config`` in the order of ``layer_names``: a ``{layer name: size}`` dict must name every layer and
    no other (ValueError otherwise); a sequence is returned as it is (its length is not checked here)."""
    if not isinstance(config, Mapping):
        return config
    names = list(layer_names)
    unknown = [n for n in config if n not in names]
    if unknown:
        raise ValueError(f"config names unknown GroSS layers {unknown}; valid names: {names}")
    missing = [n for n in names if n not in config]
    if missing:
        raise ValueError(f"config lacks GroSS layers {missing}; valid names: {names}")
    return [config[n] for n in names]


def as_config(net: nn.Module, config: Sequence[int] | Mapping[str, int]) -> Config:
    """``config`` (sizes in layer order, or ``{name: size}`` naming every GroSS layer) as a checked tuple."""
    layers = decomposed_layers(net)
    names = [name for name, _ in layers]
    config = sizes_in_layer_order(config, names)
    check_config_length(config, names)
    sizes = []
    for (name, layer), s in zip(layers, config):
        try:
            sizes.append(layer._check_size(s))
        except (ValueError, TypeError) as err:
            raise type(err)(f"config {tuple(config)}, GroSS layer {name}: {err}") from None
    return tuple(sizes)


def set_config(net: nn.Module, config: Sequence[int] | Mapping[str, int]) -> None:
    """Set the active group size of every GroSS layer: sizes in layer order or a dict (:func:`as_config`)."""
    layers = decomposed_layers(net)
    sizes = as_config(net, config)   # all checked before any is set
    for (_, layer), s in zip(layers, sizes):
        layer.group_size = s


def search_space(net: nn.Module) -> list[Config]:
    """Every configuration (one group size per GroSS layer), in lexicographic order."""
    layers = decomposed_layers(net)
    if not layers:
        raise ValueError("the network has no GroSS layer; decompose it first")
    return list(itertools.product(*(layer.group_sizes for _, layer in layers)))


def largest_config(net: nn.Module) -> Config:
    """The configuration with the largest group size in every layer."""
    return tuple(layer.group_sizes[-1] for _, layer in decomposed_layers(net))


def uniform_config(net: nn.Module, group_size: int) -> Config:
    """Every layer at ``group_size``, capped at each layer's largest size (the paper's 'fixed' nets)."""
    config = []
    for name, layer in decomposed_layers(net):
        s = min(group_size, layer.group_sizes[-1])
        if s not in layer.group_sizes:
            raise ValueError(f"group size {group_size} is not available in layer {name} {layer.group_sizes}")
        config.append(s)
    return tuple(config)


def config_name(config: Sequence[int]) -> str:
    """``(2, 32, 64) -> '2-32-64'`` as written in the paper."""
    return "-".join(str(int(s)) for s in config)


def collapse_to_config(decomposed: nn.Module, config: Sequence[int]) -> nn.Module:
    """A copy of a GroSS network keeping, in each layer, only the bottleneck at ``config``.

    Each GroSS layer becomes a one-term series whose weights are the merged weights at its size:
    before GroSS training these are exactly the per-size BTDs, so this builds the fixed baselines
    (and any searched configuration) from one decomposition without running BTD again.
    """
    collapsed = copy.deepcopy(decomposed)
    layers = decomposed_layers(collapsed)
    check_config_length(config, [name for name, _ in layers])
    for (name, layer), s in zip(layers, config):
        s = layer._check_size(s)
        single = GroSSConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, (s,),
                             stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                             padding_mode=layer.padding_mode, bias=layer.bias is not None,
                             device=layer.p_terms[0].device, dtype=layer.p_terms[0].dtype)
        with torch.no_grad():
            terms = (single.p_terms[0], single.r_terms[0], single.q_terms[0])
            for term, weight in zip(terms, layer.weights(s)):
                term.copy_(weight)
            if layer.bias is not None:
                single.bias.copy_(layer.bias)
        single.btd_errors = {s: layer.btd_errors[s]} if s in layer.btd_errors else {}
        _set_submodule(collapsed, name, single)
    return collapsed


# --------------------------------------------------------------------------------------------- inputs
def channel_stats(
    values: Sequence[float] | Tensor, channels: int, device: torch.device, name: str
) -> Tensor:
    t = torch.as_tensor(values, dtype=torch.float32, device=device).flatten()
    if t.numel() not in (1, channels):
        raise ValueError(f"{name} has {t.numel()} entries for {channels} channels")
    return t.expand(channels).reshape(channels, 1, 1)


def normalize(images: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """uint8 images (``C x H x W`` or ``N x C x H x W``) -> float32 ``(x / 255 - mean) / std``."""
    channels = images.shape[-3]
    m = channel_stats(mean, channels, images.device, "mean")
    s = channel_stats(std, channels, images.device, "std")
    return images.to(torch.float32).div_(255.0).sub_(m).div_(s)
