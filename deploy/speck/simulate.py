"""Run Speck's chip form in sinabs, batched, and count what every layer did.

The network is a plain ``nn.Sequential`` of sinabs layers, as on the chip: per core
``nn.Conv2d`` -> ``sinabs.layers.IAFSqueeze`` -> ``sinabs.layers.SumPool2d``. The neurons follow
the form's conventions through sinabs' own classes: ``spike_fn`` ``SingleSpike`` / ``MultiSpike``
(``spikes_per_step``), ``reset_fn`` ``MembraneReset`` / ``MembraneSubtract`` (``reset_mode``),
``min_v_mem`` the membrane floor. Inputs are flattened to ``[B*T, C, H, W]``.

Counts, per layer and per sample (hand counts from the recorded events, independent of
``sinabs.SNNAnalyzer``, which the tests compare them with):

- ``synapses``: connections, i.e. the sum over input neurons of their fan-out (padding and stride
  taken into account: an input pixel reaches ``c_out x n_y x n_x`` neurons, with ``n_y`` the
  output rows whose kernel window covers it);
- ``synops``: input events x their fan-out (one synaptic operation a weight added to a state);
- ``spikes``: output spikes of the layer's neurons;
- ``neuron_updates``: neuron-state updates other than synaptic accumulation: Speck is
  event-driven, a neuron is touched by incoming events (counted as synops) and, when the layer
  has a bias (or a leak turned into one), by the bias clock once a step: ``neurons x T``;
  0 for a bias-free layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sinabs
import sinabs.layers as sl
import torch
from sinabs.activation import MembraneReset, MembraneSubtract, MultiSpike, SingleSpike
from torch import nn

from spikeport.deploy.speck.chip_form import ChipForm, ChipLayer, check_neuron_options, fires_at_threshold
from spikeport.deploy.speck.quantize import QuantisedForm

FLOAT_EXACT = 2 ** 24  # integers up to this are exact in float32


@dataclass
class ChipNet:
    model: nn.Sequential
    form: ChipForm
    dtype: torch.dtype
    input_pool: int | None     # index of the input pooling module, or None
    convs: list[int]           # module index of each layer's Conv2d
    spikes: list[int]          # ... of each layer's IAFSqueeze
    pools: list[int | None]    # ... of each layer's SumPool2d


def _axis_fanout(size: int, k: int, stride: int, pad: int, out: int) -> np.ndarray:
    """For each input position along one axis: how many output positions' windows cover it."""
    pos = np.arange(size)[:, None] + pad - np.arange(out)[None, :] * stride
    return ((pos >= 0) & (pos < k)).sum(1)


def fanout_map(layer: ChipLayer) -> torch.Tensor:
    """[H_in, W_in]: neurons each input event of one channel reaches (all output channels)."""
    _, h, w = layer.in_shape
    _, oh, ow = layer.out_shape
    fy = _axis_fanout(h, int(layer.weight.shape[-2]), layer.stride[0], layer.padding[0], oh)
    fx = _axis_fanout(w, int(layer.weight.shape[-1]), layer.stride[1], layer.padding[1], ow)
    return torch.as_tensor(np.outer(fy, fx) * layer.out_shape[0], dtype=torch.float64)


def neuron_functions(form: ChipForm) -> tuple[type, object]:
    """(spike_fn, reset_fn) of sinabs for the form's spike and reset conventions."""
    check_neuron_options(form)
    spike_fn = MultiSpike if form.spikes_per_step == "multi" else SingleSpike
    reset_fn = MembraneSubtract() if form.reset_mode == "subtract" else MembraneReset()
    return spike_fn, reset_fn


def float_neuron(form: ChipForm) -> tuple[float, float | None]:
    """(threshold, min_v_mem) of the float chip form, whose threshold is 1."""
    if fires_at_threshold(form):
        threshold = 1.0  # sinabs' own test, v >= 1 (MultiSpike: floor(v / 1) spikes)
    else:
        # v > 1 (the trained neuron's strict test) as sinabs' v >= threshold in float32
        threshold = float(torch.nextafter(torch.tensor(1.0), torch.tensor(2.0)))
    floor = None if form.membrane_floor is None else float(form.membrane_floor) * threshold
    return threshold, floor


def _state_bound(form: ChipForm, step_in: float, threshold: float, floor: float, timesteps: int) -> float:
    """Largest |v| an integer neuron reaches: with one spike a step and subtraction the state can
    grow by the input every step, otherwise a spike takes it back under the threshold."""
    grows = form.reset_mode == "subtract" and form.spikes_per_step == "single"
    return max(threshold + step_in * (timesteps if grows else 1), abs(floor) + step_in)


