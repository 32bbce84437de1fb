"""``scferry.integrate``: validate, preprocess, train any registered method, write the embedding."""
from __future__ import annotations

import math
from functools import partial
from numbers import Integral, Real
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from . import ondisk, pp
from .data import check_obs_column, check_paired, collect_datasets, shared_features, take_rows, warn_if_not_counts
from .errors import announce, record_choice
from .model import EMBEDDING_KEY, Model
from .methods import get_method
from . import distributed
from .distributed import check_cells, iters_per_epoch, resolve_placement
from .train import MinibatchSampler, batch_sizes, callers_threads, fit, seeded

MIN_SHARED_GENES = 50  # fewer shared genes used: the alignment rests on too little, say so


def integrate(
    datasets: Mapping[str, AnnData] | Sequence[AnnData] | AnnData,
    method: str = "uniport",
    *,
    batch_key: str | None = None,
    layer: str | None = None,
    reference: str | None = None,
    label_key: str | None = None,
    preprocess: bool = True,
    specific_genes: Mapping[str, Sequence[str]] | None = None,
    max_iter: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    batch_size: int | None = None,
    patience: int | None | str = "default",
    seed: int = 0,
    device: str = "auto",
    accelerator: str = "auto",
    devices: int = 1,
    strategy: str = "auto",
    progress: bool = True,
    **params: Any,
) -> Model:
    """Integrate several single-cell datasets into one latent space.

    Parameters
    ----------
    datasets
        ``{"rna": rna, "spatial": st}`` (name -> AnnData with raw counts in ``.X`` or ``layer``),
        a list of AnnData, or one AnnData whose ``obs[batch_key]`` names the datasets.
    method
        One of :func:`scferry.available_methods`. ``"gw"``: Gromov-Wasserstein alignment of two
        unpaired modalities without training (SCOT/Pamona-style, between metacells; see
        :mod:`scferry.methods.gw`): seconds to a minute, no labels, no shared features needed;
        parameters ``n_metacells``, ``k``, ``epsilon``, ``kinds``, ``linked``, ... .
    reference
        Name of the reference dataset: the others are aligned to it (uniPort: OT pairs are
        (reference, other) and the reference side of the OT cost gets no gradient; DAVAE takes
        none).
    label_key
        ``obs`` column of cell labels, for methods trained with labels (``get_method(name).uses_labels``
        is "optional" or "required"). Datasets without the column count as unlabelled; missing
        values are an error. uniPort: turns on the prior cell-type correspondence (the OT cost
        between cells of different types raised by ``prior_alpha``).
    preprocess
        Run the method's preprocessing (uniPort: normalize_total, log1p, common and
        dataset-specific HVGs, per-dataset MaxAbs scaling; DAVAE: the same without
        dataset-specific genes and without scaling). ``False`` when done already: then all
        features are used and only the method's scaling is applied.
    specific_genes
        Genes to add to a dataset's specific genes, beyond its highly variable ones, e.g.
        ``{"rna": ["Gad1", "Trh"]}`` to impute them later (:func:`scferry.impute`); methods with
        dataset-specific decoders only (uniPort).
    max_iter, lr, weight_decay, batch_size, patience
        Training budget (optimiser steps), Adam learning rate, Adam's L2 weight decay (a number
        >= 0), cells per step (split evenly over datasets; a dataset with fewer cells than its
        share gives all its cells to every step), early-stopping patience in epochs (``None``
        disables early stopping). Defaults are the method's (``get_method(name).train_defaults``;
        uniPort's vertical mode has its own, weight decay 0.05 and 3,000 steps, recorded in
        ``model.choices``); a default ``max_iter="auto"`` is set from the number of cells by the
        method's ``auto_max_iter`` (DAVAE) and recorded in ``model.train_params["max_iter"]``
        and ``model.choices``.
    seed
        An integer >= 0. The same seed gives the same embedding on CPU with the same number of
        torch threads (``torch.set_num_threads``) on the same kind of processor. Another thread
        count, or another instruction set (e.g. AVX2 vs AVX-512), changes the last digits of
        floating-point sums, and training can amplify them: an adversarial method (DAVAE) may
        then end at a different embedding of similar quality (bench/reproducibility/RESULTS.md,
        bench/batch_integration/RESULTS.md, session 43). The fit uses
        its own random generators: the caller's global ``random``, numpy and torch generators,
        thread settings and environment are left as they were.
    device
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:1"``: the device of a
        single-process fit.
    accelerator, devices, strategy
        Data-parallel training on several processes (:mod:`scferry.distributed`, engine:
        PyTorch Lightning Fabric): ``accelerator`` ``"auto"`` (a GPU when one is visible, else
        the CPU), ``"cpu"`` or ``"gpu"``; ``devices`` the number of processes, one per device
        (GPUs, or CPU processes); ``strategy`` ``"auto"`` or ``"ddp"`` (the only multi-process
        strategy). ``devices=1`` (the default) is the single-process fit, unchanged. With
        ``devices=N``, each process draws its own ``batch_size`` cells per step (disjoint cells,
        so a step reads ``N * batch_size``; ``max_iter`` still counts steps), gradients and epoch
        losses are averaged over processes (early stopping decides on all), uniPort's kept plan
        is summed over processes, and the calling process writes the results once. Processes are
        started from inside the call (fork on CPU, each process on one torch thread; spawn on
        GPUs, where a script needs an ``if __name__ == "__main__":`` guard). Results are reproducible for a given seed and
        ``devices``, but differ from the single-process fit (other minibatches).
    progress
        Show a tqdm progress bar.
    **params
        Method hyper-parameters (``get_method(name).defaults``), e.g. ``n_latent=16``, all
        checked before any work. uniPort: ``mode=None`` (chosen from the data and announced:
        the same real cell names in the same order in every dataset -> "vertical", never from
        default integer names '0', '1', ...; shared feature names -> "horizontal"; none ->
        "diagonal"; pass ``mode="vertical"`` to state that the datasets are paired), per-cell OT
        marginal weights ``ot_marginals={name: weights}``, ``prior_alpha``, ``prior_pairs``,
        ``plan_eps`` (entropic regularisation of the plan kept for transfer and deconvolution).

    Returns
    -------
    A :class:`scferry.Model` (``method="gw"``: a :class:`scferry.methods.gw.GWModel`, which has
    no encoder for new cells). Writes ``obsm["X_scferry"]`` (cells x latent, float32) and
    ``uns["scferry"]`` (the model's id, method and the key: the tools refuse an embedding written
    by another model) on every input AnnData and nothing else (with one AnnData + ``batch_key``:
    on that object). Choices made for the user (uniPort's mode, the number of shared genes used)
    are announced with :class:`scferry.ScferryWarning` and recorded in ``model.choices``; so are
    fallbacks (e.g. minibatch OT solves that stopped before converging, counted in
    ``model.train_params["ot_unconverged"]``). Warned about, not refused: non-integer values
    where raw counts are expected, fewer than 50 shared genes.

    Notes
    -----
    Threads are the caller's: scferry sets no thread count and no environment variable. Set them
    once, e.g. ``torch.set_num_threads(4)``, or ``OMP_NUM_THREADS=4`` before starting Python; on
    a machine shared with other busy processes, ``OMP_WAIT_POLICY=PASSIVE`` (set before torch is
    imported) keeps OpenMP workers from spinning, which can make small training steps several
    times faster.
    """
    if isinstance(method, str) and method.lower() == "gw":
        if devices != 1 or strategy != "auto" or accelerator not in ("auto", "cpu"):
            raise ValueError("method='gw' has no training loop to spread over devices and runs on the "
                             "CPU: drop accelerator=, devices= and strategy=.")
        if label_key is not None or reference is not None or specific_genes is not None:
            raise ValueError("method='gw' uses no labels, reference or specific genes: drop label_key, "
                             "reference and specific_genes.")
        training = [k for k, v in dict(max_iter=max_iter, lr=lr, weight_decay=weight_decay,
                                       batch_size=batch_size).items() if v is not None]
        if training or patience != "default":
            raise ValueError(f"method='gw' trains no network: drop {', '.join(training or ['patience'])}.")
        from .methods.gw import integrate_gw
        return integrate_gw(datasets, batch_key=batch_key, layer=layer, seed=seed, progress=progress,
                            **params)
    cls = get_method(method)
    unknown = sorted(set(params) - set(cls.defaults))
    if unknown:
        raise TypeError(f"unknown parameter(s) {unknown} for method {cls.name!r}; its parameters: "
                        f"{sorted(cls.defaults)}.")
    hp = {**cls.defaults, **params, "reference": reference}
    if cls.seeded_inputs:  # uniPort's GW guidance, scMODAL's anchor space: built with the fit's seed
        hp["seed"] = seed
    cls.check_params(hp)
    given = {key: value for key, value in dict(max_iter=max_iter, lr=lr, weight_decay=weight_decay,
                                               batch_size=batch_size).items() if value is not None}
    if patience != "default":
        given["patience"] = patience
    tp = {**cls.train_defaults, **given}
    _check_positive(tp)
    if tp["max_iter"] == "auto" and cls.auto_max_iter is None:
        raise ValueError(f"method {cls.name!r} has no automatic budget: pass max_iter as a positive integer.")
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0; got {seed!r}.")
    seed = int(seed)
    placement = resolve_placement(device, accelerator, devices, strategy)
    dev = placement.device
    data = collect_datasets(datasets, batch_key=batch_key, layer=layer)
    names = [d.name for d in data]
    check_cells([d.n_obs for d in data], names, placement.devices)
    if reference is not None and reference not in names:
        raise ValueError(f"reference {reference!r} is not one of the datasets {names}.")
    on_disk = any(ondisk.is_on_disk(d) for d in data)
    if on_disk:
        ondisk.check_method(cls, data)
        if placement.distributed:
            raise ValueError(f"devices={placement.devices} with datasets on disk is not supported yet "
                             "(the training processes would share the open files): use devices=1, or "
                             "pass the datasets as AnnData objects in memory.")
    labels = _label_codes(data, label_key, cls)
    hp["_choices"] = {}  # Method.resolve records what it chose here (errors.record_choice)
    inputs, paired = cls.resolve(hp, data, labels)  # e.g. uniPort's mode, from params and data
    choices = hp.pop("_choices")
    tp = _mode_train_settings(cls, hp, given, choices)
    specific_genes = _check_specific_genes(specific_genes, data, cls, inputs)
    if paired:
        check_paired(data)

    n_specific = hp.get("n_specific_genes", 2000) if "specific" in inputs else 0
    n_common = hp.get("n_common_genes", 2000) if "common" in inputs else 0
    # on-disk datasets: statistics in one chunked pass, model inputs read by minibatch
    fit_transform = partial(ondisk.fit_transform, progress=progress) if on_disk else pp.fit_transform
    with callers_threads():  # the caller's torch thread count, whatever preprocessing's libraries do
        if preprocess:
            prep, views = fit_transform(data, n_common=n_common,
                                        n_specific=n_specific, scale=cls.scale_inputs,
                                        extra_specific=specific_genes,
                                        selection=hp.get("feature_selection") if n_specific else None)
        else:
            prep, views = fit_transform(data, n_common=math.inf if n_common else 0,
                                        n_specific=math.inf if n_specific and not n_common else 0,
                                        normalize=False,
                                        scale=cls.scale_inputs, extra_specific=specific_genes)
    if preprocess and not on_disk:  # on disk: checked in the statistics pass
        for d in data:
            X = d.adata.X if d.layer is None else d.adata.layers[d.layer]
            first = X if d.rows is None else take_rows(X, d.rows[:5000])  # the rows it checks
            warn_if_not_counts(first, f"dataset {d.name!r}", d.layer)
    if "common" in inputs:
        _record_common_genes(choices, len(prep.common_genes), len(shared_features(data)),
                             hp.get("n_common_genes"), preprocess)
    views = [{key: views[n][key] for key in inputs} for n in names]  # only what the method reads
    dims = cls.dims_from_views(views)
    if labels is not None:
        codes, dims["label_names"] = labels
        for v, c in zip(views, codes):
            v["labels"] = c

    n_cells = [d.n_obs for d in data]
    if tp["max_iter"] == "auto":  # the method's budget rule, from the number of cells
        tp["max_iter"] = int(cls.auto_max_iter(n_cells))
        record_choice(choices, "max_iter", tp["max_iter"],
                      f"{cls.name}'s training budget for {sum(n_cells)} cells (pass max_iter= to set it)")
    sizes = batch_sizes(n_cells, tp["batch_size"], placement.devices)
    fit_kwargs = dict(max_iter=tp["max_iter"], lr=tp["lr"], weight_decay=tp["weight_decay"],
                      iters_per_epoch=iters_per_epoch(n_cells, sizes, placement.devices),
                      patience=tp["patience"], progress=progress, desc=f"scferry {cls.name}")
    with seeded(seed, dev) as rng:  # local generators: the caller's random state is untouched
        module = cls(dims, hp, names)
        module.init_from_data(views)
        if placement.distributed:  # N processes train; this one loads rank 0's result
            out = distributed.run(distributed.Job(module, views, sizes, paired, seed, fit_kwargs), placement)
            module.load_state_dict(out["state"])
            module.load_extra_state(out["extra"])
            module.ot_solves, module.ot_unconverged = out["ot"]
            history = out["history"]
            tp["distributed"] = {**{k: v for k, v in out["launch"].items() if k != "rank0_pid"},
                                 "cells_per_step": [b * placement.devices for b in sizes]}
            module.to(dev)
        else:
            module.to(dev)
            sampler = MinibatchSampler(views, sizes, rng, dev, paired=paired)
            history = fit(module, sampler, **fit_kwargs)
        module.release_training_data()
    tp["iterations_run"] = history[-1]["iteration"] if history else 0
    _report_ot(module, tp)
    model = Model(module, prep, data, tp, history, batch_key=batch_key, choices=choices)
    if on_disk:  # streamed into each store's obsm, chunk by chunk
        ondisk.write_embedding(model, [{k: v[k] for k in inputs} for v in views], names, EMBEDDING_KEY)
    else:
        model.write_embedding({n: model.encode({k: v[k] for k in inputs}, n) for n, v in zip(names, views)},
                              EMBEDDING_KEY)
    return model


