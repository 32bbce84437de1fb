"""Gromov-Wasserstein alignment of unpaired modalities (no shared features, no labels).

Two datasets measured on unrelated features (RNA vs ATAC peaks, RNA vs protein, two processed
50-d spaces) cannot be compared cell to cell, but each has an intrinsic geometry: which cells are
near which. Gromov-Wasserstein optimal transport (GW) matches the two geometries: it looks for a
coupling ``T`` (a joint distribution with marginals ``a`` and ``b``) minimising

    sum_{i,j,k,l} (D1[i, k] - D2[j, l])^2 T[i, j] T[k, l]  -  eps * H(T),

so that cells close in one modality are sent to cells close in the other. ``D1``, ``D2`` are
geodesic distances on each modality's kNN graph (shortest paths, divided by their maximum), as
in SCOT (Demetci et al., "SCOT: single-cell multi-omics alignment with optimal transport",
J Comput Biol 29, 3 (2022); SCOTv2, Demetci et al., RECOMB 2022) and Pamona (Cao et al.,
"Manifold alignment for heterogeneous single-cell multi-omics data integration using Pamona",
Bioinformatics 38, 211 (2022)). The problem is solved by entropic GW (projected gradient with
Sinkhorn steps, Peyre, Cuturi & Solomon, ICML 2016) from several starts, keeping the
lowest-cost solution (GW is not convex: two clusters of similar size and spread can be swapped at
nearly equal cost, and a single start often lands in the swapped solution). When some features
are linked between the modalities (shared gene names, e.g. RNA vs ATAC gene activity), fused GW
(Vayer et al., ICML 2019) adds a feature cost ``M``: ``(1 - alpha) <M, T> + alpha * GW``, ``M``
the distance between metacells in the Seurat-CCA space of the linked features, and the joint
embedding is built in that CCA space (:meth:`Alignment.joint`). ATAC peaks get linked features
from a gene TSS table: their gene activity (``scferry.tl.gene_activity``, as Seurat/Signac and
GLUE link peaks to genes). Partial GW (``mass`` < 1, Chapel et al., NeurIPS 2020; Pamona) lets
cells without a counterpart stay unmatched.

Scaling (where this module departs from SCOT/Pamona, which work on all cells and hold dense n x n
and n x m matrices): GW runs between METACELLS, the k-means centroids of each modality in its own
reduced space (``n_metacells`` per modality, a few hundred to ~2,000), with marginals equal to
the metacells' cell fractions. A cell is then softly assigned to its ``n_soft`` nearest metacells
(weights ``w``), and everything cell-level is lifted through those assignments: the cell-level
coupling is ``w_X T w_Y^T`` (never formed), and SCOT's barycentric projection of a cell of X onto
Y is ``sum_c w[i, c] * bary_Y(c)`` with ``bary_Y(c) = sum_c' T[c, c'] Y_c' / sum_c' T[c, c']``.
Memory is linear in cells (plus ``n_metacells^2``).

Preprocessing per modality (``kind``, guessed from the data when None):

- ``"counts"`` (RNA, ATAC gene activity): library-size normalisation to 10^4, log1p, the
  ``n_features`` most variable features, centred PCA;
- ``"peaks"`` (ATAC peaks, binary or counts): TF-IDF (``log1p(tf * idf * 10^4)``), truncated
  SVD (LSI), the first component (sequencing depth) dropped;
- ``"adt"`` (a protein panel, counts): per-cell centred log-ratio (CLR), standardised features,
  PCA up to the number of proteins;
- ``"other"`` (real-valued processed features, negatives allowed, e.g. Pamona's 50-d PCA / LSI
  inputs): centred only and used as given up to 100 features (a reduced space already: its
  components' variances are information, so they are not re-standardised), else PCA.

Every embedding's rows are then divided by the embedding's root-mean-square norm.

Refinement (:func:`refine`, :meth:`Alignment.refined`; ``method="gw"``'s ``refine``): after GW,
MaxFuse's step (Chen et al., Nat Biotech 2023): cells matched one-to-one in the joint space, a CCA
over each modality's whole own embedding fitted on the best matches, all cells projected into it
and smoothed over their own-modality neighbours. It uses what the linked features miss (the rest
of each modality's variation), where GW and the linked CCA stop.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from .pp import normalize_log1p, pca, variable_columns

KINDS = ("counts", "peaks", "adt", "other")
# Defaults chosen by measurement across datasets (bench/diagonal/RESULTS.md).
DEFAULTS = dict(n_metacells=300, k=10, epsilon=5e-3, n_components=30, n_features=2000,
                n_soft=3, fused_alpha=0.5, max_iter=200, n_starts=10, mass=1.0, n_smooth=40)
# "other" inputs with at most this many features are already a reduced space (PCA, LSI): used
# as given, centred only (re-standardising gives noise PCs the weight of the first ones)
MAX_OTHER_KEPT = 100
SCREEN_ITER = 30  # GW steps per start in gw_multistart's screening
_PEAK_NAME = re.compile(r"^(chr)?[0-9A-Za-z_.]+[:_-]\d+[-_]\d+$")


# ----------------------------------------------------------------------------- preprocessing
def guess_kind(X, var: Any = None, var_names: Sequence[str] | None = None) -> str:
    """The preprocessing a modality needs, from its values and feature names: negative or
    non-integer values -> "other"; peak coordinates (``var`` columns chrom/start/end or names like
    ``chr1:100-200``) -> "peaks"; at most 300 features -> "adt"; else "counts"."""
    data = X.data if sp.issparse(X) else np.asarray(X)
    sample = np.asarray(data).ravel()[:200_000]
    if sample.size and ((sample < 0).any() or not np.allclose(sample, np.round(sample))):
        return "other"
    if var is not None and {"chrom", "start", "end"} <= set(getattr(var, "columns", [])):
        return "peaks"
    names = list(var_names[:50]) if var_names is not None else []
    if names and sum(bool(_PEAK_NAME.match(str(n))) for n in names) > 0.8 * len(names):
        return "peaks"
    if X.shape[1] <= 300:
        return "adt"
    return "counts"


def embed_modality(X, kind: str, *, n_components: int = 30, n_features: int = 2000,
                   seed: int = 0) -> np.ndarray:
    """Cells x ``n_components`` embedding of one modality, preprocessed for its ``kind`` (see the
    module docstring). ``X``: cells x features (dense or sparse, not modified)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}.")
    n = X.shape[0]
    if kind == "peaks":
        from sklearn.decomposition import TruncatedSVD
        X = sp.csr_matrix(X, dtype=np.float64)
        X = X[:, np.asarray(X.getnnz(axis=0)).ravel() > 0]
        rows = np.maximum(np.asarray(X.sum(axis=1)).ravel(), 1e-12)
        idf = n / np.maximum(np.asarray(X.sum(axis=0)).ravel(), 1e-12)
        T = (sp.diags(1.0 / rows) @ X @ sp.diags(idf)).tocsr()
        T.data = np.log1p(T.data * 1e4)
        k = max(2, min(n_components + 1, min(T.shape) - 1))
        Z = TruncatedSVD(k, algorithm="randomized", random_state=seed).fit_transform(T)[:, 1:]
        Z = (Z - Z.mean(0)) / np.maximum(Z.std(0), 1e-12)  # LSI components on one scale
    elif kind == "counts":
        X = normalize_log1p(X).astype(np.float64)
        Z = pca(X[:, variable_columns(X, n_features)].toarray(), n_components, seed)
    elif kind == "adt":
        X = np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)
        L = np.log1p(np.clip(X, 0, None))
        X = L - L.mean(axis=1, keepdims=True)  # per-cell CLR
        sd = X.std(0)
        X = (X[:, sd > 0] - X[:, sd > 0].mean(0)) / sd[sd > 0]
        Z = pca(X, n_components, seed)
    else:  # already processed: its scale is information (PC variances), keep it
        X = np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)
        X = X - X.mean(0)
        Z = X if X.shape[1] <= MAX_OTHER_KEPT else pca(X, n_components, seed)
    Z = np.asarray(Z, dtype=np.float32)
    rms = float(np.sqrt((Z.astype(np.float64) ** 2).sum(1).mean()))
    return Z / max(rms, 1e-12)


