"""Search without enumeration: evolutionary and beam search over group sizes under a MAC or latency budget.

:func:`grosslib.search.evaluate_all` scores every configuration; on a deep network the search space (the
product of the per-layer group-size series) is too large for that. The searches here score only a few
configurations, each one at most once:

* :func:`evolution_search`: a once-for-all style evolutionary search. A random feasible population is
  sampled; each generation keeps the best ``parents`` of everything scored so far and breeds children by
  crossover (each layer's size from one of two parents) and mutation (a layer's size resampled); only
  feasible, never-seen children are scored.
* :func:`beam_search`: a best-first beam search over single-step changes of one layer's size, starting
  from the largest configuration that fits the budget (see its docstring for the exact rule).

Both take a :class:`SearchSpace` (layers, per-layer sizes and a MAC cost; built from a GroSS network or
from a table of configurations) and a :class:`CachedFitness` (a memoised score, from a network and a data
split, or from a precomputed table such as an exhaustive evaluation), and return a :class:`SearchResult`.
A configuration is *feasible* when it fits every budget given: ``macs <= max_macs`` and
``latency.predict(config) <= max_latency_ms``. Ranking is :func:`grosslib.search.select`'s: higher score,
then fewer MACs, then the lexicographically smaller configuration.

>>> import pandas as pd
>>> table = pd.DataFrame({"config": ["1-1", "1-2", "2-1", "2-2"], "macs": [10, 20, 20, 30],
...                       "accuracy": [0.5, 0.7, 0.6, 0.9]})
>>> result = evolution_search(SearchSpace.from_table(table), CachedFitness.from_table(table),
...                           max_macs=25, progress=False)
>>> result.name, result.score, result.evaluations
('1-2', 0.7, 3)
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .latency import LatencyTable
from .macs import config_macs
from .models import Config, as_config, config_name, decomposed_layers

__all__ = ["CachedFitness", "EvolutionSettings", "SearchResult", "SearchSpace", "beam_search",
           "evolution_search"]

Fitness = Union["CachedFitness", Callable[[Config], float]]

#: rejection-sampling attempts per wanted configuration before giving up
_TRIES = 200
#: spaces up to this size are enumerated when sampling finds no new feasible configuration
_ENUMERATE = 100_000


def _parse_config(value: Any) -> Config:
    """``'1-2-4'``, ``(1, 2, 4)`` or ``[1, 2, 4]`` -> ``(1, 2, 4)``."""
    if isinstance(value, str):
        try:
            return tuple(int(s) for s in value.split("-"))
        except ValueError:
            raise ValueError(f"cannot read configuration {value!r} (expected e.g. '1-2-4')") from None
    if isinstance(value, (int, np.integer)):
        return (int(value),)
    return tuple(int(s) for s in value)


def _size_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if isinstance(c, str) and c.startswith("s_")]


def _table_configs(df: pd.DataFrame) -> list[Config]:
    """The configuration of every row: the ``config`` column, else the ``s_*`` columns in order."""
    if "config" in df.columns:
        return [_parse_config(v) for v in df["config"]]
    columns = _size_columns(df)
    if not columns:
        raise ValueError(f"the table has neither a 'config' nor 's_*' columns (columns: {list(df.columns)})")
    return [tuple(int(v) for v in row) for row in df[columns].itertuples(index=False)]


# ---------------------------------------------------------------------------------------------------------
# Search space
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchSpace:
    """The configurations to search: per layer the group sizes (ascending), and their MAC cost.

    Attributes
    ----------
    layer_names : the GroSS layers, in configuration order.
    sizes : per layer, its group sizes in ascending order; the space is their product.
    cost : ``config -> MACs``; ``inf`` marks a configuration that does not exist (e.g. absent from a table).
        MACs are assumed to grow with every layer's group size (true of GroSS layers).

    Examples
    --------
    >>> space = SearchSpace(("a", "b"), ((1, 2), (1, 2, 4)), cost=lambda c: 10 * c[0] + c[1])
    >>> space.size, space.cheapest
    (6, (1, 1))
    """

    layer_names: tuple[str, ...]
    sizes: tuple[tuple[int, ...], ...]
    cost: Callable[[Config], float] = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.layer_names) != len(self.sizes) or not self.sizes:
            raise ValueError(f"need one size series per layer, got {len(self.layer_names)} names and "
                             f"{len(self.sizes)} series")
        for name, series in zip(self.layer_names, self.sizes):
            if not series or list(series) != sorted(set(series)):
                raise ValueError(f"layer {name}'s sizes must be distinct and ascending, got {series}")

    @property
    def size(self) -> int:
        """The number of configurations (the product of the series lengths)."""
        return math.prod(len(s) for s in self.sizes)

    @property
    def cheapest(self) -> Config:
        """Every layer at its smallest size: the configuration of fewest MACs."""
        return tuple(s[0] for s in self.sizes)

    @property
    def largest(self) -> Config:
        """Every layer at its largest size."""
        return tuple(s[-1] for s in self.sizes)

    def contains(self, config: Sequence[int]) -> bool:
        """Whether ``config`` has one size from each layer's series."""
        return len(config) == len(self.sizes) and all(s in series for s, series in zip(config, self.sizes))

    @classmethod
    def from_network(cls, net: nn.Module, input_hw: Sequence[int] | None = None) -> SearchSpace:
        """The space of a GroSS network; cost :func:`grosslib.macs.config_macs` at ``input_hw``."""
        layers = decomposed_layers(net)
        if not layers:
            raise ValueError("the network has no GroSS layer; decompose it first")
        config_macs(net, tuple(layer.group_sizes[0] for _, layer in layers), input_hw)  # fail early
        sizes = tuple(tuple(sorted(layer.group_sizes)) for _, layer in layers)
        return cls(tuple(name for name, _ in layers), sizes,
                   cost=lambda c: float(config_macs(net, c, input_hw)))

    @classmethod
    def from_table(cls, df: pd.DataFrame) -> SearchSpace:
        """The space of a table of configurations with a ``macs`` column (e.g. :func:`evaluate_all`'s).

        Layers and sizes come from the ``s_<layer>`` columns if there are any (layer names without the
        ``s_``), else from the ``config`` column (tuples or names like ``'1-2-4'``; layers ``layer1`` ..).
        A configuration of the product that is absent from the table costs ``inf`` (never feasible). A
        table of several seeds is fine as long as a configuration's MACs agree across rows.
        """
        if "macs" not in df.columns:
            raise ValueError(f"the table has no 'macs' column (columns: {list(df.columns)})")
        if len(df) == 0:
            raise ValueError("the table is empty")
        configs = _table_configs(df)
        width = {len(c) for c in configs}
        if len(width) != 1:
            raise ValueError(f"the table's configurations have different lengths {sorted(width)}")
        columns = _size_columns(df)
        if len(columns) == width.pop():
            names = tuple(c[2:] for c in columns)
        else:
            names = tuple(f"layer{j + 1}" for j in range(len(configs[0])))
        sizes = tuple(tuple(sorted({c[j] for c in configs})) for j in range(len(names)))
        macs: dict[Config, float] = {}
        for config, value in zip(configs, df["macs"].to_numpy(dtype=np.float64)):
            if macs.setdefault(config, float(value)) != float(value):
                raise ValueError(f"configuration {config_name(config)} has different MACs in different rows")
        return cls(names, sizes, cost=lambda c: macs.get(tuple(c), math.inf))


