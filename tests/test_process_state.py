"""A library leaves process state alone: environment, thread counts, global random generators."""
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import scferry as sf
from test_integrate import FAST

PYTHON_DIR = str(Path(sf.__file__).resolve().parents[1])


def test_import_leaves_environment_alone():
    code = ("import os, json; before = dict(os.environ); import scferry; "
            "print(json.dumps(sorted(set(os.environ.items()) ^ set(before.items()))))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = PYTHON_DIR
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_ot_leaves_thread_count_alone(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the user's choice (tests run with 1, which hid the toggling)
    calls = []
    try:
        monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
        C = torch.rand(20, 30, dtype=torch.float64)
        sf.ot.unbalanced_sinkhorn(C, eps=0.1)
        assert calls == []
    finally:
        monkeypatch.undo()
        torch.set_num_threads(before)


def test_integrate_leaves_global_generators_alone(pdac_small):
    rna, st = pdac_small
    torch.manual_seed(1234)
    random.seed(5)
    np.random.seed(7)
    torch_state, py_state, np_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    expected = torch.rand(4)
    torch.set_rng_state(torch_state)
    threads = torch.get_num_threads()
    sf.integrate({"rna": rna, "st": st}, seed=0, **FAST)
    assert torch.initial_seed() == 1234
    torch.testing.assert_close(torch.rand(4), expected)
    assert random.getstate() == py_state
    np.testing.assert_array_equal(np.random.get_state()[1], np_state[1])
    assert torch.get_num_threads() == threads


def test_same_seed_same_embedding_whatever_the_global_state(pdac_small):
    rna, st = pdac_small
    torch.manual_seed(1)
    sf.integrate({"rna": rna, "st": st}, seed=3, **FAST)
    first = rna.obsm["X_scferry"].copy()
    torch.manual_seed(2)
    torch.rand(10)
    sf.integrate({"rna": rna, "st": st}, seed=3, **FAST)
    np.testing.assert_array_equal(first, rna.obsm["X_scferry"])