def _record_common_genes(choices: dict, n_used: int, n_shared: int, requested, preprocess: bool) -> None:
    """Record how many shared genes the model reads; warn when they are too few to align on."""
    how = (f"the {n_used} most variable of the {n_shared} genes the datasets share "
           f"(n_common_genes={requested})" if preprocess and n_used < n_shared else
           f"all {n_shared} genes the datasets share")
    record_choice(choices, "n_common_genes", n_used, how)
    if n_used < MIN_SHARED_GENES:
        announce(f"the datasets share only {n_used} gene name{'s' if n_used != 1 else ''}: the "
                 "integration rests on these alone and is unlikely to align cell types. Check the "
                 "gene identifiers (symbols vs Ensembl IDs, case), or, for data without shared "
                 "features, use method='uniport', mode='diagonal'.", stacklevel=3)


def _report_ot(module, tp: dict) -> None:
    """Count minibatch OT solves that stopped at their iteration limit (``Method.ot_solves``,
    ``Method.ot_unconverged``) in ``tp`` and warn once per fit when there were any."""
    solves, unconverged = int(getattr(module, "ot_solves", 0)), int(getattr(module, "ot_unconverged", 0))
    if not solves:
        return
    tp["ot_solves"], tp["ot_unconverged"] = solves, unconverged
    if unconverged:
        announce(
            f"{unconverged} of {solves} minibatch OT solves stopped at ot_iter="
            f"{module.params.get('ot_iter')} iterations before converging: their plans are "
            "approximate. Raise ot_iter, or ot_eps (a more diffuse plan converges faster).", stacklevel=3)