# ---------------------------------------------------------------------------------------------------------
# Fitness
# ---------------------------------------------------------------------------------------------------------


class CachedFitness:
    """A memoised score of configurations (accuracy in [0, 1]): each configuration is scored once.

    Parameters
    ----------
    score : ``config -> score``, called once per new configuration; or
    batch : ``[configs] -> [scores]``, called once per :meth:`evaluate_many` with the new configurations.

    Attributes
    ----------
    history : ``(config, score)`` of every distinct configuration, in evaluation order.

    Examples
    --------
    >>> fitness = CachedFitness(lambda c: sum(c) / 10)
    >>> fitness((1, 2)), fitness((1, 2)), fitness.evaluate_many([(1, 2), (3, 4)]), fitness.evaluations
    (0.3, 0.3, [0.3, 0.7], 2)
    """

    def __init__(self, score: Callable[[Config], float] | None = None, *,
                 batch: Callable[[list[Config]], Sequence[float]] | None = None) -> None:
        if (score is None) == (batch is None):
            raise ValueError("give exactly one of score and batch")
        self._score, self._batch = score, batch
        self._cache: dict[Config, float] = {}
        self.history: list[tuple[Config, float]] = []

    @property
    def evaluations(self) -> int:
        """The number of distinct configurations scored so far."""
        return len(self._cache)

    def __contains__(self, config: Sequence[int]) -> bool:
        return tuple(int(s) for s in config) in self._cache

    def __call__(self, config: Sequence[int]) -> float:
        """The score of one configuration (computed on first use)."""
        return self.evaluate_many([config])[0]

    def evaluate_many(self, configs: Iterable[Sequence[int]]) -> list[float]:
        """The scores of several configurations; the new ones are scored together, in one call."""
        wanted = [tuple(int(s) for s in c) for c in configs]
        new = list(dict.fromkeys(c for c in wanted if c not in self._cache))
        if new:
            if self._batch is not None:
                scores = [float(s) for s in self._batch(new)]
                if len(scores) != len(new):
                    raise ValueError(f"the batch score returned {len(scores)} scores for {len(new)} configs")
            else:
                assert self._score is not None
                scores = [float(self._score(c)) for c in new]
            for config, score in zip(new, scores):
                self._cache[config] = score
                self.history.append((config, score))
        return [self._cache[c] for c in wanted]

    @classmethod
    def from_network(cls, net: nn.Module, data: Any, *, batch_size: int = 1000,
                     mean: Sequence[float] | torch.Tensor | None = None,
                     std: Sequence[float] | torch.Tensor | None = None,
                     device: torch.device | str | None = None, channels_last: bool = False) -> CachedFitness:
        """Accuracy of a GroSS network on ``data`` via :func:`grosslib.search.evaluate_all`.

        Each :meth:`evaluate_many` runs one ``evaluate_all(configs=<the new ones>, progress=False)``, so
        configurations sharing a prefix share its computation. The arguments are ``evaluate_all``'s.
        """
        from .search import evaluate_all

        def batch(configs: list[Config]) -> list[float]:
            checked = [as_config(net, c) for c in configs]
            df = evaluate_all(net, data, configs=checked, batch_size=batch_size, mean=mean, std=std,
                              device=device, progress=False, channels_last=channels_last)
            return df["accuracy"].astype(float).tolist()
        return cls(batch=batch)

    @classmethod
    def from_table(cls, df: pd.DataFrame, score: str = "accuracy", seed: int | None = None) -> CachedFitness:
        """A lookup of column ``score`` in a precomputed table, e.g. an exhaustive :func:`evaluate_all`.

        Configurations are read as in :meth:`SearchSpace.from_table`. ``seed`` keeps the rows of one
        seed of a table with a ``seed`` column. A configuration absent from the table raises ``ValueError``.
        """
        if score not in df.columns:
            raise ValueError(f"no column {score!r} in the table (columns: {list(df.columns)})")
        if seed is not None:
            if "seed" not in df.columns:
                raise ValueError("seed given but the table has no 'seed' column")
            seeds = sorted(df["seed"].unique().tolist())
            df = df[df["seed"] == seed]
            if len(df) == 0:
                raise ValueError(f"no rows of seed {seed} in the table (seeds: {seeds})")
        configs = _table_configs(df)
        values = df[score].to_numpy(dtype=np.float64)
        if np.isnan(values).any():
            raise ValueError(f"column {score!r} contains NaN")
        lookup = dict(zip(configs, values.tolist()))
        if len(lookup) != len(configs):
            dup = pd.Series([config_name(c) for c in configs]).duplicated()
            hint = (f"; the table holds seeds {sorted(df['seed'].unique().tolist())}: pass seed="
                    if "seed" in df.columns and seed is None else "")
            raise ValueError(f"{int(dup.sum())} configurations appear more than once in the table "
                             f"(first: {[config_name(c) for c in configs][int(np.argmax(dup))]}){hint}")

        def lookup_score(config: Config) -> float:
            if config not in lookup:
                raise ValueError(f"configuration {config_name(config)} is not in the table")
            return lookup[config]
        return cls(lookup_score)


