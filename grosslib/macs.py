"""Multiply-accumulates (MACs) and parameter counts, docs/method.md's convention.

Only convolutions and linear layers count: a conv costs ``H_out * W_out * C_out * (C_in / groups) * kh * kw``
MACs, a linear layer ``in * out`` (times any leading dimensions other than the batch); biases, ReLU,
pooling and dropout cost nothing. A :class:`~grosslib.GroSSConv2d` costs what its bottleneck costs at
its active group size (:meth:`~grosslib.GroSSConv2d.macs`). Every count is for one input sample.
These are exactly half of ``torch.utils.flop_counter.FlopCounterMode``'s FLOPs, which count
``2 * MACs`` for ``aten.convolution`` and ``aten.mm/addmm`` and ignore biases (tests check it on
every configuration of PaperNet).

* :func:`count_macs` / :func:`count_params`: any network, measured with forward hooks on one forward
  pass of a zero input, at the GroSS layers' active group sizes.
* :func:`mac_table` / :func:`config_macs` / :func:`config_params`: the cost of any configuration of a
  GroSS network without a forward pass. One pass (cached per network and input shape) records each
  GroSS layer's input resolution and the fixed cost of the other layers; a configuration (a tuple in
  layer order or a ``{layer name: size}`` dict) then costs a few dictionary lookups.

PaperNet (3 x 32 x 32 input unless noted). "fixed s" is conv2-4 decomposed at group size s each
(:func:`grosslib.models.uniform_config`, capped at a layer's input channels; conv4 also runs at 32):

=========================  =========  ==========
network                    MACs       parameters
=========================  =========  ==========
full, 3 x 32 x 32 input    5,081,600  133,930
full, 1 x 32 x 32 input    4,491,776  133,354
fixed 1 (1-1-1)            1,906,176  83,882
fixed 4 (4-4-4)            2,210,304  87,338
fixed 16 (16-16-16)        3,426,816  101,162
fixed 32 (32-32-32)        5,048,832  119,594
=========================  =========  ==========

A GroSS layer's parameters are its exported bottleneck's (``P``, ``R``, ``Q`` and the conv's bias), not
its series terms.
"""
from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .models import check_config_length, sizes_in_layer_order
from .series import GroSSConv2d

ConfigLike = Sequence[int] | Mapping[str, int]

__all__ = ["MacTable", "cached_mac_table", "clear_mac_cache", "config_macs", "config_params", "count_macs",
           "count_params", "mac_table"]


# ---------------------------------------------------------------------------------------------------------
# Per-module costs
# ---------------------------------------------------------------------------------------------------------


def _conv_macs(module: nn.modules.conv._ConvNd, output: torch.Tensor) -> int:
    """MACs of one call of a (non-transposed) convolution over its whole (batched) output."""
    return output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)


def _linear_macs(module: nn.Linear, output: torch.Tensor) -> int:
    """MACs of one call of a linear layer: ``in * out`` per row of the (batched) input."""
    return output.numel() * module.in_features


