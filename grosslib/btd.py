"""Block Term Decomposition (BTD) of a convolution weight, and the bottleneck weights it defines.

A conv weight ``W`` of shape ``(u, t, kh, kw)`` is approximated, for a group size ``s`` dividing
``t``, by ``R = t / s`` rank-``(s, s)`` Tucker blocks acting on the output and input modes::

    W ~ sum_r  G_r  x_out C_r  x_in B_r,   G_r: (s, s, kh, kw),  C_r: (u, s),  B_r: (t, s)

The algorithm is block-coordinate higher-order orthogonal iteration: one *step* visits every block
in turn and, on the residual left by the other blocks, replaces its output factor, its input factor
and its core by their optimal values given the rest (one HOOI sweep of a rank-``(s, s)`` partial
Tucker). Each of these sub-updates is an exact minimisation, so the error never grows. With one
block (``s = t``) a step *is* a HOOI step, the algorithm of TensorLy's ``partial_tucker``.

Stopping rule (method.md): stop when the relative error ``||W - W_hat||_F / ||W||_F`` decreases by
less than ``tol`` in one step, or after ``max_iter`` steps. Work is done in float64 on the pytorch
backend of TensorLy.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import tensorly as tl
import torch
from tensorly.tenalg import multi_mode_dot

from .psi import check_group_size

OUT_MODE, IN_MODE = 0, 1


@contextlib.contextmanager
def pytorch_backend() -> Iterator[None]:
    """Run the enclosed TensorLy calls on its pytorch backend, restoring the previous backend."""
    previous = tl.get_backend()
    tl.set_backend("pytorch")
    try:
        yield
    finally:
        tl.set_backend(previous)


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
    initial_error : float
        The error of the initialisation, before the first step.
    converged : bool
        True when the stopping rule on ``tol`` fired before ``max_iter``.
    """

    cores: torch.Tensor
    out_factors: torch.Tensor
    in_factors: torch.Tensor
    errors: list[float] = field(default_factory=list)
    initial_error: float = float("nan")
    converged: bool = False

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
        return BTDResult(cores, merge(self.out_factors), merge(self.in_factors),
                         list(self.errors), self.initial_error, self.converged)

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> BTDResult:
        """A copy with tensors moved/cast."""
        conv = lambda x: x.to(dtype=dtype, device=device)  # noqa: E731
        return BTDResult(conv(self.cores), conv(self.out_factors), conv(self.in_factors),
                         list(self.errors), self.initial_error, self.converged)


def reconstruct(cores: torch.Tensor, out_factors: torch.Tensor, in_factors: torch.Tensor) -> torch.Tensor:
    """``sum_r G_r x_out C_r x_in B_r`` for stacked cores (R, s, s, kh, kw) and factors."""
    return torch.einsum("roa,rabyx,rib->oiyx", out_factors, cores, in_factors)


def relative_error(weight: torch.Tensor, approximation: torch.Tensor) -> float:
    """``||W - W_hat||_F / ||W||_F``."""
    return float(torch.linalg.vector_norm(weight - approximation) / torch.linalg.vector_norm(weight))


