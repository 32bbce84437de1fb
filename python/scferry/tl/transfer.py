"""Label transfer from a labelled dataset to another through the fitted model."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import ondisk
from ..model import Model
from ..errors import announce
from ._common import LABEL_KEY, PROBS_KEY, SCORE_KEY, _class_mass, _labelled_pair, _write_rows


def transfer_labels(model: Model, source: str, target: str, label_key: str, *,
                    method: str = "auto", k: int = 30) -> pd.DataFrame:
    """Transfer cell labels from dataset ``source`` to dataset ``target`` of a fitted model.

    Parameters
    ----------
    method
        ``"plan"``: class mass of the global OT plan kept during training (uniPort);
        ``"knn"``: distance-weighted kNN vote on the joint embedding (``obsm["X_scferry"]``);
        ``"auto"``: the plan when the model kept one, else kNN. Target cells the plan never
        reached get kNN probabilities (a :class:`scferry.ScferryWarning` says how many).
    k
        Neighbours for the kNN vote.

    Source cells whose ``label_key`` is missing (NaN) are left out: they carry no plan mass and
    cast no kNN vote. Target cells the plan links only to such cells get the kNN vote of the
    labelled ones (with a warning).

    Returns
    -------
    DataFrame, target cells x labels (sorted), rows sum to 1. Also writes on the target AnnData:
    ``obs["scferry_label"]`` (categorical, most probable label), ``obs["scferry_label_score"]``
    (its probability), ``obsm["scferry_label_probs"]`` (the probabilities; column order in
    ``uns["scferry_label_probs_columns"]``). With one AnnData + ``batch_key``, rows of other
    datasets get NaN. A target given to integrate as a path (on disk): the same keys are written
    on ``model.adatas[target]`` and into the store itself.
    """
    if method not in ("auto", "plan", "knn"):
        raise ValueError(f"method must be 'auto', 'plan' or 'knn'; got {method!r}.")
    src, tgt, labels = _labelled_pair(model, ("source", source), ("target", target), label_key, k)

    df, n_unreached, n_unlabelled = _class_mass(model, src, tgt, labels, method, k)
    if n_unreached:
        announce(f"the OT plan never reached {n_unreached} of {tgt.n_obs} cells of {target!r} (too "
                 "few training steps?); their labels are a kNN vote on the embedding.")
    if n_unlabelled:
        announce(f"the OT plan links {n_unlabelled} of {tgt.n_obs} cells of {target!r} only to cells "
                 f"of {source!r} without a label; their labels are a kNN vote on the embedding over "
                 "the labelled cells.")
    best = df.to_numpy().argmax(axis=1)
    _write_rows(tgt, LABEL_KEY, pd.Categorical(np.asarray(df.columns)[best], categories=list(df.columns)), "obs")
    _write_rows(tgt, SCORE_KEY, df.to_numpy().max(axis=1), "obs")
    _write_rows(tgt, PROBS_KEY, df.to_numpy(np.float32))
    tgt.adata.uns[PROBS_KEY + "_columns"] = list(df.columns)
    ondisk.save_results(tgt, obs=(LABEL_KEY, SCORE_KEY), obsm=(PROBS_KEY,), uns=(PROBS_KEY + "_columns",))
    return df

