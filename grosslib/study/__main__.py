"""The study's command line: ``python -m grosslib.study run | seed | collect | report``.

``run`` trains every stage of every seed (resumable; ``--jobs N`` seeds in parallel processes),
``seed`` trains one seed of an existing study directory (what ``--jobs`` starts), ``collect`` writes
``records.json`` and ``report`` renders notebook 06 on a study directory (``--publish``: also the
committed copy). Inputs are checked before any work starts; a bad one ends with one line naming the
problem and the fix, and exit status 2.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from .. import presets
from . import (
    RECORDS_FILE,
    STUDY_FILE,
    StudyPlan,
    _experiments,
    collect_records,
    read_study_file,
    run_seed,
    run_study,
)

REPORT_NOTEBOOK = "06_reproduction_report"


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
    """The command-line interface."""
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
                               else presets.get_preset(args.preset).dataset)
    data_limit = args.data_limit
    if data_limit is None and path.exists():
        data_limit = read_study_file(args.run_dir).get("data_limit")
    run_study(args.run_dir, dataset=dataset, preset=args.preset, seeds=seeds, jobs=args.jobs,
              threads=args.threads, device=args.device, data_limit=data_limit, collect=not args.no_collect)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