def _label_codes(data, label_key, cls) -> tuple[list[np.ndarray], list[str]] | None:
    """Integer codes of ``obs[label_key]`` per dataset (-1: dataset without the column) and the
    sorted categories, or None when the method is trained without labels."""
    if label_key is None:
        if cls.uses_labels == "required":
            raise ValueError(f"method {cls.name!r} is trained with cell labels: pass label_key= naming "
                             "the obs column of cell types (datasets without it count as unlabelled).")
        return None
    if cls.uses_labels is None:
        raise ValueError(f"method {cls.name!r} does not train with labels; drop label_key (use it in "
                         "scferry.transfer_labels after integrating).")
    if not isinstance(label_key, str):
        raise TypeError(f"label_key must be a column name (str); got {label_key!r}.")
    cols = {d.name: check_obs_column(d, label_key) for d in data if label_key in d.adata.obs.columns}
    if not cols:
        raise KeyError(f"label_key {label_key!r} is not an obs column of any dataset "
                       f"{[d.name for d in data]}; check the column name.")
    names = sorted({str(x) for c in cols.values() for x in pd.unique(c)})
    index = {n: i for i, n in enumerate(names)}
    codes = [np.array([index[str(x)] for x in cols[d.name]], dtype=np.int64) if d.name in cols
             else np.full(d.n_obs, -1, dtype=np.int64) for d in data]
    return codes, names


