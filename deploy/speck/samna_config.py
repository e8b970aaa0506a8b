"""The Speck configuration as a JSON file, and its conversion to a samna configuration.

samna (SynSense's driver) is not on the public package registries, so ``spikeport deploy``
writes everything a chip configuration needs to ``speck_config.json``; a user who has samna
calls ``to_samna_config(path)`` to get the ``samna.speck2f...SpeckConfiguration`` object (built
by sinabs' own ``ChipFactory`` config builder, the code ``DynapcnnNetwork.make_config`` uses).

Biases act once per tick of Speck's slow clock, which is off unless set (sinabs
``DynapcnnNetwork.to(slow_clk_frequency=...)`` switches it on through the devkit's IO module:
``set_slow_clk(True)``, ``set_slow_clk_rate(hz)``). A tick must last one time step of the
simulation, so the file stores ``1 / step duration`` and ``apply_to_device`` sets it after the
configuration; a network with a bias and no step duration is refused when the file is written.

File format (``"format": "spikeport-speck-config"``, ``"version": 2``; version 1 files, written
before the neuron conventions and the clock were recorded, read as zero / single / no floor /
no clock)::

    {
      "format": "spikeport-speck-config", "version": 2,
      "neuron": {"reset_mode": "zero" | "subtract", "spikes_per_step": "single" | "multi",
                 "membrane_floor": float | null,          # ChipForm's conventions
                 "fire_at_threshold": bool},              # v >= threshold of the source network (else >)
      "slow_clock": {"enabled": bool, "frequency_hz": float | null,   # 1 / step_duration_s
                     "step_duration_s": float | null},    # the leak/bias clock
      "input":  {"shape": [C, H, W], "nir_shape": [...], "pooling": p, "destination_core": core},
      "layers": [                      # in network order
        {"name": "conv1", "neuron": "lif1", "kind": "conv" | "dense", "core": 5,
         "input_shape": [C, H, W], "output_shape": [C, H, W],     # output = the neurons
         "kernel_size": k, "stride": [sy, sx], "padding": [py, px],
         "weights": [[[[int]]]],       # [C_out][C_in][kH][kW], torch layout, 8-bit integers
         "biases": [int],              # [C_out], 8-bit, added once a slow-clock tick (a time step)
         "leak_enable": bool,          # any bias non-zero
         "threshold_high": int,        # spike when v >= threshold_high
         "threshold_low": int,         # lower bound of v (16-bit state)
         "return_to_zero": bool,       # reset to 0 (true) or subtract threshold_high (false)
         "scale": float,               # integer units per float unit of the exported model
         "destinations": [{"core": int, "pooling": p}],   # next layer (sum pooling on the way)
         "monitor": bool}              # its spikes are read out (an output of the chip part)
      ],
      "outputs": [{"name": "output", "layer": i, "pooled": bool, "shape": [...]}],
      "cores":  [{"core": 0, "layer": "conv2" | null, "kernel_entries": .., "kernel_capacity": .., ...}]
    }
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from spikeport.deploy.speck.chip_form import ChipForm, ChipLayer, OutputTap, fires_at_threshold
from spikeport.deploy.speck.quantize import QuantisedForm, QuantLayer
from spikeport.errors import ArtifactError, ConfigError, SpikeportError
from spikeport.io import read_json, write_json_atomic

FORMAT = "spikeport-speck-config"
VERSION = 2
READABLE_VERSIONS = (1, 2)
V1_NEURON = {"reset_mode": "zero", "spikes_per_step": "single", "membrane_floor": None, "fire_at_threshold": False}


def slow_clock(quant: QuantisedForm, step_duration_s: float | None) -> dict:
    """The leak/bias clock entry: one tick a time step, needed only when a layer has a bias."""
    biased = [q.name for q in quant.layers if bool((q.bias != 0).any())]
    if step_duration_s is None:
        if biased:
            raise ConfigError(
                f"layer '{biased[0]}' has a bias, which Speck adds once per tick of its slow clock; give the real "
                "duration of a time step (step_duration_s, seconds) so the clock can be set to 1 / step")
        return {"enabled": False, "frequency_hz": None, "step_duration_s": None}
    if isinstance(step_duration_s, bool) or not isinstance(step_duration_s, (int, float)) \
            or not math.isfinite(step_duration_s) or step_duration_s <= 0:
        raise ConfigError(f"step_duration_s {step_duration_s!r}: expected a positive number of seconds")
    return {"enabled": bool(biased), "frequency_hz": 1.0 / float(step_duration_s),
            "step_duration_s": float(step_duration_s)}


def config_dict(quant: QuantisedForm, mapping: dict[str, int], cores: list[dict],
                step_duration_s: float | None = None) -> dict:
    """The file's content; ``step_duration_s`` is the real duration of one time step (seconds),
    None when no layer has a bias (no clock needed)."""
    form = quant.form
    clock = slow_clock(quant, step_duration_s)
    layers = []
    for i, (layer, q) in enumerate(zip(form.layers, quant.layers)):
        nxt = form.layers[i + 1] if i + 1 < len(form.layers) else None
        layers.append({
            "name": layer.name, "neuron": layer.neuron, "kind": layer.kind, "core": mapping[layer.name],
            "input_shape": list(layer.in_shape), "output_shape": list(layer.out_shape),
            "kernel_size": layer.kernel_size, "stride": list(layer.stride), "padding": list(layer.padding),
            "weights": q.weight.tolist(), "biases": q.bias.tolist(), "leak_enable": bool((q.bias != 0).any()),
            "threshold_high": q.threshold, "threshold_low": q.min_v_mem,
            "return_to_zero": form.reset_mode == "zero",
            "scale": q.scale,
            "destinations": [{"core": mapping[nxt.name], "pooling": layer.pool}] if nxt else [],
            "monitor": any(t.layer == i for t in form.outputs),
            "nodes": layer.nodes,
        })
    return {
        "format": FORMAT, "version": VERSION,
        "neuron": {"reset_mode": form.reset_mode, "spikes_per_step": form.spikes_per_step,
                   "membrane_floor": None if form.membrane_floor is None else float(form.membrane_floor),
                   "fire_at_threshold": fires_at_threshold(form)},
        "slow_clock": clock,
        "input": {"shape": list(form.input_shape), "nir_shape": list(form.nir_input_shape),
                  "pooling": form.input_pool, "destination_core": mapping[form.layers[0].name]},
        "layers": layers,
        "outputs": [{"name": t.name, "layer": t.layer, "pooled": t.pooled, "shape": list(t.shape)}
                    for t in form.outputs],
        "cores": cores,
        "approximations": form.approximations + quant.approximations,
    }


def write_config(path: str | Path, quant: QuantisedForm, mapping: dict[str, int], cores: list[dict],
                 step_duration_s: float | None = None) -> Path:
    return write_json_atomic(path, config_dict(quant, mapping, cores, step_duration_s))


def read_config(path: str | Path) -> dict:
    path = Path(path)
    data = read_json(path, "Speck configuration")
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") not in READABLE_VERSIONS:
        raise ArtifactError(f"{path}: not a {FORMAT} file of version {' or '.join(map(str, READABLE_VERSIONS))}")
    for key in ("input", "layers", "outputs") + (("neuron", "slow_clock") if data["version"] >= 2 else ()):
        if key not in data:
            raise ArtifactError(f"{path}: field '{key}' missing")
    if data["version"] == 1:
        data = {**data, "neuron": dict(V1_NEURON), "slow_clock": {"enabled": False, "frequency_hz": None,
                                                                    "step_duration_s": None}}
    return data


def load_quantised(path: str | Path) -> tuple[QuantisedForm, dict[str, int]]:
    """Rebuild the integer network (and the core mapping) from a configuration file."""
    data = read_config(path)
    try:
        layers, qlayers = [], []
        for i, d in enumerate(data["layers"]):
            weight = torch.tensor(d["weights"], dtype=torch.int32)
            bias = torch.tensor(d["biases"], dtype=torch.int32)
            pool = d["destinations"][0]["pooling"] if d["destinations"] else 1
            layers.append(ChipLayer(name=d["name"], kind=d["kind"], neuron=d["neuron"], weight=weight.float(),
                                    bias=bias.float(), stride=tuple(d["stride"]), padding=tuple(d["padding"]),
                                    in_shape=tuple(d["input_shape"]), out_shape=tuple(d["output_shape"]),
                                    pool=pool, nodes=list(d.get("nodes", []))))
            qlayers.append(QuantLayer(name=d["name"], scale=float(d["scale"]), weight=weight, bias=bias,
                                      threshold=int(d["threshold_high"]), min_v_mem=int(d["threshold_low"])))
        last = data["layers"][-1]
        if last["destinations"]:
            raise ArtifactError(f"{path}: the last layer '{last['name']}' has a destination")
        form = ChipForm(input_shape=tuple(data["input"]["shape"]), input_pool=int(data["input"]["pooling"]),
                        layers=layers, nir_input_shape=tuple(data["input"]["nir_shape"]),
                        outputs=[OutputTap(name=o["name"], layer=int(o["layer"]), pooled=bool(o["pooled"]),
                                           shape=tuple(o["shape"])) for o in data["outputs"]],
                        approximations=list(data.get("approximations", [])),
                        reset_mode=data["neuron"]["reset_mode"], spikes_per_step=data["neuron"]["spikes_per_step"],
                        membrane_floor=data["neuron"]["membrane_floor"],
                        fire_at_threshold=bool(data["neuron"]["fire_at_threshold"]))
        mapping = {d["name"]: int(d["core"]) for d in data["layers"]}
    except ConfigError as exc:
        raise ArtifactError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ArtifactError(f"{path}: malformed layer entry ({type(exc).__name__}: {exc})") from None
    return QuantisedForm(form=form, layers=qlayers), mapping


def to_samna_config(json_path: str | Path, device: str = "speck2fmodule"):
    """The samna configuration object for ``json_path`` (needs samna, imported only here)."""
    try:
        import samna  # noqa: F401
    except ImportError:
        raise SpikeportError(
            "samna (SynSense's Speck driver) is not installed, so no chip configuration can be built. It is "
            "not on the public package registries: install it from SynSense (see the sinabs Speck "
            f"documentation), then call to_samna_config('{json_path}') again. The file itself holds the "
            "complete mapping and integer parameters.") from None
    import sinabs.layers as sl
    from sinabs.activation import MembraneReset, MembraneSubtract, SingleSpike
    from sinabs.backend.dynapcnn.chip_factory import ChipFactory
    from sinabs.backend.dynapcnn.dvs_layer import DVSLayer
    from sinabs.backend.dynapcnn.dynapcnn_layer import DynapcnnLayer
    from torch import nn

    data = read_config(json_path)
    layers: dict = {}
    layer2core: dict = {}
    destinations: dict = {}
    first = 0
    if data["input"]["pooling"] > 1:
        # Input pooling runs in the DVS layer, which then forwards the events to the first core.
        c, h, w = data["input"]["shape"]
        p = data["input"]["pooling"]
        layers["dvs"] = DVSLayer(input_shape=(h, w), pool=(p, p), merge_polarities=(c == 1),
                                 disable_pixel_array=True)
        destinations["dvs"] = [first]
    for i, d in enumerate(data["layers"]):
        c_out, c_in = d["output_shape"][0], d["input_shape"][0]
        conv = nn.Conv2d(c_in, c_out, d["kernel_size"], tuple(d["stride"]), tuple(d["padding"]), bias=True)
        with torch.no_grad():
            conv.weight.copy_(torch.tensor(d["weights"], dtype=torch.float32))
            conv.bias.copy_(torch.tensor(d["biases"], dtype=torch.float32))
        spk = sl.IAFSqueeze(batch_size=1, spike_threshold=torch.tensor(float(d["threshold_high"])),
                            min_v_mem=float(d["threshold_low"]), spike_fn=SingleSpike,
                            reset_fn=MembraneReset() if d["return_to_zero"] else MembraneSubtract())
        pools = [(dest["pooling"], dest["pooling"]) for dest in d["destinations"]] or [(1, 1)]
        layers[i] = DynapcnnLayer(conv, spk, tuple(d["input_shape"]), pools, discretize=False)
        layer2core[i] = d["core"]
        destinations[i] = [i + 1] if d["destinations"] else []
    builder = ChipFactory(device).get_config_builder()
    config = builder.build_config(layers=layers, layer2core_map=layer2core, destination_map=destinations)
    builder.monitor_layers(config, [d["core"] for d in data["layers"] if d["monitor"]])
    return config


def slow_clock_rate(data: dict) -> int | None:
    """The slow-clock rate (Hz, an integer as the devkit takes it) a configuration needs, or None."""
    clock = data["slow_clock"]
    if not clock["enabled"]:
        return None
    hz = float(clock["frequency_hz"])
    rate = round(hz)
    if rate < 1 or abs(rate - hz) > 1e-6 * hz:
        raise ConfigError(f"slow clock {hz:g} Hz (a {clock['step_duration_s']:g} s step) is not a whole number of "
                          "Hz, as Speck's slow clock takes; choose a step duration of 1 / n seconds")
    return rate


def apply_slow_clock(samna_device, data: dict) -> int | None:
    """Switch on and set the slow clock of an opened devkit as sinabs does in
    ``DynapcnnNetwork.to(slow_clk_frequency=...)``; returns the rate set (None: not needed)."""
    rate = slow_clock_rate(data)
    if rate is not None:
        io = samna_device.get_io_module()
        io.set_slow_clk(True)
        io.set_slow_clk_rate(rate)  # Hz
    return rate


def apply_to_device(samna_device, json_path: str | Path, device: str = "speck2fmodule", settle_s: float = 1.0):
    """Configure an opened devkit (``samna.device.open_device``) from ``json_path``: the chip
    configuration, then the slow clock its biases need (the clock lives outside the configuration
    object, on the devkit's IO module). Returns the configuration applied."""
    data = read_config(json_path)
    slow_clock_rate(data)  # refuse a clock the devkit cannot run before touching the chip
    config = to_samna_config(json_path, device)
    samna_device.get_model().apply_configuration(config)
    time.sleep(settle_s)  # sinabs waits 1 s after applying a configuration before setting the clock
    apply_slow_clock(samna_device, data)
    return config
