"""Two-modality models on the chips (joint, S-CMRL: one chip graph per modality, host part
between), S-CMRL's ablation switches, and the reproduce tables' mean and spread."""
from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import torch

from spikeport.train.losses import model_loss
from spikeport.train.models import default_spec
from spikeport.train.models.scmrl import build_scmrl
from spikeport.train.models.seed_a import build_seed_a, joint_part

TINY_SCMRL = {"embed_dim": 16, "num_heads": 4}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    import os

    from spikeport.data.registry import generate
    base = tmp_path_factory.mktemp("multi")
    os.environ["SPIKEPORT_CACHE"] = str(base / "cache")  # frames of this tiny set stay here
    for name in ("nmnist-embedded", "shd-embedded"):
        generate(name, root=base / "data", n=80, progress=False)
    yield base / "data"
    os.environ.pop("SPIKEPORT_CACHE", None)


def _pair(batch: int = 4, t: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.poisson(torch.full((batch, t, 2, 34, 34), 0.3), generator=g),
            torch.poisson(torch.full((batch, t, 700), 0.5), generator=g))


def _scmrl(**options):
    spec = default_spec("scmrl", "av-digits", chip_native=True, timesteps=4, options={**TINY_SCMRL, **options})
    torch.manual_seed(0)
    return build_scmrl(spec).train()


def test_scmrl_switches_switch():
    x, y = _pair(), torch.tensor([0, 1, 0, 1])
    # low thresholds: at the default ones the attention spikes of an untrained tiny model are
    # all zero on this input, and so is the branch
    active = {"threshold": 0.3, "attn_threshold": 0.05}
    full, no_ccssa = _scmrl(**active), _scmrl(ccssa=False, **active)
    assert full(x, record=True).spikes["head.block_audio.attn.spatial.attn_lif"].sum() > 0
    # same weights where the two share modules: only the cross-modal residual differs
    missing, _ = no_ccssa.load_state_dict(full.state_dict(), strict=False)
    assert not missing
    assert not torch.equal(full(x).logits, no_ccssa(x).logits)
    assert not hasattr(no_ccssa.head, "block_audio")
    # SAO off: the loss is the smoothed cross-entropy alone, with it on it is larger
    out = full(x)
    ce = torch.nn.functional.cross_entropy(out.logits, y, label_smoothing=0.1)
    no_sao = full.spec.replace(sao_weight=0.0)
    assert model_loss(no_sao, out, y).item() == pytest.approx(ce.item())
    assert model_loss(full.spec, out, y).item() > ce.item() + 1e-3
    # one modality alone: the other input does not reach the output
    vis = _scmrl(inputs="visual")
    xv, xa = x
    assert torch.equal(vis((xv, xa)).logits, vis((xv, torch.zeros_like(xa))).logits)
    assert not torch.equal(full((xv, xa)).logits, full((xv, torch.zeros_like(xa))).logits)


def test_joint_part_computes_what_joint_computes():
    spec = default_spec("joint", "nmnist-embedded+shd-embedded", chip_native=True)
    torch.manual_seed(0)
    joint = build_seed_a(spec).eval()
    g = torch.Generator().manual_seed(1)
    xa = torch.poisson(torch.full((3, 6, 700), 0.4), generator=g)
    part_spec, state = joint_part(joint, "audio")
    part = build_seed_a(part_spec).eval()
    part.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(part(xa).logits, joint(xa).logits)


def test_scmrl_chip_part_is_the_folded_patch_embedding():
    """BatchNorm folded by torch's own fusion: the part's spike trains equal the trained model's."""
    from spikeport.train.models.scmrl import chip_part
    model = _scmrl()
    x = _pair(batch=6, seed=2)
    for m in model.modules():  # one training-mode pass sets the BatchNorm statistics to this batch's
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    model(x)
    model.eval()
    for modality in ("visual", "audio"):
        spec, state = chip_part(model, modality)
        part = build_scmrl(spec).eval()
        part.load_state_dict(state)
        with torch.no_grad():
            got = part(x, record=True).spikes["blocks.lif4"]
            want = model(x, record=True).spikes[f"backbone.{modality}.blocks.lif4"]
        assert got.sum() > 0 and torch.equal(got, want)


@pytest.mark.parametrize("model", ["joint", "scmrl"])
def test_deploys_to_both_targets_with_host_macs(model, root, tmp_path):
    from spikeport.deploy.multi import deploy_multi
    from spikeport.export.run import export_run, part_runs
    from spikeport.train.run import train_run
    run = tmp_path / model
    if model == "joint":
        train_run(model="joint", dataset="nmnist-embedded+shd-embedded", out=run, chip_native=True, root=root,
                  epochs=1, max_samples=8, seed=0, timesteps=6, progress=False)
    else:
        train_run(model="scmrl", dataset="av-digits", out=run, chip_native=True, root=root, epochs=1,
                  max_samples=8, seed=0, timesteps=4, progress=False, model_options=TINY_SCMRL)
    export_run(run, samples=2)
    assert set(part_runs(run)) == {"visual", "audio"}
    for chip in ("loihi2", "speck"):
        stats = deploy_multi(run, chip, samples=3)
        if chip == "speck":  # what a user runs: `spikeport deploy` dispatches to the per-modality parts
            from typer.testing import CliRunner
            from spikeport.cli import app
            res = CliRunner().invoke(app, ["deploy", str(run), "--target", chip, "--samples", "3"])
            assert res.exit_code == 0, res.output
            assert all(f"{name}: accuracy" in res.output for name in stats)
        for s in stats.values():
            assert s.samples == 3 and s.host_macs_per_sample > 0
            assert sum(la.synops for la in s.per_sample) > 0
        if model == "scmrl":
            (s,) = stats.values()
            names = {la.name.split(".")[0] for la in s.layers}
            assert names == {"visual", "audio"}
            # hand count, a lower bound: the two positional 3x3 convs (E x E x 9 x 9 tokens x T)
            e, t = TINY_SCMRL["embed_dim"], 4
            assert s.host_macs_per_sample >= 2 * e * e * 9 * 9 * t


def test_reproduce_tables_carry_mean_and_spread():
    from spikeport.reproduce import RunRow, accuracy_table, aggregate, inside_spread
    accs = {"baseline": [0.90, 0.92, 0.91], "hgrn": [0.80, 0.86, 0.83]}
    rows = [RunRow(model=m, modality="visual", dataset="d", run="r", seed=i, float_accuracy=a,
                   chips={"loihi2": {"accuracy": a - 0.01}})
            for m, values in accs.items() for i, a in enumerate(values)]
    agg = aggregate(rows)
    for m, values in accs.items():
        cell = agg[(m, "visual")]["float"]
        assert cell.n == 3 and cell.mean == pytest.approx(statistics.mean(values))
        assert cell.sd == pytest.approx(statistics.stdev(values))
    table = accuracy_table(rows)
    assert f"{100 * statistics.mean(accs['hgrn']):.2f} ± {100 * statistics.stdev(accs['hgrn']):.2f}" in table
    assert not inside_spread(agg[("hgrn", "visual")]["float"], agg[("baseline", "visual")]["float"])
