"""Tests for grosslib.search: exact shared-prefix evaluation, Pareto front and budgeted selection."""
from __future__ import annotations

import copy
import itertools
import random

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from gross_helpers import random_gross
from torch import nn

from grosslib import GroSSConv2d
from grosslib.data import Split, normalize
from grosslib.macs import config_macs, config_params
from grosslib.models import build_papernet, get_config, search_space, set_config
from grosslib.search import evaluate_all, pareto_front, segment_network, select, select_top

MEAN, STD = (0.45, 0.5, 0.55), (0.25, 0.2, 0.3)


def random_images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return images, torch.randint(0, 10, (n,), generator=g)


@pytest.fixture(scope="module")
def net() -> nn.Module:
    return random_gross(build_papernet(seed=1)).eval()


def assert_identical(a: tuple[pd.DataFrame, dict], b: tuple[pd.DataFrame, dict]) -> None:
    (df_a, pred_a), (df_b, pred_b) = a, b
    pd.testing.assert_frame_equal(df_a, df_b, check_exact=True)
    assert list(pred_a) == list(pred_b)
    for config in pred_a:
        assert torch.equal(pred_a[config], pred_b[config]), config


# ---------------------------------------------------------------------------------------------------------
# Exactness of shared-prefix evaluation
# ---------------------------------------------------------------------------------------------------------


def test_shared_prefix_is_exact_on_a_subset(net: nn.Module) -> None:
    configs = random.Random(0).sample(search_space(net), 30)  # arbitrary subset, arbitrary order
    data = random_images(40)
    options = dict(configs=configs, batch_size=16, mean=MEAN, std=STD, progress=False,
                   return_predictions=True)
    shared = evaluate_all(net, data, shared_prefix=True, **options)
    naive = evaluate_all(net, data, shared_prefix=False, **options)
    assert_identical(shared, naive)
    df, predictions = shared
    assert df["config"].tolist() == configs
    assert all(len(p) == 40 for p in predictions.values())
    # the test has teeth: configurations really disagree, on predictions and on the loss
    assert len({tuple(p.tolist()) for p in predictions.values()}) > 10
    assert df["loss"].nunique() == 30


def test_shared_prefix_is_exact_on_all_configurations(net: nn.Module) -> None:
    data = Split(*random_images(3, seed=3))
    options = dict(batch_size=2, mean=MEAN, std=STD, progress=False, return_predictions=True)
    shared = evaluate_all(net, data, **options)
    naive = evaluate_all(net, data, shared_prefix=False, **options)
    assert_identical(shared, naive)
    assert shared[0]["config"].tolist() == search_space(net) and len(shared[0]) == 252


class Doubled(GroSSConv2d):
    """A subclass with its own forward: the shared path must call it rather than inline the bottleneck."""

    def forward(self, x: torch.Tensor, group_size: int | None = None) -> torch.Tensor:
        return 2 * super().forward(x, group_size)


def tiny_net() -> nn.Sequential:
    """A GroSS layer first (empty prefix), two adjacent ones (empty segment), one from a real BTD."""
    torch.manual_seed(0)
    first = GroSSConv2d(4, 8, 3, (1, 2, 4), padding=1)
    second = GroSSConv2d.from_conv(nn.Conv2d(8, 8, 3, stride=2, padding=1), (1, 4, 8), tol=1e-3, max_iter=3)
    third = Doubled(8, 8, 1, (2, 8), bias=False)
    for layer in (first, third):
        with torch.no_grad():
            for p in layer.parameters():
                p.normal_(0.0, 0.5)
    return nn.Sequential(first, nn.ReLU(), second, third, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 5)).eval()


