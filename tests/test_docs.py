"""The API reference documents every public name the README and the docs promise.

``docs/api_pages.py`` decides what the reference lists (it is what ``docs/conf.py`` renders);
a name dropped from a namespace's exports, or moved without being re-exported, fails here
before it silently vanishes from the documentation. The build itself (``inst/build_docs.sh``,
warnings are errors) runs in ``inst/run_tests.sh``.
"""
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
sys.path.insert(0, str(DOCS))

from api_pages import NAMESPACES, public_names  # noqa: E402

PROMISED = {
    "scferry": ["integrate", "refine", "transfer_labels", "deconvolve", "project", "impute", "load", "Model",
                "available_methods", "get_method", "ScferryWarning", "ModelFileError"],
    "scferry.tl": ["knn_smooth", "mini_bulk", "peak_gene_links", "gene_activity", "transfer_labels", "deconvolve", "project",
                   "impute"],
    "scferry.metrics": ["evaluate", "silhouette", "batch_entropy", "ilisi", "clisi", "kbet", "foscttm",
                        "graph_connectivity", "ari", "nmi"],
    "scferry.pl": ["spatial_proportions"],
    "scferry.ot": ["unbalanced_sinkhorn", "TopKPlan"],
}


@pytest.mark.parametrize("namespace", sorted(PROMISED))
def test_reference_lists_the_public_api(namespace):
    assert namespace in NAMESPACES
    listed = public_names(namespace)
    missing = [n for n in PROMISED[namespace] if n not in listed]
    assert not missing, f"{namespace}: {missing} would be missing from the API reference"


def test_reference_skips_modules_and_private_names():
    listed = public_names("scferry")
    assert "metrics" not in listed and "__version__" not in listed
    assert all(not n.startswith("_") for ns in NAMESPACES for n in public_names(ns))
