"""uniPort vertical mode's options for ATAC peaks (issue 19): MultiVI's accessibility likelihood
(``peak_likelihood="bernoulli"``) and an InfoNCE pairing term (``contrastive_weight``). Checks
before training, what is recorded, reproducibility and save/load. Real data: the SNARE-seq
cortex fixture (RNA + 5,000 ATAC peaks)."""
import warnings

import numpy as np
import pytest

import scferry as sf
from conftest import read_fixture
from helpers import assert_unchanged, snapshot


@pytest.fixture(scope="module")
def pair():
    rna = read_fixture("snare_cortex_rna.h5ad")[:300].copy()
    atac = read_fixture("snare_cortex_atac.h5ad")[:300].copy()
    return rna, atac


@pytest.mark.parametrize("kw, match", [
    ({"peak_likelihood": "poisson"}, "peak_likelihood must be"),
    ({"peak_likelihood": {"rna": "scaled"}}, "one entry per dataset"),
    ({"contrastive_weight": -1.0}, "contrastive_weight must be"),
    ({"temperature": 0.0}, "temperature must be"),
])
def test_bad_values_fail_before_training(pair, kw, match):
    rna, atac = pair
    with pytest.raises(ValueError, match=match):
        sf.integrate({"rna": rna, "atac": atac}, method="uniport", mode="vertical", max_iter=2,
                      progress=False, **kw)


def test_bernoulli_is_for_per_dataset_decoders(pair):
    rna, atac = pair
    with pytest.raises(ValueError, match="horizontal mode decodes shared genes"):
        sf.integrate({"a": rna[:150].copy(), "b": rna[150:].copy()}, method="uniport", mode="horizontal",
                     peak_likelihood="bernoulli", max_iter=2, progress=False)


def test_bernoulli_and_contrastive_train_reproducibly_and_save(pair, tmp_path):
    rna, atac = pair
    snaps = snapshot(rna), snapshot(atac)
    kw = dict(method="uniport", mode="vertical", max_iter=30, seed=0, progress=False,
              peak_likelihood={"rna": "scaled", "atac": "bernoulli"}, contrastive_weight=5.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sf.ScferryWarning)
        m1 = sf.integrate({"rna": rna.copy(), "atac": atac.copy()}, **kw)
        m2 = sf.integrate({"rna": rna.copy(), "atac": atac.copy()}, **kw)
    for a, s in zip((rna, atac), snaps):
        assert_unchanged(a, s)
    assert m1.params["peak_likelihood"] == {"rna": "scaled", "atac": "bernoulli"}
    assert "contrastive" in m1.history[-1] and np.isfinite(m1.history[-1]["contrastive"])
    z1, z2 = sf.project(m1, atac.copy(), "atac"), sf.project(m2, atac.copy(), "atac")
    np.testing.assert_array_equal(z1, z2)
    assert np.isfinite(z1).all()
    m1.save(tmp_path / "b.pt")
    loaded = sf.load(tmp_path / "b.pt", adatas={"rna": rna, "atac": atac})
    np.testing.assert_array_equal(sf.project(loaded, atac.copy(), "atac"), z1)
    assert set(dict(loaded.module.named_parameters())) == set(dict(m1.module.named_parameters()))
