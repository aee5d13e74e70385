"""The checks behind notebooks 01-02: a BTD is a bottleneck (Table 1), Psi, the series, gradients, eq. 8.

Each function computes one check on given layers or weights (in float64, on random inputs from a
seed) and returns its numbers as a table or dict; each verdict the notebooks print comes from a
named function here (:func:`non_increasing`, :func:`exact_at_full_size`, :func:`psi_holds`,
:func:`reach_matches`, ...), all unit-tested, so the notebooks hold no logic of their own.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .bottleneck import Bottleneck, orthonormalize_blocks
from .btd import BTDResult, btd_series
from .psi import psi
from .sampling import READINGS, GroupSizeSampler
from .series import GroSSConv2d, default_group_sizes

__all__ = ["as_float64", "bottleneck_equivalence", "btd_error_table", "build_series", "conv_layers",
           "conv_table", "decompose_layers", "distributions_sum_to_one", "equivalence_table",
           "errors_by_layer", "exact_at_full_size", "expected_reach", "gradient_reach", "grouped_to_dense",
           "max_abs_difference", "non_increasing", "psi_check", "psi_holds", "random_grouped_weight",
           "reach_matches", "sampling_gap", "sampling_table", "series_prefix_check", "series_terms_table"]


# --------------------------------------------------------------------------------------------- notebook 01
def conv_table(convs: Mapping[str, nn.Module]) -> pd.DataFrame:
    """One row per conv: filter size, C_in, C_out, groups, bias, stride, padding (Table 1's columns)."""
    rows = []
    for label, conv in convs.items():
        if not isinstance(conv, nn.Conv2d):
            raise ValueError(f"{label}: expected nn.Conv2d, got {type(conv).__name__}")
        pair = lambda v: "x".join(str(int(x)) for x in v) if isinstance(v, tuple) else str(v)  # noqa: E731
        rows.append({"layer": label, "filter": pair(conv.kernel_size), "C_in": conv.in_channels,
                     "C_out": conv.out_channels, "groups": conv.groups, "bias": conv.bias is not None,
                     "stride": pair(conv.stride), "padding": pair(conv.padding),
                     "weight shape": tuple(conv.weight.shape)})
    return pd.DataFrame(rows).set_index("layer")


def conv_layers(net: nn.Module, names: Sequence[str] | None = None, *,
                skip_first: bool = True) -> dict[str, nn.Conv2d]:
    """The named convs of ``net`` (default: every conv but the first, as decomposed in the paper)."""
    convs = {name: m for name, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    if names is None:
        return dict(list(convs.items())[1:] if skip_first else convs.items())
    missing = [n for n in names if n not in convs]
    if missing:
        raise ValueError(f"no conv named {missing} in the network; convs: {list(convs)}")
    return {n: convs[n] for n in names}


def as_float64(conv: nn.Conv2d, device: str | torch.device = "cpu") -> nn.Conv2d:
    """A float64 copy of ``conv`` on ``device`` (exactness checks are done in double precision)."""
    return copy.deepcopy(conv).to(device=device, dtype=torch.float64)


def decompose_layers(convs: Mapping[str, nn.Conv2d], group_sizes: Mapping[str, Sequence[int]] | None = None,
                     **btd_options: Any) -> dict[str, dict[int, BTDResult]]:
    """:func:`grosslib.btd_series` of each conv (default sizes: powers of 2 up to C_in), float64."""
    results = {}
    for name, conv in convs.items():
        sizes = (group_sizes or {}).get(name) or default_group_sizes(conv.in_channels)
        results[name] = btd_series(conv.weight.detach(), sizes, **btd_options)
    return results


def btd_error_table(results: Mapping[str, Mapping[int, BTDResult]]) -> pd.DataFrame:
    """Long table: layer, group size, blocks R, relative error, block-norm ratio rho, steps, and whether the
    stopping rule was met."""
    rows = [{"layer": name, "group size": s, "blocks R": r.n_blocks, "error": r.error,
             "rho": r.block_norm_ratio, "steps": r.n_iter, "rule met": r.converged}
            for name, series in results.items() for s, r in sorted(series.items())]
    return pd.DataFrame(rows)


def non_increasing(values: Sequence[float], atol: float = 1e-12) -> bool:
    """True when every value is at most the previous one plus ``atol``."""
    return all(b <= a + atol for a, b in zip(values, values[1:]))


def _random_input(channels: int, input_hw: Sequence[int], batch: int, seed: int,
                  like: torch.Tensor) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, *input_hw, generator=generator, dtype=torch.float64)
    return x.to(like.device)


def bottleneck_equivalence(conv: nn.Conv2d, results: Mapping[int, BTDResult], *,
                           input_hw: Sequence[int] = (8, 8), batch: int = 2, seed: int = 0) -> pd.DataFrame:
    """Per group size: the Table 1 bottleneck against the dense conv with the reconstructed weight.

    All in float64 on ``conv``'s device. Columns: ``max abs error`` (bottleneck vs
    ``conv2d(x, W_hat, bias, ...)``, should be rounding only) and ``output error vs original``
    (relative Frobenius error of the bottleneck's output against the original conv's output).
    """
    conv64 = as_float64(conv, conv.weight.device)
    x = _random_input(conv.in_channels, input_hw, batch, seed, conv64.weight)
    rows = []
    with torch.no_grad():
        original = conv64(x)
        for s, result in sorted(results.items()):
            result = result.to(torch.float64, conv64.weight.device)
            bottleneck = Bottleneck(conv64, result)
            got = bottleneck(x)
            dense = F.conv2d(x, result.reconstruct(), conv64.bias, conv64.stride, conv64.padding,
                             conv64.dilation)
            rows.append({"group size": s, "groups": bottleneck[1].groups,
                         "max abs error": float((got - dense).abs().max()),
                         "output scale": float(dense.abs().max()),
                         "output error vs original": float((got - original).norm() / original.norm())})
    return pd.DataFrame(rows)


def equivalence_table(convs: Mapping[str, nn.Conv2d], results: Mapping[str, Mapping[int, BTDResult]],
                      **options: Any) -> pd.DataFrame:
    """:func:`bottleneck_equivalence` for every layer, as one long table with a ``layer`` column."""
    frames = [bottleneck_equivalence(conv, results[name], **options).assign(layer=name)
              for name, conv in convs.items()]
    table = pd.concat(frames, ignore_index=True)
    return table[["layer"] + [c for c in table.columns if c != "layer"]]


def errors_by_layer(errors: pd.DataFrame, column: str = "error") -> dict[str, list[float]]:
    """``{layer: [value at each group size, ascending]}`` from a long table."""
    ordered = errors.sort_values(["layer", "group size"])
    groups = ordered.groupby("layer", sort=False)
    return {str(name): [float(v) for v in group[column]] for name, group in groups}


# --------------------------------------------------------------------------------------------- notebook 02
def random_grouped_weight(channels: int, group_size: int, kernel_size: int = 3,
                          seed: int = 0) -> torch.Tensor:
    """A float64 Gaussian weight ``(t, g, k, k)`` of a grouped conv with ``t / g`` groups."""
    generator = torch.Generator().manual_seed(seed)
    shape = (channels, group_size, kernel_size, kernel_size)
    return torch.randn(shape, generator=generator, dtype=torch.float64)


def grouped_to_dense(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """The ungrouped ``(t, t, k, k)`` weight equal to a grouped one: ``Psi(g -> t)`` (block diagonal)."""
    return psi(weight, group_size, weight.shape[0])


def psi_check(weight: torch.Tensor, from_group_size: int, to_group_size: int, *,
              input_hw: Sequence[int] = (8, 8), batch: int = 2, seed: int = 0) -> dict[str, Any]:
    """Check eq. (5) and the algebra of Psi on ``weight`` (t, g, k, k), float64.

    Returns the max abs differences of: the grouped convs before/after expansion (``conv``), the
    composition ``Psi(h->t) o Psi(g->h)`` against ``Psi(g->t)`` (``composition``), linearity
    (``linearity``); the fraction of zeros added; and whether the gradient of a loss through Psi
    lands exactly on the original entries (``gradient``).
    """
    t, g, h = weight.shape[0], from_group_size, to_group_size
    weight = weight.detach().to(torch.float64)
    x = _random_input(t, input_hw, batch, seed, weight)
    pad = weight.shape[-1] // 2
    expanded = psi(weight, g, h)
    conv_error = (F.conv2d(x, weight, padding=pad, groups=t // g)
                  - F.conv2d(x, expanded, padding=pad, groups=t // h)).abs().max()
    composition = (psi(expanded, h, t) - psi(weight, g, t)).abs().max()
    other = random_grouped_weight(t, g, weight.shape[-1], seed + 1)
    combined = psi(2.0 * weight - 3.0 * other, g, h)
    linearity = (combined - (2.0 * expanded - 3.0 * psi(other, g, h))).abs().max()
    leaf = weight.clone().requires_grad_(True)
    coefficients = torch.randn(expanded.shape, generator=torch.Generator().manual_seed(seed + 2),
                               dtype=torch.float64)
    (psi(leaf, g, h) * coefficients).sum().backward()
    gathered = psi(torch.ones_like(weight), g, h).bool()
    gradient_ok = torch.equal(leaf.grad, coefficients[gathered].reshape(weight.shape))
    return {"t": t, "g": g, "h": h, "conv": float(conv_error), "composition": float(composition),
            "linearity": float(linearity), "gradient": bool(gradient_ok),
            "zeros_added": float(1.0 - weight.numel() / expanded.numel()),
            "nonzeros_equal": int(torch.count_nonzero(expanded)) == int(torch.count_nonzero(weight))}


def build_series(conv: nn.Conv2d, group_sizes: Sequence[int] | None = None,
                 **btd_options: Any) -> tuple[GroSSConv2d, dict[int, BTDResult]]:
    """A float64 :class:`GroSSConv2d` of ``conv`` and the per-size BTDs it was built from."""
    conv64 = as_float64(conv, conv.weight.device)
    sizes = tuple(group_sizes) if group_sizes else default_group_sizes(conv.in_channels)
    results = btd_series(conv64.weight.detach(), sizes, **btd_options)
    return GroSSConv2d.from_btd(conv64, results), results


def series_terms_table(layer: GroSSConv2d) -> pd.DataFrame:
    """Per term i: its group size, the shapes of ``p_i, r_i, q_i`` and their Frobenius norms."""
    rows = []
    for i, s in enumerate(layer.group_sizes):
        p, r, q = (t[i].detach() for t in (layer.p_terms, layer.r_terms, layer.q_terms))
        rows.append({"term i": i + 1, "group size": s, "r_i shape": tuple(r.shape),
                     "|p_i|": float(p.norm()), "|r_i|": float(r.norm()), "|q_i|": float(q.norm())})
    return pd.DataFrame(rows).set_index("term i")


def series_prefix_check(layer: GroSSConv2d, results: Mapping[int, BTDResult], *,
                        input_hw: Sequence[int] = (8, 8), batch: int = 2, seed: int = 0) -> pd.DataFrame:
    """Per group size s_k: the merged ``(P, R, Q)`` of terms 1..k against the BTD of size s_k.

    Columns are max abs differences of ``P``, ``R``, ``Q`` and of the layer's output against the
    bottleneck built directly from that BTD.
    """
    ref = layer.p_terms[0]
    x = _random_input(layer.in_channels, input_hw, batch, seed, ref)
    rows = []
    with torch.no_grad():
        for k, s in enumerate(layer.group_sizes, start=1):
            # the bottleneck of that BTD as grosslib.Bottleneck builds it (orthonormal block factors)
            target = [w.to(ref) for w in orthonormalize_blocks(results[s]).bottleneck_weights()]
            merged = layer.weights(s)
            middle = layer.grouped_conv(F.conv2d(x, target[0]), target[1], s)
            expected = F.conv2d(middle, target[2], layer.bias)
            diffs = [float((a - b).abs().max()) for a, b in zip(merged, target)]
            rows.append({"group size": s, "terms summed": k, "max |P - P_k|": diffs[0],
                         "max |R - R_k|": diffs[1], "max |Q - Q_k|": diffs[2],
                         "max output error": float((layer(x, s) - expected).abs().max())})
    return pd.DataFrame(rows)


def gradient_reach(layer: GroSSConv2d, *, input_hw: Sequence[int] = (8, 8), batch: int = 2,
                   seed: int = 0) -> pd.DataFrame:
    """Which series terms receive a non-zero gradient when the layer runs at each group size.

    Rows: the active group size; columns: the group size of term i; True when any of
    ``p_i, r_i, q_i`` gets a non-zero gradient from a loss on the layer's output.
    """
    x = _random_input(layer.in_channels, input_hw, batch, seed, layer.p_terms[0])
    rows = {}
    for s in layer.group_sizes:
        layer.zero_grad(set_to_none=True)
        layer(x, s).square().mean().backward()
        reached = []
        for i in range(len(layer.group_sizes)):
            grads = [t.grad for t in (layer.p_terms[i], layer.r_terms[i], layer.q_terms[i])]
            reached.append(any(g is not None and bool(g.abs().max() > 0) for g in grads))
        rows[s] = reached
    layer.zero_grad(set_to_none=True)
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(layer.group_sizes))
    frame.index.name, frame.columns.name = "active group size", "term of group size"
    return frame


def expected_reach(group_sizes: Sequence[int]) -> pd.DataFrame:
    """The reach the method predicts: at ``s_k`` exactly the terms 1..k (lower triangle)."""
    sizes = list(group_sizes)
    frame = pd.DataFrame([[j <= i for j in range(len(sizes))] for i in range(len(sizes))],
                         index=sizes, columns=sizes)
    frame.index.name, frame.columns.name = "active group size", "term of group size"
    return frame


def sampling_table(group_sizes: Sequence[int], alphas: Sequence[float], *, n_samples: int = 20_000,
                   seed: int = 0, readings: Sequence[str] = READINGS) -> pd.DataFrame:
    """Eq. (8) for each reading and alpha: exact ``p(s_i)`` and the frequency in ``n_samples`` seeded
    draws (columns reading, alpha, i, group size, probability, empirical)."""
    rows = []
    for reading in readings:
        for alpha in alphas:
            sampler = GroupSizeSampler(group_sizes, alpha=alpha, generator=seed, reading=reading)
            draws = pd.Series(sampler.sample_many(n_samples)).value_counts()
            for i, (s, p) in enumerate(zip(sampler.group_sizes, sampler.probs.tolist()), start=1):
                rows.append({"reading": reading, "alpha": alpha, "i": i, "group size": s, "probability": p,
                             "empirical": int(draws.get(s, 0)) / n_samples})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- verdicts
def exact_at_full_size(convs: Mapping[str, nn.Conv2d], errors_per_layer: Mapping[str, Sequence[float]],
                       tol: float = 1e-8) -> dict[str, bool]:
    """Per square layer (C_in == C_out): is its BTD at the largest group size (s = t) exact to ``tol``?

    At s = t the BTD is one rank-(t, t) Tucker-2 block, which represents any square weight exactly.
    """
    return {name: float(errors_per_layer[name][-1]) < tol
            for name, conv in convs.items() if conv.in_channels == conv.out_channels}


def psi_holds(result: Mapping[str, Any], tol: float = 1e-12) -> bool:
    """Every property :func:`psi_check` measured holds: convs equal, exact composition, linear, gradient."""
    return bool(result["conv"] < tol and result["composition"] == 0.0 and result["linearity"] < tol
                and result["gradient"])


def max_abs_difference(table: pd.DataFrame, exclude: Sequence[str] = ("group size", "terms summed")) -> float:
    """The largest entry of a table of differences (:func:`series_prefix_check`), other columns excluded."""
    return float(table.drop(columns=[c for c in exclude if c in table.columns]).to_numpy().max())


def reach_matches(reach: pd.DataFrame) -> bool:
    """Whether :func:`gradient_reach` equals what the method predicts (:func:`expected_reach`)."""
    return bool(reach.equals(expected_reach(list(reach.columns))))


def sampling_gap(table: pd.DataFrame) -> float:
    """The largest |p(s_i) - empirical frequency| of :func:`sampling_table`."""
    return float((table["probability"] - table["empirical"]).abs().max())


def distributions_sum_to_one(table: pd.DataFrame, tol: float = 1e-12) -> bool:
    """Whether eq. 8's probabilities of each (reading, alpha) in :func:`sampling_table` sum to 1 within
    ``tol``."""
    keys = [k for k in ("reading", "alpha") if k in table.columns]
    return bool((table.groupby(keys)["probability"].sum() - 1.0).abs().max() < tol)
