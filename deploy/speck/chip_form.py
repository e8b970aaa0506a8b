"""Speck's chip form of a network and the chip's per-layer limits.

A Speck (DYNAP-CNN) core computes one *layer*: a square convolution, a layer of
integrate-and-fire neurons with reset to zero, and optional sum pooling of the output spikes
on the way to the next core. A dense layer is a convolution whose kernel covers the whole
input (``sinabs.backend.dynapcnn.dynapcnn_layer.convert_linear_to_conv``). ``ChipForm`` is
that list of layers with float parameters normalised to threshold 1, before quantisation.

The limits (kernel size, stride, padding, pooling, channels, input and output map sizes)
come from the chip's profile ``hw_profiles/speck.toml`` (``[limits.*]``); ``check_limits``
raises one UnsupportedNodeError naming the layer and the limit it breaks.

Neuron conventions (``ChipForm.reset_mode``, ``spikes_per_step``, ``membrane_floor``) say how
the network's producer meant its IF neurons; the defaults are snntorch's (reset to zero, one
spike a step, no floor), sinabs-made graphs use subtract / multi / -1.0. They are honoured by
``quantize`` and ``simulate`` through sinabs' own activation classes. The threshold test
(``fire_at_threshold``, see ``fires_at_threshold``) defaults to the spike mode's: ``"single"``
the strict ``v > threshold`` of snntorch-trained neurons (emulated on the chip's
``v >= threshold``), ``"multi"`` sinabs' ``MultiSpike``, ``v >= threshold`` (floor(v / threshold)
spikes a step), which has no strict form.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from spikeport.errors import ConfigError, UnsupportedNodeError
from spikeport.hw_profiles import Profile

Shape3 = tuple[int, int, int]

RESET_MODES = ("zero", "subtract")      # sinabs MembraneReset / MembraneSubtract
SPIKE_MODES = ("single", "multi")       # sinabs SingleSpike / MultiSpike


@dataclass
class ChipLayer:
    """One Speck core's worth of network: conv -> IAF (threshold 1, reset to 0) -> sum pool."""

    name: str                 # NIR node of the weights (conv1, fc1, ...): the name used in every count
    kind: str                 # "conv" or "dense" (a dense layer runs as a full-size convolution)
    neuron: str               # NIR node of the neurons (lif1, ...)
    weight: torch.Tensor      # [C_out, C_in, k, k] float32, scaled so that the threshold is 1
    bias: torch.Tensor        # [C_out] float32, in the same units (includes a leak turned into a bias)
    stride: tuple[int, int]
    padding: tuple[int, int]
    in_shape: Shape3          # (C, H, W) of the events entering the core
    out_shape: Shape3         # (C, H, W) of the neurons
    pool: int = 1             # sum pooling of the output spikes (1: none)
    leak_bias: bool = False   # bias stands for (or includes) a leak: an approximation
    nodes: list[str] = field(default_factory=list)  # every NIR node folded into this layer

    @property
    def kernel_size(self) -> int:
        return int(self.weight.shape[-1])

    @property
    def pooled_shape(self) -> Shape3:
        c, h, w = self.out_shape
        return (c, h // self.pool, w // self.pool)

    @property
    def neurons(self) -> int:
        c, h, w = self.out_shape
        return c * h * w


@dataclass
class OutputTap:
    """A NIR Output node fed by a layer's spikes (after its pooling when ``pooled``)."""

    name: str
    layer: int
    pooled: bool
    shape: tuple[int, ...]    # the NIR shape of the spikes (e.g. (10,) for a dense layer)


@dataclass
class ChipForm:
    input_shape: Shape3
    input_pool: int           # sum pooling of the input events (Speck's DVS layer pools 1, 2 or 4)
    layers: list[ChipLayer]
    outputs: list[OutputTap]
    nir_input_shape: tuple[int, ...]  # the input as NIR describes it (e.g. (700,) for audio)
    approximations: list[str] = field(default_factory=list)
    reset_mode: str = "zero"          # "zero" | "subtract" (the threshold) after a spike
    spikes_per_step: str = "single"   # "single" | "multi" (floor(v / threshold) spikes a step)
    membrane_floor: float | None = None  # lower bound of v in threshold units (-1.0); None: chip's 16-bit minimum
    fire_at_threshold: bool | None = None  # v >= threshold (sinabs) / v > threshold (snntorch); None: by spike mode

    def __post_init__(self) -> None:
        check_neuron_options(self)


def fires_at_threshold(form: ChipForm) -> bool:
    """True: the neurons spike at v >= threshold (sinabs); False: at v > threshold (snntorch)."""
    if form.fire_at_threshold is None:
        return form.spikes_per_step == "multi"
    return form.fire_at_threshold


def check_neuron_options(form: ChipForm) -> None:
    """ConfigError naming the field when a neuron convention has a value Speck cannot run."""
    if form.reset_mode not in RESET_MODES:
        raise ConfigError(f"ChipForm.reset_mode {form.reset_mode!r}: expected one of {', '.join(RESET_MODES)}")
    if form.spikes_per_step not in SPIKE_MODES:
        raise ConfigError(f"ChipForm.spikes_per_step {form.spikes_per_step!r}: expected one of "
                          f"{', '.join(SPIKE_MODES)}")
    floor = form.membrane_floor
    if floor is not None:
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not math.isfinite(floor) or floor > 0:
            raise ConfigError(f"ChipForm.membrane_floor {floor!r}: expected None or a finite number <= 0 "
                              "(threshold units, e.g. -1.0)")
    if form.fire_at_threshold not in (None, True, False):
        raise ConfigError(f"ChipForm.fire_at_threshold {form.fire_at_threshold!r}: expected None, True or False")
    if form.fire_at_threshold is False and form.spikes_per_step == "multi":
        raise ConfigError("ChipForm.fire_at_threshold False with spikes_per_step 'multi': sinabs' MultiSpike "
                          "spikes at v >= threshold; a strict v > threshold exists for one spike a step only")


@dataclass(frozen=True)
class SpeckLimits:
    cores: int
    kernel_memory: tuple[int, ...]   # entries per core
    neuron_memory: tuple[int, ...]
    bias_memory: tuple[int, ...]
    max_kernel_size: int
    strides: tuple[int, ...]
    max_padding: int
    pooling: tuple[int, ...]
    max_channels: int
    max_input_size: int
    max_output_size: int             # a layer's neuron map (before pooling), per side
    max_input_channels: int          # channels entering one layer
    destinations: int
    weight_bits: int
    state_bits: int

    @classmethod
    def from_profile(cls, profile: Profile) -> "SpeckLimits":
        def scalar(key: str) -> int:
            return int(profile.figure("limits", key).si())

        def many(key: str) -> tuple[int, ...]:
            return tuple(int(round(v)) for v in profile.figure("limits", key).si_list())

        limits = cls(cores=scalar("cores"), kernel_memory=many("kernel_memory"),
                     neuron_memory=many("neuron_memory"), bias_memory=many("bias_memory"),
                     max_kernel_size=scalar("max_kernel_size"), strides=many("strides"),
                     max_padding=scalar("max_padding"), pooling=many("pooling"),
                     max_channels=scalar("max_channels"), max_input_size=scalar("max_input_size"),
                     max_output_size=scalar("max_output_size"), max_input_channels=scalar("max_input_channels"),
                     destinations=scalar("destinations"), weight_bits=scalar("weight_bits"),
                     state_bits=scalar("state_bits"))
        for key in ("kernel_memory", "neuron_memory", "bias_memory"):
            if len(getattr(limits, key)) != limits.cores:
                raise ConfigError(f"{profile.path or profile.name}: limits.{key} lists "
                                  f"{len(getattr(limits, key))} cores, limits.cores is {limits.cores}")
        return limits


def check_limits(form: ChipForm, limits: SpeckLimits) -> None:
    """Raise UnsupportedNodeError for the first layer that breaks one of Speck's layer limits
    (and for an output the chip would read differently from the simulation)."""
    check_neuron_options(form)
    c, h, w = form.input_shape
    if max(h, w) > limits.max_input_size:
        raise UnsupportedNodeError(f"input: {h}x{w} is larger than Speck's input limit of "
                                   f"{limits.max_input_size}x{limits.max_input_size}")
    if c > limits.max_channels:
        raise UnsupportedNodeError(f"input: {c} channels, Speck allows at most {limits.max_channels}")
    if form.input_pool not in limits.pooling:
        raise UnsupportedNodeError(f"input pooling {form.input_pool}: Speck pools by "
                                   f"{', '.join(map(str, limits.pooling))} only")
    for layer in form.layers:
        k = layer.weight.shape[-2:]
        where = f"layer '{layer.name}'"
        if k[0] != k[1]:
            raise UnsupportedNodeError(f"{where}: kernel {k[0]}x{k[1]} is not square; Speck kernels are square"
                                       + (" (a dense layer needs a square input)" if layer.kind == "dense" else ""))
        if k[0] > limits.max_kernel_size:
            raise UnsupportedNodeError(f"{where}: kernel {k[0]}x{k[1]} is larger than Speck's "
                                       f"{limits.max_kernel_size}x{limits.max_kernel_size} limit"
                                       + (" (a dense layer's kernel is its whole input)" if layer.kind == "dense" else ""))
        for s in layer.stride:
            if s not in limits.strides:
                raise UnsupportedNodeError(f"{where}: stride {layer.stride[0]}x{layer.stride[1]}; Speck "
                                           f"strides are {', '.join(map(str, limits.strides))}")
        if max(layer.padding) > limits.max_padding:
            raise UnsupportedNodeError(f"{where}: padding {layer.padding[0]}x{layer.padding[1]} is over "
                                       f"Speck's limit of {limits.max_padding}")
        for name, ch in (("input", layer.in_shape[0]), ("output", layer.out_shape[0])):
            if ch > limits.max_channels:
                raise UnsupportedNodeError(f"{where}: {ch} {name} channels, Speck allows at most "
                                           f"{limits.max_channels}")
        if layer.in_shape[0] > limits.max_input_channels:
            raise UnsupportedNodeError(f"{where}: {layer.in_shape[0]} input channels, a Speck layer takes at most "
                                       f"{limits.max_input_channels}")
        _, oh, ow = layer.out_shape
        if max(oh, ow) > limits.max_output_size:
            raise UnsupportedNodeError(f"{where}: output feature map {oh}x{ow} is larger than Speck's "
                                       f"{limits.max_output_size}x{limits.max_output_size} limit")
        if layer.pool not in limits.pooling:
            raise UnsupportedNodeError(f"layer '{layer.neuron}': sum pooling {layer.pool}x{layer.pool}; Speck "
                                       f"pools by {', '.join(map(str, limits.pooling))} only")
    for i, layer in enumerate(form.layers):
        # The next core, and a readout to the host, each take one of a layer's destinations.
        used = (1 if i + 1 < len(form.layers) else 0) + sum(1 for t in form.outputs if t.layer == i)
        if used > limits.destinations:
            raise UnsupportedNodeError(f"layer '{layer.neuron}' sends to {used} destinations; a Speck core has "
                                       f"{limits.destinations}")
    check_output_taps(form)


def check_output_taps(form: ChipForm) -> None:
    """A tap after a layer's pooling cannot be read as simulated: Speck's monitor reads a layer's
    spikes before the pooling on the way to the next core (sinabs ``monitor_layers`` warns that
    the pooling is not reflected), so refuse it rather than report a readout the chip lacks."""
    for tap in form.outputs:
        layer = form.layers[tap.layer]
        if tap.pooled and layer.pool > 1:
            raise UnsupportedNodeError(
                f"output '{tap.name}' reads layer '{layer.neuron}' after its {layer.pool}x{layer.pool} sum pooling; "
                "Speck's monitor reads a layer's spikes before pooling, so the chip would not give these spikes "
                f"(read '{layer.neuron}' itself and pool on the host)")
