"""Loihi fast engine: its floating-point paths are exact (proven bounds), checked against the
int64 transcription of Lava's models and against Lava itself where the neuron has current memory."""
from __future__ import annotations

import nir
import pytest
import numpy as np
import torch

from spikeport.deploy.loihi import fast_engine as fe
from spikeport.deploy.loihi.fast_engine import accumulation_dtype, run_fast, synaptic_bound
from spikeport.deploy.loihi.lava_run import run_lava
from spikeport.deploy.loihi.netx_writer import write_netx
from spikeport.deploy.loihi.target import loihi_layers
from spikeport.deploy.lowering import Layer, lower


def walk_(graph, dt):
    return loihi_layers(lower(graph, dt))
from spikeport.deploy.loihi.quantize import QuantLayer, QuantNet, quantize

DT = 1e-3


def lif(shape, beta: float) -> nir.NIRNode:
    shape = tuple(shape)
    if beta == 1.0:
        return nir.IF(r=np.full(shape, 1 / DT), v_threshold=np.ones(shape))
    tau = DT / (1 - beta)
    return nir.LIF(tau=np.full(shape, tau), r=np.full(shape, tau / DT), v_leak=np.zeros(shape),
                   v_threshold=np.ones(shape))


def cuba(shape, alpha: float, beta: float) -> nir.NIRNode:
    """snntorch's Synaptic as its exporter writes it: w_in = tau_syn / dt cancels the current's dt / tau_syn."""
    shape = tuple(shape)
    tau_mem, tau_syn = DT / (1 - beta), DT / (1 - alpha)
    return nir.CubaLIF(tau_syn=np.full(shape, tau_syn), tau_mem=np.full(shape, tau_mem), r=np.full(shape, tau_mem / DT),
                       v_leak=np.zeros(shape), v_threshold=np.ones(shape), w_in=np.full(shape, tau_syn / DT))


def chain(nodes: dict, extra_edges=()) -> nir.NIRGraph:
    names = list(nodes)
    rec = {d for _, d in extra_edges} | {s for s, _ in extra_edges}
    order = [n for n in names if not (n.startswith("rec") and n in rec)]
    return nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])) + list(extra_edges), type_check=False)


def conv_graph(beta: float, seed: int = 0) -> nir.NIRGraph:
    rng = np.random.default_rng(seed)
    return chain({
        "input": nir.Input(np.array([2, 12, 12])),
        "conv1": nir.Conv2d(input_shape=(12, 12), weight=rng.normal(0, 0.6, (4, 2, 3, 3)), stride=2, padding=1,
                            dilation=1, groups=1, bias=rng.normal(0, 0.05, 4)),
        "lif1": lif((4, 6, 6), beta),
        "conv2": nir.Conv2d(input_shape=(6, 6), weight=rng.normal(0, 0.5, (6, 4, 3, 3)), stride=1, padding=1,
                            dilation=1, groups=1, bias=rng.normal(0, 0.05, 6)),
        "lif2": lif((6, 6, 6), beta),
        "flatten": nir.Flatten(input_type={"input": np.array([6, 6, 6])}, start_dim=0),
        "fc1": nir.Affine(weight=rng.normal(0, 0.3, (5, 216)), bias=rng.normal(0, 0.05, 5)),
        "lif3": lif((5,), beta),
        "output": nir.Output(np.array([5])),
    })


def cuba_recurrent_graph(seed: int = 3) -> nir.NIRGraph:
    """Current memory (alpha 0.75), leak, a recurrent block: the general update in every part."""
    rng = np.random.default_rng(seed)
    nodes = {
        "input": nir.Input(np.array([20])),
        "fc1": nir.Affine(weight=rng.normal(0, 0.5, (12, 20)), bias=rng.normal(0, 0.05, 12)),
        "lif1": cuba((12,), 0.75, 0.9),
        "rec1": nir.Linear(weight=rng.normal(0, 0.4, (12, 12))),
        "fc2": nir.Linear(weight=rng.normal(0, 0.7, (4, 12))),
        "lif2": cuba((4,), 0.5, 1.0 - 1 / 64),
        "output": nir.Output(np.array([4])),
    }
    return chain(nodes, extra_edges=[("lif1", "rec1"), ("rec1", "lif1")])


