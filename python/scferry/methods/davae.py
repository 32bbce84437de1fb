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

Defaults follow the paper's scripts (scbean 0.5.6 and the davae_paper repository): latent d = 5
(``hidden_layers=[128, 64, 32, 5]``), Adam lr 0.01, 128 cells per step, 2,000 HVGs, lambda 3 (the
value used for three datasets, e.g. 293T/Jurkat).

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

import torch
import torch.nn.functional as F
from torch import nn

from ..train import LossRecord
from .base import Method, check_hidden, check_int


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
        n_latent=5, n_hidden=(128, 64, 32), n_common_genes=2000, domain_weight=3.0,
        domain_hidden=16, dropout=0.1,
    )
    # Adam at the paper's lr; a fixed budget in steps, like scbean's fixed epochs (25-80 of 128
    # cells): the ELBO levels off before the adversarial alignment does, so early stopping on it
    # stops before the batches are mixed (bench/batch_integration/RESULTS.md).
    train_defaults = dict(max_iter=3000, lr=1e-2, weight_decay=0.0, batch_size=128, patience=None)

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        if params.get("reference") is not None:
            raise ValueError("davae aligns all datasets symmetrically and takes no reference; "
                             "drop reference= (it is a uniPort option).")
        for key in ("n_latent", "domain_hidden", "n_common_genes"):
            check_int(params, key)
        check_hidden(params)
        if not (isinstance(params["domain_weight"], (int, float)) and params["domain_weight"] >= 0):
            raise ValueError(f"domain_weight must be a number >= 0; got {params['domain_weight']!r}.")
        if not (isinstance(params["dropout"], (int, float)) and 0 <= params["dropout"] < 1):
            raise ValueError(f"dropout must be in [0, 1); got {params['dropout']!r}.")

    def __init__(self, dims: dict[str, Any], params: dict[str, Any], dataset_names: list[str]):
        super().__init__(dims, params, dataset_names)
        p, k, d = dims["n_common"], len(dataset_names), params["n_latent"]
        hidden = list(params["n_hidden"])
        self.encoder = _mlp([p, *hidden], params["dropout"])
        self.mu = nn.Linear(hidden[-1], d)
        self.logvar = nn.Linear(hidden[-1], d)
        self.decoder = nn.Sequential(_mlp([d + k, *hidden[::-1]], params["dropout"]),
                                     nn.Linear(hidden[0], p), nn.Softplus())
        # Batch norm makes the classifier blind to the scale of z: without it the encoder can
        # raise the (unbounded) cross entropy by inflating z, and KL explodes (seen on PDAC).
        self.classifier = nn.Sequential(nn.Linear(d, params["domain_hidden"]),
                                        nn.BatchNorm1d(params["domain_hidden"]), nn.ReLU(),
                                        nn.Linear(params["domain_hidden"], k))

    @staticmethod
    def dims_from_views(views: list[dict]) -> dict[str, Any]:
        return {"n_common": views[0]["common"].shape[1]}

    def _encode(self, x: torch.Tensor):
        h = self.encoder(x)
        return self.mu(h), self.logvar(h).clamp(-10.0, 10.0)

    def encode(self, inputs: dict[str, torch.Tensor], dataset: int) -> torch.Tensor:
        return self._encode(inputs["common"])[0]

    def decode(self, z: torch.Tensor, datasets: torch.Tensor) -> torch.Tensor:
        """Expected expression (the model's input scale) of latent codes ``z`` as if measured in
        dataset indices ``datasets`` (one per row)."""
        onehot = F.one_hot(datasets, len(self.dataset_names)).to(z.dtype)
        return self.decoder(torch.cat([z, onehot], dim=1))

    def loss(self, batch: list[dict[str, torch.Tensor]]) -> LossRecord:
        x = torch.cat([b["common"] for b in batch])
        sizes = torch.tensor([b["common"].shape[0] for b in batch], device=x.device)
        datasets = torch.repeat_interleave(torch.arange(len(batch), device=x.device), sizes)
        n, p = x.shape
        mu, logvar = self._encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        sq = (x - self.decode(z, datasets)).pow(2).sum(1)
        var = (sq.detach().mean() / p).clamp_min(1e-8)  # eq. 8: closed-form sigma^2
        recon = (0.5 * p * (math.log(2 * math.pi) + torch.log(var)) + sq / (2 * var)).mean()
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1).mean()
        logits = self.classifier(_ReverseGradient.apply(mu))  # means: see the module docstring
        domain = F.cross_entropy(logits, datasets)
        elbo = recon + kl
        total = elbo + self.params["domain_weight"] * p * domain
        return LossRecord(total, {"recon": recon, "kl": kl, "domain": domain, "noise_var": var},
                          monitor=elbo)
