"""Issue 16 options of DAVAE and uniPort (bench/batch_integration/RESULTS.md): DAVAE's KL weight
and warm-up, negative-binomial likelihood and cell-count budget; uniPort's reduction of the OT
losses of several dataset pairs."""
import numpy as np
import pandas as pd
import pytest
import torch

import scferry as sf
from scferry.methods.davae import DAVAE
from helpers import assert_unchanged, snapshot, split

FAST = dict(max_iter=60, progress=False, n_common_genes=800, device="cpu")


def test_kl_weight_and_warmup_weigh_the_kl_term(pbmc):
    """The logged total is recon + beta * kl_weight * kl + lambda * p * domain, beta rising
    linearly from 0 over kl_warmup steps (1 without warm-up); kl_weight 0.5 by default."""
    data = split(pbmc)
    kw = {**FAST, "max_iter": 1}
    for extra, beta in (({}, 0.5), ({"kl_weight": 1.0}, 1.0), ({"kl_warmup": 100}, 0.0)):
        h = sf.integrate(data, method="davae", seed=0, **extra, **kw).history[0]
        rest = h["loss"] - h["recon"] - 3.0 * 800 * h["domain"]
        assert h["kl"] > 0.3
        np.testing.assert_allclose(rest, beta * h["kl"], atol=0.02)