def test_generic_sequential_float_input_is_exact() -> None:
    model = tiny_net()
    prefix, segments = segment_network(model)
    assert prefix == [] and [len(rest) for _, rest in segments] == [1, 0, 3]
    images = torch.randn(20, 4, 9, 11)
    labels = torch.randint(0, 5, (20,))
    options = dict(batch_size=7, progress=False, return_predictions=True)
    shared = evaluate_all(model, (images, labels), **options)
    naive = evaluate_all(model, (images, labels), shared_prefix=False, **options)
    assert_identical(shared, naive)
    df = shared[0]
    assert list(df.columns[2:5]) == ["s_0", "s_2", "s_3"] and len(df) == 3 * 3 * 2
    assert df["loss"].nunique() == len(df)
    # and the numbers are those of a plain forward of the whole set
    for _, row in df.sample(4, random_state=0).iterrows():
        set_config(model, row["config"])
        with torch.no_grad():
            logits = model(images)
        assert row["correct"] == int((logits.argmax(1) == labels).sum())
        assert row["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------------------
# channels_last (the layout the experiments evaluate in)
# ---------------------------------------------------------------------------------------------------------


def normalize_by_hand(images: torch.Tensor) -> torch.Tensor:
    """``(x / 255 - mean) / std`` in float64, then float32: independent of grosslib's normalisation."""
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    return ((images.double() / 255.0 - mean) / std).float().contiguous()


def plain_loop(model: nn.Module, x: torch.Tensor, labels: torch.Tensor,
               configs: list[tuple[int, ...]]) -> tuple[list[int], list[float], list[torch.Tensor], float]:
    """Per configuration: set_config, one forward of the whole (contiguous NCHW) set; plus the smallest
    top-1 / top-2 logit margin, so that asking for identical predictions is well posed."""
    correct, losses, predictions, margin = [], [], [], float("inf")
    original = get_config(model)
    try:
        for config in configs:
            set_config(model, config)
            with torch.no_grad():
                logits = model(x.clone())
            top2 = logits.double().topk(2, dim=1).values
            margin = min(margin, float((top2[:, 0] - top2[:, 1]).min()))
            predictions.append(logits.argmax(1))
            correct.append(int((logits.argmax(1) == labels).sum()))
            losses.append(F.cross_entropy(logits.double(), labels).item())
    finally:
        set_config(model, original)
    return correct, losses, predictions, margin


def record_layouts(model: nn.Module) -> tuple[list[tuple[int, bool]], torch.utils.hooks.RemovableHandle]:
    """Record ``(batch size, input is channels_last and not NCHW-contiguous)`` at the model's first child."""
    seen: list[tuple[int, bool]] = []
    first = next(iter(model.children()))
    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0]
        seen.append((len(x), x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()))
    handle = first.register_forward_pre_hook(hook)
    return seen, handle


@pytest.mark.parametrize("shared_prefix", [True, False], ids=["shared", "naive"])
def test_channels_last_matches_a_plain_loop_and_nchw(net: nn.Module, shared_prefix: bool) -> None:
    configs = random.Random(2).sample(search_space(net), 12) + [(1, 1, 1), (32, 32, 64)]
    images, labels = random_images(37, seed=11)  # 37 = 2 full batches of 16 and a last one of 5
    options = dict(configs=configs, batch_size=16, mean=MEAN, std=STD, progress=False,
                   return_predictions=True, shared_prefix=shared_prefix)
    seen, handle = record_layouts(net)
    try:
        df, predictions = evaluate_all(net, Split(images, labels), channels_last=True, **options)
        layouts_cl = [flag for n, flag in seen if n > 1]  # n == 1: mac_table's pass on one zero image
        seen.clear()
        nchw = evaluate_all(net, Split(images, labels), channels_last=False, **options)
        layouts_nchw = [flag for n, flag in seen if n > 1]
    finally:
        handle.remove()
    # the mode really is applied: every batch the network sees is NHWC (and only with channels_last)
    evals = 3 if shared_prefix else 3 * len(configs)
    assert layouts_cl == [True] * evals and layouts_nchw == [False] * evals

    correct, losses, plain_predictions, margin = plain_loop(net, normalize_by_hand(images), labels, configs)
    assert margin > 1e-4  # no near-ties: last-bit differences between layouts cannot flip a prediction
    assert df["config"].tolist() == configs
    assert df["correct"].tolist() == correct
    np.testing.assert_allclose(df["accuracy"], np.array(correct) / 37, rtol=0, atol=0)
    np.testing.assert_allclose(df["loss"], losses, rtol=1e-5, atol=1e-7)
    for config, expected in zip(configs, plain_predictions):
        assert torch.equal(predictions[config], expected), config
    # and the same as the NCHW evaluation: identical predictions, the same numbers up to rounding
    df_nchw, pred_nchw = nchw
    assert list(pred_nchw) == list(predictions)
    assert all(torch.equal(predictions[c], pred_nchw[c]) for c in configs)
    pd.testing.assert_frame_equal(df.drop(columns="loss"), df_nchw.drop(columns="loss"), check_exact=True)
    np.testing.assert_allclose(df["loss"], df_nchw["loss"], rtol=1e-5, atol=1e-7)
    # the comparison has teeth: the configurations disagree with each other
    assert df["loss"].nunique() == len(configs) and len({tuple(p.tolist()) for p in predictions.values()}) > 3


