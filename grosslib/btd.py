"""Block Term Decomposition (BTD) of a convolution weight, and the bottleneck weights it defines.

A conv weight ``W`` of shape ``(u, t, kh, kw)`` is approximated, for a group size ``s`` dividing
``t``, by ``R = t / s`` rank-``(s, s)`` Tucker blocks acting on the output and input modes::

    W ~ sum_r  G_r  x_out C_r  x_in B_r,   G_r: (s, s, kh, kw),  C_r: (u, s),  B_r: (t, s)

Several blocks (``method='als'``): alternating least squares over all blocks at once, through a few
*ridge phases*. Why: a BTD, like CP, can have no best approximation; plain ALS then creeps along a
"swamp" where blocks grow and cancel each other while the error barely falls. On trained PaperNets it
ended with block-norm ratios ``rho = sqrt(sum_r ||W_r||^2) / ||W||`` (``W_r = C_r G_r B_r^T``) of 5 to
564, bottlenecks that SGD cannot fine-tune. The classic remedy is a ridge penalty: phase i lowers

    ||W - W_hat||^2 + lam_i sum_r ||W_r||^2,     lam = RIDGE_SCHEDULE = (1e-1, 1e-2, 1e-3, 1e-4)

until that objective (relative, as the error) decreases by less than ``tol`` in one step, and hands its
point to the next phase. The penalty bounds the blocks (``rho <= 1 / sqrt(lam)`` at any point better
than zero blocks); the large first penalty steers the iteration into a basin without cancellation, the
smaller ones then fit the weight. The last phase keeps ``lam = 1e-4``: ending at ``lam = 0`` let two
blocks (R = 2) creep again to rho 3.7-4.5 on trained PaperNet weights, while the penalty's cost in error
is about 1e-4. BTD has local minima too, so by default the ALS runs from four starts (``STARTS``: the
SVD start, a greedy one (the first sweep of the authors' scheme) and two random ones) and keeps the
one with the lowest ``error^2 + 1e-3 rho^2`` (``SELECTION_PENALTY``, the third phase's penalty; at the
final phase's 1e-4 a start with rho 3.6 won by an error 0.0006 lower than one with rho 2.8): on 13
small random weights (tests/test_btd.py keeps the cases) either of the first two starts alone missed
the authors' error by up to 0.016 on some weight, the pair of them by 0.0036 on one, and the four of
them compared at 1e-3 on none, with rho at most max(3, the authors') on all (at 1e-4: rho 3.6 on
one). The first penalty 1e-1 (rather than 1e-2) met the authors' error on more of those weights.
Large layers take
``LARGE_LAYER_OPTIONS`` (the svd start only, float32, tol 1e-3).

Not in the paper, whose "off-the-shelf BTD framework" (the authors' code) is a block-coordinate scheme:
every block in turn replaced by the rank-(s, s) Tucker-2 of the residual of the others
(tests/reference.py). We chose the penalised ALS because it is as accurate and as non-degenerate and far
faster (benchmarks/RESULTS.md compares the three pair by pair: this default, the authors' scheme and
plain ALS, ``ridge=(0.0,)``).

In the orthonormal gauge below the penalty has a simple form: for every variable of a sweep it adds
``lam`` times the diagonal blocks of the normal equations (block r's own Gram matrix), so each update is
still an exact (or, for large core systems, CG-improved) minimiser of the penalised objective, which
therefore never increases within a phase.

One *step* is one sweep over all blocks at once. The output factors ``C = [C_1 .. C_R]`` are replaced by
their least-squares optimum given the rest, then the input factors ``B``, then the cores. Each factor
update is followed by a block-wise QR (``C_r = Q_r T_r``, ``T_r`` absorbed by the core), which changes
the representation but not the approximation, so that ``C_r^T C_r = B_r^T B_r = I``. The cores' normal
equations then have identity diagonal blocks; they are solved exactly when small (``R s^2 <= 128``) or
for two blocks (a Stein equation, in closed form). Otherwise each step improves the cores by a few
conjugate-gradient iterations warm-started from the current ones (CG from a warm start minimises the
objective over a subspace containing it, so it cannot grow) and the last step solves them exactly
(up to ``R s^2 = 2048``; 30 CG iterations beyond; ``exact_cores=True``: every step is exact).

In every phase but the last (and in the single phase of plain ALS), steps are accelerated by adaptive
momentum (``accelerate=True``): the
sweep starts from ``X_k + beta (X_k - X_{k-1})`` and its result is kept only when it beats the current
objective by at least ``tol``; otherwise the plain sweep from ``X_k`` is computed too and the better
result is kept.

One block (``s = t``, ``method='hooi'``): higher-order orthogonal iteration, the algorithm of
TensorLy's ``partial_tucker`` (one block cannot cancel with another: rho <= 1).

Stopping rule (docs/method.md): stop when the relative error (for the ALS: the final phase's relative
objective, within ``lam rho^2 / (2 error)``, about 1e-3, of the error) decreases by less than ``tol`` in
one step, or after ``max_iter`` steps in all; :attr:`BTDResult.converged` says whether it was met.

Work is done in float64 on the pytorch backend of TensorLy (unfoldings and mode products; the
block-structured products are batched matmuls). The matrices involved are small (at most a few hundred
rows), so by default the iterations run with one intra-op thread (``num_threads``): on a 2-core machine
shared with other jobs, the caller's 2 threads made the same decompositions several times slower
(benchmarks/RESULTS.md).
"""
from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import tensorly as tl
import torch
from tensorly.tenalg import multi_mode_dot

from .psi import check_group_size

__all__ = ["ALGORITHM", "BTDResult", "LARGE_LAYER_OPTIONS", "RIDGE_SCHEDULE", "SELECTION_PENALTY", "STARTS",
           "block_norms_sq",
           "btd", "btd_series", "btd_series_many", "pytorch_backend", "reconstruct"]

OUT_MODE, IN_MODE = 0, 1


@contextlib.contextmanager
def pytorch_backend() -> Iterator[None]:
    """Run the enclosed TensorLy calls on its pytorch backend, restoring the previous backend (in this
    thread only: decompositions may run in several threads at once, see :func:`btd_series`)."""
    previous = tl.get_backend()
    tl.set_backend("pytorch", local_threadsafe=True)
    try:
        yield
    finally:
        tl.set_backend(previous, local_threadsafe=True)


