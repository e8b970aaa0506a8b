"""Loihi target: NIR -> netx -> Lava (bit-accurate) == fast twin; counts; mapping; bad input."""
from __future__ import annotations

import nir
import numpy as np
import pytest
import snntorch as snn
import torch

from spikeport.deploy.common import DeployInput
from spikeport.deploy.loihi.counting import layer_counts
from spikeport.deploy.loihi.fast_engine import run_fast
from spikeport.deploy.loihi.lava_run import run_lava
from spikeport.deploy.loihi.mapper import map_cores
from spikeport.deploy.loihi.netx_writer import write_netx
from spikeport.deploy.loihi.target import loihi_layers
from spikeport.deploy.lowering import lower


def walk_(graph, dt):
    return loihi_layers(lower(graph, dt))
from spikeport.deploy.loihi.quantize import quantize
from spikeport.deploy.loihi.target import deploy_loihi
from spikeport.errors import MappingError, UnsupportedNodeError
from spikeport.hw_profiles import load_profile
from spikeport.train.models.chip_native import ChipNativeSNN

DT = 1e-3


def neuron(shape, beta: float, threshold: float = 1.0) -> nir.NIRNode:
    """snntorch Leaky(beta) in NIR's continuous time, the exporter's convention (r = tau/dt, IF r = 1/dt)."""
    shape = tuple(shape)
    if beta == 1.0:
        return nir.IF(r=np.full(shape, 1 / DT), v_threshold=np.full(shape, threshold))
    tau = DT / (1 - beta)
    return nir.LIF(tau=np.full(shape, tau), r=np.full(shape, tau / DT), v_leak=np.zeros(shape),
                   v_threshold=np.full(shape, threshold))


def chip_native_to_nir(model: ChipNativeSNN) -> nir.NIRGraph:
    """NIR graph of a ChipNativeSNN, node names = module names (what the exporter writes)."""
    shape = list(model.input_shape)
    nodes = {"input": nir.Input(np.array(shape))}
    order = ["input"]
    for name, m in model.blocks.items():
        if isinstance(m, torch.nn.Conv2d):
            nodes[name] = nir.Conv2d(input_shape=tuple(shape[1:]), weight=m.weight.detach().double().numpy(),
                                     stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups,
                                     bias=m.bias.detach().double().numpy())
            h = (shape[1] + 2 * m.padding[0] - m.kernel_size[0]) // m.stride[0] + 1
            w = (shape[2] + 2 * m.padding[1] - m.kernel_size[1]) // m.stride[1] + 1
            shape = [m.out_channels, h, w]
        elif isinstance(m, torch.nn.Flatten):
            nodes[name] = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0)
            shape = [int(np.prod(shape))]
        elif isinstance(m, torch.nn.Linear):
            nodes[name] = nir.Affine(weight=m.weight.detach().double().numpy(), bias=m.bias.detach().double().numpy())
            shape = [m.out_features]
        else:
            nodes[name] = neuron(shape, model.beta, model.threshold)
        order.append(name)
    nodes["output"] = nir.Output(np.array(shape))
    order.append("output")
    return nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])), type_check=False)


