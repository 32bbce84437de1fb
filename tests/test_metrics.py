"""Tests of scferry.metrics: hand-computed cases for every metric, plus invalid inputs."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2

from scferry import metrics as M


def blobs(centers, size, spread=0.05, seed=0):
    """Tight gaussian blobs of `size` cells around each centre (rows stacked in centre order)."""
    rng = np.random.default_rng(seed)
    centers = np.asarray(centers, dtype=float)
    return np.concatenate([c + spread * rng.standard_normal((size, centers.shape[1]))
                           for c in centers])


# ------------------------------------------------------------------------------ ARI / NMI / F1

def test_ari_hand_computed():
    # contingency (true rows x pred cols): [[2, 1, 0], [0, 1, 2]]
    # sum_ij C(n_ij, 2) = 1 + 1 = 2; rows a = (3, 3): 3 + 3 = 6; cols b = (2, 2, 2): 1+1+1 = 3
    # E = 6 * 3 / C(6, 2) = 18 / 15 = 1.2; max = (6 + 3) / 2 = 4.5
    # ARI = (2 - 1.2) / (4.5 - 1.2) = 0.8 / 3.3
    true = ["a", "a", "a", "b", "b", "b"]
    pred = [0, 0, 1, 1, 2, 2]
    assert M.ari(true, pred) == pytest.approx(0.8 / 3.3)
    # [[2, 0], [1, 1]]: index 1, E = 2 * 3 / 6 = 1 -> ARI = 0 exactly
    assert M.ari([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(0.0, abs=1e-12)
    # relabelling does not matter; categorical input works
    assert M.ari(pd.Categorical(["x", "x", "y"]), ["q", "q", "r"]) == pytest.approx(1.0)


def test_nmi_hand_computed():
    # joint p: (t0,p0)=1/2, (t1,p0)=1/4, (t1,p1)=1/4; marginals t=(1/2,1/2), p=(3/4,1/4)
    mi = 0.5 * math.log(0.5 / (0.5 * 0.75)) + 0.25 * math.log(0.25 / (0.5 * 0.75)) \
        + 0.25 * math.log(0.25 / (0.5 * 0.25))
    h_t = math.log(2)
    h_p = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    expected = mi / ((h_t + h_p) / 2)  # arithmetic normalisation
    assert M.nmi([0, 0, 1, 1], ["u", "u", "u", "v"]) == pytest.approx(expected)
    # MI = 0.14384 - 0.10137 + 0.17329 = 0.21576; (H_t + H_p)/2 = (0.69315 + 0.56234)/2 = 0.62774
    assert expected == pytest.approx(0.21576 / 0.62774, abs=1e-4)


def test_f1_macro_hand_computed():
    true = ["a", "a", "b", "b", "c"]
    pred = ["a", "b", "b", "b", "d"]
    # a: TP1 FP0 FN1 -> 2/(2+0+1) = 2/3; b: TP2 FP1 FN0 -> 4/5; c: TP0 -> 0; "d" is no class
    assert M.f1_macro(true, pred) == pytest.approx((2 / 3 + 4 / 5 + 0) / 3)


def test_transfer_accuracy_hand_computed():
    true = ["a", "a", "b", "unknown"]
    pred = ["a", "b", "b", "a"]
    assert M.transfer_accuracy(true, pred) == pytest.approx(2 / 4)
    assert M.transfer_accuracy(true, pred, ignore={"unknown"}) == pytest.approx(2 / 3)
    assert M.transfer_accuracy(true, pred, ignore="unknown") == pytest.approx(2 / 3)
    # missing true labels: error unless ignored
    with pytest.raises(ValueError, match="missing"):
        M.transfer_accuracy(["a", None, "b"], ["a", "a", "c"])
    assert M.transfer_accuracy(["a", np.nan, "b"], ["a", "a", "c"], ignore={None}) == 0.5
    with pytest.raises(ValueError, match="no cells left"):
        M.transfer_accuracy(["u", "u"], ["a", "b"], ignore={"u"})


def test_label_agreement_errors():
    with pytest.raises(ValueError, match="differ in length"):
        M.ari([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="missing"):
        M.nmi(["a", np.nan], ["a", "b"])
    with pytest.raises(ValueError, match="missing"):
        M.f1_macro(pd.Categorical(["a", None]), ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        M.ari([], [])
    with pytest.raises(ValueError, match="differ in length"):
        M.transfer_accuracy(["a"], ["a", "b"])


# ------------------------------------------------------------------------------ silhouette

def test_silhouette_hand_computed_four_points():
    X = np.array([[0.0], [1.0], [4.0], [6.0]])
    labels = ["A", "A", "B", "B"]
    # s = 1 - a/b when a < b:
    # x=0: a=1, b=(4+6)/2=5   -> 4/5     x=1: a=1, b=(3+5)/2=4   -> 3/4
    # x=4: a=2, b=(4+3)/2=3.5 -> 3/7     x=6: a=2, b=(6+5)/2=5.5 -> 7/11
    s = (4 / 5 + 3 / 4 + 3 / 7 + 7 / 11) / 4
    assert M.silhouette(X, labels) == pytest.approx((s + 1) / 2)


def test_silhouette_separated_clusters_near_one_and_subsampling():
    X = blobs([[0, 0], [100, 0]], 50, spread=0.1)
    labels = np.repeat(["a", "b"], 50)
    assert M.silhouette(X, labels) > 0.99
    # mixed labels on one blob: silhouette ~ 0 -> scaled ~ 0.5
    rng = np.random.default_rng(1)
    Y = rng.standard_normal((300, 2))
    mixed = rng.integers(0, 2, 300)
    assert 0.4 < M.silhouette(Y, mixed) < 0.6
    # subsampling is deterministic with the seed and close to the full value
    full = M.silhouette(Y, mixed)
    a = M.silhouette(Y, mixed, max_cells=100, seed=3)
    assert a == M.silhouette(Y, mixed, max_cells=100, seed=3)
    assert abs(a - full) < 0.1


def test_silhouette_errors():
    X = np.zeros((4, 2))
    with pytest.raises(ValueError, match="at least 2 distinct"):
        M.silhouette(X, ["a"] * 4)
    with pytest.raises(ValueError, match="entries but 4"):
        M.silhouette(X, ["a", "b"])
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        M.silhouette(X, ["a", "a", "b", "b"])
    with pytest.raises(ValueError, match="2-D"):
        M.silhouette(np.zeros(4), ["a", "a", "b", "b"])
    with pytest.raises(ValueError, match="missing"):
        M.silhouette(np.eye(4), ["a", "a", "b", None])


# ------------------------------------------------------------------------------ batch entropy

def test_batch_entropy_pairs_on_a_line_is_one():
    # A A B B A A B B ... at x = 0, 1, 2, ...: with n_neighbors=2 every cell (ends included)
    # has exactly one A and one B neighbour with no tie at the boundary
    # -> q = (1/2, 1/2), H = ln 2, score = ln 2 / ln 2 = 1.
    n = 16
    X = np.arange(n, dtype=float)[:, None]
    batches = np.array(["A", "A", "B", "B"] * (n // 4))
    assert M.batch_entropy(X, batches, n_neighbors=2) == pytest.approx(1.0)


def test_batch_entropy_separated_is_zero_and_seeded():
    X = blobs([[0, 0], [50, 0]], 40)
    batches = np.repeat([1, 2], 40)
    # every neighbourhood is single-batch: q = (1, 0), H = 0
    assert M.batch_entropy(X, batches, n_neighbors=10) == 0.0
    rng = np.random.default_rng(0)
    Y = rng.standard_normal((200, 3))
    b = rng.integers(0, 3, 200)
    s1 = M.batch_entropy(Y, b, n_neighbors=20, seed=5)
    assert s1 == M.batch_entropy(Y, b, n_neighbors=20, seed=5)
    assert 0.85 < s1 <= 1.0  # random batches: well mixed
    # n_neighbors is capped at n - 1 (no error)
    assert 0 <= M.batch_entropy(Y[:10], b[:10], n_neighbors=100) <= 1


def test_batch_entropy_reweights_by_global_proportions():
    # one tight blob, 4 cells of A and 2 of B, n_neighbors = 5 = everyone else, P = (2/3, 1/3)
    # A cell sees 3A 2B: p/P = (3/5)/(2/3), (2/5)/(1/3) = 9/10, 6/5 -> q = (3/7, 4/7)
    # B cell sees 4A 1B: p/P = 6/5, 3/5 -> q = (2/3, 1/3)
    def h(q):
        return -sum(x * math.log(x) for x in q)
    hA, hB = h([3 / 7, 4 / 7]), h([2 / 3, 1 / 3])
    X = blobs([[0, 0]], 6, spread=1.0)
    batches = ["A"] * 4 + ["B"] * 2
    # averaged over 200 x 500 uniform draws: E = (4 hA + 2 hB) / 6 / ln 2 (+- ~0.001)
    expected = (4 * hA + 2 * hB) / 6 / math.log(2)
    got = M.batch_entropy(X, batches, n_neighbors=5, n_pools=200, n_samples_per_pool=500)
    assert got == pytest.approx(expected, abs=0.005)
    # without re-weighting the A cells would give H(3/5, 2/5); the test would then fail
    assert abs(expected - (4 * h([0.6, 0.4]) + 2 * hB) / 6 / math.log(2)) > 0.005


def test_batch_entropy_errors():
    X = np.zeros((4, 2))
    with pytest.raises(ValueError, match="at least 2 distinct"):
        M.batch_entropy(X, ["a"] * 4)
    with pytest.raises(ValueError, match="entries but 4"):
        M.batch_entropy(X, ["a", "b", "a"])
    with pytest.raises(ValueError, match="n_neighbors"):
        M.batch_entropy(X, ["a", "b"] * 2, n_neighbors=0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        M.batch_entropy(np.array([[0.0], [np.inf]]), ["a", "b"])


# ------------------------------------------------------------------------------ FOSCTTM

def test_foscttm_identical_is_zero():
    X = np.random.default_rng(0).standard_normal((30, 4))
    assert M.foscttm(X, X.copy()) == 0.0


def test_foscttm_hand_computed_three_cells():
    X = np.array([[0.0], [1.0], [3.0]])
    Y = np.array([[0.0], [2.0], [5.0]])
    # d(X_i, Y_j): X0 -> (0, 2, 5) true 0: 0 closer; X1 -> (1, 1, 4) true 1: 0 (tie not counted);
    #              X2 -> (3, 1, 2) true 2: 1 closer (Y1)           => X->Y fractions 0, 0, 1/2
    # d(Y_i, X_j): Y0 -> (0, 1, 3) true 0: 0; Y1 -> (2, 1, 1) true 1: 0 (tie);
    #              Y2 -> (5, 4, 2) true 2: 0                      => Y->X fractions 0, 0, 0
    # mean over cells of (f_xy + f_yx) / 2 = (0 + 0 + 1/4) / 3 = 1/12
    assert M.foscttm(X, Y) == pytest.approx(1 / 12)
    # blocking does not change the result
    rng = np.random.default_rng(2)
    A, B = rng.standard_normal((57, 3)), rng.standard_normal((57, 3))
    assert M.foscttm(A, B, block_size=5) == M.foscttm(A, B, block_size=1000)
    assert 0.4 < M.foscttm(A, B) < 0.6  # unrelated pairs ~ random


def test_foscttm_errors():
    with pytest.raises(ValueError, match="same shape"):
        M.foscttm(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="at least 2 cells"):
        M.foscttm(np.zeros((1, 2)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="NaN"):
        M.foscttm(np.array([[0.0], [np.nan]]), np.zeros((2, 1)))


# ------------------------------------------------------------------------------ LISI

SQUARE = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])


def test_lisi_perfectly_mixed_square():
    # square A A B B around the cycle: each vertex's 2 nearest neighbours are its two adjacent
    # vertices (distance exactly 1), one A and one B -> weights (1/2, 1/2)
    # -> Simpson = 1/4 + 1/4 = 1/2 -> LISI = 2 = n_batches
    batches = ["A", "A", "B", "B"]
    assert M.ilisi(SQUARE, batches, n_neighbors=2) == pytest.approx(2.0)
    assert M.ilisi(SQUARE, batches, n_neighbors=2, scaled=True) == pytest.approx(1.0)
    # as cell labels this is the worst case: scaled cLISI = (2 - 2) / (2 - 1) = 0
    assert M.clisi(SQUARE, batches, n_neighbors=2, scaled=True) == pytest.approx(0.0)


def test_lisi_simplex_hand_computed():
    # rows of the identity: all pairwise distances sqrt(2) -> uniform weights 1/5 over the
    # other 5 cells. Batches A A B B C C: an A cell sees 1 A, 2 B, 2 C
    # -> Simpson = (1 + 4 + 4) / 25 = 9/25 -> LISI = 25/9 for every cell
    X = np.eye(6)
    batches = ["A", "A", "B", "B", "C", "C"]
    assert M.ilisi(X, batches, n_neighbors=5) == pytest.approx(25 / 9)
    assert M.ilisi(X, batches, n_neighbors=5, scaled=True) == pytest.approx((25 / 9 - 1) / 2)
    assert M.clisi(X, batches, n_neighbors=5, scaled=True) == pytest.approx((3 - 25 / 9) / 2)


def test_lisi_separated_is_one():
    X = blobs([[0, 0], [100, 0]], 20)
    labels = np.repeat(["t", "b"], 20)
    # 10 neighbours all of the cell's own blob -> Simpson 1 -> LISI 1
    assert M.ilisi(X, labels, n_neighbors=10) == pytest.approx(1.0)
    assert M.ilisi(X, labels, n_neighbors=10, scaled=True) == pytest.approx(0.0)
    assert M.clisi(X, labels, n_neighbors=10) == pytest.approx(1.0)
    assert M.clisi(X, labels, n_neighbors=10, scaled=True) == pytest.approx(1.0)


def test_lisi_perplexity_calibration():
    # one cell, neighbours at distances 1 and 2 (labels 0 and 1). Target perplexity
    # exp(H(3/4, 1/4)) is reached at beta = ln 3: weights e^{-0}, e^{-ln 3} -> (3/4, 1/4)
    # -> Simpson = 9/16 + 1/16 = 10/16 -> LISI = 1.6
    perp = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    dist = np.array([[1.0, 2.0]])
    lisi = M._lisi_from_knn(dist, np.array([[0, 1]]), 2, perp)
    assert lisi[0] == pytest.approx(1.6, abs=1e-4)
    w = M._perplexity_weights(dist, perp)
    assert w[0] == pytest.approx([0.75, 0.25], abs=1e-4)


def test_lisi_errors():
    with pytest.raises(ValueError, match="at least 2 distinct"):
        M.ilisi(SQUARE, ["a"] * 4)
    with pytest.raises(ValueError, match="perplexity"):
        M.clisi(SQUARE, ["a", "b"] * 2, n_neighbors=2, perplexity=5)
    with pytest.raises(ValueError, match="entries but 4"):
        M.ilisi(SQUARE, ["a", "b"])


# ------------------------------------------------------------------------------ graph connectivity

def test_graph_connectivity_split_label():
    # label A split into two equal blobs far apart, label B one blob; 5 cells per blob and
    # n_neighbors = 4 -> each cell links to exactly the rest of its blob.
    # A: largest component 5 of 10 -> 0.5; B: 5 of 5 -> 1; mean = 0.75
    X = blobs([[0, 0], [100, 0], [0, 100]], 5)
    labels = ["A"] * 10 + ["B"] * 5
    assert M.graph_connectivity(X, labels, n_neighbors=4) == pytest.approx(0.75)
    # label A alone over its two blobs: 0.5
    assert M.graph_connectivity(X[:10], labels[:10], n_neighbors=4) == pytest.approx(0.5)
    # once n_neighbors reaches across blobs, A connects: (1 + 1) / 2
    assert M.graph_connectivity(X, labels, n_neighbors=14) == pytest.approx(1.0)


def test_graph_connectivity_errors():
    with pytest.raises(ValueError, match="missing"):
        M.graph_connectivity(SQUARE, ["a", "b", None, "a"])
    with pytest.raises(ValueError, match="n_neighbors"):
        M.graph_connectivity(SQUARE, ["a", "b"] * 2, n_neighbors=-1)


# ------------------------------------------------------------------------------ kBET

def test_kbet_hand_computed_blobs():
    # four tight blobs of 4 cells, far apart: AAAA, BBBB, AABB, AABB -> P = (1/2, 1/2).
    # n_neighbors = 3: the neighbourhood (cell + 3) is the cell's whole blob, k0 = 4,
    # expected counts (2, 2).
    #   pure blob (4, 0): chi2 = (2^2 + 2^2) / 2 = 4, p = P(chi2_1 > 4) = 0.0455 < 0.05 -> reject
    #   mixed blob (2, 2): chi2 = 0, p = 1 -> accept
    # test_size = 16 = all cells in every repeat -> acceptance = 8 / 16 = 0.5 exactly.
    X = blobs([[0, 0], [100, 0], [0, 100], [100, 100]], 4, spread=0.1)
    batches = ["A"] * 4 + ["B"] * 4 + ["A", "A", "B", "B"] * 2
    assert chi2.sf(4, 1) == pytest.approx(0.0455, abs=1e-4)
    assert M.kbet(X, batches, n_neighbors=3, test_size=16) == pytest.approx(0.5)
    # at alpha = 0.04 the pure blobs pass too
    assert M.kbet(X, batches, n_neighbors=3, test_size=16, alpha=0.04) == pytest.approx(1.0)


def test_kbet_mixed_high_separated_low():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 5))
    mixed = rng.integers(0, 2, 400)
    # default k0 = floor(400 / 2 / 4) = 50: random batches are accepted ~ (1 - alpha) of the time
    score = M.kbet(X, mixed, seed=1)
    assert score > 0.85
    assert score == M.kbet(X, mixed, seed=1)
    separated = np.r_[X[:200], X[200:] + 100.0]
    assert M.kbet(separated, np.repeat(["a", "b"], 200)) == 0.0


def test_kbet_errors():
    X = np.zeros((10, 2))
    with pytest.raises(ValueError, match="at least 2 distinct"):
        M.kbet(X, [0] * 10)
    with pytest.raises(ValueError, match="alpha"):
        M.kbet(X, [0, 1] * 5, alpha=1.5)
    with pytest.raises(ValueError, match="entries but 10"):
        M.kbet(X, [0, 1])


# ------------------------------------------------------------------------------ kNN transfer

def test_knn_label_transfer_toy():
    Xs = np.array([[0.0], [1.0], [10.0], [11.0]])
    ys = ["A", "A", "B", "B"]
    Xt = np.array([[0.5], [4.0], [10.6]])
    pred, probs = M.knn_label_transfer(Xs, ys, Xt, k=3)
    # target 4.0: neighbours 1 (A, d=3), 0 (A, d=4), 10 (B, d=6); median 4
    # weights e^{-3/4}, e^{-1}, e^{-3/2} -> P(A) = (e^-.75 + e^-1) / (e^-.75 + e^-1 + e^-1.5)
    wa = math.exp(-0.75) + math.exp(-1.0)
    pa = wa / (wa + math.exp(-1.5))
    assert list(probs.columns) == ["A", "B"]
    assert probs.loc[1, "A"] == pytest.approx(pa)
    assert pa == pytest.approx(0.7902, abs=1e-4)
    assert list(pred) == ["A", "A", "B"]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_knn_label_transfer_weighting_beats_majority():
    # target 0 with k=3: B at d=0.1, A at d=5 and 5.1; median 5
    # w = e^{-0.02}, e^{-1}, e^{-1.02}: B 0.980 > A 0.368 + 0.361 -> B despite 2 A votes
    Xs = np.array([[0.1], [5.0], [-5.1]])
    pred, probs = M.knn_label_transfer(Xs, pd.Categorical(["B", "A", "A"],
                                                          categories=["B", "A", "C"]),
                                       pd.DataFrame([[0.0]], index=["cell1"]), k=3)
    wb = math.exp(-0.02)
    assert pred[0] == "B"
    assert list(probs.columns) == ["B", "A"]  # categorical order, unseen "C" dropped
    assert probs.loc["cell1", "B"] == pytest.approx(wb / (wb + math.exp(-1) + math.exp(-1.02)))


def test_knn_label_transfer_duplicates_and_errors():
    # target coincides with two of three neighbours (median 0): only exact matches vote
    Xs = np.array([[0.0], [0.0], [1.0]])
    pred, probs = M.knn_label_transfer(Xs, [1, 2, 3], np.array([[0.0]]), k=3)
    assert probs.loc[0, 3] == 0.0 and probs.loc[0, 1] == pytest.approx(0.5)
    # k larger than the source is capped
    pred, _ = M.knn_label_transfer(Xs, ["a", "a", "b"], np.array([[0.9]]), k=50)
    assert pred.shape == (1,)
    with pytest.raises(ValueError, match="dimensions"):
        M.knn_label_transfer(Xs, [1, 2, 3], np.zeros((1, 2)))
    with pytest.raises(ValueError, match="missing"):
        M.knn_label_transfer(Xs, ["a", np.nan, "b"], np.zeros((1, 1)))
    with pytest.raises(ValueError, match="entries but 3"):
        M.knn_label_transfer(Xs, ["a"], np.zeros((1, 1)))


# ------------------------------------------------------------------------------ Leiden + evaluate

def test_umap_graph_hand_computed():
    # cells at 0, 1, 3 with n_neighbors = 3 (self + both others). Each cell: rho = nearest
    # distance, sigma solves 1 + exp(-(d2 - rho)/sigma) = log2(3), so the second neighbour gets
    # p = log2(3) - 1 and the nearest 1. Directed: 0->1 1, 0->2 p; 1->0 1, 1->2 p; 2->1 1, 2->0 p.
    # Fuzzy union w + w' - w w': (0,1) = 1, (1,2) = p + 1 - p = 1, (0,2) = 2p - p^2.
    p = math.log2(3) - 1
    G = M._umap_connectivities(np.array([[0.0], [1.0], [3.0]]), 3).toarray()
    expected = np.array([[0, 1, 2 * p - p * p], [1, 0, 1], [2 * p - p * p, 1, 0]])
    np.testing.assert_allclose(G, expected, atol=1e-4)


def test_leiden_ari_nmi_and_evaluate():
    # three separated blobs labelled by blob: some resolution recovers them -> ARI = NMI = 1
    X = blobs([[0, 0], [30, 0], [0, 30]], 40, spread=1.0)
    labels = np.repeat(["x", "y", "z"], 40)
    res = M.leiden_ari_nmi(X, labels, resolutions=(0.1, 0.5, 1.0))
    assert res["ari"] == pytest.approx(1.0) and res["nmi"] == pytest.approx(1.0)
    assert res["ari_resolution"] in (0.1, 0.5, 1.0)

    rng = np.random.default_rng(0)
    batches = rng.integers(0, 2, 120)
    out = M.evaluate(X, labels=labels, batches=batches, seed=0)
    assert list(out) == ["silhouette", "clisi", "graph_connectivity", "ari", "nmi",
                         "batch_entropy", "ilisi"]
    assert all(type(v) is float for v in out.values())
    assert out["silhouette"] == M.silhouette(X, labels)
    assert out["clisi"] == pytest.approx(1.0) and out["graph_connectivity"] == 1.0
    assert out["ari"] == pytest.approx(1.0)
    assert out["batch_entropy"] == M.batch_entropy(X, batches)
    assert out["ilisi"] == M.ilisi(X, batches, scaled=True) and out["ilisi"] > 0.7

    # label_mask: labels only known for the first 80 cells (NaN elsewhere)
    partial = labels.astype(object)
    partial[80:] = np.nan
    mask = np.arange(120) < 80
    only = M.evaluate(X, labels=partial, label_mask=mask)
    assert set(only) == {"silhouette", "clisi", "graph_connectivity", "ari", "nmi"}
    assert only["silhouette"] == M.silhouette(X[:80], labels[:80])
    assert M.evaluate(X, batches=batches).keys() == {"batch_entropy", "ilisi"}
    with pytest.raises(ValueError, match="missing"):
        M.evaluate(X, labels=partial)
    with pytest.raises(ValueError, match="boolean"):
        M.evaluate(X, labels=labels, label_mask=np.arange(120))
    with pytest.raises(ValueError, match="labels and/or batches"):
        M.evaluate(X)
    with pytest.raises(ValueError, match="resolutions"):
        M.leiden_ari_nmi(X, labels, resolutions=(-1.0,))
