"""scMODAL: GAN alignment guided by MNN anchors on linked features (Wang et al.), with
the CCA extension of Pramod, Kannan & Dash ("Mosaic single-cell data integration using deep
generative models", CS690 project report, IIT Kanpur).

Two unpaired datasets (modalities), each with its own features:
- encoders E1, E2: own features -> shared latent z (q = 20); decoders G1, G2 back to the own
  features (autoencoding loss, weight 10);
- a discriminator D on z (GAN loss, weight 1) makes E1(X1) and E2(X2) indistinguishable;
- anchors: mutual nearest neighbours (cosine, k = 30 per 500 cells, both ways) between the two
  minibatches, searched in a space built from the *linked features* (a gene-protein table or
  shared gene names; ``anchor_space``, below), with an L2 loss between the anchors' latent codes
  (weight 3; the paper's 1, see below), divided by the mean cross-pair distance (a constant in
  the gradient);
- geometric loss (weight 2; the paper's 1, see below): within each minibatch, the rows of the
  Gaussian-kernel matrix exp(-d / 2) in the modality's own space (``geometry``, below) and in
  latent space should have cosine similarity close to 1
  (capped at 0.975 as the reference implementation does). Here d is rescaled to mean 2 and the
  rows are centred (see ``_kernel``): without that the loss sat at its cap, inert, on our inputs.
Cross-modal imputation: G2(E1(x)) (``scferry.impute``: ``decode_specific``).

Deliberate differences from the reference implementation (documented for users and benchmarks;
measured in ``bench/diagonal/RESULTS.md``, section scMODAL):
- Where the anchors are searched (``anchor_space``, default ``"refined"``). The reference finds
  them on the linked features as the user scaled them (``"linked"``: here log-normalised and
  z-scored). On sparse data (SNARE-seq nuclei) a cell's linked features are too noisy for that:
  most anchors join cells of different types. The default puts both modalities' linked features
  in their Seurat CCA space (Stuart et al. 2019) and compares each cell's CCA coordinates ``c``
  with the other modality's cells' *denoised* coordinates ``s`` (the mean of ``c`` over the cell
  and its ``n_smooth`` nearest cells in its own modality's embedding of all its features): a cell
  of dataset 1 is ``[c, s]``, one of dataset 2 ``[s, c]`` (``scferry.gw.denoised_linked``, the
  space the ``gw`` method's joint embedding is built in; ``anchor_space="denoised"``). The default
  ``"refined"`` adds one round of MaxFuse's refinement (Chen et al., Nat Biotech 2023;
  ``scferry.gw.refine``): cells matched one-to-one in that space, a CCA over each modality's whole
  own embedding plus ``c`` fitted on the best matches, every cell projected and smoothed; anchors
  are searched in ``[refined, denoised]``. ``"cca"``: the CCA coordinates alone. The anchor
  space is built with the fit's ``seed`` (randomised SVDs, neighbour search, matching).
- Anchor weight 3 instead of the paper's 1: with the anchor space, geometry and latent batch norm
  of this list, weight 1 left the alignment behind the CCA of the linked features on CITE-seq
  (14 linked proteins); weight 3 passed it there and on SNARE-seq.
- The geometric loss reads each modality's cells in the anchor space (``geometry="anchor"``,
  default) instead of the model inputs (``"inputs"``, the paper): the neighbourhoods of sparse
  nuclei in 2,000 raw features are mostly noise, and the loss made the latent copy them. The
  anchor space (``"refined"``) holds both modalities in one space where each cell is already
  denoised by its neighbours and placed by the linked features, so keeping its neighbourhoods
  hands the encoders that cell-level structure; the MNN anchors alone pass on only type-level
  pairs (about two thirds join cells of one type, under 1 % true partners on SNARE-seq).
  ``"embedding"`` (the previous default): each modality's own reduced space (PCA of the
  log-normalised counts, LSI of peaks, CLR + PCA of proteins, ``scferry.gw.embed_modality``).
  Unpaired SNARE-seq RNA vs gene activity, all 10,309 nuclei, 600 steps, 3 seeds: FOSCTTM 0.145
  against 0.181 with ``"embedding"`` (the anchor space itself: 0.132); CITE-seq with the
  gene-protein table, 6,855 cells: 0.099 against 0.123 (``bench/diagonal/RESULTS.md``).
- Geometric loss weight 2 instead of the paper's 1 (the reference code's default is 10, with
  its cycle loss). With the anchor geometry above, the geometric term is what hands the encoders
  the anchor space's cell-level structure, and at weight 1 held-apart nuclei trailed the space
  itself. Held-apart protocol (80 % trained unpaired, 20 % embedded one modality at a time),
  2,000 steps, 3 seeds, FOSCTTM weight 1 -> 2: SNARE-seq RNA vs gene activity 0.155 -> 0.147
  (kNN transfer 0.648 -> 0.682); CITE-seq with the gene-protein table 0.098 -> 0.101 (transfer
  0.883 -> 0.886); sci-CAR A549 RNA vs its hg19 gene activity 0.454 -> 0.447
  (``bench/diagonal/RESULTS.md``, "scMODAL's geometric loss weight").
- The encoders end in a batch norm without affine parameters (each modality's codes centred, unit
  variance per dimension). Every other term is scale-free here (batch-normed decoders, the
  rescaled geometric kernel, the relative anchor loss), so without it weight decay and the
  anchor loss's pull shrank the codes until the two modalities' offset and noise dominated them
  (anchor loss back near 1, the alignment at random level).
- One optimiser (the shared trainer's Adam) instead of alternating generator / discriminator
  updates: the discriminator reads z through a gradient-reversal layer, so one backward pass
  gives D the gradient that lowers its loss and the encoders the gradient that raises it (the
  reference's generator loss is exactly minus D's loss). The reference takes 5 D steps per
  generator step; here D and the encoders move at the same rate, which the reversal makes a
  simultaneous-gradient game.
- Inputs are each dataset's own HVGs, MaxAbs-scaled to [0, 1], with sigmoid decoder outputs (so
  imputed values stay in the data's range); the reference feeds user-prepared matrices (often
  z-scored or PCA) and linear decoder outputs. No gradient clipping (the shared trainer has none).
- Minibatches are drawn without replacement inside epochs (shared sampler), the reference draws
  with replacement.
- Training budget 2,000 steps instead of the paper's 10,000. With the latent batch norm above
  the loss does not depend on the encoders' output scale, so nothing opposes the weight decay
  there: it shrinks the encoders' last weights and hidden batch-norm scales until, after several
  thousand steps, the codes carry no signal (all SNARE-seq nuclei, RNA vs gene activity: anchor
  loss flat at ~0.18 from step 1,000, then 1.1, i.e. anchors no closer than random pairs, from
  step ~6,500 with ``geometry="embedding"`` and ~7,700 with ``"anchor"``; FOSCTTM 0.50 after
  10,000 steps with either). 600 and 2,000 steps give the same alignment on held-apart cells
  (``bench/diagonal/RESULTS.md``).
- The reference's extra latent cycle loss (|z - E2(G2(z))|^2, weight 10 in its code, absent from
  the paper) is available as ``cycle_weight`` (default 0, the paper's objective).

Linked features (``linked=``), computed once at integrate time and used only during training:
- ``"shared"``: features with the same name in both datasets (e.g. RNA vs ATAC gene activity),
  at most ``n_linked_features`` of them (the most variable in the first dataset);
- a table: a DataFrame of two columns (feature of dataset 1, feature of dataset 2; columns named
  after the datasets are matched by name) or a list of pairs, e.g. a gene-protein table;
- ``"cca"``: without a hand-made map. With shared feature names: the shared features, as
  ``"shared"`` (the anchor space is ``anchor_space``'s; ``cca_components`` canonical vectors,
  never an n x m matrix). Without shared names: the CCA extension's links,
  one feature pair per canonical component of the cross-covariance of per-cell-type mean profiles
  (``scferry.methods.scmodal_cca.cca_feature_links``), which needs ``label_key`` with labels in both datasets.
Linked values are log-normalised (``normalize_linked=False``: taken as given), then put in the
anchor space (``anchor_space="linked"``: z-scored per dataset, clipped at 10).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .. import gw as _gw
from .scmodal_cca import cca_feature_links
from ..pp import highly_variable, normalize_log1p, zscore as _zscore
from ..neighbors import mutual_knn_mask as mnn_mask
from ..train import LossRecord
from .base import Method, check_hidden, check_int
from .davae import _ReverseGradient
from .uniport import sqdist


ANCHOR_SPACES = ("denoised", "cca", "linked", "refined")


def _mlp(sizes: list[int], out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], out))


def _kernel(x: torch.Tensor) -> torch.Tensor:
    """Row-centred Gaussian kernel exp(-d / 2) of squared distances d rescaled to mean 2 over the
    minibatch's pairs (the value of z-scored features, the reference's inputs). Rescaling: on our
    [0, 1]-scaled sparse inputs d is ~0.01 and the raw kernel ~1 everywhere; centring: rows of a
    positive kernel have cosine > 0.975 (the cap) almost always. Either way the loss was inert."""
    n = len(x)
    d = sqdist(x, x)
    d = 2 * d / (d.sum() / max(n * (n - 1), 1)).clamp_min(1e-12)
    k = torch.exp(-d / 2)
    return k - k.mean(dim=1, keepdim=True)


class ScModal(Method):
    name = "scmodal"
    inputs = ("specific",)  # each modality's own features: no shared names needed
    encode_inputs = ("specific",)
    uses_labels = "optional"  # only linked="cca" between datasets without shared feature names
    seeded_inputs = True  # integrate() passes the fit's seed in params: the anchor space depends on it
    defaults = dict(
        n_latent=20, n_hidden=(256,), n_specific_genes=2000, linked="shared", n_linked_features=2000,
        cca_components=20, n_neighbors=30, ae_weight=10.0, gan_weight=1.0, anchor_weight=3.0,
        geo_weight=2.0, cycle_weight=0.0, normalize_linked=True, anchor_space="refined",
        n_smooth=40, geometry="anchor",
    )
    # The paper's Adam settings: lr 1e-3, weight decay 1e-3, 500 cells per dataset per step, no
    # early stopping (the GAN total need not settle). Budget 2,000 steps, not the paper's 10,000
    # (module docstring, "Training budget").
    train_defaults = dict(max_iter=2000, lr=1e-3, weight_decay=1e-3, batch_size=1000, patience=None)

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        if params.get("reference") is not None:
            raise ValueError("scmodal aligns its two datasets symmetrically and takes no reference; "
                             "drop reference=.")
        check_hidden(params)
        for key in ("n_latent", "n_specific_genes", "n_linked_features",
                    "cca_components", "n_neighbors"):
            check_int(params, key)
        for key in ("ae_weight", "gan_weight", "anchor_weight", "geo_weight", "cycle_weight"):
            v = params[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise ValueError(f"{key} must be a finite number >= 0; got {v!r}.")
        check_int(params, "n_smooth")
        if params["anchor_space"] not in ANCHOR_SPACES:
            raise ValueError(f"anchor_space must be one of {ANCHOR_SPACES} (where the MNN anchors are "
                             f"searched); got {params['anchor_space']!r}.")
        if params["geometry"] not in ("inputs", "embedding", "anchor"):
            raise ValueError(f"geometry must be 'anchor' (the geometric loss reads the anchor "
                             f"space), 'embedding' (each modality's reduced space) or 'inputs' "
                             f"(the model inputs); got {params['geometry']!r}.")
        if not isinstance(params["normalize_linked"], bool):
            raise TypeError(f"normalize_linked must be True or False; got {params['normalize_linked']!r}.")
        params["linked"] = _normalise_linked(params["linked"])  # plain values: the model saves params

    @staticmethod
    def dims_from_views(views: list[dict]) -> dict[str, Any]:
        return {"n_specific": [v["specific"].shape[1] for v in views]}

    @classmethod
    def resolve(cls, params: dict[str, Any], datasets: list, labels) -> tuple[tuple[str, ...], bool]:
        """Builds the linked features from the raw inputs (errors here come before any training
        and touch nothing). They are training-only data, not parameters: carried to
        ``init_from_data`` under a private key that it removes before the model keeps params."""
        params["_linked_views"] = cls._linked_views(params, datasets, None if labels is None else labels[0])
        return cls.inputs, False

    def init_from_data(self, views: list[dict]) -> None:
        # The views are the sampler's: each minibatch item then carries "linked".
        for v, extra in zip(views, self.params.pop("_linked_views")):
            v.update(extra)

    @staticmethod
    def _linked_views(params: dict[str, Any], datasets: list, labels: list[np.ndarray] | None) -> list[dict]:
        """The linked features of each dataset (cells x links, float32), from the raw inputs."""
        if len(datasets) != 2:
            raise ValueError(f"scmodal integrates exactly two datasets (modalities); got {len(datasets)} "
                             f"({[d.name for d in datasets]}). Integrate them pairwise.")
        d1, d2 = datasets
        X1, X2 = d1.counts(), d2.counts()
        if params["normalize_linked"]:
            X1, X2 = normalize_log1p(X1), normalize_log1p(X2)
        linked = params["linked"]
        if isinstance(linked, dict):
            i1, i2 = _table_columns(linked, d1, d2)
        else:
            shared = d1.var_names[d1.var_names.isin(d2.var_names)]
            if len(shared):
                shared = highly_variable(X1[:, d1.var_names.get_indexer(shared)], shared,
                                         params["n_linked_features"])
                i1, i2 = d1.var_names.get_indexer(shared), d2.var_names.get_indexer(shared)
            elif linked == "shared":
                raise ValueError(
                    f"linked='shared' needs features with the same name in both datasets, but "
                    f"{d1.name!r} and {d2.name!r} share none. Pass linked= a table of (feature in "
                    f"{d1.name!r}, feature in {d2.name!r}) pairs, or linked='cca' with label_key=.")
            else:  # "cca" without shared names: the CCA extension's links from cell-type means
                if labels is None or (labels[0] < 0).all() or (labels[1] < 0).all():
                    raise ValueError(
                        f"linked='cca' between datasets without shared feature names ({d1.name!r}, "
                        f"{d2.name!r}) derives links from cell-type means: pass label_key= naming a "
                        "cell-type column present in both datasets, or a linked-feature table.")
                h1 = highly_variable(X1, d1.var_names, params["n_specific_genes"])
                h2 = highly_variable(X2, d2.var_names, params["n_specific_genes"])
                c1, c2 = d1.var_names.get_indexer(h1), d2.var_names.get_indexer(h2)
                g1 = np.where(labels[0] >= 0, labels[0], -1)
                g2 = np.where(labels[1] >= 0, labels[1], -2)  # unlabelled cells never share a group
                pairs = cca_feature_links(X1[:, c1], X2[:, c2], g1, g2, params["cca_components"])
                if not pairs:
                    raise ValueError("linked='cca' found no feature links between the cell-type means "
                                     "(all features constant across the shared types?); pass a "
                                     "linked-feature table.")
                i1, i2 = c1[[p[0] for p in pairs]], c2[[p[1] for p in pairs]]
        own = _own_embeddings(datasets, int(params.get("seed", 0))) if params["geometry"] == "embedding" or \
            params["anchor_space"] in ("denoised", "refined") else None
        views = _anchor_space(params, own, X1[:, i1], X2[:, i2])
        if params["geometry"] == "embedding":
            for v, Z in zip(views, own):
                v["geometry"] = Z
        elif params["geometry"] == "anchor":
            for v in views:
                v["geometry"] = v["linked"]
        return views

    def __init__(self, dims: dict[str, Any], params: dict[str, Any], dataset_names: list[str]):
        super().__init__(dims, params, dataset_names)
        q, hid = params["n_latent"], list(params["n_hidden"])
        # each encoder ends in a batch norm without affine parameters: every modality's codes are
        # centred and of unit variance per dimension (see the module docstring: the latent scale)
        self.encoders = nn.ModuleList(nn.Sequential(_mlp([p, *hid], q), nn.BatchNorm1d(q, affine=False))
                                      for p in dims["n_specific"])
        self.decoders = nn.ModuleList(_mlp([q, *hid[::-1]], p) for p in dims["n_specific"])
        h = hid[0]
        self.discriminator = nn.Sequential(nn.Linear(q, h), nn.LeakyReLU(0.2), nn.Linear(h, h),
                                           nn.LeakyReLU(0.2), nn.Linear(h, 1))

    def encode(self, inputs: dict[str, torch.Tensor], dataset: int) -> torch.Tensor:
        return self.encoders[dataset](inputs["specific"])

    def decode_specific(self, z: torch.Tensor, dataset: int) -> torch.Tensor:
        """Logits of dataset ``dataset``'s features (MaxAbs scale after a sigmoid) for codes z."""
        return self.decoders[dataset](z)

    def loss(self, batch: list[dict[str, torch.Tensor]]) -> LossRecord:
        x = [b["specific"] for b in batch]
        z = [self.encoders[d](x[d]) for d in range(2)]
        ae = sum(F.mse_loss(torch.sigmoid(self.decoders[d](z[d])), x[d]) for d in range(2))
        # GAN: D labels dataset 1 as 1 and dataset 2 as 0 (the reference's softplus form); the
        # reversal hands the encoders minus D's gradient (one optimiser, see module docstring).
        logits = [self.discriminator(_ReverseGradient.apply(zd)).squeeze(1) for zd in z]
        gan = F.softplus(-logits[0]).mean() + F.softplus(logits[1]).mean()
        g = [b.get("geometry", xd) for b, xd in zip(batch, x)]  # where the own geometry is read
        geo = -sum(F.cosine_similarity(_kernel(g[d]), _kernel(z[d]), dim=1).clamp(max=0.975).mean()
                   for d in range(2))
        with torch.no_grad():
            # k is per 500 cells (the paper's minibatch): k = 30 among 200 cells takes a tenth of
            # all pairs as anchors (pbmc10k CITE, 200 cells, 150 steps: FOSCTTM 0.25 at k = 30,
            # 0.19 at k = 10-12).
            n = min(len(batch[0]["linked"]), len(batch[1]["linked"]))
            k = max(1, round(self.params["n_neighbors"] * n / 500))
            mask = mnn_mask(batch[0]["linked"], batch[1]["linked"], k).float()
        n_pairs = mask.sum()
        # Relative to the mean cross-pair distance (a constant in the gradient: through it the
        # loss would push all other pairs apart, separating the modalities): scale-free, else
        # shrinking z drives the loss to 0 (seen: z sd 0.03; the decoders' batch norm allows it).
        # pbmc10k CITE, 150 steps: FOSCTTM 0.21 detached, 0.38 not detached.
        dist = sqdist(z[0], z[1])
        anchor = (mask * dist).sum() / n_pairs.clamp_min(1.0) / dist.mean().detach().clamp_min(1e-12)
        p = self.params
        total = p["ae_weight"] * ae + p["gan_weight"] * gan + p["anchor_weight"] * anchor + \
            p["geo_weight"] * geo
        parts = {"ae": ae, "gan": gan, "anchor": anchor, "geo": geo, "mnn_pairs": n_pairs}
        if p["cycle_weight"] > 0:  # the reference's latent cycle: z -> other decoder -> other encoder
            cyc = sum(F.mse_loss(self.encoders[1 - d](torch.sigmoid(self.decoders[1 - d](z[d]))), z[d])
                      for d in range(2))
            total = total + p["cycle_weight"] * cyc
            parts["cycle"] = cyc
        monitor = p["ae_weight"] * ae + p["anchor_weight"] * anchor + p["geo_weight"] * geo
        return LossRecord(total, parts, monitor=monitor)


