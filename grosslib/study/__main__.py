"""The study's command line: ``python -m grosslib.study run | seed | collect | report``.

``run`` trains every stage of every seed (resumable; ``--jobs N`` seeds in parallel processes;
``--engine ray``: one Ray task per stage (each full network, the median's decomposition, and per seed
each GroSS network, fixed baseline, search and configuration trained alone), on this machine or on the
Ray cluster at ``--address``, :mod:`grosslib.study.ray_engine`),
``seed`` trains one seed of an existing study directory (what ``--jobs`` starts), ``collect`` writes
``records.json`` and ``report`` renders notebook 06 on a study directory (``--publish``: also the
committed copy). Inputs are checked before any work starts (:func:`check_run_args`); a bad one ends
with one line naming the problem and the fix, and exit status 2. Ctrl-C (SIGINT) or SIGTERM stops
every seed process, prints which seeds finished and the command that resumes, and exits 130 / 143.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .. import presets
from ..data import ALLOW_DOWNLOAD_ENV, DATASET_NAMES, DatasetNotFoundError, require_on_machine
from ..io import atomic_write_text, resolve_device
from . import (
    ENGINES,
    NETWORKS_FILE,
    PARENT_ENV,
    RECORDS_FILE,
    SHARED_DIR,
    STUDY_FILE,
    StudyFailed,
    StudyInterrupted,
    StudyPlan,
    _on_signals,
    _raise_interrupted,
    check_study_file,
    collect_records,
    export_shared,
    import_shared,
    read_records,
    read_study_file,
    run_study,
    seed_task,
)

__all__ = ["ALLOW_DOWNLOAD_ENV", "RAY_OPTIONS", "REPORT_NOTEBOOK", "TRACEBACK_ENV", "build_parser",
           "check_dataset", "check_engine_args", "check_run_args", "main", "parse_seed_list", "render_report",
           "resume_command"]

#: ``1`` lets ``run`` use a dataset that is not on this machine (torchvision downloads it).
#: ``1`` shows the traceback of an error instead of its one line.
TRACEBACK_ENV = "GROSS_TRACEBACK"

REPORT_NOTEBOOK = "06_reproduction_report"


CLAIMS_FILE = "claims.json"


def study_design(run_dir: str | Path, study: dict[str, Any]) -> dict[str, Any]:
    """What ``claims.json`` says of the design: which network was decomposed and how it was chosen."""
    plan = StudyPlan.from_dict(study["plan"])
    design: dict[str, Any] = {"design": plan.design, "readings": list(plan.readings),
                              "search_reading": plan.search_reading, "alphas": list(plan.alphas)}
    networks = Path(run_dir) / NETWORKS_FILE
    if plan.design == "median" and networks.is_file():
        info = json.loads(networks.read_text())
        design.update({"n_networks": len(info["seeds"]), "decomposed_network": f"seed{info['median_seed']}",
                       "rule": info["rule"], "full_val_accuracy": info["val_accuracy"],
                       "full_test_accuracy": info["test_accuracy"]})
        done = {s: Path(run_dir) / f"seed{s}" / "full" / "done.json" for s in info["seeds"]}
        if all(path.is_file() for path in done.values()):      # not in an imported directory
            design["full_network_training_seconds"] = {
                str(s): float(json.loads(path.read_text())["wall_seconds"]) for s, path in done.items()}
    else:
        design["decomposed_network"] = "each seed's own full network"
    return design


def write_claims(run_dir: str | Path, records: dict[str, Any] | None = None, method: str = "t") -> Path:
    """``<run_dir>/claims.json``: every claim's per-seed effect, 95% interval and verdict
    (:func:`grosslib.verdicts.claims_json`) with the study's design and schedule."""
    from ..verdicts import claims_json

    study = read_study_file(run_dir)
    if records is None:
        records, _ = read_records(Path(run_dir) / RECORDS_FILE)
    schedule = {"stages": study.get("schedule", {}), "note": study.get("schedule_note", ""),
                "shards": study.get("shards", [])}
    claims = claims_json(records, study_design(run_dir, study), schedule, method=method)
    path = Path(run_dir) / CLAIMS_FILE
    atomic_write_text(path, json.dumps(claims, indent=1, default=str) + "\n")
    return path


