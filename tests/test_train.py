"""The shared training loop: early stopping and device policy."""
import pytest
import torch

from scferry.train import LossRecord, fit, resolve_device


class Quadratic(torch.nn.Module):
    """Loss (w - target)^2 + noise-free: improves until w reaches the target, then is flat."""

    def __init__(self, target):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.target = target

    def loss(self, batch):
        return LossRecord((self.w - self.target) ** 2)


def test_early_stopping_waits_for_a_plateau():
    m = Quadratic(target=3.0)
    hist = fit(m, lambda: None, max_iter=20000, lr=0.05, weight_decay=0.0, iters_per_epoch=10,
               patience=5, progress=False)
    # it must train while the loss improves (w reaches ~3) and stop well before the budget
    assert abs(float(m.w) - 3.0) < 0.05
    assert 100 < hist[-1]["iteration"] < 20000


def test_no_patience_runs_the_whole_budget():
    hist = fit(Quadratic(0.0), lambda: None, max_iter=300, lr=0.01, weight_decay=0.0,
               iters_per_epoch=10, patience=None, progress=False)
    assert hist[-1]["iteration"] == 300


def test_device_policy():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu0")
