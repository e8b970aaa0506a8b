"""Speck target: NIR -> chip form -> 8/16-bit sinabs simulation -> counts, checked against
snntorch (the trained model), hand-written reference loops, sinabs.SNNAnalyzer, and the errors
a user gets for what Speck cannot run."""
from __future__ import annotations

import json
import warnings

import nir
import numpy as np
import pytest
import snntorch as snn
import torch
import torch.nn.functional as F
from sinabs import SNNAnalyzer
from torch import nn

from spikeport.deploy.common import DeployInput
from spikeport.deploy.speck.chip_form import SpeckLimits, check_limits
from spikeport.deploy.speck.from_nir import nir_to_chip_form
from spikeport.deploy.speck.quantize import quantise
from spikeport.deploy.speck.samna_config import load_quantised, to_samna_config
from spikeport.deploy.speck.simulate import build_chip_net, simulate, to_chip_input
from spikeport.deploy.speck.target import deploy_speck
from spikeport.errors import ConfigError, MappingError, SpikeportError, UnsupportedNodeError
from spikeport.hw_profiles import load_profile
from spikeport.schemas import Stats
from spikeport.train.models.chip_native import VISUAL_SMALL, ChipNativeSNN

DT = 1e-3


@pytest.fixture(scope="module")
def limits() -> SpeckLimits:
    return SpeckLimits.from_profile(load_profile("speck"))


# ------------------------------------------------------------------ graph builders -----------
def if_node(shape, threshold: float = 1.0) -> nir.IF:
    shape = tuple(shape)
    return nir.IF(r=np.full(shape, 1.0 / DT, dtype=np.float32), v_threshold=np.full(shape, threshold, dtype=np.float32),
                  v_reset=np.zeros(shape, dtype=np.float32))


def conv_node(weight: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1, padding: int = 0) -> nir.Conv2d:
    bias = torch.zeros(weight.shape[0]) if bias is None else bias
    return nir.Conv2d(input_shape=None, weight=weight.numpy(), stride=np.array([stride, stride]),
                      padding=np.array([padding, padding]), dilation=np.array([1, 1]), groups=1, bias=bias.numpy())


def chain_graph(input_shape, nodes: list[tuple[str, nir.NIRNode]], output_shape, taps: dict[str, list] | None = None,
                extra_edges: list[tuple[str, str]] | None = None) -> nir.NIRGraph:
    """input -> nodes... -> output, plus Output nodes ``taps[name] = shape`` reading node ``name``."""
    all_nodes = {"input": nir.Input(input_type=np.array(input_shape))}
    edges, prev = [], "input"
    for name, node in nodes:
        all_nodes[name] = node
        edges.append((prev, name))
        prev = name
    all_nodes["output"] = nir.Output(output_type=np.array(output_shape))
    edges.append((prev, "output"))
    for name, shape in (taps or {}).items():
        all_nodes[f"tap_{name}"] = nir.Output(output_type=np.array(shape))
        edges.append((name, f"tap_{name}"))
    return nir.NIRGraph(nodes=all_nodes, edges=edges + list(extra_edges or []), type_check=False)


def snntorch_to_nir(model: ChipNativeSNN, tap_all: bool = False) -> nir.NIRGraph:
    """The chip-native model written node by node (IF with r = 1/dt: per-step gain 1)."""
    nodes, shape, taps = [], list(model.input_shape), {}
    for name, m in model.blocks.items():
        out = list(m(torch.zeros(1, *shape))[0].shape[1:]) if isinstance(m, snn.Leaky) else \
            list(m(torch.zeros(1, *shape)).shape[1:])
        if isinstance(m, nn.Conv2d):
            node = conv_node(m.weight.detach(), m.bias.detach(), m.stride[0], m.padding[0])
        elif isinstance(m, nn.Linear):
            node = nir.Affine(weight=m.weight.detach().numpy(), bias=m.bias.detach().numpy())
        elif isinstance(m, nn.Flatten):
            node = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0)
        else:
            node = if_node(out, float(m.threshold.flatten()[0]))
            if tap_all and name != model.lif_names[-1]:
                taps[name] = out
        nodes.append((name, node))
        shape = out
    return chain_graph(model.input_shape, nodes, shape, taps)


def visual_model(seed: int = 0, gain: float = 3.0) -> ChipNativeSNN:
    torch.manual_seed(seed)
    model = ChipNativeSNN([2, 34, 34], VISUAL_SMALL)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(gain)
    return model.eval()