@dataclass
class BTDResult:
    """Cores and factors of a BTD, with the relative error after each step.

    Attributes
    ----------
    cores : Tensor (R, s, s, kh, kw)
        ``cores[r, a, b]`` couples output-basis vector ``a`` to input-basis vector ``b`` of block r.
    out_factors : Tensor (R, u, s)
        ``C_r``: the output-mode factors.
    in_factors : Tensor (R, t, s)
        ``B_r``: the input-mode factors.
    errors : list of float
        ``||W - W_hat||_F / ||W||_F`` after each step (``errors[-1]`` is the final error).
        In the ALS this is the plain error of each penalised step: it can rise a little (the objective
        below is what never increases within a phase); with ``ridge=(0.0,)`` it never increases.
    initial_error : float
        The error of the initialisation, before the first step.
    converged : bool
        Whether the stopping rule was met: the error (ALS: the final ridge phase's objective) decreased by
        less than ``tol`` in one step before ``max_iter`` steps in all.
    weight_norm : float
        ``||W||_F`` of the decomposed weight (for :attr:`block_norm_ratio`).
    objectives : list of float
        ALS: the relative objective ``sqrt(error^2 + lam rho^2)`` after each step, at that step's phase's
        ``lam`` (non-increasing within a phase); HOOI: the errors.
    phase_steps : list of int
        ALS: the steps taken in each ridge phase reached (their sum is :attr:`n_iter`).
    start : str
        The start this result came from: 'svd', 'greedy', 'random' or 'warm' (a BTDResult).
    """

    cores: torch.Tensor
    out_factors: torch.Tensor
    in_factors: torch.Tensor
    errors: list[float] = field(default_factory=list)
    initial_error: float = float("nan")
    converged: bool = False
    weight_norm: float = float("nan")
    objectives: list[float] = field(default_factory=list)
    phase_steps: list[int] = field(default_factory=list)
    start: str = ""

    @property
    def block_norm_ratio(self) -> float:
        """``rho = sqrt(sum_r ||W_r||^2) / ||W||`` with ``W_r = C_r G_r B_r^T`` block r's part of ``W_hat``.

        About 1 or less when the blocks do not fight (orthogonal blocks: ``rho = ||W_hat|| / ||W||``);
        large when blocks grow and cancel each other (a degenerate BTD)."""
        squares = block_norms_sq(self.cores, self.out_factors, self.in_factors)
        return float(squares.sum()) ** 0.5 / self.weight_norm

    @property
    def n_blocks(self) -> int:
        """Number of blocks R (= groups of the grouped convolution)."""
        return self.cores.shape[0]

    @property
    def group_size(self) -> int:
        """Group size s (= channels per group = rank of each block)."""
        return self.cores.shape[1]

    @property
    def n_iter(self) -> int:
        """Number of steps taken."""
        return len(self.errors)

    @property
    def error(self) -> float:
        """Final relative error."""
        return self.errors[-1] if self.errors else self.initial_error

    def reconstruct(self) -> torch.Tensor:
        """The approximated weight ``W_hat`` of shape (u, t, kh, kw)."""
        return reconstruct(self.cores, self.out_factors, self.in_factors)

    def bottleneck_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Weights ``(P, R, Q)`` of the bottleneck 1x1 -> grouped kxk -> 1x1 (Table 1).

        ``P``: (t, t, 1, 1), block r of rows holds ``B_r^T``; ``R``: (t, s, kh, kw), block r holds
        ``G_r``; ``Q``: (u, t, 1, 1), block r of columns holds ``C_r``.
        """
        n_blocks, u, s = self.out_factors.shape
        t = self.in_factors.shape[1]
        first = self.in_factors.transpose(1, 2).reshape(n_blocks * s, t)[:, :, None, None]
        grouped = self.cores.reshape(n_blocks * s, s, *self.cores.shape[3:])
        last = self.out_factors.permute(1, 0, 2).reshape(u, n_blocks * s)[:, :, None, None]
        return first.contiguous(), grouped.contiguous(), last.contiguous()

    def expand(self, to_group_size: int) -> BTDResult:
        """The same approximation written with larger blocks (merging consecutive blocks).

        Block r of the result holds blocks ``r*m .. r*m+m-1`` (m = to_group_size / s) on its
        diagonal, matching the layout of :func:`grosslib.psi`.
        """
        s, n_blocks = self.group_size, self.n_blocks
        t = self.in_factors.shape[1]
        check_group_size(t, to_group_size, "to_group_size")
        if to_group_size % s != 0:
            raise ValueError(f"group size {s} does not divide to_group_size {to_group_size}")
        m = to_group_size // s
        new_blocks = n_blocks // m
        kernel = self.cores.shape[3:]
        cores = self.cores.new_zeros(new_blocks, to_group_size, to_group_size, *kernel)
        blocks = self.cores.reshape(new_blocks, m, s, s, *kernel)
        for j in range(m):
            cores[:, j * s:(j + 1) * s, j * s:(j + 1) * s] = blocks[:, j]
        merge = lambda f: f.reshape(new_blocks, m, f.shape[1], s).permute(0, 2, 1, 3).reshape(  # noqa: E731
            new_blocks, f.shape[1], to_group_size)
        return self._with(cores, merge(self.out_factors), merge(self.in_factors))

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> BTDResult:
        """A copy with tensors moved/cast."""
        conv = lambda x: x.to(dtype=dtype, device=device)  # noqa: E731
        return self._with(conv(self.cores), conv(self.out_factors), conv(self.in_factors))

    def _with(self, cores: torch.Tensor, out_factors: torch.Tensor, in_factors: torch.Tensor) -> BTDResult:
        """A copy with other tensors and every other field kept (lists copied)."""
        return replace(self, cores=cores, out_factors=out_factors, in_factors=in_factors,
                       errors=list(self.errors), objectives=list(self.objectives),
                       phase_steps=list(self.phase_steps))


def reconstruct(cores: torch.Tensor, out_factors: torch.Tensor, in_factors: torch.Tensor) -> torch.Tensor:
    """``sum_r G_r x_out C_r x_in B_r`` for stacked cores (R, s, s, kh, kw) and factors."""
    return torch.einsum("roa,rabyx,rib->oiyx", out_factors, cores, in_factors)


def block_norms_sq(cores: torch.Tensor, out_factors: torch.Tensor, in_factors: torch.Tensor) -> torch.Tensor:
    """``||W_r||_F^2 = sum_yx tr(G_ryx^T (C_r^T C_r) G_ryx (B_r^T B_r))`` for every block r, shape (R,).

    Computed from the Gram matrices of the factors, never forming a (u, t, kh, kw) block."""
    out_gram = out_factors.transpose(1, 2) @ out_factors
    in_gram = in_factors.transpose(1, 2) @ in_factors
    left = torch.einsum("rac,rcbyx->rabyx", out_gram, cores)
    right = torch.einsum("racyx,rcb->rabyx", cores, in_gram)
    return (left * right).flatten(1).sum(1)


def _leading_left_singular_vectors(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    """Orthonormal (rows x rank) basis of the leading left singular subspace, zero-padded if short.

    A wide matrix (conv unfoldings are: ``u x k t``) takes the eigenvectors of its Gram matrix
    ``M M^T`` (rows x rows), an order of magnitude faster than its SVD for a 512-channel conv (1.7 s for
    the SVD of a 512 x 4608 unfolding); the leading subspace is the same (the squared condition number
    only blurs the trailing singular vectors, which a basis of the leading ones does not need)."""
    rows, cols = matrix.shape
    if cols >= rows:
        _, vectors = torch.linalg.eigh(matrix @ matrix.T)
        u = vectors.flip(1)[:, :rank]
    else:
        u, _, _ = torch.linalg.svd(matrix, full_matrices=False)
        u = u[:, :rank]
    if u.shape[1] < rank:
        u = torch.cat([u, u.new_zeros(u.shape[0], rank - u.shape[1])], dim=1)
    return u


def _orthonormal_basis(matrix: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis with the same number of columns spanning (at least) ``matrix``'s columns.

    With more columns than rows (a group size above the output channels) the basis is zero-padded.
    """
    q, _ = torch.linalg.qr(matrix, mode="reduced")
    if q.shape[1] < matrix.shape[1]:
        q = torch.cat([q, q.new_zeros(q.shape[0], matrix.shape[1] - q.shape[1])], dim=1)
    return q


def _check_weight(weight: torch.Tensor) -> None:
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"btd expects a conv weight of shape (out, in, kh, kw), got {shape}")
    if not torch.isfinite(weight).all():
        raise ValueError("the weight contains NaN or Inf values; cannot decompose it")
    if torch.count_nonzero(weight) == 0:
        raise ValueError("the weight is all zeros; its relative error is undefined")