def _check_specific_genes(specific_genes, data, cls, inputs) -> dict[str, list[str]] | None:
    if specific_genes is None:
        return None
    if not isinstance(specific_genes, Mapping):
        raise TypeError("specific_genes must be a dict of dataset name -> list of genes; got "
                        f"{type(specific_genes).__name__}.")
    if "specific" not in inputs:
        raise ValueError(f"method {cls.name!r} has no dataset-specific genes; drop specific_genes.")
    by_name = {d.name: d for d in data}
    out = {}
    for name, genes in specific_genes.items():
        if name not in by_name:
            raise ValueError(f"specific_genes names {name!r}, not one of the datasets {list(by_name)}.")
        if isinstance(genes, str) or not all(isinstance(g, str) for g in genes):
            raise TypeError(f"specific_genes[{name!r}] must be a list of gene names.")
        genes = list(genes)
        present = set(by_name[name].var_names)
        missing = [g for g in genes if g not in present]
        if missing:
            raise ValueError(f"specific_genes[{name!r}]: {len(missing)} of {len(genes)} genes are not "
                             f"in dataset {name!r} (e.g. {missing[:5]}); check the gene identifiers.")
        out[name] = genes
    return out


def _mode_train_settings(cls, hp: dict, given: dict, choices: dict) -> dict:
    """The training settings once the method has resolved its mode: the mode's defaults
    (``Method.resolved_train_defaults``) under the user's values; a default that differs from
    the method's ``train_defaults`` because of the mode is recorded in ``choices``."""
    tp = {**cls.resolved_train_defaults(hp), **given}
    for key, value in tp.items():
        if key not in given and value != cls.train_defaults.get(key):
            record_choice(choices, key, value, f"{cls.name} {hp.get('mode')} mode's default "
                          f"(pass {key}= to set it)")
    return tp


def _check_positive(tp: dict) -> None:
    for key in ("max_iter", "batch_size"):
        if key == "max_iter" and tp[key] == "auto":  # a method default: set from the data later
            continue
        if not isinstance(tp[key], int) or tp[key] < 1:
            raise ValueError(f"{key} must be a positive integer; got {tp[key]!r}.")
    if not tp["lr"] > 0:
        raise ValueError(f"lr must be positive; got {tp['lr']!r}.")
    wd = tp["weight_decay"]
    if isinstance(wd, bool) or not isinstance(wd, Real) or not 0 <= wd < math.inf:
        raise ValueError(f"weight_decay must be a number >= 0 (Adam's L2 penalty; 0 turns it off); got {wd!r}.")
    if tp["patience"] is not None and (not isinstance(tp["patience"], int) or tp["patience"] < 1):
        raise ValueError(f"patience must be a positive integer or None; got {tp['patience']!r}.")
