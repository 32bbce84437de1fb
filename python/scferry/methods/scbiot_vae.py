"""scBIOT's prototype-aware dual-view VAE (Zhang & Qin, scBIOT, Extended Methods, "Prototype-aware
objective for dual-view VAE clustering", eqs. 1-11).

Model, for cells of k datasets on their p common highly variable genes (log-normalised):
- two views of every cell (what the authors' code, scbiot 0.x ``VAEModel``, feeds as its two
  views): view 1 is each gene standardised with statistics over all cells, view 2 the same gene
  standardised with its own dataset's statistics (shrunk towards the global ones by
  ``shrink_cells`` pseudo-cells, so small datasets are not over-corrected); both clipped to
  +-``z_clip``. View 2 has the datasets' gene-wise shifts and scales removed;
- one shared encoder (p -> n_hidden -> Gaussian latent of ``n_latent`` dims) reads both views,
  giving z1 and z2; a decoder [z, one-hot dataset] -> n_hidden reversed -> p reconstructs view 1
  from z1 and from z2 (mean squared error per value) plus ``beta`` x KL (per latent dimension) to
  N(0, I): the beta-VAE term (eq. 1);
- after ``warmup_steps`` steps of the VAE alone, ``n_prototypes`` learnable prototypes C (started
  at the normalised z_c of cells of that step's minibatch; cosine logits, temperature
  ``proto_tau``, eq. 2) on z_c = (z1 + z2) / 2; q, q1, q2 = softmax of the logits of z_c, z1, z2
  (eq. 3); DEC targets p (eq. 4). Losses (eqs. 5-10): DEC KL(p || q) (``lam_clust``), soft
  prototype pull (``lam_center``, ramped in over ``ramp_center_steps``), prototype repulsion
  (hinge at cosine ``repulse_target``, ``lam_repulse``), CosFace margin ``cosface_m`` on cells
  whose max q >= ``conf_thr`` (``lam_margin``, ramped over ``ramp_sup_steps``), label-smoothed
  (``label_eps``) cross entropy on labelled cells (``lam_sup``, same ramp), symmetric KL(q1, q2)
  across the views (``lam_cons``). Total: eq. 11. After each optimiser step prototypes move by
  an exponential moving average (momentum ``proto_ema_m``) towards the p-weighted mean of the
  normalised z_c.
- Output (``obsm["X_scferry"]``): z_c's mean, (mu1 + mu2) / 2, the embedding the paper clusters.

Labels (``integrate(..., label_key=)``, optional): with L cell types there are L prototypes, one
per type (started at the type's mean z_c in the first prototype step), and the supervised cross
entropy pulls labelled cells to their type's; unlabelled cells (and datasets without the column)
train only the self-supervised terms, so they are assigned among the known types (spare
prototypes took the unlabelled chemistry apart, away from its types). Without labels all
``n_prototypes`` are self-supervised.

Defaults are the authors' ``HyperParams`` (proto_tau 0.08, lam_clust 1, lam_center 1, lam_sup 1,
proto_ema_m 0.95, label_eps 0.1, lam_margin 1.5, cosface_m 0.15, conf_thr 0.8, lam_repulse 1,
repulse_target 0.1, lam_cons 1.5), except the two below (the ablation behind them is in
bench/batch_integration/RESULTS.md).

Deliberate differences from the authors' code (documented for users and benchmarks):
- It reads genes, through an MLP (batch norm, ReLU; both views in one pass so batch norm sees
  both), not a two-layer feature-token transformer over an existing embedding (their input is
  the scBIOT OT output): scferry's methods all start from counts, and a token per gene is too
  heavy for 2,000 genes on a CPU. Their per-feature quantile normalisation becomes the global
  z-score of view 1.
- The decoder also gets the one-hot dataset (as DAVAE's), so z need not carry dataset identity
  to reconstruct view 1; and view 1 is reconstructed from z2 as well as from z1 (their code
  reconstructs only view 1 from z1 and puts a KL term alone on view 2), which makes z2, from the
  dataset-standardised view, carry the cell's whole profile.
- A VAE-only warm-up (``warmup_steps``, 500 of the 2,000 default steps) before the prototype
  terms: their input is an already integrated embedding with clusters, ours a random network at
  step 0, and prototypes started there merged cell types (a short warm-up prevents it).
- 16 prototypes instead of their 64: their latent is ~200-dimensional (4 per input feature,
  flattened), ours 16, where 64 prototypes cannot keep the repulsion's cosine <= 0.1 and the
  cell types spread over the sphere (looser types than with 16).
- Prototype losses read the latent means (the coordinates users get), not samples of z; one
  ``beta`` for both views (theirs: 0.001 and 0.1).
- Ramps are in optimiser steps (their 5 and 8 epochs of 8,192 cells become 250 and 400 steps);
  constant Adam learning rate (the shared trainer) instead of their cosine schedule; their
  PCR-tilted product-of-experts readout and NMI-based checkpointing (which needs labels) are not
  used: the embedding is the paper's z_c.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..train import LossRecord
from .base import Method, check_hidden, is_int as _is_int, is_number as _is_num
from .davae import _mlp

_PROTO_PARTS = ("clust", "center", "repulse", "margin", "sup", "cons", "confident")
_WEIGHTS = ("lam_clust", "lam_center", "lam_repulse", "lam_margin", "lam_sup", "lam_cons", "beta")


class ScBIOTVAE(Method):
    name = "scbiot_vae"
    # initialised from the first minibatch and moved by an EMA of minibatch assignments
    rank_local_state = ("prototypes",)
    inputs = ("common",)  # one shared gene space
    scale_inputs = False  # the views standardise log-normalised values themselves
    uses_labels = "optional"
    defaults = dict(
        n_latent=16, n_hidden=(256, 128), n_common_genes=2000, dropout=0.0, beta=1e-3,
        n_prototypes=16, proto_tau=0.08, proto_ema_m=0.95,
        lam_clust=1.0, lam_center=1.0, lam_repulse=1.0, repulse_target=0.1,
        lam_margin=1.5, cosface_m=0.15, conf_thr=0.8, lam_sup=1.0, label_eps=0.1, lam_cons=1.5,
        warmup_steps=500, ramp_sup_steps=250, ramp_center_steps=400, shrink_cells=100.0, z_clip=5.0,
    )
    train_defaults = dict(max_iter=2000, lr=1e-3, weight_decay=0.0, batch_size=256, patience=None)

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        if params.get("reference") is not None:
            raise ValueError("scbiot_vae treats all datasets alike and takes no reference; drop "
                             "reference= (it is a uniPort option).")
        for key, low in (("n_latent", 2), ("n_common_genes", 1), ("n_prototypes", 2)):
            if not _is_int(params[key]) or params[key] < low:
                raise ValueError(f"{key} must be an integer >= {low}; got {params[key]!r}.")
        for key in ("warmup_steps", "ramp_sup_steps", "ramp_center_steps"):
            if not _is_int(params[key]) or params[key] < 0:
                raise ValueError(f"{key} must be an integer >= 0 (0: no ramp); got {params[key]!r}.")
        check_hidden(params)
        for key in _WEIGHTS + ("cosface_m", "shrink_cells"):
            if not (_is_num(params[key]) and params[key] >= 0):
                raise ValueError(f"{key} must be a finite number >= 0; got {params[key]!r}.")
        for key in ("proto_tau", "z_clip"):
            if not (_is_num(params[key]) and params[key] > 0):
                raise ValueError(f"{key} must be a number > 0; got {params[key]!r}.")
        ranges = {"dropout": (0, 1, "[0, 1)"), "proto_ema_m": (0, 1, "[0, 1)"),
                  "label_eps": (0, 1, "[0, 1)")}
        for key, (lo, hi, text) in ranges.items():
            if not (_is_num(params[key]) and lo <= params[key] < hi):
                raise ValueError(f"{key} must be in {text}; got {params[key]!r}.")
        if not (_is_num(params["conf_thr"]) and 0 < params["conf_thr"] <= 1):
            raise ValueError(f"conf_thr must be in (0, 1] (a softmax probability); got {params['conf_thr']!r}.")
        if not (_is_num(params["repulse_target"]) and -1 <= params["repulse_target"] <= 1):
            raise ValueError(f"repulse_target must be a cosine in [-1, 1]; got {params['repulse_target']!r}.")

    def __init__(self, dims: dict[str, Any], params: dict[str, Any], dataset_names: list[str]):
        super().__init__(dims, params, dataset_names)
        p, k, d = dims["n_common"], len(dataset_names), params["n_latent"]
        hidden = list(params["n_hidden"])
        self.label_names = list(dims.get("label_names") or [])
        # with labels, one prototype per label: spare prototypes would take the unlabelled cells
        n_proto = len(self.label_names) or params["n_prototypes"]
        self.encoder = _mlp([p, *hidden], params["dropout"])
        self.mu = nn.Linear(hidden[-1], d)
        self.logvar = nn.Linear(hidden[-1], d)
        self.decoder = nn.Sequential(_mlp([d + k, *hidden[::-1]], params["dropout"]),
                                     nn.Linear(hidden[0], p))
        self.prototypes = nn.Parameter(torch.randn(n_proto, d))
        # rows 0..k-1: each dataset's gene centres / scales (view 2); row k: all cells (view 1)
        self.register_buffer("center", torch.zeros(k + 1, p))
        self.register_buffer("scale", torch.ones(k + 1, p))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._pending_ema: tuple[torch.Tensor, torch.Tensor] | None = None

    @staticmethod
    def dims_from_views(views: list[dict]) -> dict[str, Any]:
        return {"n_common": views[0]["common"].shape[1]}

    def init_from_data(self, views: list[dict]) -> None:
        """Gene centres and scales: per dataset (shrunk towards all cells') and over all cells."""
        sums, sq, counts = [], [], []
        for v in views:
            X = v["common"]
            sums.append(np.asarray(X.sum(axis=0), dtype=np.float64).ravel())
            sq.append(np.asarray(X.multiply(X).sum(axis=0), dtype=np.float64).ravel())
            counts.append(X.shape[0])
        n_all = float(sum(counts))
        g_mean = sum(sums) / n_all
        g_var = np.maximum(sum(sq) / n_all - g_mean ** 2, 0.0)
        s = float(self.params["shrink_cells"])
        centers, variances = [], []
        for s1, s2, n in zip(sums, sq, counts):
            mean = s1 / n
            var = np.maximum(s2 / n - mean ** 2, 0.0)
            w = n / (n + s)
            centers.append(w * mean + (1 - w) * g_mean)
            variances.append(w * var + (1 - w) * g_var)
        centers.append(g_mean)
        variances.append(g_var)
        # floor: a gene constant in the data gives 0 / floor = 0, not a division by zero
        scale = np.sqrt(np.maximum(np.stack(variances), 1e-8))
        self.center.copy_(torch.from_numpy(np.stack(centers)).float())
        self.scale.copy_(torch.from_numpy(scale).float())

    def views(self, x: torch.Tensor, datasets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """View 1 (global gene z-scores) and view 2 (z-scores within each cell's dataset)."""
        c = float(self.params["z_clip"])
        v1 = ((x - self.center[-1]) / self.scale[-1]).clamp(-c, c)
        v2 = ((x - self.center[datasets]) / self.scale[datasets]).clamp(-c, c)
        return v1, v2

    def _encode(self, v: torch.Tensor):
        h = self.encoder(v)
        return self.mu(h), self.logvar(h).clamp(-10.0, 10.0)

    def encode(self, inputs: dict[str, torch.Tensor], dataset: int) -> torch.Tensor:
        x = inputs["common"]
        v1, v2 = self.views(x, torch.full((x.shape[0],), dataset, dtype=torch.long, device=x.device))
        mu, _ = self._encode(torch.cat([v1, v2]))
        mu1, mu2 = mu.chunk(2)
        return 0.5 * (mu1 + mu2)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Cosine similarity to each prototype over the temperature (eq. 2)."""
        return F.normalize(z, dim=1) @ F.normalize(self.prototypes, dim=1).T / self.params["proto_tau"]

    @torch.no_grad()
    def _init_prototypes(self, zc: torch.Tensor, labels: torch.Tensor | None) -> None:
        zn = F.normalize(zc, dim=1)
        n_proto = self.prototypes.shape[0]
        rows = torch.randperm(zn.shape[0], device=zn.device)[:n_proto]
        if len(rows) < n_proto:  # fewer cells in the first minibatch than prototypes
            rows = torch.randint(zn.shape[0], (n_proto,), device=zn.device)
        init = zn[rows].clone()
        if labels is not None:
            for lab in torch.unique(labels[labels >= 0]):
                init[lab] = F.normalize(zn[labels == lab].mean(0), dim=0)
        self.prototypes.copy_(init)

    @torch.no_grad()
    def _apply_ema(self) -> None:
        # Deferred to the next step: the prototypes are in the autograd graph until backward ran.
        if self._pending_ema is None:
            return
        zn, p = self._pending_ema
        self._pending_ema = None
        target = F.normalize(p.T @ zn / (p.sum(0)[:, None] + 1e-8), dim=1)
        m = float(self.params["proto_ema_m"])
        self.prototypes.mul_(m).add_((1 - m) * target)

    def loss(self, batch: list[dict[str, torch.Tensor]]) -> LossRecord:
        hp = self.params
        x = torch.cat([b["common"] for b in batch])
        sizes = torch.tensor([b["common"].shape[0] for b in batch], device=x.device)
        datasets = torch.repeat_interleave(torch.arange(len(batch), device=x.device), sizes)
        labels = torch.cat([b["labels"] for b in batch]) if "labels" in batch[0] else None

        # beta-VAE on both views; both decoded to view 1 given the dataset (eq. 1)
        v1, v2 = self.views(x, datasets)
        mu, logvar = self._encode(torch.cat([v1, v2]))
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        onehot = F.one_hot(datasets, len(self.dataset_names)).to(z.dtype).repeat(2, 1)
        recon = (self.decoder(torch.cat([z, onehot], dim=1)) - v1.repeat(2, 1)).pow(2).mean()
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).mean()

        mu1, mu2 = mu.chunk(2)
        zc = 0.5 * (mu1 + mu2)
        vae = recon + hp["beta"] * kl
        parts = {"recon": recon, "kl": kl}
        step = int(self.step) - hp["warmup_steps"]  # steps since the prototype terms started
        if self.training:
            self.step += 1
        if step < 0:  # warm-up: the VAE alone, so that prototypes start on a meaningful latent
            parts.update({k: vae.new_zeros(()) for k in _PROTO_PARTS})
            return LossRecord(vae, parts, monitor=vae)
        if self.training:
            if step == 0:
                self._init_prototypes(zc.detach(), labels)
            self._apply_ema()
        r_sup = min(1.0, step / hp["ramp_sup_steps"]) if hp["ramp_sup_steps"] else 1.0
        r_center = min(1.0, step / hp["ramp_center_steps"]) if hp["ramp_center_steps"] else 1.0

        logits, logits1, logits2 = self.logits(zc), self.logits(mu1), self.logits(mu2)
        logq = F.log_softmax(logits, dim=1)
        q = logq.exp()
        with torch.no_grad():  # DEC sharpened, cluster-balanced targets (eq. 4)
            p = q.pow(2) / (q.sum(0) + 1e-8)
            p = p / p.sum(1, keepdim=True)
        clust = F.kl_div(logq, p, reduction="batchmean")  # eq. 5
        protos = F.normalize(self.prototypes, dim=1)
        zn = F.normalize(zc, dim=1)
        center = (p * (2 - 2 * zn @ protos.T)).sum(1).mean()  # eq. 6 (unit vectors)
        cos = protos @ protos.T
        off = ~torch.eye(cos.shape[0], dtype=torch.bool, device=cos.device)
        repulse = F.relu(cos[off] - hp["repulse_target"]).pow(2).mean()  # eq. 7

        conf, y_hat = q.detach().max(1)
        confident = conf >= hp["conf_thr"]
        margin = logits.new_zeros(())
        if confident.any():  # eq. 8: CosFace, target logit lowered by m
            lm = logits[confident] - hp["cosface_m"] * F.one_hot(y_hat[confident], logits.shape[1])
            margin = F.cross_entropy(lm, y_hat[confident])
        sup = logits.new_zeros(())
        if labels is not None and (labels >= 0).any():  # eq. 9, labelled cells only
            known = labels >= 0
            sup = F.cross_entropy(logits[known], labels[known], label_smoothing=hp["label_eps"])
        lq1, lq2 = F.log_softmax(logits1, dim=1), F.log_softmax(logits2, dim=1)
        cons = 0.5 * (F.kl_div(lq2, lq1, reduction="batchmean", log_target=True)
                      + F.kl_div(lq1, lq2, reduction="batchmean", log_target=True))  # eq. 10

        if self.training:
            self._pending_ema = (zn.detach(), p)
        total = (vae + hp["lam_clust"] * clust + hp["lam_center"] * r_center * center
                 + hp["lam_repulse"] * repulse + r_sup * (hp["lam_margin"] * margin + hp["lam_sup"] * sup)
                 + hp["lam_cons"] * cons)  # eq. 11
        parts.update({"clust": clust, "center": center, "repulse": repulse,
                 "margin": margin, "sup": sup, "cons": cons, "confident": confident.float().mean()})
        return LossRecord(total, parts, monitor=vae)
