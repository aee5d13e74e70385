"""Tests for grosslib.analysis: the tables of notebooks 03-05 on small synthetic inputs."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from grosslib import analysis
from grosslib.models import build_papernet, config_name, decompose

# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def gross_skeleton() -> torch.nn.Module:
    """PaperNet with conv2-4 as GroSS layers (no BTD steps: only the structure matters for MACs)."""
    return decompose(build_papernet(3, 10, seed=0), max_iter=0)


@dataclass
class FakeExperiment:
    """Just enough of grosslib.experiment.Experiment for the collectors, with fixed accuracies."""

    seed: int
    net: torch.nn.Module
    gross_net: torch.nn.Module
    full_acc: float = 0.99
    own: dict[tuple[int, ...], float] = field(default_factory=dict)
    gross_acc: dict[tuple[float, tuple[int, ...]], float] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    alpha: float = math.nan                 # the temperature of the last gross() call

    @property
    def data(self) -> Any:
        return SimpleNamespace(test=SimpleNamespace(images=torch.zeros(2, 3, 32, 32, dtype=torch.uint8)))

    def full_network(self) -> tuple[torch.nn.Module, Any]:
        self.calls.append("full")
        return self.net, SimpleNamespace(test_accuracy=self.full_acc)

    def gross(self, alpha: float = 4.0) -> Any:
        self.calls.append(f"gross{alpha:g}")
        self.alpha = float(alpha)
        return SimpleNamespace(net=self.gross_net, alpha=alpha)

    def fixed_configs(self, sizes: tuple[int, ...]) -> dict[int, tuple[int, ...]]:
        return {s: (s, s, s) for s in sizes}

    def fixed(self, config: tuple[int, ...]) -> Any:
        self.calls.append(f"fixed{config_name(config)}")
        return SimpleNamespace(test_accuracy=self.own[tuple(config)])

    def accuracy_at(self, net: Any, config: tuple[int, ...], split: str = "test") -> float:
        assert split == "test" and net is self.gross_net
        return self.gross_acc[(self.alpha, tuple(config))]


# --------------------------------------------------------------------------------------------- helpers
def test_replicate_seeds_follow_the_preset() -> None:
    assert analysis.replicate_seeds("quick") == [0]
    assert analysis.replicate_seeds("tiny", seed=3) == [3]
    assert analysis.replicate_seeds("paper", seed=1) == [1, 2, 3, 4, 5]
    assert analysis.replicate_seeds("quick", seed=2, replicates=3) == [2, 3, 4]
    with pytest.raises(ValueError):
        analysis.replicate_seeds("quick", replicates=0)


@pytest.mark.parametrize(("config", "expected"), [
    ((1, 1, 1), True), ((2, 4, 8), True), ((2, 8, 8), True), ((2, 32, 64), True), ((8, 4, 8), False),
    ((32, 16, 64), False), ((4,), True)])
def test_is_ascending(config: tuple[int, ...], expected: bool) -> None:
    assert analysis.is_ascending(config) is expected


def test_ascending_share_of_the_paper_search_space() -> None:
    sizes = [1, 2, 4, 8, 16, 32]
    space = [(a, b, c) for a in sizes for b in sizes for c in sizes + [64]]
    assert len(space) == 252
    # non-decreasing (a <= b <= c): multisets of size 3 from 6 sizes (56) plus a <= b with c = 64 (21)
    assert analysis.ascending_share(space) == pytest.approx(77 / 252)
    assert analysis.ascending_share([(1, 2, 4), (4, 2, 1)]) == 0.5
    assert math.isnan(analysis.ascending_share([]))


def test_summarise() -> None:
    s = analysis.summarise([0.9, 0.8, 1.0, math.nan])
    assert s["n"] == 3 and s["median"] == pytest.approx(0.9) and s["mean"] == pytest.approx(0.9)
    assert s["std"] == pytest.approx(0.1)
    one = analysis.summarise([0.5])
    assert one["n"] == 1 and one["mean"] == 0.5 and math.isnan(one["std"])
    assert analysis.summarise([])["n"] == 0


def test_paper_tables_hold_method_md_numbers() -> None:
    t2 = analysis.PAPER_TABLE2.set_index("network")
    assert t2.loc["full", "median (%)"] == 83.88 and t2.loc["fixed 4", "mean (%)"] == 82.06
    assert list(t2["MACs (M)"]) == [4.42, 4.28, 2.66, 1.44, 1.14]
    t3 = analysis.PAPER_TABLE3
    picks = t3[t3["role"] != "fixed"].set_index("configuration")
    assert picks.loc["2-32-64", "after train (%)"] == 83.84
    assert picks.loc["2-8-8", "delta wrt fixed (pp)"] == 0.86
    assert all(analysis.is_ascending(tuple(map(int, n.split("-")))) for n in picks.index)


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
    curves = analysis.learning_curves({"reconstruction": recon, "fine-tuning": tune})
    assert len(curves) == 2 * 4 + 2                                  # headline keys skipped
    assert set(curves["metric"]) == {"recon_loss", "accuracy"}
    tuned = curves[curves["stage"] == "fine-tuning"]
    assert list(tuned["step"]) == [3, 3] and list(tuned["epoch"]) == [1, 1]
    ends = analysis.curve_endpoints(curves).set_index(["stage", "metric", "config"])
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
    table = analysis.table2(_records())
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
    assert "paper median (%)" not in analysis.table2(_records(), paper=None).columns


def test_table2_records_from_experiments(gross_skeleton: torch.nn.Module) -> None:
    own = {(1, 1, 1): 0.9, (4, 4, 4): 0.95}
    exp = FakeExperiment(0, build_papernet(3, 10, seed=0), gross_skeleton, full_acc=0.97, own=own,
                         gross_acc={(4.0, (1, 1, 1)): 0.85, (4.0, (4, 4, 4)): 0.93})
    records = analysis.table2_records([exp], sizes=(1, 4), alpha=4.0)
    assert list(records["network"]) == ["full", "fixed 1", "fixed 4"]
    by = records.set_index("network")
    assert by.loc["full", "macs"] == 5_081_600 and by.loc["full", "accuracy"] == 0.97     # macs.py's table
    assert by.loc["fixed 4", "macs"] == 2_210_304 and by.loc["fixed 1", "macs"] == 1_906_176
    assert by.loc["fixed 4", "accuracy"] == 0.95 and by.loc["fixed 4", "gross accuracy"] == 0.93
    assert exp.calls == ["full", "gross4", "fixed1-1-1", "fixed4-4-4"]


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
    table = analysis.deficits(_deficit_records())
    assert len(table) == 9
    row = table[(table["alpha"] == 0.0) & (table["group size"] == 1)].iloc[0]
    assert row["name"] == "1-1-1" and row["macs"] == 1000
    assert row["GroSS (%)"] == pytest.approx(80.5) and row["fixed (%)"] == pytest.approx(90.0)
    assert row["deficit (pp)"] == pytest.approx(-9.5)
    assert row["deficit std (pp)"] == pytest.approx(1 / math.sqrt(2))


def test_profile_flatness_identifies_the_flat_and_the_tilted_profiles() -> None:
    flat = analysis.profile_flatness(analysis.deficits(_deficit_records()))
    assert list(flat.index) == [0.0, 4.0, 8.0]
    # mean deficits per alpha (pp, +0.5 for the noise of the second replicate)
    assert flat.loc[0.0, "mean deficit (pp)"] == pytest.approx(np.mean([-10, -4, -1]) + 0.5)
    assert flat.loc[4.0, "std of deficits (pp)"] == pytest.approx(np.std([-2, -2, -2]), abs=1e-9)
    assert flat.loc[0.0, "tilt (pp)"] == pytest.approx(9.0) and flat.loc[0.0, "favours"] == "large"
    assert flat.loc[8.0, "tilt (pp)"] == pytest.approx(-7.0) and flat.loc[8.0, "favours"] == "small"
    assert flat.loc[4.0, "favours"] == "neither"
    assert list(flat["flattest"]) == [False, True, False]
    assert flat.loc[0.0, "range (pp)"] == pytest.approx(9.0)


def test_deficit_records_from_experiments(gross_skeleton: torch.nn.Module) -> None:
    own = {(1, 1, 1): 0.90, (4, 4, 4): 0.95}
    exp = FakeExperiment(0, build_papernet(3, 10, seed=0), gross_skeleton, own=own,
                         gross_acc={(4.0, (1, 1, 1)): 0.89, (4.0, (4, 4, 4)): 0.92})
    records = analysis.deficit_records([exp], alphas=[4.0], sizes=(1, 4))
    assert list(records["name"]) == ["1-1-1", "4-4-4"]
    assert list(records["deficit (pp)"]) == pytest.approx([-1.0, -3.0])
    assert list(records["macs"]) == [1_906_176, 2_210_304]


def _evaluations() -> pd.DataFrame:
    rows = [((1, 1), 100, 0.80), ((1, 2), 150, 0.86), ((2, 1), 150, 0.84), ((2, 2), 200, 0.90),
            ((1, 4), 220, 0.88), ((4, 4), 400, 0.91), ((2, 4), 300, 0.93)]
    return pd.DataFrame({"config": [r[0] for r in rows], "name": [config_name(r[0]) for r in rows],
                         "macs": [r[1] for r in rows], "accuracy": [r[2] for r in rows]})


def test_profile_by_cost_bands_are_shared_across_alphas() -> None:
    base = _evaluations().iloc[:6]                                   # 6 configs -> 3 bands of 2
    low = base.assign(alpha=8.0, accuracy=[0.9, 0.9, 0.5, 0.5, 0.5, 0.5])
    high = base.assign(alpha=0.0, accuracy=[0.5, 0.5, 0.5, 0.5, 0.9, 0.9])
    by_cost = analysis.profile_by_cost(pd.concat([low, high]), bins=3)
    assert list(by_cost.columns) == ["band 1 (%)", "band 2 (%)", "band 3 (%)", "all (%)"]
    assert by_cost.loc[8.0, "band 1 (%)"] == pytest.approx(90.0)
    assert by_cost.loc[0.0, "band 3 (%)"] == pytest.approx(90.0)
    assert by_cost.loc[0.0, "all (%)"] == pytest.approx(100 * (0.5 * 4 + 1.8) / 6)
    best = analysis.best_alpha_per_band(by_cost)
    assert best["band 1 (%)"] == 8.0 and best["band 3 (%)"] == 0.0


def test_mean_over_seeds() -> None:
    base = _evaluations()
    records = pd.concat([base.assign(seed=0, alpha=4.0), base.assign(seed=1, alpha=4.0,
                                                                     accuracy=base["accuracy"] - 0.1)])
    mean = analysis.mean_over_seeds(records)
    assert len(mean) == len(base)
    assert mean.set_index("name").loc["2-4", "accuracy"] == pytest.approx(0.88)


# --------------------------------------------------------------------------------------------- notebook 05
def test_select_under_budgets_top_k() -> None:
    df = _evaluations()
    picks = analysis.select_under_budgets(df, {2: (2, 2), 4: (4, 4)}, k=2)
    low = picks[picks["budget"] == 2]
    assert list(low["name"]) == ["2-2", "1-2"] and list(low["rank"]) == [1, 2]
    assert set(low["budget macs"]) == {200}
    high = picks[picks["budget"] == 4]
    assert list(high["name"]) == ["2-4", "4-4"] and list(high["macs"]) == [300, 400]
    assert all(picks["macs"] <= picks["budget macs"])


def test_table3_rows_and_deltas() -> None:
    df = _evaluations()
    picks = analysis.select_under_budgets(df, {4: (4, 4)}, k=2)     # 2-4 (0.93) then 4-4 itself (0.91)
    own = {(4, 4): [0.95, 0.97], (2, 4): [0.97, 0.99]}
    table = analysis.table3(picks, df, own, gross_test={(2, 4): 0.92})
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


def test_own_accuracies_deduplicates(gross_skeleton: torch.nn.Module) -> None:
    exps = [FakeExperiment(s, build_papernet(3, 10, seed=0), gross_skeleton, own={(1, 1, 1): 0.9 + s / 100})
            for s in (0, 1)]
    own = analysis.own_accuracies(exps, [(1, 1, 1), [1, 1, 1]])
    assert list(own) == [(1, 1, 1)] and own[(1, 1, 1)] == pytest.approx([0.90, 0.91])
    assert exps[0].calls == ["fixed1-1-1"]


def test_diverged_detects_non_finite_losses() -> None:
    fine = _history([{"train_loss": 1.0}, {"train_loss": 0.5}])
    broken = _history([{"train_loss": 1.0}, {"train_loss": math.nan}])
    blown = _history([{"train_loss": math.inf}])
    assert not analysis.diverged(fine) and analysis.diverged(broken) and analysis.diverged(blown)
    stage = SimpleNamespace(reconstruct=fine, finetune=broken)
    assert analysis.diverged(stage)
    assert not analysis.diverged(SimpleNamespace(reconstruct=fine, finetune=None))
    assert analysis.diverged_stages({"a": fine, "b": stage, "c": blown}) == ["b", "c"]