def test_channels_last_shared_equals_naive(net: nn.Module) -> None:
    """Both paths see the same NHWC batches and run the same ops: bitwise identical results."""
    configs = random.Random(3).sample(search_space(net), 20)
    options = dict(configs=configs, batch_size=8, mean=MEAN, std=STD, progress=False,
                   return_predictions=True, channels_last=True)
    data = random_images(20, seed=12)
    shared = evaluate_all(net, data, **options)
    assert_identical(shared, evaluate_all(net, data, shared_prefix=False, **options))
    assert shared[0]["loss"].nunique() == len(configs)


@pytest.mark.parametrize("shared_prefix", [True, False], ids=["shared", "naive"])
def test_channels_last_generic_sequential_float_input(shared_prefix: bool) -> None:
    """An empty prefix, an empty segment and a GroSS subclass with its own forward, in NHWC."""
    model = tiny_net()
    images = torch.randn(15, 4, 9, 11, generator=torch.Generator().manual_seed(13))
    labels = torch.randint(0, 5, (15,), generator=torch.Generator().manual_seed(14))
    configs = search_space(model)
    options = dict(batch_size=6, progress=False, return_predictions=True, shared_prefix=shared_prefix)
    df, predictions = evaluate_all(model, (images, labels), channels_last=True, **options)
    df_nchw, pred_nchw = evaluate_all(model, (images, labels), channels_last=False, **options)
    correct, losses, plain_predictions, margin = plain_loop(model, images.contiguous(), labels, configs)
    assert margin > 1e-4
    assert df["correct"].tolist() == correct == df_nchw["correct"].tolist()
    np.testing.assert_allclose(df["loss"], losses, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(df["loss"], df_nchw["loss"], rtol=1e-5, atol=1e-7)
    for config, expected in zip(configs, plain_predictions):
        assert torch.equal(predictions[config], expected) and torch.equal(pred_nchw[config], expected), config
    assert df["loss"].nunique() == len(configs)


# ---------------------------------------------------------------------------------------------------------
# The results table and the sharing itself
# ---------------------------------------------------------------------------------------------------------


def test_dataframe_columns_and_values(net: nn.Module) -> None:
    configs = [(1, 1, 1), (2, 32, 64), (32, 32, 32), (4, 4, 4)]
    images, labels = random_images(10, seed=5)
    df = evaluate_all(net, Split(images, labels), configs, batch_size=10, mean=MEAN, std=STD, progress=False)
    assert list(df.columns) == ["config", "name", "s_conv2", "s_conv3", "s_conv4", "macs", "params",
                                "accuracy", "loss", "correct"]
    assert df["name"].tolist() == ["1-1-1", "2-32-64", "32-32-32", "4-4-4"]
    assert df[["s_conv2", "s_conv3", "s_conv4"]].to_numpy().tolist() == [list(c) for c in configs]
    assert df["macs"].tolist() == [config_macs(net, c) for c in configs]
    assert df["params"].tolist() == [config_params(net, c) for c in configs]
    assert df.attrs["num_images"] == 10 and df["correct"].dtype == np.int64
    assert np.array_equal(df["accuracy"], df["correct"] / 10)
    x = normalize(images, MEAN, STD)
    for config, row in zip(configs, df.itertuples()):
        set_config(net, config)
        with torch.no_grad():
            logits = net(x)
        assert row.correct == int((logits.argmax(1) == labels).sum())
        assert row.loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)


