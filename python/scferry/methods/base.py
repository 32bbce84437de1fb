"""What every method is: a small ``nn.Module`` that turns a minibatch into a :class:`LossRecord`
and encodes cells. Data handling, preprocessing, the training loop, save/load and the user API
live once, elsewhere (``model.py``, ``train.py``, ``integrate.py``)."""
from __future__ import annotations

from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..train import LossRecord


class Method(nn.Module):
    """Base class. A subclass sets ``name``, ``defaults`` (its hyper-parameters) and
    ``train_defaults`` (optimiser and loop settings), builds its networks from ``dims`` (sizes
    derived from the preprocessed data) and implements ``loss`` and ``encode``."""

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    train_defaults: ClassVar[dict[str, Any]] = {}
    paired: ClassVar[bool] = False  # same cells in every dataset (vertical integration)
    # The model inputs ``loss``/``encode`` read: "common" (genes shared by all datasets) and/or
    # "specific" (each dataset's own HVGs); integrate() prepares only these.
    inputs: ClassVar[tuple[str, ...]] = ("common", "specific")
    # Cell labels during training (integrate(label_key=...)): None (not used), "optional" or
    # "required". When given, each minibatch item carries "labels" (int64, -1 = unlabelled cell
    # or a dataset without the column) and ``dims["label_names"]`` lists the categories.
    uses_labels: ClassVar[str | None] = None
    # Per-dataset MaxAbs scaling of the inputs to [0, 1] (False: log-normalised values as is).
    scale_inputs: ClassVar[bool] = True
    # integrate() passes the fit's ``seed`` in ``params["seed"]``: for methods whose inputs or
    # training-time structures are built from the data with randomness of their own (uniPort's GW
    # guidance, scMODAL's anchor space), so that they follow the fit's seed.
    seeded_inputs: ClassVar[bool] = False

    # Parameters or buffers a method updates from its own minibatch outside the optimiser (e.g.
    # an EMA of prototypes): in distributed training they are averaged over the processes after
    # every step, so that the replicas stay the same.
    rank_local_state: ClassVar[tuple[str, ...]] = ()

    # Minibatch OT solves run during training and how many stopped at their iteration limit;
    # methods that solve OT count them, integrate() records them and warns once per fit.
    ot_solves: int = 0
    ot_unconverged: int = 0

    def __init__(self, dims: dict[str, Any], params: dict[str, Any], dataset_names: list[str]):
        super().__init__()
        self.dims, self.params, self.dataset_names = dims, params, list(dataset_names)

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Reject bad hyper-parameters before any data is touched (optional)."""

    #: The budget rule used when the training budget is ``max_iter="auto"``: ``None`` (no rule; a
    #: method with one overrides it with a classmethod ``auto_max_iter(n_cells) -> int``, the
    #: number of optimiser steps for datasets of ``n_cells`` cells, as DAVAE does).
    auto_max_iter = None

    @classmethod
    def resolve(cls, params: dict[str, Any], datasets: list, labels) -> tuple[tuple[str, ...], bool]:
        """Called by integrate() after the input checks, before preprocessing: the model inputs
        and whether the datasets are paired, for these ``params`` and data (``datasets``: the
        :class:`scferry.data.Dataset` list; ``labels``: ``(codes per dataset, label names)`` or
        None). A method whose inputs depend on the data (uniPort's modes) overrides it, may
        record its choice in ``params`` and sets the instance attributes ``inputs``,
        ``encode_inputs`` and ``paired`` in ``__init__`` from it; a choice made for the user is
        recorded and announced with ``scferry.errors.record_choice(params["_choices"], ...)``
        (integrate moves it to ``Model.choices``). Errors here touch nothing."""
        return cls.inputs, cls.paired

    @classmethod
    def resolved_train_defaults(cls, params: dict[str, Any]) -> dict[str, Any]:
        """The training settings for ``params`` as :meth:`resolve` left them: ``train_defaults``,
        unless a mode has settings of its own (uniPort's vertical mode: weight decay, budget). The
        user's ``max_iter``, ``lr``, ... override them."""
        return dict(cls.train_defaults)

    @staticmethod
    def dims_from_views(views: list[dict]) -> dict[str, Any]:
        raise NotImplementedError

    def init_from_data(self, views: list[dict]) -> None:
        """Optional data-informed initialisation, called once before training."""

    def release_training_data(self) -> None:
        """Called by integrate() once training is over: drop any reference to the training inputs
        that :meth:`init_from_data` kept for training-time terms, so the fitted model does not hold
        the data in memory (or in a saved file)."""

    def loss(self, batch: list[dict[str, torch.Tensor]]) -> LossRecord:
        raise NotImplementedError

    def encode(self, inputs: dict[str, torch.Tensor], dataset: int) -> torch.Tensor:
        """Latent coordinates (cells x latent) of cells of dataset index ``dataset`` (eval mode)."""
        raise NotImplementedError

    def codes_to_embedding(self, z: torch.Tensor) -> torch.Tensor:
        """The embedding (what integrate writes and ``sf.project`` returns) of latent codes ``z``
        from :meth:`encode`: the codes themselves unless a method maps them (uniPort's
        ``embedding="unit"``); decoders read the codes, not this. (Not named ``embed``: a method's
        submodule of that name, e.g. MinNet's last layer, would be shadowed by it, because
        ``nn.Module`` keeps submodules out of the instance ``__dict__``.)"""
        return z

    # Non-parameter state a method keeps across training (e.g. uniPort's global OT plan).
    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def merge_ranks(self, comm) -> None:
        """Distributed training, at the end, on every rank: combine what each rank kept on its
        own beyond the (synchronised) parameters, through ``comm.all_gather`` / ``comm.sum``
        (:class:`scferry.distributed.Comm`). uniPort merges its kept OT plans."""


# ---------------------------------------------------------------------------- parameter checks
# Shared by the methods' ``check_params``: numpy integers and floats are accepted as numbers.
def info_nce(zx: torch.Tensor, zy: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP: Radford et al. 2021; InfoNCE: van den Oord et al. 2018) between
    paired rows of ``zx`` and ``zy`` (unit-normalised by the caller): each cell's other
    measurement is the positive among every cell of the minibatch, cosine similarity over
    ``temperature``, cross-entropy in both directions."""
    logits = zx @ zy.T / temperature
    target = torch.arange(zx.shape[0], device=zx.device)
    return 0.5 * (torch.nn.functional.cross_entropy(logits, target)
                  + torch.nn.functional.cross_entropy(logits.T, target))


def neighbour_nce(anchor: torch.Tensor, positive: torch.Tensor, temperature: float,
                  groups: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE (van den Oord et al. 2018) with each anchor's neighbour ``positive[i]`` as its
    positive and the other rows of ``positive`` as negatives (only those of the same ``groups``
    entry, e.g. the same dataset, when given), on squared euclidean distances divided by their
    minibatch mean (scale-free: the loss cannot be lowered by inflating the space), over
    ``temperature``; cross-entropy in both directions, as :func:`info_nce`. The neighbour-positive
    contrastive form of scDML (Yu et al., Nat Commun 2023) and SMILE (Xu et al., Brief Bioinform
    2022) on a VAE's latent means."""
    d2 = torch.cdist(anchor, positive).pow(2)
    logits = -d2 / (temperature * d2.mean().clamp_min(1e-8))
    if groups is not None:
        logits = logits.masked_fill(groups[:, None] != groups[None, :], float("-inf"))
    target = torch.arange(anchor.shape[0], device=anchor.device)
    return 0.5 * (torch.nn.functional.cross_entropy(logits, target)
                  + torch.nn.functional.cross_entropy(logits.T, target))


def neighbour_pull(anchor: torch.Tensor, positive: torch.Tensor,
                   groups: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared euclidean distance of each anchor to its neighbour ``positive[i]`` over the mean
    squared distance of anchors to all rows of ``positive`` (only those of the same ``groups``
    entry when given): neighbours close relative to the space's spread, scale-free (inflating or
    shrinking the space does not change it). Unlike :func:`neighbour_nce` it has no term that
    spreads the other cells apart (the "uniformity" of contrastive losses, Wang and Isola, ICML
    2020), so it keeps neighbourhoods without evening out cell densities."""
    d2 = torch.cdist(anchor, positive).pow(2)
    same = torch.ones_like(d2, dtype=torch.bool) if groups is None else groups[:, None] == groups[None, :]
    return d2.diagonal().mean() / d2[same].mean().clamp_min(1e-8)


def is_int(v) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and bool(np.isfinite(v))


def check_int(params: dict[str, Any], key: str, minimum: int = 1) -> None:
    v = params[key]
    if not is_int(v) or v < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{key} must be {what}; got {v!r}.")


def check_number(params: dict[str, Any], key: str, minimum: float = 0.0, strict: bool = False) -> None:
    v = params[key]
    if not is_number(v) or v < minimum or (strict and v == minimum):
        raise ValueError(f"{key} must be a finite number {'>' if strict else '>='} {minimum:g}; got {v!r}.")


#: What an input dropout rate is, for the error of a bad one (MinNet's ``dropout``, uniPort's
#: ``input_dropout``).
INPUT_DROPOUT_MEANING = "the fraction of each cell's input features zeroed at random in training; 0: off"


def check_rate(params: dict[str, Any], key: str, meaning: str, per_dataset: bool = False) -> None:
    """A fraction in [0, 1), e.g. a dropout rate; ``per_dataset``: also a dict dataset name -> one."""
    v = params[key]
    values = v.values() if per_dataset and isinstance(v, dict) else [v]
    if not all(is_number(x) and 0 <= x < 1 for x in values):
        alt = " or a dict dataset name -> such a number" if per_dataset else ""
        raise ValueError(f"{key} must be in [0, 1) ({meaning}){alt}; got {v!r}.")


def check_hidden(params: dict[str, Any], key: str = "n_hidden") -> None:
    hidden = params[key]
    if not isinstance(hidden, (list, tuple)) or not hidden or not all(is_int(h) and h > 0 for h in hidden):
        raise ValueError(f"{key} must be a non-empty sequence of positive integers, e.g. (256,); "
                         f"got {hidden!r}.")