def visual_events(n: int, t: int = 10, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, t, 2, 34, 34, generator=g) < 0.15).float()


def if_reference(x: torch.Tensor, steps) -> list[torch.Tensor]:
    """Hand-written IF network: per step v += layer(h); spike where v > 1; v = 0 there.
    ``steps`` is a list of ("syn", fn) and ("pool", fn); returns each neuron layer's spikes [B, T, ...]."""
    b, t = x.shape[:2]
    state: dict[int, torch.Tensor] = {}
    out: dict[int, list[torch.Tensor]] = {}
    for k in range(t):
        h = x[:, k]
        for i, (kind, fn) in enumerate(steps):
            h = fn(h)
            if kind == "syn":
                v = state.get(i, torch.zeros_like(h)) + h
                s = (v > 1.0).float()
                state[i] = v * (1 - s)
                out.setdefault(i, []).append(s)
                h = s
    return [torch.stack(v, 1) for v in out.values()]


# ------------------------------------------------------------------ conversion ---------------
def test_float_chip_form_is_the_trained_snntorch_model_spike_for_spike():
    model = visual_model()
    graph = snntorch_to_nir(model, tap_all=True)
    form = nir_to_chip_form(graph, DT)
    assert [(l.name, l.kind, l.neuron) for l in form.layers] == [
        ("conv1", "conv", "lif1"), ("conv2", "conv", "lif2"), ("conv3", "conv", "lif3"),
        ("fc1", "dense", "lif4"), ("fc2", "dense", "lif5")]
    assert form.layers[3].weight.shape == (64, 16, 5, 5)  # dense as a 5x5 convolution
    x = visual_events(6)
    with torch.no_grad():
        ref = model(x, record=True)
    result = simulate(build_chip_net(form, x.shape[1]), x, batch_size=4)
    for name in model.lif_names[:-1]:
        assert torch.equal(result.taps[f"tap_{name}"], ref.spikes[name].reshape(result.taps[f"tap_{name}"].shape)), name
    assert torch.equal(result.taps["output"].sum(0), ref.logits)
    assert ref.logits.sum() > 0 and all(ref.spikes[n].sum() > 0 for n in model.lif_names)


def test_snntorch_style_lif_with_infinite_tau_and_bias_free_linear_read_as_if():
    g = torch.Generator().manual_seed(3)
    w1, w2 = torch.randn(12, 20, generator=g), torch.randn(4, 12, generator=g)
    tau_inf = dict(tau=np.full(12, np.inf), r=np.full(12, np.inf), v_leak=np.zeros(12), v_threshold=np.ones(12))
    graph = chain_graph([20], [("fc1", nir.Linear(weight=w1.numpy())), ("lif1", nir.LIF(**tau_inf)),
                               ("fc2", nir.Affine(weight=w2.numpy(), bias=np.zeros(4, np.float32))),
                               ("lif2", if_node([4]))], [4])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        form = nir_to_chip_form(graph, DT)
    x = (torch.rand(5, 8, 20, generator=g) < 0.3).float()
    ref = if_reference(x, [("syn", lambda h: h @ w1.T), ("syn", lambda h: h @ w2.T)])
    out = simulate(build_chip_net(form, 8), x).taps["output"]
    assert torch.equal(out.transpose(0, 1), ref[-1])
    assert form.approximations == []


