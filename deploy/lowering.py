"""The one NIR lowering every chip target consumes: a NIR graph -> an ordered chain of layers.

A lowered *layer* is one synapse block (a convolution or a dense matrix, optionally pooling
before it and a recurrent dense block from its own neurons) followed by one population of
neurons, in discrete time with the graph's dt::

    i[t] = alpha * i[t-1] + D_out[W pool(x[t - delay])] + W_rec s[t-1] + current_bias   (D_out: delay_out)
    v[t] = beta * v[t-1] + i[t] + bias            (reset: v = 0, or v -= threshold, where it spiked)
    s[t] = v[t] > threshold                       (no spikes for a membrane readout: LI, CubaLI)

Here, once: graph checks, subgraph inlining (snntorch writes recurrent layers as subgraphs),
recurrence, pooling (kept as ``pool``; ``fold_pooling`` folds it exactly into the weights for
targets without pooling units), padding, and the discretisation of NIR's continuous-time
neurons (``spikeport.export.neurons.discrete_neuron``). Per-neuron input gains and thresholds
are folded into per-output-channel weight scales (exact: the neuron is linear below
threshold), so each layer has one threshold. Targets declare which lowered features they run
(``LayerFeatures``) and reject the rest by name; nothing target-specific lives here.

What the NIR file does not carry (the producer's reset, spikes per step, membrane floor) comes
in as ``Conventions``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import nir
import numpy as np
import torch
import torch.nn.functional as F

from spikeport.errors import ConfigError, UnsupportedNodeError
from spikeport.export.neurons import discrete_neuron

NEURON_TYPES = (nir.LIF, nir.IF, nir.CubaLIF, nir.LI, nir.CubaLI)
SPIKING_TYPES = (nir.LIF, nir.IF, nir.CubaLIF)
WEIGHT_TYPES = (nir.Conv2d, nir.Conv1d, nir.Affine, nir.Linear)
POOL_TYPES = (nir.SumPool2d, nir.AvgPool2d)
PASS_TYPES = (nir.Flatten, nir.Scale, nir.Delay) + POOL_TYPES
LOWERED_TYPES = (nir.Input, nir.Output) + NEURON_TYPES + WEIGHT_TYPES + PASS_TYPES

Reset = Literal["zero", "subtract"]
SpikesPerStep = Literal["single", "multi"]


@dataclass(frozen=True)
class Conventions:
    """How the producing tool simulates its neurons, which a NIR file does not say.

    NIR's literal reading (and snntorch with ``reset_mechanism="zero"``, Lava, norse): one
    spike per step at ``v > threshold``, reset to zero, no floor. sinabs: several spikes per
    step (``MultiSpike``), reset by subtraction, membrane floor at ``-threshold``, spike at
    ``v >= threshold``.
    """

    reset: Reset = "zero"
    spikes_per_step: SpikesPerStep = "single"
    membrane_floor: float | None = None   # in threshold units (-1.0: sinabs' IAF); None: none
    fire_at_threshold: bool = False       # spike at v >= threshold (sinabs) instead of v > threshold

    def __post_init__(self) -> None:
        if self.reset not in ("zero", "subtract"):
            raise ConfigError(f"reset mode '{self.reset}' is not one of zero, subtract")
        if self.spikes_per_step not in ("single", "multi"):
            raise ConfigError(f"spikes per step '{self.spikes_per_step}' is not one of single, multi")
        if self.membrane_floor is not None and self.membrane_floor > 0:
            raise ConfigError(f"membrane floor {self.membrane_floor} must be <= 0 (threshold units)")

    def to_dict(self) -> dict:
        return {"reset": self.reset, "spikes_per_step": self.spikes_per_step,
                "membrane_floor": self.membrane_floor, "fire_at_threshold": self.fire_at_threshold}


@dataclass(frozen=True)
class Pool:
    """Pooling of the events entering a layer's synapses: sum over kernel windows, times ``scale``
    (1 for SumPool2d, 1/k^2 for AvgPool2d)."""

    node: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    scale: float

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        # a window sum as mean x window size (exact for spike counts and power-of-two windows);
        # avg_pool2d's divisor_override does not survive the ONNX export of the ANN twin
        k = self.kernel[0] * self.kernel[1]
        return F.avg_pool2d(x, self.kernel, self.stride, self.padding, count_include_pad=True) * (k * self.scale)

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        c, h, w = shape
        k, s, p = self.kernel, self.stride, self.padding
        return (c, (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1)


@dataclass
class Layer:
    """One synapse block + neuron population, float parameters in discrete time."""

    name: str                      # the neuron node's name (lif1, ...): the name every count uses
    synapse: str                   # the weight node's name (conv1, fc1, ...)
    kind: str                      # "conv" | "dense"
    input_shape: tuple[int, ...]   # (C, H, W) or (N,) of the events reaching the layer (before pooling)
    output_shape: tuple[int, ...]  # (C, H, W) or (N,)
    weight: np.ndarray             # conv: [Cout, Cin, kH, kW]; dense: [out, in]; input gain folded in
    bias: np.ndarray | None        # [Cout] or [out], per step into the membrane, gain folded in
    beta: float                    # voltage decay per step (1.0 = integrate-and-fire)
    alpha: float                   # current decay per step (0.0 = no current memory)
    threshold: float               # inf for a membrane readout
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    flatten_before: bool = False   # the input is flattened (C, H, W) -> N in torch order first
    rec_weight: np.ndarray | None = None  # [out, out]: own spikes of the previous step
    rec_synapse: str | None = None
    notes: list[str] = field(default_factory=list)  # approximations made for this layer
    neuron_type: str = "LIF"       # the NIR node type (IF, LIF, CubaLIF, LI, CubaLI)
    readout: str = "spikes"        # "spikes" | "membrane" (LI / CubaLI: predictions from v)
    current_bias: np.ndarray | None = None  # [Cout] per step into the current (CubaLIF with alpha > 0)
    pool: Pool | None = None       # pooling before the synapses (None once folded)
    delay: np.ndarray | None = None  # int steps per input element (NIR Delay before the synapses)
    delay_out: np.ndarray | None = None  # int steps per output element (NIR Delay between weights and neurons)
    nodes: list[str] = field(default_factory=list)  # every NIR node lowered into this layer

    @property
    def neurons(self) -> int:
        return int(np.prod(self.output_shape))

    @property
    def spiking(self) -> bool:
        return self.readout == "spikes"

    @property
    def synaptic_input_shape(self) -> tuple[int, ...]:
        """Shape of what the weights see: after pooling, before flattening."""
        return self.pool.out_shape(self.input_shape) if self.pool else self.input_shape


@dataclass(frozen=True)
class Tap:
    """A NIR Output node and the layer whose output it reads (after its trailing Flatten)."""

    name: str
    layer: int
    shape: tuple[int, ...]
    pooled: bool = False           # read after a pooling node that follows the layer


@dataclass
class LayerGraph:
    input_name: str
    output_name: str               # the first tap's Output node
    input_shape: tuple[int, ...]
    layers: list[Layer]
    taps: list[Tap] = field(default_factory=list)
    conventions: Conventions = field(default_factory=Conventions)
    dt: float = 1.0

    @property
    def approximations(self) -> list[str]:
        return [n for layer in self.layers for n in layer.notes]


@dataclass(frozen=True)
class LayerFeatures:
    """What a target runs of the lowered form; anything else is rejected with the layer's name."""

    target: str
    neuron_types: tuple[str, ...]
    current_memory: bool           # alpha > 0
    recurrence: bool
    delays: bool
    membrane_readout: bool
    pooling: bool                  # native pooling units (else pooling is folded into weights)
    multiple_taps: bool
    why_not: dict[str, str] = field(default_factory=dict)  # feature -> the chip's reason


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _pair(x, what: str = "value", name: str = "?") -> tuple[int, int]:
    a = np.asarray(x).reshape(-1)
    if a.size not in (1, 2):
        raise UnsupportedNodeError(f"NIR node '{name}': {what} {x!r} is not a 2-d value")
    a = a.astype(int)
    return (int(a[0]), int(a[0])) if a.size == 1 else (int(a[0]), int(a[1]))


