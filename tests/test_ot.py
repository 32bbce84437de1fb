"""Tests for scferry.ot: log-domain unbalanced Sinkhorn and the top-k plan accumulator."""

import doctest
import math
import warnings

import numpy as np
import pytest
import torch

ot = pytest.importorskip("ot")  # POT, reference implementation only

import scferry.ot as sot  # noqa: E402
from scferry.ot import TopKPlan, UOTResult, unbalanced_sinkhorn  # noqa: E402

INF = float("inf")
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
]


def _problem(n, m, seed, mass_b=1.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = rng.normal(size=(m, 3)) + 0.5
    M = ((x[:, None] - y[None]) ** 2).sum(-1)
    M /= M.max()
    a = rng.uniform(0.2, 1.0, n)
    a /= a.sum()
    b = rng.uniform(0.2, 1.0, m)
    b *= mass_b / b.sum()
    return M, a, b


def _pot(a, b, M, eps, rho, reg_type, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # POT warns that reg_type="entropy" overwrites c
        return ot.unbalanced.sinkhorn_unbalanced(
            a, b, M, eps, rho, method="sinkhorn", reg_type=reg_type, log=True, **kw
        )


def _t(x, device="cpu", dtype=torch.float64):
    return torch.as_tensor(x, dtype=dtype, device=device)


# --------------------------------------------------------------------------- POT agreement


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reg_type", ["entropy", "kl"])
@pytest.mark.parametrize(
    "n,m,eps,rho,seed",
    [
        (7, 5, 0.1, 0.5, 0),
        (40, 25, 0.05, 1.0, 1),
        (20, 33, 0.2, 2.0, 2),
        (30, 18, 0.05, INF, 3),
        (12, 9, 0.1, (INF, 1.0), 4),
    ],
)
def test_matches_pot(device, reg_type, n, m, eps, rho, seed):
    balanced = rho == INF
    M, a, b = _problem(n, m, seed, mass_b=1.0 if balanced else 1.7)
    itermax = 50_000
    P_ref, log = _pot(a, b, M, eps, rho, reg_type, numItermax=itermax, stopThr=1e-13)
    assert len(log["err"]) < itermax and log["err"][-1] < 1e-13, "POT did not converge"
    res = unbalanced_sinkhorn(
        _t(M, device), _t(a, device), _t(b, device),
        eps=eps, rho=rho, reg_type=reg_type, max_iter=itermax, tol=1e-12,
    )
    assert isinstance(res, UOTResult) and res.converged
    assert res.plan.device.type == device and res.plan.dtype == torch.float64
    assert res.plan.shape == (n, m)
    np.testing.assert_allclose(res.plan.cpu().numpy(), P_ref, rtol=0, atol=1e-5)
    # tighter than required: both solve the same fixed point
    np.testing.assert_allclose(res.plan.cpu().numpy(), P_ref, rtol=1e-7, atol=1e-12)
    # potentials share POT's log["logu"] convention
    np.testing.assert_allclose(res.log_u.cpu().numpy(), log["logu"], atol=1e-8)
    np.testing.assert_allclose(res.log_v.cpu().numpy(), log["logv"], atol=1e-8)


def test_reg_types_differ():
    # guards against reg_type being ignored: with non-uniform a, b the two problems differ
    M, a, b = _problem(10, 8, 5, mass_b=1.5)
    p_ent = unbalanced_sinkhorn(_t(M), _t(a), _t(b), eps=0.1, reg_type="entropy").plan
    p_kl = unbalanced_sinkhorn(_t(M), _t(a), _t(b), eps=0.1, reg_type="kl").plan
    assert (p_ent - p_kl).abs().max() > 1e-3


def test_uniform_default_marginals():
    M, _, _ = _problem(9, 6, 6)
    r0 = unbalanced_sinkhorn(_t(M), eps=0.1, tol=1e-12, max_iter=10_000)
    r1 = unbalanced_sinkhorn(_t(M), _t(np.full(9, 1 / 9)), _t(np.full(6, 1 / 6)), eps=0.1,
                             tol=1e-12, max_iter=10_000)
    torch.testing.assert_close(r0.plan, r1.plan, rtol=0, atol=1e-14)


def test_docstring_example():
    res = doctest.testmod(sot, verbose=False)
    assert res.attempted > 0 and res.failed == 0


# --------------------------------------------------------------------------- batching


@pytest.mark.parametrize("reg_type", ["entropy", "kl"])
def test_batched_equals_individual(reg_type):
    g = torch.Generator().manual_seed(0)
    B1, B2, n, m = 2, 3, 11, 7
    C = torch.rand(B1, B2, n, m, generator=g, dtype=torch.float64)
    a = torch.rand(B1, B2, n, generator=g, dtype=torch.float64) + 0.1
    b = torch.rand(m, generator=g, dtype=torch.float64) + 0.1  # broadcast over the batch
    kw = dict(eps=0.05, rho=0.7, reg_type=reg_type, tol=1e-12, max_iter=20_000)
    res = unbalanced_sinkhorn(C, a, b, **kw)
    assert res.plan.shape == (B1, B2, n, m)
    assert res.log_u.shape == (B1, B2, n) and res.log_v.shape == (B1, B2, m)
    assert res.converged
    for i in range(B1):
        for j in range(B2):
            single = unbalanced_sinkhorn(C[i, j], a[i, j], b, **kw)
            torch.testing.assert_close(res.plan[i, j], single.plan, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------- stability


def _diag_cost(n, dtype):
    i = torch.arange(n, dtype=dtype)
    return 1e3 * (1 + (i[:, None] - i[None, :]) ** 2 / n**2)  # ~1e3, diagonal cheapest


@pytest.mark.parametrize("eps", [1e-3, 1e-4])
def test_tiny_eps_exp_domain_fails_but_log_domain_does_not(eps):
    n = 20
    C = _diag_cost(n, torch.float64)
    a = np.full(n, 1 / n)
    # The exp-domain scaling iteration underflows: exp(-C/eps) == 0.
    P_exp, _ = _pot(a, a, C.numpy(), eps, INF, "entropy", numItermax=100)
    assert (not np.isfinite(P_exp).all()) or P_exp.sum() == 0.0
    with np.errstate(all="ignore"):  # a plain exp-domain loop as well
        K = np.exp(-C.numpy() / eps)
        u, v = np.ones(n), np.ones(n)
        for _ in range(10):
            u = a / (K @ v)
            v = a / (K.T @ u)
        P_loop = u[:, None] * K * v[None, :]
    assert not np.isfinite(P_loop).all()

    for dtype in (torch.float64, torch.float32):
        res = unbalanced_sinkhorn(C.to(dtype), eps=eps, rho=INF, max_iter=1000)
        P = res.plan
        assert res.converged and P.dtype == dtype
        assert torch.isfinite(P).all() and (P >= 0).all()
        tol = 1e-10 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(P.sum(1), torch.full((n,), 1 / n, dtype=dtype), rtol=0, atol=tol)
        torch.testing.assert_close(P.sum(0), torch.full((n,), 1 / n, dtype=dtype), rtol=0, atol=tol)
        assert torch.diagonal(P).sum() > 1 - 1e-5  # concentrates on the diagonal


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("reg_type", ["entropy", "kl"])
def test_tiny_eps_unbalanced_stays_finite(dtype, reg_type):
    n, eps, rho = 16, 1e-3, 1e4
    C = _diag_cost(n, dtype)
    res = unbalanced_sinkhorn(C, eps=eps, rho=rho, reg_type=reg_type, max_iter=300)
    P = res.plan
    assert torch.isfinite(P).all() and (P >= 0).all()
    assert torch.isfinite(res.log_u).all() and torch.isfinite(res.log_v).all()
    assert math.isfinite(res.err)
    off = P - torch.diag(torch.diagonal(P))
    assert off.max() == 0  # off-diagonal costs exceed the diagonal by >= 3.9 -> exp(-3900)
    # optimum keeps ~exp(-C_ii / (2 rho)) = 95% of the mass; never more than the marginal
    rows = P.sum(1) * n
    assert (rows > 0.9).all() and (rows <= 1 + 1e-5).all()


# --------------------------------------------------------------------------- zero masses


@pytest.mark.parametrize("reg_type", ["entropy", "kl"])
@pytest.mark.parametrize("rho", [1.0, INF])
def test_zero_masses(reg_type, rho):
    M, a, b = _problem(10, 8, 7)
    a[[0, 4]] = 0.0
    b[[3]] = 0.0
    if rho == INF:
        b *= a.sum() / b.sum()
    res = unbalanced_sinkhorn(_t(M), _t(a), _t(b), eps=0.1, rho=rho, reg_type=reg_type,
                              tol=1e-12, max_iter=20_000)
    P = res.plan
    assert res.converged
    assert torch.isfinite(P).all() and not torch.isnan(res.log_u).any() and not torch.isnan(res.log_v).any()
    assert (P[[0, 4]] == 0).all() and (P[:, 3] == 0).all()
    # the rest equals the problem with the zero-mass cells removed
    ia, ib = a > 0, b > 0
    ref = unbalanced_sinkhorn(_t(M[ia][:, ib]), _t(a[ia]), _t(b[ib]), eps=0.1, rho=rho,
                              reg_type=reg_type, tol=1e-12, max_iter=20_000).plan
    torch.testing.assert_close(P[ia][:, ib], ref, rtol=1e-9, atol=1e-13)
    # and warmstarting from potentials with -inf entries works
    again = unbalanced_sinkhorn(_t(M), _t(a), _t(b), eps=0.1, rho=rho, reg_type=reg_type,
                                tol=1e-12, warmstart=(res.log_u, res.log_v))
    assert again.converged and torch.isfinite(again.plan).all()


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(C=torch.tensor([[0.0, float("nan")], [1.0, 0.0]])), "C contains non-finite"),
        (dict(C=torch.tensor([[0.0, float("inf")], [1.0, 0.0]])), "C contains non-finite"),
        (dict(a=torch.tensor([0.5, -0.1])), "a contains negative"),
        (dict(b=torch.tensor([0.5, float("nan"), 0.1])), "b contains non-finite"),
        (dict(a=torch.tensor([float("inf"), 0.1])), "a contains non-finite"),
        (dict(a=torch.zeros(2)), "a has zero total mass"),
        (dict(b=torch.zeros(3)), "b has zero total mass"),
        (dict(a=torch.ones(3)), r"shape mismatch: a has shape \(3,\).*\(2, 3\)"),
        (dict(b=torch.ones(2)), r"shape mismatch: b has shape \(2,\).*\(2, 3\)"),
        (dict(a=torch.ones(4, 2)), r"shape mismatch: a has shape \(4, 2\)"),
        (dict(C=torch.ones(3)), r"shape mismatch: C must have shape"),
        (dict(eps=0.0), "eps must be"),
        (dict(eps=-1.0), "eps must be"),
        (dict(eps=float("nan")), "eps must be"),
        (dict(rho=0.0), "rho must be > 0"),
        (dict(rho=-2.0), "rho must be > 0"),
        (dict(rho=(1.0, 0.0)), "rho must be > 0"),
        (dict(reg_type="l2"), "unknown reg_type 'l2'"),
        (dict(rho=INF, b=torch.ones(3)), "balanced OT"),
        (dict(eps=1e-300, C=torch.full((2, 3), 1e10)), "overflows"),
        (dict(warmstart=(torch.zeros(2), torch.zeros(4))), "warmstart log_v"),
        (dict(warmstart=(torch.tensor([0.0, float("nan")]), torch.zeros(3))), "NaN"),
    ],
)
def test_invalid_inputs(kwargs, match):
    args = dict(C=torch.rand(2, 3), a=None, b=None)
    args.update(kwargs)
    C, a, b = args.pop("C"), args.pop("a"), args.pop("b")
    with pytest.raises(ValueError, match=match):
        unbalanced_sinkhorn(C, a, b, **args)


