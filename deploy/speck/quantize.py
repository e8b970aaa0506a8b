"""Speck's number formats: 8-bit weights and biases, 16-bit neuron states, one scale a layer.

The scale of a layer is sinabs' own choice (``sinabs.backend.dynapcnn.discretize``,
``determine_discretization_scale``): the largest factor that keeps weights and biases within 8
bits and the threshold within 16 bits; weights, bias and threshold are multiplied by it and
rounded, so the layer computes the same comparisons at integer resolution.

Choices that differ from ``discretize_conv_spike_``, with reasons:

- the lower state bound: ``ChipForm.membrane_floor`` (threshold units) times the scale, or the
  chip's ``-2**15`` when it is None (the trained network has no lower bound, so the widest bound
  the state format allows is kept);
- for neurons that fire on ``v > threshold`` (snntorch; ``fires_at_threshold`` False) the
  threshold is ``floor(scale) + 1``: Speck's neurons as modelled by sinabs fire on
  ``v >= threshold`` (``SingleSpike``); on integer states both are the same test with this
  threshold;
- for neurons that fire on ``v >= threshold`` (sinabs' ``SingleSpike`` / ``MultiSpike``) the
  scale is made an integer and the threshold equals it: the test is then exact on integer states, and a
  subtracting reset removes exactly what the float network removes (1 threshold). When the
  layer's weights and biases lie on a grid ``1/d`` (a network made with integer weights and an
  integer threshold, as sinabs-made graphs are: ``w = W / threshold``), the scale is the largest
  multiple of ``d`` that fits, so the integer layer is the original one times a whole number and
  computes exactly what it computes.

``weight_quantile < 1`` sets the scale from that quantile of ``|w|`` instead of the maximum,
buying resolution for the bulk of the weights at the cost of clipping the largest ones; the
number of clipped weights is reported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from spikeport.deploy.speck import sinabs_backend
from spikeport.deploy.speck.chip_form import ChipForm, SpeckLimits, check_neuron_options, fires_at_threshold
from spikeport.errors import ConfigError


@dataclass
class QuantLayer:
    name: str
    scale: float              # integer units per float unit (float threshold 1 -> ~scale)
    weight: torch.Tensor      # int32 [C_out, C_in, k, k]
    bias: torch.Tensor        # int32 [C_out]
    threshold: int            # threshold_high
    min_v_mem: int            # threshold_low (state floor)
    clipped_weights: int = 0
    clipped_biases: int = 0
    zeroed_biases: int = 0    # non-zero float biases that round to 0


@dataclass
class QuantisedForm:
    form: ChipForm
    layers: list[QuantLayer]
    approximations: list[str] = field(default_factory=list)

    @property
    def clipped_weights(self) -> int:
        return sum(q.clipped_weights + q.clipped_biases for q in self.layers)


def _scale(values: torch.Tensor, bits: int) -> float:
    """sinabs' scale for ``values`` at ``bits`` precision (inf when all are zero)."""
    if values.numel() == 0 or float(values.abs().max()) == 0.0:
        return math.inf
    discretize = sinabs_backend.load("discretize")
    return float(discretize.determine_discretization_scale(values.double(), bits))


def _layer_scale(w: torch.Tensor, bias: torch.Tensor, limits: SpeckLimits, weight_quantile: float) -> float:
    """The largest scale keeping weights and biases in 8 bits and the threshold (+1) in 16."""
    if weight_quantile < 1.0 and w.numel() > 1:
        q = float(torch.quantile(w.abs().flatten(), weight_quantile))
        scale_w = _scale(torch.tensor([-q, q], dtype=torch.float64), limits.weight_bits) if q > 0 else math.inf
    else:
        scale_w = _scale(w, limits.weight_bits)
    scale_b = _scale(bias, limits.weight_bits)
    scale_t = _scale(torch.tensor([1.0], dtype=torch.float64), limits.state_bits) - 1.0  # room for the +1
    return min(scale_w, scale_b, scale_t)


GRID_VALUES = 1024     # distinct values up to which a layer is searched for an exact integer grid
GRID_TOLERANCE = 1e-3  # integer units: float32 parameters w = W / threshold miss W by ~1e-5