def cuba_two_recurrent_graph(seed: int = 4) -> nir.NIRGraph:
    """Recurrent blocks with current memory at depths 0 and 1: each layer resets in its own phase."""
    rng = np.random.default_rng(seed)
    nodes = {
        "input": nir.Input(np.array([16])),
        "fc1": nir.Affine(weight=rng.normal(0, 0.5, (10, 16)), bias=rng.normal(0, 0.05, 10)),
        "lif1": cuba((10,), 0.75, 0.9),
        "rec1": nir.Linear(weight=rng.normal(0, 0.4, (10, 10))),
        "fc2": nir.Affine(weight=rng.normal(0, 0.6, (8, 10)), bias=rng.normal(0, 0.05, 8)),
        "lif2": cuba((8,), 0.8, 0.95),
        "rec2": nir.Linear(weight=rng.normal(0, 0.4, (8, 8))),
        "fc3": nir.Linear(weight=rng.normal(0, 0.7, (3, 8))),
        "lif3": cuba((3,), 0.5, 0.9),
        "output": nir.Output(np.array([3])),
    }
    return chain(nodes, extra_edges=[("lif1", "rec1"), ("rec1", "lif1"), ("lif2", "rec2"), ("rec2", "lif2")])


def spikes_in(n: int, t: int, shape, p: float, seed: int, graded: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand((n, t, *shape), generator=g) < p).float()
    if graded:
        x = x * torch.randint(1, graded + 1, x.shape, generator=g).float()
    return x


def assert_equal_trains(a: dict, b: dict) -> int:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].shape == b[name].shape, name
        diff = int((a[name] != b[name]).sum())
        assert diff == 0, f"layer {name}: {diff} spikes differ"
    return sum(int(v.sum()) for v in a.values())


def test_float32_paths_equal_the_int64_reference():
    """IF (float32 state, units of 2**6) and LIF (float64 state) with float32 synaptic sums: the bounds
    hold, so the spikes equal the int64 transcription, every layer and step, binary and graded input."""
    for beta, graded, mode in ((1.0, 0, "if"), (0.9, 0, "lif"), (1.0, 7, "if")):
        net = quantize(walk_(conv_graph(beta), DT), input_bits=3 if graded else 0)
        x = spikes_in(12, 9, (2, 12, 12), 0.3, seed=int(beta * 10) + graded, graded=graded)
        plans = fe._plan(net, x.shape[1], "auto")
        assert [p.mode for p in plans] == [mode] * 3 and all(p.acc == torch.float32 for p in plans)
        fast = run_fast(net, x, record=True, batch_size=5)
        ref = run_fast(net, x, record=True, arithmetic="int64")
        assert all(p.mode == "int64" for p in fe._plan(net, x.shape[1], "int64"))
        assert assert_equal_trains(fast.spikes, ref.spikes) > 100
        assert torch.equal(fast.output, ref.output)
        for name, counts in fast.neuron_spikes.items():  # totals agree with the recorded trains
            trains = fast.spikes[name].reshape(x.shape[1], x.shape[0], -1).sum((0, 1)).double()
            assert torch.equal(counts, trains) and torch.equal(counts, ref.neuron_spikes[name])