# --------------------------------------------------------------------------- dtype, warm start, no-grad


def test_float32_and_half():
    M, a, b = _problem(25, 19, 8, mass_b=1.3)
    r64 = unbalanced_sinkhorn(_t(M), _t(a), _t(b), eps=0.05, tol=1e-10, max_iter=10_000)
    r32 = unbalanced_sinkhorn(_t(M, dtype=torch.float32), _t(a, dtype=torch.float32),
                              _t(b, dtype=torch.float32), eps=0.05, tol=1e-5, max_iter=10_000)
    assert r32.plan.dtype == torch.float32 and r32.log_u.dtype == torch.float32
    assert r32.converged and torch.isfinite(r32.plan).all()
    torch.testing.assert_close(r32.plan.double(), r64.plan, rtol=1e-3, atol=1e-6)
    for half in (torch.float16, torch.bfloat16):  # iterated in float32, returned as given
        rh = unbalanced_sinkhorn(_t(M, dtype=half), eps=0.05)
        assert rh.plan.dtype == half and torch.isfinite(rh.plan).all()


@pytest.mark.parametrize("reg_type", ["entropy", "kl"])
def test_warmstart_and_max_iter(reg_type):
    M, a, b = _problem(30, 22, 9, mass_b=0.8)
    kw = dict(eps=0.05, rho=1.0, reg_type=reg_type, tol=1e-8, check_every=10, max_iter=10_000)
    cold = unbalanced_sinkhorn(_t(M), _t(a), _t(b), **kw)
    assert cold.converged and cold.n_iter > 10
    warm = unbalanced_sinkhorn(_t(M), _t(a), _t(b), warmstart=(cold.log_u, cold.log_v), **kw)
    assert warm.converged and warm.n_iter <= kw["check_every"]
    torch.testing.assert_close(warm.plan, cold.plan, rtol=1e-6, atol=1e-10)

    short = unbalanced_sinkhorn(_t(M), _t(a), _t(b), **{**kw, "max_iter": 7})
    assert not short.converged and short.n_iter == 7
    assert math.isfinite(short.err) and short.err > kw["tol"]
    assert torch.isfinite(short.plan).all()