def render_report(run_dir: str | Path, *, publish: bool = False, kernel_name: str = "python3") -> Path:
    """Execute notebook 06 on a study directory into it; with ``publish``, also refresh the committed copy.

    Returns the executed notebook (``<run_dir>/06_reproduction_report.ipynb``, or the committed
    ``notebooks/06_reproduction_report.ipynb`` when publishing).
    """
    import shutil

    from .. import paths
    from ..pipeline import check_kernel, refresh_committed_notebooks, run_notebook

    check_kernel(kernel_name)
    run_dir = Path(run_dir).resolve()
    study = read_study_file(run_dir)
    if publish:                 # without publish, the notebook collects the records itself
        write_claims(run_dir, collect_records(run_dir, device=study.get("device")))
        paths.STUDY_RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        for name in (RECORDS_FILE, CLAIMS_FILE, NETWORKS_FILE):
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, paths.STUDY_RESULTS_DIR / name)
        if (run_dir / NETWORKS_FILE).is_file():     # what another machine needs to continue the study
            export_shared(run_dir, paths.STUDY_RESULTS_DIR / SHARED_DIR)
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


# --------------------------------------------------------------------------------------------- checks
def parse_seed_list(text: str) -> list[int]:
    """``'0,1,2'`` -> ``[0, 1, 2]`` (duplicates dropped); a one-line ``ValueError`` for anything else."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0:
        raise ValueError(f"--seed-list {text!r}: expected comma-separated seeds >= 0, e.g. --seed-list 0,1,2")
    return list(dict.fromkeys(seeds))


def check_dataset(name: str) -> str:
    """Where ``name`` will be loaded from; a one-line ``ValueError`` if unknown or not on this machine
    (:func:`grosslib.data.require_on_machine`)."""
    return require_on_machine(name)


def check_run_args(args: argparse.Namespace) -> dict[str, Any]:
    """Every input of ``run`` checked before any work or file: the keyword arguments of ``run_study``.

    In a directory that already holds a study, the dataset, preset and data limit default to the
    study's, and its plan and overrides are kept. Raises a one-line ``ValueError`` (bad value, unknown
    preset, dataset or device, unavailable dataset or device, a study with other settings) or
    ``FileNotFoundError`` naming the problem and the fix.
    """
    for flag in ("jobs", "threads", "data_limit", *(() if args.seed_list is not None else ("seeds",))):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    engine = check_engine_args(args)
    seeds = parse_seed_list(args.seed_list) if args.seed_list is not None else list(range(args.seeds))
    run_dir = Path(args.run_dir)
    existing = next((p for p in (run_dir, *run_dir.absolute().parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"--run-dir {run_dir}: {existing} is a file, not a directory; pass a directory "
                         "(created if absent)")
    stored = read_study_file(run_dir) if (run_dir / STUDY_FILE).exists() else {}
    preset = args.preset or stored.get("preset") or "study"
    dataset = args.dataset or stored.get("dataset") or presets.get_preset(preset).dataset
    check_dataset(dataset)
    if args.device is not None:
        resolve_device(args.device)
    data_limit = args.data_limit if args.data_limit is not None else stored.get("data_limit")
    plan = StudyPlan.from_dict(stored["plan"]) if "plan" in stored else StudyPlan()
    overrides = stored.get("overrides") or None
    presets.get_preset(preset).with_overrides(overrides)
    check_study_file(run_dir, dataset=dataset, preset=preset, plan=plan, data_limit=data_limit,
                     overrides=overrides)
    return {"run_dir": run_dir, "dataset": dataset, "preset": preset, "seeds": seeds, "jobs": args.jobs,
            "threads": args.threads, "device": args.device, "data_limit": data_limit,
            "overrides": overrides, "plan": plan, "collect": not args.no_collect, **engine}


#: the options of ``run`` that only ``--engine ray`` takes
RAY_OPTIONS = ("address", "cpus_per_task", "gpus_per_task")


def check_engine_args(args: argparse.Namespace) -> dict[str, Any]:
    """``--engine`` and its options checked (a one-line ``ValueError``): the Ray options only with
    ``--engine ray``, which needs Ray installed, ``--cpus-per-task >= 1``, ``--gpus-per-task`` between 0
    and this machine's GPUs (without ``--address``) and a reachable ``--address``
    (:func:`grosslib.study.ray_engine.check_ray_args`). Returns ``run_study``'s engine arguments."""
    engine = getattr(args, "engine", "local")
    options = {name: getattr(args, name, None) for name in RAY_OPTIONS}
    if engine != "ray":
        given = [f"--{name.replace('_', '-')}" for name, value in options.items() if value is not None]
        if given:
            many = len(given) > 1
            raise ValueError(f"{', '.join(given)} {'apply' if many else 'applies'} only to --engine ray (add "
                             f"--engine ray, or leave {'them' if many else 'it'} out)")
        return {"engine": engine}
    if getattr(args, "jobs", 1) not in (None, 1):
        raise ValueError(f"--jobs {args.jobs} applies only to --engine local; with --engine ray as many "
                         "tasks run at once as the CPUs and GPUs allow (--cpus-per-task, --gpus-per-task)")
    from .ray_engine import check_ray_args

    check_ray_args(options["address"], options["cpus_per_task"], options["gpus_per_task"])
    device = getattr(args, "device", None) or ""
    if device.startswith("cuda") and not (options["gpus_per_task"] or 0) > 0:
        raise ValueError(f"--device {device} with --engine ray needs --gpus-per-task > 0 (e.g. 1, or 0.5 for "
                         "two tasks per GPU): a Ray task gets only the GPUs it asks for")
    return {"engine": engine, "address": options["address"], "cpus_per_task": options["cpus_per_task"] or 1,
            "gpus_per_task": float(options["gpus_per_task"] or 0.0)}


