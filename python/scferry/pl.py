"""Plots saved as PNG (matplotlib, no display needed)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def embedding_panels(coords: np.ndarray, colour_by: dict[str, pd.Series], path, title: str = "") -> None:
    """One scatter panel per colouring of the same 2-D coordinates (e.g. UMAP by dataset and by
    cell type); categories with missing values are drawn in grey underneath."""
    n = len(colour_by)
    fig, axes = plt.subplots(1, n, figsize=(6.2 * n, 5.2))
    axes = np.atleast_1d(axes)
    for ax, (name, values) in zip(axes, colour_by.items()):
        values = pd.Series(values).astype("object")
        missing = values.isna().to_numpy()
        ax.scatter(coords[missing, 0], coords[missing, 1], s=3, c="#d0d0d0", label="(none)", rasterized=True)
        cats = sorted(values[~missing].unique(), key=str)
        cmap = plt.get_cmap("tab20" if len(cats) > 10 else "tab10")
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
    plt.close(fig)


def umap(X: np.ndarray, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """2-D UMAP of an embedding (umap-learn)."""
    import umap as umap_learn

    return umap_learn.UMAP(n_neighbors=n_neighbors, random_state=seed, min_dist=0.3).fit_transform(X)
