"""Tests for grosslib.data: dataset loading (no network) and the batch pipelines."""

from __future__ import annotations

import gzip
import pickle
from collections import Counter
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.datasets.cifar
import torchvision.datasets.mnist
from gross_helpers import BatchLoader, idx_bytes, write_fashion_idx

import grosslib.data as data
from grosslib.data import (
    DatasetNotFoundError,
    DatasetSplits,
    Split,
    iterate_batches,
    load_dataset,
    normalize,
    num_batches,
    random_crop_flip,
    read_idx,
)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read or write the user's real dataset cache."""
    monkeypatch.setenv("GROSS_DATA", str(tmp_path_factory.mktemp("gross_data")))


def _fail_download(*args: object, **kwargs: object) -> None:
    raise URLError("network disabled in tests")


# ---------------------------------------------------------------------------------------------------------
# CIFAR-10 (tiny files in the real cifar-10-batches-py format)
# ---------------------------------------------------------------------------------------------------------

CIFAR_PER_BATCH = 10  # 5 training batches -> 50 training images -> 40 train / 10 val
KNOWN_PIXEL = (2, 5, 7)  # (channel, row, column) set to 200 in every image


def _cifar_rows(n: int, first_id: int, rng: np.random.Generator) -> np.ndarray:
    """``n x 3072`` rows in CIFAR's layout (R, G, B planes, each row-major); pixel (0, 0, 0) is an id."""
    rows = rng.integers(0, 200, size=(n, 3, 32, 32), dtype=np.uint8)
    rows[:, 0, 0, 0] = np.arange(first_id, first_id + n)
    c, y, x = KNOWN_PIXEL
    rows[:, c, y, x] = 200
    return rows.reshape(n, 3072)


@pytest.fixture
def cifar_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, np.ndarray, np.ndarray]:
    """Write tiny CIFAR batch files; return (root, all training rows, all training labels).

    torchvision checks the MD5 of every file against the real release; the tiny files cannot
    match, so the check is reduced to "the file exists" for this test only. Any download attempt fails.
    """
    monkeypatch.setattr(
        torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: Path(path).is_file()
    )
    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", _fail_download)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    # Real CIFAR files are Python 2 pickles whose keys torchvision reads back (encoding="latin1") as
    # str, so the tiny files use str keys: bytes keys would stay bytes and torchvision would not find them.
    all_rows, all_labels = [], []
    for k in range(1, 6):
        rows = _cifar_rows(CIFAR_PER_BATCH, (k - 1) * CIFAR_PER_BATCH, rng)
        labels = rng.integers(0, 10, size=CIFAR_PER_BATCH).tolist()
        (folder / f"data_batch_{k}").write_bytes(pickle.dumps({"data": rows, "labels": labels}))
        all_rows.append(rows)
        all_labels += labels
    test_rows = _cifar_rows(CIFAR_PER_BATCH, 100, rng)
    test_labels = list(range(CIFAR_PER_BATCH))
    (folder / "test_batch").write_bytes(pickle.dumps({"data": test_rows, "labels": test_labels}))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    return tmp_path, np.concatenate(all_rows), np.array(all_labels)


