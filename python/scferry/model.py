"""The fitted model every method returns: the trained network, the preprocessing it was trained
with, the datasets' names and cell names, and the training history. Saving writes tensors and
plain Python values only, so loading needs no pickle (``torch.load(weights_only=True)``).

A model file is the zip archive ``torch.save`` writes; loading checks the archive's CRC-32 of
every member (a damaged file is refused, not loaded with wrong weights), the format version, and
that every key and weight is there; each failure is a :class:`scferry.ModelFileError`."""
from __future__ import annotations

import os
import uuid
import zipfile
from typing import Any, Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

from .data import Dataset, check_cell_totals, check_dataset, collect_datasets, warn_if_not_counts
from .errors import ModelFileError, announce
from .methods import get_method
from .methods.base import Method
from .pp import Preprocessing
from .train import resolve_device

FORMAT = "scferry-model"
VERSION = 2  # 2: adds the model's id and choices
EMBEDDING_KEY = "X_scferry"
RECORD_KEY = "scferry"  # uns[RECORD_KEY]: which model wrote obsm[EMBEDDING_KEY]
_REQUIRED = ("method", "params", "dims", "dataset_names", "obs_names", "batch_key", "train_params",
             "history", "preprocessing", "state_dict", "extra_state")


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
    choices
        What was chosen for the user, each ``{"value": ..., "reason": "..."}`` (JSON-friendly;
        e.g. ``"mode"`` of uniPort when ``mode=None``, ``"n_common_genes"`` actually used). Each
        choice that changes the result was also announced with a :class:`scferry.ScferryWarning`.
    id
        A random identifier (hex) of this fit, saved with the model and recorded in
        ``uns["scferry"]["model_id"]`` of every AnnData whose ``obsm["X_scferry"]`` it wrote:
        tools refuse an embedding written by another model.
    """

    def __init__(self, module: Method, preprocessing: Preprocessing, datasets: list[Dataset],
                 train_params: dict[str, Any], history: list[dict], batch_key: str | None = None,
                 obs_names: dict[str, list[str]] | None = None, choices: dict | None = None,
                 model_id: str | None = None):
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
        self.choices = dict(choices or {})
        self.id = model_id or uuid.uuid4().hex  # os.urandom: no global generator is touched

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
            warn_if_not_counts(X, what, layer, "Pass raw counts, as the model was trained on.", stacklevel=4)
        out = {v: self.preprocessing.transform(X, adata.var_names, dataset, v, clip=True) for v in views}
        empty = np.ones(X.shape[0], bool)
        for M in out.values():
            empty &= np.diff(M.indptr) == 0
        if empty.any():
            n_genes = len(pd.unique(np.asarray([g for v in views for g in self.features(dataset, v)], dtype=object)))
            announce(
                f"{int(empty.sum())} of {X.shape[0]} cells of {what} have no counts in the {n_genes} "
                f"genes the model reads for dataset {dataset!r}: they all get one and the same "
                "embedding, which says nothing about them. Filter them out, or check that the gene "
                "panel matches the training data.", stacklevel=3)
        return out

    @torch.no_grad()
    def encode(self, views: Mapping[str, sp.csr_matrix], dataset: str, chunk: int = 4096,
               latent: bool = False) -> np.ndarray:
        """Embedding of cells given as model input views (already preprocessed), in chunks: the
        module's ``codes_to_embedding`` of its latent means, or with ``latent=True`` the means themselves (what
        its decoders read)."""
        self.module.eval()
        d, dev = self.index(dataset), self.device
        n = next(iter(views.values())).shape[0]
        out = []
        for start in range(0, n, chunk):
            inputs = {k: torch.from_numpy(X[start:start + chunk].toarray()).to(dev) for k, X in views.items()}
            z = self.module.encode(inputs, d)
            out.append((z if latent else self.module.codes_to_embedding(z)).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    @torch.no_grad()
    def embed(self, z: np.ndarray) -> np.ndarray:
        """The embedding of latent means ``z`` (``encode(..., latent=True)``), as ``encode`` gives it."""
        return self.module.codes_to_embedding(torch.from_numpy(np.asarray(z, np.float32)).to(self.device)).cpu().numpy()

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
        for d in self.datasets:
            Model.record_embedding(self, d.adata, key)  # also called unbound by GWModel

    def record_embedding(self, adata: AnnData, key: str = EMBEDDING_KEY) -> None:
        """Record in ``adata.uns["scferry"]`` that this model wrote ``obsm[key]``."""
        adata.uns[RECORD_KEY] = {"model_id": self.id, "method": self.method, "key": key}

    def embedding_of(self, d: Dataset) -> np.ndarray | None:
        """``obsm["X_scferry"]`` of training dataset ``d`` when this model wrote it; None when
        there is none or nothing records who wrote it (the caller encodes the cells then). An
        embedding recorded as written by another model is an error that says how to fix it."""
        if EMBEDDING_KEY not in d.adata.obsm:
            return None
        record = d.adata.uns.get(RECORD_KEY)
        owner = record.get("model_id") if isinstance(record, Mapping) else None
        if owner is None:
            return None
        if owner != self.id:
            raise ValueError(
                f"obsm[{EMBEDDING_KEY!r}] of dataset {d.name!r} was written by another model "
                f"({record.get('method')!r}, id {str(owner)[:8]}), not by this one ({self.method!r}, "
                f"id {self.id[:8]}): results would mix two latent spaces. re-run scferry.integrate "
                "with this data and use the model it returns, or embed the cells with this model: "
                f"scferry.project(model, adata, {d.name!r}).")
        X = np.asarray(d.adata.obsm[EMBEDDING_KEY])
        return X if d.rows is None else X[d.rows]

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | os.PathLike) -> None:
        """Save to one file (tensors and plain values; loads without pickle)."""
        state = {
            "format": FORMAT, "version": VERSION, "method": self.method, "id": self.id,
            "choices": _plain(self.choices),
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
    state = _read_model_file(path)
    where = f"the model file {os.fspath(path)!r}"
    params = dict(state["params"])
    if "n_hidden" in params:
        params["n_hidden"] = tuple(params["n_hidden"])
    try:
        cls = get_method(state["method"])
    except ValueError as e:
        raise ModelFileError(f"{where} names {e} It was written by a scferry with other methods: "
                             "load it with that version, or upgrade scferry.") from None
    try:
        module = cls(state["dims"], params, state["dataset_names"])
        module.load_state_dict(state["state_dict"])
        module.load_extra_state(state["extra_state"])
    except (RuntimeError, KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise ModelFileError(
            f"the weights and settings in {where} do not match method {state['method']!r} "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}). The file is inconsistent (edited "
            "or assembled by hand?): save the model again from the fitted object.") from None
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
                  state["train_params"], state["history"], state["batch_key"], state["obs_names"],
                  choices=state.get("choices"), model_id=state.get("id"))
    for d in datasets:
        model.check_attached(d)
    return model


def _read_model_file(path) -> dict:
    """The saved state, after checking the archive's integrity, format, version and keys; every
    failure is a ModelFileError that says what the file is and what to do."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model file at {path!r}; give the path model.save() wrote.")
    where = f"the model file {path!r}"
    if os.path.getsize(path) == 0:
        raise ModelFileError(f"{where} is empty (0 bytes): the save was interrupted or the copy "
                             "failed. Save the model again (model.save(path)).")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path!r} is not a scferry model file (no archive written by model.save(): another "
            "kind of file, or a model file cut short by an interrupted copy). Pass a file written "
            "by model.save() (R: ferry_save()), or save the model again.")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # CRC-32 of every member
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        bad = f"an unreadable archive ({e})"
    if bad is not None:
        raise ModelFileError(
            f"{where} is corrupted: the checksum of {bad} does not match what was saved, so the "
            "file changed after saving (a damaged copy, disk or transfer). save the model again, or "
            "copy it again from where it was saved.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for files it cannot read
        raise ModelFileError(
            f"{path!r} is not a scferry model file: it could not be read as one ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]}). Pass a file written by model.save().") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ModelFileError(
            f"{path!r} is not a scferry model file (a torch file of something else). Pass a file "
            "written by model.save() (R: ferry_save()).")
    version = state.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{where} has no valid format version ({version!r}); save the model again.")
    if version > VERSION:
        raise ModelFileError(
            f"{where} was written by a newer scferry (format version {version}; this scferry reads "
            f"format versions up to {VERSION}): upgrade scferry to load it.")
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise ModelFileError(f"{where} lacks {missing}: it is incomplete (edited or assembled by "
                             "hand?). Save the model again from the fitted object.")
    return state


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