def conv_model(seed: int = 0) -> ChipNativeSNN:
    torch.manual_seed(seed)
    layers = [{"type": "conv", "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1},
              {"type": "conv", "out_channels": 6, "kernel_size": 3, "stride": 2, "padding": 1},
              {"type": "flatten"}, {"type": "dense", "out_features": 5}]
    model = ChipNativeSNN([2, 12, 12], layers, beta=0.9)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.mul_(3.0)
    return model


def recurrent_graph(seed: int = 1) -> nir.NIRGraph:
    """Input(24) -> fc1 -> lif1 (with recurrent rec1) -> fc2 -> lif2 -> output."""
    rng = np.random.default_rng(seed)
    nodes = {
        "input": nir.Input(np.array([24])),
        "fc1": nir.Affine(weight=rng.normal(0, 0.45, (16, 24)), bias=rng.normal(0, 0.05, 16)),
        "lif1": neuron((16,), 0.85),
        "rec1": nir.Linear(weight=rng.normal(0, 0.4, (16, 16))),
        "fc2": nir.Linear(weight=rng.normal(0, 0.6, (6, 16))),
        "lif2": neuron((6,), 1.0),
        "output": nir.Output(np.array([6])),
    }
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "rec1"), ("rec1", "lif1"), ("lif1", "fc2"),
             ("fc2", "lif2"), ("lif2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def spikes_in(n: int, t: int, shape, p: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((n, t, *shape), generator=g) < p).float()


def assert_same_trains(fast: dict, lava: dict) -> int:
    total = 0
    for name, f in fast.items():
        lv = lava[name]
        assert f.shape == lv.shape, name
        diff = int((f != lv).sum())
        assert diff == 0, f"layer {name}: {diff} spikes differ between the fast engine and Lava"
        total += int(f.sum())
    return total


def test_conv_net_fast_engine_equals_lava_spike_for_spike(tmp_path):
    graph = walk_(chip_native_to_nir(conv_model()), DT)
    net = quantize(graph)
    path = write_netx(net, tmp_path / "conv.net")
    x = spikes_in(20, 10, (2, 12, 12), 0.25, seed=3)
    fast = run_fast(net, x, record=True, batch_size=7)
    lava = run_lava(path, x, [q.name for q in net.layers])
    total = assert_same_trains(fast.spikes, lava.spikes)
    assert total > 200 and all(int(s.sum()) > 0 for s in fast.spikes.values())  # every layer active


def test_recurrent_dense_net_fast_engine_equals_lava_spike_for_spike(tmp_path):
    graph = walk_(recurrent_graph(), DT)
    assert graph.layers[0].rec_weight is not None and graph.layers[0].rec_synapse == "rec1"
    net = quantize(graph)
    path = write_netx(net, tmp_path / "rec.net")
    x = spikes_in(20, 12, (24,), 0.3, seed=4)
    fast = run_fast(net, x, record=True)
    lava = run_lava(path, x, [q.name for q in net.layers])
    assert_same_trains(fast.spikes, lava.spikes)
    # the recurrent weights matter: dropping them changes the trains
    net.layers[0].rec_weight = np.zeros_like(net.layers[0].rec_weight)
    assert not torch.equal(run_fast(net, x, record=True).spikes["lif1"], fast.spikes["lif1"])


def test_graded_input_counts_match_lava(tmp_path):
    """Loihi 2 graded input spikes (counts per bin): same integer arithmetic in both engines."""
    graph = walk_(chip_native_to_nir(conv_model(seed=2)), DT)
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, 4, (4, 6, 2, 12, 12), generator=g).float() * (torch.rand(4, 6, 2, 12, 12, generator=g) < 0.2)
    net = quantize(graph, input_bits=2)
    path = write_netx(net, tmp_path / "graded.net")
    fast = run_fast(net, x, record=True)
    lava = run_lava(path, x, [q.name for q in net.layers], input_bits=2)
    assert_same_trains(fast.spikes, lava.spikes)


def test_netx_file_loads_in_netx_with_our_integers(tmp_path):
    import h5py
    from lava.lib.dl import netx

    graph = walk_(recurrent_graph(), DT)
    net = quantize(graph)
    path = write_netx(net, tmp_path / "m.net")
    lava_net = netx.hdf5.Network(net_config=str(path))
    assert len(lava_net.layers) == 2
    assert type(lava_net.layers[0]).__name__ == "RecurrentDense" and lava_net.layers[1].shape == (6,)
    with h5py.File(path) as f:
        assert f["layer/1/type"][()] == b"dense_rec" and f["layer/1/neuron/type"][()] == b"CUBA"
        assert np.array_equal(f["layer/1/weight"][()], net.layers[0].weight)
        assert int(f["layer/1/neuron/vThMant"][()]) == net.layers[0].vth
        # lif1 beta 0.85 -> vDecay = 4096 * 0.15; IF lif2 -> no leak; no current memory
        assert int(f["layer/1/neuron/vDecay"][()]) == round(4096 * 0.15)
        assert int(f["layer/2/neuron/vDecay"][()]) == 0 and int(f["layer/2/neuron/iDecay"][()]) == 4096
    w = net.layers[0].weight
    assert np.abs(w).max() <= 254 and np.all(w % 2 == 0)  # 8-bit mixed-sign mantissa x 2


