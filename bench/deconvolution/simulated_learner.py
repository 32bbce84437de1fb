#!/usr/bin/env python
"""A learner trained on simulated mixtures of the reference's own cells, beside sf.deconvolve, on
the study's inputs (study.py writes them, with sf.deconvolve's proportions):

    OMP_NUM_THREADS=1 nice -n 8 ~/.virtualenvs/r-scferry/bin/python \\
        bench/deconvolution/simulated_learner.py \\
        --datasets hippocampus merfish_hypothalamus lymph_node pdac --seeds 0 1 2

The question (issue 18, "a type absent from a spot gets ~0"): sf.deconvolve fits a spot's counts
on each type's *mean* profile, so a type whose mean resembles a present type's takes part of its
mass. The reference's single cells carry more than their means: how much each type's cells vary,
and in which genes. A model trained on many spots summed from those cells sees that variation,
as Scaden does for bulk samples (Menden et al., Sci Adv 2020) and CellDART for spots (Bae et al.,
Nucleic Acids Res 2022).

Per dataset x seed, on the reference half only (the held-apart cells are never seen):
- ``--n-sim`` spots of 1-12 reference cells (drawn with replacement), each spot's type shares
  from a Dirichlet(0.5) over the types (sparse to even mixtures; not the study's designs);
- features: log1p of counts per 10,000 on the genes sf.deconvolve fits (``select_genes=True``),
  standardised; each minibatch is multiplied by per-gene log-normal factors of a random sd in
  [0, 0.3] and Poisson-resampled (platform shift and sampling noise);
- a two-layer perceptron (256, 128, ReLU, dropout 0.1) with a softmax over types, trained for
  ``--epochs`` epochs (Adam, 1e-3) on the cross entropy between true and predicted shares.

Scores (spots.metrics) of ``learner``, of the study's ``sf.deconvolve`` proportions on the same
spots and of their mean (``mean of both``); writes ``OUT/simulated_learner.tsv`` and prints the
tables, per dataset and over everything.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]
from spots import metrics  # noqa: E402
from variants import load, run_parser  # noqa: E402

COLS = ["RMSE", "JSD", "AUPR", "r", "absent", "absent_med", "absent_gt05"]


def simulate(X, codes: np.ndarray, K: int, n: int, rng, max_cells: int = 12, alpha: float = 0.5):
    """``n`` spots (dense counts) of 1..``max_cells`` cells of ``X`` and their true shares."""
    by_type = [np.flatnonzero(codes == k) for k in range(K)]
    Y, T = np.zeros((n, X.shape[1]), np.float32), np.zeros((n, K), np.float32)
    for s in range(n):
        n_cells = int(rng.integers(1, max_cells + 1))
        types = rng.choice(K, size=n_cells, p=rng.dirichlet(np.full(K, alpha)))
        cells = [rng.choice(by_type[t]) for t in types]
        Y[s] = np.asarray(X[cells].sum(axis=0)).ravel()
        np.add.at(T[s], types, 1.0)
    return Y, T / T.sum(axis=1, keepdims=True)


def log_norm(Y: torch.Tensor) -> torch.Tensor:
    return torch.log1p(1e4 * Y / Y.sum(1, keepdim=True).clamp_min(1))


def train(Y: np.ndarray, T: np.ndarray, seed: int, epochs: int, batch: int = 256,
          max_sd: float = 0.3):
    """The perceptron and the features' mean and sd (module docstring)."""
    torch.manual_seed(seed)  # dropout draws from torch's generator: a script, not the package
    gen = torch.Generator().manual_seed(seed)
    Yt, Tt = torch.from_numpy(Y), torch.from_numpy(T)
    F = log_norm(Yt)
    mu, sd = F.mean(0), F.std(0) + 1e-3
    nn = torch.nn
    net = nn.Sequential(nn.Linear(Y.shape[1], 256), nn.ReLU(), nn.Dropout(0.1),
                        nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, T.shape[1]))
    opt = torch.optim.Adam(net.parameters(), 1e-3, weight_decay=1e-5)
    for _ in range(epochs):
        perm = torch.randperm(len(Yt), generator=gen)
        for i in range(0, len(Yt), batch):
            idx = perm[i:i + batch]
            z = torch.randn(Y.shape[1], generator=gen)
            lam = torch.exp(z * max_sd * torch.rand(1, generator=gen))  # this minibatch's platform
            x = (log_norm(torch.poisson(Yt[idx] * lam, generator=gen)) - mu) / sd
            loss = -(Tt[idx] * torch.log_softmax(net(x), 1)).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval(), mu, sd


def main() -> int:
    p = run_parser(__doc__)
    p.add_argument("--n-sim", type=int, default=20000, help="simulated spots per dataset x seed")
    p.add_argument("--epochs", type=int, default=40)
    args = p.parse_args()
    rows = []
    for ds in args.datasets:
        for seed in args.seeds:
            base = args.out / ds / f"seed{seed}"
            S, _, _, X, labels = load(base / args.designs[0], cells=True)
            types = sorted(set(labels))
            c0 = time.process_time()
            codes = pd.Categorical(labels, categories=types).codes
            Ysim, T = simulate(X, codes, len(types), args.n_sim, np.random.default_rng(seed))
            net, mu, sd = train(Ysim, T, seed, args.epochs)
            cpu = time.process_time() - c0
            for design in args.designs:
                d = base / design
                _, Y, truth = load(d)
                with torch.no_grad():
                    x = (log_norm(torch.from_numpy(Y.toarray())) - mu) / sd
                    P = torch.softmax(net(x), 1).numpy()
                sf = pd.read_csv(d / "scferry" / "proportions.tsv", sep="\t", index_col=0)
                sf = sf[types].to_numpy()
                for name, est in (("learner", P), ("sf.deconvolve", sf),
                                  ("mean of both", (P + sf) / 2)):
                    rows.append({"dataset": ds, "seed": seed, "design": design, "estimate": name,
                                 **metrics(est, truth), "train_cpu_s": cpu})
            print(f"{ds} seed{seed}: trained in {cpu:.0f} CPU s", flush=True)
            pd.DataFrame(rows).to_csv(args.out / "simulated_learner.tsv", sep="\t", index=False)
    df = pd.DataFrame(rows)
    by_dataset = df.groupby(["dataset", "estimate"], sort=False)[COLS + ["train_cpu_s"]].mean()
    print(by_dataset.round(4).to_markdown())
    print(df.groupby("estimate", sort=False)[COLS].mean().round(4).to_markdown())
    per_seed = df.groupby(["estimate", "seed"], sort=False)[COLS].mean()
    print(per_seed.groupby("estimate", sort=False).std().round(4).to_markdown())  # sd over seeds
    return 0


if __name__ == "__main__":
    sys.exit(main())