def test_each_segment_runs_once_per_prefix_and_batch(net: nn.Module) -> None:
    configs = [(1, 1, 1), (1, 1, 2), (1, 2, 1), (2, 1, 1), (1, 2, 64)]
    calls = {name: 0 for name in ("conv1", "relu2", "relu3", "fc2")}
    handles = [getattr(net, name).register_forward_hook(
        lambda *_, name=name: calls.__setitem__(name, calls[name] + 1)) for name in calls]
    try:
        data = random_images(10)
        evaluate_all(net, data, configs, batch_size=5, mean=MEAN, std=STD, progress=False)
        # 2 batches: the prefix once each, segment 1 per distinct s1 (2), segment 2 per (s1, s2) (3);
        # plus one call each for the MAC count (mac_table's pass on one zero image)
        assert calls == {"conv1": 2 + 1, "relu2": 4 + 1, "relu3": 6 + 1, "fc2": 10 + 1}
        calls.update(dict.fromkeys(calls, 0))
        evaluate_all(net, data, configs, batch_size=5, mean=MEAN, std=STD, progress=False,
                     shared_prefix=False)
        assert calls == dict.fromkeys(calls, 10 + 1)
    finally:
        for handle in handles:
            handle.remove()


def test_float_input_and_split_input_agree_with_uint8(net: nn.Module) -> None:
    images, labels = random_images(12, seed=7)
    configs = [(1, 2, 4), (16, 8, 2)]
    a = evaluate_all(net, Split(images, labels), configs, batch_size=5, mean=MEAN, std=STD, progress=False)
    b = evaluate_all(net, (normalize(images, MEAN, STD), labels), configs, batch_size=5, progress=False)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_state_is_restored(net: nn.Module) -> None:
    set_config(net, (8, 16, 32))
    net.train()
    evaluate_all(net, random_images(3), [(1, 1, 1), (2, 2, 2)], mean=MEAN, std=STD, progress=False)
    evaluate_all(net, random_images(3), [(1, 1, 1)], mean=MEAN, std=STD, progress=False, shared_prefix=False)
    assert get_config(net) == (8, 16, 32)
    assert all(m.training for m in net.modules())
    net.eval()


def test_eval_mode_is_used(net: nn.Module) -> None:
    # dropout would make train-mode results random; eval mode gives the same numbers every time
    net.train()
    data = random_images(8, seed=2)
    runs = [evaluate_all(net, data, [(4, 4, 4)], mean=MEAN, std=STD, progress=False) for _ in range(2)]
    net.eval()
    pd.testing.assert_frame_equal(*runs, check_exact=True)