# ----------------------------------------------------------------------------- metacells
@dataclass
class Metacells:
    """k-means metacells of one modality: centroids, cell fractions (the GW marginal), each
    cell's ``n_soft`` nearest metacells and their weights (rows sum to 1)."""
    centroids: np.ndarray
    mass: np.ndarray
    nearest: np.ndarray
    weights: np.ndarray

    def lift(self, values: np.ndarray) -> np.ndarray:
        """Cell-level values from metacell-level ones: ``sum_c w[i, c] values[c]``."""
        return np.einsum("ik,ikd->id", self.weights, values[self.nearest]).astype(np.float32)


def metacells(Z: np.ndarray, n_metacells: int, *, n_soft: int = 3, seed: int = 0) -> Metacells:
    """k-means on the embedding ``Z`` (mini-batch k-means above 20,000 cells), then each cell's
    soft assignment: its ``n_soft`` nearest centroids weighted by ``exp(-d^2 / h^2)``, ``h`` the
    cell's distance to its nearest centroid (floored at the median of those distances)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.neighbors import NearestNeighbors
    n = Z.shape[0]
    m = int(min(n_metacells, n))
    if n > 20_000:
        km = MiniBatchKMeans(m, batch_size=4096, n_init=3, random_state=seed).fit(Z)
    else:
        km = KMeans(m, n_init=1, random_state=seed).fit(Z)
    centroids = km.cluster_centers_.astype(np.float32)
    mass = np.bincount(km.labels_, minlength=m).astype(np.float64)
    used = mass > 0  # empty clusters (rare) are dropped
    centroids, mass = centroids[used], mass[used] / mass.sum()
    kk = min(n_soft, len(centroids))
    dist, nearest = NearestNeighbors(n_neighbors=kk).fit(centroids).kneighbors(Z)
    h2 = np.maximum(dist[:, :1], np.median(dist[:, 0]) + 1e-12) ** 2
    w = np.exp(-(dist ** 2 - dist[:, :1] ** 2) / h2)
    w /= w.sum(1, keepdims=True)
    return Metacells(centroids, mass, nearest, w.astype(np.float32))


def geodesic(points: np.ndarray, k: int) -> np.ndarray:
    """Shortest-path distances on the symmetrised kNN graph of ``points`` (edge weight: euclidean
    distance), divided by their maximum (SCOT, Pamona). Pairs in different connected components
    get the largest finite distance."""
    from scipy.sparse.csgraph import shortest_path
    from sklearn.neighbors import kneighbors_graph
    k = int(min(k, len(points) - 1))
    G = kneighbors_graph(points, k, mode="distance")
    G = G.maximum(G.T)
    D = shortest_path(G, method="D", directed=False)
    finite = np.isfinite(D)
    top = D[finite].max() if finite.any() else 1.0
    D[~finite] = top
    return (D / max(top, 1e-12)).astype(np.float64)


# ----------------------------------------------------------------------------- GW
def _sinkhorn_log(a: np.ndarray, b: np.ndarray, C: np.ndarray, eps: float, f: np.ndarray,
                  g: np.ndarray, n_iter: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Balanced entropic OT in the log domain from dual potentials (f, g) (warm start):
    alternate ``f = eps log a - eps LSE_j((g_j - C_ij) / eps)`` and the same for ``g``."""
    from scipy.special import logsumexp
    la, lb = np.log(a), np.log(b)
    for _ in range(n_iter):
        f = eps * la - eps * logsumexp((g[None, :] - C) / eps, axis=1)
        g_new = eps * lb - eps * logsumexp((f[:, None] - C) / eps, axis=0)
        done = np.abs(g_new - g).max() < tol * eps
        g = g_new
        if done:
            break
    return f, g


