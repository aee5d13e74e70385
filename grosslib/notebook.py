"""The one set-up call of every numbered notebook, its metrics record, and the network it studies.

A notebook's cells are: imports, a ``parameters`` cell of literals, then one call::

    nb = notebook.setup(3, "simultaneous_training", preset=preset, dataset=dataset, ...)

which checks every parameter before any work (one clear ``ValueError`` naming the problem and the
fix), resolves the run directory, figures directory and device, applies the preset's notebook
settings (torch threads, plotting style, seeds), and returns a :class:`Notebook` holding them, the
preset (with any stage overrides applied) and, for notebooks that train, the replicates'
:class:`~grosslib.experiment.Experiment` objects. Plots go through :meth:`Notebook.show` (saved to
the figures folder and embedded inline); the last cell calls :meth:`Notebook.write_metrics`, which
writes ``<run_dir>/metrics/NN_name.json`` (read back by :mod:`grosslib.pipeline`).
"""
from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from . import paths, plots
from .experiment import Experiment
from .io import atomic_write_text, resolve_device, to_jsonable
from .models import PaperNet, build_papernet
from .presets import Preset, get_preset
from .records import replicate_seeds
from .runinfo import environment_info

__all__ = ["DATASET_SHAPES", "Notebook", "dataset_shape", "load_network", "metrics_path", "setup",
           "write_metrics"]

#: ``(in_channels, num_classes)`` of each dataset (as delivered by :func:`grosslib.data.load_dataset`).
DATASET_SHAPES: dict[str, tuple[int, int]] = {"digits": (3, 10), "cifar10": (3, 10), "fashion-mnist": (1, 10)}


def dataset_shape(dataset: str) -> tuple[int, int]:
    """``(in_channels, num_classes)`` of a dataset name, without loading it."""
    key = str(dataset).lower()
    if key not in DATASET_SHAPES:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASET_SHAPES)}")
    return DATASET_SHAPES[key]


@dataclass
class Notebook:
    """What a notebook's set-up resolved: settings, locations, device and (for 03-06) the replicates."""

    number: int
    name: str
    preset: Preset
    dataset: str
    seed: int
    device: torch.device
    run_dir: Path
    figures_dir: Path
    parameters: dict[str, Any]
    seeds: list[int] = field(default_factory=list)
    experiments: list[Experiment] = field(default_factory=list)

    @property
    def exp(self) -> Experiment:
        """The first replicate (the one whose training record and GroSS network the figures show)."""
        if not self.experiments:
            raise ValueError(f"notebook {self.number:02d} set up no experiment (pass experiments=True)")
        return self.experiments[0]

    @property
    def btd_options(self) -> dict[str, Any]:
        """The preset's BTD options with the notebook's ``btd_*`` overrides (all of them kept)."""
        return dict(self.parameters.get("btd_options") or self.preset.btd_options)

    def show(self, fig: Figure, name: str) -> Path:
        """Save ``fig`` as ``NN_name.png`` in the figures folder and embed it inline (:func:`plots.show`)."""
        return plots.show(fig, self.number, name, directory=self.figures_dir)

    def write_metrics(self, metrics: Mapping[str, Any], key_metrics: Mapping[str, Any] | None = None) -> Path:
        """``<run_dir>/metrics/NN_name.json`` with the parameters, preset, versions and device."""
        parameters = {**self.parameters, "preset_settings": self.preset.to_dict()}
        return write_metrics(self.run_dir, self.number, self.name, metrics, parameters=parameters,
                             device=self.device, key_metrics=key_metrics)


def setup(number: int, name: str, *, preset: str, dataset: str, seed: int = 0, device: str = "cpu",
          run_dir: str = "", figures_dir: str = "", overrides: Mapping[str, Mapping[str, Any]] | None = None,
          replicates: int | None = None, data_limit: int | None = None, progress: bool = False,
          experiments: bool = False, btd_tol: float | None = None, btd_max_iter: int | None = None,
          num_threads: int | None = None, float_format: str = "{:.4g}", **extra: Any) -> Notebook:
    """Check the parameters, resolve where things go, apply the preset's settings; a :class:`Notebook`.

    Parameters
    ----------
    number, name : the notebook's number and name (``03``, ``"simultaneous_training"``).
    preset, dataset, seed, device, run_dir, figures_dir : the common parameters (``run_dir`` ""
        means ``runs/interactive``; ``figures_dir`` "" the figures folder, ``$GROSS_FIGURES``).
    overrides : per-stage :class:`~grosslib.train.TrainConfig` overrides, checked by name.
    replicates, data_limit, progress : for notebooks that train (``experiments=True``): the seeds
        ``seed, seed+1, ...`` (count from the preset unless given), each split's size cap, progress bars.
    btd_tol, btd_max_iter : override the preset's BTD stopping rule (its other options are kept).
    num_threads : torch CPU threads (None: the preset's).
    extra : the notebook's own parameters, recorded with the others.

    Raises
    ------
    ValueError : an unknown preset, dataset, device, stage override or a bad value, before any work.
    """
    chosen = get_preset(preset).with_overrides(overrides)
    dataset_shape(dataset)                          # an unknown dataset: one line listing the valid ones
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if data_limit is not None and (isinstance(data_limit, bool) or not isinstance(data_limit, int)
                                   or data_limit < 1):
        raise ValueError(f"data_limit must be a positive int or None, got {data_limit!r}")
    torch_device = resolve_device(device)
    btd_options = dict(chosen.btd_options)
    btd_options.update({k: v for k, v in (("tol", btd_tol), ("max_iter", btd_max_iter)) if v is not None})
    threads = chosen.notebook.num_threads if num_threads is None else int(num_threads)
    seeds = replicate_seeds(chosen, seed, replicates) if experiments else []
    run_path = Path(run_dir).expanduser() if run_dir else paths.runs_dir() / "interactive"
    run_path.mkdir(parents=True, exist_ok=True)
    figures_path = Path(figures_dir).expanduser() if figures_dir else paths.figures_dir()
    figures_path.mkdir(parents=True, exist_ok=True)

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    plots.set_style()
    try:
        import pandas as pd

        pd.options.display.float_format = float_format.format
        pd.options.display.max_colwidth = 200
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    parameters = {"preset": chosen.name, "dataset": dataset, "seed": seed, "device": str(device),
                  "run_dir": str(run_path.resolve()), "figures_dir": str(figures_path.resolve()),
                  "overrides": dict(overrides or {}), "data_limit": data_limit, "num_threads": threads,
                  "btd_options": btd_options, **({"replicates": seeds} if experiments else {}), **extra}
    experiment_list = [Experiment(dataset, chosen, seed=s, run_dir=run_path.resolve(),
                                  device=str(torch_device), data_limit=data_limit, progress=progress)
                       for s in seeds]
    return Notebook(number, name, chosen, dataset, seed, torch_device, run_path.resolve(), figures_path,
                    parameters, seeds, experiment_list)


