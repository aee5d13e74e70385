"""Tests for grosslib.records: the collectors of notebooks 03-05 on fake experiments, and the seed helpers."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
import torch

from grosslib import records
from grosslib.experiment import Experiment
from grosslib.models import build_papernet, config_name, decompose
from grosslib.presets import get_preset

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
    reading: str = "literal"                # and its reading of eq. 8

    @property
    def data(self) -> Any:
        return SimpleNamespace(test=SimpleNamespace(images=torch.zeros(2, 3, 32, 32, dtype=torch.uint8)))

    def full_network(self) -> tuple[torch.nn.Module, Any]:
        self.calls.append("full")
        return self.net, SimpleNamespace(test_accuracy=self.full_acc)

    def gross(self, alpha: float = 4.0, reading: str = "literal") -> Any:
        self.calls.append(f"gross{alpha:g}" + ("" if reading == "literal" else f"-{reading}"))
        self.alpha, self.reading = float(alpha), reading
        return SimpleNamespace(net=self.gross_net, alpha=alpha)

    def _gross_accuracy(self, alpha: float, reading: str, config: tuple[int, ...]) -> float:
        """``gross_acc[(alpha, reading, config)]`` if given, else ``gross_acc[(alpha, config)]``."""
        return self.gross_acc.get((alpha, reading, config), self.gross_acc.get((alpha, config)))

    def fixed_configs(self, sizes: tuple[int, ...]) -> dict[int, tuple[int, ...]]:
        return {s: (s, s, s) for s in sizes}

    def fixed(self, config: tuple[int, ...]) -> Any:
        self.calls.append(f"fixed{config_name(config)}")
        return SimpleNamespace(test_accuracy=self.own[tuple(config)])

    def accuracy_at(self, net: Any, config: tuple[int, ...], split: str = "test") -> float:
        assert split == "test" and net is self.gross_net
        return self._gross_accuracy(self.alpha, self.reading, tuple(config))

    def gross_evaluations(self, alpha: float, split: str = "val", net: Any = None,
                          reading: str = "literal", configs: Any = None) -> pd.DataFrame:
        self.calls.append(f"evaluations{alpha:g}-{split}" + ("" if reading == "literal" else f"-{reading}"))
        configs = [(1, 1, 1), (4, 4, 4)] if configs is None else [tuple(c) for c in configs]
        return pd.DataFrame({"config": configs, "name": [config_name(c) for c in configs],
                             "accuracy": [self._gross_accuracy(float(alpha), reading, c) for c in configs]})


# --------------------------------------------------------------------------------------------- helpers
def test_replicate_seeds_follow_the_preset() -> None:
    assert records.replicate_seeds("quick") == [0]
    assert records.replicate_seeds("tiny", seed=3) == [3]
    assert records.replicate_seeds("paper", seed=1) == [1, 2, 3, 4, 5]
    assert records.replicate_seeds("study") == list(range(get_preset("study").replicates))
    assert records.replicate_seeds(get_preset("paper")) == [0, 1, 2, 3, 4]      # a Preset object too
    assert records.replicate_seeds("quick", seed=2, replicates=3) == [2, 3, 4]
    with pytest.raises(ValueError, match="replicates"):
        records.replicate_seeds("quick", replicates=0)
    with pytest.raises(ValueError, match="unknown preset"):
        records.replicate_seeds("nope")


def test_percent_and_as_config() -> None:
    assert records.percent(0.25) == 25.0
    assert math.isnan(records.percent(None)) and math.isnan(records.percent(math.nan))
    assert records.as_config([1, 4.0, "16"]) == (1, 4, 16)
    assert records.as_config(None) is None


def test_make_experiments_one_per_seed(tmp_path: Any) -> None:
    exps = records.make_experiments("digits", "tiny", [3, 4], run_dir=tmp_path, progress=False)
    assert [type(e) for e in exps] == [Experiment, Experiment]
    assert [e.seed for e in exps] == [3, 4]
    assert all(e.run_dir == tmp_path and e.settings.name == "tiny" and not e.progress for e in exps)
    assert exps[0].seed_dir != exps[1].seed_dir


# --------------------------------------------------------------------------------------------- collectors
def test_table2_records_from_experiments(gross_skeleton: torch.nn.Module) -> None:
    own = {(1, 1, 1): 0.9, (4, 4, 4): 0.95}
    exp = FakeExperiment(0, build_papernet(3, 10, seed=0), gross_skeleton, full_acc=0.97, own=own,
                         gross_acc={(4.0, (1, 1, 1)): 0.85, (4.0, (4, 4, 4)): 0.93})
    table = records.table2_records([exp], sizes=(1, 4), alpha=4.0)
    assert list(table["network"]) == ["full", "fixed 1", "fixed 4"]
    by = table.set_index("network")
    assert by.loc["full", "macs"] == 5_081_600 and by.loc["full", "accuracy"] == 0.97     # macs.py's table
    assert by.loc["fixed 4", "macs"] == 2_210_304 and by.loc["fixed 1", "macs"] == 1_906_176
    assert by.loc["fixed 4", "accuracy"] == 0.95 and by.loc["fixed 4", "gross accuracy"] == 0.93
    assert math.isnan(by.loc["full", "gross accuracy"])
    assert exp.calls == ["full", "gross4", "fixed1-1-1", "fixed4-4-4"]


def test_deficit_records_from_experiments(gross_skeleton: torch.nn.Module) -> None:
    own = {(1, 1, 1): 0.90, (4, 4, 4): 0.95}
    exp = FakeExperiment(0, build_papernet(3, 10, seed=0), gross_skeleton, own=own,
                         gross_acc={(4.0, (1, 1, 1)): 0.89, (4.0, (4, 4, 4)): 0.92})
    table = records.deficit_records([exp], alphas=[4.0], sizes=(1, 4))
    assert list(table["name"]) == ["1-1-1", "4-4-4"]
    assert list(table["deficit (pp)"]) == pytest.approx([-1.0, -3.0])
    assert list(table["macs"]) == [1_906_176, 2_210_304]
    assert list(table["fixed accuracy"]) == [0.90, 0.95]


def test_deficit_records_under_both_readings(gross_skeleton: torch.nn.Module) -> None:
    own = {(1, 1, 1): 0.90, (4, 4, 4): 0.95}
    acc = {(0.0, (1, 1, 1)): 0.80, (0.0, (4, 4, 4)): 0.85, (4.0, "literal", (1, 1, 1)): 0.89,
           (4.0, "literal", (4, 4, 4)): 0.92, (4.0, "normalized", (1, 1, 1)): 0.88,
           (4.0, "normalized", (4, 4, 4)): 0.94}
    exp = FakeExperiment(0, build_papernet(3, 10, seed=0), gross_skeleton, own=own, gross_acc=acc)
    table = records.deficit_records([exp], alphas=[0.0, 4.0], sizes=(1, 4),
                                    readings=("literal", "normalized"))
    # alpha 0 is uniform under both readings: trained and recorded once, as 'literal'
    assert list(zip(table["alpha"], table["reading"])) == [(0.0, "literal")] * 2 + [(4.0, "literal")] * 2 + [
        (4.0, "normalized")] * 2
    assert list(table["deficit (pp)"]) == pytest.approx([-10.0, -10.0, -1.0, -3.0, -2.0, -1.0])
    assert exp.calls.count("gross0") == 1 and "gross4-normalized" in exp.calls
    assert records.sampling_variants([0.0, 4.0, 8.0], ("literal", "normalized")) == [
        (0.0, "literal"), (4.0, "literal"), (8.0, "literal"), (4.0, "normalized"), (8.0, "normalized")]


def test_all_config_records_tags_seed_and_alpha(gross_skeleton: torch.nn.Module) -> None:
    acc = {(a, c): 0.5 + a / 100 + c[0] / 1000 for a in (0.0, 4.0) for c in ((1, 1, 1), (4, 4, 4))}
    exps = [FakeExperiment(s, build_papernet(3, 10, seed=0), gross_skeleton, gross_acc=acc) for s in (0, 1)]
    table = records.all_config_records(exps, alphas=[0.0, 4.0], split="val")
    assert len(table) == 2 * 2 * 2 and list(table.index) == list(range(8))
    assert list(table["seed"]) == [0] * 4 + [1] * 4
    assert list(table["alpha"]) == [0.0, 0.0, 4.0, 4.0] * 2
    row = table[(table["seed"] == 1) & (table["alpha"] == 4.0) & (table["name"] == "4-4-4")]
    assert row["accuracy"].item() == pytest.approx(0.544)
    assert exps[0].calls == ["evaluations0-val", "evaluations4-val"]


def test_own_accuracies_deduplicates(gross_skeleton: torch.nn.Module) -> None:
    exps = [FakeExperiment(s, build_papernet(3, 10, seed=0), gross_skeleton, own={(1, 1, 1): 0.9 + s / 100})
            for s in (0, 1)]
    own = records.own_accuracies(exps, [(1, 1, 1), [1, 1, 1]])
    assert list(own) == [(1, 1, 1)] and own[(1, 1, 1)] == pytest.approx([0.90, 0.91])
    assert exps[0].calls == ["fixed1-1-1"]