def gw_coupling(D1: np.ndarray, D2: np.ndarray, a: np.ndarray, b: np.ndarray, *, epsilon: float,
                M: np.ndarray | None = None, alpha: float = 0.5, max_iter: int = 200,
                tol: float = 1e-5, init: np.ndarray | None = None, anneal: bool = True,
                mass: float = 1.0) -> np.ndarray:
    """Entropic (fused when ``M`` is given) GW coupling between two metric spaces, by the
    projected-gradient scheme of Peyre, Cuturi & Solomon (ICML 2016; as in SCOT and POT's
    ``entropic_gromov_wasserstein``): starting from ``a b^T``, repeat ``T <- Sinkhorn(a, b, C(T),
    epsilon)`` with the linearised square-loss cost ``C(T) = D1^2 a 1^T + 1 (D2^2 b)^T - 2 D1 T
    D2^T`` (fused: ``(1 - alpha) M + alpha C(T)``, Vayer et al.), until ``T`` changes by less
    than ``tol`` (sum of absolute changes) or ``max_iter`` steps. ``init``: the starting coupling
    (default ``a b^T``); ``anneal``: start from 16x ``epsilon``. The Sinkhorn steps run in the
    log domain, warm-started from the previous step's potentials, so a small ``epsilon`` neither
    underflows nor costs many iterations.

    ``mass`` < 1: partial GW (Chapel, Alaya & Gasso, NeurIPS 2020; the form Pamona uses): only
    that fraction of the mass is transported, so cells of one modality without a counterpart in
    the other can stay unmatched. Solved as Pamona and Chapel et al. do, with one virtual point
    added to each side holding ``1 - mass`` (free to reach from any real point, forbidden to reach
    the other virtual point), and the linearised cost taken with the coupling's own marginals.
    Returns the coupling (len(a) x len(b); sums to 1, or to ``mass`` when partial)."""
    a = np.asarray(a, np.float64) / np.sum(a)
    b = np.asarray(b, np.float64) / np.sum(b)
    partial = mass < 1
    T = np.outer(a, b) if init is None else np.asarray(init, np.float64) / np.sum(init)
    if partial:
        T = T * mass
        a_s, b_s = np.append(a, 1 - mass), np.append(b, 1 - mass)
    else:
        a_s, b_s = a, b
    f, g = np.zeros(len(a_s)), np.zeros(len(b_s))
    # epsilon annealed from 16x down to the target (halving each step): the large-epsilon
    # couplings steer the non-convex problem away from poor local minima
    schedule = [epsilon * 2.0 ** i for i in range(4, 0, -1)] if anneal else []
    schedule += [epsilon] * max(1, max_iter)
    for eps_now in schedule:
        epsilon_step = eps_now
        C = _linearised(D1, D2, T)
        if M is not None:
            C = (1 - alpha) * M + alpha * C
        if partial:  # virtual row / column: free to reach, the virtual-virtual pair forbidden
            C = np.pad(C, ((0, 1), (0, 1)))
            C[-1, -1] = 1e3 * max(1.0, float(np.abs(C).max()))
        f, g = _sinkhorn_log(a_s, b_s, C, epsilon_step, f, g, n_iter=200, tol=1e-4)
        new = np.exp((f[:, None] + g[None, :] - C) / epsilon_step)
        if partial:
            new = new[:-1, :-1]
        if not np.isfinite(new).all() or not new.sum() > 0:
            raise RuntimeError(f"the GW solver diverged at epsilon={epsilon}; raise epsilon (e.g. 1e-2).")
        change = float(np.abs(new - T).sum())
        T = new
        if change < tol and epsilon_step == epsilon:
            break
    return T / T.sum() * (mass if partial else 1.0)