def _gross_call_size(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """The ``group_size`` passed to a GroSSConv2d call, if any (else its active size is used)."""
    if "group_size" in kwargs:
        return kwargs["group_size"]
    return args[1] if len(args) > 1 else None


def _gross_layers(model: nn.Module) -> dict[str, GroSSConv2d]:
    return {name: m for name, m in model.named_modules() if isinstance(m, GroSSConv2d)}


def _inside(name: str, prefixes: Sequence[str]) -> bool:
    """Whether module ``name`` is a strict descendant of one of the modules ``prefixes``."""
    return any(name.startswith(p + ".") if p else name != "" for p in prefixes)


def _sample_shape(input_shape: Sequence[int], batched: bool | None) -> tuple[int, ...]:
    shape = tuple(int(n) for n in input_shape)
    if not shape or any(n < 1 for n in shape):
        raise ValueError(f"input_shape must be a non-empty shape of positive sizes, got {tuple(input_shape)}")
    if batched is None:
        batched = len(shape) in (2, 4)
    if batched:
        if len(shape) < 2:
            raise ValueError(f"a batched input_shape needs a batch dimension and a sample shape, got {shape}")
        shape = shape[1:]
    return shape


def _zero_input(model: nn.Module, sample_shape: tuple[int, ...]) -> torch.Tensor:
    ref = next((t for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None else torch.get_default_dtype()
    return torch.zeros((1, *sample_shape), device=device, dtype=dtype)


@dataclass
class _Trace:
    """What one hooked forward pass saw: fixed MACs and the input sizes of each GroSS layer call."""

    fixed: int
    gross_macs: int
    gross_inputs: dict[str, list[tuple[int, int]]]


def _trace(model: nn.Module, sample_shape: tuple[int, ...]) -> _Trace:
    """Run ``model`` once on a zero batch of one sample, in eval mode, recording every counted call."""
    gross = _gross_layers(model)
    trace = _Trace(0, 0, {name: [] for name in gross})
    handles = []

    def counted(fn: Any) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            trace.fixed += fn(module, output)
        return hook

    def gross_hook(name: str) -> Any:
        def hook(module: GroSSConv2d, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            x = args[0] if args else kwargs["x"]
            hw = (int(x.shape[-2]), int(x.shape[-1]))
            calls = math.prod(x.shape[:-3])
            trace.gross_macs += calls * module.macs(_gross_call_size(args, kwargs), hw)
            trace.gross_inputs[name].extend([hw] * calls)
        return hook

    modes = {m: m.training for m in model.modules()}
    try:
        for name, module in model.named_modules():
            if _inside(name, list(gross)):
                continue
            if isinstance(module, GroSSConv2d):
                handles.append(module.register_forward_hook(gross_hook(name), with_kwargs=True))
            elif isinstance(module, nn.modules.conv._ConvNd):
                if module.transposed:
                    raise ValueError(f"transposed convolution {name!r}: not covered by the MAC convention")
                handles.append(module.register_forward_hook(counted(_conv_macs)))
            elif isinstance(module, nn.Linear):
                handles.append(module.register_forward_hook(counted(_linear_macs)))
        model.eval()
        with torch.no_grad():
            model(_zero_input(model, sample_shape))
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode
    return trace


def count_macs(model: nn.Module, input_shape: Sequence[int], *, batched: bool | None = None) -> int:
    """MACs of one forward pass of ``model`` for one input sample.

    Counts every call of ``nn.Conv1d/2d/3d``, ``nn.Linear`` and :class:`~grosslib.GroSSConv2d` (at the
    group size it runs with, by default its active one; its internal convs are not counted again) on a
    zero input; the model runs once in eval mode, under ``torch.no_grad``, and its modes are restored.
    Functional convs and matmuls outside these modules are not seen.

    Parameters
    ----------
    model : the network.
    input_shape : shape of the input: ``(C, H, W)`` or ``(features,)`` for one sample; ``(N, C, H, W)``
        or ``(N, features)`` with a batch dimension (dropped: the count is per sample). Other ranks are
        one sample, so a linear layer on ``(L, features)`` costs ``L * in * out``.
    batched : override the rule above: whether ``input_shape[0]`` is the batch dimension.

    Raises
    ------
    ValueError : bad shape, or a transposed convolution.
    """
    trace = _trace(model, _sample_shape(input_shape, batched))
    return trace.fixed + trace.gross_macs


def _fixed_params(model: nn.Module) -> int:
    """Parameters outside the GroSS layers (shared tensors counted once)."""
    gross = list(_gross_layers(model))
    seen: set[int] = set()
    total = 0
    for name, param in model.named_parameters(remove_duplicate=False):
        module_name = name.rpartition(".")[0]
        inside = any(not g or module_name == g or module_name.startswith(g + ".") for g in gross)
        if inside or id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
    return total


def count_params(model: nn.Module) -> int:
    """Parameters of ``model`` as deployed: a GroSS layer counts its bottleneck at its active size.

    Every other parameter counts once (``model.parameters()`` semantics); a :class:`GroSSConv2d` counts
    :meth:`~grosslib.GroSSConv2d.num_params` (``P``, ``R``, ``Q`` and its bias), not its series terms.
    """
    return _fixed_params(model) + sum(layer.num_params(layer.group_size)
                                      for layer in _gross_layers(model).values())


# ---------------------------------------------------------------------------------------------------------
# Analytic per-configuration costs
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MacTable:
    """Costs of every configuration of a GroSS network, for one input shape.

    Attributes
    ----------
    input_shape : the shape of one input sample.
    layer_names : the GroSS layers, in :func:`grosslib.models.decomposed_layers` order.
    input_hw : each GroSS layer's input resolution (one entry per call in a forward pass).
    fixed : MACs of everything but the GroSS layers.
    layer_macs : per GroSS layer, ``{group size: MACs}`` (summed over its calls).
    fixed_params : parameters of everything but the GroSS layers.
    layer_params : per GroSS layer, ``{group size: parameters}``.
    """

    input_shape: tuple[int, ...]
    layer_names: tuple[str, ...]
    input_hw: tuple[tuple[tuple[int, int], ...], ...]
    fixed: int
    layer_macs: tuple[dict[int, int], ...]
    fixed_params: int
    layer_params: tuple[dict[int, int], ...]

    def _check(self, config: Sequence[int]) -> None:
        check_config_length(config, self.layer_names)
        for name, sizes, s in zip(self.layer_names, self.layer_macs, config):
            if s not in sizes:
                raise ValueError(f"group size {s!r} is not in layer {name}'s series {tuple(sizes)}")

    def macs(self, config: ConfigLike) -> int:
        """MACs of the network at ``config`` per input sample.

        ``config``: one group size per GroSS layer in :attr:`layer_names` order, or ``{layer name: size}``
        naming every layer.
        """
        config = sizes_in_layer_order(config, self.layer_names)
        try:
            return self.fixed + sum(table[s] for table, s in zip(self.layer_macs, config, strict=True))
        except (KeyError, ValueError, TypeError):
            self._check(config)
            raise

    def params(self, config: ConfigLike) -> int:
        """Parameters of the network exported at ``config`` (a tuple or a dict, as in :meth:`macs`)."""
        config = sizes_in_layer_order(config, self.layer_names)
        try:
            return self.fixed_params + sum(table[s]
                                           for table, s in zip(self.layer_params, config, strict=True))
        except (KeyError, ValueError, TypeError):
            self._check(config)
            raise


def mac_table(net: nn.Module, input_shape: Sequence[int], *, batched: bool | None = None) -> MacTable:
    """Build the :class:`MacTable` of ``net`` with one hooked forward pass (see :func:`count_macs`).

    GroSS layers must run at their active group size (the configuration); each one's MACs are
    ``layer.macs(s, input_hw)`` at the input size seen in the pass.
    """
    sample_shape = _sample_shape(input_shape, batched)
    trace = _trace(net, sample_shape)
    gross = _gross_layers(net)
    names = tuple(gross)
    return MacTable(
        input_shape=sample_shape,
        layer_names=names,
        input_hw=tuple(tuple(trace.gross_inputs[n]) for n in names),
        fixed=trace.fixed,
        layer_macs=tuple({s: sum(gross[n].macs(s, hw) for hw in trace.gross_inputs[n])
                          for s in gross[n].group_sizes} for n in names),
        fixed_params=_fixed_params(net),
        layer_params=tuple({s: gross[n].num_params(s) for s in gross[n].group_sizes} for n in names),
    )


_Fingerprint = tuple[Any, ...]
_ParamTable = tuple[int, tuple[dict[int, int], ...]]
_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], tuple[_Fingerprint, MacTable]]] = (
    weakref.WeakKeyDictionary())


_PARAM_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[_Fingerprint, _ParamTable]] = (
    weakref.WeakKeyDictionary())