def test_invalid_arguments(net: nn.Module) -> None:
    data = random_images(4)
    with pytest.raises(ValueError, match="mean and std"):
        evaluate_all(net, data, [(1, 1, 1)], progress=False)
    for configs in ([(1, 1)], [(1, 1, 3)], [(1, 1, 1), (1, 1, 1)], []):
        with pytest.raises(ValueError):
            evaluate_all(net, data, configs, mean=MEAN, std=STD, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_all(net, data, [(1, 1, 1)], batch_size=0, mean=MEAN, std=STD, progress=False)
    with pytest.raises(ValueError, match="no images"):
        evaluate_all(net, (data[0][:0], data[1][:0]), [(1, 1, 1)], mean=MEAN, std=STD, progress=False)
    with pytest.raises(TypeError):
        evaluate_all(net, data[0], [(1, 1, 1)], mean=MEAN, std=STD, progress=False)


def test_nested_gross_layers_need_naive_evaluation() -> None:
    inner = tiny_net()
    model = nn.Sequential(nn.Sequential(*list(inner)[:2]), *list(inner)[2:]).eval()
    data = (torch.randn(5, 4, 8, 8), torch.randint(0, 5, (5,)))
    with pytest.raises(ValueError, match="shared_prefix=False"):
        evaluate_all(model, data, shared_prefix=True, progress=False)
    df = evaluate_all(model, data, shared_prefix=False, progress=False)
    assert len(df) == 18 and df.attrs["evaluation"] == "plain"
    auto = evaluate_all(model, data, progress=False)  # automatic: falls back to the plain loop
    assert auto.attrs["evaluation"] == "plain"
    pd.testing.assert_frame_equal(auto, df, check_exact=True)
    batches = [(data[0][:3], data[1][:3]), (data[0][3:], data[1][3:])]  # an iterable of batches
    from_batches = evaluate_all(model, batches, progress=False)
    assert from_batches.attrs["num_images"] == 5
    pd.testing.assert_frame_equal(from_batches, df, check_exact=False, atol=1e-6)
    assert evaluate_all(inner.eval(), data, progress=False).attrs["evaluation"] == "shared_prefix"


def test_progress_bar(net: nn.Module, capsys: pytest.CaptureFixture[str]) -> None:
    data = random_images(4)
    evaluate_all(net, data, [(1, 1, 1), (2, 2, 2)], batch_size=2, mean=MEAN, std=STD, progress=False)
    assert capsys.readouterr().err == ""
    evaluate_all(net, data, [(1, 1, 1), (2, 2, 2)], batch_size=2, mean=MEAN, std=STD, progress=True)
    err = capsys.readouterr().err
    assert "2 configs x 2 batches" in err and "4/4" in err


def test_explicit_device(net: nn.Module) -> None:
    data = random_images(6)
    a = evaluate_all(net, data, [(2, 4, 8)], mean=MEAN, std=STD, progress=False, device="cpu")
    b = evaluate_all(net, data, [(2, 4, 8)], mean=MEAN, std=STD, progress=False)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_shared_prefix_is_exact(net: nn.Module) -> None:
    configs = random.Random(1).sample(search_space(net), 20)
    data = random_images(50)
    options = dict(configs=configs, batch_size=16, mean=MEAN, std=STD, progress=False,
                   return_predictions=True, device="cuda")
    shared = evaluate_all(net, data, **options)
    naive = evaluate_all(net, data, shared_prefix=False, **options)
    assert_identical(shared, naive)
    cpu = evaluate_all(net, data, configs, batch_size=16, mean=MEAN, std=STD, progress=False)
    assert (shared[0]["correct"] - cpu["correct"]).abs().max() <= 2  # same numbers up to rounding
    assert next(net.parameters()).device.type == "cpu"  # the original network stays on the CPU


# ---------------------------------------------------------------------------------------------------------
# Pareto front and selection
# ---------------------------------------------------------------------------------------------------------


def brute_force_front(df: pd.DataFrame, cost: str, score: str) -> set[int]:
    keep = set()
    for i, a in df.iterrows():
        dominated = any(b[cost] <= a[cost] and b[score] >= a[score]
                        and (b[cost] < a[cost] or b[score] > a[score]) for j, b in df.iterrows() if j != i)
        if not dominated:
            keep.add(i)
    return keep


@pytest.mark.parametrize("seed", range(6))
def test_pareto_front_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    levels = int(rng.integers(2, 12))  # few distinct values: many ties in cost, score and both
    df = pd.DataFrame({"macs": rng.integers(0, levels, n) * 1000,
                       "accuracy": rng.integers(0, levels, n) / levels, "loss": rng.random(n)})
    front = pareto_front(df)
    assert set(front.index) == brute_force_front(df, "macs", "accuracy")
    assert front["macs"].is_monotonic_increasing
    assert front["accuracy"].is_monotonic_increasing  # a front: more cost buys strictly more accuracy
    other = pareto_front(df.assign(neg_loss=-df["loss"]), cost="macs", score="neg_loss")
    assert set(other.index) == brute_force_front(df.assign(neg_loss=-df["loss"]), "macs", "neg_loss")


def test_pareto_front_examples() -> None:
    df = pd.DataFrame({"macs": [1, 1, 2, 3, 3, 4], "accuracy": [0.5, 0.6, 0.6, 0.7, 0.7, 0.65]})
    assert pareto_front(df).index.tolist() == [1, 3, 4]  # equal rows are both kept
    with pytest.raises(ValueError, match="no column"):
        pareto_front(df, score="top1")
    with pytest.raises(ValueError, match="NaN"):
        pareto_front(df.assign(accuracy=[0.1, np.nan, 0.2, 0.3, 0.4, 0.5]))
    assert pareto_front(df.iloc[:0]).empty


def results_table() -> pd.DataFrame:
    configs = list(itertools.product((1, 4, 16), (1, 4, 16)))
    macs = [100 * a + 10 * b for a, b in configs]
    accuracy = [0.50, 0.55, 0.60, 0.70, 0.70, 0.62, 0.80, 0.80, 0.81]
    return pd.DataFrame({"config": configs, "name": [f"{a}-{b}" for a, b in configs], "macs": macs,
                         "accuracy": accuracy})


def test_select_under_budget() -> None:
    df = results_table()
    best = select(df, budget_config=(4, 4))  # 440 MACs: (1, *) and (4, 1), (4, 4) fit
    assert isinstance(best, pd.Series)
    assert best["config"] == (4, 1)  # ties with (4, 4) at 0.70: fewer MACs wins
    assert select(df, max_macs=1609)["config"] == (4, 1)
    assert select(df, max_macs=1610)["config"] == (16, 1)  # the budget is inclusive
    assert select(df, max_macs=1700)["config"] == (16, 1)  # tie with (16, 4) at 0.80: fewer MACs
    assert select(df, max_macs=10**6)["config"] == (16, 16)
    assert select(df, max_macs=10**6, score="macs")["config"] == (16, 16)


def test_select_ties_break_lexicographically() -> None:
    df = pd.DataFrame({"config": [(2, 1), (1, 2), (1, 3)], "macs": [5, 5, 4], "accuracy": [0.9, 0.9, 0.8]})
    assert select(df, max_macs=5)["config"] == (1, 2)
    top = select_top(df, max_macs=5, k=5)
    assert top["config"].tolist() == [(1, 2), (2, 1), (1, 3)]  # fewer than k fit: all of them


def test_select_top_two() -> None:
    df = results_table()
    top = select_top(df, budget_config=(4, 16))
    assert isinstance(top, pd.DataFrame) and top["config"].tolist() == [(4, 1), (4, 4)]
    assert select_top(df, max_macs=10**6, k=3)["config"].tolist() == [(16, 16), (16, 1), (16, 4)]


def test_select_errors() -> None:
    df = results_table()
    with pytest.raises(ValueError, match="exactly one"):
        select(df)
    with pytest.raises(ValueError, match="exactly one"):
        select(df, max_macs=500, budget_config=(4, 4))
    with pytest.raises(ValueError, match="not in the results"):
        select(df, budget_config=(2, 2))
    with pytest.raises(ValueError, match="no configuration fits"):
        select(df, max_macs=10)
    with pytest.raises(ValueError, match="k must be"):
        select_top(df, max_macs=1000, k=0)


@pytest.mark.parametrize("shared", [True, False])
def test_nan_outputs_are_refused_not_scored(net: nn.Module, shared: bool) -> None:
    """A configuration whose outputs are NaN raises, naming it, instead of a row with accuracy 0."""
    broken = copy.deepcopy(net)
    layer = dict(broken.named_modules())["conv3"]
    with torch.no_grad():
        layer.r_terms[-1].fill_(float("nan"))                 # only the largest size of conv3 is affected
    images, labels = random_images(40)
    configs = [(1, 1, 1), (1, max(layer.group_sizes), 1)]
    with pytest.raises(FloatingPointError, match=r"1 configuration\(s\) \(1-32-1\)"):
        evaluate_all(broken, (images, labels), configs, shared_prefix=shared, batch_size=16, progress=False,
                     mean=(0.5,) * 3, std=(0.25,) * 3)
    table = evaluate_all(broken, (images, labels), configs[:1], shared_prefix=shared, batch_size=16,
                         progress=False, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert np.isfinite(table["loss"]).all()                   # the unaffected configuration still scores
