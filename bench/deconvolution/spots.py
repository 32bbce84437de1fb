"""Synthetic spots from held-apart real cells, the designs of the deconvolution study, and the
Spotless metrics (Sang-aram et al., eLife 2024): RMSE, Jensen-Shannon divergence, AUPR of type
presence, per-type Pearson r."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

DESIGNS = ("uniform", "dominant", "rare", "platform")
# reference file, spot file (its genes define the shared genes), label column, types left out
DATASETS = {
    "pdac": ("pdac_a_scrna.h5ad", "pdac_a_st.h5ad", "cell_type", ()),
    "hippocampus": ("visium_hippocampus_ref.h5ad", "visium_hippocampus_st.h5ad", "cell_type", ()),
    "lymph_node": ("visium_lymphnode_ref.h5ad", "visium_lymphnode_st.h5ad", "cell_type", ()),
    # "Ambiguous" / "Unstable" are the publication's unassigned cells, not cell types
    "merfish_hypothalamus": ("merfish_hypothalamus_ref.h5ad", "merfish_hypothalamus_st.h5ad", "cell_type",
                             ("Ambiguous", "Unstable")),
}
PLATFORM_SD = 0.5  # sd of log(lambda_g), the per-gene factor of the platform-shifted design


def load_reference(data_dir: Path, dataset: str, min_cells: int):
    """(counts CSR cells x shared genes, labels, genes, kept types, dropped types with their sizes):
    the reference restricted to the genes it shares with the dataset's real spots; types with fewer
    than ``min_cells`` cells (too few to give both halves a usable share) are dropped, as are the
    dataset's non-types."""
    import anndata as ad
    ref_file, st_file, key, non_types = DATASETS[dataset]
    ref = ad.read_h5ad(data_dir / ref_file)
    st_genes = ad.read_h5ad(data_dir / st_file, backed="r").var_names
    genes = ref.var_names[ref.var_names.isin(st_genes)]
    labels = ref.obs[key].astype(str).to_numpy()
    counts = pd.Series(labels).value_counts()
    dropped = {t: int(n) for t, n in counts.items() if n < min_cells or t in non_types}
    keep = ~np.isin(labels, list(dropped))
    X = sp.csr_matrix(ref[keep, genes].X, dtype=np.float32)
    return X, labels[keep], list(genes), sorted(set(labels[keep])), dropped


def split_halves(labels: np.ndarray, types: list[str], seed: int):
    """Each type's cells split 50/50 (seeded): reference rows (sorted), held-apart pools per type."""
    rng = np.random.default_rng(seed)
    ref_rows, pool = [], {}
    for t in types:
        idx = rng.permutation(np.flatnonzero(labels == t))
        half = len(idx) // 2
        ref_rows += list(idx[:half])
        pool[t] = idx[half:]
    return np.sort(np.array(ref_rows)), pool


def compose(design: str, K: int, n_spots: int, rng, rare: int) -> np.ndarray:
    """Spots x types cell counts (5-10 cells a spot) of a design:
    uniform/platform: every cell's type uniform over the K types;
    dominant: one type (uniform) holds 60-90% of the cells, the rest uniform over the others;
    rare: type ``rare`` holds one cell in 10% of the spots (absent elsewhere), the rest uniform
    over the others."""
    comp = np.zeros((n_spots, K), int)
    for s in range(n_spots):
        n = int(rng.integers(5, 11))
        if design == "dominant":
            dom = int(rng.integers(K))
            n_dom = int(round(n * rng.uniform(0.6, 0.9)))
            comp[s, dom] += n_dom
            others = [k for k in range(K) if k != dom]
            np.add.at(comp[s], rng.choice(others, size=n - n_dom), 1)
        elif design == "rare":
            others = [k for k in range(K) if k != rare]
            if rng.random() < 0.1:
                comp[s, rare] = 1
                n -= 1
            np.add.at(comp[s], rng.choice(others, size=n), 1)
        else:
            np.add.at(comp[s], rng.integers(K, size=n), 1)
    return comp


