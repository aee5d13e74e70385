"""Tests for grosslib.tables and search.select_under_budgets: notebooks 03-05's tables on small frames."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from grosslib import tables
from grosslib.models import config_name
from grosslib.search import select_under_budgets


# --------------------------------------------------------------------------------------------- helpers
@pytest.mark.parametrize(("config", "expected"), [
    ((1, 1, 1), True), ((2, 4, 8), True), ((2, 8, 8), True), ((2, 32, 64), True), ((8, 4, 8), False),
    ((32, 16, 64), False), ((4,), True)])
def test_is_ascending(config: tuple[int, ...], expected: bool) -> None:
    assert tables.is_ascending(config) is expected


def test_ascending_share_of_the_paper_search_space() -> None:
    sizes = [1, 2, 4, 8, 16, 32]
    space = [(a, b, c) for a in sizes for b in sizes for c in sizes + [64]]
    assert len(space) == 252
    # non-decreasing (a <= b <= c): multisets of size 3 from 6 sizes (56) plus a <= b with c = 64 (21)
    assert tables.ascending_share(space) == pytest.approx(77 / 252)
    assert tables.ascending_share([(1, 2, 4), (4, 2, 1)]) == 0.5
    assert math.isnan(tables.ascending_share([]))


def test_summarise() -> None:
    s = tables.summarise([0.9, 0.8, 1.0, math.nan])
    assert s["n"] == 3 and s["median"] == pytest.approx(0.9) and s["mean"] == pytest.approx(0.9)
    assert s["std"] == pytest.approx(0.1)
    one = tables.summarise([0.5])
    assert one["n"] == 1 and one["mean"] == 0.5 and math.isnan(one["std"])
    assert tables.summarise([])["n"] == 0


def test_paper_tables_hold_method_md_numbers() -> None:
    t2 = tables.PAPER_TABLE2.set_index("network")
    assert t2.loc["full", "median (%)"] == 83.88 and t2.loc["fixed 4", "mean (%)"] == 82.06
    assert list(t2["MACs (M)"]) == [4.42, 4.28, 2.66, 1.44, 1.14]
    t3 = tables.PAPER_TABLE3
    picks = t3[t3["role"] != "fixed"].set_index("configuration")
    assert picks.loc["2-32-64", "after train (%)"] == 83.84
    assert picks.loc["2-8-8", "delta wrt fixed (pp)"] == 0.86
    assert all(tables.is_ascending(tuple(map(int, n.split("-")))) for n in picks.index)


# --------------------------------------------------------------------------------------------- notebook 03
def _history(values: list[dict[str, float]]) -> SimpleNamespace:
    return SimpleNamespace(history=[{"epoch": i + 1, "lr": 0.1, **v} for i, v in enumerate(values)])


def test_learning_curves_long_table_and_endpoints() -> None:
    recon = _history([{"val_recon_loss@1-1": 0.9, "val_recon_loss@2-4": 0.5, "val_recon_loss": 0.5,
                       "val_accuracy@1-1": 0.7, "val_accuracy@2-4": 0.8, "val_accuracy": 0.8},
                      {"val_recon_loss@1-1": 0.8, "val_recon_loss@2-4": 0.4, "val_recon_loss": 0.4,
                       "val_accuracy@1-1": 0.75, "val_accuracy@2-4": 0.85, "val_accuracy": 0.85}])
    tune = _history([{"val_accuracy@1-1": 0.9, "val_accuracy@2-4": 0.95, "val_accuracy": 0.95,
                      "sampled": {"conv2": {"1": 3}}}])
    curves = tables.learning_curves({"reconstruction": recon, "fine-tuning": tune})
    assert len(curves) == 2 * 4 + 2                                  # headline keys skipped
    assert set(curves["metric"]) == {"recon_loss", "accuracy"}
    tuned = curves[curves["stage"] == "fine-tuning"]
    assert list(tuned["step"]) == [3, 3] and list(tuned["epoch"]) == [1, 1]
    ends = tables.curve_endpoints(curves).set_index(["stage", "metric", "config"])
    assert ends.loc[("reconstruction", "recon_loss", "1-1"), "first epoch"] == 0.9
    assert ends.loc[("reconstruction", "recon_loss", "2-4"), "last epoch"] == 0.4
    assert ends.loc[("fine-tuning", "accuracy", "2-4"), "last epoch"] == 0.95


def _records() -> pd.DataFrame:
    rows = []
    for seed, shift in ((0, 0.0), (1, 0.02)):
        rows.append({"seed": seed, "network": "full", "group size": None, "config": None, "macs": 5_000_000,
                     "accuracy": 0.98 + shift, "gross accuracy": math.nan})
        for s, macs, own, gross in ((1, 1_000_000, 0.90, 0.88), (4, 2_000_000, 0.94, 0.91),
                                    (32, 4_000_000, 0.97, 0.96)):
            rows.append({"seed": seed, "network": f"fixed {s}", "group size": s, "config": (s, s, s),
                         "macs": macs, "accuracy": own + shift, "gross accuracy": gross + shift})
    return pd.DataFrame(rows)


def test_table2_aggregates_replicates_and_sits_beside_the_paper() -> None:
    table = tables.table2(_records())
    assert list(table.index) == ["full", "fixed 32", "fixed 4", "fixed 1"]
    assert table.loc["full", "configuration"] == "-" and table.loc["fixed 4", "configuration"] == "4-4-4"
    assert table.loc["fixed 4", "MACs (M)"] == pytest.approx(2.0)
    assert table.loc["fixed 4", "runs"] == 2
    assert table.loc["fixed 4", "mean (%)"] == pytest.approx(95.0)
    assert table.loc["fixed 4", "median (%)"] == pytest.approx(95.0)
    assert table.loc["fixed 4", "std (%)"] == pytest.approx(100 * 0.02 / math.sqrt(2))
    assert table.loc["fixed 4", "GroSS (%)"] == pytest.approx(92.0)
    assert table.loc["fixed 4", "GroSS - fixed (pp)"] == pytest.approx(-3.0)
    assert math.isnan(table.loc["full", "GroSS (%)"])
    assert table.loc["fixed 4", "paper median (%)"] == 82.09
    assert table.loc["fixed 4", "paper GroSS (%)"] == 80.37
    assert table.loc["full", "paper MACs (M)"] == 4.42 and math.isnan(table.loc["fixed 1", "paper GroSS (%)"])
    assert "paper median (%)" not in tables.table2(_records(), paper=None).columns


# --------------------------------------------------------------------------------------------- notebook 04
def _deficit_records() -> pd.DataFrame:
    # alpha 0: good at large, poor at small; alpha 4: flat; alpha 8: good at small, poor at large
    gross = {0.0: (0.80, 0.90, 0.96), 4.0: (0.88, 0.92, 0.95), 8.0: (0.90, 0.91, 0.90)}
    fixed = (0.90, 0.94, 0.97)
    rows = []
    for seed, noise in ((0, 0.0), (1, 0.01)):
        for alpha, values in gross.items():
            for (s, own), g in zip(zip((1, 4, 32), fixed), values):
                acc = g + noise
                rows.append({"seed": seed, "alpha": alpha, "group size": s, "config": (s, s, s),
                             "name": config_name((s, s, s)), "macs": 1000 * s, "gross accuracy": acc,
                             "fixed accuracy": own, "deficit (pp)": 100 * acc - 100 * own})
    return pd.DataFrame(rows)


def test_deficits_average_over_replicates() -> None:
    table = tables.deficits(_deficit_records())
    assert len(table) == 9
    row = table[(table["alpha"] == 0.0) & (table["group size"] == 1)].iloc[0]
    assert row["name"] == "1-1-1" and row["macs"] == 1000
    assert row["GroSS (%)"] == pytest.approx(80.5) and row["fixed (%)"] == pytest.approx(90.0)
    assert row["deficit (pp)"] == pytest.approx(-9.5)
    assert row["deficit std (pp)"] == pytest.approx(1 / math.sqrt(2))


def test_profile_flatness_identifies_the_flat_and_the_tilted_profiles() -> None:
    flat = tables.profile_flatness(tables.deficits(_deficit_records()))
    assert list(flat.index) == [0.0, 4.0, 8.0]
    # mean deficits per alpha (pp, +0.5 for the noise of the second replicate)
    assert flat.loc[0.0, "mean deficit (pp)"] == pytest.approx(np.mean([-10, -4, -1]) + 0.5)
    assert flat.loc[4.0, "std of deficits (pp)"] == pytest.approx(np.std([-2, -2, -2]), abs=1e-9)
    assert flat.loc[0.0, "tilt (pp)"] == pytest.approx(9.0) and flat.loc[0.0, "favours"] == "large"
    assert flat.loc[8.0, "tilt (pp)"] == pytest.approx(-7.0) and flat.loc[8.0, "favours"] == "small"
    assert flat.loc[4.0, "favours"] == "neither"
    assert list(flat["flattest"]) == [False, True, False]
    assert flat.loc[0.0, "range (pp)"] == pytest.approx(9.0)


def _evaluations() -> pd.DataFrame:
    rows = [((1, 1), 100, 0.80), ((1, 2), 150, 0.86), ((2, 1), 150, 0.84), ((2, 2), 200, 0.90),
            ((1, 4), 220, 0.88), ((4, 4), 400, 0.91), ((2, 4), 300, 0.93)]
    return pd.DataFrame({"config": [r[0] for r in rows], "name": [config_name(r[0]) for r in rows],
                         "macs": [r[1] for r in rows], "accuracy": [r[2] for r in rows]})


def test_profile_by_cost_bands_are_shared_across_alphas() -> None:
    base = _evaluations().iloc[:6]                                   # 6 configs -> 3 bands of 2
    low = base.assign(alpha=8.0, accuracy=[0.9, 0.9, 0.5, 0.5, 0.5, 0.5])
    high = base.assign(alpha=0.0, accuracy=[0.5, 0.5, 0.5, 0.5, 0.9, 0.9])
    by_cost = tables.profile_by_cost(pd.concat([low, high]), bins=3)
    assert list(by_cost.columns) == ["band 1 (%)", "band 2 (%)", "band 3 (%)", "all (%)"]
    assert by_cost.loc[8.0, "band 1 (%)"] == pytest.approx(90.0)
    assert by_cost.loc[0.0, "band 3 (%)"] == pytest.approx(90.0)
    assert by_cost.loc[0.0, "all (%)"] == pytest.approx(100 * (0.5 * 4 + 1.8) / 6)
    best = tables.best_alpha_per_band(by_cost)
    assert best["band 1 (%)"] == 8.0 and best["band 3 (%)"] == 0.0
    with pytest.raises(ValueError, match="name"):
        tables.profile_by_cost(pd.concat([low, high]).drop(columns="name"))


def test_mean_over_seeds() -> None:
    base = _evaluations()
    records = pd.concat([base.assign(seed=0, alpha=4.0), base.assign(seed=1, alpha=4.0,
                                                                     accuracy=base["accuracy"] - 0.1)])
    mean = tables.mean_over_seeds(records)
    assert len(mean) == len(base)
    assert mean.set_index("name").loc["2-4", "accuracy"] == pytest.approx(0.88)


# --------------------------------------------------------------------------------------------- notebook 05
def test_select_under_budgets_top_k() -> None:
    df = _evaluations()
    picks = select_under_budgets(df, {2: (2, 2), 4: (4, 4)}, k=2)
    low = picks[picks["budget"] == 2]
    assert list(low["name"]) == ["2-2", "1-2"] and list(low["rank"]) == [1, 2]
    assert set(low["budget macs"]) == {200}
    high = picks[picks["budget"] == 4]
    assert list(high["name"]) == ["2-4", "4-4"] and list(high["macs"]) == [300, 400]
    assert all(picks["macs"] <= picks["budget macs"])


def _table3() -> pd.DataFrame:
    df = _evaluations()
    picks = select_under_budgets(df, {4: (4, 4)}, k=2)               # 2-4 (0.93) then 4-4 itself (0.91)
    own = {(4, 4): [0.95, 0.97], (2, 4): [0.97, 0.99]}
    return tables.table3(picks, df, own, gross_test={(2, 4): 0.92})


def test_table3_rows_and_deltas() -> None:
    table = _table3()
    assert list(table["configuration"]) == ["4-4", "2-4", "4-4"]
    assert list(table["role"]) == ["fixed", "search #1", "search #2"]
    fixed, first, second = (table.iloc[i] for i in range(3))
    assert fixed["fixed (%)"] == pytest.approx(96.0) and math.isnan(fixed["after train (%)"])
    assert fixed["GroSS val (%)"] == pytest.approx(91.0) and fixed["MACs (M)"] == pytest.approx(400e-6)
    assert first["after train (%)"] == pytest.approx(98.0)
    assert first["delta wrt fixed (pp)"] == pytest.approx(2.0)
    assert first["GroSS test (%)"] == pytest.approx(92.0) and math.isnan(fixed["GroSS test (%)"])
    assert second["delta wrt fixed (pp)"] == pytest.approx(0.0)      # the budget config picked itself
    assert list(table["ascending"]) == [True, True, True]


def test_diverged_detects_non_finite_losses() -> None:
    fine = _history([{"train_loss": 1.0}, {"train_loss": 0.5}])
    broken = _history([{"train_loss": 1.0}, {"train_loss": math.nan}])
    blown = _history([{"train_loss": math.inf}])
    assert not tables.diverged(fine) and tables.diverged(broken) and tables.diverged(blown)
    stage = SimpleNamespace(reconstruct=fine, finetune=broken)
    assert tables.diverged(stage)
    assert not tables.diverged(SimpleNamespace(reconstruct=fine, finetune=None))
    assert tables.diverged_stages({"a": fine, "b": stage, "c": blown}) == ["b", "c"]


# --------------------------------------------------------------------------------------------- per alpha
def test_by_alpha_keys_temperatures_as_the_metrics_do() -> None:
    keyed = tables.by_alpha({4.0: "a", 0: "b", 0.5: "c", np.float64(8.0): "d"})
    assert keyed == {"4": "a", "0": "b", "0.5": "c", "8": "d"}
    assert list(keyed) == ["4", "0", "0.5", "8"]                      # order kept
    assert all(isinstance(k, str) for k in keyed)
    assert json.loads(json.dumps(keyed)) == keyed
    assert tables.by_alpha({}) == {}


def test_deficits_by_alpha_nests_the_deficit_table() -> None:
    nested = tables.deficits_by_alpha(tables.deficits(_deficit_records()))
    assert set(nested) == {"0", "4", "8"}
    assert nested["0"] == pytest.approx({1: -9.5, 4: -3.5, 32: -0.5})
    assert nested["4"] == pytest.approx({1: -1.5, 4: -1.5, 32: -1.5})
    assert nested["8"] == pytest.approx({1: 0.5, 4: -2.5, 32: -6.5})
    assert all(isinstance(s, int) for sizes in nested.values() for s in sizes)


def test_picks_summary_of_table3() -> None:
    summary = tables.picks_summary(_table3())
    assert summary["n"] == 2 and summary["better"] == 1 and summary["ascending"] == 2
    assert summary["deltas"] == pytest.approx({"2-4": 2.0, "4-4": 0.0})
    assert summary["best_delta"] == pytest.approx({4: 2.0})


def test_picks_summary_counts_only_picks_over_budgets() -> None:
    table = pd.DataFrame([
        (16, "16-16", "fixed", math.nan, True),
        (16, "2-32", "search #1", 1.0, True),
        (16, "32-2", "search #2", -0.5, False),
        (4, "4-4", "fixed", math.nan, True),
        (4, "8-2", "search #1", -0.2, False),
        (4, "2-8", "search #2", -0.1, True)],
        columns=["budget", "configuration", "role", "delta wrt fixed (pp)", "ascending"])
    summary = tables.picks_summary(table)
    assert summary["n"] == 4 and summary["better"] == 1 and summary["ascending"] == 2
    assert set(summary["deltas"]) == {"2-32", "32-2", "8-2", "2-8"}
    assert summary["best_delta"] == pytest.approx({16: 1.0, 4: -0.1})
    assert list(summary["best_delta"]) == [16, 4]


def test_own_fixed_accuracy_means_over_replicates() -> None:
    records = _deficit_records()
    records.loc[records["seed"] == 1, "fixed accuracy"] += 0.02
    own = tables.own_fixed_accuracy(records)
    assert list(own.index) == [1, 4, 32]
    assert list(own["macs"]) == [1000, 4000, 32000]
    assert list(own["accuracy"]) == pytest.approx([0.91, 0.95, 0.98])
