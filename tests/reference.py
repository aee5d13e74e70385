"""Independent reference implementations used by the tests (plain loops and dense ops, float64).

Nothing here imports grosslib: every formula is re-derived from method.md so that a test compares the
library against a second, deliberately naive implementation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

F64 = torch.float64


def randn(*shape: int, seed: int, dtype: torch.dtype = F64) -> torch.Tensor:
    """Standard normal tensor from its own seeded generator (no global RNG state)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# -------------------------------------------------------------------------------------------------- psi
def psi_loop(weight: torch.Tensor, g: int, h: int) -> torch.Tensor:
    """Psi(g -> h) by absolute channel positions.

    In a conv with group size g, output channel o reads the absolute input channels
    ``[(o // g) * g, (o // g) * g + g)``. With group size h its block starts at ``(o // h) * h``;
    the weight of absolute input channel c goes to column ``c - (o // h) * h``.
    """
    t, width, kh, kw = weight.shape
    assert width == g
    out = torch.zeros(t, h, kh, kw, dtype=weight.dtype)
    for o in range(t):
        first_input = (o // g) * g
        block_start = (o // h) * h
        for j in range(g):
            out[o, first_input + j - block_start] = weight[o, j]
    return out


def psi_adjoint_loop(grad: torch.Tensor, g: int, h: int) -> torch.Tensor:
    """The adjoint of Psi: picks back, for each output channel, the g entries Psi wrote."""
    t, width, kh, kw = grad.shape
    assert width == h
    out = torch.zeros(t, g, kh, kw, dtype=grad.dtype)
    for o in range(t):
        first_input = (o // g) * g
        block_start = (o // h) * h
        for j in range(g):
            out[o, j] = grad[o, first_input + j - block_start]
    return out


# ------------------------------------------------------------------------------------------ grouped conv
def dense_from_grouped(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """The dense (out, in, kh, kw) weight equivalent to a grouped weight: block-diagonal in channels."""
    out_channels, per_group_in, kh, kw = weight.shape
    per_group_out = out_channels // groups
    dense = torch.zeros(out_channels, per_group_in * groups, kh, kw, dtype=weight.dtype)
    for o in range(out_channels):
        group = o // per_group_out
        for j in range(per_group_in):
            dense[o, group * per_group_in + j] = weight[o, j]
    return dense


def grouped_conv_ref(x: torch.Tensor, weight: torch.Tensor, groups: int, bias: torch.Tensor | None = None,
                     **conv_kwargs) -> torch.Tensor:
    """A grouped convolution computed as a dense conv with the explicit block-diagonal weight."""
    return F.conv2d(x, dense_from_grouped(weight, groups), bias, **conv_kwargs)


def conv_like(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor,
              bias: torch.Tensor | None) -> torch.Tensor:
    """``conv``'s own geometry (stride, padding, dilation, padding mode) applied with another weight."""
    if conv.padding_mode != "zeros":
        x = F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        return F.conv2d(x, weight, bias, conv.stride, 0, conv.dilation)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation)


def sequential_ref(x: torch.Tensor, first: torch.Tensor, grouped: torch.Tensor, last: torch.Tensor,
                   bias: torch.Tensor | None, conv: nn.Conv2d) -> torch.Tensor:
    """1x1 -> grouped kxk (dense block-diagonal) -> 1x1 with bias, the bottleneck by hand."""
    t = first.shape[0]
    groups = t // grouped.shape[1]
    y = F.conv2d(x, first[:, :, 0, 0][:, :, None, None])
    y = conv_like(conv, y, dense_from_grouped(grouped, groups), None)
    return F.conv2d(y, last, bias)


# ------------------------------------------------------------------------------------------------- BTD
def mode_product(tensor: torch.Tensor, matrix: torch.Tensor, mode: int) -> torch.Tensor:
    """``tensor x_mode matrix``: contracts ``tensor``'s axis ``mode`` with the columns of ``matrix``."""
    moved = torch.movedim(tensor, mode, -1)
    return torch.movedim(torch.tensordot(moved, matrix, dims=([moved.dim() - 1], [1])), -1, mode)


def btd_reconstruct_ref(cores: torch.Tensor, out_factors: torch.Tensor,
                        in_factors: torch.Tensor) -> torch.Tensor:
    """``sum_r G_r x_0 C_r x_1 B_r`` as an explicit loop over blocks of two mode products."""
    total = None
    for r in range(cores.shape[0]):
        term = mode_product(mode_product(cores[r], out_factors[r], 0), in_factors[r], 1)
        total = term if total is None else total + term
    return total


def random_btd_weight(u: int, t: int, s: int, kh: int, kw: int, seed: int) -> torch.Tensor:
    """A weight that is exactly a BTD of group size s (random blocks)."""
    n_blocks = t // s
    cores = randn(n_blocks, s, s, kh, kw, seed=seed)
    out_factors = randn(n_blocks, u, s, seed=seed + 1000)
    in_factors = randn(n_blocks, t, s, seed=seed + 2000)
    return btd_reconstruct_ref(cores, out_factors, in_factors)


def relative_error_ref(weight: torch.Tensor, approximation: torch.Tensor) -> float:
    num = math.sqrt(sum(float(v) ** 2 for v in (weight - approximation).flatten()))
    den = math.sqrt(sum(float(v) ** 2 for v in weight.flatten()))
    return num / den


def bottleneck_weights_ref(cores: torch.Tensor, out_factors: torch.Tensor,
                           in_factors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(P, R, Q) of Table 1 by loops: P rows = B_r^T stacked, R block r = G_r, Q columns = C_r."""
    n_blocks, s = cores.shape[0], cores.shape[1]
    kh, kw = cores.shape[3:]
    u, t = out_factors.shape[1], in_factors.shape[1]
    first = torch.zeros(t, t, 1, 1, dtype=cores.dtype)
    grouped = torch.zeros(t, s, kh, kw, dtype=cores.dtype)
    last = torch.zeros(u, t, 1, 1, dtype=cores.dtype)
    for r in range(n_blocks):
        for a in range(s):
            first[r * s + a, :, 0, 0] = in_factors[r, :, a]
            grouped[r * s + a] = cores[r, a]
            last[:, r * s + a, 0, 0] = out_factors[r, :, a]
    return first, grouped, last


def block_projections(residual: torch.Tensor, out_factors: torch.Tensor, in_factors: torch.Tensor) -> list:
    """``C_r^T E B_r`` for every block r (zero at a least-squares optimum of the cores)."""
    return [mode_product(mode_product(residual, out_factors[r].T, 0), in_factors[r].T, 1)
            for r in range(out_factors.shape[0])]


def tucker2_output_truncation_error(weight: torch.Tensor, rank: int) -> float:
    """Best rank-(rank, t) Tucker-2 error: only the output mode is truncated (SVD of its unfolding)."""
    singular = torch.linalg.svdvals(weight.reshape(weight.shape[0], -1))
    return float(torch.sqrt((singular[rank:] ** 2).sum()) / torch.sqrt((singular ** 2).sum()))


def _leading_subspace_ref(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    """The ``rank`` leading left singular vectors of ``matrix`` (zero columns where it has fewer rows)."""
    vectors = torch.linalg.svd(matrix, full_matrices=False)[0][:, :rank]
    if vectors.shape[1] < rank:
        vectors = torch.cat([vectors, vectors.new_zeros(matrix.shape[0], rank - vectors.shape[1])], dim=1)
    return vectors


def tucker2_hooi_ref(tensor: torch.Tensor, rank: int, n_iter_max: int = 100,
                     tol: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank-(rank, rank) Tucker-2 of a (u, t, kh, kw) tensor on its first two modes by HOOI.

    SVD initialisation of both modes, then alternate: output basis = leading left singular vectors of
    the tensor projected on the input basis, input basis likewise; stop when the relative error changes
    by less than ``tol`` (from the third iteration on) as TensorLy's ``partial_tucker`` (same defaults).
    Returns (core (rank, rank, kh, kw), out basis (u, rank), in basis (t, rank)).
    """
    u, t = tensor.shape[:2]
    unfold_out = lambda x: x.reshape(x.shape[0], -1)                  # noqa: E731
    unfold_in = lambda x: x.transpose(0, 1).reshape(x.shape[1], -1)   # noqa: E731
    out_basis = _leading_subspace_ref(unfold_out(tensor), rank)
    in_basis = _leading_subspace_ref(unfold_in(tensor), rank)
    norm = float(tensor.norm())
    errors: list[float] = []
    core = tensor
    for iteration in range(n_iter_max):
        out_basis = _leading_subspace_ref(unfold_out(mode_product(tensor, in_basis.T, 1)), rank)
        in_basis = _leading_subspace_ref(unfold_in(mode_product(tensor, out_basis.T, 0)), rank)
        core = mode_product(mode_product(tensor, out_basis.T, 0), in_basis.T, 1)
        errors.append(math.sqrt(abs(norm ** 2 - float(core.norm()) ** 2)) / norm if norm > 0 else 0.0)
        if iteration > 1 and abs(errors[-2] - errors[-1]) < tol:
            break
    return core, out_basis, in_basis


def btd_authors_ref(weight: torch.Tensor, group_size: int, tol: float = 1e-6,
                    max_sweeps: int = 100_000) -> dict:
    """The authors' BTD (their public code, re-implemented from its description in issue 15).

    All ``R = t / s`` blocks start at zero. A sweep visits the blocks in turn and replaces block r by
    the rank-(s, s) Tucker-2 (:func:`tucker2_hooi_ref`, SVD initialisation) of the residual
    ``W - sum_{j != r} W_j``. Stop when the relative error decreases by less than ``tol`` between
    sweeps. Returns a dict with the stacked ``cores`` (R, s, s, kh, kw), ``out_factors`` (R, u, s),
    ``in_factors`` (R, t, s), ``error``, ``block_norm_ratio`` (``sqrt(sum_r ||W_r||^2) / ||W||``),
    ``sweeps`` and ``converged``.
    """
    u, t, kh, kw = weight.shape
    n_blocks = t // group_size
    blocks = [torch.zeros_like(weight) for _ in range(n_blocks)]
    parts: list = [None] * n_blocks
    norm = float(weight.norm())
    previous, converged, sweeps = 1.0, False, 0
    for sweeps in range(1, max_sweeps + 1):  # noqa: B007 (the count is returned)
        for r in range(n_blocks):
            residual = weight - sum(blocks[j] for j in range(n_blocks) if j != r)
            core, out_basis, in_basis = tucker2_hooi_ref(residual, group_size)
            parts[r] = (core, out_basis, in_basis)
            blocks[r] = mode_product(mode_product(core, out_basis, 0), in_basis, 1)
        error = float((weight - sum(blocks)).norm()) / norm
        if previous - error < tol:
            converged = True
            break
        previous = error
    return {"cores": torch.stack([p[0] for p in parts]), "out_factors": torch.stack([p[1] for p in parts]),
            "in_factors": torch.stack([p[2] for p in parts]), "error": error,
            "block_norm_ratio": math.sqrt(sum(float(b.norm()) ** 2 for b in blocks)) / norm,
            "sweeps": sweeps, "converged": converged}


# ---------------------------------------------------------------------------------------------- series
def series_terms_ref(weights: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> list:
    """Terms (p_i, r_i, q_i) of eqs. 6-7 from per-size bottleneck weights, ascending sizes."""
    sizes = sorted(weights)
    terms = []
    for i, s in enumerate(sizes):
        first, grouped, last = weights[s]
        if i == 0:
            terms.append((first.clone(), grouped.clone(), last.clone()))
        else:
            prev_first, prev_grouped, prev_last = weights[sizes[i - 1]]
            terms.append((first - prev_first, grouped - psi_loop(prev_grouped, sizes[i - 1], s),
                          last - prev_last))
    return terms


def series_weights_ref(terms: list, sizes: list[int],
                       k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(P, R, Q) at size ``sizes[k]``: sums of terms 0..k, each r term expanded by Psi."""
    first = sum(terms[i][0] for i in range(k + 1))
    last = sum(terms[i][2] for i in range(k + 1))
    grouped = sum(psi_loop(terms[i][1], sizes[i], sizes[k]) for i in range(k + 1))
    return first, grouped, last


# ------------------------------------------------------------------------------------------- costs
def conv_macs_ref(module: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of every nn.Conv2d in ``module`` on input ``x`` (shapes from a real forward)."""
    total = 0

    def hook(conv: nn.Conv2d, inputs, output) -> None:
        nonlocal total
        h_out, w_out = output.shape[2:]
        kh, kw = conv.kernel_size
        total += h_out * w_out * conv.out_channels * (conv.in_channels // conv.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for handle in handles:
            handle.remove()
    return int(total)


# ------------------------------------------------------------------------------------------- sampling
def temperature_probs_ref(n: int, alpha: float, reading: str = "literal") -> list[float]:
    """Eq. 8: exp(-alpha i) (literal) or exp(-alpha i / n) (normalized), i = 1..n, normalised to sum 1."""
    scale = n if reading == "normalized" else 1
    weights = [math.exp(-alpha * i / scale) for i in range(1, n + 1)]
    total = sum(weights)
    return [w / total for w in weights]


def make_conv(u, t, kernel, stride, padding, dilation, bias, seed, dtype=torch.float64, padding_mode="zeros"):
    conv = nn.Conv2d(t, u, kernel, stride=stride, padding=padding, dilation=dilation, bias=bias,
                     padding_mode=padding_mode, dtype=dtype)
    with torch.no_grad():
        conv.weight.copy_(randn(*conv.weight.shape, seed=seed))
        if bias:
            conv.bias.copy_(randn(u, seed=seed + 1))
    return conv
