"""``method="gw"``: Gromov-Wasserstein alignment of two unpaired modalities, no training.

SCOT (Demetci et al., J Comput Biol 29, 3 (2022)) and Pamona (Cao et al., Bioinformatics 38, 211
(2022)) align two modalities measured on unrelated features by matching each modality's
kNN-graph geodesic distances with (entropic) Gromov-Wasserstein OT, then embed one modality in
the other by barycentric projection. ``scferry.gw`` does the same between metacells (so memory
stays linear in cells) and lifts the coupling to cells; this module turns it into a fitted
result like :class:`scferry.Model`: ``obsm["X_scferry"]`` on both inputs, the metacell coupling,
and a record of every choice made for the user.

The joint embedding (:meth:`scferry.gw.Alignment.joint`) is symmetric: each cell gets
``[X-space coordinates, Y-space coordinates]``, its own modality's (metacell-smoothed) and its
barycentric projection into the other. It is transductive: new cells cannot be encoded later
(:func:`scferry.project` says so); rerun on all cells, or use ``method="uniport"`` (diagonal
mode, which uses this alignment as its OT guidance) to get encoders.
"""
from __future__ import annotations

import uuid
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import gw as _gw
from ..data import collect_datasets
from ..errors import ScferryWarning, record_choice

DEFAULTS = dict(_gw.DEFAULTS, kinds=None, linked="auto")
MIN_LINKED = 50  # shared features below which fused GW is not used by default


class GWModel:
    """The result of ``integrate(..., method="gw")``.

    Attributes
    ----------
    method : "gw"
    dataset_names, obs_names
        The two datasets' names and cell names.
    alignment : :class:`scferry.gw.Alignment`
        Metacells, their coupling (``alignment.coupling``) and each modality's own embedding.
    params
        Every setting used, including the choices made from the data (``kinds``, ``fused``).
    choices
        The choices made for the user, ``{name: {"value": ..., "reason": ...}}`` as on every
        scferry model (also announced as :class:`scferry.ScferryWarning`).
    """

    method = "gw"

    def __init__(self, alignment: _gw.Alignment, datasets, params: dict[str, Any], choices: dict[str, dict]):
        self.alignment = alignment
        self.datasets = datasets
        self.dataset_names = [d.name for d in datasets]
        self.obs_names = {d.name: list(map(str, d.obs_names)) for d in datasets}
        self.params = params
        self.choices = choices
        self.train_params: dict[str, Any] = {}
        self.history: list[dict] = []
        self.id = uuid.uuid4().hex  # recorded in uns["scferry"] beside the embedding it writes

    @property
    def adatas(self) -> dict[str, AnnData]:
        return {d.name: d.adata for d in self.datasets}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}: {len(self.obs_names[n])} cells" for n in self.dataset_names)
        return f"scferry.GWModel(method='gw', {sizes}, kinds={self.params['kinds']})"

    def transform(self, *args, **kwargs):
        raise NotImplementedError(
            "method='gw' is transductive: it aligns the cells it was given and has no encoder for new "
            "cells. Rerun scferry.integrate(..., method='gw') with the new cells included, or use "
            "method='uniport' (diagonal mode, guided by this GW alignment) to get encoders for "
            "scferry.project / scferry.impute.")

    def save(self, *args, **kwargs):
        raise NotImplementedError("a method='gw' result is not saved; keep obsm['X_scferry'] of the "
                                  "AnnData objects, or rerun (it takes seconds to a minute).")


def check_params(params: dict[str, Any]) -> None:
    """Reject bad GW settings before any data is touched."""
    for key in ("n_metacells", "k", "n_components", "n_features", "n_soft", "max_iter", "n_starts"):
        v = params[key]
        low = 1 if key in ("n_soft", "n_starts") else 2
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low:
            raise ValueError(f"{key} must be an integer >= {low}; got {v!r}.")
    eps = params["epsilon"]
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not np.isfinite(eps) or eps <= 0:
        raise ValueError(f"epsilon must be a number > 0 (entropic regularisation of GW, relative to "
                         f"geodesic distances scaled to [0, 1]); got {eps!r}.")
    a = params["fused_alpha"]
    if not isinstance(a, (int, float)) or isinstance(a, bool) or not 0 < a <= 1:
        raise ValueError(f"fused_alpha must be in (0, 1] (weight of the GW term in fused GW); got {a!r}.")
    kinds = params["kinds"]
    if kinds is not None and (not isinstance(kinds, Mapping)
                              or any(v not in _gw.KINDS for v in kinds.values())):
        raise ValueError(f"kinds must be None (guessed from the data) or a dict of dataset name -> one of "
                         f"{_gw.KINDS}, e.g. {{'atac': 'peaks'}}; got {kinds!r}.")
    linked = params["linked"]
    if not (linked is None or (isinstance(linked, str) and linked == "auto")
            or isinstance(linked, pd.DataFrame)):
        raise ValueError("linked must be 'auto' (fused GW on the feature names both datasets share, when "
                         f"there are >= {MIN_LINKED}), None (plain GW), or a DataFrame with one column "
                         f"per dataset name listing linked features; got {type(linked).__name__}.")