def _svd_bases(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The leading ``t`` left singular vectors of the output and input unfoldings: (u, t), (t, t)."""
    t = weight.shape[1]
    with pytorch_backend():
        return (_leading_left_singular_vectors(tl.unfold(weight, OUT_MODE), t),
                _leading_left_singular_vectors(tl.unfold(weight, IN_MODE), t))


def _initialise(weight: torch.Tensor, group_size: int, init: str | BTDResult,
                generator: torch.Generator | None,
                svd_bases: tuple[torch.Tensor, torch.Tensor] | None = None) -> BTDResult:
    u, t, kh, kw = weight.shape
    n_blocks = t // group_size
    if isinstance(init, BTDResult):
        start = init.to(dtype=weight.dtype, device=weight.device)
        if (start.out_factors.shape[1] != u or start.in_factors.shape[1] != t
                or start.cores.shape[3:] != (kh, kw)):
            raise ValueError("the BTDResult given as init does not match the weight's shape")
        if start.group_size > group_size:
            raise ValueError(f"cannot warm-start group size {group_size} from the larger {start.group_size}")
        return start.expand(group_size) if start.group_size != group_size else start
    if init == "svd":
        out_basis, in_basis = svd_bases if svd_bases is not None else _svd_bases(weight)
        # copies: the loop below writes into them, and the bases may be shared by a series
        in_factors = in_basis.T.reshape(n_blocks, group_size, t).transpose(1, 2).clone()
        out_factors = out_basis.T.reshape(n_blocks, group_size, u).transpose(1, 2).clone()
        if u >= t:
            # the blocks' factors are slices of two orthonormal bases: block r's optimal core C_r^T W B_r
            # does not depend on the others' (C_r^T C_j = 0), so all are computed at once
            projected = out_basis.T @ weight.permute(0, 2, 3, 1).reshape(u, -1)       # (t, kh kw t)
            cores = torch.matmul(projected.view(n_blocks, group_size * kh * kw, t), in_factors)
            cores = cores.view(n_blocks, group_size, kh, kw, group_size).permute(0, 1, 4, 2, 3)
            return BTDResult(cores.contiguous(), out_factors.contiguous(), in_factors.contiguous())
    elif init == "greedy":
        return _greedy_start(weight, group_size)
    elif init == "random":
        in_factors = torch.randn(n_blocks, t, group_size, generator=generator, dtype=weight.dtype)
        out_factors = torch.randn(n_blocks, u, group_size, generator=generator, dtype=weight.dtype)
        in_factors, out_factors = in_factors.to(weight.device), out_factors.to(weight.device)
    else:
        raise ValueError(f"init must be 'svd', 'greedy', 'random', a sequence of these or a BTDResult, "
                         f"got {init!r}")
    # optimal cores for the chosen factors, block by block on the residual
    cores = weight.new_zeros(n_blocks, group_size, group_size, kh, kw)
    residual = weight.clone()
    for r in range(n_blocks):
        c_r, b_r = _orthonormal_basis(out_factors[r]), _orthonormal_basis(in_factors[r])
        out_factors[r], in_factors[r] = c_r, b_r
        cores[r] = torch.einsum("oa,oiyx,ib->abyx", c_r, residual, b_r)
        residual -= torch.einsum("oa,abyx,ib->oiyx", c_r, cores[r], b_r)
    return BTDResult(cores, out_factors.contiguous(), in_factors.contiguous())


def _greedy_start(weight: torch.Tensor, group_size: int) -> BTDResult:
    """Blocks fitted one after the other to what the previous ones leave (the first sweep of the authors'
    block-coordinate scheme): block r is the rank-(s, s) Tucker-2 of the residual (truncated HOSVD refined
    by ``_GREEDY_HOOI_STEPS`` HOOI steps)."""
    u, t = weight.shape[:2]
    n_blocks = t // group_size
    residual = weight.clone()
    cores, outs, ins = [], [], []
    with pytorch_backend():
        for _ in range(n_blocks):
            out_basis = _leading_left_singular_vectors(tl.unfold(residual, OUT_MODE), group_size)
            in_basis = _leading_left_singular_vectors(tl.unfold(residual, IN_MODE), group_size)
            for _ in range(_GREEDY_HOOI_STEPS):
                out_basis, in_basis, _ = _hooi_bases(residual, in_basis, group_size)
            core = multi_mode_dot(residual, [out_basis, in_basis], modes=[OUT_MODE, IN_MODE], transpose=True)
            residual = residual - multi_mode_dot(core, [out_basis, in_basis], modes=[OUT_MODE, IN_MODE])
            cores.append(core)
            outs.append(out_basis)
            ins.append(in_basis)
    return BTDResult(torch.stack(cores), torch.stack(outs), torch.stack(ins))


def _solve_least_squares(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``gram^-1 rhs`` for a symmetric PSD ``gram``; a minimum-norm solution when it is singular."""
    factor, info = torch.linalg.cholesky_ex(gram)
    if int(info) == 0:
        pivots = torch.diagonal(factor)
        # a pivot ratio below 1e-6 (condition number above 1e12): numerically singular
        if float(pivots.min()) > 1e-6 * float(pivots.max()):
            return torch.cholesky_solve(rhs, factor)
    return torch.linalg.pinv(gram, hermitian=True) @ rhs


def _canonical_qr(factors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched ``F_r = Q_r T_r`` with orthonormal ``Q_r`` and ``diag(T_r) >= 0``: a gauge continuous in F."""
    q, tri = torch.linalg.qr(factors, mode="reduced")
    sign = torch.where(torch.diagonal(tri, dim1=-2, dim2=-1) < 0, -1.0, 1.0).to(factors.dtype)
    return q * sign[:, None, :], tri * sign[:, :, None]


def _relaid(x: torch.Tensor, dims: tuple[int, ...], shape: tuple[int, ...]) -> torch.Tensor:
    """``x.permute(dims)`` copied to contiguous memory, viewed as ``shape``: batched matmuls on a strided
    view would copy it batch by batch (slow for hundreds of small blocks)."""
    return x.permute(dims).contiguous().view(shape)


@dataclass
class _State:
    """One point of the ALS: factors (R, u, s), (R, t, s), core (R, s_out, k, s_in), its relative error,
    its blocks' relative squared norm ``sum_r ||W_r||^2 / ||W||^2`` and its objective (at a penalty
    ``lam``: ``sqrt(error^2 + lam * block_sq)``, the relative penalised error that the steps lower)."""

    out: torch.Tensor
    inp: torch.Tensor
    core: torch.Tensor
    error: float
    block_sq: float
    objective: float


class _ALS:
    """Alternating least squares over all blocks at once, each block's factors kept orthonormal.

    A sweep replaces the output factors ``C`` by their exact least-squares optimum given the cores and
    the input factors, then the input factors ``B`` likewise, then the cores. After each factor update
    the new factors are orthonormalised block by block (``C_r = Q_r T_r``, ``T_r`` absorbed by the core:
    the same approximation, so the same error). In that gauge the normal equations of the cores,
    ``sum_p (C_r^T C_p) X_p (B_p^T B_r) = C_r^T W B_r``, have identity diagonal blocks, which the core
    solvers use: the exact joint solve (small systems), a closed form for two blocks (a Stein equation),
    or warm-started conjugate gradients (each CG iteration minimises the error over a larger subspace
    containing the warm start, so the error cannot grow).

    Layouts: the core is held as (R, s_out, k, s_in) with k = kh*kw; the target is unfolded once as
    ``(u, k*t)`` (columns (y, i)). The input-factor update reuses ``U = C^T W``, which the cores' right
    hand side needs too, and builds its Gram matrix from ``C^T C`` and the cores (``R s``-sized
    products instead of ``u k``-sized ones).
    """

    def __init__(self, target: torch.Tensor, n_blocks: int, group_size: int, kernel: tuple[int, ...],
                 exact_cores: bool) -> None:
        u, t, k = target.shape
        self.u, self.t, self.k, self.n_blocks, self.s, self.kernel = u, t, k, n_blocks, group_size, kernel
        self.exact = exact_cores
        self.orthonormal_out = u >= group_size      # C_r (u x s) can have orthonormal columns
        #: the ridge ``lam`` of the current phase: every step lowers ||W - W_hat||^2 + lam sum_r ||W_r||^2
        self.penalty = 0.0
        with pytorch_backend():
            #: W unfolded as (u, k*t), columns (y, i)
            self.target_out = tl.unfold(target.permute(0, 2, 1), OUT_MODE).contiguous()
        #: the same memory as (u*k, t): rows (o, y), columns i (the input-mode products)
        self.target_rows = self.target_out.view(u * k, t)
        self.norm_sq = float(torch.vdot(target.reshape(-1), target.reshape(-1)))

    def state(self, start: BTDResult, error: float) -> _State:
        n, s = self.n_blocks, self.s
        core = start.cores.reshape(n, s, s, self.k).permute(0, 1, 3, 2).contiguous()
        squares = block_norms_sq(start.cores, start.out_factors, start.in_factors)
        block_sq = float(squares.sum()) / self.norm_sq
        return self.scored(start.out_factors.clone(), start.in_factors.clone(), core, error, block_sq)

    def scored(self, out: torch.Tensor, inp: torch.Tensor, core: torch.Tensor, error: float,
               block_sq: float) -> _State:
        """A state with its objective at the current penalty."""
        return _State(out, inp, core, error, block_sq, (error ** 2 + self.penalty * block_sq) ** 0.5)

    def rescore(self, state: _State) -> _State:
        """The same point scored at the current penalty (after a phase change)."""
        return self.scored(state.out, state.inp, state.core, state.error, state.block_sq)

    def load_diagonal_blocks(self, gram: torch.Tensor, width: int) -> torch.Tensor:
        """``gram`` (R*width square) with its R diagonal blocks scaled by ``1 + lam`` (in place).

        The penalty ``lam sum_r ||W_r||^2`` is, for every variable of a sweep, ``lam`` times the
        diagonal blocks of that variable's normal equations (block r's own Gram matrix)."""
        if self.penalty:
            blocks = gram.view(self.n_blocks, width, self.n_blocks, width)
            index = torch.arange(self.n_blocks, device=gram.device)
            blocks[index, :, index, :] = blocks[index, :, index, :] * (1.0 + self.penalty)
        return gram

    def result(self, state: _State, errors: list[float], initial_error: float, converged: bool,
               objectives: list[float], phase_steps: list[int]) -> BTDResult:
        n, s = self.n_blocks, self.s
        cores = state.core.permute(0, 1, 3, 2).reshape(n, s, s, *self.kernel).contiguous()
        return BTDResult(cores, state.out.contiguous(), state.inp.contiguous(), errors, initial_error,
                         converged, objectives=objectives, phase_steps=phase_steps)

    # ------------------------------------------------------------------------------------------ sweep
    def sweep(self, inp: torch.Tensor, core: torch.Tensor) -> _State:
        """One ALS step from input factors and cores (the output factors are recomputed first)."""
        n, s, k, u, t = self.n_blocks, self.s, self.k, self.u, self.t
        # output factors: W_(out) ~ C M with M = [G_y B^T]_y side by side over y, rows (r, a), cols (y, i);
        # its products from the structure, never forming M: M W^T from V = W x_in B^T (one pass over W),
        # M M^T = [sum_y G_ry (B_r^T B_p) G_py^T]_{r,p}
        in_all = inp.transpose(0, 1).reshape(t, t)                  # rows i, columns (r, b)
        in_gram = in_all.T @ in_all
        core_rows = core.reshape(n, s, k * s)                        # (r, a, (y, b))
        mixed = torch.matmul(core.reshape(n, s * k, s), in_gram.view(n, s, t))  # (r, (a, y), (p, d))
        mixed = _relaid(mixed.view(n, s, k, n, s), (3, 0, 1, 2, 4), (n, t, k * s))  # (p, (r, a), (y, d))
        gram_out = torch.matmul(mixed, core_rows.transpose(1, 2)).transpose(0, 1).reshape(t, t)
        gram_out = self.load_diagonal_blocks(gram_out, s)
        moved = _relaid((self.target_rows @ in_all).view(u, k, n, s), (2, 1, 3, 0), (n, k * s, u))
        rhs_out = torch.matmul(core_rows, moved).reshape(t, u)       # M W^T: rows (r, a)
        out = _solve_least_squares(gram_out, rhs_out).reshape(n, s, u).transpose(1, 2)
        if self.orthonormal_out:
            out, tri = _canonical_qr(out)
            core = torch.matmul(tri, core.reshape(n, s, k * s)).reshape(n, s, k, s)
        else:
            out = out.contiguous()
        # input factors: W_(in)^T ~ F B^T with F = [C_r G_r]_r; with U = C^T W (also the cores' rhs):
        # F^T W = [G_r^T U_r]_r and F^T F = [G_r^T (C_r^T C_p) G_p]_{r,p}
        out_t = out.transpose(1, 2).reshape(t, u)
        out_gram = out_t @ out_t.T
        projected = out_t @ self.target_out                        # U: (t, k*t), rows (r, a), cols (y, i)
        core_t = core.reshape(n, s * k, s).transpose(1, 2)          # (r, b, (a, y))
        rhs_in = torch.matmul(core_t, projected.view(n, s * k, t)).reshape(t, t)
        mixed = torch.matmul(out_gram.view(t, n, s).transpose(0, 1), core.reshape(n, s, k * s))
        mixed = _relaid(mixed.view(n, n, s, k, s), (1, 2, 3, 0, 4), (n, s * k, t))  # (r, (a, y), (p, d))
        gram_in = self.load_diagonal_blocks(torch.matmul(core_t, mixed).reshape(t, t), s)
        inp = _solve_least_squares(gram_in, rhs_in).reshape(n, s, t).transpose(1, 2)
        inp, tri = _canonical_qr(inp)
        core = torch.matmul(core.reshape(n, s * k, s), tri.transpose(1, 2)).reshape(n, s, k, s)
        return self.fit_cores(out, inp, core, projected, out_gram)

    @property
    def iterative_cores(self) -> bool:
        """Whether sweeps improve the cores by CG instead of solving for them exactly."""
        n, s = self.n_blocks, self.s
        return self.orthonormal_out and n > 2 and n * s * s > _DIRECT_LIMIT and not self.exact

    def polish(self, state: _State) -> _State:
        """The state's factors with their optimal cores: solved exactly when ``R s^2`` is at most
        ``_POLISH_DIRECT_LIMIT``, else by ``_POLISH_CG_ITERATIONS`` warm-started CG iterations."""
        out_t = state.out.transpose(1, 2).reshape(self.t, self.u)
        exact = self.n_blocks * self.s ** 2 <= _POLISH_DIRECT_LIMIT
        return self.fit_cores(state.out, state.inp, state.core, out_t @ self.target_out, out_t @ out_t.T,
                              exact=exact, cg_iterations=_POLISH_CG_ITERATIONS)

    def fit_cores(self, out: torch.Tensor, inp: torch.Tensor, core: torch.Tensor, projected: torch.Tensor,
                  out_gram: torch.Tensor, exact: bool = False, cg_iterations: int | None = None) -> _State:
        """Cores for the given factors (``projected = C^T W``, ``out_gram = C^T C``), and the error."""
        n, s, k, t = self.n_blocks, self.s, self.k, self.t
        # normal equations sum_p (C_r^T C_p) X_p (B_p^T B_r) + lam D_r(X_r) = C_r^T W B_r, where D_r (the
        # diagonal block, C_r^T C_r x B_r^T B_r) is the identity for orthonormal factors
        rhs = torch.matmul(projected.view(n, s * k, t), inp).view(n, s, k, s)
        in_all = inp.transpose(0, 1).reshape(t, t)
        in_gram = in_all.T @ in_all
        if exact:
            core, applied = self.direct(rhs, out_gram, in_gram), None
        elif cg_iterations is not None:
            core, applied = self.conjugate_gradient(core, rhs, out_gram, in_gram, cg_iterations)
        else:
            core, applied = self.solve_cores(core, rhs, out_gram, in_gram)
        # ||W - W_hat||^2 = ||W||^2 - 2 <G, rhs> + <G, N(G)> (``applied`` includes the penalty term)
        if applied is None:
            applied = self.normal_apply(core, out_gram, in_gram)
        elif self.penalty:
            applied = applied - self.penalty * core
        flat = core.reshape(-1)
        error_sq = self.norm_sq - 2.0 * float(torch.vdot(flat, rhs.reshape(-1))) + float(
            torch.vdot(flat, applied.reshape(-1)))
        if error_sq < 1e-4 * self.norm_sq:  # cancellation: measure small errors directly
            error_sq = self.direct_error_sq(out, inp, core)
        if self.orthonormal_out:   # ||C_r G_r B_r^T|| = ||G_r|| for orthonormal factors
            block_sq = float(torch.vdot(flat, flat))
        else:
            block_sq = float(torch.linalg.vector_norm(torch.matmul(out, core.reshape(n, s, k * s)))) ** 2
        return self.scored(out, inp, core, max(error_sq, 0.0) ** 0.5 / self.norm_sq ** 0.5,
                           block_sq / self.norm_sq)

    def direct_error_sq(self, out: torch.Tensor, inp: torch.Tensor, core: torch.Tensor) -> float:
        n, s, k, u, t = self.n_blocks, self.s, self.k, self.u, self.t
        design = torch.matmul(core.reshape(n, s * k, s), inp.transpose(1, 2)).reshape(t, k * t)
        residual = torch.addmm(self.target_out, out.transpose(0, 1).reshape(u, t), design, alpha=-1.0)
        return float(torch.vdot(residual.reshape(-1), residual.reshape(-1)))

    # ------------------------------------------------------------------------------------ core solvers
    def normal_apply(self, x: torch.Tensor, out_gram: torch.Tensor, in_gram: torch.Tensor) -> torch.Tensor:
        """``N(X)_r = sum_p (C_r^T C_p) X_p (B_p^T B_r)`` for X in the (R, s, k, s) layout."""
        n, s, k, t = self.n_blocks, self.s, self.k, self.t
        right = torch.matmul(x.reshape(n, s * k, s), in_gram.view(n, s, t))   # (p, c, y, (r, b))
        right = _relaid(right.view(t, k, n, s), (2, 0, 1, 3), (n, t, k * s))  # (r, (p, c), (y, b))
        return torch.matmul(out_gram.view(n, s, t), right).view(n, s, k, s)

    def solve_cores(self, core: torch.Tensor, rhs: torch.Tensor, out_gram: torch.Tensor,
                    in_gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """New cores from the warm start ``core``, and ``N(cores)`` when it comes for free (else None)."""
        n, s = self.n_blocks, self.s
        if not self.orthonormal_out or n * s * s <= _DIRECT_LIMIT or (self.exact and n > 2):
            return self.direct(rhs, out_gram, in_gram), None
        if n == 1:                          # orthonormal factors: the normal matrix is (1 + lam) I
            return rhs / (1.0 + self.penalty), rhs
        if n == 2:
            return self.stein(rhs, out_gram, in_gram), None
        return self.conjugate_gradient(core, rhs, out_gram, in_gram)

    def normal_matrix(self, out_gram: torch.Tensor, in_gram: torch.Tensor) -> torch.Tensor:
        """The (R s^2)-square matrix of the penalised core normal equations, index (r, a, b), (p, c, d)."""
        n, s = self.n_blocks, self.s
        size = n * s * s
        out4, in4 = out_gram.reshape(n, s, n, s), in_gram.reshape(n, s, n, s)
        normal = torch.einsum("rapc,pdrb->rabpcd", out4, in4).reshape(size, size)
        return self.load_diagonal_blocks(normal, s * s)

    def direct(self, rhs: torch.Tensor, out_gram: torch.Tensor, in_gram: torch.Tensor) -> torch.Tensor:
        """Exact joint solve of the (R s^2)-square normal equations (k right-hand sides)."""
        n, s, k = self.n_blocks, self.s, self.k
        solved = _solve_least_squares(self.normal_matrix(out_gram, in_gram),
                                      rhs.permute(0, 1, 3, 2).reshape(n * s * s, k))
        return solved.reshape(n, s, s, k).permute(0, 1, 3, 2).contiguous()

    def penalised_operator(self, out_gram: torch.Tensor,
                           in_gram: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """``X -> N(X) + lam X`` (orthonormal factors). For blocks of size 1 or 2 (with R s^2 at most
        ``_MATRIX_LIMIT``) the matrix is formed once and applied by one matmul: the two-sided product
        ``normal_apply`` would relay a (t, t, k) intermediate at every application (20-30% of a step
        of a 512-channel conv); for larger blocks the matrix costs more than it saves."""
        n, s, k = self.n_blocks, self.s, self.k
        size = n * s * s
        if s > 2 or size > _MATRIX_LIMIT:
            return lambda x: self.normal_apply(x, out_gram, in_gram) + self.penalty * x
        normal = self.normal_matrix(out_gram, in_gram)
        return lambda x: (normal @ x.permute(0, 1, 3, 2).reshape(size, k)).view(n, s, s, k).permute(
            0, 1, 3, 2)

    def stein(self, rhs: torch.Tensor, out_gram: torch.Tensor, in_gram: torch.Tensor) -> torch.Tensor:
        """Two orthonormal blocks: c X_1 + A X_2 D = P_1, A^T X_1 D^T + c X_2 = P_2 (A = C_1^T C_2,
        D = B_2^T B_1, c = 1 + lam) reduce to the Stein equation X_1 - (A A^T) X_1 (D^T D) / c^2 =
        (P_1 - A P_2 D / c) / c, solved in the eigenbases of A A^T and D^T D."""
        s, k = self.s, self.k
        cross_out, cross_in = out_gram[:s, s:], in_gram[s:, :s]

        def sandwich(left: torch.Tensor, x: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
            return torch.matmul(torch.matmul(left, x.reshape(s, k * s)).view(s, k, s), right)

        c = 1.0 + self.penalty
        first, second = rhs[0], rhs[1]
        folded = (first - sandwich(cross_out, second, cross_in) / c) / c
        values_out, vectors_out = torch.linalg.eigh(cross_out @ cross_out.T)
        values_in, vectors_in = torch.linalg.eigh(cross_in.T @ cross_in)
        rotated = sandwich(vectors_out.T, folded, vectors_in)
        denominator = 1.0 - values_out[:, None, None] * values_in / c ** 2
        rotated = torch.where(denominator > 1e-13, rotated / denominator.clamp_min(1e-13), 0.0)
        first = sandwich(vectors_out, rotated, vectors_in.T)
        second = (second - sandwich(cross_out.T, first, cross_in.T)) / c
        return torch.stack([first, second])

    def conjugate_gradient(self, core: torch.Tensor, rhs: torch.Tensor, out_gram: torch.Tensor,
                           in_gram: torch.Tensor, iterations: int | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """A few CG iterations on the (penalised) core normal equations from the warm start ``core``;
        also the operator applied to the result, ``N(core) + lam core``."""
        operator = self.penalised_operator(out_gram, in_gram)
        residual = rhs - operator(core)
        rr = float(torch.vdot(residual.reshape(-1), residual.reshape(-1)))
        direction = residual
        floor = (1e-15 * self.norm_sq) ** 2
        for _ in range(_CG_ITERATIONS if iterations is None else iterations):
            if rr <= floor:
                break
            applied = operator(direction)
            curvature = float(torch.vdot(direction.reshape(-1), applied.reshape(-1)))
            if curvature <= 0.0:
                break
            alpha = rr / curvature
            core = core + alpha * direction
            residual = residual - alpha * applied
            rr_next = float(torch.vdot(residual.reshape(-1), residual.reshape(-1)))
            direction = residual + (rr_next / rr) * direction
            rr = rr_next
        return core, rhs - residual


class _Extrapolation:
    """Adaptive momentum on (input factors, cores) between consecutive ALS points.

    A sweep from ``Y = X_k + beta (X_k - X_{k-1})`` is accepted only if its error is below ``X_k``'s by at
    least ``tol``; otherwise the plain sweep from ``X_k`` is also computed and the better of the two is
    kept (so a step never does worse than plain ALS would from the same point, and the error never
    grows). beta grows after a success and shrinks after a failure (Ang & Gillis, 2019).
    """

    def __init__(self) -> None:
        self.beta, self.beta_max = _BETA_START, _BETA_CAP
        self.accepted = self.rejected = 0       # sweeps from an extrapolated point kept / discarded

    def step(self, als: _ALS, current: _State, previous: _State | None, tol: float) -> _State:
        if previous is None:
            return als.sweep(current.inp, current.core)
        beta = self.beta
        trial = als.sweep(current.inp + beta * (current.inp - previous.inp),
                          current.core + beta * (current.core - previous.core))
        if trial.objective < current.objective and current.objective - trial.objective >= tol:
            self.accepted += 1
            self.beta_max = min(_BETA_CAP, self.beta_max * _BETA_MAX_GROWTH)
            self.beta = min(self.beta_max, beta * _BETA_GROWTH)
            return trial
        self.rejected += 1
        self.beta_max, self.beta = beta, beta / _BETA_SHRINK
        plain = als.sweep(current.inp, current.core)
        return trial if trial.objective < plain.objective else plain


class _Blocks:
    """The HOOI state: C (u, t), B (t, t) and the cores (R, s, s, k), k = kh*kw spatial positions."""

    def __init__(self, start: BTDResult) -> None:
        n_blocks, u, s = start.out_factors.shape
        t = start.in_factors.shape[1]
        self.kernel = tuple(start.cores.shape[3:])
        self.n_blocks, self.s = n_blocks, s
        self.out_all = start.out_factors.permute(1, 0, 2).reshape(u, t).clone()
        self.in_all = start.in_factors.permute(1, 0, 2).reshape(t, t).clone()
        self.cores = start.cores.reshape(n_blocks, s, s, -1).clone()

    def result(self, errors: list[float], initial_error: float, converged: bool) -> BTDResult:
        u, t = self.out_all.shape
        n_blocks, s = self.n_blocks, self.s
        return BTDResult(self.cores.reshape(n_blocks, s, s, *self.kernel).contiguous(),
                         self.out_all.reshape(u, n_blocks, s).permute(1, 0, 2).contiguous(),
                         self.in_all.reshape(t, n_blocks, s).permute(1, 0, 2).contiguous(),
                         errors, initial_error, converged)


def _hooi_bases(tensor: torch.Tensor, in_basis: torch.Tensor,
                rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One HOOI update of a rank-(rank, rank) Tucker-2 on the output and input modes (pytorch backend):
    the new output basis, the new input basis, and the tensor projected on the new output basis."""
    projected = multi_mode_dot(tensor, [in_basis], modes=[IN_MODE], transpose=True)
    out_basis = _leading_left_singular_vectors(tl.unfold(projected, OUT_MODE), rank)
    projected = multi_mode_dot(tensor, [out_basis], modes=[OUT_MODE], transpose=True)
    in_basis = _leading_left_singular_vectors(tl.unfold(projected, IN_MODE), rank)
    return out_basis, in_basis, projected


