"""scferry._rbridge: the Python side of the R package (called through reticulate). Needs neither R
nor rpy2; scferry.r (the rpy2 direction) is tested in test_r_bridge.py."""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from scferry import _rbridge as rb

REPO = Path(__file__).resolve().parents[1]


def test_one_home_for_the_python_side_of_the_r_bridge():
    # the R package imports scferry._rbridge; it ships no Python file of its own
    assert not (REPO / "rbridge" / "inst" / "python").exists()
    r_code = "\n".join(p.read_text() for p in (REPO / "rbridge" / "R").glob("*.R"))
    assert 'reticulate::import("scferry._rbridge"' in r_code
    assert "import_from_path" not in r_code


def test_importable_without_rpy2():
    code = ("import sys; sys.modules['rpy2'] = None; sys.modules['anndata2ri'] = None\n"
            "import scferry._rbridge as rb, scferry.r\n"
            "assert 'rpy2.robjects' not in sys.modules\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO / "python"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_call_returns_warnings_as_data_and_restores_filters():
    def f(x, y=1):
        warnings.warn("first", UserWarning)
        warnings.warn("first", UserWarning)   # repeated: reported once
        warnings.warn("second", RuntimeWarning)
        return x + y

    def noisy():
        warnings.warn("old api", DeprecationWarning)   # raised here, inside tests: not scferry's
        return 1

    assert rb.call(noisy)["warnings"] == []
    before = list(warnings.filters)
    res = rb.call(f, (2,), {"y": 3})
    assert res["value"] == 5
    assert res["warnings"] == [{"category": "UserWarning", "message": "first"},
                               {"category": "RuntimeWarning", "message": "second"}]
    assert warnings.filters == before


def test_make_anndata_and_matrix_parts_round_trip():
    # a 3 genes x 2 cells dgCMatrix: CSC slots
    x, i, p = [1.0, 2.0, 5.0], [0, 2, 1], [0, 2, 3]
    a = rb.make_anndata(x, i, p, 3, 2, ["c1", "c2"], ["g1", "g2", "g3"])
    assert a.shape == (2, 3)
    parts = rb.matrix_parts(a)
    np.testing.assert_array_equal(parts["values"], [[1, 0, 2], [0, 5, 0]])
    assert parts["obs_names"] == ["c1", "c2"] and parts["var_names"] == ["g1", "g2", "g3"]


def test_model_summary_reads_choices_or_params():
    class Prep:
        common_genes = ["a", "b", "c"]

    class Old:
        method = "uniport"
        params = {"mode": "horizontal"}
        preprocessing = Prep()
        dataset_names = ["rna", "st"]

    s = rb.model_summary(Old())
    assert s["choices"] == {"mode": {"value": "horizontal", "reason": ""}}
    assert s["n_common_genes"] == 3 and s["datasets"] == ["rna", "st"]

    class New(Old):
        choices = {"mode": {"value": "gw", "reason": "no shared features"}, "paired": False}

    s = rb.model_summary(New())
    assert s["choices"]["mode"] == {"value": "gw", "reason": "no shared features"}
    assert s["choices"]["paired"] == {"value": "False", "reason": ""}


def test_frame_parts():
    df = pd.DataFrame({"A": [0.25, 1.0], "2": [0.75, 0.0]}, index=["c1", "c2"])
    parts = rb.frame_parts(df)
    assert parts["columns"] == ["A", "2"] and parts["index"] == ["c1", "c2"]
    np.testing.assert_array_equal(parts["values"], df.to_numpy())
