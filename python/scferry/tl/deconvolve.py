"""Spot deconvolution: cell-type proportions of spatial spots from a labelled reference."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..model import Model
from ._common import PROPORTIONS_KEY, _class_mass, _labelled_pair, _plan, _write_rows

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
          higher r and lower RMSE than ``"mass"``: bench/deconvolution/RESULTS.md).
        - ``"mass"``: ``m[s, c]`` divided by the row's sum (all the mass the spot receives), the
          plan's class mass as :func:`transfer_labels` with ``method="plan"`` reads it.

        With the same number of reference cells in every type both give the same values. The
        division also multiplies the mass of a type with only a handful of reference cells
        by a large factor, noise included (on real sections such a type can become the most
        abundant one of spots where a model-free check finds none): a warning names the types with fewer
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

