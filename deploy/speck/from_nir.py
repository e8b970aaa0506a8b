"""The lowered NIR graph (``spikeport.deploy.lowering``) -> Speck's chip form (``ChipForm``).

The shared lowering has already checked the graph, discretised the neurons with the graph's
dt and folded per-neuron gains and thresholds into per-channel weight scales. Here only what
is Speck's own: each layer becomes one core (weights -> IAF neurons with threshold 1 -> sum
pooling of the output spikes on the way to the next core), pooling before the first layer is
the input's pooling, an average pool's 1/k^2 moves into the next layer's weights (exact), a
dense layer is a convolution over its whole input, and a leak becomes a constant negative
bias (Speck neurons do not decay: an approximation, reported). What Speck cannot run at all
(recurrence, synaptic currents, delays, membrane readouts) is named by ``SPECK_FEATURES``.
"""
from __future__ import annotations

import numpy as np
import torch

from spikeport.deploy.lowering import Conventions, Layer, LayerFeatures, LayerGraph, Pool, check_features, lower
from spikeport.deploy.speck.chip_form import ChipForm, ChipLayer, OutputTap
from spikeport.errors import UnsupportedNodeError

SPECK_FEATURES = LayerFeatures(
    target="Speck", neuron_types=("IF", "LIF"), current_memory=False, recurrence=False, delays=False,
    membrane_readout=False, pooling=True, multiple_taps=True,
    why_not={
        "CubaLIF": "a synaptic current state; Speck neurons are IAF with no current memory",
        "CubaLI": "a non-spiking leaky integrator; Speck cores only emit spikes",
        "LI": "a non-spiking leaky integrator; Speck cores only emit spikes",
        "membrane": "Speck cores only emit spikes (read a membrane on the host)",
        "Delay": "synaptic delays; Speck has none",
        "recurrence": "Speck cores only connect forward",
        "pooled_tap": "sinabs' monitor reads a layer's spikes before its pooling, so the chip would not read "
                      "what the simulation does",
    })


def _pool_size(pool: Pool) -> int:
    k, s, p = pool.kernel, pool.stride, pool.padding
    if k[0] != k[1] or s != k or p != (0, 0):
        raise UnsupportedNodeError(f"node '{pool.node}': pooling kernel {k}, stride {s}, padding {p}; Speck pools "
                                   "square windows with stride = kernel and no padding")
    return k[0]


def _as3(shape: tuple[int, ...], name: str) -> tuple[int, int, int]:
    if len(shape) == 1:   # a flat input (audio: 700 channels) runs as N channels of 1x1
        return (shape[0], 1, 1)
    if len(shape) == 3:
        return (shape[0], shape[1], shape[2])
    raise UnsupportedNodeError(f"node '{name}': shape {list(shape)}; the Speck target takes [C, H, W] or [N] maps")


def _chip_layer(layer: Layer, shape: tuple[int, int, int], weight_scale: float, notes: list[str]) -> ChipLayer:
    c, h, w = shape
    if layer.kind == "conv":
        if len(layer.output_shape) != 3:
            raise UnsupportedNodeError(f"node '{layer.synapse}': a 1-d convolution; Speck convolves 2-d inputs "
                                       "(reshape the input to 2-d)")
        if layer.dilation != (1, 1) or layer.groups != 1:
            raise UnsupportedNodeError(f"node '{layer.synapse}': dilation {layer.dilation} / groups {layer.groups}; "
                                       "Speck convolutions have dilation 1 and one group")
        weight = torch.as_tensor(layer.weight, dtype=torch.float64)
        out_shape = _as3(layer.output_shape, layer.name)
        stride, padding, kind = layer.stride, layer.padding, "conv"
    else:
        # Dense as a convolution over the whole input (sinabs' convert_linear_to_conv layout:
        # torch's flatten order is C, H, W).
        weight = torch.as_tensor(layer.weight, dtype=torch.float64).reshape(layer.weight.shape[0], c, h, w)
        out_shape, stride, padding, kind = (layer.weight.shape[0], 1, 1), (1, 1), (0, 0), "dense"
    theta = layer.threshold
    weight = (weight * weight_scale / theta).float()
    bias = torch.zeros(out_shape[0], dtype=torch.float64) if layer.bias is None else \
        torch.as_tensor(layer.bias, dtype=torch.float64) / theta
    leak_bias = layer.beta < 1
    if leak_bias:
        # Speck neurons do not decay. The leak -(1 - beta) v of a LIF is replaced by its value at
        # half threshold, a constant per step.
        drift = -(1.0 - layer.beta) * 0.5
        bias = bias + drift
        notes.append(f"{layer.name}: leak (beta {layer.beta:.4g}) runs as a constant bias of {drift:.4g} x threshold "
                     "per step (Speck neurons are IAF: no decay)")
    return ChipLayer(name=layer.synapse, kind=kind, neuron=layer.name, weight=weight.contiguous(), bias=bias.float(),
                     stride=stride, padding=padding, in_shape=shape, out_shape=out_shape, leak_bias=leak_bias,
                     nodes=list(layer.nodes))


def chip_form(graph: LayerGraph) -> ChipForm:
    """Speck's chip form of a lowered graph (float, threshold 1 per layer)."""
    check_features(graph, SPECK_FEATURES)
    in_shape = _as3(graph.input_shape, graph.input_name)
    form = ChipForm(input_shape=in_shape, input_pool=1, layers=[], outputs=[], nir_input_shape=graph.input_shape)
    notes: list[str] = []
    for i, layer in enumerate(graph.layers):
        shape = _as3(layer.input_shape, layer.name)
        scale = 1.0
        if layer.pool is not None:
            k = _pool_size(layer.pool)
            if shape[1] % k or shape[2] % k:
                raise UnsupportedNodeError(f"node '{layer.pool.node}': {shape[1]}x{shape[2]} input does not divide "
                                           f"by pooling {k}")
            if i == 0:
                form.input_pool = k
            else:
                form.layers[-1].pool = k
            scale = layer.pool.scale   # average pooling: sum pooling on chip, 1/k^2 into the weights
            shape = (shape[0], shape[1] // k, shape[2] // k)
        form.layers.append(_chip_layer(layer, shape, scale, notes))
    for tap in graph.taps:
        form.outputs.append(OutputTap(name=tap.name, layer=tap.layer, pooled=tap.pooled, shape=tap.shape))
    form.approximations = [*graph.approximations, *notes]
    conv = graph.conventions
    # The producer's neuron conventions (Speck runs either reset mode, and several spikes per step).
    form.reset_mode, form.spikes_per_step = conv.reset, conv.spikes_per_step
    form.membrane_floor, form.fire_at_threshold = conv.membrane_floor, conv.fire_at_threshold
    return form


def nir_to_chip_form(graph, dt: float, conventions: Conventions | None = None) -> ChipForm:
    """Lower a chip-part NIR graph with ``dt`` and read it into Speck's chip form."""
    return chip_form(lower(graph, dt, conventions))
