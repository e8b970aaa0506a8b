"""Simulate a lowered graph in floating point: the float reference every deploy scores against.

For a network that comes from outside (``spikeport import``) there is no trained torch model;
the reference is the graph itself, stepped in float64 with the lowering's discrete equations
(``spikeport.deploy.lowering``) and the producer's conventions (reset, spikes per step, floor).
Layer by layer over all steps at once (one batched convolution per layer), then a scan over
time for the neurons; a recurrent layer steps its synapses with the scan.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from spikeport.deploy.lowering import Conventions, Layer, LayerGraph


@dataclass
class FloatRun:
    outputs: dict[str, torch.Tensor]   # NIR Output name -> [T, N, *shape] (spikes, or membrane of a readout)
    spikes: dict[str, torch.Tensor]    # layer name -> [T, N, *output_shape] spikes (counts for multi-spike)
    readout: str                       # "spikes" | "membrane" (of the last layer)

    def logits(self, output: str | None = None) -> torch.Tensor:
        """[N, C]: spike counts, or the time-summed membrane of a readout layer."""
        out = self.outputs[output] if output else next(iter(self.outputs.values()))
        return out.sum(0).reshape(out.shape[1], -1)


def _synaptic(layer: Layer, x: torch.Tensor) -> torch.Tensor:
    """x [B, *input_shape] -> W pool(x) [B, *output_shape] (no bias)."""
    w = torch.as_tensor(layer.weight, dtype=torch.float64)
    if layer.pool is not None:
        x = layer.pool.apply(x)
    if layer.kind == "conv":
        one_d = len(layer.output_shape) == 2
        h = x.unsqueeze(2) if one_d else x
        y = F.conv2d(h, w, stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=layer.groups)
        return y.squeeze(2) if one_d else y
    return x.reshape(x.shape[0], -1) @ w.T


def _delayed(x: torch.Tensor, delay: np.ndarray) -> torch.Tensor:
    """x [T, N, *shape] with each element shifted later in time by its own delay (steps)."""
    t = x.shape[0]
    d = torch.as_tensor(delay, dtype=torch.long)
    idx = torch.arange(t).reshape(-1, *([1] * d.ndim)) - d           # [T, *shape]
    gathered = x.gather(0, idx.clamp(min=0).unsqueeze(1).expand_as(x))
    return torch.where((idx >= 0).unsqueeze(1), gathered, torch.zeros_like(gathered))


def _per_channel(values: np.ndarray | None, shape: tuple[int, ...]) -> torch.Tensor | float:
    if values is None:
        return 0.0
    return torch.as_tensor(values, dtype=torch.float64).reshape((-1,) + (1,) * (len(shape) - 1))


def _fire(v: torch.Tensor, theta: float, conv: Conventions) -> torch.Tensor:
    if conv.spikes_per_step == "multi":
        # sinabs MultiSpike: as many spikes as whole thresholds in v (v = theta gives one)
        return (v > 0) * torch.div(v, theta, rounding_mode="trunc")
    return ((v >= theta) if conv.fire_at_threshold else (v > theta)).to(v.dtype)


def run_layer(layer: Layer, x: torch.Tensor, conv: Conventions) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, N, *input_shape] -> (spikes, membrane) [T, N, *output_shape], float64."""
    t, n = x.shape[:2]
    if layer.delay is not None and np.any(layer.delay):
        x = _delayed(x, layer.delay)
    syn = _synaptic(layer, x.reshape(t * n, *x.shape[2:])).reshape(t, n, *layer.output_shape)
    if layer.delay_out is not None and np.any(layer.delay_out):
        syn = _delayed(syn, layer.delay_out)
    shape = layer.output_shape
    bias = _per_channel(layer.bias, shape)
    cbias = _per_channel(layer.current_bias, shape)
    rec = torch.as_tensor(layer.rec_weight, dtype=torch.float64) if layer.rec_weight is not None else None
    i = torch.zeros(n, *shape, dtype=torch.float64)
    v = torch.zeros_like(i)
    s = torch.zeros_like(i)
    spikes, volts = [], []
    for step in range(t):
        a = syn[step] + cbias
        if rec is not None:
            a = a + s.reshape(n, -1) @ rec.T
        i = layer.alpha * i + a
        v = layer.beta * v + i + bias
        if layer.spiking:
            s = _fire(v, layer.threshold, conv)
            v = v - s * layer.threshold if conv.reset == "subtract" else torch.where(s > 0, torch.zeros_like(v), v)
            if conv.membrane_floor is not None:
                v = v.clamp(min=conv.membrane_floor * layer.threshold)
        spikes.append(s)
        volts.append(v)
    return torch.stack(spikes), torch.stack(volts)


@torch.no_grad()
def run_float(graph: LayerGraph, inputs: torch.Tensor) -> FloatRun:
    """inputs [N, T, *input_shape] (event counts) -> every layer's spikes and each Output's trains."""
    h = inputs.to(torch.float64).transpose(0, 1)
    conv = graph.conventions
    spikes: dict[str, torch.Tensor] = {}
    membrane = None
    for layer in graph.layers:
        s, v = run_layer(layer, h, conv)
        spikes[layer.name] = s
        membrane = v
        h = s
    last = graph.layers[-1]
    outputs = {}
    for tap in graph.taps:
        src = graph.layers[tap.layer]
        train = membrane if (not src.spiking and tap.layer == len(graph.layers) - 1) else spikes[src.name]
        t, n = train.shape[:2]
        outputs[tap.name] = train.reshape(t, n, *tap.shape)
    return FloatRun(outputs=outputs, spikes=spikes, readout=last.readout)
