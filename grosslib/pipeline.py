"""Run the numbered notebooks in order with papermill, all into one run directory.

Usage::

    python -m grosslib.pipeline --preset quick|study|paper|tiny [--dataset digits|cifar10|fashion-mnist]
        [--device cpu|cuda|auto] [--seed 0] [--run-dir PATH] [--only 01,02] [--figures-dir DIR]
        [-p NAME=VALUE ...] [--force] [--kernel python3] [--log-output]
    python -m grosslib.pipeline --resume RUN_DIR [--only ...]      # finish an interrupted run
    python -m grosslib.pipeline --refresh-committed [--only 01,02] # re-execute notebooks/ in place

Each notebook ``notebooks/NN_name.ipynb`` is executed into ``<run_dir>/NN_name.ipynb`` with the
parameters it declares (among ``preset, dataset, device, seed, run_dir, figures_dir`` and any
``-p`` extras); undeclared ones are not passed. ``run_dir`` (default ``runs/<preset>/<timestamp>``)
is shared, so later notebooks find the artefacts of earlier ones; figures go to
``<run_dir>/figures`` unless ``--figures-dir`` says otherwise. A notebook's last cell writes
``<run_dir>/metrics/NN_name.json``; after a success the pipeline writes the marker
``<run_dir>/NN.done.json`` (holding those metrics), and a notebook with a marker is skipped, which
is how ``--resume`` continues a run. The pipeline stops at the first failure, naming the notebook
and its executed copy; finished stages are kept. It ends by printing a summary table and writing
``<run_dir>/summary.json`` and ``summary.md``.
"""
from __future__ import annotations

import argparse
import ast
import datetime as _dt
import json
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import paths
from .data import DATASET_NAMES, check_available, needs_download, require_on_machine
from .io import atomic_write_text, resolve_device, to_jsonable
from .presets import check_overrides, get_preset, preset_names
from .progress import PROGRESS_FILE_ENV
from .runinfo import write_run_info

__all__ = ["declared_parameters", "discover_notebooks", "format_summary", "main", "normalise_only",
           "notebook_number", "refresh_committed_notebooks", "resume_command", "run_notebook", "run_pipeline",
           "validate_inputs"]

DATASETS: tuple[str, ...] = DATASET_NAMES
#: Arguments of every notebook kernel: its own log lines (e.g. "running over TCP without encryption",
#: "KeyboardInterrupt caught in kernel") are not errors of the run, so only critical ones are shown.
KERNEL_ARGUMENTS: tuple[str, ...] = ("--IPKernelApp.log_level=CRITICAL",)
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
COMMON_PARAMETERS: tuple[str, ...] = ("preset", "dataset", "device", "seed", "run_dir", "figures_dir")
CONFIG_FILE = "pipeline.json"
#: Settings a run directory is tied to: resuming with different values is refused.
FIXED_SETTINGS: tuple[str, ...] = ("preset", "dataset", "seed")


# --------------------------------------------------------------------------------------------- discovery
def notebook_number(path: str | Path) -> str:
    """The two-digit number of ``NN_name.ipynb``."""
    stem = Path(path).stem
    if len(stem) < 3 or not stem[:2].isdigit() or stem[2] != "_":
        raise ValueError(f"{path}: notebook names must look like NN_name.ipynb")
    return stem[:2]


def normalise_only(only: Iterable[str | int] | str | None) -> set[str] | None:
    """``'01,2'`` / ``['1', 2, '03_x']`` -> ``{'01', '02', '03'}``; None stays None."""
    if only is None:
        return None
    items = only.split(",") if isinstance(only, str) else list(only)
    numbers = set()
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        head = text.split("_", 1)[0]
        if not head.isdigit():
            raise ValueError(f"--only expects notebook numbers like 01,02; got {item!r}")
        numbers.add(f"{int(head):02d}")
    return numbers


