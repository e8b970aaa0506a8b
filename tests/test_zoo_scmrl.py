"""S-CMRL: the LIF and the attention branches against hand computations, shapes, training."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from spikeport.errors import ConfigError
from spikeport.train.losses import model_loss
from spikeport.train.models.scmrl import (CCSSA, MultiStepLIF, SpikingCrossAttention, build_scmrl,
                                          fill_defaults)

T = 4
TINY = {"model": "scmrl", "num_classes": 4, "timesteps": T, "embed_dim": 16, "num_heads": 4}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pair(batch: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    xv = torch.poisson(torch.full((batch, T, 2, 34, 34), 0.5), generator=g)
    xa = torch.poisson(torch.full((batch, T, 700), 0.5), generator=g)
    return xv, xa


def test_lif_is_braincogs_update():
    """mem += (x - mem) / 2; spike when mem > 1; hard reset to 0 (hand loop)."""
    x = torch.randn(12, 5) * 2 + 1
    got = MultiStepLIF(tau=2.0, threshold=1.0, alpha=4.0)(x).numpy()
    mem = np.zeros(5)
    for t in range(12):
        mem = mem + (x[t].numpy() - mem) / 2
        spk = (mem > 1.0).astype(np.float32)
        mem = mem * (1 - spk)
        np.testing.assert_array_equal(got[t], spk)
    assert got.sum() > 0


def test_lif_surrogate_is_sigmoid_alpha_4():
    x = torch.tensor([[0.6]], requires_grad=True)  # one step: mem = 0.3, distance to threshold -0.7
    MultiStepLIF(2.0, 1.0, 4.0)(x).sum().backward()
    s = 1 / (1 + np.exp(-4 * (0.3 - 1.0)))
    assert x.grad.item() == pytest.approx(4 * s * (1 - s) * 0.5, rel=1e-5)  # 0.5 = d mem / d x


def test_lif_surrogate_stays_finite_far_below_threshold():
    """A membrane 50 below threshold (BatchNorm over sparse spikes gives such inputs) must give
    the true, vanishing sigmoid derivative; the form k exp(-k u) / (exp(-k u) + 1)^2 gives NaN."""
    x = torch.tensor([[-100.0], [-100.0]], requires_grad=True)  # mem -50, then -75: u = -51, -76
    MultiStepLIF(2.0, 1.0, 4.0)(x).sum().backward()
    # hand value in float64: d spk_t / d x_0 through mem, 4 s (1 - s) with s = sigmoid(4 u)
    s1, s2 = (1 / (1 + np.exp(-4 * u)) for u in (-51.0, -76.0))
    want0 = 4 * s1 * (1 - s1) * 0.5 + 4 * s2 * (1 - s2) * 0.25
    assert torch.isfinite(x.grad).all()
    assert x.grad[0].item() == pytest.approx(want0, abs=1e-30)


def test_training_steps_on_sparse_spikes_stay_finite():
    """Spike counts as sparse as av-digits' (visual ~0.07, audio ~0.55 a bin): loss and gradients
    stay finite through a few optimisation steps at the paper's lr. (Poisson inputs this small do
    not drive membranes below -22, so the surrogate overflow itself is pinned by the test above.)"""
    torch.manual_seed(0)
    net = build_scmrl(TINY)
    g = torch.Generator().manual_seed(1)
    xv = torch.poisson(torch.full((8, T, 2, 34, 34), 0.07), generator=g)
    xa = torch.poisson(torch.full((8, T, 700), 0.55), generator=g)
    y = torch.arange(8) % 4
    opt = torch.optim.AdamW(net.parameters(), lr=5e-3)
    for step in range(4):
        loss = model_loss(net.spec, net((xv, xa)), y)
        opt.zero_grad()
        loss.backward()
        assert torch.isfinite(loss), step
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None), step
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()


def _identity_branch(axis: str, heads: int = 2, dim: int = 4) -> SpikingCrossAttention:
    # a width the spec would refuse (not a multiple of 8), so the keys go in a plain namespace
    spec = SimpleNamespace(**{**fill_defaults({**TINY, "embed_dim": 8, "num_heads": heads}).to_dict(), "embed_dim": dim})
    att = SpikingCrossAttention(spec, axis)
    att.q = att.k = att.v = nn.Identity()
    att.attn_lif = att.proj = nn.Identity()
    return att


@pytest.mark.parametrize("axis", ["spatial", "temporal"])
def test_attention_core_matches_hand_loops(axis):
    """(Q K^T) V * 0.25 per head, over tokens (spatial) or over time steps (temporal), no softmax."""
    g = torch.Generator().manual_seed(1)
    t_, b_, c_, n_, heads = 3, 2, 4, 5, 2
    x = (torch.rand(t_, b_, c_, n_, generator=g) < 0.5).float()
    y = (torch.rand(t_, b_, c_, n_, generator=g) < 0.5).float()
    got = _identity_branch(axis, heads, c_)(x, y).numpy()
    d = c_ // heads
    want = np.zeros((t_, b_, c_, n_))
    X, Y = x.numpy(), y.numpy()
    for b in range(b_):
        for h in range(heads):
            ch = range(h * d, (h + 1) * d)
            if axis == "spatial":
                for t in range(t_):
                    for i in range(n_):
                        for c in ch:
                            want[t, b, c, i] = 0.25 * sum(
                                sum(X[t, b, e, i] * Y[t, b, e, j] for e in ch) * Y[t, b, c, j] for j in range(n_))
            else:
                for n in range(n_):
                    for t in range(t_):
                        for c in ch:
                            want[t, b, c, n] = 0.25 * sum(
                                sum(X[t, b, e, n] * Y[s, b, e, n] for e in ch) * Y[s, b, c, n] for s in range(t_))
    np.testing.assert_allclose(got, want, rtol=1e-6)


class _Const(nn.Module):
    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, x, y):
        return self.value


def test_ccssa_is_outer_product_of_branch_means():
    spec = fill_defaults({**TINY, "embed_dim": 8, "num_heads": 2})
    cc = CCSSA(spec)
    a, b = torch.rand(3, 2, 8, 5), torch.rand(3, 2, 8, 5)
    cc.spatial, cc.temporal = _Const(a), _Const(b)
    got = cc(torch.zeros(1), torch.zeros(1))
    sa, tb = a.numpy().mean(axis=3), b.numpy().mean(axis=0)  # [T, B, C], [B, C, N]
    want = np.einsum("tbc,bcn->tbcn", sa, tb)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)


def test_forward_shapes_split_and_record():
    torch.manual_seed(0)
    net = build_scmrl(TINY)
    xv, xa = _pair(batch=3)
    tv, ta = net.backbone(xv, xa)
    assert tv.shape == ta.shape == (T, 3, 16, 9)  # same 3x3 token grid for both modalities
    out = net((xv, xa), record=True)
    assert out.logits.shape == (3, 4) and out.features.shape == (3, 16)
    assert out.extra["f_a"].shape == out.extra["f_v"].shape == (3, 16)
    assert "backbone.visual.rpe_lif" in out.spikes and "head.block_audio.attn.temporal.attn_lif" in out.spikes
    for name, s in out.spikes.items():
        assert s.shape[:2] == (T, 3) and set(torch.unique(s).tolist()) <= {0.0, 1.0}, name
    assert net((xv, xa)).spikes is None
    ids = lambda m: {id(p) for p in m.parameters()}  # noqa: E731
    assert ids(net.backbone) | ids(net.head) == ids(net) and not ids(net.backbone) & ids(net.head)


def test_paper_dims_from_spec():
    spec = fill_defaults({"model": "scmrl", "num_classes": 6, "embed_dim": 256, "num_heads": 16})
    net = build_scmrl(spec)
    widths = [st["conv"].out_channels for st in net.backbone.visual.stages]
    assert widths == [32, 64, 128, 256] and net.head.fc.in_features == 256
    assert spec.audio_map == [28, 25] and json.loads(json.dumps(spec.to_dict())) == spec.to_dict()


def test_loss_falls_on_a_fixed_batch(fit_losses):
    torch.manual_seed(0)
    net = build_scmrl(TINY)
    x, y = _pair(seed=3), torch.arange(8) % 4
    losses = fit_losses(net, x, y, 15)
    assert min(losses[-3:]) < losses[0] - 0.15, losses


def test_bad_input_and_spec_errors():
    net = build_scmrl(TINY)
    xv, xa = _pair(batch=2)
    with pytest.raises(ConfigError, match="pair"):
        net(xv)
    with pytest.raises(ConfigError, match="audio input"):
        net((xv, xa[..., :699]))
    with pytest.raises(ConfigError, match="same batch"):
        net((xv, xa[:1]))
    with pytest.raises(ConfigError, match="spec key audio_map"):
        build_scmrl({**TINY, "audio_map": [20, 30]})
    with pytest.raises(ConfigError, match="spec key num_heads"):
        build_scmrl({**TINY, "num_heads": 5})


# --- the fused neuron scans: the same numbers as stepping through time -------------------------

def _hand_lif(x: torch.Tensor, tau: float, threshold: float, alpha: float) -> torch.Tensor:
    """braincog's LIF stepped through time with torch autograd (the reset differentiated too)."""
    beta, mem, out = 1 - 1 / tau, torch.zeros_like(x[0]), []
    for t in range(x.shape[0]):
        mem = beta * mem + x[t] / tau
        u = mem - threshold
        s = torch.sigmoid(alpha * u)
        # Heaviside forward, sigmoid-derivative backward: spk = H(u) + (g - g.detach()) with
        # g = sigmoid(alpha u), whose gradient is alpha s (1 - s)
        spk = (u > 0).float() + (s - s.detach())  # exactly H(u): s - s is 0
        mem = mem - spk * mem
        out.append(spk)
    return torch.stack(out)


