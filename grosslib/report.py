"""The reproduction report (notebook 06): tables, rankings and a verdict on each of the paper's claims.

Everything here is a pure function of the record tables of a study (:func:`grosslib.study.read_records`:
``table2``, ``deficits``, ``profiles``, ``search``, ``selections``, ``ranking``, ``seeds``), so the
report can be re-rendered from ``records.json`` alone and is unit-tested on small synthetic records.
Accuracies in the records are fractions; the tables show percent ``(%)`` and percentage points ``(pp)``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from . import tables
from .models import config_name
from .study import parse_config

__all__ = ["CLAIMS", "FAILED_RUN_FRACTION", "PAPER_EVIDENCE", "ascending_preference", "claim_ascending",
           "by_reading", "claim_growth", "claim_search", "claim_temperature", "claims_table", "deficit_table",
           "drop_failed_runs", "failed_runs", "kendall_tau", "ranking_table", "ranking_taus", "selections_of",
           "stack_by_reading", "table2",
           "table3"]

#: The paper's four claims, as checked here (wording ours).
CLAIMS: dict[int, str] = {
    1: "accuracy grows with group size and stays below the full network",
    2: "the searched configurations beat the fixed ones at lower MACs after training on their own",
    3: "alpha = 4 gives the flattest deficit profile; alpha = 0 favours large, alpha = 8 small "
       "configurations",
    4: "ascending group sizes along the layers are preferred",
}

#: What the paper reports for each claim (CIFAR-10; Tables 2-3 and Figure 1 of the paper, docs/method.md).
PAPER_EVIDENCE: dict[int, str] = {
    1: "full 83.99; fixed 1/4/16/32: 81.74 / 82.06 / 82.83 / 83.69 (mean of 5)",
    2: "fixed-16 budget: 2-32-64 +1.00, 8-16-64 +0.99 pp; fixed-4 budget: 2-4-8 +0.70, 2-8-8 +0.86 pp",
    3: "Figure 1: alpha 4's deficit 'relatively constant'; alpha 0 good at the upper end, alpha 8 with the "
       "smallest configurations (no numbers given)",
    4: "all 4 picks ascending (2-32-64, 8-16-64, 2-4-8, 2-8-8); 'seems to be preferable'",
}

HOLDS, FAILS = "holds here", "does not hold here"

#: A network trained on its own that ends below this fraction of its seed's full-network test accuracy
#: counts as a failed run (e.g. its ReLUs died and it predicts one class), not as a data point.
FAILED_RUN_FRACTION = 0.5


# --------------------------------------------------------------------------------------------- failed runs
def failed_runs(records: Mapping[str, pd.DataFrame], fraction: float = FAILED_RUN_FRACTION) -> pd.DataFrame:
    """Every (seed, configuration) trained on its own that ended below ``fraction`` x the seed's full network.

    Read from the Table 2 records (fixed baselines), the selections (picks) and the ranking records.
    Columns: seed, name, accuracy (%), full (%).
    """
    table2 = records["table2"].assign(name=_table2_names(records["table2"]))
    full = {int(r["seed"]): float(r["accuracy"]) for _, r in table2[table2["network"] == "full"].iterrows()}
    rows = [(r["seed"], r["name"], r["accuracy"]) for _, r in table2[table2["network"] != "full"].iterrows()]
    rows += [(r["seed"], r["name"], r["own accuracy"]) for _, r in records["selections"].iterrows()]
    rows += [(r["seed"], r["name"], r["own accuracy"]) for _, r in records["ranking"].iterrows()]
    frame = pd.DataFrame(rows, columns=["seed", "name", "accuracy"]).drop_duplicates(["seed", "name"])
    frame["full"] = frame["seed"].map(lambda s: full.get(int(s), math.nan))
    frame = frame[frame["accuracy"] < fraction * frame["full"]].sort_values(["seed", "name"])
    return pd.DataFrame({"seed": frame["seed"].astype(int), "name": frame["name"],
                         "accuracy (%)": 100.0 * frame["accuracy"], "full (%)": 100.0 * frame["full"]}
                        ).reset_index(drop=True)


def _table2_names(table2: pd.DataFrame) -> list[str]:
    """Each Table 2 row's configuration name ('full' for the full network, which has none)."""
    return ["full" if c is None else config_name(c) for c in table2["config"]]