def _linearised(D1: np.ndarray, D2: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Half the gradient of the square-loss GW objective at ``T``: ``D1^2 r 1^T + 1 (D2^2 c)^T -
    2 D1 T D2^T`` with ``r``, ``c`` the marginals of ``T`` (the cost of the projected-gradient
    step; with ``T``'s own marginals it is also right for partial couplings)."""
    return (D1 ** 2) @ T.sum(1)[:, None] + ((D2 ** 2) @ T.sum(0))[None, :] - 2 * D1 @ T @ D2.T


def gw_cost(D1: np.ndarray, D2: np.ndarray, T: np.ndarray) -> float:
    """The square-loss GW objective ``sum (D1[i,k] - D2[j,l])^2 T[i,j] T[k,l]`` of a coupling."""
    return float(np.einsum("ij,ij->", _linearised(D1, D2, T), T))


def random_coupling(a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
                    spread: float = 0.05) -> np.ndarray:
    """A random coupling with marginals ``a``, ``b``: the entropic OT plan (regularisation
    ``spread``) of a cost drawn uniformly in [0, 1]. A start for :func:`gw_multistart`."""
    C = rng.random((len(a), len(b)))
    f, g = _sinkhorn_log(a / a.sum(), b / b.sum(), C, spread, np.zeros(len(a)), np.zeros(len(b)),
                         n_iter=500, tol=1e-6)
    T = np.exp((f[:, None] + g[None, :] - C) / spread)
    return T / T.sum()


def gw_multistart(D1: np.ndarray, D2: np.ndarray, a: np.ndarray, b: np.ndarray, *, epsilon: float,
                  M: np.ndarray | None = None, alpha: float = 0.5, max_iter: int = 200,
                  n_starts: int = 1, seed: int = 0,
                  mass: float = 1.0) -> tuple[np.ndarray, dict[str, Any]]:
    """:func:`gw_coupling` from ``n_starts`` starting couplings, keeping the one of lowest
    objective (the GW cost, plus ``(1 - alpha) <M, T>`` / ``alpha`` scaling when fused).

    GW is not convex and two geometries often admit several near-isometric matches (two clusters
    of similar size and spread can be swapped). The objective is what tells them apart, so, as
    SCOT (Demetci et al. 2022) selects its hyperparameters by the lowest GW distance, the
    solution kept is the lowest-cost one among local minima reached from different starts: the
    product coupling ``a b^T`` with epsilon annealing (a deterministic start) and ``n_starts - 1``
    random couplings (:func:`random_coupling`, no annealing: a large epsilon would wash the start
    out). Each start is screened with ``SCREEN_ITER`` steps; the lowest-cost one is run on to
    ``max_iter`` steps. Returns the coupling and ``{"costs": [...], "chosen": index}``."""
    rng = np.random.default_rng(seed)

    def objective(T):
        cost = gw_cost(D1, D2, T)
        return cost if M is None else alpha * cost + (1 - alpha) * float((M * T).sum())

    kw = dict(epsilon=epsilon, M=M, alpha=alpha, mass=mass)
    if n_starts == 1:
        T = gw_coupling(D1, D2, a, b, max_iter=max_iter, **kw)
        return T, {"costs": [objective(T)], "chosen": 0}
    # screening: every start for a few steps (the basin is settled early), then the best finished
    found = []
    for s in range(n_starts):
        init = None if s == 0 else random_coupling(a, b, rng)
        T = gw_coupling(D1, D2, a, b, max_iter=min(max_iter, SCREEN_ITER), init=init,
                        anneal=init is None, **kw)
        found.append((objective(T), T))
    chosen = int(np.argmin([c for c, _ in found]))
    T = gw_coupling(D1, D2, a, b, max_iter=max_iter, init=found[chosen][1], anneal=False, **kw)
    return T, {"costs": [c for c, _ in found], "chosen": chosen}


def _feature_cost(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Correlation distance between metacell profiles of linked features, in [0, 1]."""
    A = A - A.mean(1, keepdims=True)
    B = B - B.mean(1, keepdims=True)
    A /= np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-12)
    B /= np.maximum(np.linalg.norm(B, axis=1, keepdims=True), 1e-12)
    return np.clip((1 - A @ B.T) / 2, 0, 1)


@dataclass
class Alignment:
    """The metacell-level GW solution between two modalities and what lifts it to cells."""
    coupling: np.ndarray  # metacells of X x metacells of Y, sums to 1
    meta: tuple[Metacells, Metacells]
    embeddings: tuple[np.ndarray, np.ndarray]  # each modality's own cells x n_components space
    params: dict[str, Any] = field(default_factory=dict)
    gw_distance: float = float("nan")
    # fused GW only: each modality's cells in the CCA space of the linked features, and the same
    # averaged over each cell and its ``n_smooth`` nearest cells in its own modality's embedding
    linked_embeddings: tuple | None = None
    # fused GW only: the per-metacell means of each modality's CCA coordinates (the fused cost's
    # inputs, reused by the joint embedding's GW projection)
    linked_means: tuple | None = None

    def barycentric(self, source: int) -> np.ndarray:
        """SCOT's barycentric projection of each cell of modality ``source`` onto the other
        modality's space, lifted through the soft metacell assignment."""
        T = self.coupling if source == 0 else self.coupling.T
        other = self.meta[1 - source].centroids
        bary = (T @ other) / np.maximum(T.sum(1, keepdims=True), 1e-300)
        return self.meta[source].lift(bary)

    def joint(self) -> tuple[np.ndarray, np.ndarray]:
        """A joint embedding of both modalities' cells (symmetric in X and Y).

        Without linked features: [X-space coordinates, Y-space coordinates], where a cell's own
        space holds its metacell-smoothed coordinates and the other space its barycentric
        projection. With linked features (fused GW), everything is in the one CCA space ``C`` of
        the linked features: an X cell is ``[c_i, s_i, p_i]`` and a Y cell ``[s_j, c_j, p_j]``,
        ``c`` its CCA coordinates, ``s`` their mean over the cell and its ``n_smooth`` nearest
        cells in its own modality's embedding (all of its features, so a denoised estimate of
        ``c``), ``p`` the barycentric projection of the other modality's CCA coordinates through
        the GW coupling. Across modalities a cell's own coordinates thus meet the other cell's
        denoised ones, and the two GW estimates meet each other."""
        if self.linked_embeddings is None:
            own = [m.lift(m.centroids) for m in self.meta]
            return (np.hstack([own[0], self.barycentric(0)]),
                    np.hstack([self.barycentric(1), own[1]]))
        (cx, sx), (cy, sy) = self.linked_embeddings
        proj = []
        for src, T in ((0, self.coupling), (1, self.coupling.T)):
            bary = (T @ self.linked_means[1 - src]) / np.maximum(T.sum(1, keepdims=True), 1e-300)
            proj.append(self.meta[src].lift(bary))
        return np.hstack([cx, sx, proj[0]]), np.hstack([sy, cy, proj[1]])

    def refined(self, n_iter: int = 1, *, keep: float = 0.8, seed: int = 0,
                progress: bool = False) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, Any]]:
        """The joint embedding refined past its starting space (:func:`refine`, MaxFuse): cells
        matched in :meth:`joint`, a CCA fitted on the best matches between each modality's whole
        own embedding (plus, with linked features, the cells' CCA coordinates of the linked
        features, so the refined space can only add to them), all cells projected and smoothed
        over ``n_smooth`` own-modality neighbours. With linked features returns ``[refined,
        joint]`` per modality (both parts scaled to unit root-mean-square row norm, so neither
        dominates: the joint space holds the linked features' cell-level signal); without them the
        refined space alone (the joint space is then the GW coupling's metacell-level projection,
        which the refinement replaces). Also returns :func:`refine`'s record."""
        linked = None if self.linked_embeddings is None else tuple(c for c, _ in self.linked_embeddings)
        n_smooth = self.params.get("n_smooth") or DEFAULTS["n_smooth"]
        return refined_space(self.embeddings, self.joint(), linked, n_iter=n_iter, n_smooth=n_smooth,
                             keep=keep, seed=seed, progress=progress)


def align(X, Y, *, kinds: tuple[str | None, str | None] = (None, None), linked: tuple | None = None,
          n_metacells: int = DEFAULTS["n_metacells"], k: int = DEFAULTS["k"],
          epsilon: float = DEFAULTS["epsilon"], n_components: int = DEFAULTS["n_components"],
          n_features: int = DEFAULTS["n_features"], n_soft: int = DEFAULTS["n_soft"],
          fused_alpha: float = DEFAULTS["fused_alpha"], max_iter: int = DEFAULTS["max_iter"],
          n_starts: int = DEFAULTS["n_starts"], mass: float = DEFAULTS["mass"],
          n_smooth: int = DEFAULTS["n_smooth"], var: tuple = (None, None),
          var_names: tuple = (None, None), seed: int = 0,
          progress: bool = False) -> Alignment:
    """GW alignment of two modalities' cells (matrices cells x features, not modified).

    ``kinds``: each modality's preprocessing (None: :func:`guess_kind`). ``linked``: optional
    ``(X_linked, Y_linked)``, cells x linked features in the same feature order (e.g. the shared
    genes of RNA and gene activity): fused GW with weight ``fused_alpha`` on the GW term.
    ``n_starts``: GW solved from that many starting couplings, the lowest-cost solution kept
    (:func:`gw_multistart`). ``mass`` < 1: partial GW (:func:`gw_coupling`). ``n_smooth``
    (fused only): the neighbours each cell's CCA coordinates are averaged over in the joint
    embedding (:meth:`Alignment.joint`). See the
    module docstring for the maths; the result's :meth:`Alignment.joint` is the embedding."""
    from tqdm.auto import tqdm
    rng = np.random.default_rng(seed)
    bar = tqdm(total=4, desc="scferry gw", disable=not progress)
    kinds = tuple(kd or guess_kind(M_, v, vn) for kd, M_, v, vn in zip(kinds, (X, Y), var, var_names))
    Z = tuple(embed_modality(M_, kd, n_components=n_components, n_features=n_features,
                             seed=int(rng.integers(2 ** 31))) for M_, kd in zip((X, Y), kinds))
    bar.update()
    meta = tuple(metacells(z, n_metacells, n_soft=n_soft, seed=int(rng.integers(2 ** 31))) for z in Z)
    bar.update()
    D = tuple(geodesic(m.centroids, k) for m in meta)
    bar.update()
    M = smooth = means = None
    if linked is not None:
        M, cca, means = _linked_cost(linked, meta, seed=int(rng.integers(2 ** 31)))
        smooth = denoised_linked(Z, cca, n_smooth, seed)
    T, starts = gw_multistart(D[0], D[1], meta[0].mass, meta[1].mass, epsilon=epsilon, M=M,
                              alpha=fused_alpha, max_iter=max_iter, n_starts=n_starts,
                              seed=int(rng.integers(2 ** 31)), mass=mass)
    bar.update()
    bar.close()
    gwd = gw_cost(D[0], D[1], T)
    params = dict(kinds=list(kinds), n_metacells=[len(m.mass) for m in meta], k=k, epsilon=epsilon,
                  n_components=n_components, n_features=n_features, n_soft=n_soft,
                  fused=M is not None, fused_alpha=fused_alpha if M is not None else None,
                  max_iter=max_iter, n_starts=n_starts, mass=mass,
                  n_smooth=n_smooth if M is not None else None,
                  start_costs=starts["costs"],
                  start_chosen=starts["chosen"], seed=seed)
    return Alignment(T, meta, Z, params, gwd, smooth, means)


def linked_cca(linked: tuple, *, seed: int = 0, n_components: int = 20,
               normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Both modalities' linked features ``(X_linked, Y_linked)`` (cells x the same linked features,
    counts; ``normalize=False``: values taken as given) log-normalised and put in one space by
    Seurat's CCA (``scferry.methods.scmodal_cca.seurat_cca``, Stuart et al., Cell 177, 1888 (2019);
    cell-level, never an n x m matrix). Returns each modality's CCA coordinates (float32, rows
    l2-normalised)."""
    from .methods.scmodal_cca import seurat_cca
    L = [normalize_log1p(X) if normalize else X for X in linked]
    k = int(max(1, min(n_components, L[0].shape[1] - 1, min(X.shape[0] for X in L) - 1)))
    U, V = seurat_cca(L[0], L[1], n_components=k, seed=seed)
    return np.asarray(U, np.float32), np.asarray(V, np.float32)


def denoised_linked(Z: tuple[np.ndarray, np.ndarray], cca: tuple[np.ndarray, np.ndarray], n_smooth: int,
                    seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Each modality's ``(c, s)``: its cells' CCA coordinates ``c`` (:func:`linked_cca`) and their
    mean ``s`` over the cell and its ``n_smooth`` nearest cells in the modality's own embedding
    ``Z`` (all of its features; :func:`embed_modality`), a denoised estimate of ``c``. Across
    modalities ``[c_x, s_x]`` against ``[s_y, c_y]`` puts a cell's own coordinates against the other
    cell's denoised ones (:meth:`Alignment.joint`; scMODAL's anchor space)."""
    return tuple((c, _neighbour_mean(z, c, n_smooth, seed)) for z, c in zip(Z, cca))