# ---------------------------------------------------------------------------------------------------------
# Settings and results
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvolutionSettings:
    """Parameters of :func:`evolution_search`.

    The defaults were tuned on the committed PaperNet study table (5 seeds x 252 configurations, MAC
    budgets of 4-4-4 and 16-16-16): with 25 evaluations the search ends within 0.1 accuracy points of the
    exhaustive optimum in about 98% of runs (benchmarks/bench_evolution.py). A small population, two
    parents, every child a crossover plus exactly one layer changed, and mostly *fill* mutations (MACs
    predict accuracy, so the best configurations lie near the budget) suit such a tiny budget.

    Attributes
    ----------
    population : configurations per generation (the random initial one and each later one).
    parents : fraction of ``population`` kept as parents: the best configurations scored so far
        (:attr:`num_parents`).
    mutation_prob : per layer, the probability of changing its size; at least one layer always changes
        (0: exactly one).
    local_mutation : fraction of mutations that move a size one step along its series.
    fill_mutation : fraction of mutations that move a size to the largest one keeping the configuration
        within the budgets (the rest of the mutations resample it uniformly among the other sizes).
    crossover : fraction of children bred by crossover of two parents (then mutated) rather than by
        mutation of one parent.
    max_evaluations : distinct configurations to score at most.
    max_generations : a safety cap on the number of generations.

    Examples
    --------
    >>> EvolutionSettings(population=6).max_evaluations
    25
    """

    population: int = 4
    parents: float = 0.5
    mutation_prob: float = 0.0
    local_mutation: float = 0.2
    fill_mutation: float = 0.7
    crossover: float = 1.0
    max_evaluations: int = 25
    max_generations: int = 1000

    def __post_init__(self) -> None:
        if self.population < 2:
            raise ValueError(f"population must be at least 2, got {self.population}")
        if not 0 < self.parents <= 1:
            raise ValueError(f"parents must be a fraction in (0, 1], got {self.parents}")
        for name in ("mutation_prob", "local_mutation", "fill_mutation", "crossover"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.local_mutation + self.fill_mutation > 1:
            raise ValueError(f"local_mutation + fill_mutation must be at most 1, got "
                             f"{self.local_mutation} + {self.fill_mutation}")
        if self.max_evaluations < 1:
            raise ValueError(f"max_evaluations must be at least 1, got {self.max_evaluations}")
        if self.max_generations < 1:
            raise ValueError(f"max_generations must be at least 1, got {self.max_generations}")

    @property
    def num_parents(self) -> int:
        """The number of parents: ``round(parents * population)``, between 1 and ``population - 1``."""
        return min(self.population - 1, max(1, round(self.parents * self.population)))


@dataclass(frozen=True)
class SearchResult:
    """The outcome of :func:`evolution_search` or :func:`beam_search`.

    Attributes
    ----------
    config, name : the best configuration found and its name ('4-16-64').
    score : its score (accuracy); ``macs``: its MACs; ``latency_ms``: its predicted latency (None without
        a latency table).
    evaluations : distinct configurations scored by this search.
    history : one row per evaluation: ``evaluation`` (1..), ``config``, ``name``, ``score``, ``macs``,
        ``latency_ms``, ``feasible``, ``best_so_far`` (the best score after it).
    method : 'evolution' or 'beam'; ``seed``: the random seed; ``settings``: the parameters and budgets.
    """

    config: Config
    name: str
    score: float
    macs: float
    latency_ms: float | None
    evaluations: int
    history: pd.DataFrame = field(repr=False, compare=False)
    method: str = "evolution"
    seed: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (configurations as lists)."""
        def plain(value: Any) -> Any:
            if isinstance(value, (np.integer, np.floating, np.bool_)):
                return value.item()
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            return value
        history = [{k: plain(v) for k, v in row.items()} for row in self.history.to_dict("records")]
        return {"config": list(self.config), "name": self.name, "score": float(self.score),
                "macs": float(self.macs),
                "latency_ms": None if self.latency_ms is None else float(self.latency_ms),
                "evaluations": int(self.evaluations), "method": self.method, "seed": int(self.seed),
                "settings": {k: plain(v) for k, v in self.settings.items()}, "history": history}


# ---------------------------------------------------------------------------------------------------------
# Shared machinery
# ---------------------------------------------------------------------------------------------------------


class _Run:
    """Budgets, feasibility and the evaluation log of one search."""

    def __init__(self, space_or_net: SearchSpace | nn.Module, fitness: Fitness,
                 max_macs: float | None, max_latency_ms: float | None, latency: LatencyTable | None,
                 max_evaluations: int, progress: bool, input_hw: Sequence[int] | None, method: str) -> None:
        if max_evaluations < 1:
            raise ValueError(f"max_evaluations must be at least 1, got {max_evaluations}")
        for name, value in (("max_macs", max_macs), ("max_latency_ms", max_latency_ms)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if max_latency_ms is not None and latency is None:
            raise ValueError("max_latency_ms needs a latency table (latency=a grosslib.latency.LatencyTable)")
        if isinstance(space_or_net, SearchSpace):
            space = space_or_net
        elif isinstance(space_or_net, nn.Module):
            space = SearchSpace.from_network(space_or_net, input_hw)
        else:
            raise TypeError(f"expected a SearchSpace or a GroSS network, got {type(space_or_net).__name__}")
        if latency is not None:
            if tuple(latency.layer_names) != tuple(space.layer_names):
                raise ValueError(f"the latency table's layers {list(latency.layer_names)} are not the search "
                                 f"space's {list(space.layer_names)}")
            for name, series in zip(space.layer_names, space.sizes):
                missing = [s for s in series if s not in latency.layers[name]]
                if missing:
                    raise ValueError(f"the latency table has no entry for layer {name} at sizes {missing}")
        self.space, self.latency = space, latency
        self.max_macs, self.max_latency_ms = max_macs, max_latency_ms
        self.max_evaluations, self.method = max_evaluations, method
        self.fitness = fitness if isinstance(fitness, CachedFitness) else CachedFitness(fitness)
        self._cost: dict[Config, float] = {}
        self.scores: dict[Config, float] = {}
        self.rows: list[dict[str, Any]] = []
        self._check_budgets()
        self.bar = tqdm(total=max_evaluations, disable=not progress, unit="eval", dynamic_ncols=True,
                        desc=f"{method} search")

    def _check_budgets(self) -> None:
        cheapest = self.space.cheapest
        if self.max_macs is not None:
            macs = self.cost(cheapest)
            if macs > self.max_macs:
                raise ValueError(f"no configuration fits within max_macs={self.max_macs:g}: the cheapest "
                                 f"({config_name(cheapest)}) costs {macs:g} MACs")
        if self.max_latency_ms is not None:
            assert self.latency is not None
            fastest = tuple(min(series, key=lambda s, n=name: self.latency.layers[n][s])  # type: ignore[union-attr]
                            for name, series in zip(self.space.layer_names, self.space.sizes))
            ms = self.latency.predict(fastest)
            if ms > self.max_latency_ms:
                raise ValueError(f"no configuration fits within max_latency_ms={self.max_latency_ms:g}: the "
                                 f"fastest ({config_name(fastest)}) takes {ms:.4g} ms")

    def cost(self, config: Config) -> float:
        if config not in self._cost:
            self._cost[config] = float(self.space.cost(config))
        return self._cost[config]

    def latency_of(self, config: Config) -> float | None:
        return None if self.latency is None else float(self.latency.predict(config))

    def feasible(self, config: Config) -> bool:
        macs = self.cost(config)
        if not math.isfinite(macs) or (self.max_macs is not None and macs > self.max_macs):
            return False
        return self.max_latency_ms is None or self.latency_of(config) <= self.max_latency_ms  # type: ignore[operator]

    @property
    def left(self) -> int:
        return self.max_evaluations - len(self.scores)

    def key(self, config: Config) -> tuple[float, float, Config]:
        """Sort key of :func:`grosslib.search.select`: higher score, fewer MACs, smaller config."""
        return (-self.scores[config], self.cost(config), config)

    def evaluate(self, configs: Sequence[Config]) -> list[Config]:
        """Score the new feasible ``configs`` (at most what the budget leaves); return those scored."""
        new = list(dict.fromkeys(c for c in configs if c not in self.scores))[:max(self.left, 0)]
        if not new:
            return []
        best = min(self.scores, key=self.key) if self.scores else None
        for config, score in zip(new, self.fitness.evaluate_many(new)):
            self.scores[config] = score
            if best is None or self.key(config) < self.key(best):
                best = config
            self.rows.append({"evaluation": len(self.scores), "config": config, "name": config_name(config),
                              "score": score, "macs": self.cost(config),
                              "latency_ms": self.latency_of(config),
                              "feasible": self.feasible(config), "best_so_far": self.scores[best]})
        self.bar.update(len(new))
        return new

    def ranked(self) -> list[Config]:
        return sorted(self.scores, key=self.key)

    def result(self, seed: int, settings: dict[str, Any]) -> SearchResult:
        self.bar.close()
        if not self.scores:
            raise ValueError("no feasible configuration was found to evaluate")
        best = self.ranked()[0]
        settings = {**settings, "max_macs": self.max_macs, "max_latency_ms": self.max_latency_ms}
        columns = ["evaluation", "config", "name", "score", "macs", "latency_ms", "feasible", "best_so_far"]
        return SearchResult(config=best, name=config_name(best), score=self.scores[best],
                            macs=self.cost(best),
                            latency_ms=self.latency_of(best), evaluations=len(self.scores),
                            history=pd.DataFrame(self.rows, columns=columns), method=self.method,
                            seed=seed, settings=settings)


# ---------------------------------------------------------------------------------------------------------
# Evolution
# ---------------------------------------------------------------------------------------------------------


def _random_config(space: SearchSpace, rng: np.random.Generator) -> Config:
    return tuple(int(series[rng.integers(len(series))]) for series in space.sizes)


def _mutate(config: Config, space: SearchSpace, settings: EvolutionSettings, rng: np.random.Generator,
            feasible: Callable[[Config], bool]) -> Config:
    """Change each layer's size with probability ``mutation_prob`` (at least one layer changes).

    A change is a step along the series (probability ``local_mutation``), a move to the largest size that
    keeps the configuration within the budgets (``fill_mutation``), or a uniform pick among the others.
    """
    layers = [j for j in range(len(config)) if len(space.sizes[j]) > 1]
    if not layers:
        return config
    chosen = [j for j in layers if rng.random() < settings.mutation_prob]
    if not chosen:
        chosen = [layers[rng.integers(len(layers))]]
    out = list(config)
    for j in chosen:
        series = space.sizes[j]
        i = series.index(out[j])
        draw = rng.random()
        if draw < settings.local_mutation:
            steps = [k for k in (i - 1, i + 1) if 0 <= k < len(series)]
            out[j] = series[steps[rng.integers(len(steps))]]
            continue
        if draw < settings.local_mutation + settings.fill_mutation:
            fits = [s for s in series[i + 1:] if feasible(tuple(out[:j] + [s] + out[j + 1:]))]
            if fits:
                out[j] = fits[-1]
                continue
        others = [s for s in series if s != out[j]]
        out[j] = others[rng.integers(len(others))]
    return tuple(int(s) for s in out)


def _crossover(a: Config, b: Config, rng: np.random.Generator) -> Config:
    return tuple(int(x if rng.random() < 0.5 else y) for x, y in zip(a, b))


def _immigrants(run: _Run, rng: np.random.Generator, wanted: int, tries: int) -> list[Config]:
    """Up to ``wanted`` random feasible configurations not scored yet (when breeding finds none).

    Rejection sampling first; a space of at most ``_ENUMERATE`` configurations is then enumerated, so the
    search only stops early when every feasible configuration has been scored.
    """
    found: list[Config] = []
    for _ in range(tries):
        config = _random_config(run.space, rng)
        if config not in run.scores and config not in found and run.feasible(config):
            found.append(config)
            if len(found) == wanted:
                return found
    if not found and run.space.size <= _ENUMERATE:
        rest = [c for c in itertools.product(*run.space.sizes) if c not in run.scores and run.feasible(c)]
        found = [rest[i] for i in rng.permutation(len(rest))[:wanted]]
    return found


def evolution_search(space_or_net: SearchSpace | nn.Module, fitness: Fitness, *,
                     max_macs: float | None = None, max_latency_ms: float | None = None,
                     latency: LatencyTable | None = None, settings: EvolutionSettings | None = None,
                     seed: int = 0, progress: bool = True,
                     input_hw: Sequence[int] | None = None) -> SearchResult:
    """The best configuration found by an evolutionary search under MAC and/or latency budgets.

    1. Sample ``population`` distinct feasible configurations uniformly by rejection
       (``numpy.random.default_rng(seed)``) and score them.
    2. Each generation: the parents are the ``num_parents`` best configurations scored so far; breed
       ``population - num_parents`` children, each (with probability ``crossover``) a per-layer uniform
       pick from two distinct random parents, then mutated, or a mutated copy of one random parent. A child
       that is infeasible, already scored or already bred is rejected and bred again (a bounded number of
       times); if none can be bred, new random feasible configurations (immigrants) take their place.
       Score the children together.
    3. Stop after ``max_evaluations`` distinct configurations, ``max_generations`` generations, or when no
       new feasible configuration can be found (in a space of at most 100,000 configurations: when all
       feasible ones have been scored).

    Parameters
    ----------
    space_or_net : a :class:`SearchSpace`, or a GroSS network (:meth:`SearchSpace.from_network` at
        ``input_hw``).
    fitness : a :class:`CachedFitness` (or a plain ``config -> score``), higher is better.
    max_macs, max_latency_ms : budgets (positive); none means unconstrained.
    latency : a :class:`grosslib.latency.LatencyTable` of the same layers; required with ``max_latency_ms``.
    settings : :class:`EvolutionSettings`; default ``EvolutionSettings()``.
    seed : the random seed; the same seed (and fitness) gives the same result.
    progress : a tqdm bar over the evaluations.

    Returns
    -------
    SearchResult with ``method='evolution'``.

    Raises
    ------
    ValueError : a budget that even the cheapest (fastest) configuration exceeds, a non-positive budget,
        ``max_latency_ms`` without ``latency``, a latency table of other layers; all before any evaluation.

    Examples
    --------
    >>> space = SearchSpace(("a", "b"), ((1, 2, 4), (1, 2, 4)), cost=lambda c: c[0] + c[1])
    >>> result = evolution_search(space, lambda c: c[0] * 0.1 + c[1] * 0.01, max_macs=5, progress=False)
    >>> result.config, result.evaluations
    ((4, 1), 6)
    """
    settings = settings if settings is not None else EvolutionSettings()
    if not isinstance(settings, EvolutionSettings):
        raise TypeError(f"settings must be an EvolutionSettings, got {type(settings).__name__}")
    run = _Run(space_or_net, fitness, max_macs, max_latency_ms, latency, settings.max_evaluations, progress,
               input_hw, "evolution")
    space, rng = run.space, np.random.default_rng(seed)

    initial: list[Config] = []
    for _ in range(_TRIES * settings.population):
        if len(initial) == min(settings.population, run.left):
            break
        config = _random_config(space, rng)
        if config not in initial and run.feasible(config):
            initial.append(config)
    if not initial:
        raise ValueError(f"found no feasible configuration in {_TRIES * settings.population} random draws "
                         f"(max_macs={max_macs}, max_latency_ms={max_latency_ms})")
    run.evaluate(initial)

    for _ in range(settings.max_generations):
        if run.left <= 0:
            break
        parents = run.ranked()[:settings.num_parents]
        wanted = min(settings.population - len(parents), run.left)
        children: list[Config] = []
        for _ in range(_TRIES * settings.population):  # not * wanted: the same draws whatever the budget
            if len(children) == wanted:
                break
            if len(parents) > 1 and rng.random() < settings.crossover:
                i, j = rng.choice(len(parents), size=2, replace=False)
                child = _mutate(_crossover(parents[i], parents[j], rng), space, settings, rng, run.feasible)
            else:
                child = _mutate(parents[rng.integers(len(parents))], space, settings, rng, run.feasible)
            if child not in run.scores and child not in children and run.feasible(child):
                children.append(child)
        if not children:
            children = _immigrants(run, rng, wanted, _TRIES * settings.population)
        if not children:
            break
        run.evaluate(children)
    return run.result(seed, dataclasses.asdict(settings))


# ---------------------------------------------------------------------------------------------------------
# Beam search
# ---------------------------------------------------------------------------------------------------------


def _largest_feasible(run: _Run) -> Config | None:
    """From the largest configuration, step down the layer whose step saves the most MACs until feasible."""
    space = run.space
    index = [len(series) - 1 for series in space.sizes]

    def at(idx: list[int]) -> Config:
        return tuple(series[i] for series, i in zip(space.sizes, idx))
    while not run.feasible(at(index)):
        moves = []
        for j, i in enumerate(index):
            if i > 0:
                lower = index.copy()
                lower[j] -= 1
                saving = run.cost(at(index)) - run.cost(at(lower))
                moves.append((-saving if math.isfinite(saving) else -math.inf, j))
        if not moves:
            return None
        index[min(moves)[1]] -= 1
    return at(index)


def _neighbours(config: Config, space: SearchSpace) -> list[Config]:
    """Configurations one step along one layer's series (down and up), layer by layer."""
    out = []
    for j, (s, series) in enumerate(zip(config, space.sizes)):
        i = series.index(s)
        for k in (i - 1, i + 1):
            if 0 <= k < len(series):
                out.append(config[:j] + (series[k],) + config[j + 1:])
    return out


def beam_search(space_or_net: SearchSpace | nn.Module, fitness: Fitness, *,
                max_macs: float | None = None, max_latency_ms: float | None = None,
                latency: LatencyTable | None = None, beam_width: int = 2, max_evaluations: int = 25,
                seed: int = 0, progress: bool = True, input_hw: Sequence[int] | None = None) -> SearchResult:
    """The best configuration found by a best-first beam search over single-step changes.

    The exact rule:

    1. Start: the largest configuration, then, while it is infeasible, move down one step the layer whose
       step saves the most MACs (ties: the first layer); if the MAC-feasible result misses the latency
       budget keep stepping down (the largest MAC saving first). Score it.
    2. Step: the beam is the ``beam_width`` best scored configurations not yet expanded (ranked like
       :func:`grosslib.search.select`). Expanding a configuration scores its feasible, not yet scored
       neighbours: every layer moved one step down or up its series (layer by layer, down first), all
       neighbours of the beam together.
    3. Stop after ``max_evaluations`` distinct configurations or when every scored configuration has
       been expanded. The search is deterministic; ``seed`` is only recorded.

    Parameters and errors are those of :func:`evolution_search`; ``beam_width >= 1``.

    Examples
    --------
    >>> space = SearchSpace(("a", "b"), ((1, 2, 4), (1, 2, 4)), cost=lambda c: c[0] + c[1])
    >>> result = beam_search(space, lambda c: c[0] * 0.1 + c[1] * 0.01, max_macs=5, progress=False)
    >>> result.config, result.evaluations
    ((4, 1), 6)
    """
    if beam_width < 1:
        raise ValueError(f"beam_width must be at least 1, got {beam_width}")
    run = _Run(space_or_net, fitness, max_macs, max_latency_ms, latency, max_evaluations, progress, input_hw,
               "beam")
    start = _largest_feasible(run)
    if start is None:
        raise ValueError(f"stepping down from the largest configuration found none within the budgets "
                         f"(max_macs={max_macs}, max_latency_ms={max_latency_ms})")
    run.evaluate([start])
    expanded: set[Config] = set()
    while run.left > 0:
        beam = [c for c in run.ranked() if c not in expanded][:beam_width]
        if not beam:
            break
        expanded.update(beam)
        candidates = [n for c in beam for n in _neighbours(c, run.space)
                      if n not in run.scores and run.feasible(n)]
        run.evaluate(candidates)
    return run.result(seed, {"beam_width": beam_width, "max_evaluations": max_evaluations})
