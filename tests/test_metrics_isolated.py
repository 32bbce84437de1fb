"""scferry.metrics.isolated_labels: hand-computed cases, scIB's isolated-label rule, errors."""
import numpy as np
import pytest
from sklearn.metrics import silhouette_score

from scferry import metrics as M


def test_isolated_label_hand_computed_on_a_line():
    # cells at 0, 1 (label a, batch 0 only) and 10, 11 (label b, batches 0 and 1):
    # a is in 1 batch, b in 2 -> only a is isolated. Split a vs rest = {0,1} vs {10,11}:
    # s(0) = (10.5 - 1) / 10.5, s(1) = (9.5 - 1) / 9.5, s(10) = (9.5 - 1) / 9.5,
    # s(11) = (10.5 - 1) / 10.5 -> mean = (9.5/10.5 + 8.5/9.5) / 2, scaled (s + 1) / 2.
    X = np.array([[0.0], [1.0], [10.0], [11.0]])
    labels = ["a", "a", "b", "b"]
    batches = [0, 0, 0, 1]
    s = (9.5 / 10.5 + 8.5 / 9.5) / 2
    assert M.isolated_labels(X, labels, batches) == pytest.approx((s + 1) / 2)
    assert M.isolated_labels(X, labels, batches, return_all=True) == {
        "a": pytest.approx((s + 1) / 2)}


def test_isolated_labels_threshold_and_mean():
    rng = np.random.default_rng(0)
    X = np.concatenate([c + 0.1 * rng.standard_normal((20, 2))
                        for c in ([0, 0], [5, 0], [0, 5])])
    labels = np.repeat(["a", "b", "c"], 20)
    # a in batch x only; b in x and y; c in x, y and z
    batches = np.array(["x"] * 20 + ["x", "y"] * 10 + ["x", "y", "z", "x"] * 5)
    by_label = M.isolated_labels(X, labels, batches, iso_threshold=2, return_all=True)
    assert set(by_label) == {"a", "b"}
    for lab in ("a", "b"):
        expect = (silhouette_score(X, labels == lab) + 1) / 2
        assert by_label[lab] == pytest.approx(expect)
    assert M.isolated_labels(X, labels, batches, iso_threshold=2) == pytest.approx(
        np.mean(list(by_label.values())))
    # default threshold = fewest batches any label is in (1) -> only a
    assert set(M.isolated_labels(X, labels, batches, return_all=True)) == {"a"}
    # a separated isolated label scores well above 0.5 (scIB's two-group ASW: the rest is two
    # blobs, so not near 1); laid on top of another label, it drops
    separated = M.isolated_labels(X, labels, batches)
    assert separated > 0.7
    X_mixed = X.copy()
    X_mixed[:20] = X[20:40]
    assert M.isolated_labels(X_mixed, labels, batches) < separated - 0.1


def test_isolated_labels_every_label_everywhere_counts_all():
    X = np.array([[0.0], [0.2], [5.0], [5.2]])
    labels = ["a", "a", "b", "b"]
    batches = [0, 1, 0, 1]
    assert set(M.isolated_labels(X, labels, batches, return_all=True)) == {"a", "b"}


def test_isolated_labels_errors():
    X = np.zeros((4, 2))
    X[:, 0] = [0, 1, 2, 3]
    with pytest.raises(ValueError, match="batches has 3 entries"):
        M.isolated_labels(X, ["a", "a", "b", "b"], [0, 0, 1])
    with pytest.raises(ValueError, match="at least 2 distinct"):
        M.isolated_labels(X, ["a"] * 4, [0, 0, 1, 1])
    with pytest.raises(ValueError, match="missing"):
        M.isolated_labels(X, ["a", None, "b", "b"], [0, 0, 1, 1])
    with pytest.raises(ValueError, match="iso_threshold"):
        M.isolated_labels(X, ["a", "a", "b", "b"], [0, 0, 1, 1], iso_threshold=0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        M.isolated_labels(np.full((4, 2), np.nan), ["a", "a", "b", "b"], [0, 0, 1, 1])