def _linked_cost(linked: tuple, meta: tuple[Metacells, Metacells], *,
                 seed: int) -> tuple[np.ndarray, tuple, tuple]:
    """The fused term's cost between metacells: the linked features' CCA coordinates
    (:func:`linked_cca`) averaged per metacell (cells hard-assigned to their nearest), correlation
    distance between the averages. Returns the cost, the cell-level CCA coordinates of both
    modalities and their metacell means."""
    cca = linked_cca(linked, seed=seed)
    means = tuple(_metacell_means(np.asarray(E, np.float64), m) for E, m in zip(cca, meta))
    return _feature_cost(*means), cca, means


def _neighbour_mean(Z: np.ndarray, E: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Each cell's values ``E`` averaged over the cell and its ``k`` nearest cells in ``Z``
    (``scferry.neighbors.knn``: exact, approximate above its size limit)."""
    from .neighbors import knn
    k = int(min(k, len(Z) - 1))
    if k < 1:
        return np.asarray(E, np.float32)
    _, idx = knn(np.asarray(Z, np.float32), k, seed=seed)
    return ((E + E[idx].sum(1)) / (k + 1)).astype(np.float32)


def _metacell_means(E: np.ndarray, meta: Metacells) -> np.ndarray:
    """Per-metacell means of cell-level values (cells hard-assigned to their nearest metacell)."""
    hard = meta.nearest[:, 0]
    m = len(meta.mass)
    A = sp.csr_matrix((np.ones(len(hard)), (hard, np.arange(len(hard)))), shape=(m, len(hard)))
    counts = np.maximum(np.asarray(A.sum(1)).ravel(), 1)
    return np.asarray(A @ E) / counts[:, None]


# ----------------------------------------------------------------------------- refinement
def _whiten(S: np.ndarray, reg: float) -> np.ndarray:
    """``S^{-1/2}`` of a covariance matrix with ridge ``reg * trace(S) / d`` added."""
    d = S.shape[0]
    w, V = np.linalg.eigh(S + reg * np.trace(S) / d * np.eye(d))
    return (V / np.sqrt(np.maximum(w, 1e-12))) @ V.T


def pivot_cca(X: np.ndarray, Y: np.ndarray, n_components: int, *,
              reg: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Regularised CCA between the rows of ``X`` and ``Y`` (paired rows: the pivots). Returns the
    column means of ``X`` and ``Y``, their loadings (features x components, unit variance on the
    pivots) and the canonical correlations (descending)."""
    X = np.asarray(X, np.float64)
    Y = np.asarray(Y, np.float64)
    mx, my = X.mean(0), Y.mean(0)
    Xc, Yc = X - mx, Y - my
    n = len(X)
    Wx, Wy = _whiten(Xc.T @ Xc / n, reg), _whiten(Yc.T @ Yc / n, reg)
    U, s, Vt = np.linalg.svd(Wx @ (Xc.T @ Yc / n) @ Wy)
    k = int(min(n_components, len(s)))
    return mx, my, Wx @ U[:, :k], Wy @ Vt[:k].T, s[:k]


def _rms(E: np.ndarray) -> float:
    """Root-mean-square row norm (floored)."""
    return max(float(np.sqrt((np.asarray(E, np.float64) ** 2).sum(1).mean())), 1e-12)


def _row_corr(E: np.ndarray) -> np.ndarray:
    """Rows centred and l2-normalised: their dot products are Pearson correlations."""
    E = np.asarray(E, np.float64)
    E = E - E.mean(1, keepdims=True)
    return E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)


