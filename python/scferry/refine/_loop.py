"""The iterations of ``sf.refine`` (annealed schedules, objective J, selection, early stopping)."""
from __future__ import annotations

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from ._checks import _GRAPH_K_EXTRA
from ._field import (_barycentric, _cell_shift, _centre_within_clusters, _guard, _prototypes,
                     _sharpen_field)
from ._geometry import (_batch_entropy, _graph_strain, _knn, _neighbour_mean, _overlap,
                        _trustworthiness)
from ._prealign import _auto_prealign, _prealign


def _lerp(a: float, b: float, t):
    return (1.0 - t) * a + t * b


def _run(X0_np: np.ndarray, codes_np: np.ndarray, n_batches: int, ref_idx: int, p: dict,
         max_iter: int, seed: int, dev: torch.device, progress: bool):
    rng = np.random.default_rng(seed)
    X_in = torch.from_numpy(X0_np).to(dev)
    codes = torch.from_numpy(codes_np).to(dev)
    n = X_in.shape[0]
    members = [torch.from_numpy(np.flatnonzero(codes_np == b)).to(dev) for b in range(n_batches)]

    sub = np.sort(rng.choice(n, size=min(n, p["eval_subsample"]), replace=False))
    sub_t = torch.from_numpy(sub).to(dev)
    k_ovl = min(p["k_eval"], len(sub) - 1)

    def mix_of(X, idx_sub=None):
        # Eq. 17 over all cells; above eval_subsample cells, within the fixed subsample
        if n > len(sub):
            if idx_sub is None:
                idx_sub = _knn(X[sub_t], k_ovl, seed)[1].to(dev)
            return float(_batch_entropy(idx_sub, codes[sub_t], n_batches).mean())
        _, idx = _knn(X, p["k_eval"], seed)
        return float(_batch_entropy(idx.to(dev), codes, n_batches).mean())

    d0, idx0 = (t.to(dev) for t in _knn(X_in, p["k_local"] + _GRAPH_K_EXTRA, seed))
    strength, relative_mixing = _auto_prealign(X_in, codes_np, seed)
    if p["prealign"] != "auto":
        strength = 0.0 if p["prealign"] == "none" else p["prealign"]
    X0 = X_in
    if strength > 0:
        dbar = d0.mean(1).cpu().numpy()
        rare = np.zeros(n, dtype=bool)
        for b in range(n_batches):
            rows = codes_np == b
            # tiny batches are all protected (the authors' rule)
            rare[rows] = True if rows.sum() < 32 else \
                dbar[rows] >= np.quantile(dbar[rows], p["rare_quantile"])
        X0 = torch.from_numpy(_prealign(X0_np, codes_np, ref_idx, strength, rare, seed,
                                        p["prealign_linear"], p["prealign_shift"],
                                        p["reg"])).to(dev)
        d0, idx0 = (t.to(dev) for t in _knn(X0, p["k_local"] + _GRAPH_K_EXTRA, seed))

    # fixed geometry of the (pre-aligned) start: guard graph, local scale, bridge score, rare cells
    dbar0 = d0.mean(1)
    rho = (dbar0 - dbar0.min()) / (dbar0.max() - dbar0.min() + 1e-12)
    k_h = min(15, p["k_eval"])
    idx_h = idx0[:, :k_h] if idx0.shape[1] >= k_h else _knn(X0, k_h, seed)[1].to(dev)
    H0 = _batch_entropy(idx_h, codes, n_batches) / math.log(n_batches)
    beta = 0.5 * H0.clamp(0, 1) + 0.5 * rho
    smin = _lerp(p["smin_bulk"], p["smin_bridge"], beta)
    smax = _lerp(p["smax_bulk"], p["smax_bridge"], beta)
    rare = rho >= float(np.quantile(rho.cpu().numpy(), p["rare_quantile"]))
    mu0, sd0 = X0.mean(0), X0.std(0, unbiased=False) + 1e-8

    _, idx_sub0 = _knn(X0[sub_t], k_ovl, seed)
    idx_sub0 = idx_sub0.to(dev)
    mix0 = mix_of(X0, idx_sub0)
    strain0 = _graph_strain(X0, idx0, d0)
    # The start itself scores J = w_overlap (no mixing gain, full overlap, no strain). When it
    # competes, an iterate must beat it or the start is returned; "auto" lets it compete only
    # when it was not pre-aligned, i.e. when the input is already mixed (an integrated embedding).
    keep = strength == 0 if p["keep_input"] == "auto" else p["keep_input"]
    best = dict(J=p["w_overlap"] if keep else -math.inf, X=X0, mix=mix0, overlap=1.0,
                strain=strain0, iter=0)
    hist = {k: [] for k in ("iter", "mix", "overlap", "strain", "J", "accepted", "step", "smooth",
                            "clip_q", "overlap_floor")}
    X = X0
    no_imp = 0
    bar = tqdm(range(1, max_iter + 1), desc="refine", disable=not progress)
    for it in bar:
        t = (it - 1) / max(1, max_iter - 1)
        lam = _lerp(p["smooth_start"], p["smooth_end"], t)
        step = _lerp(p["step_start"], p["step_end"], t)
        clip_q = _lerp(p["clip_q_start"], p["clip_q_end"], t)
        floor = _lerp(p["floor_start"], p["floor_end"], t)

        R, packs = _prototypes(X, members, ref_idx, p, seed + it)
        shift = torch.zeros_like(X)
        for rows, B, nearest in packs:
            proj, frac = _barycentric(B, R, p, clip_q)
            disp = proj - B
            norm = torch.linalg.vector_norm(disp, dim=1)
            s = 1.0 / (1.0 + norm / (norm.std(unbiased=False) + 1e-8))
            shift[rows] = (1.0 - p["bridge_damp"] * beta[rows])[:, None] * \
                _cell_shift(X[rows], B, nearest, disp, s, frac, p)
        if p["sharpen"] > 0 and p["sharpen_within"]:  # each batch towards its own centres
            for rows in members:
                shift[rows] += p["sharpen"] * _sharpen_field(X[rows], p, seed + 31)
        elif p["sharpen"] > 0:
            shift += p["sharpen"] * _sharpen_field(X, p, seed + 31)
        if lam > 0:
            smooth = (1.0 - lam) * shift + lam * _neighbour_mean(shift, idx0)
            shift = torch.where(rare[:, None], shift, smooth)
        move = step * shift
        norm = torch.linalg.vector_norm(move, dim=1) + 1e-12
        move = move * (p["max_step_local"] * dbar0 / norm).clamp_max(1.0)[:, None]
        move = _guard(X, move, idx0, d0, smin, smax)
        Xc = X + move
        if p["postscale"]:
            Xc = (Xc - Xc.mean(0)) * (sd0 / (Xc.std(0, unbiased=False) + 1e-8)) + mu0

        idx_sub = _knn(Xc[sub_t], k_ovl, seed)[1].to(dev)
        mix = mix_of(Xc, idx_sub)
        ovl = _overlap(idx_sub0, idx_sub)
        strain = _graph_strain(Xc, idx0, d0)
        gamma = (p["penalty_gamma"] * max(0.0, floor - ovl) ** 2
                 + 0.45 * max(0.0, best["overlap"] - ovl))
        J = (mix - mix0) + p["w_overlap"] * ovl - p["w_strain"] * (strain - strain0) - gamma
        accepted = J > best["J"] + p["tol"]
        for key, v in (("iter", it), ("mix", mix), ("overlap", ovl), ("strain", strain), ("J", J),
                       ("accepted", accepted), ("step", step), ("smooth", lam),
                       ("clip_q", clip_q), ("overlap_floor", floor)):
            hist[key].append(v)
        bar.set_postfix(mix=f"{mix:.3f}", overlap=f"{ovl:.3f}", J=f"{J:.3f}")
        if accepted:
            X = Xc
            best = dict(J=J, X=Xc, mix=mix, overlap=ovl, strain=strain, iter=it)
            no_imp = 0
        else:
            no_imp += 1
            if no_imp >= p["patience"]:
                break
    bar.close()

    # the centring within clusters, on the selected iterate or on a start that won; it exists to
    # remove the batches' offsets within clusters, so it is applied only when it raises the
    # batch mixing (Eq. 17)
    n_centring, centring_gain = 0, math.nan
    if p["centring"] > 0:
        Xc, _, k_c = _centre_within_clusters(best["X"], codes, n_batches, p, seed + 53)
        # best["mix"] is mix_of(best["X"]), scored when the selection took it
        centring_gain = mix_of(Xc) - best["mix"]
        if centring_gain > 0:
            best["X"], n_centring = Xc, k_c
    tsub = np.sort(rng.choice(n, size=min(n, p["trust_subsample"]), replace=False))
    tsub_t = torch.from_numpy(tsub).to(dev)
    tw = _trustworthiness(X_in[tsub_t], best["X"][tsub_t], p["k_eval"], seed)
    record = dict(best_iter=int(best["iter"]), n_iter=len(hist["iter"]), mix=best["mix"],
                  overlap=best["overlap"], strain=best["strain"], J=best["J"], mix_start=mix0,
                  prealign_strength=float(strength), start_competed=bool(keep), trustworthiness=tw,
                  input_mixing=float(relative_mixing),
                  centring_clusters=n_centring, centring_gain=float(centring_gain),
                  history={k: np.asarray(v) for k, v in hist.items()})
    return best["X"].cpu().numpy().astype(np.float32), record
