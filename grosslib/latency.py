"""Measured latency of GroSS configurations: ``latency(config) ~= rest + sum_l t_l(s_l)``.

A configuration's cost in MACs (:mod:`grosslib.macs`) is a proxy; what a deployment pays is time. This
module times each GroSS layer, exported as its plain bottleneck of three ``nn.Conv2d``
(:meth:`~grosslib.GroSSConv2d.to_bottleneck`), at every group size, on the device, batch size and thread
count of interest, and predicts the latency of any configuration as a sum of table entries:

* :func:`measure_latency`: the median wall time of one forward of a module (eval mode, under
  ``torch.inference_mode``, synchronised on CUDA).
* :func:`latency_table` -> :class:`LatencyTable`: ``t_l(s)`` for every GroSS layer ``l`` and group size
  ``s``, and ``rest``, the time of everything else; :meth:`LatencyTable.predict` sums them.
* :func:`validate_latency` / :func:`latency_summary`: predicted vs measured end-to-end latency of
  exported configurations, Spearman rank correlation and relative errors.

How ``rest`` is estimated
-------------------------
The network is exported at a few *reference configurations* (by default three: every layer at its
smallest size, every layer at its middle size and every layer at its largest size), each is timed end to
end, and ``rest`` is the median over them of ``measured - sum_l t_l(s_l)``. Of the two obvious
estimates this is the one that fits the quantity predicted: it is calibrated on whole-network
forwards, so it absorbs what timing a layer alone leaves out or adds (the layers' caches and allocator
state inside a network, per-call overheads), and the median over configurations spanning the space
makes it robust to one noisy measurement and centred on the range of configurations rather than fitted
to one end of it. The alternative, timing the network with every GroSS layer replaced by a cheap
stand-in of the right output shape, measures the stand-in as well (an allocation per layer) and none of
those interaction effects, so its errors do not cancel. ``rest`` can come out slightly negative on a
network whose non-GroSS part is nearly free; it is kept as measured.

Timings are noisy on a shared machine; the tests check structure and arithmetic, never times.
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .models import check_config_length, config_name, decomposed_layers, export
from .search import check_config_sizes
from .series import GroSSConv2d

__all__ = ["LatencyTable", "latency_summary", "latency_table", "measure_latency", "validate_latency"]

ConfigLike = Sequence[int] | Mapping[str, int]


# ---------------------------------------------------------------------------------------------------------
# Checks and helpers
# ---------------------------------------------------------------------------------------------------------


def _check_counts(batch_size: int, warmup: int, repeats: int) -> None:
    for name, value, low in (("batch_size", batch_size, 1), ("repeats", repeats, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _sample_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(n) for n in input_shape)
    if not shape or any(n < 1 for n in shape):
        raise ValueError(f"input_shape must be a non-empty shape of positive sizes (one sample, no batch "
                         f"dimension), got {tuple(input_shape)}")
    return shape


def _float_dtype(module: nn.Module) -> torch.dtype:
    ref = next((t for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()), None)
    return ref.dtype if ref is not None else torch.get_default_dtype()


def _gross_layers(net: nn.Module) -> list[tuple[str, GroSSConv2d]]:
    layers = decomposed_layers(net)
    if not layers:
        raise ValueError(f"{type(net).__name__} has no GroSS layer (GroSSConv2d); decompose it first")
    return layers


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------


def _time_forward(module: nn.Module, x: torch.Tensor, warmup: int, repeats: int) -> float:
    """Median milliseconds of ``module(x)``; ``module`` is already on ``x``'s device and in eval mode."""
    device = x.device
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            module(x)
        _synchronize(device)
        for _ in range(repeats):
            start = time.perf_counter()
            module(x)
            _synchronize(device)
            times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def measure_latency(module: nn.Module, input_shape: Sequence[int], *, device: str | torch.device = "cpu",
                    batch_size: int = 1, warmup: int = 3, repeats: int = 10) -> float:
    """Median milliseconds of one forward of ``module`` on a random ``(batch_size, *input_shape)`` input.

    ``input_shape`` is the shape of one sample (e.g. ``(C, H, W)``). The module is moved to ``device``
    (in place, as ``nn.Module.to`` does) and run in eval mode under ``torch.inference_mode``; its training
    flag is restored afterwards. ``warmup`` untimed forwards precede ``repeats`` timed ones; on CUDA each
    timed forward is followed by ``torch.cuda.synchronize``.
    """
    _check_counts(batch_size, warmup, repeats)
    shape = _sample_shape(input_shape)
    device = torch.device(device)
    module.to(device)
    x = torch.randn((batch_size, *shape), dtype=_float_dtype(module), device=device)
    was_training = module.training
    module.eval()
    try:
        return _time_forward(module, x, warmup, repeats)
    finally:
        module.train(was_training)