def test_current_memory_and_recurrence_equal_lava_and_the_int64_reference(tmp_path):
    graph = cuba_recurrent_graph()
    net = quantize(walk_(graph, DT))
    assert net.layers[0].i_decay == 1024 and net.layers[0].rec_weight is not None
    assert [p.mode for p in fe._plan(net, 10, "auto")] == ["cuba", "cuba"]
    x = spikes_in(12, 10, (20,), 0.35, seed=11)
    fast = run_fast(net, x, record=True, batch_size=5)
    ref = run_fast(net, x, record=True, arithmetic="int64")
    assert assert_equal_trains(fast.spikes, ref.spikes) > 50
    # all 12 samples in one Lava run: with current memory the recurrent layer still fires when a
    # sample's input ends, and none of that may reach the next sample
    lava = run_lava(write_netx(net, tmp_path / "cuba_rec.net"), x, [q.name for q in net.layers])
    assert assert_equal_trains(fast.spikes, lava.spikes) > 50
    tail = fast.spikes["lif1"][-1].sum(-1)  # spikes at each sample's last input step
    assert int((tail > 0).sum()) >= 6  # the previous sample really is active at the boundary
    per_sample = lava.spikes["lif1"].sum((0, 2))
    assert int((per_sample > 0).sum()) == x.shape[0]

    # recurrent blocks at two depths, 8 samples
    net2 = quantize(walk_(cuba_two_recurrent_graph(), DT))
    assert [q.rec_weight is not None for q in net2.layers] == [True, True, False]
    assert all(q.i_decay < 4096 for q in net2.layers)
    x2 = spikes_in(8, 9, (16,), 0.35, seed=12)
    fast2 = run_fast(net2, x2, record=True, batch_size=3)
    lava2 = run_lava(write_netx(net2, tmp_path / "cuba_rec2.net"), x2, [q.name for q in net2.layers])
    assert assert_equal_trains(fast2.spikes, lava2.spikes) > 30
    assert all(int(lava2.spikes[q.name].sum()) > 5 for q in net2.layers)
    assert_equal_trains(run_fast(net2, x2, record=True, arithmetic="int64").spikes, lava2.spikes)

    # without the recurrent block, current memory over 12 samples in one Lava run
    nodes = {k: v for k, v in graph.nodes.items() if k != "rec1"}
    net = quantize(walk_(chain(nodes), DT))
    assert [p.mode for p in fe._plan(net, 10, "auto")] == ["cuba", "cuba"]
    fast = run_fast(net, x, record=True, batch_size=5)
    lava = run_lava(write_netx(net, tmp_path / "cuba.net"), x, [q.name for q in net.layers])
    assert assert_equal_trains(fast.spikes, lava.spikes) > 50
    assert_equal_trains(run_fast(net, x, record=True, arithmetic="int64").spikes, lava.spikes)


def _dense_layer(weight: np.ndarray, vth: int = 100, kind: str = "dense", **conv) -> QuantLayer:
    out_shape = conv.pop("output_shape", (weight.shape[0],))
    in_shape = conv.pop("input_shape", (weight.shape[1],))
    layer = Layer("lif1", "fc1", kind, in_shape, out_shape, weight.astype(np.float64), None, 1.0, 0.0, 1.0, **conv)
    return QuantLayer(layer, weight.astype(np.int64), None, None, vth, 4096, 0, 1.0)


def test_bound_check_picks_an_exact_dtype():
    w = np.array([[254, -254, 2], [2, 2, 2]])
    assert synaptic_bound(w, 15) == 510 * 15  # the largest sum of |w| over one output's inputs, times the payload
    assert accumulation_dtype(2**24 - 1) == torch.float32
    assert accumulation_dtype(2**24) == torch.float64
    assert accumulation_dtype(2**53) == torch.int64

    # 24-bit graded payloads: a sum float32 cannot hold, so the bound must pick float64
    q = _dense_layer(np.array([[254, 2]]))
    net = QuantNet((2,), [q], input_bits=24)
    x = torch.tensor([[[2.0**24 - 1, 1.0], [1.0, 0.0]]])  # one sample, two steps
    exact = 254 * (2**24 - 1) + 2
    wrong = (x[0, :1].float() @ torch.tensor([[254.0], [2.0]])).item()
    assert wrong != exact  # float32 really is inexact here
    plan = fe._plan(net, 2, "auto")[0]
    assert plan.acc == torch.float64 and plan.bound == 256 * (2**24 - 1)
    a = fe._synaptic(plan, x.transpose(0, 1), None)
    assert a[0, 0, 0].item() == exact and a[1, 0, 0].item() == 254
    assert torch.equal(run_fast(net, x, record=True).spikes["lif1"], run_fast(net, x, record=True, arithmetic="int64").spikes["lif1"])

    # past 2**53 only integers are exact: the whole network runs in int64
    fan_in = 2**53 // (254 * (2**24 - 1)) + 1
    big = QuantNet((fan_in,), [_dense_layer(np.full((1, fan_in), 254))], input_bits=24)
    plan = fe._plan(big, 1, "auto")[0]
    assert plan.bound >= 2**53 and plan.acc == torch.int64 and plan.mode == "int64"
    xb = torch.full((1, 1, fan_in), 2.0**24 - 1)
    a = fe._synaptic(plan, xb.transpose(0, 1), None)
    assert a.dtype == torch.int64 and a.item() == 254 * (2**24 - 1) * fan_in