def _leading_left_singular_vectors(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    """Orthonormal (rows x rank) basis of the leading left singular subspace, zero-padded if short."""
    u, _, _ = torch.linalg.svd(matrix, full_matrices=False)
    u = u[:, :rank]
    if u.shape[1] < rank:
        u = torch.cat([u, u.new_zeros(u.shape[0], rank - u.shape[1])], dim=1)
    return u


def _orthonormal_basis(matrix: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis with the same number of columns spanning (at least) ``matrix``'s columns."""
    q, _ = torch.linalg.qr(matrix, mode="reduced")
    return q


def _check_weight(weight: torch.Tensor) -> None:
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"btd expects a conv weight of shape (out, in, kh, kw), got {shape}")
    if not torch.isfinite(weight).all():
        raise ValueError("the weight contains NaN or Inf values; cannot decompose it")
    if torch.count_nonzero(weight) == 0:
        raise ValueError("the weight is all zeros; its relative error is undefined")


def _initialise(weight: torch.Tensor, group_size: int, init: str | BTDResult,
                generator: torch.Generator | None) -> BTDResult:
    u, t, kh, kw = weight.shape
    n_blocks = t // group_size
    if isinstance(init, BTDResult):
        start = init.to(dtype=weight.dtype, device=weight.device)
        if start.out_factors.shape[1] != u or start.in_factors.shape[1] != t or start.cores.shape[3:] != (kh, kw):
            raise ValueError("the BTDResult given as init does not match the weight's shape")
        if start.group_size > group_size:
            raise ValueError(f"cannot warm-start group size {group_size} from the larger {start.group_size}")
        return start.expand(group_size) if start.group_size != group_size else start
    if init == "svd":
        with pytorch_backend():
            in_basis = _leading_left_singular_vectors(tl.unfold(weight, IN_MODE), t)
            out_basis = _leading_left_singular_vectors(tl.unfold(weight, OUT_MODE), t)
        in_factors = in_basis.T.reshape(n_blocks, group_size, t).transpose(1, 2)
        out_factors = out_basis.T.reshape(n_blocks, group_size, u).transpose(1, 2)
    elif init == "random":
        in_factors = torch.randn(n_blocks, t, group_size, generator=generator, dtype=weight.dtype)
        out_factors = torch.randn(n_blocks, u, group_size, generator=generator, dtype=weight.dtype)
        in_factors, out_factors = in_factors.to(weight.device), out_factors.to(weight.device)
    else:
        raise ValueError(f"init must be 'svd', 'random' or a BTDResult, got {init!r}")
    # optimal cores for the chosen factors, block by block on the residual
    cores = weight.new_zeros(n_blocks, group_size, group_size, kh, kw)
    residual = weight.clone()
    for r in range(n_blocks):
        c_r, b_r = _orthonormal_basis(out_factors[r]), _orthonormal_basis(in_factors[r])
        out_factors[r], in_factors[r] = c_r, b_r
        cores[r] = torch.einsum("oa,oiyx,ib->abyx", c_r, residual, b_r)
        residual -= torch.einsum("oa,abyx,ib->oiyx", c_r, cores[r], b_r)
    return BTDResult(cores, out_factors.contiguous(), in_factors.contiguous())


def _solve_least_squares(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``gram^-1 rhs`` for a symmetric PSD ``gram``; a minimum-norm solution when it is singular."""
    factor, info = torch.linalg.cholesky_ex(gram)
    if int(info) == 0:
        return torch.cholesky_solve(rhs, factor)
    return torch.linalg.pinv(gram, hermitian=True) @ rhs


class _Blocks:
    """All blocks stacked: C (u, t), B (t, t), G (R, s, s, k) with k = kh*kw spatial positions."""

    def __init__(self, start: BTDResult) -> None:
        n_blocks, u, s = start.out_factors.shape
        t = start.in_factors.shape[1]
        self.kernel = tuple(start.cores.shape[3:])
        self.n_blocks, self.s = n_blocks, s
        self.out_all = start.out_factors.permute(1, 0, 2).reshape(u, t).clone()
        self.in_all = start.in_factors.permute(1, 0, 2).reshape(t, t).clone()
        self.cores = start.cores.reshape(n_blocks, s, s, -1).clone()
        self.diag = torch.arange(n_blocks, device=self.cores.device)

    def dense_core(self) -> torch.Tensor:
        """The block-diagonal core as a dense (t, t, k) tensor."""
        n_blocks, s, k = self.n_blocks, self.s, self.cores.shape[-1]
        dense = self.cores.new_zeros(n_blocks, s, n_blocks, s, k)
        dense[self.diag, :, self.diag] = self.cores
        return dense.reshape(n_blocks * s, n_blocks * s, k)

    def block_diagonal(self, dense: torch.Tensor) -> torch.Tensor:
        """The diagonal blocks (R, s, s, k) of a dense (t, t, k) tensor."""
        n_blocks, s = self.n_blocks, self.s
        return dense.reshape(n_blocks, s, n_blocks, s, -1)[self.diag, :, self.diag]

    def result(self, errors: list[float], initial_error: float, converged: bool) -> BTDResult:
        u, t = self.out_all.shape
        n_blocks, s = self.n_blocks, self.s
        return BTDResult(self.cores.reshape(n_blocks, s, s, *self.kernel).contiguous(),
                         self.out_all.reshape(u, n_blocks, s).permute(1, 0, 2).contiguous(),
                         self.in_all.reshape(t, n_blocks, s).permute(1, 0, 2).contiguous(),
                         errors, initial_error, converged)


def _als_step(target: torch.Tensor, blocks: _Blocks) -> torch.Tensor:
    """One ALS step over all blocks at once: output factors, input factors, then cores.

    Each update is the exact least-squares minimiser given the other two, so the error never
    grows. ``target`` is (u, t, k); returns the new approximation (u, t, k).
    """
    u, t, k = target.shape
    core = blocks.dense_core()
    with pytorch_backend():
        # output factors: target_(out) ~ C @ unfold_out(core x_in B)
        design = tl.unfold(multi_mode_dot(core, [blocks.in_all], modes=[IN_MODE]), OUT_MODE)
        blocks.out_all = _solve_least_squares(design @ design.T, design @ tl.unfold(target, OUT_MODE).T).T
        # input factors: target_(in) ~ B @ unfold_in(core x_out C)
        design = tl.unfold(multi_mode_dot(core, [blocks.out_all], modes=[OUT_MODE]), IN_MODE)
        blocks.in_all = _solve_least_squares(design @ design.T, design @ tl.unfold(target, IN_MODE).T).T
        projected = multi_mode_dot(target, [blocks.out_all, blocks.in_all], modes=[OUT_MODE, IN_MODE],
                                   transpose=True)
    out_gram, in_gram = blocks.out_all.T @ blocks.out_all, blocks.in_all.T @ blocks.in_all
    rhs = blocks.block_diagonal(projected)                     # (R, s, s, k)
    n_blocks, s = blocks.n_blocks, blocks.s
    if n_blocks * s * s <= 1024:
        # cores: the joint normal equations over every block, solved exactly
        out4, in4 = out_gram.reshape(n_blocks, s, n_blocks, s), in_gram.reshape(n_blocks, s, n_blocks, s)
        normal = torch.einsum("rapc,pdrb->rabpcd", out4, in4).reshape(n_blocks * s * s, -1)
        blocks.cores = _solve_least_squares(normal, rhs.reshape(n_blocks * s * s, k)).reshape(rhs.shape)
    else:
        # few large blocks: exact update of each core in turn given the others (Gauss-Seidel)
        for r in range(n_blocks):
            rows = slice(r * s, (r + 1) * s)
            others = torch.einsum("arc,rcdy,rdb->aby",
                                  out_gram[rows].reshape(s, n_blocks, s), blocks.cores,
                                  in_gram[:, rows].reshape(n_blocks, s, s))
            own = torch.einsum("ac,cdy,db->aby", out_gram[rows, rows], blocks.cores[r], in_gram[rows, rows])
            rest = rhs[r] - (others - own)
            left = _solve_least_squares(out_gram[rows, rows], rest.permute(0, 2, 1).reshape(s, -1))
            left = left.reshape(s, k, s).permute(0, 2, 1)      # (C_r^T C_r)^-1 rest
            solved = _solve_least_squares(in_gram[rows, rows], left.permute(1, 0, 2).reshape(s, -1))
            blocks.cores[r] = solved.reshape(s, s, k).permute(1, 0, 2)
    with pytorch_backend():
        return multi_mode_dot(blocks.dense_core(), [blocks.out_all, blocks.in_all], modes=[OUT_MODE, IN_MODE])


def _hooi_step(target: torch.Tensor, blocks: _Blocks) -> torch.Tensor:
    """One higher-order orthogonal iteration step for a single block (s = t): a partial Tucker."""
    s = blocks.s
    with pytorch_backend():
        in_basis = _orthonormal_basis(blocks.in_all)
        projected = multi_mode_dot(target, [in_basis], modes=[IN_MODE], transpose=True)
        out_basis = _leading_left_singular_vectors(tl.unfold(projected, OUT_MODE), s)
        projected = multi_mode_dot(target, [out_basis], modes=[OUT_MODE], transpose=True)
        in_basis = _leading_left_singular_vectors(tl.unfold(projected, IN_MODE), s)
        core = multi_mode_dot(projected, [in_basis], modes=[IN_MODE], transpose=True)
        blocks.out_all, blocks.in_all, blocks.cores = out_basis, in_basis, core[None]
        return multi_mode_dot(core, [out_basis, in_basis], modes=[OUT_MODE, IN_MODE])


def btd(weight: torch.Tensor, group_size: int, *, tol: float = 1e-6, max_iter: int = 500_000,
        init: str | BTDResult = "svd", random_state: int | torch.Generator | None = None,
        method: str = "auto", dtype: torch.dtype = torch.float64) -> BTDResult:
    """Block Term Decomposition of a conv weight for one group size.

    Parameters
    ----------
    weight : Tensor (u, t, kh, kw)
        The convolution weight (PyTorch layout: out, in, kh, kw).
    group_size : int
        ``s``; must divide ``t``. There are ``t / s`` blocks.
    tol : float
        Stop when the relative error decreases by less than this in one step.
    max_iter : int
        Maximum number of steps.
    init : {'svd', 'random'} or BTDResult
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

    Returns
    -------
    BTDResult
    """
    _check_weight(weight)
    check_group_size(weight.shape[1], group_size, "group size")
    if tol < 0 or max_iter < 0:
        raise ValueError(f"tol and max_iter must be non-negative, got tol={tol}, max_iter={max_iter}")
    n_blocks = weight.shape[1] // group_size
    if method == "auto":
        method = "hooi" if n_blocks == 1 else "als"
    if method not in ("als", "hooi"):
        raise ValueError(f"method must be 'auto', 'als' or 'hooi', got {method!r}")
    if method == "hooi" and n_blocks != 1:
        raise ValueError(f"method 'hooi' needs a single block (group size = {weight.shape[1]}), got {n_blocks}")
    step = _hooi_step if method == "hooi" else _als_step
    generator = random_state
    if not isinstance(random_state, torch.Generator):
        generator = torch.Generator().manual_seed(0 if random_state is None else int(random_state))
    target = weight.detach().to(dtype)
    u, t = target.shape[:2]
    flat_target = target.reshape(u, t, -1)
    blocks = _Blocks(_initialise(target, group_size, init, generator))
    norm = torch.linalg.vector_norm(flat_target)
    approximation = blocks.result([], 0.0, False).reconstruct()
    previous = initial_error = float(torch.linalg.vector_norm(target - approximation) / norm)
    errors: list[float] = []
    converged = False
    for _ in range(max_iter):
        approximation = step(flat_target, blocks)
        error = float(torch.linalg.vector_norm(flat_target - approximation) / norm)
        errors.append(error)
        if previous - error < tol:
            converged = True
            break
        previous = error
    return blocks.result(errors, initial_error, converged)


def btd_series(weight: torch.Tensor, group_sizes: Sequence[int], **btd_options) -> dict[int, BTDResult]:
    """BTD for every group size of a series, each warm-started from the expansion of the one below.

    Warm starting makes the error non-increasing in the group size (a BTD of size 2s can
    represent every BTD of size s exactly). ``init``/``random_state`` apply to the smallest size.
    """
    sizes = sorted(set(int(s) for s in group_sizes))
    if len(sizes) != len(group_sizes):
        raise ValueError(f"group sizes must be distinct, got {list(group_sizes)}")
    results: dict[int, BTDResult] = {}
    previous: BTDResult | None = None
    for s in sizes:
        if previous is not None and s % previous.group_size != 0:
            raise ValueError(f"group size {previous.group_size} does not divide {s}: "
                             "each size of a series must divide the next")
        options = dict(btd_options)
        if previous is not None:
            options["init"] = previous
        previous = results[s] = btd(weight, s, **options)
    return results
