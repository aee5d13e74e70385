"""Helpers for the numbered notebooks: run directories, metrics files, presets, and the checks of 01-02.

Every notebook resolves its ``run_dir`` / ``figures_dir`` parameters with :func:`resolve_run_dir` and
:func:`resolve_figures_dir`, and ends by calling :func:`write_metrics`, which writes
``<run_dir>/metrics/NN_name.json`` (read back by :mod:`grosslib.pipeline`). The analysis functions
below hold the logic of notebooks 01 (BTD == bottleneck) and 02 (Psi, the series, gradients,
sampling), so the notebooks only call them and plot.
"""
from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import paths
from .bottleneck import Bottleneck, orthonormalize_blocks
from .btd import BTDResult, btd_series
from .models import PaperNet, build_papernet
from .psi import psi
from .runinfo import environment_info
from .sampling import GroupSizeSampler
from .series import GroSSConv2d, default_group_sizes

# --------------------------------------------------------------------------------------------- presets
#: Settings of notebooks 01-02 besides the BTD options (which come from
#: :data:`grosslib.presets.PRESET_BTD_OPTIONS`): seeded draws for the sampling plot, and torch threads
#: (BTD of these small weights is fastest single-threaded: more threads only add overhead).
NOTEBOOK_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"n_samples": 2_000, "num_threads": 1},
    "quick": {"n_samples": 20_000, "num_threads": 1},
    "paper": {"n_samples": 100_000, "num_threads": 1},
}

#: ``(in_channels, num_classes)`` of each dataset (as delivered by :func:`grosslib.data.load_dataset`).
DATASET_SHAPES: dict[str, tuple[int, int]] = {"digits": (3, 10), "cifar10": (3, 10), "fashion-mnist": (1, 10)}


def preset_settings(preset: str, **overrides: Any) -> dict[str, Any]:
    """Settings of notebooks 01-02 for ``preset``, with every non-None override applied.

    Keys: ``btd_tol``, ``btd_max_iter`` (from :data:`grosslib.presets.PRESET_BTD_OPTIONS`; btd's
    default 500,000 steps where the preset sets none), ``n_samples``, ``num_threads``.
    """
    with warnings.catch_warnings():  # tqdm.auto (imported by grosslib.train) warns without ipywidgets
        warnings.filterwarnings("ignore", message="IProgress not found")
        from .presets import PRESET_BTD_OPTIONS

    if preset not in NOTEBOOK_PRESETS or preset not in PRESET_BTD_OPTIONS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(NOTEBOOK_PRESETS)}")
    btd_options = PRESET_BTD_OPTIONS[preset]
    settings = {"btd_tol": btd_options.get("tol", 1e-6), "btd_max_iter": btd_options.get("max_iter", 500_000),
                **NOTEBOOK_PRESETS[preset]}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return settings


def dataset_shape(dataset: str) -> tuple[int, int]:
    """``(in_channels, num_classes)`` of a dataset name, without loading it."""
    key = dataset.lower()
    if key not in DATASET_SHAPES:
        raise ValueError(f"unknown dataset {dataset!r}; valid names: {', '.join(DATASET_SHAPES)}")
    return DATASET_SHAPES[key]