# --------------------------------------------------------------------------------------------- networks
def load_network(checkpoint: str | Path | None, *, dataset: str = "digits", seed: int = 0,
                 run_dir: str | Path | None = None) -> tuple[PaperNet, str]:
    """A trained PaperNet from ``checkpoint``, or a freshly initialised one when ``checkpoint`` is empty.

    Relative paths are tried in ``run_dir`` first. The file may be a state dict or a dict holding one
    under ``state_dict``/``model``/``model_state_dict``; the input channels and classes are read from
    its shapes. Returns the network (eval mode, CPU) and where it came from.

    Raises
    ------
    FileNotFoundError : ``checkpoint`` names a file that does not exist (never a silent fresh network).
    ValueError : the file holds no PaperNet state dict.
    """
    if not checkpoint:
        in_channels, num_classes = dataset_shape(dataset)
        return (build_papernet(in_channels, num_classes, seed).eval(),
                f"freshly initialised PaperNet (seed {seed}, {in_channels} input channels)")
    path = Path(checkpoint).expanduser()
    candidates = ([Path(run_dir) / path] if run_dir and not path.is_absolute() else []) + [path]
    found = next((c.resolve() for c in candidates if c.is_file()), None)
    if found is None:
        raise FileNotFoundError(f"checkpoint {str(checkpoint)!r} not found (looked in "
                                f"{', '.join(str(c) for c in candidates)}); pass an existing file, or "
                                "checkpoint='' for a freshly initialised network")
    state = torch.load(found, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or "conv1.weight" not in state or "fc2.weight" not in state:
        raise ValueError(f"{found} does not hold a PaperNet state dict (no conv1.weight / fc2.weight)")
    net = PaperNet(int(state["conv1.weight"].shape[1]), int(state["fc2.weight"].shape[0]))
    net.load_state_dict(state)
    return net.eval(), f"trained PaperNet from {found}"


# --------------------------------------------------------------------------------------------- metrics
def metrics_path(run_dir: str | Path, number: int, name: str) -> Path:
    """``<run_dir>/metrics/NN_name.json``."""
    return Path(run_dir) / "metrics" / f"{int(number):02d}_{name}.json"


def write_metrics(run_dir: str | Path, number: int, name: str, metrics: Mapping[str, Any], *,
                  parameters: Mapping[str, Any] | None = None, device: str | torch.device | None = None,
                  key_metrics: Mapping[str, Any] | None = None) -> Path:
    """Write a notebook's metrics with its parameters, versions and device; return the path.

    ``key_metrics`` (a few scalars) is what the pipeline's summary table shows. A file that already
    holds the same metrics and parameters is left as it is: its environment and time are those of the
    run that produced them (re-executing a committed notebook does not rewrite its record).
    """
    path = metrics_path(run_dir, number, name)
    parameters = {key: _repo_relative(value) for key, value in (parameters or {}).items()}
    results = to_jsonable({"notebook": f"{int(number):02d}_{name}", "metrics": metrics,
                           "key_metrics": key_metrics or {}, "parameters": parameters})
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except ValueError:
            stored = {}
        same = json.dumps(results, sort_keys=True) == json.dumps({key: stored.get(key) for key in results},
                                                                 sort_keys=True)    # NaN-safe comparison
        if same:
            return path
    record = {**results, "environment": to_jsonable(environment_info(device)),
              "written": _dt.datetime.now().isoformat(timespec="seconds")}
    return atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def _repo_relative(value: Any) -> Any:
    """A path (or path string) inside the repository as a repository-relative string; else ``value``."""
    if not isinstance(value, (str, Path)) or not Path(value).is_absolute():
        return value
    try:
        return Path(value).resolve().relative_to(paths.REPO_ROOT).as_posix()
    except ValueError:
        return value
