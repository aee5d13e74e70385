"""Tests for grosslib.Bottleneck: 1x1 -> grouped kxk -> 1x1 equals the dense conv with W_hat (Table 1)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from reference import (
    bottleneck_weights_ref,
    btd_reconstruct_ref,
    conv_like,
    grouped_conv_ref,
    make_conv,
    randn,
    sequential_ref,
)
from torch import nn

from grosslib import Bottleneck, btd
from grosslib.bottleneck import orthonormalize_blocks

FAST = dict(tol=1e-8, max_iter=15)

# (u, t, s, kernel, stride, padding, dilation, bias)
GEOMETRIES = [
    (8, 8, 2, (3, 3), 1, 1, 1, True),
    (8, 8, 2, (3, 3), 2, 1, 1, True),
    (8, 8, 4, (3, 3), 2, 0, 1, False),
    (12, 8, 4, (3, 3), 1, "same", 1, True),
    (12, 8, 2, (3, 3), 1, "same", 2, False),
    (8, 12, 3, (3, 3), 1, 2, 2, True),
    (8, 8, 2, (3, 1), 1, (1, 0), 1, True),
    (8, 8, 4, (1, 3), 2, (0, 1), 1, False),
    (16, 8, 2, (5, 3), 1, (2, 1), 1, True),
    (16, 8, 8, (5, 3), (2, 1), 0, (1, 2), True),
    (4, 4, 1, (3, 3), 1, 0, 1, True),
    (8, 16, 8, (1, 1), 1, 0, 1, True),
    (16, 16, 16, (3, 3), 1, 1, 1, True),
]


@pytest.mark.parametrize("u,t,s,kernel,stride,padding,dilation,bias", GEOMETRIES)
@pytest.mark.parametrize("seed", [0, 1])
def test_bottleneck_equals_dense_conv_with_reconstruction_float64(u, t, s, kernel, stride, padding, dilation,
                                                                    bias, seed):
    conv = make_conv(u, t, kernel, stride, padding, dilation, bias, seed)
    result = btd(conv.weight, s, **FAST)
    module = Bottleneck(conv, result)
    w_hat = btd_reconstruct_ref(result.cores, result.out_factors, result.in_factors)
    x = randn(2, t, 9, 8, seed=seed + 7)
    expected = conv_like(conv, x, w_hat, conv.bias)
    got = module(x)
    assert got.shape == conv(x).shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
    # also the same three weights run through the dense block-diagonal reference
    weights = [m.weight for m in module]
    torch.testing.assert_close(sequential_ref(x, *weights, conv.bias, conv), expected, rtol=0, atol=1e-10)
    if result.error > 1e-6:  # the bottleneck is not the original conv: the reference is not trivial
        assert not torch.allclose(got, conv(x), atol=1e-6)


@pytest.mark.parametrize("u,t,s,kernel,stride,padding,dilation,bias", GEOMETRIES[:8])
def test_bottleneck_float32(u, t, s, kernel, stride, padding, dilation, bias):
    conv = make_conv(u, t, kernel, stride, padding, dilation, bias, seed=3, dtype=torch.float32)
    result = btd(conv.weight, s, **FAST)
    module = Bottleneck(conv, result)
    assert all(p.dtype == torch.float32 for p in module.parameters())
    x = randn(2, t, 9, 8, seed=4, dtype=torch.float32)
    got = module(x)
    assert got.dtype == torch.float32
    conv64 = make_conv(u, t, kernel, stride, padding, dilation, bias, seed=3)
    w_hat = btd_reconstruct_ref(result.cores, result.out_factors, result.in_factors)
    expected = conv_like(conv64, x.double(), w_hat, conv64.bias)
    scale = float(expected.detach().abs().max())
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("padding_mode", ["reflect", "circular", "replicate"])
def test_bottleneck_padding_modes(padding_mode):
    conv = make_conv(8, 8, (3, 3), 1, 1, 1, True, seed=5, padding_mode=padding_mode)
    result = btd(conv.weight, 2, **FAST)
    module = Bottleneck(conv, result)
    assert module[1].padding_mode == padding_mode
    x = randn(1, 8, 6, 7, seed=6)
    expected = conv_like(conv, x, result.reconstruct(), conv.bias)
    torch.testing.assert_close(module(x), expected, rtol=0, atol=1e-10)


def test_bottleneck_structure():
    u, t, s = 12, 8, 2
    conv = make_conv(u, t, (3, 1), 2, (1, 0), (2, 1), True, seed=0)
    result = btd(conv.weight, s, **FAST)
    module = Bottleneck(conv, result)
    assert isinstance(module, nn.Sequential) and len(module) == 3
    first, grouped, last = module
    assert all(type(m) is nn.Conv2d for m in module)
    assert (first.in_channels, first.out_channels, first.kernel_size, first.groups) == (t, t, (1, 1), 1)
    assert first.stride == (1, 1) and first.padding == (0, 0) and first.bias is None
    assert (grouped.in_channels, grouped.out_channels, grouped.groups) == (t, t, t // s)
    assert grouped.kernel_size == (3, 1) and grouped.stride == (2, 2)
    assert grouped.padding == (1, 0) and grouped.dilation == (2, 1) and grouped.bias is None
    assert (last.in_channels, last.out_channels, last.kernel_size, last.groups) == (t, u, (1, 1), 1)
    assert torch.equal(last.bias, conv.bias)
    assert module.group_size == s
    balanced = orthonormalize_blocks(result)
    for param, expected in zip((first.weight, grouped.weight, last.weight), balanced.bottleneck_weights()):
        assert torch.equal(param, expected.to(param.dtype))


@pytest.mark.parametrize("u, t, s", [(8, 8, 2), (16, 8, 4), (8, 16, 4), (12, 12, 3), (4, 8, 8)])
def test_orthonormalize_blocks_keeps_the_approximation(u, t, s):
    gen = torch.Generator().manual_seed(u * 100 + t * 10 + s)
    # a BTD with deliberately badly scaled factors
    cores = torch.randn(t // s, s, s, 3, 3, generator=gen, dtype=torch.float64)
    out_f = 50.0 * torch.randn(t // s, u, s, generator=gen, dtype=torch.float64)
    in_f = 0.02 * torch.randn(t // s, t, s, generator=gen, dtype=torch.float64)
    from grosslib.btd import BTDResult
    raw = BTDResult(cores, out_f, in_f, [0.1], 0.2, True)
    balanced = orthonormalize_blocks(raw)
    assert torch.allclose(balanced.reconstruct(), raw.reconstruct(), rtol=1e-10, atol=1e-10)
    eye = torch.eye(s, dtype=torch.float64)
    gram_in = balanced.in_factors.transpose(1, 2) @ balanced.in_factors
    assert torch.allclose(gram_in, eye.expand_as(gram_in), atol=1e-12)
    gram_out = balanced.out_factors.transpose(1, 2) @ balanced.out_factors
    rank = min(u, s)
    assert torch.allclose(gram_out[:, :rank, :rank], torch.eye(rank, dtype=torch.float64).expand(
        gram_out.shape[0], rank, rank), atol=1e-12)
    assert balanced.errors == raw.errors and balanced.group_size == s


def test_bottleneck_from_exact_btd_equals_original_conv():
    conv = make_conv(16, 8, (3, 3), 1, 1, 1, True, seed=2)
    result = btd(conv.weight, 8)  # one block, u >= t: output rank 8 truncation of a 16 x 72 unfolding
    with torch.no_grad():
        conv.weight.copy_(result.reconstruct())  # now exactly a Tucker-2 of ranks (8, 8)
    exact = btd(conv.weight, 8)
    x = randn(2, 8, 5, 5, seed=3)
    torch.testing.assert_close(Bottleneck(conv, exact)(x), conv(x), rtol=0, atol=1e-10)


def test_bottleneck_gradients_flow():
    conv = make_conv(8, 8, (3, 3), 1, 1, 1, True, seed=0)
    module = Bottleneck(conv, btd(conv.weight, 2, **FAST))
    module(randn(1, 8, 5, 5, seed=1)).square().sum().backward()
    for param in module.parameters():
        assert param.grad is not None and float(param.grad.abs().sum()) > 0


def test_bottleneck_rejects_mismatched_result():
    conv = make_conv(8, 8, (3, 3), 1, 1, 1, True, seed=0)
    other = btd(randn(8, 12, 3, 3, seed=0), 2, **FAST)
    with pytest.raises(ValueError, match="does not match"):
        Bottleneck(conv, other)
    other_kernel = btd(randn(8, 8, 1, 3, seed=0), 2, **FAST)
    with pytest.raises(ValueError, match="does not match"):
        Bottleneck(conv, other_kernel)


def test_bottleneck_rejects_bad_convs():
    result = btd(randn(8, 8, 3, 3, seed=0), 2, **FAST)
    with pytest.raises(ValueError, match="nn.Conv2d"):
        Bottleneck(nn.Linear(8, 8), result)
    with pytest.raises(ValueError, match="groups=1"):
        Bottleneck(nn.Conv2d(8, 8, 3, groups=2, dtype=torch.float64), result)
    bad = make_conv(8, 8, (3, 3), 1, 1, 1, True, seed=0)
    with torch.no_grad():
        bad.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        Bottleneck(bad, result)
    bad_bias = make_conv(8, 8, (3, 3), 1, 1, 1, True, seed=0)
    with torch.no_grad():
        bad_bias.bias[3] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        Bottleneck(bad_bias, result)


@pytest.mark.parametrize("u,t,s,kernel,stride,padding,dilation,bias", GEOMETRIES[1:10:2])
def test_bottleneck_matches_block_diagonal_reference(u, t, s, kernel, stride, padding, dilation, bias):
    """The middle conv really is a grouped conv: it equals the dense conv with the block-diagonal weight
    built by loops from the BTD's cores (tests/reference.py), and so does the whole bottleneck."""
    conv = make_conv(u, t, kernel, stride, padding, dilation, bias, seed=9)
    result = orthonormalize_blocks(btd(conv.weight, s, **FAST))
    first, grouped, last = bottleneck_weights_ref(result.cores, result.out_factors, result.in_factors)
    module = Bottleneck(conv, result)
    for param, expected in zip((m.weight for m in module), (first, grouped, last)):
        torch.testing.assert_close(param.detach(), expected, rtol=0, atol=1e-12)
    x = randn(2, t, 9, 7, seed=10)
    y = F.conv2d(x, first)
    with torch.no_grad():
        expected = grouped_conv_ref(y, grouped, t // s, stride=conv.stride, padding=conv.padding,
                                    dilation=conv.dilation)
        torch.testing.assert_close(module[1](module[0](x)), expected, rtol=0, atol=1e-10)
        full = sequential_ref(x, first, grouped, last, conv.bias, conv)
        torch.testing.assert_close(module(x), full, rtol=0, atol=1e-10)
    if s < t:  # the block structure matters: the weight tiled over every input block (no groups) differs
        dense_ungrouped = F.conv2d(y, grouped.repeat(1, t // s, 1, 1), stride=conv.stride,
                                   padding=conv.padding, dilation=conv.dilation)
        assert not torch.allclose(dense_ungrouped, expected, atol=1e-6)
