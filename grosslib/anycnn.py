"""GroSS on a network other than the paper's: the procedures and figures of notebook 07 (a CIFAR ResNet).

Notebook 07 runs the whole GroSS recipe on :class:`grosslib.resnet.CifarResNet`: train (or load) the
network, decompose every eligible conv, response reconstruction and GroSS fine-tuning with temperature
sampling (:mod:`grosslib.train`; BatchNorm frozen in both), then search the configurations without
enumerating them (:mod:`grosslib.evolution`) under a MAC budget and under a predicted-latency budget
(:mod:`grosslib.latency`), and check that each pick, exported to plain convolutions
(:func:`grosslib.models.export`), scores exactly what the GroSS network estimated. The functions here are
those steps, so that the notebook holds narrative and calls only; training stages are cached under
``<run_dir>/07_gross_on_resnet/<tag>/`` (the tag names the network, dataset, schedules and seed).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from torch import nn

from .data import DatasetSplits, load_dataset
from .evolution import SearchResult
from .latency import LatencyTable
from .macs import config_macs, count_macs
from .models import (
    Config,
    config_name,
    conv_eligibility,
    decompose,
    decomposed_layers,
    export,
    get_config,
    largest_config,
    normalize,
    set_config,
)
from .notebook import Notebook
from .resnet import CifarResNet, build_cifar_resnet
from .search import evaluate_all
from .train import TrainResult, evaluate, finetune, reconstruct_responses, train_full

__all__ = ["GrossRun", "ResNetRun", "eligibility_table", "evaluated_configs", "export_checks",
           "gross_resnet", "load_data", "latency_validation_configs", "pick_summary", "plot_accuracy_vs_cost",
           "plot_latency_validation", "plot_search_progress", "run_tag", "search_space_table", "timed",
           "train_resnet"]


T = TypeVar("T")


def timed(function: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, float]:
    """``(function(*args, **kwargs), wall-clock seconds it took)``."""
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - start


# --------------------------------------------------------------------------------------------- training
def load_data(nb: Notebook, data_limit: int | None = None) -> DatasetSplits:
    """The notebook's dataset, each split cut to ``data_limit`` images (None: the preset's cap, if any).

    As the experiments of notebooks 03-05 do, a preset's ``data_limit`` (``intro``: 5,000) applies unless
    the notebook sets its own.
    """
    return load_dataset(nb.dataset, limit=_effective_limit(nb, data_limit))


def _effective_limit(nb: Notebook, data_limit: int | None) -> int | None:
    return data_limit if data_limit is not None else nb.preset.data_limit


def run_tag(nb: Notebook, *, depth: int, widths: Sequence[int], checkpoint: str = "",
            alpha: float | None = None) -> str:
    """A folder name for this notebook's cached stages: network, dataset and a hash of everything else."""
    spec = {"depth": depth, "widths": list(widths), "dataset": nb.dataset, "seed": nb.seed,
            "data_limit": _effective_limit(nb, nb.parameters.get("data_limit")),
            "checkpoint": str(checkpoint),
            "stages": {s: nb.preset.stage(s).to_dict()
                       for s in ("full", "reconstruct_gross", "finetune_gross")},
            "btd": nb.btd_options, "alpha": alpha}
    digest = hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{nb.dataset}_resnet{depth}_{'-'.join(str(w) for w in widths)}_seed{nb.seed}_{digest}"


@dataclass
class ResNetRun:
    """The trained (or loaded) network: ``net`` (eval mode), its training record (None when loaded),
    where it came from, its test accuracy, MACs and parameter count."""

    net: CifarResNet
    result: TrainResult | None
    source: str
    test_accuracy: float
    macs: int
    params: int
    stage_dir: Path


