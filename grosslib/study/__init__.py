"""The paper's whole protocol over several seeds, resumable, and the records its report is built from.

The paper's design (``StudyPlan(design="median")``, the default): :func:`choose_network` trains
``n_networks`` (5) full networks, seeds 0..4, and decomposes the median one by validation accuracy once
(``networks.json``); every seed's later stages then start from that decomposition
(``Experiment(seed=k, network_seed=median)``). ``design="per-seed"``: each seed its own full network.

One seed (:func:`run_seed`) trains, in this order, every stage through a cached
:class:`grosslib.experiment.Experiment` (a stage already done is read back, a killed one resumes):

1. the full network, its BTD into the GroSS series (the median design: read, shared);
2. GroSS at the search temperature (alpha 4, eq. 8 read literally), the fixed baselines 1/4/16/32
   trained on their own;
3. the exhaustive search on the validation split; the ``top_k`` configurations under the fixed-4 and
   fixed-16 budgets trained on their own (Table 3); the same for alpha 4 under the other reading of
   eq. 8 (``table3_readings``);
4. :func:`ranking_configs`: 8 configurations spread over the MAC range, trained on their own, so
   that GroSS's ranking of configurations can be checked (Kendall's tau; not in the paper);
5. GroSS at the other temperatures and readings (alpha 0, 4, 8 under eq. 8's literal and normalized
   readings, alpha 0 once), each evaluated on test at :func:`profile_configs`' 24 configurations
   spread over the MAC range (``n_profile=None``: all 252, as the paper's Figure 1; the study evaluates
   what its figures and tests need: the whole space only on the search split, for the search).

:func:`run_study` runs several seeds, in parallel processes when ``jobs > 1``, and then
:func:`collect_records` reads every result back into a few long tables written to
``<run_dir>/records.json``: the only input of the report (:mod:`grosslib.report`, notebook 06).

Command line::

    python -m grosslib.study run --run-dir runs/study [--seeds 5 | --seed-list 0,1] [--jobs 2]
        [--dataset fashion-mnist]
    python -m grosslib.study run --run-dir runs/study --engine ray [--address HEAD:6379]
        [--cpus-per-task 1] [--gpus-per-task 0.5]   # a Ray task per stage (grosslib.study.ray_engine)
    python -m grosslib.study collect --run-dir runs/study     # records.json from the cached stages
    python -m grosslib.study report --run-dir runs/study [--publish]   # render notebook 06

Ctrl-C (SIGINT) or SIGTERM stops a run, its seed processes included, and names the command that resumes
it (every finished stage is kept); ``python -m grosslib.study run --help`` lists the checks and exit
statuses. ``report`` executes ``notebooks/06_reproduction_report.ipynb`` into the study directory; with
``--publish`` it also copies ``records.json`` to ``results/fashion-mnist-study/`` and re-executes the
committed notebook in place on it (figures to ``figures/``), which is how the committed report is made.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from .. import presets
from .. import records as collectors
from ..io import atomic_write_text
from ..macs import config_macs
from ..models import Config, config_name, search_space
from ..runinfo import environment_info
from ..sampling import check_reading
from ..search import select_under_budgets

__all__ = ["ADOPTED_PLAN", "DESIGNS", "ENGINES", "NETWORKS_FILE", "PARENT_ENV", "RECORDS_FILE",
           "RECORD_TABLES", "SEED_DONE_FILE", "SHARED_DIR", "STUDY_FILE", "StudyFailed",
           "StudyInterrupted", "StudyPlan", "check_study_file", "choose_network", "choose_network_task",
           "collect_records", "export_shared", "import_shared", "load_or_collect", "median_seed",
           "network_seed_of", "parse_config", "profile_configs", "ranking_configs", "read_records",
           "read_study_file", "record_shard", "run_seed", "run_study", "searched_configs", "seed_task",
           "stage_task", "write_records",
           "write_study_file"]


STUDY_FILE = "study.json"
RECORDS_FILE = "records.json"
SEED_DONE_FILE = "study_seed.json"
NETWORKS_FILE = "networks.json"
#: the study designs (StudyPlan.design)
DESIGNS: tuple[str, ...] = ("median", "per-seed")
#: how run_study runs the seeds: 'local' (this process, or one process per seed with jobs > 1) or 'ray'
#: (one Ray task per stage: each full network, the median's decomposition, and per seed each GroSS
#: network, fixed baseline, search and configuration trained alone; grosslib.study.ray_engine)
ENGINES: tuple[str, ...] = ("local", "ray")


@dataclass(frozen=True)
class StudyPlan:
    """What one seed of the study trains and evaluates (the paper's choices by default)."""

    alphas: tuple[float, ...] = (0.0, 4.0, 8.0)
    search_alpha: float = 4.0
    fixed_group_sizes: tuple[int, ...] = presets.FIXED_GROUP_SIZES
    budget_group_sizes: tuple[int, ...] = (4, 16)
    top_k: int = 2
    #: configurations ranked by GroSS and trained on their own (the fixed ones among them; Kendall's tau)
    n_ranked: int = 8
    #: configurations of every GroSS network evaluated on the report split (Figure 1 right): the fixed
    #: and ranked ones and others spread over the MAC range (:func:`profile_configs`), this many in all;
    #: None: the whole search space (252 for PaperNet), as the paper plots it
    n_profile: int | None = 24
    search_split: str = "val"
    report_split: str = "test"
    #: eq. 8's readings GroSS is trained under (grosslib.sampling; alpha 0 once, uniform in both)
    readings: tuple[str, ...] = ("literal", "normalized")
    #: the reading of the search network (Table 3's picks)
    search_reading: str = "literal"
    #: the readings whose alpha-``search_alpha`` GroSS network is searched and whose picks are trained on
    #: their own (Table 3 per reading); ``search_reading`` among them (claims 2 and 4, the ranking)
    table3_readings: tuple[str, ...] = ("literal", "normalized")
    #: 'median': n_networks full networks, the median by validation accuracy decomposed once and every
    #: later stage trained per seed from it (the paper's design); 'per-seed': each seed its own network
    design: str = "median"
    n_networks: int = 5

    def __post_init__(self) -> None:
        if self.search_alpha not in self.alphas:
            raise ValueError(f"search_alpha {self.search_alpha} must be one of the alphas {self.alphas}")
        if not set(self.budget_group_sizes) <= set(self.fixed_group_sizes):
            raise ValueError(f"budget group sizes {self.budget_group_sizes} must be among the fixed ones "
                             f"{self.fixed_group_sizes}")
        if self.top_k < 1 or self.n_ranked < 2:
            raise ValueError(f"top_k must be >= 1 and n_ranked >= 2, got {self.top_k} and {self.n_ranked}")
        if self.n_profile is not None and self.n_profile < self.n_ranked:
            raise ValueError(f"n_profile ({self.n_profile}) must be None (every configuration) or at least "
                             f"n_ranked ({self.n_ranked}): the ranked configurations are among them")
        for reading in (*self.readings, self.search_reading):
            check_reading(reading)
        if not self.readings or self.search_reading not in self.readings:
            raise ValueError(f"search_reading {self.search_reading!r} must be one of the readings "
                             f"{self.readings}")
        if self.search_reading not in self.table3_readings or not set(self.table3_readings) <= set(
                self.readings):
            raise ValueError(f"table3_readings {self.table3_readings} must be among the readings "
                             f"{self.readings} and include search_reading {self.search_reading!r}")
        if self.design not in DESIGNS:
            raise ValueError(f"design must be one of {DESIGNS}, got {self.design!r}")
        if self.n_networks < 1:
            raise ValueError(f"n_networks must be >= 1, got {self.n_networks}")

    @property
    def variants(self) -> list[tuple[float, str]]:
        """The (alpha, reading) pairs GroSS is trained at (alpha 0 once)."""
        return collectors.sampling_variants(self.alphas, self.readings)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyPlan:
        """Inverse of :meth:`to_dict`. A plan recorded before the design and the readings existed ran
        the per-seed design under the literal reading, and evaluated every configuration on the report
        split."""
        data = {"design": "per-seed", "readings": ["literal"], "n_profile": None,
                "table3_readings": [data.get("search_reading", "literal")], **data}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# --------------------------------------------------------------------------------------------- choices
def ranking_configs(net: Any, n: int = 12, include: Iterable[Sequence[int]] = ()) -> list[Config]:
    """``n`` configurations of ``net``'s search space spread over its MAC range, ``include`` among them.

    Greedy farthest-point selection in MACs: start from ``include`` (e.g. the fixed baselines), add the
    cheapest and the most expensive configuration, then repeatedly the one whose MACs are farthest from
    every chosen one (ties: fewer MACs, then the smaller configuration). Depends only on the network's
    shapes, so every seed ranks the same configurations. Returned sorted by MACs.
    """
    space = search_space(net)
    macs = {c: config_macs(net, c) for c in space}
    chosen = list(dict.fromkeys(tuple(int(s) for s in c) for c in include))
    unknown = [c for c in chosen if c not in macs]
    if unknown:
        raise ValueError(f"configurations {unknown} are not in the network's search space")
    if n > len(space):
        raise ValueError(f"cannot pick {n} configurations from a search space of {len(space)}")
    ordered = sorted(space, key=lambda c: (macs[c], c))
    for end in (ordered[0], ordered[-1]):
        if len(chosen) < n and end not in chosen:
            chosen.append(end)
    while len(chosen) < n:
        def distance(c: Config) -> float:
            return min(abs(macs[c] - macs[d]) for d in chosen)
        candidates = [c for c in ordered if c not in chosen]
        chosen.append(max(candidates, key=lambda c: (distance(c), -macs[c], [-s for s in c])))
    return sorted(chosen, key=lambda c: (macs[c], c))


def profile_configs(net: Any, plan: StudyPlan, fixed: Iterable[Sequence[int]]) -> list[Config] | None:
    """The configurations every GroSS network is evaluated at on the report split: ``plan.n_profile``
    of them spread over the MAC range (:func:`ranking_configs`), the fixed and the ranked configurations
    among them; None (every configuration) when ``plan.n_profile`` is None. The same for every seed."""
    if plan.n_profile is None:
        return None
    ranked = ranking_configs(net, plan.n_ranked, include=fixed)
    return ranking_configs(net, plan.n_profile, include=ranked)


def _with_picks(configs: list[Config] | None, picks: pd.DataFrame) -> list[Config] | None:
    """``configs`` and the search's picks (their test accuracy is reported), picks last; None stays None."""
    if configs is None:
        return None
    return list(dict.fromkeys([*configs, *(tuple(int(s) for s in c) for c in picks["config"])]))


def parse_config(name: str | Sequence[int]) -> Config:
    """``'2-32-64'`` (or a sequence) -> ``(2, 32, 64)``."""
    if isinstance(name, str):
        try:
            return tuple(int(s) for s in name.split("-"))
        except ValueError as exc:
            raise ValueError(f"not a configuration name: {name!r} (expected e.g. '2-32-64')") from exc
    return tuple(int(s) for s in name)


# --------------------------------------------------------------------------------------------- one seed
def run_seed(exp: Any, plan: StudyPlan = StudyPlan()) -> dict[str, Any]:
    """Train and evaluate every stage of one seed (each cached; see the module docstring).

    Returns (and writes to ``<seed_dir>/study_seed.json``) the wall time of this call, the wall time of
    every call so far (``wall_seconds``: resumed and cached calls add theirs) and the summed training time
    of every stage as recorded by its checkpoints (which survives resumes).
    """
    started = time.perf_counter()
    _, full = exp.full_network()
    exp.decomposed()
    search_gross = exp.gross(plan.search_alpha, plan.search_reading)
    fixed = exp.fixed_configs(plan.fixed_group_sizes)
    stage_seconds = full.wall_seconds + _stage_seconds(search_gross)
    trained: dict[Config, Any] = {}
    for config in fixed.values():
        trained[config] = exp.fixed(config)
    picks = {}
    for reading in _table3_order(plan):         # the search reading first, then the others (Table 3)
        picks[reading] = _picks(exp, plan, reading, fixed)
        configs = [*picks[reading]["config"]]
        if reading == plan.search_reading:
            configs += ranking_configs(search_gross.net, plan.n_ranked, include=fixed.values())
        for config in map(tuple, configs):
            if config not in trained:
                trained[config] = exp.fixed(config)
    stage_seconds += sum(_stage_seconds(r) for r in trained.values())
    profile = profile_configs(search_gross.net, plan, fixed.values())
    counted = {(plan.search_alpha, plan.search_reading)}
    for alpha, reading in plan.variants:
        gross = exp.gross(alpha, reading)
        if (alpha, reading) not in counted:
            stage_seconds += _stage_seconds(gross)
            counted.add((alpha, reading))
        searched = alpha == plan.search_alpha and reading in picks
        exp.gross_evaluations(alpha, plan.report_split, gross.net, reading=reading,
                              configs=_with_picks(profile, picks[reading]) if searched else profile)
    path = Path(exp.seed_dir) / SEED_DONE_FILE
    previous = json.loads(path.read_text()) if path.is_file() else {}
    call_seconds = time.perf_counter() - started
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    summary = {"seed": exp.seed, "finished_at": now,
               "first_finished_at": previous.get("first_finished_at", now), "call_seconds": call_seconds,
               # every call's wall time summed: a later call that only reads the cache adds seconds, not hours
               "wall_seconds": previous.get("wall_seconds", previous.get("call_seconds", 0.0)) + call_seconds,
               "training_seconds": stage_seconds, "configs_trained_alone": [config_name(c) for c in trained]}
    path.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _table3_order(plan: StudyPlan) -> list[str]:
    return [plan.search_reading, *(r for r in plan.table3_readings if r != plan.search_reading)]


def _picks(exp: Any, plan: StudyPlan, reading: str, fixed: dict[int, Config]) -> pd.DataFrame:
    """The search (Table 3) of one seed's alpha-``search_alpha`` GroSS network under ``reading``: the
    ``top_k`` configurations under each budget on the search split (:func:`select_under_budgets`)."""
    gross = exp.gross(plan.search_alpha, reading)
    evaluations = exp.gross_evaluations(plan.search_alpha, plan.search_split, gross.net, reading=reading)
    budgets = {s: fixed[s] for s in plan.budget_group_sizes}
    return select_under_budgets(evaluations, budgets, k=plan.top_k)


def _stage_seconds(result: Any) -> float:
    return sum(r.wall_seconds for r in (result.reconstruct, result.finetune) if r is not None)


# --------------------------------------------------------------------------------------------- many seeds
def _experiments(settings: dict[str, Any], seeds: Sequence[int],
                 network_seed: int | None = None) -> list[Any]:
    return collectors.make_experiments(settings["dataset"], settings["preset"], list(seeds),
                                     run_dir=settings["run_dir"], device=settings.get("device"),
                                     data_limit=settings.get("data_limit"), progress=False,
                                     overrides=settings.get("overrides") or {}, network_seed=network_seed)


def median_seed(val_accuracy: dict[int, float]) -> int:
    """The seed of the median network by validation accuracy (ties: the lower seed; an even number of
    networks: the lower of the two middle ones)."""
    if not val_accuracy:
        raise ValueError("no full networks to choose the median from")
    ordered = sorted(val_accuracy, key=lambda seed: (val_accuracy[seed], seed))
    return int(ordered[(len(ordered) - 1) // 2])


def choose_network(run_dir: str | Path, settings: dict[str, Any], plan: StudyPlan) -> dict[str, Any]:
    """The median design's first stage: train (or read) full networks of seeds ``0..n_networks-1``,
    decompose the median one by validation accuracy once, and write ``<run_dir>/networks.json`` (every
    network's validation and test accuracy, the median seed and the rule); returns its content."""
    path = Path(run_dir) / NETWORKS_FILE
    if path.is_file():              # chosen before (or imported): only the median network is needed
        info = json.loads(path.read_text())
        if info.get("seeds") == list(range(plan.n_networks)):
            _experiments(settings, [int(info["median_seed"])])[0].decomposed()
            return info
    val, test = {}, {}
    for exp in _experiments(settings, range(plan.n_networks)):
        _, result = exp.full_network()
        val[exp.seed] = float(result.final["val_accuracy"])
        test[exp.seed] = float(result.test_accuracy)
    median = median_seed(val)
    _experiments(settings, [median])[0].decomposed()
    info = {"design": "median", "seeds": sorted(val), "median_seed": median,
            "rule": "the median of the full networks by validation accuracy (ties: lower seed) is decomposed "
                    "once; every later stage of every seed starts from it",
            "val_accuracy": {str(s): v for s, v in sorted(val.items())},
            "test_accuracy": {str(s): v for s, v in sorted(test.items())}}
    atomic_write_text(Path(run_dir) / NETWORKS_FILE, json.dumps(info, indent=1) + "\n")
    return info


#: In a results directory: what every seed of a median-design study needs (export_shared)
SHARED_DIR = "shared"


def _shared_files(run_dir: Path) -> list[Path]:
    """The files of a study directory that every seed needs, relative to it: study.json, networks.json,
    the median network's training record (``seed<m>/full/``) and its decomposition."""
    median = json.loads((run_dir / NETWORKS_FILE).read_text())["median_seed"]
    network = Path(f"seed{median}")
    full = sorted(p.relative_to(run_dir) for p in (run_dir / network / "full").iterdir() if p.is_file())
    return [Path(STUDY_FILE), Path(NETWORKS_FILE), *full, network / "decomposed.pt",
            network / "decomposed.json"]


def export_shared(run_dir: str | Path, destination: str | Path) -> list[Path]:
    """Copy what every seed of a median-design study needs (:func:`_shared_files`, about 2 MB for
    PaperNet) to ``destination``, so that another machine continues the same study
    (:func:`import_shared`); returns the files written."""
    import shutil

    run_dir, destination = Path(run_dir), Path(destination)
    if not (run_dir / NETWORKS_FILE).is_file():
        raise FileNotFoundError(f"{run_dir / NETWORKS_FILE} not found: only a median-design study that "
                                "chose its network can be exported")
    written = []
    for name in _shared_files(run_dir):
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run_dir / name, destination / name)
        written.append(destination / name)
    return written


def import_shared(source: str | Path, run_dir: str | Path) -> dict[str, Any]:
    """Start ``run_dir`` from :func:`export_shared`'s files (the same study continued elsewhere): copies
    them in, refusing (one line) a file already there with other content; returns the study settings."""
    import shutil

    source, run_dir = Path(source), Path(run_dir)
    if not (source / NETWORKS_FILE).is_file() or not (source / STUDY_FILE).is_file():
        raise FileNotFoundError(f"{source} holds no exported study (no {STUDY_FILE} and {NETWORKS_FILE}); "
                                "export one with `python -m grosslib.study report --publish`")
    files = _shared_files(source)
    missing = [name.as_posix() for name in files if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{source} lacks {', '.join(missing)}: checkpoints are not in git; copy the "
                                "whole folder that `report --publish` (or export) wrote")
    for name in files:
        there = run_dir / name
        differs = there.is_file() and there.read_bytes() != (source / name).read_bytes()
        if differs and name != Path(STUDY_FILE):
            raise ValueError(f"{there} differs from {source / name}: {run_dir} holds another study; use "
                             "another --run-dir")
    for name in files:
        if name == Path(STUDY_FILE) and (run_dir / name).is_file():
            continue                      # keep this directory's own record of its shards
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, run_dir / name)
    return read_study_file(run_dir)


def network_seed_of(run_dir: str | Path, plan: StudyPlan) -> int | None:
    """The seed of the network every stage starts from: the median's (``networks.json``) in the median
    design, None (each seed its own) in the per-seed design."""
    if plan.design != "median":
        return None
    path = Path(run_dir) / NETWORKS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the median design chooses its network first (run "
                                f"`python -m grosslib.study run --run-dir {run_dir}`)")
    return int(json.loads(path.read_text())["median_seed"])


def _stored_settings(run_dir: str | Path) -> tuple[dict[str, Any], StudyPlan]:
    study = read_study_file(run_dir)
    return {**study, "run_dir": Path(run_dir)}, StudyPlan.from_dict(study["plan"])


def seed_task(run_dir: str | Path, seed: int, threads: int = 1, *,
              full_network_only: bool = False) -> dict[str, Any]:
    """One seed of the study directory ``run_dir`` with ``threads`` torch threads: :func:`run_seed` (its
    summary), or with ``full_network_only`` only its full network (the median design's first stage).

    What a seed process of the local engine (``python -m grosslib.study seed``) and a Ray task of the
    Ray engine run, so that both engines train the same stages from the same settings (``study.json``).
    """
    import torch

    torch.set_num_threads(int(threads))
    settings, plan = _stored_settings(run_dir)
    if full_network_only:
        _, result = _experiments(settings, [seed])[0].full_network()
        return {"seed": int(seed), "full network": result.final}
    exp = _experiments(settings, [seed], network_seed_of(run_dir, plan))[0]
    return run_seed(exp, plan)


def searched_configs(exp: Any, plan: StudyPlan) -> list[Config]:
    """The configurations :func:`run_seed` trains on their own after the search, in its order, the fixed
    baselines left out: every ``table3_readings`` reading's picks and, for the search reading, the
    ranked configurations. Trains only the GroSS networks searched (if not yet)."""
    fixed = exp.fixed_configs(plan.fixed_group_sizes)
    search_gross = exp.gross(plan.search_alpha, plan.search_reading)
    configs: list[Config] = []
    for reading in _table3_order(plan):
        configs += [tuple(int(s) for s in c) for c in _picks(exp, plan, reading, fixed)["config"]]
        if reading == plan.search_reading:
            configs += ranking_configs(search_gross.net, plan.n_ranked, include=fixed.values())
    baselines = set(fixed.values())
    return [c for c in dict.fromkeys(configs) if c not in baselines]


#: the stages :func:`stage_task` trains (the Ray engine's tasks within one seed)
TASK_STAGES: tuple[str, ...] = ("network", "gross", "fixed-size", "fixed", "search")


def stage_task(run_dir: str | Path, seed: int, threads: int, stage: str, *args: Any) -> Any:
    """One cached stage of one seed of the study directory ``run_dir``, with ``threads`` torch threads:
    ``network`` (the seed's own full network and its decomposition: the per-seed design), ``gross``
    (``args``: alpha, reading), ``fixed-size`` (``args``: the group size of a fixed baseline), ``fixed``
    (``args``: a configuration) or ``search`` (returns :func:`searched_configs`, as lists).

    The stages :func:`run_seed` trains, one at a time (each stage seeds its own randomness, so the order
    does not change a result); ``run_seed`` afterwards reads them back, so records are the same.
    """
    import torch

    if stage not in TASK_STAGES:
        raise ValueError(f"stage must be one of {TASK_STAGES}, got {stage!r}")
    torch.set_num_threads(int(threads))
    settings, plan = _stored_settings(run_dir)
    exp = _experiments(settings, [seed], network_seed_of(run_dir, plan))[0]
    if stage == "network":
        exp.full_network()
        exp.decomposed()
    elif stage == "gross":
        exp.gross(float(args[0]), str(args[1]))
    elif stage == "fixed-size":
        exp.fixed(exp.uniform_config(int(args[0])))
    elif stage == "fixed":
        exp.fixed(tuple(int(s) for s in args[0]))
    else:
        return [list(c) for c in searched_configs(exp, plan)]
    return None


def choose_network_task(run_dir: str | Path, threads: int = 1) -> dict[str, Any]:
    """:func:`choose_network` of the study directory ``run_dir`` with ``threads`` torch threads (the Ray
    engine's task between the full networks and the seeds)."""
    import torch

    torch.set_num_threads(int(threads))
    settings, plan = _stored_settings(run_dir)
    return choose_network(run_dir, settings, plan)


def _settings(dataset: str, preset: str, plan: StudyPlan, data_limit: int | None,
              overrides: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """The settings a study directory is tied to (its other fields may change between runs)."""
    return {"dataset": dataset, "preset": preset, "plan": plan.to_dict(), "data_limit": data_limit,
            "overrides": overrides or {}}


def check_study_file(run_dir: str | Path, *, dataset: str, preset: str, plan: StudyPlan,
                     data_limit: int | None = None,
                     overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """Refuse a ``run_dir`` whose ``study.json`` holds other settings; its settings (None when absent).

    Raises a one-line ``ValueError`` naming the setting that differs (another dataset, preset, plan,
    data limit or overrides: its checkpoints would not match) and the fix. Writes nothing.
    """
    path = Path(run_dir) / STUDY_FILE
    if not path.exists():
        return None
    stored = read_study_file(run_dir)
    settings = _settings(dataset, preset, plan, data_limit, overrides)
    for key, value in settings.items():
        if json.loads(json.dumps(stored.get(key))) != json.loads(json.dumps(value)):
            raise ValueError(f"{path}: this study was run with {key}={stored.get(key)!r}, not {value!r}; "
                             "use another --run-dir (or the study's own settings)")
    return stored


def write_study_file(run_dir: str | Path, *, dataset: str, preset: str, seeds: Sequence[int],
                     plan: StudyPlan, device: str | None = None, data_limit: int | None = None,
                     overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Create (or check) ``<run_dir>/study.json``: the settings a study directory is tied to.

    A directory already holding a study with another dataset, preset, plan, data limit or overrides is
    refused (:func:`check_study_file`); more seeds may be added later.
    """
    run_dir = Path(run_dir)
    stored = check_study_file(run_dir, dataset=dataset, preset=preset, plan=plan, data_limit=data_limit,
                              overrides=overrides)
    if stored is not None:
        seeds = sorted(set(stored["seeds"]) | {int(s) for s in seeds})
    settings = _settings(dataset, preset, plan, data_limit, overrides)
    path = run_dir / STUDY_FILE
    chosen = presets.get_preset(preset).with_overrides(overrides)
    study = {**settings, "seeds": [int(s) for s in seeds], "device": device,
             "btd_options": dict(chosen.btd_options),
             "schedule": {stage: cfg.to_dict() for stage, cfg in chosen.stages.items()},
             "schedule_note": presets.STUDY_SCHEDULE_NOTE if preset == "study" else "",
             "btd_note": presets.STUDY_BTD_NOTE if preset == "study" else "",
             "preset_settings": chosen.to_dict(), "environment": environment_info(device or "cpu"),
             "shards": (stored or {}).get("shards", [])}     # the invocations so far (record_shard)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(study, indent=1, default=str) + "\n")
    return study


def read_study_file(run_dir: str | Path) -> dict[str, Any]:
    """The settings of a study directory (``study.json``), with a clear error when absent or corrupt."""
    path = Path(run_dir) / STUDY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a study directory (start one with "
                                f"`python -m grosslib.study run --run-dir {run_dir}`)")
    try:
        study = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); delete it and re-run to rewrite it") from exc
    if not isinstance(study, dict) or "seeds" not in study:
        raise ValueError(f"{path} is not a study file (no settings and seeds); delete it and re-run to "
                         "rewrite it")
    return study


def run_study(run_dir: str | Path, *, dataset: str = "fashion-mnist", preset: str = "study",
              seeds: Sequence[int] = (0, 1, 2), jobs: int = 1, threads: int | None = None,
              device: str | None = None, data_limit: int | None = None,
              overrides: dict[str, dict[str, Any]] | None = None, plan: StudyPlan = StudyPlan(),
              collect: bool = True, engine: str = "local", address: str | None = None,
              cpus_per_task: int = 1, gpus_per_task: float = 0.0) -> dict[str, pd.DataFrame] | None:
    """Run :func:`run_seed` for every seed (``jobs`` processes at a time), then :func:`collect_records`.

    ``engine='ray'``: every stage is a Ray task (:func:`grosslib.study.ray_engine.run_on_ray`: each full
    network, the median's decomposition, per seed each GroSS network, fixed baseline, the search, each
    configuration it picks, then :func:`run_seed`; ``cpus_per_task`` CPUs and ``gpus_per_task`` GPUs
    each, ``threads`` torch threads, default ``cpus_per_task``) on the Ray cluster at ``address`` (None: a
    Ray instance started on this machine); ``jobs`` does not apply. The tasks train the local engine's
    cached stages (:func:`seed_task`, :func:`stage_task`, :func:`choose_network_task`), each stage seeding
    its own randomness, so both engines give the same records and either resumes the other's run.

    Each seed in a child process logs to ``<run_dir>/seed<k>/study.log``; a failure names the seed and
    its log, and leaves every finished stage in place (running again resumes). ``threads``: torch CPU
    threads per process (default: the cores divided among the jobs). SIGINT (Ctrl-C) or SIGTERM stops
    every seed, child processes included, and raises :class:`StudyInterrupted` naming the seeds that
    finished and those stopped.
    """
    import torch
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    seeds = [int(s) for s in seeds]
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "ray":
        from .ray_engine import ray_session, run_on_ray

        threads = int(threads or cpus_per_task)
        with ray_session(address, cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task):
            write_study_file(run_dir, dataset=dataset, preset=preset, seeds=seeds, plan=plan, device=device,
                             data_limit=data_limit, overrides=overrides)
            started = time.perf_counter()
            started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
            run_on_ray(run_dir, seeds, plan, threads=threads, cpus_per_task=cpus_per_task,
                       gpus_per_task=gpus_per_task)
        record_shard(run_dir, seeds, started_at, time.perf_counter() - started, engine="ray", address=address,
                     cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task, threads=threads, device=device)
        return collect_records(run_dir) if collect else None
    write_study_file(run_dir, dataset=dataset, preset=preset, seeds=seeds, plan=plan, device=device,
                     data_limit=data_limit, overrides=overrides)
    settings = {"dataset": dataset, "preset": preset, "run_dir": run_dir, "device": device,
                "data_limit": data_limit, "overrides": overrides}
    network_jobs = max(1, min(int(jobs), plan.n_networks))
    jobs = max(1, min(int(jobs), len(seeds)))
    threads_given = threads
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    started, started_at = time.perf_counter(), datetime.now(timezone.utc).isoformat(timespec="seconds")
    network_seed = None
    if plan.design == "median":
        if network_jobs > 1 and not (run_dir / NETWORKS_FILE).is_file():   # the full networks, in parallel
            _run_in_processes(run_dir, list(range(plan.n_networks)), network_jobs,
                              threads_given or max(1, (os.cpu_count() or 1) // network_jobs),
                              extra=("--full-network-only",))
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        try:
            with _on_signals(_raise_interrupted):
                network_seed = choose_network(run_dir, settings, plan)["median_seed"]
        except KeyboardInterrupt as exc:
            raise StudyInterrupted(getattr(exc, "signum", signal.SIGINT), finished=[], stopped=seeds[:1],
                                   pending=seeds[1:]) from None
    if jobs == 1:
        torch.set_num_threads(threads)
        finished: list[int] = []
        try:
            with _on_signals(_raise_interrupted):
                for exp in tqdm(_experiments(settings, seeds, network_seed), desc="seeds"):
                    run_seed(exp, plan)
                    finished.append(exp.seed)
        except KeyboardInterrupt as exc:
            at = len(finished)
            raise StudyInterrupted(getattr(exc, "signum", signal.SIGINT), finished=finished,
                                   stopped=seeds[at:at + 1], pending=seeds[at + 1:]) from None
    else:
        _run_in_processes(run_dir, seeds, jobs, threads)
    record_shard(run_dir, seeds, started_at, time.perf_counter() - started, jobs=jobs, threads=threads,
                 device=device)
    return collect_records(run_dir) if collect else None


def record_shard(run_dir: str | Path, seeds: Sequence[int], started_at: str, wall_seconds: float,
                 **details: Any) -> dict[str, Any]:
    """Append one finished invocation of :func:`run_study` (a *shard*: its seeds, start, wall time,
    jobs, threads, device and machine) to ``study.json``'s ``"shards"``; returns the entry."""
    path = Path(run_dir) / STUDY_FILE
    study = read_study_file(run_dir)
    environment = environment_info(details.get("device") or "cpu")
    entry = {"seeds": [int(s) for s in seeds], "started_at": started_at, "wall_seconds": float(wall_seconds),
             **details, "machine": {k: environment.get(k) for k in ("cpu", "cpu_count", "platform", "torch")}}
    study["shards"] = [*study.get("shards", []), entry]
    atomic_write_text(path, json.dumps(study, indent=1, default=str) + "\n")
    return entry


class StudyFailed(RuntimeError):
    """Some seeds (or stages) of a study failed; every finished stage is kept and running again resumes."""


class StudyInterrupted(KeyboardInterrupt):
    """A study stopped by SIGINT (Ctrl-C) or SIGTERM, after every seed process it started was stopped.

    ``signum``: the signal; ``finished`` / ``stopped`` / ``pending``: the seeds that finished, were
    stopped mid-way (their finished stages are kept) and never started; ``failed``: seeds that had
    failed before (``'seed k (exit n; see <log>)'``). A :class:`KeyboardInterrupt`, so that
    ``except Exception`` does not swallow it.
    """

    def __init__(self, signum: int = signal.SIGINT, *, finished: Sequence[int] = (),
                 stopped: Sequence[int] = (), pending: Sequence[int] = (),
                 failed: Sequence[str] = ()) -> None:
        super().__init__(int(signum))
        self.signum = int(signum)
        self.finished, self.stopped, self.pending = list(finished), list(stopped), list(pending)
        self.failed = list(failed)

    @property
    def exit_status(self) -> int:
        """The shell's status for a process ended by this signal: 130 (SIGINT), 143 (SIGTERM)."""
        return 128 + self.signum

    def __str__(self) -> str:
        def names(seeds: Sequence[int]) -> str:
            return ", ".join(str(s) for s in seeds) or "none"

        name = signal.Signals(self.signum).name
        if not (self.finished or self.stopped or self.pending or self.failed):
            return f"stopped by {name} (every finished stage is kept)"
        parts = [f"seeds finished: {names(self.finished)}", f"stopped: {names(self.stopped)}"]
        if self.pending:
            parts.append(f"not started: {names(self.pending)}")
        if self.failed:
            parts.append(f"failed: {', '.join(self.failed)}")
        return (f"stopped by {name}; " + "; ".join(parts)
                + " (every finished stage is kept)")


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise StudyInterrupted(signum)


@contextmanager
def _on_signals(handler: Callable[[int, Any], Any]) -> Iterator[None]:
    """``handler`` for SIGINT and SIGTERM while inside, the previous handlers restored after.

    A signal ignored on entry (e.g. SIGINT of a background job) stays ignored; outside the main thread
    (where Python cannot set handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    try:
        for s in _SIGNALS:
            if previous[s] is not signal.SIG_IGN:
                signal.signal(s, handler)
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    """``sig`` to the process group a child leads (``start_new_session``): the child and any of its own."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(process.pid, sig)
        elif process.poll() is None:
            process.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass                        # already gone


def _stop_children(running: dict[int, tuple[subprocess.Popen, Any, Path]], hurry: Callable[[], bool],
                   grace: float = 10.0) -> tuple[list[int], list[int]]:
    """SIGTERM every running child, SIGKILL those alive after ``grace`` seconds (at once if ``hurry()``).

    Waits for each, closes its log and empties ``running``; returns the seeds that still finished
    (exit 0) and those stopped.
    """
    for process, _, _ in running.values():
        if process.poll() is None:
            _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while (any(p.poll() is None for p, _, _ in running.values()) and time.monotonic() < deadline
           and not hurry()):
        time.sleep(0.05)
    for process, _, _ in running.values():
        _signal_group(process, signal.SIGKILL)    # the survivors, and anything they started
    finished, stopped = [], []
    for seed, (process, handle, _) in sorted(running.items()):
        process.wait()
        if process.returncode != 0:
            handle.write(f"\n[{datetime.now().isoformat(timespec='seconds')}] stopped by the study process "
                         f"(exit {process.returncode}); run the study again to resume\n")
        handle.close()
        (finished if process.returncode == 0 else stopped).append(seed)
    running.clear()
    return finished, stopped


def _run_in_processes(run_dir: Path, seeds: Sequence[int], jobs: int, threads: int, *, poll: float = 2.0,
                      grace: float = 10.0, extra: Sequence[str] = ()) -> None:
    """One ``python -m grosslib.study seed`` process per seed (``extra``: more of its arguments, e.g.
    ``--full-network-only``), ``jobs`` at a time.

    Each child leads its own session, so a terminal's Ctrl-C reaches only this process, which stops
    the children itself: on SIGINT or SIGTERM every child gets SIGTERM, then SIGKILL after ``grace``
    seconds (or at a second signal), and :class:`StudyInterrupted` is raised. Any other error here
    stops the children too. On Linux a child also ends when this process dies, even by SIGKILL.
    """
    from tqdm.auto import tqdm

    pending, running, finished, failed = list(seeds), {}, [], []
    received: list[int] = []

    def reap(bar: Any) -> None:
        for seed, (process, handle, log) in list(running.items()):
            if process.poll() is not None:
                handle.close()
                if process.returncode == 0:
                    finished.append(seed)
                else:
                    failed.append(f"seed {seed} (exit {process.returncode}; see {log})")
                del running[seed]
                bar.update(1)

    env = {**os.environ, PARENT_ENV: str(os.getpid())}
    try:
        with _on_signals(lambda signum, frame: received.append(signum)), \
                tqdm(total=len(seeds), desc="seeds") as bar:
            while (pending or running) and not received:
                while pending and len(running) < jobs and not received:
                    seed = pending.pop(0)
                    log = run_dir / f"seed{seed}" / "study.log"
                    log.parent.mkdir(parents=True, exist_ok=True)
                    command = [sys.executable, "-m", "grosslib.study", "seed", "--run-dir", str(run_dir),
                               "--seed", str(seed), "--threads", str(threads), *extra]
                    handle = open(log, "a")
                    try:
                        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                                   start_new_session=True)
                    except BaseException:
                        handle.close()
                        raise
                    running[seed] = (process, handle, log)
                waited = 0.0
                while waited < poll and not received:
                    time.sleep(0.1)
                    waited += 0.1
                reap(bar)
            if received:
                done, stopped = _stop_children(running, lambda: len(received) > 1, grace)
                raise StudyInterrupted(received[0], finished=sorted(finished + done), stopped=stopped,
                                       pending=pending, failed=failed)
    finally:
        if running:                 # an error above: leave no child behind (a signal now: SIGKILL at once)
            late: list[int] = []
            with _on_signals(lambda signum, frame: late.append(signum)):
                _stop_children(running, lambda: bool(late), grace)
    if failed:
        raise StudyFailed("study failed for " + ", ".join(failed) + "; finished stages are kept, run again "
                           "to resume")


#: Set in each seed process's environment to the pid of the process that started it (see ``__main__``).
PARENT_ENV = "GROSS_STUDY_PARENT"


# --------------------------------------------------------------------------------------------- records
def collect_records(run_dir: str | Path, seeds: Sequence[int] | None = None, *, write: bool = True,
                    device: str | None = None) -> dict[str, pd.DataFrame]:
    """Read every result of a study directory into long tables (running any stage still missing).

    Tables: ``table2`` (:func:`grosslib.records.table2_records`), ``deficits``
    (:func:`~grosslib.records.deficit_records`), ``profiles`` (every configuration of every alpha on
    the report split), ``search`` (every configuration on the search split at the search alpha),
    ``selections`` (per seed the search reading's picks under each budget with their own-trained and
    GroSS test accuracy, and the budget's fixed accuracy; ``selections_by_reading``: every reading of
    ``table3_readings``), ``ranking`` (the ranked configurations: GroSS vs own
    test accuracy) and ``seeds`` (timing). Written to ``<run_dir>/records.json`` with ``study.json``'s
    settings when ``write``.
    """
    study = read_study_file(run_dir)
    plan = StudyPlan.from_dict(study["plan"])
    seeds = [int(s) for s in (seeds if seeds is not None else study["seeds"])]
    settings = {**study, "run_dir": Path(run_dir), "device": device or study.get("device")}
    experiments = _experiments(settings, seeds, network_seed_of(run_dir, plan))
    for exp in experiments:
        run_seed(exp, plan)
    sizes = plan.fixed_group_sizes
    records: dict[str, pd.DataFrame] = {
        "table2": collectors.table2_records(experiments, sizes, alpha=plan.search_alpha),
        "deficits": collectors.deficit_records(experiments, plan.alphas, sizes, readings=plan.readings),
        "profiles": pd.DataFrame(),     # filled below, one seed at a time
    }
    profiles, search, selections, ranking, timing = [], [], [], [], []
    for exp in experiments:
        gross = exp.gross(plan.search_alpha, plan.search_reading)
        evaluations = exp.gross_evaluations(plan.search_alpha, plan.search_split, gross.net,
                                            reading=plan.search_reading)
        search.append(evaluations.assign(seed=exp.seed))
        fixed = exp.fixed_configs(sizes)
        profile = profile_configs(gross.net, plan, fixed.values())
        profiles.append(collectors.all_config_records([exp], plan.alphas, plan.report_split,
                                                      readings=plan.readings, configs=profile))
        for reading in _table3_order(plan):
            picks = _picks(exp, plan, reading, fixed)
            searched = exp.gross(plan.search_alpha, reading).net
            reading_test = exp.gross_evaluations(plan.search_alpha, plan.report_split, searched,
                                                 reading=reading, configs=_with_picks(profile, picks))
            reading_test = reading_test.set_index("name")
            if reading == plan.search_reading:
                test = reading_test
            for row in picks.itertuples(index=False):
                budget_config = tuple(row[picks.columns.get_loc("budget config")])
                selections.append({
                    "seed": exp.seed, "reading": reading, "budget": int(row.budget),
                    "budget name": config_name(budget_config),
                    "budget macs": int(row[picks.columns.get_loc("budget macs")]), "rank": int(row.rank),
                    "name": row.name, "macs": int(row.macs), "gross val accuracy": float(row.accuracy),
                    "gross test accuracy": float(reading_test.loc[row.name, "accuracy"]),
                    "own accuracy": exp.fixed(tuple(row.config)).test_accuracy,
                    "budget own accuracy": exp.fixed(budget_config).test_accuracy,
                    "budget gross test accuracy": float(
                        reading_test.loc[config_name(budget_config), "accuracy"])})
        for config in ranking_configs(gross.net, plan.n_ranked, include=fixed.values()):
            name = config_name(config)
            ranking.append({"seed": exp.seed, "name": name, "macs": int(test.loc[name, "macs"]),
                            "gross accuracy": float(test.loc[name, "accuracy"]),
                            "own accuracy": exp.fixed(config).test_accuracy})
        done = Path(exp.seed_dir) / SEED_DONE_FILE
        info = json.loads(done.read_text()) if done.is_file() else {}
        timing.append({"seed": exp.seed, "training seconds": info.get("training_seconds", math.nan),
                       "wall seconds": info.get("wall_seconds", math.nan),  # run_seed above wrote it
                       "finished at": info.get("finished_at"),
                       "configs trained alone": len(info.get("configs_trained_alone", [])),
                       "full test accuracy": exp.full_network()[1].test_accuracy})
    records["profiles"] = pd.concat(profiles, ignore_index=True)
    records["search"] = pd.concat(search, ignore_index=True)
    every_reading = pd.DataFrame(selections)
    # claims 2 and 4 and Table 3's default: the search reading's picks; every reading's in their own table
    records["selections"] = every_reading[every_reading["reading"] == plan.search_reading].reset_index(
        drop=True)
    records["selections_by_reading"] = every_reading
    records["ranking"] = pd.DataFrame(ranking)
    records["seeds"] = pd.DataFrame(timing)
    if write:
        write_records(Path(run_dir) / RECORDS_FILE, records, study={**study, "seeds": seeds})
    return records


_TUPLE_COLUMNS = ("config", "budget config")


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, (list, tuple)) and bool(pd.isna(value)))


def write_records(path: str | Path, records: dict[str, pd.DataFrame], study: dict[str, Any]) -> Path:
    """Write the record tables (configurations as names) and the study settings as one JSON file."""
    tables = {}
    for name, frame in records.items():
        frame = frame.copy()
        for column in _TUPLE_COLUMNS:
            if column in frame:
                frame[column] = frame[column].map(lambda c: None if _missing(c) else config_name(c))
        tables[name] = json.loads(frame.to_json(orient="records"))
    payload = {"study": study, "tables": tables}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=0, default=str) + "\n")
    return path


