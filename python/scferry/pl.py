"""Plots saved as PNG. Figures are built with matplotlib's object API (``Figure``), never through
pyplot, so importing or using this module does not change the user's matplotlib backend or
state."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
from anndata import AnnData


def _figure(figsize):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def embedding_panels(coords: np.ndarray, colour_by: dict[str, pd.Series], path, title: str = "") -> None:
    """One scatter panel per colouring of the same 2-D coordinates (e.g. UMAP by dataset and by
    cell type); categories with missing values are drawn in grey underneath."""
    import matplotlib

    n = len(colour_by)
    fig = _figure((6.2 * n, 5.2))
    axes = np.atleast_1d(fig.subplots(1, n))
    for ax, (name, values) in zip(axes, colour_by.items()):
        values = pd.Series(values).astype("object")
        missing = values.isna().to_numpy()
        ax.scatter(coords[missing, 0], coords[missing, 1], s=3, c="#d0d0d0", label="(none)", rasterized=True)
        cats = sorted(values[~missing].unique(), key=str)
        cmap = matplotlib.colormaps["tab20" if len(cats) > 10 else "tab10"]
        for i, cat in enumerate(cats):
            sel = (values == cat).to_numpy()
            ax.scatter(coords[sel, 0], coords[sel, 1], s=4, color=cmap(i % cmap.N), label=str(cat), rasterized=True)
        ax.set_title(name)
        ax.set_xticks([]), ax.set_yticks([])
        ax.legend(markerscale=3, fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1, 0.5))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def umap(X: np.ndarray, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """2-D UMAP of an embedding (umap-learn)."""
    import umap as umap_learn

    return umap_learn.UMAP(n_neighbors=n_neighbors, random_state=seed, min_dist=0.3).fit_transform(X)


def spatial_proportions(adata: AnnData, path: str | os.PathLike | None = None, *,
                        key: str = "scferry_proportions", types: list[str] | None = None,
                        basis: str = "spatial", ncols: int = 4, dominant: bool = True,
                        spot_diameter: float | None = None, invert_y: bool = True,
                        cmap: str = "viridis", title: str = "", dpi: int = 130):
    """Cell-type proportions of spots on their spatial coordinates: one panel per cell type
    (colour = proportion, each panel with its own scale from 0 to its maximum), and first, with
    ``dominant=True``, each spot's most abundant type.

    Parameters
    ----------
    adata
        Spots with ``obsm[key]`` (spots x types) and ``uns[key + "_columns"]`` as written by
        :func:`scferry.deconvolve`, and coordinates in ``obsm[basis]`` (first two columns: x, y).
        Rows with missing proportions (other datasets of a shared AnnData) are not drawn.
    path
        Where to write the PNG; ``None``: only return the figure.
    types
        Cell types to draw, in this order (default: all, most abundant first).
    spot_diameter
        In coordinate units (default: the median distance between neighbouring spots).
    invert_y
        Image/array convention: y grows downwards (as scanpy's spatial plots).

    Returns
    -------
    The matplotlib ``Figure``. Nothing on ``adata`` is modified.
    """
    import matplotlib
    from matplotlib.collections import EllipseCollection
    from matplotlib.colors import Normalize
    from matplotlib.cm import ScalarMappable
    from scipy.spatial import cKDTree

    if not isinstance(adata, AnnData):
        raise TypeError(f"adata must be an AnnData; got {type(adata).__name__}.")
    if key not in adata.obsm:
        raise KeyError(f"adata has no obsm[{key!r}]; run scferry.deconvolve(model, reference=..., "
                       "spots=..., label_key=...) first.")
    if basis not in adata.obsm:
        raise KeyError(f"adata has no obsm[{basis!r}] with spot coordinates; available: "
                       f"{list(adata.obsm.keys())}. Pass basis=.")
    props = np.asarray(adata.obsm[key], dtype=np.float64)
    columns = list(adata.uns.get(key + "_columns", []))
    if props.ndim != 2 or len(columns) != props.shape[1]:
        raise ValueError(f"uns[{key + '_columns'!r}] must name the {props.shape[-1]} columns of "
                         f"obsm[{key!r}]; run scferry.deconvolve again.")
    xy = np.asarray(adata.obsm[basis], dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] < 2:
        raise ValueError(f"obsm[{basis!r}] must be spots x 2 coordinates; got shape {xy.shape}.")
    xy = xy[:, :2]
    keep = np.isfinite(props).all(axis=1) & np.isfinite(xy).all(axis=1)
    if not keep.any():
        raise ValueError(f"no spot has both proportions and finite coordinates in obsm[{basis!r}].")
    props, xy = props[keep], xy[keep]
    table = pd.DataFrame(props, columns=columns)
    if types is None:
        types = list(table.mean().sort_values(ascending=False).index)
    else:
        unknown = [t for t in types if t not in columns]
        if unknown or not types:
            raise ValueError(f"types {unknown or types} not among the proportions' columns {columns}.")
    if not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive integer; got {ncols!r}.")

    if spot_diameter is None:
        dist = cKDTree(xy).query(xy, k=2)[0][:, 1] if len(xy) > 1 else np.ones(1)
        positive = dist[dist > 0]
        spot_diameter = 0.95 * float(np.median(positive)) if positive.size else 1.0
    pad = spot_diameter
    xlim = (xy[:, 0].min() - pad, xy[:, 0].max() + pad)
    ylim = (xy[:, 1].min() - pad, xy[:, 1].max() + pad)

    n_panels = len(types) + int(dominant)
    ncols = min(ncols, n_panels)
    nrows = -(-n_panels // ncols)
    aspect = (ylim[1] - ylim[0]) / max(xlim[1] - xlim[0], 1e-12)
    width = 3.6
    fig = _figure((width * ncols + (2.2 if dominant else 0), nrows * (width * aspect + 0.6)))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()

    def draw(ax, colours, name):
        d = np.full(len(xy), spot_diameter)
        ax.add_collection(EllipseCollection(d, d, np.zeros(len(xy)), units="xy", offsets=xy,
                                            offset_transform=ax.transData, facecolors=colours,
                                            edgecolors="none"))
        ax.set_xlim(*xlim)
        ax.set_ylim(*(ylim[::-1] if invert_y else ylim))
        ax.set_aspect("equal")
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(name, fontsize=9)

    panel = 0
    if dominant:
        top = props.argmax(axis=1)
        order = [columns.index(t) for t in types] + [i for i in range(len(columns)) if columns[i] not in types]
        palette = matplotlib.colormaps["tab20" if len(columns) > 10 else "tab10"]
        colour_of = {c: palette(i % palette.N) for i, c in enumerate(order)}
        draw(axes[0], [colour_of[i] for i in top], "most abundant type")
        from matplotlib.patches import Patch
        present = [i for i in order if (top == i).any()]
        axes[0].legend(handles=[Patch(color=colour_of[i], label=columns[i]) for i in present],
                       fontsize=6, frameon=False, loc="center left", bbox_to_anchor=(1, 0.5))
        panel = 1
    colormap = matplotlib.colormaps[cmap]
    for t in types:
        ax = axes[panel]
        values = table[t].to_numpy()
        norm = Normalize(0.0, max(float(values.max()), 1e-6))
        draw(ax, colormap(norm(values)), f"{t}\n(mean {values.mean():.2f}, max {values.max():.2f})")
        fig.colorbar(ScalarMappable(norm=norm, cmap=colormap), ax=ax, fraction=0.046, pad=0.02)
        panel += 1
    for ax in axes[panel:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(os.fspath(path), dpi=dpi)
    return fig
