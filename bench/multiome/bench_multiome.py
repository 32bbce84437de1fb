#!/usr/bin/env python
"""Paired multi-omics study (issues 7 and 19): scferry's paired methods (MinNet with and without
labels, uniPort vertical; uniPort diagonal and scMODAL on request) against a paired CCA and the
field's references totalVI (RNA + protein) and MultiVI (RNA + ATAC) from scvi-tools 1.4.2 (their
own venv, ``bench/venvs/setup_scvi.sh``), scored on held-apart cells embedded one modality at a
time; imputation across modalities; then MinNet's peak-gene analysis on SNARE-seq cortex.

    ~/.virtualenvs/r-scferry/bin/python bench/multiome/bench_multiome.py          # the study, 3 seeds
    ... bench_multiome.py --datasets snare --methods cca minnet --max-cells 3000 --seeds 0

Data (``../shared/data``, MANIFEST.md): ``snare`` = SNARE-seq adult mouse cortex, RNA + ATAC gene
activity (the sum of each gene's linked peaks, MinNet's input); ``snare_peaks`` = the same nuclei,
RNA + ATAC peaks; ``scicar`` = sci-CAR A549, RNA + ATAC peaks (binary; labels = dex time);
``scicar_gene`` = the same cells, the peaks as hg19 gene activity (``scferry.tl.gene_activity``);
``teaseq`` = TEA-seq PBMCs, RNA + 45 ADTs (isotype control dropped; published labels);
``cite`` = pbmc10k_cite_hvg, RNA (4,000 HVGs) + 14 ADTs (labels from RNA clusters named by
marker rules: RNA-side label scores are optimistic); ``cite_small`` = the 200-cell fixture.
``--max-cells`` subsamples cells (seeded, same cells in both modalities).

Protocol (MinNet's paper): per seed, cells are split 80/20 within each cell type. Every method
trains on the 80% pairs (MinNet also on their labels; ``minnet_nolabel`` on the pairing alone) and
embeds the held-apart 20% of each modality separately, with no pairing: scferry methods through
``sf.project``; CCA (``cca``: PCA of each log-normalised, scaled modality, CCA fitted on the
training pairs) through its fitted maps; MultiVI through its modality-specific encoders (the other
modality's counts are zero, which MultiVI reads as unmeasured); totalVI, which has no RNA-free
encoder, with the other modality's counts set to zero; ``multivi_protein`` = MultiVI's RNA +
protein mode (a protein encoder of its own: scvi-tools' model for protein-only cells). Each
reference reads the input its model is written for: MultiVI on ``snare`` reads the SNARE peaks of
the same nuclei (its accessibility part is a Bernoulli model of peaks whose network is sized from
the number of regions; ``--scvi-params '{"own_input": false}'`` gives it the gene activity, a
diagnosis). totalVI / MultiVI run their default epochs (with their early stopping) capped at
``--scvi-steps`` minibatch steps of 128 cells (the 2-core machine). Scores on the 20%
(``scferry.metrics``), cells of unknown type ("Mis", "unknown") left out of the label-based ones:

- foscttm: FOSCTTM between a cell's RNA and other-modality embeddings (lower is better);
- transfer: kNN (k = 15) label transfer from the *training* cells' RNA embedding to the held-apart
  cells' ATAC/ADT embedding, accuracy;
- silhouette: cell-type silhouette of both modalities together, scaled to [0, 1];
- batch_entropy: mixing of the two modalities (1 = fully mixed);
- impute_r: protein from the held-apart RNA (CITE-seq) or RNA from the held-apart ATAC, mean
  per-feature Pearson r against the measured log1p(counts per 10,000) (uniPort vertical:
  ``sf.impute``; totalVI / MultiVI: ``get_normalized_expression``, log1p-transformed);
- cpu_s: CPU seconds of integrate + project (+ impute) in the method's own process (one thread);
  peak_mib: the child process's VmHWM, imports included.

Each method runs in its own process. With ``--links`` (SNARE, after MinNet): kNN smoothing (k = 5),
100 mini-bulks within cell types, Spearman of each gene with the peaks within 150 kb of its TSS
(``sf.tl.peak_gene_links``), TSSs from ``bench/multiome/snare_cortex_tss_mm10.tsv`` (``make_tss_table.py``).
Outputs in ``--out`` (default bench/out/multiome): DATASET/seedS/METHOD/, scores.tsv (per seed),
summary.tsv and table.md (mean ± sd over seeds), links_*.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent  # bench/: shared helpers in common/, venvs in .venvs/, outputs in out/
sys.path[:0] = [str(HERE), str(BENCH / "common"), str(BENCH / "batch_integration")]
from bench_integration import markdown  # noqa: E402
from datasets import shared_data_dir  # noqa: E402
from procstat import status_mb  # noqa: E402

METHODS = ["cca", "seurat_cca", "minnet", "minnet_nolabel", "minnet_infonce", "minnet_nolabel_infonce",
           "minnet_nolabel_margin",
           "uniport_vertical", "uniport_diagonal", "scmodal",
           "totalvi", "multivi", "multivi_protein"]
PAIRED_METHODS = ["cca", "minnet", "minnet_nolabel", "uniport_vertical", "totalvi", "multivi"]  # the default
SCVI_METHODS = {"totalvi": "adt", "multivi": "atac",  # scvi-tools references, each for its kind of data
                "multivi_protein": "adt"}  # MultiVI's RNA + protein mode: a protein encoder of its own
DATASETS = ["snare", "snare_peaks", "scicar", "scicar_gene", "teaseq", "cite", "cite_small"]
PAIRED_DATASETS = ["snare", "snare_peaks", "scicar", "teaseq", "cite"]  # the default
FILES = {"snare": ("snare_cortex_rna.h5ad", "snare_cortex_atac_gene.h5ad", "atac"),
         "snare_peaks": ("snare_cortex_rna.h5ad", "snare_cortex_atac.h5ad", "atac"),
         "scicar": ("scicar_a549_rna.h5ad", "scicar_a549_atac.h5ad", "atac"),
         "teaseq": ("teaseq_pbmc_rna.h5ad", "teaseq_pbmc_adt.h5ad", "adt"),
         "cite": ("pbmc10k_cite_hvg_rna.h5ad", "pbmc10k_cite_hvg_adt.h5ad", "adt"),
         "cite_small": ("pbmc10k_cite_small_rna.h5ad", "pbmc10k_cite_small_adt.h5ad", "adt")}
# derived sets: the peaks of another set read as gene activity with a shipped TSS table
# (scferry.tl.gene_activity; sci-CAR's peaks are hg19, GEO GSE117089)
GENE_ACTIVITY = {"scicar_gene": ("scicar", "hg19")}
SCVI_PYTHON = BENCH / ".venvs" / "scvi" / "bin" / "python"  # bench/venvs/setup_scvi.sh
# A reference gets the input its model is written for: MultiVI's accessibility part is a Bernoulli
# model of peaks (binarised, network sized from the number of regions), so on SNARE it reads the
# peaks of the same nuclei (same cells, same split), not the gene activity the scferry methods get.
SCVI_OWN_INPUT = {("multivi", "snare"): "snare_peaks"}
UNKNOWN = {"Mis", "unknown"}
# TotalSeq-B panel of 10x pbmc_10k_protein_v3 -> coding gene (CD45RA/RO are both PTPRC isoforms)
ADT_GENES = {"CD3": "CD3E", "CD4": "CD4", "CD8a": "CD8A", "CD14": "CD14", "CD15": "FUT4",
             "CD16": "FCGR3A", "CD56": "NCAM1", "CD19": "CD19", "CD25": "IL2RA", "CD45RA": "PTPRC",
             "CD45RO": "PTPRC", "PD-1": "PDCD1", "TIGIT": "TIGIT", "CD127": "IL7R"}
TSS_FILE = HERE / "snare_cortex_tss_mm10.tsv"


# ------------------------------------------------------------------ data and split (deterministic)
def load(dataset: str, data_dir: str, max_cells: int, seed: int):
    import anndata as ad
    if dataset in GENE_ACTIVITY:
        import scferry as sf
        peaks, assembly = GENE_ACTIVITY[dataset]
        rna, oth, other = load(peaks, data_dir, max_cells, seed)
        return rna, sf.tl.gene_activity(oth, assembly), other
    f_rna, f_other, other = FILES[dataset]
    rna = ad.read_h5ad(os.path.join(data_dir, f_rna))
    oth = ad.read_h5ad(os.path.join(data_dir, f_other))
    if "isotype_control" in oth.var:  # not a marker (TEA-seq)
        oth = oth[:, ~oth.var["isotype_control"].astype(bool).to_numpy()].copy()
    oth = oth[rna.obs_names].copy() if set(oth.obs_names) == set(rna.obs_names) else oth
    assert (rna.obs_names == oth.obs_names).all(), "paired files must be row-aligned"
    if max_cells and rna.n_obs > max_cells:
        keep = np.sort(np.random.default_rng(seed).choice(rna.n_obs, max_cells, replace=False))
        rna, oth = rna[keep].copy(), oth[keep].copy()
    return rna, oth, other


def split(labels: pd.Series, frac: float, seed: int) -> np.ndarray:
    """Boolean test mask: ``frac`` of each cell type (at least one cell where a type has >= 2)."""
    rng = np.random.default_rng(seed + 1)
    test = np.zeros(len(labels), bool)
    for _, idx in pd.Series(np.arange(len(labels))).groupby(labels.to_numpy()):
        idx = rng.permutation(idx.to_numpy())
        n = int(round(frac * len(idx))) if len(idx) >= 2 else 0
        test[idx[:max(n, 1) if len(idx) >= 2 else 0]] = True
    return test


def lognorm(X):
    import scipy.sparse as sp
    X = sp.csr_matrix(X, dtype=np.float64)
    tot = np.asarray(X.sum(axis=1)).ravel()
    X = sp.diags(1e4 / np.maximum(tot, 1e-12)) @ X
    X.data = np.log1p(X.data)
    return X.tocsr()


def linked_table(dataset: str, rna, oth) -> pd.DataFrame:
    """Feature links RNA -> other: shared names (gene activity) or the ADT-gene table."""
    if dataset.startswith("cite"):
        pairs = [(g, p) for p, g in ADT_GENES.items() if p in oth.var_names and g in rna.var_names]
    else:
        pairs = [(g, g) for g in rna.var_names if g in oth.var_names]
    return pd.DataFrame(pairs, columns=["rna", "other"])


# ------------------------------------------------------------------ one method, in its own process
def paired_cca(rna, oth, test: np.ndarray, seed: int, n_pcs: int = 30, n_comps: int = 10):
    """The paired linear baseline: each modality log-normalised, scaled, PCA (fit on the training
    cells), CCA fitted on the training pairs; held-apart cells of each modality through the maps."""
    from sklearn.cross_decomposition import CCA
    from sklearn.decomposition import PCA

    def fit(X):
        L = lognorm(X).toarray()
        mu, sd = L[~test].mean(0), L[~test].std(0) + 1e-6
        L = (L - mu) / sd
        return PCA(n_components=min(n_pcs, L.shape[1] - 1), random_state=seed).fit(L[~test]).transform(L)

    A, B = fit(rna.X), fit(oth.X)
    cca = CCA(n_components=min(n_comps, A.shape[1], B.shape[1]), max_iter=2000).fit(A[~test], B[~test])
    return cca.transform(A, B)


def measured(X) -> np.ndarray:
    """Measured values in the units every imputation is scored in: log1p(counts per 10,000)."""
    return lognorm(X).toarray().astype(np.float32)


def child(method: str, dataset: str, ddir: Path, args) -> None:
    t0, c0 = time.perf_counter(), time.process_time()
    import torch
    torch.set_num_threads(args.threads)
    rna, oth, other = load(dataset, args.data_dir, args.max_cells, args.seed)
    test = split(rna.obs["cell_type"].astype(str), args.test_frac, args.seed)
    out = ddir / method
    out.mkdir(parents=True, exist_ok=True)
    extra, imputed = {}, {}
    t1, c1 = time.perf_counter(), time.process_time()
    if method in SCVI_METHODS:
        if SCVI_METHODS[method] != other:
            raise SystemExit(f"{method} is for RNA + {SCVI_METHODS[method]} data, not {dataset}")
        sp_ = json.loads(args.scvi_params or "{}")
        own = SCVI_OWN_INPUT.get((method, dataset)) if sp_.pop("own_input", True) else None
        if own:  # the same cells (same subsample and split), the other modality as the model expects it
            rna2, oth, _ = load(own, args.data_dir, args.max_cells, args.seed)
            assert (rna2.obs_names == rna.obs_names).all()
        all_rna, all_oth, imputed, extra = scvi_reference(method, rna, oth, test, args, sp_)
        extra["input"] = own or dataset
    elif method == "cca":
        all_rna, all_oth = paired_cca(rna, oth, test, args.seed)
    elif method == "seurat_cca":
        from scferry.methods.scmodal_cca import seurat_cca
        links = linked_table(dataset, rna, oth)
        if len(links) < 2:
            raise SystemExit(f"seurat_cca: {dataset} has no shared or linked features (RNA vs peaks)")
        X = lognorm(rna.X)[:, rna.var_names.get_indexer(links["rna"])]
        Y = lognorm(oth.X)[:, oth.var_names.get_indexer(links["other"])]
        k = min(20, len(links) - 1)
        all_rna, all_oth = seurat_cca(X, Y, n_components=k, seed=args.seed)
        extra = {"features": int(len(links)), "components": k}
    else:
        import scferry as sf
        name = method.split("_")[0]
        kw = dict(seed=args.seed, progress=False)
        if args.max_iter:
            kw["max_iter"] = args.max_iter
        kw.update(json.loads(args.params or "{}"))  # hand-set hyper-parameters (measurements)
        if name == "uniport":
            kw["mode"] = method.split("_")[1]
        if name == "minnet" and "nolabel" not in method:
            kw["label_key"] = "cell_type"
        if method.endswith(("_infonce", "_margin")):  # the objective set by hand (measurements)
            kw["objective"] = method.rsplit("_", 1)[1]
        if name == "minnet" and other == "adt":
            kw.setdefault("negatives", "within")  # the paper's choice for RNA + protein
        if name == "scmodal":
            if other == "adt":
                kw["linked"] = linked_table(dataset, rna, oth).rename(columns={"other": other})
            elif dataset == "scicar":  # no shared names: CCA-extension links from cell-type means
                kw.update(linked="cca", label_key="cell_type")
                extra["semi_supervised"] = True
        tr = {"rna": rna[~test].copy(), other: oth[~test].copy()}
        model = sf.integrate(tr, method=name, **kw)
        z_rna = sf.project(model, rna[test].copy(), dataset="rna")
        z_oth = sf.project(model, oth[test].copy(), dataset=other)
        all_rna = np.zeros((rna.n_obs, z_rna.shape[1]), np.float32)
        all_oth = np.zeros_like(all_rna)
        all_rna[~test], all_rna[test] = tr["rna"].obsm["X_scferry"], z_rna
        all_oth[~test], all_oth[test] = tr[other].obsm["X_scferry"], z_oth
        if model.module.paired:  # imputation across modalities, held-apart cells (decoder or kNN)
            import warnings
            src, target = (rna, other) if other == "adt" else (oth, "rna")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", sf.ScferryWarning)
                imp = sf.impute(model, src[test].copy(), target=target)
            extra_impute = imp.uns["scferry_impute"]["method"]
            imputed = {"features": list(imp.var_names), "values": np.asarray(imp.X, np.float32)}
        extra = {"iterations": model.train_params.get("iterations_run"),
                 "impute_method": locals().get("extra_impute"),
                 "params": {k: v for k, v in model.params.items()
                            if isinstance(v, (int, float, str, bool)) or v is None}}
    run_s, cpu_s = time.perf_counter() - t1, time.process_time() - c1
    np.save(out / "all_rna.npy", np.asarray(all_rna, np.float32))
    np.save(out / "all_other.npy", np.asarray(all_oth, np.float32))
    if imputed:
        np.save(out / "imputed.npy", imputed["values"])
        (out / "imputed_features.txt").write_text("\n".join(imputed["features"]) + "\n")
    json.dump({"run_seconds": run_s, "cpu_seconds": cpu_s, "total_seconds": time.perf_counter() - t0,
               "total_cpu_seconds": time.process_time() - c0,
               "peak_rss_mb": status_mb("VmHWM"), "n_train": int((~test).sum()),
               "n_test": int(test.sum()), **extra}, open(out / "timing.json", "w"), indent=1, default=str)


def scvi_reference(method: str, rna, oth, test: np.ndarray, args, params: dict | None = None):
    """totalVI (RNA + protein; Gayoso et al., Nat Methods 2021) or MultiVI (RNA + ATAC; Ashuach et
    al., Nat Methods 2023), scvi-tools 1.4.2 in its own venv, trained on the training pairs.
    Held-apart cells are embedded per modality, the other modality's counts set to zero: MultiVI
    reads a cell with zero counts in one modality as unmeasured there (its mixed-modality design);
    totalVI has no RNA-free encoder, so its protein-only cells are a zero-RNA input (the closest
    it has). Imputation: protein from the held-apart RNA (totalVI, ``get_normalized_expression``
    protein part, proteins masked), RNA from the held-apart ATAC (MultiVI). Budget: the model's
    default epochs (with their default early stopping), capped at ``args.scvi_steps`` // the
    steps of 128 cells per epoch. ``params`` (``--scvi-params``, diagnoses): ``binarize`` (the other
    modality as x > 0) and keywords for the model's constructor (``n_latent``, ``n_hidden``, ...)."""
    import anndata as ad
    import scipy.sparse as sp
    import scvi
    import torch
    torch.set_num_threads(args.threads)
    scvi.settings.seed = args.seed
    scvi.settings.num_threads = args.threads
    scvi.settings.dl_num_workers = 0
    Xr = sp.csr_matrix(rna.X, dtype=np.float32)
    Xo = sp.csr_matrix(oth.X, dtype=np.float32)
    params = dict(params or {})
    if params.pop("binarize", False):
        Xo.data = (Xo.data > 0).astype(np.float32)
    n_train = int((~test).sum())
    steps_per_epoch = int(np.ceil(0.9 * n_train / 128))  # scvi: 90 % train split, batch 128
    if method == "totalvi":
        def make(rows, rna_on=True, adt_on=True):
            a = ad.AnnData(Xr[rows] if rna_on else sp.csr_matrix((len(rows), Xr.shape[1]), dtype=np.float32),
                           obs=pd.DataFrame(index=rna.obs_names[rows].astype(str)),
                           var=pd.DataFrame(index=rna.var_names.astype(str)))
            a.obsm["protein_expression"] = pd.DataFrame(Xo[rows].toarray() * adt_on, index=a.obs_names,
                                                        columns=oth.var_names.astype(str))
            return a
        tr = make(np.flatnonzero(~test))
        scvi.model.TOTALVI.setup_anndata(tr, protein_expression_obsm_key="protein_expression")
        model = scvi.model.TOTALVI(tr, **params)
        epochs = min(int(np.clip(round(20000 / n_train * 400), 1, 400)), max(1, args.scvi_steps // steps_per_epoch))
        model.train(max_epochs=epochs, accelerator="cpu", devices=1, enable_progress_bar=False)
        te = np.flatnonzero(test)
        q_rna, q_adt = make(te, adt_on=False), make(te, rna_on=False)
        latent = {}
        for key, q in (("rna", q_rna), ("other", q_adt), ("train_rna", make(np.flatnonzero(~test), adt_on=False)),
                       ("train_other", make(np.flatnonzero(~test), rna_on=False))):
            latent[key] = model.get_latent_representation(q)
        _, pro = model.get_normalized_expression(q_rna, return_mean=True)
        imputed = {"features": list(oth.var_names.astype(str)), "values": np.log1p(np.asarray(pro, np.float64))}
    else:  # MultiVI: RNA + ATAC, or RNA + protein (its protein modality, for protein-only cells)
        import mudata as md
        layer, mod = ("protein_layer", "protein") if method == "multivi_protein" else ("atac_layer", "accessibility")

        def make(rows, rna_on=True, atac_on=True):
            def one(X, names, on):
                return ad.AnnData(X[rows] if on else sp.csr_matrix((len(rows), X.shape[1]), dtype=np.float32),
                                  obs=pd.DataFrame(index=rna.obs_names[rows].astype(str)),
                                  var=pd.DataFrame(index=pd.Index(names).astype(str)))
            key = layer.split("_")[0]  # "atac" / "protein"
            m = md.MuData({"rna": one(Xr, rna.var_names, rna_on), key: one(Xo, oth.var_names, atac_on)})
            scvi.model.MULTIVI.setup_mudata(m, modalities={"rna_layer": "rna", layer: key})
            return m
        tr = make(np.flatnonzero(~test))
        model = scvi.model.MULTIVI(tr, **params)
        epochs = min(500, max(1, args.scvi_steps // steps_per_epoch))
        model.train(max_epochs=epochs, accelerator="cpu", devices=1, enable_progress_bar=False)
        te, trn = np.flatnonzero(test), np.flatnonzero(~test)
        q_atac = make(te, rna_on=False)
        latent = {"rna": model.get_latent_representation(make(te, atac_on=False), modality="expression"),
                  "other": model.get_latent_representation(q_atac, modality=mod),
                  "train_rna": model.get_latent_representation(make(trn, atac_on=False), modality="expression"),
                  "train_other": model.get_latent_representation(make(trn, rna_on=False), modality=mod)}
        imputed = {}
        if method == "multivi":  # RNA from the ATAC-only cells (MultiVI has no protein imputation)
            expr = model.get_normalized_expression(q_atac, return_numpy=True)  # joint z = ATAC's alone
            imputed = {"features": list(rna.var_names.astype(str)),
                       "values": np.log1p(1e4 * np.asarray(expr, np.float64))}
    all_rna = np.zeros((rna.n_obs, latent["rna"].shape[1]), np.float32)
    all_oth = np.zeros_like(all_rna)
    all_rna[~test], all_rna[test] = latent["train_rna"], latent["rna"]
    all_oth[~test], all_oth[test] = latent["train_other"], latent["other"]
    if imputed:
        imputed["values"] = imputed["values"].astype(np.float32)
    hist = model.history.get("elbo_train")
    run = len(hist) if hist is not None else epochs  # early stopping may end before the cap
    batch = 256 if method == "totalvi" else 128  # the models' default minibatch sizes
    return all_rna, all_oth, imputed, {"epochs": epochs, "epochs_run": run,
                                       "iterations": run * int(np.ceil(0.9 * n_train / batch)),
                                       "n_latent": int(model.module.n_latent),
                                       "scvi_version": scvi.__version__,
                                       "last_elbo": float(hist.iloc[-1, 0]) if hist is not None else None}


def run_method(method: str, dataset: str, ddir: Path, args) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OPENBLAS_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads)}
    python = sys.executable
    if method in SCVI_METHODS:
        python = str(args.scvi_python)
        if not Path(python).exists():
            raise RuntimeError(f"{method}: no scvi-tools venv at {python} (bash bench/venvs/setup_scvi.sh)")
    cmd = [python, __file__, "--_child", method, dataset, str(ddir), "--seed", str(args.seed),
           "--threads", str(args.threads), "--max-cells", str(args.max_cells), "--max-iter",
           str(args.max_iter), "--test-frac", str(args.test_frac), "--data-dir", args.data_dir,
           "--scvi-steps", str(args.scvi_steps), "--params", args.params or "",
           "--scvi-params", args.scvi_params or ""]
    ddir.mkdir(parents=True, exist_ok=True)
    with open(ddir / f"{method}.log", "w") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if rc != 0:
        tail = (ddir / f"{method}.log").read_text().strip().splitlines()[-1:]
        raise RuntimeError(f"{method} on {dataset} failed (exit {rc}): {tail}")


# ------------------------------------------------------------------ scoring
def score(all_rna: np.ndarray, all_oth: np.ndarray, labels: np.ndarray, test: np.ndarray, other: str,
          seed: int, k: int = 15) -> dict:
    """Scores on the held-apart cells; transfer = kNN from the training cells' RNA embedding to
    the held-apart cells' other-modality embedding."""
    from scferry import metrics
    z_rna, z_oth = all_rna[test], all_oth[test]
    known = ~np.isin(labels, list(UNKNOWN))
    kt, ktr = known[test], known[~test]
    both = np.vstack([z_rna, z_oth])
    modality = np.array(["rna"] * len(z_rna) + [other] * len(z_oth))
    lab, lab2 = labels[test], np.concatenate([labels[test], labels[test]])
    k2 = np.concatenate([kt, kt])
    pred, _ = metrics.knn_label_transfer(all_rna[~test][ktr], labels[~test][ktr], z_oth[kt], k=k)
    return {"foscttm": metrics.foscttm(z_rna, z_oth),
            "transfer": metrics.transfer_accuracy(lab[kt], pred),
            "silhouette": metrics.silhouette(both[k2], lab2[k2], seed=seed),
            "batch_entropy": metrics.batch_entropy(both, modality, n_neighbors=min(100, len(both) // 4),
                                                   seed=seed)}


def impute_score(mdir: Path, truth: np.ndarray, names) -> dict:
    """Mean per-feature Pearson r between imputed and measured values on the held-apart cells,
    over the features with measured variance (``truth``: cells x ``names``, log-normalised)."""
    if not (mdir / "imputed.npy").exists():
        return {}
    pred = np.load(mdir / "imputed.npy")
    feats = (mdir / "imputed_features.txt").read_text().split()
    idx = pd.Index([str(n) for n in names]).get_indexer(feats)
    ok = idx >= 0
    r = feature_pearson(pred[:, ok], truth[:, idx[ok]])
    return {"impute_r": float(r.mean()), "impute_features": int(r.size)}


def feature_pearson(P: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Per-feature Pearson r between predicted ``P`` and measured ``T`` (cells x features), over
    the features where both vary."""
    P, T = P - P.mean(0), T - T.mean(0)
    den = np.sqrt((P ** 2).sum(0) * (T ** 2).sum(0))
    good = den > 0
    return (P * T).sum(0)[good] / den[good]


# ------------------------------------------------------------------ MinNet downstream on SNARE
def links(ddir: Path, args, method: str = "minnet") -> pd.DataFrame:
    """Peak-gene Spearman on 100 mini-bulks within cell types: unsmoothed, 5-NN smoothed (both from
    the joint embedding, each modality's own cells) and true pairs (both modalities of the same nuclei
    grouped together: the paired upper reference)."""
    import anndata as ad
    import scferry as sf
    rna, _, _ = load("snare", args.data_dir, args.max_cells, args.seed)
    atac = ad.read_h5ad(os.path.join(args.data_dir, "snare_cortex_atac.h5ad"))[rna.obs_names].copy()
    rna.obsm["X_scferry"] = np.load(ddir / method / "all_rna.npy")
    atac.obsm["X_scferry"] = np.load(ddir / method / "all_other.npy")
    keep = ~rna.obs["cell_type"].isin(UNKNOWN).to_numpy()
    rna, atac = rna[keep].copy(), atac[keep].copy()
    tss = pd.read_csv(TSS_FILE, sep="\t", index_col="gene")
    rows, tables = [], {}
    for variant in ("unsmoothed", "smoothed_5nn", "true_pairs"):
        r, a = rna.copy(), atac.copy()
        layer = None
        if variant == "smoothed_5nn":
            sf.tl.knn_smooth(r, k=5)
            sf.tl.knn_smooth(a, k=5)
            layer = "scferry_smoothed"
        if variant == "true_pairs":
            a.obsm["X_scferry"] = r.obsm["X_scferry"]
        t0 = time.perf_counter()
        bulks = sf.tl.mini_bulk({"rna": r, "atac": a}, n_bulks=100, label_key="cell_type", layer=layer,
                                seed=args.seed)
        tab = sf.tl.peak_gene_links(bulks["rna"], bulks["atac"], tss, window=150_000)
        d = tab["distance"].abs()
        rows.append({"variant": variant, "bulks": bulks["rna"].n_obs, "genes": tab["gene"].nunique(),
                     "pairs": len(tab), "rho_le2kb": tab.loc[d <= 2000, "rho"].mean(),
                     "rho_2_25kb": tab.loc[(d > 2000) & (d <= 25000), "rho"].mean(),
                     "rho_gt25kb": tab.loc[d > 25000, "rho"].mean(),
                     "pos_fdr05": float(((tab["fdr"] < 0.05) & (tab["rho"] > 0)).mean()),
                     "seconds": time.perf_counter() - t0})
        tables[variant] = tab
    tables["smoothed_5nn"].to_csv(args.out / "links_snare_minnet_smoothed.tsv.gz", sep="\t", index=False)
    return pd.DataFrame(rows)


def applicable(method: str, dataset: str, other: str) -> bool:
    if method in SCVI_METHODS:
        return SCVI_METHODS[method] == other
    return not (method == "seurat_cca" and dataset in ("scicar", "snare_peaks"))  # no linked features


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd over seeds per dataset and method."""
    cols = [c for c in ("foscttm", "transfer", "silhouette", "batch_entropy", "impute_r", "cpu_s", "peak_mib")
            if c in table]
    rows = []
    for (d, m), g in table.groupby(["dataset", "method"], sort=False):
        row = {"dataset": d, "method": m, "seeds": len(g), "test": int(g["test"].iloc[0])}
        for c in cols:
            v = g[c].astype(float).dropna()
            if c in ("cpu_s", "peak_mib"):
                row[c] = f"{v.mean():.0f}" if len(v) else ""
            else:  # one seed: the value alone (no sd)
                row[c] = f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else (
                    f"{v.iloc[0]:.3f}" if len(v) else "")
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=PAIRED_DATASETS, choices=DATASETS)
    p.add_argument("--methods", nargs="+", default=PAIRED_METHODS, choices=METHODS)
    p.add_argument("--data-dir", default=shared_data_dir())
    p.add_argument("--max-cells", type=int, default=0, help="subsample cells (0 = all)")
    p.add_argument("--max-iter", type=int, default=0, help="training steps for every scferry method (0 = defaults)")
    p.add_argument("--scvi-steps", type=int, default=4000,
                   help="cap on totalVI / MultiVI minibatch steps (their default epochs otherwise)")
    p.add_argument("--scvi-python", type=Path, default=SCVI_PYTHON)
    p.add_argument("--params", default="", help="JSON of extra sf.integrate keywords (measurements)")
    p.add_argument("--scvi-params", default="",
                   help="JSON for totalVI / MultiVI (diagnoses): binarize, own_input (false: the dataset's "
                        "input as given), model keywords")
    p.add_argument("--test-frac", type=float, default=0.2)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one 80/20 split and fit per seed")
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--links", action="store_true", help="SNARE peak-gene analysis from MinNet (seed 0)")
    p.add_argument("--out", type=Path, default=BENCH / "out" / "multiome")
    p.add_argument("--score-only", action="store_true", help="rescore finished runs")
    p.add_argument("--_child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.out = args.out.resolve()
    if args._child:
        child(args._child[0], args._child[1], Path(args._child[2]), args)
        return 0

    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for dataset in args.datasets:
        for seed in args.seeds:
            args.seed = seed
            ddir = args.out / dataset / f"seed{seed}"
            rna, oth, other = load(dataset, args.data_dir, args.max_cells, seed)
            labels = rna.obs["cell_type"].astype(str).to_numpy()
            test = split(pd.Series(labels), args.test_frac, seed)
            truth = (measured(oth.X)[test], oth.var_names) if other == "adt" else (measured(rna.X)[test],
                                                                                  rna.var_names)
            for method in [m for m in METHODS if m in args.methods and applicable(m, dataset, other)]:
                if not args.score_only:
                    print(f"[{dataset} seed {seed}] {method} ...", flush=True)
                    try:
                        run_method(method, dataset, ddir, args)
                    except RuntimeError as err:
                        print("   ", err, flush=True)
                        continue
                if not (ddir / method / "timing.json").exists():
                    continue
                timing = json.load(open(ddir / method / "timing.json"))
                row = {"dataset": dataset, "method": method, "seed": seed, "cells": rna.n_obs,
                       "test": int(test.sum()),
                       **score(np.load(ddir / method / "all_rna.npy"), np.load(ddir / method / "all_other.npy"),
                               labels, test, other, seed),
                       **impute_score(ddir / method, *truth),
                       "cpu_s": timing.get("cpu_seconds"), "run_s": timing["run_seconds"],
                       "peak_mib": timing["peak_rss_mb"], "steps": timing.get("iterations") or ""}
                rows.append(row)
                print("   ", {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    if rows:
        table = pd.DataFrame(rows)
        table.to_csv(args.out / "scores.tsv", sep="\t", index=False)
        summary = summarise(table)
        summary.to_csv(args.out / "summary.tsv", sep="\t", index=False)
        (args.out / "table.md").write_text(markdown(summary) + "\n")
        print(markdown(summary))
    if args.links and "snare" in args.datasets:
        args.seed = args.seeds[0]
        sdir = args.out / "snare" / f"seed{args.seed}"
        method = "minnet" if (sdir / "minnet" / "all_rna.npy").exists() else "cca"
        summary = links(sdir, args, method)
        summary.insert(0, "embedding", method)
        summary.to_csv(args.out / "links_summary.tsv", sep="\t", index=False)
        (args.out / "links_table.md").write_text(markdown(summary) + "\n")
        print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
