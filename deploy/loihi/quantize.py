"""The one quantisation of a layer list to Loihi integers, used by the netx writer AND the fast engine.

Loihi's fixed-point CUBA neuron (Lava ``PyLifModelBitAcc``, netx ``CUBA``)::

    u = wrap24(trunc(u * (4096 - iDecay) / 4096) + (a << 6))
    v = clip24(trunc(v * (4096 - vDecay) / 4096) + u + (bias << 6))
    spike = v > (vThMant << 6);  v = 0 where spiked

with ``a`` the integer sum of 8-bit synaptic weights of the spikes that arrived. Below
threshold every term is linear in the weights, so a float layer is carried exactly up to
rounding by scaling weights, bias and threshold by one factor ``scale`` per layer (the shared
weight exponent and the threshold mantissa together):

- weights: 8-bit mantissa in mixed-sign mode, ``w_int = 2 * round(w * scale / 2)`` in
  [-254, 254] (Loihi's mixed-sign synapse scales its 8-bit mantissa by 2);
- threshold: ``vThMant = round(threshold * scale)`` (17 bits, at most 131071);
- bias: ``round(b * scale)`` with netx's bias exponent 6 (13-bit signed mantissa);
- decays: ``vDecay = round(4096 * (1 - beta))``, ``iDecay = round(4096 * (1 - alpha))``
  (iDecay 4096 = no current memory).

The scale is the largest that keeps every weight in range (or the ``weight_percentile``-th
percentile of |w| at full range, clipping the rest: then counted). What cannot be kept
exactly is reported, never hidden.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from spikeport.deploy.lowering import Layer, LayerGraph
from spikeport.errors import UnsupportedNodeError

W_MAX = 254          # largest mixed-sign weight: mantissa 127, scaled by 2
VTH_MAX = 2**17 - 1  # threshold mantissa: 17-bit unsigned
BIAS_MAX = 2**12 - 1  # bias mantissa: 13-bit signed
BIAS_MIN = -(2**12)
DECAY_UNITY = 4096


@dataclass
class QuantLayer:
    """Integer parameters of one layer, exactly as the netx file holds them."""

    layer: Layer
    weight: np.ndarray            # int64, conv [Cout, Cin, kH, kW], dense [out, in]
    rec_weight: np.ndarray | None
    bias: np.ndarray | None       # int64 bias mantissa (exponent 6): per output channel, or per neuron
                                  # (an array of the layer's output shape)
    vth: int                      # threshold mantissa (compared as vth << 6)
    i_decay: int                  # 0..4096, 4096 = no current memory
    v_decay: int                  # 0..4096, 0 = no leak
    scale: float                  # integer units per float unit
    clipped: int = 0              # weights + biases clipped to the representable range
    # netx axonal delays (dense only), int64 extra steps: [out] one per output neuron, or [out, in] one
    # per synapse; None = no delay beyond the synapse block's own step
    delay: np.ndarray | None = None
    # netx input layer with neurons (identity weights, no synapse step), written back as layer type
    # ``input``; netx drives them by their bias alone
    input_neurons: bool = False

    @property
    def name(self) -> str:
        return self.layer.name


@dataclass
class QuantNet:
    input_shape: tuple[int, ...]
    layers: list[QuantLayer]
    input_bits: int               # 0: binary input spikes; > 0: graded input spikes of this many bits
    approximations: list[str] = field(default_factory=list)

    @property
    def clipped(self) -> int:
        return sum(q.clipped for q in self.layers)


def _round_even(x: np.ndarray) -> np.ndarray:
    return 2 * np.round(x / 2.0)


def quantize_layer(layer: Layer, weight_percentile: float = 100.0) -> tuple[QuantLayer, list[str]]:
    notes = list(layer.notes)
    ws = [np.abs(layer.weight).reshape(-1)]
    if layer.rec_weight is not None:  # netx gives the input and recurrent block one exponent
        ws.append(np.abs(layer.rec_weight).reshape(-1))
    mags = np.concatenate(ws)
    wmax = float(np.percentile(mags, weight_percentile)) if mags.size else 0.0
    if wmax <= 0:
        wmax = float(mags.max()) if mags.size and mags.max() > 0 else 1.0
    scale = W_MAX / wmax
    if layer.threshold * scale > VTH_MAX:
        scale = VTH_MAX / layer.threshold
        notes.append(f"{layer.name}: weights are tiny against the threshold; scale limited by the 17-bit "
                     f"threshold mantissa, weights use {wmax * scale:.1f} of 254 levels")
    vth = int(round(layer.threshold * scale))
    if vth < 16:
        notes.append(f"{layer.name}: threshold quantised to {vth} (coarse: weights are large against it)")

    def q(w: np.ndarray) -> tuple[np.ndarray, int]:
        raw = _round_even(w * scale)
        clipped = int(np.count_nonzero(np.abs(raw) > W_MAX))
        return np.clip(raw, -W_MAX, W_MAX).astype(np.int64), clipped

    w_int, clipped = q(layer.weight)
    rec_int = None
    if layer.rec_weight is not None:
        rec_int, c2 = q(layer.rec_weight)
        clipped += c2
    b_int = None
    if layer.bias is not None:
        raw = np.round(layer.bias * scale)
        n = int(np.count_nonzero((raw > BIAS_MAX) | (raw < BIAS_MIN)))
        if n:
            notes.append(f"{layer.name}: {n} bias values beyond the 13-bit bias mantissa were clipped")
        clipped += n
        b_int = np.clip(raw, BIAS_MIN, BIAS_MAX).astype(np.int64)
    if clipped:
        notes.append(f"{layer.name}: {clipped} weights/biases clipped to Loihi's range at scale {scale:.4g}")
    v_decay = int(round(DECAY_UNITY * (1.0 - layer.beta)))
    i_decay = int(round(DECAY_UNITY * (1.0 - layer.alpha)))
    if v_decay > DECAY_UNITY - 1:
        # the chip's vDecay field has 12 bits (0..4095): tau = dt (beta 0) cannot be written exactly
        notes.append(f"{layer.name}: voltage decay {v_decay} (beta {layer.beta:.4g}, tau <= dt) is beyond the "
                     f"12-bit vDecay field; written as {DECAY_UNITY - 1}")
        v_decay = DECAY_UNITY - 1
    if i_decay < 1:
        raise UnsupportedNodeError(f"layer '{layer.name}': current decay alpha {layer.alpha:.6g} (tau_syn infinite "
                                   f"against dt) writes iDecay 0, which Lava reads as du = -1; Loihi cannot hold a "
                                   f"current that never decays")
    for what, val, dec in (("beta", layer.beta, v_decay), ("alpha", layer.alpha, i_decay)):
        exact = 1.0 - dec / DECAY_UNITY
        if abs(exact - val) > 1e-9:
            notes.append(f"{layer.name}: {what} {val:.6g} quantised to {exact:.6g} (12-bit decay)")
    return QuantLayer(layer, w_int, rec_int, b_int, vth, i_decay, v_decay, scale, clipped), notes


def input_bits_for(inputs: np.ndarray | None) -> int:
    """Bits a graded input spike needs: 0 for binary spike trains."""
    if inputs is None:
        return 0
    mx = float(np.max(inputs)) if np.size(inputs) else 0.0
    if mx <= 1:
        return 0
    return int(np.ceil(np.log2(mx + 1)))


def quantize(graph: LayerGraph, *, input_bits: int = 0, weight_percentile: float = 100.0) -> QuantNet:
    """Quantise every layer of ``graph``; the single source of the chip's integer parameters."""
    layers, notes = [], []
    for layer in graph.layers:
        ql, n = quantize_layer(layer, weight_percentile)
        layers.append(ql)
        notes += n
    net = QuantNet(graph.input_shape, layers, input_bits, notes)
    if net.clipped:
        warnings.warn(f"Loihi quantisation clipped {net.clipped} weights/biases: " +
                      "; ".join(n for n in notes if "clipped" in n), stacklevel=2)
    return net
