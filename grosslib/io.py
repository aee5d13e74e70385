"""Files a run writes: atomic writes (temporary file + ``os.replace``), JSON-ready values, the device.

Every file grosslib writes goes through :func:`atomic_write` (or its text / JSON / torch wrappers), so
a run killed mid-write leaves either the old file or the new one, never half of one::

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.json"
    >>> _ = write_json(path, {"a": (1, 2)})
    >>> read_json(path)
    {'a': [1, 2]}
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

__all__ = ["atomic_write", "atomic_write_text", "read_json", "resolve_device", "to_jsonable", "torch_save",
           "write_json"]


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write through ``write(file)`` into a temporary file beside ``path``, fsync, then ``os.replace``.

    The parent folder is created. The temporary file is removed if ``write`` fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` of a UTF-8 string."""
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def write_json(path: str | Path, value: Any, *, indent: int | None = 1) -> Path:
    """:func:`atomic_write_text` of ``json.dumps(to_jsonable(value))`` plus a newline."""
    return atomic_write_text(path, json.dumps(to_jsonable(value), indent=indent) + "\n")


def read_json(path: str | Path) -> Any:
    """``json.loads`` of a file, with the file named in the error when it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); delete it to have it written again") from exc


def torch_save(path: str | Path, obj: Any) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def to_jsonable(obj: Any) -> Any:
    """Tensors, numpy values, DataFrames, Paths, dataclasses and non-str keys as ``json`` values.

    Non-finite floats become the strings ``'nan'``, ``'inf'``, ``'-inf'`` (JSON has no such numbers).
    """
    import pandas as pd

    if isinstance(obj, pd.DataFrame):
        return to_jsonable(obj.reset_index().to_dict(orient="records") if obj.index.name else
                           obj.to_dict(orient="records"))
    if isinstance(obj, pd.Series):
        return to_jsonable(obj.to_dict())
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else str(value)
    if isinstance(obj, (Path, torch.device, torch.dtype)):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj))
    if obj is None or isinstance(obj, str):
        return obj
    return repr(obj)


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(device: torch.device | str | None = None) -> torch.device:
    """``device`` checked to be usable; None or ``'auto'``: CUDA, then MPS, then CPU.

    Raises
    ------
    ValueError : an unknown device string, or CUDA / MPS asked for where it is not available (the
        message names the fix).
    """
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {str(device)!r}; use cpu, cuda, cuda:N, mps or auto") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} requested but CUDA is not available here; "
                             "use --device cpu (or auto)")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} requested but only {torch.cuda.device_count()} CUDA "
                             "device(s) exist")
    elif resolved.type == "mps" and not _mps_available():
        raise ValueError(f"device {str(device)!r} requested but MPS is not available here; use --device cpu")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {str(device)!r} is not supported; use cpu, cuda, cuda:N, mps or auto")
    return resolved
