"""``sf.refine``: scBIOT's batch-aware optimal-transport refinement of any embedding.

The algorithm of the scBIOT Extended Methods (Zhang & Qin, "Accurate, scalable, and unified
single-cell atlas integration with scBIOT"; section "Batch-aware OT integration with rare-type
protection"), with the paper's defaults and annealing schedules. Each iteration ``t``:

1. prototypes: MiniBatch k-means per batch, cells weighted by their sparsity ``w_i`` (Eq. 1,
   mean distance to 15 within-batch neighbours in the current embedding); reference prototypes
   from the union of all batch prototypes (default) or from one reference batch;
2. unbalanced entropic OT between each batch's prototypes and the reference prototypes
   (squared-euclidean cost over its std, clipped at an annealed row quantile; log-domain
   Sinkhorn, :func:`scferry.ot.unbalanced_sinkhorn`, ``eps=reg``, ``rho=reg_m``) and the
   barycentric projection of each prototype (Eqs. 2-5);
3. every cell inherits its nearest prototype's displacement, weighted by
   ``s_p (1 - 0.35 beta_i)`` with the bridge score ``beta_i`` (neighbour batch entropy +
   local sparsity, Eqs. 6-9), plus the cluster-sharpening field (pull to the nearest of
   ``k_pseudo`` pseudo-centres, gated push from the second, Eqs. 10-12);
4. rare-aware smoothing of the shifts over the fixed kNN graph of the input (the 15% sparsest
   cells are not smoothed, Eq. 13), the annealed global step, per-cell step capping at
   ``max_step_local`` times the cell's input neighbour distance (Eq. 14), edge-stretch guards on
   the input kNN graph with limits interpolated by the bridge score (Eq. 15), PostScale to the
   input's per-dimension mean and std (Eq. 16);
5. batch mixing (mean neighbour batch entropy), neighbourhood overlap with the input and graph
   strain are scored (Eqs. 17-19); the iterate with the best objective ``J`` (Eqs. 20-21) is
   kept, with patience-based early stopping. Trustworthiness (Eq. 22) of the selected iterate is
   reported.

Where the paper is silent, this follows the authors' code that implements it (scbiot, the
``integrate_ot`` of the paper's time): bridge scores and the guard graph come from the input
embedding (20 neighbours), prototype counts are ``min(k_batch, max(8, 2 sqrt(n_batch)))`` per
batch and ``min(k_ref, max(32, 2 sqrt(n_prototypes)))`` for the union, a step is accepted when
it raises ``J`` by more than ``tol`` (the first always is), overlap is measured on a fixed
subsample of ``eval_subsample`` cells and trustworthiness on ``trust_subsample`` cells.

Added from the authors' current package (scbiot 1.2), not in the paper: with ``prealign="auto"``
(the default) each batch first moves part of the way along the Gaussian OT (Bures) map from its
mean and covariance to the batches' barycentre (to the reference batch's with a reference batch),
rare cells a quarter as far; the strength grows as the share of other-batch neighbours falls
below 0.45 (at most 0.8; 0 = skipped). ``prealign="none"`` runs the paper's algorithm alone.
Changed here: the pre-alignment is also skipped when the cells have, on average, at least half
the other-batch neighbours that perfect mixing of the batch sizes would give them (``1 - p_b``
for a cell of a batch with share ``p_b``; ``input_mixing`` in the record). scbiot's fixed 0.45
assumes batches of similar size: with PDAC's spots at 18 % of the cells perfect mixing gives
0.30, so an integrated uniPort or DAVAE embedding was pre-aligned, could not compete as the
start, and came back below its input on the scIB total (``bench/refine/RESULTS.md``).

Changed here from the paper and scbiot, because the paper's field pulls cells onto partners of
the wrong type when batches hold the same types in different proportions (measured in
``bench/batch_integration/RESULTS.md``):

- ``assign="soft"`` (default; ``"nearest"`` = the paper's Eq. 6): a cell takes a Gaussian-kernel
  average of its batch's prototype displacements (bandwidth: the batch's median squared
  distance of a cell to its nearest prototype) instead of its nearest prototype's alone: the
  kernel extension of a barycentric map to new points (Perrot et al., "Mapping estimation for
  discrete optimal transport", NeurIPS 2016), so that a batch deforms smoothly and neighbours
  on either side of a Voronoi border are not torn apart. The kernel is the standard Gaussian
  ``exp(-d^2 / (2 sigma^2))`` with ``sigma^2`` = ``soft_bandwidth`` (default 1) times that
  median (the median heuristic, Gretton et al., "A kernel two-sample test", JMLR 2012);
  ``soft_bandwidth=0.5`` is the kernel ``exp(-d^2 / median)`` of the first version.
- ``mass_weight=True`` (default; ``False`` = the paper): each prototype's displacement is
  scaled by the share of its mass the unbalanced plan transported (its row sum over its
  marginal, at most 1). The barycentric projection of Eq. 5 divides by that row sum, so a
  prototype the plan found almost no partner for (a type this batch has more of than the
  reference) moved its whole way to whatever little it was matched with; unbalanced OT's
  destroyed mass is the evidence that it has no counterpart (Chizat et al. 2018; Séjourné et
  al. 2019), and now it moves in proportion to the matched part.
- ``union_size="cells"`` (default; ``"prototypes"`` = scbiot): the union reference has
  ``min(k_ref, max(32, 2 sqrt(n)))`` prototypes for the ``n`` cells of all batches, the rule
  each batch's prototypes follow for its own cells, so the reference is as fine as the batches
  it summarises. scbiot takes ``n`` = the number of stacked batch prototypes, which makes the
  reference coarser than each batch it maps (three batches of 290-480 cells: 34-44 prototypes
  each, a union of 32 by scbiot's rule, 69 by this one).
- ``sharpen_within=True`` (default; ``False`` = the paper): the cluster-sharpening field
  (Eqs. 10-11) takes its ``k_pseudo`` pseudo-centres within each batch, so it sharpens each
  batch's own clusters and cannot pull a cell towards a centre made of another batch's cells
  of a neighbouring type.
- ``prealign_shift="ot"`` (an option; ``"gaussian"``, the default, is scbiot 1.2's): the
  pre-alignment's translation is estimated by unbalanced OT between k-means prototypes of the
  batch and of the others, iterated as ICP (Besl & McKay 1992) with the OT plan in place of
  nearest neighbours and a small marginal relaxation (Chizat et al. 2018; unbalanced OT under
  label shift, Fatras et al., ICML 2021), from two starts (no shift; the difference of the
  means), keeping the one that ends nearer the others. The Gaussian map moves each batch's
  mean to the barycentre, which is wrong when a batch holds other cell types than the rest: a
  chemistry holding only the B cells was carried among another chemistry's T cells (their kNN
  transfer 1.00 -> 0.26; with "ot" 0.96). Not the default: on the symphony chemistries, whose
  compositions are alike, it transferred 0.002 lower over 10 seeds (0.9065 vs 0.9082) and 0.015
  lower on the test fixture (bench/batch_integration/RESULTS.md, session 37).
- ``prealign_linear=0.25`` (default; 1 = scbiot 1.2): the pre-alignment applies the Gaussian
  map's translation in full and a quarter of its linear part (the change of covariance). The
  full linear part matches each batch's covariance to the barycentre's, which also reshapes
  the batch's own neighbourhoods when the batches' compositions differ (a batch with more of
  one type has a different covariance for that reason, not because of the batch effect).

Added here, not in the paper: ``keep_input``. The paper's selection starts at ``J = -inf``, so
its first iterate always replaces the input, and an embedding that is already integrated
(Harmony, scVI, DAVAE) can only lose. With ``keep_input`` the start competes as iterate 0 with
its own ``J = w_overlap`` (no mixing gain, full overlap, no strain); ``"auto"`` (default) does
so only when the start was not pre-aligned, i.e. when the input is already mixed (at least 45%
of neighbours from other batches, or half of what perfect mixing gives). A start that wins
gets the final centring below, as an iterate does. The comparison of kept and refined starts
is in ``bench/refine/RESULTS.md``.

Added here, not in the paper: ``centring`` (default 0.5). After the selection, the selected
embedding (a refined iterate, or the start when it won) is clustered by k-means
(``centring_clusters``, default 100, at most one cluster per 10 cells; Lloyd's algorithm, 3
starts) and each batch's cells of a cluster move ``centring`` of the way from their mean to
the cluster's mean: the cluster-specific batch correction of Harmony (Korsunsky et al., "Fast,
sensitive and accurate integration of single-cell data with Harmony", Nat Methods 2019) with
hard clusters, applied once. It removes the offsets between batches that remain inside the
clusters; where a cluster holds one batch, it does nothing there. Measured on symphony (10
seeds), PDAC and kang (3 seeds each) in ``bench/batch_integration/RESULTS.md``, on integrated
inputs (Harmony, scVI, uniPort, DAVAE) there and in ``bench/refine/RESULTS.md``;
``centring=0`` returns the selected iterate (or the start that won, unchanged) as before.
The centring exists to remove the batches' offsets within clusters, so it is applied only when
it raises the batch mixing (Eq. 17; the change is ``centring_gain`` in the record): on a DAVAE
embedding of MERFISH cells and scRNA-seq it lowered the batch entropy from 0.81 to 0.66
(``bench/batch_integration/RESULTS.md``, session 37).
``mix``, ``overlap``, ``strain`` and ``J`` in the record are the selected iterate's, before the
centring.

Scale: k-means fits use at most ``kmeans_subsample`` cells per batch (the final centring's: of
all batches together; centres are then assigned to all cells), and above ``eval_subsample``
cells the mixing score of Eq. 17 is taken within the fixed evaluation subsample; the guard
graph, smoothing, capping, guards and strain always use every cell. kNN
(:func:`scferry.neighbors.knn_torch`): on CUDA, blocked exact search in torch; on the CPU,
scikit-learn's exact search up to 10,000 cells and pynndescent above. No n x n matrix is formed.

Code: parameter and input checks in ``_checks``, kNN and graph geometry in ``_geometry``, the
Gaussian pre-alignment in ``_prealign``, prototypes / OT / sharpening / guards in ``_field``, the
iterations in ``_loop``; :func:`refine` here.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from anndata import AnnData

from ..errors import announce
from ..train import resolve_device
from ._checks import DEFAULTS, _check_inputs, _check_params
from ._loop import _run

__all__ = ["refine", "DEFAULTS"]


def refine(adata: AnnData, basis: str = "X_pca", batch_key: str = "batch", *,
           key_added: str = "X_scferry_refined", max_iter: int = 15, seed: int = 0,
           device: str = "auto", progress: bool = True, **params: Any) -> dict:
    """Refine any embedding by scBIOT's batch-aware OT iterations (module docstring).

    Parameters
    ----------
    adata
        One AnnData holding the embedding in ``obsm[basis]`` and batches in ``obs[batch_key]``.
    basis
        ``obsm`` key of the embedding to refine (cells x d; PCA, LSI, ``"X_scferry"`` from
        :func:`scferry.integrate`, any other method's latent space). Must be finite.
    batch_key
        ``obs`` column of batch labels: at least two batches, each of at least 8 cells.
    key_added
        ``obsm`` key to write; must differ from ``basis``.
    max_iter
        At most this many iterations (the paper's ``T``, default 15); schedules anneal over it.
    seed
        The same seed gives the same result on CPU.
    device
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
    progress
        Show a tqdm progress bar.
    **params
        Hyper-parameters by name, :data:`scferry.refine.DEFAULTS` (the paper's): ``reference``
        (``"union"``, ``"largest"`` or a batch name), ``reg`` (eps, 0.028), ``reg_m`` (lambda,
        0.40), ``k_ref``/``k_batch`` (prototype caps 1024/448), ``sharpen`` (0.22),
        ``k_pseudo`` (28), ``pull``/``push`` (0.78/0.34), the annealed ranges
        ``smooth_start/_end`` (0.52 -> 0.38), ``step_start/_end`` (0.78 -> 0.96),
        ``clip_q_start/_end`` (0.80 -> 0.90), ``floor_start/_end`` (0.60 -> 0.68), guards
        ``smin_/smax_bulk`` (0.72/1.65) and ``smin_/smax_bridge`` (0.88/1.24),
        ``max_step_local`` (1.05), ``w_overlap`` (0.18), ``w_strain`` (1.0),
        ``penalty_gamma`` (1.4), ``k_local`` (15), ``k_eval`` (30), ``eval_subsample`` (5000),
        ``trust_subsample`` (2500), ``kmeans_subsample`` (20000), ``patience`` (3), ``tol``
        (1e-3), ``postscale`` (True), ``prealign``: ``"auto"`` (default; strength from the
        share of other-batch neighbours, as scbiot 1.2), ``"none"`` (the paper's algorithm
        alone) or a strength in [0, 1] for the pre-alignment, ``prealign_shift``
        (``"gaussian"``, default: scbiot 1.2's Gaussian OT map; ``"ot"``: its translation
        estimated by unbalanced OT, for batches that hold different cell types in different
        proportions, module docstring), and ``keep_input``:
        ``"auto"`` (default; the start competes with the iterates when it was not
        pre-aligned), ``True`` (always competes) or ``False`` (the paper: the best iterate
        replaces the input even when it scores below it); ``prealign_linear`` (0.25: share of
        the pre-alignment's linear part, 1 = scbiot 1.2, 0 = translation only), ``assign``
        (``"soft"``, default, or ``"nearest"``, the paper's), ``soft_bandwidth`` (1.0: the
        soft kernel's sigma^2 over the median squared cell-to-prototype distance; 0.5 = the
        first version) and ``mass_weight`` (True; False = the paper's): how cells inherit the
        prototypes' OT displacements, ``union_size`` (``"cells"``, default: the union
        reference's prototype count from the number of cells; ``"prototypes"``: from the number
        of batch prototypes, scbiot's), and
        ``sharpen_within`` (True; False = the paper's): sharpening centres per batch, and
        ``centring`` (0.5; 0 = off, the paper) with ``centring_clusters`` (100): the final
        centring of each batch within k-means clusters of the refined embedding (module
        docstring).

    Returns
    -------
    The record written to ``adata.uns[key_added]`` (a dict): ``best_iter`` (the selected
    iteration; 0 = no iterate beat the start, which is returned after the centring: the input,
    pre-aligned when ``prealign_strength`` > 0), ``start_competed`` (whether the start
    competed, ``keep_input``), ``n_iter`` (iterations run), ``mix`` (Eq. 17, mean neighbour
    batch entropy, natural log), ``overlap``, ``strain``, ``J`` of the selected iterate (before
    the centring), ``centring_clusters`` (the clusters of the final centring; 0 = not
    applied), ``centring_gain`` (the change in mixing, Eq. 17, it brings; applied when
    > 0), ``mix_start`` (mixing where the iterations started: the input after
    pre-alignment), ``prealign_strength`` (0 = none), ``input_mixing`` (the input's mean share
    of other-batch neighbours over its value under perfect mixing; 1 = mixed, pre-aligned by
    ``"auto"`` only below 0.5), ``trustworthiness`` (selected iterate vs the input as given, on
    ``trust_subsample`` cells, ``k_eval`` neighbours), ``history`` (per iteration arrays: iter,
    mix, overlap, strain, J, accepted, step, smooth, clip_q, overlap_floor), and ``basis``,
    ``batch_key``, ``batches``, ``reference``, ``params``.

    Writes ``adata.obsm[key_added]`` (cells x d, float32) and ``adata.uns[key_added]`` (the
    record); nothing else on ``adata`` is touched. What ``"auto"`` chose from the data is
    announced with :class:`scferry.ScferryWarning`: a pre-alignment (``prealign="auto"``), a
    start that won the selection (the input kept, only centred within clusters) and a centring
    skipped because it added no mixing. Inputs are
    checked before any computation and errors leave ``adata`` unchanged.
    """
    p = _check_params(params, max_iter, seed)
    X0, codes, names, ref_idx = _check_inputs(adata, basis, batch_key, key_added, p)
    dev = resolve_device(device)
    with torch.no_grad():
        X, record = _run(X0, codes, len(names), ref_idx, p, int(max_iter), int(seed), dev,
                         progress)
    record.update(basis=basis, batch_key=batch_key, batches=np.asarray(names, dtype=object),
                  reference=p["reference"] if ref_idx < 0 else names[ref_idx],
                  params={k: v for k, v in p.items()})
    adata.obsm[key_added] = X
    adata.uns[key_added] = record
    _announce_choices(record, p)
    return record


def _announce_choices(record: dict, p: dict) -> None:
    """Announce what was chosen from the data: a pre-alignment (``"auto"``), the input kept by
    the selection, a centring skipped (all in the record)."""
    share = f"{100 * record['input_mixing']:.0f} %"
    if p["prealign"] == "auto" and record["prealign_strength"] > 0:
        announce(f"scferry refine: the batches were pre-aligned first (prealign=\"auto\", "
                 f"strength {record['prealign_strength']:.2f}): the input's cells have {share} of "
                 f"the other-batch neighbours that perfect mixing would give them. Pass "
                 f"prealign=\"none\" for the paper's algorithm alone, or a strength in [0, 1]"
                 + ("; when the batches hold different cell types in different proportions (e.g. "
                    "a sorted population), prealign_shift=\"ot\"."
                    if p["prealign_shift"] == "gaussian" else "."))
    if p["centring"] > 0 and not record["centring_clusters"]:
        announce(f"scferry refine: the last centring within clusters was skipped: it did not raise "
                 f"the batch mixing (record: centring_gain = {record['centring_gain']:.3f}).")
    if record["start_competed"] and record["best_iter"] == 0:
        centred = (f"only centred within {record['centring_clusters']} clusters"
                   if record["centring_clusters"] else "returned unchanged")
        announce(f"scferry refine: no refined iterate scored above the input ({share} of perfect "
                 f"mixing), so the input was kept and {centred} (record: best_iter = 0). Pass "
                 f"keep_input=False for the paper's selection, which always returns an iterate.")
