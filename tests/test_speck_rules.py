"""Speck's chip rules and neuron conventions: output map and input channel limits, pooled taps,
the slow clock that biases need, and reset / spike / floor conventions checked against sinabs'
own IAF run directly as the reference."""
from __future__ import annotations

import math

import pytest
import sinabs
import sinabs.layers as sl
import torch
from sinabs.activation import MembraneReset, MembraneSubtract, MultiSpike, SingleSpike
from torch import nn

from spikeport.deploy.speck.chip_form import ChipForm, ChipLayer, OutputTap, SpeckLimits, check_limits
from spikeport.deploy.speck.mapper import core_report, layer_memory, map_layers
from spikeport.deploy.speck.quantize import quantise
from spikeport.deploy.speck.samna_config import (apply_slow_clock, config_dict, load_quantised, read_config,
                                                 slow_clock_rate, write_config)
from spikeport.deploy.speck.simulate import build_chip_net, simulate
from spikeport.errors import ArtifactError, ConfigError, UnsupportedNodeError
from spikeport.hw_profiles import load_profile
from spikeport.io import write_json_atomic


@pytest.fixture(scope="module")
def limits() -> SpeckLimits:
    return SpeckLimits.from_profile(load_profile("speck"))


def _out(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def conv_layer(name: str, in_shape: tuple[int, int, int], c_out: int, k: int = 3, stride: int = 1, pad: int = 0,
               weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, pool: int = 1) -> ChipLayer:
    c, h, w = in_shape
    weight = torch.full((c_out, c, k, k), 0.1) if weight is None else weight
    bias = torch.zeros(c_out) if bias is None else bias
    return ChipLayer(name=name, kind="conv", neuron=name.replace("conv", "lif"), weight=weight.float(),
                     bias=bias.float(), stride=(stride, stride), padding=(pad, pad), in_shape=in_shape,
                     out_shape=(c_out, _out(h, k, stride, pad), _out(w, k, stride, pad)), pool=pool)


def chain(in_shape: tuple[int, int, int], layers: list[ChipLayer], **options) -> ChipForm:
    last = layers[-1]
    return ChipForm(input_shape=in_shape, input_pool=1, layers=layers, nir_input_shape=in_shape,
                    outputs=[OutputTap("output", len(layers) - 1, False, last.out_shape)], **options)


# ------------------------------------------------------------------ limits -------------------
def test_profile_carries_the_new_limits(limits):
    assert limits.max_output_size == 64 and limits.max_input_channels == 1024
    profile = load_profile("speck")
    for key in ("max_output_size", "max_input_channels"):
        assert "overview.md" in profile.figure("limits", key).source


def test_a_128x128_output_map_is_refused_by_name(limits):
    form = chain((2, 128, 128), [conv_layer("conv1", (2, 128, 128), 4, k=3, pad=1)])
    assert form.layers[0].out_shape == (4, 128, 128)
    # it would fit a core's neuron memory (4 x 128 x 128 = 64 Ki): only the map limit refuses it
    assert map_layers([layer_memory(form.layers[0])], limits) == {"conv1": 0}
    with pytest.raises(UnsupportedNodeError,
                       match=r"^layer 'conv1': output feature map 128x128 is larger than Speck's 64x64 limit$"):
        check_limits(form, limits)
    # 64x64 is allowed; stride 2 brings 128 down to 64
    check_limits(chain((2, 64, 64), [conv_layer("conv1", (2, 64, 64), 4, pad=1)]), limits)
    check_limits(chain((2, 128, 128), [conv_layer("conv1", (2, 128, 128), 4, stride=2, pad=1)]), limits)


def test_a_layer_with_too_many_input_channels_is_refused_by_name(limits):
    import dataclasses
    limits = dataclasses.replace(limits, max_input_channels=128)  # the rule, at a limit the test can reach
    ok = conv_layer("conv1", (2, 8, 8), 128)
    check_limits(chain((2, 8, 8), [ok, conv_layer("conv2", ok.out_shape, 8)]), limits)
    wide = conv_layer("conv1", (2, 8, 8), 200)
    form = chain((2, 8, 8), [wide, conv_layer("conv2", wide.out_shape, 8)])
    with pytest.raises(UnsupportedNodeError,
                       match=r"^layer 'conv2': 200 input channels, a Speck layer takes at most 128$"):
        check_limits(form, limits)
    with pytest.raises(UnsupportedNodeError, match=r"^layer 'conv1': 130 input channels"):
        check_limits(chain((130, 4, 4), [conv_layer("conv1", (130, 4, 4), 8, k=1)]), limits)


def test_a_pooled_output_tap_is_refused_by_name(limits):
    l1 = conv_layer("conv1", (2, 8, 8), 4, pad=1, pool=2)
    l2 = conv_layer("conv2", l1.pooled_shape, 3)
    form = chain((2, 8, 8), [l1, l2])
    form.outputs.append(OutputTap("tap_pool1", 0, True, l1.pooled_shape))
    with pytest.raises(UnsupportedNodeError, match=r"^output 'tap_pool1' reads layer 'lif1' after its 2x2 sum "
                                                   r"pooling; Speck's monitor reads a layer's spikes before pooling"):
        check_limits(form, limits)
    form.outputs[-1] = OutputTap("tap_lif1", 0, False, l1.out_shape)  # before the pooling: what the chip reads
    check_limits(form, limits)


# ------------------------------------------------------------------ neuron options -----------
@pytest.mark.parametrize("field,value", [("reset_mode", "hold"), ("spikes_per_step", "many"),
                                         ("membrane_floor", 0.5), ("membrane_floor", math.nan),
                                         ("membrane_floor", "low"), ("fire_at_threshold", "yes")])
def test_unknown_neuron_option_names_the_field(limits, field, value):
    layer = conv_layer("conv1", (2, 8, 8), 4)
    with pytest.raises(ConfigError, match=rf"ChipForm\.{field} "):
        chain((2, 8, 8), [layer], **{field: value})
    form = chain((2, 8, 8), [layer])
    setattr(form, field, value)  # set after construction: every stage checks again
    for stage in (lambda: check_limits(form, limits), lambda: quantise(form, limits),
                  lambda: build_chip_net(form, 4)):
        with pytest.raises(ConfigError, match=rf"ChipForm\.{field} "):
            stage()


def test_defaults_are_todays_neurons(limits):
    form = chain((2, 8, 8), [conv_layer("conv1", (2, 8, 8), 4)])
    assert (form.reset_mode, form.spikes_per_step, form.membrane_floor) == ("zero", "single", None)
    quant = quantise(form, limits)
    q = quant.layers[0]
    assert q.threshold == math.floor(q.scale) + 1 and q.min_v_mem == -2 ** 15
    for net in (build_chip_net(form, 4), build_chip_net(form, 4, quant)):
        spk = net.model[net.spikes[0]]
        assert spk.spike_fn is SingleSpike and isinstance(spk.reset_fn, MembraneReset)
    assert build_chip_net(form, 4).model[1].min_v_mem is None


# ------------------------------------------------------------------ sinabs reference --------
def integer_net(seed: int, thresholds: tuple[int, int]):
    """conv(2->4, 3x3, pad 1) -> IAF -> sum pool 2 -> conv(4->3, 3x3) -> IAF: integer weights and
    biases with integer thresholds, as a sinabs-made network has them."""
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randint(-6, 9, (4, 2, 3, 3), generator=g).float()
    w2 = torch.randint(-6, 9, (3, 4, 3, 3), generator=g).float()
    b1 = torch.randint(-1, 2, (4,), generator=g).float()
    b2 = torch.randint(-1, 2, (3,), generator=g).float()
    return (w1, b1), (w2, b2), thresholds


def sinabs_reference(params, x: torch.Tensor, spike_fn, reset_fn, floor: bool) -> list[torch.Tensor]:
    """sinabs' own layers with the network's integers: each IAF layer's spikes [B, T, ...]."""
    (w1, b1), (w2, b2), (t1, t2) = params
    b, t = x.shape[:2]

    def conv(w, bias, pad):
        c = nn.Conv2d(w.shape[1], w.shape[0], 3, padding=pad)
        with torch.no_grad():
            c.weight.copy_(w)
            c.bias.copy_(bias)
        return c

    def iaf(th):
        return sl.IAFSqueeze(num_timesteps=t, spike_threshold=torch.tensor(float(th)), spike_fn=spike_fn,
                             reset_fn=reset_fn, min_v_mem=-float(th) if floor else None)

    layers = [conv(w1, b1, 1), iaf(t1), sl.SumPool2d(2), conv(w2, b2, 0), iaf(t2)]
    model = nn.Sequential(*layers).double().requires_grad_(False)
    sinabs.reset_states(model)
    h = x.reshape(b * t, *x.shape[2:]).double()
    out = []
    for m in model:
        h = m(h.double())  # sinabs' spike functions return float32
        if isinstance(m, sl.IAFSqueeze):
            out.append(h.reshape(b, t, *h.shape[1:]))
    return out


def chip_form_of(params, **options) -> ChipForm:
    """The chip form as the converter gives it: parameters in units of each layer's threshold."""
    (w1, b1), (w2, b2), (t1, t2) = params
    l1 = conv_layer("conv1", (2, 8, 8), 4, pad=1, weight=w1 / t1, bias=b1 / t1, pool=2)
    l2 = conv_layer("conv2", l1.pooled_shape, 3, weight=w2 / t2, bias=b2 / t2)
    form = chain((2, 8, 8), [l1, l2], **options)
    form.outputs.insert(0, OutputTap("tap_lif1", 0, False, l1.out_shape))
    return form


def events(seed: int, n: int = 6, t: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 3, (n, t, 2, 8, 8), generator=g).float()  # up to 2 events a bin: several spikes a step


SUBTRACT_MULTI = dict(reset_mode="subtract", spikes_per_step="multi", membrane_floor=-1.0)


def test_subtract_multi_spike_integer_chip_equals_sinabs_iaf_spike_for_spike(limits):
    params = integer_net(seed=11, thresholds=(13, 40))
    x = events(3)
    ref = sinabs_reference(params, x, MultiSpike, MembraneSubtract(), floor=True)
    form = chip_form_of(params, **SUBTRACT_MULTI)
    check_limits(form, limits)
    quant = quantise(form, limits)
    (w1, _), (w2, _), (t1, t2) = params
    for q, w, th in zip(quant.layers, (w1, w2), (t1, t2)):
        k = q.threshold // th  # the original integers times a whole number
        assert q.threshold == k * th and q.scale == q.threshold and torch.equal(q.weight, (w * k).int())
        assert q.min_v_mem == -q.threshold and q.clipped_weights == 0
    result = simulate(build_chip_net(form, x.shape[1], quant), x, batch_size=4)
    got = [result.taps["tap_lif1"].transpose(0, 1), result.taps["output"].transpose(0, 1)]
    for layer, (a, b) in enumerate(zip(got, ref)):
        assert torch.equal(a.double(), b), f"layer {layer}"
    # the test means something: several spikes a step happen, and the conventions change the result
    assert ref[0].max() >= 2 and ref[1].sum() > 0
    for spike_fn, reset_fn, floor in ((SingleSpike, MembraneReset(), False), (MultiSpike, MembraneSubtract(), False),
                                      (MultiSpike, MembraneReset(), True)):
        other = sinabs_reference(params, x, spike_fn, reset_fn, floor=floor)
        assert not all(torch.equal(a, b) for a, b in zip(other, ref))
    assert result.spikes.sum(0).tolist() == [float(r.sum()) for r in ref]


def test_strict_test_has_no_multi_spike_form():
    with pytest.raises(ConfigError, match=r"ChipForm\.fire_at_threshold False with spikes_per_step 'multi'"):
        chain((2, 8, 8), [conv_layer("conv1", (2, 8, 8), 4)], spikes_per_step="multi", fire_at_threshold=False)


def test_single_spike_at_threshold_with_subtraction_equals_sinabs_iaf(limits):
    params = integer_net(seed=4, thresholds=(13, 40))
    x = events(6)
    ref = sinabs_reference(params, x, SingleSpike, MembraneSubtract(), floor=True)
    form = chip_form_of(params, reset_mode="subtract", membrane_floor=-1.0, fire_at_threshold=True)
    quant = quantise(form, limits)
    assert [q.threshold % th for q, th in zip(quant.layers, (13, 40))] == [0, 0] and quant.approximations == []
    result = simulate(build_chip_net(form, x.shape[1], quant), x)
    assert torch.equal(result.taps["tap_lif1"].transpose(0, 1).double(), ref[0])
    assert torch.equal(result.taps["output"].transpose(0, 1).double(), ref[1]) and ref[1].sum() > 0


def test_subtract_multi_spike_float_chip_form_equals_sinabs_iaf(limits):
    params = integer_net(seed=5, thresholds=(8, 4))  # powers of two: w / threshold exact in float32
    x = events(8)
    ref = sinabs_reference(params, x, MultiSpike, MembraneSubtract(), floor=True)
    form = chip_form_of(params, **SUBTRACT_MULTI)
    result = simulate(build_chip_net(form, x.shape[1]), x)
    assert torch.equal(result.taps["output"].transpose(0, 1).double(), ref[1]) and ref[1].sum() > 0
    assert torch.equal(result.taps["tap_lif1"].transpose(0, 1).double(), ref[0])


def test_multi_spike_trained_float_weights_keep_an_integer_threshold(limits):
    g = torch.Generator().manual_seed(2)
    layer = conv_layer("conv1", (2, 8, 8), 4, weight=torch.randn(4, 2, 3, 3, generator=g) * 0.3)
    quant = quantise(chain((2, 8, 8), [layer], **SUBTRACT_MULTI), limits)
    q = quant.layers[0]
    assert q.scale == math.floor(127 / float(layer.weight.abs().max())) == q.threshold
    assert q.min_v_mem == -q.threshold
    assert not any("subtract" in a for a in quant.approximations)
    single = quantise(chain((2, 8, 8), [layer], reset_mode="subtract"), limits)
    assert any("subtraction with the strict" in a for a in single.approximations)


# ------------------------------------------------------------------ slow clock and config ----
def mapped(form: ChipForm, limits: SpeckLimits):
    quant = quantise(form, limits)
    needs = [layer_memory(layer, has_bias=bool((q.bias != 0).any())) for layer, q in zip(form.layers, quant.layers)]
    mapping = map_layers(needs, limits)
    return quant, mapping, core_report(needs, mapping, limits)


class FakeIO:
    def __init__(self, calls: list | None = None) -> None:
        self.calls: list[tuple[str, object]] = [] if calls is None else calls

    def set_slow_clk(self, on: bool) -> None:
        self.calls.append(("set_slow_clk", on))

    def set_slow_clk_rate(self, hz: int) -> None:
        self.calls.append(("set_slow_clk_rate", hz))


class FakeModel:
    def __init__(self, calls: list) -> None:
        self.calls = calls

    def apply_configuration(self, config) -> None:
        self.calls.append(("apply_configuration", config))


class FakeDevice:
    """What sinabs' DynapcnnNetwork.to uses of an opened devkit: its model and its IO module."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.io = FakeIO(self.calls)

    def get_io_module(self) -> FakeIO:
        return self.io

    def get_model(self) -> FakeModel:
        return FakeModel(self.calls)


@pytest.mark.parametrize("step", [1e-3, 5e-4, 0.01])
def test_biased_network_clock_is_one_over_the_step(limits, step):
    params = integer_net(seed=11, thresholds=(13, 40))
    quant, mapping, cores = mapped(chip_form_of(params, **SUBTRACT_MULTI), limits)
    data = config_dict(quant, mapping, cores, step_duration_s=step)
    assert data["slow_clock"] == {"enabled": True, "frequency_hz": 1 / step, "step_duration_s": step}
    device = FakeDevice()
    assert apply_slow_clock(device, data) == round(1 / step)
    assert device.io.calls == [("set_slow_clk", True), ("set_slow_clk_rate", round(1 / step))]


def test_device_gets_the_configuration_then_the_clock(limits, tmp_path, monkeypatch):
    from spikeport.deploy.speck import samna_config

    params = integer_net(seed=11, thresholds=(13, 40))
    quant, mapping, cores = mapped(chip_form_of(params, **SUBTRACT_MULTI), limits)
    path = write_config(tmp_path / "speck_config.json", quant, mapping, cores, step_duration_s=2e-3)
    monkeypatch.setattr(samna_config, "to_samna_config", lambda json_path, device: ("config", str(json_path), device))
    device = FakeDevice()
    config = samna_config.apply_to_device(device, path, settle_s=0)
    assert device.calls == [("apply_configuration", config), ("set_slow_clk", True), ("set_slow_clk_rate", 500)]
    # a clock the devkit cannot run is refused before the chip is touched
    bad = write_config(tmp_path / "bad.json", quant, mapping, cores, step_duration_s=3e-3)
    device = FakeDevice()
    with pytest.raises(ConfigError, match="not a whole number of Hz"):
        samna_config.apply_to_device(device, bad, settle_s=0)
    assert device.calls == []


def test_bias_without_step_duration_is_refused(limits, tmp_path):
    params = integer_net(seed=11, thresholds=(13, 40))
    quant, mapping, cores = mapped(chip_form_of(params, **SUBTRACT_MULTI), limits)
    with pytest.raises(ConfigError, match=r"layer 'conv1' has a bias.*give the real duration of a time step"):
        write_config(tmp_path / "speck_config.json", quant, mapping, cores)
    assert not (tmp_path / "speck_config.json").exists()
    for bad in (0.0, -1e-3, math.inf):
        with pytest.raises(ConfigError, match="step_duration_s"):
            config_dict(quant, mapping, cores, step_duration_s=bad)
    data = config_dict(quant, mapping, cores, step_duration_s=3e-3)  # 333.3 Hz: the devkit takes whole Hz
    with pytest.raises(ConfigError, match="not a whole number of Hz"):
        slow_clock_rate(data)


def test_bias_free_network_needs_no_clock(limits):
    form = chain((2, 8, 8), [conv_layer("conv1", (2, 8, 8), 4)])
    quant, mapping, cores = mapped(form, limits)
    data = config_dict(quant, mapping, cores)
    assert data["slow_clock"] == {"enabled": False, "frequency_hz": None, "step_duration_s": None}
    device = FakeDevice()
    assert apply_slow_clock(device, data) is None and device.io.calls == []
    # a step duration given anyway is recorded, the clock stays off: no layer leaks
    assert config_dict(quant, mapping, cores, step_duration_s=1e-3)["slow_clock"]["enabled"] is False


def test_config_records_the_conventions_and_reloads_them(limits, tmp_path):
    params = integer_net(seed=11, thresholds=(13, 40))
    form = chip_form_of(params, **SUBTRACT_MULTI)
    quant, mapping, cores = mapped(form, limits)
    path = write_config(tmp_path / "speck_config.json", quant, mapping, cores, step_duration_s=1e-3)
    data = read_config(path)
    assert data["version"] == 2
    assert data["neuron"] == {"reset_mode": "subtract", "spikes_per_step": "multi", "membrane_floor": -1.0,
                              "fire_at_threshold": True}
    assert [d["return_to_zero"] for d in data["layers"]] == [False, False]
    assert [d["threshold_low"] for d in data["layers"]] == [-q.threshold for q in quant.layers]
    reloaded, mapping2 = load_quantised(path)
    assert mapping2 == mapping
    f = reloaded.form
    assert (f.reset_mode, f.spikes_per_step, f.membrane_floor, f.fire_at_threshold) == ("subtract", "multi", -1.0,
                                                                                          True)
    x = events(4, n=3)
    a = simulate(build_chip_net(form, x.shape[1], quant), x).taps["output"]
    b = simulate(build_chip_net(f, x.shape[1], reloaded), x).taps["output"]
    assert torch.equal(a, b)


def test_version_1_file_reads_as_todays_defaults(limits, tmp_path):
    form = chain((2, 8, 8), [conv_layer("conv1", (2, 8, 8), 4)])
    quant, mapping, cores = mapped(form, limits)
    data = config_dict(quant, mapping, cores)
    data.pop("neuron")
    data.pop("slow_clock")
    data["version"] = 1
    write_json_atomic(tmp_path / "old.json", data)
    reloaded, _ = load_quantised(tmp_path / "old.json")
    f = reloaded.form
    assert (f.reset_mode, f.spikes_per_step, f.membrane_floor, f.fire_at_threshold) == ("zero", "single", None,
                                                                                          False)
    assert read_config(tmp_path / "old.json")["slow_clock"]["enabled"] is False
    data["version"] = 3
    write_json_atomic(tmp_path / "new.json", data)
    with pytest.raises(ArtifactError, match="version 1 or 2"):
        read_config(tmp_path / "new.json")
