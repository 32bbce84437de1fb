"""What the API reference documents: the public namespaces and, for each, the names it exports.
Used by ``docs/conf.py`` to write one page per namespace, and by ``tests/test_docs.py``."""
from __future__ import annotations

import importlib
import inspect

NAMESPACES = {
    "scferry": "Top level: integrate, refine, transfer, deconvolve, project, impute, save/load",
    "scferry.tl": "Tools on a fitted model or a joint embedding",
    "scferry.metrics": "Metrics: integration quality, label transfer, pairing",
    "scferry.pl": "Plots",
    "scferry.ot": "Optimal transport",
    "scferry.pp": "Preprocessing",
    "scferry.r": "Reading and writing R objects (rpy2)",
}


def public_names(modname: str) -> list[str]:
    """Functions and classes a namespace exports: its ``__all__`` when it has one, else every
    public function or class defined inside scferry. Submodules are left out (they have their
    own page)."""
    mod = importlib.import_module(modname)
    names = getattr(mod, "__all__", None)
    if names is None:
        names = [n for n in dir(mod) if not n.startswith("_")]
    out = []
    for n in names:
        obj = getattr(mod, n, None)
        if inspect.ismodule(obj) or obj is None:
            continue
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if not getattr(obj, "__module__", "").startswith("scferry"):
            continue
        out.append(n)
    return out
