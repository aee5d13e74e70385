"""Every figure of the notebooks: ``plot_*`` functions returning a Figure; :func:`show` saves and embeds it.

Figures are written as ``<figures dir>/NN_name.png`` where ``NN`` is the notebook's two-digit number;
PNG metadata is fixed (no software/version string, no timestamp), so re-running a notebook on
unchanged results rewrites byte-identical files. :func:`show` also embeds the PNG in the notebook's
output (an ``image/png`` display, whatever matplotlib backend runs), so executed notebooks carry
their plots inline.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from . import paths

__all__ = ["DPI", "figure_path", "plot_accuracy_all_configs", "plot_deficits", "plot_error_vs_group_size",
           "per_reading", "plot_gradient_reach", "plot_learning_curves", "plot_psi_expansion", "plot_ranking",
           "plot_sampling_distribution", "plot_search", "plot_study_table3", "plot_table2", "plot_table3",
           "save_figure", "set_style", "show"]


def _log2_axis(ax: plt.Axes, ticks: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()


def plot_error_vs_group_size(errors: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Relative BTD error against group size, one line per layer (columns: layer, group size, error)."""
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    sns.lineplot(data=errors, x="group size", y="error", hue="layer", style="layer", markers=True,
                 dashes=False, ax=ax)
    _log2_axis(ax, sorted(int(s) for s in errors["group size"].unique()))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("group size s (channels per group)")
    ax.set_ylabel(r"$\|W - \hat W\|_F \,/\, \|W\|_F$")
    ax.set_title(title or "BTD approximation error vs group size")
    fig.tight_layout()
    return fig


