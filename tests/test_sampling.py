"""Tests for grosslib.GroupSizeSampler: p(s_i) = exp(-alpha i) / sum_j exp(-alpha j), i = 1 smallest
(the literal reading of eq. 8), or exp(-alpha i / N) (the normalized reading)."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from reference import temperature_probs_ref

from grosslib import GroupSizeSampler

SIZES = [(1, 2, 4, 8, 16, 32), (1, 2, 4), (4, 1, 2), (3,), (1, 2, 4, 8, 16, 32, 64)]


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 4.0, 8.0])
def test_probs_formula(sizes, alpha):
    sampler = GroupSizeSampler(sizes, alpha=alpha)
    assert sampler.group_sizes == tuple(sorted(sizes))
    expected = temperature_probs_ref(len(sizes), alpha)
    assert sampler.probs.shape == (len(sizes),)
    assert sampler.probs.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-300)
    assert float(sampler.probs.sum()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("alpha", [0.0, 0.5, 4.0, 8.0])
def test_normalized_reading_formula(sizes, alpha):
    sampler = GroupSizeSampler(sizes, alpha=alpha, reading="normalized")
    n = len(sizes)
    expected = [math.exp(-alpha * i / n) for i in range(1, n + 1)]
    expected = [p / sum(expected) for p in expected]
    assert sampler.reading == "normalized"
    assert sampler.probs.tolist() == pytest.approx(expected, rel=1e-12)
    assert sampler.probs.tolist() == pytest.approx(temperature_probs_ref(n, alpha, "normalized"), rel=1e-12)


def test_readings_agree_at_alpha_zero_and_differ_otherwise():
    sizes = (1, 2, 4, 8, 16, 32, 64)
    literal = GroupSizeSampler(sizes, alpha=0.0).probs
    assert torch.equal(literal, GroupSizeSampler(sizes, alpha=0.0, reading="normalized").probs)
    # literal: alpha 4 and 8 both put > 98% on the smallest size; normalized keeps them apart
    lit4, lit8 = (GroupSizeSampler(sizes, alpha=a).probs for a in (4.0, 8.0))
    nor4, nor8 = (GroupSizeSampler(sizes, alpha=a, reading="normalized").probs for a in (4.0, 8.0))
    assert float(lit4[0]) > 0.98 and float(lit8[0]) > 0.999
    assert float(nor4[0]) < 0.5 and float(nor8[0]) > float(nor4[0]) + 0.2
    assert float(nor4[-1]) > 1e-3


def test_bad_reading_is_one_clear_line():
    with pytest.raises(ValueError, match="reading of eq. 8 must be one of"):
        GroupSizeSampler((1, 2), alpha=4.0, reading="scaled")


def test_default_alpha_is_4():
    sampler = GroupSizeSampler([1, 2, 4])
    assert sampler.alpha == 4.0
    assert sampler.probs.tolist() == pytest.approx(temperature_probs_ref(3, 4.0), rel=1e-12)


@pytest.mark.parametrize("n", [1, 3, 7])
def test_alpha_zero_is_uniform(n):
    probs = GroupSizeSampler(list(range(1, n + 1)), alpha=0.0).probs
    assert probs.tolist() == pytest.approx([1.0 / n] * n, rel=1e-12)


def test_larger_alpha_favours_small_sizes():
    probs = GroupSizeSampler([1, 2, 4, 8], alpha=4.0).probs.tolist()
    assert probs == sorted(probs, reverse=True)
    assert probs[0] / probs[1] == pytest.approx(math.exp(4.0), rel=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("use_single", [False, True])
def test_sample_frequencies_within_5_sigma(alpha, use_single):
    sizes = (1, 2, 4, 8, 16, 32)
    n = 20_000 if not use_single else 4_000
    sampler = GroupSizeSampler(sizes, alpha=alpha, generator=123)
    draws = [sampler.sample() for _ in range(n)] if use_single else sampler.sample_many(n)
    assert len(draws) == n
    counts = Counter(draws)
    assert set(counts) <= set(sizes)
    for size, p in zip(sizes, temperature_probs_ref(len(sizes), alpha)):
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(counts.get(size, 0) - n * p) <= 5 * sigma + 1e-9, (size, counts.get(size, 0), n * p)


def test_alpha_4_mostly_smallest():
    draws = GroupSizeSampler((1, 2, 4), alpha=4.0, generator=0).sample_many(20_000)
    p = temperature_probs_ref(3, 4.0)
    count = draws.count(1)
    assert abs(count - 20_000 * p[0]) <= 5 * math.sqrt(20_000 * p[0] * (1 - p[0]))


def test_sample_returns_python_int_from_sizes():
    sampler = GroupSizeSampler((2, 8, 4), alpha=0.0, generator=1)
    for _ in range(20):
        value = sampler.sample()
        assert type(value) is int and value in (2, 4, 8)
    assert all(type(v) is int for v in sampler.sample_many(10))


@pytest.mark.parametrize("seed", [0, 7, 2024])
def test_reproducible_with_same_seed(seed):
    a = GroupSizeSampler((1, 2, 4, 8), alpha=0.5, generator=seed)
    b = GroupSizeSampler((1, 2, 4, 8), alpha=0.5, generator=seed)
    assert a.sample_many(200) == b.sample_many(200)
    assert [a.sample() for _ in range(50)] == [b.sample() for _ in range(50)]
    c = GroupSizeSampler((1, 2, 4, 8), alpha=0.5, generator=torch.Generator().manual_seed(seed))
    d = GroupSizeSampler((1, 2, 4, 8), alpha=0.5, generator=torch.Generator().manual_seed(seed))
    assert c.sample_many(200) == d.sample_many(200)


def test_differs_with_different_seeds():
    a = GroupSizeSampler((1, 2, 4, 8), alpha=0.0, generator=0).sample_many(200)
    b = GroupSizeSampler((1, 2, 4, 8), alpha=0.0, generator=1).sample_many(200)
    assert a != b


def test_does_not_touch_global_rng():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    GroupSizeSampler((1, 2, 4), alpha=0.0, generator=3).sample_many(100)
    assert torch.equal(torch.rand(3), expected)


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="empty"):
        GroupSizeSampler([])
    with pytest.raises(ValueError, match="distinct"):
        GroupSizeSampler([1, 2, 2])
    for alpha in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ValueError, match="alpha must be finite"):
            GroupSizeSampler([1, 2], alpha=alpha)
