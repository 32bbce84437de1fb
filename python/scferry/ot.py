"""Optimal transport utilities in pure torch.

* :func:`unbalanced_sinkhorn` -- batched, log-domain entropic unbalanced OT
  (KL marginal relaxation), numerically stable for small ``eps``.
* :class:`TopKPlan` -- sparse top-k accumulator of a global transport plan
  built from minibatch plans, memory ``O(n_target * k)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple, Union

import torch

__all__ = ["UOTResult", "unbalanced_sinkhorn", "TopKPlan"]

_REG_TYPES = ("entropy", "kl")


@dataclass
class UOTResult:
    """Result of :func:`unbalanced_sinkhorn`.

    Attributes
    ----------
    plan : torch.Tensor, shape (..., n, m)
        Detached transport plan, finite and nonnegative.
    log_u, log_v : torch.Tensor, shapes (..., n) and (..., m)
        Log scaling vectors (dual potentials divided by ``eps``), in POT's
        ``log["logu"]``/``log["logv"]`` convention; may be ``-inf`` where a
        marginal has zero mass (``reg_type="entropy"``). Pass them back as
        ``warmstart=(log_u, log_v)``.
    n_iter : int
        Number of scaling iterations performed.
    err : float
        Max absolute change of the log potentials at the last check.
    converged : bool
        Whether ``err < tol`` was reached before ``max_iter``.
    """

    plan: torch.Tensor
    log_u: torch.Tensor
    log_v: torch.Tensor
    n_iter: int
    err: float
    converged: bool


def _as_float_tensor(x: Any, name: str, device=None, dtype=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x
    else:
        try:
            t = torch.as_tensor(x)
        except Exception as exc:  # pragma: no cover - message only
            raise ValueError(f"{name} could not be converted to a tensor: {exc}") from exc
    if t.is_complex():
        raise ValueError(f"{name} must be real, got dtype {t.dtype}")
    if dtype is None and not t.is_floating_point():
        dtype = torch.get_default_dtype()
    return t.to(device=device if device is not None else t.device, dtype=dtype or t.dtype)


def _rho_pair(rho) -> Tuple[float, float]:
    if isinstance(rho, (tuple, list)):
        if len(rho) != 2:
            raise ValueError(f"rho must be a scalar or a pair (rho_a, rho_b), got {rho!r}")
        r = (float(rho[0]), float(rho[1]))
    else:
        r = (float(rho), float(rho))
    for x in r:
        if math.isnan(x) or x <= 0:
            raise ValueError(f"rho must be > 0 (float('inf') for balanced), got {rho!r}")
    return r


def _check_marginal(x, name, size, batch_shape, C, validate: bool = True) -> torch.Tensor:
    if x is None:
        return torch.full((*batch_shape, size), 1.0 / size, device=C.device, dtype=C.dtype)
    x = _as_float_tensor(x, name, device=C.device, dtype=C.dtype)
    if x.dim() == 0 or x.shape[-1] != size:
        raise ValueError(
            f"shape mismatch: {name} has shape {tuple(x.shape)} but C has shape "
            f"{tuple(C.shape)}; expected {name}.shape[-1] == {size}"
        )
    try:
        x = x.expand(*batch_shape, size)
    except RuntimeError:
        raise ValueError(
            f"shape mismatch: {name} has shape {tuple(x.shape)} which does not broadcast "
            f"to the batch shape {tuple(batch_shape)} of C (shape {tuple(C.shape)})"
        ) from None
    if not validate:  # the value checks below each wait for the device
        return x
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    if (x < 0).any():
        raise ValueError(f"{name} contains negative masses (min {x.min().item():.3g})")
    if (x.sum(-1) <= 0).any():
        raise ValueError(f"{name} has zero total mass (all entries are 0) in at least one problem")
    return x


def _check_warm(w, name, shape, dtype, device) -> torch.Tensor:
    w = _as_float_tensor(w, f"warmstart {name}", device=device, dtype=dtype)
    try:
        w = w.expand(*shape)
    except RuntimeError:
        raise ValueError(
            f"shape mismatch: warmstart {name} has shape {tuple(w.shape)}, expected {tuple(shape)}"
        ) from None
    if torch.isnan(w).any() or (w == float("inf")).any():
        raise ValueError(f"warmstart {name} contains NaN or +inf")
    return w.clone()


# Tests set this to run the deferred underflow test (as on CUDA) on the CPU.
_DEFER_UNDERFLOW_TEST = False


@torch.no_grad()
def unbalanced_sinkhorn(
    C: torch.Tensor,
    a: Optional[torch.Tensor] = None,
    b: Optional[torch.Tensor] = None,
    *,
    eps: float = 0.1,
    rho: Union[float, Sequence[float]] = 1.0,
    reg_type: str = "entropy",
    max_iter: int = 1000,
    tol: float = 1e-6,
    check_every: int = 10,
    warmstart: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    validate: bool = True,
) -> UOTResult:
    r"""Entropic unbalanced optimal transport, log-domain Sinkhorn (batched).

    Solves, independently for every problem in the batch,

    .. math::
        \gamma^\star = \arg\min_{\gamma \geq 0} \ \langle \gamma, \mathbf{C} \rangle_F
        + \varepsilon\, \Omega(\gamma)
        + \rho\, \mathrm{KL}(\gamma \mathbf{1} \,|\, \mathbf{a})
        + \rho\, \mathrm{KL}(\gamma^T \mathbf{1} \,|\, \mathbf{b})

    with :math:`\mathrm{KL}(x|y) = \sum_i x_i \log(x_i/y_i) - x_i + y_i` and

    - ``reg_type="entropy"``: :math:`\Omega(\gamma) = \sum_{ij} \gamma_{ij}(\log\gamma_{ij} - 1)`,
    - ``reg_type="kl"``: :math:`\Omega(\gamma) = \mathrm{KL}(\gamma \,|\, \mathbf{a}\mathbf{b}^T)`,

    i.e. the same problems as POT's ``ot.unbalanced.sinkhorn_unbalanced`` with
    ``reg=eps``, ``reg_m=rho`` and the same ``reg_type``. The generalized
    Sinkhorn iterations of [1]_ are run on log scalings with
    :math:`\tau = \rho / (\rho + \varepsilon)`:

    .. math::
        \log u_i &= \tau \big(\log a_i - \mathrm{LSE}_j(\log K_{ij} + \log v_j)\big) \\
        \log v_j &= \tau \big(\log b_j - \mathrm{LSE}_i(\log K_{ij} + \log u_i)\big) \\
        \gamma_{ij} &= \exp(\log u_i + \log K_{ij} + \log v_j)

    with :math:`\log K = -\mathbf{C}/\varepsilon` (``"entropy"``) or
    :math:`\log K_{ij} = -C_{ij}/\varepsilon + \log a_i + \log b_j` (``"kl"``).
    Working with log-sum-exp never forms :math:`e^{-C/\varepsilon}`, so tiny
    ``eps`` relative to the costs does not under/overflow.

    Parameters
    ----------
    C : torch.Tensor, shape (..., n, m)
        Finite cost matrices; leading dimensions are batch dimensions. Any
        floating dtype and device; float16/bfloat16 are iterated in float32.
    a : torch.Tensor, shape (..., n), optional
        Nonnegative source masses (need not sum to 1; zeros allowed, each
        problem needs positive total mass). Broadcast over the batch.
        Default: uniform ``1/n``.
    b : torch.Tensor, shape (..., m), optional
        Nonnegative target masses, as ``a``. Default: uniform ``1/m``.
    eps : float
        Entropic regularisation strength, > 0 (same units as ``C``).
    rho : float or (float, float)
        Marginal relaxation strength, > 0; ``float("inf")`` enforces the
        marginal exactly (balanced OT; then ``a`` and ``b`` must have equal
        totals). A pair gives (source, target) strengths, e.g.
        ``(inf, 1.0)`` for semi-relaxed OT.
    reg_type : {"entropy", "kl"}
        Entropic regulariser, see above.
    max_iter : int
        Maximum number of scaling iterations.
    tol : float
        Stop when the max absolute change of ``log_u`` and ``log_v`` between
        two checks falls below ``tol`` (over the whole batch).
    check_every : int
        Iterations between convergence checks (each check syncs with the
        device).
    warmstart : (torch.Tensor, torch.Tensor), optional
        ``(log_u, log_v)`` of shapes (..., n) and (..., m), e.g. from a
        previous :class:`UOTResult` (or POT's ``log["logu"], log["logv"]``).
    validate : bool
        Check the values of ``C``, ``a`` and ``b`` (finite, nonnegative, nonzero totals). Each
        check waits for the device; a trainer whose inputs are finite by construction may skip
        them (shapes are always checked).

    Returns
    -------
    UOTResult
        ``plan`` (..., n, m), ``log_u`` (..., n), ``log_v`` (..., m) on the
        device and dtype of ``C``, plus ``n_iter``, ``err`` and
        ``converged``. Not converging within ``max_iter`` is reported with
        ``converged=False``, not raised.

    Raises
    ------
    ValueError
        For non-finite ``C``, negative/non-finite or all-zero ``a``/``b``,
        shape mismatches, ``eps <= 0``, ``rho <= 0``, unknown ``reg_type``,
        unequal masses with ``rho=inf`` on both sides, or ``C/eps`` overflowing
        the dtype.

    Examples
    --------
    >>> import torch
    >>> from scferry.ot import unbalanced_sinkhorn
    >>> C = torch.tensor([[0., 1.], [1., 0.]], dtype=torch.float64)
    >>> a = torch.tensor([.5, .5], dtype=torch.float64)
    >>> res = unbalanced_sinkhorn(C, a, a, eps=1.0, rho=1.0, reg_type="kl", tol=1e-10)
    >>> [[round(x, 7) for x in row] for row in res.plan.tolist()]
    [[0.3220536, 0.1184769], [0.1184769, 0.3220536]]
    >>> res.converged
    True

    References
    ----------
    .. [1] Chizat, L., Peyré, G., Schmitzer, B., & Vialard, F.-X. (2018).
       Scaling algorithms for unbalanced optimal transport problems.
       Mathematics of Computation, 87(314), 2563-2609.
    .. [2] Séjourné, T., Feydy, J., Vialard, F.-X., Trouvé, A., & Peyré, G.
       (2019). Sinkhorn divergences for unbalanced optimal transport.
       arXiv:1910.12958.
    .. [3] Séjourné, T., Peyré, G., & Vialard, F.-X. (2023). Unbalanced
       optimal transport, from theory to numerics. Handbook of Numerical
       Analysis, 24, 407-471.
    .. [4] Schmitzer, B. (2019). Stabilized sparse scaling algorithms for
       entropy regularized transport problems. SIAM Journal on Scientific
       Computing, 41(3), A1443-A1481.
    """
    # ---- validation (before any work) ----
    if reg_type not in _REG_TYPES:
        raise ValueError(f"unknown reg_type {reg_type!r}; expected one of {_REG_TYPES}")
    eps = float(eps)
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    rho_a, rho_b = _rho_pair(rho)
    if int(max_iter) < 1 or int(check_every) < 1:
        raise ValueError(f"max_iter and check_every must be >= 1, got {max_iter}, {check_every}")
    max_iter, check_every = int(max_iter), int(check_every)
    if not (tol >= 0):
        raise ValueError(f"tol must be >= 0, got {tol!r}")

    C = _as_float_tensor(C, "C")
    if C.dim() < 2:
        raise ValueError(f"shape mismatch: C must have shape (..., n, m), got {tuple(C.shape)}")
    out_dtype = C.dtype
    work_dtype = torch.float32 if C.dtype in (torch.float16, torch.bfloat16) else C.dtype
    C = C.to(work_dtype)
    *batch, n, m = C.shape
    if n == 0 or m == 0:
        raise ValueError(f"shape mismatch: C has an empty dimension, shape {tuple(C.shape)}")
    if validate and not torch.isfinite(C).all():
        raise ValueError("C contains non-finite values (NaN or inf)")
    a = _check_marginal(a, "a", n, batch, C, validate)
    b = _check_marginal(b, "b", m, batch, C, validate)
    if math.isinf(rho_a) and math.isinf(rho_b):
        sa, sb = a.sum(-1), b.sum(-1)
        if not torch.allclose(sa, sb, rtol=1e-5, atol=0.0):
            raise ValueError(
                "balanced OT (rho=inf on both sides) needs a.sum() == b.sum(); got "
                f"{sa.flatten()[:4].tolist()} vs {sb.flatten()[:4].tolist()}"
            )

    logK = C / (-eps)
    if validate and not torch.isfinite(logK).all():
        raise ValueError(f"C/eps overflows {work_dtype} (max |C| / eps too large); increase eps")

    if warmstart is not None:
        if len(warmstart) != 2:
            raise ValueError("warmstart must be a pair (log_u, log_v)")
        log_u = _check_warm(warmstart[0], "log_u", (*batch, n), work_dtype, C.device)
        log_v = _check_warm(warmstart[1], "log_v", (*batch, m), work_dtype, C.device)
    else:
        log_u = C.new_zeros((*batch, n))
        log_v = C.new_zeros((*batch, m))

    if C.numel() == 0:  # empty batch
        return UOTResult(C.to(out_dtype), log_u.to(out_dtype), log_v.to(out_dtype), 0, 0.0, True)

    tau_a = 1.0 if math.isinf(rho_a) else rho_a / (rho_a + eps)
    tau_b = 1.0 if math.isinf(rho_b) else rho_b / (rho_b + eps)
    log_a, log_b = a.log(), b.log()  # -inf at zero mass
    if reg_type == "entropy":
        num_a, num_b = log_a, log_b
        w_a = w_b = None
    else:
        # KL reference a b^T: log a_i cancels in the u-update, so keep it out of
        # the kernel -- u stays finite where a_i = 0 and no (-inf) - (-inf) arises.
        num_a = num_b = None
        w_a, w_b = log_a, log_b

    # Exact log-sum-exp as a matrix-vector product: with a kernel that has absorbed potentials
    # (absorption, Schmitzer 2019 [4]), LSE_j(logK_ij + x_j) =
    # r_i + s + log sum_j exp(logK_ij + y_j - r_i) exp(x_j - y_j - s), r_i = max_j(logK_ij + y_j),
    # s = max_j(x_j - y_j). Many times faster than a full logsumexp per iteration. The product
    # can only underflow when x has drifted far from the absorbed y (spread potentials against a
    # small eps: a wide cost range); then y is set to the current x and the kernel rebuilt (one
    # exp of the cost matrix, as one full logsumexp), which makes the product >= 1. As potentials
    # converge, x stays near y and rebuilds stop. The first kernels absorb y = 0.
    kern = {}

    def _absorb(dim, y):
        """Rebuild the kernel used for LSE along ``dim`` around potentials ``y`` (None: zero)."""
        if dim == -1:
            g = logK if y is None else logK + y.unsqueeze(-2)
            r = g.amax(dim=-1, keepdim=True)
            kern[dim] = (torch.exp(g - r), r.squeeze(-1), y)
        else:
            g = logK if y is None else logK + y.unsqueeze(-1)
            r = g.amax(dim=-2, keepdim=True)
            kern[dim] = (torch.exp(g - r).transpose(-1, -2), r.squeeze(-2), y)

    def _product(x, dim):
        K, r, y = kern[dim]
        d = x if y is None else torch.where(torch.isinf(y), 0.0, x - y)  # y_j = -inf: zero column
        shift = d.amax(dim=-1, keepdim=True).clamp_min(-1e30)  # all -inf -> finite shift
        prod = (K @ torch.exp(d - shift).unsqueeze(-1)).squeeze(-1)
        return prod, torch.log(prod) + r + shift

    _absorb(-1, None)
    _absorb(-2, None)

    def _lse(x, dim):
        prod, out = _product(x, dim)
        if deferred:  # checked with the convergence test, never waiting for the device here
            underflow[0] = underflow[0] | (prod <= 1e-30).any()
            return out
        if bool((prod > 1e-30).all()):
            return out
        _absorb(dim, x)
        return _product(x, dim)[1]

    def _full_lse(x, dim):
        return torch.logsumexp(logK + (x.unsqueeze(-2) if dim == -1 else x.unsqueeze(-1)), dim=dim)

    def _lse_rows(x):  # LSE_j(logK_ij + x_j)
        return _lse(x, -1)

    def _lse_cols(x):  # LSE_i(logK_ij + x_i)
        return _lse(x, -2)

    def _change(new, old):
        # -inf == -inf counts as no change; finite vs -inf as infinite change
        return torch.where(new == old, 0.0, (new - old).abs()).max()

    def _step(log_u, log_v, lse_rows, lse_cols):
        s = lse_rows(log_v if w_b is None else log_v + w_b)
        log_u = (-s if num_a is None else num_a - s) * tau_a
        s = lse_cols(log_u if w_a is None else log_u + w_a)
        log_v = (-s if num_b is None else num_b - s) * tau_b
        return log_u, log_v

    # On CUDA the fast products' underflow test is read once per convergence check (one wait for
    # the device per ``check_every`` iterations instead of two per iteration); a block in which
    # any product underflowed is recomputed from its start with the full log-sum-exp. On the CPU
    # every product is tested as it is made (no waiting involved), as before.
    deferred = C.device.type != "cpu" or _DEFER_UNDERFLOW_TEST
    underflow = [C.new_zeros((), dtype=torch.bool)]
    prev_u, prev_v = log_u, log_v
    block_start = it = 0
    err = float("inf")
    converged = False
    while it < max_iter:
        it += 1
        log_u, log_v = _step(log_u, log_v, _lse_rows, _lse_cols)
        if it % check_every == 0 or it == max_iter:
            change = torch.maximum(_change(log_u, prev_u), _change(log_v, prev_v))
            if deferred:
                change, bad = torch.stack([change, underflow[0].to(change.dtype)]).tolist()
                if bad:  # redo this block exactly
                    log_u, log_v = prev_u, prev_v
                    for _ in range(it - block_start):
                        log_u, log_v = _step(log_u, log_v, lambda x: _full_lse(x, -1),
                                             lambda x: _full_lse(x, -2))
                    change = float(torch.maximum(_change(log_u, prev_u), _change(log_v, prev_v)))
                    underflow[0] = C.new_zeros((), dtype=torch.bool)
                    _absorb(-1, log_v if w_b is None else log_v + w_b)  # the next block starts here
                    _absorb(-2, log_u if w_a is None else log_u + w_a)
            err = float(change)
            if err < tol:
                converged = True
                break
            prev_u, prev_v = log_u, log_v
            block_start = it

    lu = log_u if w_a is None else log_u + w_a
    lv = log_v if w_b is None else log_v + w_b
    plan = torch.exp(logK + lu.unsqueeze(-1) + lv.unsqueeze(-2))
    if not torch.isfinite(plan).all():  # should be unreachable after validation
        raise FloatingPointError("unbalanced_sinkhorn produced a non-finite plan")
    return UOTResult(
        plan=plan.to(out_dtype),
        log_u=log_u.to(out_dtype),
        log_v=log_v.to(out_dtype),
        n_iter=it,
        err=err,
        converged=converged,
    )


class TopKPlan:
    """Sparse top-k accumulator of a global transport plan.

    Keeps, for each of ``n_target`` target cells, the ``k`` source cells with
    the largest accumulated transported mass, summed over minibatch plans.
    Memory is ``n_target * k`` (index, value) pairs; an ``n_source x
    n_target`` matrix is never formed. Keep one instance per direction.

    Parameters
    ----------
    n_source, n_target : int
        Number of source and target cells.
    k : int
        Entries kept per target row.
    device, dtype
        Where and how the values are stored.

    Attributes
    ----------
    indices : torch.Tensor, shape (n_target, k), int64
        Source cell per slot, ``-1`` for an empty slot.
    values : torch.Tensor, shape (n_target, k)
        Accumulated mass per slot, ``0`` for an empty slot.

    Notes
    -----
    An entry evicted from a row (because ``k`` larger ones exist) loses its
    mass; if it comes back later it restarts from the new mass. With
    ``k >= n_source`` the accumulation is exact.
    """

    def __init__(self, n_source: int, n_target: int, k: int = 50, device="cpu", dtype=torch.float32):
        n_source, n_target, k = int(n_source), int(n_target), int(k)
        if n_source < 1 or n_target < 1 or k < 1:
            raise ValueError(f"n_source, n_target and k must be >= 1, got {n_source}, {n_target}, {k}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating dtype, got {dtype}")
        self.n_source, self.n_target, self.k = n_source, n_target, k
        self.indices = torch.full((n_target, k), -1, dtype=torch.int64, device=device)
        self.values = torch.zeros((n_target, k), dtype=dtype, device=device)

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def nbytes(self) -> int:
        return (self.indices.numel() * self.indices.element_size()
                + self.values.numel() * self.values.element_size())

    def __repr__(self) -> str:
        return (f"TopKPlan(n_source={self.n_source}, n_target={self.n_target}, k={self.k}, "
                f"nnz={int((self.indices >= 0).sum())}, dtype={self.dtype}, device={self.device})")

    def _check_idx(self, idx, name, size) -> torch.Tensor:
        idx = torch.as_tensor(idx, device=self.device)
        if idx.dim() != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(idx.shape)}")
        if idx.dtype.is_floating_point or idx.dtype == torch.bool or idx.is_complex():
            raise ValueError(f"{name} must be an integer tensor, got {idx.dtype}")
        idx = idx.long()
        if idx.numel() and (idx.min() < 0 or idx.max() >= size):
            raise ValueError(f"{name} out of range [0, {size}): min {int(idx.min())}, max {int(idx.max())}")
        if torch.unique(idx).numel() != idx.numel():
            raise ValueError(f"{name} contains duplicate positions")
        return idx

    @torch.no_grad()
    def update(self, src_idx, tgt_idx, plan, *, validate: bool = True) -> None:
        """Add a minibatch plan to the global plan.

        Parameters
        ----------
        src_idx : torch.Tensor, shape (B_s,)
            Unique source cell positions of the minibatch.
        tgt_idx : torch.Tensor, shape (B_t,)
            Unique target cell positions of the minibatch.
        plan : torch.Tensor, shape (B_s, B_t)
            Nonnegative minibatch plan; ``plan[i, j]`` is the mass from source
            ``src_idx[i]`` to target ``tgt_idx[j]``.
        validate : bool
            Check positions (range, duplicates) and masses (finite, nonnegative). Each check
            waits for the device; a trainer passing its own sampler's positions may skip them.

        The kept plan moves to the device of ``plan`` on the first update from there.
        """
        plan = torch.as_tensor(plan)
        if plan.device != self.device:  # the kept plan lives where the minibatch plans are made
            self.indices, self.values = self.indices.to(plan.device), self.values.to(plan.device)
        if validate:
            src_idx = self._check_idx(src_idx, "src_idx", self.n_source)
            tgt_idx = self._check_idx(tgt_idx, "tgt_idx", self.n_target)
        else:  # trusted positions from the trainer's sampler: no value checks (each waits for the device)
            src_idx = torch.as_tensor(src_idx, device=self.device).long()
            tgt_idx = torch.as_tensor(tgt_idx, device=self.device).long()
        if plan.shape != (src_idx.numel(), tgt_idx.numel()):
            raise ValueError(
                f"shape mismatch: plan has shape {tuple(plan.shape)}, expected "
                f"(len(src_idx), len(tgt_idx)) = ({src_idx.numel()}, {tgt_idx.numel()})"
            )
        plan = plan.detach().to(dtype=self.dtype)
        if validate and not torch.isfinite(plan).all():
            raise ValueError("plan contains non-finite values")
        if validate and (plan < 0).any():
            raise ValueError("plan contains negative mass")
        if plan.numel() == 0:
            return

        old_idx = self.indices[tgt_idx]  # (B_t, k)
        old_val = self.values[tgt_idx]
        # (B_t, B_s), column p <-> src_idx[p]; a copy, since it is written in place
        new_val = plan.t().clone(memory_format=torch.contiguous_format)

        # Where does each kept source sit in src_idx? (sorted search, no n_source buffer)
        sorted_src, perm = torch.sort(src_idx)
        pos = torch.searchsorted(sorted_src, old_idx).clamp_(max=sorted_src.numel() - 1)
        hit = (sorted_src[pos] == old_idx) & (old_idx >= 0)
        col = perm[pos]
        # Merge kept mass into the new candidate, then drop the old slot.
        new_val.scatter_add_(1, torch.where(hit, col, 0), torch.where(hit, old_val, 0.0))
        old_val = torch.where(hit, 0.0, old_val)
        old_idx = torch.where(hit, -1, old_idx)

        cand_idx = torch.cat([old_idx, src_idx.unsqueeze(0).expand(tgt_idx.numel(), -1)], dim=1)
        cand_val = torch.cat([old_val, new_val], dim=1)
        top_val, top_pos = torch.topk(cand_val, self.k, dim=1)
        top_idx = torch.gather(cand_idx, 1, top_pos)
        empty = top_val <= 0  # zero mass is not an entry
        self.indices[tgt_idx] = torch.where(empty, -1, top_idx)
        self.values[tgt_idx] = torch.where(empty, 0.0, top_val)

    @torch.no_grad()
    def merge(self, indices: torch.Tensor, values: torch.Tensor) -> None:
        """Replace this plan by the sum of several accumulators over the same cells (e.g. one per
        training process), given stacked as ``indices``/``values`` of shape (R, n_target, k'):
        per target row, the masses of a source present in several are added, and the ``k``
        largest sums are kept (exact when no row holds more than ``k`` distinct sources)."""
        if indices.shape != values.shape or indices.dim() != 3 or indices.shape[1] != self.n_target:
            raise ValueError(f"indices and values must have shape (R, {self.n_target}, k); got "
                             f"{tuple(indices.shape)} and {tuple(values.shape)}")
        idx = indices.to(self.device).permute(1, 0, 2).reshape(self.n_target, -1)
        val = values.to(self.device, self.dtype).permute(1, 0, 2).reshape(self.n_target, -1)
        idx, order = torch.sort(idx, dim=1)  # equal sources side by side (empty slots, -1, first)
        val = torch.gather(val, 1, order)
        start = torch.ones_like(idx, dtype=torch.bool)
        start[:, 1:] = idx[:, 1:] != idx[:, :-1]
        seg = start.cumsum(1) - 1  # run number of each entry within its row
        sums = torch.zeros_like(val).scatter_add_(1, seg, val)
        src = torch.full_like(idx, -1).scatter_(1, seg, idx)
        sums = torch.where(src >= 0, sums, 0.0)
        top_val, top_pos = torch.topk(sums, self.k, dim=1)
        empty = top_val <= 0
        self.indices = torch.where(empty, -1, torch.gather(src, 1, top_pos))
        self.values = torch.where(empty, 0.0, top_val).to(self.dtype)

    def to_csr(self):
        """Kept mass as ``scipy.sparse.csr_matrix`` of shape (n_target, n_source)."""
        import numpy as np
        import scipy.sparse as sp

        idx = self.indices.cpu()
        mask = idx >= 0
        # Built as CSR directly (row-major masking keeps rows in order): no int64 row-index
        # array and no COO-to-CSR copy of all n_target x k entries.
        indptr = np.zeros(self.n_target + 1, dtype=np.int64)
        np.cumsum(mask.sum(dim=1).numpy(), out=indptr[1:])
        cols = idx[mask].numpy()
        vals = self.values.detach().cpu()
        if vals.dtype in (torch.float16, torch.bfloat16):
            vals = vals.float()
        data = vals[mask].numpy()
        csr = sp.csr_matrix((data, cols, indptr), shape=(self.n_target, self.n_source))
        csr.sum_duplicates()  # canonical (sorted, unique columns per row), as the COO route gave
        return csr

    def row_mass(self) -> torch.Tensor:
        """Total kept mass per target, shape (n_target,)."""
        return self.values.sum(dim=1)

    def state_dict(self) -> dict:
        return {
            "n_source": self.n_source,
            "n_target": self.n_target,
            "k": self.k,
            "indices": self.indices.cpu().clone(),
            "values": self.values.detach().cpu().clone(),
        }

    @classmethod
    def from_state_dict(cls, d: dict, device=None) -> "TopKPlan":
        try:
            n_source, n_target, k = int(d["n_source"]), int(d["n_target"]), int(d["k"])
            indices, values = torch.as_tensor(d["indices"]), torch.as_tensor(d["values"])
        except KeyError as exc:
            raise ValueError(f"state dict is missing key {exc}") from None
        if indices.shape != (n_target, k) or values.shape != (n_target, k):
            raise ValueError(
                f"shape mismatch: indices {tuple(indices.shape)} / values {tuple(values.shape)}, "
                f"expected ({n_target}, {k})"
            )
        if indices.numel() and (indices.min() < -1 or indices.max() >= n_source):
            raise ValueError(f"indices out of range [-1, {n_source})")
        device = values.device if device is None else device
        obj = cls(n_source, n_target, k, device=device, dtype=values.dtype)
        obj.indices.copy_(indices.long())
        obj.values.copy_(values)
        return obj
