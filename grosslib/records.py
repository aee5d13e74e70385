"""Records of the paper's experiment: one long table per result, collected from cached replicates.

Each collector walks the cached stages of one or more :class:`grosslib.experiment.Experiment`
replicates (a replicate is the whole protocol from one seed; their number comes from the preset,
:attr:`grosslib.presets.Preset.replicates`) and returns a long table, one row per seed and item.
Every stage they touch is cached in the run directory, so calling a collector after the stages ran
costs nothing; a stage still missing is trained. The tables built from these records live in
:mod:`grosslib.tables`. Accuracies are fractions in ``[0, 1]``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from .macs import config_macs, count_macs
from .models import Config, config_name
from .presets import FIXED_GROUP_SIZES, Preset, get_preset

__all__ = ["all_config_records", "as_config", "deficit_records", "make_experiments", "own_accuracies",
           "percent", "replicate_seeds", "sampling_variants", "table2_records"]


def replicate_seeds(preset: str | Preset, seed: int = 0, replicates: int | None = None) -> list[int]:
    """``[seed, seed + 1, ...]``: one seed per replicate (count: ``replicates``, else the preset's)."""
    count = get_preset(preset).replicates if replicates is None else int(replicates)
    if count < 1:
        raise ValueError(f"replicates must be positive, got {count}")
    return [int(seed) + k for k in range(count)]


def make_experiments(dataset: str, preset: str | Preset, seeds: Sequence[int], **options: Any) -> list[Any]:
    """One :class:`~grosslib.experiment.Experiment` per seed, sharing ``options`` (run_dir, device, ...)."""
    from .experiment import Experiment

    return [Experiment(dataset, preset, seed=s, **options) for s in seeds]


def percent(value: float | None) -> float:
    """A fraction as percent; NaN for None / NaN."""
    return 100.0 * float(value) if value is not None and not pd.isna(value) else math.nan


def as_config(config: Sequence[int] | None) -> Config | None:
    """A configuration as a tuple of ints (None stays None)."""
    return None if config is None else tuple(int(s) for s in config)


def _input_shape(exp: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in exp.data.test.images.shape[1:])



# --------------------------------------------------------------------------------------------- collectors
def table2_records(experiments: Sequence[Any], sizes: Sequence[int] = FIXED_GROUP_SIZES,
                   alpha: float = 4.0) -> pd.DataFrame:
    """Test accuracy of the full network and of every fixed configuration, per replicate.

    Rows: seed, network ('full', 'fixed s'), group size, config, macs, accuracy (the network trained on
    its own: the full network, or the configuration decomposed, reconstructed and fine-tuned alone) and
    gross accuracy (the GroSS network of temperature ``alpha`` at the same configuration). Runs (or
    reads from the cache) every stage it needs.
    """
    rows = []
    for exp in experiments:
        net, full = exp.full_network()
        rows.append({"seed": exp.seed, "network": "full", "group size": None, "config": None,
                     "macs": count_macs(net, _input_shape(exp)), "accuracy": full.test_accuracy,
                     "gross accuracy": math.nan})
        gross = exp.gross(alpha)
        for s, config in exp.fixed_configs(tuple(sizes)).items():
            fixed = exp.fixed(config)
            rows.append({"seed": exp.seed, "network": f"fixed {s}", "group size": int(s), "config": config,
                         "macs": config_macs(gross.net, config), "accuracy": fixed.test_accuracy,
                         "gross accuracy": exp.accuracy_at(gross.net, config, "test")})
    return pd.DataFrame(rows)


def sampling_variants(alphas: Sequence[float],
                      readings: Sequence[str] = ("literal",)) -> list[tuple[float, str]]:
    """The (alpha, reading) pairs GroSS is trained at: every alpha under every reading, alpha 0 once
    (uniform in both readings; recorded as 'literal')."""
    pairs = []
    for reading in readings:
        for alpha in alphas:
            pair = (float(alpha), "literal" if float(alpha) == 0.0 else reading)
            if pair not in pairs:
                pairs.append(pair)
    return pairs


def deficit_records(experiments: Sequence[Any], alphas: Sequence[float],
                    sizes: Sequence[int] = FIXED_GROUP_SIZES,
                    readings: Sequence[str] = ("literal",)) -> pd.DataFrame:
    """Per replicate, (alpha, reading) and fixed configuration: GroSS test accuracy, fixed test accuracy,
    deficit.

    The deficit (pp) is GroSS at the configuration minus the configuration trained on its own
    (Figure 1, left). Runs or reads every GroSS and fixed stage it needs. ``reading``: how eq. 8 was
    read (:func:`sampling_variants`; alpha 0 rows are 'literal' and stand for both readings).
    """
    rows = []
    for exp in experiments:
        configs = exp.fixed_configs(tuple(sizes))
        fixed = {s: exp.fixed(c).test_accuracy for s, c in configs.items()}
        for alpha, reading in sampling_variants(alphas, readings):
            gross = exp.gross(alpha, reading)
            for s, config in configs.items():
                accuracy = exp.accuracy_at(gross.net, config, "test")
                rows.append({"seed": exp.seed, "alpha": float(alpha), "reading": reading,
                             "group size": int(s), "config": config,
                             "name": config_name(config), "macs": config_macs(gross.net, config),
                             "gross accuracy": accuracy, "fixed accuracy": fixed[s],
                             "deficit (pp)": percent(accuracy) - percent(fixed[s])})
    return pd.DataFrame(rows)


def all_config_records(experiments: Sequence[Any], alphas: Sequence[float], split: str = "test",
                       readings: Sequence[str] = ("literal",),
                       configs: Sequence[Sequence[int]] | None = None) -> pd.DataFrame:
    """Every configuration (or those of ``configs``) of the GroSS network of each (alpha, reading) (and
    replicate) evaluated on ``split``.

    Long table: seed, alpha, reading and the columns of :meth:`Experiment.evaluate_configs` (config,
    name, macs, params, accuracy, loss, ...). Evaluations are cached per GroSS stage and split.
    """
    frames = []
    for exp in experiments:
        for alpha, reading in sampling_variants(alphas, readings):
            df = exp.gross_evaluations(alpha, split, reading=reading, configs=configs)
            frames.append(df.assign(seed=exp.seed, alpha=alpha, reading=reading))
    return pd.concat(frames, ignore_index=True)


def own_accuracies(experiments: Sequence[Any], configs: Iterable[Sequence[int]]) -> dict[Config, list[float]]:
    """Test accuracy of each configuration trained on its own (:meth:`Experiment.fixed`), per replicate."""
    unique = list(dict.fromkeys(as_config(c) for c in configs))
    return {c: [exp.fixed(c).test_accuracy for exp in experiments] for c in unique}