# ---------------------------------------------------------------- graph structure -----------
def inline_subgraphs(graph: nir.NIRGraph, prefix: str = "") -> tuple[dict[str, nir.NIRNode], list[tuple[str, str]]]:
    """Flatten nested NIRGraph nodes (snntorch writes recurrent layers as subgraphs) into one level."""
    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    entry: dict[str, list[str]] = {}   # subgraph name -> nodes fed by its Input
    exit_: dict[str, list[str]] = {}   # subgraph name -> nodes feeding its Output
    for name, node in graph.nodes.items():
        full = f"{prefix}{name}"
        if isinstance(node, nir.NIRGraph):
            sub_nodes, sub_edges = inline_subgraphs(node, prefix=f"{full}.")
            ins = {f"{full}.{n}" for n, v in node.nodes.items() if isinstance(v, nir.Input)}
            outs = {f"{full}.{n}" for n, v in node.nodes.items() if isinstance(v, nir.Output)}
            entry[full] = [d for s, d in sub_edges if s in ins]
            exit_[full] = [s for s, d in sub_edges if d in outs]
            nodes.update({k: v for k, v in sub_nodes.items() if k not in ins | outs})
            edges += [(s, d) for s, d in sub_edges if s not in ins and d not in outs]
        else:
            nodes[full] = node
    for src, dst in graph.edges:
        src, dst = f"{prefix}{src}", f"{prefix}{dst}"
        for s in exit_.get(src, [src]):
            for d in entry.get(dst, [dst]):
                edges.append((s, d))
    return nodes, edges


