"""What a run records next to its results: parameters, library versions, machine and device."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from grosslib.io import atomic_write_text
from grosslib.paths import REPO_ROOT

__all__ = ["RUN_INFO_FILE", "environment_info", "write_run_info"]

RUN_INFO_FILE = "run_info.json"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_state() -> dict[str, Any] | None:
    """Commit and dirty flag of the source checkout, or None outside a git checkout."""
    if not (REPO_ROOT / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def environment_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """Versions, platform, CPU, threads and accelerator of this process.

    Parameters
    ----------
    device : the device a run uses (recorded with its name); None records only what is available.
    """
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "tensorly": _version("tensorly"),
        "numpy": _version("numpy"),
        "grosslib": _version("grosslib"),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        "git": _git_state(),
    }
    if device is not None:
        device = torch.device(device)
        info["device"] = str(device)
        if device.type == "cuda":
            info["device_name"] = torch.cuda.get_device_name(device)
            info["device_capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        else:
            info["device_name"] = info["cpu"] if device.type == "cpu" else device.type
    return info


def write_run_info(run_dir: str | Path, params: dict[str, Any],
                   device: torch.device | str | None = None) -> Path:
    """Write ``run_dir/run_info.json``: ``params``, :func:`environment_info` and the time.

    When the file exists (a resumed run), the earlier sessions' time and environment are kept
    under ``"earlier_sessions"``. Values JSON cannot hold are written as strings.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RUN_INFO_FILE
    earlier: list[dict[str, Any]] = []
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            earlier = list(old.get("earlier_sessions", []))
            earlier.append({"written_at": old.get("written_at"), "environment": old.get("environment")})
        except (OSError, ValueError, AttributeError):
            earlier = []
    info = {
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "params": params,
        "environment": environment_info(device),
        "earlier_sessions": earlier,
    }
    atomic_write_text(path, json.dumps(info, indent=2, default=str) + "\n")
    return path