def drop_failed_runs(records: Mapping[str, pd.DataFrame],
                     fraction: float = FAILED_RUN_FRACTION) -> dict[str, pd.DataFrame]:
    """``records`` without the rows that use a failed run (:func:`failed_runs`) as a trained-alone value.

    Table 2 and ranking rows of a failed (seed, configuration) go; deficit rows of a failed fixed
    baseline go; selection rows go when the pick or its budget's fixed baseline failed. GroSS-only
    tables (profiles, search) are kept whole.
    """
    listed = failed_runs(records, fraction)
    failed = {(int(s), n) for s, n in zip(listed["seed"], listed["name"])}
    out = dict(records)

    def keep(frame: pd.DataFrame, *name_columns: str) -> pd.DataFrame:
        mask = pd.Series(True, index=frame.index)
        for column in name_columns:
            mask &= np.array([(int(s), n) not in failed for s, n in zip(frame["seed"], frame[column])],
                             dtype=bool)
        return frame[mask].reset_index(drop=True)

    table2 = records["table2"].assign(_name=_table2_names(records["table2"]))
    out["table2"] = keep(table2, "_name").drop(columns="_name")
    out["deficits"] = keep(records["deficits"], "name")
    out["selections"] = keep(records["selections"], "name", "budget name")
    out["ranking"] = keep(records["ranking"], "name")
    return out


# --------------------------------------------------------------------------------------------- ranking
def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b between two score lists (ties handled as in tau-b; NaN if either is constant).

    ``(concordant - discordant) / sqrt((n0 - ties_x) * (n0 - ties_y))`` over all pairs, with ``n0`` the
    number of pairs and ``ties_x`` the pairs tied in ``x``.
    """
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got shapes {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError("Kendall's tau needs at least 2 items")
    i, j = np.triu_indices(len(a), k=1)
    dx, dy = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    n0 = len(i)
    untied_x, untied_y = n0 - int((dx == 0).sum()), n0 - int((dy == 0).sum())
    if untied_x == 0 or untied_y == 0:
        return math.nan
    return float((dx * dy).sum() / math.sqrt(untied_x * untied_y))


def ranking_table(ranking: pd.DataFrame) -> pd.DataFrame:
    """Per ranked configuration (by MACs): GroSS and own-trained test accuracy, mean over seeds, and ranks.

    Ranks: 1 = the most accurate (ties share the lower rank).
    """
    out = ranking.groupby("name", sort=False).agg(macs=("macs", "first"), gross=("gross accuracy", "mean"),
                                                  own=("own accuracy", "mean"), seeds=("seed", "nunique"))
    out = out.sort_values("macs")
    out["MACs (M)"] = out.pop("macs") / 1e6
    out["GroSS (%)"] = 100.0 * out.pop("gross")
    out["own (%)"] = 100.0 * out.pop("own")
    out["GroSS - own (pp)"] = out["GroSS (%)"] - out["own (%)"]
    out["GroSS rank"] = out["GroSS (%)"].rank(ascending=False, method="min").astype(int)
    out["own rank"] = out["own (%)"].rank(ascending=False, method="min").astype(int)
    return out


def ranking_taus(ranking: pd.DataFrame) -> pd.DataFrame:
    """Kendall's tau between GroSS's and the own-trained accuracies: per seed and on the means over seeds."""
    rows = [{"seeds": str(seed), "configurations": len(part),
             "tau": kendall_tau(part["gross accuracy"], part["own accuracy"])}
            for seed, part in ranking.groupby("seed", sort=True)]
    means = ranking_table(ranking)
    rows.append({"seeds": "mean over seeds", "configurations": len(means),
                 "tau": kendall_tau(means["GroSS (%)"], means["own (%)"])})
    return pd.DataFrame(rows).set_index("seeds")


# --------------------------------------------------------------------------------------------- tables
def table2(records: pd.DataFrame) -> pd.DataFrame:
    """Table 2 over seeds, beside the paper's (:func:`grosslib.tables.table2`)."""
    return tables.table2(records)


def deficit_table(records: pd.DataFrame) -> pd.DataFrame:
    """Figure 1 left in numbers: mean deficit (pp) per alpha and fixed configuration (and its std)."""
    return tables.deficits(records)


