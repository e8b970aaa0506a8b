"""The engines' int8 x int8 -> int32 products (deploy/int_products.py): the kernels against a float64
convolution / product (exact at these magnitudes), the Loihi twin's int8 path against Lava and the
int64 reference on every layer and step, the Speck engine's against sinabs, and the fallbacks where an
operand does not fit int8 (a weight of 300, an input count of 200)."""
from __future__ import annotations

import copy

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spikeport.deploy import int_products as ip
from spikeport.deploy.loihi import fast_engine as fe
from spikeport.deploy.loihi.fast_engine import run_fast
from spikeport.deploy.loihi.lava_run import run_lava
from spikeport.deploy.loihi.netx_writer import write_netx
from spikeport.deploy.loihi.quantize import quantize
from spikeport.deploy.loihi.target import loihi_layers
from spikeport.deploy.lowering import lower
from spikeport.deploy.speck import fast_engine as speck
from spikeport.deploy.speck.chip_form import ChipForm, ChipLayer, OutputTap, SpeckLimits
from spikeport.deploy.speck.quantize import quantise
from spikeport.deploy.speck.simulate import build_chip_net, simulate
from spikeport.hw_profiles import load_profile

DT = 1e-3
pytestmark = pytest.mark.skipif(not ip.EXACT, reason="no exact int8 product on this CPU / torch build")


def _if(shape, beta: float = 1.0) -> nir.NIRNode:
    shape = tuple(shape)
    if beta == 1.0:
        return nir.IF(r=np.full(shape, 1 / DT), v_threshold=np.ones(shape))
    tau = DT / (1 - beta)
    return nir.LIF(tau=np.full(shape, tau), r=np.full(shape, tau / DT), v_leak=np.zeros(shape),
                   v_threshold=np.ones(shape))


def _graph(seed: int = 0, beta: float = 1.0) -> nir.NIRGraph:
    """Two convolutions (one strided, padded) and two dense layers, IF (or LIF) neurons."""
    rng = np.random.default_rng(seed)

    nodes = {
        "input": nir.Input(np.array([2, 12, 12])),
        "conv1": nir.Conv2d(input_shape=(12, 12), weight=rng.normal(0, 0.6, (4, 2, 3, 3)), stride=2, padding=1,
                            dilation=1, groups=1, bias=rng.normal(0, 0.05, 4)),
        "lif1": _if((4, 6, 6), beta),
        "conv2": nir.Conv2d(input_shape=(6, 6), weight=rng.normal(0, 0.5, (8, 4, 3, 3)), stride=1, padding=1,
                            dilation=1, groups=1, bias=rng.normal(0, 0.05, 8)),
        "lif2": _if((8, 6, 6), beta),
        "flatten": nir.Flatten(input_type={"input": np.array([8, 6, 6])}, start_dim=0),
        "fc1": nir.Affine(weight=rng.normal(0, 0.3, (12, 288)), bias=rng.normal(0, 0.05, 12)),
        "lif3": _if((12,), beta),
        "fc2": nir.Affine(weight=rng.normal(0, 0.6, (5, 12)), bias=rng.normal(0, 0.05, 5)),
        "lif4": _if((5,), beta),
        "output": nir.Output(np.array([5])),
    }
    names = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(names[:-1], names[1:])), type_check=False)


