"""Datasets and input pipelines.

Three datasets are supported, all delivered as uint8 ``N x C x 32 x 32`` tensors with fixed,
seeded train / validation / test splits:

* ``"cifar10"``: the paper's dataset, read through :class:`torchvision.datasets.CIFAR10`
  (checksum-verified download, standard ``cifar-10-batches-py`` layout). 50,000 training
  images are split 40,000 / 10,000 into train / validation; the 10,000 test images are kept.
* ``"digits"``: scikit-learn's bundled 8x8 digits (1,797 images), upsampled to 32x32 and
  repeated to three channels. Needs no files: useful for CPU-sized experiments and tests.
* ``"fashion-mnist"``: IDX files from the cache, from the Debian package
  ``dataset-fashion-mnist`` or downloaded by torchvision; MD5-verified; zero-padded to 32x32.

Training batches come from :func:`iterate_batches`, which keeps the whole split on the training
device and augments whole batches with a few vectorised ops (``benchmarks/bench_train.py`` compares
it with the conventional per-sample torchvision pipeline). :func:`check_available` tells, without
loading, whether a dataset can be loaded here. :class:`LoaderSplits` holds DataLoaders (or any
re-iterable of batches) instead, for data that does not fit in memory; :func:`split_batches` yields the
batches of either kind.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from grosslib.models import channel_stats, normalize  # noqa: F401 (normalize: re-exported beside the batches)
from grosslib.paths import FASHION_MNIST_DEBIAN_DIR, data_dir

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "DATASET_NAMES", "DatasetNotFoundError", "DatasetSplits",
           "FASHION_MNIST_CLASSES", "FASHION_MNIST_MD5", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD",
           "IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC", "LoaderSplits", "Split", "check_available",
           "iterate_batches", "load_dataset", "num_batches", "random_crop_flip", "read_idx", "split_batches",
           "split_size"]

DATASET_NAMES: tuple[str, ...] = ("digits", "cifar10", "fashion-mnist")

CIFAR10_MEAN: tuple[float, ...] = (0.5, 0.5, 0.5)
CIFAR10_STD: tuple[float, ...] = (0.225, 0.225, 0.225)
FASHION_MNIST_MEAN: tuple[float, ...] = (0.2860,)
FASHION_MNIST_STD: tuple[float, ...] = (0.3530,)

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# MD5 of the *decompressed* IDX files (the .gz bytes differ between distributors).
FASHION_MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049


class DatasetNotFoundError(RuntimeError):
    """The dataset files are absent and could not be downloaded."""


# ---------------------------------------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Split:
    """One split of a dataset.

    Attributes
    ----------
    images : uint8 tensor, ``N x C x H x W`` (H = W = 32 for all bundled datasets).
    labels : int64 tensor, ``N``.
    """

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            got = f"{self.images.dtype} {tuple(self.images.shape)}"
            raise ValueError(f"images must be uint8 N x C x H x W, got {got}")
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            got = f"{self.labels.dtype} {tuple(self.labels.shape)}"
            raise ValueError(f"labels must be int64 of shape N, got {got}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> Split:
        """Return a copy with both tensors on ``device``."""
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class DatasetSplits:
    """A dataset's train / validation / test splits plus what a model and a pipeline need to know.

    ``mean`` / ``std`` are per channel, on the 0..1 scale; ``augment_flip`` says whether random
    horizontal flips suit the data. ``info`` records provenance: source, split seed, sizes, etc.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment_flip: bool
    info: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> DatasetSplits:
        """Return a copy with every split on ``device``."""
        return dataclasses.replace(
            self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device)
        )


