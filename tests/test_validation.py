"""Bad input: a clear error naming the problem, raised before training, objects untouched."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scferry as sf
from helpers import assert_unchanged, snapshot
from test_integrate import FAST


def expect_error(exc, match, datasets, **kw):
    snaps = [snapshot(a) for a in (datasets.values() if isinstance(datasets, dict) else [datasets])]
    with pytest.raises(exc, match=match):
        sf.integrate(datasets, **{**FAST, **kw})
    for a, s in zip((datasets.values() if isinstance(datasets, dict) else [datasets]), snaps):
        assert_unchanged(a, s)


def test_fewer_than_two_datasets(pdac_small):
    rna, _ = pdac_small
    expect_error(ValueError, "at least 2 datasets", {"rna": rna})


def test_no_shared_genes(pdac_small):
    rna, st = pdac_small
    st.var_names = ["x" + g for g in st.var_names]
    expect_error(ValueError, r"share no feature names \('rna': 1500, 'st': 1500", {"rna": rna, "st": st},
                 mode="horizontal")  # without mode=, uniPort integrates them diagonally (with a warning)


def test_duplicated_genes_and_cells(pdac_small):
    rna, st = pdac_small
    names = list(st.var_names); names[1] = names[0]; st.var_names = names
    expect_error(ValueError, "'st' has duplicated feature names.*var_names_make_unique", {"rna": rna, "st": st})
    rna2, st2 = pdac_small[0].copy(), pdac_small[1].copy()
    cells = list(rna2.obs_names); cells[1] = cells[0]; rna2.obs_names = cells
    expect_error(ValueError, "'rna' has duplicated cell names", {"rna": rna2, "st": st2})


@pytest.mark.parametrize("bad,match", [(-1.0, "negative values"), (np.nan, "non-finite"), (np.inf, "non-finite")])
def test_bad_values(pdac_small, bad, match):
    rna, st = pdac_small
    X = st.X.toarray(); X[0, 0] = bad; st.X = sp.csr_matrix(X)
    expect_error(ValueError, f"'st' has 1 {match}", {"rna": rna, "st": st})


def test_empty_dataset_and_zero_count_cells(pdac_small):
    rna, st = pdac_small
    expect_error(ValueError, "'st' has no cells", {"rna": rna, "st": st[:0].copy()})
    X = st.X.toarray(); X[2] = 0; st.X = sp.csr_matrix(X)
    expect_error(ValueError, "'st' has 1 cells with zero counts", {"rna": rna, "st": st})


def test_wrong_types_and_keys(pdac_small):
    rna, st = pdac_small
    with pytest.raises(TypeError, match="'st' is a csr_matrix, not an AnnData"):
        sf.integrate({"rna": rna, "st": st.X}, **FAST)
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        sf.integrate({"rna": rna, "st": st}, method="nope")
    with pytest.raises(ValueError, match="unknown device"):
        sf.integrate({"rna": rna, "st": st}, device="tpu")
    with pytest.raises(TypeError, match=r"unknown parameter\(s\) \['n_latnet'\]"):
        sf.integrate({"rna": rna, "st": st}, n_latnet=8)
    expect_error(ValueError, "reference 'x' is not one of", {"rna": rna, "st": st}, reference="x")
    expect_error(ValueError, "max_iter must be a positive integer", {"rna": rna, "st": st}, max_iter=0)
    both = ad.concat({"rna": rna, "st": st}, label="source", index_unique="-")
    expect_error(KeyError, "batch_key 'nope' is not a column", both, batch_key="nope")
    expect_error(ValueError, "needs batch_key", both)
    one = both.copy(); one.obs["source"] = "same"
    expect_error(ValueError, "at least 2 datasets", one, batch_key="source")
    with pytest.raises(KeyError, match="layer 'counts'"):
        sf.integrate({"rna": rna, "st": st}, layer="counts", **FAST)


def test_transfer_label_errors(pdac_small):
    rna, st = pdac_small
    model = sf.integrate({"rna": rna, "st": st}, **FAST)
    snap = snapshot(st)
    with pytest.raises(KeyError, match="label_key 'celltype' is not a column.*cell_type"):
        sf.transfer_labels(model, "rna", "st", "celltype")
    rna.obs["no_label"] = pd.Series([None] * rna.n_obs, index=rna.obs_names, dtype=object)
    with pytest.raises(ValueError, match="label_key 'no_label' is missing for all"):
        sf.transfer_labels(model, "rna", "st", "no_label")
    with pytest.raises(ValueError, match="source 'x' is not a dataset"):
        sf.transfer_labels(model, "x", "st", "cell_type")
    with pytest.raises(ValueError, match="different datasets"):
        sf.transfer_labels(model, "rna", "rna", "cell_type")
    assert_unchanged(st, snap)
