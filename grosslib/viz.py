"""Plot helpers for the notebooks. Each returns a matplotlib Figure (save it with grosslib.figures)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


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
    """Bars: p(s_i) of eq. (8) per alpha; dots: frequencies of the seeded draws."""
    fig, ax = plt.subplots(figsize=(7.0, 3.8))
    data = table.assign(alpha=table["alpha"].map(lambda a: f"α = {a:g}"))
    sns.barplot(data=data, x="group size", y="probability", hue="alpha", ax=ax, alpha=0.85)
    n_alpha = data["alpha"].nunique()
    width = 0.8 / n_alpha
    for j, (_, group) in enumerate(data.groupby("alpha", sort=False)):
        xs = np.arange(len(group)) - 0.4 + width * (j + 0.5)
        ax.plot(xs, group["empirical"], "o", color="black", ms=3,
                label="sampled frequency" if j == 0 else None)
    ax.set_yscale("log")
    ax.set_ylim(bottom=max(1e-6, float(table["probability"].min()) / 2), top=1.5)
    ax.set_xlabel("group size $s_i$")
    ax.set_ylabel("$p(s_i)$ (log scale)")
    ax.set_title("sampling distribution of the group size, eq. (8)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    fig.tight_layout()
    return fig
