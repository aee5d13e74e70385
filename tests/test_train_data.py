"""Training stages on networks with BatchNorm and on DataLoader data (grosslib.train, grosslib.data)."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
from gross_helpers import BatchLoader, die_after_save, random_gross
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from grosslib.data import DatasetSplits, LoaderSplits, load_dataset, split_batches, split_size
from grosslib.models import decomposed_layers
from grosslib.presets import get_preset
from grosslib.train import TrainConfig, evaluate, finetune, reconstruct_responses


@pytest.fixture(scope="module")
def data() -> DatasetSplits:
    return load_dataset("digits", limit=64)


def tiny(stage: str, **overrides) -> TrainConfig:
    return get_preset("tiny").stage(stage, **overrides)


def bn_net(seed: int = 0) -> nn.Sequential:
    """conv -> BN -> ReLU -> conv -> BN -> ReLU -> pool -> FC, with non-trivial running statistics."""
    torch.manual_seed(seed)
    net = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 8, 3, padding=1), bn1=nn.BatchNorm2d(8), relu1=nn.ReLU(),
        conv2=nn.Conv2d(8, 8, 3, padding=1, bias=False), bn2=nn.BatchNorm2d(8), relu2=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(8, 10)))
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(16, 3, 32, 32) * 2 + 1)   # running stats away from (0, 1)
    return net


def tensors(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in net.state_dict().items() if isinstance(v, torch.Tensor)}


def assert_same_tensors(a: nn.Module, b: nn.Module) -> None:
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key


def frozen_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of the state that is not a series term (BN statistics included)."""
    return {k: v.clone() for k, v in net.state_dict().items()
            if isinstance(v, torch.Tensor) and not any(f".{t}_terms." in k for t in "pqr")}


def test_batchnorm_stays_frozen_bit_for_bit(data, tmp_path):
    original = bn_net()
    gross = random_gross(original, names=("conv2",), scale=0.1)
    before = frozen_state(gross)
    terms_before = [p.clone() for p in decomposed_layers(gross)[0][1].parameters()]
    finetune(gross, data, tiny("finetune_gross", epochs=1, alpha=0.0), tmp_path / "ft", progress=False,
             device="cpu", channels_last=False)
    reconstruct_responses(gross, original, data, tiny("reconstruct_gross", epochs=1, alpha=0.0),
                          tmp_path / "rec", progress=False, device="cpu", channels_last=False)
    after = frozen_state(gross)
    assert before.keys() == after.keys() and "bn2.num_batches_tracked" in after
    for key in before:
        assert torch.equal(before[key], after[key]), key
    terms_after = list(decomposed_layers(gross)[0][1].parameters())
    assert any(not torch.equal(a, b) for a, b in zip(terms_before, terms_after))


def test_train_mode_batchnorm_would_have_changed(data):
    """The freeze is what keeps the statistics: a train-mode forward moves them."""
    net = bn_net()
    before = net.bn2.running_mean.clone()
    x, _ = next(split_batches(data.train, 32, mean=data.mean, std=data.std))
    net.train()
    with torch.no_grad():
        net(x)
    assert not torch.equal(before, net.bn2.running_mean)


def test_full_training_still_updates_batchnorm(data, tmp_path):
    from grosslib.train import train_full
    net = bn_net()
    before = net.bn1.num_batches_tracked.clone()
    train_full(net, data, tiny("full", epochs=1), tmp_path / "full", progress=False, device="cpu")
    assert int(net.bn1.num_batches_tracked) > int(before)


def _loader_splits(data: DatasetSplits, cfg: TrainConfig) -> LoaderSplits:
    """Loaders that yield exactly the batches the in-memory path draws (same per-epoch generator seed)."""
    train = BatchLoader(data.train, cfg.batch_size, generator=torch.Generator(), shuffle=True,
                        augment=cfg.augment, flip=data.augment_flip, mean=data.mean, std=data.std)
    evaluation = {"shuffle": False, "augment": False, "flip": False, "mean": data.mean, "std": data.std}
    return LoaderSplits(data.name, train, BatchLoader(data.val, 1000, **evaluation),
                        BatchLoader(data.test, 1000, **evaluation), num_classes=data.num_classes,
                        in_channels=data.in_channels, mean=data.mean, std=data.std, info=dict(data.info))


def test_loader_training_equals_in_memory_training(data, tmp_path):
    """A loader whose generator the stage reseeds each epoch gives bitwise the in-memory run."""
    cfg = tiny("finetune_gross", epochs=2, milestones=(1,), alpha=1.0)
    base = random_gross(bn_net(), names=("conv2",), scale=0.1)
    in_memory, loaded = copy.deepcopy(base), copy.deepcopy(base)
    a = finetune(in_memory, data, cfg, tmp_path / "mem", progress=False, device="cpu", channels_last=False)
    b = finetune(loaded, _loader_splits(data, cfg), cfg, tmp_path / "loader", progress=False, device="cpu",
                 channels_last=False)
    assert_same_tensors(in_memory, loaded)
    assert a.final["test_accuracy"] == b.final["test_accuracy"]
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]


def test_dataloader_run_resumes_exactly(data, tmp_path, monkeypatch):
    cfg = tiny("finetune_gross", epochs=2, milestones=(1,), alpha=0.0)
    ds = TensorDataset(data.train.images, data.train.labels)
    evaluation = DataLoader(TensorDataset(data.val.images, data.val.labels), batch_size=50)
    splits = LoaderSplits("digits", DataLoader(ds, batch_size=16, shuffle=True, generator=torch.Generator()),
                          evaluation, evaluation, num_classes=10, in_channels=3, mean=data.mean, std=data.std)
    base = random_gross(bn_net(), names=("conv2",), scale=0.1)
    whole = copy.deepcopy(base)
    finetune(whole, splits, cfg, tmp_path / "whole", progress=False, device="cpu", channels_last=False)
    killed = copy.deepcopy(base)
    die_after_save(monkeypatch, epoch=1)
    with pytest.raises(KeyboardInterrupt):
        finetune(killed, splits, cfg, tmp_path / "killed", progress=False, device="cpu", channels_last=False)
    monkeypatch.undo()
    resumed = copy.deepcopy(base)
    result = finetune(resumed, splits, cfg, tmp_path / "killed", progress=False, device="cpu",
                      channels_last=False)
    assert result.resumed_epochs == 1
    assert_same_tensors(whole, resumed)


def test_evaluate_on_a_dataloader_equals_the_split(data):
    net = bn_net().eval()
    loader = DataLoader(TensorDataset(data.test.images, data.test.labels), batch_size=7)
    on_split = evaluate(net, data.test, data.mean, data.std)
    on_loader = evaluate(net, loader, data.mean, data.std)
    assert on_loader["accuracy"] == on_split["accuracy"]
    assert on_loader["loss"] == pytest.approx(on_split["loss"], rel=1e-6)
    assert split_size(loader) == len(data.test)


def test_loader_bad_inputs(data):
    ds = TensorDataset(data.test.images, data.test.labels)
    with pytest.raises(ValueError, match="re-iterable"):
        LoaderSplits("x", iter(DataLoader(ds)), [], [], num_classes=10, in_channels=3)
    with pytest.raises(ValueError, match="both mean and std"):
        LoaderSplits("x", [], [], [], num_classes=10, in_channels=3, mean=(0.5,))
    with pytest.raises(ValueError, match="mean and std"):
        next(split_batches(DataLoader(ds, batch_size=4), 4, mean=None, std=None))
    with pytest.raises(ValueError, match=r"expected \(images, labels\)"):
        next(split_batches([data.test.images[:4]], 4, mean=data.mean, std=data.std))