def test_cifar10_shapes_layout_and_split(cifar_root: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, rows, labels = cifar_root
    ds = load_dataset("cifar10", root=root, download=False)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (40, 10, 10)
    assert ds.info["sizes"] == {"train": 40, "val": 10, "test": 10}
    assert ds.train.images.shape == (40, 3, 32, 32) and ds.train.images.dtype == torch.uint8
    assert ds.train.labels.dtype == torch.int64
    assert (ds.num_classes, ds.in_channels, ds.augment_flip) == (10, 3, True)
    assert ds.mean == (0.5, 0.5, 0.5) and ds.std == (0.225, 0.225, 0.225)
    assert ds.info["classes"][0] == "airplane"

    c, y, x = KNOWN_PIXEL
    for split in (ds.train, ds.val, ds.test):
        assert torch.all(split.images[:, c, y, x] == 200)
        assert torch.all(split.images[:, c, x, y] != 200)  # not transposed (random pixels are < 200)

    # Every train/val image is exactly one original (CHW) image with its label, each used once.
    expected = torch.from_numpy(rows.reshape(-1, 3, 32, 32))
    ids = torch.cat([ds.train.images[:, 0, 0, 0], ds.val.images[:, 0, 0, 0]]).long()
    assert sorted(ids.tolist()) == list(range(50))
    assert torch.equal(torch.cat([ds.train.images, ds.val.images]), expected[ids])
    assert torch.equal(torch.cat([ds.train.labels, ds.val.labels]), torch.from_numpy(labels)[ids])
    # The test set is kept whole and in order.
    assert ds.test.images[:, 0, 0, 0].tolist() == list(range(100, 110))
    assert ds.test.labels.tolist() == list(range(10))


def test_cifar10_split_is_seeded(cifar_root: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root = cifar_root[0]
    a = load_dataset("cifar10", root=root, download=False, split_seed=0)
    b = load_dataset("cifar10", root=root, download=False, split_seed=0)
    c = load_dataset("cifar10", root=root, download=False, split_seed=1)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.labels, b.val.labels)
    assert set(a.val.images[:, 0, 0, 0].tolist()) != set(c.val.images[:, 0, 0, 0].tolist())
    assert a.info["split_seed"] == 0 and c.info["split_seed"] == 1


def test_cifar10_present_files_are_not_downloaded(cifar_root: tuple[Path, np.ndarray, np.ndarray]) -> None:
    ds = load_dataset("cifar10", root=cifar_root[0], download=True)  # a download attempt would raise
    assert len(ds.train) == 40


def test_cifar10_missing_without_download(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", root=tmp_path / "nowhere", download=False)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in str(err.value)
    assert "GROSS_DATA" in str(err.value)


def test_cifar10_failed_download_is_wrapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", _fail_download)
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", root=tmp_path, download=True)
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value)
    assert isinstance(err.value.__cause__, URLError)


def test_cifar10_default_root_honours_gross_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROSS_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="cifar10"):
        load_dataset("cifar10", download=False)
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", download=False)
    assert str(tmp_path / "cifar10" / "cifar-10-batches-py") in str(err.value)


# ---------------------------------------------------------------------------------------------------------
# Digits
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> DatasetSplits:
    return load_dataset("digits")


def _image_keys(split: Split) -> Counter:
    return Counter((img.numpy().tobytes(), int(y)) for img, y in zip(split.images, split.labels))


def test_digits_sizes_and_format(digits: DatasetSplits) -> None:
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1199, 299, 299)
    for split in (digits.train, digits.val, digits.test):
        assert split.images.shape[1:] == (3, 32, 32) and split.images.dtype == torch.uint8
        assert torch.equal(split.images[:, 0], split.images[:, 2])  # grey repeated to 3 channels
    assert (digits.num_classes, digits.in_channels, digits.augment_flip) == (10, 3, False)
    assert set(digits.train.labels.tolist()) == set(range(10))
    assert int(digits.train.images.max()) > 200 and int(digits.train.images.min()) == 0
    # Stats are those of the training split, on the 0..1 scale.
    pixels = digits.train.images[:, 0].double() / 255
    assert digits.mean[0] == pytest.approx(float(pixels.mean()))
    assert digits.std[0] == pytest.approx(float(pixels.std()))


def test_digits_splits_partition_the_dataset(digits: DatasetSplits) -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = torch.from_numpy(bunch.images).float().mul(255 / 16).unsqueeze(1)
    big = F.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False).round().clamp(0, 255)
    everything = Split(big.to(torch.uint8).repeat(1, 3, 1, 1), torch.from_numpy(bunch.target).long())
    union = _image_keys(digits.train) + _image_keys(digits.val) + _image_keys(digits.test)
    assert union == _image_keys(everything)
    # Disjoint: no sample (as an index) is used twice, so the multiset sizes add up exactly.
    assert sum(union.values()) == 1797