def selections_of(records: Mapping[str, pd.DataFrame], reading: str) -> pd.DataFrame | None:
    """The search's picks of the alpha-4 GroSS network under ``reading`` (``selections_by_reading``);
    records without that table searched only one reading: ``selections`` for it, None for any other."""
    by_reading = records.get("selections_by_reading")
    if by_reading is not None and len(by_reading) and "reading" in by_reading:
        part = by_reading[by_reading["reading"] == reading]
        return part.reset_index(drop=True) if len(part) else None
    searched = records["selections"]
    label = str(searched["reading"].iloc[0]) if "reading" in searched and len(searched) else "literal"
    return searched if reading == label else None


def by_reading(records: Mapping[str, pd.DataFrame], alpha: float = 4.0,
               bins: int = 3) -> dict[str, dict[str, Any]]:
    """Tables 2-3 and Figure 1 once per reading of eq. 8 the study trained (alpha 0 in both).

    Per reading: ``table2`` (:func:`table2`, its GroSS column from the alpha-``alpha`` network of that
    reading), ``deficits`` (:func:`deficit_table`), ``flatness`` (:func:`tables.profile_flatness`),
    ``profiles`` (:func:`tables.mean_over_seeds` of every configuration evaluated), ``own_fixed``,
    ``by_cost`` (:func:`tables.profile_by_cost`) and ``table3`` (:func:`table3`; None where the study
    did not search that reading).
    """
    out = {}
    for reading in tables.readings(records["deficits"]):
        deficit_rows = tables.reading_rows(records["deficits"], reading)
        deficits = deficit_table(deficit_rows)
        profiles = tables.mean_over_seeds(tables.reading_rows(records["profiles"], reading))
        selections = selections_of(records, reading)
        gross_at_fixed = tables.table2_at_reading(records["table2"], records["deficits"], reading, alpha)
        out[reading] = {
            "table2": table2(gross_at_fixed),
            "deficits": deficits, "flatness": tables.profile_flatness(deficits), "profiles": profiles,
            "own_fixed": tables.own_fixed_accuracy(deficit_rows),
            "by_cost": tables.profile_by_cost(profiles, bins=bins),
            "table3": None if selections is None else table3(selections)}
    return out


def stack_by_reading(views: Mapping[str, Mapping[str, Any]], key: str) -> pd.DataFrame:
    """One table of :func:`by_reading`'s ``key`` for every reading that has it, readings as the outer
    index level (e.g. ``stack_by_reading(views, "flatness")``)."""
    frames = {reading: view[key] for reading, view in views.items() if view.get(key) is not None}
    if not frames:
        raise ValueError(f"no reading has a {key!r} table")
    return pd.concat(frames, names=["reading"])


def table3(selections: pd.DataFrame) -> pd.DataFrame:
    """Table 3 over seeds: per budget the fixed configuration, then each search rank, beside the paper's.

    Every seed searches its own GroSS network, so a rank may hold different configurations across seeds
    ("a / b / c", in seed order; one name when all agree). Columns: MACs (M) (mean), GroSS val / test
    (%) (mean), own (%) and own std (%) (trained on its own: the fixed baseline, or the pick), delta
    wrt fixed (pp) (mean and std over seeds of pick minus the same seed's fixed), beats fixed (seeds
    where delta > 0, as "k/n"), ascending (seeds whose pick is ascending), and the paper's
    configuration, after-train accuracy and delta.
    """
    rows = []
    paper = tables.PAPER_TABLE3
    for budget in sorted(selections["budget"].unique(), reverse=True):        # the paper's order: 16, 4
        part = selections[selections["budget"] == budget].sort_values(["rank", "seed"])
        base = part.drop_duplicates("seed")
        n = base["seed"].nunique()
        fixed_own = tables.summarise(base["budget own accuracy"])
        paper_fixed = paper[(paper["budget"] == budget) & (paper["role"] == "fixed")]
        rows.append({
            "budget": int(budget), "role": "fixed", "configuration": base["budget name"].iloc[0],
            "MACs (M)": float(base["budget macs"].iloc[0]) / 1e6, "GroSS val (%)": math.nan,
            "GroSS test (%)": 100.0 * float(base["budget gross test accuracy"].mean()),
            "own (%)": 100.0 * fixed_own["mean"], "own std (%)": 100.0 * fixed_own["std"],
            "delta wrt fixed (pp)": math.nan, "delta std (pp)": math.nan, "beats fixed": "",
            "ascending": "", "paper configuration": _first(paper_fixed, "configuration"),
            "paper own (%)": _first(paper_fixed, "fixed (%)"), "paper delta (pp)": math.nan})
        for rank, picks in part.groupby("rank", sort=True):
            names = list(picks["name"])
            deltas = 100.0 * (picks["own accuracy"].to_numpy() - picks["budget own accuracy"].to_numpy())
            own = tables.summarise(picks["own accuracy"])
            ascending = sum(tables.is_ascending(parse_config(name)) for name in names)
            paper_pick = paper[(paper["budget"] == budget) & (paper["role"] == f"search #{rank}")]
            rows.append({
                "budget": int(budget), "role": f"search #{rank}",
                "configuration": names[0] if len(set(names)) == 1 else " / ".join(names),
                "MACs (M)": float(picks["macs"].mean()) / 1e6,
                "GroSS val (%)": 100.0 * float(picks["gross val accuracy"].mean()),
                "GroSS test (%)": 100.0 * float(picks["gross test accuracy"].mean()),
                "own (%)": 100.0 * own["mean"], "own std (%)": 100.0 * own["std"],
                "delta wrt fixed (pp)": float(np.mean(deltas)),
                "delta std (pp)": float(np.std(deltas, ddof=1)) if len(deltas) > 1 else math.nan,
                "beats fixed": f"{int((deltas > 0).sum())}/{n}", "ascending": f"{ascending}/{n}",
                "paper configuration": _first(paper_pick, "configuration"),
                "paper own (%)": _first(paper_pick, "after train (%)"),
                "paper delta (pp)": _first(paper_pick, "delta wrt fixed (pp)")})
    return pd.DataFrame(rows)