def fit(data, params: dict[str, Any], *, seed: int, progress: bool,
        announce: bool = True) -> tuple[_gw.Alignment, dict[str, Any], dict[str, dict]]:
    """GW alignment of two validated :class:`scferry.data.Dataset` objects; returns the alignment,
    the plain settings used and the choices made for the user (warned when ``announce``)."""
    if len(data) != 2:
        raise ValueError(f"GW alignment takes exactly two datasets (modalities); got {len(data)} "
                         f"({[d.name for d in data]}). Align them pairwise against one reference.")
    names = [d.name for d in data]
    kinds_given = dict(params.get("kinds") or {})
    unknown = sorted(set(kinds_given) - set(names))
    if unknown:
        raise ValueError(f"kinds names {unknown}, not datasets {names}.")
    mats = [d.counts() for d in data]
    choices: dict[str, dict] = {}
    kinds = []
    for d, X in zip(data, mats):
        kind = kinds_given.get(d.name) or _gw.guess_kind(X, d.adata.var, d.var_names)
        if d.name not in kinds_given:
            record_choice(choices, f"kind_{d.name}", kind,
                          f"dataset {d.name!r} preprocessed as {kind!r} (guessed from its values and "
                          f"feature names; pass kinds={{{d.name!r}: ...}} to choose)")
        kinds.append(kind)
    linked = params.get("linked", "auto")
    pair = None
    if isinstance(linked, pd.DataFrame):
        missing = [n for n in names if n not in linked.columns]
        if missing:
            raise ValueError(f"linked needs one column per dataset {names}; missing {missing}.")
        pair = [list(map(str, linked[n])) for n in names]
    elif linked == "auto":
        shared = data[0].var_names.intersection(data[1].var_names)
        if len(shared) >= MIN_LINKED:
            pair = [list(shared), list(shared)]
            record_choice(choices, "fused", len(shared),
                          f"fused GW on the {len(shared)} feature names both datasets share (pass "
                          "linked=None for plain GW)")
    L = None
    if pair is not None:
        idx = [d.var_names.get_indexer(p) for d, p in zip(data, pair)]
        bad = [n for n, i in zip(names, idx) if (i < 0).any()]
        if bad:
            raise ValueError(f"linked lists features that datasets {bad} do not have.")
        L = tuple(X[:, i] for X, i in zip(mats, idx))
    kw = {k: params[k] for k in _gw.DEFAULTS}
    al = _gw.align(mats[0], mats[1], kinds=tuple(kinds), linked=L, seed=seed, progress=progress, **kw)
    if announce:
        for c in choices.values():
            warnings.warn(f"scferry gw: {c['reason']}.", ScferryWarning, stacklevel=4)
    plain = {**kw, **al.params, "linked": None if pair is None else len(pair[0])}
    return al, plain, choices


def integrate_gw(datasets: Mapping[str, AnnData] | Sequence[AnnData] | AnnData, *,
                 batch_key: str | None = None, layer: str | None = None, seed: int = 0,
                 progress: bool = True, **params: Any) -> GWModel:
    """``scferry.integrate(datasets, method="gw", **params)``: see the module docstring."""
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"unknown parameter(s) {unknown} for method 'gw'; its parameters: "
                        f"{sorted(DEFAULTS)}.")
    hp = {**DEFAULTS, **params}
    check_params(hp)
    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int; got {seed!r}.")
    data = collect_datasets(datasets, batch_key=batch_key, layer=layer, allow_negative=True)
    al, plain, choices = fit(data, hp, seed=seed, progress=progress)
    model = GWModel(al, data, plain, choices)
    from ..model import Model, EMBEDDING_KEY
    z = al.joint()
    Model.write_embedding(model, {d.name: e for d, e in zip(data, z)}, EMBEDDING_KEY)
    return model
