"""scferry: single-cell multi-omics integration (uniPort, ...) with an R bridge.

>>> import scferry as sf
>>> model = sf.integrate({"rna": rna, "spatial": st}, method="uniport", seed=0)
>>> probs = sf.transfer_labels(model, source="rna", target="spatial", label_key="cell_type")
"""
import os as _os
import sys as _sys

# Sleeping, not spinning, OpenMP workers: with torch's default busy-wait, any other busy process
# on a small machine makes each training step several times slower. Only takes effect
# when torch is not imported yet; a value the user set is kept.
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import metrics, ot, pp  # noqa: E402
from .integrate import integrate  # noqa: E402
from .model import Model, load
from .methods import available_methods, get_method
from .tl import deconvolve, impute, project, transfer_labels
from .refine import refine

__version__ = "0.1.0"


def __getattr__(name):
    # scferry.pl on first use: matplotlib is slow to import and only plots need it
    if name == "pl":
        import importlib
        return importlib.import_module(".pl", __name__)
    raise AttributeError(f"module 'scferry' has no attribute {name!r}")


__all__ = ["integrate", "refine", "transfer_labels", "deconvolve", "project", "impute", "load", "Model",
           "available_methods", "get_method", "metrics", "ot", "pl", "pp", "__version__"]