def _inputs(n: int, t: int, shape, p: float, seed: int, most: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    on = torch.rand((n, t, *shape), generator=g) < p
    return on * torch.randint(1, most + 1, on.shape, generator=g).float()


def _equal(a: dict, b: dict) -> int:
    assert a.keys() == b.keys()
    for name in a:
        diff = int((a[name] != b[name]).sum())
        assert diff == 0, f"layer {name}: {diff} spikes differ"
    return sum(int(v.sum()) for v in a.values())


class _Calls:
    """Counts the int8 products taken, per kind."""

    def __init__(self, monkeypatch):
        self.conv = self.dense = 0
        conv, dense = ip.conv_int8, ip.dense_int8

        def conv_(*a, **k):
            self.conv += 1
            return conv(*a, **k)

        def dense_(*a, **k):
            self.dense += 1
            return dense(*a, **k)

        monkeypatch.setattr(ip, "conv_int8", conv_)
        monkeypatch.setattr(ip, "dense_int8", dense_)


# ------------------------------------------------------------------ the kernels ---------------------
@pytest.mark.parametrize("cin,cout,k,stride,pad,dil", [
    (1, 3, 3, 1, 1, 1), (2, 8, 5, 2, 2, 1), (3, 4, 3, 1, 2, 2), (4, 5, 2, 2, 0, 1), (8, 6, 3, 2, 1, 1),
    (16, 4, 3, 1, 0, 1), (6, 2, 3, 3, 1, 2)])
def test_int8_convolution_equals_a_float64_convolution(cin, cout, k, stride, pad, dil):
    g = torch.Generator().manual_seed(cin * 100 + k)
    h = 11
    x = torch.randint(0, 128, (7, cin, h, h), generator=g).float() * (torch.rand(7, cin, h, h, generator=g) < 0.5)
    x[0] = 127  # worst case: full input against extreme weights
    w = torch.randint(-128, 128, (cout, cin, k, k), generator=g) * 4
    w[0] = -128 * 4
    b = torch.randint(-300, 300, (cout,), generator=g).double()
    oh = (h + 2 * pad - dil * (k - 1) - 1) // stride + 1
    w8 = ip.int8_weight(w.numpy())
    assert w8[1] == 2  # the common power of two is divided out
    conv, why = ip.conv_int8_plan(w8, (stride, stride), (pad, pad), (dil, dil), 1, (cin, h, h), (cout, oh, oh))
    assert conv is not None, why
    ref = F.conv2d(x.double(), w.double(), b, stride=stride, padding=pad, dilation=dil)  # exact below 2**53
    for dtype in (torch.float64, torch.float32):
        got = ip.conv_int8(conv, x.to(dtype), b.to(dtype), dtype)
        assert got.dtype == dtype and torch.equal(got.double(), ref)
    assert torch.equal(ip.conv_int8(conv, x, None, torch.float64), ref - b.view(1, -1, 1, 1))


def test_int8_dense_equals_a_float64_product_and_weights_that_do_not_fit_are_refused():
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 128, (33, 70), generator=g).float()
    w = torch.randint(-128, 128, (9, 70), generator=g) * 2
    b = torch.randint(-50, 50, (9,), generator=g).float()
    w8, shift, why = ip.int8_weight(w.numpy())
    assert shift == 1 and not why
    got = ip.dense_int8(x, w8.t().to(torch.int8).contiguous(), shift, b, torch.float32)
    assert torch.equal(got.double(), x.double() @ w.double().t() + b.double())
    # 300 fits no int8 times a power of two with 2 (300 = 150 * 2); -256 and 254 do (x 2), with a 1 not
    assert ip.int8_weight(np.array([300, 2]))[0] is None and "do not fit int8" in ip.int8_weight(np.array([300, 2]))[2]
    assert ip.int8_weight(np.array([-256, 254]))[1] == 1
    assert ip.int8_weight(np.array([-256, 254, 1]))[0] is None


# ------------------------------------------------------------------ Loihi twin --------------------
def test_loihi_int8_path_equals_lava_and_the_int64_reference(tmp_path, monkeypatch):
    """Every layer's product int8 (convolutions forced), graded 3-bit input: spikes equal to Lava's and
    the int64 transcription's on every layer and step."""
    monkeypatch.setattr(fe, "INT8", True)
    net = quantize(loihi_layers(lower(_graph(), DT)), input_bits=3)
    assert all(np.all(q.weight % 2 == 0) for q in net.layers)  # netx's even weights: int8 x 2
    x = _inputs(6, 8, (2, 12, 12), 0.3, seed=1, most=7)
    assert fe.int8_layers(net, x.shape[1]) == {q.name: "int8" for q in net.layers}
    calls = _Calls(monkeypatch)
    fast = run_fast(net, x, record=True, batch_size=4, events="never")
    assert calls.conv == 2 * 2 and calls.dense == 2 * 2  # two chunks, two of each
    ref = run_fast(net, x, record=True, arithmetic="int64")
    assert _equal(fast.spikes, ref.spikes) > 100
    assert all(int(fast.spikes[q.name].sum()) > 0 for q in net.layers)  # every layer fires: the test has teeth
    lava = run_lava(write_netx(net, tmp_path / "int8.net"), x, [q.name for q in net.layers], input_bits=3)
    _equal(fast.spikes, lava.spikes)
    for name, counts in fast.neuron_spikes.items():
        assert torch.equal(counts, ref.neuron_spikes[name])
    # the default choice: dense layers int8, these small convolutions float (estimated cheaper); same spikes
    monkeypatch.setattr(fe, "INT8", None)
    layers = fe.int8_layers(net, x.shape[1])
    assert layers["lif3"] == layers["lif4"] == "int8" and layers["lif1"].startswith("float")
    _equal(run_fast(net, x, record=True).spikes, ref.spikes)
    monkeypatch.setattr(fe, "INT8", False)
    assert all(v.startswith("float") for v in fe.int8_layers(net, x.shape[1]).values())
    _equal(run_fast(net, x, record=True).spikes, ref.spikes)