def test_pooling_and_flat_audio_input_match_a_hand_reference():
    g = torch.Generator().manual_seed(5)
    dyadic = lambda *s: torch.randint(-8, 9, s, generator=g).float() / 16  # noqa: E731  exact in float
    w1, w2, w3 = dyadic(4, 1, 3, 3) * 4, dyadic(6, 4, 3, 3) * 4, dyadic(5, 24) * 2
    graph = chain_graph([1, 8, 8], [
        ("conv1", conv_node(w1, padding=1)), ("lif1", if_node([4, 8, 8])),
        ("pool1", nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))),
        ("conv2", conv_node(w2, padding=1)), ("lif2", if_node([6, 4, 4])),
        ("pool2", nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))),
        ("flatten", nir.Flatten(input_type={"input": np.array([6, 2, 2])}, start_dim=0)),
        ("fc1", nir.Affine(weight=w3.numpy(), bias=np.zeros(5, np.float32))), ("lif3", if_node([5]))], [5])
    form = nir_to_chip_form(graph, DT)
    assert [l.pool for l in form.layers] == [2, 2, 1]
    x = (torch.rand(4, 12, 1, 8, 8, generator=g) < 0.5).float()
    ref = if_reference(x, [("syn", lambda h: F.conv2d(h, w1, padding=1)), ("pool", lambda h: F.avg_pool2d(h, 2)),
                           ("syn", lambda h: F.conv2d(h, w2, padding=1)), ("pool", lambda h: F.avg_pool2d(h, 2) * 4),
                           ("syn", lambda h: h.flatten(1) @ w3.T)])
    out = simulate(build_chip_net(form, 12), x).taps["output"]
    assert ref[-1].sum() > 0 and torch.equal(out.transpose(0, 1), ref[-1])

    # audio: 700 channels of 1x1, dense layers as 1x1 convolutions
    wa, wb = torch.randn(16, 700, generator=g) * 0.2, torch.randn(5, 16, generator=g)
    graph = chain_graph([700], [("fc1", nir.Affine(weight=wa.numpy(), bias=np.zeros(16, np.float32))),
                                ("lif1", if_node([16])),
                                ("fc2", nir.Affine(weight=wb.numpy(), bias=np.zeros(5, np.float32))),
                                ("lif2", if_node([5]))], [5])
    form = nir_to_chip_form(graph, DT)
    assert form.input_shape == (700, 1, 1) and form.layers[0].weight.shape == (16, 700, 1, 1)
    xa = (torch.rand(3, 10, 700, generator=g) < 0.1).float()
    ref = if_reference(xa, [("syn", lambda h: h @ wa.T), ("syn", lambda h: h @ wb.T)])
    out = simulate(build_chip_net(form, 10), xa).taps["output"]
    assert ref[-1].sum() > 0 and torch.equal(out.transpose(0, 1), ref[-1])


def test_leak_becomes_a_negative_bias_and_is_reported():
    beta, thr = 0.9, 2.0
    tau = DT / (1 - beta)
    w = torch.ones(3, 4)
    graph = chain_graph([4], [("fc1", nir.Affine(weight=w.numpy(), bias=np.full(3, 0.5, np.float32))),
                              ("lif1", nir.LIF(tau=np.full(3, tau), r=np.full(3, tau / DT), v_leak=np.zeros(3),
                                               v_threshold=np.full(3, thr), v_reset=np.zeros(3)))], [3])
    form = nir_to_chip_form(graph, DT)
    layer = form.layers[0]
    # weights and bias in threshold units; leak -(1 - beta) * threshold / 2 per step
    assert torch.allclose(layer.weight.flatten(), torch.full((12,), 0.5))
    assert torch.allclose(layer.bias, torch.full((3,), 0.25 - 0.05))
    assert layer.leak_bias and any("lif1" in a and "leak" in a for a in form.approximations)