# ---------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    split_seed: int = 0,
    download: bool = True,
    limit: int | None = None,
    verify: bool = True,
) -> DatasetSplits:
    """Load a dataset with its fixed, seeded train / validation / test split.

    Parameters
    ----------
    name : one of ``"digits"``, ``"cifar10"``, ``"fashion-mnist"``.
    root : directory holding the files; defaults to ``data_dir() / name`` (``$GROSS_DATA`` honoured).
    split_seed : seed of the permutation that carves the validation set out of the training set.
    download : allow downloading missing files (CIFAR-10, Fashion-MNIST).
    limit : if given, keep only the first ``limit`` samples of each split (after splitting).
    verify : check the MD5 of the Fashion-MNIST files (CIFAR-10 is always checked by torchvision).

    Raises
    ------
    ValueError : unknown name, bad ``limit``, or corrupt files.
    DatasetNotFoundError : files absent and not downloadable.
    """
    key = name.lower()
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit}")
    root_path = Path(root).expanduser() if root is not None else None
    if key == "cifar10":
        splits = _load_cifar10(root_path, split_seed, download)
    elif key == "digits":
        splits = _load_digits(split_seed)
    elif key == "fashion-mnist":
        splits = _load_fashion_mnist(root_path, split_seed, download, verify)
    else:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    if limit is not None:
        splits.train, splits.val, splits.test = (
            _take(s, limit) for s in (splits.train, splits.val, splits.test)
        )
        splits.info["limit"] = limit
    splits.info["sizes"] = {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)}
    return splits


def check_available(name: str, root: str | Path | None = None) -> str:
    """Check, without loading, that a dataset can be loaded here; return where it will come from.

    Digits ship with scikit-learn. Fashion-MNIST needs its four IDX files in ``root`` (default
    ``$GROSS_DATA/fashion-mnist``) or the Debian package's folder, else a download. CIFAR-10 needs the
    extracted ``cifar-10-batches-py`` folder under ``root`` (default ``$GROSS_DATA/cifar10``), else a
    download. A download is not attempted here: when the files are absent the answer says so.

    Raises
    ------
    ValueError : unknown name.
    """
    key = name.lower()
    if key == "digits":
        return "scikit-learn's bundled digits"
    root_path = Path(root).expanduser() if root is not None else data_dir() / key
    if key == "fashion-mnist":
        found = _find_fashion_mnist([root_path, root_path / "FashionMNIST" / "raw", FASHION_MNIST_DEBIAN_DIR])
        if found is not None:
            return f"IDX files in {next(iter(found.values())).parent}"
        return (f"{_DOWNLOAD} into {root_path} (no IDX files in {root_path} or {FASHION_MNIST_DEBIAN_DIR}; "
                "offline: sudo apt-get install dataset-fashion-mnist)")
    if key == "cifar10":
        folder = root_path / "cifar-10-batches-py"
        if (folder / "data_batch_1").is_file() and (folder / "test_batch").is_file():
            return f"the CIFAR-10 batches in {folder}"
        return (f"{_DOWNLOAD} into {root_path} (no cifar-10-batches-py in it; offline: put the extracted "
                f"folder at {folder} or set GROSS_DATA)")
    raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASET_NAMES)}")


#: Set to 1 to let :func:`require_on_machine` accept a dataset that would have to be downloaded.
ALLOW_DOWNLOAD_ENV = "GROSS_ALLOW_DOWNLOAD"
_DOWNLOAD = "a download"        # how check_available's answer starts when the files are not here


def needs_download(source: str) -> bool:
    """Whether :func:`check_available`'s answer says the files are not on this machine."""
    return source.startswith(_DOWNLOAD)


def require_on_machine(name: str) -> str:
    """:func:`check_available`, refusing (one-line ``ValueError``) a dataset that would need a download.

    ``$GROSS_ALLOW_DOWNLOAD=1`` lets torchvision download it instead (this project's machines are offline,
    and a run should not start a download in each of its processes).
    """
    source = check_available(name)
    if needs_download(source) and os.environ.get(ALLOW_DOWNLOAD_ENV) != "1":
        raise ValueError(f"dataset {name!r} is not on this machine: it would need {source}; or set "
                         f"{ALLOW_DOWNLOAD_ENV}=1 to let torchvision download it")
    return source


def _take(split: Split, limit: int) -> Split:
    return Split(split.images[:limit].clone(), split.labels[:limit].clone())