def _grid(values: torch.Tensor, max_scale: float) -> int | None:
    """The smallest integer d <= max_scale with every value * d an integer, or None."""
    uniq = torch.unique(values.double().abs().flatten())
    uniq = uniq[uniq > 0]
    if uniq.numel() == 0 or uniq.numel() > GRID_VALUES or max_scale < 1:
        return None
    # Narrow the candidates value by value: a random value leaves ~0.2 % of them, so this costs
    # about one pass over the candidates, not one per value.
    cand = torch.arange(1, int(min(max_scale, 2 ** 15)) + 1, dtype=torch.float64)
    for v in uniq.flip(0):
        x = cand * v
        cand = cand[(x - x.round()).abs() <= GRID_TOLERANCE]
        if cand.numel() == 0:
            return None
    return int(cand[0])


def _threshold(scale: float, at_threshold: bool, params: torch.Tensor) -> tuple[float, int]:
    """(scale, threshold_high) for the neurons' threshold test (see the module notes)."""
    if not at_threshold:
        return scale, math.floor(scale) + 1  # <= 2**15 - 1: the scale leaves room for the +1
    if scale < 1.0:
        return scale, 1
    # 1e-9: a scale that is an integer up to rounding (127 / (127 / 8)) stays that integer
    top = math.floor(scale * (1 + 1e-9))
    d = _grid(params, top)
    whole = float(top // d * d) if d is not None else float(top)
    return whole, int(whole)


def _floor(form: ChipForm, scale: float, state_min: int) -> tuple[int, bool]:
    """(threshold_low, clamped): the membrane floor in integer units, within the 16-bit state."""
    if form.membrane_floor is None:
        return state_min, False
    low = round(form.membrane_floor * scale)
    return max(low, state_min), low < state_min


def quantise(form: ChipForm, limits: SpeckLimits, weight_quantile: float = 1.0) -> QuantisedForm:
    if not 0.5 <= weight_quantile <= 1.0:
        raise ConfigError(f"weight_quantile {weight_quantile} outside [0.5, 1]")
    check_neuron_options(form)
    w_lo, w_hi = -(2 ** (limits.weight_bits - 1)), 2 ** (limits.weight_bits - 1) - 1
    s_lo = -(2 ** (limits.state_bits - 1))
    out = QuantisedForm(form=form, layers=[])
    for layer in form.layers:
        w = layer.weight.double()
        scale, threshold = _threshold(_layer_scale(w, layer.bias.double(), limits, weight_quantile),
                                      fires_at_threshold(form), torch.cat([w.flatten(), layer.bias.double()]))
        w_scaled = torch.round(w * scale)
        b_scaled = torch.round(layer.bias.double() * scale)
        clipped_w = int(((w_scaled < w_lo) | (w_scaled > w_hi)).sum())
        clipped_b = int(((b_scaled < w_lo) | (b_scaled > w_hi)).sum())  # biases are 8-bit too (sinabs)
        b_int = b_scaled.clamp(w_lo, w_hi).to(torch.int32)
        zeroed = int(((layer.bias != 0) & (b_int == 0)).sum())
        min_v_mem, floor_clamped = _floor(form, scale, s_lo)
        out.layers.append(QuantLayer(name=layer.name, scale=scale, weight=w_scaled.clamp(w_lo, w_hi).to(torch.int32),
                                     bias=b_int, threshold=threshold, min_v_mem=min_v_mem, clipped_weights=clipped_w,
                                     clipped_biases=clipped_b, zeroed_biases=zeroed))
        if zeroed and layer.leak_bias:
            out.approximations.append(f"{layer.neuron}: the leak bias rounds to 0 in {zeroed} of "
                                      f"{layer.bias.numel()} channels at 8 bits")
        if floor_clamped:
            out.approximations.append(f"{layer.neuron}: membrane floor {form.membrane_floor} thresholds is below the "
                                      f"16-bit state; clamped to {s_lo}")
    if form.reset_mode == "subtract" and not fires_at_threshold(form):
        out.approximations.append("reset by subtraction with the strict v > threshold test: each spike subtracts "
                                  "threshold_high = floor(scale) + 1, up to 1 integer unit more than the float "
                                  "network's threshold")
    return out