def discover_notebooks(notebooks_dir: str | Path | None = None) -> list[Path]:
    """``NN_*.ipynb`` in ``notebooks_dir`` (default ``notebooks/``), in order."""
    folder = Path(notebooks_dir) if notebooks_dir else paths.NOTEBOOKS_DIR
    found = sorted(folder.glob(NOTEBOOK_GLOB))
    numbers = [notebook_number(p) for p in found]
    duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
    if duplicates:
        raise ValueError(f"several notebooks share the numbers {duplicates} in {folder}")
    return found


def declared_parameters(path: str | Path) -> dict[str, Any]:
    """The parameters a notebook declares in its ``parameters`` cell (name -> papermill info)."""
    import papermill

    return dict(papermill.inspect_notebook(str(path)))


def marker_path(run_dir: str | Path, number: str) -> Path:
    """``<run_dir>/NN.done.json``: written after notebook NN succeeded."""
    return Path(run_dir) / f"{number}.done.json"


def check_kernel(kernel_name: str = "python3") -> list[str]:
    """The kernel's argv; raise with the fix when it is missing, warn if it runs another interpreter."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel as exc:
        command = f"{sys.executable} -m ipykernel install --sys-prefix --name {kernel_name}"
        raise RuntimeError(f"no Jupyter kernel named {kernel_name!r}; register this interpreter with "
                           f"`{command}`") from exc
    executable = spec.argv[0] if spec.argv else ""
    generic = {"python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"}
    if executable not in generic and Path(executable).parent != Path(sys.executable).parent:
        warnings.warn(f"kernel {kernel_name!r} runs {executable}, not this interpreter ({sys.executable}); "
                      "notebooks may not see grosslib's dependencies", RuntimeWarning, stacklevel=2)
    return list(spec.argv)


# --------------------------------------------------------------------------------------------- one notebook
def _short_error(exc: BaseException) -> str:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        evalue = str(exc.evalue).strip().splitlines()
        return f"cell {exc.exec_count}: {exc.ename}: {evalue[-1] if evalue else ''}"
    return f"{type(exc).__name__}: {exc}"


def run_notebook(path: str | Path, run_dir: str | Path, parameters: Mapping[str, Any], *,
                 kernel_name: str = "python3", output_path: str | Path | None = None,
                 cwd: str | Path | None = None, log_output: bool = False) -> dict[str, Any]:
    """Execute one notebook with papermill into ``run_dir`` and collect its metrics.

    Only the parameters the notebook declares are passed. Never raises for a failing notebook:
    the returned record has ``status`` ``'ok'`` or ``'failed'`` (with ``error``), ``seconds``,
    ``executed`` (the executed copy), ``metrics_file``, ``metrics`` (the file's content) and
    ``key_metrics``.
    """
    import papermill

    path, run_dir = Path(path).resolve(), Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    stem, number = path.stem, notebook_number(path)
    declared = declared_parameters(path)
    passed = {k: v for k, v in parameters.items() if k in declared}
    output = Path(output_path) if output_path else run_dir / path.name
    metrics_file = run_dir / "metrics" / f"{stem}.json"
    metrics_file.unlink(missing_ok=True)               # never report a previous attempt's metrics
    record: dict[str, Any] = {"notebook": stem, "number": number, "status": "failed", "seconds": 0.0,
                              "executed": str(output), "parameters": passed, "metrics_file": None,
                              "metrics": {}, "key_metrics": {}, "error": None}
    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(path), str(output), parameters=passed, kernel_name=kernel_name,
                                   cwd=str(cwd or path.parent), progress_bar=False, log_output=log_output,
                                   extra_arguments=list(KERNEL_ARGUMENTS))
    except Exception as exc:  # any failure is reported; the pipeline decides what to do
        record["error"] = _short_error(exc)
    record["seconds"] = round(time.perf_counter() - start, 2)
    if record["error"] is None:
        if metrics_file.is_file():
            metrics = json.loads(metrics_file.read_text())
            record.update(status="ok", metrics_file=str(metrics_file), metrics=metrics,
                          key_metrics=metrics.get("key_metrics", {}))
        else:
            record["error"] = f"the notebook did not write its metrics file {metrics_file}"
    return record


# --------------------------------------------------------------------------------------------- the pipeline
def default_run_dir(preset: str) -> Path:
    """``runs/<preset>/<YYYYmmdd-HHMMSS>`` (a suffix is added if it exists)."""
    base = paths.runs_dir() / preset / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate, i = base, 1
    while candidate.exists():
        candidate, i = base.with_name(f"{base.name}-{i}"), i + 1
    return candidate


def _check_config(run_dir: Path, config: dict[str, Any]) -> None:
    """Refuse a run directory started with other settings (before anything is written to it)."""
    file = run_dir / CONFIG_FILE
    if file.is_file():
        stored = json.loads(file.read_text())
        clashes = {k: (stored.get(k), config[k]) for k in FIXED_SETTINGS
                   if k in stored and stored.get(k) != config[k]}
        if clashes:
            detail = ", ".join(f"{k}: run has {a!r}, asked {b!r}" for k, (a, b) in clashes.items())
            raise ValueError(f"{run_dir} was started with other settings ({detail}); use a new run dir "
                             f"or --resume {run_dir}")


def _store_config(run_dir: Path, config: dict[str, Any]) -> None:
    """Record the run's settings once (a resumed run keeps the first record)."""
    file = run_dir / CONFIG_FILE
    if not file.is_file():
        atomic_write_text(file, json.dumps(to_jsonable(config), indent=2) + "\n")


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The settings a run directory was started with (``pipeline.json``)."""
    file = Path(run_dir) / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{run_dir} is not a pipeline run directory (no {CONFIG_FILE})")
    return json.loads(file.read_text())


def _format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def format_summary(summary: Mapping[str, Any]) -> str:
    """The summary as a Markdown table (notebook, status, seconds, key metrics)."""
    lines = [f"# Pipeline run `{summary['run_dir']}`", "",
             f"preset **{summary['preset']}**, dataset **{summary['dataset']}**, "
             f"device **{summary['device']}**, seed {summary['seed']}: "
             f"**{summary['status']}** in {summary['seconds']:.1f} s", "",
             *([f"Why this dataset: {summary['why']}", ""] if summary.get("why") else []),
             "| notebook | status | seconds | key metrics |", "| --- | --- | ---: | --- |"]
    for rec in summary["notebooks"]:
        metrics = "; ".join(f"{k}={_format_value(v)}" for k, v in rec.get("key_metrics", {}).items())
        if rec.get("error"):
            metrics = f"ERROR {rec['error']} (executed copy: {rec['executed']})"
        seconds = f"{rec['seconds']:.1f}" if rec.get("seconds") is not None else ""
        lines.append(f"| {rec['notebook']} | {rec['status']} | {seconds} | {metrics} |")
    return "\n".join(lines) + "\n"


def validate_inputs(preset: str, dataset: str, device: str, run_dir: Path, notebooks: Sequence[Path],
                    selected: set[str] | None, extra_parameters: Mapping[str, Any]) -> str:
    """Check every input before any work; return where the dataset comes from.

    Raises a ``ValueError`` (one line naming the problem and the fix) for an unknown preset, dataset or
    device, a run directory that is a file, a ``-p`` name no selected notebook declares, a
    ``checkpoint`` that does not exist, an ``overrides`` entry naming an unknown stage or field, and a
    dataset that cannot be loaded offline.
    """
    get_preset(preset)
    if dataset not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASET_NAMES)}")
    if str(device) != "auto":
        resolve_device(device)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run dir {run_dir} is a file; pass a directory (or omit --run-dir)")
    chosen = [p for p in notebooks if selected is None or notebook_number(p) in selected]
    declared = set().union(*(declared_parameters(p) for p in chosen)) if chosen else set()
    unknown = sorted(set(extra_parameters) - declared)
    if unknown:
        raise ValueError(f"-p {', '.join(unknown)}: no notebook to run declares such a parameter; declared: "
                         f"{', '.join(sorted(declared - set(COMMON_PARAMETERS)))}")
    checkpoint = extra_parameters.get("checkpoint")
    if checkpoint:
        candidates = [Path(checkpoint).expanduser()]
        if not candidates[0].is_absolute():
            candidates.insert(0, run_dir / candidates[0])
        if not any(c.is_file() for c in candidates):
            raise ValueError(f"-p checkpoint={checkpoint}: no such file (looked in "
                             f"{', '.join(map(str, candidates))}); pass an existing state dict")
    check_overrides(extra_parameters.get("overrides"))
    return require_on_machine(dataset)


class _ProgressFollower(threading.Thread):
    """Follows the notebooks' progress file: one line per stage start, epoch and stage end; on a
    terminal also the batch progress, redrawn in place."""

    def __init__(self, path: Path, say: Callable[[str], None], label: Callable[[], str]) -> None:
        super().__init__(daemon=True)
        self.path, self.say, self.label = path, say, label
        self.stop_event = threading.Event()
        self.tty = sys.stdout.isatty()

    def run(self) -> None:
        offset = 0
        while not self.stop_event.wait(0.5):
            try:
                with open(self.path) as fh:
                    fh.seek(offset)
                    chunk = fh.read()
                    offset = fh.tell()
            except OSError:
                continue
            for line in chunk.splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                text = _describe_event(event)
                if text is None:
                    continue
                if self.tty and event.get("kind") == "bar" and not event.get("final"):
                    sys.stdout.write(f"\r\033[K  [{self.label()}] {text}")
                    sys.stdout.flush()
                elif event.get("kind") == "note":
                    if self.tty:
                        sys.stdout.write("\r\033[K")
                    self.say(f"  [{self.label()}] {text}")

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=2.0)
        if self.tty:
            sys.stdout.write("\r\033[K")
            sys.stdout.flush()


def _describe_event(event: Mapping[str, Any]) -> str | None:
    if event.get("kind") == "note":
        return str(event.get("message", ""))
    if event.get("kind") == "bar":
        total = event.get("total")
        count = f"{event.get('n')}/{total}" if total else str(event.get("n"))
        post = "; ".join(f"{k} {v}" for k, v in (event.get("postfix") or {}).items())
        return f"{event.get('desc', '')}: {count}" + (f" ({post})" if post else "")
    return None


AUTO_PRESET = "auto"


def choose_main_job() -> tuple[str, str, str]:
    """The main command's ``(preset, dataset, why)``: Fashion-MNIST's ``intro`` when it is on the machine.

    On digits every configuration scores within a few of its 299 test images, so the run shows noise;
    the ``intro`` preset on Fashion-MNIST ranks configurations on 5,000 test images (what it measured,
    and how far its differences rise above noise: :data:`grosslib.presets.INTRO_NOTE`). Digits needs no
    files.
    """
    source = check_available("fashion-mnist")
    if not needs_download(source):
        return ("intro", "fashion-mnist", f"Fashion-MNIST is on this machine ({source}): a real benchmark "
                "whose 5,000 test images separate configurations better than digits' 299 (preset intro)")
    return ("quick", "digits", "Fashion-MNIST is not on this machine, so the embedded digits ran (preset "
            "quick: its accuracies sit within a few test images of each other); for the more telling run: "
            "sudo apt-get install dataset-fashion-mnist")


def resume_command(run_dir: Path) -> str:
    """The command that continues the run in ``run_dir``."""
    return f"{Path(sys.executable).name} -m grosslib.pipeline --resume {run_dir}"


def run_pipeline(preset: str, dataset: str | None = None, device: str = "cpu",
                 run_dir: str | Path | None = None,
                 only: Iterable[str | int] | str | None = None, *, seed: int = 0,
                 figures_dir: str | Path | None = None, notebooks_dir: str | Path | None = None,
                 extra_parameters: Mapping[str, Any] | None = None, kernel_name: str = "python3",
                 force: bool = False, log_output: bool = False,
                 echo: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Run the notebooks in order into ``run_dir``; return (and write) the summary.

    Every input is checked first (:func:`validate_inputs`): nothing is written for a bad one.
    ``dataset`` None means the preset's. Notebooks with a ``NN.done.json`` marker in ``run_dir`` are
    skipped (status ``'skipped'``) unless ``force``. ``only`` restricts which notebooks may run.
    Execution stops at the first failure (status ``'failed'``, later ones ``'not run'``); the summary's
    ``status`` is ``'ok'``, ``'failed'`` (``failed`` names the notebook) or ``'interrupted'`` (Ctrl-C or
    SIGTERM: the summary so far is written and the resume command printed). Progress of the running
    notebook (stage, epoch, loss) is printed as it happens; ``echo=None`` silences all output.
    """
    say = echo or (lambda _msg: None)
    why = ""
    if preset == AUTO_PRESET:
        preset, chosen_dataset, why = choose_main_job()
        dataset = dataset or chosen_dataset
    dataset = dataset or get_preset(preset).dataset
    check_kernel(kernel_name)
    notebooks = discover_notebooks(notebooks_dir)
    selected = normalise_only(only)
    if selected is not None:
        unknown = selected - {notebook_number(p) for p in notebooks}
        if unknown:
            raise ValueError(f"--only names notebooks that do not exist: {sorted(unknown)}")
    run_path = (Path(run_dir) if run_dir else default_run_dir(preset)).expanduser().resolve()
    source = validate_inputs(preset, dataset, device, run_path, notebooks, selected, extra_parameters or {})
    figures_path = Path(figures_dir).expanduser().resolve() if figures_dir else run_path / "figures"
    config = {"preset": preset, "dataset": dataset, "device": device, "seed": seed,
              "figures_dir": str(figures_path), "extra_parameters": dict(extra_parameters or {}),
              "notebooks_dir": str(Path(notebooks_dir).resolve() if notebooks_dir else paths.NOTEBOOKS_DIR),
              "created": _dt.datetime.now().isoformat(timespec="seconds")}
    _check_config(run_path, config)
    run_path.mkdir(parents=True, exist_ok=True)
    _store_config(run_path, config)
    write_run_info(run_path, {**config, "preset_settings": get_preset(preset).to_dict(), "why": why},
                   device=None if device == "auto" else device)
    parameters = {"preset": preset, "dataset": dataset, "device": device, "seed": seed,
                  "run_dir": str(run_path), "figures_dir": str(figures_path), **(extra_parameters or {})}
    say(f"run dir: {run_path}")
    say(f"preset {preset}, dataset {dataset} ({source}), device {device}, seed {seed}")
    if why:
        say(f"why: {why}")
    records: list[dict[str, Any]] = []
    failed: dict[str, Any] | None = None
    interrupted: str | None = None
    current = {"label": ""}
    progress_file = run_path / "progress.jsonl"
    follower = _ProgressFollower(progress_file, say, lambda: current["label"]) if echo else None
    previous_env = os.environ.get(PROGRESS_FILE_ENV)
    os.environ[PROGRESS_FILE_ENV] = str(progress_file)
    if follower:
        progress_file.touch()
        with open(progress_file) as fh:          # follow from the end: earlier runs' events are old news
            fh.seek(0, os.SEEK_END)
        follower.start()
    start = time.perf_counter()
    try:
        for path in notebooks:
            number = notebook_number(path)
            marker = marker_path(run_path, number)
            base = {"notebook": path.stem, "number": number, "executed": str(run_path / path.name),
                    "seconds": None, "key_metrics": {}, "error": None}
            if marker.is_file() and not force:
                done = json.loads(marker.read_text())
                records.append({**base, **{k: done.get(k) for k in ("executed", "seconds", "metrics_file")},
                                "key_metrics": done.get("key_metrics", {}), "status": "skipped"})
                say(f"[{number}] {path.stem}: done earlier, skipped")
                continue
            stopped = failed is not None or interrupted is not None
            if stopped or (selected is not None and number not in selected):
                records.append({**base, "status": "not run"})
                continue
            say(f"[{number}] {path.stem}: running ...")
            current["label"] = number
            marker.unlink(missing_ok=True)
            try:
                record = run_notebook(path, run_path, parameters, kernel_name=kernel_name,
                                      cwd=path.parent, log_output=log_output)
            except KeyboardInterrupt:
                # the interrupted execution leaves an asyncio task whose "Kernel died" error asyncio would
                # print as a traceback when it is collected: the run was stopped on purpose, so say nothing
                logging.getLogger("asyncio").setLevel(logging.CRITICAL)
                interrupted = path.stem
                records.append({**base, "status": "interrupted"})
                continue
            if record["status"] == "ok":
                finished = _dt.datetime.now().isoformat(timespec="seconds")
                atomic_write_text(marker, json.dumps(to_jsonable({**record, "finished": finished}), indent=2)
                                  + "\n")
                say(f"[{number}] {path.stem}: ok in {record['seconds']:.1f} s")
            else:
                failed = record
                say(f"[{number}] {path.stem}: FAILED after {record['seconds']:.1f} s: {record['error']}\n"
                    f"    executed copy: {record['executed']}")
            records.append({k: v for k, v in record.items() if k not in ("metrics", "parameters")})
    finally:
        if follower:
            follower.stop()
        if previous_env is None:
            os.environ.pop(PROGRESS_FILE_ENV, None)
        else:
            os.environ[PROGRESS_FILE_ENV] = previous_env
    status = "interrupted" if interrupted else ("failed" if failed else "ok")
    summary = {"run_dir": str(run_path), "preset": preset, "dataset": dataset, "dataset_source": source,
               "why": why,
               "device": device, "seed": seed, "figures_dir": str(figures_path), "status": status,
               "failed": failed["notebook"] if failed else None, "interrupted": interrupted,
               "seconds": round(time.perf_counter() - start, 2), "notebooks": records}
    atomic_write_text(run_path / "summary.json", json.dumps(to_jsonable(summary), indent=2) + "\n")
    table = format_summary(summary)
    atomic_write_text(run_path / "summary.md", table)
    say("\n" + table)
    if failed:
        say(f"FAILED: notebook {failed['notebook']} ({failed['error']}); "
            f"executed copy: {failed['executed']}; earlier stages are kept in {run_path}; after fixing the "
            f"cause, resume with: {resume_command(run_path)}")
    if interrupted:
        say(f"INTERRUPTED during {interrupted}: finished notebooks and every finished training epoch are "
            f"kept in {run_path}; resume with: {resume_command(run_path)}")
    return summary


# ------------------------------------------------------------------------------------------ committed outputs
def refresh_committed_notebooks(only: Iterable[str | int] | str | None = None, *,
                                notebooks_dir: str | Path | None = None, kernel_name: str = "python3",
                                echo: Callable[[str], None] | None = print) -> list[Path]:
    """Re-execute notebooks in place with their default parameters (the outputs committed to git).

    Uses nbclient without timing metadata so that the stored notebooks only change where their
    outputs do; plots are embedded inline. Figures go to :func:`grosslib.paths.figures_dir`, metrics to
    ``runs/interactive``.
    """
    import nbformat
    from nbclient import NotebookClient

    check_kernel(kernel_name)
    selected = normalise_only(only)
    done = []
    for path in discover_notebooks(notebooks_dir):
        if selected is not None and notebook_number(path) not in selected:
            continue
        if echo:
            echo(f"executing {path} in place ...")
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, kernel_name=kernel_name, timeout=None, record_timing=False,
                       extra_arguments=list(KERNEL_ARGUMENTS),
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        nb.metadata.pop("papermill", None)
        for cell in nb.cells:
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
        nbformat.write(nb, path)
        done.append(path)
    return done


# --------------------------------------------------------------------------------------------- CLI
def _parse_assignment(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return name, value


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="python -m grosslib.pipeline", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    names = " | ".join(preset_names())
    parser.add_argument("--preset", help=f"{names} | auto (required unless --resume; auto: intro on "
                        "Fashion-MNIST when it is on the machine, else quick on digits)")
    parser.add_argument("--dataset", help=f"{' | '.join(DATASETS)} (default: the preset's)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument("--seed", type=int, help="seed passed to every notebook (default 0)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--run-dir", type=Path, help="run directory (default runs/<preset>/<timestamp>)")
    where.add_argument("--resume", type=Path, metavar="RUN_DIR",
                       help="continue an existing run: its settings are reused, finished notebooks skipped")
    parser.add_argument("--only", help="comma-separated notebook numbers to run, e.g. 01,02")
    parser.add_argument("--figures-dir", type=Path, help="where figures go (default <run_dir>/figures)")
    parser.add_argument("-p", "--param", dest="params", action="append", type=_parse_assignment, default=[],
                        metavar="NAME=VALUE", help="extra notebook parameter (passed where declared)")
    parser.add_argument("--force", action="store_true", help="re-run notebooks even if marked done")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
    parser.add_argument("--log-output", action="store_true", help="stream the notebooks' output")
    parser.add_argument("--notebooks-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--refresh-committed", action="store_true",
                        help="re-execute notebooks/ in place with their defaults (the committed outputs)")
    return parser


def _raise_interrupt(signum: int, _frame: Any) -> None:
    """Ctrl-C and SIGTERM: stop like a KeyboardInterrupt. The interrupted notebook execution leaves an
    asyncio task whose "Kernel died" error asyncio would print as a traceback: the stop is on purpose."""
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m grosslib.pipeline``: exit 0 when every notebook ran, 1 on a failure, 2 on misuse, 130
    when interrupted (Ctrl-C or SIGTERM: the summary so far and the resume command are printed)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # an ignored signal (SIGINT of a background job) stays ignored
    previous = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        if args.refresh_committed:
            refresh_committed_notebooks(args.only, notebooks_dir=args.notebooks_dir, kernel_name=args.kernel)
            return 0
        stored = read_run_config(args.resume) if args.resume is not None else {}
        preset = args.preset or stored.get("preset")
        if preset is None:
            parser.error("--preset is required (or --resume RUN_DIR)")

        def pick(value: Any, key: str, default: Any) -> Any:
            return value if value is not None else stored.get(key, default)

        summary = run_pipeline(
            preset, pick(args.dataset, "dataset", None), pick(args.device, "device", "cpu"),
            args.resume or args.run_dir, args.only, seed=pick(args.seed, "seed", 0),
            figures_dir=pick(args.figures_dir, "figures_dir", None),
            notebooks_dir=pick(args.notebooks_dir, "notebooks_dir", None),
            extra_parameters={**stored.get("extra_parameters", {}), **dict(args.params)},
            kernel_name=args.kernel, force=args.force, log_output=args.log_output)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)     # see run_pipeline
        where = args.resume or args.run_dir
        hint = f"; resume with: {resume_command(Path(where).resolve())}" if where else ""
        print(f"interrupted{hint}", file=sys.stderr)
        return 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return {"ok": 0, "interrupted": 130}.get(summary["status"], 1)


if __name__ == "__main__":
    sys.exit(main())
