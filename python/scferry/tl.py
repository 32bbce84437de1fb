"""Tools on a fitted model: label transfer, spot deconvolution, projection of new cells into the
trained latent space, and imputation of another dataset's genes.

Every function validates its input before any work and writes only the keys it documents."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

from .data import Dataset, check_obs_column
from .model import EMBEDDING_KEY, Model

LABEL_KEY = "scferry_label"
SCORE_KEY = "scferry_label_score"
PROBS_KEY = "scferry_label_probs"
PROPORTIONS_KEY = "scferry_proportions"
IMPUTE_KEY = "scferry_impute"


# ---------------------------------------------------------------------------- shared helpers
def _label_matrix(labels: pd.Series) -> tuple[sp.csr_matrix, list[str]]:
    classes = sorted(pd.unique(labels.astype(str)))
    codes = pd.Categorical(labels.astype(str), categories=classes).codes
    onehot = sp.csr_matrix((np.ones(len(codes), np.float32), (np.arange(len(codes)), codes)),
                           shape=(len(codes), len(classes)))
    return onehot, classes


def _plan(model: Model, source: str, target: str):
    """The kept global OT plan with ``target`` cells as rows (a ``TopKPlan``), or None."""
    get = getattr(model.module, "plan", None)
    return None if get is None else get(model.index(source), model.index(target))


def _knn_probabilities(X_source, labels, X_target, classes: list[str], k: int) -> np.ndarray:
    from .metrics import knn_label_transfer
    _, probs = knn_label_transfer(X_source, labels.astype(str).to_numpy(), X_target, k=k)
    return probs.reindex(columns=classes, fill_value=0.0).to_numpy(dtype=np.float64)


def _embedding(model: Model, d: Dataset) -> np.ndarray:
    """The dataset's joint embedding: ``obsm["X_scferry"]`` when present (as integrate wrote it),
    else encoded from the attached data (e.g. after ``scferry.load``)."""
    if EMBEDDING_KEY in d.adata.obsm:
        X = np.asarray(d.adata.obsm[EMBEDDING_KEY])
        X = X if d.rows is None else X[d.rows]
        if X.shape[1] == model.params.get("n_latent", X.shape[1]) and np.isfinite(X).all():
            return X
    adata = d.adata if d.rows is None else d.adata[d.rows]
    return model.encode(model.transform(adata, d.name, layer=d.layer, what=f"dataset {d.name!r}"), d.name)


def _class_mass(model: Model, src: Dataset, tgt: Dataset, labels: pd.Series, method: str,
                k: int) -> tuple[pd.DataFrame, int]:
    """Source-label mass per target cell, rows normalised to 1: from the kept global OT plan
    (``method="plan"``/``"auto"``) or a kNN vote on the joint embedding (``"knn"``, and
    ``"auto"`` without a plan). Target cells the plan never reached get the kNN vote. Returns the
    table (target cells x sorted labels) and how many rows the plan did not reach."""
    onehot, classes = _label_matrix(labels)
    probs = None
    if method in ("auto", "plan"):
        plan = _plan(model, src.name, tgt.name)
        if plan is None and method == "plan":
            raise ValueError(
                f"this {model.method!r} model kept no OT plan between {src.name!r} and {tgt.name!r}; "
                "use method='knn', or retrain with keep_plan=True.")
        if plan is not None:
            mass = (plan.to_csr() @ onehot).toarray().astype(np.float64)
            total = mass.sum(axis=1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                probs = np.where(total > 0, mass / total, np.nan)
    unreached = np.ones(tgt.n_obs, bool) if probs is None else np.isnan(probs).any(axis=1)
    if unreached.any():
        # only the unreached rows are queried: a kNN of every target cell is quadratic in cells
        knn = _knn_probabilities(_embedding(model, src), labels, _embedding(model, tgt)[unreached], classes, k)
        if probs is None:
            probs = knn
        else:
            probs[unreached] = knn
    n_unreached = int(unreached.sum()) if method != "knn" else 0
    return pd.DataFrame(probs, index=tgt.obs_names.copy(), columns=classes), n_unreached


def _write_rows(d: Dataset, key: str, values: np.ndarray, where: str = "obsm") -> None:
    """Write per-cell values of dataset ``d`` to ``obs``/``obsm``; with one AnnData + batch_key,
    the other datasets' rows get NaN (missing for categoricals)."""
    adata = d.adata
    if d.rows is not None:
        if isinstance(values, pd.Categorical):
            full = pd.Series(pd.Categorical([None] * adata.n_obs, categories=values.categories),
                             index=adata.obs_names)
            full.iloc[d.rows] = values
            values = full.values
        else:
            full = np.full((adata.n_obs,) + np.shape(values)[1:], np.nan, dtype=np.asarray(values).dtype)
            full[d.rows] = values
            values = full
    if where == "obsm":
        adata.obsm[key] = values
    else:
        adata.obs[key] = values


