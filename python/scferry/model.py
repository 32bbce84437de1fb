"""The fitted model every method returns: the trained network, the preprocessing it was trained
with, the datasets' names and cell names, and the training history. Saving writes tensors and
plain Python values only, so loading needs no pickle (``torch.load(weights_only=True)``)."""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

from .data import Dataset, check_cell_totals, check_dataset, collect_datasets
from .methods import get_method
from .methods.base import Method
from .pp import Preprocessing
from .train import resolve_device

FORMAT = "scferry-model"
VERSION = 1
EMBEDDING_KEY = "X_scferry"


class Model:
    """A trained integration model (returned by :func:`scferry.integrate`).

    Attributes
    ----------
    method
        Method name, e.g. ``"uniport"``.
    dataset_names
        Names of the training datasets, in training order.
    obs_names
        Cell names of each training dataset (used to check data given back later).
    adatas
        The AnnData objects it was trained on (references, not copies; empty after
        :func:`scferry.load` unless given there).
    params, train_params
        Method hyper-parameters and training settings actually used.
    history
        One dict of epoch-mean losses per epoch.
    """

    def __init__(self, module: Method, preprocessing: Preprocessing, datasets: list[Dataset],
                 train_params: dict[str, Any], history: list[dict], batch_key: str | None = None,
                 obs_names: dict[str, list[str]] | None = None):
        self.module = module
        self.preprocessing = preprocessing
        self.method = module.name
        self.params = module.params
        self.dataset_names = list(module.dataset_names)
        self.train_params = train_params
        self.history = history
        self.batch_key = batch_key
        self.datasets = datasets
        self.obs_names = obs_names or {d.name: list(map(str, d.obs_names)) for d in datasets}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}: {len(self.obs_names[n])} cells" for n in self.dataset_names)
        mode = f", mode={self.params['mode']!r}" if self.params.get("mode") else ""
        return f"scferry.Model(method={self.method!r}{mode}, {sizes}, latent={self.params.get('n_latent')})"

    @property
    def adatas(self) -> dict[str, AnnData]:
        return {d.name: d.adata for d in self.datasets}

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def dataset(self, name: str, role: str = "dataset") -> Dataset:
        """The training dataset called ``name``, with its AnnData attached."""
        if name not in self.dataset_names:
            raise ValueError(f"{role} {name!r} is not a dataset of this model; datasets: {self.dataset_names}.")
        for d in self.datasets:
            if d.name == name:
                return d
        raise ValueError(
            f"the AnnData of dataset {name!r} is not attached to this model (it was loaded from "
            "disk). Attach it: scferry.load(path, adatas={...}) with the objects it was trained on."
        )

    def index(self, name: str) -> int:
        return self.dataset_names.index(name)

    @property
    def encoder_views(self) -> tuple[str, ...]:
        """The model inputs ``Method.encode`` reads. Methods whose encoder reads more than the
        common genes declare ``encode_inputs`` (uniPort and DAVAE read only "common")."""
        return tuple(getattr(self.module, "encode_inputs", ("common",)))

    def features(self, dataset: str, view: str) -> list[str]:
        """Genes of model input ``view`` ("common" or "specific") of training dataset ``dataset``."""
        prep = self.preprocessing
        return list(prep.common_genes) if view == "common" else list(prep.specific_genes[dataset])

    def check_attached(self, d: Dataset) -> None:
        """The attached AnnData of training dataset ``d`` must still hold the cells (same names,
        same order: the OT plan indexes them) and the genes the model was trained on."""
        saved = self.obs_names[d.name]
        if d.n_obs != len(saved) or list(map(str, d.obs_names)) != saved:
            raise ValueError(
                f"the cells of dataset {d.name!r} changed since training ({d.n_obs} now, "
                f"{len(saved)} at training, or a different order); the model's OT plan and "
                "embedding index the training cells. Use the AnnData as it was trained, or "
                "re-integrate.")
        genes = list(pd.unique(np.asarray(self.features(d.name, "common") + self.features(d.name, "specific"), dtype=object)))
        _check_genes(d.var_names, genes, f"dataset {d.name!r}", "the model was trained on",
                     "Attach the AnnData the model was trained on (all its genes).")

    def transform(self, adata: AnnData, dataset: str, views: tuple[str, ...] | None = None, *,
                  layer: str | None = None, what: str = "the new data") -> dict[str, sp.csr_matrix]:
        """Validate cells of ``adata`` (raw counts, as training dataset ``dataset``) and map them
        to model inputs with ``dataset``'s saved genes and preprocessing parameters. Values above
        the training maximum are clipped to the decoders' range."""
        if not isinstance(adata, AnnData):
            raise TypeError(f"{what} must be an AnnData; got {type(adata).__name__}.")
        if not isinstance(dataset, str) or dataset not in self.dataset_names:
            raise ValueError(f"dataset {dataset!r} is not a dataset of this model; datasets: "
                             f"{self.dataset_names}. Name the training dataset the new cells match.")
        views = self.encoder_views if views is None else views
        new = Dataset(what, adata, None, layer)
        check_dataset(new)
        for view in views:
            _check_genes(adata.var_names, self.features(dataset, view), what,
                         f"the model reads for dataset {dataset!r} ({view} genes)",
                         "Use the same gene identifiers as the training data (symbols vs Ensembl "
                         "IDs, case); genes truly not measured can be added as zero columns, at a "
                         "cost in accuracy.")
        X = new.counts()
        if self.preprocessing.normalize:
            check_cell_totals(X, what)
        return {v: self.preprocessing.transform(X, adata.var_names, dataset, v, clip=True) for v in views}

    @torch.no_grad()
    def encode(self, views: Mapping[str, sp.csr_matrix], dataset: str, chunk: int = 4096) -> np.ndarray:
        """Latent means of cells given as model input views (already preprocessed), in chunks."""
        self.module.eval()
        d, dev = self.index(dataset), self.device
        n = next(iter(views.values())).shape[0]
        out = []
        for start in range(0, n, chunk):
            inputs = {k: torch.from_numpy(X[start:start + chunk].toarray()).to(dev) for k, X in views.items()}
            out.append(self.module.encode(inputs, d).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def write_embedding(self, embeddings: dict[str, np.ndarray], key: str = EMBEDDING_KEY) -> None:
        """Write each dataset's latent means to ``obsm[key]`` of its AnnData (one array per object;
        with one AnnData + batch_key the rows are assembled in the object's order)."""
        by_object: dict[int, tuple[AnnData, np.ndarray]] = {}
        for d in self.datasets:
            emb = embeddings[d.name]
            if d.rows is None:
                d.adata.obsm[key] = emb
            else:
                adata, full = by_object.setdefault(
                    id(d.adata), (d.adata, np.full((d.adata.n_obs, emb.shape[1]), np.nan, np.float32)))
                full[d.rows] = emb
        for adata, full in by_object.values():
            adata.obsm[key] = full

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | os.PathLike) -> None:
        """Save to one file (tensors and plain values; loads without pickle)."""
        state = {
            "format": FORMAT, "version": VERSION, "method": self.method,
            "params": _plain(self.params), "dims": _plain(self.module.dims),
            "dataset_names": self.dataset_names, "obs_names": self.obs_names,
            "batch_key": self.batch_key, "train_params": _plain(self.train_params),
            "history": self.history, "preprocessing": self.preprocessing.state_dict(),
            "state_dict": {k: v.cpu() for k, v in self.module.state_dict().items()},
            "extra_state": _to_cpu(self.module.extra_state()),
        }
        torch.save(state, os.fspath(path))


