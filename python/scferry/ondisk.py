"""Datasets that stay on disk: AnnData stores given as paths (``.h5ad`` or ``.zarr``).

``scferry.integrate({"rna": "rna.h5ad", "st": "st.zarr"}, ...)`` never loads such a store whole:

- :func:`open_dataset` opens the store read-only and reads only ``obs``, ``var`` and the row
  pointers of ``X`` (or of ``layers[layer]``); the matrix stays on disk.
- :func:`fit_transform` computes the preprocessing statistics in one pass over row chunks
  (:func:`gene_stats`: per-gene sums for the highly variable genes, per-gene maxima for the MaxAbs
  scaling, the per-cell totals and the value checks) and returns lazy model inputs
  (:class:`LazyView`): each minibatch reads its rows from disk (sorted, neighbouring rows merged
  into one read) and transforms them exactly as the in-memory path does.
- :func:`write_embedding` streams the embedding into the store, chunk by chunk of cells.

Where the outputs of an on-disk dataset go: ``obsm/X_scferry`` and ``uns/scferry`` are written
into the store itself (the only change made to it; the store is opened for writing once the
model is trained), and the same embedding is kept on ``model.adatas[name]`` (an AnnData that
holds ``obs`` and ``var`` but no matrix). See docs/inputs_outputs.md.

The in-memory path (:func:`scferry.pp.fit_transform`) runs the same pass over chunks of the
user's matrix and then builds each model input once (:func:`materialize`), so that
preprocessing never copies the whole counts matrix.

The highly variable genes follow scanpy's ``flavor="seurat"`` (Satija et al., Nat. Biotechnol.
2015: per-gene dispersion of the normalised counts, z-scored within 20 bins of mean expression;
with several datasets, genes ranked by the number of datasets in which they are variable, then by
the mean normalised dispersion), computed here from chunked sums in float64.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .data import Dataset, take_rows

SUFFIXES = (".h5ad", ".zarr")
CHUNK = 20_000  # cells per read of the statistics pass and of the embedding write
MERGE_GAP = 4096  # stored entries between two wanted rows below which one read spans both
ON_DISK_METHODS = ("uniport", "davae")  # methods whose training reads only minibatches


def is_path(x) -> bool:
    return isinstance(x, (str, os.PathLike))


# ---------------------------------------------------------------------------- the store
class Store:
    """One on-disk AnnData, opened read-only: ``obs``, ``var`` and the row pointers in memory,
    the matrix ``X`` (or ``layers[layer]``) read by rows on demand. ``reader="runs"`` (default)
    reads sorted rows as a few contiguous slices of the stored arrays; ``reader="anndata"`` uses
    anndata's backed sparse dataset (``anndata.io.sparse_dataset``) for the same rows."""

    def __init__(self, path: str | os.PathLike, layer: str | None = None, role: str = "dataset",
                 reader: str = "runs"):
        import anndata.io as aio
        p = Path(os.fspath(path)).expanduser()
        self.path, self.layer, self.role, self.reader = p, layer, role, reader
        suffix = p.suffix.lower()
        if suffix not in SUFFIXES:
            raise ValueError(
                f"{role} is given as the path {os.fspath(path)!r}, which is neither an .h5ad file nor a "
                ".zarr store. Pass an AnnData object, or save it first: adata.write_h5ad('x.h5ad') "
                "(or adata.write_zarr('x.zarr')) and pass that path.")
        if not p.exists():
            raise FileNotFoundError(f"{role}: no such file or store {str(p)!r}; check the path.")
        self.kind = suffix[1:]
        self.file = self.group = self._backed = None
        self._open("r")
        g = self.group
        missing = [k for k in ("obs", "var") if k not in g]
        if missing:
            raise ValueError(f"{role}: {str(p)!r} is not an AnnData store (no {missing}); write it "
                             "with anndata (adata.write_h5ad / adata.write_zarr).")
        try:
            self.obs, self.var = aio.read_elem(g["obs"]), aio.read_elem(g["var"])
        except Exception as e:  # noqa: BLE001 - any decoding failure is the same user error
            raise ValueError(f"{role}: cannot read obs/var of {str(p)!r} ({type(e).__name__}: {e}); "
                             "is it an AnnData store written by anndata >= 0.8?") from None
        if layer is None:
            if "X" not in g:
                raise ValueError(f"{role}: {str(p)!r} has no X; pass layer= the counts layer.")
            elem, self.where = g["X"], "X"
        else:
            layers = g["layers"] if "layers" in g else {}
            if layer not in layers:
                raise KeyError(f"{role} ({str(p)!r}) has no layer {layer!r}; available layers: "
                               f"{list(layers.keys())}.")
            elem, self.where = layers[layer], f"layers/{layer}"
        enc = elem.attrs.get("encoding-type", "array" if not hasattr(elem, "keys") else None)
        if enc == "csc_matrix":
            raise ValueError(
                f"{role}: {self.where} of {str(p)!r} is stored as CSC (by genes), so cells cannot be "
                "read in chunks. Rewrite it by cells: adata = anndata.read_h5ad(path); adata.X = "
                "adata.X.tocsr(); adata.write_h5ad(path) (once, on a machine that holds it).")
        if enc not in ("csr_matrix", "array"):
            raise ValueError(f"{role}: {self.where} of {str(p)!r} has encoding {enc!r}; scferry reads a "
                             "CSR sparse matrix or a dense array.")
        self.sparse = enc == "csr_matrix"
        self.shape = (len(self.obs), len(self.var))
        if self.sparse:
            self.indptr = np.asarray(elem["indptr"][:], dtype=np.int64)
            stored = tuple(int(x) for x in elem.attrs["shape"])
            if stored != self.shape or len(self.indptr) != self.shape[0] + 1:
                raise ValueError(f"{role}: {self.where} of {str(p)!r} has shape {stored}, but obs/var "
                                 f"describe {self.shape}; the store is damaged.")
        elif tuple(elem.shape) != self.shape:
            raise ValueError(f"{role}: {self.where} of {str(p)!r} has shape {tuple(elem.shape)}, but "
                             f"obs/var describe {self.shape}; the store is damaged.")
        self._bind()

    # -- file handles
    def _open(self, mode: str) -> None:
        p = self.path
        try:
            if self.kind == "h5ad":
                import h5py
                # no chunk cache: a minibatch row would otherwise pull its whole HDF5 chunk
                # (anndata writes resizable, chunked arrays) into the cache for a few bytes
                self.file = h5py.File(p, mode, rdcc_nbytes=0)
                self.group = self.file
            else:
                import zarr
                self.file = None
                self.group = zarr.open_group(str(p), mode=mode)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{self.role}: cannot open {str(p)!r} as {'HDF5 (.h5ad)' if self.kind == 'h5ad' else 'zarr'} "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); is the file complete "
                             "and of that format?") from None

    def _bind(self) -> None:
        elem = self.group[self.where]
        self.elem = elem
        if self.sparse:
            self.data, self.indices = elem["data"], elem["indices"]
            if self.reader == "anndata":
                import anndata.io as aio
                self._backed = aio.sparse_dataset(elem)

    def _ensure(self) -> None:
        """Open read-only on first use after :meth:`close` (handles are closed between calls of
        the API, so that results can be written into the store and other readers are not held)."""
        if self.group is None:
            self._open("r")
            self._bind()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        self.file = self.group = self.elem = self.data = self.indices = self._backed = None

    # -- reading
    def read_range(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start:stop`` as CSR float32 (one contiguous read)."""
        self._ensure()
        if not self.sparse:
            return _csr32(np.asarray(self.elem[start:stop]))
        a, b = self.indptr[start], self.indptr[stop]
        ptr = self.indptr[start:stop + 1] - a
        X = sp.csr_matrix((np.asarray(self.data[a:b], dtype=np.float32), np.asarray(self.indices[a:b]), ptr),
                          shape=(stop - start, self.shape[1]))
        X.sum_duplicates()
        return X

    def read_rows(self, rows: np.ndarray) -> sp.csr_matrix:
        """Rows ``rows`` (sorted, unique positions) as CSR float32."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
            return self.read_range(int(rows[0]), int(rows[-1]) + 1)
        self._ensure()
        if not self.sparse:
            if self.kind == "h5ad":
                return _csr32(np.asarray(self.elem[rows]))
            return _csr32(np.asarray(self.elem.get_orthogonal_selection((rows, slice(None)))))
        if self.reader == "anndata":
            X = sp.csr_matrix(self._backed[rows], dtype=np.float32)
            X.sum_duplicates()
            return X
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        # runs: a new read where the gap to the previous wanted row exceeds MERGE_GAP entries
        new = np.r_[True, starts[1:] - ends[:-1] > MERGE_GAP]
        run = np.cumsum(new) - 1
        r_start = starts[new]
        r_end = np.maximum.reduceat(ends, np.flatnonzero(new))
        if self.kind == "h5ad":  # one HDF5 read per array: the union of the runs
            data, ind = _read_slices(self.data, r_start, r_end), _read_slices(self.indices, r_start, r_end)
        else:
            data = [np.asarray(self.data[a:b]) for a, b in zip(r_start, r_end)]
            ind = [np.asarray(self.indices[a:b]) for a, b in zip(r_start, r_end)]
            data = np.concatenate(data) if data else np.empty(0, np.float32)
            ind = np.concatenate(ind) if ind else np.empty(0, np.int32)
        offset = np.r_[0, np.cumsum(r_end - r_start)[:-1]]
        first = starts - r_start[run] + offset[run]  # each row's start in the concatenated buffer
        ptr = np.r_[0, np.cumsum(lengths)]
        take = np.repeat(first - ptr[:-1], lengths) + np.arange(ptr[-1])
        X = sp.csr_matrix((data[take].astype(np.float32, copy=False), ind[take], ptr),
                          shape=(len(rows), self.shape[1]))
        X.sum_duplicates()
        return X


def _read_slices(dset, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``concatenate([dset[a:b] for a, b in zip(starts, ends)])`` (sorted, disjoint slices of a
    1-d h5py dataset) in one HDF5 read, through a union of hyperslabs."""
    import h5py
    total = int((ends - starts).sum())
    out = np.empty(total, dset.dtype)
    if total == 0:
        return out
    space = dset.id.get_space()
    space.select_none()
    for a, b in zip(starts.tolist(), ends.tolist()):
        if b > a:
            space.select_hyperslab((a,), (b - a,), op=h5py.h5s.SELECT_OR)
    dset.id.read(h5py.h5s.create_simple((total,)), space, out)
    return out


def _csr32(A: np.ndarray) -> sp.csr_matrix:
    return sp.csr_matrix(np.asarray(A, dtype=np.float32))


class DiskDataset(Dataset):
    """A dataset whose matrix stays in a :class:`Store`; ``adata`` holds ``obs`` and ``var`` only
    (and, after integrate, the embedding in ``obsm``)."""

    store: Store

    def counts(self) -> sp.csr_matrix:
        raise ValueError(
            f"dataset {self.name!r} is on disk ({self.store.path}); this step needs its whole matrix "
            "in memory. Methods that train from disk: " + ", ".join(ON_DISK_METHODS) + " (uniPort's "
            "diagonal mode with gw_prior=False). Otherwise load it: anndata.read_h5ad(path).")

    def read_rows(self, local: np.ndarray) -> sp.csr_matrix:
        rows = local if self.rows is None else self.rows[local]
        return self.store.read_rows(rows)


def open_dataset(name: str, path, layer: str | None = None, role: str | None = None,
                 reader: str = "runs") -> DiskDataset:
    store = Store(path, layer=layer, role=role or f"dataset {name!r}", reader=reader)
    d = DiskDataset(name, AnnData(obs=store.obs, var=store.var), None, None)
    d.store = store
    return d


def open_split(path, batch_key: str, layer: str | None = None) -> list[DiskDataset]:
    """One store whose ``obs[batch_key]`` names the datasets (rows stay on disk)."""
    from .data import _split_by_batch
    base = open_dataset("the input", path, layer)
    out = []
    for d in _split_by_batch(base.adata, batch_key, None):
        dd = DiskDataset(d.name, base.adata, d.rows, None)
        dd.store = base.store
        out.append(dd)
    return out


def is_on_disk(d: Dataset) -> bool:
    return isinstance(d, DiskDataset)


# ---------------------------------------------------------------------------- rows of any dataset
def row_chunks(d: Dataset, chunk: int | None = None) -> Iterator[sp.csr_matrix]:
    """The dataset's rows in order, as CSR float32 chunks (copies of ``chunk`` rows at a time;
    default :data:`CHUNK`)."""
    chunk = chunk or CHUNK
    for start in range(0, d.n_obs, chunk):
        stop = min(start + chunk, d.n_obs)
        yield read_rows(d, np.arange(start, stop))


def read_rows(d: Dataset, local: np.ndarray) -> sp.csr_matrix:
    """Rows ``local`` (sorted positions within the dataset) as CSR float32."""
    if isinstance(d, DiskDataset):
        return d.read_rows(local)
    X = d.adata.X if d.layer is None else d.adata.layers[d.layer]
    rows = local if d.rows is None else d.rows[local]
    part = take_rows(X, rows) if len(rows) else X[rows]
    if sp.issparse(part):
        part = sp.csr_matrix(part, dtype=np.float32, copy=True)
    else:
        part = _csr32(part)
    part.sum_duplicates()
    return part


# ---------------------------------------------------------------------------- chunked statistics
class GeneStats:
    """Per-gene sums over one dataset's cells, accumulated chunk by chunk (float64)."""

    def __init__(self, n_genes: int):
        self.n = 0
        self.sum_norm = np.zeros(n_genes)   # sum of expm1(log values): normalised counts
        self.sq_norm = np.zeros(n_genes)    # their squares
        self.n_cells = np.zeros(n_genes, np.int64)  # cells with a value > 0
        self.sum_log = np.zeros(n_genes)    # sum of the model-input values (before scaling)
        self.max_abs = np.zeros(n_genes, np.float32)

    def add(self, X: sp.csr_matrix) -> None:
        g = X.shape[1]
        self.n += X.shape[0]
        idx, v = X.indices, X.data
        e = np.expm1(v)  # float32, as scanpy's seurat flavour
        self.sum_norm += np.bincount(idx, weights=e, minlength=g)
        self.sq_norm += np.bincount(idx, weights=e.astype(np.float64) ** 2, minlength=g)
        self.n_cells += np.bincount(idx[v > 0], minlength=g)
        self.sum_log += np.bincount(idx, weights=v, minlength=g)
        if len(v):
            m = np.zeros(g, np.float32)
            np.maximum.at(m, idx, np.abs(v))
            np.maximum(self.max_abs, m, out=self.max_abs)

    def mean_var(self, genes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and unbiased variance of the normalised counts (as scanpy's ``_get_mean_var``)."""
        mean = self.sum_norm[genes] / self.n
        var = self.sq_norm[genes] / self.n - mean ** 2
        if self.n > 1:
            var *= self.n / (self.n - 1)
        return mean, var


def gene_stats(d: Dataset, normalize: bool, target_sum: float, chunk: int | None = None,
               progress: bool = False) -> GeneStats:
    """One pass over the dataset's rows: the value checks of the in-memory path (finite,
    non-negative, no empty cell when normalising; a warning for non-integer counts in the first
    5,000 cells), then the statistics of the model inputs (log-normalised when ``normalize``)."""
    from tqdm.auto import tqdm
    from .data import check_values, warn_if_not_counts
    from .pp import normalize_log1p
    what = f"dataset {d.name!r}"
    stats = GeneStats(d.adata.n_vars)
    empty, seen = 0, 0
    bar = tqdm(total=d.n_obs, desc=f"statistics {d.name}", disable=not progress, leave=False, unit="cells")
    for X in row_chunks(d, chunk):
        if isinstance(d, DiskDataset):  # in memory: checked by collect_datasets already
            check_values(X, what + f" (cells {seen}-{seen + X.shape[0] - 1})")
        if normalize and seen < 5000 and isinstance(d, DiskDataset):  # in memory: integrate warns
            warn_if_not_counts(X[:5000 - seen], what, d.layer, stacklevel=6)
        if normalize:
            empty += int((np.asarray(X.sum(axis=1)).ravel() == 0).sum())
            X = normalize_log1p(X, target_sum)
        stats.add(X)
        seen += X.shape[0]
        bar.update(X.shape[0])
    bar.close()
    if empty:
        raise ValueError(
            f"{what} has {empty} cells with zero counts, which cannot be normalised. Filter them "
            "first: sc.pp.filter_cells(adata, min_counts=1).")
    return stats


def _seurat_single(mean: np.ndarray, var: np.ndarray, n_top: int, n_bins: int = 20) -> pd.DataFrame:
    """scanpy's seurat flavour for one batch, from the genes' mean and variance."""
    mean = mean.copy()
    mean[mean == 0] = 1e-12
    disp = var / mean
    disp[disp == 0] = np.nan
    disp = np.log(disp)
    mean = np.log1p(mean)
    df = pd.DataFrame({"means": mean, "dispersions": disp})
    df["mean_bin"] = pd.cut(df["means"], bins=n_bins)
    stats = df.groupby("mean_bin", observed=True)["dispersions"].agg(avg="mean", dev="std")
    single = stats["dev"].isnull()  # a bin with one gene: normalised dispersion 1
    stats.loc[single, "dev"] = stats.loc[single, "avg"]
    stats.loc[single, "avg"] = 0
    stats = stats.loc[df["mean_bin"]].set_index(df.index)
    norm = ((df["dispersions"] - stats["avg"]) / stats["dev"]).to_numpy()
    finite = norm[~np.isnan(norm)]
    n = min(n_top, len(norm), finite.size)
    cut = np.sort(finite)[::-1][n - 1] if n else np.inf
    df["dispersions_norm"] = norm
    df["highly_variable"] = np.nan_to_num(norm, nan=-np.inf) >= cut
    return df


def highly_variable(stats: list[GeneStats], gene_idx: list[np.ndarray], genes: pd.Index, n_top: int,
                    batches: list[str] | None = None) -> pd.Index:
    """Top ``n_top`` genes of ``genes`` (positions ``gene_idx[b]`` in each batch's statistics), as
    :func:`scferry.pp.highly_variable` selects them from the whole matrix, in input order."""
    if n_top >= len(genes):
        return genes
    if batches is None:
        df = _seurat_single(*stats[0].mean_var(gene_idx[0]), n_top)
        return genes[df["highly_variable"].to_numpy()]
    parts = []
    for b in sorted(range(len(batches)), key=lambda i: batches[i]):  # categories' (sorted) order
        expressed = stats[b].n_cells[gene_idx[b]] > 0
        mean, var = stats[b].mean_var(gene_idx[b][expressed])
        df = _seurat_single(mean, var, min(n_top, int(expressed.sum())))
        df.index = genes[expressed]
        rest = pd.DataFrame(0.0, index=genes[~expressed], columns=["means", "dispersions", "dispersions_norm"])
        rest["highly_variable"] = False
        parts.append(pd.concat([df[["means", "dispersions", "dispersions_norm", "highly_variable"]], rest]))
    df = pd.concat(parts)
    df["highly_variable"] = df["highly_variable"].astype(int)
    df = df.groupby(df.index, observed=True).agg(
        dict(means="mean", dispersions="mean", dispersions_norm="mean", highly_variable="sum"))
    df = df.sort_values(["highly_variable", "dispersions_norm"], ascending=False, na_position="last")
    chosen = set(df.index[:n_top])
    return genes[np.fromiter((g in chosen for g in genes), bool, len(genes))]


# ---------------------------------------------------------------------------- lazy model inputs
class LazyView:
    """A model input (cells x genes) that is never held whole: ``view[rows]`` reads those rows
    (from disk or from the in-memory matrix), normalises, selects and scales them exactly as
    :meth:`scferry.pp.Preprocessing.transform` does, and returns CSR float32. ``mean(axis=0)``
    comes from the statistics pass."""

    def __init__(self, d: Dataset, genes: np.ndarray, scale: np.ndarray, normalize: bool,
                 target_sum: float, col_mean: np.ndarray, sort: bool = False):
        self.d, self.genes, self.scale, self.sort = d, genes, scale.astype(np.float32), sort
        self.normalize, self.target_sum, self.col_mean = normalize, target_sum, col_mean
        self.shape = (d.n_obs, len(genes))
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, rows) -> sp.csr_matrix:
        from .pp import normalize_log1p, scale_columns
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(self.shape[0]))
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        uniq, inverse = np.unique(rows[order], return_inverse=True)
        X = read_rows(self.d, uniq)
        if self.normalize:
            X = normalize_log1p(X, self.target_sum)
        X = X[:, self.genes]
        if self.sort:  # as the in-memory path always did when scaling (scipy's abs() sorts in place)
            X.sort_indices()
        X = scale_columns(X, self.scale)
        back = np.empty(len(rows), np.int64)
        back[order] = inverse
        return X if len(uniq) == len(rows) and np.all(order == np.arange(len(rows))) else X[back]

    def mean(self, axis=None):
        if axis != 0:
            raise ValueError("a LazyView only has column means (axis=0).")
        return self.col_mean[None, :]


def fit_transform(datasets: list[Dataset], *, n_common: int, n_specific: int | dict[str, int],
                  normalize: bool = True,
                  scale: bool = True, extra_specific: dict[str, list[str]] | None = None,
                  progress: bool = False, chunk: int | None = None, materialized: bool = False,
                  selection: dict[str, str] | None = None):
    """:func:`scferry.pp.fit_transform` in one chunked pass per dataset: the same
    :class:`~scferry.pp.Preprocessing`, with :class:`LazyView` model inputs instead of matrices.
    ``n_common``/``n_specific`` may be ``math.inf`` (all genes) as there; ``n_specific`` may also be
    a dict, dataset name -> number (each dataset its own). ``materialized=True``:
    each model input built as one CSR matrix (:func:`materialize`), the in-memory path's."""
    from .data import shared_features
    from .pp import Preprocessing, TARGET_SUM, top_open
    common = shared_features(datasets) if n_common > 0 else datasets[0].var_names[:0]
    stats = {d.name: gene_stats(d, normalize, TARGET_SUM, chunk, progress) for d in datasets}
    if n_common > 0:
        idx = [d.var_names.get_indexer(common) for d in datasets]
        common_hv = highly_variable([stats[d.name] for d in datasets], idx, common, n_common,
                                    [d.name for d in datasets])
    else:
        common_hv = common
    prep = Preprocessing(list(common_hv), normalize=normalize, scaled=scale)
    views = {}
    for d in datasets:
        s = stats[d.name]
        n_spec = n_specific[d.name] if isinstance(n_specific, dict) else n_specific
        if n_spec <= 0:
            spec = d.var_names[:0]
        elif (selection or {}).get(d.name, "variable") == "open":
            spec = top_open(s.n_cells, d.var_names, n_spec)
        else:
            spec = highly_variable([s], [np.arange(d.adata.n_vars)], d.var_names, n_spec)
        if extra_specific and extra_specific.get(d.name):
            spec = d.var_names[d.var_names.isin(spec) | d.var_names.isin(extra_specific[d.name])]
        prep.specific_genes[d.name] = list(spec)
        views[d.name] = {}
        for key, genes in (("common", common_hv), ("specific", spec)):
            gi = d.var_names.get_indexer(genes)
            m = s.max_abs[gi]
            sc = (np.divide(1.0, m, out=np.zeros_like(m), where=m > 0) if scale
                  else np.ones(len(gi), np.float32)).astype(np.float32)
            (prep.common_scale if key == "common" else prep.specific_scale)[d.name] = sc
            if key == "specific" or n_common > 0:
                view = LazyView(d, gi, sc, normalize, TARGET_SUM, s.sum_log[gi] * sc / max(s.n, 1), sort=scale)
                views[d.name][key] = materialize(view, expected_nnz(view, s), chunk) if materialized else view
    return prep, views


def check_method(cls, data: list[Dataset]) -> None:
    on_disk = [d.name for d in data if isinstance(d, DiskDataset)]
    if on_disk and cls.name not in ON_DISK_METHODS:
        raise ValueError(
            f"method {cls.name!r} needs its datasets in memory, but {on_disk} are given as paths. "
            f"Methods that train from disk: {list(ON_DISK_METHODS)}; or load the data: "
            "anndata.read_h5ad(path).")


# ---------------------------------------------------------------------------- writing results
def write_obsm(d: DiskDataset, key: str, chunks: Iterator[tuple[np.ndarray, np.ndarray]], width: int,
               record: dict | None = None) -> None:
    """Write ``obsm[key]`` (float32, cells x ``width``) into the store of ``d`` from
    ``(positions within d, values)`` chunks; rows of other datasets of a shared store are NaN.
    Records ``uns/scferry`` when ``record`` is given."""
    import anndata.io as aio
    store = d.store
    store.close()
    try:
        store._open("r+")
        store._bind()
    except ValueError as e:
        raise ValueError(f"{e} Writing obsm[{key!r}] into {str(store.path)!r} needs it open for writing: "
                         "close other handles of this file first (an AnnData read with backed='r', "
                         "h5py/zarr handles), then rerun.") from None
    try:
        g = store.group
        if "obsm" not in g:
            obsm = g.create_group("obsm")
            obsm.attrs["encoding-type"], obsm.attrs["encoding-version"] = "dict", "0.1.0"
        obsm = g["obsm"]
        n = store.shape[0]
        shape, chunks_shape = (n, width), (min(n, 65536), width)
        if key in obsm and (tuple(obsm[key].shape) != shape or obsm[key].dtype != np.float32):
            del obsm[key]
        if key not in obsm:
            if store.kind == "h5ad":
                arr = obsm.create_dataset(key, shape=shape, dtype=np.float32, chunks=chunks_shape,
                                          fillvalue=np.nan)
            else:
                arr = obsm.create_dataset(key, shape=shape, dtype=np.float32, chunks=chunks_shape,
                                          fill_value=np.nan)
            arr.attrs["encoding-type"], arr.attrs["encoding-version"] = "array", "0.2.0"
        arr = obsm[key]
        for local, values in chunks:
            rows = local if d.rows is None else d.rows[local]
            if not len(rows):
                continue
            lo, hi = int(rows.min()), int(rows.max()) + 1
            if hi - lo == len(rows) and np.all(np.diff(rows) == 1):
                arr[lo:hi] = values
            else:  # rows of one dataset of a shared store: rewrite the block that spans them
                block = np.asarray(arr[lo:hi])
                block[rows - lo] = values
                arr[lo:hi] = block
        if record is not None:
            if "uns" not in g:
                uns = g.create_group("uns")
                uns.attrs["encoding-type"], uns.attrs["encoding-version"] = "dict", "0.1.0"
            aio.write_elem(g["uns"], "scferry", record)
    finally:
        store.close()


def encode_chunks(model, views: dict, name: str, chunk: int | None = None,
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    n, chunk = next(iter(views.values())).shape[0], chunk or CHUNK
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        yield rows, model.encode({k: _Slice(v, rows) for k, v in views.items()}, name, chunk=chunk)


class _Slice:
    """Rows of a view seen as a matrix of their own (for Model.encode)."""

    def __init__(self, view, rows):
        self.view, self.rows = view, rows
        self.shape = (len(rows), view.shape[1])

    def __getitem__(self, sl):
        return self.view[self.rows[sl]]


def write_embedding(model, views: list[dict], names: list[str], key: str) -> None:
    """Encode every dataset chunk by chunk: on-disk datasets get ``obsm[key]`` streamed into
    their store (and recorded in ``uns/scferry``); the embedding is also kept in memory on each
    dataset's AnnData, as for in-memory datasets."""
    embeddings = {}
    for d, v in zip(model.datasets, views):
        if isinstance(d, DiskDataset):
            parts = []

            def tee(it, parts=parts):
                for rows, z in it:
                    parts.append(z)
                    yield rows, z
            chunks = tee(encode_chunks(model, v, d.name))
            first = next(chunks)
            width = first[1].shape[1]
            write_obsm(d, key, _prepend(first, chunks), width,
                       {"model_id": model.id, "method": model.method, "key": key})
            embeddings[d.name] = np.concatenate(parts) if parts else np.empty((0, width), np.float32)
        else:
            embeddings[d.name] = model.encode(v, d.name)
    model.write_embedding(embeddings, key)


def _prepend(first, rest):
    yield first
    yield from rest


__all__ = ["Store", "DiskDataset", "LazyView", "open_dataset", "fit_transform", "gene_stats",
           "highly_variable", "write_embedding", "write_obsm", "is_path", "is_on_disk"]


# ---------------------------------------------------------------------------- project
def project(model, path, dataset: str, *, layer: str | None = None, chunk: int | None = None,
            progress: bool = False) -> np.ndarray:
    """:func:`scferry.project` for cells in an on-disk store: read, preprocess and encode
    ``chunk`` cells at a time, streaming the embedding into the store's ``obsm/X_scferry`` (and
    ``uns/scferry`` once every chunk is written). Returns the embedding (cells x latent)."""
    import warnings as _w
    from tqdm.auto import tqdm
    from .errors import ScferryWarning
    from .model import EMBEDDING_KEY
    if not isinstance(dataset, str) or dataset not in model.dataset_names:
        raise ValueError(f"dataset {dataset!r} is not a dataset of this model; datasets: "
                         f"{model.dataset_names}. Name the training dataset the new cells match.")
    chunk = chunk or CHUNK
    d = open_dataset("new_adata", path, layer, role="new_adata")
    from .data import check_dataset
    check_dataset(d)
    var = d.adata.var
    seen: dict[str, str] = {}
    parts: list[np.ndarray] = []
    bar = tqdm(total=d.n_obs, desc="project", disable=not progress, leave=False, unit="cells")

    def chunks():
        for start in range(0, d.n_obs, chunk):
            rows = np.arange(start, min(start + chunk, d.n_obs))
            part = AnnData(read_rows(d, rows), var=var)
            with _w.catch_warnings(record=True) as caught:
                _w.simplefilter("always", ScferryWarning)
                views = model.transform(part, dataset, what=f"new_adata (cells {start}-{rows[-1]})")
            for w in caught:  # one warning per kind, not one per chunk
                seen.setdefault(str(w.message).split(" ", 3)[-1][:80], str(w.message))
            z = model.encode(views, dataset)
            parts.append(z)
            bar.update(len(rows))
            yield rows, z
    it = chunks()
    first = next(it)
    write_obsm(d, EMBEDDING_KEY, _prepend(first, it), first[1].shape[1],
               {"model_id": model.id, "method": model.method, "key": EMBEDDING_KEY})
    bar.close()
    for msg in seen.values():
        _w.warn(msg + " (first chunk with it shown; other chunks may have more such cells)",
                ScferryWarning, stacklevel=3)
    return np.concatenate(parts)


def save_results(d: Dataset, obs: tuple[str, ...] = (), obsm: tuple[str, ...] = (),
                 uns: tuple[str, ...] = ()) -> None:
    """Copy results a tool wrote on an on-disk dataset's in-memory AnnData (``d.adata``) into
    its store: ``obs`` columns, ``obsm`` arrays and ``uns`` entries of these names (replaced when
    present; a name the in-memory AnnData no longer holds is removed from the store, so that a
    previous call's result does not outlive it there). Nothing happens for an in-memory dataset."""
    if not isinstance(d, DiskDataset):
        return
    import anndata.io as aio
    store, a = d.store, d.adata
    store.close()
    try:
        store._open("r+")
    except ValueError as e:
        raise ValueError(f"{e} Writing results into {str(store.path)!r} needs it open for writing: "
                         "close other handles of this file first, then rerun.") from None
    try:
        g = store.group
        for group, keys in (("obs", obs), ("obsm", obsm), ("uns", uns)):
            if not keys:
                continue
            if group not in g:
                new = g.create_group(group)
                new.attrs["encoding-type"], new.attrs["encoding-version"] = "dict", "0.1.0"
            for key in keys:
                if key in g[group]:
                    del g[group][key]
                if key not in {"obs": a.obs.columns, "obsm": a.obsm, "uns": a.uns}[group]:
                    continue
                if group == "obs":
                    aio.write_elem(g["obs"], key, a.obs[key].values)
                    order = [c for c in np.asarray(g["obs"].attrs.get("column-order", []), dtype=str) if c != key]
                    if store.kind == "h5ad":
                        import h5py
                        g["obs"].attrs["column-order"] = np.array(order + [key], dtype=h5py.string_dtype())
                    else:
                        g["obs"].attrs["column-order"] = order + [key]
                elif group == "obsm":
                    aio.write_elem(g["obsm"], key, np.asarray(a.obsm[key]))
                else:
                    value = a.uns[key]
                    aio.write_elem(g["uns"], key, np.asarray(value, dtype=str) if isinstance(value, list) else value)
    finally:
        store.close()


class ChunkedMatrix:
    """The counts of an on-disk dataset for :func:`scferry.deconvolve` (readout="counts"):
    ``onehot @ M`` (per-type sums) and ``M[:, genes]`` (a column subset) computed over row
    chunks; ``head()`` the values of the first chunk (for the integer-count check)."""

    def __init__(self, d: Dataset, chunk: int | None = None):
        self.d, self.chunk = d, chunk or CHUNK
        self.shape = (d.n_obs, d.adata.n_vars)

    def __rmatmul__(self, left) -> np.ndarray:
        out = np.zeros((left.shape[0], self.shape[1]))
        left = sp.csc_matrix(left)
        for start, X in zip(range(0, self.shape[0], self.chunk), row_chunks(self.d, self.chunk)):
            out += np.asarray((left[:, start:start + X.shape[0]] @ X).todense())
        return out

    def __getitem__(self, key) -> sp.csr_matrix:
        rows, cols = key
        if rows != slice(None):
            raise IndexError("a ChunkedMatrix only selects columns: M[:, genes].")
        return sp.vstack([X[:, cols] for X in row_chunks(self.d, self.chunk)]).tocsr()

    def head(self, n: int = 1_000_000) -> np.ndarray:
        return next(row_chunks(self.d, self.chunk)).data[:n]


def materialize(v: LazyView, nnz: int, chunk: int | None = None) -> sp.csr_matrix:
    """The whole model input of a :class:`LazyView` as one CSR float32 matrix, built chunk by
    chunk into arrays allocated once (``nnz``: the expected number of stored values, from the
    statistics; grown if short), so that building it never holds more than it plus one chunk."""
    chunk = chunk or CHUNK
    n, g = v.shape
    data, indices = np.empty(nnz, np.float32), np.empty(nnz, np.int32)
    indptr = np.zeros(n + 1, np.int64)
    pos = 0
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        X = v[np.arange(start, stop)]
        k = X.nnz
        if pos + k > len(data):  # more values than expected: grow
            grow = max(pos + k, int(1.25 * len(data)))
            data, indices = np.resize(data, grow), np.resize(indices, grow)
        data[pos:pos + k], indices[pos:pos + k] = X.data, X.indices
        indptr[start + 1:stop + 1] = pos + X.indptr[1:]
        pos += k
    if pos < len(data):
        data, indices = data[:pos].copy(), indices[:pos].copy()
    if pos < np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    return sp.csr_matrix((data, indices, indptr), shape=(n, g))


def expected_nnz(v: LazyView, stats: GeneStats) -> int:
    """Stored values of a model input: its genes' cells with a positive value."""
    return int(stats.n_cells[v.genes].sum())