# ---------------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyTable:
    """Per-layer latencies of a GroSS network: ``predict(config) = rest_ms + sum_l layers[l][s_l]``.

    Attributes
    ----------
    layers : per GroSS layer name (in :func:`grosslib.models.decomposed_layers` order), ``{group size:
        milliseconds}`` of its exported bottleneck (summed over its calls in one forward).
    rest_ms : milliseconds of everything but the GroSS layers (see the module docstring).
    device, batch_size, threads : where and how it was measured (``threads``: ``torch.get_num_threads()``).
    input_shape : the shape of one input sample.
    rest_samples : ``measured - sum of layers`` at each reference configuration (``rest_ms`` is their median).
    """

    layers: dict[str, dict[int, float]]
    rest_ms: float
    device: str = "cpu"
    batch_size: int = 1
    threads: int = 1
    input_shape: tuple[int, ...] = ()
    rest_samples: dict[str, float] = field(default_factory=dict)

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The GroSS layers, in configuration order."""
        return tuple(self.layers)

    def _sizes(self, config: ConfigLike) -> list[int]:
        """``config`` as one checked group size per layer, in order."""
        names = self.layer_names
        if isinstance(config, Mapping):
            unknown = sorted(set(config) - set(names), key=str)
            if unknown:
                raise ValueError(f"config names unknown layers {unknown}; the table's layers are "
                                 f"{list(names)}")
            missing = [n for n in names if n not in config]
            if missing:
                raise ValueError(f"config gives no group size for layers {missing}")
            sizes = [config[n] for n in names]
        else:
            sizes = list(config)
            check_config_length(sizes, names)
        for name, s in zip(names, sizes):
            if isinstance(s, bool) or s not in self.layers[name]:
                raise ValueError(f"group size {s!r} is not in layer {name}'s table "
                                 f"{tuple(self.layers[name])}")
        return [int(s) for s in sizes]

    def predict(self, config: ConfigLike) -> float:
        """Predicted milliseconds of a forward at ``config`` (a tuple in layer order or ``{name: size}``)."""
        sizes = self._sizes(config)
        return self.rest_ms + sum(self.layers[n][s] for n, s in zip(self.layer_names, sizes))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (group sizes as string keys); :meth:`from_dict` inverts it."""
        return {"layers": {name: {str(s): float(ms) for s, ms in sizes.items()}
                           for name, sizes in self.layers.items()},
                "rest_ms": float(self.rest_ms), "device": self.device, "batch_size": int(self.batch_size),
                "threads": int(self.threads), "input_shape": list(self.input_shape),
                "rest_samples": {k: float(v) for k, v in self.rest_samples.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        """The table saved by :meth:`to_dict`."""
        return cls(layers={name: {int(s): float(ms) for s, ms in sizes.items()}
                           for name, sizes in data["layers"].items()},
                   rest_ms=float(data["rest_ms"]), device=str(data.get("device", "cpu")),
                   batch_size=int(data.get("batch_size", 1)), threads=int(data.get("threads", 1)),
                   input_shape=tuple(int(n) for n in data.get("input_shape", ())),
                   rest_samples={str(k): float(v) for k, v in data.get("rest_samples", {}).items()})


def _reference_configs(layers: list[tuple[str, GroSSConv2d]]) -> list[tuple[int, ...]]:
    """Every layer at its smallest, middle and largest size (duplicates dropped)."""
    configs: list[tuple[int, ...]] = []
    for pick in (lambda sizes: sizes[0], lambda sizes: sizes[len(sizes) // 2], lambda sizes: sizes[-1]):
        config = tuple(pick(layer.group_sizes) for _, layer in layers)
        if config not in configs:
            configs.append(config)
    return configs


def _layer_inputs(net: nn.Module, layers: list[tuple[str, GroSSConv2d]], shape: tuple[int, ...],
                  device: torch.device) -> dict[str, list[tuple[int, ...]]]:
    """Each GroSS layer's input sample shape in each of its calls, from one hooked forward of ``net``."""
    seen: dict[str, list[tuple[int, ...]]] = {name: [] for name, _ in layers}

    def hook(name: str):
        def record(_module: nn.Module, args: tuple[Any, ...]) -> None:
            seen[name].append(tuple(args[0].shape[1:]))
        return record

    handles = [layer.register_forward_pre_hook(hook(name)) for name, layer in layers]
    was_training = net.training
    try:
        net.eval()
        with torch.inference_mode():
            net(torch.zeros((1, *shape), dtype=_float_dtype(net), device=device))
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)
    unused = [name for name, calls in seen.items() if not calls]
    if unused:
        raise ValueError(f"GroSS layers {unused} are not called in a forward pass of the network")
    return seen


def latency_table(net: nn.Module, input_shape: Sequence[int], *, device: str | torch.device = "cpu",
                  batch_size: int = 1, warmup: int = 3, repeats: int = 10,
                  reference_configs: Sequence[Sequence[int]] | None = None,
                  progress: bool = True) -> LatencyTable:
    """Time every GroSS layer of ``net`` at every group size, and the rest of the network.

    Parameters
    ----------
    net : a GroSS network (e.g. :func:`grosslib.models.decompose`'s result); not modified (it is moved to
        ``device`` for one hooked forward that records each GroSS layer's input shape).
    input_shape : the shape of one input sample, e.g. ``(1, 32, 32)``.
    device, batch_size, warmup, repeats : as in :func:`measure_latency`, for every timing.
    reference_configs : the configurations timed end to end to estimate ``rest`` (the median of
        ``measured - sum of layers``); default every layer at its smallest, middle and largest size.
    progress : show a tqdm progress bar over the timings.

    Each layer is timed as ``layer.to_bottleneck(s)`` on a random input of its recorded shape and
    ``batch_size`` (a layer called several times in one forward: the sum over its calls).

    Raises
    ------
    ValueError : no GroSS layer, a GroSS layer never called, ``batch_size`` or ``repeats`` < 1, a bad shape.
    """
    _check_counts(batch_size, warmup, repeats)
    shape = _sample_shape(input_shape)
    layers = _gross_layers(net)
    device = torch.device(device)
    references = [tuple(c) for c in (reference_configs if reference_configs is not None
                                     else _reference_configs(layers))]
    if not references:
        raise ValueError("reference_configs is empty: rest needs at least one end-to-end timing")
    for config in references:
        check_config_sizes(layers, config, "reference config")
    net.to(device)
    inputs = _layer_inputs(net, layers, shape, device)
    options = dict(device=device, batch_size=batch_size, warmup=warmup, repeats=repeats)
    total = sum(len(layer.group_sizes) * len(inputs[name]) for name, layer in layers) + len(references)
    table: dict[str, dict[int, float]] = {}
    with tqdm(total=total, disable=not progress, unit="timing", dynamic_ncols=True,
              desc="latency table") as bar:
        for name, layer in layers:
            table[name] = {}
            for s in layer.group_sizes:
                bottleneck = layer.to_bottleneck(s)
                ms = 0.0
                for call_shape in inputs[name]:
                    ms += measure_latency(bottleneck, call_shape, **options)
                    bar.update()
                table[name][s] = ms
        samples: dict[str, float] = {}
        for config in references:
            measured = measure_latency(export(net, config), shape, **options)
            samples[config_name(config)] = measured - sum(table[name][s]
                                                          for (name, _), s in zip(layers, config))
            bar.update()
    return LatencyTable(layers=table, rest_ms=statistics.median(samples.values()), device=str(device),
                        batch_size=batch_size, threads=torch.get_num_threads(), input_shape=shape,
                        rest_samples=samples)


# ---------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------


def validate_latency(net: nn.Module, table: LatencyTable, configs: Sequence[ConfigLike],
                     input_shape: Sequence[int] | None = None, *, device: str | torch.device | None = None,
                     batch_size: int | None = None, warmup: int = 3, repeats: int = 10,
                     progress: bool = True) -> pd.DataFrame:
    """Predicted vs measured end-to-end latency of ``net`` exported at each of ``configs``.

    ``input_shape``, ``device`` and ``batch_size`` default to the table's. Returns one row per
    configuration (in order): ``config`` (e.g. ``'2-4-8'``), ``s_<layer>`` per GroSS layer,
    ``predicted_ms``, ``measured_ms`` and ``rel_error = (predicted - measured) / measured``.
    """
    layers = _gross_layers(net)
    names = tuple(name for name, _ in layers)
    if names != table.layer_names:
        raise ValueError(f"the network's GroSS layers {list(names)} are not the table's "
                         f"{list(table.layer_names)}")
    shape = _sample_shape(input_shape if input_shape is not None else table.input_shape)
    device = torch.device(device if device is not None else table.device)
    batch_size = table.batch_size if batch_size is None else batch_size
    _check_counts(batch_size, warmup, repeats)
    checked = [table._sizes(config) for config in configs]        # all checked before any timing
    rows = []
    for sizes in tqdm(checked, disable=not progress, unit="config", dynamic_ncols=True, desc="validate"):
        measured = measure_latency(export(net, sizes), shape, device=device, batch_size=batch_size,
                                   warmup=warmup, repeats=repeats)
        predicted = table.predict(sizes)
        rows.append({"config": config_name(sizes), **{f"s_{n}": s for n, s in zip(names, sizes)},
                     "predicted_ms": predicted, "measured_ms": measured,
                     "rel_error": (predicted - measured) / measured if measured > 0 else math.nan})
    columns = ["config", *(f"s_{n}" for n in names), "predicted_ms", "measured_ms", "rel_error"]
    return pd.DataFrame(rows, columns=columns)


def latency_summary(frame: pd.DataFrame) -> dict[str, float]:
    """Agreement of :func:`validate_latency`'s predictions with the measurements.

    ``n``; ``spearman``: the rank correlation of predicted and measured (Pearson correlation of their
    average ranks; NaN for fewer than two rows or constant values); ``mean_rel_error`` and
    ``max_rel_error``: mean and max of ``|predicted - measured| / measured``.
    """
    n = len(frame)
    if n >= 2:
        spearman = float(frame["predicted_ms"].rank().corr(frame["measured_ms"].rank()))
    else:
        spearman = math.nan
    errors = (frame["predicted_ms"] - frame["measured_ms"]).abs() / frame["measured_ms"]
    return {"n": float(n), "spearman": spearman,
            "mean_rel_error": float(errors.mean()) if n else math.nan,
            "max_rel_error": float(errors.max()) if n else math.nan}