def _check_names(**names) -> None:
    for role, name in names.items():
        if not isinstance(name, str):
            raise TypeError(f"{role} must be the name of a dataset of the model (a string, as given "
                            f"to scferry.integrate); got {type(name).__name__}.")


def _check_k(k) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}.")


def _labelled_pair(model: Model, source: tuple[str, str], target: tuple[str, str], label_key: str,
                   k) -> tuple[Dataset, Dataset, pd.Series]:
    """The checks transfer_labels and deconvolve share, before anything is computed: two
    different datasets of the model, still as trained, and the source's labels (no NaN).
    ``source``/``target`` are (role, name) pairs; the role names the argument in errors."""
    (s_role, s_name), (t_role, t_name) = source, target
    _check_names(**{s_role: s_name, t_role: t_name})
    if s_name == t_name:
        raise ValueError(f"{s_role} and {t_role} must be different datasets of the model.")
    _check_k(k)
    src, tgt = model.dataset(s_name, s_role), model.dataset(t_name, t_role)
    model.check_attached(src), model.check_attached(tgt)
    return src, tgt, check_obs_column(src, label_key)


# ---------------------------------------------------------------------------- transfer_labels
def transfer_labels(model: Model, source: str, target: str, label_key: str, *,
                    method: str = "auto", k: int = 30) -> pd.DataFrame:
    """Transfer cell labels from dataset ``source`` to dataset ``target`` of a fitted model.

    Parameters
    ----------
    method
        ``"plan"``: class mass of the global OT plan kept during training (uniPort);
        ``"knn"``: distance-weighted kNN vote on the joint embedding (``obsm["X_scferry"]``);
        ``"auto"``: the plan when the model kept one, else kNN. Target cells the plan never
        reached get kNN probabilities.
    k
        Neighbours for the kNN vote.

    Returns
    -------
    DataFrame, target cells x labels (sorted), rows sum to 1. Also writes on the target AnnData:
    ``obs["scferry_label"]`` (categorical, most probable label), ``obs["scferry_label_score"]``
    (its probability), ``obsm["scferry_label_probs"]`` (the probabilities; column order in
    ``uns["scferry_label_probs_columns"]``). With one AnnData + ``batch_key``, rows of other
    datasets get NaN.
    """
    if method not in ("auto", "plan", "knn"):
        raise ValueError(f"method must be 'auto', 'plan' or 'knn'; got {method!r}.")
    src, tgt, labels = _labelled_pair(model, ("source", source), ("target", target), label_key, k)

    df, _ = _class_mass(model, src, tgt, labels, method, k)
    best = df.to_numpy().argmax(axis=1)
    _write_rows(tgt, LABEL_KEY, pd.Categorical(np.asarray(df.columns)[best], categories=list(df.columns)), "obs")
    _write_rows(tgt, SCORE_KEY, df.to_numpy().max(axis=1), "obs")
    _write_rows(tgt, PROBS_KEY, df.to_numpy(np.float32))
    tgt.adata.uns[PROBS_KEY + "_columns"] = list(df.columns)
    return df


# ---------------------------------------------------------------------------- deconvolve
DECONVOLVE_READOUTS = ("type_mean", "mass")
TINY_TYPE = 25  # warn below this many reference cells with readout="type_mean" (RCTD's minimum)


def per_type_mean(mass: pd.DataFrame, labels) -> pd.DataFrame:
    """deconvolve's ``readout="type_mean"`` from its ``"mass"`` table (spots x types): each
    type's mass divided by its number of reference cells (``labels``), rows summed to 1 again."""
    n_cells = pd.Series(labels).astype(str).value_counts().reindex(mass.columns).to_numpy(np.float64)
    mean = mass.to_numpy(np.float64) / n_cells
    return pd.DataFrame(mean / mean.sum(axis=1, keepdims=True), index=mass.index, columns=mass.columns)