def _shape_of(node: nir.NIRNode, key: str) -> tuple[int, ...]:
    types = node.input_type if key == "input" else node.output_type
    value = types.get(key) if key in types else next(iter(types.values()))
    return tuple(int(v) for v in np.asarray(value).reshape(-1))


def _chain(nodes: dict[str, nir.NIRNode], edges: list[tuple[str, str]]
           ) -> tuple[str, list[str], dict[str, list[str]], dict[str, str]]:
    """(input, chain order without Input/Output, {node: Output nodes it feeds}, {neuron: recurrent weight})."""
    for name, node in nodes.items():
        if not isinstance(node, LOWERED_TYPES):
            raise UnsupportedNodeError(
                f"NIR node '{name}' ({type(node).__name__}) has no chip form (lowered: Conv1d, Conv2d, Affine, "
                f"Linear, Scale, Flatten, SumPool2d, AvgPool2d, Delay, IF, LIF, CubaLIF, LI, CubaLI)")
    inputs = [n for n, v in nodes.items() if isinstance(v, nir.Input)]
    outputs = [n for n, v in nodes.items() if isinstance(v, nir.Output)]
    if len(inputs) != 1:
        raise UnsupportedNodeError(f"NIR graph has {len(inputs)} Input nodes ({', '.join(inputs) or 'none'}); "
                                   f"a chip graph takes exactly one")
    if not outputs:
        raise UnsupportedNodeError("NIR graph has no Output node")
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    pred: dict[str, list[str]] = {n: [] for n in nodes}
    for s, d in edges:
        if s not in nodes or d not in nodes:
            raise UnsupportedNodeError(f"NIR edge ({s} -> {d}) names a node that is not in the graph")
        succ[s].append(d)
        pred[d].append(s)
    # Recurrent dense blocks: neuron -> weight -> same neuron.
    recurrent: dict[str, str] = {}
    for name, node in nodes.items():
        if isinstance(node, (nir.Affine, nir.Linear)) and len(pred[name]) == 1 and len(succ[name]) == 1 \
                and pred[name][0] == succ[name][0] and isinstance(nodes[pred[name][0]], NEURON_TYPES):
            recurrent[pred[name][0]] = name
    for neuron, rec in recurrent.items():
        succ[neuron].remove(rec)
        pred[neuron].remove(rec)
    order: list[str] = []
    taps: dict[str, list[str]] = {}
    cur, seen = inputs[0], {inputs[0]}
    while True:
        outs = [s for s in succ[cur] if isinstance(nodes[s], nir.Output)]
        nxt = [s for s in succ[cur] if not isinstance(nodes[s], nir.Output)]
        if outs:
            taps[cur] = outs
        if len(nxt) > 1:
            raise UnsupportedNodeError(f"NIR node '{cur}' feeds {len(nxt)} nodes ({', '.join(nxt)}); chip targets "
                                       f"run one chain of layers (no branches)")
        if not nxt:
            break
        nxt_name = nxt[0]
        if nxt_name in seen:
            layer = next((n for n in [nxt_name, *order] if isinstance(nodes[n], NEURON_TYPES)), nxt_name)
            raise UnsupportedNodeError(f"NIR graph has a cycle through node '{nxt_name}' (recurrent layer '{layer}') "
                                       f"that is not a recurrent dense block (neuron -> Affine/Linear -> same neuron)")
        if len(pred[nxt_name]) != 1:
            raise UnsupportedNodeError(f"NIR node '{nxt_name}' sums {len(pred[nxt_name])} inputs "
                                       f"({', '.join(pred[nxt_name])}); chip targets run one chain of layers "
                                       f"(no merges)")
        seen.add(nxt_name)
        order.append(nxt_name)
        cur = nxt_name
    reached = seen | set(recurrent.values()) | {o for v in taps.values() for o in v}
    left = [n for n in nodes if n not in reached]
    if left:
        raise UnsupportedNodeError(f"NIR nodes {', '.join(sorted(left))} are not on the path from the input "
                                   f"(a cycle over several layers, or a second branch)")
    return inputs[0], order, taps, recurrent


