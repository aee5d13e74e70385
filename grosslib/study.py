"""The paper's whole protocol over several seeds, resumable, and the records its report is built from.

One seed (:func:`run_seed`) trains, in this order, every stage through a cached
:class:`grosslib.experiment.Experiment` (a stage already done is read back, a killed one resumes):

1. the full network, its BTD into the GroSS series;
2. GroSS at the search temperature (alpha 4), the fixed baselines 1/4/16/32 trained on their own;
3. the exhaustive search on the validation split; the ``top_k`` configurations under the fixed-4 and
   fixed-16 budgets trained on their own (Table 3);
4. :func:`ranking_configs`: 12 configurations spread over the MAC range, trained on their own, so
   that GroSS's ranking of configurations can be checked (Kendall's tau; not in the paper);
5. GroSS at the other temperatures (0 and 8), every configuration of every temperature on test.

:func:`run_study` runs several seeds, in parallel processes when ``jobs > 1``, and then
:func:`collect_records` reads every result back into a few long tables written to
``<run_dir>/records.json``: the only input of the report (:mod:`grosslib.report`, notebook 06).

Command line::

    python -m grosslib.study run --run-dir runs/study [--seeds 3] [--jobs 3] [--dataset fashion-mnist]
    python -m grosslib.study collect --run-dir runs/study     # records.json from the cached stages
    python -m grosslib.study report --run-dir runs/study [--publish]   # render notebook 06

``report`` executes ``notebooks/06_reproduction_report.ipynb`` into the study directory; with
``--publish`` it also copies ``records.json`` to ``results/fashion-mnist-study/`` and re-executes the
committed notebook in place on it (figures to ``figures/``), which is how the committed report is made.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from . import analysis, presets
from .macs import config_macs
from .models import config_name, search_space
from .runinfo import environment_info

Config = tuple[int, ...]

STUDY_FILE = "study.json"
RECORDS_FILE = "records.json"
SEED_DONE_FILE = "study_seed.json"


@dataclass(frozen=True)
class StudyPlan:
    """What one seed of the study trains and evaluates (the paper's choices by default)."""

    alphas: tuple[float, ...] = (0.0, 4.0, 8.0)
    search_alpha: float = 4.0
    fixed_group_sizes: tuple[int, ...] = (1, 4, 16, 32)
    budget_group_sizes: tuple[int, ...] = (4, 16)
    top_k: int = 2
    n_ranked: int = 12
    search_split: str = "val"
    report_split: str = "test"

    def __post_init__(self) -> None:
        if self.search_alpha not in self.alphas:
            raise ValueError(f"search_alpha {self.search_alpha} must be one of the alphas {self.alphas}")
        if not set(self.budget_group_sizes) <= set(self.fixed_group_sizes):
            raise ValueError(f"budget group sizes {self.budget_group_sizes} must be among the fixed ones "
                             f"{self.fixed_group_sizes}")
        if self.top_k < 1 or self.n_ranked < 2:
            raise ValueError(f"top_k must be >= 1 and n_ranked >= 2, got {self.top_k} and {self.n_ranked}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyPlan:
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
    search_gross = exp.gross(plan.search_alpha)
    fixed = exp.fixed_configs(plan.fixed_group_sizes)
    stage_seconds = full.wall_seconds + _stage_seconds(search_gross)
    trained: dict[Config, Any] = {}
    for config in fixed.values():
        trained[config] = exp.fixed(config)
    evaluations = exp.evaluate_configs(search_gross.net, f"gross_alpha{plan.search_alpha:g}",
                                       plan.search_split)
    budgets = {s: fixed[s] for s in plan.budget_group_sizes}
    selections = analysis.select_under_budgets(evaluations, budgets, k=plan.top_k)
    ranked = ranking_configs(search_gross.net, plan.n_ranked, include=fixed.values())
    for config in [*selections["config"], *ranked]:
        config = tuple(config)
        if config not in trained:
            trained[config] = exp.fixed(config)
    stage_seconds += sum(_stage_seconds(r) for r in trained.values())
    for alpha in plan.alphas:
        gross = exp.gross(alpha)
        if alpha != plan.search_alpha:
            stage_seconds += _stage_seconds(gross)
        exp.evaluate_configs(gross.net, f"gross_alpha{alpha:g}", plan.report_split)
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


def _stage_seconds(result: Any) -> float:
    return sum(r.wall_seconds for r in (result.reconstruct, result.finetune) if r is not None)


# --------------------------------------------------------------------------------------------- many seeds
def _experiments(settings: dict[str, Any], seeds: Sequence[int]) -> list[Any]:
    return analysis.make_experiments(settings["dataset"], settings["preset"], list(seeds),
                                     run_dir=settings["run_dir"], device=settings.get("device"),
                                     data_limit=settings.get("data_limit"), progress=False,
                                     overrides=settings.get("overrides") or {})


def write_study_file(run_dir: str | Path, *, dataset: str, preset: str, seeds: Sequence[int],
                     plan: StudyPlan, device: str | None = None, data_limit: int | None = None,
                     overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Create (or check) ``<run_dir>/study.json``: the settings a study directory is tied to.

    A directory already holding a study with another dataset, preset, plan, data limit or overrides is
    refused (its checkpoints would not match); more seeds may be added later.
    """
    run_dir = Path(run_dir)
    settings = {"dataset": dataset, "preset": preset, "plan": plan.to_dict(), "data_limit": data_limit,
                "overrides": overrides or {}}
    path = run_dir / STUDY_FILE
    if path.exists():
        stored = read_study_file(run_dir)
        for key, value in settings.items():
            if json.loads(json.dumps(stored.get(key))) != json.loads(json.dumps(value)):
                raise ValueError(f"{path}: this study was run with {key}={stored.get(key)!r}, not {value!r}; "
                                 "use another --run-dir")
        seeds = sorted(set(stored["seeds"]) | {int(s) for s in seeds})
    schedule = {stage: presets.get_preset(preset, stage).to_dict() for stage in presets.STAGES}
    study = {**settings, "seeds": [int(s) for s in seeds], "device": device,
             "btd_options": presets.PRESET_BTD_OPTIONS[preset], "schedule": schedule,
             "schedule_note": presets.STUDY_SCHEDULE_NOTE if preset == "study" else "",
             "btd_note": presets.STUDY_BTD_NOTE if preset == "study" else "",
             "environment": environment_info(device or "cpu")}
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(study, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return study


def read_study_file(run_dir: str | Path) -> dict[str, Any]:
    """The settings of a study directory (``study.json``), with a clear error when absent or corrupt."""
    path = Path(run_dir) / STUDY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a study directory (start one with "
                                f"`python -m grosslib.study run --run-dir {run_dir}`)")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); delete it and re-run to rewrite it") from exc


def run_study(run_dir: str | Path, *, dataset: str = "fashion-mnist", preset: str = "study",
              seeds: Sequence[int] = (0, 1, 2), jobs: int = 1, threads: int | None = None,
              device: str | None = None, data_limit: int | None = None,
              overrides: dict[str, dict[str, Any]] | None = None, plan: StudyPlan = StudyPlan(),
              collect: bool = True) -> dict[str, pd.DataFrame] | None:
    """Run :func:`run_seed` for every seed (``jobs`` processes at a time), then :func:`collect_records`.

    Each seed in a child process logs to ``<run_dir>/seed<k>/study.log``; a failure names the seed and
    its log, and leaves every finished stage in place (running again resumes). ``threads``: torch CPU
    threads per process (default: the cores divided among the jobs).
    """
    import torch
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    seeds = [int(s) for s in seeds]
    write_study_file(run_dir, dataset=dataset, preset=preset, seeds=seeds, plan=plan, device=device,
                     data_limit=data_limit, overrides=overrides)
    settings = {"dataset": dataset, "preset": preset, "run_dir": run_dir, "device": device,
                "data_limit": data_limit, "overrides": overrides}
    jobs = max(1, min(int(jobs), len(seeds)))
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    if jobs == 1:
        torch.set_num_threads(threads)
        for exp in tqdm(_experiments(settings, seeds), desc="seeds"):
            run_seed(exp, plan)
    else:
        _run_in_processes(run_dir, seeds, jobs, threads)
    return collect_records(run_dir) if collect else None


def _run_in_processes(run_dir: Path, seeds: Sequence[int], jobs: int, threads: int) -> None:
    from tqdm.auto import tqdm

    pending, running, failed = list(seeds), {}, []
    with tqdm(total=len(seeds), desc="seeds") as bar:
        while pending or running:
            while pending and len(running) < jobs:
                seed = pending.pop(0)
                log = run_dir / f"seed{seed}" / "study.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                command = [sys.executable, "-m", "grosslib.study", "seed", "--run-dir", str(run_dir),
                           "--seed", str(seed), "--threads", str(threads)]
                handle = open(log, "a")
                process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
                running[seed] = (process, handle, log)
            time.sleep(2.0)
            for seed, (process, handle, log) in list(running.items()):
                if process.poll() is not None:
                    handle.close()
                    if process.returncode != 0:
                        failed.append(f"seed {seed} (exit {process.returncode}; see {log})")
                    del running[seed]
                    bar.update(1)
    if failed:
        raise RuntimeError("study failed for " + ", ".join(failed) + "; finished stages are kept, run again "
                           "to resume")


# --------------------------------------------------------------------------------------------- records
def collect_records(run_dir: str | Path, seeds: Sequence[int] | None = None, *, write: bool = True,
                    device: str | None = None) -> dict[str, pd.DataFrame]:
    """Read every result of a study directory into long tables (running any stage still missing).

    Tables: ``table2`` (:func:`grosslib.analysis.table2_records`), ``deficits``
    (:func:`~grosslib.analysis.deficit_records`), ``profiles`` (every configuration of every alpha on
    the report split), ``search`` (every configuration on the search split at the search alpha),
    ``selections`` (per seed the picks under each budget with their own-trained and GroSS test
    accuracy, and the budget's fixed accuracy), ``ranking`` (the ranked configurations: GroSS vs own
    test accuracy) and ``seeds`` (timing). Written to ``<run_dir>/records.json`` with ``study.json``'s
    settings when ``write``.
    """
    study = read_study_file(run_dir)
    plan = StudyPlan.from_dict(study["plan"])
    seeds = [int(s) for s in (seeds if seeds is not None else study["seeds"])]
    settings = {**study, "run_dir": Path(run_dir), "device": device or study.get("device")}
    experiments = _experiments(settings, seeds)
    for exp in experiments:
        run_seed(exp, plan)
    sizes = plan.fixed_group_sizes
    records: dict[str, pd.DataFrame] = {
        "table2": analysis.table2_records(experiments, sizes, alpha=plan.search_alpha),
        "deficits": analysis.deficit_records(experiments, plan.alphas, sizes),
        "profiles": analysis.all_config_records(experiments, plan.alphas, plan.report_split),
    }
    search, selections, ranking, timing = [], [], [], []
    for exp in experiments:
        gross = exp.gross(plan.search_alpha)
        evaluations = exp.evaluate_configs(gross.net, f"gross_alpha{plan.search_alpha:g}", plan.search_split)
        search.append(evaluations.assign(seed=exp.seed))
        fixed = exp.fixed_configs(sizes)
        budgets = {s: fixed[s] for s in plan.budget_group_sizes}
        picks = analysis.select_under_budgets(evaluations, budgets, k=plan.top_k)
        test = records["profiles"]
        test = test[(test["seed"] == exp.seed) & (test["alpha"] == plan.search_alpha)].set_index("name")
        for row in picks.itertuples(index=False):
            budget_config = tuple(row[picks.columns.get_loc("budget config")])
            selections.append({
                "seed": exp.seed, "budget": int(row.budget), "budget name": config_name(budget_config),
                "budget macs": int(row[picks.columns.get_loc("budget macs")]), "rank": int(row.rank),
                "name": row.name, "macs": int(row.macs), "gross val accuracy": float(row.accuracy),
                "gross test accuracy": float(test.loc[row.name, "accuracy"]),
                "own accuracy": exp.fixed(tuple(row.config)).test_accuracy,
                "budget own accuracy": exp.fixed(budget_config).test_accuracy,
                "budget gross test accuracy": float(test.loc[config_name(budget_config), "accuracy"])})
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
    records["search"] = pd.concat(search, ignore_index=True)
    records["selections"] = pd.DataFrame(selections)
    records["ranking"] = pd.DataFrame(ranking)
    records["seeds"] = pd.DataFrame(timing)
    if write:
        write_records(Path(run_dir) / RECORDS_FILE, records, study={**study, "seeds": seeds})
    return records


_TUPLE_COLUMNS = ("config", "budget config")


def write_records(path: str | Path, records: dict[str, pd.DataFrame], study: dict[str, Any]) -> Path:
    """Write the record tables (configurations as names) and the study settings as one JSON file."""
    tables = {}
    for name, frame in records.items():
        frame = frame.copy()
        for column in _TUPLE_COLUMNS:
            if column in frame:
                frame[column] = frame[column].map(lambda c: None if c is None or analysis._isna(c)
                                                  else config_name(c))
        tables[name] = json.loads(frame.to_json(orient="records"))
    payload = {"study": study, "tables": tables}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=0, default=str) + "\n")
    tmp.replace(path)
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
        records[name] = frame
    return records, study


RECORD_TABLES: tuple[str, ...] = ("table2", "deficits", "profiles", "search", "selections", "ranking",
                                  "seeds")


def load_or_collect(run_dir: str | Path, *, dataset: str, preset: str, seeds: Sequence[int],
                    device: str | None = None, data_limit: int | None = None,
                    overrides: dict[str, dict[str, Any]] | None = None, plan: StudyPlan = StudyPlan(),
                    adopt: bool = True) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The records of ``run_dir`` for the report, whatever kind of directory it is.

    * a study directory (``study.json``): :func:`collect_records` (stages cached; missing ones run);
    * a published study (only ``records.json``, e.g. ``results/fashion-mnist-study``): read it;
    * anything else (e.g. a pipeline run of notebooks 01-05): adopted as a study with the given
      dataset, preset, seeds and options, then collected (reusing every stage already trained there);
      with ``adopt=False`` a ``FileNotFoundError`` instead.
    """
    run_dir = Path(run_dir)
    if not (run_dir / STUDY_FILE).is_file():
        if (run_dir / RECORDS_FILE).is_file() or not adopt:
            return read_records(run_dir / RECORDS_FILE)
        write_study_file(run_dir, dataset=dataset, preset=preset, seeds=seeds, plan=plan, device=device,
                         data_limit=data_limit, overrides=overrides)
    records = collect_records(run_dir, device=device)
    return records, {**read_study_file(run_dir), "seeds": sorted({int(s) for s in records["seeds"]["seed"]})}


REPORT_NOTEBOOK = "06_reproduction_report"


def render_report(run_dir: str | Path, *, publish: bool = False, kernel_name: str = "python3") -> Path:
    """Execute notebook 06 on a study directory into it; with ``publish``, also refresh the committed copy.

    Returns the executed notebook (``<run_dir>/06_reproduction_report.ipynb``, or the committed
    ``notebooks/06_reproduction_report.ipynb`` when publishing).
    """
    import shutil

    from . import paths
    from .pipeline import check_kernel, refresh_committed_notebooks, run_notebook

    check_kernel(kernel_name)
    run_dir = Path(run_dir).resolve()
    study = read_study_file(run_dir)
    if publish:                 # without publish, the notebook collects the records itself
        collect_records(run_dir, device=study.get("device"))
        paths.STUDY_RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run_dir / RECORDS_FILE, paths.STUDY_RESULTS_DIR / RECORDS_FILE)
        refresh_committed_notebooks(only="06", kernel_name=kernel_name)
        return paths.NOTEBOOKS_DIR / f"{REPORT_NOTEBOOK}.ipynb"
    parameters = {"run_dir": str(run_dir), "figures_dir": str(run_dir / "figures"),
                  "dataset": study["dataset"],
                  "preset": study["preset"], "device": study.get("device") or "cpu"}
    record = run_notebook(paths.NOTEBOOKS_DIR / f"{REPORT_NOTEBOOK}.ipynb", run_dir, parameters,
                          kernel_name=kernel_name)
    if record["status"] != "ok":
        raise RuntimeError(f"the report failed: {record['error']} (see {record['executed']})")
    return Path(record["executed"])


# --------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m grosslib.study", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train every stage of every seed (resumes), then collect records")
    run.add_argument("--run-dir", required=True)
    run.add_argument("--dataset", default=None, help="default: the preset's dataset")
    run.add_argument("--preset", default="study")
    run.add_argument("--seeds", type=int, default=3, help="number of seeds 0..N-1 (default 3)")
    run.add_argument("--seed-list", default=None, help="explicit comma-separated seeds (overrides --seeds)")
    run.add_argument("--jobs", type=int, default=1, help="seeds trained at once, one process each")
    run.add_argument("--threads", type=int, default=None, help="torch threads per process")
    run.add_argument("--device", default=None)
    run.add_argument("--data-limit", type=int, default=None)
    run.add_argument("--no-collect", action="store_true")
    collect = sub.add_parser("collect", help="write records.json from a study directory")
    collect.add_argument("--run-dir", required=True)
    report = sub.add_parser("report", help="render notebook 06 on a study directory")
    report.add_argument("--run-dir", required=True)
    report.add_argument("--publish", action="store_true",
                        help="also copy records.json to results/ and re-execute the committed notebook 06")
    one = sub.add_parser("seed", help="train one seed of an existing study directory (used by --jobs)")
    one.add_argument("--run-dir", required=True)
    one.add_argument("--seed", type=int, required=True)
    one.add_argument("--threads", type=int, default=1)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "collect":
        collect_records(args.run_dir)
        print(f"records written to {Path(args.run_dir) / RECORDS_FILE}")
        return 0
    if args.command == "report":
        print(f"report written to {render_report(args.run_dir, publish=args.publish)}")
        return 0
    if args.command == "seed":
        import torch

        torch.set_num_threads(args.threads)
        study = read_study_file(args.run_dir)
        exp = _experiments({**study, "run_dir": Path(args.run_dir)}, [args.seed])[0]
        summary = run_seed(exp, StudyPlan.from_dict(study["plan"]))
        print(json.dumps(summary), flush=True)
        return 0
    seeds = ([int(s) for s in args.seed_list.split(",")] if args.seed_list else list(range(args.seeds)))
    path = Path(args.run_dir) / STUDY_FILE
    dataset = args.dataset or (read_study_file(args.run_dir)["dataset"] if path.exists()
                               else presets.PRESET_DATASETS[args.preset])
    data_limit = args.data_limit
    if data_limit is None and path.exists():
        data_limit = read_study_file(args.run_dir).get("data_limit")
    run_study(args.run_dir, dataset=dataset, preset=args.preset, seeds=seeds, jobs=args.jobs,
              threads=args.threads, device=args.device, data_limit=data_limit, collect=not args.no_collect)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
