"""Shared test helpers that build grosslib objects (tests/reference.py stays grosslib-free)."""

from __future__ import annotations

import copy
import gzip
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from grosslib import GroSSConv2d
from grosslib.data import Split, iterate_batches, num_batches


def random_gross(net: nn.Module, names: Sequence[str] = ("conv2", "conv3", "conv4"), seed: int = 0,
                 scale: float = 0.3) -> nn.Module:
    """A copy of ``net`` with the named convs replaced by GroSS layers with random series terms.

    Same structure as :func:`grosslib.models.decompose` without the (slow) BTD: costs and exactness do not
    depend on where the weights come from.
    """
    net = copy.deepcopy(net)
    generator = torch.Generator().manual_seed(seed)
    for name in names:
        conv = getattr(net, name)
        sizes = [s for s in (1, 2, 4, 8, 16, 32, 64) if s <= conv.in_channels and conv.in_channels % s == 0]
        layer = GroSSConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, sizes, stride=conv.stride,
                            padding=conv.padding, dilation=conv.dilation, bias=conv.bias is not None)
        with torch.no_grad():
            for p in layer.parameters():
                p.normal_(0.0, scale, generator=generator)
        setattr(net, name, layer)
    return net


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def write_fashion_idx(
    folder: Path, *, gz: bool = True, n_train: int = 12, n_test: int = 6
) -> dict[str, np.ndarray]:
    """Write the four Fashion-MNIST IDX files (random pixels 1..255, labels 0..9); return the arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(1, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(1, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    for stem, arr in arrays.items():
        raw = idx_bytes(arr, 2051 if arr.ndim == 3 else 2049)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    return arrays


class BatchLoader:
    """Re-iterable :func:`iterate_batches`; each epoch draws fresh randomness from ``generator``.

    ``options`` are :func:`iterate_batches`' keyword arguments (shuffle, augment, flip, mean, std, ...).
    """

    def __init__(self, split: Split, batch_size: int, *, generator: torch.Generator | None = None,
                 **options: Any) -> None:
        self.split, self.batch_size, self.generator, self.options = split, batch_size, generator, options

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return iterate_batches(self.split, self.batch_size, generator=self.generator, **self.options)

    def __len__(self) -> int:
        return num_batches(len(self.split), self.batch_size, self.options.get("drop_last", False))


# ---------------------------------------------------------------------------------------------------------
# Conventional per-sample pipeline (speed baseline only)
# ---------------------------------------------------------------------------------------------------------


def write_kernelspec(jupyter_dir: str | Path, kernel_name: str = "python3") -> Path:
    """Write ``<jupyter_dir>/kernels/<name>/kernel.json`` running this interpreter; return ``jupyter_dir``.

    Put ``jupyter_dir`` first on ``$JUPYTER_PATH`` to make papermill use this interpreter whatever
    kernels are registered elsewhere.
    """
    import json
    import sys

    folder = Path(jupyter_dir) / "kernels" / kernel_name
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Python 3 ({sys.executable})", "language": "python"}
    (folder / "kernel.json").write_text(json.dumps(spec, indent=1) + "\n")
    return Path(jupyter_dir)


def die_after_save(monkeypatch: Any, epoch: int, exc: type[BaseException] = KeyboardInterrupt) -> None:
    """Make :meth:`Checkpointer.save` raise ``exc`` right after writing epoch ``epoch``'s checkpoint.

    Stands for the process being killed between epochs; ``monkeypatch.undo()`` restores saving.
    """
    from grosslib.checkpoint import Checkpointer

    real_save = Checkpointer.save

    def save_then_die(self: Checkpointer, state: dict[str, Any]) -> None:
        real_save(self, state)
        if state["epoch"] == epoch:
            raise exc

    monkeypatch.setattr(Checkpointer, "save", save_then_die)
