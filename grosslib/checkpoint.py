"""Checkpointing of one training run's directory: the state after each epoch, the result once finished.

A :class:`Checkpointer` owns the files of a run directory, outside the training loop::

    <run_dir>/checkpoint.pt   the state after the last finished epoch (written atomically)
    <run_dir>/metrics.jsonl   one JSON object per finished epoch
    <run_dir>/done.json       the result, once the run finished

Every checkpoint carries a description of its run (stage, configuration, options, dataset and the
network's architecture signature); :meth:`Checkpointer.check_same_run` refuses a checkpoint written by
another run, with a :class:`CheckpointError` naming the file and the fix::

    >>> import tempfile
    >>> ckpt = Checkpointer(tempfile.mkdtemp())
    >>> ckpt.has_checkpoint, ckpt.finished
    (False, False)
"""
from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .io import atomic_write, atomic_write_text, read_json

__all__ = ["CHECKPOINT_FILE", "CHECKPOINT_FORMAT", "DONE_FILE", "METRICS_FILE", "CheckpointError",
           "Checkpointer", "architecture_signature"]

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.jsonl"
DONE_FILE = "done.json"
CHECKPOINT_FORMAT = 1
_REQUIRED = frozenset({"format", "run", "epoch", "architecture", "model", "optimizer", "scheduler", "rng",
                       "history"})


class CheckpointError(ValueError):
    """A run directory's checkpoint or result cannot be used: corrupt, or from another run."""


def architecture_signature(net: nn.Module) -> list[str]:
    """One line per ``state_dict`` entry: name and shape (GroSS layers: their group sizes)."""
    lines = []
    for name, value in net.state_dict().items():
        if isinstance(value, Tensor):
            lines.append(f"{name} {tuple(value.shape)}")
        elif isinstance(value, dict) and "group_sizes" in value:
            lines.append(f"{name} group_sizes={tuple(value['group_sizes'])}")
        else:
            lines.append(f"{name} {type(value).__name__}")
    return lines


def _describe_mismatch(expected: list[str], found: list[str]) -> str:
    missing = [line for line in expected if line not in found]
    extra = [line for line in found if line not in expected]
    parts = []
    if extra:
        parts.append(f"checkpoint has {extra[:3]}{' ...' if len(extra) > 3 else ''}")
    if missing:
        parts.append(f"network has {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    return "; ".join(parts) or "entries in a different order"


def _comparable(value: Any) -> Any:
    """JSON round trip (tuples -> lists); ``notes`` ignored in configs, and ``alpha_reading`` when it is
    ``"literal"`` (runs recorded before the setting existed used that reading)."""
    value = json.loads(json.dumps(value, default=str))
    if isinstance(value, dict):
        value.pop("notes", None)
        if value.get("alpha_reading") == "literal":
            value.pop("alpha_reading")
    return value


class Checkpointer:
    """The checkpoint, metrics log and result of one run directory (created on first write)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.checkpoint_path = self.run_dir / CHECKPOINT_FILE
        self.metrics_path = self.run_dir / METRICS_FILE
        self.done_path = self.run_dir / DONE_FILE

    @property
    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.exists()

    @property
    def finished(self) -> bool:
        return self.done_path.exists()

    def clear(self) -> None:
        """Forget the run (``resume=False``): remove its checkpoint, metrics and result."""
        for path in (self.checkpoint_path, self.done_path, self.metrics_path):
            path.unlink(missing_ok=True)

    def save(self, state: dict[str, Any]) -> None:
        """``torch.save`` the state atomically (temporary file + ``os.replace``)."""
        atomic_write(self.checkpoint_path, lambda fh: torch.save(state, fh))

    def load(self, device: torch.device) -> dict[str, Any]:
        """The checkpoint's state, sanity-checked; :class:`CheckpointError` naming the file if unusable."""
        path = self.checkpoint_path
        try:
            with torch.serialization.safe_globals([Counter]):
                state = torch.load(path, map_location=device, weights_only=True)
        except Exception as exc:  # truncated zip, unpickling errors, wrong magic, ...
            first_line = (str(exc).strip().splitlines() or [""])[0][:200]
            detail = "" if isinstance(exc, pickle.UnpicklingError) or not first_line else f": {first_line}"
            raise CheckpointError(f"{path}: cannot be read ({type(exc).__name__}{detail}); the file is "
                                  "corrupt or not a grosslib checkpoint. Delete it or pass "
                                  "resume=False.") from exc
        if not isinstance(state, dict) or not _REQUIRED <= set(state):
            found = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(f"{path}: not a grosslib training checkpoint (found {found}). "
                                  "Delete it or pass resume=False.")
        if state["format"] != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path}: checkpoint format {state['format']}, expected "
                                  f"{CHECKPOINT_FORMAT}")
        return state

    @staticmethod
    def check_same_run(path: Path, stored: dict[str, Any], run: dict[str, Any]) -> None:
        """Raise :class:`CheckpointError` unless ``stored`` (read from ``path``) describes ``run``."""
        if stored["architecture"] != run["architecture"]:
            raise CheckpointError(f"{path}: written for another architecture "
                                  f"({_describe_mismatch(run['architecture'], stored['architecture'])}). "
                                  "Use another run_dir or resume=False.")
        for key in ("stage", "config", "options", "dataset"):
            if _comparable(stored.get(key)) != _comparable(run[key]):
                raise CheckpointError(f"{path}: written by a run with another {key} (stored "
                                      f"{stored.get(key)}, now {run[key]}). Use another run_dir or "
                                      "resume=False.")

    def append_metrics(self, metrics: dict[str, Any]) -> None:
        """Add one epoch's metrics to ``metrics.jsonl``."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(metrics) + "\n")

    def rewrite_metrics(self, history: list[dict[str, Any]]) -> None:
        """``metrics.jsonl`` holding exactly ``history`` (after a resume: the checkpoint's epochs)."""
        atomic_write_text(self.metrics_path, "".join(json.dumps(h) + "\n" for h in history))

    def write_done(self, done: dict[str, Any]) -> None:
        """The finished run's result (``done.json``)."""
        atomic_write_text(self.done_path, json.dumps(done, indent=1) + "\n")

    def read_done(self) -> dict[str, Any]:
        """``done.json``; :class:`CheckpointError` naming the file and the fix when unreadable."""
        try:
            done = read_json(self.done_path)
            if not isinstance(done, dict) or not {"run", "final", "history"} <= set(done):
                raise KeyError("run/final/history")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{self.done_path}: cannot be read ({type(exc).__name__}: {exc}). "
                                  "Delete it to resume from the checkpoint, or pass resume=False.") from exc
        return done
