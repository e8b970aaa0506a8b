"""`spikeport deploy runs/X --target loihi|loihi2`: NIR -> netx HDF5 -> cores -> Lava or its fast twin -> stats.

Writes into ``inp.out_dir``: ``model.net`` (the netx HDF5 network a Loihi deployment loads)
and ``mapping.json`` (cores used, per-core usage). Returns the Stats that deploy/run.py writes.
"""
from __future__ import annotations

import numpy as np
import torch

from spikeport.deploy.common import DeployInput
from spikeport.deploy.loihi.counting import layer_counts
from spikeport.deploy.loihi.fast_engine import run_fast
from spikeport.deploy.loihi.mapper import map_cores
from spikeport.deploy.loihi.netx_writer import write_netx
from spikeport.deploy.loihi.quantize import QuantNet, input_bits_for, quantize
from spikeport.deploy.lowering import LayerFeatures, LayerGraph, check_features, fold_pooling, lower
from spikeport.errors import ConfigError, UnsupportedNodeError
from spikeport.hw_profiles import Profile
from spikeport.io import write_json_atomic
from spikeport.schemas import Stats

ENGINES = ("fast", "lava")

LOIHI_FEATURES = LayerFeatures(
    target="Loihi", neuron_types=("IF", "LIF", "CubaLIF"), current_memory=True, recurrence=True, delays=False,
    membrane_readout=False, pooling=False, multiple_taps=False,
    why_not={
        "LI": "a membrane readout: the Loihi engines read spikes only (read the membrane on the host)",
        "CubaLI": "a membrane readout: the Loihi engines read spikes only (read the membrane on the host)",
        "membrane": "the Loihi engines read spikes only",
        "Delay": "axonal delays are not written to netx by this target yet",
        "pooled_tap": "netx has no pooling layer",
    })


def loihi_layers(graph: LayerGraph) -> LayerGraph:
    """The lowered graph as Loihi's CUBA layers run it: pooling folded into weights, and what the
    chip's neuron cannot hold moved where it can, each change listed as an approximation."""
    check_features(graph, LOIHI_FEATURES)
    graph = fold_pooling(graph)
    conv = graph.conventions
    for layer in graph.layers:
        if layer.current_bias is not None:
            # netx adds a bias to the voltage; a bias into the current reaches the voltage as
            # b / (1 - alpha) in steady state (exact after the current settles).
            moved = layer.current_bias / (1.0 - layer.alpha)
            layer.bias = moved if layer.bias is None else layer.bias + moved
            layer.current_bias = None
            layer.notes.append(f"{layer.name}: the bias into the synaptic current runs as a voltage bias "
                               f"b / (1 - alpha) = {1 / (1 - layer.alpha):.4g} b (equal in steady state)")
    if conv.reset == "subtract":
        graph.layers[0].notes.append("all layers: the producer resets by subtraction; Lava's LIF resets to zero")
    if conv.spikes_per_step == "multi":
        graph.layers[0].notes.append("all layers: the producer fires several spikes per step; Loihi one at most")
    if conv.membrane_floor is not None:
        graph.layers[0].notes.append(f"all layers: the producer floors the membrane at {conv.membrane_floor:g} x "
                                     "threshold; Loihi's floor is the 24-bit range")
    return graph


def _predict(inp: DeployInput, output_name: str, last_layer: str, out_trains: torch.Tensor) -> torch.Tensor:
    """Predictions of the deployed model: output spike counts, or the host head on the chip's spikes."""
    trains = out_trains.to(torch.float32)  # [T, N, ...]
    if inp.host is None:
        return trains.sum(0).reshape(trains.shape[1], -1).argmax(1)
    with torch.no_grad():
        logits = inp.host({output_name: trains, last_layer: trains})
    return logits.argmax(1)


LAVA_INT32_LIMIT = 2**25  # Lava's LIF shifts the int32 synaptic sum left by 6: past 2**25 it wraps


