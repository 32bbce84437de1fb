"""scferry: single-cell multi-omics integration (uniPort, ...) with an R bridge.

>>> import scferry as sf
>>> model = sf.integrate({"rna": rna, "spatial": st}, method="uniport", seed=0)
>>> probs = sf.transfer_labels(model, source="rna", target="spatial", label_key="cell_type")
"""
from .errors import ModelFileError, ScferryWarning
from . import metrics, ot, pp
from .integrate import integrate
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
           "available_methods", "get_method", "metrics", "ot", "pl", "pp", "ScferryWarning",
           "ModelFileError", "__version__"]