def _first(frame: pd.DataFrame, column: str) -> Any:
    if not len(frame):
        return math.nan
    value = frame[column].iloc[0]
    return math.nan if value is None or (not isinstance(value, str) and pd.isna(value)) else value


def _ascending_share(names: pd.Series) -> float:
    return float(names.map(lambda n: tables.is_ascending(parse_config(n))).mean())


def ascending_preference(search: pd.DataFrame, selections: pd.DataFrame, top_n: int = 10) -> pd.DataFrame:
    """Share of ascending configurations among the best under each budget vs among all that fit it.

    Per budget: ``base share`` (ascending configurations among every configuration within the budget's
    MACs), ``top-n share`` (among each seed's ``top_n`` most accurate within the budget on the search
    split, pooled over seeds) and ``picks share`` (among the search's picks). Ascending: group sizes never
    decrease along the layers (:func:`grosslib.tables.is_ascending`).
    """
    rows = []
    budgets = selections.drop_duplicates("budget").set_index("budget")["budget macs"]
    for budget in sorted(budgets.index, reverse=True):
        limit = int(budgets[budget])
        fits = search[search["macs"] <= limit]
        flags = fits["name"].map(lambda n: tables.is_ascending(parse_config(n)))
        top = (fits.sort_values(["seed", "accuracy", "macs"], ascending=[True, False, True])
               .groupby("seed", sort=True).head(top_n))
        picks = selections[selections["budget"] == budget]["name"]
        base = fits[fits["seed"] == fits["seed"].min()]
        rows.append({"budget": int(budget), "configurations within budget": len(base),
                     "base share": float(flags[base.index].mean()),
                     f"top-{top_n} share": _ascending_share(top["name"]),
                     "picks share": _ascending_share(picks)})
    return pd.DataFrame(rows).set_index("budget")


# --------------------------------------------------------------------------------------------- claims
def _fmt(value: float, digits: int = 2) -> str:
    return "nan" if value is None or not math.isfinite(float(value)) else f"{float(value):.{digits}f}"