def test_large_conv_sums_take_the_wrapping_path_exactly():
    """Conv sums beyond 24 bits (Lava's signed clamp) and currents beyond Lava's wrap: float64, still exact."""
    rng = np.random.default_rng(5)
    w = rng.integers(0, 128, (3, 4, 3, 3)) * 2
    w[1] *= -1  # one channel far above 2**23, one far below, one mixed
    w[2, :2] *= -1
    q = _dense_layer(w, vth=4000, kind="conv", input_shape=(4, 6, 6), output_shape=(3, 6, 6), padding=(1, 1))
    net = QuantNet((4, 6, 6), [q], input_bits=12)
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 4096, (5, 6, 4, 6, 6), generator=g).float() * (torch.rand(5, 6, 4, 6, 6, generator=g) < 0.6)
    plan = fe._plan(net, 6, "auto")[0]
    assert plan.bound > 2**24 and plan.acc == torch.float64 and not plan.fuse_bias
    a = fe._synaptic(plan, x.transpose(0, 1), None)
    assert float(a.abs().max()) >= 2**23  # the 24-bit clamp and the current wrap both fire
    fast = run_fast(net, x, record=True)
    ref = run_fast(net, x, record=True, arithmetic="int64")
    assert assert_equal_trains(fast.spikes, ref.spikes) > 0


def test_sparse_input_event_driven_equals_lava_and_the_int64_reference(tmp_path):
    """Sparse graded input: the event-driven accumulation (only the inputs that spiked, channels-last
    convolution tables, dense weight rows) gives Lava's and the int64 reference's spikes, every layer."""
    net = quantize(walk_(conv_graph(1.0, seed=7), DT), input_bits=3)
    x = spikes_in(8, 10, (2, 12, 12), 0.008, seed=21, graded=7)
    names = [q.name for q in net.layers]
    ref = run_fast(net, x, record=True, arithmetic="int64")
    lava = run_lava(write_netx(net, tmp_path / "sparse.net"), x, names, input_bits=3)
    assert assert_equal_trains(ref.spikes, lava.spikes) > 20
    assert all(int(lava.spikes[n].sum()) > 0 for n in names)
    default = fe.CHANNELS_LAST
    try:
        for channels_last in (False, True):  # conv outputs in (C, H, W) or (H, W, C) order
            fe.CHANNELS_LAST = channels_last
            plans = fe._plan(net, x.shape[1], "auto")
            assert plans[0].out_hwc == channels_last and all(p.events is not None for p in plans)
            frames = x.transpose(0, 1).reshape(x.shape[1], x.shape[0], -1)
            assert fe._use_events(plans[0], frames, "auto")  # sparse enough that "auto" takes the event path
            assert not fe._use_events(plans[0], torch.ones_like(frames), "auto")
            for events in ("always", "auto", "never"):
                fast = run_fast(net, x, record=True, events=events, batch_size=3)
                assert_equal_trains(fast.spikes, lava.spikes)
                for name in names:
                    assert torch.equal(fast.neuron_spikes[name], ref.neuron_spikes[name]), (events, name)
                assert torch.equal(fast.input_events, ref.input_events)
    finally:
        fe.CHANNELS_LAST = default