def _anchor_space(params: dict[str, Any], own: tuple | None, L1, L2) -> list[dict]:
    """Where the MNN anchors are searched, from the linked features ``L1``, ``L2`` (cells x the
    same links, log-normalised unless ``normalize_linked=False``): ``anchor_space`` "linked" (the
    features z-scored, the reference implementation), "cca" (their Seurat CCA) or "denoised" (the
    CCA coordinates ``c`` against their means ``s`` over each cell's ``n_smooth`` nearest cells in
    its own modality's embedding ``own``: ``[c, s]`` vs ``[s, c]``, ``scferry.gw.denoised_linked``)
    or "refined" (the denoised space plus one round of ``scferry.gw.refine``: cells matched in it, a
    CCA over each modality's whole own embedding and ``c`` fitted on the best matches, MaxFuse)."""
    space = params["anchor_space"]
    if space == "linked":
        return [{"linked": _zscore(L1)}, {"linked": _zscore(L2)}]
    seed = int(params.get("seed", 0))  # the fit's seed (integrate passes it)
    UV = _gw.linked_cca((L1, L2), seed=seed, n_components=params["cca_components"], normalize=False)
    if space == "cca":
        return [{"linked": UV[0]}, {"linked": UV[1]}]
    (c1, s1), (c2, s2) = _gw.denoised_linked(own, UV, params["n_smooth"], seed=seed)
    E = (np.hstack([c1, s1]), np.hstack([s2, c2]))
    if space == "refined":  # plus one round of scferry.gw.refine over all features (MaxFuse)
        E, _ = _gw.refined_space(own, E, (c1, c2), n_iter=1, n_smooth=params["n_smooth"], seed=seed)
    return [{"linked": E[0]}, {"linked": E[1]}]