# ------------------------------------------------------------------ quantisation -------------
def designed_dense_net(seed: int = 0):
    """A 40-input, 4-class detector with noisy weights (not integers): margins like a trained net."""
    g = torch.Generator().manual_seed(seed)
    w1 = torch.full((16, 40), -0.15)
    for j in range(16):
        w1[j, (j // 4) * 10:(j // 4 + 1) * 10] = 0.35
    w1 += 0.08 * torch.randn(16, 40, generator=g)
    w2 = torch.full((4, 16), -0.4)
    for c in range(4):
        w2[c, c * 4:(c + 1) * 4] = 0.6
    w2 += 0.08 * torch.randn(4, 16, generator=g)
    b1 = 0.02 * torch.randn(16, generator=g)
    graph = chain_graph([40], [("fc1", nir.Affine(weight=w1.numpy(), bias=b1.numpy())), ("lif1", if_node([16])),
                               ("fc2", nir.Affine(weight=w2.numpy(), bias=np.zeros(4, np.float32))),
                               ("lif2", if_node([4]))], [4])
    return graph


def dense_data(n: int, t: int = 12, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    rate = torch.full((n, 40), 0.05)
    for c in range(4):
        rate[y == c, c * 10:(c + 1) * 10] = 0.4
    return (torch.rand(n, t, 40, generator=g) < rate[:, None]).float(), y


def test_quantisation_keeps_a_small_networks_predictions(limits):
    form = nir_to_chip_form(designed_dense_net(), DT)
    x, y = dense_data(200)
    float_logits = simulate(build_chip_net(form, 12), x).taps["output"].sum(0)
    quant = quantise(form, limits)
    assert all(q.weight.abs().max() <= 128 and q.weight.abs().max() >= 100 for q in quant.layers)  # 8 bits, used
    assert quant.clipped_weights == 0
    q_logits = simulate(build_chip_net(form, 12, quant), x).taps["output"].sum(0)
    float_acc = (float_logits.argmax(1) == y).float().mean()
    agree = (q_logits.argmax(1) == float_logits.argmax(1)).float().mean()
    assert float_acc > 0.9
    assert agree >= 0.98
    assert (q_logits - float_logits).abs().mean() < 0.1  # spike counts nearly unchanged
    # clipping the largest weights (scale from the 90% quantile) is counted
    clipped = quantise(form, limits, weight_quantile=0.9)
    assert clipped.clipped_weights > 0
    assert clipped.clipped_weights == sum(int((l.weight.abs() * q.scale > 127.5).sum())
                                          for l, q in zip(form.layers, clipped.layers))


# ------------------------------------------------------------------ counts -------------------
def test_synops_and_spikes_agree_with_sinabs_snnanalyzer(limits):
    model = visual_model(seed=2)
    form = nir_to_chip_form(snntorch_to_nir(model), DT)
    quant = quantise(form, limits)
    x = visual_events(5, t=8, seed=3)
    net = build_chip_net(form, 8, quant)
    ours = simulate(net, x, batch_size=5)

    import sinabs
    sinabs.reset_states(net.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        analyzer = SNNAnalyzer(net.model, dt=DT * 1e3)
        with torch.no_grad():
            net.model(to_chip_input(form, x).to(net.dtype))
        stats = analyzer.get_layer_statistics()
    for i, (ci, si) in enumerate(zip(net.convs, net.spikes)):
        theirs_synops = float(stats["parameter"][str(ci)]["synops"])     # mean over the batch, sum over T
        assert theirs_synops > 0
        assert ours.synops[:, i].mean().item() == pytest.approx(theirs_synops, rel=1e-6)  # analyzer sums in float32, form.layers[i].name
        theirs_spikes = float(stats["spiking"][str(si)]["output"].sum()) / x.shape[0]
        assert ours.spikes[:, i].mean().item() == pytest.approx(theirs_spikes, rel=1e-6)


def test_synop_count_by_hand_on_a_padded_strided_conv():
    # one 3x3 input channel, kernel 2, stride 1, padding 0 -> 2x2 outputs, 2 output channels:
    # corner pixels reach 1 window, edge 2, centre 4 (times 2 channels)
    w = torch.ones(2, 1, 2, 2)
    graph = chain_graph([1, 3, 3], [("conv1", conv_node(w)), ("lif1", if_node([2, 2, 2], threshold=100.0))],
                        [2, 2, 2])
    form = nir_to_chip_form(graph, DT)
    x = torch.zeros(1, 2, 1, 3, 3)
    x[0, 0, 0, 0, 0] = 1   # corner: 2 synops
    x[0, 1, 0, 1, 1] = 3   # three events at the centre: 3 * 8
    x[0, 1, 0, 0, 1] = 1   # edge: 4
    result = simulate(build_chip_net(form, 2), x)
    assert result.synops[0, 0].item() == 2 + 24 + 4
    from spikeport.deploy.speck.simulate import synapse_count
    assert synapse_count(form.layers[0]) == 2 * 2 * 2 * 4  # every output neuron has 4 inputs


# ------------------------------------------------------------------ end to end ---------------
def deploy_input(graph, x, labels, preds, out_dir, host=None, t=None) -> DeployInput:
    return DeployInput(graph=graph, dt=DT, timesteps=t or x.shape[1], inputs=x, labels=labels,
                       float_predictions=preds, host=host, out_dir=out_dir, target="speck", engine="sinabs")


def test_deploy_writes_stats_and_a_config_that_reproduces_the_run(tmp_path):
    model = visual_model(seed=4)
    x = visual_events(12, t=8, seed=6)
    with torch.no_grad():
        preds = model(x).logits.argmax(1)
    labels = torch.arange(12) % 10
    stats = deploy_speck(deploy_input(snntorch_to_nir(model), x, labels, preds, tmp_path), load_profile("speck"))
    Stats.model_validate_json(stats.model_dump_json())
    assert stats.samples == 12 and stats.cores_used == 5 and [l.name for l in stats.layers][0] == "conv1"
    assert stats.float_accuracy == pytest.approx(float((preds == labels).float().mean()))
    assert stats.float_chip_form_agreement_with_float == 1.0  # the chip form before quantisation is exact
    for total, mean in zip(stats.layers, stats.per_sample):
        assert total.synops == pytest.approx(mean.synops * 12) and total.neurons == mean.neurons
    assert sorted(stats.core_mapping.values()) == sorted(set(stats.core_mapping.values()))
    assert sum(1 for c in stats.core_memory if c["layer"]) == 5
    assert all(c["kernel_entries"] <= c["kernel_capacity"] and c["neuron_entries"] <= c["neuron_capacity"]
               for c in stats.core_memory)

    config = json.loads((tmp_path / "speck_config.json").read_text())
    assert config["format"] == "spikeport-speck-config" and len(config["layers"]) == 5
    assert all(-128 <= w <= 127 for w in np.asarray(config["layers"][0]["weights"]).ravel())
    quant, mapping = load_quantised(tmp_path / "speck_config.json")
    assert mapping == stats.core_mapping
    again = simulate(build_chip_net(quant.form, 8, quant), x)
    assert again.synops.sum(0).tolist() == [l.synops for l in stats.layers]
    assert stats.accuracy == pytest.approx(float((again.taps["output"].sum(0).argmax(1) == labels).float().mean()))


def test_host_head_reads_the_chip_outputs(tmp_path):
    graph = designed_dense_net()
    # the host reads the hidden layer (tap_lif1) and makes the decision itself
    graph.nodes["tap_lif1"] = nir.Output(output_type=np.array([16]))
    graph.edges.append(("lif1", "tap_lif1"))
    x, y = dense_data(40)
    readout = torch.zeros(4, 16)
    for c in range(4):
        readout[c, c * 4:(c + 1) * 4] = 1.0
    seen = {}

    def host(taps: dict[str, torch.Tensor]) -> torch.Tensor:
        seen.update({k: tuple(v.shape) for k, v in taps.items()})
        return taps["tap_lif1"].sum(0) @ readout.T

    stats = deploy_speck(deploy_input(graph, x, y, y, tmp_path, host=host), "speck")
    # each tap under its Output name, and under the names of the chip nodes it reads
    assert {k: seen[k] for k in ("tap_lif1", "output")} == {"tap_lif1": (12, 40, 16), "output": (12, 40, 4)}
    assert seen["lif1"] == (12, 40, 16) and seen["lif2"] == (12, 40, 4)
    assert stats.accuracy > 0.9


def test_samna_is_imported_only_when_asked(tmp_path):
    try:
        import samna  # noqa: F401
        pytest.skip("samna is installed here")
    except ImportError:
        pass
    form_graph = designed_dense_net()
    x, y = dense_data(4)
    deploy_speck(deploy_input(form_graph, x, y, y, tmp_path), "speck")
    with pytest.raises(SpikeportError, match="samna .* is not installed"):
        to_samna_config(tmp_path / "speck_config.json")


# ------------------------------------------------------------------ bad input ----------------
def recurrent_graph() -> nir.NIRGraph:
    w = np.eye(4, dtype=np.float32)
    return nir.NIRGraph(
        nodes={"input": nir.Input(input_type=np.array([4])),
               "fc1": nir.Affine(weight=w, bias=np.zeros(4, np.float32)), "lif1": if_node([4]),
               "rec1": nir.Linear(weight=w), "output": nir.Output(output_type=np.array([4]))},
        edges=[("input", "fc1"), ("fc1", "lif1"), ("lif1", "rec1"), ("rec1", "lif1"), ("lif1", "output")],
        type_check=False)


def test_recurrent_layer_is_rejected_by_name():
    with pytest.raises(UnsupportedNodeError, match=r"Speck cannot run recurrent layer 'lif1' \(cycle "):
        nir_to_chip_form(recurrent_graph(), DT)


@pytest.mark.parametrize("make,match", [
    (lambda: ([2, 40, 40], conv_node(torch.ones(4, 2, 17, 17)), [4, 24, 24]),
     r"layer 'conv1': kernel 17x17 is larger than Speck's 16x16 limit"),
    (lambda: ([2, 40, 40], conv_node(torch.ones(4, 2, 3, 3), stride=3), [4, 13, 13]),
     r"layer 'conv1': stride 3x3; Speck strides are 1, 2, 4, 8"),
    (lambda: ([2, 40, 40], conv_node(torch.ones(4, 2, 16, 16), padding=8), [4, 41, 41]),
     r"layer 'conv1': padding 8x8 is over Speck's limit of 7"),
    (lambda: ([2, 130, 130], conv_node(torch.ones(4, 2, 3, 3)), [4, 128, 128]),
     r"input: 130x130 is larger than Speck's input limit of 128x128"),
    (lambda: ([2, 8, 8], conv_node(torch.ones(1100, 2, 3, 3)), [1100, 6, 6]),
     r"layer 'conv1': 1100 output channels, Speck allows at most 1024"),
    (lambda: ([2, 128, 128], conv_node(torch.ones(4, 2, 3, 3), padding=1), [4, 128, 128]),
     r"layer 'conv1': output feature map 128x128 is larger than Speck's 64x64 limit"),
])
def test_limits_are_enforced_with_the_layer_and_the_limit(limits, make, match):
    in_shape, node, out_shape = make()
    graph = chain_graph(in_shape, [("conv1", node), ("lif1", if_node(out_shape))], out_shape)
    form = nir_to_chip_form(graph, DT)
    with pytest.raises(UnsupportedNodeError, match=match):
        check_limits(form, limits)


def test_nodes_speck_cannot_run_are_named():
    w = np.ones((3, 4), np.float32)
    cuba = nir.CubaLIF(tau_syn=np.full(3, 2e-3), tau_mem=np.full(3, 2e-3), r=np.full(3, 2.0), v_leak=np.zeros(3),
                       v_threshold=np.ones(3))
    with pytest.raises(UnsupportedNodeError, match=r"node 'lif1' \(CubaLIF\): a synaptic current"):
        nir_to_chip_form(chain_graph([4], [("fc1", nir.Affine(weight=w, bias=np.zeros(3))), ("lif1", cuba)], [3]), DT)
    reset = nir.IF(r=np.full(3, 1 / DT), v_threshold=np.ones(3), v_reset=np.full(3, 0.5))
    with pytest.raises(UnsupportedNodeError, match="node 'lif1': resets to 0.5; chip neurons reset to 0"):
        nir_to_chip_form(chain_graph([4], [("fc1", nir.Affine(weight=w, bias=np.zeros(3))), ("lif1", reset)], [3]), DT)
    with pytest.raises(UnsupportedNodeError, match="reads node 'fc1', which has no neurons after its weights"):
        nir_to_chip_form(chain_graph([4], [("fc1", nir.Affine(weight=w, bias=np.zeros(3)))], [3]), DT)
    # dense layer on a non-square 2x4 input cannot be a square Speck kernel
    graph = chain_graph([1, 2, 4], [("flatten", nir.Flatten(input_type={"input": np.array([1, 2, 4])}, start_dim=0)),
                                    ("fc1", nir.Affine(weight=np.ones((3, 8), np.float32), bias=np.zeros(3))),
                                    ("lif1", if_node([3]))], [3])
    with pytest.raises(UnsupportedNodeError, match="layer 'fc1': kernel 2x4 is not square"):
        check_limits(nir_to_chip_form(graph, DT), SpeckLimits.from_profile(load_profile("speck")))


def test_deploy_errors_leave_no_config(tmp_path):
    x, y = dense_data(4)
    with pytest.raises(UnsupportedNodeError, match="recurrent layer 'lif1'"):
        deploy_speck(deploy_input(recurrent_graph(), x[..., :4], y, y, tmp_path), "speck")
    with pytest.raises(ConfigError, match=r"deploy inputs have shape \[4, 12, 40\]; the chip graph takes \[N, 12, 20\]"):
        graph = chain_graph([20], [("fc1", nir.Affine(weight=np.ones((3, 20), np.float32), bias=np.zeros(3))),
                                   ("lif1", if_node([3]))], [3])
        deploy_speck(deploy_input(graph, x, y, y, tmp_path), "speck")
    big = chain_graph([128, 10, 10], [("conv1", conv_node(torch.zeros(128, 128, 5, 5))), ("lif1", if_node([128, 6, 6]))],
                      [128, 6, 6])
    xb = torch.zeros(2, 3, 128, 10, 10)
    with pytest.raises(MappingError, match="layer 'conv1'.*kernel memory 512 Ki entries"):
        deploy_speck(deploy_input(big, xb, y[:2], y[:2], tmp_path), "speck")
    assert not (tmp_path / "speck_config.json").exists()
