"""scBIOT's prototype-aware dual-view VAE through the shared spine, on real data: three 10x
chemistries of the Symphony PBMC set (600 cells)."""
import anndata as ad
import numpy as np
import pytest
import torch

import scferry as sf
from scferry import metrics
from scferry.methods.scbiot_vae import ScBIOTVAE
from helpers import assert_unchanged, check_integration, pca_embedding, snapshot, split

GENES = 1000
# warm-up shortened so that the prototype terms run in these short trainings
FAST = dict(max_iter=40, warmup_steps=20, progress=False, n_common_genes=GENES)
TRAIN = dict(max_iter=500, warmup_steps=250, progress=False, n_common_genes=GENES)


@pytest.fixture()
def pca(pbmc):
    return pca_embedding(pbmc)


def transfer(X, obs, source, target):
    src, tgt = obs["batch"].isin(source).to_numpy(), (obs["batch"] == target).to_numpy()
    labels = obs["cell_type"].astype(str)
    pred, _ = metrics.knn_label_transfer(X[src], labels[src], X[tgt], k=15)
    return float(np.mean(pred == labels[tgt].to_numpy()))


def test_mixes_chemistries_and_keeps_cell_types_without_labels(pbmc, pca):
    snap = snapshot(pbmc)
    model = sf.integrate(pbmc, method="scbiot_vae", batch_key="batch", seed=0, **TRAIN)
    assert_unchanged(pbmc, snap, allowed_obsm={"X_scferry"})
    X = pbmc.obsm["X_scferry"]
    assert X.shape == (pbmc.n_obs, 16) and X.dtype == np.float32 and np.isfinite(X).all()
    assert model.train_params["iterations_run"] == 500
    last = model.history[-1]
    assert {"recon", "kl", "clust", "center", "repulse", "margin", "sup", "cons", "confident"} <= set(last)
    assert last["sup"] == 0.0  # no labels: the supervised term is off
    assert last["confident"] > 0.3  # the CosFace term has confident self-labels to work on

    # unsupervised: mixing beats PCA; cell types less apart than in PCA (silhouette within 0.1,
    # leave-one-chemistry-out transfer within 0.12: it trails PCA on both on these cells) but
    # more than in a random embedding (silhouette +0.05, transfer +0.3)
    check_integration(X, pbmc.obs, pca, ilisi_factor=2.0, silhouette_tol=0.1, transfer_tol=0.12,
                      silhouette_gain=0.05)


def test_labels_on_two_chemistries_pull_the_third(pbmc, pca):
    """Labels on two chemistries only (the third dataset has no label column): the supervised
    term trains on them, and the unlabelled chemistry's cells land with their types."""
    data = split(pbmc)
    del data["10x_5p"].obs["cell_type"]
    snaps = {n: snapshot(a) for n, a in data.items()}
    model = sf.integrate(data, method="scbiot_vae", label_key="cell_type", seed=0, **TRAIN)
    for n, a in data.items():
        assert_unchanged(a, snaps[n], allowed_obsm={"X_scferry"})
    assert model.module.label_names == sorted(pbmc.obs["cell_type"].astype(str).unique())
    assert model.history[-1]["sup"] > 0
    X = np.vstack([data[n].obsm["X_scferry"] for n in data])
    obs = ad.concat(list(split(pbmc).values())).obs
    # labels on two chemistries: cell types further apart than in PCA (silhouette), the
    # unlabelled chemistry still found by kNN (within 0.2 of PCA), batches mixed better than PCA
    rows = obs.index.get_indexer(pbmc.obs_names)
    s = check_integration(X[rows], pbmc.obs, pca, entropy_gain=0.03, ilisi_factor=1.0,
                          silhouette_tol=-0.05, transfer_tol=0.2)
    assert transfer(X, obs, ["10x_3p_v1", "10x_3p_v2"], "10x_5p") > s.loc["random", "transfer"] + 0.3


def test_same_seed_same_embedding(pbmc):
    sf.integrate(pbmc, method="scbiot_vae", batch_key="batch", seed=3, **FAST)
    first = pbmc.obsm["X_scferry"].copy()
    sf.integrate(pbmc, method="scbiot_vae", batch_key="batch", seed=3, **FAST)
    np.testing.assert_array_equal(first, pbmc.obsm["X_scferry"])
    sf.integrate(pbmc, method="scbiot_vae", batch_key="batch", seed=4, **FAST)
    assert not np.allclose(first, pbmc.obsm["X_scferry"])