def test_cuda_convolution_path_is_exact():
    """The unfold + matrix product convolution used on CUDA (no Winograd / FFT) equals the integer
    convolution, grouped and strided; here on the CPU, where it runs the same ops."""
    rng = np.random.default_rng(9)
    w = rng.integers(-127, 128, (6, 2, 3, 3)) * 2
    q = _dense_layer(w, kind="conv", input_shape=(4, 7, 7), output_shape=(6, 4, 4), padding=(1, 1), stride=(2, 2),
                     groups=2)
    plan = fe._plan(QuantNet((4, 7, 7), [q], 0), 1, "auto")[0]
    x = torch.randint(0, 2, (5, 4, 7, 7)).float()
    bias = torch.arange(6).float()
    got = fe._conv_unfold(plan, x, torch.as_tensor(w).float(), bias)
    want = torch.nn.functional.conv2d(x.double(), torch.as_tensor(w).double(), bias.double(), stride=2, padding=1,
                                      groups=2)
    assert torch.equal(got.double(), want) and float(want.abs().max()) > 254


def _all_equal(a, b, what: str) -> None:
    assert a.spikes.keys() == b.spikes.keys()
    for name in a.spikes:
        assert torch.equal(a.spikes[name], b.spikes[name]), f"{what}: layer {name} trains differ"
        assert torch.equal(a.neuron_spikes[name], b.neuron_spikes[name]), f"{what}: layer {name} totals differ"
    assert torch.equal(a.output, b.output) and torch.equal(a.input_events, b.input_events), what


def test_compiled_event_kernel_equals_lava_the_dense_path_and_the_int64_reference(tmp_path):
    """The compiled event-driven run (numba), each layer's input as events or as dense frames, gives
    the spikes of Lava, of the int64 transcription and of the torch paths, every layer and step: sparse
    graded input, denser binary input with leak, and an all-zero input."""
    if not fe.KERNELS:
        pytest.skip("numba is not installed: the compiled run is unavailable")
    default = fe.KERNEL_EVENTS
    try:
        cases = ((1.0, 3, 0.008, 7), (0.9, 0, 0.15, 8), (1.0, 0, 0.0, 9))
        for beta, bits, density, seed in cases:
            net = quantize(walk_(conv_graph(beta, seed=seed), DT), input_bits=bits)
            x = spikes_in(7, 10, (2, 12, 12), density, seed=seed, graded=7 if bits else 0)
            plans = fe._plan(net, x.shape[1], "auto")
            assert all(p.kernel is not None for p in plans)
            ref = run_fast(net, x, record=True, arithmetic="int64")
            if density == 0.008:
                lava = run_lava(write_netx(net, tmp_path / "kernel.net"), x, [q.name for q in net.layers], input_bits=bits)
                assert assert_equal_trains(ref.spikes, lava.spikes) > 20
            if density == 0.0:  # nothing arrives: no events, no spikes (the biases stay below threshold)
                assert int(ref.input_events.sum()) == 0
            else:
                assert all(int(v.sum()) > 0 for v in ref.spikes.values())
            for forced in (True, False, None):  # every layer event-driven, every layer dense, by cost
                fe.KERNEL_EVENTS = forced
                for record in (True, False):
                    got = run_fast(net, x, record=record, events="kernel", batch_size=3)
                    if record:
                        _all_equal(got, ref, f"kernel events={forced}")
                    else:
                        assert got.spikes is None and torch.equal(got.output, ref.output)
                        assert all(torch.equal(got.neuron_spikes[k], ref.neuron_spikes[k]) for k in ref.neuron_spikes)
            fe.KERNEL_EVENTS = None
            _all_equal(run_fast(net, x, record=True, events="never", threads=2, batch_size=2), ref, "dense torch path")
            _all_equal(run_fast(net, x, record=True, events="kernel", threads=2, batch_size=2), ref, "kernel, 2 threads")
    finally:
        fe.KERNEL_EVENTS = default


