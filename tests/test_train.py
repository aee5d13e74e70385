"""Tests for grosslib.train and grosslib.runinfo (CPU, digits, 'tiny' preset); presets: test_presets.py."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections import Counter
from pathlib import Path

import pytest
import scipy.stats
import torch
from gross_helpers import die_after_save
from torch import nn

import grosslib.train as train
from grosslib.checkpoint import Checkpointer
from grosslib.data import DatasetSplits, Split, load_dataset, normalize
from grosslib.io import resolve_device
from grosslib.models import build_papernet, decompose, decomposed_layers, fixed_config_network, get_config
from grosslib.presets import get_preset
from grosslib.runinfo import environment_info, write_run_info
from grosslib.sampling import GroupSizeSampler
from grosslib.train import (
    CheckpointError,
    NonFiniteError,
    TrainConfig,
    evaluate,
    finetune,
    reconstruct_responses,
    train_full,
)

BTD_FAST = {"tol": 1e-3, "max_iter": 5}


@pytest.fixture(scope="module")
def data() -> DatasetSplits:
    return load_dataset("digits", limit=64)


@pytest.fixture(scope="module")
def papernet() -> nn.Module:
    return build_papernet(seed=0)


@pytest.fixture(scope="module")
def gross_net(papernet: nn.Module) -> nn.Module:
    return decompose(papernet, **BTD_FAST)


@pytest.fixture(scope="module")
def fixed_net(papernet: nn.Module) -> nn.Module:
    return fixed_config_network(papernet, (4, 4, 4), **BTD_FAST)


def tiny(stage: str, **overrides) -> TrainConfig:
    return get_preset("tiny").stage(stage, **overrides)


def snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items() if isinstance(v, torch.Tensor)}


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = snapshot(a), snapshot(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def is_term(key: str) -> bool:
    return any(f".{kind}_terms." in key for kind in ("p", "r", "q"))


def strip_times(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in history]


# ---------------------------------------------------------------------------------------------------------
# Trainable set: only the series terms change
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["reconstruct", "finetune"])
def test_only_series_terms_train(stage, gross_net, papernet, data, tmp_path):
    net = copy.deepcopy(gross_net)
    flags = {name: p.requires_grad for name, p in net.named_parameters()}
    before = snapshot(net)
    cfg = tiny(f"{stage}_gross", alpha=1.0, max_batches=4)
    if stage == "reconstruct":
        result = reconstruct_responses(net, papernet, data, cfg, tmp_path, progress=False)
    else:
        result = finetune(net, data, cfg, tmp_path, progress=False)
    after = snapshot(net)

    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing trained"
    assert all(is_term(k) for k in changed), sorted(k for k in changed if not is_term(k))
    # frozen parameters (conv1, fc1, fc2) and buffers (the GroSS biases) are bit-for-bit unchanged
    frozen = [k for k in before if not is_term(k)]
    assert "fc1.weight" in frozen and "conv1.weight" in frozen and "conv2.bias" in frozen
    # a term above every size a layer sampled never receives a gradient, hence never changes
    for name, layer in decomposed_layers(net):
        top = layer.group_sizes.index(max(result.sample_counts[name]))
        assert f"{name}.p_terms.0" in changed
        for i in range(top + 1, len(layer.group_sizes)):
            for kind in "prq":
                assert f"{name}.{kind}_terms.{i}" not in changed
    # requires_grad flags are restored, the active configuration too
    assert {name: p.requires_grad for name, p in net.named_parameters()} == flags
    assert get_config(net) == get_config(gross_net)


def test_dropout_still_active_after_finetune(fixed_net, data, tmp_path):
    net = copy.deepcopy(fixed_net)
    finetune(net, data, tiny("finetune_fixed"), tmp_path, progress=False)
    assert isinstance(net.dropout, nn.Dropout) and net.dropout.p == 0.5
    x = torch.randn(8, 3, 32, 32)
    net.train()
    assert not torch.equal(net(x), net(x))  # dropout still drops in train mode
    net.eval()
    assert torch.equal(net(x), net(x))


def test_train_full_trains_everything_and_records_run(data, tmp_path):
    net = build_papernet(seed=1)
    before = snapshot(net)
    result = train_full(net, data, tiny("full", epochs=2), tmp_path, progress=False)
    after = snapshot(net)
    assert all(not torch.equal(before[k], after[k]) for k in before if k.endswith("weight"))
    assert 0.0 <= result.test_accuracy <= 1.0 and 0.0 <= result.val_accuracy <= 1.0
    assert [h["epoch"] for h in result.history] == [1, 2]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["params"]["config"]["epochs"] == 2 and info["params"]["stage"] == "full"
    assert info["environment"]["torch"] == torch.__version__ and info["environment"]["device"] == "cpu"
    done = json.loads((tmp_path / "done.json").read_text())
    assert done["final"]["test_accuracy"] == result.test_accuracy
    with pytest.raises(ValueError, match="alpha"):
        train_full(net, data, tiny("full", alpha=4.0), tmp_path / "x", progress=False)


# ---------------------------------------------------------------------------------------------------------
# Checkpoints: exact resume, finished runs, bad checkpoints
# ---------------------------------------------------------------------------------------------------------


class Killed(Exception):
    """Stands for the process being killed."""


@pytest.mark.parametrize("when", ["after_checkpoint", "mid_epoch"])
def test_resume_is_exact(when, gross_net, data, tmp_path, monkeypatch):
    cfg = tiny("finetune_gross", epochs=3, milestones=(2,), alpha=0.5, lr=1e-2)
    reference = copy.deepcopy(gross_net)
    expected = finetune(reference, data, cfg, tmp_path / "reference", progress=False)

    net = copy.deepcopy(gross_net)
    if when == "after_checkpoint":
        die_after_save(monkeypatch, epoch=2, exc=Killed)
    else:
        real_iterate, calls = train.split_batches, Counter()

        def die_in_third_epoch(*args, **kwargs):
            for i, batch in enumerate(real_iterate(*args, **kwargs)):
                if kwargs.get("shuffle") and i == 1:
                    calls["train"] += 1
                    if calls["train"] == 3:
                        raise Killed
                yield batch

        monkeypatch.setattr(train, "split_batches", die_in_third_epoch)
    with pytest.raises(Killed):
        finetune(net, data, cfg, tmp_path / "run", progress=False)
    monkeypatch.undo()

    resumed = finetune(copy.deepcopy(gross_net), data, cfg, tmp_path / "run", progress=False)
    assert resumed.resumed_epochs == 2 and not resumed.skipped
    fresh = copy.deepcopy(gross_net)
    finetune(fresh, data, cfg, tmp_path / "run", progress=False)  # finished: loads the final weights
    assert_same_state(fresh, reference)
    assert strip_times(resumed.history) == strip_times(expected.history)
    assert resumed.sample_counts == expected.sample_counts
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_finished_run_is_skipped(fixed_net, data, tmp_path, monkeypatch):
    net = copy.deepcopy(fixed_net)
    first = finetune(net, data, tiny("finetune_fixed"), tmp_path, progress=False)
    monkeypatch.setattr(Checkpointer, "save", lambda *a: pytest.fail("a finished run trained again"))
    other = copy.deepcopy(fixed_net)
    second = finetune(other, data, tiny("finetune_fixed"), tmp_path, progress=False)
    assert second.skipped and not first.skipped
    assert second.final == first.final and strip_times(second.history) == strip_times(first.history)
    assert_same_state(other, net)


def test_corrupt_checkpoint_is_a_clear_error(fixed_net, data, tmp_path):
    cfg = tiny("finetune_fixed", epochs=2)
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="checkpoint.pt.*corrupt"):
        finetune(copy.deepcopy(fixed_net), data, cfg, tmp_path, progress=False)
    # a truncated real checkpoint
    finetune(copy.deepcopy(fixed_net), data, cfg, tmp_path / "ok", resume=False, progress=False)
    blob = (tmp_path / "ok" / "checkpoint.pt").read_bytes()
    (tmp_path / "ok" / "done.json").unlink()
    (tmp_path / "ok" / "checkpoint.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="checkpoint.pt"):
        finetune(copy.deepcopy(fixed_net), data, cfg, tmp_path / "ok", progress=False)
    # resume=False starts over instead
    result = finetune(copy.deepcopy(fixed_net), data, cfg, tmp_path / "ok", resume=False, progress=False)
    assert not result.skipped and result.resumed_epochs == 0


def test_checkpoint_of_another_run_is_rejected(fixed_net, papernet, data, tmp_path):
    cfg = tiny("finetune_fixed")
    finetune(copy.deepcopy(fixed_net), data, cfg, tmp_path, progress=False)
    (tmp_path / "done.json").unlink()  # an unfinished run: the checkpoint is what resume reads
    other = fixed_config_network(papernet, (1, 1, 1), **BTD_FAST)
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt.*another architecture"):
        finetune(other, data, cfg, tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="another config"):
        finetune(copy.deepcopy(fixed_net), data, tiny("finetune_fixed", lr=0.5), tmp_path, progress=False)
    finetune(copy.deepcopy(fixed_net), data, cfg, tmp_path, progress=False)  # same run: resumes and finishes
    with pytest.raises(CheckpointError, match="another architecture"):  # finished runs are checked too
        finetune(other, data, cfg, tmp_path, progress=False)


# ---------------------------------------------------------------------------------------------------------
# Reconstruction and sampling
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["end_to_end", "layerwise"])
def test_reconstruction_loss_decreases_on_a_fixed_batch(mode, fixed_net, papernet, data, tmp_path):
    one_batch = dataclasses.replace(data, train=Split(data.train.images[:16], data.train.labels[:16]))
    cfg = tiny("reconstruct_fixed", epochs=6, augment=False, max_batches=None, lr=1e-2, max_grad_norm=None)
    result = reconstruct_responses(copy.deepcopy(fixed_net), papernet, one_batch, cfg, tmp_path, mode=mode,
                                   progress=False)
    losses = [h["train_loss"] for h in result.history]  # the loss on the same 16 images before each step
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.95 * losses[0]
    with pytest.raises(ValueError, match="mode"):
        reconstruct_responses(copy.deepcopy(fixed_net), papernet, data, cfg, tmp_path / "x", mode="global")


@pytest.mark.parametrize("mode", ["end_to_end", "layerwise"])
def test_reconstruction_loss_definition(mode, gross_net, papernet, data, tmp_path):
    """The first step's loss is sum_l ||A'_l - A_l|| / ||A_l|| with pre-ReLU conv outputs as A_l."""
    one_batch = dataclasses.replace(data, train=Split(data.train.images[:16], data.train.labels[:16]))
    net = copy.deepcopy(gross_net)
    cfg = tiny("reconstruct_fixed", augment=False, max_batches=None)  # alpha None: the active config trains
    x = normalize(one_batch.train.images, data.mean, data.std)

    def record(model: nn.Module) -> tuple[dict, dict]:
        """Inputs and outputs of conv2..4, running the children one by one (clones: ReLU is in place)."""
        inputs, outputs, h = {}, {}, x
        for name, module in model.named_children():
            inputs[name] = h.clone()
            h = module(h)
            outputs[name] = h.clone()
        return inputs, outputs

    with torch.no_grad():
        inputs, targets = record(papernet)
        if mode == "layerwise":
            outputs = {n: net.get_submodule(n)(inputs[n]) for n in ("conv2", "conv3", "conv4")}
        else:
            outputs = record(net)[1]
        norm = torch.linalg.vector_norm
        layers = ("conv2", "conv3", "conv4")
        expected = sum(float(norm(outputs[n] - targets[n]) / norm(targets[n])) for n in layers)
    result = reconstruct_responses(net, papernet, one_batch, cfg, tmp_path, mode=mode, progress=False)
    assert result.history[0]["train_loss"] == pytest.approx(expected, rel=1e-5)
    assert expected > 0.1


def chi_square_p_value(counts: list[int], probs: list[float]) -> float:
    """Pearson's goodness-of-fit test, the rarest sizes pooled so that every expected count is >= 5."""
    n = sum(counts)
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    observed, expected = [], []
    for i in order:
        if expected and expected[-1] < 5:
            observed[-1] += counts[i]
            expected[-1] += n * probs[i]
        else:
            observed.append(counts[i])
            expected.append(n * probs[i])
    if len(expected) > 1 and expected[-1] < 5:  # fold an under-filled last bin into the previous one
        observed[-2:] = [sum(observed[-2:])]
        expected[-2:] = [sum(expected[-2:])]
    if len(expected) < 2:
        return 1.0
    stat = sum((o - e) ** 2 / e for o, e in zip(observed, expected))
    return float(scipy.stats.chi2.sf(stat, len(expected) - 1))


