"""Tests for grosslib.psi: the group-size expansion (method.md, 'Psi')."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from reference import grouped_conv_ref, psi_adjoint_loop, psi_loop, randn

from grosslib import psi

# (t, g, h): channels, from group size, to group size
EXPANSIONS = [(4, 1, 2), (4, 1, 4), (4, 2, 4), (8, 2, 8), (8, 1, 8), (12, 3, 6), (12, 2, 6), (12, 4, 12),
              (16, 4, 8), (16, 2, 16), (6, 1, 3)]
KERNELS = [(3, 3), (1, 1), (3, 1), (1, 3)]


@pytest.mark.parametrize("t,g,h", EXPANSIONS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_psi_matches_loop_reference(t, g, h, kernel):
    weight = randn(t, g, *kernel, seed=t * 100 + g * 10 + h)
    got = psi(weight, g, h)
    assert got.shape == (t, h, *kernel)
    assert torch.equal(got, psi_loop(weight, g, h))


@pytest.mark.parametrize("t,g,h", EXPANSIONS)
@pytest.mark.parametrize("seed", [0, 1])
def test_psi_conv_equivalence(t, g, h, seed):
    weight = randn(t, g, 3, 3, seed=seed)
    x = randn(2, t, 7, 6, seed=seed + 50)
    small = F.conv2d(x, weight, padding=1, groups=t // g)
    large = F.conv2d(x, psi(weight, g, h), padding=1, groups=t // h)
    torch.testing.assert_close(large, small, rtol=0, atol=1e-12)
    # and against the dense block-diagonal reference of the original grouped conv
    torch.testing.assert_close(small, grouped_conv_ref(x, weight, t // g, padding=1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("t,g,h,k", [(8, 1, 2, 8), (8, 1, 4, 8), (8, 2, 4, 8), (12, 1, 3, 6), (12, 3, 6, 12),
                                     (16, 1, 4, 16), (16, 2, 4, 8)])
def test_psi_composition_is_bitwise(t, g, h, k):
    weight = randn(t, g, 3, 2, seed=t + g + h + k)
    assert torch.equal(psi(psi(weight, g, h), h, k), psi(weight, g, k))


def test_psi_identity_when_sizes_equal():
    weight = randn(8, 4, 3, 3, seed=3)
    assert torch.equal(psi(weight, 4, 4), weight)


@pytest.mark.parametrize("t,g,h", [(8, 2, 4), (12, 3, 12), (6, 1, 3), (16, 4, 16)])
def test_psi_keeps_entries_and_zeros_elsewhere(t, g, h):
    weight = randn(t, g, 3, 3, seed=7) + 5.0  # no accidental zeros
    out = psi(weight, g, h)
    assert torch.count_nonzero(out) == weight.numel()
    assert torch.allclose(out.sum(dim=1), weight.sum(dim=1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("t,g,h", [(8, 2, 4), (12, 3, 6), (16, 1, 16), (6, 2, 6)])
def test_psi_gradient_is_inverse_gather(t, g, h):
    weight = randn(t, g, 3, 2, seed=11).requires_grad_(True)
    mask = randn(t, h, 3, 2, seed=12)
    (psi(weight, g, h) * mask).sum().backward()
    assert weight.grad is not None
    assert torch.equal(weight.grad, psi_adjoint_loop(mask, g, h))


def test_psi_gradient_through_conv():
    t, g, h = 8, 2, 8
    weight = randn(t, g, 3, 3, seed=1).requires_grad_(True)
    x = randn(1, t, 5, 5, seed=2)
    F.conv2d(x, psi(weight, g, h), padding=1, groups=t // h).square().sum().backward()
    grad_expanded = weight.grad.clone()
    weight.grad = None
    F.conv2d(x, weight, padding=1, groups=t // g).square().sum().backward()
    torch.testing.assert_close(grad_expanded, weight.grad, rtol=0, atol=1e-10)


def test_psi_float32_and_dtype_preserved():
    weight = randn(8, 2, 3, 3, seed=4, dtype=torch.float32)
    out = psi(weight, 2, 8)
    assert out.dtype == torch.float32
    assert torch.equal(out, psi_loop(weight, 2, 8))


def test_psi_to_smaller_size_raises():
    with pytest.raises(ValueError, match="smaller"):
        psi(randn(8, 4, 3, 3, seed=0), 4, 2)


def test_psi_group_size_not_dividing_channels_raises():
    with pytest.raises(ValueError, match="does not divide the 12 channels"):
        psi(randn(12, 5, 3, 3, seed=0), 5, 10)
    with pytest.raises(ValueError, match="does not divide the 12 channels"):
        psi(randn(12, 2, 3, 3, seed=0), 2, 8)


def test_psi_from_size_not_dividing_to_size_raises():
    with pytest.raises(ValueError, match="does not divide to_group_size"):
        psi(randn(12, 2, 3, 3, seed=0), 2, 3)


def test_psi_wrong_width_or_rank_raises():
    with pytest.raises(ValueError, match="from_group_size"):
        psi(randn(8, 2, 3, 3, seed=0), 4, 8)
    with pytest.raises(ValueError, match="4-d"):
        psi(randn(8, 2, 3, seed=0), 2, 8)


@pytest.mark.parametrize("bad", [0, -2, 2.0, True])
def test_psi_non_positive_integer_size_raises(bad):
    with pytest.raises(ValueError, match="positive integer"):
        psi(randn(8, 2, 3, 3, seed=0), 2, bad)
