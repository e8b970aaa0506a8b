"""Scale-out: a deploy split over worker processes (torch.distributed, gloo) gives the counts and the
accuracy of one process (`spikeport deploy --workers 2` on Loihi); Speck's richer stats merged from
shards equal the whole deploy's."""
from __future__ import annotations

import warnings
from pathlib import Path

import nir
import numpy as np
import pytest
import sinabs
import sinabs.layers as sl
import torch
from torch import nn
from typer.testing import CliRunner

from spikeport.cli import app
from spikeport.deploy.scale_out import merge_notes, shard_bounds
from spikeport.errors import ConfigError
from spikeport.io import read_json_model
from spikeport.schemas import Stats

T = 10


def sinabs_cnn() -> nir.NIRGraph:
    """A small N-MNIST-style CNN made by sinabs, weights on a 1/8 grid."""
    g = torch.Generator().manual_seed(4)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False), sl.IAFSqueeze(batch_size=1, num_timesteps=T), sl.SumPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1, bias=False), sl.IAFSqueeze(batch_size=1, num_timesteps=T), sl.SumPool2d(2),
        nn.Flatten(), nn.Linear(6 * 2 * 2, 5, bias=False), sl.IAFSqueeze(batch_size=1, num_timesteps=T))
    for m in model:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.weight.data = torch.round((torch.randn(m.weight.shape, generator=g) * 0.45 + 0.08) * 8) / 8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = sinabs.to_nir(model, torch.zeros(T, 2, 8, 8))
    graph.infer_types()
    return graph


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scale")
    nir.write(root / "cnn.nir", sinabs_cnn())
    g = torch.Generator().manual_seed(5)
    x = (torch.rand((9, T, 2, 8, 8), generator=g) < 0.3).to(torch.uint8)
    x[2, 3, 0, 1, 1] = 3  # one count > 1: Loihi 1 takes binary spikes, a note only that shard makes
    np.savez(root / "in.npz", inputs=x.numpy(), labels=np.arange(9) % 5)
    result = CliRunner().invoke(app, ["import", str(root / "cnn.nir"), "--out", str(root / "run"),
                                      "--inputs", str(root / "in.npz"), "--from", "sinabs", "--bin-ms", "2"])
    assert result.exit_code == 0, result.output
    return root / "run"


def _deploy(run: Path, target: str, workers: int) -> Stats:
    result = CliRunner().invoke(app, ["deploy", str(run), "--target", target, "--workers", str(workers)])
    assert result.exit_code == 0, result.output
    return read_json_model(run / "deploy" / target / "stats.json", Stats)


@pytest.mark.parametrize("target", ["loihi"])
def test_two_workers_equal_one_worker(run_dir, target):
    one = _deploy(run_dir, target, 1)
    two = _deploy(run_dir, target, 2)
    assert two.samples == one.samples == 9
    assert [c.model_dump() for c in two.layers] == [c.model_dump() for c in one.layers]
    assert sum(c.spikes for c in one.layers) > 50  # the network is active: the counts say something
    for a, b in zip(two.per_sample, one.per_sample):
        assert a.spikes == pytest.approx(b.spikes) and a.synops == pytest.approx(b.synops)
    assert (two.accuracy, two.agreement_with_float, two.float_accuracy, two.cores_used) == \
           (one.accuracy, one.agreement_with_float, one.float_accuracy, one.cores_used)
    assert (run_dir / "deploy" / target / "stats.json").is_file()
    if target == "loihi":  # the data-dependent note: kept for the shard that saw the count (sample 2)
        note = next(a for a in one.approximations if a.startswith("input:"))
        (a, b), _ = shard_bounds(9, 2)
        shard_notes = [n for n in two.approximations if n.startswith("samples")]
        assert a <= 2 < b and len(shard_notes) == 1 and shard_notes[0].startswith(f"samples {a}-{b - 1}: input: 1 of ")
        assert note.startswith("input: 1 of ")
        assert [a for a in two.approximations if not a.startswith("samples")] == \
               [a for a in one.approximations if a != note]


def test_merged_shards_equal_the_whole_deploy_on_speck(run_dir, tmp_path):
    """Speck's stats carry more per-layer counts (input events) and fractions (the float chip form's
    accuracy): the merge of three shards' stats, deployed in this process, equals the whole deploy."""
    from spikeport.deploy.run import build_deploy_input
    from spikeport.deploy.scale_out import merge_stats, shard_input
    from spikeport.deploy.targets import get_target, resolve_engine
    from spikeport.hw_profiles import load_profile

    target = get_target("speck")
    inp = build_deploy_input(run_dir, "speck", resolve_engine("speck", None), None)
    profile = load_profile("speck")
    whole = target.deploy(shard_input(inp, 0, 9, tmp_path / "whole"), profile)
    bounds = shard_bounds(9, 3)
    parts = [target.deploy(shard_input(inp, a, b, tmp_path / f"part{a}"), profile) for a, b in bounds]
    merged = merge_stats(parts, bounds)
    assert [c.model_dump() for c in merged.layers] == [c.model_dump() for c in whole.layers]
    assert sum(c.input_events for c in whole.layers) > 100
    for key in ("accuracy", "agreement_with_float", "float_accuracy", "float_chip_form_accuracy"):
        assert getattr(merged, key) == getattr(whole, key), key
    assert [c.spikes for c in merged.per_sample] == pytest.approx([c.spikes for c in whole.per_sample])


def test_shards_and_notes():
    assert shard_bounds(9, 2) == [(0, 4), (4, 9)]
    bounds = shard_bounds(10, 3)
    assert bounds[0][0] == 0 and bounds[-1][1] == 10 and all(a < b for a, b in bounds)
    assert all(bounds[i][1] == bounds[i + 1][0] for i in range(2))
    with pytest.raises(ConfigError, match="3 test samples cannot be split over 4 workers"):
        shard_bounds(3, 4)
    assert merge_notes([["a", "b 1"], ["a"]], [(0, 2), (2, 4)]) == ["a", "samples 0-1: b 1"]