def _fingerprint(net: nn.Module) -> _Fingerprint:
    """Cheap identity of the network's direct children: replacing one invalidates the cache.

    Walking the whole module tree costs tens of microseconds per call, more than a table lookup;
    after replacing a *nested* module call :func:`clear_mac_cache`.
    """
    return tuple(map(id, net._modules.values()))


def _default_input_shape(net: nn.Module, input_hw: Sequence[int] | None) -> tuple[int, ...]:
    channels = getattr(net, "in_channels", None)
    if channels is None:
        first = next((m for m in net.modules()
                      if isinstance(m, (nn.modules.conv._ConvNd, GroSSConv2d))), None)
        if first is None:
            raise ValueError("cannot infer the input channels: the network has no convolution; use mac_table")
        channels = first.in_channels
    if input_hw is None:
        size = getattr(net, "image_size", None)
        if size is None:
            raise ValueError(f"{type(net).__name__} has no image_size attribute: pass input_hw=(H, W)")
        input_hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(input_hw) != 2:
        raise ValueError(f"input_hw must be (H, W), got {tuple(input_hw)}")
    return (int(channels), int(input_hw[0]), int(input_hw[1]))


def cached_mac_table(net: nn.Module, input_hw: Sequence[int] | None = None) -> MacTable:
    """:func:`mac_table` of ``net`` for ``(C, *input_hw)`` inputs, cached per network and input size.

    ``C`` is ``net.in_channels`` or the first conv's input channels; ``input_hw`` defaults to
    ``net.image_size`` (PaperNet: 32 x 32). The cache is rebuilt when one of ``net``'s direct
    children is replaced; after changing a nested module call :func:`clear_mac_cache`.
    """
    shape = _default_input_shape(net, input_hw)
    per_net = _CACHE.setdefault(net, {})
    fingerprint = _fingerprint(net)
    hit = per_net.get(shape)
    if hit is None or hit[0] != fingerprint:
        hit = (fingerprint, mac_table(net, shape, batched=False))
        per_net[shape] = hit
    return hit[1]