def match_cells(Ex: np.ndarray, Ey: np.ndarray, *, chunk: int = 2000,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching of the cells of two modalities in a shared space (MaxFuse's linear
    assignment, Chen et al., Nat Biotech 2023), on the correlation distance ``1 - corr(Ex_i,
    Ey_j)``. Both sides are split at random into the same number of chunks of at most ``chunk``
    cells and each pair of chunks is solved exactly (``scipy.optimize.linear_sum_assignment``),
    so memory stays ``chunk^2``. Returns the matched indices into X and Y and their distances."""
    from scipy.optimize import linear_sum_assignment
    rng = np.random.default_rng(seed)
    n, m = len(Ex), len(Ey)
    parts = int(np.ceil(max(n, m) / chunk))
    Cx, Cy = _row_corr(Ex), _row_corr(Ey)
    ix, iy, dist = [], [], []
    for px, py in zip(np.array_split(rng.permutation(n), parts), np.array_split(rng.permutation(m), parts)):
        C = 1.0 - Cx[px] @ Cy[py].T
        r, c = linear_sum_assignment(C)
        ix.append(px[r])
        iy.append(py[c])
        dist.append(np.clip(C[r, c], 0.0, 2.0))
    return np.concatenate(ix), np.concatenate(iy), np.concatenate(dist)


def refined_space(Z: tuple[np.ndarray, np.ndarray], E: tuple[np.ndarray, np.ndarray],
                  linked: tuple[np.ndarray, np.ndarray] | None, *, n_iter: int = 1, n_smooth: int = 40,
                  keep: float = 0.8, seed: int = 0, pivots: tuple | None = None,
                  progress: bool = False) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """:func:`refine` from the shared space ``E`` over each modality's own embedding ``Z``, as
    :meth:`Alignment.refined` and scMODAL's ``anchor_space="refined"`` use it. With ``linked``
    (each modality's CCA coordinates of the linked features) the CCA also reads them and the
    result is ``[refined, E]`` per modality, both parts scaled to unit root-mean-square row norm;
    without, the refined space alone, so scaled. ``pivots``: see :func:`refine`. float32; also
    returns :func:`refine`'s record."""
    if linked is not None:
        Z = tuple(np.hstack([z, c]) for z, c in zip(Z, linked))
    R, info = refine(Z, E, n_iter=n_iter, n_smooth=n_smooth, keep=keep, seed=seed, pivots=pivots,
                     progress=progress)
    ref = _rms(np.vstack(R))
    if linked is None:
        return tuple((r / ref).astype(np.float32) for r in R), info
    start = _rms(np.vstack(E))
    return tuple(np.hstack([r / ref, e / start]).astype(np.float32) for r, e in zip(R, E)), info


def refine(Z: tuple[np.ndarray, np.ndarray], E: tuple[np.ndarray, np.ndarray], *, n_iter: int = 1,
           n_components: int = 20, n_smooth: int = 40, keep: float = 0.8, chunk: int = 2000,
           weight: bool = True, seed: int = 0, pivots: tuple | None = None,
           progress: bool = False) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """Iterative refinement of a cross-modality matching past its starting space (MaxFuse, Chen
    et al., "Integration of spatial and single-cell data across modalities with weakly linked
    features", Nat Biotech 2023).

    ``Z``: each modality's own reduced space over ALL its features (cells x d_x, cells x d_y;
    :func:`embed_modality`); ``E``: a starting shared space (cells x d for both, e.g.
    :meth:`Alignment.joint`: the denoised CCA of linked features, or GW projections). Each of
    ``n_iter`` rounds: (1) match cells one-to-one in the current shared space
    (:func:`match_cells`, correlation distance); (2) keep the ``keep`` fraction of best-matched
    pairs (the pivots); (3) fit a CCA between ``Z_x`` and ``Z_y`` on the pivots
    (:func:`pivot_cca`: every feature of both modalities, not only the linked ones); (4) project
    all cells, ``c = (Z - mean) W`` (with ``weight``, each component multiplied by its canonical
    correlation, so weakly shared components, mostly noise, count less), and average each cell's coordinates over itself and its
    ``n_smooth`` nearest cells in its own ``Z`` (MaxFuse's fuzzy smoothing), ``s``; the next
    shared space is ``[c_x, s_x]`` against ``[s_y, c_y]`` (a cell's own coordinates against the
    other cell's denoised ones, as :meth:`Alignment.joint`). The last round's space is returned.
    Linear in cells (kNN once per modality, matching in chunks of ``chunk`` cells).

    More rounds let the matching reinforce itself (the pivots' distance falls while the match
    to the truth gets worse), so one round is the default (bench/diagonal/RESULTS.md).

    ``pivots``: optional ``(ix, iy)``, indices into X and Y of pairs to fit the first round's CCA
    on, in place of steps (1)-(2) (all of them kept; e.g. known partners, to bound what better
    matching could give: bench/diagonal/oracle_pivots.py).

    Returns ``((E_x, E_y), info)``; ``info``: canonical correlations, the median pivot distance
    and number of pivots of each round, and the last round's pivots."""
    from tqdm.auto import tqdm
    from .neighbors import knn
    Z = tuple(np.asarray(z, np.float64) for z in Z)
    if pivots is not None:
        pivots = tuple(np.asarray(p, dtype=np.int64).ravel() for p in pivots)
        if len(pivots) != 2 or len(pivots[0]) != len(pivots[1]) or len(pivots[0]) < 2:
            raise ValueError("pivots must be two index arrays of the same length (>= 2): (X rows, Y rows).")
        for p, z, side in zip(pivots, Z, "XY"):
            if p.min() < 0 or p.max() >= len(z):
                raise ValueError(f"pivots index rows of {side} outside 0..{len(z) - 1}.")
    idx = []
    for z in Z:
        k = int(min(n_smooth, len(z) - 1))
        idx.append(knn(np.asarray(z, np.float32), k, seed=seed)[1] if k >= 1 else None)

    def smooth(C, nb):
        return C if nb is None else (C + C[nb].sum(1)) / (nb.shape[1] + 1)

    info: dict[str, Any] = {"corr": [], "pivot_distance": [], "n_pivots": []}
    Ex, Ey = E
    for it in tqdm(range(n_iter), desc="scferry refine", disable=not progress):
        if it == 0 and pivots is not None:
            ix, iy = pivots
            d = good = None
        else:
            ix, iy, d = match_cells(Ex, Ey, chunk=chunk, seed=seed + it)
            good = d <= np.quantile(d, keep)
            ix, iy = ix[good], iy[good]
        mx, my, Wx, Wy, corr = pivot_cca(Z[0][ix], Z[1][iy], n_components)
        cx, cy = (Z[0] - mx) @ Wx, (Z[1] - my) @ Wy
        if weight:  # components weighted by their canonical correlation: weakly shared ones are noise
            cx, cy = cx * corr, cy * corr
        sx, sy = smooth(cx, idx[0]), smooth(cy, idx[1])
        Ex, Ey = np.hstack([cx, sx]), np.hstack([sy, cy])
        info["corr"].append(corr.round(4).tolist())
        info["pivot_distance"].append(float("nan") if d is None else float(np.median(d[good])))
        info["n_pivots"].append(len(ix))
    info["pivots"] = (ix, iy)
    return (Ex.astype(np.float32), Ey.astype(np.float32)), info