def test_quantised_chip_equals_snntorch_when_weights_are_on_the_grid():
    """Independent check of the neuron semantics and the NIR conversion: with IF neurons and float
    weights on the 8-bit grid, the chip's integer arithmetic equals the snntorch model exactly."""
    torch.manual_seed(0)
    model = ChipNativeSNN([2, 10, 10], [{"type": "conv", "out_channels": 3, "kernel_size": 3, "stride": 2, "padding": 1},
                                        {"type": "flatten"}, {"type": "dense", "out_features": 4}], beta=1.0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                grid = torch.randint(-127, 128, m.weight.shape).float()
                grid.view(-1)[0] = 127  # the largest magnitude sets the scale: 254 / (127/64) = 128
                m.weight.copy_(grid / 64)
                m.bias.zero_()
    x = spikes_in(8, 10, (2, 10, 10), 0.3, seed=6)
    out = model(x, record=True)
    net = quantize(walk_(chip_native_to_nir(model), DT))
    assert all(q.scale == 128 and q.vth == 128 for q in net.layers)
    fast = run_fast(net, x, record=True)
    for name in ("lif1", "lif2"):
        ref = out.spikes[name].to(torch.uint8)
        assert torch.equal(fast.spikes[name].reshape(ref.shape), ref), name
    assert int(out.spikes["lif2"].sum()) > 0


def test_synops_of_a_tiny_network_equal_a_hand_count():
    # 3 inputs -> 2 neurons; weight [[1, 0, 2], [0, 0, 3]]: input 0 drives 1 synapse, input 1 none, input 2 two
    nodes = {"input": nir.Input(np.array([3])), "fc1": nir.Linear(weight=np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]])),
             "lif1": neuron((2,), 1.0, threshold=2.5), "output": nir.Output(np.array([2]))}
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "fc1"), ("fc1", "lif1"), ("lif1", "output")], type_check=False)
    net = quantize(walk_(graph, DT))
    # one sample, 3 steps: input spikes at t0: {0, 2}, t1: {1}, t2: {2}
    x = torch.tensor([[[1, 0, 1], [0, 1, 0], [0, 0, 1]]], dtype=torch.float32)
    res = run_fast(net, x, record=True)
    totals, means = layer_counts(net, res.input_events, res.neuron_spikes, samples=1, timesteps=3)
    # by hand: t0: 1 + 2 = 3 synops; t1: input 1 wired to nothing = 0; t2: 2 -> total 5
    # neuron 0: v = 3 > 2.5 at t0 (spike), then 0, then 2 (no spike); neuron 1: 3 > 2.5 at t0, 0, then 3 > 2.5
    assert totals[0].synops == 5 and totals[0].synapses == 3
    assert totals[0].spikes == 3 and totals[0].neuron_updates == 6 and totals[0].neurons == 2
    assert res.spikes["lif1"][:, 0].tolist() == [[1, 1], [0, 0], [0, 1]]
    assert means[0].synops == 5