def test_nb_likelihood_on_counts(pbmc):
    data = split(pbmc)
    snaps = {k: snapshot(a) for k, a in data.items()}
    model = sf.integrate(data, method="davae", seed=0, likelihood="nb", **FAST)
    for k, a in data.items():
        assert_unchanged(a, snaps[k], allowed_obsm={"X_scferry"})
        assert np.isfinite(a.obsm["X_scferry"]).all()
    assert np.isfinite(model.history[-1]["recon"]) and model.history[-1]["recon"] > 0
    assert "_library" not in model.params and model.params["likelihood"] == "nb"
    # the decoder gives gene proportions
    import torch
    z = torch.zeros(3, model.params["n_latent"])
    p = model.module.decode(z, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(p.sum(1), torch.ones(3))


def test_nb_refuses_values_that_are_not_counts(pbmc):
    data = split(pbmc)
    for a in data.values():
        sf_log = a.X.copy().astype(np.float32)
        sf_log.data = np.log1p(sf_log.data * 3.7)
        a.X = sf_log
    with pytest.raises(ValueError, match="likelihood='nb' models counts"):
        sf.integrate(data, method="davae", seed=0, likelihood="nb", preprocess=False, **FAST)


@pytest.mark.parametrize("method, kw, words", [
    ("davae", dict(kl_warmup=-1), "kl_warmup must be an integer >= 0"),
    ("davae", dict(kl_warmup=2.5), "kl_warmup must be an integer >= 0"),
    ("davae", dict(likelihood="poisson"), "likelihood must be 'gaussian'"),
    ("davae", dict(domain_grad_cap=0), "domain_grad_cap must be a number > 0"),
    ("davae", dict(domain_grad_cap=float("inf")), "domain_grad_cap must be a number > 0"),
    ("davae", dict(domain_grad_cap="1"), "domain_grad_cap must be a number > 0"),
    ("davae", dict(kl_weight=-1), "kl_weight must be a finite number >= 0"),
    ("davae", dict(structure_weight=-0.1), "structure_weight must be a finite number >= 0"),
    ("davae", dict(structure_weight="1"), "structure_weight must be a finite number >= 0"),
    ("davae", dict(mnn_weight=float("nan")), "mnn_weight must be a finite number >= 0"),
    ("davae", dict(mnn_weight=True), "mnn_weight must be a finite number >= 0"),
    ("uniport", dict(pca_prior=1), "pca_prior must be True"),
    ("uniport", dict(pca_weight=-1.0), "pca_weight must be a finite number >= 0"),
    ("uniport", dict(pca_weight="4"), "pca_weight must be a finite number >= 0"),
    ("uniport", dict(pca_fit_weight=-1.0), "pca_fit_weight must be a finite number >= 0"),
    ("uniport", dict(pca_fit_weight=float("nan")), "pca_fit_weight must be a finite number >= 0"),
    ("uniport", dict(pca_prior=True, mode="diagonal"), "pca_prior guides horizontal integration"),
])
def test_bad_options(pbmc, method, kw, words):
    data = split(pbmc)
    snaps = {k: snapshot(a) for k, a in data.items()}
    with pytest.raises(ValueError, match=words):
        sf.integrate(data, method=method, **{**FAST, **kw})
    for k, a in data.items():
        assert_unchanged(a, snaps[k])


def test_uniport_pair_reduction_mean_divides_by_the_pairs(pbmc):
    """Three datasets, three OT pairs: the first step's OT term with 'mean' is the 'sum' one / 3
    (same seed: same minibatch, same network, same plans)."""
    data = split(pbmc)
    kw = dict(seed=0, max_iter=1, progress=False, n_common_genes=500, n_specific_genes=0, device="cpu")
    total = sf.integrate(data, method="uniport", pair_reduction="sum", **kw).history[0]["ot"]
    mean = sf.integrate(data, method="uniport", pair_reduction="mean", **kw).history[0]["ot"]
    assert total > 0
    np.testing.assert_allclose(mean, total / 3, rtol=1e-5)
    with pytest.raises(ValueError, match="pair_reduction must be 'sum'"):
        sf.integrate(data, method="uniport", pair_reduction="max", **kw)


def test_davae_budget_scales_with_the_cells(pbmc):
    """Default max_iter: 2.5 steps per cell within [500, 8000], recorded as a choice; a given
    max_iter wins."""
    assert DAVAE.train_defaults["max_iter"] == "auto"
    assert [DAVAE.auto_max_iter(n) for n in ([10, 20], [300, 300], [600, 600], [10_000, 10_000])] == \
        [500, 1500, 3000, 8000]
    small = {k: a[:60].copy() for k, a in split(pbmc).items()}  # 180 cells: the 500-step floor
    model = sf.integrate(small, method="davae", seed=0, progress=False, n_common_genes=300, device="cpu")
    assert model.train_params["max_iter"] == model.train_params["iterations_run"] == 500
    assert model.choices["max_iter"]["value"] == 500
    model = sf.integrate(small, method="davae", seed=0, **FAST)
    assert model.train_params["iterations_run"] == 60 and "max_iter" not in model.choices
    with pytest.raises(ValueError, match="has no automatic budget"):
        sf.integrate(small, method="uniport", max_iter="auto", progress=False)


def _lobo_transfer(data: dict) -> float:
    """Leave-one-dataset-out kNN (k = 15) label transfer on the datasets' X_scferry."""
    names = list(data)
    E = np.vstack([data[n].obsm["X_scferry"] for n in names])
    lab = np.concatenate([data[n].obs["cell_type"].astype(str).to_numpy() for n in names])
    held_by = np.concatenate([[n] * data[n].n_obs for n in names])
    acc = []
    for n in names:
        held = held_by == n
        pred, _ = sf.metrics.knn_label_transfer(E[~held], lab[~held], E[held], k=15)
        acc.append(sf.metrics.transfer_accuracy(lab[held], pred))
    return float(np.mean(acc))


def test_uniport_default_averages_the_pairs_and_keeps_cell_types(pbmc):
    """Three chemistries, three OT pairs: the default ('mean') transfers labels between the
    chemistries better than summing the pairs' OT losses (which weighs OT 3x a pair's and shrinks
    the latent), same seed and budget (bench/batch_integration/RESULTS.md). Measured with the
    paper's unguided OT (pca_prior=False), where the summed pairs collapse the latent."""
    from scferry.methods.uniport import UniPort
    assert UniPort.defaults["pair_reduction"] == "mean"
    kw = dict(seed=0, max_iter=400, progress=False, n_common_genes=800, device="cpu", pca_prior=False)
    scores = {}
    for reduction in (None, "sum"):
        data = split(pbmc)
        extra = {} if reduction is None else {"pair_reduction": reduction}
        model = sf.integrate(data, method="uniport", **kw, **extra)
        scores[reduction or model.params["pair_reduction"]] = _lobo_transfer(data)
    assert scores["mean"] > scores["sum"] + 0.03, scores


def _encoder_grads(module, batch, seed: int) -> list:
    """The encoder's gradient of one training loss on ``batch`` (same sample and dropout: seeded)."""
    module.train()
    module.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    module.loss(batch).total.backward()
    return [p.grad.clone() for p in (*module.encoder.parameters(), *module.mu.parameters())]


def test_davae_domain_grad_cap_bounds_the_reversed_gradient(pbmc):
    """domain_grad_cap scales the reversed domain gradient at the latent means down to at most cap
    times the ELBO's gradient there: a huge cap is the paper's plain reversal, a tiny cap leaves
    the encoder the ELBO's gradient alone (as domain_weight=0), and the classifier's own gradient
    is never scaled. The uncapped ratio is logged per epoch."""
    data = split(pbmc)
    model = sf.integrate(data, method="davae", seed=0, domain_grad_cap=1.0, **{**FAST, "max_iter": 2})
    assert "domain_grad_ratio" in model.history[-1] and model.history[-1]["domain_grad_ratio"] > 0
    module = model.module
    batch = [{"common": torch.from_numpy(model.transform(a[:32], n)["common"].toarray())}
             for n, a in data.items()]
    grads = {}
    for name, params in (("none", dict(domain_grad_cap=None)), ("huge", dict(domain_grad_cap=1e12)),
                         ("tiny", dict(domain_grad_cap=1e-12)),
                         ("elbo", dict(domain_grad_cap=None, domain_weight=0.0))):
        saved = dict(module.params)
        module.params.update(params)
        grads[name] = _encoder_grads(module, batch, seed=1)
        cls = [p.grad.clone() for p in module.classifier.parameters()]
        module.params.clear()
        module.params.update(saved)
        grads[name + "_cls"] = cls
    def rel(x, y):  # relative difference of two gradients (float32 sums in another order)
        a, b = (torch.cat([g.ravel() for g in grads[k]]) for k in (x, y))
        return float((a - b).norm() / a.norm())
    assert rel("none", "huge") < 1e-4 and rel("tiny", "elbo") < 1e-4
    assert rel("none", "elbo") > 0.1  # the domain term does move the encoder
    for a, b in zip(grads["none_cls"], grads["tiny_cls"]):
        torch.testing.assert_close(a, b)


def test_davae_default_caps_the_adversary_where_it_dominates(pbmc):
    """By default the reversed domain gradient is capped at 3x the ELBO's at the latent means: on
    three real chemistries it starts far above that (the cap binds in the first epoch), which is
    when, unbounded, the adversarial game oscillated and its end state changed with the draw on
    the spots-vs-cells pair (bench/batch_integration/RESULTS.md)."""
    assert DAVAE.defaults["domain_grad_cap"] == 3.0
    model = sf.integrate(split(pbmc), method="davae", seed=0, **{**FAST, "max_iter": 20})
    assert model.params["domain_grad_cap"] == 3.0
    ratios = [e["domain_grad_ratio"] for e in model.history]
    assert ratios[0] > 3.0, ratios


def test_uniport_guidance_pca_finds_cell_types_across_chemistries_better_unscaled(pbmc):
    """The guidance's space (GUIDANCE_COMPONENTS unscaled components of the joint PCA): a cell's
    nearest cells of the other chemistries share its type more often than in the Seurat / scanpy
    recipe's 30 scaled components (the guidance before session 44), and far more often than with
    the labels shuffled (bench/batch_integration/RESULTS.md, "uniPort's guidance: unscaled
    components")."""
    from scferry import pp
    from scferry.methods.uniport import GUIDANCE_COMPONENTS, _pca_guidance, shared_features
    from scferry.data import Dataset
    data = split(pbmc)
    sets = [Dataset(n, a, None, None) for n, a in data.items()]
    guide = _pca_guidance(sets, seed=0)
    assert [guide[n].shape for n in data] == [(a.n_obs, GUIDANCE_COMPONENTS) for a in data.values()]
    scaled = pp.joint_pca(sets, shared_features(sets), seed=0)

    def lobo(Z):
        for (n, a), z in zip(data.items(), Z):
            a.obsm["X_scferry"] = z
        return _lobo_transfer(data)

    now, before = lobo([guide[n] for n in data]), lobo(scaled)
    for a in data.values():
        a.obs["cell_type"] = np.random.default_rng(0).permutation(a.obs["cell_type"].to_numpy())
    shuffled = lobo([guide[n] for n in data])
    assert now > before + 0.01 and shuffled < 0.5, (now, before, shuffled)


def _shuffled_batches(adata, seed: int = 1):
    """The same cells dealt at random into three batches of equal size: no batch effect (the
    over-correction control)."""
    a = adata.copy()
    a.obs["batch"] = pd.Categorical(np.random.default_rng(seed).permutation(
        np.arange(a.n_obs) % 3).astype(str))
    return a


def test_uniport_pca_fit_targets_are_learnt_where_the_clusters_span_the_datasets(pbmc):
    """pca_fit_weight's targets: the guidance PCA centred within k-means clusters, and per cell
    the normalised entropy of the datasets in its cluster as the weight. Three chemistries keep
    their clusters apart (low weights); the same cells dealt at random into three batches share
    every cluster (weights near 1); one dataset beside copies of its cells shifted far away
    gets 0. Within a cluster every dataset's cells end with the same mean."""
    from scferry.data import Dataset
    from scferry.methods.uniport import _centred_within_clusters, _pca_guidance

    def targets(adata):
        sets = [Dataset(n, a, None, None) for n, a in split(adata).items()]
        guide = _pca_guidance(sets, seed=0)
        return guide, _centred_within_clusters(guide, seed=0)

    mean_w = {}
    for name, adata in (("chemistries", pbmc), ("shuffled", _shuffled_batches(pbmc))):
        guide, t = targets(adata)
        assert t["clusters"] == len(adata) // 30
        assert set(t["coords"]) == set(guide)
        for n in guide:
            assert t["coords"][n].shape == guide[n].shape and t["weights"][n].shape == (len(guide[n]),)
            assert np.all((t["weights"][n] >= 0) & (t["weights"][n] <= 1 + 1e-6))
        mean_w[name] = float(np.concatenate(list(t["weights"].values())).mean())
    # measured: shuffled 0.97, chemistries 0.32
    assert mean_w["shuffled"] > 0.8 and mean_w["chemistries"] < 0.5 * mean_w["shuffled"], mean_w
    # one dataset's clusters hold no other dataset: weight 0, coordinates unmoved by the centring
    guide = {"a": np.random.default_rng(0).normal(size=(90, 4)).astype(np.float32)}
    guide["b"] = guide["a"] + 100.0
    t = _centred_within_clusters(guide, seed=0)
    assert all(np.all(t["weights"][n] == 0) for n in guide)
    np.testing.assert_allclose(t["coords"]["a"], guide["a"], atol=1e-5)


def test_uniport_pca_fit_keeps_cell_types_without_a_batch_effect(pbmc_full):
    """The over-correction control: 1,200 real PBMCs dealt at random into three batches. With
    the centred guidance PCA as a regression target (the default) uniPort transfers labels
    between the batches better than without it (pca_fit_weight=0), same seeds and budget:
    there the clusters span the batches, so every cell's weight is near 1 and the encoder keeps
    the PCA's cell types (bench/batch_integration/RESULTS.md, "uniPort learns the centred
    guidance PCA"; measured 0.934 / 0.933 against 0.898 / 0.895)."""
    kw = dict(max_iter=400, progress=False, n_common_genes=800, device="cpu")
    for seed in (0, 1):
        scores = {}
        for w in (0.0, None):
            data = split(_shuffled_batches(pbmc_full))
            model = sf.integrate(data, method="uniport", seed=seed,
                                 **kw, **({} if w is None else {"pca_fit_weight": w}))
            scores[w] = _lobo_transfer(data)
        assert model.params["pca_fit_weight"] == 10.0 and "pca_fit_targets" not in model.params
        assert model.params["pca_fit_record"]["mean_weight"] > 0.8
        assert "pca_fit" in model.history[-1]
        assert scores[None] > scores[0.0] + 0.015, (seed, scores)


def test_uniport_pca_prior_keeps_cell_types_across_chemistries(pbmc):
    """pca_prior=True (horizontal mode): the minibatch OT's cost adds the sampled cells' squared
    distance in one PCA of the shared genes, so cells are transported to cells of similar
    expression; three real chemistries then transfer labels between each other better than with
    the unguided OT, same seeds and budget (bench/batch_integration/RESULTS.md, "uniPort's OT
    guided by a PCA of the shared genes")."""
    kw = dict(max_iter=400, progress=False, n_common_genes=800, device="cpu")
    gain = []
    for seed in (0, 1):
        scores = {}
        for prior in (False, True):
            data = split(pbmc)
            snaps = {k: snapshot(a) for k, a in data.items()}
            model = sf.integrate(data, method="uniport", seed=seed, pca_prior=prior, **kw)
            for k, a in data.items():
                assert_unchanged(a, snaps[k], allowed_obsm={"X_scferry"})
            assert model.params["pca_prior"] is prior and "pca_guidance" not in model.params
            scores[prior] = _lobo_transfer(data)
        gain.append(scores[True] - scores[False])
    assert min(gain) > 0 and np.mean(gain) > 0.02, gain

