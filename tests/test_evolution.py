"""Tests for grosslib.evolution: memoised fitness, evolutionary and beam search under MAC/latency budgets."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import grosslib.search
from grosslib.evolution import (
    CachedFitness,
    EvolutionSettings,
    SearchResult,
    SearchSpace,
    beam_search,
    evolution_search,
)
from grosslib.latency import LatencyTable
from grosslib.macs import config_macs
from grosslib.models import config_name, decompose, decomposed_layers, search_space
from grosslib.search import evaluate_all, select

MEAN, STD = (0.45, 0.5, 0.55), (0.25, 0.2, 0.3)
HW = (8, 8)
RECORDS = Path(__file__).resolve().parents[1] / "results" / "fashion-mnist-study" / "records.json"


def tiny_net() -> nn.Module:
    """Three GroSS layers with sizes 1, 2, 4, 8: 64 configurations on 8x8 images."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    return decompose(net, (1, 2, 4, 8), init="svd", max_iter=0).eval()


@pytest.fixture(scope="module")
def net() -> nn.Module:
    return tiny_net()


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (48, 3, *HW), dtype=torch.uint8, generator=g)
    return images, torch.randint(0, 10, (48,), generator=g)


@pytest.fixture(scope="module")
def table(net: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> pd.DataFrame:
    """The exhaustive evaluation of the tiny network (64 rows)."""
    return evaluate_all(net, data, batch_size=16, mean=MEAN, std=STD, progress=False)


def never(config: tuple[int, ...]) -> float:
    raise AssertionError(f"evaluated {config} although the inputs were bad")


# ---------------------------------------------------------------------------------------------------------
# Search space and fitness
# ---------------------------------------------------------------------------------------------------------


def test_space_from_network(net: nn.Module) -> None:
    space = SearchSpace.from_network(net, input_hw=HW)
    assert space.layer_names == tuple(name for name, _ in decomposed_layers(net))
    assert space.sizes == ((1, 2, 4, 8),) * 3 and space.size == 64 == len(search_space(net))
    for config in [(1, 1, 1), (2, 8, 4), (8, 8, 8)]:
        assert space.cost(config) == config_macs(net, config, HW)
    assert space.cheapest == (1, 1, 1) and space.largest == (8, 8, 8)


def test_space_from_table_reads_strings_tuples_and_size_columns(table: pd.DataFrame) -> None:
    by_columns = SearchSpace.from_table(table)
    assert by_columns.layer_names == tuple(c[2:] for c in table.columns if c.startswith("s_"))
    size_columns = [c for c in table.columns if c.startswith("s_")]
    strings = table.assign(config=table["name"]).drop(columns=size_columns)
    by_names = SearchSpace.from_table(strings)
    assert by_names.layer_names == ("layer1", "layer2", "layer3")
    for space in (by_columns, by_names):
        assert space.sizes == ((1, 2, 4, 8),) * 3 and space.size == 64
        assert space.cost((2, 4, 8)) == float(table.loc[table["name"] == "2-4-8", "macs"].iloc[0])
    partial = SearchSpace.from_table(table.iloc[1:])
    assert partial.cost((1, 1, 1)) == math.inf  # absent from the table: never feasible


def test_fitness_from_network_equals_evaluate_all_and_memoises(net: nn.Module, data: tuple,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[tuple[int, ...]]] = []
    original = grosslib.search.evaluate_all

    def counting(*args, **kwargs):
        calls.append(list(kwargs["configs"]))
        assert kwargs["progress"] is False
        return original(*args, **kwargs)
    monkeypatch.setattr(grosslib.search, "evaluate_all", counting)
    fitness = CachedFitness.from_network(net, data, batch_size=16, mean=MEAN, std=STD)
    configs = [(1, 2, 4), (8, 1, 2), (4, 4, 4), (1, 1, 1)]
    expected = original(net, data, configs=configs, batch_size=16, mean=MEAN, std=STD, progress=False)
    scores = fitness.evaluate_many(configs)
    assert scores == expected["accuracy"].tolist()
    assert calls == [configs]  # one batched call with all the new configurations
    assert fitness((1, 2, 4)) == scores[0] and fitness.evaluate_many([(4, 4, 4), (1, 2, 4)]) == scores[2::-2]
    assert len(calls) == 1 and fitness.evaluations == 4  # nothing re-evaluated
    assert fitness((2, 2, 2)) == original(net, data, configs=[(2, 2, 2)], batch_size=16, mean=MEAN, std=STD,
                                          progress=False)["accuracy"].iloc[0]
    assert calls[-1] == [(2, 2, 2)] and fitness.evaluations == 5
    assert [c for c, _ in fitness.history] == [*configs, (2, 2, 2)]


def test_fitness_from_table(table: pd.DataFrame) -> None:
    fitness = CachedFitness.from_table(table)
    row = table.iloc[5]
    assert fitness(row["config"]) == row["accuracy"] and fitness.evaluations == 1
    assert CachedFitness.from_table(table, score="loss")(row["config"]) == row["loss"]
    with pytest.raises(ValueError, match="1-1-1 is not in the table"):
        CachedFitness.from_table(table.iloc[1:])((1, 1, 1))
    with pytest.raises(ValueError, match="no column 'nope'"):
        CachedFitness.from_table(table, score="nope")


def test_fitness_from_table_with_seeds(table: pd.DataFrame) -> None:
    two = pd.concat([table.assign(seed=0), table.assign(seed=1, accuracy=1 - table["accuracy"])])
    assert CachedFitness.from_table(two, seed=1)((1, 1, 1)) == 1 - table["accuracy"].iloc[0]
    with pytest.raises(ValueError, match=r"more than once.*seeds \[0, 1\]: pass seed="):
        CachedFitness.from_table(two)
    with pytest.raises(ValueError, match=r"no rows of seed 7.*seeds: \[0, 1\]"):
        CachedFitness.from_table(two, seed=7)
    with pytest.raises(ValueError, match="no 'seed' column"):
        CachedFitness.from_table(table, seed=0)


# ---------------------------------------------------------------------------------------------------------
# Searches on the tiny network
# ---------------------------------------------------------------------------------------------------------


def searches(space: SearchSpace | nn.Module, fitness_of, **kwargs):
    """Both searches with the same budgets, each with a fresh fitness."""
    evals = kwargs.pop("max_evaluations", 25)
    yield evolution_search(space, fitness_of(), settings=EvolutionSettings(max_evaluations=evals),
                           progress=False, **kwargs)
    yield beam_search(space, fitness_of(), max_evaluations=evals, progress=False, **kwargs)


@pytest.mark.parametrize("evals", [1, 7, 25])
def test_history_is_feasible_distinct_and_bounded(table: pd.DataFrame, evals: int) -> None:
    space = SearchSpace.from_table(table)
    budget = float(table["macs"].median())
    for result in searches(space, lambda: CachedFitness.from_table(table), max_macs=budget,
                           max_evaluations=evals):
        history = result.history
        assert result.evaluations == len(history) <= evals
        assert history["evaluation"].tolist() == list(range(1, len(history) + 1))
        assert history["config"].map(tuple).is_unique and history["feasible"].all()
        assert (history["macs"] <= budget).all() and history["latency_ms"].isna().all()
        assert history["best_so_far"].is_monotonic_increasing
        assert history["best_so_far"].iloc[-1] == result.score == history["score"].max()
        best = select(table[table["config"].isin(history["config"])], max_macs=budget)
        assert result.config == best["config"] and result.name == config_name(best["config"])
        assert result.macs == best["macs"] and result.latency_ms is None


def test_same_seed_same_result(table: pd.DataFrame) -> None:
    space = SearchSpace.from_table(table)
    runs = [evolution_search(space, CachedFitness.from_table(table), max_macs=float(table["macs"].median()),
                             seed=seed, progress=False) for seed in (3, 3, 4)]
    pd.testing.assert_frame_equal(runs[0].history, runs[1].history)
    assert runs[0].config == runs[1].config and runs[0].seed == 3 and runs[2].seed == 4
    assert runs[0].history["config"].tolist() != runs[2].history["config"].tolist()


def test_a_longer_run_starts_like_a_shorter_one(table: pd.DataFrame) -> None:
    space = SearchSpace.from_table(table)
    budget = float(table["macs"].quantile(0.6))
    for seed in range(4):
        runs = [evolution_search(space, CachedFitness.from_table(table), max_macs=budget, seed=seed,
                                 settings=EvolutionSettings(max_evaluations=n), progress=False)
                for n in (9, 20)]
        assert runs[0].history["config"].tolist() == runs[1].history["config"].tolist()[:9]


def test_all_parents_still_breed(table: pd.DataFrame) -> None:
    settings = EvolutionSettings(population=3, parents=1.0, max_evaluations=10)
    assert settings.num_parents == 2
    result = evolution_search(SearchSpace.from_table(table), CachedFitness.from_table(table),
                              settings=settings, progress=False)
    assert result.evaluations == 10


@pytest.mark.parametrize("quantile", [0.0, 0.3, 0.7, None])
def test_enough_evaluations_give_the_exhaustive_optimum(table: pd.DataFrame, quantile: float | None) -> None:
    space = SearchSpace.from_table(table)
    budget = None if quantile is None else float(table["macs"].quantile(quantile))
    expected = select(table, max_macs=budget if budget is not None else math.inf)
    for seed in range(3):
        for result in searches(space, lambda: CachedFitness.from_table(table), max_macs=budget,
                               max_evaluations=space.size, seed=seed):
            assert result.config == expected["config"], (result.method, seed)
            assert result.score == expected["accuracy"] and result.macs == expected["macs"]
            feasible = (table["macs"] <= budget).sum() if budget is not None else len(table)
            assert result.evaluations == feasible  # the feasible region is connected: all of it is scored


def test_search_on_a_network_with_network_fitness(net: nn.Module, data: tuple, table: pd.DataFrame) -> None:
    budget = float(table["macs"].quantile(0.5))
    fitness = CachedFitness.from_network(net, data, batch_size=16, mean=MEAN, std=STD)
    result = evolution_search(net, fitness, max_macs=budget, input_hw=HW,
                              settings=EvolutionSettings(max_evaluations=10), progress=False)
    assert result.evaluations == fitness.evaluations == 10
    scored = table.set_index("name").loc[result.history["name"]]
    assert result.history["score"].tolist() == scored["accuracy"].tolist()
    assert (scored["macs"] <= budget).all()
    beam = beam_search(net, fitness, max_macs=budget, input_hw=HW, max_evaluations=10, progress=False)
    assert beam.method == "beam" and beam.evaluations <= 10


def hand_latency(space: SearchSpace) -> LatencyTable:
    """Latency grows with the group size, but not like MACs: layer 2 is the slow one."""
    weights = (1.0, 3.0, 0.5)
    return LatencyTable(layers={name: {s: w * math.log2(2 * s) for s in sizes}
                                for name, sizes, w in zip(space.layer_names, space.sizes, weights)},
                        rest_ms=2.0)


def test_latency_budget(table: pd.DataFrame) -> None:
    space = SearchSpace.from_table(table)
    latency = hand_latency(space)
    predicted = table["config"].map(latency.predict)
    budget_ms = float(predicted.quantile(0.4))
    max_macs = float(table["macs"].quantile(0.8))
    both = table[(predicted <= budget_ms) & (table["macs"] <= max_macs)]
    for macs in (None, max_macs):
        allowed = both if macs is not None else table[predicted <= budget_ms]
        expected = select(allowed, max_macs=math.inf)
        for result in searches(space, lambda: CachedFitness.from_table(table), max_macs=macs,
                               max_latency_ms=budget_ms, latency=latency, max_evaluations=64):
            assert (result.history["latency_ms"] <= budget_ms).all()
            assert result.history["config"].isin(allowed["config"]).all()
            assert result.config == expected["config"], result.method
            assert result.latency_ms == pytest.approx(latency.predict(result.config))
    small = searches(space, lambda: CachedFitness.from_table(table), max_latency_ms=budget_ms,
                     latency=latency, max_evaluations=5)
    for result in small:
        assert result.evaluations <= 5 and (result.history["latency_ms"] <= budget_ms).all()


def test_unconstrained_and_generic_space() -> None:
    space = SearchSpace(("a", "b"), ((1, 2, 4), (1, 2, 4, 8)), cost=lambda c: c[0] * 10 + c[1])
    score = {c: (c[0] * 7 + c[1] * 3) % 11 / 10 for c in itertools.product(*space.sizes)}
    for result in searches(space, lambda: CachedFitness(score.__getitem__), max_evaluations=12):
        best = max(score, key=lambda c: (score[c], -space.cost(c), tuple(-s for s in c)))
        assert result.config == best and result.evaluations == 12
        assert result.settings["max_macs"] is None


def test_result_to_dict_is_json(table: pd.DataFrame) -> None:
    space = SearchSpace.from_table(table)
    top = float(table["macs"].max())
    for result in searches(space, lambda: CachedFitness.from_table(table), max_macs=top, max_evaluations=6):
        assert isinstance(result, SearchResult)
        out = json.loads(json.dumps(result.to_dict()))
        assert out["config"] == list(result.config) and out["evaluations"] == result.evaluations == 6
        assert out["method"] == result.method and len(out["history"]) == 6
        assert out["history"][0]["config"] == list(result.history["config"].iloc[0])
    assert out["settings"]["beam_width"] == 2
    evo = evolution_search(space, CachedFitness.from_table(table), progress=False)
    assert evo.to_dict()["settings"]["population"] == EvolutionSettings().population


# ---------------------------------------------------------------------------------------------------------
# Bad inputs: one-line ValueErrors before any evaluation
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("search", [evolution_search, beam_search])
def test_bad_inputs(table: pd.DataFrame, search) -> None:
    space = SearchSpace.from_table(table)
    cheapest = float(table["macs"].min())
    latency = hand_latency(space)
    cases = [
        (dict(max_macs=cheapest - 1),
         rf"max_macs={cheapest - 1:g}: the cheapest \(1-1-1\) costs {cheapest:g}"),
        (dict(max_macs=0), "max_macs must be positive"),
        (dict(max_macs=-5.0), "max_macs must be positive"),
        (dict(max_latency_ms=10.0), "max_latency_ms needs a latency table"),
        (dict(max_latency_ms=-1.0, latency=latency), "max_latency_ms must be positive"),
        (dict(max_latency_ms=2.5, latency=latency),
         r"max_latency_ms=2.5: the fastest \(1-1-1\) takes 6.5 ms"),
        (dict(latency=LatencyTable(layers={"x": {1: 1.0}}, rest_ms=0.0)), "latency table's layers"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            search(space, never, progress=False, **kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(TypeError, match="SearchSpace or a GroSS network"):
        search("space", never, progress=False)


def test_bad_counts(table: pd.DataFrame) -> None:
    space = SearchSpace.from_table(table)
    with pytest.raises(ValueError, match="max_evaluations must be at least 1"):
        beam_search(space, never, max_evaluations=0)
    with pytest.raises(ValueError, match="beam_width must be at least 1"):
        beam_search(space, never, beam_width=0)
    for kwargs, message in [(dict(max_evaluations=0), "max_evaluations"), (dict(population=1), "population"),
                            (dict(parents=0.0), "parents"), (dict(parents=1.5), "parents"),
                            (dict(mutation_prob=-0.1), "mutation_prob"), (dict(crossover=2.0), "crossover"),
                            (dict(local_mutation=1.1), "local_mutation"), (dict(max_generations=0), "max_g"),
                            (dict(local_mutation=0.5, fill_mutation=0.6), "at most 1")]:
        with pytest.raises(ValueError, match=message):
            EvolutionSettings(**kwargs)
    with pytest.raises(ValueError, match="distinct and ascending"):
        SearchSpace(("a",), ((2, 1),), cost=sum)


# ---------------------------------------------------------------------------------------------------------
# PaperNet: the committed Fashion-MNIST study table (5 seeds x 252 configurations)
# ---------------------------------------------------------------------------------------------------------

BUDGETS = {"4-4-4": 1_620_480, "16-16-16": 2_836_992}
#: measured with the default EvolutionSettings: 99 of these 100 runs; 98.05% of 2,000 runs on search seeds
#: 300..499, never used for tuning. The bound leaves room for a change of the random stream.
MIN_EVOLUTION_SUCCESS = 0.95


@pytest.fixture(scope="module")
def study() -> pd.DataFrame:
    rows = json.loads(RECORDS.read_text())["tables"]["search"]
    df = pd.DataFrame(rows)
    assert len(df) == 1260 and sorted(df["seed"].unique()) == [0, 1, 2, 3, 4]
    for name, macs in BUDGETS.items():
        assert set(df.loc[df["config"] == name, "macs"]) == {macs}
    return df


def optimum(study: pd.DataFrame, seed: int, budget: int) -> float:
    return float(select(study[study["seed"] == seed], max_macs=budget)["accuracy"])


def test_papernet_evolution_finds_near_optimum_in_25_evaluations(study: pd.DataFrame) -> None:
    space = SearchSpace.from_table(study)
    assert space.size == 252 and space.layer_names == ("conv2", "conv3", "conv4")
    hits = np.zeros((5, 2, 10), dtype=bool)
    for seed, (b, budget), run in itertools.product(range(5), enumerate(BUDGETS.values()), range(10)):
        best = optimum(study, seed, budget)
        fitness = CachedFitness.from_table(study, seed=seed)
        result = evolution_search(space, fitness, max_macs=budget, seed=run, progress=False)
        assert result.evaluations == fitness.evaluations <= 25 and result.macs <= budget
        hits[seed, b, run] = result.score >= best - 0.001 - 1e-9
    assert hits.mean() >= MIN_EVOLUTION_SUCCESS, hits.mean(axis=2)
    assert hits.any(axis=2).all()  # every seed and budget is solved by some run


def test_papernet_beam_finds_near_optimum_in_25_evaluations(study: pd.DataFrame) -> None:
    space = SearchSpace.from_table(study)
    for seed, budget in itertools.product(range(5), BUDGETS.values()):
        fitness = CachedFitness.from_table(study, seed=seed)
        result = beam_search(space, fitness, max_macs=budget, max_evaluations=25, progress=False)
        assert result.evaluations == fitness.evaluations <= 25 and result.macs <= budget
        assert result.score >= optimum(study, seed, budget) - 0.001 - 1e-9, (seed, budget, result.name)
