"""MinNet: Siamese network with a graph-based flexible-margin contrastive loss for paired
multi-omics (Liu et al., Genome Biology 2023; paper Methods "The Siamese neural network",
"Determining the flexible margin from KNN graph", "Training process").

Model, for the same cells measured in two modalities (10x Multiome, SNARE-seq, CITE-seq):
- one encoder per modality on its own features: Linear -> Tanh -> BatchNorm to h = 256 units
  (the authors' ``SiamAtt``); the two share a linear head to the 32-d joint embedding and a linear
  cell-type classifier;
- classification loss: cross entropy of both modalities' predictions against the cell type;
- contrastive loss on the 32-d embeddings, per pair of (cell, cell) profiles: a positive pair
  (the same cell in both modalities) costs D^2, a negative pair (different cells) costs
  max(0, m_ij - D)^2 with the flexible margin m_ij = m0 (d_ij + c_ij): d_ij the shortest-path
  distance between the two cells in a kNN graph of one modality (edge length 1.01 - UMAP
  connectivity, as in the paper), c_ij = 3 when their cell types differ. Negatives:positives
  3:1, between modalities (RNA + ATAC, the paper's choice) or within (RNA + protein);
- total = CE(x) + CE(y) + lambda * contrastive (lambda 0.5, the authors' default).

Exactly two datasets, paired (integrate checks same cells, names and order before anything else).
Labels (``label_key``; a dataset without the column counts as unlabelled, the other modality's
label is used for the pair) are the paper's setting; without ``label_key`` the model trains on
the pairing alone (self-supervised: no classification loss, c_ij = 0; announced and recorded in
``model.choices``).

Objectives (``objective``; None, the default, picks ``"margin"`` with labels and ``"infonce"``
without, recorded in ``model.choices``; the measurements behind it: bench/multiome/RESULTS.md):
- ``"margin"`` (the paper's): the flexible-margin contrastive loss above, ``neg_ratio`` sampled
  negatives per cell;
- ``"infonce"`` (not in the paper): symmetric InfoNCE as in CLIP (Radford et al., ICML 2021;
  InfoNCE: van den Oord et al., 2018): the embeddings are unit-normalised,
  the logits are the cosine similarities of every RNA cell of the minibatch with every
  other-modality cell over ``temperature`` (fixed, not learned as in CLIP), and each cell's own
  other measurement is the positive among all the minibatch's cells (the rest are negatives),
  in both directions. No kNN graph or margins are built. The classification loss is kept when
  labels are given. ``temperature`` 0.2 (CLIP learns it; SimCLR, Chen et al. ICML 2020, compared
  0.05-1 and found the best value to depend on the batch size and the training length): a softer
  temperature spreads the loss over more of the minibatch's negatives instead of the few hardest.
  Held-apart cells, embedded one modality at a time, aligned better (FOSCTTM) than at 0.1 on every
  paired dataset measured; kNN label transfer rose on the ATAC sets and fell on the CITE-seq sets
  (bench/multiome/RESULTS.md, "MinNet without labels: temperature").

Inputs: each modality's top ``n_specific_genes`` features (default None: 10,000 for a sparse
modality, under 2 % of its entries non-zero such as ATAC peaks, 2,000 otherwise, as uniPort's
vertical mode; ``scferry.pp.specific_feature_counts``; an integer or a ``{dataset: n}`` dict sets
them; for ATAC peaks the most often open ones, see below) after normalize_total + log1p (for ATAC
give peaks or a gene-activity matrix as the paper does), standardised per feature
with the training mean and standard deviation and clipped to [-10, 10] (paper: "scaled by genes to
unit variance and zero mean, followed by clipping values larger than 10"). The statistics are
buffers of the module, so ``scferry.project`` of new unpaired cells uses the training ones.

Shortest paths without an n x n matrix: the paper runs Dijkstra between all pairs once (an n x n
dense matrix: 40 GB in float32 at 10^5 cells). Here the kNN graph (k = 15, sparse, O(n k)) is
built once, with Dijkstra from L = ``n_landmarks`` random landmark cells (L x n lengths, O(L n)
memory, O(L E log n) time once); a sampled pair's d_ij is the landmark bound
min_l d(i, l) + d(l, j) (an upper bound, exact when a landmark lies on the path), O(L) per pair.
Why not exact Dijkstra from the minibatch's anchors each step: this graph's paths are short
(the nearest-neighbour edges have length 0.01), so a bounded search still visits most cells and
every step would cost a near-full search per anchor. With 64 landmarks the bound correlates
closely with the exact length (bench/multiome/RESULTS.md, "MinNet settings").
``n_landmarks`` >= n gives exact lengths.

Deliberate differences from the paper / the authors' code (documented for users and benchmarks):
- Every cell is an anchor with one positive and ``neg_ratio`` negatives each step (the authors
  draw one partner per cell, positive with probability 1/4): the same 3:1 ratio, more pairs per
  step.
- The contrastive hinge is max(0, m - D)^2 as in the authors' ``ContrastiveLoss`` (the paper's
  formula writes max(0, m - D^2)); the 0.5 and 2 weights of their code are kept.
- No batch correction before the kNN graph (the paper runs ComBat on the RNA of several
  batches): the graph is built on PCA (50 components) of the standardised features of
  ``graph_dataset`` (default: the first dataset). Correct batches beforehand if needed.
- Shortest paths are the landmark bound (see above). m0 = 3 (the authors' code uses 10): on
  held-apart SNARE-seq nuclei it aligned at least as well as 1 or 10.
- Input dropout (``dropout`` = 0.6, not in the paper): without it the encoders memorise the
  training nuclei and generalise poorly to held-apart ones.
- Adam lr 1e-3 (authors 1e-4, which is slower to align within a short budget), 2,000 steps of
  256 cells, no early stopping.
The measurements behind these three choices: bench/multiome/RESULTS.md, "MinNet settings".
- Cells whose label is unknown to integrate (-1) get no classification loss and c_ij = 0.
- ATAC peaks (``feature_selection=None`` and ``n_specific_genes=None``, the defaults; the paper
  takes 2,000 highly variable features of every modality): a modality that looks like peaks (peak
  coordinates as feature names or ``var`` columns chrom/start/end; ``scferry.gw.guess_kind``) reads
  the peaks open in the most cells ("open", as Signac's FindTopFeatures and ArchR's top accessible
  features), 10,000 of them as it is sparse. On sparse near-binary peaks the seurat flavour ranks
  the rarest peaks highest, a nucleus had a handful of reads among 2,000 of them, and held-apart
  nuclei, embedded from their ATAC alone, aligned worse than the paired CCA baseline. Announced and
  recorded in ``model.choices``; ``feature_selection="variable"`` with ``n_specific_genes=2000``
  keeps the paper's inputs, a dict ``{dataset: ...}`` sets each modality.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from ..train import LossRecord
from ..errors import record_choice
from ..pp import check_feature_selection, head_rows, resolve_feature_selection, specific_feature_counts
from .base import INPUT_DROPOUT_MEANING, Method, check_hidden, check_int, check_rate, info_nce

OBJECTIVES = ("margin", "infonce")

def feature_stats(X: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation (1 where constant) of a sparse matrix."""
    X = sp.csr_matrix(X, dtype=np.float64)
    mean = np.asarray(X.mean(axis=0)).ravel()
    var = np.asarray(X.multiply(X).mean(axis=0)).ravel() - mean ** 2
    std = np.sqrt(np.clip(var, 0, None))
    std[std == 0] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def knn_path_graph(X: sp.csr_matrix, mean: np.ndarray, std: np.ndarray, n_neighbors: int,
                   n_pcs: int, seed: int = 0) -> sp.csr_matrix:
    """Sparse kNN graph with edge lengths 1.01 - UMAP connectivity (paper), on PCA of the
    standardised features; O(n k) memory (scferry.neighbors' UMAP graph: no numba compilation)."""
    from ..neighbors import umap_connectivities

    n, p = X.shape
    Z = sp.csr_matrix(X @ sp.diags(1.0 / std.astype(np.float64)), dtype=np.float64)
    mu = mean.astype(np.float64) / std
    # PCA with implicit centring: eigenvectors of the p x p covariance (never densifies n x p)
    cov = np.asarray((Z.T @ Z).todense()) / n - np.outer(mu, mu)
    vals, vecs = np.linalg.eigh(cov)
    vecs = vecs[:, ::-1][:, :max(1, min(n_pcs, p, n - 1))]
    vecs *= np.sign(vecs[np.abs(vecs).argmax(axis=0), np.arange(vecs.shape[1])])  # fixed signs
    pcs = np.asarray(Z @ vecs) - mu @ vecs
    conn = umap_connectivities(pcs, min(n_neighbors, n - 1), seed=seed)
    conn.data = 1.01 - conn.data
    conn.eliminate_zeros()
    return conn