def check_int32(net: QuantNet) -> None:
    """Refuse a network whose synaptic sums would wrap in Lava's int32 arithmetic: the fast engine
    stays exact there, so it would no longer equal Lava (or, likely, the chip)."""
    from spikeport.deploy.loihi.fast_engine import max_payload, synaptic_bound
    payload = max_payload(net)
    for i, q in enumerate(net.layers):
        weights = [q.weight] + ([q.rec_weight] if q.rec_weight is not None else [])
        bound = sum(synaptic_bound(w, payload if i == 0 else 1) for w in weights)
        if bound >= LAVA_INT32_LIMIT:
            raise UnsupportedNodeError(
                f"layer '{q.name}': synaptic sums reach {bound} (weights x {payload if i == 0 else 1}-valued inputs); "
                f"Lava sums in int32 and shifts by 6, which wraps past 2**25 = {LAVA_INT32_LIMIT}: lower the input "
                f"message bits or the fan-in")


def prepare(inp: DeployInput, profile: Profile) -> tuple[LayerGraph, QuantNet, torch.Tensor, int]:
    """(layer graph, quantised network, inputs cut to T, input message bits): what both engines run."""
    x = inp.inputs[:, :inp.timesteps]
    want_bits = input_bits_for(x.numpy())
    max_bits = int(profile.limits["input_message_bits"].si()) if "input_message_bits" in profile.limits else 0
    bits = want_bits if want_bits <= max_bits else 0
    if inp.netx_file is not None:
        # a network imported from lava-dl runs as its netx file says, integers unchanged
        from spikeport.deploy.loihi.netx_reader import read_netx
        nx = read_netx(inp.netx_file, input_bits=bits)
        net = nx.net
        net.approximations = [*nx.notes, *net.approximations]
        graph = lower(inp.graph, inp.dt, inp.conventions)
    else:
        graph = loihi_layers(lower(inp.graph, inp.dt, inp.conventions))
        net = quantize(graph, input_bits=bits)  # warns when it clips
    check_int32(net)
    if want_bits > max_bits:
        net.approximations.insert(0, f"input: {int((x > 1).sum())} of {int((x != 0).sum())} input entries carry "
                                     f"counts > 1; {profile.title} takes binary input spikes, so each is sent as one spike")
    return graph, net, x, bits


def deploy_loihi(inp: DeployInput, profile: Profile) -> Stats:
    """Quantise, write netx, map onto cores, simulate ``inp.inputs`` and count; see module docstring."""
    if inp.engine not in ENGINES:
        raise ConfigError(f"engine '{inp.engine}' is not a Loihi engine; valid: {', '.join(ENGINES)}")
    graph, net, x, bits = prepare(inp, profile)
    notes = list(net.approximations)
    mapping = map_cores(net, profile)  # a network that does not fit fails before anything is written
    inp.out_dir.mkdir(parents=True, exist_ok=True)
    netx_file = write_netx(net, inp.out_dir / "model.net")
    write_json_atomic(inp.out_dir / "mapping.json", mapping.to_dict())

    n, t = x.shape[0], x.shape[1]
    names = [q.name for q in net.layers]
    if inp.engine == "fast":
        res = run_fast(net, x)
        out_trains, in_events, neuron_spikes = res.output, res.input_events, res.neuron_spikes
    else:
        from spikeport.deploy.loihi.lava_run import run_lava
        res = run_lava(netx_file, x, names, input_bits=bits)
        out_trains = res.spikes[names[-1]]
        in_events = (x != 0).reshape(n * t, -1).sum(0).to(torch.float64)
        neuron_spikes = {k: v.reshape(t, n, -1).sum((0, 1)).to(torch.float64) for k, v in res.spikes.items()}
    totals, means = layer_counts(net, in_events, neuron_spikes, n, t)
    preds = _predict(inp, graph.output_name, names[-1], out_trains)
    labels = inp.labels[:n]
    fpred = inp.float_predictions[:n]
    return Stats(target=inp.target, engine=inp.engine, samples=n, timesteps=t, dt=inp.dt,
                 accuracy=float((preds == labels).float().mean()),
                 float_accuracy=float((fpred == labels).float().mean()),
                 agreement_with_float=float((preds == fpred).float().mean()),
                 cores_used=mapping.cores_used, layers=totals, per_sample=means,
                 approximations=notes, clipped_weights=net.clipped)
