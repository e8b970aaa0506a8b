"""Checkpoints: round trip, and missing / truncated / foreign files are clear ArtifactErrors that
never run pickled code."""
from __future__ import annotations

import pickle

import pytest
import torch

from spikeport.errors import ArtifactError
from spikeport.train.checkpoint import load_run_model, model_payload, save_checkpoint
from spikeport.train.models import build_model, default_spec


@pytest.fixture
def run_dir(tmp_path):
    spec = default_spec("baseline", "shd-embedded", chip_native=True, seed=7)
    torch.manual_seed(0)
    model = build_model(spec)
    save_checkpoint(tmp_path / "model.pt", model_payload(spec, model.state_dict(), seed=7, epoch=1,
                                                         val_accuracy=None))
    return tmp_path, model, spec


def test_round_trip_gives_the_same_model(run_dir):
    path, model, spec = run_dir
    loaded, loaded_spec = load_run_model(path)
    assert loaded_spec == spec and loaded_spec.seed == 7
    x = (torch.rand(2, 5, 700) < 0.2).float()
    assert torch.equal(loaded(x).logits, model(x).logits)
    # a plain torch.load with weights_only=True reads it too (the artifact contract)
    raw = torch.load(path / "model.pt", weights_only=True)
    assert set(raw) >= {"spec", "state_dict", "seed"}
    assert raw["spec"] == spec.to_dict() and isinstance(raw["spec"], dict)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        load_run_model(tmp_path)


def test_truncated_checkpoint(run_dir):
    path, _, _ = run_dir
    data = (path / "model.pt").read_bytes()
    (path / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="model.pt: truncated or corrupt"):
        load_run_model(path)


class _Payload:
    """Unpickling this would run os.system: a code-carrying pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def test_foreign_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    with open(tmp_path / "model.pt", "wb") as fh:
        pickle.dump({"spec": {}, "state_dict": _Payload(marker)}, fh)
    with pytest.raises(ArtifactError, match="refused"):
        load_run_model(tmp_path)
    assert not marker.exists()
    torch.save({"spec": {}, "state_dict": _Payload(marker)}, tmp_path / "model.pt")  # zip format too
    with pytest.raises(ArtifactError, match="refused"):
        load_run_model(tmp_path)
    assert not marker.exists()


def test_foreign_but_safe_file_is_not_a_spikeport_checkpoint(run_dir):
    path, model, _ = run_dir
    torch.save(model.state_dict(), path / "model.pt")  # a bare state_dict from another tool
    with pytest.raises(ArtifactError, match="not a spikeport checkpoint"):
        load_run_model(path)


def test_weights_that_do_not_fit_the_spec(run_dir):
    path, model, spec = run_dir
    state = model.state_dict()
    state.pop("blocks.fc1.weight")
    save_checkpoint(path / "model.pt", model_payload(spec, state, seed=0, epoch=1, val_accuracy=None))
    with pytest.raises(ArtifactError, match="fc1.weight"):
        load_run_model(path)
