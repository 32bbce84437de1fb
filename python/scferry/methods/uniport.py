"""uniPort: coupled VAE + minibatch unbalanced OT (Cao et al., Nat Commun 2022).

Horizontal mode: one encoder on the common highly variable genes, one common decoder with
dataset-specific batch norm (DSBN), one decoder per dataset for its own highly variable genes,
KL to N(0, I), and a minibatch unbalanced OT loss between the datasets' latent Gaussians with
cost ||mu_i - mu_j||^2 + ||sigma_i - sigma_j||^2 (paper eqs. 2-7).

Deliberate choices (documented for users and benchmarks):
- The encoder's batch norm is dataset-specific too, with running statistics at inference: every
  dataset is normalised by its own statistics, deterministically. (The reference implementation
  gets a similar effect by leaving its shared batch norm in training mode at inference.)
- The OT cost is divided by its minibatch maximum before solving, so ``ot_eps`` and ``ot_rho`` are
  relative to the cost scale (as the reference implementation does); the loss uses the raw cost.
- Modes (``mode=``, chosen from the data when None): "horizontal" (shared genes, as above);
  "diagonal" (no shared features: one encoder and one decoder per dataset on its own features,
  aligned by the minibatch UOT only, as the paper's Supplementary Note 4); "vertical" (the same
  cells in every dataset, e.g. RNA + ATAC of one nucleus: one encoder and decoder per dataset
  too, so each modality can be embedded or imputed alone, aligned by the OT loss with the known
  pairing as the plan, i.e. the Gaussians of a cell's measurements are pulled together, plus
  cross-reconstruction of each modality from the other's latent code). The reference
  implementation's vertical mode encodes the first modality only; ours keeps one encoder per
  modality so that either can be projected later.
- Vertical and diagonal modes, ``n_specific_genes=None`` (the default): each modality's number
  of highly variable features is chosen from its sparsity: 10,000 (vertical) or 20,000
  (diagonal) for a sparse modality (under 2 % of its entries non-zero, e.g. ATAC peaks), 2,000
  (the paper's number, and horizontal mode's) otherwise; recorded per modality in
  ``params["n_specific_genes"]``. Of 2,000 peaks a
  nucleus has only a handful of reads, some none at all, and each modality must place its cell
  alone when it is projected without its pair: with 10,000 peaks held-apart nuclei of SNARE-seq and
  sci-CAR align much better, while 10,000 RNA genes (TEA-seq) did not help and cost much more
  time. More steps, a larger learning rate or input dropout did not close that gap
  (bench/multiome/RESULTS.md, "Vertical uniPort on held-apart cells"). The same holds in
  diagonal mode, where the peaks encoder alone carries the GW alignment to new nuclei, and
  there 20,000 peaks did better again than 10,000 (bench/diagonal/RESULTS.md, "ATAC peaks with
  nothing beside them"; in vertical mode 20,000 peaks aligned SNARE-seq's held-apart nuclei
  better on 2,000 nuclei but are not measured at full size yet, bench/multiome/RESULTS.md,
  "Vertical uniPort at 20,000 peaks"). An integer applies to
  every modality; a dict ``{dataset: n}`` sets each.
- ``feature_selection``: how each modality's own features are chosen; None (the default) keeps
  the paper's highly variable features in every mode; "open" takes the features non-zero in the
  most cells (for ATAC peaks the most often open peaks, as Signac / ArchR choose them; MinNet's
  default for peaks); a dict sets each dataset. Not the default here: in vertical mode "open"
  aligned held-apart SNARE-seq nuclei (peaks) better but sci-CAR's worse
  (bench/multiome/RESULTS.md, "Peaks: which features").
- ``peak_likelihood`` (vertical and diagonal modes; not in uniPort): None / "scaled" keeps the
  paper's BCE of the decoder's sigmoid against the MaxAbs-scaled values; "bernoulli" (per
  dataset with a dict) reconstructs that dataset's binarised input (open / closed peaks) with
  MultiVI's accessibility likelihood (Ashuach et al., Nat Methods 2023): p = sigmoid(decoder(z)) x
  sigmoid(a learned factor per region) x a per-cell factor (a sigmoid of a small network on the
  cell's own input). The encoders' input is unchanged.
- ``contrastive_weight`` (vertical mode; not in uniPort; default 0: off): adds a symmetric
  InfoNCE term on the unit-normalised latent means of each cell's measurements (each cell's other
  measurement the positive among every cell of the minibatch, ``temperature``; MinNet's
  objective without labels, ``scferry.methods.base.info_nce``) to the paired OT loss.
- ``embedding`` (vertical and diagonal modes; not in uniPort): what integrate writes and
  ``sf.project`` returns. "mean" is the latent posterior means (the paper's); "unit" their
  direction (each mean scaled to length 1: cosine geometry, as contrastive models such as CLIP and
  MinNet's InfoNCE embed). None (the default): in vertical mode "unit" when a modality looks like
  ATAC peaks (``scferry.gw.guess_kind``), "mean" otherwise; in diagonal mode "unit"; either
  announced and recorded in ``model.choices``. Why: an amortised encoder maps an input unlike its
  training inputs toward the prior's centre (with little evidence a variational posterior's mean
  stays near the prior's, 0). A peaks encoder reads a few reads per nucleus among thousands of
  peaks and fits its training nuclei exactly, so the codes of nuclei it did not train on sit
  nearer the centre than their RNA partners' while pointing the same way: held-apart nuclei align
  in direction, not in length (bench/multiome/RESULTS.md, "uniPort vertical: the held-apart
  modality gap"). In diagonal mode every modality has its own encoder and nothing pairs the two
  during training, so their codes differ in length for any kind of data (SNARE-seq RNA vs gene
  activity: 3.7 vs 3.4 on the training nuclei, 3.6 vs 3.1 on held-apart ones), and held-apart
  cells align better by direction on every RNA + ATAC set measured, with peaks or gene activity
  (bench/diagonal/RESULTS.md, "Diagonal uniPort: the embedding is the direction"). Training and
  decoding are unchanged (the decoders read the means; ``sf.impute`` and the plan too).
- ``input_dropout`` (vertical and diagonal modes; not in uniPort; default 0: off): each per-dataset
  encoder reads its cells' features with this fraction zeroed at random during training (inverted
  dropout, Srivastava et al., JMLR 2014, on the input layer as in denoising autoencoders, Vincent
  et al., ICML 2008; MinNet's input dropout); not at inference, and the reconstruction targets
  are the full inputs; a dict ``{dataset: rate}`` sets each encoder's. Why: in vertical mode the two modalities' codes of a training cell coincide
  while a held-apart cell, embedded by one encoder alone, lands further from its partner: the
  encoders memorise their training cells. Not the default: 0.3 aligned held-apart SNARE-seq
  nuclei better (gene activity and peaks) but cost sci-CAR a little and broke the CITE-seq sets
  (RNA + protein). Measurements: bench/multiome/RESULTS.md, "Vertical uniPort: input dropout".
- Vertical mode's training settings (not the paper's): weight decay 0.05 (Adam's L2 penalty on
  every weight; the paper's 5e-4 in the other modes) and 3,000 steps (2,000 in the other modes);
  ``weight_decay=`` and ``max_iter=`` of :func:`scferry.integrate` set them, the defaults are
  recorded in ``model.choices``. Why: the encoders memorise their training cells (see
  ``input_dropout``), and an L2 penalty on the weights is the classic remedy for a network that
  fits its training inputs too closely (Krogh & Hertz, NIPS 1992). Unlike input dropout it does
  not change what an encoder reads, so dense protein inputs are not hurt; with the penalty the
  held-apart alignment keeps improving past 2,000 steps (at 5e-4 it did not). Measured on the
  five paired datasets of bench/multiome (held-apart cells, 3 seeds; "Vertical uniPort: weight
  decay and budget").
- Guidance (paper, Supplementary Notes 5-6): per-cell OT marginal weights (``ot_marginals``,
  the vectors a and b of the minibatch UOT instead of uniform ones) and, with
  ``integrate(label_key=...)``, a prior cell-type correspondence: the cost between labelled cells
  of the same (or ``prior_pairs``-linked) type is multiplied by 1/``prior_alpha`` and between
  other labelled cells by ``prior_alpha`` before solving (the reference's ``Get_label_Prior``).
- Diagonal mode without labels (``gw_prior=True``, the default): the two modalities' geometries
  are first matched by Gromov-Wasserstein OT between metacells (``scferry.gw``; SCOT, Demetci et
  al. 2022; Pamona, Cao et al. 2022), which gives every cell coordinates in a joint space (its
  own modality's and its barycentric projection into the other). The minibatch UOT then solves
  on ``c / max(c) + gw_weight * G / max(G)``, ``G`` the squared distances between the sampled
  cells' GW coordinates: cells the GW coupling matches are cheap to transport to each other
  before the encoders have aligned anything, so the OT loss pulls them together (the role the
  label prior plays when labels exist). The loss still uses the latent cost. ``gw_prior=False``:
  plain OT guidance, as in the paper; ``gw_params``: settings of ``method="gw"``
  (``scferry.gw.align``, e.g. ``tss`` or ``linked``), whose embedding (refined, as
  ``method="gw"`` returns it) is the guidance. ``gw_weight`` 10 and the refined embedding
  (formerly 1 and GW's unrefined joint embedding): unpaired SNARE-seq RNA vs gene activity, all
  nuclei, 3 seeds, FOSCTTM 0.307 -> 0.217; vs peaks with the TSS table 0.345 -> 0.285; Pamona's
  transfer and CITE-seq's FOSCTTM unchanged within the seeds' spread
  (``bench/diagonal/RESULTS.md``).
- GW coordinates as a regression target (``gw_fit_weight``; not in uniPort; default 1, 0 turns
  it off): with the GW guidance, a linear head shared by the two modalities maps every cell's
  latent mean to its GW coordinates (centred, scaled to an average sd of 1), and
  ``gw_fit_weight`` times the squared error (summed over coordinates, averaged over cells) is
  added to the loss: distillation of the GW embedding into the encoders (Hinton et al., 2015),
  as MaxFuse's and scMODAL's encoders learn a joint space found beforehand. Why: the minibatch
  OT term only pulls a cell towards cells of the other modality that happen to be in its
  minibatch (256 of thousands), which matches cell types but not the finer geometry GW found;
  one head for both modalities makes cells with the same GW coordinates take the same latent
  coordinates, whichever encoder read them, and the encoders carry it to new cells
  (``project``). The head's weights are saved with the model (``params["gw_fit_dim"]``).
- The global plan is kept sparse (top-k sources per target cell, ``scferry.ot.TopKPlan``), each
  minibatch plan added with weight equal to its iteration number so that late, better aligned
  plans count more.
- PCA guidance (``pca_prior``, horizontal mode; not in uniPort; on by default in horizontal mode
  without ``label_key``, announced and recorded in ``model.choices``; ``pca_prior=False`` runs the
  paper's unguided OT, ``True`` adds it to the label prior): before training, all datasets' cells
  are put in one PCA of their shared genes (counts per 1e4, log1p, the 2,000 genes of highest
  variance, centred, not scaled, 16 components: :func:`scferry.pp.joint_pca` with
  ``scale=False``, fitted on at most 50,000 cells and read in chunks, so memory does not grow
  with cells x genes), and every minibatch UOT
  solves on ``c / max(c) + pca_weight * P / max(P)`` (``pca_weight`` 10), ``P`` the squared
  distances between the sampled cells' PCA coordinates (the mechanism of the GW guidance above,
  on expression instead of geometry). The loss still uses the latent cost. Why: on batches of
  one tissue the unguided plans of small minibatches (256 cells over k datasets) transport cells
  to cells of other types, which the OT loss then pulls together; without any OT term (weight 0)
  uniPort keeps cell types better but mixes less. A joint PCA of the shared genes still places
  a cell nearer to cells of its type in other batches than to other types, so the guided plans
  match types. Measured on the three multi-batch sets of bench/batch_integration (RESULTS.md,
  "uniPort's OT guided by a PCA of the shared genes", 3 seeds): label transfer, batch mixing and
  silhouette higher on the two labelled sets (3 chemistries; 8 donors); on the scRNA + spots pair
  mixing and silhouette lower than unguided but above Harmony's and the PCA's. Weight 10 over 4:
  higher transfer on both labelled sets. The wider cost range made the Sinkhorn's fast path
  underflow; the solver now rebuilds its kernel around the current potentials
  (``scferry.ot.unbalanced_sinkhorn``), so a guided fit costs about 1.2-1.5x an unguided one.
  Unscaled, 16 components (``GUIDANCE_COMPONENTS``), not the Seurat / scanpy recipe's scaled
  genes and 30 components (the guidance until session 44): the guidance exists to find each
  cell's partners of its own type in the other batches. Scaling gives every gene unit variance,
  so the many genes that vary little (mostly noise at these depths) weigh as much as the
  markers; unscaled, a gene weighs by its variance and the leading components are the types'
  markers. Measured on the three multi-batch sets (RESULTS.md, "uniPort's guidance: unscaled
  components", 3 seeds): LOBO label transfer 0.913 -> 0.933 on symphony and 0.904 -> 0.907 on
  kang; batch entropy 0.992 -> 0.989, 0.928 -> 0.932 and, on the PDAC scRNA + spots pair, 0.865
  -> 0.882; silhouette 0.675 -> 0.676, 0.584 -> 0.592 and 0.621 -> 0.631. 30 unscaled
  components gave less than 16 on both labelled sets (seed 0).
- The guidance PCA as a regression target (``pca_fit_weight``, horizontal mode with the PCA
  guidance; not in uniPort; default 10, 0 turns it off): the guidance PCA is first centred within
  clusters: k-means clusters of the joint coordinates (about ``FIT_CLUSTER_CELLS`` cells each, at
  most ``FIT_MAX_CLUSTERS``), each dataset's cells of a cluster moved to the cluster's mean, in
  ``FIT_ROUNDS`` rounds (``sf.refine``'s last centring step, a hard-cluster form of Harmony's
  correction, Korsunsky et al., Nat Methods 2019). A linear head shared by all datasets maps each
  cell's latent mean to those centred coordinates, and ``pca_fit_weight`` times the squared error,
  weighted per cell, is added to the loss: distillation of a label-free correction into the
  encoder (Hinton et al., 2015), as ``gw_fit_weight`` does with the GW coordinates. A cell's
  weight is the normalised entropy of the datasets in its last-round cluster: 1 where the cluster
  holds every dataset evenly, 0 where it holds one. So the target is learnt where the centring
  could align the datasets (a weak batch effect: donors of one tissue and technology) and ignored
  where the PCA's clusters keep the datasets apart (chemistries, spots beside cells), where the
  OT term does the mixing as before. ``params["pca_fit_record"]`` keeps the number of clusters and
  the mean weight. Why: with a weak batch effect the VAE loses small types that the PCA keeps
  (kang's CD8 T and NK cells among CD4 T cells: the VAE without OT transfers labels between
  donors worse than the PCA does), and no correction of the trained latent recovers them; the
  centred PCA keeps them and mixes the donors. Measured on the three multi-batch sets
  (bench/batch_integration/RESULTS.md, "uniPort learns the centred guidance PCA", 3 seeds):
  on kang (8 donors, a weak batch effect; mean weight 0.76) LOBO label transfer 0.907 -> 0.931,
  batch entropy 0.932 -> 0.936, silhouette 0.592 -> 0.613 (CD8 T cells 0.66 -> 0.79 of the
  held-out donor's labelled right); on symphony (3 chemistries; mean weight 0.15-0.18) 0.933 ->
  0.929, 0.989 -> 0.989, 0.676 -> 0.673, and on the PDAC cells + spots pair (mean weight under
  0.01) batch entropy 0.882 -> 0.878 and silhouette 0.631 -> 0.634, both within the seeds'
  spread. A head per dataset, or every cell weighted 1, cost mixing (symphony 0.989 -> 0.853,
  PDAC 0.90 -> 0.13 with weight 1 everywhere); weight 5 and 20 gave no more than 10.
- Latent size (``n_latent``; None, the default, chooses by mode, recorded in ``model.choices``):
  24 in horizontal mode, the paper's 16 in vertical and diagonal modes. Why: with the PCA
  guidance the horizontal plans match cells of one type across batches, and what then limits how
  well a batch's cells find their type among the other batches' is how much of the expression a
  16-d code keeps (small types beside large ones: CD8 T cells beside CD4 T cells and NK cells).
  Measured on the three multi-batch sets of bench/batch_integration (RESULTS.md, "uniPort's
  latent size", 3 seeds): label transfer and silhouette higher on both labelled sets at the same
  batch mixing, and the spots + cells pair's silhouette kept above the PCA's; 32 raised transfer
  as much but put that silhouette below the PCA's, and 64 lowered transfer on one set. The other
  modes were not re-measured and keep the paper's 16.
- Minibatch OT with more than two datasets: every pair of datasets (or every dataset against
  ``reference``) gets its own UOT problem; the problems of one step that have the same shape are
  solved together as one batched Sinkhorn loop (the same plans; at minibatch sizes the
  per-iteration overhead dominates, so many pairs cost about one solve).
  Their OT losses are averaged (``pair_reduction="mean"``, the default), not added as the
  reference implementation does (``"sum"``; it pairs every query with one reference dataset). Why:
  each dataset sits in k - 1 of the k(k - 1)/2 pairs and gets 1/(cells per dataset) = k/n of a
  pair's transport mass per cell, so summed, a cell's OT gradient relative to its reconstruction
  gradient grows as k(k - 1)/2 times the two-dataset case the weights were set on (``ot_weight``
  4, PDAC pair); averaged, it is the two-dataset balance for any k (identical for two datasets).
  Summed over the 28 pairs of 8 donors, the scale-dependent OT cost (which shrinking the latent
  lowers) wins over reconstruction and the latent collapses onto one direction, cell types
  merging even within a donor; averaged, it keeps them (bench/batch_integration/RESULTS.md,
  "uniPort with more than two datasets").
- ``ot_iter`` 100 with ``tol`` 1e-4 on the log potentials: on trained latents the plans after
  100 iterations are close to the converged ones while convergence to that tolerance takes
  several times longer, and OT dominates a step's time; so default fits report unconverged
  solves (``train_params["ot_unconverged"]``, one warning per fit). Measurements in
  bench/batch_integration/RESULTS.md ("uniPort's minibatch OT").
- ``plan_eps``: the kept plan (label transfer with ``method="plan"``, deconvolution) may be solved
  at another entropic regularisation than the training loss (``ot_eps``). The loss wants a sharp
  plan to mix (``ot_eps`` 0.01); proportions want a diffuse one, spreading each spot over all the
  cells like it. When they differ, each minibatch is solved twice; the embedding is unchanged.
  Default None (= ``ot_eps``): the more diffuse plan of ``plan_eps=0.1`` (the paper's
  regularisation) deconvolves pseudo-spots better but transfers labels between batches worse
  (bench/deconvolution/RESULTS.md). Hence: pass ``plan_eps=0.1`` to deconvolve.
"""
from __future__ import annotations