def test_loihi_int8_falls_back_where_an_operand_does_not_fit(monkeypatch):
    monkeypatch.setattr(fe, "INT8", True)
    net = quantize(loihi_layers(lower(_graph(seed=2), DT)), input_bits=3)
    # a weight of 300: that layer keeps its float product (results still the integer reference's)
    wide = copy.deepcopy(net)
    wide.layers[2].weight = wide.layers[2].weight.copy()
    wide.layers[2].weight[0, 0] = 300
    layers = fe.int8_layers(wide, 8)
    assert "do not fit int8" in layers["lif3"] and layers["lif1"] == layers["lif2"] == layers["lif4"] == "int8"
    x = _inputs(4, 8, (2, 12, 12), 0.3, seed=3, most=7)
    calls = _Calls(monkeypatch)
    got = run_fast(wide, x, record=True, events="never", threads=1, batch_size=2)
    assert calls.dense == 1 * 2  # lif4 only, once in each of the two chunks
    _equal(got.spikes, run_fast(wide, x, record=True, arithmetic="int64").spikes)

    # 8-bit payloads: a chunk whose input reaches 200 runs the first layer in float, one below 128 in int8
    net8 = quantize(loihi_layers(lower(_graph(seed=2), DT)), input_bits=8)
    assert fe.int8_layers(net8, 8)["lif1"] == "int8 (payloads checked per chunk)"
    low = _inputs(3, 8, (2, 12, 12), 0.3, seed=4, most=120)
    high = low.clone()
    high[0, 2, 1, 5, 5] = 200
    for xs, first in ((low, 1), (high, 0)):
        calls = _Calls(monkeypatch)
        got = run_fast(net8, xs, record=True, events="never", threads=1)
        assert calls.conv == first + 1  # conv2 always int8 (its input is spikes)
        _equal(got.spikes, run_fast(net8, xs, record=True, arithmetic="int64").spikes)


@pytest.mark.parametrize("beta", [1.0, 0.9], ids=["if", "lif"])
def test_loihi_compiled_and_torch_scans_equal_the_int64_reference(monkeypatch, beta):
    """The compiled neuron scans (count and recorded train in the same pass) and the torch scans give
    the int64 transcription's spikes, recorded or not, IF and LIF."""
    net = quantize(loihi_layers(lower(_graph(seed=5, beta=beta), DT)), input_bits=3)
    assert {p.mode for p in fe._plan(net, 10, "auto")} == {"if" if beta == 1.0 else "lif"}
    x = _inputs(5, 10, (2, 12, 12), 0.3, seed=6, most=7)
    ref = run_fast(net, x, record=True, arithmetic="int64")
    assert all(int(ref.spikes[q.name].sum()) > 0 for q in net.layers)
    for fused in (True, False):
        monkeypatch.setattr(fe, "FUSED_SCAN", fused)
        got = run_fast(net, x, record=True, batch_size=2, events="never")
        _equal(got.spikes, ref.spikes)
        bare = run_fast(net, x, batch_size=3, events="never")
        assert torch.equal(bare.output, ref.output)
        for name in ref.neuron_spikes:
            assert torch.equal(got.neuron_spikes[name], ref.neuron_spikes[name])
            assert torch.equal(bare.neuron_spikes[name], ref.neuron_spikes[name])


# ------------------------------------------------------------------ Speck engine ------------------
def _layer(name: str, in_shape, c_out: int, k: int, stride: int = 1, pad: int = 0, gain: float = 3.0,
           seed: int = 0) -> ChipLayer:
    g = torch.Generator().manual_seed(seed)
    c, h, w = in_shape
    weight = gain * torch.randn(c_out, c, k, k, generator=g) / (c * k * k) ** 0.5
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    dense = (k, k) == (h, w) and pad == 0
    return ChipLayer(name=name, kind="dense" if dense else "conv", neuron=name + "_lif", weight=weight,
                     bias=0.05 * torch.randn(c_out, generator=g), stride=(stride, stride), padding=(pad, pad),
                     in_shape=tuple(in_shape), out_shape=(c_out, oh, ow), pool=1)