def build_chip_net(form: ChipForm, timesteps: int, quant: QuantisedForm | None = None,
                   max_input: float = 1.0) -> ChipNet:
    """sinabs modules for the float chip form (``quant`` None) or its integer version."""
    spike_fn, reset_fn = neuron_functions(form)
    modules: list[nn.Module] = []
    input_pool = None
    if form.input_pool > 1:
        input_pool = len(modules)
        modules.append(sl.SumPool2d(form.input_pool))
    convs, spikes, pools = [], [], []
    dtype = torch.float32
    events_max = max_input * form.input_pool ** 2  # most events one input position gets in a step
    for i, layer in enumerate(form.layers):
        conv = nn.Conv2d(layer.in_shape[0], layer.out_shape[0], layer.kernel_size, layer.stride, layer.padding,
                         bias=True)
        if quant is None:
            weight, bias = layer.weight, layer.bias
            threshold, min_v_mem = float_neuron(form)
        else:
            q = quant.layers[i]
            weight, bias = q.weight.double(), q.bias.double()
            threshold, min_v_mem = float(q.threshold), float(q.min_v_mem)
            # Largest possible |input| to a neuron in one step: exact integer sums need float64 beyond 2^24.
            step_in = events_max * float(weight.abs().sum((1, 2, 3)).max()) + float(bias.abs().max())
            bound = _state_bound(form, step_in, threshold, min_v_mem, timesteps) + step_in
            if bound >= FLOAT_EXACT:
                dtype = torch.float64
            per_neuron = bound // threshold + 1 if form.spikes_per_step == "multi" else 1
            events_max = per_neuron * layer.pool ** 2
        with torch.no_grad():
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)
        convs.append(len(modules))
        modules.append(conv)
        spikes.append(len(modules))
        modules.append(sl.IAFSqueeze(num_timesteps=timesteps, spike_threshold=torch.tensor(threshold),
                                     min_v_mem=min_v_mem, spike_fn=spike_fn, reset_fn=reset_fn))
        if layer.pool > 1:
            pools.append(len(modules))
            modules.append(sl.SumPool2d(layer.pool))
        else:
            pools.append(None)
    model = nn.Sequential(*modules).to(dtype)
    model.requires_grad_(False)
    return ChipNet(model=model, form=form, dtype=dtype, input_pool=input_pool, convs=convs, spikes=spikes,
                   pools=pools)


def to_chip_input(form: ChipForm, x: torch.Tensor) -> torch.Tensor:
    """[B, T, *nir input shape] -> [B*T, C, H, W]."""
    b, t = x.shape[:2]
    return x.reshape(b * t, *form.input_shape)


@dataclass
class SimResult:
    taps: dict[str, torch.Tensor]       # output node -> spikes [T, N, *shape]
    synops: torch.Tensor                # [N, L] per sample and layer
    spikes: torch.Tensor                # [N, L]
    input_events: torch.Tensor          # [N, L]
    layers: dict[str, torch.Tensor] | None = None  # layer -> spikes [T, N, C, H, W] (when recorded)


@torch.no_grad()
def simulate(net: ChipNet, inputs: torch.Tensor, batch_size: int = 64, record: bool = False) -> SimResult:
    """sinabs' run of ``inputs`` [N, T, *nir input shape]; ``record`` keeps every layer's spikes."""
    form = net.form
    n, t = inputs.shape[:2]
    fanouts = [fanout_map(layer) for layer in form.layers]
    taps: dict[str, list[torch.Tensor]] = {tap.name: [] for tap in form.outputs}
    synops, spikes, events = [], [], []
    trains: dict[str, list[torch.Tensor]] = {layer.name: [] for layer in form.layers}
    modules = net.model
    for start in range(0, n, batch_size):
        xb = inputs[start:start + batch_size]
        b = xb.shape[0]
        sinabs.reset_states(modules)
        h = to_chip_input(form, xb).to(net.dtype)
        if net.input_pool is not None:
            h = modules[net.input_pool](h)
        syn_b, spk_b, ev_b = [], [], []
        for i, layer in enumerate(form.layers):
            events_in = h.reshape(b, t, *h.shape[1:]).sum(1).double()          # [B, C, H, W]
            ev_b.append(events_in.sum((1, 2, 3)))
            syn_b.append((events_in * fanouts[i]).sum((1, 2, 3)))
            # sinabs' spike functions return float32: back to the net's dtype for a float64 net
            s = modules[net.spikes[i]](modules[net.convs[i]](h.to(net.dtype)))
            spk_b.append(s.reshape(b, -1).sum(1).double())  # [B*T, ...] rows are sample-major
            if record:
                trains[layer.name].append(s.reshape(b, t, *layer.out_shape).transpose(0, 1).float())
            pooled = modules[net.pools[i]](s) if net.pools[i] is not None else s
            for tap in form.outputs:
                if tap.layer == i:
                    src = pooled if tap.pooled else s
                    taps[tap.name].append(src.reshape(b, t, *tap.shape).transpose(0, 1).float())
            h = pooled
        synops.append(torch.stack(syn_b, 1))
        spikes.append(torch.stack(spk_b, 1))
        events.append(torch.stack(ev_b, 1))
    return SimResult(taps={k: torch.cat(v, 1) for k, v in taps.items()}, synops=torch.cat(synops),
                     spikes=torch.cat(spikes), input_events=torch.cat(events),
                     layers={k: torch.cat(v, 1) for k, v in trains.items()} if record else None)


def synapse_count(layer: ChipLayer) -> int:
    return int(fanout_map(layer).sum().item()) * layer.in_shape[0]
