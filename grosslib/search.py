"""Exhaustive search over the configurations of a GroSS network (docs/method.md, "Search").

:func:`evaluate_all` scores every configuration (one group size per GroSS layer) on a data split;
:func:`pareto_front` keeps the configurations no other beats on both cost and accuracy;
:func:`select` / :func:`select_top` pick the most accurate configurations under a MAC budget, e.g.
the cost of the fixed 4 or fixed 16 network, as in the paper's Table 3.

Shared-prefix evaluation
------------------------
PaperNet after :func:`grosslib.models.decompose` is an ``nn.Sequential`` whose GroSS layers are direct
children. Cut it before each GroSS layer: a prefix (up to the first GroSS layer) and one segment per
GroSS layer (from it up to the next one, the last to the end). The segment of layer ``j`` only depends
on the group sizes of layers ``1..j``, so the configurations form a tree: per batch, the prefix runs
once, segment 1 once per ``s_1``, segment 2 once per ``(s_1, s_2)``, and only the last segment once
per configuration. The tree is walked depth first, so only one activation per depth is alive. Each
GroSS layer's merged bottleneck weights are computed once per group size (:meth:`GroSSConv2d.weights`)
instead of once per forward. Every op is the one the plain forward runs, on the same inputs, so logits,
predictions, accuracy and loss are bitwise identical to evaluating each configuration on its own
(``shared_prefix=False``); the tests check it. (On CUDA this assumes deterministic kernels, as any
bitwise comparison does; forward hooks on GroSS layers are bypassed by the shared path.)
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .macs import config_params, mac_table
from .models import (
    Config,
    check_config_length,
    config_name,
    decomposed_layers,
    get_config,
    normalize,
    search_space,
    set_config,
)
from .series import GroSSConv2d

__all__ = ["check_config_sizes", "evaluate_all", "pareto_front", "segment_network", "select", "select_top",
           "select_under_budgets"]

Data = Any  # a grosslib.data.Split, an (images, labels) tuple, or an iterable of (images, labels) batches
Batches = Callable[[], Iterator[tuple[Tensor, Tensor]]]


# ---------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------


def _is_batch_iterable(data: Data) -> bool:
    """Whether ``data`` is an iterable of ``(images, labels)`` batches (a DataLoader, a list of batches)."""
    if hasattr(data, "images") and hasattr(data, "labels"):
        return False
    pair = isinstance(data, (tuple, list)) and len(data) == 2
    if pair and all(isinstance(t, (Tensor, np.ndarray)) for t in data):
        return False  # (images, labels)
    if isinstance(data, (Tensor, np.ndarray, str, bytes)):
        return False
    return hasattr(data, "__iter__")


def _check_images(images: Tensor, labels: Tensor, mean: Any, std: Any) -> None:
    if images.dim() != 4 or labels.dim() != 1 or len(images) != len(labels):
        raise ValueError(f"expected images N x C x H x W and labels N, got {tuple(images.shape)} and "
                         f"{tuple(labels.shape)}")
    if images.dtype == torch.uint8 and (mean is None or std is None):
        raise ValueError("uint8 images need mean and std to be normalised (e.g. splits.mean, splits.std)")
    if not images.is_floating_point() and images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 or floating point, got {images.dtype}")


def _iter_batches(data: Any, device: torch.device, dtype: torch.dtype, mean: Any, std: Any,
                  channels_last: bool, seen: list[int]) -> Iterator[tuple[Tensor, Tensor]]:
    """Normalised batches of an iterable of ``(images, labels)``; ``seen[0]`` counts the labels."""
    for item in data:
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise TypeError(f"each batch must be an (images, labels) pair, got {type(item).__name__}")
        images, labels = torch.as_tensor(item[0]), torch.as_tensor(item[1]).long()
        _check_images(images, labels, mean, std)
        seen[0] += len(labels)
        yield from _batches(images, labels, max(len(labels), 1), device, dtype, mean, std, channels_last)


def _unpack(data: Data) -> tuple[Tensor, Tensor]:
    if hasattr(data, "images") and hasattr(data, "labels"):
        return data.images, data.labels
    if isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = data
        images, labels = torch.as_tensor(images), torch.as_tensor(labels)
        if images.dim() != 4 or labels.dim() != 1 or len(images) != len(labels):
            raise ValueError(f"expected images N x C x H x W and labels N, got {tuple(images.shape)} and "
                             f"{tuple(labels.shape)}")
        return images, labels.long()
    raise TypeError(f"data must be a grosslib.data.Split or an (images, labels) tuple, "
                    f"got {type(data).__name__}")


def _batches(images: Tensor, labels: Tensor, batch_size: int, device: torch.device, dtype: torch.dtype,
             mean: Any, std: Any, channels_last: bool) -> Iterator[tuple[Tensor, Tensor]]:
    """Normalised ``(x, y)`` batches on ``device``; uint8 images are normalised, float ones kept."""
    for start in range(0, len(labels), batch_size):
        x = images[start:start + batch_size].to(device, non_blocking=True)
        y = labels[start:start + batch_size].to(device, non_blocking=True)
        if x.dtype == torch.uint8:
            x = normalize(x, mean, std).to(dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, y


# ---------------------------------------------------------------------------------------------------------
# Configuration tree and network segments
# ---------------------------------------------------------------------------------------------------------


def check_config_sizes(layers: Sequence[tuple[str, GroSSConv2d]], config: Sequence[int],
                       what: str = "config") -> None:
    """Raise ``ValueError`` unless ``config`` has one group size per layer of ``layers``, each in its series.

    ``layers``: ``(name, layer)`` pairs (:func:`grosslib.models.decomposed_layers`); ``what`` starts the
    message (``"config (1, 3): group size 3 is not in layer conv3's series (1, 2, 4)"``).
    """
    check_config_length(config, [name for name, _ in layers])
    for (name, layer), s in zip(layers, config):
        if s not in layer.group_sizes:
            raise ValueError(f"{what} {tuple(config)}: group size {s!r} is not in layer {name}'s series "
                             f"{layer.group_sizes}")


def _check_configs(net: nn.Module, configs: Sequence[Sequence[int]] | None) -> list[Config]:
    layers = decomposed_layers(net)
    if configs is None:
        return search_space(net)
    out = [tuple(int(s) for s in c) for c in configs]
    if not out:
        raise ValueError("configs is empty")
    for config in out:
        check_config_sizes(layers, config)
    if len(set(out)) != len(out):
        seen: set[Config] = set()
        dup = next(c for c in out if c in seen or seen.add(c))  # type: ignore[func-returns-value]
        raise ValueError(f"config {dup} appears more than once in configs")
    return out


def _build_trie(configs: list[Config]) -> dict[int, Any]:
    """Nested dicts ``{s_1: {s_2: ... {s_L: index into configs}}}``, children in first-seen order."""
    root: dict[int, Any] = {}
    for index, config in enumerate(configs):
        node = root
        for s in config[:-1]:
            node = node.setdefault(s, {})
        node[config[-1]] = index
    return root


def segment_network(net: nn.Module) -> tuple[list[nn.Module], list[tuple[GroSSConv2d, list[nn.Module]]]]:
    """Cut an ``nn.Sequential`` before each of its GroSS layers.

    Returns
    -------
    prefix : the children before the first GroSS layer.
    segments : per GroSS layer, ``(layer, the children after it up to the next GroSS layer)``.

    Raises
    ------
    ValueError : ``net`` is not an ``nn.Sequential`` whose GroSS layers are all direct children.
    """
    layers = decomposed_layers(net)
    if not layers:
        raise ValueError("the network has no GroSS layer; decompose it first")
    children = list(net.children()) if isinstance(net, nn.Sequential) else []
    direct = [m for m in children if isinstance(m, GroSSConv2d)]
    if len(direct) != len(layers):
        raise ValueError("shared-prefix evaluation needs an nn.Sequential whose GroSS layers are all direct "
                         "children; use shared_prefix=False for this network")
    prefix: list[nn.Module] = []
    segments: list[tuple[GroSSConv2d, list[nn.Module]]] = []
    for module in children:
        if isinstance(module, GroSSConv2d):
            segments.append((module, []))
        elif segments:
            segments[-1][1].append(module)
        else:
            prefix.append(module)
    return prefix, segments


def _gross_runner(layer: GroSSConv2d, s: int) -> Callable[[Tensor], Tensor]:
    """``x -> layer(x, group_size=s)`` with the merged weights computed once (the same ops as forward)."""
    if type(layer).forward is not GroSSConv2d.forward:  # a subclass may compute differently: call it
        return lambda x: layer(x, group_size=s)
    first, grouped, last = layer.weights(s)
    bias = layer.bias

    def run(x: Tensor) -> Tensor:
        x = F.conv2d(x, first)
        x = layer.grouped_conv(x, grouped, s)
        return F.conv2d(x, last, bias)
    return run


# ---------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------


class _Scores:
    """Per-configuration sums over batches, kept on the device (no host sync per batch)."""

    def __init__(self, n: int, device: torch.device, keep_predictions: bool) -> None:
        self.correct = torch.zeros(n, dtype=torch.int64, device=device)
        self.loss = torch.zeros(n, dtype=torch.float64, device=device)
        self.predictions: list[list[Tensor]] | None = [[] for _ in range(n)] if keep_predictions else None
        self.nonfinite = torch.zeros(n, dtype=torch.bool, device=device)

    def add(self, index: int, logits: Tensor, y: Tensor) -> None:
        self.nonfinite[index] |= ~torch.isfinite(logits).all()     # checked once at the end: no sync here
        pred = logits.argmax(1)
        self.correct[index] += (pred == y).sum()
        self.loss[index] += F.cross_entropy(logits, y, reduction="sum").double()
        if self.predictions is not None:
            self.predictions[index].append(pred.cpu())


def _evaluate_shared(net: nn.Module, configs: list[Config], batches: Batches,
                     scores: _Scores, bar: tqdm) -> None:
    prefix, segments = segment_network(net)
    trie = _build_trie(configs)
    depth_sizes: list[set[int]] = [set() for _ in segments]
    for config in configs:
        for j, s in enumerate(config):
            depth_sizes[j].add(s)
    runners = [{s: _gross_runner(layer, s) for s in sorted(sizes)}
               for (layer, _), sizes in zip(segments, depth_sizes)]
    last = len(segments) - 1

    def descend(depth: int, node: dict[int, Any], h: Tensor, y: Tensor) -> None:
        rest = segments[depth][1]
        for s, child in node.items():
            out = runners[depth][s](h)
            for module in rest:
                out = module(out)
            if depth == last:
                scores.add(child, out, y)
                bar.update(1)
            else:
                descend(depth + 1, child, out, y)
            del out  # free this depth's activation before computing the next one

    for x, y in batches():
        for module in prefix:
            x = module(x)
        descend(0, trie, x, y)


def _evaluate_naive(net: nn.Module, configs: list[Config], batches: Batches,
                    scores: _Scores, bar: tqdm) -> None:
    for x, y in batches():  # batch-major like the shared path: each batch is normalised once
        for index, config in enumerate(configs):
            set_config(net, config)
            scores.add(index, net(x.clone()), y)  # a copy: the network may modify its input in place
            bar.update(1)


def _net_device_dtype(net: nn.Module) -> tuple[torch.device, torch.dtype]:
    ref = next((t for t in [*net.parameters(), *net.buffers()] if t.is_floating_point()), None)
    if ref is None:
        return torch.device("cpu"), torch.get_default_dtype()
    return ref.device, ref.dtype


def evaluate_all(net: nn.Module, data: Data, configs: Sequence[Sequence[int]] | None = None,
                 shared_prefix: bool | None = None, batch_size: int = 1000,
                 device: torch.device | str | None = None,
                 mean: Sequence[float] | Tensor | None = None, std: Sequence[float] | Tensor | None = None,
                 progress: bool = True, return_predictions: bool = False, channels_last: bool = False,
                 ) -> pd.DataFrame | tuple[pd.DataFrame, dict[Config, Tensor]]:
    """Accuracy, loss and cost of every configuration of a GroSS network on one data split.

    Parameters
    ----------
    net : a network with GroSS layers; for ``shared_prefix`` an ``nn.Sequential`` whose GroSS layers are
        direct children (:func:`grosslib.models.decompose` of PaperNet). Evaluated in eval mode under
        ``torch.inference_mode``; its modes and active configuration are restored afterwards.
    data : a :class:`grosslib.data.Split`, an ``(images N x C x H x W, labels N)`` tuple, or an iterable
        of ``(images, labels)`` batches (e.g. a ``torch.utils.data.DataLoader``; extra items per batch are
        ignored). An iterable is consumed exactly once per call (both modes run batch-major), so a
        one-shot iterator works for one call; pass a re-iterable (a DataLoader, a list) to call again.
        Its batches are used as they come (``batch_size`` does not apply); ``n`` is the total of labels.
        uint8 images are normalised per batch with ``mean`` / ``std`` (:func:`grosslib.models.normalize`,
        then cast to the network's dtype); float images are used as they are.
    configs : configurations to evaluate (any subset, any order); default :func:`search_space` (all).
    shared_prefix : share the computation of common configuration prefixes (see the module docstring);
        ``False`` runs each configuration's full forward on its own (any network). The results are
        identical. ``None`` (default): shared when :func:`segment_network` can cut ``net``, else plain;
        ``True`` raises on a network it cannot cut. The mode used is ``df.attrs['evaluation']``
        (``'shared_prefix'`` or ``'plain'``).
    batch_size : images per forward pass.
    device : where to evaluate; default the network's device. A network elsewhere is deep-copied there
        (the original is left where it is). Batches are moved one at a time.
    mean, std : per-channel normalisation (0..1 scale); required for uint8 images.
    progress : show a tqdm progress bar over the (configuration, batch) evaluations.
    return_predictions : also return ``{config: predicted labels (CPU int64, N)}``.
    channels_last : feed the batches in ``torch.channels_last`` layout (both paths alike). About twice as
        fast on CPU (oneDNN's NHWC convolutions and pooling); results may differ from NCHW in the last bits.

    Returns
    -------
    DataFrame with one row per configuration in ``configs`` order and columns ``config`` (tuple),
    ``name`` ('2-32-64'), ``s_<layer>`` (one per GroSS layer), ``macs`` (per image, at the data's
    resolution), ``params``, ``accuracy`` (in [0, 1]), ``loss`` (mean cross-entropy), ``correct`` (int);
    ``df.attrs['num_images']`` is the number of images, ``df.attrs['evaluation']`` the mode. With
    ``return_predictions``, ``(df, predictions)``.

    Raises
    ------
    ValueError : empty data, uint8 images without mean/std, bad or duplicate configurations, bad
        batch size, or ``shared_prefix`` on a network it cannot segment.
    """
    iterable = _is_batch_iterable(data)
    if not iterable:
        images, labels = _unpack(data)
        if len(labels) == 0:
            raise ValueError("data holds no images")
        _check_images(images, labels, mean, std)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    config_list = _check_configs(net, configs)
    if shared_prefix is None:
        try:
            segment_network(net)
            shared_prefix = True
        except ValueError:
            shared_prefix = False
    elif shared_prefix:
        segment_network(net)  # fail early on networks that cannot be segmented

    net_device, dtype = _net_device_dtype(net)
    device = torch.device(device) if device is not None else net_device
    if device != net_device and not (device.type == net_device.type and device.index is None):
        net = copy.deepcopy(net).to(device)
    layer_names = [name for name, _ in decomposed_layers(net)]
    seen = [0]
    sample_shape: list[tuple[int, ...]] = []
    if iterable:
        n_batches = len(data) if hasattr(data, "__len__") else None

        def batches() -> Iterator[tuple[Tensor, Tensor]]:
            for x, y in _iter_batches(data, device, dtype, mean, std, channels_last, seen):
                if not sample_shape:
                    sample_shape.append(tuple(x.shape[1:]))
                yield x, y
    else:
        n_batches = -(-len(labels) // batch_size)
        seen[0] = len(labels)
        sample_shape.append(tuple(images.shape[1:]))

        def batches() -> Iterator[tuple[Tensor, Tensor]]:
            return _batches(images, labels, batch_size, device, dtype, mean, std, channels_last)

    original_config = get_config(net)
    modes = {m: m.training for m in net.modules()}
    scores = _Scores(len(config_list), device, return_predictions)
    bar = tqdm(total=None if n_batches is None else len(config_list) * n_batches, disable=not progress,
               unit="eval", dynamic_ncols=True,
               desc=f"{len(config_list)} configs x {'?' if n_batches is None else n_batches} batches")
    try:
        net.eval()
        with torch.inference_mode():
            evaluate = _evaluate_shared if shared_prefix else _evaluate_naive
            evaluate(net, config_list, batches, scores, bar)
            n = seen[0]
            if n == 0:
                raise ValueError("data holds no images")
            table = mac_table(net, sample_shape[0], batched=False)
            correct = scores.correct.cpu().tolist()
            loss = (scores.loss / n).cpu().tolist()
            bad = [config_name(c) for c, flag in zip(config_list, scores.nonfinite.cpu().tolist()) if flag]
    finally:
        bar.close()
        for module, mode in modes.items():
            module.training = mode
        set_config(net, original_config)

    if bad:
        shown = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise FloatingPointError(f"NaN or infinite outputs at {len(bad)} configuration(s) ({shown}): the "
                                 "network's weights diverged; refusing to score them")
    rows: dict[str, list[Any]] = {"config": config_list, "name": [config_name(c) for c in config_list]}
    for j, name in enumerate(layer_names):
        rows["s_" + name.replace(".", "_")] = [c[j] for c in config_list]
    rows["macs"] = [table.macs(c) for c in config_list]
    rows["params"] = [config_params(net, c) for c in config_list]
    rows["accuracy"] = [c / n for c in correct]
    rows["loss"] = loss
    rows["correct"] = correct
    df = pd.DataFrame(rows)
    df.attrs["num_images"] = n
    df.attrs["evaluation"] = "shared_prefix" if shared_prefix else "plain"
    if not return_predictions:
        return df
    assert scores.predictions is not None
    predictions = {c: torch.cat(p) for c, p in zip(config_list, scores.predictions)}
    return df, predictions


# ---------------------------------------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------------------------------------


def _finite_column(df: pd.DataFrame, column: str) -> np.ndarray:
    if column not in df.columns:
        raise ValueError(f"no column {column!r} in the results (columns: {list(df.columns)})")
    values = df[column].to_numpy(dtype=np.float64)
    if np.isnan(values).any():
        raise ValueError(f"column {column!r} contains NaN")
    return values


def pareto_front(df: pd.DataFrame, cost: str = "macs", score: str = "accuracy") -> pd.DataFrame:
    """The rows no other row dominates, sorted by ``cost`` (then ``score`` descending).

    Row ``a`` dominates row ``b`` when ``a[cost] <= b[cost]`` and ``a[score] >= b[score]`` with at least
    one strict; rows equal in both are kept together. Lower cost and higher score are better.
    """
    c, s = _finite_column(df, cost), _finite_column(df, score)
    if len(df) == 0:
        return df.copy()
    order = np.lexsort((-s, c))  # by cost, then score descending (stable)
    c, s = c[order], s[order]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])  # first row of each equal-cost group
    group = np.cumsum(np.r_[True, c[1:] != c[:-1]]) - 1
    group_best = s[starts]  # highest score of each cost group
    best_before = np.r_[-np.inf, np.maximum.accumulate(group_best)[:-1]]  # best score at strictly lower cost
    keep = (s == group_best[group]) & (s > best_before[group])
    return df.iloc[order[keep]]


def _budget(df: pd.DataFrame, max_macs: float | None, budget_config: Sequence[int] | None) -> float:
    if (max_macs is None) == (budget_config is None):
        raise ValueError("give exactly one of max_macs and budget_config")
    if max_macs is not None:
        return float(max_macs)
    target = tuple(int(s) for s in budget_config)  # type: ignore[union-attr]
    match = df[df["config"].map(lambda c: tuple(c) == target)]
    if match.empty:
        raise ValueError(f"budget_config {target} is not in the results")
    return float(match["macs"].iloc[0])


def select_top(df: pd.DataFrame, *, max_macs: float | None = None, budget_config: Sequence[int] | None = None,
               score: str = "accuracy", k: int = 2) -> pd.DataFrame:
    """The ``k`` best rows with ``macs <= max_macs`` (or ``<=`` the MACs of ``budget_config``).

    Best: highest ``score``, then fewer MACs, then the lexicographically smaller config. Fewer than ``k``
    rows come back if fewer fit. The paper reports the top 2 under the fixed 4 and fixed 16 budgets.

    Raises
    ------
    ValueError : both or neither of ``max_macs`` / ``budget_config``, ``budget_config`` not in ``df``,
        no row within the budget, or ``k < 1``.
    """
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    limit = _budget(df, max_macs, budget_config)
    scores = _finite_column(df, score)
    fits = np.flatnonzero(df["macs"].to_numpy(dtype=np.float64) <= limit)
    if len(fits) == 0:
        cheapest = df["macs"].min() if len(df) else None
        raise ValueError(f"no configuration fits within {limit:g} MACs (the cheapest costs {cheapest})")
    macs = df["macs"].to_numpy()
    configs = df["config"].tolist()
    ranked = sorted(fits, key=lambda i: (-scores[i], macs[i], tuple(configs[i])))
    return df.iloc[ranked[:k]]


def select(df: pd.DataFrame, *, max_macs: float | None = None, budget_config: Sequence[int] | None = None,
           score: str = "accuracy") -> pd.Series:
    """The best row within a MAC budget: :func:`select_top` with ``k=1``, as a Series."""
    return select_top(df, max_macs=max_macs, budget_config=budget_config, score=score, k=1).iloc[0]


def select_under_budgets(evaluations: pd.DataFrame, budgets: Mapping[int, Sequence[int]],
                         k: int = 2) -> pd.DataFrame:
    """The ``k`` most accurate configurations within the MACs of each budget configuration.

    ``evaluations``: :meth:`Experiment.evaluate_configs`' table (config, name, macs, accuracy).
    ``budgets``: ``{label: configuration}``, e.g. the fixed-4 and fixed-16 configurations. Ranking as in
    :func:`grosslib.search.select_top` (accuracy, then fewer MACs, then the smaller configuration).
    Rows: budget, budget config, budget macs, rank (1..k), config, name, macs, accuracy.
    """
    frames = []
    for label, config in budgets.items():
        target = tuple(int(s) for s in config)
        top = select_top(evaluations, budget_config=target, k=k)
        budget_macs = int(evaluations.loc[evaluations["config"].map(tuple) == target, "macs"].iloc[0])
        frames.append(pd.DataFrame({"budget": label, "budget config": [target] * len(top),
                                    "budget macs": budget_macs, "rank": range(1, len(top) + 1),
                                    "config": [tuple(c) for c in top["config"]], "name": list(top["name"]),
                                    "macs": list(top["macs"]), "accuracy": list(top["accuracy"])}))
    return pd.concat(frames, ignore_index=True)