def _form(reset: str = "subtract", spikes: str = "multi") -> ChipForm:
    l1 = _layer("conv1", (2, 16, 16), 8, 5, 2, 2, seed=1)
    l2 = _layer("conv2", l1.out_shape, 16, 3, 2, 1, seed=2)
    l3 = _layer("fc1", l2.out_shape, 12, l2.out_shape[1], seed=3)
    l4 = _layer("fc2", l3.out_shape, 5, 1, seed=4)
    return ChipForm(input_shape=(2, 16, 16), input_pool=1, layers=[l1, l2, l3, l4],
                    outputs=[OutputTap("output", 3, False, (5,))], nir_input_shape=(2, 16, 16), reset_mode=reset,
                    spikes_per_step=spikes, membrane_floor=-1.0, fire_at_threshold=None)


def _same(ref, ours) -> None:
    for name in ref.layers:
        assert torch.equal(ref.layers[name], ours.layers[name]), f"layer {name} differs"
    for name in ref.taps:
        assert torch.equal(ref.taps[name], ours.taps[name]), f"tap {name} differs"
    assert torch.equal(ref.synops, ours.synops) and torch.equal(ref.spikes, ours.spikes)


@pytest.mark.parametrize("most,spikes", [(3, "multi"), (200, "single")])
def test_speck_int8_path_equals_sinabs_and_falls_back_on_counts_above_127(monkeypatch, most, spikes):
    """Counts up to 3 (several spikes a step): every product int8. An input count of 200 (one spike a
    step after it): the first layer's product float, the rest int8."""
    monkeypatch.setattr(speck, "INT8", True)
    form = _form(spikes=spikes)
    quant = quantise(form, SpeckLimits.from_profile(load_profile("speck")))
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(5, 6, 2, 16, 16, generator=g) < 0.15) * torch.randint(1, 4, (5, 6, 2, 16, 16), generator=g).float()
    x[0, 0, 0, 3, 3] = most
    t = x.shape[1]
    plan = speck.plan(form, t, quant, max_input=float(x.max()))
    assert all(v.startswith("int8") for v in speck.int8_layers(plan).values())
    calls = _Calls(monkeypatch)
    ours = speck.run(plan, x, batch_size=5, threads=1, record=True)
    ref = simulate(build_chip_net(form, t, quant, max_input=float(x.max())), x, batch_size=4, record=True)
    assert all(float(v.sum()) > 0 for v in ref.layers.values())
    _same(ref, ours)
    assert max(float(v.max()) for v in ours.layers.values()) < 128  # the hidden layers' counts fit int8
    assert calls.conv == (2 if most <= 127 else 1) and calls.dense == 2
    # the default choice (dense cores int8, small convolutions float) and int8 off: the same spikes
    for mode in (None, False):
        monkeypatch.setattr(speck, "INT8", mode)
        _same(ref, speck.run(speck.plan(form, t, quant, max_input=float(x.max())), x, record=True))


@pytest.mark.parametrize("reset,spikes", [("zero", "single"), ("subtract", "multi"), ("subtract", "single"),
                                          ("zero", "multi")])
def test_speck_compiled_and_torch_scans_equal_sinabs(monkeypatch, reset, spikes):
    form = _form(reset, spikes)
    quant = quantise(form, SpeckLimits.from_profile(load_profile("speck")))
    g = torch.Generator().manual_seed(7)
    x = (torch.rand(4, 7, 2, 16, 16, generator=g) < 0.15) * torch.randint(1, 3, (4, 7, 2, 16, 16), generator=g).float()
    t = x.shape[1]
    ref = simulate(build_chip_net(form, t, quant, max_input=float(x.max())), x, batch_size=4, record=True)
    assert all(float(v.sum()) > 0 for v in ref.layers.values())
    for fused in (True, False):
        monkeypatch.setattr(speck, "FUSED_SCAN", fused)
        _same(ref, speck.run(speck.plan(form, t, quant, max_input=float(x.max())), x, batch_size=3, record=True))
