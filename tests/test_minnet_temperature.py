"""MinNet's InfoNCE temperature (issue 19): the default 0.2 against the former 0.1, on held-apart
SNARE-seq nuclei (RNA + ATAC gene activity, the repository's fixture) embedded one modality at a
time, both fits in this test on the same nuclei."""
import numpy as np

import scferry as sf
from scferry import metrics
from conftest import read_fixture


def test_default_temperature_aligns_held_apart_nuclei_better():
    rna, atac = read_fixture("snare_cortex_rna.h5ad"), read_fixture("snare_cortex_atac_gene.h5ad")
    ok = (np.asarray(rna.X.sum(1)).ravel() > 0) & (np.asarray(atac.X.sum(1)).ravel() > 0)
    rna, atac = rna[ok].copy(), atac[ok].copy()
    test = np.zeros(rna.n_obs, bool)
    test[np.random.default_rng(0).choice(rna.n_obs, rna.n_obs // 5, replace=False)] = True
    from scferry.methods import get_method
    assert get_method("minnet").defaults["temperature"] == 0.2

    def held_apart(**kw):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sf.ScferryWarning)
            m = sf.integrate({"rna": rna[~test].copy(), "atac": atac[~test].copy()}, method="minnet",
                             seed=0, max_iter=1000, progress=False, **kw)
        assert m.params["objective"] == "infonce"
        return metrics.foscttm(sf.project(m, rna[test].copy(), dataset="rna"),
                               sf.project(m, atac[test].copy(), dataset="atac")), m.params["temperature"]

    (f_new, t_new), (f_old, t_old) = held_apart(), held_apart(temperature=0.1)
    print(f"\nheld-apart nuclei, FOSCTTM: temperature {t_new} (default) {f_new:.3f}, {t_old} (former) {f_old:.3f}")
    assert t_new == 0.2 and f_new < f_old, (f_new, f_old)