def make_spots(X: sp.csr_matrix, labels: np.ndarray, types: list[str], design: str, n_spots: int,
               seed: int):
    """(spots CSR, truth spots x types fractions, rare type or None) from the held-apart pools of
    ``split_halves(labels, types, seed)``: each spot sums its cells' counts (cells drawn without
    replacement within a spot). ``platform``: counts then drawn as Poisson(y_sg * lambda_g),
    lambda_g log-normal (sd ``PLATFORM_SD``), one factor per gene for all spots."""
    _, pool = split_halves(labels, types, seed)
    rng = np.random.default_rng([seed, DESIGNS.index(design)])
    K = len(types)
    rare = int(rng.integers(K)) if design == "rare" else None
    comp = compose(design, K, n_spots, rng, rare)
    rows = []
    for s in range(n_spots):
        cells = np.concatenate([rng.choice(pool[types[k]], size=comp[s, k], replace=False)
                                for k in range(K) if comp[s, k]])
        rows.append(sp.csr_matrix(X[cells].sum(axis=0)))
    Y = sp.vstack(rows).tocsr().astype(np.float32)
    if design == "platform":
        lam = np.exp(rng.normal(0.0, PLATFORM_SD, X.shape[1]))
        Y = sp.csr_matrix(rng.poisson(Y.toarray() * lam[None, :]).astype(np.float32))
    truth = comp / comp.sum(axis=1, keepdims=True)
    return Y, truth, (types[rare] if rare is not None else None)


# ------------------------------------------------------------------------------ metrics
def metrics(pred: np.ndarray, truth: np.ndarray) -> dict:
    """Spotless's metrics of spots x types proportions against the truth: RMSE over all entries,
    mean Jensen-Shannon divergence of the spots (base 2, in [0, 1]), AUPR of presence (truth > 0)
    ranked by the predicted proportion over all entries, and mean per-type Pearson r (types where
    either side is constant are left out); also ``absent`` and ``absent_med``, the mean and median
    estimate of the types absent from a spot (truth 0), and ``absent_gt05``, the share of those
    estimates above 0.05."""
    from scipy.spatial.distance import jensenshannon
    from sklearn.metrics import average_precision_score
    P = np.clip(np.nan_to_num(pred), 0, None)
    P = P / np.maximum(P.sum(axis=1, keepdims=True), 1e-300)
    rmse = float(np.sqrt(((P - truth) ** 2).mean()))
    jsd = float(np.mean(jensenshannon(P, truth, axis=1, base=2) ** 2))
    aupr = float(average_precision_score((truth > 0).ravel(), P.ravel()))
    rs = [np.corrcoef(P[:, k], truth[:, k])[0, 1] for k in range(truth.shape[1])
          if P[:, k].std() > 1e-12 and truth[:, k].std() > 1e-12]
    return {"RMSE": rmse, "JSD": jsd, "AUPR": aupr, "r": float(np.mean(rs)) if rs else np.nan,
            "absent": float(P[truth == 0].mean()) if (truth == 0).any() else np.nan,
            "absent_med": float(np.median(P[truth == 0])) if (truth == 0).any() else np.nan,
            "absent_gt05": float((P[truth == 0] > 0.05).mean()) if (truth == 0).any() else np.nan}


def nnls_proportions(Y: sp.csr_matrix, signatures: np.ndarray) -> np.ndarray:
    """NNLS of each spot's counts on the per-type mean count profiles (types x genes), rows
    normalised to 1 (``scipy.optimize.nnls``): the field's plain baseline."""
    from scipy.optimize import nnls
    A = signatures.T
    out = np.array([nnls(A, np.asarray(Y[i].todense()).ravel())[0] for i in range(Y.shape[0])])
    s = out.sum(axis=1, keepdims=True)
    return np.where(s > 0, out / np.where(s > 0, s, 1), 1.0 / out.shape[1])