def _split_indices(n: int, n_holdout: int, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded permutation of ``range(n)`` cut into ``(holdout, rest)``."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:n_holdout], perm[n_holdout:]


def _subset(images: Tensor, labels: Tensor, index: Tensor) -> Split:
    return Split(images[index].contiguous(), labels[index].contiguous())


def _load_cifar10(root: Path | None, split_seed: int, download: bool) -> DatasetSplits:
    """CIFAR-10 via torchvision; 1/5 of the training set becomes the validation set."""
    from torchvision.datasets import CIFAR10

    root = root if root is not None else data_dir() / "cifar10"
    folder = root / CIFAR10.base_folder
    try:
        train_set = CIFAR10(str(root), train=True, download=download)
        test_set = CIFAR10(str(root), train=False, download=False)
    except Exception as exc:  # URLError, OSError, torchvision's "not found or corrupted" RuntimeError, ...
        raise DatasetNotFoundError(
            f"CIFAR-10 not found or corrupted at {folder} "
            f"({'download failed' if download else 'download=False'}: {type(exc).__name__}: {exc}). "
            f"Put the extracted 'cifar-10-batches-py' folder "
            f"(data_batch_1..5, test_batch, batches.meta from cifar-10-python.tar.gz) at {folder}, "
            f"or pass root= / set GROSS_DATA to a directory whose 'cifar10' subfolder contains it."
        ) from exc

    def to_tensors(ds: Any) -> tuple[Tensor, Tensor]:
        hwc = torch.from_numpy(np.ascontiguousarray(ds.data))
        images = hwc.permute(0, 3, 1, 2).contiguous()  # N x H x W x C -> N x C x H x W
        return images, torch.as_tensor(ds.targets, dtype=torch.int64)

    images, labels = to_tensors(train_set)
    val_idx, train_idx = _split_indices(len(labels), len(labels) // 5, split_seed)
    test_images, test_labels = to_tensors(test_set)
    return DatasetSplits(
        name="cifar10",
        train=_subset(images, labels, train_idx),
        val=_subset(images, labels, val_idx),
        test=Split(test_images, test_labels),
        num_classes=10,
        in_channels=3,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        augment_flip=True,
        info={
            "source": str(folder),
            "split_seed": split_seed,
            "split": "val = 1/5 of the training batches (seeded permutation); test = test_batch",
            "classes": list(train_set.classes),
            "normalization": "fixed (paper): mean 0.5, std 0.225",
        },
    )


def _load_digits(split_seed: int) -> DatasetSplits:
    """scikit-learn digits upsampled to 3 x 32 x 32; test = 1/6, val = 1/5 of the rest."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = torch.from_numpy(bunch.images).to(torch.float32).mul(255.0 / 16.0).unsqueeze(1)  # N x 1 x 8 x 8
    big = F.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False)
    images = big.round().clamp(0, 255).to(torch.uint8).repeat(1, 3, 1, 1).contiguous()
    labels = torch.from_numpy(bunch.target).to(torch.int64)

    n = len(labels)
    n_test = n // 6
    n_val = (n - n_test) // 5
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    test_idx, val_idx, train_idx = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
    train = _subset(images, labels, train_idx)
    pixels = train.images[:, 0].to(torch.float64) / 255.0
    mean, std = float(pixels.mean()), float(pixels.std())
    return DatasetSplits(
        name="digits",
        train=train,
        val=_subset(images, labels, val_idx),
        test=_subset(images, labels, test_idx),
        num_classes=10,
        in_channels=3,
        mean=(mean,) * 3,
        std=(std,) * 3,
        augment_flip=False,
        info={
            "source": "sklearn.datasets.load_digits (bundled), 8x8 -> 32x32 bilinear, 3 channels",
            "split_seed": split_seed,
            "split": "test = 1/6, val = 1/5 of the rest (one seeded permutation)",
            "classes": [str(d) for d in range(10)],
            "normalization": "computed from the full training split",
        },
    )


# --- Fashion-MNIST ----------------------------------------------------------------------------------------


def read_idx(path: str | Path, *, expected_magic: int | None = None, md5: str | None = None) -> np.ndarray:
    """Read an IDX file (raw or ``.gz``) of unsigned bytes.

    Parameters
    ----------
    path : the file.
    expected_magic : 2051 for images, 2049 for labels; ``None`` accepts any uint8 IDX file.
    md5 : if given, the MD5 the decompressed content must have.

    Raises
    ------
    ValueError : naming the file, on a bad magic number, a truncated or oversized body, a bad
        gzip stream or an MD5 mismatch.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (EOFError, gzip.BadGzipFile) as exc:
        raise ValueError(f"{path}: corrupt or truncated gzip stream ({exc})") from exc
    if md5 is not None and (actual := hashlib.md5(raw).hexdigest()) != md5:
        raise ValueError(f"{path}: MD5 of decompressed content is {actual}, expected {md5}")
    if len(raw) < 4:
        raise ValueError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    is_uint8_idx = raw[:3] == b"\x00\x00\x08"
    if not is_uint8_idx or (expected_magic is not None and magic != expected_magic):
        want = f"{expected_magic}" if expected_magic is not None else "a uint8 IDX magic (0x0000 08 nd)"
        raise ValueError(f"{path}: bad magic number {magic}, expected {want}")
    ndim = raw[3]
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(f"{path}: truncated header ({len(raw)} bytes, need {header_len})")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header_len + math.prod(dims)
    if len(raw) != expected:
        kind = "truncated" if len(raw) < expected else "has trailing bytes"
        raise ValueError(f"{path}: {kind}: header dims {dims} need {expected} bytes, file has {len(raw)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims).copy()


def _idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _find_fashion_mnist(folders: Sequence[Path]) -> dict[str, Path] | None:
    """The first folder holding all four IDX files (raw or .gz), as ``{stem: path}``."""
    for folder in folders:
        files = {stem: _idx_file(folder, stem) for stem in FASHION_MNIST_MD5}
        if all(p is not None for p in files.values()):
            return files  # type: ignore[return-value]
    return None


def _load_fashion_mnist(root: Path | None, split_seed: int, download: bool, verify: bool) -> DatasetSplits:
    """Fashion-MNIST from the cache, the Debian package or a torchvision download; val = 1/6 of train."""
    root = root if root is not None else data_dir() / "fashion-mnist"
    candidates = [root, root / "FashionMNIST" / "raw", FASHION_MNIST_DEBIAN_DIR]
    files = _find_fashion_mnist(candidates)
    if files is None and download:
        from torchvision.datasets import FashionMNIST

        try:
            FashionMNIST(str(root), train=True, download=True)
        except Exception as exc:  # torchvision wraps URLError in RuntimeError; be generous
            download_error: Exception | None = exc
        else:
            download_error = None
        files = _find_fashion_mnist(candidates)
    else:
        download_error = None
    if files is None:
        reason = ""
        if download_error is not None:
            reason = f" Download failed: {type(download_error).__name__}: {download_error}."
        raise DatasetNotFoundError(
            f"Fashion-MNIST not found in {', '.join(str(c) for c in candidates)}.{reason} "
            f"Install it with `apt-get install dataset-fashion-mnist`, or put the four files "
            f"{', '.join(s + '.gz' for s in FASHION_MNIST_MD5)} (raw or gzipped) in {root}."
        )

    def read(stem: str, magic: int) -> np.ndarray:
        return read_idx(files[stem], expected_magic=magic, md5=FASHION_MNIST_MD5[stem] if verify else None)

    def load_pair(prefix: str) -> tuple[Tensor, Tensor]:
        images = read(f"{prefix}-images-idx3-ubyte", IDX_IMAGES_MAGIC)
        labels = read(f"{prefix}-labels-idx1-ubyte", IDX_LABELS_MAGIC)
        image_file = files[f"{prefix}-images-idx3-ubyte"]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ValueError(f"{image_file}: expected N x 28 x 28 images, got {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"{image_file}: {len(images)} images but labels of shape {labels.shape}")
        if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
            label_file = files[f"{prefix}-labels-idx1-ubyte"]
            raise ValueError(f"{label_file}: label {labels.max()} out of range 0..9")
        padded = F.pad(torch.from_numpy(images).unsqueeze(1), (2, 2, 2, 2))  # N x 1 x 32 x 32, zero border
        return padded.contiguous(), torch.from_numpy(labels).to(torch.int64)

    images, labels = load_pair("train")
    val_idx, train_idx = _split_indices(len(labels), len(labels) // 6, split_seed)
    test_images, test_labels = load_pair("t10k")
    return DatasetSplits(
        name="fashion-mnist",
        train=_subset(images, labels, train_idx),
        val=_subset(images, labels, val_idx),
        test=Split(test_images, test_labels),
        num_classes=10,
        in_channels=1,
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
        augment_flip=True,
        info={
            "source": str(files["train-images-idx3-ubyte"].parent),
            "files": {stem: str(p) for stem, p in files.items()},
            "md5_verified": verify,
            "split_seed": split_seed,
            "split": "val = 1/6 of the training set (seeded permutation); test = t10k",
            "classes": list(FASHION_MNIST_CLASSES),
            "normalization": "fixed: standard Fashion-MNIST 28x28 statistics (not recomputed after padding)",
        },
    )


# ---------------------------------------------------------------------------------------------------------
# On-device batch pipeline
# ---------------------------------------------------------------------------------------------------------


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Number of batches an epoch over ``n`` samples yields."""
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def random_crop_flip(images: Tensor, offsets: Tensor, flips: Tensor | None, pad: int) -> Tensor:
    """Crop each image of a batch out of its zero-padded copy, optionally mirrored, in one gather.

    Parameters
    ----------
    images : ``B x C x H x W`` (any dtype).
    offsets : int64 ``B x 2``, the (row, column) of each crop's corner in the padded image, in ``0..2*pad``.
    flips : bool ``B`` (mirror horizontally) or ``None``.
    pad : zero padding on each side.
    """
    b, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (pad, pad, pad, pad)) if pad > 0 else images
    rows = offsets[:, :1] + torch.arange(h, device=device)  # B x H
    col_base = torch.arange(w, device=device).expand(b, w)
    if flips is not None:
        col_base = torch.where(flips[:, None], (w - 1) - col_base, col_base)
    cols = offsets[:, 1:] + col_base  # B x W
    batch_idx = torch.arange(b, device=device)[:, None, None, None]
    chan_idx = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch_idx, chan_idx, rows[:, None, :, None], cols[:, None, None, :]]


def iterate_batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool,
    augment: bool,
    flip: bool,
    mean: Sequence[float] | Tensor,
    std: Sequence[float] | Tensor,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    pad: int = 2,
    channels_last: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield normalised ``(images, labels)`` batches of ``split``, on the split's device.

    With ``augment``, each sample is randomly cropped from its ``pad``-zero-padded copy and,
    if ``flip``, mirrored with probability 0.5 (``flip`` is ignored without ``augment``).
    All randomness (order, offsets, flips) is drawn once per epoch from the CPU ``generator``
    (torch's global RNG if ``None``), so a given generator state yields identical batches on
    any device.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = len(split)
    device = split.images.device
    channels = split.images.shape[1]
    m = channel_stats(mean, channels, device, "mean")
    s = channel_stats(std, channels, device, "std")

    order = torch.randperm(n, generator=generator).to(device) if shuffle else None
    offsets = flips = None
    if augment:
        offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator).to(device)
        if flip:
            flips = (torch.rand(n, generator=generator) < 0.5).to(device)

    for i in range(num_batches(n, batch_size, drop_last)):
        pos = slice(i * batch_size, min((i + 1) * batch_size, n))
        idx = order[pos] if order is not None else pos
        images, labels = split.images[idx], split.labels[idx]
        if offsets is not None:
            images = random_crop_flip(images, offsets[pos], flips[pos] if flips is not None else None, pad)
        x = images.to(torch.float32).div_(255.0).sub_(m).div_(s)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, labels


# ---------------------------------------------------------------------------------------------------------
# Data that does not fit in memory: DataLoaders (or any re-iterable of batches)
# ---------------------------------------------------------------------------------------------------------


@dataclass
class LoaderSplits:
    """Train / validation / test as re-iterable sources of ``(images, labels)`` batches (e.g. DataLoaders).

    Every training stage and the search accept it wherever they accept :class:`DatasetSplits`, so data
    that does not fit in memory works. Batches are used as they come (the loader does any shuffling and
    augmentation; ``cfg.batch_size``, ``cfg.augment`` and ``cfg.flip`` do not apply); uint8 images are
    normalised with ``mean`` / ``std`` (0..1 scale), float images are taken as already normalised.
    Each is moved to the training device batch by batch.

    Reproducibility: a run resumed from a checkpoint repeats an uninterrupted one exactly only if each
    epoch's batches are the same; give the training loader its own generator
    (``DataLoader(..., shuffle=True, generator=torch.Generator())``): the stages reseed it before every
    epoch from the run's seed (and the epoch), as they do for in-memory splits.

    Example
    -------
    >>> import torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> ds = TensorDataset(torch.randint(0, 256, (8, 1, 32, 32), dtype=torch.uint8), torch.arange(8) % 2)
    >>> loader = DataLoader(ds, batch_size=4)
    >>> splits = LoaderSplits("toy", loader, loader, loader, num_classes=2, in_channels=1,
    ...                       mean=(0.5,), std=(0.25,))
    >>> split_size(splits.train)
    8
    """

    name: str
    train: Any
    val: Any
    test: Any
    num_classes: int
    in_channels: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    augment_flip: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for which in ("train", "val", "test"):
            source = getattr(self, which)
            if isinstance(source, Iterator) or not hasattr(source, "__iter__"):
                raise ValueError(f"LoaderSplits.{which} must be re-iterable (a DataLoader or a list of "
                                 f"batches), got {type(source).__name__}: a one-shot iterator would be "
                                 "empty after one epoch")
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std (to normalise uint8 batches) or neither")

    def to(self, device: torch.device | str) -> LoaderSplits:
        """Itself: batches are moved to the device one at a time."""
        return self


def split_size(split: Any) -> int | None:
    """Samples in a :class:`Split` or a loader (``len(loader.dataset)``); None when it cannot be told."""
    if isinstance(split, Split):
        return len(split)
    dataset = getattr(split, "dataset", None)
    if dataset is not None and hasattr(dataset, "__len__"):
        return len(dataset)
    return None


def split_batches(
    split: Any,
    batch_size: int,
    *,
    mean: Sequence[float] | Tensor | None,
    std: Sequence[float] | Tensor | None,
    device: torch.device | str | None = None,
    channels_last: bool = False,
    shuffle: bool = False,
    augment: bool = False,
    flip: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Normalised ``(x, y)`` batches of a :class:`Split` (:func:`iterate_batches`) or of a loader.

    A loader's batches come as it yields them (its own order and augmentation; ``batch_size``,
    ``shuffle``, ``augment``, ``flip`` and ``generator`` apply to in-memory splits only); each is moved
    to ``device``, uint8 images are normalised with ``mean`` / ``std``, float images kept as they are.
    """
    if isinstance(split, Split):
        if device is not None:
            split = split.to(device)
        yield from iterate_batches(split, batch_size, shuffle=shuffle, augment=augment, flip=flip, mean=mean,
                                   std=std, generator=generator, channels_last=channels_last)
        return
    for i, batch in enumerate(split):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(f"batch {i} of the loader is a {type(batch).__name__}, expected "
                             "(images, labels)")
        x, y = torch.as_tensor(batch[0]), torch.as_tensor(batch[1])
        if x.dim() != 4 or y.dim() != 1 or len(x) != len(y):
            raise ValueError(f"batch {i}: expected images B x C x H x W and labels B, got {tuple(x.shape)} "
                             f"and {tuple(y.shape)}")
        if device is not None:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if x.dtype == torch.uint8:
            if mean is None or std is None:
                raise ValueError("the loader yields uint8 images: give LoaderSplits mean and std to "
                                 "normalise them")
            x = normalize(x, mean, std)
        elif not x.is_floating_point():
            raise ValueError(f"batch {i}: images must be uint8 or floating point, got {x.dtype}")
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, y.long()