def claim_growth(records: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    """Claim 1 from Table 2: fixed accuracies (mean over seeds) increase with group size, all below full."""
    t2 = table2(records["table2"])
    fixed = t2[t2.index != "full"].copy()
    fixed["size"] = [int(n.split()[-1]) for n in fixed.index]
    fixed = fixed.sort_values("size")
    means = fixed["mean (%)"].to_numpy()
    full = float(t2.loc["full", "mean (%)"])
    increasing = bool(np.all(np.diff(means) > 0))
    below = bool(np.all(means < full))
    std = fixed["std (%)"].to_numpy()
    here = (f"full {_fmt(full)}; fixed {'/'.join(map(str, fixed['size']))}: "
            f"{' / '.join(_fmt(m) for m in means)} (std {' / '.join(_fmt(s) for s in std)}); "
            f"increasing: {'yes' if increasing else 'no'}, all below full: {'yes' if below else 'no'}")
    return {"holds": increasing and below, "here": here, "increasing": increasing, "below_full": below,
            "full": full, "fixed": dict(zip(fixed["size"].tolist(), means.tolist()))}


def claim_search(selections: pd.DataFrame) -> dict[str, Any]:
    """Claim 2 from Table 3: every search rank's mean delta over seeds > 0, at MACs <= the budget."""
    t3 = table3(selections)
    picks = t3[t3["role"] != "fixed"]
    cheaper = bool((selections["macs"] <= selections["budget macs"]).all())
    positive = bool((picks["delta wrt fixed (pp)"] > 0).all())
    parts = [f"fixed-{r['budget']} {r['role']}: {r['configuration']} {_fmt(r['delta wrt fixed (pp)'])} pp "
             f"(better in {r['beats fixed']} seeds)" for _, r in picks.iterrows()]
    here = "; ".join(parts) + f"; all picks within budget: {'yes' if cheaper else 'no'}"
    return {"holds": positive and cheaper, "here": here,
            "deltas": dict(zip(picks["budget"].astype(str) + " " + picks["role"],
                               picks["delta wrt fixed (pp)"]))}


def claim_temperature(deficits: pd.DataFrame, profiles: pd.DataFrame | None = None) -> dict[str, Any]:
    """Claim 3 from Figure 1: alpha 4 flattest, alpha 0 tilted to large, alpha 8 to small configurations."""
    table = deficit_table(deficits)
    flat = tables.profile_flatness(table)
    flattest = [float(a) for a in flat.index[flat["flattest"]]]
    favours = {float(a): f for a, f in flat["favours"].items()}
    ok_flat = flattest == [4.0]
    ok_zero, ok_eight = favours.get(0.0) == "large", favours.get(8.0) == "small"
    spread = flat["std of deficits (pp)"]
    here = ("std of deficits " + ", ".join(f"α {a:g}: {_fmt(v)}" for a, v in spread.items())
            + " pp; tilt (largest - smallest) " + ", ".join(f"α {a:g}: {_fmt(v)}" for a, v in
                                                          flat["tilt (pp)"].items()) + " pp")
    bands = {}
    if profiles is not None and len(profiles):
        by_cost = tables.profile_by_cost(tables.mean_over_seeds(profiles), bins=3)
        bands = tables.best_alpha_per_band(by_cost)
        here += "; best α per cost band (cheap to dear): " + ", ".join(
            f"{v:g}" for k, v in bands.items() if k.startswith("band"))
    return {"holds": ok_flat and ok_zero and ok_eight, "here": here, "flattest": flattest,
            "favours": favours, "best_alpha_per_band": bands}


def claim_ascending(search: pd.DataFrame, selections: pd.DataFrame, top_n: int = 10) -> dict[str, Any]:
    """Claim 4: ascending configurations are over-represented among the best under each budget."""
    table = ascending_preference(search, selections, top_n)
    top = f"top-{top_n} share"
    preferred = bool((table[top] > table["base share"]).all())
    here = "; ".join(f"fixed-{b}: ascending {100 * r[top]:.0f}% of the top {top_n} per seed and "
                     f"{100 * r['picks share']:.0f}% of the picks vs {100 * r['base share']:.0f}% of the "
                     f"{int(r['configurations within budget'])} that fit" for b, r in table.iterrows())
    return {"holds": preferred, "here": here, "table": table}


def claims_table(records: Mapping[str, pd.DataFrame], top_n: int = 10,
                 reading: str = "literal") -> pd.DataFrame:
    """One row per claim of the paper: what the paper reports, the numbers here and the verdict.

    Claim 3 is read from the GroSS networks trained under eq. 8's ``reading`` (alpha 0 in both);
    :mod:`grosslib.verdicts` judges it under every reading, with intervals."""
    profiles = records.get("profiles")
    results = {1: claim_growth(records), 2: claim_search(records["selections"]),
               3: claim_temperature(tables.reading_rows(records["deficits"], reading),
                                    None if profiles is None or not len(profiles)
                                    else tables.reading_rows(profiles, reading)),
               4: claim_ascending(records["search"], records["selections"], top_n)}
    rows = [{"claim": f"({k}) {CLAIMS[k]}", "paper (CIFAR-10)": PAPER_EVIDENCE[k], "here": r["here"],
             "verdict": HOLDS if r["holds"] else FAILS} for k, r in results.items()]
    return pd.DataFrame(rows).set_index("claim")