def load(path: str | os.PathLike, adatas: Mapping[str, AnnData] | AnnData | None = None,
         device: str = "auto") -> Model:
    """Load a model saved with ``Model.save``. ``adatas`` re-attaches the training data (a dict
    name -> AnnData, or the single AnnData when trained with ``batch_key``): needed by
    ``transfer_labels`` and friends; cell names are checked against the saved ones."""
    state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a scferry model file.")
    params = dict(state["params"])
    if "n_hidden" in params:
        params["n_hidden"] = tuple(params["n_hidden"])
    cls = get_method(state["method"])
    module = cls(state["dims"], params, state["dataset_names"])
    module.load_state_dict(state["state_dict"])
    module.load_extra_state(state["extra_state"])
    module.to(resolve_device(device)).eval()
    datasets = []
    if adatas is not None:
        datasets = collect_datasets(adatas, batch_key=state["batch_key"] if isinstance(adatas, AnnData) else None)
        for d in datasets:
            saved = state["obs_names"].get(d.name)
            if saved is None:
                raise ValueError(f"dataset {d.name!r} was not part of this model; datasets: {state['dataset_names']}.")
            if list(map(str, d.obs_names)) != saved:
                raise ValueError(
                    f"the cells of dataset {d.name!r} differ from those the model was trained on "
                    f"({d.n_obs} given, {len(saved)} saved); pass the same AnnData, in the same order.")
    model = Model(module, Preprocessing.from_state_dict(state["preprocessing"]), datasets,
                  state["train_params"], state["history"], state["batch_key"], state["obs_names"])
    for d in datasets:
        model.check_attached(d)
    return model


def _check_genes(var_names: pd.Index, genes: list[str], what: str, role: str, fix: str) -> None:
    genes = pd.Index(genes)
    missing = list(genes[~genes.isin(var_names)])
    if missing:
        raise ValueError(
            f"{what} lacks {len(missing)} of the {len(genes)} genes {role} (e.g. {missing[:5]}). {fix}")


def _plain(x):
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def _to_cpu(x):
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    return x.cpu() if isinstance(x, torch.Tensor) else x
