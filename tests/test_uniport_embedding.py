"""uniPort's embedding as the direction of the latent means (``embedding="unit"``; announced and
recorded), not the means: the default in vertical mode when a modality looks like ATAC peaks
(issue 19), whose held-apart ATAC codes sit nearer the prior's centre than their RNA partners',
and in diagonal mode (issue 17), where each modality's encoder places its cells alone.

Real data: the SNARE-seq cortex fixture (RNA + 5,000 ATAC peaks), 80 % to train, 20 % held apart
and embedded one modality at a time."""
import warnings

import numpy as np
import pytest
import torch

import scferry as sf
from scferry import metrics
from conftest import read_fixture
from helpers import assert_unchanged, snapshot, unpair


def held_apart_both_ways(model, rna_new, atac_new):
    """The held-apart nuclei embedded one modality at a time: the model's embedding (``z``) and
    the latent means of the same fit (``m``), each pair's FOSCTTM and modality mixing."""
    z = {n: sf.project(model, a.copy(), n) for a, n in ((rna_new, "rna"), (atac_new, "atac"))}
    m = {n: model.encode(model.transform(a.copy(), n), n, latent=True)
         for a, n in ((rna_new, "rna"), (atac_new, "atac"))}
    modality = np.repeat(["rna", "atac"], len(rna_new))
    score = {k: (metrics.foscttm(e["rna"], e["atac"]),
                 metrics.batch_entropy(np.vstack([e["rna"], e["atac"]]), modality, seed=0))
             for k, e in (("unit", z), ("mean", m))}
    return z, m, score


def test_unit_embedding_aligns_held_apart_nuclei_better(snare_peaks):
    """One fit at the defaults: the default embedding of peaks is announced, recorded, of length 1
    and the direction of the latent means; on the held-apart nuclei it aligns the two modalities
    (FOSCTTM) and mixes them better than the means of the same fit (the old handling: training
    is the same, only the embedding differs); imputation reads the means (unchanged); the user's
    objects are untouched; save/load keeps it."""
    rna, atac, rna_new, atac_new = snare_peaks
    snaps = snapshot(rna), snapshot(atac)
    with pytest.warns(sf.ScferryWarning, match="embedding is the direction"):
        model = sf.integrate({"rna": rna, "atac": atac}, method="uniport", mode="vertical", seed=0,
                             max_iter=1000, progress=False)
    for a, s in zip((rna, atac), snaps):
        assert_unchanged(a, s, allowed_obsm={"X_scferry"})
    assert model.params["embedding"] == "unit"
    assert model.choices["embedding"]["value"] == "unit"
    assert "'atac' look like ATAC peaks" in model.choices["embedding"]["reason"]
    np.testing.assert_allclose(np.linalg.norm(atac.obsm["X_scferry"], axis=1), 1.0, atol=1e-5)
    z, m, score = held_apart_both_ways(model, rna_new, atac_new)
    z_atac, m_rna, m_atac = z["atac"], m["rna"], m["atac"]
    np.testing.assert_allclose(z_atac, m_atac / np.linalg.norm(m_atac, axis=1, keepdims=True), atol=1e-5)
    (f_unit, mix_unit), (f_mean, mix_mean) = score["unit"], score["mean"]
    r_atac, r_rna = np.linalg.norm(m_atac, axis=1).mean(), np.linalg.norm(m_rna, axis=1).mean()
    print(f"\nheld-apart nuclei: FOSCTTM unit {f_unit:.3f} vs means {f_mean:.3f}; modality mixing "
          f"{mix_unit:.3f} vs {mix_mean:.3f}; mean length of the means: ATAC {r_atac:.2f}, RNA {r_rna:.2f}")
    assert f_unit < f_mean, (f_unit, f_mean)
    assert mix_unit > mix_mean + 0.1, (mix_unit, mix_mean)
    assert r_atac < r_rna  # the shrinkage the embedding corrects
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sf.ScferryWarning)
        imp = sf.impute(model, atac_new.copy(), target="rna")
    np.testing.assert_allclose(imp.obsm["X_scferry"], z_atac, atol=1e-6)
    scale = model.preprocessing.specific_scale["rna"]
    with torch.no_grad():  # the decoder read the means, not their direction
        decoded = torch.sigmoid(model.module.decode_specific(torch.from_numpy(m_atac[:5]), 0)).numpy()
    np.testing.assert_allclose(imp.X[:5], decoded * np.where(scale > 0, 1 / np.maximum(scale, 1e-30), 0),
                               rtol=1e-4, atol=1e-6)