def _hooi_step(target: torch.Tensor, blocks: _Blocks) -> torch.Tensor:
    """One higher-order orthogonal iteration step for a single block (s = t): a partial Tucker."""
    with pytorch_backend():
        out_basis, in_basis, projected = _hooi_bases(target, _orthonormal_basis(blocks.in_all), blocks.s)
        core = multi_mode_dot(projected, [in_basis], modes=[IN_MODE], transpose=True)
        blocks.out_all, blocks.in_all, blocks.cores = out_basis, in_basis, core[None]
        return multi_mode_dot(core, [out_basis, in_basis], modes=[OUT_MODE, IN_MODE])


# Tuning of the ALS (measured on PaperNet's conv2..conv4, see benchmarks/bench_btd.py):
_DIRECT_LIMIT = 128          # exact joint core solve when R * s^2 is at most this
_CG_ITERATIONS = 3           # CG iterations per step for larger core systems (R > 2)
_POLISH_DIRECT_LIMIT = 2048  # the final cores are solved exactly up to this R * s^2, else by CG:
_POLISH_CG_ITERATIONS = 30   # iterations of the final core polish beyond that size
_MATRIX_LIMIT = 2048         # CG applies the formed normal matrix up to this R * s^2
_GREEDY_HOOI_STEPS = 2      # HOOI refinements of each block of the greedy start
#: The default ridge phases of the ALS (module docstring; benchmarks/RESULTS.md has the measurements).
RIDGE_SCHEDULE: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4)
#: Names the algorithm behind the defaults; cached decompositions made by another are refused.
ALGORITHM = ("ridge-phase ALS (1e-1, 1e-2, 1e-3, 1e-4) from the svd, greedy and 2 random starts compared "
             "at lam 1e-3, 2026-12-02")