@pytest.mark.parametrize(("alpha", "repeats", "reading"), [(0.0, 3, "literal"), (4.0, 1, "literal"),
                                                        (4.0, 2, "normalized")])
def test_finetune_sampling_follows_alpha(alpha, repeats, reading, gross_net, data, tmp_path):
    net = copy.deepcopy(gross_net)
    seen: dict[str, Counter] = {name: Counter() for name, _ in decomposed_layers(net)}
    for name, layer in decomposed_layers(net):  # what the layers actually ran at in training steps
        layer.register_forward_pre_hook(lambda m, args, name=name: seen[name].update([m.group_size])
                                        if m.training else None)
    train_split = Split(data.train.images.repeat(repeats, 1, 1, 1), data.train.labels.repeat(repeats))
    # one epoch of one-image steps: 64 x repeats
    cfg = tiny("finetune_gross", alpha=alpha, alpha_reading=reading, batch_size=1, max_batches=None, lr=1e-5,
               augment=False)
    result = finetune(net, dataclasses.replace(data, train=train_split), cfg, tmp_path, progress=False)
    for name, layer in decomposed_layers(net):
        counts = result.sample_counts[name]
        assert {s: seen[name][s] for s in sorted(seen[name])} == counts
        assert sum(counts.values()) == len(train_split)
        probs = GroupSizeSampler(layer.group_sizes, alpha, reading=reading).probs.tolist()
        p_value = chi_square_p_value([counts.get(s, 0) for s in layer.group_sizes], probs)
        assert p_value > 1e-3, (name, counts, probs)
    if alpha == 4.0 and reading == "literal":  # p(smallest) = 1 / sum_j exp(-4 (j - 1)) ~ 0.98
        assert all(c[1] > 0.9 * len(train_split) for c in result.sample_counts.values())
    if reading == "normalized":  # p(smallest) <= 0.75 for 3+ sizes: the others are drawn too
        assert all(c[1] < 0.9 * len(train_split) for c in result.sample_counts.values())