def read_records(path: str | Path) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The record tables and study settings written by :func:`write_records` (configurations as tuples).

    Raises ``FileNotFoundError`` / ``ValueError`` naming the file when it is missing, corrupt or lacks
    a table the report needs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: collect a study with `python -m grosslib.study collect "
                                f"--run-dir <study directory>`")
    try:
        payload = json.loads(path.read_text())
        study, tables = payload["study"], payload["tables"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a records file ({type(exc).__name__}: {exc})") from exc
    missing = sorted(set(RECORD_TABLES) - set(tables))
    if missing:
        raise ValueError(f"{path} lacks the tables {missing}")
    records = {}
    for name, rows in tables.items():
        frame = pd.DataFrame(rows)
        for column in _TUPLE_COLUMNS:
            if column in frame:
                frame[column] = frame[column].map(
                    lambda c: parse_config(c) if isinstance(c, (str, list)) else None)
        if "alpha" in frame and "reading" not in frame:
            frame["reading"] = "literal"      # recorded before eq. 8's readings existed: read literally
        records[name] = frame
    return records, study


RECORD_TABLES: tuple[str, ...] = ("table2", "deficits", "profiles", "search", "selections", "ranking",
                                  "seeds")


#: The plan a pipeline run (notebooks 01-05) is adopted with: each seed its own network, eq. 8 literal.
#: It keeps the plan such runs were adopted with before the study's budget changed (12 ranked
#: configurations, every configuration evaluated on test), so an adopted run reports as it did.
ADOPTED_PLAN = StudyPlan(design="per-seed", readings=("literal",), table3_readings=("literal",), n_ranked=12,
                         n_profile=None)


def load_or_collect(run_dir: str | Path, *, dataset: str, preset: str, seeds: Sequence[int],
                    device: str | None = None, data_limit: int | None = None,
                    overrides: dict[str, dict[str, Any]] | None = None, plan: StudyPlan | None = None,
                    adopt: bool = True) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The records of ``run_dir`` for the report, whatever kind of directory it is.

    * a study directory (``study.json``): :func:`collect_records` (stages cached; missing ones run);
    * a published study (only ``records.json``, e.g. ``results/fashion-mnist-study``): read it;
    * anything else (e.g. a pipeline run of notebooks 01-05): adopted as a study with the given
      dataset, preset, seeds and options, then collected (reusing every stage already trained there);
      with ``adopt=False`` a ``FileNotFoundError`` instead. ``plan`` defaults to what such a run trained:
      each seed its own network, eq. 8 read literally (:data:`ADOPTED_PLAN`).
    """
    run_dir = Path(run_dir)
    if not (run_dir / STUDY_FILE).is_file():
        if (run_dir / RECORDS_FILE).is_file() or not adopt:
            return read_records(run_dir / RECORDS_FILE)
        write_study_file(run_dir, dataset=dataset, preset=preset, seeds=seeds, plan=plan or ADOPTED_PLAN,
                         device=device, data_limit=data_limit, overrides=overrides)
    records = collect_records(run_dir, device=device)
    return records, {**read_study_file(run_dir), "seeds": sorted({int(s) for s in records["seeds"]["seed"]})}
