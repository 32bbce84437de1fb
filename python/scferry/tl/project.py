"""New cells through a fitted model: projection into the latent space (``project``) and
imputation of another dataset's features (``impute``)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from .. import ondisk
from ..errors import announce
from ..model import EMBEDDING_KEY, Model
from ._common import IMPUTE_KEY, _check_names

# impute(method="knn")'s default number of neighbours (see impute's docstring)
KNN_IMPUTE_K = 100


def project(model: Model, new_adata: AnnData | str, dataset: str, *, layer: str | None = None,
            progress: bool = False) -> np.ndarray:
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
        says how many and which are missing). Or the path of an on-disk AnnData (``.h5ad`` or
        ``.zarr``, matrix stored by cells): it is read, preprocessed and encoded in chunks of
        cells, never whole, and the embedding is streamed into that store's
        ``obsm/X_scferry`` (with ``uns/scferry``); the store is otherwise unchanged.
    progress
        A progress bar over chunks of cells (path input).
    dataset
        Name of the training dataset whose encoder and preprocessing to use.

    Returns
    -------
    The embedding, cells x latent (float32), also written to ``new_adata.obsm["X_scferry"]``,
    with the model's id in ``new_adata.uns["scferry"]`` (nothing else is touched). A warning
    (:class:`scferry.ScferryWarning`) names cells with no counts in the genes the model reads
    (they all get one embedding) and non-integer values where raw counts are expected.
    """
    _check_names(dataset=dataset)
    if ondisk.is_path(new_adata):
        return ondisk.project(model, new_adata, dataset, layer=layer, progress=progress)
    views = model.transform(new_adata, dataset, layer=layer, what="new_adata")
    z = model.encode(views, dataset)
    new_adata.obsm[EMBEDDING_KEY] = z
    model.record_embedding(new_adata)
    return z


# ---------------------------------------------------------------------------- impute
@torch.no_grad()
def impute(model: Model, adata: AnnData, target: str, *, dataset: str | None = None,
           layer: str | None = None, chunk: int = 4096, method: str = "auto", k: int | None = None) -> AnnData:
    """Predict the genes specific to dataset ``target`` for cells of another dataset, e.g.
    unmeasured genes of a scRNA reference for MERFISH cells (uniPort paper: online prediction),
    or the protein of RNA-only cells with a CITE-seq model.

    The cells are encoded as :func:`project` does (through ``dataset``'s encoder and saved
    preprocessing), then

    - ``method="decoder"``: decoded by ``target``'s specific decoder (uniPort);
    - ``method="knn"``: given the weighted mean measured values (log1p of counts per 10,000) of
      their ``k`` nearest training cells of ``target`` in the joint space, each neighbour weighted
      by a Gaussian kernel of its distance, exp(-d^2 / d_k^2) with d_k the k-th neighbour's
      distance (the kernel width adapts to the local density, as in MAGIC's adaptive kernel,
      van Dijk et al., Cell 2018). This needs no decoder (MinNet and every other model) but the
      training AnnData of ``target`` attached to the model. ``k=None`` (the default):
      ``KNN_IMPUTE_K`` neighbours (at most the training cells): a per-feature prediction is an
      average, and across modalities of sparse counts (RNA from ATAC) a wide neighbourhood
      averages away the neighbours' own sampling noise; with few neighbours (the former 15) the
      prediction carries that noise (bench/multiome/RESULTS.md, "kNN imputation");
    - ``"auto"``: the decoder when the model has one, else kNN (announced).

    To impute given genes, make sure they are in ``target``'s specific set:
    ``scferry.integrate(..., specific_genes={target: [...]})``.

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
    embedding, ``uns["scferry_impute"]`` says ``target``, ``dataset``, ``method`` and the units.
    ``adata`` is not modified.
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
    if method not in ("auto", "decoder", "knn"):
        raise ValueError(f"method must be 'auto', 'decoder' or 'knn'; got {method!r}.")
    if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
        raise ValueError(f"k must be None (the default, {KNN_IMPUTE_K} nearest cells) or a positive "
                         f"integer; got {k!r}.")
    decode = getattr(model.module, "decode_specific", None)
    prep = model.preprocessing
    has_decoder = decode is not None and prep.scaled
    if method == "decoder" and not has_decoder:
        raise ValueError(f"method {model.method!r} has no dataset-specific decoders to impute from; "
                         "use method='knn' (nearest training cells) or a uniPort model.")
    if method == "auto":
        method = "decoder" if has_decoder else "knn"
        if method == "knn":
            announce(f"impute: {model.method!r} has no decoders; each cell gets the kernel-weighted mean of its "
                     f"{KNN_IMPUTE_K if k is None else k} nearest training cells of {target!r} in the joint "
                     "space (method='knn'; pass it to say so).",
                     stacklevel=2)
    genes = model.features(target, "specific")
    if not genes:
        raise ValueError(
            f"dataset {target!r} has no specific genes in this model (n_specific_genes=0 or "
            "preprocess=False); retrain with n_specific_genes > 0 or specific_genes={target: [...]}.")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer; got {chunk!r}.")

    tgt = model.dataset(target, "target") if method == "knn" else None  # attached: checked first
    views = model.transform(adata, dataset, layer=layer, what="adata")
    z = model.encode(views, dataset, latent=method != "knn")  # the decoders read the latent means
    if method == "knn":
        return _impute_knn(model, adata, z, tgt, genes, dataset, k)
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
    result.obsm[EMBEDDING_KEY] = model.embed(z)
    model.record_embedding(result)
    result.uns[IMPUTE_KEY] = {"target": target, "dataset": dataset, "method": "decoder", "units": units}
    return result


def knn_weights(dist: np.ndarray) -> np.ndarray:
    """Row-normalised Gaussian kernel weights of neighbours at distances ``dist`` (cells x k,
    ascending): exp(-d^2 / d_k^2), d_k each row's k-th distance (all equal when it is 0)."""
    dk = dist[:, -1:]
    w = np.exp(-np.square(np.divide(dist, dk, out=np.zeros_like(dist), where=dk > 0)))
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