def clear_mac_cache(net: nn.Module | None = None) -> None:
    """Forget the cached tables of ``net`` (of every network if None)."""
    for cache in (_CACHE, _PARAM_CACHE):
        if net is None:
            cache.clear()
        else:
            cache.pop(net, None)


def config_macs(net: nn.Module, config: ConfigLike, input_hw: Sequence[int] | None = None) -> int:
    """MACs of GroSS network ``net`` at ``config`` per input image, without a forward pass.

    Parameters
    ----------
    net : a network with GroSS layers (e.g. :func:`grosslib.models.decompose`'s result).
    config : one group size per GroSS layer (in :func:`grosslib.models.decomposed_layers` order), or
        ``{layer name: size}`` naming every GroSS layer.
    input_hw : input resolution; default ``net.image_size`` (required for networks without one, e.g. a
        torchvision ResNet). Channels: ``net.in_channels`` or the first conv's.

    Raises
    ------
    ValueError : a bad configuration (wrong length, unknown or missing layer names, a group size a layer
        does not have), or no ``input_hw`` for a network without ``image_size``.
    """
    return cached_mac_table(net, input_hw).macs(config)


def _param_table(net: nn.Module) -> _ParamTable:
    """``(fixed parameters, per GroSS layer {group size: parameters})``, cached per network."""
    fingerprint = _fingerprint(net)
    hit = _PARAM_CACHE.get(net)
    if hit is None or hit[0] != fingerprint:
        layers = _gross_layers(net).values()
        hit = (fingerprint, (_fixed_params(net), tuple({s: layer.num_params(s) for s in layer.group_sizes}
                                                       for layer in layers)))
        _PARAM_CACHE[net] = hit
    return hit[1]


def config_params(net: nn.Module, config: ConfigLike) -> int:
    """Parameters of GroSS network ``net`` exported at ``config`` (see :func:`count_params`); cached.

    ``config``: one group size per GroSS layer, or ``{layer name: size}`` (as in :func:`config_macs`).
    """
    fixed, tables = _param_table(net)
    names = list(_gross_layers(net))
    config = sizes_in_layer_order(config, names)
    check_config_length(config, names)
    try:
        return fixed + sum(table[s] for table, s in zip(tables, config))
    except (KeyError, TypeError):
        bad = next((i, s) for i, (table, s) in enumerate(zip(tables, config)) if s not in table)
        raise ValueError(f"group size {bad[1]!r} is not in GroSS layer {names[bad[0]]}'s series "
                         f"{tuple(tables[bad[0]])}") from None