def test_no_grad_detached():
    C = torch.rand(5, 4, dtype=torch.float64, requires_grad=True)
    res = unbalanced_sinkhorn(C, eps=0.1)
    assert not res.plan.requires_grad and res.plan.grad_fn is None


# --------------------------------------------------------------------------- TopKPlan


def _random_updates(n_source, n_target, n_updates, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_updates):
        bs = int(torch.randint(1, min(n_source, 24) + 1, (1,), generator=g))
        bt = int(torch.randint(1, min(n_target, 24) + 1, (1,), generator=g))
        src = torch.randperm(n_source, generator=g)[:bs]
        tgt = torch.randperm(n_target, generator=g)[:bt]
        plan = torch.rand(bs, bt, generator=g, dtype=dtype)
        plan[plan < 0.2] = 0.0  # exact zeros occur in real plans
        yield src, tgt, plan


@pytest.mark.parametrize("extra_k", [0, 5])
def test_topk_exact_when_k_covers_sources(extra_k):
    n_source, n_target = 37, 29
    tk = TopKPlan(n_source, n_target, k=n_source + extra_k)
    dense = torch.zeros(n_target, n_source)  # (target, source) as to_csr documents
    for src, tgt, plan in _random_updates(n_source, n_target, 200, seed=0):
        plan_copy = plan.clone()
        tk.update(src, tgt, plan)
        assert torch.equal(plan, plan_copy), "update must not modify its input"
        dense[tgt[:, None], src[None, :]] += plan.t()
    csr = tk.to_csr()
    assert csr.shape == (n_target, n_source)
    np.testing.assert_allclose(csr.toarray(), dense.numpy(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(tk.row_mass(), dense.sum(1), rtol=1e-5, atol=1e-6)
    # no duplicate source in a row, empty slots are consistent
    for r in range(n_target):
        kept = tk.indices[r][tk.indices[r] >= 0]
        assert kept.unique().numel() == kept.numel()
    assert (tk.values[tk.indices < 0] == 0).all()


def test_topk_small_k_keeps_largest():
    n_source, n_target, k = 60, 40, 4
    g = torch.Generator().manual_seed(1)
    # each target has k "true" sources with large mass; everything else is small noise
    true_src = torch.stack([torch.randperm(n_source, generator=g)[:k] for _ in range(n_target)])
    strong = torch.zeros(n_target, n_source, dtype=torch.bool)
    strong[torch.arange(n_target)[:, None], true_src] = True
    tk = TopKPlan(n_source, n_target, k=k)
    dense = torch.zeros(n_target, n_source)
    for _ in range(60):
        src = torch.randperm(n_source, generator=g)[:30]
        tgt = torch.randperm(n_target, generator=g)[:20]
        plan = 1e-3 * torch.rand(30, 20, generator=g)
        s = strong[tgt[:, None], src[None, :]].t()
        plan[s] = 1.0 + torch.rand(int(s.sum()), generator=g)
        tk.update(src, tgt, plan)
        dense[tgt[:, None], src[None, :]] += plan.t()
    assert strong.logical_and(dense >= 1).sum(1).eq(k).all(), "test setup: every true pair seen"
    top_val, top_idx = dense.topk(k, dim=1)
    kept_idx, order = tk.indices.sort(dim=1)
    ref_idx, ref_order = top_idx.sort(dim=1)
    assert torch.equal(kept_idx, ref_idx)
    torch.testing.assert_close(tk.values.gather(1, order), top_val.gather(1, ref_order),
                               rtol=1e-6, atol=1e-6)
    assert tk.to_csr().nnz == n_target * k


def test_topk_eviction_is_order_independent_of_batch_layout():
    # a source already kept is merged, not duplicated, when it returns in a later batch
    tk = TopKPlan(5, 2, k=2, dtype=torch.float64)
    tk.update(torch.tensor([3, 1]), torch.tensor([0]), torch.tensor([[0.5], [0.2]], dtype=torch.float64))
    tk.update(torch.tensor([4, 3]), torch.tensor([0, 1]), torch.tensor([[0.3, 0.0], [0.1, 0.7]], dtype=torch.float64))
    dense = tk.to_csr().toarray()
    np.testing.assert_allclose(dense[0], [0, 0, 0, 0.6, 0.3])  # 1 (0.2) evicted by 4 (0.3)
    np.testing.assert_allclose(dense[1], [0, 0, 0, 0.7, 0])   # zero mass is not kept
    assert tk.indices[1].tolist().count(-1) == 1


def test_topk_memory_and_state_dict():
    n_source, n_target, k = 1000, 300, 50
    tk = TopKPlan(n_source, n_target, k=k, dtype=torch.float32)
    assert tk.nbytes == n_target * k * (8 + 4)
    assert tk.indices.shape == (n_target, k) and tk.indices.dtype == torch.int64
    assert (tk.indices == -1).all() and (tk.values == 0).all()
    for src, tgt, plan in _random_updates(n_source, n_target, 30, seed=3):
        tk.update(src, tgt, plan)
    sd = tk.state_dict()
    assert set(sd) == {"n_source", "n_target", "k", "indices", "values"}
    assert all(isinstance(v, (int, torch.Tensor)) for v in sd.values())
    back = TopKPlan.from_state_dict(sd)
    assert (back.n_source, back.n_target, back.k) == (n_source, n_target, k)
    assert torch.equal(back.indices, tk.indices) and torch.equal(back.values, tk.values)
    assert back.nbytes == tk.nbytes
    # the copy is independent
    back.update(torch.tensor([0]), torch.tensor([0]), torch.tensor([[5.0]]))
    assert not torch.equal(back.values, tk.values)
    with pytest.raises(ValueError, match="shape mismatch"):
        TopKPlan.from_state_dict({**sd, "k": 10})


@pytest.mark.parametrize(
    "src,tgt,plan,match",
    [
        ([0, 1], [0], torch.ones(3, 1), "shape mismatch"),
        ([0, 10], [0], torch.ones(2, 1), "src_idx out of range"),
        ([0, 1], [-1], torch.ones(2, 1), "tgt_idx out of range"),
        ([1, 1], [0], torch.ones(2, 1), "src_idx contains duplicate"),
        ([0, 1], [2, 2], torch.ones(2, 2), "tgt_idx contains duplicate"),
        ([0, 1], [0], -torch.ones(2, 1), "negative"),
        ([0, 1], [0], torch.full((2, 1), float("nan")), "non-finite"),
        ([[0, 1]], [0], torch.ones(2, 1), "must be 1-D"),
        (torch.tensor([0.0, 1.0]), [0], torch.ones(2, 1), "integer"),
    ],
)
def test_topk_invalid_update(src, tgt, plan, match):
    tk = TopKPlan(10, 5, k=3)
    with pytest.raises(ValueError, match=match):
        tk.update(torch.as_tensor(src), torch.as_tensor(tgt), plan)
    assert (tk.indices == -1).all()  # state untouched


def test_topk_with_solver_plans():
    # end to end: minibatch UOT plans accumulated into the global plan
    n_source, n_target = 50, 40
    g = torch.Generator().manual_seed(4)
    xs, xt = torch.randn(n_source, 5, generator=g), torch.randn(n_target, 5, generator=g)
    tk = TopKPlan(n_source, n_target, k=n_source)
    dense = torch.zeros(n_target, n_source)
    for _ in range(10):
        src = torch.randperm(n_source, generator=g)[:16]
        tgt = torch.randperm(n_target, generator=g)[:16]
        C = torch.cdist(xs[src], xt[tgt]) ** 2
        P = unbalanced_sinkhorn(C / C.max(), eps=0.05).plan
        tk.update(src, tgt, P)
        dense[tgt[:, None], src[None, :]] += P.t()
    np.testing.assert_allclose(tk.to_csr().toarray(), dense.numpy(), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------- device waits
@pytest.mark.parametrize("eps", [0.5, 1e-3])
def test_deferred_underflow_test_matches_immediate(monkeypatch, eps):
    """The deferred underflow test (used on CUDA, one wait per convergence check) gives the plan
    of the immediate one: bit-identical where no product underflows (eps 0.5), equal to float
    precision where blocks are recomputed with the full log-sum-exp (eps 1e-3 underflows)."""
    g = torch.Generator().manual_seed(0)
    C = torch.rand(2, 40, 30, generator=g, dtype=torch.float64) * 3
    ref = sot.unbalanced_sinkhorn(C, eps=eps, rho=1.0, max_iter=300, tol=1e-9)
    monkeypatch.setattr(sot, "_DEFER_UNDERFLOW_TEST", True)
    got = sot.unbalanced_sinkhorn(C, eps=eps, rho=1.0, max_iter=300, tol=1e-9)
    if eps == 0.5:
        assert torch.equal(ref.plan, got.plan) and ref.n_iter == got.n_iter
    else:
        torch.testing.assert_close(got.plan, ref.plan, rtol=1e-6, atol=1e-12)
        assert abs(got.n_iter - ref.n_iter) <= 10


def test_topk_update_without_validation_is_the_same():
    g = torch.Generator().manual_seed(1)
    a, b = TopKPlan(50, 40, k=5), TopKPlan(50, 40, k=5)
    for _ in range(6):
        src = torch.randperm(50, generator=g)[:12]
        tgt = torch.randperm(40, generator=g)[:9]
        w = torch.rand(12, 9, generator=g)
        a.update(src, tgt, w)
        b.update(src, tgt, w, validate=False)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.values, b.values)
    with pytest.raises(ValueError, match="negative"):
        a.update(torch.arange(2), torch.arange(2), -torch.ones(2, 2))


def _full_lse_sinkhorn(C, a, b, eps, rho, reg_type, n_iter):
    """The generalized Sinkhorn of the docstring with a full log-sum-exp every iteration (KL:
    the reference measure a b^T enters through the potentials, so zero masses stay -inf)."""
    tau = rho / (rho + eps)
    logK = -C / eps
    log_a, log_b = a.log(), b.log()
    kl = reg_type == "kl"
    w_a, w_b = (log_a, log_b) if kl else (0, 0)
    lu, lv = torch.zeros_like(log_a), torch.zeros_like(log_b)
    for _ in range(n_iter):
        lu = tau * ((0 if kl else log_a) - torch.logsumexp(logK + (lv + w_b)[..., None, :], -1))
        lv = tau * ((0 if kl else log_b) - torch.logsumexp(logK + (lu + w_a)[..., :, None], -2))
    return torch.exp(logK + (lu + w_a)[..., :, None] + (lv + w_b)[..., None, :])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("reg_type", ["entropy", "kl"])
def test_wide_cost_range_keeps_the_matrix_vector_path(monkeypatch, dtype, reg_type):
    """Costs spanning 0..11 at eps 0.01 (uniPort's guided minibatch OT): the fast products
    underflow against the initial kernels; the solver rebuilds them around the current potentials
    instead of falling back to a full log-sum-exp, and returns the full-log-sum-exp plan (zero
    masses included)."""
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(2, 60, 4, generator=g), torch.randn(2, 50, 4, generator=g)
    C = (torch.cdist(x, y) ** 2).double()
    C = 11 * C / C.amax((-1, -2), keepdim=True)
    a = torch.rand(2, 60, generator=g, dtype=torch.float64)
    b = torch.rand(2, 50, generator=g, dtype=torch.float64)
    a[0, :5] = 0
    b[1, -3:] = 0
    a, b = a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True)
    ref = _full_lse_sinkhorn(C, a, b, 0.01, 1.0, reg_type, 200)

    def no_full_lse(*args, **kw):
        raise AssertionError("full log-sum-exp used")
    monkeypatch.setattr(torch, "logsumexp", no_full_lse)
    res = unbalanced_sinkhorn(C.to(dtype), a.to(dtype), b.to(dtype), eps=0.01, rho=1.0,
                              reg_type=reg_type, max_iter=200, tol=0)
    assert res.n_iter == 200 and res.plan.dtype == dtype
    tol = dict(rtol=1e-8, atol=1e-14) if dtype == torch.float64 else dict(rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(res.plan.double(), ref, **tol)
    assert (res.plan[0, :5] == 0).all() and (res.plan[1, :, -3:] == 0).all()
