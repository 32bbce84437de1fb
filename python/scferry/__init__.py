"""scferry: single-cell multi-omics integration (uniPort, ...) with an R bridge.

>>> import scferry as sf
>>> model = sf.integrate({"rna": rna, "spatial": st}, method="uniport", seed=0)
>>> probs = sf.transfer_labels(model, source="rna", target="spatial", label_key="cell_type")
"""
from . import metrics, ot, pp
from .integrate import integrate
from .model import Model, load
from .models import available_methods, get_method
from .tl import transfer_labels

__version__ = "0.1.0"
__all__ = ["integrate", "transfer_labels", "load", "Model", "available_methods", "get_method",
           "metrics", "ot", "pp", "__version__"]