# ---------------------------------------------------------------- one layer -----------------
def _per_channel(values: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray | None:
    """Per output-channel values if ``values`` (per neuron) only vary along the channel axis."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == out_shape[0] and v.size != int(np.prod(out_shape)):
        v = v.reshape((out_shape[0],) + (1,) * (len(out_shape) - 1))
    try:
        v = np.broadcast_to(v, out_shape)
    except ValueError:
        return None
    per_ch = v.reshape(out_shape[0], -1)
    if np.allclose(per_ch, per_ch[:, :1], rtol=1e-9, atol=0):
        return per_ch[:, 0].copy()
    return None


def _uniform(name: str, what: str, values: np.ndarray, notes: list[str]) -> float:
    v = np.asarray(values).reshape(-1)
    if np.allclose(v, v[0], rtol=1e-6, atol=0):
        return float(v[0])
    # Loihi and Speck share one decay per layer; the median stands in, and it is said.
    mean = float(np.median(v))
    notes.append(f"{name}: {what} differs across neurons (range {v.min():.4g}-{v.max():.4g}); the median {mean:.4g} is used")
    return mean


def _conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _pool(name: str, node: nir.NIRNode) -> Pool:
    k = _pair(node.kernel_size, "kernel_size", name)
    s = _pair(node.stride, "stride", name) if node.stride is not None else k
    p = _pair(node.padding, "padding", name) if getattr(node, "padding", None) is not None else (0, 0)
    scale = 1.0 / (k[0] * k[1]) if isinstance(node, nir.AvgPool2d) else 1.0
    return Pool(name, k, s, p, scale)


def _conv_padding(name: str, node: nir.NIRNode, kernel: tuple[int, ...], stride, dilation) -> tuple[int, ...]:
    if isinstance(node.padding, str):
        if node.padding == "valid":
            return (0,) * len(kernel)
        if node.padding == "same" and all(s == 1 for s in stride) and all(k % 2 == 1 for k in kernel):
            return tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
        raise UnsupportedNodeError(f"NIR node '{name}': padding '{node.padding}' with kernel {tuple(kernel)} and "
                                   f"stride {tuple(stride)}; only symmetric padding is lowered")
    return tuple(np.broadcast_to(np.asarray(node.padding).reshape(-1), (len(kernel),)).astype(int).tolist())


def _synapse(name: str, node: nir.NIRNode, shape: tuple[int, ...], flatten: bool
             ) -> tuple[str, np.ndarray, np.ndarray | None, tuple[int, ...], dict]:
    """(kind, weight, bias, output shape, conv geometry) of a weight node on inputs of ``shape``
    (already pooled). Conv1d runs as a Conv2d on an input of height 1."""
    if isinstance(node, (nir.Conv2d, nir.Conv1d)):
        if flatten:
            raise UnsupportedNodeError(f"NIR node '{name}': convolution after Flatten")
        w = _arr(node.weight)
        one_d = isinstance(node, nir.Conv1d)
        if one_d:
            if len(shape) != 2:
                raise UnsupportedNodeError(f"NIR node '{name}': Conv1d on a {len(shape)}-d input {shape} (needs C, L)")
            w = w[:, :, None, :]
            shape = (shape[0], 1, shape[1])
            stride = (1, int(np.asarray(node.stride).reshape(-1)[0]))
            dilation = (1, int(np.asarray(node.dilation).reshape(-1)[0]))
            pad = _conv_padding(name, node, (w.shape[3],), (stride[1],), (dilation[1],))
            padding = (0, int(pad[0]))
        else:
            if len(shape) != 3:
                raise UnsupportedNodeError(f"NIR node '{name}': convolution on a {len(shape)}-d input {shape}")
            stride, dilation = _pair(node.stride, "stride", name), _pair(node.dilation, "dilation", name)
            padding = _pair(_conv_padding(name, node, w.shape[2:], stride, dilation), "padding", name)
        groups = int(node.groups)
        if w.shape[1] * groups != shape[0]:
            raise UnsupportedNodeError(f"NIR node '{name}': weight expects {w.shape[1] * groups} input channels, "
                                       f"the input has {shape[0]}")
        out = (w.shape[0], _conv_out(shape[1], w.shape[2], stride[0], padding[0], dilation[0]),
               _conv_out(shape[2], w.shape[3], stride[1], padding[1], dilation[1]))
        if min(out[1:]) < 1:
            raise UnsupportedNodeError(f"NIR node '{name}': kernel {w.shape[2:]} is larger than its padded input {shape}")
        bias = _arr(node.bias).reshape(-1) if node.bias is not None and np.ndim(node.bias) else None
        if one_d:
            out = (out[0], out[2])  # NIR shape (C, L); the chip runs it as (C, 1, L)
        return "conv", w, bias, out, {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups,
                                      "one_d": one_d}
    w = _arr(node.weight)
    n_in = int(np.prod(shape))
    if w.ndim != 2 or w.shape[1] != n_in:
        raise UnsupportedNodeError(f"NIR node '{name}': weight {w.shape} does not take the {n_in} inputs that reach it")
    if len(shape) > 1 and not flatten:
        raise UnsupportedNodeError(f"NIR node '{name}': dense layer on a {shape} input without Flatten")
    bias = _arr(node.bias).reshape(-1) if isinstance(node, nir.Affine) else None
    return "dense", w, bias, (w.shape[0],), {}


def _delay_steps(name: str, node: nir.Delay, dt: float, shape: tuple[int, ...]) -> np.ndarray:
    """A NIR Delay (seconds per element) as whole steps of dt over ``shape``."""
    d = _arr(node.delay)
    steps = np.round(d / dt)
    if np.any(np.abs(steps * dt - d) > 1e-6 * max(dt, 1e-12)) or np.any(steps < 0):
        raise UnsupportedNodeError(f"NIR node '{name}': delays {d.min():g}..{d.max():g} s are not whole "
                                   f"non-negative multiples of dt = {dt:g} s")
    try:
        return np.broadcast_to(steps, shape).astype(np.int64).copy()
    except ValueError:
        raise UnsupportedNodeError(f"NIR node '{name}': {d.size} delays for a layer of shape {list(shape)}") from None


def _make_layer(name: str, node: nir.NIRNode, pending: list[str], nodes: dict, shape: tuple[int, ...],
                dt: float) -> Layer:
    weights = [p for p in pending if isinstance(nodes[p], WEIGHT_TYPES)]
    if len(weights) != 1:
        what = "no weight node" if not weights else f"several weight nodes {weights}"
        raise UnsupportedNodeError(f"NIR node '{name}': {what} before it; each chip layer is exactly one "
                                   f"Conv/Affine/Linear feeding one neuron population")
    wname = weights[0]
    before, after = pending[:pending.index(wname)], pending[pending.index(wname) + 1:]
    flatten, pool, delay, scale_after = False, None, None, None
    in_shape = shape
    for p in before:
        pn = nodes[p]
        if isinstance(pn, nir.Flatten):
            flatten = True
        elif isinstance(pn, POOL_TYPES):
            if flatten or len(shape) != 3:
                raise UnsupportedNodeError(f"NIR node '{p}': pooling after Flatten or on a {len(shape)}-d input")
            if pool is not None:
                raise UnsupportedNodeError(f"NIR node '{p}': two pooling nodes in a row are not lowered")
            pool = _pool(p, pn)
        elif isinstance(pn, nir.Delay):
            delay = _delay_steps(p, pn, dt, in_shape)
        elif isinstance(pn, nir.Scale):
            raise UnsupportedNodeError(f"NIR node '{p}': Scale before the weights of '{wname}' scales inputs "
                                       f"element-wise, which a chip's spikes cannot carry (a Scale after the "
                                       f"weights folds into them)")
    delay_out_node = None
    for p in after:
        if isinstance(nodes[p], nir.Delay) and delay_out_node is None:
            delay_out_node = p
        elif isinstance(nodes[p], nir.Scale):
            if scale_after is not None:
                raise UnsupportedNodeError(f"NIR node '{p}': two Scale nodes after '{wname}'")
            scale_after = p
        else:
            raise UnsupportedNodeError(f"NIR node '{p}' ({type(nodes[p]).__name__}) between weight '{wname}' and "
                                       f"neuron '{name}' is not lowered (pool before the weight layer instead)")
    syn_shape = pool.out_shape(shape) if pool else shape
    kind, w, bias, out_shape, geo = _synapse(wname, nodes[wname], syn_shape, flatten)
    delay_out = _delay_steps(delay_out_node, nodes[delay_out_node], dt, out_shape) if delay_out_node else None
    if scale_after is not None:  # y = s * (W x + b): folds exactly into the weights
        s = _per_channel(_arr(nodes[scale_after].scale), out_shape)
        if s is None:
            raise UnsupportedNodeError(f"NIR node '{scale_after}': scale varies within a channel")
        w = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
        bias = None if bias is None else bias * s
    notes: list[str] = []
    with np.errstate(all="ignore"):
        neuron = discrete_neuron(node, dt, name)
    n_out = int(np.prod(out_shape))
    for what, values in (("input gain", neuron.gain), ("threshold", neuron.threshold)):
        if int(np.size(values)) not in (1, out_shape[0], n_out):
            raise UnsupportedNodeError(f"NIR node '{name}': {np.size(values)} neurons, but '{wname}' gives "
                                       f"{n_out} outputs {out_shape}")
    if not np.all(np.isfinite(neuron.gain)) or not np.all(np.isfinite(neuron.beta)):
        raise UnsupportedNodeError(f"NIR node '{name}': non-finite neuron parameters with dt = {dt:g}")
    if np.any(neuron.v_reset != 0):
        raise UnsupportedNodeError(f"NIR node '{name}': resets to {float(neuron.v_reset.reshape(-1)[0]):g}; chip "
                                   f"neurons reset to 0")
    for what, v in (("voltage", neuron.beta), ("current", neuron.alpha)):
        if np.any(v < 0) or np.any(v > 1):
            raise UnsupportedNodeError(f"NIR node '{name}': {what} time constant shorter than dt = {dt:g} s "
                                       f"(decay per step {float(np.min(v)):.4g} outside [0, 1]); was the right dt given?")
    gain_ch = _per_channel(neuron.gain, out_shape)
    spiking = isinstance(node, SPIKING_TYPES)
    vth_ch = _per_channel(neuron.threshold, out_shape) if spiking else np.ones(out_shape[0])
    if gain_ch is None or vth_ch is None:
        raise UnsupportedNodeError(f"NIR node '{name}': resistance or threshold varies within a channel; chip "
                                   f"layers share one threshold per layer (per channel after folding)")
    if np.any(vth_ch <= 0):
        raise UnsupportedNodeError(f"NIR node '{name}': non-positive threshold")
    if np.any(gain_ch == 0):
        raise UnsupportedNodeError(f"NIR node '{name}': input gain r*dt is 0 for some channels (r or dt wrong?)")
    theta = float(np.max(vth_ch))
    row = gain_ch * theta / vth_ch  # scale on each output channel's inputs
    w = w * row.reshape((-1,) + (1,) * (w.ndim - 1))
    b = np.zeros(out_shape[0]) if bias is None else np.broadcast_to(bias, (out_shape[0],)).astype(np.float64) * row
    leak = _per_channel(neuron.leak, out_shape)
    if leak is None:
        raise UnsupportedNodeError(f"NIR node '{name}': v_leak varies within a channel")
    leak = leak * theta / vth_ch
    beta = _uniform(name, "voltage decay (tau)", neuron.beta, notes)
    alpha = _uniform(name, "current decay (tau_syn)", neuron.alpha, notes)
    current_bias = None
    if alpha > 0 and np.any(b != 0):
        current_bias, b = b, np.zeros_like(b)  # NIR adds an Affine bias to the synaptic current
    b = b + leak
    layer = Layer(name=name, synapse=wname, kind=kind, input_shape=tuple(in_shape), output_shape=tuple(out_shape),
                  weight=w, bias=b if np.any(b != 0) else None, beta=beta, alpha=alpha,
                  threshold=theta if spiking else float("inf"), flatten_before=flatten and kind == "dense",
                  notes=notes, neuron_type=type(node).__name__, readout="spikes" if spiking else "membrane",
                  current_bias=current_bias, pool=pool, delay=delay, delay_out=delay_out,
                  nodes=[*pending, name])
    if kind == "dense" and len(syn_shape) > 1:
        layer.flatten_before = True
    if kind == "conv":
        layer.stride, layer.padding = geo["stride"], geo["padding"]
        layer.dilation, layer.groups = geo["dilation"], geo["groups"]
        if geo["one_d"]:
            layer.notes.append(f"{name}: Conv1d '{wname}' runs as a 2-d convolution of height 1")
    layer._gain = row  # used for a recurrent block onto this layer, removed by lower()
    return layer


# ---------------------------------------------------------------- the lowering --------------
def lower(graph: nir.NIRGraph, dt: float, conventions: Conventions | None = None) -> LayerGraph:
    """Validate ``graph`` and return its layers in order; UnsupportedNodeError names what cannot run.

    ``dt`` (seconds) is the step the graph's continuous-time parameters are discretised with.
    """
    if not (dt > 0 and np.isfinite(dt)):
        raise UnsupportedNodeError(f"dt = {dt!r}: the graph's time step must be a positive number of seconds")
    nodes, edges = inline_subgraphs(graph)
    input_name, order, taps, recurrent = _chain(nodes, edges)
    in_node = nodes[input_name]
    shape = _shape_of(in_node, "input")
    input_shape = shape
    layers: list[Layer] = []
    pending: list[str] = []
    tap_list: list[Tap] = []
    if taps.get(input_name):
        raise UnsupportedNodeError(f"output '{taps[input_name][0]}' reads the input directly; nothing runs on chip")
    for name in order:
        node = nodes[name]
        if not isinstance(node, NEURON_TYPES):
            pending.append(name)
            if taps.get(name):
                trailing = [nodes[p] for p in pending]
                if not layers or any(isinstance(t, WEIGHT_TYPES + (nir.Delay, nir.Scale)) for t in trailing):
                    raise UnsupportedNodeError(
                        f"output '{taps[name][0]}' reads node '{name}', which has no neurons after its weights; "
                        f"chips send spikes only (a non-spiking readout belongs to the host part or an LI node)")
                pooled = any(isinstance(t, POOL_TYPES) for t in trailing)
                out = layers[-1].output_shape
                flat = any(isinstance(t, nir.Flatten) for t in trailing)
                tap_shape = (int(np.prod(out)),) if flat else out
                if pooled:
                    p = _pool(pending[-1], trailing[-1]) if isinstance(trailing[-1], POOL_TYPES) else None
                    tap_shape = p.out_shape(out) if p else tap_shape
                tap_list += [Tap(o, len(layers) - 1, tuple(tap_shape), pooled) for o in taps[name]]
                layers[-1].nodes += [p for p in pending if p not in layers[-1].nodes]
            continue
        layer = _make_layer(name, node, pending, nodes, shape, dt)
        if name in recurrent:
            rec = recurrent[name]
            rw = _arr(nodes[rec].weight)
            if rw.shape != (layer.neurons, layer.neurons) or layer.kind != "dense":
                raise UnsupportedNodeError(f"NIR node '{rec}': recurrent weight {rw.shape} onto '{name}' "
                                           f"({layer.kind}, {layer.neurons} neurons) is not a square dense block")
            if isinstance(nodes[rec], nir.Affine) and np.any(_arr(nodes[rec].bias) != 0):
                extra = _arr(nodes[rec].bias) * layer._gain
                if layer.alpha > 0:
                    layer.current_bias = extra if layer.current_bias is None else layer.current_bias + extra
                else:
                    layer.bias = extra if layer.bias is None else layer.bias + extra
            layer.rec_weight = rw * layer._gain[:, None]
            layer.rec_synapse = rec
            layer.nodes.append(rec)
        del layer._gain
        layers.append(layer)
        shape = layer.output_shape
        pending = []
        tap_list += [Tap(o, len(layers) - 1, tuple(shape)) for o in taps.get(name, [])]
    if pending and pending[-1] not in taps:
        raise UnsupportedNodeError(f"NIR nodes {pending} come after the last neuron layer; the chip emits "
                                   f"spikes only, so the chip part must end in a neuron node")
    if not layers:
        raise UnsupportedNodeError("NIR graph has no neuron layer for the chip to run")
    for layer in layers[:-1]:
        if not layer.spiking:
            raise UnsupportedNodeError(f"NIR node '{layer.name}' ({layer.neuron_type}) is a non-spiking readout but "
                                       f"feeds another layer; only the last layer may be a membrane readout")
    return LayerGraph(input_name, tap_list[0].name, input_shape, layers, tap_list,
                      conventions or Conventions(), dt)


# ---------------------------------------------------------------- transformations -----------
def _fold_pool_into_conv(layer: Layer) -> Layer:
    """pool(k = s, no padding) then conv == one conv on the unpooled map (exact when s divides H, W)."""
    pool = layer.pool
    k, s, p, scale = pool.kernel, pool.stride, pool.padding, pool.scale
    c, h, w = layer.input_shape
    if k != s or p != (0, 0) or h % s[0] or w % s[1] or layer.dilation != (1, 1):
        raise UnsupportedNodeError(
            f"NIR node '{pool.node}': pooling (kernel {k}, stride {s}, padding {p}) on a {h}x{w} map before a "
            f"convolution cannot be folded exactly into it (needs kernel == stride, no padding, size divisible "
            f"by the stride)")
    cout, cin, kh, kw = layer.weight.shape
    fused = np.zeros((cout, cin, kh * s[0], kw * s[1]))
    for a in range(s[0]):
        for b in range(s[1]):
            fused[:, :, a::s[0], b::s[1]] = layer.weight * scale
    return replace(layer, weight=fused, stride=(layer.stride[0] * s[0], layer.stride[1] * s[1]),
                   padding=(layer.padding[0] * s[0], layer.padding[1] * s[1]), pool=None,
                   notes=[*layer.notes, f"{layer.name}: pooling '{pool.node}' folded exactly into its kernel"])


def _fold_pool_into_dense(layer: Layer) -> Layer:
    """pool then flatten then dense == dense on the unpooled map: W' = W @ P (exact for any pooling)."""
    n_in = int(np.prod(layer.input_shape))
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *layer.input_shape)
    pooled = layer.pool.apply(eye).reshape(n_in, -1)  # row i: pooled image of basis i = P[:, i]
    return replace(layer, weight=layer.weight @ pooled.numpy().T, pool=None, flatten_before=True,
                   notes=[*layer.notes, f"{layer.name}: pooling '{layer.pool.node}' folded exactly into its weights"])