import warnings
from itertools import combinations
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..data import check_paired, has_shared_features, shared_features
from ..errors import ScferryWarning, record_choice
from ..pp import (SPARSE_FEATURES, check_feature_selection, head_rows, resolve_feature_selection,
                  specific_feature_counts)
from ..ot import TopKPlan, unbalanced_sinkhorn
from ..train import LossRecord
from .base import INPUT_DROPOUT_MEANING, Method, check_hidden, check_int, check_number, check_rate, info_nce


def _logit_mean(X) -> torch.Tensor:
    m = np.asarray(X.mean(axis=0), dtype=np.float64).ravel().clip(1e-4, 1 - 1e-4)
    return torch.from_numpy(np.log(m / (1 - m))).float()


def sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise squared euclidean distances; unlike cdist(...)**2, its gradient is finite at 0."""
    return (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2 * a @ b.T).clamp_min(0)


class DSBatchNorm(nn.Module):
    """Batch norm with one set of statistics and affine parameters per dataset."""

    def __init__(self, n_features: int, n_datasets: int):
        super().__init__()
        self.bns = nn.ModuleList(nn.BatchNorm1d(n_features) for _ in range(n_datasets))

    def forward(self, x: torch.Tensor, sizes: list[int], datasets: list[int]) -> torch.Tensor:
        parts = torch.split(x, sizes)
        return torch.cat([self.bns[d](p) for p, d in zip(parts, datasets)])


class _Encoder(nn.Module):
    """One dataset's encoder (diagonal and vertical modes): Linear-BatchNorm-ReLU layers, then
    the latent Gaussian's mean and log-variance."""

    def __init__(self, n_in: int, n_hidden: tuple[int, ...], n_latent: int, input_dropout: float = 0.0):
        super().__init__()
        # input_dropout (see the module docstring): no parameters, so saved models load unchanged
        self.drop = nn.Dropout(input_dropout)
        sizes = [n_in, *n_hidden]
        self.hidden = nn.Sequential(*[m for a, b in zip(sizes[:-1], sizes[1:])
                                      for m in (nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU())])
        self.mu = nn.Linear(sizes[-1], n_latent)
        self.logvar = nn.Linear(sizes[-1], n_latent)

    def forward(self, x: torch.Tensor):
        h = self.hidden(self.drop(x))
        return self.mu(h), self.logvar(h).clamp(-10.0, 10.0)