def resume_command(argv: Sequence[str]) -> str:
    """The command line that runs ``argv`` again (``python`` if that is this interpreter on the PATH)."""
    found = shutil.which("python")
    same = found is not None and Path(found).absolute() == Path(sys.executable).absolute()
    return " ".join(["python" if same else shlex.quote(sys.executable), "-m", "grosslib.study",
                     shlex.join(argv)])


def _die_with_parent() -> None:
    """In a seed process (Linux): end with SIGTERM when the study process that started it dies."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))     # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):           # it died before prctl
        raise SystemExit(f"the study process {parent} that started this seed is gone")


# --------------------------------------------------------------------------------------------- CLI
class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


_EPILOG = f"""\
exit status: 0 done; 1 some seeds or stages failed (each named with its log; the others finished and
every finished stage is kept: run again to resume); 2 a bad input (one line on stderr names it and the
fix; nothing is written, e.g. --engine ray without Ray installed or an --address where no Ray head is);
130 / 143 stopped by Ctrl-C (SIGINT) / SIGTERM: every seed process is stopped, the seeds finished
so far and the command that resumes are printed (finished stages are kept).
environment: {ALLOW_DOWNLOAD_ENV}=1 lets `run` use a dataset that is not on this machine (torchvision
downloads it; without it such a dataset is refused); {TRACEBACK_ENV}=1 shows an error's traceback.
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = _Parser(prog="python -m grosslib.study", description=__doc__.split("\n")[0], epilog=_EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train every stage of every seed (resumes), then collect records",
                         epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--run-dir", required=True, help="the study directory (an existing one resumes)")
    run.add_argument("--dataset", default=None,
                     help=f"one of {', '.join(DATASET_NAMES)} (default: the study's, else the preset's)")
    run.add_argument("--preset", default=None,
                     help=f"one of {', '.join(presets.preset_names())} (default: the study's, else 'study')")
    run.add_argument("--seeds", type=int, default=5, help="number of seeds 0..N-1 (default 5, the paper's)")
    run.add_argument("--seed-list", default=None, help="explicit comma-separated seeds (overrides --seeds)")
    run.add_argument("--jobs", type=int, default=1, help="seeds trained at once, one process each")
    run.add_argument("--threads", type=int, default=None, help="torch threads per process")
    run.add_argument("--device", default=None, help="cpu, cuda, cuda:N, mps or auto (default: auto)")
    run.add_argument("--data-limit", type=int, default=None, help="truncate each split (smoke runs)")
    run.add_argument("--no-collect", action="store_true", help="do not write records.json at the end")
    run.add_argument("--engine", choices=ENGINES, default="local",
                     help="local: this machine, --jobs processes (default); ray: one Ray task per stage "
                          "of every seed, on this machine or a Ray cluster (needs pip install -e .[ray])")
    run.add_argument("--address", default=None,
                     help="--engine ray: the Ray cluster (HOST:PORT of `ray start --head`, ray://HOST:PORT "
                          "or auto; default: start Ray on this machine with all its CPUs)")
    run.add_argument("--cpus-per-task", type=int, default=None,
                     help="--engine ray: CPUs each task reserves (default 1; also its torch threads unless "
                          "--threads)")
    run.add_argument("--gpus-per-task", type=float, default=None,
                     help="--engine ray: GPUs each task reserves, may be a fraction (default 0)")
    collect = sub.add_parser("collect", help="write records.json from a study directory")
    collect.add_argument("--run-dir", required=True)
    collect.add_argument("--device", default=None, help="default: the study's")
    report = sub.add_parser("report", help="render notebook 06 on a study directory")
    report.add_argument("--run-dir", required=True)
    report.add_argument("--publish", action="store_true",
                        help="also copy records.json to results/ and re-execute the committed notebook 06")
    imp = sub.add_parser("import", help="start a study directory from exported artefacts (the median "
                                        "network, its decomposition, study.json, networks.json)")
    imp.add_argument("--from", dest="source", required=True,
                     help="an exported study, e.g. results/fashion-mnist-study/shared")
    imp.add_argument("--run-dir", required=True)
    one = sub.add_parser("seed", help="train one seed of an existing study directory (used by --jobs)")
    one.add_argument("--run-dir", required=True)
    one.add_argument("--seed", type=int, required=True)
    one.add_argument("--threads", type=int, default=1)
    one.add_argument("--full-network-only", action="store_true",
                     help="train only this seed's full network (the median design's first stage)")
    return parser


def _run(args: argparse.Namespace) -> int:
    run_study(**check_run_args(args))
    return 0


def _collect(args: argparse.Namespace) -> int:
    read_study_file(args.run_dir)
    if args.device is not None:
        resolve_device(args.device)
    records = collect_records(args.run_dir, device=args.device)
    claims = write_claims(args.run_dir, records)
    print(f"records written to {Path(args.run_dir) / RECORDS_FILE}; claims to {claims}")
    return 0


def _report(args: argparse.Namespace) -> int:
    read_study_file(args.run_dir)
    print(f"report written to {render_report(args.run_dir, publish=args.publish)}")
    return 0


def _seed(args: argparse.Namespace) -> int:
    """One seed, in a process started by ``run --jobs N``: errors keep their traceback (in its log)."""
    _die_with_parent()
    # the median design's first stage (--full-network-only, several networks at once) or the whole seed;
    # the same function a Ray task runs (grosslib.study.ray_engine)
    summary = seed_task(args.run_dir, args.seed, args.threads, full_network_only=args.full_network_only)
    print(json.dumps(summary), flush=True)
    return 0


def _import(args: argparse.Namespace) -> int:
    study = import_shared(args.source, args.run_dir)
    print(f"{args.run_dir} continues the study of {args.source} (seeds so far: {study['seeds']}); run "
          f"`python -m grosslib.study run --run-dir {args.run_dir} --seed-list N` for the seeds to add")
    return 0


_COMMANDS = {"run": _run, "collect": _collect, "report": _report, "import": _import}


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; bad inputs -> one ``error:`` line and 2; SIGINT / SIGTERM -> resume hint, 130 / 143."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command == "seed":
        return _seed(args)
    try:
        with _on_signals(_raise_interrupted):        # SIGTERM as well as Ctrl-C: StudyInterrupted
            return _COMMANDS[args.command](args)
    except StudyFailed as exc:        # some seeds or stages failed (each named); the rest is kept
        print(f"error: {' '.join(str(exc).split())}\nresume with: {resume_command(argv)}", file=sys.stderr,
              flush=True)
        return 1
    except KeyboardInterrupt as exc:
        stop = exc if isinstance(exc, StudyInterrupted) else StudyInterrupted(signal.SIGINT)
        print(f"\n{stop}\nresume with: {resume_command(argv)}", file=sys.stderr, flush=True)
        return stop.exit_status
    except (ValueError, FileNotFoundError, DatasetNotFoundError) as exc:
        if os.environ.get(TRACEBACK_ENV) == "1":
            raise
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"error: {message or type(exc).__name__}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
