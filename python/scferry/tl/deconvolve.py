"""Spot deconvolution: cell-type proportions of spatial spots from a labelled reference."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import digamma
from tqdm.auto import tqdm

from ..errors import ScferryWarning
from .. import ondisk
from ..model import Model
from ._common import (PROPORTIONS_KEY, _check_int, _class_mass, _label_classes, _label_codes, _label_counts,
                      _labelled_pair, _plan, _write_rows)

DECONVOLVE_READOUTS = ("counts", "type_mean", "mass")
STATES_KEY = PROPORTIONS_KEY.replace("proportions", "state_proportions")  # obsm of the states' proportions
TINY_TYPE = 25  # warn below this many reference cells (RCTD's minimum per type)
CHUNK = 4096  # spots fitted at once by readout="counts" (fewer where genes are many and dense)
DENSE_CELLS = 10_000_000  # spot x gene entries of one chunk (dense: ~80 MB a matrix)
DENSE_FILL = 0.05  # a chunk with more non-zeros than this fraction is fitted dense
PLATFORM_SPOTS = 5000  # spots (at most, seeded subsample) that estimate the gene factors
MIN_SHARE = 0.0  # readout="counts": sparsity cut (off by default: it costs AUPR and RMSE, bench/deconvolution)
TOL = 1e-4  # readout="counts": a spot's EM stops once its abundances change by less (relative L1)
PRIOR_COUNTS = 100.0  # Gamma(b, b) prior of the gene factors, in counts (bench/deconvolution/RESULTS.md)
PRIOR_SHAPE = 0.5  # readout="counts": Gamma shape of each type's abundance (posterior mean; None: maximum likelihood)
DE_FOLD = 0.5  # readout="counts": informative genes, RCTD's cut-offs (Cable et al. 2022): log ratio of a
DE_EXPR = 0.000125  # type's share of the gene to the other types' mean share, and that share itself
MIN_INFORMATIVE = 10  # select_genes: with fewer informative genes, every shared gene is fitted (announced)
N_STATES = 1  # readout="counts": cell states per type at most (1: one signature per type)
MIN_STATE_CELLS = 5  # readout="counts": reference cells per state at least (smaller types keep fewer states)
STATE_FIT_CELLS = 5000  # cells (at most, seeded subsample) of one type that k-means is fitted on
STATE_SHRINK = 20.0  # pseudo-cells of its type's mean in each state's signature (bench/deconvolution/RESULTS.md)


# ---------------------------------------------------------------------------- signature fit
def type_signatures(X: sp.csr_matrix, labels, types: list[str]) -> np.ndarray:
    """Types x genes mean counts per cell of each type (``X`` cells x genes): a type's size does not
    change its signature, only how noisy it is. Cells without a label (NaN) are left out."""
    codes = _label_codes(labels, types)
    cells = np.flatnonzero(codes >= 0)
    onehot = sp.csr_matrix((np.ones(len(cells)), (codes[cells], cells)), shape=(len(types), len(codes)))
    n = np.asarray(onehot.sum(axis=1)).ravel()
    sums = onehot @ X
    sums = sums.toarray() if sp.issparse(sums) else np.asarray(sums)
    return sums.astype(np.float64) / n[:, None]


def informative_genes(S: np.ndarray, fold: float = DE_FOLD, min_expr: float = DE_EXPR) -> np.ndarray:
    """Genes (columns of the types x genes signatures ``S``) that mark at least one type, as RCTD
    selects the genes it fits (Cable et al., Nat Biotechnol 40, 517 (2022); its gene list for the
    platform effect): with ``p_kg`` type ``k``'s signature normalised to sum 1 over genes, gene
    ``g`` is kept if for some ``k``, ``p_kg > min_expr`` and ``log(p_kg) - log(mean_{l != k} p_lg)
    > fold`` (natural log, 1e-9 added to both). A gene every type expresses alike tells the types
    apart no better than it adds noise (the cells' own variation). Returns a boolean mask."""
    P = S / np.maximum(S.sum(axis=1, keepdims=True), 1e-300)
    others = (P.sum(axis=0, keepdims=True) - P) / max(S.shape[0] - 1, 1)
    lfc = np.log(P + 1e-9) - np.log(others + 1e-9)
    return ((lfc > fold) & (P > min_expr)).any(axis=0)


def cell_states(X, labels, types: list[str], n_states: int, min_cells: int, seed: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Cell states within each type, as BayesPrism splits its reference (Chu et al., Nat Cancer 3,
    505 (2022)): the cells of each type (rows of ``X``, counts on the genes the fit uses) are
    clustered by k-means (Lloyd, seeded, 10 starts) on their log-normalised counts
    (``log1p(1e4 x / sum x)``), into at most ``n_states`` states of at least ``min_cells`` cells
    each: a type of ``n`` cells gets ``min(n_states, n // min_cells)`` states (at least 1), fewer
    where a cluster would fall under ``min_cells``. K-means is fitted on at most 5,000 cells of a
    type (a seeded subsample) and every cell goes to its nearest centre. Returns the cells' state
    codes (-1 for cells without a label) and, per state, the index of its type in ``types``
    (states of a type are consecutive)."""
    from sklearn.cluster import KMeans
    X = sp.csr_matrix(X, dtype=np.float64)
    codes = _label_codes(labels, types)
    state = np.full(len(codes), -1, np.int64)  # cells without a label: in no state
    owner, rng = [], np.random.default_rng(seed)
    for t in range(len(types)):
        cells = np.flatnonzero(codes == t)
        k = int(max(1, min(n_states, len(cells) // max(min_cells, 1))))
        if k > 1:
            lib = np.maximum(np.asarray(X[cells].sum(axis=1)).ravel(), 1e-12)
            Z = sp.diags(1e4 / lib) @ X[cells]
            Z.data = np.log1p(Z.data)
            fit_on = (slice(None) if len(cells) <= STATE_FIT_CELLS
                      else np.sort(rng.choice(len(cells), STATE_FIT_CELLS, replace=False)))
        while k > 1:
            km = KMeans(n_clusters=k, n_init=10, random_state=int(rng.integers(2**31))).fit(Z[fit_on])
            sub = km.predict(Z)
            if np.bincount(sub, minlength=k).min() >= min_cells:
                break
            k -= 1
        state[cells] = len(owner) + (sub if k > 1 else 0)
        owner += [t] * k
    return state, np.asarray(owner, np.int64)


def _poisson_abundance(Y: sp.csr_matrix, S: np.ndarray, scale: np.ndarray, n_iter: int, tol: float,
                       min_share: float, init: np.ndarray | None = None,
                       prior: tuple[float, float, float] | None = None) -> np.ndarray:
    """Per-spot Poisson fit ``y_sg ~ Poisson(lambda_g sum_k a_sk S_kg)`` of the spots (rows) of
    ``Y``, gene factors ``lambda`` (``scale``) fixed: EM (multiplicative) updates of the abundances
    ``a`` with the signatures fixed (Lee & Seung 2001's KL updates), all spots at once, only at the
    non-zeros of ``Y``. ``lambda_g`` cancels from the ratio ``y / mu`` and enters through each
    type's total ``c_k = sum_g lambda_g S_kg``. ``min_share``: in each E-step a type's counts
    attributed to the spot lose ``min_share`` x the spot's counts (floored at 0), the MAP step of a
    sparsity prior: a type that explains less than that share of the spot leaves it. Returns spots x
    types abundances (cells, in the reference's counts per cell).

    ``prior = (shape, rate, phi)``: instead of the maximum-likelihood ``a``, the posterior mean of
    ``a`` under independent Gamma(shape, rate) priors with the likelihood tempered by ``1 / phi``
    (a quasi-Poisson likelihood, ``phi`` the counts' dispersion), by mean-field variational Bayes:
    the conjugate updates of Poisson factorisation with Gamma priors (Cemgil, Comput Intell
    Neurosci 2009), signatures fixed. The E-step uses the geometric mean ``exp(E log a)``."""
    K = S.shape[0]
    c = (S * scale[None, :]).sum(axis=1)      # K
    lib = np.asarray(Y.sum(axis=1), dtype=np.float64).ravel()
    # flat start (the spot's counts spread over the types), or a warm start
    a = np.tile(lib[:, None] / c.sum(), (1, K)) if init is None else init.copy()
    mean = a.copy()  # prior: the posterior mean; a is then the geometric mean the E-step uses
    # Each spot stops once its own abundances change by less than ``tol`` (its fit does not
    # depend on the other spots'): the spots still moving are re-gathered when they fall under
    # half of those in the working set, so that converged spots cost nothing.
    active = np.ones(Y.shape[0], bool)
    work = todo = np.arange(Y.shape[0])
    for it in range(n_iter):
        if not len(todo):
            break
        if it == 0 or len(todo) < 0.5 * len(work):
            work = todo
            Yw = Y[work] if len(work) < Y.shape[0] else Y
            dense = Yw.nnz > DENSE_FILL * Yw.shape[0] * Yw.shape[1]
            if dense:  # BLAS on the chunk's dense counts (float32) beats gathering at the non-zeros
                Yd, S32 = Yw.toarray(), S.astype(np.float32)
            else:
                y = Yw.data.astype(np.float64)
                rows = np.repeat(np.arange(Yw.shape[0]), np.diff(Yw.indptr))
                ST = S.T[Yw.indices]          # nnz x K: the signatures at the spots' non-zeros
            cut = min_share * lib[work, None]
        aw = a[work]
        if dense:
            ratio = Yd / np.maximum((aw @ S).astype(np.float32), 1e-30)
        else:
            mu = np.einsum("ij,ij->i", aw[rows], ST)
            ratio = sp.csr_matrix((y / np.maximum(mu, 1e-300), Yw.indices, Yw.indptr), shape=Yw.shape)
        attributed = aw * (ratio @ S32.T if dense else ratio @ S.T)  # counts the E-step gives each type
        kept = np.maximum(attributed - cut, 0.0)
        if prior is None:
            new = kept / c[None, :]
            empty = new.sum(axis=1) == 0      # every type under the cut: keep the best one
            if empty.any():
                best = attributed[empty].argmax(axis=1)
                new[np.flatnonzero(empty), best] = attributed[empty, best] / c[best]
            geo = new
        else:
            shape, rate, phi = prior
            post_shape = shape + kept / phi
            post_rate = rate + c[None, :] / phi
            new = post_shape / post_rate
            geo = np.exp(digamma(post_shape)) / post_rate
            if min_share > 0:                 # the cut removes a type from the spot, prior or not
                gone = (kept == 0) & (kept.sum(axis=1, keepdims=True) > 0)
                new[gone], geo[gone] = 0.0, 0.0
        old = mean[work]
        step = np.abs(new - old).sum(axis=1) / np.maximum(old.sum(axis=1), 1e-300)
        moving = active[work]                 # spots of the working set not yet done
        upd = work[moving]
        a[upd], mean[upd] = geo[moving], new[moving]
        active[upd[step[moving] < tol]] = False
        todo = upd[step[moving] >= tol]
    return mean


def _abundance_chunks(Y: sp.csr_matrix, S: np.ndarray, scale: np.ndarray, n_iter: int, tol: float,
                      min_share: float, progress: bool = False, init: np.ndarray | None = None,
                      prior: tuple[float, float, float] | None = None) -> np.ndarray:
    """:func:`_poisson_abundance` over chunks of spots, each at most ``CHUNK`` spots and
    ``DENSE_CELLS`` spot x gene entries (its memory stays bounded however many spots there are)."""
    size = int(max(16, min(CHUNK, DENSE_CELLS // max(S.shape[1], 1))))
    chunks = range(0, Y.shape[0], size)
    out = np.empty((Y.shape[0], S.shape[0]))
    for i in tqdm(chunks, desc="deconvolve", unit="chunk", disable=not progress or len(chunks) < 2):
        out[i:i + size] = _poisson_abundance(Y[i:i + size], S, scale, n_iter, tol, min_share,
                                             None if init is None else init[i:i + size], prior)
    return out


def _platform_scale(Y: sp.csr_matrix, S: np.ndarray, n_iter: int, tol: float, min_share: float,
                    prior_counts: float, n_rounds: int = 5) -> np.ndarray:
    """Gene-wise platform factors ``lambda_g`` shared by all spots of ``Y`` (a subsample of
    them), alternated with the abundances: ``lambda_g = (sum_s y_sg + b) / (sum_s m_sg + b)``
    with ``m = a S`` the fit without platform factors and ``b`` = ``prior_counts`` (a Gamma(b, b)
    prior, mean 1, that pulls genes with little data towards 1). Scaled to a geometric mean of 1."""
    scale = np.ones(S.shape[1])
    total = np.asarray(Y.sum(axis=0), dtype=np.float64).ravel()
    a = None
    for _ in range(n_rounds):
        # abundances in units of the scaled signatures; warm-started from the previous round
        a = _abundance_chunks(Y, S * scale[None, :], np.ones(S.shape[1]), n_iter, tol, min_share, init=a)
        expected = a.sum(axis=0) @ S          # genes: sum over spots of sum_k a_sk S_kg
        fac = expected.sum() / total.sum()    # counts: spots vs expected (depth of the platform)
        new = (total + prior_counts) / (expected / fac + prior_counts)
        new = np.exp(np.log(new) - np.log(new).mean())
        done = np.abs(np.log(new) - np.log(scale)).max() < 1e-3
        scale = new
        if done:
            break
    return scale


def _abundance_prior(Y: sp.csr_matrix, S: np.ndarray, scale: np.ndarray, a: np.ndarray,
                     shape: float, n_types: int | None = None) -> tuple[float, float, float]:
    """(shape, rate, phi) of readout="counts"'s prior from a maximum-likelihood fit ``a`` of the
    spots ``Y``: ``phi`` the Pearson dispersion of the counts (quasi-Poisson, McCullagh & Nelder
    1989), at least 1; each type's abundance Gamma(shape, rate) with mean ``N / K``, ``N`` the
    median cells per spot of the fit (cell2location's prior on cells per location, estimated
    instead of given); ``n_types``: ``K`` where the rows of ``S`` are states of fewer types."""
    K = S.shape[0]
    ST = (S * scale[None, :]).T                       # genes x types
    # sum over spots x genes of (y - mu)^2 / mu = sum_nz y^2 / mu - 2 sum y + sum mu, at the
    # non-zeros only, in chunks of spots (nnz x K at a time)
    pearson = float((a @ ST.sum(axis=0)).sum()) - 2 * float(Y.sum())
    size = int(max(16, min(CHUNK, DENSE_CELLS // max(S.shape[1], 1))))
    for i in range(0, Y.shape[0], size):
        Yc = Y[i:i + size]
        rows = np.repeat(np.arange(Yc.shape[0]), np.diff(Yc.indptr))
        mu = np.einsum("ij,ij->i", a[i:i + size][rows], ST[Yc.indices])
        y = Yc.data.astype(np.float64)
        pearson += float((y * y / np.maximum(mu, 1e-300)).sum())
    phi = max(pearson / max(Y.shape[0] * (Y.shape[1] - K), 1), 1.0)
    n_cells = float(np.median(a.sum(axis=1)))
    return float(shape), float(shape * (n_types or K) / max(n_cells, 1e-12)), phi


def per_type_mean(mass: pd.DataFrame, labels) -> pd.DataFrame:
    """deconvolve's ``readout="type_mean"`` from its ``"mass"`` table (spots x types): each
    type's mass divided by its number of reference cells (``labels``), rows summed to 1 again."""
    n_cells = _label_counts(labels).reindex(mass.columns).to_numpy(np.float64)
    mean = mass.to_numpy(np.float64) / n_cells
    return pd.DataFrame(mean / mean.sum(axis=1, keepdims=True), index=mass.index, columns=mass.columns)


def deconvolve(model: Model, reference: str, spots: str, label_key: str, *,
               readout: str = "counts", platform: bool = True, min_share: float = MIN_SHARE,
               prior_shape: float | None = PRIOR_SHAPE, select_genes: bool = True, n_states: int = N_STATES,
               min_state_cells: int = MIN_STATE_CELLS, max_iter: int = 500, k: int = 30, seed: int = 0,
               progress: bool = True) -> pd.DataFrame:
    """Cell-type proportions of each spot: by default a fit of each spot's counts on the
    reference's cell-type signatures (a mixture model); the OT plan's readouts stay available.

    ``readout="counts"`` (default). Signatures ``S_kg``: the mean counts per cell of each type
    ``k`` of the reference, on the genes the reference and the spots share (a mean: the number of
    reference cells of a type does not change it). Each spot's counts are modelled as

        ``y_sg ~ Poisson(lambda_g * sum_k a_sk S_kg)``

    with ``a_sk >= 0`` the abundance of type ``k`` in spot ``s`` (in cells, up to the spot's
    depth) and ``lambda_g`` a gene-wise platform factor shared by all spots, as RCTD (Cable et al.,
    Nat Biotechnol 40, 517 (2022)) and cell2location (Kleshchevnikov et al., Nat Biotechnol 40,
    661 (2022)) model the technology difference between scRNA-seq and spots. ``lambda`` is
    estimated jointly across spots (at most 5,000, a seeded subsample), alternating with the
    abundances, under a Gamma(100, 100) prior (mean 1): a gene's factor moves away from 1 as its
    counts in the spots outweigh 100 pseudo-counts, so the factors of genes with few counts, where
    the ratio of observed to expected counts is mostly noise, stay near 1.

    Abundances: by default the posterior mean of ``a`` under a Gamma(``prior_shape``, ``beta``)
    prior per type, as cell2location puts a prior on cells per location and reports posterior
    means. Deviations from cell2location: the prior's mean ``N / K`` is estimated (``N`` the median
    cells per spot of a maximum-likelihood fit of a subsample of at most 5,000 spots) instead of
    given (``N_cells_per_location``); the counts' overdispersion enters as a quasi-Poisson
    likelihood tempered by its Pearson dispersion ``phi`` (McCullagh & Nelder 1989) instead of a
    negative binomial; and the posterior is fitted by mean-field variational Bayes with the
    conjugate updates of Poisson factorisation (Cemgil, Comput Intell Neurosci 2009), signatures
    fixed, not by stochastic variational inference. ``prior_shape=None`` gives the
    maximum-likelihood fit by EM instead (the multiplicative KL updates of Lee & Seung, NIPS 2001);
    the posterior mean spreads a spot over types with similar signatures where the ML fit picks
    one, which lowers the squared error and raises the mass on absent types a little; a larger
    ``prior_shape`` pulls the types of a spot towards equal shares more (shape 1 lowers the error
    further on evenly mixed spots and raises it on spots dominated by one type; the default 0.5
    does neither much: bench/deconvolution/RESULTS.md). Both run in chunks of spots, using only the non-zero counts
    (no spots x cells or dense spots x genes matrix). ``min_share`` > 0 adds a hard cut (below).
    No per-spot selection of types is made before the fit (as RCTD's doublet / multi mode adds
    types one at a time while the likelihood improves, Cable et al. 2022): a type whose signature
    resembles that of a type present in the spot gets part of its counts, the likelihood ratio
    such a selection decides on tells the two apart no better than the posterior mean does, and
    a hard choice between them costs more, where wrong, than the shares it removes where right
    (measured: bench/deconvolution/RESULTS.md, "per-spot type selection").
    ``n_states`` > 1 splits each type into cell states, as BayesPrism splits its reference (Chu et
    al., Nat Cancer 3, 505 (2022)): k-means sub-clusters of the type's reference cells on their
    log-normalised counts of the fitted genes (:func:`cell_states`; at most ``n_states`` per type,
    at least ``min_state_cells`` cells each, so a small type keeps one); one signature per state,
    its cells' mean counts shrunk towards its type's mean as if 20 cells at the type's mean were
    added (``(n_s m_s + 20 m_t) / (n_s + 20)``: a state's mean is the mean of fewer cells, so
    noisier); the same fit over the states (gene factors, dispersion and prior as above; a type's
    states share its Gamma prior, the shape split equally among them, so that a type's summed
    abundance keeps the type-level prior); and each type's proportion the sum of its states'. A
    cell's deviation from its type's mean can then be fitted by another state of its own type
    instead of by a type with a similar signature. Off by default: on the study's references it
    lowered the mass on absent types a little and raised the error a little on the mean, helping
    only on the reference with the most cells per type (bench/deconvolution/RESULTS.md, "cell
    states").
    Proportions: ``a_s / sum_k a_sk`` (fractions of cells, since signatures are per cell). Types
    with fewer than 25 reference cells are named in a warning: their signatures are means of few
    cells, so noisy (RCTD's minimum).

    Parameters
    ----------
    reference
        Name of the labelled single-cell dataset of the model (counts, as given to integrate).
    spots
        Name of the spot dataset of the model (spatial transcriptomics, or any mixtures; counts).
    label_key
        Column of the reference's ``obs`` with the cell types (at least two types). Cells whose
        type is missing (NaN) are left out: of the signatures, and of the plan readouts' mass.
    readout
        - ``"counts"``: the signature fit above. It reads the datasets' matrices (the ``layer``
          given to integrate), not the embedding: the training does not change it.
        - ``"type_mean"``: from the global OT plan kept during training (uniPort paper,
          Supplementary Note 2): ``m[s, c] / n_c``, the plan mass spot ``s`` receives from the
          reference cells of type ``c`` over their number, row-normalised (``mapCluster(balance=F)``
          of uniPort's R spot tutorial). A type with few reference cells gets its noise multiplied
          too: a warning names types under 25 cells.
        - ``"mass"``: ``m[s, c]`` divided by the row's sum (the plan's class mass, as
          :func:`transfer_labels` with ``method="plan"`` reads it).

        The plan readouts need a model that kept a plan (``sf.integrate(..., method="uniport",
        keep_plan=True)``); spots the plan never reached get a kNN vote (``k`` neighbours).
    platform
        ``readout="counts"``: estimate the gene factors ``lambda`` (True) or fix them at 1 (False).
    select_genes
        ``readout="counts"``: fit only the genes that mark at least one type (True, default), as
        RCTD does (:func:`informative_genes`: a type's share of the gene at least e^0.5 times the
        other types' mean share, and above 0.000125), or every shared gene (False). On a
        whole-transcriptome reference most genes are expressed alike by every type; they add the
        cells' own variation to the fit without telling the types apart, and part of it goes to
        types absent from the spot. On a targeted panel almost every gene passes. Where fewer
        than 10 genes pass, every shared gene is used (announced; ``select_genes`` False in ``uns``).
    min_share
        ``readout="counts"``: a sparsity cut in [0, 0.5), off (0) by default: in every E-step each
        type's counts attributed to a spot lose ``min_share`` x the spot's counts (floored at 0),
        so a type explaining less than that share of the spot gets exactly 0 (the MAP step of a
        sparsity prior; it trades ranking of weak types, AUPR, for exact zeros).
    prior_shape
        ``readout="counts"``: shape of the Gamma prior of each type's abundance (posterior mean,
        above), in (0, 100]: 1 is an exponential prior, below 1 (default 0.5) its density is
        highest at 0; ``None``: maximum likelihood.
    n_states
        ``readout="counts"``: cell states per type at most (above; 1, the default: one signature
        per type). The states' proportions are written to ``obsm["scferry_state_proportions"]``
        (columns ``uns["scferry_state_proportions_columns"]``, ``"<type>#<i>"``), the states per
        type to ``uns["scferry_proportions_params"]["states_per_type"]``.
    min_state_cells
        ``readout="counts"``: reference cells per state at least (default 5): a type of ``n``
        cells gets at most ``n // min_state_cells`` states, fewer where k-means would make a
        smaller one.
    max_iter
        ``readout="counts"``: EM iterations at most per spot (each spot stops earlier, once its
        abundances change by less than 1e-4, relative L1).
    seed
        ``readout="counts"``: the subsamples of spots that estimate ``lambda`` and the prior (more
        than 5,000 spots), and the k-means of ``n_states``.
    progress
        ``readout="counts"``: a progress bar over chunks of spots.

    Returns
    -------
    DataFrame, spots x cell types (sorted), rows sum to 1. Also writes on the spots' AnnData
    ``obsm["scferry_proportions"]`` (float32, the same values) and
    ``uns["scferry_proportions_columns"]`` (the cell types, column order); with one AnnData +
    ``batch_key``, rows of other datasets get NaN. ``readout="counts"`` also records its choices
    in ``uns["scferry_proportions_params"]`` (genes used, platform, min_share, prior shape, rate
    and dispersion, iterations).
    Nothing else is touched. Datasets given to integrate as paths (on disk): the reference's
    signatures are summed over chunks of cells (never loaded whole); the spots' counts on the
    shared genes are read in chunks into memory (the fit needs them); the proportions and their
    columns are also written into the spots' store (``obsm``, ``uns``).
    """
    if not isinstance(readout, str) or readout not in DECONVOLVE_READOUTS:
        raise ValueError(f"readout must be one of {', '.join(map(repr, DECONVOLVE_READOUTS))}; got {readout!r}.")
    if not isinstance(platform, (bool, np.bool_)):
        raise TypeError(f"platform must be True or False; got {platform!r}.")
    if isinstance(min_share, bool) or not isinstance(min_share, (int, float, np.floating)) \
            or not 0 <= min_share < 0.5:
        raise ValueError(f"min_share must be a number in [0, 0.5) (a share of each spot's counts); got {min_share!r}.")
    if prior_shape is not None and (isinstance(prior_shape, bool) or not isinstance(prior_shape, (int, float, np.floating))
                                    or not 0 < prior_shape <= 100):
        raise ValueError(f"prior_shape must be None (maximum likelihood) or a number in (0, 100] (the Gamma "
                         f"shape of each type's abundance); got {prior_shape!r}.")
    _check_int(max_iter, "max_iter")
    _check_int(n_states, "n_states")
    _check_int(min_state_cells, "min_state_cells")
    _check_int(seed, "seed", minimum=0)
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be True or False; got {progress!r}.")
    if not isinstance(select_genes, (bool, np.bool_)):
        raise TypeError(f"select_genes must be True or False; got {select_genes!r}.")
    ref, spt, labels = _labelled_pair(model, ("reference", reference), ("spots", spots), label_key, k)
    types = _label_classes(labels)
    if len(types) < 2:
        raise ValueError(
            f"the reference {reference!r} has a single cell type in {label_key!r} ({types[0]!r}): "
            "proportions would all be 1. Deconvolution needs a reference annotated with at least "
            "two cell types; check label_key.")
    if readout == "counts":
        df, params, states = _signature_fit(
            ref, spt, labels, reference, spots, platform=bool(platform), min_share=float(min_share),
            max_iter=int(max_iter), seed=int(seed), progress=bool(progress), select_genes=bool(select_genes),
            prior_shape=None if prior_shape is None else float(prior_shape), n_states=int(n_states),
            min_state_cells=int(min_state_cells))
        spt.adata.uns[PROPORTIONS_KEY + "_params"] = params
    else:
        df, states = _plan_readout(model, ref, spt, labels, reference, spots, readout, k), None
    _write_rows(spt, PROPORTIONS_KEY, df.to_numpy(np.float32))
    spt.adata.uns[PROPORTIONS_KEY + "_columns"] = list(df.columns)
    for key in (STATES_KEY, STATES_KEY + "_columns"):  # a previous call's states would mislead
        for where in (spt.adata.obsm, spt.adata.uns):
            where.pop(key, None)
    if states is not None:
        _write_rows(spt, STATES_KEY, states.to_numpy(np.float32))
        spt.adata.uns[STATES_KEY + "_columns"] = list(states.columns)
    # the states' keys always: save_results removes them from a store when this call made none
    obsm, uns = (PROPORTIONS_KEY, STATES_KEY), (PROPORTIONS_KEY + "_columns", STATES_KEY + "_columns")
    ondisk.save_results(spt, obsm=obsm, uns=uns + ((PROPORTIONS_KEY + "_params",) if readout == "counts" else ()))
    return df


def _plan_readout(model, ref, spt, labels, reference, spots, readout, k) -> pd.DataFrame:
    if _plan(model, reference, spots) is None:
        raise ValueError(
            f"this {model.method!r} model has no OT plan between {reference!r} and {spots!r} "
            "(trained with keep_plan=False, in uniPort's vertical mode, whose plan is the known "
            "pairing, with a method that keeps none, or a saved model without one). Use "
            "readout='counts' (the default), or retrain with scferry.integrate(..., "
            "method='uniport', keep_plan=True).")
    df, n_unreached, n_unlabelled = _class_mass(model, ref, spt, labels, "plan", k)
    if n_unreached:
        warnings.warn(f"the OT plan never reached {n_unreached} of {spt.n_obs} spots of {spots!r} "
                      "(too few training steps?); their proportions are a kNN vote on the embedding.",
                      ScferryWarning, stacklevel=3)
    if n_unlabelled:
        warnings.warn(f"the OT plan links {n_unlabelled} of {spt.n_obs} spots of {spots!r} only to cells "
                      f"of {reference!r} without a label; their proportions are a kNN vote on the "
                      "embedding over the labelled cells.", ScferryWarning, stacklevel=3)
    if readout == "type_mean":
        counts = _label_counts(labels)
        # only where the division amplifies them: a balanced reference reads out as "mass"
        tiny = counts[(counts < TINY_TYPE) & (counts.max() >= 2 * counts)]
        if len(tiny):
            warnings.warn(
                f"readout='type_mean' multiplies the plan mass of small reference types by large "
                f"factors, noise included: {', '.join(f'{t} ({n} cells)' for t, n in tiny.items())} "
                f"have fewer than {TINY_TYPE} cells. Drop them from the reference, or use "
                "readout='mass' or 'counts'.", ScferryWarning, stacklevel=3)
        df = per_type_mean(df, labels)
    return df


def _stored_matrix(d):
    """The dataset's matrix (``X`` or its layer) as stored, its rows only; no copy where the
    dataset is a whole AnnData; an on-disk dataset's read in chunks (``ondisk.ChunkedMatrix``)."""
    if ondisk.is_on_disk(d):
        return ondisk.ChunkedMatrix(d)
    X = d.adata.X if d.layer is None else d.adata.layers[d.layer]
    if d.rows is not None:
        X = X[d.rows]
    return X if sp.issparse(X) else np.asarray(X)


def _signature_fit(ref, spt, labels, reference, spots, *, platform, min_share, max_iter, seed,
                   progress, prior_shape=None, select_genes=False, n_states=1,
                   min_state_cells=MIN_STATE_CELLS) -> tuple[pd.DataFrame, dict, pd.DataFrame | None]:
    """readout="counts": checks, shared genes, signatures (of types, or of their cell states),
    gene factors, then the fit in chunks. Returns the proportions of the types, the choices made,
    and the proportions of the states (None with one state per type)."""
    shared = ref.var_names[ref.var_names.isin(spt.var_names)]
    if ref.var_names.has_duplicates or spt.var_names.has_duplicates:
        raise ValueError("gene names of the reference or the spots are not unique; make them unique "
                         "(adata.var_names_make_unique()) before integrating.")
    # signatures from the reference's matrix as stored (only per-type sums: no copy of it), on
    # every gene, then the shared ones; the spots' shared columns are copied (CSR float32)
    types = _label_classes(labels)
    X = _stored_matrix(ref)
    S = type_signatures(X, labels.to_numpy(), types)[:, ref.var_names.get_indexer(shared)]
    Y = _stored_matrix(spt)
    Ys = sp.csr_matrix(Y[:, spt.var_names.get_indexer(shared)], dtype=np.float32)
    expressed = S.sum(axis=0) > 0
    genes = shared[expressed]
    if len(genes) < 10:
        raise ValueError(
            f"the reference {reference!r} and the spots {spots!r} share only {len(genes)} genes "
            "expressed in the reference; deconvolution fits the spots' counts on those genes. "
            "Check that both use the same gene names (symbols vs ids).")
    S, Ys = S[:, expressed], Ys[:, np.flatnonzero(expressed)].tocsr()
    for d, M, role in ((ref, X, "reference"), (spt, Ys, "spots")):
        head = (M.head() if isinstance(M, ondisk.ChunkedMatrix) else
                (M.data if sp.issparse(M) else np.asarray(M).ravel())[:1_000_000])  # a sample is enough
        if head.size and not np.allclose(head, np.round(head)):
            warnings.warn(f"the {role} {d.name!r} does not hold integer counts; readout='counts' fits "
                          "a count model (it runs, but raw counts fit it best: pass layer= the counts "
                          "to integrate).", ScferryWarning, stacklevel=4)
    n_cells = _label_counts(labels)
    small = n_cells[n_cells < TINY_TYPE]
    if len(small):
        warnings.warn(
            f"{', '.join(f'{t} ({n} cells)' for t, n in small.items())} have fewer than {TINY_TYPE} "
            "reference cells: their signatures (mean counts per cell) are noisy.", ScferryWarning, stacklevel=4)
    lost = len(ref.var_names) - len(genes)
    if len(genes) < 0.5 * min(len(ref.var_names), len(spt.var_names)):
        warnings.warn(f"deconvolution uses the {len(genes)} genes the reference and the spots share "
                      f"(and the reference expresses), of {len(ref.var_names)} reference / "
                      f"{len(spt.var_names)} spot genes.", ScferryWarning, stacklevel=4)
    n_shared = len(genes)
    genes_selected = bool(select_genes)
    if select_genes:
        marks = informative_genes(S)
        if marks.sum() >= MIN_INFORMATIVE:
            S, Ys, genes = S[:, marks], Ys[:, np.flatnonzero(marks)].tocsr(), genes[marks]
        else:  # types alike on nearly every gene: fit all of them, and say so
            genes_selected = False
            warnings.warn(f"only {int(marks.sum())} of the {n_shared} shared genes mark a cell type "
                          f"(fewer than {MIN_INFORMATIVE}), so deconvolution fits all {n_shared} "
                          "(recorded as select_genes=False in uns); pass select_genes=False to "
                          "silence this.", ScferryWarning, stacklevel=4)
    lib = np.asarray(Ys.sum(axis=1)).ravel()
    empty = lib == 0
    if empty.any():
        warnings.warn(f"{int(empty.sum())} spots of {spots!r} have no counts on the {len(genes)} genes "
                      "used; their proportions are NaN.", ScferryWarning, stacklevel=4)
    owner, per_type = None, np.ones(len(types), np.int64)
    if n_states > 1:
        Xg = sp.csr_matrix(X[:, ref.var_names.get_indexer(genes)])  # cells x genes fitted (sparse)
        state, owner = cell_states(Xg, labels.to_numpy(), types, n_states, min_state_cells, seed)
        per_type = np.bincount(owner, minlength=len(types))
        if len(owner) > len(types):  # each state's mean shrunk to its type's (a few cells are noisy)
            n_s = np.bincount(state[state >= 0], minlength=len(owner)).astype(np.float64)[:, None]
            S = (n_s * type_signatures(Xg, state.astype(str), [str(i) for i in range(len(owner))])
                 + STATE_SHRINK * S[owner]) / (n_s + STATE_SHRINK)
        else:
            owner = None                      # every type kept one state: the type-level fit
    tol = TOL
    scale = np.ones(len(genes))
    fit_rows = np.flatnonzero(~empty)
    if platform and len(fit_rows):
        rng = np.random.default_rng(seed)
        sub = fit_rows if len(fit_rows) <= PLATFORM_SPOTS else np.sort(rng.choice(fit_rows, PLATFORM_SPOTS, replace=False))
        scale = _platform_scale(Ys[sub], S, min(max_iter, 100), TOL, min_share, PRIOR_COUNTS)
    prior = None
    if prior_shape is not None and len(fit_rows):
        rng = np.random.default_rng([seed, 1])
        sub = fit_rows if len(fit_rows) <= PLATFORM_SPOTS else np.sort(rng.choice(fit_rows, PLATFORM_SPOTS, replace=False))
        a_ml = _abundance_chunks(Ys[sub], S, scale, max_iter, tol, 0.0)  # no cut: mu > 0 where y > 0
        prior = _abundance_prior(Ys[sub], S, scale, a_ml, prior_shape, n_types=len(types))
        if owner is not None:  # a type's states share its Gamma(shape, rate): shape split among them
            prior = (prior[0] / per_type[owner], prior[1], prior[2])
    props = np.full((Ys.shape[0], len(types)), np.nan)
    a = _abundance_chunks(Ys[fit_rows], S, scale, max_iter, tol, min_share, progress, prior=prior)
    state_props = None
    if owner is not None:
        state_props = np.full((Ys.shape[0], len(owner)), np.nan)
        state_props[fit_rows] = a / a.sum(axis=1, keepdims=True)
        a = a @ np.eye(len(types))[owner]     # states summed to their types
    props[fit_rows] = a / a.sum(axis=1, keepdims=True)
    params = {"readout": "counts", "n_genes": int(len(genes)), "genes_not_used": int(lost),
              "select_genes": genes_selected, "genes_not_informative": int(n_shared - len(genes)),
              "platform": bool(platform), "min_share": float(min_share), "max_iter": int(max_iter),
              "prior_shape": prior_shape,
              "prior_rate": None if prior is None else prior[1], "dispersion": None if prior is None else prior[2],
              "n_states": int(n_states), "min_state_cells": int(min_state_cells), "state_shrinkage": STATE_SHRINK,
              "states_per_type": {t: int(n) for t, n in zip(types, per_type)}}
    states = None
    if state_props is not None:
        cols = [f"{types[t]}#{i - np.flatnonzero(owner == t)[0]}" for i, t in enumerate(owner)]
        states = pd.DataFrame(state_props, index=spt.obs_names.copy(), columns=cols)
    return pd.DataFrame(props, index=spt.obs_names.copy(), columns=types), params, states