def train_resnet(nb: Notebook, data: DatasetSplits, *, depth: int, widths: Sequence[int],
                 checkpoint: str = "") -> ResNetRun:
    """Build ``CifarResNet(depth, widths)`` (seeded by ``nb.seed``) and train it with the preset's "full"
    stage, or load ``checkpoint`` (a state dict, or a dict holding one under ``state_dict``/``model``;
    relative paths are tried in the run directory first) and only evaluate it."""
    net = build_cifar_resnet(depth, widths, data.in_channels, data.num_classes, seed=nb.seed)
    tag = run_tag(nb, depth=depth, widths=widths, checkpoint=checkpoint)
    stage_dir = nb.run_dir / "07_gross_on_resnet" / tag
    result = None
    if checkpoint:
        path = Path(checkpoint).expanduser()
        found = next((p for p in ([nb.run_dir / path] if not path.is_absolute() else []) + [path]
                      if p.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"checkpoint {checkpoint!r} not found (looked in the run directory "
                                    f"{nb.run_dir} and the working directory)")
        state = torch.load(found, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
                state = state[key]
                break
        net.load_state_dict(state)
        source = f"trained CifarResNet-{depth} loaded from {found}"
    else:
        cfg = nb.preset.stage("full", seed=nb.seed)
        result = train_full(net, data, cfg, stage_dir / "full", device=nb.device,
                            progress=bool(nb.parameters.get("progress")))
        source = f"CifarResNet-{depth} trained here ({cfg.epochs} epochs, preset {nb.preset.name!r})"
    net = net.cpu().eval()
    accuracy = evaluate(net, data.test, data.mean, data.std)["accuracy"]
    shape = tuple(data.test.images.shape[1:])
    return ResNetRun(net, result, source, float(accuracy), count_macs(net, shape),
                     sum(p.numel() for p in net.parameters()), stage_dir)


def eligibility_table(net: nn.Module) -> pd.DataFrame:
    """Every ``nn.Conv2d`` of ``net`` with its shape and whether :func:`decompose`'s default rule takes it."""
    modules = dict(net.named_modules())
    rows = []
    for name, eligible, reason in conv_eligibility(net):
        conv = modules[name]
        rows.append({"conv": name, "in": conv.in_channels, "out": conv.out_channels,
                     "kernel": "x".join(map(str, conv.kernel_size)), "stride": conv.stride[0],
                     "decomposed": eligible, "reason": reason})
    return pd.DataFrame(rows)


@dataclass
class GrossRun:
    """The GroSS network after response reconstruction and GroSS fine-tuning, with its training records."""

    net: nn.Module
    reconstruct: TrainResult
    finetune: TrainResult
    btd_seconds: float
    btd_errors: pd.DataFrame


def gross_resnet(nb: Notebook, full: ResNetRun, data: DatasetSplits, *, alpha: float) -> GrossRun:
    """Decompose ``full.net`` (default rule, the preset's BTD options), then reconstruct the responses and
    fine-tune with group sizes sampled at temperature ``alpha`` (the preset's GroSS stages)."""
    start = time.perf_counter()
    gross = decompose(full.net, **nb.btd_options)
    btd_seconds = time.perf_counter() - start
    errors = pd.DataFrame([{"layer": name, "group_size": s, "error": float(e)}
                           for name, layer in decomposed_layers(gross) for s, e in layer.btd_errors.items()])
    progress = bool(nb.parameters.get("progress"))
    tag = f"alpha{alpha:g}"
    recon = reconstruct_responses(gross, full.net, data, nb.preset.stage("reconstruct_gross", alpha=alpha,
                                                                        seed=nb.seed),
                                  full.stage_dir / f"reconstruct_{tag}", device=nb.device, progress=progress)
    tuned = finetune(gross, data, nb.preset.stage("finetune_gross", alpha=alpha, seed=nb.seed),
                     full.stage_dir / f"finetune_{tag}", device=nb.device, progress=progress)
    gross = gross.cpu().eval()
    set_config(gross, largest_config(gross))
    return GrossRun(gross, recon, tuned, btd_seconds, errors)


# --------------------------------------------------------------------------------------------- the space
def search_space_table(net: nn.Module) -> tuple[pd.DataFrame, int]:
    """One row per GroSS layer (its group sizes and their count) and the search space's size (the product)."""
    rows = [{"layer": name, "group sizes": list(layer.group_sizes), "n": len(layer.group_sizes)}
            for name, layer in decomposed_layers(net)]
    return pd.DataFrame(rows), math.prod(r["n"] for r in rows)


def latency_validation_configs(net: nn.Module, n: int, *, seed: int = 0,
                               include: Sequence[Sequence[int]] = ()) -> list[Config]:
    """``n`` distinct configurations to time end to end: ``include`` (e.g. the budget and the picks), every
    layer at its smallest and at its largest size, then random ones (seeded)."""
    layers = decomposed_layers(net)
    chosen: list[Config] = []
    candidates = [tuple(int(s) for s in c) for c in include]
    candidates += [tuple(layer.group_sizes[0] for _, layer in layers), largest_config(net)]
    rng = np.random.default_rng(seed)
    for _ in range(100 * n):
        if candidates:
            config = candidates.pop(0)
        else:
            config = tuple(int(layer.group_sizes[rng.integers(len(layer.group_sizes))])
                           for _, layer in layers)
        if config not in chosen:
            chosen.append(config)
        if len(chosen) >= n:
            break
    return chosen


def evaluated_configs(results: Mapping[str, SearchResult], table: LatencyTable | None = None) -> pd.DataFrame:
    """Every configuration the searches scored: search, evaluation, name, macs, predicted latency (from
    ``table`` where the search had none), score and the running best."""
    frames = []
    for label, result in results.items():
        history = result.history.copy()
        if table is not None:
            history["latency_ms"] = [table.predict(c) for c in history["config"]]
        frames.append(history.assign(search=label))
    columns = ["search", "evaluation", "config", "name", "macs", "latency_ms", "score", "feasible",
               "best_so_far"]
    return pd.concat(frames, ignore_index=True)[columns]


# --------------------------------------------------------------------------------------------- the picks
def export_checks(net: nn.Module, picks: Mapping[str, Sequence[int]], data: DatasetSplits,
                  split: str = "test") -> pd.DataFrame:
    """For each pick: GroSS's accuracy at that configuration on ``split`` (:func:`evaluate_all`) and the
    accuracy of :func:`export`'s plain network, their difference, and the largest logit difference."""
    part = getattr(data, split)
    rows = []
    for label, config in picks.items():
        config = tuple(int(s) for s in config)
        estimate = evaluate_all(net, part, configs=[config], mean=data.mean, std=data.std, progress=False)
        exported = export(net, config).eval()
        measured = evaluate(exported, part, data.mean, data.std)["accuracy"]
        x = normalize(part.images[:256], data.mean, data.std)
        was = get_config(net)
        set_config(net, config)
        with torch.inference_mode():
            logit_gap = float((net.eval()(x) - exported(x)).abs().max())
        set_config(net, was)
        gross_accuracy = float(estimate["accuracy"].iloc[0])
        rows.append({"pick": label, "config": config_name(config), "macs": config_macs(net, config),
                     "exported macs": count_macs(exported, tuple(part.images.shape[1:])),
                     f"gross {split} accuracy": gross_accuracy, f"exported {split} accuracy": float(measured),
                     "difference": float(measured) - gross_accuracy, "max logit difference": logit_gap})
    return pd.DataFrame(rows)


def pick_summary(results: Mapping[str, SearchResult], table: LatencyTable, checks: pd.DataFrame,
                 budgets: Mapping[str, Mapping[str, float | None]]) -> pd.DataFrame:
    """One row per search: its pick, MACs, predicted latency, validation score, test accuracies, budget
    and whether the pick fits it, and the evaluations used."""
    rows = []
    checked = checks.set_index("pick")
    for label, result in results.items():
        budget = budgets[label]
        latency = table.predict(result.config)
        fits = ((budget.get("max_macs") is None or result.macs <= budget["max_macs"])
                and (budget.get("max_latency_ms") is None or latency <= budget["max_latency_ms"]))
        rows.append({"search": label, "pick": result.name, "macs": int(result.macs),
                     "predicted latency (ms)": latency, "val accuracy": result.score,
                     "gross test accuracy": checked.loc[label, "gross test accuracy"],
                     "exported test accuracy": checked.loc[label, "exported test accuracy"],
                     "max macs": budget.get("max_macs"), "max latency (ms)": budget.get("max_latency_ms"),
                     "within budget": bool(fits), "evaluations": result.evaluations})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- figures
_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


def plot_accuracy_vs_cost(evaluated: pd.DataFrame, results: Mapping[str, SearchResult], *, cost: str = "macs",
                          budgets: Mapping[str, float | None] | None = None,
                          marked: Mapping[str, tuple[float, float]] | None = None,
                          title: str | None = None) -> Figure:
    """Validation accuracy of every evaluated configuration against ``cost`` (``"macs"`` or
    ``"latency_ms"``), one colour per search; stars: the picks; dotted lines: ``budgets`` (per search);
    squares: ``marked`` points ``{label: (cost, accuracy)}`` (e.g. the budget's uniform configuration)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    scale = 1e6 if cost == "macs" else 1.0
    for colour, (label, result) in zip(_COLOURS, results.items()):
        rows = evaluated[evaluated["search"] == label]
        ax.scatter(rows[cost] / scale, 100 * rows["score"], s=14, alpha=0.6, color=colour,
                   label=f"{label} search")
        pick = rows[rows["name"] == result.name].iloc[0]
        ax.scatter([pick[cost] / scale], [100 * result.score], marker="*", s=220, color=colour,
                   edgecolor="black", zorder=5, label=f"{label} pick {result.name}")
        limit = (budgets or {}).get(label)
        if limit is not None:
            ax.axvline(limit / scale, color=colour, linestyle=":", linewidth=1.2)
    for label, (x, y) in (marked or {}).items():
        ax.scatter([x / scale], [100 * y], marker="s", s=50, color="grey", edgecolor="black", zorder=4,
                   label=label)
    ax.set_xlabel("MACs per image (M)" if cost == "macs" else "predicted latency (ms)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title or ("accuracy vs MACs" if cost == "macs" else "accuracy vs predicted latency"))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_search_progress(results: Mapping[str, SearchResult]) -> Figure:
    """Best validation accuracy found so far against the number of configurations evaluated, per search."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for colour, (label, result) in zip(_COLOURS, results.items()):
        history = result.history
        ax.step(history["evaluation"], 100 * history["best_so_far"], where="post", color=colour,
                label=f"{label} ({result.evaluations} evaluations)")
        ax.scatter(history["evaluation"], 100 * history["score"], s=10, alpha=0.4, color=colour)
    ax.set_xlabel("configurations evaluated")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("search progress: best so far (line), each evaluation (dots)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_latency_validation(frame: pd.DataFrame, summary: Mapping[str, float]) -> Figure:
    """Predicted against measured end-to-end latency of the validated configurations (one point each)."""
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.scatter(frame["measured_ms"], frame["predicted_ms"], color="tab:blue")
    for _, row in frame.iterrows():
        ax.annotate(row["config"], (row["measured_ms"], row["predicted_ms"]), fontsize=5, alpha=0.7)
    low = float(min(frame["measured_ms"].min(), frame["predicted_ms"].min()))
    high = float(max(frame["measured_ms"].max(), frame["predicted_ms"].max()))
    ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(f"latency table: Spearman {summary['spearman']:.2f}, "
                 f"mean |error| {100 * summary['mean_rel_error']:.0f}%", fontsize=10)
    fig.tight_layout()
    return fig

