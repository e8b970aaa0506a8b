"""Seed A's zoo: backbones against a hand-written step-by-step LIF loop, every model's shapes and
training, the Hopfield layer and the HGRN recurrence against hand computations."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from spikeport.errors import ConfigError
from spikeport.train.losses import model_loss
from spikeport.train.models.backbones import BackboneOutput, SeedSNN
from spikeport.train.models.hgrn import HGRN, HGRU
from spikeport.train.models.hopfield import ModernHopfield
from spikeport.train.models.seed_a import LEGACY_DEFAULTS, build_seed_a, fill_defaults, pool_steps

SHAPES = {"visual": [2, 34, 34], "audio": [700]}
TINY = {"conv_channels": [4, 8], "visual_hidden": [48, 24], "audio_hidden": [48, 48, 24],
        "hopfield_patterns": 8, "hgrn_layers": 2}
CHIP_LAYERS = {
    "visual": [{"type": "conv", "out_channels": 4, "kernel_size": 5, "stride": 2, "padding": 2},
               {"type": "flatten"}, {"type": "dense", "out_features": 24}, {"type": "dense", "out_features": 4}],
    "audio": [{"type": "dense", "out_features": 24}, {"type": "dense", "out_features": 24},
              {"type": "dense", "out_features": 4}],
}
T = 6


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is faster than two fighting over a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _spec(model: str, modality: str, chip_native: bool = False, **extra) -> dict:
    spec = {"model": model, "input_shape": SHAPES[modality], "num_classes": 4, "timesteps": T,
            "chip_native": chip_native, **TINY, **extra}
    if chip_native:
        spec["layers"] = CHIP_LAYERS[modality]
        spec["visual_layers"], spec["audio_layers"] = CHIP_LAYERS["visual"], CHIP_LAYERS["audio"]
    return spec


def _input(modality: str, batch: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.poisson(torch.full((batch, T, *SHAPES[modality]), 0.5), generator=g)


# ----------------------------------------------------------------------------- backbone

def _stepwise_by_hand(net: SeedSNN, x: torch.Tensor, beta: float = 0.9, thr: float = 1.0) -> list[torch.Tensor]:
    """The seed's loop: every layer at step t before step t+1, with the LIF written out:
    v[t] = beta v[t-1] + I[t] - thr * [v[t-1] > thr] (subtract reset), s[t] = [v[t] > thr]."""
    mods = dict(net.layers.items())
    mem: dict[str, torch.Tensor] = {}
    out = []
    for t in range(x.shape[1]):
        h = x[:, t]
        for name, m in mods.items():
            if name.startswith("lif"):
                prev = mem.get(name, torch.zeros_like(h))
                v = beta * prev + h - thr * (prev > thr).float()
                mem[name] = v
                h = (v > thr).float()
            else:
                h = m(h)
        out.append(h)
    return out


@pytest.mark.parametrize("modality", ["visual", "audio"])
def test_backbone_spikes_equal_stepwise_hand_loop(modality):
    torch.manual_seed(0)
    net = SeedSNN(SHAPES[modality], TINY["conv_channels"] if modality == "visual" else [],
                  TINY[f"{modality}_hidden"], num_classes=4)
    with torch.no_grad():
        for p in net.parameters():  # larger weights so that every layer spikes
            p.mul_(4.0)
        x = _input(modality, batch=3)
        got = net(x, record=True)
        want = _stepwise_by_hand(net, x)
    assert got.out.shape == (T, 3, 4)
    assert all(float(v.sum()) > 0 for v in got.spikes.values()), "test input leaves a layer silent"
    assert torch.equal(got.out, torch.stack(want))


def test_init_gain_scales_the_default_weights():
    torch.manual_seed(0)
    a = build_seed_a(_spec("hgrn", "visual"))
    torch.manual_seed(0)
    b = build_seed_a({**_spec("hgrn", "visual", chip_native=True), "init_gain": 1.0})
    torch.manual_seed(0)
    c = build_seed_a({**_spec("hgrn", "visual"), "init_gain": 3.0})
    torch.testing.assert_close(c.backbone.layers.fc1.weight, 3.0 * a.backbone.layers.fc1.weight)
    torch.testing.assert_close(c.backbone.layers.fc1.bias, a.backbone.layers.fc1.bias)
    torch.manual_seed(0)
    d = build_seed_a({**_spec("hgrn", "visual", chip_native=True), "init_gain": 2.0})
    torch.testing.assert_close(d.backbone.blocks.fc1.weight, 2.0 * b.backbone.blocks.fc1.weight)


def test_paper_sizes_by_default():
    net = build_seed_a({"model": "baseline", "input_shape": [2, 34, 34], "num_classes": 10})
    shapes = {n: tuple(p.shape) for n, p in net.backbone.named_parameters() if n.endswith("weight")}
    assert shapes == {"layers.conv1.weight": (32, 2, 5, 5), "layers.conv2.weight": (64, 32, 5, 5),
                      "layers.fc1.weight": (1024, 1600), "layers.fc2.weight": (512, 1024),
                      "layers.fc3.weight": (10, 512)}
    audio = build_seed_a({"model": "hgrn", "input_shape": [700], "num_classes": 20})
    assert [tuple(m.weight.shape) for n, m in audio.backbone.layers.items() if n.startswith("fc")] == \
        [(1024, 700), (1024, 1024), (512, 1024)]
    assert audio.feature_layer == "lif3"


# ----------------------------------------------------------------------------- every model

MODELS = ["baseline", "scl", "hopfield", "hgrn", "hybrid", "joint"]


@pytest.mark.parametrize("chip_native", [False, True])
@pytest.mark.parametrize("modality", ["visual", "audio"])
@pytest.mark.parametrize("model", MODELS)
def test_forward_shapes_and_split(model, modality, chip_native):
    torch.manual_seed(0)
    net = build_seed_a(_spec(model, modality, chip_native))
    out = net(_input(modality, batch=3), record=True)
    assert out.logits.shape == (3, 4)
    assert out.features.ndim == 2 and out.features.shape[0] == 3
    assert out.spikes
    for name, s in out.spikes.items():
        assert s.shape[1] == 3 and s.shape[0] in (T, 1), name
        assert set(torch.unique(s).tolist()) <= {0.0, 1.0}, name
    assert sum(s.shape[0] == T for s in out.spikes.values()) >= 2
    # backbone and head partition the parameters
    ids = lambda m: {id(p) for p in m.parameters()}  # noqa: E731
    assert ids(net.backbone) | ids(net.head) == ids(net) and not ids(net.backbone) & ids(net.head)
    # the feature layer named for the exporter is a recorded layer of the backbone
    feature = net.feature_layer[modality] if model == "joint" else net.feature_layer
    assert any(k.endswith(feature) for k in out.spikes)


@pytest.mark.parametrize("modality", ["visual", "audio"])
@pytest.mark.parametrize("model", MODELS)
def test_loss_falls_on_a_fixed_batch(model, modality, fit_losses):
    torch.manual_seed(0)
    # With T = 6 the seed's visual backbone (threshold 1, default init) is still silent in its
    # dense layers: they start firing after ~10 steps (the paper ran T = 25). A lower threshold
    # lets the tiny fixed batch train in 30 steps without a longer, slower input.
    extra = {"threshold": 0.5} if modality == "visual" else {}
    net = build_seed_a(_spec(model, modality, **extra))
    x, y = _input(modality, seed=10), torch.arange(8) % 4
    losses = fit_losses(net, x, y, 30)
    assert min(losses[-5:]) < losses[0] - 0.1, losses
    # and the split it trained on is now told apart well above chance (4 classes: 0.25)
    with torch.no_grad():
        acc = float((net.eval()(x).logits.argmax(1) == y % net.spec.num_classes).float().mean())
    assert acc >= 0.5, acc


def test_spec_is_json_and_complete():
    spec = fill_defaults({"model": "hybrid", "input_shape": [700], "num_classes": 20})
    record = spec.to_dict()
    assert json.loads(json.dumps(record)) == record
    assert spec.modality == "audio" and spec.hopfield_patterns == 256 and spec.beta == 0.9
    assert record["hopfield_patterns"] == 256 and record["hgrn_dim"] is None
    a, b = build_seed_a(spec), build_seed_a(json.loads(json.dumps(record)))
    assert a.state_dict().keys() == b.state_dict().keys()


def test_bad_specs_name_the_key():
    with pytest.raises(ConfigError, match="spec key model"):
        build_seed_a({"model": "transformer", "input_shape": [700], "num_classes": 2})
    with pytest.raises(ConfigError, match="spec key readout"):
        build_seed_a({**_spec("hopfield", "audio"), "readout": "softmax"})
    with pytest.raises(ConfigError, match="spec key layers"):
        bad = [{"type": "dense", "out_features": 8}, {"type": "dense", "out_features": 7}]
        build_seed_a({**_spec("baseline", "audio", chip_native=True), "layers": bad})
    with pytest.raises(ConfigError, match="spec key init_gain"):
        build_seed_a({**_spec("hgrn", "audio"), "init_gain": 0})
    with pytest.raises(ConfigError, match="input_shape"):
        build_seed_a(_spec("baseline", "audio"))(torch.zeros(2, T, 699))


# ----------------------------------------------------------------------------- joint

def test_joint_takes_either_modality_one_batch_at_a_time():
    torch.manual_seed(0)
    net = build_seed_a({**_spec("joint", "visual"), "num_classes": 10})
    xv, xa = _input("visual", batch=2), _input("audio", batch=3)
    assert net(xv).logits.shape == (2, 10)
    assert net(xa).logits.shape == (3, 10)
    assert net(xa, modality="audio").logits.shape == (3, 10)
    assert set(net(xa, record=True).spikes) >= {"audio.lif1", "audio.lif3"}
    with pytest.raises(ConfigError, match="neither visual"):
        net(torch.zeros(2, T, 5, 5))
    with pytest.raises(ConfigError, match="one modality"):
        net((xv, xa))
    # both encoders feed the one shared trunk: a step on each modality moves the trunk
    trunk = [p.detach().clone() for p in net.head.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for x, y in ((xv, torch.tensor([1, 12])), (xa, torch.tensor([3, 14, 5]))):
        loss = model_loss(net.spec, net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(trunk, net.head.parameters()))
    with pytest.raises(ConfigError, match="feature widths must match"):
        build_seed_a({**_spec("joint", "visual"), "audio_hidden": [48, 16]})


# ----------------------------------------------------------------------------- Hopfield

def test_hopfield_matches_hand_computation():
    torch.manual_seed(0)
    hop = ModernHopfield(dim=6, patterns=5, temperature=0.1)
    with torch.no_grad():
        hop.norm.weight.uniform_(0.5, 1.5)
        hop.norm.bias.uniform_(-0.2, 0.2)
    x = torch.randn(3, 6)
    got = hop(x).detach().numpy()
    m = hop.memory.detach().numpy()
    gamma, beta = hop.norm.weight.detach().numpy(), hop.norm.bias.detach().numpy()
    for b in range(3):
        xn = x[b].numpy() / np.linalg.norm(x[b].numpy())
        mn = [row / np.linalg.norm(row) for row in m]
        scores = [float(np.dot(xn, r)) / math.sqrt(6) / 0.1 for r in mn]
        w = [math.exp(s) for s in scores]
        w = [v / sum(w) for v in w]
        y = sum(wi * r for wi, r in zip(w, mn)) + x[b].numpy()
        mu, var = y.mean(), ((y - y.mean()) ** 2).mean()
        want = (y - mu) / math.sqrt(var + 1e-5) * gamma + beta
        np.testing.assert_allclose(got[b], want, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- HGRN

def test_hgru_matches_hand_recurrence():
    torch.manual_seed(0)
    cell = HGRU(dim=3)
    x, lb = torch.randn(2, 5, 3), torch.tensor([0.2, 0.5, 0.7])
    got, gates = cell(x, lb)
    p = {n: v.detach().numpy() for n, v in cell.state_dict().items()}
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    silu = lambda z: z * sig(z)  # noqa: E731
    for b in range(2):
        h = np.zeros(3)
        for t in range(5):
            xt = x[b, t].numpy()
            f = lb.numpy() + (1 - lb.numpy()) * sig(p["f_proj.weight"] @ xt + p["f_proj.bias"])
            i = silu(p["i_proj.weight"] @ xt + p["i_proj.bias"]) * (1 - f)
            h = f * h + i
            hn = h / np.sqrt((h ** 2).mean() + np.finfo(np.float32).eps) * p["norm.weight"]
            o = p["o_proj.weight"] @ (hn * silu(p["g_proj.weight"] @ xt + p["g_proj.bias"])) + p["o_proj.bias"]
            np.testing.assert_allclose(gates[b, t].detach().numpy(), f, rtol=1e-5)
            np.testing.assert_allclose(got[b, t].detach().numpy(), o, rtol=1e-4, atol=1e-5)


def test_hgrn_forget_gates_stay_above_rising_lower_bounds():
    torch.manual_seed(0)
    net = HGRN(in_dim=8, dim=8, layers=3)
    opt = torch.optim.AdamW(net.parameters(), lr=0.05)
    x = torch.randn(4, 7, 8)
    for _ in range(5):  # the bounds are learned: they must hold after training too
        loss = net(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        for blk in net.blocks:  # drive the gates' sigmoid to ~0: the gate must sit at its bound
            blk.hgru.f_proj.bias.fill_(-40.0)
        y, gates = net(x * 10, return_gates=True)
        bounds = net.lower_bounds()
    assert torch.all(bounds[0] == 0)
    assert torch.all(bounds[1:] > bounds[:-1]) and torch.all(bounds < 1)
    for k, f in enumerate(gates):
        assert torch.all(f >= bounds[k] - 1e-6)
        torch.testing.assert_close(f, bounds[k].expand_as(f), atol=1e-6, rtol=0)


def test_hgrn_head_carries_information_across_time_steps():
    """A zero-state gated cell (the seed code's 'HGRN') could not: the last step's output
    would not depend on the first step's input."""
    torch.manual_seed(0)
    net = HGRN(in_dim=4, dim=4, layers=2)
    x = torch.randn(1, 6, 4)
    x2 = x.clone()
    x2[0, 0] += 1.0
    with torch.no_grad():
        assert not torch.allclose(net(x)[0, -1], net(x2)[0, -1])
        torch.testing.assert_close(net(x)[0, 0], net(x[:, :1])[0, 0])  # and it is causal


def test_hgrn_head_reads_spike_trains_hopfield_head_reads_rates():
    torch.manual_seed(0)
    hgrn, hop = build_seed_a(_spec("hgrn", "audio")), build_seed_a(_spec("hopfield", "audio"))
    trains = (torch.rand(T, 2, 24) < 0.3).float()
    flipped = BackboneOutput(out=trains.flip(0), features=trains.flip(0))  # same counts, other order
    plain = BackboneOutput(out=trains, features=trains)
    with torch.no_grad():
        assert not torch.allclose(hgrn.head(plain)[1], hgrn.head(flipped)[1])
        torch.testing.assert_close(hop.head(plain)[1], hop.head(flipped)[1])


def test_pool_steps_sums_windows_by_hand():
    trains = (torch.rand(2, 10, 3, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    got = pool_steps(trains, 4)
    a = trains.numpy()
    want = np.stack([a[:, 0:4].sum(1), a[:, 4:8].sum(1), a[:, 8:10].sum(1)], axis=1)  # last window short
    np.testing.assert_array_equal(got.numpy(), want)
    assert pool_steps(trains, 1) is trains


def test_audio_hgrn_steps_are_window_counts_through_an_embedding():
    """Audio features carry about one spike a step: the head sums them in windows (default 4 on
    audio, 1 on visual) and embeds each window's counts linearly before the HGRN blocks, so the
    blocks' per-step RMSNorm sees dense vectors, not one-hot steps scaled up to sqrt(D)."""
    torch.manual_seed(0)
    net = build_seed_a(_spec("hgrn", "audio"))
    assert net.spec.hgrn_window == {"visual": 1, "audio": 4}
    assert net.spec.hgrn_embed == {"visual": True, "audio": True}
    head = net.head
    trains = (torch.rand(T, 2, 24) < 0.2).float()
    seen = {}
    head.hgrn.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    with torch.no_grad():
        z = head(BackboneOutput(out=trains, features=trains))[1]
    a = trains.transpose(0, 1).numpy()
    counts = np.stack([a[:, 0:4].sum(1), a[:, 4:6].sum(1)], axis=1)  # T = 6: windows of 4 and 2 steps
    w, b = head.embed["audio"].weight.detach().numpy(), head.embed["audio"].bias.detach().numpy()
    np.testing.assert_allclose(seen["x"].numpy(), counts @ w.T + b, rtol=1e-5, atol=1e-6)
    # visual features (T = 25 on the embedded data, denser) go to the HGRN step by step, embedded
    vis = build_seed_a(_spec("hgrn", "visual"))
    assert vis.head.windows == {"visual": 1} and list(vis.head.embed) == ["visual"]
    plain = build_seed_a({**_spec("hgrn", "visual"), "hgrn_embed": False})
    assert len(plain.head.embed) == 0
    # joint: one window and embedding per modality in front of the one shared trunk
    joint = build_seed_a({**_spec("joint", "visual"), "num_classes": 10})
    assert joint.head.windows == {"visual": 1, "audio": 4} and list(joint.head.embed) == ["visual", "audio"]
    xv = _input("visual", batch=2)
    with torch.no_grad():
        bb = joint.backbone(xv, modality="visual")
        want = joint.head.hgrn(joint.head.embed["visual"](bb.features.transpose(0, 1))).mean(1)
        torch.testing.assert_close(joint(xv).features, want)


def test_specs_stored_before_the_window_keys_build_what_they_trained():
    """A spec filled before hgrn_window / hgrn_embed existed holds every other key: it gets the
    step-by-step, unembedded head it was trained with, and its stored weights load."""
    old = fill_defaults(_spec("hybrid", "audio")).to_dict()
    for key in LEGACY_DEFAULTS:
        old.pop(key)
    refilled = fill_defaults(old)
    assert {k: getattr(refilled, k) for k in LEGACY_DEFAULTS} == LEGACY_DEFAULTS
    net = build_seed_a(old)
    assert len(net.head.embed) == 0 and net.head.windows["audio"] == 1
    assert not any(k.startswith("head.embed") for k in net.state_dict())  # the keys of the old head
    with pytest.raises(ConfigError, match="spec key hgrn_window"):
        build_seed_a({**_spec("hgrn", "audio"), "hgrn_window": {"audio": 0}})
    with pytest.raises(ConfigError, match="spec key hgrn_embed"):
        build_seed_a({**_spec("hgrn", "audio"), "hgrn_embed": "yes"})


def test_hybrid_hopfield_leaves_silent_steps_silent():
    """A step (window) without a feature spike has no query: the HGRN sees what it would without
    the memory there (the embedding of zero counts), while active steps go through the retrieval."""
    torch.manual_seed(0)
    hybrid = build_seed_a(_spec("hybrid", "audio"))
    trains = (torch.rand(T, 2, 24) < 0.3).float()
    trains[4:] = 0.0  # a silent last window (steps 4-5) for both samples
    head = hybrid.head
    with torch.no_grad():
        silent = torch.zeros(2, T, 24)
        z_silent = head(BackboneOutput(out=silent.transpose(0, 1), features=silent.transpose(0, 1)))[1]
        # zero counts in every window: the HGRN gets the embedding of zero (its bias), no retrieval
        embedded = head.embed["audio"](pool_steps(silent, head.windows["audio"]))
        torch.testing.assert_close(embedded, head.embed["audio"].bias.expand(2, 2, 24))
        torch.testing.assert_close(z_silent, head.hgrn(embedded).mean(1))
        z = head(BackboneOutput(out=trains, features=trains))[1]
        head.hopfield.memory.mul_(-1.0)  # another memory changes what active steps retrieve
        assert not torch.allclose(z, head(BackboneOutput(out=trains, features=trains))[1])