def test_save_load_project_and_transfer(pbmc, tmp_path):
    data = split(pbmc)
    model = sf.integrate(data, method="scbiot_vae", label_key="cell_type", seed=0, **FAST)
    prep = model.preprocessing
    assert len(prep.common_genes) == GENES and not prep.scaled
    module = model.module
    # view 2 centres each dataset's genes on (shrunk) dataset means; view 1 on the global ones
    d = model.dataset("10x_5p")
    x = torch.from_numpy(prep.transform(d.counts(), d.var_names, "10x_5p").toarray())
    xs = [torch.from_numpy(prep.transform(a.counts(), a.var_names, a.name).toarray()) for a in model.datasets]
    g = torch.cat(xs).double().mean(0)
    w = x.shape[0] / (x.shape[0] + module.params["shrink_cells"])
    torch.testing.assert_close(module.center[2].double(), w * x.double().mean(0) + (1 - w) * g,
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(module.center[-1].double(), g, rtol=1e-4, atol=1e-5)
    v1, v2 = module.views(x, torch.full((x.shape[0],), 2))
    assert v1.abs().max() <= 5 and v2.abs().max() <= 5 and not torch.allclose(v1, v2)

    before = sf.transfer_labels(model, "10x_3p_v2", "10x_5p", "cell_type")
    model.save(tmp_path / "scbiot.pt")
    loaded = sf.load(tmp_path / "scbiot.pt", adatas=data)
    assert loaded.method == "scbiot_vae" and loaded.dataset_names == list(data)
    assert loaded.module.label_names == module.label_names
    for k, v in module.state_dict().items():
        assert torch.equal(v, loaded.module.state_dict()[k]), k
    np.testing.assert_allclose(loaded.encode({"common": prep.transform(d.counts(), d.var_names, "10x_5p")},
                                             "10x_5p"), data["10x_5p"].obsm["X_scferry"], rtol=1e-5, atol=1e-5)
    after = sf.transfer_labels(loaded, "10x_3p_v2", "10x_5p", "cell_type")
    np.testing.assert_allclose(before.to_numpy(), after.to_numpy())
    # new cells go through their dataset's view-2 statistics and land where the trained ones are
    new = pbmc[(pbmc.obs["batch"] == "10x_5p").to_numpy()].copy()
    z = sf.project(loaded, new, dataset="10x_5p")
    np.testing.assert_allclose(z, data["10x_5p"].obsm["X_scferry"], rtol=1e-4, atol=1e-4)


def test_prototype_losses_follow_the_paper():
    """The terms on a hand-made minibatch: DEC targets sharpen q, repulsion is zero for
    orthogonal prototypes, the EMA moves prototypes after (not during) the step."""
    torch.manual_seed(0)
    params = {**ScBIOTVAE.defaults, "reference": None, "n_prototypes": 4, "n_latent": 4,
              "warmup_steps": 1}
    m = ScBIOTVAE({"n_common": 12}, params, ["a", "b"])
    batch = [{"common": torch.rand(8, 12)}, {"common": torch.rand(8, 12) + 0.5}]
    m.train()
    warm = m.loss(batch)  # warm-up step: the VAE alone
    assert warm.parts["clust"] == 0 and m._pending_ema is None
    torch.testing.assert_close(warm.total, warm.parts["recon"] + params["beta"] * warm.parts["kl"])
    rec = m.loss(batch)
    assert int(m.step) == 2 and m._pending_ema is not None
    assert torch.isfinite(rec.total) and rec.parts["sup"] == 0
    before = m.prototypes.detach().clone()
    rec.total.backward()  # the EMA must not have touched the graph's prototypes
    m.loss(batch)
    assert not torch.equal(before, m.prototypes.detach())
    with torch.no_grad():
        m.prototypes.copy_(torch.eye(4))
    assert m.loss(batch).parts["repulse"] == 0  # cosines 0 < target 0.1


def expect_error(match, data, exc=ValueError, **kw):
    snaps = {n: snapshot(a) for n, a in data.items()}
    with pytest.raises(exc, match=match):
        sf.integrate(data, method="scbiot_vae", **{**FAST, **kw})
    for n, a in data.items():
        assert_unchanged(a, snaps[n])


@pytest.mark.parametrize("kw, match", [
    (dict(reference="10x_5p"), "takes no reference"),
    (dict(n_latent=1), "n_latent must be an integer >= 2"),
    (dict(n_prototypes=1.5), "n_prototypes must be an integer >= 2"),
    (dict(n_hidden=(128, 0)), "n_hidden must be"),
    (dict(proto_tau=0.0), "proto_tau must be a number > 0"),
    (dict(proto_ema_m=1.0), r"proto_ema_m must be in \[0, 1\)"),
    (dict(conf_thr=1.5), r"conf_thr must be in \(0, 1\]"),
    (dict(repulse_target=2.0), r"repulse_target must be a cosine in \[-1, 1\]"),
    (dict(label_eps=-0.1), r"label_eps must be in \[0, 1\)"),
    (dict(lam_cons=-1.0), "lam_cons must be a finite number >= 0"),
    (dict(beta=float("nan")), "beta must be a finite number >= 0"),
    (dict(ramp_sup_steps=-5), "ramp_sup_steps must be an integer >= 0"),
    (dict(warmup_steps=1.5), "warmup_steps must be an integer >= 0"),
    (dict(z_clip=0), "z_clip must be a number > 0"),
])
def test_bad_params_rejected_before_training(pbmc, kw, match):
    expect_error(match, split(pbmc), **kw)


def test_bad_labels_rejected(pbmc):
    data = split(pbmc)
    expect_error("not an obs column of any dataset", data, KeyError, label_key="celltype")
    data["10x_5p"].obs.loc[data["10x_5p"].obs_names[0], "cell_type"] = np.nan
    expect_error("missing values", data, label_key="cell_type")