def test_deploy_loihi_fast_and_lava_agree_and_write_files(tmp_path):
    model = conv_model()
    x = spikes_in(6, 8, (2, 12, 12), 0.25, seed=7)
    with torch.no_grad():
        fpred = model(x).logits.argmax(1)
    stats = {}
    for engine in ("fast", "lava"):
        inp = DeployInput(graph=chip_native_to_nir(model), dt=DT, timesteps=8, inputs=x, labels=fpred.clone(),
                          float_predictions=fpred, host=None, out_dir=tmp_path / engine, target="loihi2", engine=engine)
        stats[engine] = deploy_loihi(inp, load_profile("loihi2"))
        assert (tmp_path / engine / "model.net").is_file() and (tmp_path / engine / "mapping.json").is_file()
    f, lv = stats["fast"], stats["lava"]
    assert [c.model_dump() for c in f.layers] == [c.model_dump() for c in lv.layers]
    assert f.accuracy == lv.accuracy and f.cores_used == lv.cores_used >= 3
    assert f.samples == 6 and f.timesteps == 8 and [c.name for c in f.layers] == ["lif1", "lif2", "lif3"]
    assert f.per_sample[0].spikes == pytest.approx(f.layers[0].spikes / 6)


def test_host_head_gets_the_chip_output(tmp_path):
    model = conv_model()
    x = spikes_in(5, 8, (2, 12, 12), 0.25, seed=8)
    seen = {}

    def head(trains: dict[str, torch.Tensor]) -> torch.Tensor:
        seen.update(trains)
        return -trains["output"].sum(0)  # reverse the ranking: a head that really decides

    inp = DeployInput(graph=chip_native_to_nir(model), dt=DT, timesteps=8, inputs=x, labels=torch.zeros(5, dtype=torch.long),
                      float_predictions=torch.zeros(5, dtype=torch.long), host=head, out_dir=tmp_path, target="loihi2",
                      engine="fast")
    stats = deploy_loihi(inp, load_profile("loihi2"))
    assert seen["output"].shape == (8, 5, 5) and "lif3" in seen
    fast = run_fast(quantize(walk_(chip_native_to_nir(model), DT)), x)
    expected = (-fast.output.float().sum(0)).argmax(1)
    assert stats.accuracy == pytest.approx(float((expected == 0).float().mean()))


def test_sum_pool_is_folded_exactly():
    rng = np.random.default_rng(2)
    w = rng.normal(0, 1, (3, 2, 3, 3))
    nodes = {"input": nir.Input(np.array([2, 8, 8])), "pool": nir.SumPool2d(np.array([2, 2]), np.array([2, 2]), np.array([0, 0])),
             "conv1": nir.Conv2d(input_shape=(4, 4), weight=w, stride=1, padding=1, dilation=1, groups=1, bias=np.zeros(3)),
             "lif1": neuron((3, 4, 4), 1.0), "output": nir.Output(np.array([3, 4, 4]))}
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "pool"), ("pool", "conv1"), ("conv1", "lif1"), ("lif1", "output")],
                         type_check=False)
    layer = walk_(graph, DT).layers[0]
    x = torch.rand(5, 2, 8, 8, dtype=torch.float64)
    ref = torch.nn.functional.conv2d(torch.nn.functional.avg_pool2d(x, 2) * 4, torch.as_tensor(w), padding=1)
    got = torch.nn.functional.conv2d(x, torch.as_tensor(layer.weight), stride=layer.stride, padding=layer.padding)
    assert torch.allclose(ref, got) and layer.output_shape == (3, 4, 4)
    # average pooling (overlapping, 3x3 stride 2) before flatten + dense: folded into the dense weights
    wd = rng.normal(0, 1, (5, 2 * 3 * 3))
    nodes = {"input": nir.Input(np.array([2, 8, 8])), "pool": nir.AvgPool2d(np.array([3, 3]), np.array([2, 2]), np.array([0, 0])),
             "flatten": nir.Flatten(input_type={"input": np.array([2, 3, 3])}, start_dim=0),
             "fc1": nir.Linear(weight=wd), "lif1": neuron((5,), 1.0), "output": nir.Output(np.array([5]))}
    order = ["input", "pool", "flatten", "fc1", "lif1", "output"]
    layer = walk_(nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])), type_check=False), DT).layers[0]
    ref = torch.nn.functional.avg_pool2d(x, 3, 2).reshape(5, -1) @ torch.as_tensor(wd).T
    assert layer.flatten_before and torch.allclose(ref, x.reshape(5, -1) @ torch.as_tensor(layer.weight).T)


