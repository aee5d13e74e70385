"""Tests for grosslib.GroSSConv2d: the series of eqs. 6-7, export, gradient reach, costs, checkpoints."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from reference import (
    bottleneck_weights_ref,
    conv_like,
    conv_macs_ref,
    make_conv,
    psi_adjoint_loop,
    randn,
    sequential_ref,
    series_terms_ref,
    series_weights_ref,
)
from torch import nn

from grosslib import Bottleneck, GroSSConv2d, btd_series, default_group_sizes
from grosslib.bottleneck import orthonormalize_blocks
from grosslib.psi import psi

FAST = dict(tol=1e-8, max_iter=8)

# (u, t, sizes, kernel, stride, padding, dilation, bias)
LAYERS = [
    (8, 8, (1, 2, 4, 8), (3, 3), 1, 1, 1, True),
    (12, 8, (1, 2, 4, 8), (3, 3), 2, 1, 1, False),
    (8, 12, (1, 3, 6, 12), (3, 3), 1, "same", 2, True),
    (16, 16, (2, 4, 16), (3, 1), 1, (1, 0), 1, True),
    (8, 8, (1, 2, 8), (1, 3), 2, 0, 1, True),
    (16, 8, (2, 4), (5, 3), 1, (2, 1), (1, 2), True),
    (4, 4, (1,), (3, 3), 1, 1, 1, True),
]


@pytest.fixture(scope="module", params=range(len(LAYERS)), ids=lambda i: f"layer{i}")
def layer_case(request):
    u, t, sizes, kernel, stride, padding, dilation, bias = LAYERS[request.param]
    conv = make_conv(u, t, kernel, stride, padding, dilation, bias, seed=request.param)
    results = btd_series(conv.weight.detach(), sizes, **FAST)
    layer = GroSSConv2d.from_conv(conv, sizes, **FAST)
    x = randn(2, t, 9, 8, seed=100 + request.param)
    return conv, results, layer, x


# ------------------------------------------------------------------------------- the series equals BTDs
def test_series_equals_each_btd_bottleneck(layer_case):
    conv, results, layer, x = layer_case
    with torch.no_grad():
        for s in layer.group_sizes:
            expected = Bottleneck(conv, results[s])(x)
            torch.testing.assert_close(layer(x, s), expected, rtol=0, atol=1e-10)
            # and the dense conv with the reconstruction of that size
            reference = conv_like(conv, x, results[s].reconstruct(), conv.bias)
            torch.testing.assert_close(layer(x, s), reference, rtol=0, atol=1e-10)


def test_merged_weights_telescope_to_each_size(layer_case):
    conv, results, layer, x = layer_case
    sizes = list(layer.group_sizes)
    # the layer stores each size's BTD with orthonormal block factors (same W_hat, balanced scale)
    balanced = {s: orthonormalize_blocks(results[s]) for s in sizes}
    weights = {s: bottleneck_weights_ref(balanced[s].cores, balanced[s].out_factors, balanced[s].in_factors)
               for s in sizes}
    for k, s in enumerate(sizes):
        for got, via_terms, direct in zip(layer.weights(s), series_weights_ref(
                series_terms_ref(weights), sizes, k), weights[s]):
            torch.testing.assert_close(got.detach(), direct, rtol=0, atol=1e-12)
            torch.testing.assert_close(got.detach(), via_terms, rtol=0, atol=1e-12)


def test_terms_are_the_differences_of_eq_6_7(layer_case):
    conv, results, layer, x = layer_case
    balanced = {s: orthonormalize_blocks(results[s]) for s in layer.group_sizes}
    weights = {s: bottleneck_weights_ref(balanced[s].cores, balanced[s].out_factors, balanced[s].in_factors)
               for s in layer.group_sizes}
    terms = series_terms_ref(weights)
    assert len(layer.p_terms) == len(layer.r_terms) == len(layer.q_terms) == len(terms)
    for i, (p, r, q) in enumerate(terms):
        torch.testing.assert_close(layer.p_terms[i].detach(), p, rtol=0, atol=1e-12)
        torch.testing.assert_close(layer.r_terms[i].detach(), r, rtol=0, atol=1e-12)
        torch.testing.assert_close(layer.q_terms[i].detach(), q, rtol=0, atol=1e-12)


def test_btd_errors_recorded(layer_case):
    conv, results, layer, x = layer_case
    assert layer.btd_errors == {s: results[s].error for s in layer.group_sizes}


def test_active_group_size_default_and_setter(layer_case):
    conv, results, layer, x = layer_case
    assert layer.group_size == max(layer.group_sizes)
    with torch.no_grad():
        for s in layer.group_sizes:
            layer.group_size = s
            assert layer.group_size == s
            torch.testing.assert_close(layer(x), layer(x, s), rtol=0, atol=0)
            for a, b in zip(layer.weights(), layer.weights(s)):
                assert torch.equal(a, b)
    layer.group_size = max(layer.group_sizes)


# ------------------------------------------------------------------------------------------- export
def test_to_bottleneck_export(layer_case):
    conv, results, layer, x = layer_case
    t, u = conv.in_channels, conv.out_channels
    for s in layer.group_sizes:
        exported = layer.to_bottleneck(s)
        assert type(exported) is nn.Sequential and len(exported) == 3
        assert all(type(m) is nn.Conv2d for m in exported)
        first, grouped, last = exported
        assert [m.groups for m in exported] == [1, t // s, 1]
        assert [(m.in_channels, m.out_channels) for m in exported] == [(t, t), (t, t), (t, u)]
        assert first.kernel_size == last.kernel_size == (1, 1)
        assert grouped.kernel_size == conv.kernel_size and grouped.stride == conv.stride
        assert grouped.padding == conv.padding and grouped.dilation == conv.dilation
        assert first.bias is None and grouped.bias is None
        assert (last.bias is None) == (conv.bias is None)
        if conv.bias is not None:
            assert torch.equal(last.bias, conv.bias)
        assert all(not isinstance(m, GroSSConv2d) for m in exported.modules())
        with torch.no_grad():
            torch.testing.assert_close(exported(x), layer(x, s), rtol=0, atol=1e-12)
            weights = [m.weight for m in exported]
            torch.testing.assert_close(sequential_ref(x, *weights, conv.bias, conv), layer(x, s),
                                       rtol=0, atol=1e-10)


# ------------------------------------------------------------------------------------ gradient reach
@pytest.mark.parametrize("sizes", [(1, 2, 4, 8), (2, 8), (1, 4, 8)])
def test_gradient_reaches_terms_up_to_k_only(sizes):
    conv = make_conv(8, 8, (3, 3), 1, 1, 1, True, seed=3)
    layer = GroSSConv2d.from_conv(conv, sizes, **FAST)
    x = randn(2, 8, 6, 6, seed=4)
    for k, s in enumerate(sizes):
        layer.zero_grad(set_to_none=True)
        layer(x, s).square().sum().backward()
        for i in range(len(sizes)):
            grads = (layer.p_terms[i].grad, layer.r_terms[i].grad, layer.q_terms[i].grad)
            if i <= k:
                assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)
            else:
                assert all(g is None or float(g.abs().sum()) == 0 for g in grads)
        # d/dr_i = Psi^T (d/dR_k): the adjoint of the expansion, by loops
        top = layer.r_terms[k].grad
        for i in range(k):
            torch.testing.assert_close(layer.r_terms[i].grad, psi_adjoint_loop(top, sizes[i], s),
                                       rtol=0, atol=1e-12)
            torch.testing.assert_close(layer.p_terms[i].grad, layer.p_terms[k].grad, rtol=0, atol=1e-12)


def test_bias_is_a_frozen_buffer():
    conv = make_conv(8, 8, (3, 3), 1, 1, 1, True, seed=0)
    layer = GroSSConv2d.from_conv(conv, (2, 8), **FAST)
    buffers = dict(layer.named_buffers())
    params = dict(layer.named_parameters())
    assert "bias" in buffers and torch.equal(buffers["bias"], conv.bias)
    assert not any(name.endswith("bias") for name in params)
    assert not buffers["bias"].requires_grad
    assert len(params) == 3 * len(layer.group_sizes)
    assert all(p.requires_grad for p in params.values())
    assert "bias" in layer.state_dict()
    no_bias = GroSSConv2d.from_conv(make_conv(8, 8, (3, 3), 1, 1, 1, False, seed=0), (2, 8), **FAST)
    assert no_bias.bias is None and "bias" not in no_bias.state_dict()


def test_training_step_leaves_bias_untouched():
    conv = make_conv(8, 8, (3, 3), 1, 1, 1, True, seed=1)
    layer = GroSSConv2d.from_conv(conv, (1, 2, 8), **FAST)
    bias_before = layer.bias.clone()
    terms_before = [p.detach().clone() for p in layer.parameters()]
    layer(randn(1, 8, 5, 5, seed=2), 2).square().sum().backward()
    with torch.no_grad():  # a plain SGD step over what has a gradient (as torch.optim.SGD does)
        for param in layer.parameters():
            if param.grad is not None:
                param -= 0.1 * param.grad
    assert torch.equal(layer.bias, bias_before)
    changed = [not torch.equal(a, b) for a, b in zip(terms_before, layer.parameters())]
    # parameters() order: p_terms, r_terms, q_terms; size 2 is index 1 -> terms 0,1 change, term 2 does not
    assert changed == [True, True, False] * 3


# -------------------------------------------------------------------------------------- float32 path
def test_float32_layer_close_to_float64_reference():
    conv = make_conv(8, 8, (3, 3), 1, 1, 1, True, seed=5, dtype=torch.float32)
    sizes = (1, 2, 4, 8)
    layer = GroSSConv2d.from_conv(conv, sizes, **FAST)
    assert all(p.dtype == torch.float32 for p in layer.parameters())
    results = btd_series(conv.weight.detach(), sizes, **FAST)
    x = randn(2, 8, 7, 7, seed=6, dtype=torch.float32)
    conv64 = make_conv(8, 8, (3, 3), 1, 1, 1, True, seed=5)
    with torch.no_grad():
        for s in sizes:
            expected = conv_like(conv64, x.double(), results[s].reconstruct(), conv64.bias)
            scale = float(expected.abs().max())
            torch.testing.assert_close(layer(x, s).double(), expected, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("padding_mode", ["reflect", "circular"])
def test_padding_modes(padding_mode):
    conv = make_conv(8, 8, (3, 3), 1, 1, 1, True, seed=7, padding_mode=padding_mode)
    sizes = (2, 4)
    layer = GroSSConv2d.from_conv(conv, sizes, **FAST)
    results = btd_series(conv.weight.detach(), sizes, **FAST)
    x = randn(1, 8, 6, 5, seed=8)
    with torch.no_grad():
        for s in sizes:
            expected = conv_like(conv, x, results[s].reconstruct(), conv.bias)
            torch.testing.assert_close(layer(x, s), expected, rtol=0, atol=1e-10)
            torch.testing.assert_close(layer.to_bottleneck(s)(x), expected, rtol=0, atol=1e-10)


# ------------------------------------------------------------------------------------------- costs
# (u, t, sizes, kernel, stride, padding, dilation, bias, input_hw)
COSTS = [
    (8, 8, (1, 2, 8), (3, 3), 1, 1, 1, True, (8, 8)),
    (16, 8, (1, 4), (3, 3), 2, 0, 1, False, (9, 7)),
    (8, 12, (3, 12), (3, 1), 1, "same", 2, True, (7, 5)),
    (12, 8, (2, 8), (5, 3), (2, 1), (2, 0), (1, 2), True, (11, 10)),
    (8, 8, (4,), (1, 3), 1, "valid", 1, False, (6, 6)),
]


@pytest.mark.parametrize("u,t,sizes,kernel,stride,padding,dilation,bias,input_hw", COSTS)
def test_macs_and_params_match_exported_convs(u, t, sizes, kernel, stride, padding, dilation, bias, input_hw):
    conv = make_conv(u, t, kernel, stride, padding, dilation, bias, seed=0)
    layer = GroSSConv2d.from_conv(conv, sizes, tol=1e-8, max_iter=2)
    x = torch.zeros(1, t, *input_hw, dtype=torch.float64)
    for s in sizes:
        exported = layer.to_bottleneck(s)
        assert layer.macs(s, input_hw) == conv_macs_ref(exported, x)
        assert layer.num_params(s) == sum(p.numel() for p in exported.parameters())
        assert layer.output_hw(input_hw) == tuple(layer(x, s).shape[2:])
    # defaults use the active size
    layer.group_size = sizes[0]
    assert layer.macs(None, input_hw) == conv_macs_ref(layer.to_bottleneck(sizes[0]), x)
    assert layer.num_params() == sum(p.numel() for p in layer.to_bottleneck().parameters())
    if len(sizes) > 1:
        assert layer.macs(sizes[0], input_hw) < layer.macs(sizes[-1], input_hw)


# ------------------------------------------------------------------------------------------- defaults
@pytest.mark.parametrize("channels", [1, 4, 6, 8, 12, 32, 64])
def test_default_group_sizes(channels):
    expected = tuple(2 ** k for k in range(8) if 2 ** k <= channels and channels % 2 ** k == 0)
    assert default_group_sizes(channels) == expected


def test_from_conv_default_sizes():
    conv = make_conv(8, 12, (3, 3), 1, 1, 1, True, seed=0)
    layer = GroSSConv2d.from_conv(conv, tol=1e-8, max_iter=2)
    assert layer.group_sizes == (1, 2, 4)
    assert layer.group_size == 4


def test_from_conv_sorts_sizes():
    conv = make_conv(8, 8, (3, 3), 1, 1, 1, True, seed=0)
    layer = GroSSConv2d.from_conv(conv, [8, 2, 4], tol=1e-8, max_iter=2)
    assert layer.group_sizes == (2, 4, 8)


# ----------------------------------------------------------------------------------------- checkpoints
def test_state_dict_round_trip():
    conv = make_conv(8, 8, (3, 3), 2, 1, 1, True, seed=1)
    layer = GroSSConv2d.from_conv(conv, (1, 2, 8), **FAST)
    layer.group_size = 2
    state = layer.state_dict()
    fresh = GroSSConv2d(8, 8, 3, (1, 2, 8), stride=2, padding=1, dtype=torch.float64)
    assert fresh.group_size == 8 and fresh.btd_errors == {}
    buffer = io.BytesIO()
    torch.save(state, buffer)  # through a real checkpoint file (torch.load's default weights_only=True)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer))
    assert fresh.group_size == 2
    assert fresh.btd_errors == layer.btd_errors
    x = randn(1, 8, 6, 6, seed=2)
    with torch.no_grad():
        for s in (1, 2, 8):
            torch.testing.assert_close(fresh(x, s), layer(x, s), rtol=0, atol=0)


@pytest.mark.parametrize("other_sizes", [(1, 2, 4), (1, 2), (2, 8)])
def test_state_dict_with_other_sizes_raises(other_sizes):
    conv = make_conv(8, 8, (3, 3), 1, 1, 1, True, seed=1)
    layer = GroSSConv2d.from_conv(conv, (1, 2, 8), tol=1e-8, max_iter=2)
    other = GroSSConv2d(8, 8, 3, other_sizes, padding=1, dtype=torch.float64)
    with pytest.raises(ValueError, match="group sizes"):
        other.load_state_dict(layer.state_dict())


# ------------------------------------------------------------------------------------------ bad input
def test_group_size_not_in_series_raises():
    conv = make_conv(8, 8, (3, 3), 1, 1, 1, True, seed=0)
    layer = GroSSConv2d.from_conv(conv, (1, 4), tol=1e-8, max_iter=2)
    x = randn(1, 8, 4, 4, seed=0)
    with pytest.raises(ValueError, match="not in this layer's series"):
        layer.group_size = 2
    assert layer.group_size == 4
    with pytest.raises(ValueError, match="not in this layer's series"):
        layer(x, 8)
    with pytest.raises(ValueError, match="not in this layer's series"):
        layer.to_bottleneck(2)
    with pytest.raises(ValueError, match="not in this layer's series"):
        layer.macs(2, (4, 4))
    with pytest.raises(ValueError, match="not in this layer's series"):
        layer.weights(3)


def test_from_conv_rejects_non_conv():
    with pytest.raises(ValueError, match="nn.Conv2d"):
        GroSSConv2d.from_conv(nn.Linear(8, 8))


def test_from_conv_rejects_grouped_conv():
    with pytest.raises(ValueError, match="groups=1"):
        GroSSConv2d.from_conv(nn.Conv2d(8, 8, 3, groups=2))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_from_conv_rejects_non_finite(value):
    conv = make_conv(8, 8, (3, 3), 1, 1, 1, True, seed=0)
    with torch.no_grad():
        conv.weight[2, 3, 1, 1] = value
    with pytest.raises(ValueError, match="NaN or Inf"):
        GroSSConv2d.from_conv(conv, (2, 8))


def test_from_conv_rejects_bad_sizes():
    conv = make_conv(8, 12, (3, 3), 1, 1, 1, True, seed=0)
    with pytest.raises(ValueError, match="does not divide the 12 channels"):
        GroSSConv2d.from_conv(conv, (1, 5))
    with pytest.raises(ValueError, match="does not divide"):
        GroSSConv2d.from_conv(conv, (2, 3), tol=1e-8, max_iter=2)
    with pytest.raises(ValueError, match="distinct"):
        GroSSConv2d.from_conv(conv, (2, 2, 4), tol=1e-8, max_iter=2)


def test_constructor_rejects_bad_sizes():
    with pytest.raises(ValueError, match="empty"):
        GroSSConv2d(8, 8, 3, ())
    with pytest.raises(ValueError, match="ascending"):
        GroSSConv2d(8, 8, 3, (4, 2))
    with pytest.raises(ValueError, match="does not divide"):
        GroSSConv2d(12, 8, 3, (2, 3))


# ------------------------------------------------------------------------- group sizes: integers only
NOT_INTEGERS = [True, False, 2.0, 2.5, "2", np.float64(2.0), np.True_]


@pytest.mark.parametrize("bad", NOT_INTEGERS, ids=repr)
def test_constructor_and_from_conv_reject_non_integer_sizes(bad):
    """Like psi (check_group_size): bools, floats (even integral ones) and strings are not group sizes."""
    with pytest.raises(ValueError, match="positive integer"):
        GroSSConv2d(8, 8, 3, (bad, 4))
    with pytest.raises(ValueError, match="positive integer"):
        GroSSConv2d(8, 8, 3, (bad,))
    with pytest.raises(ValueError, match="positive integer"):
        GroSSConv2d.from_conv(make_conv(8, 8, (3, 3), 1, 1, 1, True, seed=0), (bad, 4), **FAST)
    with pytest.raises(ValueError, match="positive integer"):
        psi(randn(8, 1, 3, 3, seed=0), 1, bad)  # the same rule as psi's


@pytest.mark.parametrize("bad", NOT_INTEGERS, ids=repr)
def test_active_size_rejects_non_integer_sizes(bad):
    """``True == 1`` and ``2.0 == 2`` must not select sizes 1 and 2 (setter, forward, weights, costs)."""
    layer = GroSSConv2d(8, 8, 3, (1, 2, 8), padding=1, dtype=torch.float64)
    layer.group_size = 2
    x = randn(1, 8, 4, 4, seed=0)
    with pytest.raises(ValueError, match="positive integer|not in this layer's series"):
        layer.group_size = bad
    assert layer.group_size == 2
    for call in (lambda: layer(x, bad), lambda: layer.weights(bad), lambda: layer.to_bottleneck(bad),
                 lambda: layer.macs(bad, (4, 4)), lambda: layer.num_params(bad)):
        with pytest.raises(ValueError, match="positive integer|not in this layer's series"):
            call()


@pytest.mark.parametrize("bad", [True, 2.0, np.float64(2.0)], ids=repr)
def test_values_equal_to_a_member_size_name_the_integer_rule(bad):
    layer = GroSSConv2d(8, 8, 3, (1, 2, 8))
    assert bad in layer.group_sizes  # the membership test alone would accept it
    with pytest.raises(ValueError, match="positive integer"):
        layer.group_size = bad


@pytest.mark.parametrize("valid", [2, np.int64(2), np.int32(2), torch.tensor(2)], ids=repr)
def test_integer_sizes_still_work(valid):
    conv = make_conv(8, 8, (3, 3), 1, 1, 1, True, seed=0)
    layer = GroSSConv2d.from_conv(conv, (1, valid, 8), **FAST)
    assert layer.group_sizes == (1, 2, 8) and all(type(s) is int for s in layer.group_sizes)
    built = GroSSConv2d(8, 8, 3, [1, valid], padding=1, dtype=torch.float64)
    assert built.group_sizes == (1, 2) and type(built.group_sizes[1]) is int
    layer.group_size = valid
    assert layer.group_size == 2 and type(layer.group_size) is int
    x = randn(1, 8, 5, 5, seed=1)
    with torch.no_grad():
        expected = layer(x, 2)
        torch.testing.assert_close(layer(x, valid), expected, rtol=0, atol=0)
        torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)
        torch.testing.assert_close(layer.to_bottleneck(valid)(x), expected, rtol=0, atol=1e-12)
    assert layer.macs(valid, (5, 5)) == layer.macs(2, (5, 5))
    assert layer.num_params(valid) == layer.num_params(2)
    assert not torch.allclose(expected, layer(x, 8).detach())  # size 2 really was selected, not 8