#: The default starts: the ALS runs from each and keeps the lowest ``error^2 + SELECTION_PENALTY rho^2``.
STARTS: tuple[str, ...] = ("svd", "greedy", "random", "random")
#: The penalty at which the starts' results are compared (the third ridge phase's): a start whose blocks
#: are larger must beat the others' error by more (at error 0.55, rho 3.6 against 2.8 needs 0.004).
SELECTION_PENALTY = 1e-3
#: The documented settings for layers of a few hundred channels (ResNet-18's 128-512): the stopping rule at
#: tol 1e-3 instead of the paper's 1e-6, float32, the svd start only (the greedy start's per-block
#: decompositions cost R passes over the weight), the caller's threads. Measured (benchmarks/RESULTS.md,
#: ResNet-18 section): all 19 eligible ResNet-18 convs in every power-of-2 group size within about 2 minutes
#: on 2 cores; on the random-weight layer3.1.conv2 at s = 8 the error is 0.727 at tol 1e-3 against 0.717 at
#: 1e-4 and 0.712 at 1e-5 (22, 62 and 153 steps).
LARGE_LAYER_OPTIONS: dict = {"tol": 1e-3, "dtype": torch.float32, "init": "svd", "num_threads": None}
_BETA_START, _BETA_GROWTH, _BETA_MAX_GROWTH, _BETA_SHRINK, _BETA_CAP = 0.5, 1.1, 1.1, 1.5, 3.0