def test_train_config_rejects_an_unknown_reading():
    with pytest.raises(ValueError, match="reading of eq. 8 must be one of"):
        train.TrainConfig(epochs=1, lr=0.1, alpha=4.0, alpha_reading="scaled")


# ---------------------------------------------------------------------------------------------------------
# Configuration, device, evaluation, run info
# ---------------------------------------------------------------------------------------------------------


def test_train_config_validates_and_round_trips():
    cfg = get_preset("quick").stage("finetune_gross")
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert TrainConfig(epochs=1, lr=0.1, milestones=[2, 3]).milestones == (2, 3)
    for bad, word in [(dict(milestones=(2, 1)), "milestones"), (dict(milestones=(0,)), "milestones"),
                      (dict(epochs=-1), "epochs"), (dict(lr=0.0), "lr"), (dict(batch_size=0), "batch_size"),
                      (dict(max_batches=0), "max_batches"), (dict(max_grad_norm=0.0), "max_grad_norm"),
                      (dict(alpha=float("nan")), "alpha"), (dict(nesterov=True, momentum=0.0), "nesterov")]:
        with pytest.raises(ValueError, match=word):
            TrainConfig(**{"epochs": 3, "lr": 0.1, **bad})


@pytest.mark.parametrize("cuda,mps,expected", [(True, True, "cuda"), (True, False, "cuda"),
                                                (False, True, "mps"), (False, False, "cpu")])