def _impute_knn(model: Model, adata: AnnData, z: np.ndarray, tgt, genes: list[str], dataset: str,
                k: int | None) -> AnnData:
    """Kernel-weighted mean log1p(counts per 10,000) of each cell's ``k`` nearest training cells
    of ``tgt`` (``knn_weights``)."""
    import scipy.sparse as sp

    from ..neighbors import knn_between
    from ..pp import TARGET_SUM, normalize_log1p
    from ._common import _embedding

    if not isinstance(tgt.adata, AnnData):
        raise ValueError(f"impute(method='knn') reads the measured values of {tgt.name!r}'s training cells: "
                         "pass an in-memory AnnData for it (scferry.load(path, adatas={...})), not a path.")
    src = tgt.adata if tgt.rows is None else tgt.adata[tgt.rows]
    X = src.X if tgt.layer is None else src.layers[tgt.layer]
    values = normalize_log1p(sp.csr_matrix(X, dtype=np.float32))[:, src.var_names.get_indexer(genes)]
    Z = _embedding(model, tgt)
    k = min(KNN_IMPUTE_K if k is None else k, Z.shape[0])
    dist, idx = knn_between(Z, z, k)
    rows = np.repeat(np.arange(len(z)), k)
    W = sp.csr_matrix((knn_weights(np.asarray(dist, np.float64)).ravel(), (rows, idx.ravel())),
                      shape=(len(z), Z.shape[0]))
    out = np.asarray((W @ values).todense(), np.float32)
    result = AnnData(out, obs=adata.obs.copy(), var=pd.DataFrame(index=pd.Index(genes, name=None)))
    result.obsm[EMBEDDING_KEY] = z
    model.record_embedding(result)
    result.uns[IMPUTE_KEY] = {"target": tgt.name, "dataset": dataset, "method": "knn", "k": int(k),
                              "weights": "gaussian kernel exp(-d^2 / d_k^2)",
                              "units": "log1p(counts per %g) of the nearest training cells" % TARGET_SUM}
    return result
