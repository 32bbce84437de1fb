"""A pytest plugin that breaks scferry's methods, to check that the quality tests can fail.

    SCFERRY_BREAK=noise   pytest -p break_methods tests/test_davae.py ...
    SCFERRY_BREAK=shuffle pytest -p break_methods tests/test_davae.py ...

`noise`: every embedding written by `sf.integrate`, `sf.refine` and `sf.project` is replaced by
Gaussian noise (perfectly mixed, no structure), `sf.impute` returns noise in the same units and
`sf.deconvolve` / `sf.transfer_labels` return random proportions / probabilities. `shuffle`: the same outputs keep their values but
their rows are permuted within each dataset (cells get another cell's coordinates / profile /
proportions). Every quality test must FAIL under both; a test that passes cannot tell a working
method from a broken one. Not loaded unless asked for with ``-p break_methods``.
"""
from __future__ import annotations

import functools
import os

import anndata as ad
import numpy as np
import pandas as pd

import scferry as sf

MODE = os.environ.get("SCFERRY_BREAK", "noise")
_rng = np.random.default_rng(12345)


def _break_matrix(X):
    X = np.asarray(X)
    if MODE == "shuffle":
        return X[_rng.permutation(X.shape[0])].copy()
    return _rng.normal(size=X.shape).astype(X.dtype if X.dtype.kind == "f" else np.float32)


def _break_obsm(a, key):
    if isinstance(a, ad.AnnData) and key in a.obsm:
        a.obsm[key] = _break_matrix(a.obsm[key])


def _anndatas(x):
    if isinstance(x, ad.AnnData):
        return [x]
    if isinstance(x, dict):
        return [v for v in x.values() if isinstance(v, ad.AnnData)]
    if isinstance(x, (list, tuple)):
        return [v for v in x if isinstance(v, ad.AnnData)]
    return []


def _wrap(name, after):
    real = getattr(sf, name)

    @functools.wraps(real)
    def broken(*args, **kwargs):
        out = real(*args, **kwargs)
        return after(out, args, kwargs)
    setattr(sf, name, broken)


def _after_integrate(model, args, kwargs):
    for a in _anndatas(args[0] if args else kwargs.get("datasets")):
        _break_obsm(a, "X_scferry")
    return model


def _after_refine(rec, args, kwargs):
    a = args[0] if args else kwargs.get("adata")
    _break_obsm(a, kwargs.get("key_added", "X_scferry_refined"))
    return rec


def _after_project(z, args, kwargs):
    new = args[1] if len(args) > 1 else kwargs.get("new_adata")
    zb = _break_matrix(z)
    if isinstance(new, ad.AnnData) and "X_scferry" in new.obsm:
        new.obsm["X_scferry"] = zb
    return zb


def _after_impute(imp, args, kwargs):
    imp = imp.copy()
    X = np.asarray(imp.X)
    imp.X = (np.abs(_break_matrix(X)) * X.std() + X.mean()).astype(X.dtype) if MODE == "noise" else _break_matrix(X)
    return imp


def _after_deconvolve(props, args, kwargs):
    P = props.to_numpy()
    P = _rng.dirichlet(np.ones(P.shape[1]), P.shape[0]) if MODE == "noise" else _break_matrix(P)
    return pd.DataFrame(P, index=props.index, columns=props.columns)


def pytest_configure(config):
    for name, after in (("integrate", _after_integrate), ("refine", _after_refine),
                        ("project", _after_project), ("impute", _after_impute),
                        ("deconvolve", _after_deconvolve), ("transfer_labels", _after_deconvolve)):
        _wrap(name, after)