def _own_embeddings(datasets: list, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Each dataset's cells in its own modality's reduced space (``scferry.gw.embed_modality``:
    PCA of log-normalised counts, LSI of peaks, CLR + PCA of proteins), float32; ``seed``: the
    fit's (randomised SVD)."""
    Z = []
    for d in datasets:
        X = d.counts()
        Z.append(_gw.embed_modality(X, _gw.guess_kind(X, d.adata.var, d.var_names), seed=seed))
    return tuple(Z)


def _normalise_linked(linked) -> str | dict:
    """'shared', 'cca', or the table as plain values (the model saves its params):
    ``{"pairs": [[feature in dataset 1, feature in dataset 2], ...], "columns": [c1, c2] | None}``;
    a DataFrame's column names are kept so that columns named after the datasets match by name."""
    if isinstance(linked, str):
        if linked not in ("shared", "cca"):
            raise ValueError(f"linked must be 'shared', 'cca' or a table of feature pairs; got {linked!r}.")
        return linked
    columns = None
    if isinstance(linked, dict) and set(linked) == {"pairs", "columns"}:  # already normalised (load)
        columns, rows = linked["columns"], [list(r) for r in linked["pairs"]]
    elif isinstance(linked, pd.DataFrame):
        if linked.shape[1] != 2:
            raise ValueError(f"the linked-feature table must have 2 columns (feature in dataset 1, "
                             f"feature in dataset 2); got {linked.shape[1]}: {list(linked.columns)}.")
        columns = [str(c) for c in linked.columns]
        rows = linked.to_numpy(dtype=object).tolist()
    elif isinstance(linked, (list, tuple, np.ndarray)):
        rows = [list(r) if isinstance(r, (list, tuple, np.ndarray)) else r for r in linked]
    else:
        raise TypeError(f"linked must be 'shared', 'cca', a DataFrame of 2 columns or a list of "
                        f"(feature, feature) pairs; got {type(linked).__name__}.")
    for r in rows:
        if not (isinstance(r, list) and len(r) == 2 and all(isinstance(f, str) for f in r)):
            raise ValueError(f"each linked pair must be two feature names (str, str); got {r!r}.")
    if not rows:
        raise ValueError("the linked-feature table is empty; give at least one feature pair.")
    return {"pairs": rows, "columns": columns}


def _table_columns(linked: dict, d1, d2) -> tuple[np.ndarray, np.ndarray]:
    """Column indices of the table's features in each dataset; every feature must exist."""
    rows, cols = linked["pairs"], linked["columns"]
    if cols is not None and set(cols) == {d1.name, d2.name} and cols[0] == d2.name:
        rows = [[b, a] for a, b in rows]  # columns named after the datasets, in the other order
    f1, f2 = pd.Index([r[0] for r in rows]), pd.Index([r[1] for r in rows])
    for f, d, side in ((f1, d1, "first"), (f2, d2, "second")):
        missing = list(pd.unique(np.asarray(f[~f.isin(d.var_names)], dtype=object)))
        if missing:
            raise ValueError(
                f"the linked-feature table names {len(missing)} feature(s) absent from dataset "
                f"{d.name!r} ({side} column), e.g. {missing[:5]}. Check the identifiers (symbols vs "
                f"IDs, case) and the column order (feature of {d1.name!r} first), or drop those rows.")
    return d1.var_names.get_indexer(f1), d2.var_names.get_indexer(f2)