MODES = ("horizontal", "vertical", "diagonal")
# vertical mode's own training settings (module docstring, "Vertical mode's training settings")
VERTICAL_WEIGHT_DECAY = 5e-2  # Adam's L2 penalty (the other modes: the paper's 5e-4)
VERTICAL_MAX_ITER = 3000  # steps (the other modes: 2,000)
PAPER_LATENT = 16  # latent dimensions: the paper's, in vertical and diagonal modes
# a sparse modality's features in diagonal mode (module docstring, n_specific_genes); vertical
# mode's is scferry.pp.SPARSE_FEATURES
DIAGONAL_SPARSE_FEATURES = 20000
HORIZONTAL_LATENT = 24  # horizontal mode's default (module docstring, "Latent size")
GUIDANCE_COMPONENTS = 16  # pca_prior: unscaled joint-PCA components (docstring, "PCA guidance")
# pca_fit_weight's targets (docstring, "The guidance PCA as a regression target"): the guidance
# PCA centred per dataset within k-means clusters of about this many cells (at most this many
# clusters), in this many rounds
FIT_CLUSTER_CELLS = 30
FIT_MAX_CLUSTERS = 500
FIT_ROUNDS = 2
FIT_KMEANS_SUBSAMPLE = 20000  # k-means centres from at most this many cells, as sf.refine
PCA_FIT_WEIGHT = 10.0
LIKELIHOODS = ("scaled", "bernoulli")
EMBEDDINGS = ("mean", "unit")
CELL_FACTOR_HIDDEN = 32