@contextlib.contextmanager
def _intra_op_threads(count: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (None: leave it as it is)."""
    previous = torch.get_num_threads()
    if count is None or count == previous:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def btd(weight: torch.Tensor, group_size: int, *, tol: float = 1e-6, max_iter: int = 500_000,
        init: str | Sequence[str] | BTDResult = STARTS, random_state: int | torch.Generator | None = None,
        method: str = "auto", dtype: torch.dtype = torch.float64, accelerate: bool = True,
        exact_cores: bool = False, num_threads: int | None = 1,
        ridge: Sequence[float] = RIDGE_SCHEDULE) -> BTDResult:
    """Block Term Decomposition of a conv weight for one group size.

    Parameters
    ----------
    weight : Tensor (u, t, kh, kw)
        The convolution weight (PyTorch layout: out, in, kh, kw).
    group_size : int
        ``s``; must divide ``t``. There are ``t / s`` blocks.
    tol : float
        Stop when the relative error (ALS: each ridge phase's relative objective) decreases by less
        than this in one step.
    max_iter : int
        Maximum number of steps.
    init : {'svd', 'greedy', 'random'}, a sequence of these, or BTDResult
        A sequence (default ``STARTS = ('svd', 'greedy', 'random', 'random')``): decompose from each
        start and keep the result with the lowest ``error^2 + SELECTION_PENALTY rho^2`` (BTD has local
        minima; module docstring); the random starts draw one after the other from ``random_state``.
        'greedy': blocks fitted one after another to the residual of the previous ones (the first sweep
        of the authors' scheme; one SVD of the residual per block: slow beyond a few hundred channels);
        'svd': block r starts from the r-th slice of the leading singular vectors of each mode;
        'random': Gaussian factors drawn from ``random_state``; a BTDResult of a group size that
        divides ``group_size``: warm start from its (exactly representable) expansion, so the
        error can only improve on it.
    random_state : int, torch.Generator or None
        Seed or generator for ``init='random'``.
    method : {'auto', 'als', 'hooi'}
        'als': alternating least squares over all blocks at once (factors, then cores);
        'hooi': higher-order orthogonal iteration, only for one block (s = t), the algorithm of
        TensorLy's ``partial_tucker``; 'auto': 'hooi' for one block, else 'als'.
    dtype : torch.dtype
        Working precision (float64 by default); the result is returned in this dtype.
    accelerate : bool
        ALS only: adaptive momentum between steps in every ridge phase but the last (module
        docstring). ``False``: one plain sweep per step throughout.
    exact_cores : bool
        ALS only: solve the cores' normal equations exactly at every step whatever their size
        (``R s^2`` unknowns per kernel position; slow beyond a few hundred). By default they are
        exact when ``R s^2 <= 128`` or ``R <= 2``; otherwise a few warm-started CG iterations improve
        them in each step and the last step of the last phase solves them exactly (up to
        ``R s^2 = 2048``; 30 CG iterations beyond), so the returned cores are the optimum of the final
        objective for the returned factors.
    num_threads : int or None
        Intra-op threads (``torch.set_num_threads``) while iterating, restored afterwards; None keeps
        the caller's setting. The default 1 is fastest for conv-sized weights (process-wide setting:
        other threads of the process see it during the call).
    ridge : sequence of float
        ALS only: the penalties ``lam`` of its phases, decreasing (module docstring). Phase i lowers
        ``||W - W_hat||^2 + lam_i sum_r ||W_r||^2`` until it decreases by less than ``tol`` (relative,
        as the error) and hands its point to the next; the last phase's ``lam`` should be 0 (the
        paper's objective, judged by the paper's stopping rule). ``(0.0,)``: plain ALS, one phase
        (degenerates on trained weights: benchmarks/RESULTS.md).

    Examples
    --------
    >>> w = torch.randn(16, 8, 3, 3, generator=torch.Generator().manual_seed(0))
    >>> result = btd(w, 2)
    >>> result.converged, result.block_norm_ratio < 3.0, round(result.error, 2) < 1.0
    (True, True, True)

    Returns
    -------
    BTDResult
    """
    return _btd(weight, group_size, tol=tol, max_iter=max_iter, init=init, random_state=random_state,
                method=method, dtype=dtype, accelerate=accelerate, exact_cores=exact_cores,
                num_threads=num_threads, ridge=ridge)


def _btd(weight: torch.Tensor, group_size: int, *, tol: float = 1e-6, max_iter: int = 500_000,
         init: str | Sequence[str] | BTDResult = STARTS, random_state: int | torch.Generator | None = None,
         method: str = "auto", dtype: torch.dtype = torch.float64, accelerate: bool = True,
         exact_cores: bool = False, num_threads: int | None = 1, ridge: Sequence[float] = RIDGE_SCHEDULE,
         svd_bases: tuple[torch.Tensor, torch.Tensor] | None = None) -> BTDResult:
    """:func:`btd`, with the svd start's bases given (``_svd_bases`` of the weight in ``dtype``) or not."""
    _check_weight(weight)
    check_group_size(weight.shape[1], group_size, "group size")
    if tol < 0 or max_iter < 0:
        raise ValueError(f"tol and max_iter must be non-negative, got tol={tol}, max_iter={max_iter}")
    ridge = _check_ridge(ridge)
    if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
        raise ValueError(f"num_threads must be a positive integer or None, got {num_threads!r}")
    n_blocks = weight.shape[1] // group_size
    if method == "auto":
        method = "hooi" if n_blocks == 1 else "als"
    if method not in ("als", "hooi"):
        raise ValueError(f"method must be 'auto', 'als' or 'hooi', got {method!r}")
    if method == "hooi" and n_blocks != 1:
        raise ValueError(f"method 'hooi' needs a single block (group size = {weight.shape[1]}), "
                         f"got {n_blocks}")
    generator = random_state
    if not isinstance(random_state, torch.Generator):
        generator = torch.Generator().manual_seed(0 if random_state is None else int(random_state))
    with _intra_op_threads(num_threads):
        target = weight.detach().to(dtype)
        u, t = target.shape[:2]
        flat_target = target.reshape(u, t, -1)
        norm = torch.linalg.vector_norm(flat_target)
        best: BTDResult | None = None
        # one block: HOOI from the SVD (the greedy start of one block is the same Tucker-2)
        for choice in (_starts(init)[:1] if method == "hooi" else _starts(init)):
            start = _initialise(target, group_size, choice, generator, svd_bases)
            initial_error = float(torch.linalg.vector_norm(target - start.reconstruct()) / norm)
            if method == "hooi":
                result = _run_hooi(flat_target, start, tol, max_iter, initial_error)
            else:
                result = _run_als(flat_target, start, tol, max_iter, initial_error, accelerate, exact_cores,
                                  ridge)
            result.start = choice if isinstance(choice, str) else "warm"
            result.weight_norm = float(norm)              # block_norm_ratio (the selection score) needs it
            if best is None or _selection_score(result) < _selection_score(best):
                best = result
    assert best is not None
    return best


#: The keyword options of btd (what btd_series passes on).
_BTD_OPTIONS = tuple(inspect.signature(btd).parameters)[2:]


def _starts(init: str | Sequence[str] | BTDResult) -> list[str | BTDResult]:
    """The starts named by ``init`` (one clear line when it names none or an unknown one)."""
    if isinstance(init, (str, BTDResult)):
        return [init]
    starts = list(init) if isinstance(init, Sequence) else []
    if not starts or not all(isinstance(s, str) and s in ("svd", "greedy", "random") for s in starts):
        raise ValueError(f"init must be 'svd', 'greedy', 'random', a sequence of these or a BTDResult, "
                         f"got {init!r}")
    return starts


def _selection_score(result: BTDResult) -> float:
    """How the starts are compared: ``error^2 + SELECTION_PENALTY rho^2`` (lower is better)."""
    return result.error ** 2 + SELECTION_PENALTY * result.block_norm_ratio ** 2


def _check_ridge(ridge: Sequence[float]) -> tuple[float, ...]:
    """The ridge phases as floats; one clear line when they are not a non-empty, non-increasing sequence of
    non-negative numbers."""
    try:
        phases = tuple(float(value) for value in ridge)
    except (TypeError, ValueError):
        raise ValueError(f"ridge must be a sequence of non-negative penalties such as {RIDGE_SCHEDULE}, "
                         f"got {ridge!r}") from None
    if not phases or any(not value >= 0.0 or value == float("inf") for value in phases) or any(
            later > earlier for earlier, later in zip(phases, phases[1:])):
        raise ValueError(f"ridge must be a non-empty, non-increasing sequence of finite penalties >= 0 "
                         f"such as {RIDGE_SCHEDULE} (the default; (0.0,) is plain ALS), got {ridge!r}")
    return phases


def _run_hooi(target: torch.Tensor, start: BTDResult, tol: float, max_iter: int,
              initial_error: float) -> BTDResult:
    blocks = _Blocks(start)
    norm = torch.linalg.vector_norm(target)
    previous = initial_error
    errors: list[float] = []
    converged = False
    for _ in range(max_iter):
        approximation = _hooi_step(target, blocks)
        error = float(torch.linalg.vector_norm(target - approximation) / norm)
        errors.append(error)
        if previous - error < tol:
            converged = True
            break
        previous = error
    result = blocks.result(errors, initial_error, converged)
    result.objectives, result.phase_steps = list(errors), [len(errors)]
    return result


def _run_als(target: torch.Tensor, start: BTDResult, tol: float, max_iter: int, initial_error: float,
             accelerate: bool, exact_cores: bool, ridge: Sequence[float]) -> BTDResult:
    """ALS through the ridge phases; each phase runs until its objective decreases by less than ``tol``."""
    als = _ALS(target, start.n_blocks, start.group_size, tuple(start.cores.shape[3:]), exact_cores)
    current = als.state(start, initial_error)
    errors: list[float] = []
    objectives: list[float] = []
    phase_steps: list[int] = []
    converged = False
    steps_left = max_iter
    for phase, penalty in enumerate(ridge):
        final = phase == len(ridge) - 1
        als.penalty = float(penalty)
        current, previous = als.rescore(current), None
        momentum = _Extrapolation()
        phase_done = False
        phase_steps.append(0)
        while steps_left > 0 and not phase_done:
            phase_steps[-1] += 1
            steps_left -= 1
            # momentum in every phase but the last of several (where it would speed the creep into a swamp)
            new = (momentum.step(als, current, previous, tol) if accelerate and (not final or len(ridge) == 1)
                   else als.sweep(current.inp, current.core))
            if not new.objective <= current.objective:  # rounding near an exact fit, or NaN: keep the better
                new = current
            previous, current = current, new
            errors.append(new.error)
            objectives.append(new.objective)
            phase_done = previous.objective - new.objective < tol
            if final and als.iterative_cores and (phase_done or steps_left == 0):
                # the last step: better cores for the final factors (the stopping rule then judges it)
                polished = als.polish(new)
                if polished.objective <= new.objective:
                    current = new = polished
                    errors[-1], objectives[-1] = new.error, new.objective
                phase_done = previous.objective - new.objective < tol
        if not phase_done:
            break                                   # max_iter reached inside this phase
        converged = final
    return als.result(current, errors, initial_error, converged, objectives, phase_steps)


def btd_series(weight: torch.Tensor, group_sizes: Sequence[int], *, workers: int = 1,
               **btd_options) -> dict[int, BTDResult]:
    """BTD for every group size of a series: each size decomposed on its own, warm-started only if needed.

    The paper decomposes every fixed configuration on its own, so each size is decomposed cold (from
    ``init``, with ``btd_options``) and that result is kept when its error is at most the previous
    size's. Otherwise (a local minimum above it) the size is decomposed again warm-started from the
    previous result (its expansion is an exact representation, so the error can only improve on it;
    the warm start runs the final ridge phase only), and if even that is above, the previous result
    expanded is kept (the same approximation in larger blocks). So errors never increase with the group
    size, and each kept result is the size's own decomposition whenever that one respects the order.
    The start bases of ``init='svd'`` are computed once for the whole series.

    ``workers > 1`` decomposes that many sizes at once in threads, each with one intra-op thread
    (``num_threads`` is then ignored and the process's torch threads are 1 meanwhile): on 2 cores
    this is faster than one decomposition at a time on 2 intra-op threads, whose small batched
    products hardly parallelise. The results are the same. :func:`btd_series_many` does the same for
    several layers at once.

    Examples
    --------
    >>> w = torch.randn(8, 8, 3, 3, generator=torch.Generator().manual_seed(0))
    >>> series = btd_series(w, [1, 2, 4, 8], tol=1e-4)
    >>> errors = [series[s].error for s in (1, 2, 4, 8)]
    >>> all(a >= b for a, b in zip(errors, errors[1:])), errors[-1] < 1e-6
    (True, True)
    """
    return btd_series_many({"weight": weight}, {"weight": group_sizes}, workers=workers,
                           **btd_options)["weight"]


def btd_series_many(weights: Mapping[str, torch.Tensor], group_sizes: Mapping[str, Sequence[int]], *,
                    workers: int = 1, **btd_options) -> dict[str, dict[int, BTDResult]]:
    """:func:`btd_series` of several layers (``weights[name]`` with ``group_sizes[name]``), their cold
    decompositions all in one pool of ``workers`` threads (the costliest first), so that no core idles
    at the end of a layer. Returns ``{name: {group size: BTDResult}}``; the results equal
    ``btd_series`` layer by layer.

    >>> g = torch.Generator().manual_seed(0)
    >>> ws = {"a": torch.randn(8, 8, 3, 3, generator=g), "b": torch.randn(16, 8, 1, 1, generator=g)}
    >>> out = btd_series_many(ws, {"a": [1, 2, 8], "b": [4, 8]}, workers=2, tol=1e-4)
    >>> sorted(out), sorted(out["a"]), sorted(out["b"])
    (['a', 'b'], [1, 2, 8], [4, 8])
    """
    if set(weights) != set(group_sizes):
        raise ValueError(f"weights and group_sizes must name the same layers, got {sorted(weights)} and "
                         f"{sorted(group_sizes)}")
    unknown = set(btd_options) - set(_BTD_OPTIONS)
    if unknown:
        raise TypeError(f"btd_series got options that btd does not take: {sorted(unknown)}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    sizes = {name: _series_sizes(sizes) for name, sizes in group_sizes.items()}
    starts = _starts(btd_options.get("init", STARTS))
    uses_svd = any(isinstance(start, str) and start == "svd" for start in starts)
    bases: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = {}
    with _intra_op_threads(btd_options.get("num_threads", 1)):
        for name, weight in weights.items():
            _check_weight(weight)
            for s in sizes[name]:
                check_group_size(weight.shape[1], s, "group size")
            bases[name] = (_svd_bases(weight.detach().to(btd_options.get("dtype", torch.float64)))
                           if uses_svd else None)
    tasks = [(name, s) for name in weights for s in sizes[name]]

    def cold(task: tuple[str, int], options: dict) -> BTDResult:
        name, s = task
        return _btd(weights[name], s, **options, svd_bases=bases[name])

    if workers > 1:
        # costliest first (one step costs about u t^2 k, times a few for the smaller group sizes)
        order = sorted(tasks, key=lambda task: -weights[task[0]].numel() * weights[task[0]].shape[1])
        with _intra_op_threads(1), ThreadPoolExecutor(workers) as pool:
            options = {**btd_options, "num_threads": None}
            colds = dict(zip(order, pool.map(lambda task: cold(task, options), order)))
    else:
        colds = {task: cold(task, btd_options) for task in tasks}
    final_phase = tuple(btd_options.get("ridge", RIDGE_SCHEDULE))[-1:]
    series: dict[str, dict[int, BTDResult]] = {}
    for name, weight in weights.items():
        results: dict[int, BTDResult] = {}
        previous: BTDResult | None = None
        for s in sizes[name]:
            result = colds[(name, s)]
            if previous is not None and result.error > previous.error:
                # the warm start runs the final ridge phase only: the earlier ones would move it off its start
                result = btd(weight, s, **{**btd_options, "init": previous, "ridge": final_phase})
                if result.error > previous.error:
                    result = previous.expand(s)
                    result.converged = False
            previous = results[s] = result
        series[name] = results
    return series


def _series_sizes(group_sizes: Sequence[int]) -> list[int]:
    """The sizes of a series, ascending; one clear line unless distinct and each dividing the next."""
    sizes = sorted(set(int(s) for s in group_sizes))
    if len(sizes) != len(group_sizes):
        raise ValueError(f"group sizes must be distinct, got {list(group_sizes)}")
    for small, large in zip(sizes, sizes[1:]):
        if large % small != 0:
            raise ValueError(f"group size {small} does not divide {large}: each size of a series must divide "
                             "the next")
    return sizes
