"""Model files: integrity and format version checked; every load failure is a scferry error."""
import numpy as np
import pytest
import torch

import scferry as sf
from test_integrate import FAST


@pytest.fixture()
def saved(pdac_small, tmp_path):
    rna, st = pdac_small
    model = sf.integrate({"rna": rna, "st": st}, seed=0, **FAST)
    path = tmp_path / "model.pt"
    model.save(path)
    return model, path, rna, st


def test_round_trip_keeps_id_and_choices(saved):
    model, path, rna, st = saved
    loaded = sf.load(path, adatas={"rna": rna, "st": st})
    assert loaded.id == model.id and loaded.choices == model.choices
    assert loaded.choices["mode"]["value"] == "horizontal"


def test_corrupted_file(saved):
    _, path, _, _ = saved
    data = bytearray(path.read_bytes())
    # flip bytes inside the largest stored tensor (the middle of the file)
    data[len(data) // 2] ^= 0xFF
    data[len(data) // 2 + 1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(sf.ModelFileError, match="is corrupted.*save the model again"):
        sf.load(path)


def test_truncated_and_empty_files(saved, tmp_path):
    _, path, _, _ = saved
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(sf.ModelFileError, match="is empty"):
        sf.load(empty)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: 4000])
    with pytest.raises(sf.ModelFileError, match="not a scferry model file|corrupted"):
        sf.load(cut)


def test_not_a_model(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(sf.ModelFileError, match="not a scferry model file"):
        sf.load(text)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(sf.ModelFileError, match="not a scferry model file"):
        sf.load(other)


def _rewrite(path, **changes):
    state = torch.load(path, weights_only=True)
    for k, v in changes.items():
        if v is None:
            del state[k]
        else:
            state[k] = v
    torch.save(state, path)


def test_missing_keys(saved):
    _, path, _, _ = saved
    _rewrite(path, state_dict=None)
    with pytest.raises(sf.ModelFileError, match="lacks.*'state_dict'"):
        sf.load(path)


def test_method_mismatch(saved):
    _, path, _, _ = saved
    _rewrite(path, method="davae")
    with pytest.raises(sf.ModelFileError, match="do not match method 'davae'"):
        sf.load(path)
    _rewrite(path, method="nope")
    with pytest.raises(sf.ModelFileError, match="unknown method 'nope'"):
        sf.load(path)


def test_newer_version(saved):
    _, path, _, _ = saved
    _rewrite(path, version=99)
    with pytest.raises(sf.ModelFileError, match="format version 99.*upgrade scferry"):
        sf.load(path)
