"""Tables 2-3 and Figure 1 of the paper in numbers: pure functions from record tables to tables.

Every function here takes DataFrames (the records of :mod:`grosslib.records`, evaluations of
:mod:`grosslib.search`, training results) and returns a table or a verdict; none trains or reads a
file, so each is unit-tested on small synthetic frames. The library's accuracies are fractions in
``[0, 1]``; every table here shows them in percent (columns ending in ``(%)``) and differences in
percentage points (``(pp)``), as the paper does.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .models import Config, config_name
from .records import as_config as _tuple
from .records import percent as _pct

__all__ = ["PAPER_GROSS_AT_FIXED", "PAPER_NOTE", "PAPER_TABLE2", "PAPER_TABLE3", "ascending_share",
           "best_alpha_per_band", "by_alpha", "curve_endpoints", "deficits", "deficits_by_alpha",
           "diverged", "diverged_stages", "is_ascending", "learning_curves", "mean_over_seeds",
           "own_fixed_accuracy", "picks_summary", "profile_by_cost", "profile_flatness", "reading_rows",
           "readings", "summarise", "table2", "table2_at_reading", "table3"]

#: The two readings of equation 8 (docs/method.md, grosslib.sampling); alpha 0 is uniform under both.
READINGS: tuple[str, ...] = ("literal", "normalized")


def _labels(frame: pd.DataFrame) -> pd.Series:
    return frame["reading"].map(lambda r: "literal" if r is None or pd.isna(r) else str(r))


def readings(frame: pd.DataFrame) -> list[str]:
    """The readings of equation 8 in a table with ``alpha`` and ``reading`` columns: ``literal`` first,
    then ``normalized``, then any other.

    From the ``reading`` labels of the rows with alpha != 0 (a missing label counts as ``literal``);
    ``["literal"]`` without a ``reading`` column.
    """
    if "reading" not in frame:
        return ["literal"]
    labels = _labels(frame)
    present = set(labels[frame["alpha"].astype(float) != 0.0])
    return [r for r in READINGS if r in present] + sorted(present - set(READINGS)) or ["literal"]


def reading_rows(frame: pd.DataFrame, reading: str) -> pd.DataFrame:
    """The rows of one reading: those labelled ``reading`` and every alpha 0 row (uniform under both);
    a table without a ``reading`` column (recorded before the readings existed: literal) whole."""
    if "reading" not in frame:
        return frame
    return frame[(_labels(frame) == reading) | (frame["alpha"].astype(float) == 0.0)]

#: Table 2 of the paper (CIFAR-10 test accuracy in %, MACs in millions), from ``docs/method.md``.
PAPER_TABLE2 = pd.DataFrame(
    [("full", None, 83.88, 83.99, 0.53, 4.42),
     ("fixed 32", 32, 83.70, 83.69, 0.14, 4.28),
     ("fixed 16", 16, 82.84, 82.83, 0.10, 2.66),
     ("fixed 4", 4, 82.09, 82.06, 0.07, 1.44),
     ("fixed 1", 1, 81.76, 81.74, 0.07, 1.14)],
    columns=["network", "group size", "median (%)", "mean (%)", "std (%)", "MACs (M)"])

#: Table 3 of the paper: the top 2 configurations under the fixed-16 and fixed-4 budgets. ``GroSS`` is
#: the median accuracy of the GroSS network at that configuration; ``after train`` the mean of 5 runs of
#: the configuration trained on its own; ``delta`` the difference to the fixed configuration (pp).
PAPER_TABLE3 = pd.DataFrame(
    [(16, "16-16-16", "fixed", 2.66, 82.83, 81.14, None, None),
     (16, "2-32-64", "search #1", 2.36, None, 81.72, 83.84, 1.00),
     (16, "8-16-64", "search #2", 2.51, None, 81.60, 83.83, 0.99),
     (4, "4-4-4", "fixed", 1.44, 82.06, 80.37, None, None),
     (4, "2-4-8", "search #1", 1.33, None, 80.90, 82.76, 0.70),
     (4, "2-8-8", "search #2", 1.41, None, 80.89, 82.92, 0.86)],
    columns=["budget", "configuration", "role", "MACs (M)", "fixed (%)", "GroSS (%)", "after train (%)",
             "delta wrt fixed (pp)"])

#: The paper's GroSS accuracy (alpha 4) at the fixed configurations it reports (Table 3's GroSS column).
PAPER_GROSS_AT_FIXED: dict[int, float] = {16: 81.14, 4: 80.37}

#: Where the paper's Table 2 and 3 numbers come from (shown next to ours).
PAPER_NOTE = ("paper: CIFAR-10 (40k train / 10k val / 10k test), 100/150/100-epoch schedules, 5 runs; "
              "its MAC column does not follow from docs/method.md's formula on the described network, "
              "which gives our column")


def is_ascending(config: Sequence[int]) -> bool:
    """True when the group sizes never decrease along the layers (e.g. 2-8-8, 2-32-64)."""
    values = [int(s) for s in config]
    return all(b >= a for a, b in zip(values, values[1:]))


def ascending_share(configs: Iterable[Sequence[int]]) -> float:
    """Fraction of ``configs`` whose group sizes never decrease (NaN for none)."""
    flags = [is_ascending(c) for c in configs]
    return float(np.mean(flags)) if flags else math.nan


def summarise(values: Iterable[float]) -> dict[str, float]:
    """``n``, ``median``, ``mean`` and sample ``std`` (NaN for one value) of the finite values."""
    data = np.array([float(v) for v in values if v is not None and math.isfinite(float(v))])
    if data.size == 0:
        return {"n": 0, "median": math.nan, "mean": math.nan, "std": math.nan}
    std = float(data.std(ddof=1)) if data.size > 1 else math.nan
    return {"n": int(data.size), "median": float(np.median(data)), "mean": float(data.mean()), "std": std}


def diverged(result: Any) -> bool:
    """True when a training stage's loss became non-finite in some epoch (NaN or inf: the run diverged).

    ``result``: a :class:`~grosslib.train.TrainResult` (its ``history``) or a
    :class:`~grosslib.experiment.StageResult` (either of its reconstruction and fine-tuning stages).
    """
    if hasattr(result, "history"):
        return any(not math.isfinite(float(h.get("train_loss", 0.0))) for h in result.history)
    stages = (getattr(result, "reconstruct", None), getattr(result, "finetune", None))
    return any(diverged(stage) for stage in stages if stage is not None)


def diverged_stages(results: Mapping[str, Any]) -> list[str]:
    """The labels of ``results`` (label -> TrainResult or StageResult) whose training diverged."""
    return [label for label, result in results.items() if diverged(result)]


def learning_curves(stages: Mapping[str, Any]) -> pd.DataFrame:
    """Per-epoch validation metrics of consecutive training stages as one long table.

    ``stages`` maps a stage label to a :class:`~grosslib.train.TrainResult` (only ``history`` is read),
    in training order. Keys ``val_<metric>@<config>`` become rows (stage, epoch, step, config, metric,
    value); ``step`` counts epochs across the stages (the second stage's first epoch follows the first
    stage's last). Keys without ``@`` (the headline copies) are skipped.
    """
    rows, offset = [], 0
    for stage, result in stages.items():
        history = list(result.history)
        for entry in history:
            epoch = int(entry["epoch"])
            for key, value in entry.items():
                if not key.startswith("val_") or "@" not in key:
                    continue
                metric, config = key[len("val_"):].split("@", 1)
                rows.append({"stage": stage, "epoch": epoch, "step": offset + epoch, "config": config,
                             "metric": metric, "value": float(value)})
        offset += max((int(h["epoch"]) for h in history), default=0)
    return pd.DataFrame(rows, columns=["stage", "epoch", "step", "config", "metric", "value"])


def curve_endpoints(curves: pd.DataFrame) -> pd.DataFrame:
    """First and last value of every (stage, metric, config) curve of :func:`learning_curves`."""
    ordered = curves.sort_values("step")
    grouped = ordered.groupby(["stage", "metric", "config"], sort=False)["value"]
    return pd.DataFrame({"first epoch": grouped.first(), "last epoch": grouped.last()}).reset_index()


def table2(records: pd.DataFrame, paper: pd.DataFrame | None = PAPER_TABLE2) -> pd.DataFrame:
    """Table 2 from :func:`table2_records`: one row per network, ours (over replicates) beside the paper's.

    Rows: full, then the fixed configurations by descending group size (the paper's order). Columns:
    configuration, MACs (M), runs, test accuracy median / mean / std (%), GroSS (%) (mean over
    replicates of the GroSS network at the configuration), GroSS - fixed (pp), and with ``paper`` its
    median (%), mean (%), std (%), MACs (M) and GroSS (%) (Table 3's value where the paper gives one).
    """
    order = sorted(records["network"].unique(),
                   key=lambda n: (n != "full", -_group_size_of(records, n)))
    rows = []
    for network in order:
        part = records[records["network"] == network]
        own, gross = summarise(part["accuracy"]), summarise(part["gross accuracy"])
        config = part["config"].iloc[0]
        row = {"network": network, "configuration": "-" if config is None or _isna(config) else
               config_name(config), "MACs (M)": float(part["macs"].iloc[0]) / 1e6, "runs": own["n"],
               "median (%)": _pct(own["median"]), "mean (%)": _pct(own["mean"]), "std (%)": _pct(own["std"]),
               "GroSS (%)": _pct(gross["mean"]),
               "GroSS - fixed (pp)": _pct(gross["mean"]) - _pct(own["mean"])}
        if paper is not None:
            match = paper[paper["network"] == network]
            size = _group_size_of(records, network)
            row.update({f"paper {column}": _first(match, column)
                        for column in ("median (%)", "mean (%)", "std (%)", "MACs (M)")})
            row["paper GroSS (%)"] = PAPER_GROSS_AT_FIXED.get(size, math.nan)
        rows.append(row)
    return pd.DataFrame(rows).set_index("network")


def _isna(value: Any) -> bool:
    return not isinstance(value, (tuple, list)) and pd.isna(value)


def _group_size_of(records: pd.DataFrame, network: str) -> int:
    sizes = records.loc[records["network"] == network, "group size"].dropna()
    return int(sizes.iloc[0]) if len(sizes) else -1


def _first(frame: pd.DataFrame, column: str) -> float:
    return float(frame[column].iloc[0]) if len(frame) and not pd.isna(frame[column].iloc[0]) else math.nan


def table2_at_reading(records: pd.DataFrame, deficit_records: pd.DataFrame, reading: str,
                      alpha: float = 4.0) -> pd.DataFrame:
    """:func:`table2_records` with its ``gross accuracy`` taken from GroSS at ``alpha`` under ``reading``
    (``deficit_records``' rows of that network, per seed and group size); the full network keeps NaN."""
    rows = reading_rows(deficit_records, reading)
    rows = rows[rows["alpha"].astype(float) == float(alpha)]
    gross = {(int(seed), int(size)): float(accuracy) for seed, size, accuracy in
             zip(rows["seed"], rows["group size"], rows["gross accuracy"])}
    out = records.copy()
    out["gross accuracy"] = [gross.get((int(seed), int(size)), math.nan) if not _isna(size) else math.nan
                             for seed, size in zip(out["seed"], out["group size"])]
    return out


def deficits(records: pd.DataFrame) -> pd.DataFrame:
    """:func:`deficit_records` averaged over replicates: one row per (alpha, group size).

    Columns: alpha, group size, name, macs, GroSS (%), fixed (%), deficit (pp) (means) and deficit std
    (pp) (over replicates; NaN for one).
    """
    keys = ["alpha", "group size"]
    grouped = records.groupby(keys, sort=True)
    out = grouped.agg(name=("name", "first"), macs=("macs", "first"), gross=("gross accuracy", "mean"),
                      fixed=("fixed accuracy", "mean"), deficit=("deficit (pp)", "mean"),
                      deficit_std=("deficit (pp)", lambda v: v.std(ddof=1) if len(v) > 1 else math.nan))
    out = out.reset_index()
    out["gross"], out["fixed"] = out["gross"] * 100.0, out["fixed"] * 100.0
    return out.rename(columns={"gross": "GroSS (%)", "fixed": "fixed (%)", "deficit": "deficit (pp)",
                               "deficit_std": "deficit std (pp)"})


def profile_flatness(table: pd.DataFrame, *, tol: float = 1e-9) -> pd.DataFrame:
    """How flat each alpha's deficit profile is, and which end of the configuration space it favours.

    ``table`` is :func:`deficits`' output. Per alpha: mean deficit, std of the deficits across the fixed
    configurations (the flatness: 0 is perfectly flat), range (max - min), tilt (deficit at the largest
    configuration minus at the smallest: > 0 favours large configurations, < 0 small ones), ``favours``
    ('large', 'small' or 'neither' when ``|tilt| <= tol``) and ``flattest`` (the smallest std; ties all
    True).
    """
    rows = []
    for alpha, part in table.sort_values(["alpha", "group size"]).groupby("alpha", sort=True):
        values = part["deficit (pp)"].to_numpy(dtype=float)
        tilt = float(values[-1] - values[0])
        favours = "neither" if abs(tilt) <= tol else ("large" if tilt > 0 else "small")
        rows.append({"alpha": float(alpha), "mean deficit (pp)": float(values.mean()),
                     "std of deficits (pp)": float(values.std(ddof=0)),
                     "range (pp)": float(values.max() - values.min()), "tilt (pp)": tilt, "favours": favours})
    out = pd.DataFrame(rows)
    if len(out):
        best = out["std of deficits (pp)"].min()
        out["flattest"] = (out["std of deficits (pp)"] - best).abs() <= tol
    return out.set_index("alpha")


def mean_over_seeds(records: pd.DataFrame, keys: Sequence[str] = ("alpha", "name")) -> pd.DataFrame:
    """Mean accuracy (and MACs) per ``keys`` over replicates of :func:`all_config_records`."""
    grouped = records.groupby(list(keys), sort=False)
    out = grouped.agg(config=("config", "first"), macs=("macs", "first"), accuracy=("accuracy", "mean"))
    return out.reset_index()


def profile_by_cost(table: pd.DataFrame, bins: int = 3) -> pd.DataFrame:
    """Mean accuracy (%) of each alpha over cost bands of the configurations (Figure 1, right, in numbers).

    ``table`` has columns alpha, macs, accuracy (a fraction). The configurations are cut into ``bins``
    bands of equal count by MACs rank (band 1: the cheapest); rows are alphas, columns ``band k (%)``
    and ``all (%)``. The band assignment depends only on MACs, so every alpha is averaged over the same
    configurations.
    """
    macs = table.drop_duplicates("name")[["name", "macs"]] if "name" in table else None
    if macs is None:
        raise ValueError("table needs a 'name' column (one per configuration)")
    ranks = macs["macs"].rank(method="first").to_numpy()
    band_of = dict(zip(macs["name"], np.ceil(ranks * bins / len(macs)).astype(int)))
    banded = table.assign(band=table["name"].map(band_of))
    out = banded.pivot_table(index="alpha", columns="band", values="accuracy", aggfunc="mean") * 100.0
    out.columns = [f"band {int(b)} (%)" for b in out.columns]
    out["all (%)"] = banded.groupby("alpha")["accuracy"].mean() * 100.0
    return out


def best_alpha_per_band(by_cost: pd.DataFrame) -> dict[str, float]:
    """``{band column: alpha with the highest mean accuracy}`` from :func:`profile_by_cost`."""
    return {column: float(by_cost[column].idxmax()) for column in by_cost.columns}


def table3(selections: pd.DataFrame, evaluations: pd.DataFrame, own: Mapping[Config, Sequence[float]],
           gross_test: Mapping[Config, float] | None = None) -> pd.DataFrame:
    """Table 3: per budget, the fixed configuration then the configurations the search chose.

    ``selections``: :func:`select_under_budgets`. ``evaluations``: the GroSS evaluation the search used
    (validation). ``own``: ``{config: [test accuracy per replicate]}`` of every configuration trained on
    its own (the budget configurations and the selected ones). ``gross_test``: optional
    ``{config: GroSS test accuracy}``.

    Columns: budget, configuration, role ('fixed', 'search #k'), MACs (M), fixed (%) (budget rows: mean
    over replicates), fixed std, GroSS val (%), GroSS test (%), after train (%) and its std (selected
    rows: mean over replicates), delta wrt fixed (pp) (after train minus the budget's fixed mean),
    ascending (group sizes never decrease).
    """
    by_name = evaluations.set_index("name")
    rows = []
    for budget, part in selections.groupby("budget", sort=False):
        budget_config = _tuple(part["budget config"].iloc[0])
        fixed = summarise(own[budget_config])
        entries = [(budget_config, "fixed")] + [(_tuple(c), f"search #{r}")
                                                for c, r in zip(part["config"], part["rank"])]
        for config, role in entries:
            name = config_name(config)
            after = summarise(own[config]) if role != "fixed" else None
            rows.append({
                "budget": budget, "configuration": name, "role": role,
                "MACs (M)": float(by_name.loc[name, "macs"]) / 1e6,
                "fixed (%)": _pct(fixed["mean"]) if role == "fixed" else math.nan,
                "fixed std (%)": _pct(fixed["std"]) if role == "fixed" else math.nan,
                "GroSS val (%)": _pct(by_name.loc[name, "accuracy"]),
                "GroSS test (%)": _pct((gross_test or {}).get(config, math.nan)),
                "after train (%)": _pct(after["mean"]) if after else math.nan,
                "after train std (%)": _pct(after["std"]) if after else math.nan,
                "delta wrt fixed (pp)": _pct(after["mean"]) - _pct(fixed["mean"]) if after else math.nan,
                "ascending": is_ascending(config)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- per alpha
def by_alpha(values: Mapping[float, Any]) -> dict[str, Any]:
    """``{4.0: v}`` -> ``{'4': v}``: a per-temperature mapping keyed as the metrics records key it."""
    return {f"{float(a):g}": v for a, v in dict(values).items()}


def deficits_by_alpha(table: pd.DataFrame) -> dict[str, dict[int, float]]:
    """:func:`deficits`' table as ``{alpha: {group size: deficit (pp)}}`` (alphas as :func:`by_alpha`)."""
    return by_alpha({a: {int(s): float(v) for s, v in part.set_index("group size")["deficit (pp)"].items()}
                     for a, part in table.groupby("alpha")})


def picks_summary(table: pd.DataFrame) -> dict[str, Any]:
    """From :func:`table3`: how many picks beat their budget's fixed baseline, how many are ascending.

    Returns ``n`` (picks), ``better`` (after training on their own, delta wrt fixed > 0), ``ascending``,
    ``deltas`` (configuration -> delta wrt fixed, pp) and ``best_delta`` (budget -> its best pick's delta).
    """
    picks = table[table["role"] != "fixed"]
    deltas = picks["delta wrt fixed (pp)"]
    best = {int(budget): float(part["delta wrt fixed (pp)"].max())
            for budget, part in picks.groupby("budget", sort=False)}
    return {"n": int(len(picks)), "better": int((deltas > 0).sum()),
            "ascending": int(picks["ascending"].sum()), "deltas": dict(zip(picks["configuration"], deltas)),
            "best_delta": best}


def own_fixed_accuracy(records: pd.DataFrame) -> pd.DataFrame:
    """Per fixed group size of :func:`~grosslib.records.deficit_records`: MACs and own-trained accuracy.

    The accuracy is the mean over replicates of the configuration trained on its own (the markers of
    Figure 1, right).
    """
    return records.groupby("group size").agg(macs=("macs", "first"), accuracy=("fixed accuracy", "mean"))