def test_embedding_choice_checks_and_other_data(tmp_path):
    """Bad values fail before training; gene activity (not peaks) keeps the means without an
    announcement; 'mean' and 'unit' on request; 'unit' in horizontal mode fails; save/load."""
    rna = read_fixture("snare_cortex_rna.h5ad")[:200].copy()
    gene = read_fixture("snare_cortex_atac_gene.h5ad")[:200].copy()
    atac = read_fixture("snare_cortex_atac.h5ad")[:200].copy()
    kw = dict(method="uniport", mode="vertical", max_iter=3, seed=0, progress=False)
    for bad in ("norm", 1, True):
        with pytest.raises(ValueError, match="embedding must be"):
            sf.integrate({"rna": rna, "atac": atac}, embedding=bad, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sf.ScferryWarning)
        m = sf.integrate({"rna": rna.copy(), "atac": gene.copy()}, **kw)
        assert m.params["embedding"] == "mean" and "embedding" not in m.choices
        m = sf.integrate({"rna": rna.copy(), "atac": atac.copy()}, embedding="mean", **kw)
        assert m.params["embedding"] == "mean" and "embedding" not in m.choices
    z_mean = sf.project(m, atac.copy(), "atac")
    m = sf.integrate({"rna": rna.copy(), "atac": gene.copy()}, embedding="unit", **kw)
    np.testing.assert_allclose(np.linalg.norm(sf.project(m, gene.copy(), "atac"), axis=1), 1.0, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sf.ScferryWarning)
        m = sf.integrate({"rna": rna.copy(), "atac": atac.copy()}, **kw)
    z_unit = sf.project(m, atac.copy(), "atac")
    np.testing.assert_allclose(z_unit, z_mean / np.linalg.norm(z_mean, axis=1, keepdims=True), atol=1e-5)
    m.save(tmp_path / "u.pt")
    loaded = sf.load(tmp_path / "u.pt", adatas={"rna": rna, "atac": atac})
    np.testing.assert_array_equal(sf.project(loaded, atac.copy(), "atac"), z_unit)
    other = rna.copy()
    other.obs_names = [f"y{i}" for i in range(other.n_obs)]
    with pytest.raises(ValueError, match="applies to vertical and diagonal modes"):
        sf.integrate({"a": rna.copy(), "b": other}, method="uniport", mode="horizontal",
                     embedding="unit", max_iter=2, progress=False)


def test_diagonal_default_embedding_aligns_held_apart_nuclei_better(snare_peaks):
    """Diagonal mode (unpaired: the peaks' rows shuffled and renamed, the pairing used only to
    score), one fit at the defaults: the embedding is the direction of the latent means, announced
    and recorded; on held-apart nuclei, embedded one modality at a time, it aligns the modalities
    (FOSCTTM) and mixes them better than the means of the same fit; 'mean' on request is silent."""
    rna, atac, rna_new, atac_new = snare_peaks
    _, shuffled, _ = unpair(rna, atac)
    kw = dict(method="uniport", mode="diagonal", seed=0, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = sf.integrate({"rna": rna.copy(), "atac": shuffled}, max_iter=400, **kw)
    assert any("uniPort diagonal: the embedding is the direction" in str(w.message) for w in caught)
    assert model.params["embedding"] == "unit" and model.choices["embedding"]["value"] == "unit"
    np.testing.assert_allclose(np.linalg.norm(shuffled.obsm["X_scferry"], axis=1), 1.0, atol=1e-5)
    _, _, score = held_apart_both_ways(model, rna_new, atac_new)
    (f_unit, mix_unit), (f_mean, mix_mean) = score["unit"], score["mean"]
    print(f"\nheld-apart nuclei (diagonal): FOSCTTM unit {f_unit:.3f} vs means {f_mean:.3f}; "
          f"modality mixing {mix_unit:.3f} vs {mix_mean:.3f}")
    assert f_unit < f_mean - 0.02, (f_unit, f_mean)
    assert mix_unit > mix_mean + 0.1, (mix_unit, mix_mean)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = sf.integrate({"rna": rna[:300].copy(), "atac": shuffled[:300].copy()}, embedding="mean",
                         max_iter=3, **kw)
    assert m.params["embedding"] == "mean" and "embedding" not in m.choices
    assert not any("the embedding is the direction" in str(w.message) for w in caught)