def deconvolve(model: Model, reference: str, spots: str, label_key: str, *,
               readout: str = "type_mean", k: int = 30) -> pd.DataFrame:
    """Cell-type proportions of each spot from the global OT plan kept during training (uniPort
    paper, Supplementary Note 2), read out from ``m[s, c]``, the plan mass spot ``s`` receives from
    the reference cells labelled ``c``.

    Parameters
    ----------
    reference
        Name of the labelled single-cell dataset of the model.
    spots
        Name of the spot dataset of the model (spatial transcriptomics, or any mixtures).
    label_key
        Column of the reference's ``obs`` with the cell types (no missing values, at least two types).
    readout
        How plan mass becomes proportions (rows always sum to 1):

        - ``"type_mean"``: ``m[s, c] / n_c``, then divided by the row's sum, where ``n_c`` is the
          number of reference cells of type ``c``: the mean mass per cell of the type, as
          ``mapCluster(balance=F)`` of uniPort's R spot tutorial. The plan spreads each spot's
          mass over reference cells, so a type with many reference cells collects mass in
          proportion to its size; dividing by ``n_c`` removes that bias towards the types that
          dominate the reference (on PDAC pseudo-spots with a reference 75% Ductal it gives
          higher r and lower RMSE than ``"mass"``: bench/README.md).
        - ``"mass"``: ``m[s, c]`` divided by the row's sum (all the mass the spot receives), the
          plan's class mass as :func:`transfer_labels` with ``method="plan"`` reads it.

        With the same number of reference cells in every type both give the same values. The
        division also multiplies the mass of a type with only a handful of reference cells
        by a large factor, noise included (on the real PDAC-A spots a type of 3 reference cells
        goes from 0.4% to 7% of the mean proportion, RBCs of 15 cells become the most abundant
        type of 62-82 of 428 spots where NNLS finds none): a warning names the types with fewer
        than 25 reference cells (and under half the largest type's); drop them from the
        reference, or use ``"mass"``. Spots the plan never reached get the kNN vote, divided by ``n_c`` too
        with ``"type_mean"``. For deconvolution, train with ``sf.integrate(...,
        plan_eps=0.1)``: a more diffuse kept plan, measured better on pseudo-spots (uniPort
        module docstring).
    k
        Neighbours of the kNN vote given to spots the plan never reached (a warning says how many;
        none after a normal training run, which visits every spot).

    Returns
    -------
    DataFrame, spots x cell types (sorted), rows sum to 1. Also writes on the spots' AnnData
    ``obsm["scferry_proportions"]`` (float32, the same values) and
    ``uns["scferry_proportions_columns"]`` (the cell types, column order); with one AnnData +
    ``batch_key``, rows of other datasets get NaN. Nothing else is touched.
    """
    if not isinstance(readout, str) or readout not in DECONVOLVE_READOUTS:
        raise ValueError(f"readout must be one of {', '.join(map(repr, DECONVOLVE_READOUTS))}; got {readout!r}.")
    ref, spt, labels = _labelled_pair(model, ("reference", reference), ("spots", spots), label_key, k)
    types = pd.unique(labels.astype(str))
    if len(types) < 2:
        raise ValueError(
            f"the reference {reference!r} has a single cell type in {label_key!r} ({types[0]!r}): "
            "proportions would all be 1. Deconvolution needs a reference annotated with at least "
            "two cell types; check label_key.")
    if _plan(model, reference, spots) is None:
        raise ValueError(
            f"this {model.method!r} model has no OT plan between {reference!r} and {spots!r} "
            "(trained with keep_plan=False, in uniPort's vertical mode, whose plan is the known "
            "pairing, with a method that keeps none, or a saved model without one). Retrain with scferry.integrate(..., method='uniport', keep_plan=True); for a "
            "kNN estimate use scferry.transfer_labels(..., method='knn').")

    df, n_unreached = _class_mass(model, ref, spt, labels, "plan", k)
    if n_unreached:
        warnings.warn(f"the OT plan never reached {n_unreached} of {spt.n_obs} spots of {spots!r} "
                      "(too few training steps?); their proportions are a kNN vote on the embedding.",
                      stacklevel=2)
    if readout == "type_mean":
        counts = pd.Series(labels).astype(str).value_counts()
        # only where the division amplifies them: a balanced reference reads out as "mass"
        tiny = counts[(counts < TINY_TYPE) & (counts.max() >= 2 * counts)]
        if len(tiny):
            warnings.warn(
                f"readout='type_mean' multiplies the plan mass of small reference types by large "
                f"factors, noise included: {', '.join(f'{t} ({n} cells)' for t, n in tiny.items())} "
                f"have fewer than {TINY_TYPE} cells. Drop them from the reference, or use "
                "readout='mass'.", stacklevel=2)
        df = per_type_mean(df, labels)
    _write_rows(spt, PROPORTIONS_KEY, df.to_numpy(np.float32))
    spt.adata.uns[PROPORTIONS_KEY + "_columns"] = list(df.columns)
    return df