def test_compiled_kernel_on_a_grouped_strided_conv_and_its_refusals():
    """Groups spelled out in the kernel's tables, a dilated tap pattern; networks the compiled run does
    not cover (current memory) are refused by name with events='kernel', and run on the torch paths."""
    if not fe.KERNELS:
        pytest.skip("numba is not installed: the compiled run is unavailable")
    rng = np.random.default_rng(13)
    w = rng.integers(-40, 41, (6, 2, 3, 3)) * 2
    for conv in (dict(padding=(1, 1), stride=(2, 2), groups=2, output_shape=(6, 4, 4)),
                 dict(padding=(2, 2), dilation=(2, 2), groups=2, output_shape=(6, 7, 7))):
        q = _dense_layer(w, vth=60, kind="conv", input_shape=(4, 7, 7), **conv)
        net = QuantNet((4, 7, 7), [q], 0)
        x = spikes_in(5, 6, (4, 7, 7), 0.3, seed=3)
        ref = run_fast(net, x, record=True, arithmetic="int64")
        assert int(ref.spikes["lif1"].sum()) > 10
        _all_equal(run_fast(net, x, record=True, events="kernel"), ref, f"grouped conv {conv}")
    cuba = quantize(walk_(cuba_recurrent_graph(), DT))
    with pytest.raises(ValueError, match="compiled event-driven run does not apply"):
        run_fast(cuba, spikes_in(2, 4, (20,), 0.3, seed=1), events="kernel")


def test_cuda_runs_exact_algorithms_and_without_a_gpu_is_refused_clearly():
    """On CUDA the engine forces what keeps its float sums exact (no TF32 in products or cuDNN,
    deterministic cuDNN, no autotuning) and puts the flags back; without a GPU, one clear error."""
    b = torch.backends
    before = (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.deterministic, b.cudnn.benchmark)
    b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark = True, True, True
    try:
        with fe._exact_cuda(torch.device("cuda")):
            assert not b.cuda.matmul.allow_tf32 and not b.cudnn.allow_tf32
            assert b.cudnn.deterministic and not b.cudnn.benchmark
        assert b.cuda.matmul.allow_tf32 and b.cudnn.allow_tf32 and b.cudnn.benchmark
    finally:
        b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.deterministic, b.cudnn.benchmark = before
    plans = fe._plan(quantize(walk_(conv_graph(1.0), DT)), 3, "auto")
    assert fe._kernel_applies(plans) == fe.KERNELS
    for p in plans:  # the compiled kernels are CPU code: on CUDA the torch paths run
        p.device = torch.device("cuda")
    assert not fe._kernel_applies(plans)
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    net = quantize(walk_(conv_graph(1.0), DT))
    with pytest.raises(ValueError, match="no CUDA GPU"):
        run_fast(net, spikes_in(1, 3, (2, 12, 12), 0.1, seed=0), device="cuda")


def test_input_preparation_rounds_and_counts_as_the_torch_ops():
    """The compiled input pass (payload frames and event counts in one pass) and the torch ops against
    the int64 reference: halves (rounded half to even), negatives, values past the payload range, a
    float64 value float32 cannot hold (an event of payload 0, counted on the value given), binary input."""
    for bits in (3, 0):
        net = quantize(walk_(conv_graph(1.0, seed=2), DT), input_bits=bits)
        x = spikes_in(4, 6, (2, 12, 12), 0.3, seed=5, graded=7).double()
        g = torch.Generator().manual_seed(6)
        special = torch.tensor([0.5, 1.5, 2.5, -1.0, 9.0, 1e-50, 6.5, 3.49999])
        pick = torch.rand(x.shape, generator=g) < 0.1
        x[pick] = special[torch.randint(0, len(special), (int(pick.sum()),), generator=g)].double()
        ref = run_fast(net, x, record=True, arithmetic="int64")
        for events in ("never", "kernel"):  # the compiled payload frames, the compiled event list
            _all_equal(run_fast(net, x, record=True, events=events), ref, f"input bits {bits}, events={events}")
        kernels, layout = fe.KERNELS, fe.CHANNELS_LAST
        try:  # the torch ops (without numba), in both layouts
            fe.KERNELS = False
            for fe.CHANNELS_LAST in (False, True):
                _all_equal(run_fast(net, x, record=True, events="never"), ref, f"torch ops, bits {bits}")
        finally:
            fe.KERNELS, fe.CHANNELS_LAST = kernels, layout
        assert int(ref.input_events.sum()) > 0
