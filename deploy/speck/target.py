"""`spikeport deploy runs/X --target speck`: NIR -> Speck chip form -> 8/16-bit -> 9 cores ->
simulation -> counts (stats.json) and the chip configuration (speck_config.json).

Engines: ``fast`` (default, ``fast_engine.py``: the spikes sinabs gives, batched), ``sinabs`` (sinabs'
own layers, ``simulate.py``), ``fast-event`` (the fast engine's time-stepped run for every figure, plus
the chip's event-driven semantics on the same samples, whose difference goes to stats.json under
``event_driven``)."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from spikeport.deploy.common import DeployInput
from spikeport.deploy.speck import fast_engine
from spikeport.deploy.speck.chip_form import ChipForm, SpeckLimits, check_limits
from spikeport.deploy.speck.from_nir import SPECK_FEATURES, nir_to_chip_form  # noqa: F401 (the registry reads it here)
from spikeport.deploy.speck.mapper import core_report, layer_memory, map_layers, sinabs_validator
from spikeport.deploy.speck.quantize import QuantisedForm, quantise
from spikeport.deploy.speck.samna_config import write_config
from spikeport.deploy.speck.simulate import SimResult, build_chip_net, simulate, synapse_count
from spikeport.errors import ConfigError
from spikeport.hw_profiles import Profile, load_profile
from spikeport.schemas import LayerCounts, Stats

CONFIG_FILE = "speck_config.json"


def time_stepped_note(form: ChipForm) -> str:
    """What the time-stepped simulation approximates of the event-driven chip."""
    if form.spikes_per_step == "multi":
        return ("simulation: time-stepped, several spikes per neuron per step (sinabs MultiSpike); Speck itself is "
                "event-driven and updates on each event")
    return ("simulation: time-stepped, at most one spike per neuron per step; Speck itself is event-driven (a "
            "burst of events inside one step can fire a neuron more than once)")


def check_inputs(inp: DeployInput, form: ChipForm) -> None:
    x = inp.inputs
    expected = (inp.timesteps, *form.nir_input_shape)
    if x.ndim < 3 or tuple(x.shape[1:]) != expected:
        raise ConfigError(f"deploy inputs have shape {list(x.shape)}; the chip graph takes "
                          f"[N, {', '.join(map(str, expected))}]")
    if x.shape[0] != inp.labels.shape[0] or x.shape[0] != inp.float_predictions.shape[0]:
        raise ConfigError(f"{x.shape[0]} inputs, {inp.labels.shape[0]} labels, "
                          f"{inp.float_predictions.shape[0]} float predictions: counts differ")
    if x.shape[0] == 0:
        raise ConfigError("no test samples to deploy")
    if bool((x < 0).any()) or not torch.equal(x, x.round()):
        raise ConfigError("deploy inputs must be event counts (non-negative integers per bin): Speck takes events")


def logits_from(result: SimResult, form: ChipForm, host) -> torch.Tensor:
    if host is not None:
        # The host part names the chip node it reads (e.g. 'lif4'); a tap is named after the
        # NIR Output node, so offer its spikes under the names of the tapped layer's nodes too.
        spikes = dict(result.taps)
        for tap in form.outputs:
            for node in form.layers[tap.layer].nodes:
                spikes.setdefault(node, result.taps[tap.name])
        return host(spikes)
    if len(result.taps) != 1:
        raise ConfigError(f"the chip graph has outputs {', '.join(result.taps)} and no host part to read them")
    spikes = next(iter(result.taps.values()))
    return spikes.sum(0).reshape(spikes.shape[1], -1)


ENGINES = ("fast", "sinabs", "fast-event")  # as deploy/targets.py lists them
EVENT_ORDER = ("per event: one spike at v >= threshold_high, then the reset, then the floor; layers one after "
               "the other within a step (breadth-first, as specksim), each neuron's events in raster order of its "
               "inputs (channel, row, column), the bias once at the start of a step")


def run_chip(inp: DeployInput, form: ChipForm, quant: QuantisedForm | None, batch_size: int,
             semantics: str = "stepped") -> tuple[SimResult, torch.Tensor, float]:
    """Simulate with the input's engine (``semantics="event"``: the fast engine's event-driven run)."""
    max_input = float(inp.inputs.max())
    if inp.engine == "sinabs" and semantics == "stepped":
        net = build_chip_net(form, inp.timesteps, quant, max_input=max_input)
        start = time.perf_counter()
        result = simulate(net, inp.inputs, batch_size=batch_size)
    else:
        plan = fast_engine.plan(form, inp.timesteps, quant, max_input=max_input)
        start = time.perf_counter()
        result = fast_engine.run(plan, inp.inputs, semantics=semantics)
    with torch.no_grad():
        preds = logits_from(result, form, inp.host).argmax(1)
    return result, preds, time.perf_counter() - start


def _counts(form: ChipForm, quant: QuantisedForm, result: SimResult, timesteps: int, per_sample: bool
            ) -> list[LayerCounts]:
    n = result.synops.shape[0]
    reduce = (lambda v: float(v.sum()) / n) if per_sample else (lambda v: float(v.sum()))
    rows = []
    for i, (layer, q) in enumerate(zip(form.layers, quant.layers)):
        bias_clock = layer.neurons * timesteps if bool((q.bias != 0).any()) else 0
        rows.append(LayerCounts(
            name=layer.name, kind=layer.kind, neurons=layer.neurons, synapses=synapse_count(layer),
            spikes=reduce(result.spikes[:, i]), synops=reduce(result.synops[:, i]),
            neuron_updates=float(bias_clock) if per_sample else float(bias_clock * n),
            neuron=layer.neuron, input_events=reduce(result.input_events[:, i])))
    return rows


def event_difference(inp: DeployInput, form: ChipForm, quant: QuantisedForm, stepped: SimResult,
                     stepped_preds: torch.Tensor, batch_size: int) -> dict:
    """The event-driven run on the same samples, and how it differs from the time-stepped one."""
    result, preds, wall = run_chip(inp, form, quant, batch_size, semantics="event")
    labels, float_preds = inp.labels.long(), inp.float_predictions.long()
    accuracy = float((preds == labels).float().mean())
    return {
        "semantics": EVENT_ORDER,
        "accuracy": accuracy,
        "accuracy_minus_time_stepped": accuracy - float((stepped_preds == labels).float().mean()),
        "agreement_with_time_stepped": float((preds == stepped_preds).float().mean()),
        "agreement_with_float": float((preds == float_preds).float().mean()),
        "layers": fast_engine.spike_difference(stepped, result, [layer.name for layer in form.layers]),
        "synops_per_sample": [float(result.synops[:, i].mean()) for i in range(len(form.layers))],
        "simulated_samples_per_s": inp.labels.shape[0] / wall if wall > 0 else None,
    }


def deploy_speck(inp: DeployInput, profile: Profile | str | Path = "speck", batch_size: int = 64,
                 weight_quantile: float = 1.0, compare_float_form: bool = True) -> Stats:
    """Convert, check, quantise, map, simulate and count; writes speck_config.json to inp.out_dir."""
    if not isinstance(profile, Profile):
        profile = load_profile(profile)
    if inp.engine not in ENGINES:
        raise ConfigError(f"engine '{inp.engine}' is not available for Speck; valid: {', '.join(ENGINES)}")
    limits = SpeckLimits.from_profile(profile)
    form = nir_to_chip_form(inp.graph, inp.dt, inp.conventions)
    check_limits(form, limits)
    check_inputs(inp, form)
    quant = quantise(form, limits, weight_quantile=weight_quantile)
    needs = [layer_memory(layer, has_bias=bool((q.bias != 0).any())) for layer, q in zip(form.layers, quant.layers)]
    mapping = map_layers(needs, limits)
    cores = core_report(needs, mapping, limits)

    result, preds, wall = run_chip(inp, form, quant, batch_size)
    labels, float_preds = inp.labels.long(), inp.float_predictions.long()
    n = labels.shape[0]
    extra: dict = {}
    if compare_float_form:
        # The same chip form before quantisation: separates the cost of the IAF conversion (leaks)
        # from the cost of 8/16-bit arithmetic.
        _, form_preds, _ = run_chip(inp, form, None, batch_size)
        extra["float_chip_form_accuracy"] = float((form_preds == labels).float().mean())
        extra["float_chip_form_agreement_with_float"] = float((form_preds == float_preds).float().mean())
    if inp.engine == "fast-event":
        extra["event_driven"] = event_difference(inp, form, quant, result, preds, batch_size)

    inp.out_dir.mkdir(parents=True, exist_ok=True)
    config_path = write_config(inp.out_dir / CONFIG_FILE, quant, mapping, cores,
                               step_duration_s=inp.step_s if inp.step_s is not None else inp.dt)
    return Stats(
        target="speck", engine=inp.engine, samples=n, timesteps=inp.timesteps, dt=inp.dt,
        accuracy=float((preds == labels).float().mean()),
        float_accuracy=float((float_preds == labels).float().mean()),
        agreement_with_float=float((preds == float_preds).float().mean()),
        cores_used=len(mapping),
        layers=_counts(form, quant, result, inp.timesteps, per_sample=False),
        per_sample=_counts(form, quant, result, inp.timesteps, per_sample=True),
        approximations=[time_stepped_note(form), *form.approximations, *quant.approximations],
        clipped_weights=quant.clipped_weights,
        core_mapping=mapping,
        core_memory=cores,
        quantisation=[{"layer": q.name, "scale": q.scale, "threshold_high": q.threshold,
                       "threshold_low": q.min_v_mem, "clipped_weights": q.clipped_weights,
                       "clipped_biases": q.clipped_biases} for q in quant.layers],
        sinabs_validator={layer.name: (sinabs_validator(layer) or "ok") for layer in form.layers},
        config_file=config_path.name,
        simulated_samples_per_s=n / wall if wall > 0 else None,
        counting=("synops = input events x fan-out; synapses = connections; neuron_updates = bias-clock "
                  "updates (neurons x T for layers with a bias/leak, else 0): Speck updates neurons on events"),
        **extra,
    )