@pytest.mark.parametrize("tau,threshold", [(2.0, 1.0), (3.0, 0.5)])
def test_fused_lif_matches_a_hand_loop_and_its_gradient(tau, threshold):
    torch.manual_seed(0)
    x = (torch.randn(9, 4, 30) * 2 + 1).requires_grad_()
    w = torch.randn(9, 4, 30)
    lif = MultiStepLIF(tau, threshold, 4.0)
    assert lif.fused
    got = lif(x)
    (got * w).sum().backward()
    g_fused = x.grad.clone()
    x.grad = None
    want = _hand_lif(x, tau, threshold, 4.0)
    (want * w).sum().backward()
    assert torch.equal(got.detach(), want.detach()) and got.sum() > 0
    torch.testing.assert_close(g_fused, x.grad, rtol=1e-5, atol=1e-7)


def _set_fused(net: nn.Module, on: bool) -> None:
    from spikeport.train.models.scmrl import ChipPatchEmbed
    for m in net.modules():
        if isinstance(m, MultiStepLIF):
            m.fused = on
        elif isinstance(m, ChipPatchEmbed):
            m.fused_neurons = on


@pytest.mark.parametrize("chip_native", [False, True])
def test_fused_scans_give_the_step_loops_logits_loss_and_gradients(chip_native):
    """Training-mode forward and backward on a fixed batch: logits and loss bit for bit, every
    weight gradient to float rounding (sums taken in another order)."""
    torch.manual_seed(0)
    net = build_scmrl({**TINY, "chip_native": chip_native}).train()
    x, y = _pair(seed=2), torch.arange(8) % 4
    got = {}
    for on in (False, True):
        _set_fused(net, on)
        net.zero_grad()
        out = net(x)
        loss = model_loss(net.spec, out, y)
        loss.backward()
        got[on] = (out.logits.detach().clone(), loss.item(),
                   {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
    assert torch.equal(got[False][0], got[True][0]) and got[False][1] == got[True][1]
    scale = max(g.abs().max().item() for g in got[False][2].values())
    assert got[False][2].keys() == got[True][2].keys()
    for name, g in got[False][2].items():
        # biases ahead of a BatchNorm have a true gradient of 0: theirs is rounding noise
        torch.testing.assert_close(got[True][2][name], g, rtol=1e-4, atol=1e-6 * scale, msg=name)


# --- the ANN twin ----------------------------------------------------------------------------

@pytest.mark.parametrize("chip_native", [False, True])
def test_twin_is_the_snn_with_relus_on_summed_frames(chip_native):
    from spikeport.train.models import build_ann_twin, build_model, default_spec
    from spikeport.train.models.spec import spec_from_dict
    opts = {"embed_dim": 16, "num_heads": 4}
    snn_spec = default_spec("scmrl", "av-digits", chip_native=chip_native, timesteps=T, options=opts)
    twin_spec = default_spec("scmrl", "av-digits", chip_native=chip_native, ann=True, timesteps=T, options=opts)
    assert twin_spec.ann and spec_from_dict(twin_spec.to_dict()) == twin_spec
    torch.manual_seed(0)
    snn_net, twin = build_model(snn_spec), build_model(twin_spec)
    assert set(build_ann_twin(snn_spec).state_dict()) == set(twin.state_dict())  # from either spec
    weights = lambda m: {k for k, v in m.state_dict().items() if k.endswith("weight")}  # noqa: E731
    assert weights(twin) == weights(snn_net)  # every weight layer of the SNN, under its name
    assert not any(isinstance(m, MultiStepLIF) or type(m).__name__ == "Leaky" for m in twin.modules())
    n_relu = sum(isinstance(m, nn.ReLU) for m in twin.modules())
    n_neurons = sum(isinstance(m, MultiStepLIF) or type(m).__name__ == "Leaky" for m in snn_net.modules())
    assert n_relu == n_neurons
    twin.eval()
    xv, xa = _pair(batch=3)
    with torch.no_grad():
        out = twin((xv, xa))
        summed = twin((xv.sum(1), xa.sum(1)))
    assert out.logits.shape == (3, 10) and torch.equal(out.logits, summed.logits)
    # one step, by hand: the twin's encoders see the frames summed over T
    with torch.no_grad():
        tv, ta = twin.backbone(xv.sum(1, keepdim=True), xa.sum(1, keepdim=True))
        assert torch.equal(twin.head(tv, ta)[0], out.logits)
    with pytest.raises(ConfigError, match="pair"):
        twin(xv)


@pytest.fixture(scope="module")
def av_root(tmp_path_factory):
    import os

    from spikeport.data.registry import generate
    base = tmp_path_factory.mktemp("scmrl")
    before = os.environ.get("SPIKEPORT_CACHE")
    os.environ["SPIKEPORT_CACHE"] = str(base / "cache")  # frames of this tiny set stay here
    for name in ("nmnist-embedded", "shd-embedded"):
        generate(name, root=base / "data", n=80, progress=False)
    yield base / "data"
    if before is None:
        os.environ.pop("SPIKEPORT_CACHE", None)
    else:
        os.environ["SPIKEPORT_CACHE"] = before


def test_tiny_run_reports_a_ratio_against_its_twin(av_root, tmp_path):
    """`train --ann` trains the twin beside the run, export writes it to ONNX with its MACs, and
    reproduce's S-CMRL deployment reports the energy ratio against it on both chips."""
    from spikeport.export.run import export_run
    from spikeport.reproduce import TINY, _deploy_scmrl
    from spikeport.train.checkpoint import load_run_model
    from spikeport.train.run import train_run
    run = tmp_path / "scmrl"
    opts = {"embed_dim": 16, "num_heads": 4}
    common = dict(model="scmrl", dataset="av-digits", chip_native=True, root=av_root, epochs=1, max_samples=8,
                  seed=0, timesteps=T, progress=False, model_options=opts)
    train_run(out=run, **common)
    metrics = train_run(out=tmp_path / "scmrl_ann", ann=True, **common)
    assert metrics.ann and 0.0 <= metrics.test_accuracy <= 1.0
    twin, twin_spec = load_run_model(tmp_path / "scmrl_ann")
    assert twin_spec.ann and type(twin).__name__ == "ScmrlAnnTwin"
    info = export_run(run, samples=2)
    assert info.ann is not None and info.ann.trained is True
    assert info.ann.macs_onnx == info.ann.macs_torch > 0 and info.ann.max_abs_diff <= 1e-4
    assert (run / "export" / "ann.onnx").is_file()
    chips = _deploy_scmrl(run, TINY)
    for chip in ("loihi2", "speck"):
        entry = chips[chip]
        assert entry["ratio_vs_baseline"] is not None and entry["ratio_vs_baseline"] > 0, entry
        assert entry["host_macs_per_sample"] > 0 and entry["joules_per_inference"] > 0
    assert chips["baseline_joules"]["gpu-horowitz45"] > 0
    assert (run / "report" / "energy.md").is_file()


def test_reproduce_of_more_seeds_keeps_the_earlier_seeds(tmp_path):
    """`reproduce --models scmrl --seed 3` replaces seeds 3-5 and keeps an earlier run's 0-2
    (same schedule), so the S-CMRL cells aggregate all six."""
    from dataclasses import asdict

    from spikeport.reproduce import FULL, RunRow, aggregate, kept_rows, plan
    todo = plan(["scmrl"], {"visual": "v", "audio": "a", "joint": "v+a", "audiovisual": "av"})
    earlier = [RunRow(model="scmrl", modality="audiovisual", dataset="av", run="r", seed=s, float_accuracy=0.5 + s / 10)
               for s in (0, 1, 2, 3)] + [RunRow(model="baseline", modality="visual", dataset="v", run="r", seed=0)]
    (tmp_path / "reproduce.json").write_text(json.dumps(
        {"date": "2026-01-02T00:00:00", "variant": "chip-native", "schedule": asdict(FULL), "real": False,
         "rows": [asdict(r) for r in earlier]}))
    kept, _ = kept_rows(tmp_path, todo, "chip-native", FULL, False, seeds=[3, 4, 5])
    assert [(r.model, r.seed) for r in kept] == [("scmrl", 0), ("scmrl", 1), ("scmrl", 2), ("baseline", 0)]
    assert [r.model for r in kept_rows(tmp_path, todo, "chip-native", FULL, False)[0]] == ["baseline"]
    new = [RunRow(model="scmrl", modality="audiovisual", dataset="av", run="r", seed=s, float_accuracy=0.9)
           for s in (3, 4, 5)]
    cell = aggregate(kept + new)[("scmrl", "audiovisual")]["float"]
    assert cell.n == 6 and cell.mean == pytest.approx((0.5 + 0.6 + 0.7 + 3 * 0.9) / 6)