# --------------------------------------------------------------------------------------------- locations
def resolve_run_dir(run_dir: str | Path | None) -> Path:
    """The run directory (created); empty/None means ``runs/interactive`` for interactive use."""
    path = Path(run_dir).expanduser() if run_dir else paths.RUNS_DIR / "interactive"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def resolve_figures_dir(figures_dir: str | Path | None) -> Path:
    """The figures directory; empty/None means :func:`grosslib.paths.figures_dir` (``$GROSS_FIGURES``)."""
    path = Path(figures_dir).expanduser() if figures_dir else paths.figures_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_device(device: str | torch.device) -> torch.device:
    """``'auto'`` picks CUDA when available; anything else is passed to ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return resolved


def resolve_checkpoint(checkpoint: str | Path | None, run_dir: str | Path | None = None) -> Path | None:
    """The checkpoint file if it exists (relative paths are tried in ``run_dir`` first), else None."""
    if not checkpoint:
        return None
    path = Path(checkpoint).expanduser()
    candidates = [path]
    if run_dir and not path.is_absolute():
        candidates.insert(0, Path(run_dir) / path)
    return next((c.resolve() for c in candidates if c.is_file()), None)


def load_network(checkpoint: str | Path | None, *, dataset: str = "digits", seed: int = 0,
                 run_dir: str | Path | None = None) -> tuple[PaperNet, str]:
    """A trained PaperNet from ``checkpoint`` if that file exists, else a freshly initialised one.

    The checkpoint may be a state dict or a dict holding one under ``state_dict``/``model``/
    ``model_state_dict``; the input channels and classes are read from its shapes. Returns the
    network (eval mode, CPU) and a description of where it came from.
    """
    path = resolve_checkpoint(checkpoint, run_dir)
    if path is None:
        in_channels, num_classes = dataset_shape(dataset)
        note = f"freshly initialised PaperNet (seed {seed}, {in_channels} input channels)"
        if checkpoint:
            note += f"; checkpoint {str(checkpoint)!r} not found"
        return build_papernet(in_channels, num_classes, seed).eval(), note
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or "conv1.weight" not in state or "fc2.weight" not in state:
        raise ValueError(f"{path} does not hold a PaperNet state dict (no conv1.weight / fc2.weight)")
    net = PaperNet(int(state["conv1.weight"].shape[1]), int(state["fc2.weight"].shape[0]))
    net.load_state_dict(state)
    return net.eval(), f"trained PaperNet from {path}"


# --------------------------------------------------------------------------------------------- metrics
def to_jsonable(obj: Any) -> Any:
    """Convert tensors, numpy values, DataFrames, Paths, dataclasses and non-str keys for ``json``."""
    if isinstance(obj, pd.DataFrame):
        return to_jsonable(obj.reset_index().to_dict(orient="records") if obj.index.name else
                           obj.to_dict(orient="records"))
    if isinstance(obj, pd.Series):
        return to_jsonable(obj.to_dict())
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else str(value)
    if isinstance(obj, (Path, torch.device, torch.dtype)):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if obj is None or isinstance(obj, str):
        return obj
    return repr(obj)


def metrics_path(run_dir: str | Path, number: int, name: str) -> Path:
    """``<run_dir>/metrics/NN_name.json``."""
    return Path(run_dir) / "metrics" / f"{int(number):02d}_{name}.json"


def write_metrics(run_dir: str | Path, number: int, name: str, metrics: Mapping[str, Any], *,
                  parameters: Mapping[str, Any] | None = None, device: str | torch.device | None = None,
                  key_metrics: Mapping[str, Any] | None = None) -> Path:
    """Write a notebook's metrics with its parameters, versions and device; return the path.

    ``key_metrics`` (a few scalars) is what the pipeline's summary table shows. A file that already
    holds the same metrics and parameters is left as it is: its environment and time are those of the
    run that produced them (re-executing a committed notebook does not rewrite its record).
    """
    path = metrics_path(run_dir, number, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    parameters = {key: _repo_relative(value) for key, value in (parameters or {}).items()}
    results = to_jsonable({"notebook": f"{int(number):02d}_{name}", "metrics": metrics,
                           "key_metrics": key_metrics or {}, "parameters": parameters})
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except ValueError:
            stored = {}
        same = json.dumps(results, sort_keys=True) == json.dumps({key: stored.get(key) for key in results},
                                                                 sort_keys=True)    # NaN-safe comparison
        if same:
            return path
    record = {**results, "environment": to_jsonable(environment_info(device)),
              "written": _dt.datetime.now().isoformat(timespec="seconds")}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    return path


def _repo_relative(value: Any) -> Any:
    """A path (or path string) inside the repository as a repository-relative string; else ``value``."""
    if not isinstance(value, (str, Path)) or not Path(value).is_absolute():
        return value
    try:
        return Path(value).resolve().relative_to(paths.REPO_ROOT).as_posix()
    except ValueError:
        return value


def read_metrics(path: str | Path) -> dict[str, Any]:
    """A metrics file written by :func:`write_metrics`."""
    return json.loads(Path(path).read_text())


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
    """Long table: layer, group size, blocks R, relative error, steps, converged."""
    rows = [{"layer": name, "group size": s, "blocks R": r.n_blocks, "error": r.error,
             "steps": r.n_iter, "converged": r.converged}
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
                   seed: int = 0) -> pd.DataFrame:
    """Eq. (8) for each alpha: exact ``p(s_i)`` and the frequency in ``n_samples`` seeded draws."""
    rows = []
    for alpha in alphas:
        sampler = GroupSizeSampler(group_sizes, alpha=alpha, generator=seed)
        draws = pd.Series(sampler.sample_many(n_samples)).value_counts()
        for i, (s, p) in enumerate(zip(sampler.group_sizes, sampler.probs.tolist()), start=1):
            rows.append({"alpha": alpha, "i": i, "group size": s, "probability": p,
                         "empirical": int(draws.get(s, 0)) / n_samples})
    return pd.DataFrame(rows)
