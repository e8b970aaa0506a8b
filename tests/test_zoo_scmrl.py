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