def fold_pooling(graph: LayerGraph) -> LayerGraph:
    """The same network with every pooling folded into the next layer's weights (exact)."""
    layers = [layer if layer.pool is None else
              (_fold_pool_into_conv(layer) if layer.kind == "conv" else _fold_pool_into_dense(layer))
              for layer in graph.layers]
    return replace(graph, layers=layers)


def check_features(graph: LayerGraph, features: LayerFeatures) -> None:
    """Raise UnsupportedNodeError naming the first layer that uses what ``features.target`` lacks."""
    why = features.why_not
    t = features.target
    if len(graph.taps) > 1 and not features.multiple_taps:
        raise UnsupportedNodeError(f"NIR graph has outputs {', '.join(x.name for x in graph.taps)}; the {t} target "
                                   f"reads exactly one output")
    for tap in graph.taps:
        if tap.pooled:
            raise UnsupportedNodeError(f"output '{tap.name}' reads layer '{graph.layers[tap.layer].name}' after "
                                       f"pooling; {why.get('pooled_tap', f'the {t} target reads spikes before pooling')}")
        if tap.layer != len(graph.layers) - 1 and not features.multiple_taps:
            raise UnsupportedNodeError(f"output '{tap.name}' reads inner layer '{graph.layers[tap.layer].name}'")
    for layer in graph.layers:
        def no(feature: str, what: str) -> UnsupportedNodeError:
            return UnsupportedNodeError(f"NIR node '{layer.name}' ({layer.neuron_type}): "
                                        f"{why.get(feature, f'{what}, which the {t} target does not run')}")
        if layer.neuron_type not in features.neuron_types:
            raise no(layer.neuron_type, f"{layer.neuron_type} neurons")
        if layer.alpha > 0 and not features.current_memory:
            raise no("CubaLIF", "a synaptic current state")
        if layer.rec_weight is not None and not features.recurrence:
            raise UnsupportedNodeError(f"{t} cannot run recurrent layer '{layer.name}' (cycle {layer.name} -> "
                                       f"{layer.rec_synapse} -> {layer.name}): {why.get('recurrence', 'no recurrence')}")
        delays = [d for d in (layer.delay, layer.delay_out) if d is not None and np.any(d)]
        if delays and not features.delays:
            raise no("Delay", "synaptic delays")
        if not layer.spiking and not features.membrane_readout:
            raise no("membrane", "a non-spiking membrane readout")