class UniPort(Method):
    name = "uniport"
    uses_labels = "optional"  # labels only feed the prior cell-type correspondence
    seeded_inputs = True  # integrate() passes the fit's seed: the GW guidance's metacells use it
    # Deviations from the paper's defaults, each measured on the PDAC pair
    # (bench/uniport_reference/RESULTS.md, "How scferry's uniPort defaults were chosen"):
    # - one 256-unit hidden layer, not 1024-128: less time per step and better kept cell types;
    # - ot_eps 0.01: the reference's 10 proximal rounds at reg 0.1 sharpen its plans to about this
    #   relative eps; at 0.1 the plans are too diffuse to mix;
    # - ot_weight 4: 1 mixes too little in 2,000 steps, 10 or more merges cell types;
    # - 2,000 steps, not 30,000: with the data-informed decoder start the reference's 30,000-step
    #   quality is reached in 1,500.
    defaults = dict(
        n_latent=None, n_hidden=(256,), n_common_genes=2000, n_specific_genes=None,
        kl_weight=0.5, specific_weight=0.5, ot_weight=4.0, ot_eps=0.01, ot_rho=1.0,
        ot_iter=100, keep_plan=True, plan_k=50, plan_eps=None,
        mode=None, cross_weight=1.0, ot_marginals=None, prior_alpha=2.0, prior_pairs=None,
        gw_prior=True, gw_weight=10.0, gw_params=None, gw_fit_weight=1.0, pair_reduction="mean",
        feature_selection=None, peak_likelihood=None, contrastive_weight=0.0, temperature=0.1,
        embedding=None, input_dropout=0.0, pca_prior=None, pca_weight=10.0,
        pca_fit_weight=PCA_FIT_WEIGHT,
    )
    train_defaults = dict(max_iter=2000, lr=2e-4, weight_decay=5e-4, batch_size=256, patience=10)

    @classmethod
    def resolved_train_defaults(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Vertical mode trains with a stronger weight decay and for longer (module docstring,
        "Vertical mode's training settings"); the other modes with ``train_defaults``."""
        tp = dict(cls.train_defaults)
        if params["mode"] == "vertical":
            tp.update(weight_decay=VERTICAL_WEIGHT_DECAY, max_iter=VERTICAL_MAX_ITER)
        return tp

    def __init__(self, dims: dict[str, Any], params: dict[str, Any], dataset_names: list[str]):
        super().__init__(dims, params, dataset_names)
        n_data, n_lat = len(dataset_names), params["n_latent"]
        # models saved before modes existed are horizontal
        self.mode = params["mode"] = params.get("mode") or "horizontal"
        if self.mode == "horizontal":
            n_common = dims["n_common"]
            sizes = [n_common, *params["n_hidden"]]
            self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
            self.hidden_bn = nn.ModuleList(DSBatchNorm(b, n_data) for b in sizes[1:])
            self.mu = nn.Linear(sizes[-1], n_lat)
            self.logvar = nn.Linear(sizes[-1], n_lat)
            self.dec_common = nn.Linear(n_lat, n_common)
            self.dec_common_bn = DSBatchNorm(n_common, n_data)
        else:  # one encoder per dataset on its own features
            self.inputs = self.encode_inputs = ("specific",)
            self.paired = self.mode == "vertical"
            # models saved before the option have no key: no dropout
            drop = _per_dataset("input_dropout", params.get("input_dropout"), dataset_names, 0.0)
            self.encoders = nn.ModuleList(_Encoder(n, tuple(params["n_hidden"]), n_lat, drop[name])
                                          for n, name in zip(dims["n_specific"], dataset_names))
            # MultiVI's accessibility likelihood (Ashuach et al. 2023) for the datasets that use it:
            # a learned factor per region and a per-cell factor from the cell's own input
            lik = params.get("peak_likelihood") or {}
            self.bernoulli = [d for d, name in enumerate(dataset_names) if lik.get(name) == "bernoulli"]
            self.region_logit = nn.ParameterDict({str(d): nn.Parameter(torch.zeros(dims["n_specific"][d]))
                                                  for d in self.bernoulli})
            self.cell_factor = nn.ModuleDict({str(d): nn.Sequential(
                nn.Linear(dims["n_specific"][d], CELL_FACTOR_HIDDEN), nn.ReLU(),
                nn.Linear(CELL_FACTOR_HIDDEN, 1)) for d in self.bernoulli})
        self.dec_specific = nn.ModuleList(nn.Linear(n_lat, n) for n in dims["n_specific"])
        self.reference = params.get("reference")
        ref = dataset_names.index(self.reference) if self.reference is not None else None
        # OT pairs: every dataset against the reference when one is named, else all pairs.
        self.pairs = [(ref, q) for q in range(n_data) if q != ref] if ref is not None else \
            list(combinations(range(n_data), 2))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._init_guidance(dims, params)
        self.plans: dict[tuple[int, int], TopKPlan] = {}
        if params["keep_plan"] and self.mode != "vertical":  # vertical: the pairing is the plan
            for p, q in self.pairs:  # one accumulator per direction: targets are the rows
                self.plans[(p, q)] = TopKPlan(dims["n_cells"][p], dims["n_cells"][q], k=params["plan_k"])
                self.plans[(q, p)] = TopKPlan(dims["n_cells"][q], dims["n_cells"][p], k=params["plan_k"])

    def _init_guidance(self, dims: dict[str, Any], params: dict[str, Any]) -> None:
        """Per-cell marginal weights as buffers (saved with the model; ``params`` keeps only
        the names of the weighted datasets, so that it stays plain), and the label
        correspondence matrix of the prior."""
        given = params.get("ot_marginals") or {}
        self.marginals: dict[int, str] = {}
        for name in (given if isinstance(given, dict) else list(given)):
            d = self.dataset_names.index(name)
            w = given[name] if isinstance(given, dict) else np.zeros(dims["n_cells"][d], np.float32)
            self.register_buffer(f"marginal_{d}", torch.as_tensor(np.asarray(w, np.float32)))
            self.marginals[d] = f"marginal_{d}"
        params["ot_marginals"] = [self.dataset_names[d] for d in self.marginals] or None
        names = dims.get("label_names")
        self.use_prior = names is not None
        if self.use_prior:  # corr[i, j]: labels i and j correspond (same name or prior_pairs)
            index = {n: i for i, n in enumerate(names)}
            corr = torch.eye(len(names), dtype=torch.bool)
            for a, b in params.get("prior_pairs") or []:
                corr[index[a], index[b]] = corr[index[b], index[a]] = True
            self.register_buffer("prior_corr", corr, persistent=False)
        # OT guidance, training-only (not saved): each dataset's cells in the GW joint space
        # (diagonal mode without labels; a loaded model keeps params["gw_prior"] as the record) or
        # in one PCA of the shared genes (horizontal mode, pca_prior), with the weight of its kind.
        self.guide_coords: dict[int, str] = {}
        self.guide_weight = float(params["gw_weight"])
        gw = params.get("gw_prior")
        if isinstance(gw, dict):
            self.guide_coords = self._register_coords(gw, "gw")
            params["gw_prior"] = True
            if params.get("gw_fit_weight"):  # see the docstring, "gw_fit_weight"
                params["gw_fit_dim"] = int(next(iter(gw.values())).shape[1])
        # a loaded model rebuilds the head from the record (its weights are in the state)
        self.gw_head = nn.Linear(params["n_latent"], params["gw_fit_dim"]) \
            if params.get("gw_fit_dim") else None
        pca_coords = params.pop("pca_guidance", None)
        if pca_coords is not None:
            self.guide_coords = self._register_coords(pca_coords, "pca")
            self.guide_weight = float(params["pca_weight"])
        # the guidance PCA as a regression target (docstring): training-only targets; the head's
        # weights are saved, and a loaded model rebuilds it from params["pca_fit_dim"]
        fit_targets = params.pop("pca_fit_targets", None)
        self.fit_coords = {}
        if fit_targets:
            self.fit_coords = self._register_coords(fit_targets["coords"], "pcafit")
            params["pca_fit_dim"] = int(next(iter(fit_targets["coords"].values())).shape[1])
            for name, w in fit_targets["weights"].items():
                self.register_buffer(f"pcafitw_{self.dataset_names.index(name)}",
                                     torch.as_tensor(w), persistent=False)
        self.pca_head = nn.Linear(params["n_latent"], params["pca_fit_dim"]) \
            if params.get("pca_fit_dim") else None

    def _register_coords(self, coords: dict[str, Any], prefix: str) -> dict[int, str]:
        """Each dataset's coordinates (guidance or regression targets) as a non-persistent
        buffer ``<prefix>_<d>``, centred and scaled together to mean 0 and an average sd of 1
        per coordinate (the OT term reads distances relative to their maximum, which this does
        not change); returns the buffers' names by dataset index."""
        allc = np.concatenate([np.asarray(v, np.float64) for v in coords.values()])
        centre, scale = allc.mean(0), max(float(allc.std(0).mean()), 1e-12)
        names = {}
        for name, values in coords.items():
            d = self.dataset_names.index(name)
            values = (np.asarray(values, np.float64) - centre) / scale
            self.register_buffer(f"{prefix}_{d}", torch.as_tensor(values.astype(np.float32)),
                                 persistent=False)
            names[d] = f"{prefix}_{d}"
        return names

    def _guide(self, d: int, idx: torch.Tensor) -> torch.Tensor:
        """Dataset ``d``'s sampled cells' guidance coordinates."""
        return getattr(self, self.guide_coords[d])[idx]

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        for key in ("n_common_genes", "ot_iter", "plan_k"):
            check_int(params, key)
        if params["n_latent"] is not None:  # None: by mode (resolve)
            check_int(params, "n_latent")
        n_spec = params["n_specific_genes"]
        if isinstance(n_spec, dict):  # per dataset (names checked in resolve)
            for name, n in n_spec.items():
                check_int({f"n_specific_genes[{name!r}]": n}, f"n_specific_genes[{name!r}]", 0)
        elif n_spec is not None:  # None: by mode and sparsity (resolve)
            check_int(params, "n_specific_genes", 0)
        check_feature_selection(params.get("feature_selection"))
        lik = params.get("peak_likelihood")
        if lik is not None and not all(v in LIKELIHOODS for v in (lik.values() if isinstance(lik, dict) else [lik])):
            raise ValueError(f"peak_likelihood must be None or 'scaled' (the paper's BCE on the "
                             f"scaled values, the default), 'bernoulli' (binarised input, MultiVI's region and cell "
                             f"factors) or a dict dataset name -> one of them; got {lik!r}.")
        check_number(params, "contrastive_weight")
        if params.get("embedding") not in (None, *EMBEDDINGS):
            raise ValueError(f"embedding must be None (diagonal mode: 'unit'; vertical mode: "
                             f"'unit' when a modality is ATAC peaks, else 'mean'), 'mean' (the "
                             f"latent posterior means, the paper's) or 'unit' (their direction: "
                             f"the means scaled to length 1); got {params.get('embedding')!r}.")
        check_number(params, "temperature", strict=True)
        check_rate(params, "input_dropout", INPUT_DROPOUT_MEANING, per_dataset=True)
        check_hidden(params)
        for key in ("kl_weight", "specific_weight", "ot_weight"):
            check_number(params, key)
        check_number(params, "ot_eps", strict=True)
        rho = params["ot_rho"]
        if not (isinstance(rho, Real) and not isinstance(rho, bool) and rho > 0):
            raise ValueError(f"ot_rho must be a number > 0 (float('inf'): balanced OT); got {rho!r}.")
        if not isinstance(params["keep_plan"], bool):
            raise TypeError(f"keep_plan must be True or False; got {params['keep_plan']!r}.")
        mode = params.get("mode")
        if mode is not None and mode not in MODES:
            raise ValueError(f"mode must be None (chosen from the data), 'horizontal', 'vertical' or "
                             f"'diagonal'; got {mode!r}.")
        alpha = params.get("prior_alpha")
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not np.isfinite(alpha) \
                or alpha < 1:
            raise ValueError(f"prior_alpha must be a number >= 1 (1: no prior; larger: trust the labels "
                             f"more); got {alpha!r}.")
        pe = params.get("plan_eps")
        if pe is not None and (not isinstance(pe, (int, float)) or isinstance(pe, bool)
                               or not np.isfinite(pe) or pe <= 0):
            raise ValueError(f"plan_eps must be None (= ot_eps) or a number > 0 (entropic "
                             f"regularisation of the kept OT plan); got {pe!r}.")
        if not isinstance(params.get("gw_prior"), bool):
            raise ValueError(f"gw_prior must be True (diagonal mode without labels: guide the OT by a "
                             f"Gromov-Wasserstein alignment) or False; got {params.get('gw_prior')!r}.")
        gw_w = params.get("gw_weight")
        if not isinstance(gw_w, (int, float)) or isinstance(gw_w, bool) or not np.isfinite(gw_w) \
                or gw_w < 0:
            raise ValueError(f"gw_weight must be a number >= 0; got {gw_w!r}.")
        if params.get("pca_prior") is not None and not isinstance(params.get("pca_prior"), bool):
            raise ValueError(f"pca_prior must be True (horizontal mode: guide the minibatch OT by the "
                             f"cells' distances in one PCA of the shared genes), False (the paper's "
                             f"unguided OT) or None (NULL from R; the default: on in horizontal mode "
                             f"without label_key); got {params.get('pca_prior')!r}.")
        check_number(params, "pca_weight")
        check_number(params, "gw_fit_weight")
        check_number(params, "pca_fit_weight")
        gwp = params.get("gw_params")
        if gwp is not None:
            from . import gw as gw_method
            if not isinstance(gwp, dict) or set(gwp) - set(gw_method.DEFAULTS):
                raise ValueError(f"gw_params must be a dict with keys among {sorted(gw_method.DEFAULTS)}; "
                                 f"got {gwp!r}.")
            gw_method.check_params({**gw_method.DEFAULTS, **gwp})
        if params.get("pair_reduction") not in ("sum", "mean"):
            raise ValueError(f"pair_reduction must be 'sum' (the OT losses of the dataset pairs added, as "
                             f"the paper) or 'mean' (averaged: the same OT weight for any number of "
                             f"datasets); got {params.get('pair_reduction')!r}.")
        if not isinstance(params.get("cross_weight"), (int, float)) or params["cross_weight"] < 0:
            raise ValueError(f"cross_weight must be a number >= 0; got {params.get('cross_weight')!r}.")

    @classmethod
    def resolve(cls, params: dict[str, Any], datasets: list, labels) -> tuple[tuple[str, ...], bool]:
        """Choose the mode (params["mode"]) and validate the guidance against the data."""
        mode = params.get("mode")
        if mode is None:
            mode, reason, fix = _choose_mode(datasets)
            record_choice(params.get("_choices", {}), "mode", mode, reason,
                          f"uniPort mode {mode!r} chosen: {reason}. {fix}", stacklevel=3)
        elif mode == "vertical":
            check_paired(datasets)  # its error names the cells that differ
        elif mode == "horizontal":
            shared_features(datasets)  # none shared: the error that says what to do
        params["mode"] = mode
        if params.get("n_latent") is None:  # see the module docstring, "Latent size"
            params["n_latent"] = HORIZONTAL_LATENT if mode == "horizontal" else PAPER_LATENT
            record_choice(params.setdefault("_choices", {}), "n_latent", params["n_latent"],
                          f"uniPort {mode} mode's default (pass n_latent= to set it)")
        names = [d.name for d in datasets]
        drop = _per_dataset("input_dropout", params.get("input_dropout"), names, 0.0)  # checks a dict
        if mode == "horizontal" and any(drop.values()):
            raise ValueError("input_dropout applies to the per-dataset encoders of the vertical and diagonal "
                             "modes; horizontal mode encodes shared genes. Drop it or pass mode=.")
        # by sparsity in the per-dataset modes (scferry.pp.specific_feature_counts), else 2,000
        per_dataset = mode in ("vertical", "diagonal")
        heads = head_rows(datasets) if per_dataset else None  # read once (density, kind)
        params["n_specific_genes"] = specific_feature_counts(
            params.get("n_specific_genes"), datasets, by_sparsity=per_dataset, heads=heads,
            sparse_features=DIAGONAL_SPARSE_FEATURES if mode == "diagonal" else SPARSE_FEATURES)
        given = params.get("feature_selection")  # None: the paper's highly variable (docstring)
        params["feature_selection"] = resolve_feature_selection(
            "variable" if given is None else given, datasets, params.get("_choices", {}), "uniPort")
        params["peak_likelihood"] = _resolve_likelihood(params.get("peak_likelihood"), datasets, mode)
        params["embedding"] = _resolve_embedding(params.get("embedding"), datasets, mode,
                                                 params.get("_choices", {}), heads)
        params["ot_marginals"] = _check_marginals(params.get("ot_marginals"), datasets)
        if mode == "vertical" and (params["ot_marginals"] or labels is not None):
            raise ValueError(
                "vertical mode aligns the datasets by their known pairing, not by an OT plan: "
                "ot_marginals and label_key (the prior cell-type correspondence) do not apply. Drop "
                "them, or use mode='diagonal' to align the datasets as if unpaired.")
        pairs = params.get("prior_pairs")
        if labels is None:
            if pairs is not None:
                raise ValueError("prior_pairs needs cell labels: pass label_key= naming the obs column "
                                 "of cell types of the datasets.")
        else:
            codes, label_names = labels
            labelled = [bool((c >= 0).any()) for c in codes]
            ref = names.index(params["reference"]) if params.get("reference") is not None else None
            ot_pairs = [(ref, q) for q in range(len(names)) if q != ref] if ref is not None else \
                list(combinations(range(len(names)), 2))
            if not any(labelled[p] and labelled[q] for p, q in ot_pairs):
                raise ValueError(
                    "label_key turns on uniPort's prior cell-type correspondence, which needs labels "
                    f"in both datasets of an OT pair; only {[n for n, l in zip(names, labelled) if l]} "
                    "carry the column. Add labels to the other dataset or drop label_key (use "
                    "scferry.transfer_labels after integrating).")
            if pairs is not None:
                if isinstance(pairs, (str, bytes)) or not all(
                        isinstance(p, (list, tuple)) and len(p) == 2 for p in pairs):
                    raise TypeError("prior_pairs must be a list of (label, label) pairs of corresponding "
                                    f"cell types, e.g. [('T cell', 'T-cells')]; got {pairs!r}.")
                unknown = sorted({str(x) for p in pairs for x in p} - set(label_names))
                if unknown:
                    raise ValueError(f"prior_pairs names labels {unknown} that no dataset has in its "
                                     f"label column; labels: {label_names}.")
                params["prior_pairs"] = [[str(a), str(b)] for a, b in pairs]
        if params.get("pca_prior") and mode != "horizontal":
            raise ValueError(f"pca_prior guides horizontal integration (datasets sharing genes); "
                             f"this is mode {mode!r}. Drop pca_prior, or pass mode='horizontal'.")
        params["gw_prior"] = _gw_guidance(params, datasets) if (
            mode == "diagonal" and labels is None and params.get("gw_prior")) else False
        if params.get("pca_prior") is None:  # the default: see the module docstring, PCA guidance
            params["pca_prior"] = mode == "horizontal" and labels is None
            if params["pca_prior"]:
                record_choice(params.setdefault("_choices", {}), "pca_prior", True,
                              "horizontal mode without label_key: the minibatch OT is guided by the "
                              "cells' distances in one PCA of the shared genes",
                              "uniPort horizontal: the minibatch OT is guided by the cells' distances in "
                              "one PCA of the datasets' shared genes (pca_prior=False: the paper's "
                              "unguided OT)" + ("; where that PCA's clusters hold cells of several "
                              "datasets, the encoder also learns its coordinates centred within them "
                              "(pca_fit_weight=0 turns that off)." if params.get("pca_fit_weight")
                                               else "."), stacklevel=3)
        if params["pca_prior"]:
            seed = int(params.get("seed", 0))
            params["pca_guidance"] = _pca_guidance(datasets, seed)
            if params.get("pca_fit_weight"):
                targets = _centred_within_clusters(params["pca_guidance"], seed)
                params["pca_fit_targets"] = targets
                w = np.concatenate(list(targets["weights"].values()))
                params["pca_fit_record"] = {"clusters": targets["clusters"],
                                            "mean_weight": round(float(w.mean()), 4)}
        if mode == "horizontal":
            return ("common", "specific"), False
        return ("specific",), mode == "vertical"

    @staticmethod
    def dims_from_views(views: list[dict]) -> dict[str, Any]:
        return {
            "n_common": views[0]["common"].shape[1] if "common" in views[0] else 0,
            "n_specific": [v["specific"].shape[1] for v in views],
            "n_cells": [v["specific"].shape[0] for v in views],
        }

    def _encode(self, x: torch.Tensor, sizes: list[int], datasets: list[int]):
        h = x
        for lin, bn in zip(self.hidden, self.hidden_bn):
            h = F.relu(bn(lin(h), sizes, datasets))
        return self.mu(h), self.logvar(h).clamp(-10.0, 10.0)

    def encode(self, inputs: dict[str, torch.Tensor], dataset: int) -> torch.Tensor:
        if self.mode != "horizontal":
            return self.encoders[dataset](inputs["specific"])[0]
        x = inputs["common"]
        return self._encode(x, [x.shape[0]], [dataset])[0]

    def codes_to_embedding(self, z: torch.Tensor) -> torch.Tensor:
        """``embedding="unit"``: the latent means' direction (see the module docstring)."""
        return F.normalize(z, dim=1) if self.params.get("embedding") == "unit" else z

    def decode_common(self, z: torch.Tensor, sizes: list[int], datasets: list[int]) -> torch.Tensor:
        """Logits of the common genes (the decoder's sigmoid output is ``sigmoid`` of these)."""
        return self.dec_common_bn(self.dec_common(z), sizes, datasets)

    def decode_specific(self, z: torch.Tensor, dataset: int) -> torch.Tensor:
        """Logits of dataset ``dataset``'s specific genes."""
        return self.dec_specific[dataset](z)

    @torch.no_grad()
    def init_from_data(self, views: list[dict]) -> None:
        """Start each decoder's output at its genes' mean value in that dataset (logit of the
        mean), so training spends its steps on structure, not on learning per-gene offsets."""
        for d, v in enumerate(views):
            if self.mode == "horizontal":
                self.dec_common_bn.bns[d].bias.copy_(_logit_mean(v["common"]))
            if d in getattr(self, "bernoulli", ()):  # start p = sigmoid(.) * region * cell at the open rate
                X = v["specific"]
                rate = np.asarray((X > 0).mean(axis=0), dtype=np.float64).ravel()
                r = np.clip(4 * rate, 1e-4, 0.999)  # sigmoid(0) * cell factor sigmoid(0) = 1/4
                self.region_logit[str(d)].copy_(torch.from_numpy(np.log(r / (1 - r))).float())
            elif v["specific"].shape[1]:
                self.dec_specific[d].bias.copy_(_logit_mean(v["specific"]))

    def loss(self, batch: list[dict[str, torch.Tensor]]) -> LossRecord:
        if self.mode != "horizontal":
            return self._loss_per_dataset(batch)
        p = self.params
        sizes = [b["common"].shape[0] for b in batch]
        datasets = list(range(len(batch)))
        x = torch.cat([b["common"] for b in batch])
        mu, logvar = self._encode(x, sizes, datasets)
        sd = torch.exp(0.5 * logvar)
        z = mu + sd * torch.randn_like(sd)
        n = x.shape[0]
        # Reconstruction: BCE summed over genes, averaged over cells (data scaled to [0, 1]).
        recon = F.binary_cross_entropy_with_logits(self.decode_common(z, sizes, datasets), x,
                                                   reduction="sum") / n
        specific = x.new_zeros(())
        for d, (zd, b) in enumerate(zip(torch.split(z, sizes), batch)):
            if b["specific"].shape[1]:
                specific = specific + F.binary_cross_entropy_with_logits(
                    self.decode_specific(zd, d), b["specific"], reduction="sum") / n
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / n
        ot = self._ot_loss(torch.split(mu, sizes), torch.split(sd, sizes), batch)
        total = recon + p["specific_weight"] * specific + p["kl_weight"] * kl + p["ot_weight"] * ot
        parts = {"recon": recon, "specific": specific, "kl": kl, "ot": ot}
        if self.fit_coords and p.get("pca_fit_weight"):  # see the docstring, "pca_fit_weight"
            fit = sum((getattr(self, f"pcafitw_{d}")[b["idx"]] * (
                self.pca_head(m) - getattr(self, self.fit_coords[d])[b["idx"]]).pow(2).sum(1)).sum()
                      for d, (m, b) in enumerate(zip(torch.split(mu, sizes), batch))) / n
            parts["pca_fit"] = fit
            total = total + p["pca_fit_weight"] * fit
        return LossRecord(total, parts)

    def _loss_per_dataset(self, batch: list[dict[str, torch.Tensor]]) -> LossRecord:
        """Diagonal and vertical modes: each dataset through its own encoder and decoder."""
        p = self.params
        n = sum(b["specific"].shape[0] for b in batch)
        mus, sds, zs = [], [], []
        recon = kl = batch[0]["specific"].new_zeros(())
        for d, b in enumerate(batch):
            mu, logvar = self.encoders[d](b["specific"])
            sd = torch.exp(0.5 * logvar)
            z = mu + sd * torch.randn_like(sd)
            mus.append(mu), sds.append(sd), zs.append(z)
            recon = recon + self._recon(z, d, b["specific"]) / n
            kl = kl - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / n
        parts = {"recon": recon, "kl": kl}
        total = recon + p["kl_weight"] * kl
        if self.mode == "vertical":
            # Cross-reconstruction: each modality decoded from the other's code of the same cell,
            # which is what impute() does later.
            cross = recon.new_zeros(())
            for d, b in enumerate(batch):
                for e in range(len(batch)):
                    if e != d:
                        cross = cross + self._recon(zs[e], d, b["specific"]) / n
            ot = self._paired_ot_loss(mus, sds)
            parts["cross"] = cross
            total = total + p["cross_weight"] * cross
            if p.get("contrastive_weight"):  # InfoNCE on the paired means (see the docstring)
                unit = [F.normalize(m, dim=1) for m in mus]
                con = sum(info_nce(unit[a], unit[c], p["temperature"]) for a, c in self.pairs) / len(self.pairs)
                parts["contrastive"] = con
                total = total + p["contrastive_weight"] * con
        else:
            ot = self._ot_loss(mus, sds, batch)
            if self.gw_head is not None and self.guide_coords and p.get("gw_fit_weight"):
                fit = sum(F.mse_loss(self.gw_head(mu), self._guide(d, b["idx"]), reduction="sum")
                          for d, (mu, b) in enumerate(zip(mus, batch))) / n
                parts["gw_fit"] = fit
                total = total + p["gw_fit_weight"] * fit
        parts["ot"] = ot
        return LossRecord(total + p["ot_weight"] * ot, parts)

    def _recon(self, z: torch.Tensor, d: int, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction loss of dataset ``d``'s inputs ``x`` from codes ``z`` (summed over cells
        and features): BCE against the scaled values (the paper), or for a "bernoulli" dataset
        BCE of the binarised input against p = sigmoid(decoder) x sigmoid(region factor) x cell
        factor, the cell factor a sigmoid of a small network on the cell's own input (MultiVI)."""
        if d not in getattr(self, "bernoulli", ()):
            return F.binary_cross_entropy_with_logits(self.decode_specific(z, d), x, reduction="sum")
        cell = torch.sigmoid(self.cell_factor[str(d)](x))
        prob = torch.sigmoid(self.dec_specific[d](z)) * torch.sigmoid(self.region_logit[str(d)]) * cell
        return F.binary_cross_entropy(prob.clamp(1e-6, 1 - 1e-6), (x > 0).to(x.dtype), reduction="sum")

    def _paired_ot_loss(self, mus, sds) -> torch.Tensor:
        """The OT loss with the known pairing as the plan (mass 1/n on each cell's own pair): the
        mean cost between the latent Gaussians of a cell's measurements."""
        self.step += 1
        ref = self.dataset_names.index(self.reference) if self.reference is not None else None
        total = mus[0].new_zeros(())
        for p, q in self.pairs:
            mu_p, sd_p = (mus[p].detach(), sds[p].detach()) if p == ref else (mus[p], sds[p])
            total = total + ((mu_p - mus[q]).pow(2).sum(1) + (sd_p - sds[q]).pow(2).sum(1)).mean()
        return total

    def _ot_loss(self, mus, sds, batch) -> torch.Tensor:
        self.step += 1
        ref = self.dataset_names.index(self.reference) if self.reference is not None else None
        total = mus[0].new_zeros(())
        problems = []  # (p, q, latent cost, solver cost, a, b) of every pair with mass to move
        for p, q in self.pairs:
            mu_p, sd_p = (mus[p].detach(), sds[p].detach()) if p == ref else (mus[p], sds[p])
            cost = sqdist(mu_p, mus[q]) + sqdist(sd_p, sds[q])
            c = cost.detach()
            if self.use_prior:
                c = c * self._prior_factor(batch[p]["labels"], batch[q]["labels"])
            a, b = self._marginal(p, batch[p]["idx"]), self._marginal(q, batch[q]["idx"])
            if (a is not None and not a.sum() > 0) or (b is not None and not b.sum() > 0):
                continue  # every sampled cell of one side has weight 0: nothing to transport
            c = c / c.max().clamp_min(1e-12)
            if p in self.guide_coords and q in self.guide_coords:  # GW or PCA guidance: see the docstring
                g = sqdist(self._guide(p, batch[p]["idx"]), self._guide(q, batch[q]["idx"]))
                c = c + self.guide_weight * g / g.max().clamp_min(1e-12)
            problems.append((p, q, cost, c, a, b))
        eps = self.params["ot_eps"]
        plan_eps = self.params.get("plan_eps") or eps
        plans = self._solve([pr[3:] for pr in problems], eps, count=True)
        kept = plans if plan_eps == eps or not self.plans else \
            self._solve([pr[3:] for pr in problems], plan_eps)  # plan_eps: see the docstring
        for (p, q, cost, *_), plan, keep in zip(problems, plans, kept):
            total = total + (cost * plan).sum()
            if self.plans:
                w = keep * self.step.to(keep.dtype)
                self.plans[(p, q)].update(batch[p]["idx"], batch[q]["idx"], w, validate=False)
                self.plans[(q, p)].update(batch[q]["idx"], batch[p]["idx"], w.T, validate=False)
        if self.params.get("pair_reduction", "sum") == "mean" and problems:
            total = total / len(problems)
        return total

    def _solve(self, problems, eps: float, count: bool = False) -> list[torch.Tensor]:
        """Plans of the minibatch UOT problems ``(cost, a, b)``. Problems of the same shape and
        with the same kind of marginals are solved as one batch (one Sinkhorn loop for all the
        pairs of many datasets: the per-iteration overhead, not the arithmetic, dominates at
        minibatch sizes); a batch stops when all its problems have converged or at ``ot_iter``,
        and with ``count`` each of its problems counts as unconverged when the batch did not
        converge."""
        groups: dict[tuple, list[int]] = {}
        for i, (c, a, b) in enumerate(problems):
            groups.setdefault((tuple(c.shape), a is None, b is None), []).append(i)
        plans: list[torch.Tensor | None] = [None] * len(problems)
        for (_, no_a, no_b), rows in groups.items():
            C = torch.stack([problems[i][0] for i in rows])
            a = None if no_a else torch.stack([problems[i][1] for i in rows])
            b = None if no_b else torch.stack([problems[i][2] for i in rows])
            solved = unbalanced_sinkhorn(C, a, b, eps=eps, rho=self.params["ot_rho"],
                                         max_iter=self.params["ot_iter"], tol=1e-4, validate=False)
            if count:
                self.ot_solves += len(rows)
                self.ot_unconverged += 0 if solved.converged else len(rows)  # integrate() warns
            for k, i in enumerate(rows):
                plans[i] = solved.plan[k]
        return plans

    def _marginal(self, d: int, idx: torch.Tensor) -> torch.Tensor | None:
        """The sampled cells' marginal weights, normalised to total mass 1 (None: uniform)."""
        if d not in self.marginals:
            return None
        w = getattr(self, self.marginals[d])[idx]
        return w / w.sum().clamp_min(1e-30)

    def _prior_factor(self, lab_p: torch.Tensor, lab_q: torch.Tensor) -> torch.Tensor:
        """Cost multipliers of the prior (reference: ``Get_label_Prior``): 1/alpha between
        corresponding labelled cells, alpha between other labelled cells, 1 where a cell is
        unlabelled (label -1)."""
        alpha = float(self.params["prior_alpha"])
        known = (lab_p >= 0)[:, None] & (lab_q >= 0)[None, :]
        corr = self.prior_corr[lab_p.clamp_min(0)][:, lab_q.clamp_min(0)]
        factor = torch.where(corr, 1.0 / alpha, alpha)
        return torch.where(known, factor, torch.ones_like(factor))

    def plan(self, source: int, target: int) -> TopKPlan | None:
        return self.plans.get((source, target))

    def merge_ranks(self, comm) -> None:
        """Each rank accumulated the minibatch plans of its own cells: the kept plan is their sum
        (top-k per target cell of the summed mass, ``TopKPlan.merge``)."""
        for plan in self.plans.values():
            plan.merge(comm.all_gather(plan.indices), comm.all_gather(plan.values))

    def extra_state(self) -> dict[str, Any]:
        return {f"{p}->{q}": plan.state_dict() for (p, q), plan in self.plans.items()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        for key, d in state.items():
            p, q = (int(s) for s in key.split("->"))
            self.plans[(p, q)] = TopKPlan.from_state_dict(d)


def _gw_guidance(params: dict[str, Any], datasets) -> dict[str, np.ndarray] | bool:
    """Diagonal mode, no labels: GW-align the two datasets (``scferry.methods.gw``) and return
    each dataset's cells in the GW joint space; the choice is announced and recorded in
    ``params["gw_record"]``. More than two datasets: no GW guidance (announced)."""
    if len(datasets) != 2:
        warnings.warn(f"diagonal mode with {len(datasets)} datasets and no labels: the Gromov-Wasserstein "
                      "guidance aligns two modalities only, so the OT runs unguided. Integrate the "
                      "modalities pairwise, or pass label_key=.", ScferryWarning, stacklevel=4)
        params["gw_record"] = {"used": False, "reason": "more than two datasets"}
        return False
    from . import gw as gw_method
    # the guidance: method="gw"'s embedding at its defaults (refined) unless gw_params say otherwise
    hp = {**gw_method.DEFAULTS, **(params.get("gw_params") or {})}
    al, plain, choices = gw_method.fit(datasets, hp, seed=int(params.get("seed", 0)), progress=False,
                                       announce=False)
    warnings.warn(
        "diagonal mode without labels: the minibatch OT is guided by a Gromov-Wasserstein alignment "
        f"of the two modalities' geometries (metacells: {plain['n_metacells']}, kinds: {plain['kinds']}"
        + (f"; {'; '.join(c['reason'] for c in choices.values())}" if choices else "")
        + ")" + (", and the encoders learn its coordinates (gw_fit_weight="
                 f"{params['gw_fit_weight']:g})" if params.get("gw_fit_weight") else "")
        + ". Pass gw_prior=False for unguided OT, or label_key= "
        "for the cell-type prior. method='gw' returns that alignment's own embedding (no encoders "
        "for new cells).",
        ScferryWarning, stacklevel=4)
    record_choice(params.setdefault("_choices", {}), "gw_prior", True,
                  "diagonal mode without labels: the minibatch OT is guided by a Gromov-Wasserstein "
                  "alignment of the two modalities" + ("" if not params.get("gw_fit_weight") else
                  ", and the encoders learn its coordinates (gw_fit_weight)")
                  + " (gw_prior=False turns it off)")
    refined: dict[str, Any] = {}
    z = gw_method.embedding(al, refined, hp["refine"], seed=int(params.get("seed", 0)))
    params["gw_record"] = {"used": True, **{k: v for k, v in plain.items()
                                           if isinstance(v, (int, float, str, bool, list)) or v is None},
                           "refine": refined["refine"], "choices": choices}
    return dict(zip([d.name for d in datasets], z))


def _pca_guidance(datasets, seed: int) -> dict[str, np.ndarray]:
    """Horizontal mode, ``pca_prior=True``: every dataset's cells in one PCA of the shared genes
    (:func:`scferry.pp.joint_pca`), the coordinates the minibatch OT's guidance term reads."""
    from ..pp import joint_pca
    Z = joint_pca(datasets, shared_features(datasets), n_components=GUIDANCE_COMPONENTS,
                  scale=False, seed=seed)
    return {d.name: z for d, z in zip(datasets, Z)}


def _centred_within_clusters(coords: dict[str, np.ndarray], seed: int) -> dict[str, Any]:
    """``pca_fit_weight``'s regression targets (``coords`` and ``weights`` by dataset, and the
    number of ``clusters``): the guidance PCA with each dataset's cells moved to their k-means
    cluster's mean, clusters of the joint coordinates (``FIT_CLUSTER_CELLS`` cells each on
    average, at most ``FIT_MAX_CLUSTERS``), ``FIT_ROUNDS`` rounds, each clustering the
    coordinates the previous round moved (``sf.refine``'s last centring step at full strength,
    ``scferry.refine._field``); a cell's weight is the normalised entropy of the datasets in its
    last-round cluster."""
    from ..refine._field import _centre_within_clusters
    names = list(coords)
    sizes = [len(coords[n]) for n in names]
    X = torch.from_numpy(np.concatenate([np.asarray(coords[n], np.float32) for n in names]))
    codes = torch.repeat_interleave(torch.arange(len(names)), torch.tensor(sizes))
    k = int(min(FIT_MAX_CLUSTERS, max(2, X.shape[0] // FIT_CLUSTER_CELLS)))
    p = {"centring_clusters": k, "centring": 1.0, "kmeans_subsample": FIT_KMEANS_SUBSAMPLE}
    for r in range(FIT_ROUNDS):
        X, lab, k = _centre_within_clusters(X, codes, len(names), p, seed + 17 * r)
    # each last-round cluster's datasets: normalised entropy of its composition
    counts = torch.zeros(k, len(names), dtype=torch.float64).index_put_(
        (lab, codes), torch.ones(len(lab), dtype=torch.float64), accumulate=True)
    share = counts / counts.sum(1, keepdim=True).clamp_min(1.0)
    h = -(share * share.clamp_min(1e-300).log()).sum(1) / max(np.log(len(names)), 1e-12)
    split = np.cumsum(sizes)[:-1]
    return {"coords": dict(zip(names, np.split(X.numpy(), split))), "clusters": int(k),
            "weights": dict(zip(names, np.split(h[lab].float().numpy(), split)))}


def _per_dataset(key: str, given, names: list[str], default) -> dict[str, Any]:
    """A setting given once for every dataset (None: ``default``) or as a dict with one entry per
    dataset, as ``{dataset name: value}``."""
    if isinstance(given, dict):
        if set(given) != set(names):
            raise ValueError(f"{key} as a dict needs one entry per dataset {names}; got "
                             f"{sorted(map(str, given))}.")
        return {n: given[n] for n in names}
    return {n: default if given is None else given for n in names}


def _resolve_likelihood(given, datasets, mode: str) -> dict[str, str]:
    """Per dataset, the reconstruction likelihood of its own features (``peak_likelihood``)."""
    out = _per_dataset("peak_likelihood", given, [d.name for d in datasets], "scaled")
    if mode == "horizontal" and "bernoulli" in out.values():
        raise ValueError("peak_likelihood='bernoulli' applies to the per-dataset decoders of the vertical "
                         "and diagonal modes; horizontal mode decodes shared genes. Drop it or pass mode=.")
    return out


def _resolve_embedding(given, datasets, mode: str, choices: dict, heads: dict | None) -> str:
    """``embedding``: the user's, else "unit" in diagonal mode and in vertical mode when a dataset
    looks like ATAC peaks (``scferry.gw.guess_kind``; announced and recorded), else "mean"."""
    if given is not None:
        if given == "unit" and mode == "horizontal":
            raise ValueError("embedding='unit' applies to vertical and diagonal modes (one "
                             "encoder per modality, each embedding its cells alone); drop it or "
                             "pass mode=.")
        return given
    if mode == "horizontal":
        return "mean"
    if mode == "diagonal":
        record_choice(choices, "embedding", "unit",
                      "diagonal mode: the embedding is the direction of the latent means "
                      "(length 1), not the means",
                      "uniPort diagonal: the embedding is the direction of each cell's latent mean "
                      "(scaled to length 1): each modality's encoder places its cells alone, and "
                      "the lengths of the two modalities' codes differ, most for cells it did not "
                      "train on. Pass embedding='mean' for the means (the paper's).", stacklevel=4)
        return "unit"
    from ..gw import guess_kind
    peaks = [d.name for d in datasets if guess_kind(heads[d.name], d.adata.var, d.var_names) == "peaks"]
    if not peaks:
        return "mean"
    record_choice(choices, "embedding", "unit",
                  f"{', '.join(map(repr, peaks))} look like ATAC peaks: the embedding is the direction of "
                  "the latent means (length 1), not the means",
                  f"uniPort vertical: {', '.join(map(repr, peaks))} look like ATAC peaks, so the embedding is "
                  "the direction of each cell's latent mean (scaled to length 1): the peaks encoder shrinks "
                  "the codes of nuclei it did not train on toward the prior's centre. Pass embedding='mean' "
                  "for the means (the paper's).", stacklevel=4)
    return "unit"


def _default_names(names) -> bool:
    """Cell names '0', '1', ... as AnnData gives a matrix without names: they say nothing
    about which cells are the same."""
    return all(str(x) == str(i) for i, x in enumerate(names))


def _choose_mode(datasets) -> tuple[str, str, str]:
    """uniPort's mode when the user gave none: (mode, reason, how to choose it explicitly).
    Pairing is guessed only from real cell names (the same names in the same order in every
    dataset), never from default integer names."""
    first = datasets[0]
    same_names = all(d.n_obs == first.n_obs and np.array_equal(np.asarray(d.obs_names), np.asarray(first.obs_names))
                     for d in datasets[1:])
    if same_names and not _default_names(first.obs_names):
        shown = ", ".join(repr(str(x)) for x in first.obs_names[:2])
        return ("vertical", f"the datasets list the same {first.n_obs} cell names in the same order "
                f"({shown}, ...), so they are taken as the same cells measured in several modalities",
                "Pass mode='vertical' to state it, or mode='horizontal' (shared genes) or "
                "mode='diagonal' if they are different cells.")
    if has_shared_features(datasets):
        n = len(shared_features(datasets))
        note = (" (their identical default cell names '0', '1', ... are not taken as a pairing)"
                if same_names else "")
        return ("horizontal", f"the datasets share {n} gene names and are not declared paired{note}",
                "Pass mode='horizontal' to state it, or mode='vertical' if they are the same cells.")
    # could also be mismatched gene identifiers: say so
    sizes = ", ".join(f"{d.name!r}: {d.adata.n_vars}" for d in datasets)
    return ("diagonal", f"the datasets share no feature names ({sizes} features): integrating them in "
            "uniPort's diagonal mode (one encoder per dataset, aligned by OT only)",
            "If they should share genes, check the identifiers (symbols vs Ensembl IDs, case); pass "
            "mode='diagonal' to state it.")


def _check_marginals(given, datasets) -> dict[str, np.ndarray] | None:
    """``ot_marginals``: {dataset name: one non-negative finite weight per cell}. A pandas Series
    is aligned on the cell names; arrays are taken in the dataset's cell order."""
    if given is None:
        return None
    if not isinstance(given, dict):
        raise TypeError("ot_marginals must be a dict of dataset name -> per-cell weights, e.g. "
                        f"{{'st': weights}}; got {type(given).__name__}.")
    by_name = {d.name: d for d in datasets}
    out = {}
    for name, w in given.items():
        if name not in by_name:
            raise ValueError(f"ot_marginals names {name!r}, not one of the datasets {list(by_name)}.")
        d = by_name[name]
        if isinstance(w, pd.Series):
            if not w.index.is_unique or set(w.index) != set(d.obs_names):
                missing = d.obs_names[~d.obs_names.isin(w.index)]
                raise ValueError(f"ot_marginals[{name!r}] is a Series whose index is not the cells of "
                                 f"dataset {name!r} ({len(missing)} cells missing, e.g. "
                                 f"{list(missing[:3])}; duplicates: {not w.index.is_unique}).")
            w = w.reindex(d.obs_names)
        try:
            arr = np.asarray(w, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"ot_marginals[{name!r}] must be numbers, one per cell.") from None
        if arr.ndim != 1 or len(arr) != d.n_obs:
            raise ValueError(f"ot_marginals[{name!r}] must hold one weight per cell of dataset {name!r} "
                             f"({d.n_obs}); got shape {arr.shape}.")
        if not np.isfinite(arr).all():
            raise ValueError(f"ot_marginals[{name!r}] has {int((~np.isfinite(arr)).sum())} NaN or "
                             "infinite weights; give finite weights (0 for cells not to be matched).")
        if (arr < 0).any():
            raise ValueError(f"ot_marginals[{name!r}] has {int((arr < 0).sum())} negative weights; "
                             "weights must be >= 0.")
        if not arr.sum() > 0:
            raise ValueError(f"ot_marginals[{name!r}] is all zeros; at least one cell needs a positive "
                             "weight.")
        out[name] = arr.astype(np.float32)
    return out or None