def test_resolve_device(monkeypatch, cuda, mps, expected):
    """Auto picks CUDA, then MPS, then CPU; an explicit device is kept if available, refused if not."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert resolve_device() == torch.device(expected)
    assert resolve_device("cpu") == torch.device("cpu")
    for name, available in (("cuda", cuda), ("mps", mps)):
        if available:
            assert resolve_device(name) == torch.device(name)
        else:
            with pytest.raises(ValueError, match=name.upper()):
                resolve_device(name)


def test_evaluate_restores_mode(papernet, data):
    net = copy.deepcopy(papernet).train()
    m = evaluate(net, data.val, data.mean, data.std, batch_size=10)
    assert set(m) == {"accuracy", "loss"} and 0 <= m["accuracy"] <= 1 and m["loss"] > 0
    assert net.training
    again = evaluate(net.eval(), data.val, data.mean, data.std)
    assert again["accuracy"] == m["accuracy"] and again["loss"] == pytest.approx(m["loss"], rel=1e-6)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_evaluate_refuses_non_finite_outputs(value, papernet, data):
    net = copy.deepcopy(papernet).train()
    with torch.no_grad():
        net.fc2.weight[0, 0] = value
    with pytest.raises(NonFiniteError, match="NaN or infinite"):
        evaluate(net, data.val, data.mean, data.std)
    assert net.training                                   # the mode is restored after the error
    assert issubclass(NonFiniteError, FloatingPointError)


# ---------------------------------------------------------------------------------------------------------
# Divergence: a non-finite loss or weight stops the run, the last good checkpoint stays
# ---------------------------------------------------------------------------------------------------------


def _diverge_after_first_epoch(net: nn.Module, where: str) -> None:
    """From the second training step on, make the loss (``where="loss"``) or the weights NaN.

    Each epoch is one step (``max_batches=1``). ``"weight"``: fc2's gradient becomes NaN, so the epoch's
    loss (computed before the step) stays finite and only the trained weight is caught.
    """
    steps = Counter()
    if where == "loss":
        def forward_hook(module, args, output):
            if module.training:
                steps["forward"] += 1
                if steps["forward"] > 1:
                    return output * float("nan")
            return output

        net.register_forward_hook(forward_hook)
    else:
        def gradient_hook(grad):
            steps["backward"] += 1
            return grad * float("nan") if steps["backward"] > 1 else grad

        net.fc2.weight.register_hook(gradient_hook)


@pytest.mark.parametrize(("where", "message"), [("loss", "training loss nan"),
                                                 ("weight", "trained parameter")])
def test_divergence_stops_before_the_bad_checkpoint(where, message, data, tmp_path):
    cfg = tiny("full", epochs=3, max_batches=1)
    net = build_papernet(seed=2)
    _diverge_after_first_epoch(net, where)
    with pytest.raises(NonFiniteError, match=f"epoch 2: {message}.*not finite.*checkpoint.pt"):
        train_full(net, data, cfg, tmp_path, progress=False)
    assert not (tmp_path / "done.json").exists()
    state = Checkpointer(tmp_path).load(torch.device("cpu"))
    assert state["epoch"] == 1 and [h["epoch"] for h in state["history"]] == [1]
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point())
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]
    fresh = build_papernet(seed=2)
    fresh.load_state_dict(state["model"])
    assert evaluate(fresh, data.val, data.mean, data.std)["loss"] > 0     # finite: no NonFiniteError
    # once the cause is fixed, the run resumes from the last good epoch
    resumed = train_full(build_papernet(seed=2), data, cfg, tmp_path, progress=False)
    assert resumed.resumed_epochs == 1 and [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert (tmp_path / "done.json").exists()


def test_divergence_in_the_first_epoch_leaves_no_checkpoint(data, tmp_path):
    net = build_papernet(seed=2)
    net.register_forward_hook(lambda module, args, out: out * float("nan") if module.training else out)
    with pytest.raises(NonFiniteError, match="epoch 1:.*no epoch finished"):
        train_full(net, data, tiny("full", epochs=2), tmp_path, progress=False)
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "done.json").exists()


def test_run_info(tmp_path: Path):
    info = environment_info("cpu")
    for key in ("python", "torch", "torchvision", "tensorly", "platform", "cpu_count", "torch_threads",
                "cuda_available", "device", "device_name"):
        assert key in info
    path = write_run_info(tmp_path, {"a": 1, "path": tmp_path})
    write_run_info(tmp_path, {"a": 1})
    stored = json.loads(path.read_text())
    assert stored["params"] == {"a": 1} and len(stored["earlier_sessions"]) == 1