def landmark_distances(graph: sp.csr_matrix, landmarks: np.ndarray) -> np.ndarray:
    """Shortest-path lengths from each landmark to every cell (L x n, float32); unreachable cells
    (another connected component) get the largest finite length."""
    from scipy.sparse.csgraph import dijkstra

    D = dijkstra(graph, directed=False, indices=landmarks).astype(np.float32)
    finite = np.isfinite(D)
    cap = D[finite].max() if finite.any() else 1.0
    D[~finite] = cap
    return D


def _encoder(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []  # on the input features
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.Tanh(), nn.BatchNorm1d(b)]  # the authors' order
    return nn.Sequential(*layers)


class MinNet(Method):
    name = "minnet"
    paired = True
    inputs = ("specific",)  # each modality's own features: no shared feature names needed
    encode_inputs = ("specific",)
    # The paper's model is supervised (classification loss, c_ij); without labels it trains on
    # the pairing alone (self-supervised; announced and recorded by ``resolve``).
    uses_labels = "optional"
    scale_inputs = False  # standardised inside the module (paper), from log-normalised values
    defaults = dict(
        n_latent=32, n_hidden=(256,), n_specific_genes=None, margin=3.0, type_margin=3.0,
        contrastive_weight=0.5, neg_ratio=3, negatives="between", graph_dataset=None,
        n_neighbors=15, n_pcs=50, n_landmarks=64, dropout=0.6, objective=None, temperature=0.2,
        feature_selection=None,
    )
    train_defaults = dict(max_iter=2000, lr=1e-3, weight_decay=0.0, batch_size=512, patience=None)

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        if params.get("reference") is not None:
            raise ValueError("minnet treats both modalities alike and takes no reference; drop reference=.")
        check_hidden(params)
        for key in ("n_latent", "neg_ratio", "n_neighbors", "n_pcs", "n_landmarks"):
            check_int(params, key)
        n_spec = params["n_specific_genes"]
        if isinstance(n_spec, dict):  # per dataset (names checked in resolve)
            for name, n in n_spec.items():
                check_int({f"n_specific_genes[{name!r}]": n}, f"n_specific_genes[{name!r}]")
        elif n_spec is not None:  # None: by each modality's sparsity (resolve)
            check_int(params, "n_specific_genes")
        for key in ("margin", "type_margin", "contrastive_weight"):
            v = params[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise ValueError(f"{key} must be a finite number >= 0; got {v!r}.")
        check_rate(params, "dropout", INPUT_DROPOUT_MEANING)
        if params["negatives"] not in ("between", "within"):
            raise ValueError(f"negatives must be 'between' (different cells of different modalities, "
                             f"for RNA + ATAC) or 'within' (same modality, for RNA + protein); got "
                             f"{params['negatives']!r}.")
        if params["objective"] is not None and params["objective"] not in OBJECTIVES:
            raise ValueError(f"objective must be None (chosen from the labels), 'margin' (the paper's "
                             f"flexible-margin contrastive loss) or 'infonce' (every other cell of the "
                             f"minibatch as a negative); got {params['objective']!r}.")
        check_feature_selection(params.get("feature_selection"))
        t = params["temperature"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not np.isfinite(t) or t <= 0:
            raise ValueError(f"temperature must be a finite number > 0; got {t!r}.")
        if params["graph_dataset"] is not None and not isinstance(params["graph_dataset"], str):
            raise TypeError(f"graph_dataset must be a dataset name or None; got {params['graph_dataset']!r}.")

    @classmethod
    def resolve(cls, params: dict[str, Any], datasets: list, labels) -> tuple[tuple[str, ...], bool]:
        choices = params.get("_choices", {})
        # one read of each dataset's first cells serves both defaults below (none when both are set)
        needs = params.get("n_specific_genes") is None or params.get("feature_selection") is None
        heads = head_rows(datasets) if needs else None
        params["n_specific_genes"] = specific_feature_counts(params.get("n_specific_genes"), datasets,
                                                             heads=heads)
        params["feature_selection"] = resolve_feature_selection(params.get("feature_selection"), datasets,
                                                                choices, "minnet", params["n_specific_genes"],
                                                                stacklevel=4, heads=heads)
        if params.get("objective") is None:
            params["objective"] = "margin" if labels is not None else "infonce"
            record_choice(choices, "objective", params["objective"],
                          "labels given: the paper's flexible-margin loss" if labels is not None else
                          "no labels: InfoNCE (the margins' cell-type term needs labels)")
        if labels is None:
            record_choice(choices, "labels", None,
                          "no label_key: trained on the pairing alone (no classification loss)",
                          f"minnet without label_key: trained on the pairing alone (self-supervised: no "
                          f"classification loss), objective={params['objective']!r}. Pass label_key= to "
                          f"use cell types as the paper does, objective= to choose the loss.", stacklevel=3)
        return cls.inputs, cls.paired

    def __init__(self, dims: dict[str, Any], params: dict[str, Any], dataset_names: list[str]):
        super().__init__(dims, params, dataset_names)
        if len(dataset_names) != 2:
            raise ValueError(f"minnet integrates exactly two paired modalities (e.g. {{'rna': rna, "
                             f"'atac': atac}}); got {len(dataset_names)} datasets {dataset_names}.")
        g = params["graph_dataset"]
        if g is not None and g not in dataset_names:
            raise ValueError(f"graph_dataset {g!r} is not one of the datasets {dataset_names}.")
        self.graph_index = 0 if g is None else dataset_names.index(g)
        hidden, n_classes = list(params["n_hidden"]), len(dims.get("label_names") or [])
        self.encoders = nn.ModuleList(_encoder([p, *hidden], params["dropout"]) for p in dims["n_features"])
        h = hidden[-1]
        self.embed = nn.Linear(h, params["n_latent"])
        self.classifier = nn.Linear(h, n_classes) if n_classes else None
        for k, p in enumerate(dims["n_features"]):
            self.register_buffer(f"mean{k}", torch.zeros(p))
            self.register_buffer(f"std{k}", torch.ones(p))
        self.landmark_dist: torch.Tensor | None = None  # training only (L x n); not saved

    @staticmethod
    def dims_from_views(views: list[dict]) -> dict[str, Any]:
        return {"n_features": [v["specific"].shape[1] for v in views]}

    def init_from_data(self, views: list[dict]) -> None:
        for k, v in enumerate(views):
            mean, std = feature_stats(v["specific"])
            getattr(self, f"mean{k}").copy_(torch.from_numpy(mean))
            getattr(self, f"std{k}").copy_(torch.from_numpy(std))
        if self.params.get("objective") == "infonce":
            return  # no margins: the kNN graph and its shortest paths are not needed
        g = self.graph_index
        graph = knn_path_graph(views[g]["specific"], getattr(self, f"mean{g}").numpy(),
                               getattr(self, f"std{g}").numpy(), self.params["n_neighbors"],
                               self.params["n_pcs"])
        n = graph.shape[0]
        # landmarks from torch's generator, seeded by integrate(seed=): reproducible
        landmarks = torch.randperm(n)[:min(self.params["n_landmarks"], n)].numpy()
        self.landmark_dist = torch.from_numpy(landmark_distances(graph, np.sort(landmarks)))

    def _hidden(self, x: torch.Tensor, k: int) -> torch.Tensor:
        x = ((x - getattr(self, f"mean{k}")) / getattr(self, f"std{k}")).clamp(-10.0, 10.0)
        return self.encoders[k](x)

    def _embed(self, h: torch.Tensor) -> torch.Tensor:
        z = self.embed(h)
        # InfoNCE compares cosine similarities: the embedding is the unit-norm direction
        return F.normalize(z, dim=1) if self.params.get("objective") == "infonce" else z

    def encode(self, inputs: dict[str, torch.Tensor], dataset: int) -> torch.Tensor:
        return self._embed(self._hidden(inputs["specific"], dataset))

    def loss(self, batch: list[dict[str, torch.Tensor]]) -> LossRecord:
        if self.landmark_dist is None and self.params.get("objective") != "infonce":
            raise RuntimeError("minnet: init_from_data must run before training (builds the kNN graph).")
        hx, hy = self._hidden(batch[0]["specific"], 0), self._hidden(batch[1]["specific"], 1)
        zx, zy = self._embed(hx), self._embed(hy)
        if "labels" in batch[0]:
            labels = torch.where(batch[0]["labels"] >= 0, batch[0]["labels"], batch[1]["labels"])
        else:  # trained without labels: the pairing alone
            labels = torch.full((zx.shape[0],), -1, dtype=torch.long, device=zx.device)
        known = labels >= 0
        if self.classifier is not None and known.any():
            ce = (F.cross_entropy(self.classifier(hx)[known], labels[known])
                  + F.cross_entropy(self.classifier(hy)[known], labels[known]))
        else:
            ce = zx.sum() * 0.0

        if self.params.get("objective") == "infonce":
            contrastive = self._infonce(zx, zy)
            total = ce + self.params["contrastive_weight"] * contrastive
            return LossRecord(total, {"classification": ce, "contrastive": contrastive,
                                      "positive_d2": (zx - zy).pow(2).sum(1).mean()})
        n, dev, r = zx.shape[0], zx.device, self.params["neg_ratio"]
        # r negatives per anchor: partner j = i + shift (mod n), shift in 1..n-1, so j != i
        anchor = torch.arange(n, device=dev).repeat(r)
        partner = (anchor + torch.randint(1, max(n, 2), (r * n,), device=dev)) % n
        if self.landmark_dist.device != dev:
            self.landmark_dist = self.landmark_dist.to(dev)
        idx = batch[0]["idx"]
        # shortest path i -> j bounded through the landmarks: min_l d(i, l) + d(l, j)
        d = (self.landmark_dist[:, idx[anchor]] + self.landmark_dist[:, idx[partner]]).min(0).values
        differ = known[anchor] & known[partner] & (labels[anchor] != labels[partner])
        m = self.params["margin"] * (d.to(zx.dtype) + self.params["type_margin"] * differ.to(zx.dtype))
        if self.params["negatives"] == "between":  # alternate which modality is the anchor
            flip = (torch.arange(r * n, device=dev) % 2).bool().unsqueeze(1)
            a = torch.where(flip, zy[anchor], zx[anchor])
            b = torch.where(flip, zx[partner], zy[partner])
            neg_d = ((a - b).pow(2).sum(1) + 1e-3).sqrt()
            neg = F.relu(m - neg_d).pow(2)
        else:  # within each modality, both modalities
            dx = ((zx[anchor] - zx[partner]).pow(2).sum(1) + 1e-3).sqrt()
            dy = ((zy[anchor] - zy[partner]).pow(2).sum(1) + 1e-3).sqrt()
            neg = 0.5 * (F.relu(m - dx).pow(2) + F.relu(m - dy).pow(2))
        pos = (zx - zy).pow(2).sum(1)
        # the authors' weighting: 0.5 * (D^2 for positives + 2 * hinge^2 for negatives), mean over pairs
        contrastive = 0.5 * (pos.sum() + 2 * neg.sum()) / (n + r * n)
        total = ce + self.params["contrastive_weight"] * contrastive
        return LossRecord(total, {"classification": ce, "contrastive": contrastive,
                                  "positive_d2": pos.mean(), "margin": m.mean()})

    def _infonce(self, zx: torch.Tensor, zy: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE over the minibatch (``scferry.methods.base.info_nce``)."""
        return info_nce(zx, zy, self.params["temperature"])