def test_unsupported_node_and_cycle_are_named():
    nodes = {"input": nir.Input(np.array([4])), "fc1": nir.Linear(weight=np.ones((4, 4))),
             "thr": nir.Threshold(np.ones(4)), "output": nir.Output(np.array([4]))}
    g = nir.NIRGraph(nodes=nodes, edges=[("input", "fc1"), ("fc1", "thr"), ("thr", "output")], type_check=False)
    with pytest.raises(UnsupportedNodeError, match="'thr'.*Threshold"):
        walk_(g, DT)
    # a cycle over two layers (lif2 -> fc3 -> lif1) is not a recurrent dense block
    nodes = {"input": nir.Input(np.array([4])), "fc1": nir.Linear(weight=np.ones((4, 4))), "lif1": neuron((4,), 1.0),
             "fc2": nir.Linear(weight=np.ones((4, 4))), "lif2": neuron((4,), 1.0), "fc3": nir.Linear(weight=np.ones((4, 4))),
             "output": nir.Output(np.array([4]))}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "fc3"), ("fc3", "lif1"),
             ("lif2", "output")]
    with pytest.raises(UnsupportedNodeError, match="lif"):
        walk_(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), DT)


def test_mapper_rejects_a_layer_with_too_many_inputs_and_too_many_cores():
    wide = {"input": nir.Input(np.array([5000])), "fc1": nir.Linear(weight=np.ones((8, 5000))),
            "lif1": neuron((8,), 1.0), "output": nir.Output(np.array([8]))}
    g = nir.NIRGraph(nodes=wide, edges=[("input", "fc1"), ("fc1", "lif1"), ("lif1", "output")], type_check=False)
    with pytest.raises(MappingError, match="layer 'lif1'.*5000 input axons.*4096"):
        map_cores(quantize(walk_(g, DT)), load_profile("loihi"))
    big = {"input": nir.Input(np.array([64])), "fc1": nir.Linear(weight=np.ones((140 * 1024, 64))),
           "lif1": neuron((140 * 1024,), 1.0), "output": nir.Output(np.array([140 * 1024]))}
    g = nir.NIRGraph(nodes=big, edges=[("input", "fc1"), ("fc1", "lif1"), ("lif1", "output")], type_check=False)
    with pytest.raises(MappingError, match="needs 140 cores.*128"):
        map_cores(quantize(walk_(g, DT)), load_profile("loihi"))


def test_mapper_splits_by_synaptic_memory():
    # 1000 neurons x 2000 synapses x 1 byte = 2 MB: 128 KiB per core -> 65 neurons a core -> 16 cores
    g = nir.NIRGraph(nodes={"input": nir.Input(np.array([2000])), "fc1": nir.Linear(weight=np.ones((1000, 2000))),
                            "lif1": neuron((1000,), 1.0), "output": nir.Output(np.array([1000]))},
                     edges=[("input", "fc1"), ("fc1", "lif1"), ("lif1", "output")], type_check=False)
    m = map_cores(quantize(walk_(g, DT)), load_profile("loihi"))
    assert m.cores_used == 16 and all(c.synaptic_bytes <= 128 * 1024 for c in m.cores)
    assert sum(c.neurons for c in m.cores) == 1000


def test_weight_clipping_is_warned_and_counted():
    w = np.ones((4, 10))
    w[0, 0] = 50.0  # an outlier: at the 90th percentile scale it must be clipped
    g = nir.NIRGraph(nodes={"input": nir.Input(np.array([10])), "fc1": nir.Linear(weight=w), "lif1": neuron((4,), 1.0),
                            "output": nir.Output(np.array([4]))},
                     edges=[("input", "fc1"), ("fc1", "lif1"), ("lif1", "output")], type_check=False)
    with pytest.warns(UserWarning, match="clipped 1"):
        net = quantize(walk_(g, DT), weight_percentile=90)
    assert net.clipped == 1 and net.layers[0].weight.max() == 254
