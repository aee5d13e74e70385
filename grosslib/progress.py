"""Live progress of long work: tqdm bars in a terminal or notebook, or event lines for a watching parent.

Library code wraps its loops in :func:`bar` and announces steps with :func:`note`. Where the events go:

* ``$GROSS_PROGRESS_FILE`` set (the pipeline sets it for the notebooks it runs): each update is one
  JSON line appended to that file, which the parent process (:mod:`grosslib.pipeline`) follows and
  prints, so a notebook running under papermill shows which stage, epoch and loss it is at;
* otherwise, with ``enabled``: a tqdm bar (``tqdm.auto``: a widget in Jupyter, text in a terminal);
* otherwise: nothing.

Example::

    >>> sum(bar(range(3), total=3, desc="demo", enabled=False))
    3
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

__all__ = ["PROGRESS_FILE_ENV", "bar", "note"]

PROGRESS_FILE_ENV = "GROSS_PROGRESS_FILE"
_MIN_INTERVAL = 2.0          # seconds between two batch-level events in the progress file
T = TypeVar("T")


def _emit(event: dict[str, Any]) -> None:
    path = os.environ.get(PROGRESS_FILE_ENV)
    if not path:
        return
    try:
        with open(path, "a") as fh:
            fh.write(json.dumps({"time": time.time(), **event}) + "\n")
    except OSError:
        pass                  # progress is a courtesy: never fail the work because of it


def note(message: str) -> None:
    """One line of progress (a stage starts or ends), to the progress file if any, else nowhere."""
    _emit({"kind": "note", "message": message})


class _FileBar:
    """An iterator wrapper that reports ``n / total`` to the progress file, throttled."""

    def __init__(self, iterable: Iterable[T], total: int | None, desc: str) -> None:
        self.iterable, self.total, self.desc = iterable, total, desc
        self.postfix: dict[str, Any] = {}
        self.n, self._last = 0, 0.0

    def __iter__(self) -> Iterator[T]:
        for item in self.iterable:
            yield item
            self.n += 1
            now = time.monotonic()
            if now - self._last >= _MIN_INTERVAL:
                self._last = now
                _emit({"kind": "bar", "desc": self.desc, "n": self.n, "total": self.total, "final": False,
                       "postfix": self.postfix})
        _emit({"kind": "bar", "desc": self.desc, "n": self.n, "total": self.total, "final": True,
               "postfix": self.postfix})

    def set_postfix(self, postfix: dict[str, Any]) -> None:
        self.postfix = {k: v for k, v in postfix.items()}


def bar(iterable: Iterable[T], *, total: int | None = None, desc: str = "", enabled: bool = True,
        leave: bool = True, initial: int = 0) -> Any:
    """``iterable`` wrapped for progress (see the module docstring); has ``set_postfix(dict)``."""
    if os.environ.get(PROGRESS_FILE_ENV):
        wrapped = _FileBar(iterable, total, desc)
        wrapped.n = initial
        return wrapped
    import warnings

    with warnings.catch_warnings():      # tqdm.auto warns when ipywidgets is missing: text bars then
        warnings.filterwarnings("ignore", message="IProgress not found")
        from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=leave, initial=initial,
                dynamic_ncols=True)