def _heatmap(ax: plt.Axes, matrix: torch.Tensor, title: str, vmax: float, xlabel: str) -> None:
    data = matrix.detach().cpu().numpy()
    ax.imshow(np.ma.masked_equal(data, 0.0), cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.set_facecolor("#f2f2f2")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("output channel")
    ax.set_xticks(range(0, data.shape[1], max(1, data.shape[1] // 8)))
    ax.set_yticks(range(0, data.shape[0], 2))
    ax.grid(False)


def plot_psi_expansion(weight: torch.Tensor, expanded: torch.Tensor, dense: torch.Tensor,
                       from_group_size: int, to_group_size: int, *,
                       tap: tuple[int, int] | None = None) -> Figure:
    """Heatmaps of a grouped weight, its Psi expansion and the dense equivalent (one kernel tap).

    Grey cells are structural zeros. Rectangles on the dense panel mark the groups of size g (thin)
    and h (thick): Psi(g -> h) places the g-blocks on the diagonal of the h-blocks.
    """
    g, h = from_group_size, to_group_size
    ky, kx = tap if tap is not None else (weight.shape[2] // 2, weight.shape[3] // 2)
    panels = [(weight[:, :, ky, kx], f"$W_g$ (t, g) = {tuple(weight.shape[:2])}\ngroups t/g",
               "input within group"),
              (expanded[:, :, ky, kx], rf"$\Psi_{{{g}\to{h}}}(W_g)$ (t, h) = {tuple(expanded.shape[:2])}"
                                       "\ngroups t/h", "input within h-block"),
              (dense[:, :, ky, kx], rf"$\Psi_{{{g}\to t}}(W_g)$ (t, t)" "\ndense equivalent, groups 1",
               "input channel")]
    vmax = float(weight.abs().max())
    widths = [p[0].shape[1] + 4 for p in panels]
    fig, axes = plt.subplots(1, 3, figsize=(11.0, 4.6), gridspec_kw={"width_ratios": widths})
    for ax, (matrix, title, xlabel) in zip(axes, panels):
        _heatmap(ax, matrix, title, vmax, xlabel)
    t = dense.shape[0]
    for size, width in ((g, 0.8), (h, 2.0)):
        for start in range(0, t, size):
            axes[2].add_patch(Rectangle((start - 0.5, start - 0.5), size, size, fill=False, lw=width,
                                        edgecolor="black"))
    fig.suptitle(f"Psi expands group size {g} to {h} (t = {t}); kernel tap {(ky, kx)}; grey = zero")
    fig.tight_layout()
    return fig


def plot_gradient_reach(reach: pd.DataFrame) -> Figure:
    """Heatmap of which series terms (columns) get gradient at each active group size (rows)."""
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    colours = sns.color_palette(["#eeeeee", "#2a7ab9"], as_cmap=True)
    labels = reach.map(lambda v: "yes" if v else "")
    sns.heatmap(reach.astype(int), cmap=colours, vmin=0, vmax=1, cbar=False, linewidths=0.5,
                linecolor="white", annot=labels, fmt="", ax=ax)
    ax.set_xlabel("series term (by its group size $s_i$)")
    ax.set_ylabel("active group size $s_k$")
    ax.set_title("terms that receive gradient")
    ax.tick_params(axis="y", rotation=0)
    fig.tight_layout()
    return fig


def plot_sampling_distribution(table: pd.DataFrame) -> Figure:
    """Bars: p(s_i) of eq. (8) per alpha, one panel per reading (literal, normalized); dots: frequencies of
    the seeded draws."""
    readings = list(dict.fromkeys(table["reading"])) if "reading" in table.columns else [None]
    fig, axes = plt.subplots(1, len(readings), figsize=(6.0 * len(readings) + 1.0, 3.8), sharey=True,
                             squeeze=False)
    bottom = max(1e-6, float(table["probability"].min()) / 2)
    for ax, reading in zip(axes[0], readings):
        part = table if reading is None else table[table["reading"] == reading]
        data = part.assign(alpha=part["alpha"].map(lambda a: f"α = {a:g}"))
        sns.barplot(data=data, x="group size", y="probability", hue="alpha", ax=ax, alpha=0.85)
        width = 0.8 / data["alpha"].nunique()
        for j, (_, group) in enumerate(data.groupby("alpha", sort=False)):
            xs = np.arange(len(group)) - 0.4 + width * (j + 0.5)
            ax.plot(xs, group["empirical"], "o", color="black", ms=3,
                    label="sampled frequency" if j == 0 else None)
        ax.set_yscale("log")
        ax.set_ylim(bottom=bottom, top=1.5)
        ax.set_xlabel("group size $s_i$")
        ax.set_ylabel("$p(s_i)$ (log scale)")
        formula = {"literal": r"$\propto e^{-\alpha i}$", "normalized": r"$\propto e^{-\alpha i / N}$"}
        ax.set_title(f"{reading} reading, {formula.get(reading, '')}" if reading else "eq. (8)")
        ax.get_legend().remove()
    handles, labels = axes[0][0].get_legend_handles_labels()
    axes[0][-1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
                       frameon=False)
    fig.suptitle("sampling distribution of the group size, eq. (8)")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------ notebooks 03-05
def _config_labels(ax: plt.Axes, xs: list[float], ys: list[float], labels: list[str], *,
                   fontsize: str = "x-small", **kwargs) -> None:
    for x, y, label in zip(xs, ys, labels):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=fontsize, **kwargs)


def plot_learning_curves(curves: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Validation curves of GroSS training (:func:`grosslib.tables.learning_curves`' long table).

    Left: the response-reconstruction loss (eq. 9) per epoch at each reported configuration. Right: the
    validation accuracy over reconstruction then fine-tuning (a dotted line marks the switch).
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 3.8))
    recon = curves[curves["metric"] == "recon_loss"]
    if len(recon):
        sns.lineplot(data=recon, x="step", y="value", hue="config", style="config", markers=True,
                     dashes=False, ax=left)
    left.set_xlabel("reconstruction epoch")
    left.set_ylabel(r"$\sum_l \|A'_l - A_l\|_F / \|A_l\|_F$ (validation)")
    left.set_title("response reconstruction loss")
    accuracy = curves[curves["metric"] == "accuracy"].assign(value=lambda d: 100.0 * d["value"])
    sns.lineplot(data=accuracy, x="step", y="value", hue="config", style="config", markers=True, dashes=False,
                 ax=right)
    stages = list(dict.fromkeys(curves["stage"]))
    if len(stages) > 1:
        boundary = float(curves.loc[curves["stage"] == stages[0], "step"].max()) + 0.5
        right.axvline(boundary, color="grey", ls=":", lw=1)
        right.annotate(f"{stages[0]} | {stages[1]}", (boundary, 1.0), xycoords=("data", "axes fraction"),
                       xytext=(0, -12), textcoords="offset points", ha="center", fontsize="x-small",
                       color="grey")
    right.set_xlabel("epoch (reconstruction, then fine-tuning)")
    right.set_ylabel("validation accuracy (%)")
    right.set_title("validation accuracy")
    for ax in (left, right):
        ax.legend(title="configuration", fontsize="small", title_fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_table2(table: pd.DataFrame, *, dataset: str = "this run",
                gross_by_reading: Mapping[str, pd.DataFrame] | None = None) -> Figure:
    """Table 2 as points: accuracy against MACs for this run (left) and the paper's CIFAR-10 (right).

    ``table`` is :func:`grosslib.tables.table2`' output (index: network). Circles: each network trained
    on its own (for fixed configurations: decomposed, reconstructed and fine-tuned alone); triangles:
    the GroSS network at the same configuration; star: the full network. ``gross_by_reading``: reading
    of eq. 8 -> its Table 2, whose GroSS column is drawn instead, one line per reading.
    """
    fixed = table[table.index != "full"].sort_values("MACs (M)")
    full = table.loc["full"] if "full" in table.index else None
    has_paper = "paper median (%)" in table.columns
    fig, axes = plt.subplots(1, 2 if has_paper else 1, figsize=(10.5 if has_paper else 5.5, 3.9),
                             squeeze=False)
    palette = sns.color_palette("colorblind")
    panels = [(axes[0, 0], "MACs (M)", "mean (%)", "GroSS (%)", f"{dataset}: test accuracy")]
    if has_paper:
        panels.append((axes[0, 1], "paper MACs (M)", "paper median (%)", "paper GroSS (%)",
                       "paper, CIFAR-10: test accuracy (median)"))
    for i, (ax, macs, own, gross, title) in enumerate(panels):
        ax.plot(fixed[macs], fixed[own], "o-", color=palette[0], label="fixed, trained on its own")
        if i == 0 and gross_by_reading:
            for j, (reading, other) in enumerate(gross_by_reading.items()):
                other = other.loc[fixed.index]
                ax.plot(other[macs], other[gross], ("^--", "v:")[j % 2], color=palette[(1 + 2 * j) % 10],
                        label=f"GroSS at the same configuration (eq. 8 {reading})")
        else:
            ax.plot(fixed[macs], fixed[gross], "^--", color=palette[1],
                    label="GroSS at the same configuration")
        if full is not None:
            ax.plot([full[macs]], [full[own]], "*", ms=14, color=palette[2], label="full network")
        _config_labels(ax, list(fixed[macs]), list(fixed[own]), list(fixed.index))
        ax.set_xlabel("MACs (millions)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(title)
        ax.legend(fontsize="x-small", loc="best")
    fig.tight_layout()
    return fig


def _reading_title(title: str, reading: str | None) -> str:
    return title if reading is None else f"{title}\n(eq. 8 read {reading})"


def per_reading(plot: Callable[..., Figure], frames: Mapping[str, Any], *, width: float = 6.4,
                height: float = 3.9, **options: Any) -> Figure:
    """One panel per reading of eq. 8: ``plot(frames[reading], reading=reading, ax=panel, **options)``
    side by side, y axes shared (e.g. ``per_reading(plot_deficits, {"literal": t1, "normalized": t2})``)."""
    fig, axes = plt.subplots(1, len(frames), figsize=(width * len(frames), height), sharey=True,
                             squeeze=False)
    for ax, (reading, frame) in zip(axes[0], frames.items()):
        plot(frame, reading=reading, ax=ax, **options)
    fig.tight_layout()
    return fig


def plot_deficits(table: pd.DataFrame, *, reading: str | None = None, ax: Axes | None = None) -> Figure:
    """Figure 1, left: GroSS minus the configuration trained on its own, at the fixed configurations.

    ``table`` is :func:`grosslib.tables.deficits`' output; one line per alpha; error bars are the std
    over replicates where there are several. ``reading``: eq. 8's reading, named in the title; ``ax``:
    draw there (:func:`per_reading`).
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.9)) if ax is None else (ax.figure, ax)
    names = list(dict.fromkeys(table.sort_values("group size")["name"]))
    palette = sns.color_palette("colorblind")
    for j, (alpha, part) in enumerate(table.groupby("alpha", sort=True)):
        part = part.sort_values("group size")
        xs = [names.index(n) + (j - 1) * 0.06 for n in part["name"]]
        errors = part["deficit std (pp)"] if part["deficit std (pp)"].notna().any() else None
        ax.errorbar(xs, part["deficit (pp)"], yerr=errors, fmt="o-", capsize=3,
                    color=palette[j % len(palette)], label=f"α = {alpha:g}")
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names)
    ax.set_xlabel("configuration (fixed baseline)")
    ax.set_ylabel("GroSS − trained on its own (pp)")
    ax.set_title(_reading_title("accuracy deficit of GroSS at the fixed configurations", reading))
    ax.legend(title="temperature", fontsize="small", title_fontsize="small")
    fig.tight_layout()
    return fig


def _front(frame: pd.DataFrame) -> pd.DataFrame:
    from .search import pareto_front

    return pareto_front(frame)


def plot_accuracy_all_configs(table: pd.DataFrame, fixed: pd.DataFrame | None = None, *,
                              split: str = "test", reading: str | None = None,
                              ax: Axes | None = None) -> Figure:
    """Figure 1, right: accuracy of every configuration against MACs, one colour per alpha.

    ``table``: alpha, macs, accuracy (fraction) per configuration (:func:`grosslib.tables.mean_over_seeds`).
    Dots: every configuration; lines: each alpha's Pareto front. ``fixed`` (optional: macs, accuracy):
    the fixed configurations trained on their own, as black crosses. ``reading``, ``ax``: as for
    :func:`plot_deficits`.
    """
    fig, ax = plt.subplots(figsize=(7.2, 4.4)) if ax is None else (ax.figure, ax)
    palette = sns.color_palette("colorblind")
    for j, (alpha, part) in enumerate(table.groupby("alpha", sort=True)):
        colour = palette[j % len(palette)]
        ax.scatter(part["macs"] / 1e6, 100.0 * part["accuracy"], s=9, alpha=0.45, color=colour, lw=0)
        front = _front(part)
        ax.step(front["macs"] / 1e6, 100.0 * front["accuracy"], where="post", color=colour, lw=1.5,
                label=f"α = {alpha:g} (dots: all, line: Pareto front)")
    if fixed is not None and len(fixed):
        ax.plot(fixed["macs"] / 1e6, 100.0 * fixed["accuracy"], "kX", ms=8, label="fixed, trained on its own")
    ax.set_xlabel("MACs (millions)")
    ax.set_ylabel(f"{split} accuracy (%)")
    evaluated = table.groupby("alpha")["macs"].size().max() if len(table) else 0
    ax.set_title(_reading_title(f"GroSS accuracy of {evaluated} configurations, by sampling temperature",
                                reading))
    ax.legend(fontsize="x-small", loc="lower right")
    fig.tight_layout()
    return fig


def plot_search(evaluations: pd.DataFrame, front: pd.DataFrame, marked: dict[str, tuple[int, ...]],
                selections: pd.DataFrame | None = None, *, split: str = "validation") -> Figure:
    """Accuracy against MACs of every configuration, its Pareto front, fixed configurations and picks.

    ``evaluations``: :meth:`Experiment.evaluate_configs`' table; ``front``: its Pareto front;
    ``marked``: ``{label: configuration}`` drawn as squares (the fixed baselines); ``selections``:
    :func:`grosslib.search.select_under_budgets` (stars, with the budgets as dotted lines).
    """
    fig, ax = plt.subplots(figsize=(7.6, 4.6))
    palette = sns.color_palette("colorblind")
    ax.scatter(evaluations["macs"] / 1e6, 100.0 * evaluations["accuracy"], s=12, color="#9a9a9a", lw=0,
               alpha=0.7, label=f"all {len(evaluations)} configurations")
    ax.step(front["macs"] / 1e6, 100.0 * front["accuracy"], where="post", color=palette[3], lw=1.6,
            label=f"Pareto front ({len(front)})")
    by_config = evaluations.set_index(evaluations["config"].map(tuple))
    for label, config in marked.items():
        row = by_config.loc[[tuple(config)]].iloc[0]
        ax.plot(row["macs"] / 1e6, 100.0 * row["accuracy"], "s", ms=7, mfc="none", mec="black", mew=1.4)
        ax.annotate(label, (row["macs"] / 1e6, 100.0 * row["accuracy"]), textcoords="offset points",
                    xytext=(5, -10), fontsize="x-small")
    ax.plot([], [], "s", mfc="none", mec="black", label="fixed configurations")
    if selections is not None and len(selections):
        for j, (budget, part) in enumerate(selections.groupby("budget", sort=False)):
            colour = palette[j % len(palette)]
            ax.axvline(float(part["budget macs"].iloc[0]) / 1e6, color=colour, ls=":", lw=1.2)
            label = f"fixed-{budget} budget, top {len(part)}: {', '.join(part['name'])}"
            ax.plot(part["macs"] / 1e6, 100.0 * part["accuracy"], "*", ms=max(16 - 5 * j, 6), color=colour,
                    mec="black", mew=0.5, label=label)
    ax.set_xlabel("MACs (millions)")
    ax.set_ylabel(f"{split} accuracy (%)")
    ax.set_title("exhaustive search over the GroSS configurations")
    ax.legend(fontsize="x-small", loc="lower right")
    fig.tight_layout()
    return fig


def plot_table3(table: pd.DataFrame) -> Figure:
    """Table 3 as points: per budget, the fixed configuration and the picks trained on their own.

    ``table`` is :func:`grosslib.tables.table3`' output. Filled markers: test accuracy trained on its own
    (fixed, or after train); hollow: the GroSS network's validation accuracy that the search ranked by.
    """
    budgets = list(dict.fromkeys(table["budget"]))
    fig, axes = plt.subplots(1, len(budgets), figsize=(4.2 * len(budgets), 3.8), sharey=True, squeeze=False)
    palette = sns.color_palette("colorblind")
    for ax, budget in zip(axes[0], budgets):
        part = table[table["budget"] == budget].reset_index(drop=True)
        own = part["fixed (%)"].where(part["role"] == "fixed", part["after train (%)"])
        errors = part["fixed std (%)"].where(part["role"] == "fixed", part["after train std (%)"])
        colours = [palette[0] if r == "fixed" else palette[2] for r in part["role"]]
        xs = list(range(len(part)))
        for x, y, e, c in zip(xs, own, errors, colours):
            ax.errorbar([x], [y], yerr=None if pd.isna(e) else [e], fmt="o", ms=8, color=c, capsize=3)
        ax.plot(xs, part["GroSS val (%)"], "o", ms=8, mfc="none", mec="black")
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{n}\n{m:.2f}M" for n, m in zip(part["configuration"], part["MACs (M)"])],
                           fontsize="small")
        ax.set_xlim(-0.5, len(part) - 0.5)
        ax.set_title(f"fixed-{budget} budget")
        ax.set_ylabel("accuracy (%)")
    handles = [plt.Line2D([], [], marker="o", ls="", color=palette[0],
                          label="fixed, trained on its own (test)"),
               plt.Line2D([], [], marker="o", ls="", color=palette[2],
                          label="search pick, trained on its own (test)"),
               plt.Line2D([], [], marker="o", ls="", mfc="none", mec="black",
                          label="GroSS network (validation)")]
    axes[0, -1].legend(handles=handles, fontsize="x-small", loc="lower right")
    fig.tight_layout()
    return fig


def plot_study_table3(table: pd.DataFrame, *, dataset: str = "this study", reading: str | None = None,
                      ax: Axes | None = None) -> Figure:
    """Table 3 over seeds beside the paper's: gain of each search rank over its fixed budget (pp).

    ``table`` is :func:`grosslib.report.table3`' output. Bars: mean delta over seeds (error bars: std over
    seeds) and the paper's CIFAR-10 delta, per budget and rank; labels name the configurations.
    ``reading``, ``ax``: as for :func:`plot_deficits`.
    """
    picks = table[table["role"] != "fixed"].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7.6, 3.9)) if ax is None else (ax.figure, ax)
    palette = sns.color_palette("colorblind")
    xs = np.arange(len(picks))
    errors = picks["delta std (pp)"].where(picks["delta std (pp)"].notna(), 0.0)
    ax.bar(xs - 0.2, picks["delta wrt fixed (pp)"], 0.4, yerr=errors, capsize=3, color=palette[0],
           label=f"{dataset} (mean ± std over seeds)")
    ax.bar(xs + 0.2, picks["paper delta (pp)"].astype(float), 0.4, color=palette[1], label="paper, CIFAR-10")
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"fixed-{r['budget']} {r['role']}\n{str(r['configuration']).replace(' / ', chr(10))}"
                        f"\npaper: {r['paper configuration']}" for _, r in picks.iterrows()],
                       fontsize="x-small")
    ax.set_ylabel("trained on its own − fixed (pp)")
    ax.set_title(_reading_title("searched configurations vs the fixed baseline of their budget", reading))
    ax.legend(fontsize="x-small", loc="best")
    fig.tight_layout()
    return fig


def plot_ranking(table: pd.DataFrame, taus: pd.DataFrame) -> Figure:
    """GroSS's accuracy of each ranked configuration against the same configuration trained on its own.

    ``table``: :func:`grosslib.report.ranking_table` (means over seeds); ``taus``:
    :func:`grosslib.report.ranking_taus`. Left: accuracies (colour: MACs), with the diagonal; right:
    the two rankings (1 = most accurate), Kendall's tau in the titles.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.3))
    ax = axes[0]
    points = ax.scatter(table["own (%)"], table["GroSS (%)"], c=table["MACs (M)"], cmap="viridis", s=40,
                        edgecolor="black", lw=0.4, zorder=3)
    fig.colorbar(points, ax=ax, label="MACs (millions)")
    lo = float(min(table["own (%)"].min(), table["GroSS (%)"].min())) - 0.2
    hi = float(max(table["own (%)"].max(), table["GroSS (%)"].max())) + 0.2
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--", label="GroSS = trained on its own")
    labels = list(table.index)
    _config_labels(ax, list(table["own (%)"]), list(table["GroSS (%)"]), labels, fontsize="xx-small")
    ax.set_xlabel("trained on its own: test accuracy (%)")
    ax.set_ylabel("GroSS (α = 4): test accuracy (%)")
    tau_mean = float(taus.loc["mean over seeds", "tau"])
    ax.set_title(f"{len(table)} configurations, means over seeds (τ = {tau_mean:.2f})")
    ax.legend(fontsize="x-small", loc="upper left")
    ax = axes[1]
    ax.plot(table["own rank"], table["GroSS rank"], "o", color=sns.color_palette("colorblind")[0])
    _config_labels(ax, list(table["own rank"]), list(table["GroSS rank"]), labels, fontsize="xx-small")
    n = len(table)
    ax.plot([1, n], [1, n], color="grey", lw=0.8, ls="--")
    ax.set_xlim(n + 0.8, 0.2)
    ax.set_ylim(n + 0.8, 0.2)
    ax.set_xlabel("rank trained on its own (1 = best)")
    ax.set_ylabel("rank by GroSS")
    per_seed = [f"{float(t):.2f}" for s, t in taus["tau"].items() if s != "mean over seeds"]
    ax.set_title(f"Kendall's τ per seed: {', '.join(per_seed)}")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------- files
DPI = 120
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


def figure_path(notebook_number: int, name: str, *, directory: str | Path | None = None) -> Path:
    """``<directory>/NN_name.png`` (directory defaults to :func:`grosslib.paths.figures_dir`)."""
    valid = isinstance(notebook_number, int) and not isinstance(notebook_number, bool)
    if not valid or not 0 <= notebook_number < 100:
        raise ValueError(f"notebook_number must be an int in 0..99, got {notebook_number!r}")
    if not _NAME.match(name):
        raise ValueError(f"figure name must be letters, digits, '_' or '-' without extension, got {name!r}")
    folder = Path(directory).expanduser() if directory else paths.figures_dir()
    return folder / f"{notebook_number:02d}_{name}.png"


def save_figure(fig: Figure, notebook_number: int, name: str, *, directory: str | Path | None = None,
                dpi: int = DPI) -> Path:
    """Save ``fig`` as ``NN_name.png`` with deterministic metadata and return the path."""
    path = figure_path(notebook_number, name, directory=directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return path


def show(fig: Figure, notebook_number: int, name: str, *, directory: str | Path | None = None,
         dpi: int = DPI) -> Path:
    """Save ``fig`` (:func:`save_figure`), embed it in the running notebook's output, close it; the path.

    The embedded image is the saved PNG itself (an IPython ``Image`` display), so it appears inline
    under any backend; outside IPython nothing is displayed.
    """
    path = save_figure(fig, notebook_number, name, directory=directory, dpi=dpi)
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:                                   # plain Python: the file is the result
        get_ipython = None                                # type: ignore[assignment]
    if get_ipython is not None and get_ipython() is not None:
        display(Image(data=path.read_bytes(), format="png"))
    plt.close(fig)
    return path


def set_style() -> None:
    """The seaborn theme shared by all notebooks (white grid, colour-blind palette)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": DPI, "axes.titlesize": "medium",
                         "image.cmap": "RdBu_r"})
