"""DAVAE: domain-adversarial variational autoencoder (Hu et al., "DAVAE: a domain-adversarial and
variational approximation framework", scbean; paper Methods eqs. 1-15).

Model, for cells of k datasets on their p common highly variable genes:
- encoder q(z | x): p -> 128 -> 64 -> 32 -> (mu, log sigma^2) of a d-dimensional Gaussian;
- decoder f(z, b): [z, one-hot dataset b] (d + k) -> 32 -> 64 -> 128 -> p, each hidden layer
  Linear + batch norm + ReLU + dropout 0.1, softplus output;
- Gaussian likelihood x = f(z, b) + e, e ~ N(0, sigma^2 I), with sigma^2 at its closed-form
  optimum (eq. 8): the minibatch's mean squared residual. Plugged in, the per-cell term is
  p/2 (log 2 pi + log sigma^2) + ||x - f||^2 / (2 sigma^2) (eq. 9); sigma^2 is treated as a
  constant in the gradient, which is exact here because d loss / d sigma^2 = 0 at the optimum;
- KL(q(z | x) || N(0, I));
- domain classifier g: gradient reversal -> d -> 16 (batch norm, ReLU) -> k, cross entropy
  against the dataset, weight lambda (eq. 11): the classifier minimises it, the encoder
  maximises it.

Defaults follow the paper's scripts (scbean 0.5.6 and the davae_paper repository) where not
listed below: hidden layers 128-64-32, Adam lr 0.01, 128 cells per step, 2,000 HVGs, lambda 3 (the
value used for three datasets, e.g. 293T/Jurkat).

Defaults that differ from the paper's scripts (issue 16: measured on every multi-batch dataset of
the batch-integration study, a change kept only where it helped on most of them; per-dataset
figures in bench/batch_integration/RESULTS.md, "DAVAE's defaults"):
- latent d = 10, not 5 (``hidden_layers=[128, 64, 32, 5]``; peers use 10-30): the larger latent
  kept cell types apart better on the cross-technology pair and the chemistries.
- The budget scales with the data (``max_iter="auto"``, :meth:`DAVAE.auto_max_iter`): 2.5
  optimiser steps per cell, at least 500 and at most 8,000 steps (scbean trains a fixed number
  of epochs, too few to mix at its defaults). Tiny inputs train briefly; the larger sets,
  which a fixed 3,000 steps under-trained, get more.
- The KL term weighs 0.5 (``kl_weight``; the paper's ELBO: 1), as uniPort's default (Cao et
  al., Nat Commun 2022) and a beta-VAE with beta < 1 (Higgins et al., ICLR 2017): the prior's
  pull towards the origin packed small cell types against their neighbours. Measured at the
  study's defaults (3 seeds; PDAC 6 seeds, its spread being large), 1 -> 0.5: cell-type
  silhouette up on 5 of 6 datasets (PDAC 0.572 -> 0.611, hippocampus 0.439 -> 0.473, lymph
  node 0.386 -> 0.421, MERFISH 0.449 -> 0.504, kang 0.581 -> 0.597; symphony 0.629 -> 0.600),
  LOBO transfer up on both labelled sets (symphony 0.917 -> 0.921, kang 0.920 -> 0.923), batch
  entropy up on the three spot pairs and down by 0.003-0.08 on the others.
- Options measured and left off by default (they did not help on most datasets): ``kl_warmup``
  (the KL weight rising linearly from 0 to ``kl_weight`` over that many steps) and
  ``likelihood="nb"`` (a negative binomial on the counts behind the log-normalised input,
  gene-wise dispersion, mean = decoded proportions x the cell's count over the model's genes,
  as scVI; about twice the time per step). ``likelihood="nb"`` needs raw counts and
  ``preprocess=True``.
- Two label-free neighbour terms, options left off by default (measured on every dataset of
  the study; neither helped on most): ``structure_weight`` keeps each cell's own-dataset
  neighbours (its 10 nearest cells in its dataset's own 30-component PCA of the model inputs,
  found once) close in the latent: one neighbour per minibatch cell, drawn at random, is
  encoded, and the term is its mean squared distance to the cell over the mean squared distance
  of the dataset's minibatch cells to those neighbours (scale-free; :func:`neighbour_pull`), as
  the within-batch neighbour positives of scDML (Yu et al., Nat Commun 2023) and SMILE (Xu et
  al., Brief Bioinform 2022) but without the contrastive negatives, whose uniformity pressure
  evened out each dataset's density and merged cell types. ``mnn_weight`` pulls together the
  mutual nearest neighbours of every two datasets (10 neighbours; found once in the PCA of all
  cells with unit-normalised rows, then again in the latent means every 500 steps, as iMAP's
  second stage, Wang et al., Genome Biol 2021, and scDML use MNN pairs), as InfoNCE with one
  partner per minibatch cell as its positive and the other cells' partners as negatives
  (:func:`neighbour_nce`). Both are multiplied by the number of genes, as the domain term.
- A ceiling on the adversary, ``domain_grad_cap=3`` (``None`` = the paper's plain reversal): the
  reversed domain gradient reaching the latent means is scaled down wherever its norm exceeds 3
  times the norm of the ELBO's gradient there, so that the adversary can never push the encoder
  much harder than the reconstruction pulls it back (the adaptive adversarial weight of Esser et
  al., "Taming transformers for high-resolution image synthesis", CVPR 2021, eq. 7, used as a
  ceiling; the classifier's own gradient is not scaled). The uncapped ratio is logged per epoch
  as ``domain_grad_ratio``. Why: at the paper's lambda the domain gradient at the latent is many
  times the ELBO's in the first epochs and in later bursts; on a pair of technologies whose
  cell-type compositions differ (spots vs cells) the game then oscillates, and where it stops,
  and with it the embedding's cell-type structure, changed with the seed and even with the order
  of floating-point sums. With the ceiling the bursts are bounded and the result no longer
  depends on the draw; the chemistries and donors kept their scores within a seed's spread. A
  ceiling of 1 also steadied training but cost cell-type structure on the chemistries, where a
  strong early push helps.
- Highly variable genes are already chosen batch-aware (scanpy's seurat flavour per dataset,
  ranked by the number of datasets in which a gene is variable), so that was not a candidate.

Deliberate differences from scbean's implementation (documented for users and benchmarks):
- Every dataset's reconstruction counts (paper eq. 9 sums over all datasets); scbean's
  ``davae_preprocessing`` gives the first dataset loss weight 1 and all others 0.
- The encoder sees expression only (paper: q(z | x)); scbean's default mode 'DACVAE' also feeds
  it the one-hot batch.
- The classifier's cross entropy is multiplied by p as in scbean (``* input_size``), so that
  lambda weighs it against a reconstruction term that grows with p, at any gene count.
- The classifier reads the latent mean, the coordinates users get, not a sample of z: with a
  sample, the encoder fooled it by drowning the dataset signal in posterior noise while the means
  stayed apart (on the PDAC pair the datasets barely mixed; bench/batch_integration/RESULTS.md).
- The classifier has batch norm after its hidden layer, as scbean's does (the paper lists only
  d -> 16 -> k): without it the encoder raised the unbounded cross entropy by inflating the
  latent scale and KL exploded. scbean's dropout 0.01 there is left out.
- Preprocessing is scferry's shared one (counts per 10,000, log1p, common HVGs ranked across
  datasets) without the per-dataset MaxAbs scaling uniPort uses: the Gaussian decoder models
  log-normalised values directly, as in the paper. scbean normalises to counts per million; the
  difference is a constant shift of log values that the decoder absorbs.
- Each step takes an equal share of cells from every dataset (the shared sampler), so small
  datasets are not drowned in the adversarial term; scbean shuffles all cells together.
- No early stopping by default (a fixed budget, as scbean's fixed epochs); with ``patience=``
  it watches the ELBO part (reconstruction + KL), not the adversarial game.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..pp import TARGET_SUM
from ..train import LossRecord
from .base import Method, check_hidden, check_int, check_number, check_rate, neighbour_nce, neighbour_pull


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


def _mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class DAVAE(Method):
    name = "davae"
    inputs = ("common",)  # one shared gene space; no dataset-specific genes
    scale_inputs = False
    defaults = dict(
        n_latent=10, n_hidden=(128, 64, 32), n_common_genes=2000, domain_weight=3.0,
        domain_hidden=16, dropout=0.1, kl_warmup=0, likelihood="gaussian", domain_grad_cap=3.0,
        structure_weight=0.0, mnn_weight=0.0, kl_weight=0.5,
    )
    # Adam at the paper's lr; a fixed budget in steps (like scbean's fixed epochs), set from the
    # number of cells (auto_max_iter): the ELBO levels off before the adversarial alignment
    # does, so early stopping on it stops before the batches are mixed
    # (bench/batch_integration/RESULTS.md).
    train_defaults = dict(max_iter="auto", lr=1e-2, weight_decay=0.0, batch_size=128, patience=None)
    STEPS_PER_CELL, MIN_STEPS, MAX_STEPS = 2.5, 500, 8000
    # structure_weight / mnn_weight (module docstring): principal components of the inputs the
    # neighbours are found in, neighbours per cell, the contrastive temperature (of the minibatch's
    # mean squared distance) and how often (steps) the mutual pairs are found again in the latent
    NCE_PCS, NCE_NEIGHBOURS, NCE_TEMPERATURE, MNN_REFRESH = 30, 10, 0.2, 500

    @classmethod
    def auto_max_iter(cls, n_cells: list[int]) -> int:
        """2.5 optimiser steps per cell (of all datasets), at least 500 and at most 8,000."""
        return int(min(cls.MAX_STEPS, max(cls.MIN_STEPS, round(cls.STEPS_PER_CELL * sum(n_cells)))))

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        if params.get("reference") is not None:
            raise ValueError("davae aligns all datasets symmetrically and takes no reference; "
                             "drop reference= (it is a uniPort option).")
        for key in ("n_latent", "domain_hidden", "n_common_genes"):
            check_int(params, key)
        check_int(params, "kl_warmup", minimum=0)
        if params["likelihood"] not in ("gaussian", "nb"):
            raise ValueError(f"likelihood must be 'gaussian' (the paper's, on log-normalised values) or "
                             f"'nb' (negative binomial on counts); got {params['likelihood']!r}.")
        check_hidden(params)
        cap = params["domain_grad_cap"]
        if cap is not None and not (isinstance(cap, (int, float)) and not isinstance(cap, bool)
                                    and math.isfinite(cap) and cap > 0):
            raise ValueError(f"domain_grad_cap must be a number > 0 (the largest ratio of the domain "
                             f"term's gradient at the latent means to the ELBO's) or None (no cap); "
                             f"got {cap!r}.")
        check_number(params, "kl_weight")
        check_number(params, "structure_weight")
        check_number(params, "mnn_weight")
        if not (isinstance(params["domain_weight"], (int, float)) and params["domain_weight"] >= 0):
            raise ValueError(f"domain_weight must be a number >= 0; got {params['domain_weight']!r}.")
        check_rate(params, "dropout", "the fraction of hidden units zeroed at random in training; 0: off")

    @classmethod
    def resolve(cls, params: dict[str, Any], datasets: list, labels) -> tuple[tuple[str, ...], bool]:
        from ..ondisk import is_on_disk
        if (params["structure_weight"] > 0 or params["mnn_weight"] > 0) and any(map(is_on_disk, datasets)):
            raise ValueError("structure_weight and mnn_weight find neighbours in the whole data held in "
                             "memory: pass the datasets as AnnData objects in memory, or leave both at 0.")
        if params["likelihood"] == "nb":  # each cell's total count, to give the model back its counts
            from ..ondisk import row_chunks
            params["_library"] = [np.concatenate([np.asarray(X.sum(axis=1)).ravel() for X in row_chunks(d)])
                                  for d in datasets]
        return cls.inputs, cls.paired

    def __init__(self, dims: dict[str, Any], params: dict[str, Any], dataset_names: list[str]):
        self._library = params.pop("_library", None)  # per-dataset cell totals (nb), not a parameter
        super().__init__(dims, params, dataset_names)
        nb = params.get("likelihood", "gaussian") == "nb"
        p, k, d = dims["n_common"], len(dataset_names), params["n_latent"]
        hidden = list(params["n_hidden"])
        self.encoder = _mlp([p, *hidden], params["dropout"])
        self.mu = nn.Linear(hidden[-1], d)
        self.logvar = nn.Linear(hidden[-1], d)
        # gaussian: the expected log-normalised values (softplus >= 0); nb: gene proportions (softmax
        # in the loss and in decode) scaled by the cell's count total, as scVI's decoder
        self.decoder = nn.Sequential(_mlp([d + k, *hidden[::-1]], params["dropout"]),
                                     nn.Linear(hidden[0], p), *([] if nb else [nn.Softplus()]))
        if nb:  # gene-wise inverse dispersion theta = exp(log_theta), as scVI's dispersion="gene"
            self.log_theta = nn.Parameter(torch.zeros(p))
        # Batch norm makes the classifier blind to the scale of z: without it the encoder can
        # raise the (unbounded) cross entropy by inflating z, and KL explodes (seen on PDAC).
        self.classifier = nn.Sequential(nn.Linear(d, params["domain_hidden"]),
                                        nn.BatchNorm1d(params["domain_hidden"]), nn.ReLU(),
                                        nn.Linear(params["domain_hidden"], k))
        self._steps = 0  # training losses computed so far (KL warm-up); a host int: no device sync
        self._last_ratio = torch.zeros(())  # domain_grad_cap: the last step's gradient-norm ratio
        # structure_weight / mnn_weight: the model inputs of every cell (to encode a minibatch
        # cell's neighbour), each cell's own-dataset neighbours and its mutual-pair partners;
        # set by init_from_data, used in training only, dropped after it (release_training_data)
        self._pool: list | None = None
        self._nbr: list[np.ndarray] | None = None
        self._mnn: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    @staticmethod
    def dims_from_views(views: list[dict]) -> dict[str, Any]:
        return {"n_common": views[0]["common"].shape[1]}

    def init_from_data(self, views: list[dict]) -> None:
        """nb: each view gets ``size`` (cells x 1: total count / 10,000), with which ``loss`` turns
        the log-normalised input back into counts. structure_weight / mnn_weight: each cell's
        neighbours within its own dataset and its mutual nearest neighbours in the others, in
        principal components of the inputs."""
        if self.params.get("structure_weight", 0) > 0 or self.params.get("mnn_weight", 0) > 0:
            self._init_neighbours(views)
        if self._library is None:
            return
        for v, lib in zip(views, self._library):
            X = v["common"][: min(200, lib.shape[0])]
            X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
            counts = np.expm1(X) * (lib[: X.shape[0], None] / TARGET_SUM)
            if np.abs(counts - np.round(counts)).max() > 0.05:
                raise ValueError("likelihood='nb' models counts: pass raw counts with preprocess=True "
                                 "(the inputs given are not counts normalised by scferry).")
            v["size"] = (lib / TARGET_SUM).astype(np.float32)[:, None]
        self._library = None

    def release_training_data(self) -> None:
        self._pool = self._nbr = self._mnn = None

    def _init_neighbours(self, views: list[dict]) -> None:
        from ..pp import pca
        from ..neighbors import knn
        self._pool = [v["common"] for v in views]
        dense = [X.toarray() if hasattr(X, "toarray") else np.asarray(X) for X in self._pool]
        if self.params.get("structure_weight", 0) > 0:  # in each dataset's own PCA
            self._nbr = [knn(pca(X, self.NCE_PCS, 0), min(self.NCE_NEIGHBOURS, X.shape[0] - 1))[1]
                         for X in dense]
        if self.params.get("mnn_weight", 0) > 0:  # in the PCA of all cells, rows unit-normalised
            Z = pca(np.vstack(dense), self.NCE_PCS, 0)
            Z /= np.linalg.norm(Z, axis=1, keepdims=True).clip(1e-12)
            self._set_mnn(np.split(Z, np.cumsum([X.shape[0] for X in dense])[:-1]))

    def _set_mnn(self, Z: list[np.ndarray]) -> None:
        """Mutual nearest neighbour pairs between every two datasets of the coordinates ``Z``, kept
        per dataset as (offsets per cell, partner dataset, partner row)."""
        from ..neighbors import mutual_pairs
        pairs: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in Z]
        for a in range(len(Z)):
            for b in range(a + 1, len(Z)):
                i, j = mutual_pairs(Z[a], Z[b], self.NCE_NEIGHBOURS)
                pairs[a].append((i, np.full_like(j, b), j))
                pairs[b].append((j, np.full_like(i, a), i))
        self._mnn = []
        for d, parts in enumerate(pairs):
            row = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
            ds = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
            other = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.int64)
            order = np.argsort(row, kind="stable")
            offsets = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=Z[d].shape[0]))])
            self._mnn.append((offsets, ds[order], other[order]))

    @torch.no_grad()
    def _refresh_mnn(self, device: torch.device) -> None:
        """The mutual pairs found again in the current latent means (iMAP's second stage finds them in
        its trained embedding; Wang et al., Genome Biol 2021)."""
        self.eval()
        Z = []
        for X in self._pool:
            Z.append(np.vstack([self._encode(self._rows(X, np.arange(s, min(s + 4096, X.shape[0])), device))[0]
                                .cpu().numpy() for s in range(0, X.shape[0], 4096)]))
        self.train()
        self._set_mnn(Z)

    @staticmethod
    def _rows(X, rows: np.ndarray, device: torch.device) -> torch.Tensor:
        part = X[rows]
        part = part.toarray() if hasattr(part, "toarray") else np.asarray(part)
        return torch.from_numpy(np.asarray(part, dtype=np.float32)).to(device)

    def _gather(self, picks: list[tuple[int, np.ndarray]], device: torch.device) -> torch.Tensor:
        """Model inputs of the cells ``picks`` = [(dataset, rows), ...], in that order."""
        return torch.cat([self._rows(self._pool[d], rows, device) for d, rows in picks])

    def _structure_loss(self, batch: list[dict], mu: torch.Tensor, datasets: torch.Tensor) -> torch.Tensor:
        """Each minibatch cell's latent mean near that of one of its own-dataset input neighbours
        (drawn at random), relative to its distances to the other cells of its dataset in the
        minibatch (:func:`neighbour_pull`)."""
        picks = []
        for d, b in enumerate(batch):
            rows = b["idx"].cpu().numpy()
            col = torch.randint(self._nbr[d].shape[1], (len(rows),)).numpy()
            picks.append((d, self._nbr[d][rows, col]))
        mu_pos = self._encode(self._gather(picks, mu.device))[0]
        return neighbour_pull(mu, mu_pos, groups=datasets)

    def _mnn_loss(self, batch: list[dict], mu: torch.Tensor) -> torch.Tensor | None:
        """Minibatch cells with a mutual nearest neighbour in another dataset: latent mean near that
        of one partner (drawn at random), the other cells' partners as negatives."""
        anchors, picks, start = [], [], 0
        for d, b in enumerate(batch):
            rows = b["idx"].cpu().numpy()
            offsets, ds, other = self._mnn[d]
            count = offsets[rows + 1] - offsets[rows]
            has = np.flatnonzero(count > 0)
            if len(has):  # one partner per anchor, gathered by the partner's dataset
                draw = torch.rand(len(has)).numpy()
                at = offsets[rows[has]] + np.minimum((draw * count[has]).astype(np.int64), count[has] - 1)
                for e in np.unique(ds[at]):
                    anchors.append(start + has[ds[at] == e])
                    picks.append((int(e), other[at][ds[at] == e]))
            start += len(rows)
        if not anchors or sum(len(a) for a in anchors) < 2:
            return None
        anchor = mu[torch.from_numpy(np.concatenate(anchors)).to(mu.device)]
        return neighbour_nce(anchor, self._encode(self._gather(picks, mu.device))[0], self.NCE_TEMPERATURE)

    def _encode(self, x: torch.Tensor):
        h = self.encoder(x)
        return self.mu(h), self.logvar(h).clamp(-10.0, 10.0)

    def encode(self, inputs: dict[str, torch.Tensor], dataset: int) -> torch.Tensor:
        return self._encode(inputs["common"])[0]

    def decode(self, z: torch.Tensor, datasets: torch.Tensor) -> torch.Tensor:
        """Expected expression of latent codes ``z`` as if measured in dataset indices ``datasets``
        (one per row): log-normalised values (gaussian) or gene proportions (nb)."""
        out = self._decode(z, datasets)
        return out.softmax(1) if self.params.get("likelihood") == "nb" else out

    def _decode(self, z: torch.Tensor, datasets: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(datasets, len(self.dataset_names)).to(z.dtype)
        return self.decoder(torch.cat([z, onehot], dim=1))

    def _nb_nll(self, x: torch.Tensor, size: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Negative binomial negative log-likelihood per cell of the counts behind ``x`` (log1p of
        counts per 10,000; ``size`` = total / 10,000), mean = proportions x the counts' sum."""
        y = torch.round(torch.expm1(x) * size)
        log_mu = logits.log_softmax(1) + torch.log(y.sum(1, keepdim=True).clamp_min(1.0))
        log_theta = self.log_theta.clamp(-10.0, 10.0)
        theta = log_theta.exp()
        log_theta_mu = torch.logaddexp(log_theta, log_mu)
        ll = (theta * (log_theta - log_theta_mu) + y * (log_mu - log_theta_mu)
              + torch.lgamma(y + theta) - torch.lgamma(theta) - torch.lgamma(y + 1.0))
        return -ll.sum(1)

    def loss(self, batch: list[dict[str, torch.Tensor]]) -> LossRecord:
        x = torch.cat([b["common"] for b in batch])
        sizes = torch.tensor([b["common"].shape[0] for b in batch], device=x.device)
        datasets = torch.repeat_interleave(torch.arange(len(batch), device=x.device), sizes)
        n, p = x.shape
        mu, logvar = self._encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        if self.params.get("likelihood") == "nb":
            size = torch.cat([b["size"] for b in batch])
            recon = self._nb_nll(x, size, self._decode(z, datasets)).mean()
            var = torch.zeros((), device=x.device)
        else:
            sq = (x - self._decode(z, datasets)).pow(2).sum(1)
            var = (sq.detach().mean() / p).clamp_min(1e-8)  # eq. 8: closed-form sigma^2
            recon = (0.5 * p * (math.log(2 * math.pi) + torch.log(var)) + sq / (2 * var)).mean()
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1).mean()
        weight = self.params["domain_weight"] * p
        cap = self.params.get("domain_grad_cap")
        parts = {}
        if cap is None or not (self.training and torch.is_grad_enabled()):
            logits = self.classifier(_ReverseGradient.apply(mu))  # means: see the module docstring
            domain = F.cross_entropy(logits, datasets)
        else:  # the encoder's share of the domain gradient, capped against the ELBO's (docstring)
            mu_d = mu.detach().requires_grad_(True)
            domain = F.cross_entropy(self.classifier(mu_d), datasets)
            g_adv = torch.autograd.grad(weight * domain, mu_d, retain_graph=True)[0]
            mu.register_hook(lambda g: self._capped_reversal(g, g_adv, cap))
            parts["domain_grad_ratio"] = self._last_ratio.to(x.device)
        extra = torch.zeros((), device=x.device)
        if self._pool is not None and self.training and torch.is_grad_enabled():
            if self._mnn is not None and self._steps and self._steps % self.MNN_REFRESH == 0:
                self._refresh_mnn(x.device)
            if self._nbr is not None:
                parts["structure"] = self._structure_loss(batch, mu, datasets)
                extra = extra + self.params["structure_weight"] * p * parts["structure"]
            if self._mnn is not None:
                mnn = self._mnn_loss(batch, mu)
                if mnn is not None:
                    parts["mnn"] = mnn
                    extra = extra + self.params["mnn_weight"] * p * mnn
        warm = self.params.get("kl_warmup", 0)
        beta = min(1.0, self._steps / warm) if warm and self.training else 1.0
        if self.training:
            self._steps += 1
        elbo = recon + kl
        kl_weight = beta * self.params.get("kl_weight", 1.0)  # models saved before the option: 1
        total = recon + kl_weight * kl + weight * domain + extra
        return LossRecord(total, {"recon": recon, "kl": kl, "domain": domain, "noise_var": var, **parts},
                          monitor=elbo)

    def _capped_reversal(self, g: torch.Tensor, g_adv: torch.Tensor, cap: float) -> torch.Tensor:
        """The latent means' gradient: the ELBO's ``g`` minus the domain term's ``g_adv`` (the
        reversal), ``g_adv`` scaled down where its norm exceeds ``cap`` times ``g``'s. Records the
        uncapped ratio of the norms (logged with the next step's losses)."""
        ratio = g_adv.norm() / g.norm().clamp_min(1e-12)
        self._last_ratio = ratio.detach()
        return g - g_adv * torch.clamp(cap / ratio.clamp_min(1e-12), max=1.0)