# ---------------------------------------------------------------------------- project
def project(model: Model, new_adata: AnnData, dataset: str, *, layer: str | None = None) -> np.ndarray:
    """Map new cells into the trained latent space without retraining (online mapping to a
    reference atlas), through the encoder of training dataset ``dataset``: the one the new cells
    match (same technology/modality, same gene identifiers).

    The new cells are preprocessed with ``dataset``'s saved parameters: its genes, library-size
    normalisation (over all genes of ``new_adata``: give the same gene panel as the training data),
    log1p and scale factors (values above the training maximum are clipped).

    Parameters
    ----------
    new_adata
        Raw counts in ``.X`` (or ``layer``); it must hold every gene the encoder reads (an error
        says how many and which are missing).
    dataset
        Name of the training dataset whose encoder and preprocessing to use.

    Returns
    -------
    The embedding, cells x latent (float32), also written to ``new_adata.obsm["X_scferry"]``
    (nothing else is touched).
    """
    _check_names(dataset=dataset)
    views = model.transform(new_adata, dataset, layer=layer, what="new_adata")
    z = model.encode(views, dataset)
    new_adata.obsm[EMBEDDING_KEY] = z
    return z


# ---------------------------------------------------------------------------- impute
@torch.no_grad()
def impute(model: Model, adata: AnnData, target: str, *, dataset: str | None = None,
           layer: str | None = None, chunk: int = 4096) -> AnnData:
    """Predict the genes specific to dataset ``target`` (its dataset-specific decoder) for cells
    of another dataset, e.g. unmeasured genes of a scRNA reference for MERFISH cells (uniPort
    paper: online prediction).

    The cells are encoded as :func:`project` does (through ``dataset``'s encoder and saved
    preprocessing), then decoded by ``target``'s specific decoder. To impute given genes, make
    sure they are in ``target``'s specific set: ``scferry.integrate(...,
    specific_genes={target: [...]})``.

    Parameters
    ----------
    adata
        Raw counts in ``.X`` (or ``layer``) of cells of the kind of training dataset ``dataset``
        (e.g. the training object itself, or new cells).
    target
        Name of the training dataset whose specific genes to predict.
    dataset
        Name of the training dataset ``adata`` matches; with a two-dataset model, defaults to the
        one that is not ``target``.

    Returns
    -------
    A new AnnData, cells x ``target``'s specific genes (dense float32), in ``target``'s
    log-normalised units (log1p of counts per 10,000 when the model normalised; the MaxAbs
    scaling is undone). ``obs`` is a copy of ``adata.obs``, ``obsm["X_scferry"]`` the cells'
    embedding, ``uns["scferry_impute"]`` says ``target``, ``dataset`` and the units. ``adata`` is
    not modified.
    """
    _check_names(target=target)
    if target not in model.dataset_names:
        raise ValueError(f"target {target!r} is not a dataset of this model; datasets: {model.dataset_names}.")
    if dataset is None:
        others = [n for n in model.dataset_names if n != target]
        if len(others) != 1:
            raise ValueError(f"the model has {len(model.dataset_names)} datasets; say which one the "
                             f"cells of adata match: dataset= one of {model.dataset_names}.")
        dataset = others[0]
    _check_names(dataset=dataset)
    decode = getattr(model.module, "decode_specific", None)
    prep = model.preprocessing
    if decode is None or not prep.scaled:
        raise ValueError(f"method {model.method!r} has no dataset-specific decoders to impute from; "
                         "use method='uniport'.")
    genes = model.features(target, "specific")
    if not genes:
        raise ValueError(
            f"dataset {target!r} has no specific genes in this model (n_specific_genes=0 or "
            "preprocess=False); retrain with n_specific_genes > 0 or specific_genes={target: [...]}.")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer; got {chunk!r}.")

    views = model.transform(adata, dataset, layer=layer, what="adata")
    z = model.encode(views, dataset)
    t, dev = model.index(target), model.device
    scale = prep.specific_scale[target]
    inv = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale > 0).astype(np.float32)
    model.module.eval()
    out = np.empty((len(z), len(genes)), np.float32)
    for start in range(0, len(z), chunk):
        zc = torch.from_numpy(z[start:start + chunk]).to(dev)
        out[start:start + chunk] = torch.sigmoid(decode(zc, t)).cpu().numpy() * inv
    units = "log1p(counts per %g)" % prep.target_sum if prep.normalize else "as given to integrate"
    result = AnnData(out, obs=adata.obs.copy(), var=pd.DataFrame(index=pd.Index(genes, name=None)))
    result.obsm[EMBEDDING_KEY] = z
    result.uns[IMPUTE_KEY] = {"target": target, "dataset": dataset, "units": units}
    return result
from .links import knn_smooth, mini_bulk, peak_gene_links  # noqa: E402,F401