def test_digits_seed_and_limit() -> None:
    a = load_dataset("digits", split_seed=3, limit=20)
    b = load_dataset("digits", split_seed=3, limit=20)
    c = load_dataset("digits", split_seed=4, limit=20)
    assert (len(a.train), len(a.val), len(a.test)) == (20, 20, 20)
    assert a.info["limit"] == 20 and a.info["sizes"]["test"] == 20
    assert torch.equal(a.test.images, b.test.images)
    assert not torch.equal(a.test.images, c.test.images)


def test_unknown_name_and_bad_limit() -> None:
    with pytest.raises(ValueError) as err:
        load_dataset("imagenet")
    for name in ("digits", "cifar10", "fashion-mnist"):
        assert name in str(err.value)
    with pytest.raises(ValueError):
        load_dataset("digits", limit=0)


def test_split_validation_and_to(digits: DatasetSplits) -> None:
    with pytest.raises(ValueError):
        Split(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError):
        Split(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))
    moved = digits.to("meta")
    for split in (moved.train, moved.val, moved.test):
        assert split.images.device.type == "meta" and split.labels.device.type == "meta"
    assert digits.train.images.device.type == "cpu"  # the original is untouched
    assert len(moved.val) == len(digits.val)


# ---------------------------------------------------------------------------------------------------------
# Fashion-MNIST (tiny synthetic IDX files; the real Debian files when installed)
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def no_debian(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide the Debian-installed files and make downloads fail."""
    monkeypatch.setattr(data, "FASHION_MNIST_DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", _fail_download)


def test_fashion_mnist_tiny_files_load(tmp_path: Path, no_debian: None) -> None:
    arrays = write_fashion_idx(tmp_path / "fm")
    ds = load_dataset("fashion-mnist", root=tmp_path / "fm", verify=False)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (10, 2, 6)
    assert ds.test.images.shape == (6, 1, 32, 32) and ds.test.images.dtype == torch.uint8
    assert (ds.in_channels, ds.num_classes, ds.augment_flip) == (1, 10, True)
    assert ds.mean == (0.2860,) and ds.std == (0.3530,)
    assert ds.info["md5_verified"] is False and ds.info["source"] == str(tmp_path / "fm")
    for split in (ds.train, ds.val, ds.test):
        border = torch.ones(32, 32, dtype=torch.bool)
        border[2:30, 2:30] = False
        assert torch.all(split.images[:, 0][:, border] == 0)
        assert torch.all(split.images[:, 0, 2:30, 2:30] > 0)  # synthetic pixels are 1..255
    assert torch.equal(ds.test.images[:, 0, 2:30, 2:30], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    assert ds.test.labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    # Train + val hold each training image once, with its own label.
    originals = {
        img.tobytes(): int(y)
        for img, y in zip(arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"])
    }
    seen = [
        (img[0, 2:30, 2:30].numpy().tobytes(), int(y))
        for split in (ds.train, ds.val)
        for img, y in zip(split.images, split.labels)
    ]
    assert sorted(k for k, _ in seen) == sorted(originals)
    assert all(originals[k] == y for k, y in seen)


def test_fashion_mnist_torchvision_layout_raw_files(tmp_path: Path, no_debian: None) -> None:
    write_fashion_idx(tmp_path / "FashionMNIST" / "raw", gz=False)
    ds = load_dataset("fashion-mnist", root=tmp_path, verify=False, download=False)
    assert len(ds.test) == 6 and ds.info["source"] == str(tmp_path / "FashionMNIST" / "raw")


def test_fashion_mnist_truncated_file(tmp_path: Path, no_debian: None) -> None:
    write_fashion_idx(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-5]))
    with pytest.raises(ValueError, match="truncated") as err:
        load_dataset("fashion-mnist", root=tmp_path, verify=False)
    assert str(path) in str(err.value)


def test_fashion_mnist_truncated_gzip_stream(tmp_path: Path) -> None:
    write_fashion_idx(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(ValueError) as err:
        read_idx(path, expected_magic=2049)
    assert str(path) in str(err.value)


def test_fashion_mnist_wrong_magic(tmp_path: Path, no_debian: None) -> None:
    write_fashion_idx(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    labels = np.zeros(12, dtype=np.uint8)
    path.write_bytes(gzip.compress(idx_bytes(labels, 2051)))  # an "images" magic on a labels file
    with pytest.raises(ValueError, match="magic") as err:
        load_dataset("fashion-mnist", root=tmp_path, verify=False)
    assert str(path) in str(err.value)


def test_fashion_mnist_wrong_checksum(tmp_path: Path, no_debian: None) -> None:
    write_fashion_idx(tmp_path)
    with pytest.raises(ValueError, match="MD5") as err:
        load_dataset("fashion-mnist", root=tmp_path, verify=True)
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in str(err.value)


def test_fashion_mnist_missing(tmp_path: Path, no_debian: None) -> None:
    for download in (False, True):
        with pytest.raises(DatasetNotFoundError) as err:
            load_dataset("fashion-mnist", root=tmp_path / "empty", download=download)
        assert "apt-get install dataset-fashion-mnist" in str(err.value)
        assert str(tmp_path / "empty") in str(err.value)
    assert "Download failed" in str(err.value)


@pytest.mark.skipif(not data.FASHION_MNIST_DEBIAN_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_debian_files(tmp_path: Path) -> None:
    ds = load_dataset("fashion-mnist", root=tmp_path, download=False, verify=True)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (50000, 10000, 10000)
    assert ds.info["source"] == str(data.FASHION_MNIST_DEBIAN_DIR) and ds.info["md5_verified"] is True
    assert ds.train.images.shape == (50000, 1, 32, 32)
    assert torch.bincount(ds.test.labels).tolist() == [1000] * 10
    assert int(ds.train.images[:, :, :2].max()) == 0  # zero border
    interior = ds.train.images[:, :, 2:30, 2:30].float() / 255
    # The fixed normalisation constants are the statistics of the unpadded 28x28 images.
    assert float(interior.mean()) == pytest.approx(ds.mean[0], abs=0.002)


# ---------------------------------------------------------------------------------------------------------
# Batch pipeline
# ---------------------------------------------------------------------------------------------------------


def _toy_split(n: int = 37, c: int = 3, size: int = 12, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(1, 256, (n, c, size, size), generator=g, dtype=torch.uint8)
    return Split(images, torch.arange(n, dtype=torch.int64))


MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def _batches(split: Split, seed: int | None, **kwargs: object) -> list[tuple[torch.Tensor, torch.Tensor]]:
    opts: dict = dict(shuffle=True, augment=True, flip=True, mean=MEAN, std=STD)
    opts.update(kwargs)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return list(iterate_batches(split, 8, generator=gen, **opts))


def test_normalize_matches_formula() -> None:
    x = _toy_split(n=4).images
    out = normalize(x, MEAN, STD)
    assert out.dtype == torch.float32
    for ch in range(3):
        ref = (x[:, ch].double() / 255 - MEAN[ch]) / STD[ch]
        assert torch.allclose(out[:, ch].double(), ref, atol=1e-5)
    assert torch.allclose(normalize(x[0], MEAN, STD), out[0])  # single C x H x W image
    assert torch.allclose(normalize(x, (0.5,), (0.25,)), (x.float() / 255 - 0.5) / 0.25, atol=1e-5)
    with pytest.raises(ValueError):
        normalize(x, (0.1, 0.2), STD)


def test_no_augment_returns_normalised_originals_in_order() -> None:
    split = _toy_split()
    batches = _batches(split, 0, shuffle=False, augment=False)
    assert [len(y) for _, y in batches] == [8, 8, 8, 8, 5]
    assert torch.equal(torch.cat([x for x, _ in batches]), normalize(split.images, MEAN, STD))
    assert torch.equal(torch.cat([y for _, y in batches]), split.labels)
    assert len(_batches(split, 0, shuffle=False, augment=False, drop_last=True)) == 4
    assert num_batches(37, 8, False) == 5 and num_batches(37, 8, True) == 4 and num_batches(32, 8, False) == 4


def test_shuffle_is_a_permutation() -> None:
    split = _toy_split()
    labels = torch.cat([y for _, y in _batches(split, 0, augment=False)])
    assert sorted(labels.tolist()) == list(range(37)) and labels.tolist() != list(range(37))
    xs = torch.cat([x for x, _ in _batches(split, 0, augment=False)])
    assert torch.equal(xs, normalize(split.images[labels], MEAN, STD))


def test_pipeline_is_deterministic_per_seed() -> None:
    split = _toy_split()
    a, b, c = _batches(split, 5), _batches(split, 5), _batches(split, 6)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))


def _reference_crop(image: torch.Tensor, dy: int, dx: int, flip: bool, pad: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    crop = F.pad(image, (pad, pad, pad, pad))[:, dy : dy + h, dx : dx + w]
    return crop.flip(-1) if flip else crop


def test_random_crop_flip_matches_per_sample_loop() -> None:
    images = _toy_split(n=20).images
    g = torch.Generator().manual_seed(0)
    offsets = torch.randint(0, 5, (20, 2), generator=g)
    flips = torch.rand(20, generator=g) < 0.5
    out = random_crop_flip(images, offsets, flips, pad=2)
    for i in range(20):
        ref = _reference_crop(images[i], int(offsets[i, 0]), int(offsets[i, 1]), bool(flips[i]), 2)
        assert torch.equal(out[i], ref)
    assert torch.equal(random_crop_flip(images, torch.full((20, 2), 2), None, pad=2), images)  # centre crop


def test_augmented_batches_are_shifted_copies() -> None:
    split = _toy_split()
    identity = dict(mean=(0.0,), std=(1.0 / 255,))  # normalised values = raw pixel values (up to rounding)
    out = torch.cat([x for x, _ in _batches(split, 1, shuffle=False, flip=False, **identity)]).round()
    used = set()
    for i in range(len(split)):
        matches = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(out[i], _reference_crop(split.images[i], dy, dx, False, 2).float())
        ]
        assert len(matches) == 1, f"sample {i} is not exactly one shifted crop"
        used.add(matches[0])
    assert len(used) > 5  # offsets vary between samples


def test_flip_probability_about_half() -> None:
    n = 4000
    images = torch.arange(16, dtype=torch.uint8).reshape(1, 1, 4, 4).repeat(n, 1, 1, 1)
    split = Split(images, torch.zeros(n, dtype=torch.int64))
    opts = dict(shuffle=False, augment=True, mean=(0.0,), std=(1.0 / 255,), pad=0)
    gen = torch.Generator().manual_seed(0)
    out = torch.cat([x for x, _ in iterate_batches(split, 1000, flip=True, generator=gen, **opts)]).round()
    flipped = (out == images.flip(-1).float()).flatten(1).all(1)
    unflipped = (out == images.float()).flatten(1).all(1)
    assert torch.all(flipped ^ unflipped)
    assert 0.45 < flipped.float().mean().item() < 0.55
    no_flip = next(iterate_batches(split, 1000, flip=False, **opts))[0].round()
    assert torch.equal(no_flip, images[:1000].float())


def test_batch_loader_and_channels_last() -> None:
    split = _toy_split()
    loader = BatchLoader(
        split,
        8,
        shuffle=True,
        augment=True,
        flip=True,
        mean=MEAN,
        std=STD,
        generator=torch.Generator().manual_seed(3),
        channels_last=True,
    )
    assert len(loader) == 5
    epoch1, epoch2 = list(loader), list(loader)
    assert not torch.equal(epoch1[0][0], epoch2[0][0])  # fresh randomness each epoch
    assert epoch1[0][0].is_contiguous(memory_format=torch.channels_last)
    again = _batches(split, 3)
    assert all(torch.equal(xa, xb) for (xa, _), (xb, _) in zip(epoch1, again))


