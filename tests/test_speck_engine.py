"""Speck's own engine (deploy/speck/fast_engine.py) against sinabs itself: the same spikes on every
layer and step, the same readout and counts, on demo-like, pooled, flat and sparse networks under
each neuron convention; its event-driven semantics against a hand-written per-event loop."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from spikeport.deploy.common import DeployInput
from spikeport.deploy.speck import fast_engine
from spikeport.deploy.speck.chip_form import ChipForm, ChipLayer, OutputTap, SpeckLimits
from spikeport.deploy.speck.quantize import quantise
from spikeport.deploy.speck.simulate import SimResult, build_chip_net, simulate
from spikeport.errors import ConfigError
from spikeport.hw_profiles import load_profile

# (reset_mode, spikes_per_step, membrane_floor, fire_at_threshold): snntorch's default, sinabs', and the rest
CONVENTIONS = [("zero", "single", None, None), ("subtract", "multi", -1.0, None), ("subtract", "single", None, None),
               ("zero", "multi", None, None), ("zero", "single", -0.5, True)]


@pytest.fixture(scope="module")
def limits() -> SpeckLimits:
    return SpeckLimits.from_profile(load_profile("speck"))


def _out(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def layer(name: str, in_shape, c_out: int, k: int, stride: int = 1, pad: int = 0, pool: int = 1, gain: float = 1.0,
          bias: float = 0.0, seed: int = 0) -> ChipLayer:
    g = torch.Generator().manual_seed(seed)
    c, h, w = in_shape
    fan_in = c * k * k
    weight = gain * torch.randn(c_out, c, k, k, generator=g) / fan_in ** 0.5
    dense = (k, k) == (h, w) and pad == 0
    return ChipLayer(name=name, kind="dense" if dense else "conv", neuron=name + "_lif", weight=weight,
                     bias=bias * torch.randn(c_out, generator=g), stride=(stride, stride), padding=(pad, pad),
                     in_shape=tuple(in_shape), out_shape=(c_out, _out(h, k, stride, pad), _out(w, k, stride, pad)),
                     pool=pool)


def form_of(in_shape, layers: list[ChipLayer], input_pool: int = 1, nir_shape=None, conventions=CONVENTIONS[0],
            taps: list[OutputTap] | None = None) -> ChipForm:
    reset, spikes, floor, at = conventions
    last = layers[-1]
    outputs = taps or [OutputTap("output", len(layers) - 1, False, (last.out_shape[0],))]
    return ChipForm(input_shape=tuple(in_shape), input_pool=input_pool, layers=layers, outputs=outputs,
                    nir_input_shape=tuple(nir_shape or in_shape), reset_mode=reset, spikes_per_step=spikes,
                    membrane_floor=floor, fire_at_threshold=at)


def visual_form(conventions) -> ChipForm:
    """The demo's small visual stack (VISUAL_SMALL) at the chip's input size, with biases."""
    l1 = layer("conv1", (2, 34, 34), 8, 5, 2, 2, gain=3.0, bias=0.05, seed=1)
    l2 = layer("conv2", l1.out_shape, 16, 3, 2, 1, gain=3.0, seed=2)
    l3 = layer("conv3", l2.out_shape, 16, 3, 2, 1, gain=3.0, bias=0.05, seed=3)
    l4 = layer("fc1", l3.out_shape, 64, 5, gain=3.0, seed=4)
    l5 = layer("fc2", l4.out_shape, 10, 1, gain=3.0, seed=5)
    return form_of((2, 34, 34), [l1, l2, l3, l4, l5], conventions=conventions)


def events(shape, density: float, most: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    on = torch.rand(shape, generator=g) < density
    return on * torch.randint(1, most + 1, shape, generator=g).float()


def assert_same(ref: SimResult, ours: SimResult) -> None:
    assert ref.layers.keys() == ours.layers.keys()
    for name in ref.layers:
        assert torch.equal(ref.layers[name], ours.layers[name]), f"layer {name} differs"
    assert ref.taps.keys() == ours.taps.keys()
    for name in ref.taps:
        assert torch.equal(ref.taps[name], ours.taps[name]), f"tap {name} differs"
    assert torch.equal(ref.synops, ours.synops) and torch.equal(ref.spikes, ours.spikes)
    assert torch.equal(ref.input_events, ours.input_events)


def both(form: ChipForm, x: torch.Tensor, quant, threads: int | None = None) -> tuple[SimResult, SimResult]:
    t = x.shape[1]
    ref = simulate(build_chip_net(form, t, quant, max_input=float(x.max())), x, batch_size=4, record=True)
    ours = fast_engine.run(fast_engine.plan(form, t, quant, max_input=float(x.max())), x, batch_size=3,
                           threads=threads, record=True)
    return ref, ours


# ------------------------------------------------------------------ equal to sinabs ------------
@pytest.mark.parametrize("conventions", CONVENTIONS, ids=lambda c: "-".join(map(str, c)))
def test_demo_visual_net_equals_sinabs_on_every_layer_and_step(limits, conventions):
    form = visual_form(conventions)
    x = events((4, 5, 2, 34, 34), 0.08, most=2, seed=1)
    ref, ours = both(form, x, quantise(form, limits), threads=2)
    assert all(float(v.sum()) > 0 for v in ref.layers.values())  # every layer fires: the comparison has teeth
    assert_same(ref, ours)
    if conventions[1] == "single":
        assert float(max(v.max() for v in ours.layers.values())) == 1.0
    else:
        assert float(max(v.max() for v in ours.layers.values())) > 1.0  # several spikes a step do occur


@pytest.mark.parametrize("conventions", [CONVENTIONS[0], CONVENTIONS[1]], ids=["single", "multi"])
def test_pooled_and_flat_nets_equal_sinabs(limits, conventions):
    # input pooling, sum pooling between cores, a tap on a hidden layer
    l1 = layer("conv1", (2, 8, 8), 4, 3, 1, 1, pool=2, gain=4.0, bias=0.1, seed=6)
    l2 = layer("conv2", (4, 4, 4), 6, 3, 1, 1, pool=2, gain=4.0, seed=7)
    l3 = layer("fc1", (6, 2, 2), 5, 2, gain=4.0, seed=8)
    taps = [OutputTap("hidden", 0, False, l1.out_shape), OutputTap("output", 2, False, (5,))]
    form = form_of((2, 16, 16), [l1, l2, l3], input_pool=2, conventions=conventions, taps=taps)
    x = events((5, 9, 2, 16, 16), 0.2, seed=2)
    ref, ours = both(form, x, quantise(form, limits))
    assert float(ref.taps["output"].sum()) > 0
    assert_same(ref, ours)
    # audio-like: flat input as channels of 1x1, dense layers as 1x1 convolutions
    a1 = layer("fc1", (40, 1, 1), 16, 1, gain=4.0, seed=9)
    a2 = layer("fc2", (16, 1, 1), 4, 1, gain=4.0, seed=10)
    form = form_of((40, 1, 1), [a1, a2], nir_shape=(40,), conventions=conventions)
    x = events((6, 12, 40), 0.3, seed=3)
    ref, ours = both(form, x, quantise(form, limits))
    assert float(ref.taps["output"].sum()) > 0
    assert_same(ref, ours)


def test_sparse_long_input_equals_sinabs(limits):
    form = visual_form(CONVENTIONS[1])
    x = events((3, 16, 2, 34, 34), 0.01, most=3, seed=4)  # ~1 % of pixels, bursts up to 3 events a bin
    ref, ours = both(form, x, quantise(form, limits))
    assert float(ref.layers["fc2"].sum()) > 0
    assert_same(ref, ours)


def test_sums_past_float32s_exact_range_run_in_float64(limits):
    # 127 x 2**17 events a bin = 1.7e7 > 2**24: float32 could not hold the sums, so both engines use float64
    form = form_of((1, 2, 2), [layer("fc1", (1, 2, 2), 3, 2, gain=2.0, seed=11)], conventions=CONVENTIONS[1])
    quant = quantise(form, limits)
    x = events((3, 4, 1, 2, 2), 0.7, seed=5) * 2**17
    plan = fast_engine.plan(form, 4, quant, max_input=float(x.max()))
    assert plan.dtype == torch.float64 and plan.bound >= fast_engine.FLOAT32_EXACT
    ref, ours = both(form, x, quant)
    assert float(ref.layers["fc1"].max()) > 2**10
    assert_same(ref, ours)
    small = fast_engine.plan(form, 4, quant, max_input=1.0)
    assert small.dtype == torch.float32 and small.bound < fast_engine.FLOAT32_EXACT


def test_float_chip_form_follows_sinabs(limits):
    form = visual_form(CONVENTIONS[0])
    x = events((4, 6, 2, 34, 34), 0.08, seed=6)
    ref, ours = both(form, x, None)
    for name in ref.layers:  # float32 sums may be ordered differently: spikes equal up to rare ties
        same = (ref.layers[name] == ours.layers[name]).float().mean()
        assert same >= 0.999, name
    assert float(ref.layers["conv1"].sum()) > 0


# ------------------------------------------------------------------ event-driven semantics -----
def per_event_reference(form: ChipForm, quant, x: torch.Tensor) -> list[torch.Tensor]:
    """Plain loops: each step, layer after layer, every neuron takes its events one at a time in raster
    order of its inputs (channel, row, column); after each: spike once at v >= threshold, reset, floor.
    A layer with a bias adds it to every neuron at the start of each step, which may fire it too."""
    n, t = x.shape[:2]
    outs = [np.zeros((t, n, *layer.out_shape)) for layer in form.layers]
    for i_s in range(n):
        states = [np.zeros(layer.out_shape) for layer in form.layers]
        for k in range(t):
            h = x[i_s, k].reshape(form.input_shape).numpy().astype(np.int64)
            for li, (layer, q) in enumerate(zip(form.layers, quant.layers)):
                v, w, th, low = states[li], q.weight.numpy(), q.threshold, q.min_v_mem
                bias = q.bias.numpy() if bool((q.bias != 0).any()) else None
                (c_in, hi, wi), (c_out, oh, ow) = layer.in_shape, layer.out_shape
                kk, (sy, sx), (py, px) = layer.kernel_size, layer.stride, layer.padding
                count = outs[li][k, i_s]
                for co, y, xx in np.ndindex(c_out, oh, ow):
                    def fire() -> None:
                        if v[co, y, xx] >= th:
                            count[co, y, xx] += 1
                            v[co, y, xx] = v[co, y, xx] - th if form.reset_mode == "subtract" else 0
                        v[co, y, xx] = max(v[co, y, xx], low)

                    if bias is not None:
                        v[co, y, xx] += bias[co]
                        fire()
                    for ci, ky, kx in np.ndindex(c_in, kk, kk):
                        iy, ix = y * sy + ky - py, xx * sx + kx - px
                        if 0 <= iy < hi and 0 <= ix < wi:
                            for _ in range(h[ci, iy, ix]):
                                v[co, y, xx] += w[co, ci, ky, kx]
                                fire()
                c, hh, ww = count.shape
                p = layer.pool
                h = count[:, :hh // p * p, :ww // p * p].reshape(c, hh // p, p, ww // p, p).sum((2, 4)).astype(np.int64)
    return [torch.as_tensor(o, dtype=torch.float32) for o in outs]


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_event_driven_semantics_equals_a_per_event_loop(limits, reset):
    l1 = layer("conv1", (2, 4, 4), 3, 3, 1, 1, pool=2, gain=5.0, bias=0.1, seed=12)
    l2 = layer("fc1", (3, 2, 2), 4, 2, gain=5.0, seed=13)
    form = form_of((2, 4, 4), [l1, l2], conventions=(reset, "single", -1.0, True))
    quant = quantise(form, limits)
    x = events((2, 5, 2, 4, 4), 0.4, most=3, seed=7)
    ref = per_event_reference(form, quant, x)
    plan = fast_engine.plan(form, 5, quant, max_input=float(x.max()))
    ours = fast_engine.run(plan, x, semantics="event", record=True)
    assert float(ref[0].max()) > 1  # several spikes a step
    for name, r in zip(("conv1", "fc1"), ref):
        assert torch.equal(ours.layers[name], r), name


def test_event_driven_fires_once_per_event_and_waits_for_the_next(limits):
    # one input, one neuron, weight 2.5 thresholds (sinabs docs' weight-clipping example): every event
    # fires once and leaves v above threshold; the neuron stays silent in steps without events
    w = torch.full((1, 1, 1, 1), 2.5)
    lay = ChipLayer(name="fc1", kind="dense", neuron="lif1", weight=w, bias=torch.zeros(1), stride=(1, 1),
                    padding=(0, 0), in_shape=(1, 1, 1), out_shape=(1, 1, 1))
    form = form_of((1, 1, 1), [lay], conventions=("subtract", "single", None, True))
    quant = quantise(form, limits)
    x = torch.tensor([3.0, 0.0, 1.0, 0.0]).reshape(1, 4, 1, 1, 1)  # 3 events, none, 1 event, none
    plan = fast_engine.plan(form, 4, quant, max_input=3.0)
    event = fast_engine.run(plan, x, semantics="event").taps["output"].flatten().tolist()
    stepped = fast_engine.run(plan, x).taps["output"].flatten().tolist()
    assert event == [3.0, 0.0, 1.0, 0.0]
    # time-stepped, one spike a step: 7.5 in, one spike, the remainder fires one a step
    assert stepped == [1.0, 1.0, 1.0, 1.0]


# ------------------------------------------------------------------ wiring ---------------------
def test_deploy_with_the_fast_engine_gives_sinabs_figures_and_reports_the_event_difference(tmp_path, limits):
    from spikeport.deploy.speck.target import deploy_speck
    from spikeport.deploy.targets import TARGETS, resolve_engine

    assert resolve_engine("speck", None) == "fast" and "sinabs" in TARGETS["speck"].engines
    import nir
    g = torch.Generator().manual_seed(3)
    w1, w2 = torch.randn(12, 30, generator=g) * 0.6, torch.randn(4, 12, generator=g) * 0.8
    ifn = lambda n: nir.IF(r=np.full(n, 1e3, np.float32), v_threshold=np.ones(n, np.float32),  # noqa: E731
                           v_reset=np.zeros(n, np.float32))
    nodes = {"input": nir.Input(input_type=np.array([30])),
             "fc1": nir.Affine(weight=w1.numpy(), bias=np.zeros(12, np.float32)), "lif1": ifn(12),
             "fc2": nir.Affine(weight=w2.numpy(), bias=np.zeros(4, np.float32)), "lif2": ifn(4),
             "output": nir.Output(output_type=np.array([4]))}
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"),
                                             ("lif2", "output")], type_check=False)
    x = events((10, 8, 30), 0.3, most=2, seed=8)
    labels = torch.arange(10) % 4
    stats = {}
    for engine in ("sinabs", "fast", "fast-event"):
        inp = DeployInput(graph=graph, dt=1e-3, timesteps=8, inputs=x, labels=labels, float_predictions=labels,
                          host=None, out_dir=tmp_path / engine, target="speck", engine=engine)
        stats[engine] = deploy_speck(inp, load_profile("speck"))
    for engine in ("fast", "fast-event"):
        assert stats[engine].engine == engine
        assert stats[engine].accuracy == stats["sinabs"].accuracy
        assert [lc.model_dump() for lc in stats[engine].layers] == [lc.model_dump() for lc in stats["sinabs"].layers]
    ev = stats["fast-event"].model_dump()["event_driven"]
    assert [row["layer"] for row in ev["layers"]] == ["fc1", "fc2"]
    assert ev["layers"][0]["spikes_per_sample_stepped"] == stats["sinabs"].per_sample[0].spikes
    assert 0.0 <= ev["agreement_with_time_stepped"] <= 1.0 and "raster order" in ev["semantics"]
    assert "event_driven" not in stats["fast"].model_dump()


def test_bad_options_are_refused_by_name(limits):
    form = visual_form(CONVENTIONS[0])
    plan = fast_engine.plan(form, 4, quantise(form, limits))
    x = torch.zeros(1, 4, 2, 34, 34)
    with pytest.raises(ConfigError, match="semantics 'async'"):
        fast_engine.run(plan, x, semantics="async")
    with pytest.raises(ConfigError, match="5 steps, the engine was planned for 4"):
        fast_engine.run(plan, torch.zeros(1, 5, 2, 34, 34))
    with pytest.raises(ConfigError, match="quantised form only"):
        fast_engine.run(fast_engine.plan(form, 4, None), x, semantics="event")
    bad = dataclasses.replace(form, layers=form.layers[:2])
    with pytest.raises(ConfigError, match="quantised form has 5 layers, the chip form 2"):
        fast_engine.plan(bad, 4, quantise(form, limits))
