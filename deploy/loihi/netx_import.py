"""A lava-dl netx network as a NIR graph, so an imported netx run has the same layout as any other.

``read_netx`` (netx_reader.py) gives the integers Lava runs; their float view at scale 1
(weights and bias in weight units, threshold ``vThMant``, decays ``1 - x / 4096``) is written
here as NIR with dt = 1 (one step per time unit, as slayer trains):

- no current memory (``iDecay`` 4096): ``IF`` (r = 1) or ``LIF`` (tau = 1 / (1 - beta), r = tau);
- current memory: ``CubaLIF`` with tau_syn = 1 / (1 - alpha), tau_mem = 1 / (1 - beta),
  r = tau_mem, w_in = tau_syn (per-step input gain 1, see spikeport.export.neurons);
- axonal delays per output neuron: a NIR ``Delay`` between the weights and the neurons; per
  input neuron: before the weights.

The float view leaves out Loihi's truncation of the decayed states; the Loihi target runs the
netx file itself (bit for bit as Lava does), so only the float reference and Speck see the NIR.
What NIR cannot say (a current that never decays, input neurons driven by their bias alone,
per-synapse delays) raises UnsupportedNodeError naming the file and the layer.
"""
from __future__ import annotations

from pathlib import Path

import nir
import numpy as np

from spikeport.deploy.loihi.netx_reader import NetxNetwork, read_netx
from spikeport.deploy.loihi.quantize import QuantLayer
from spikeport.errors import UnsupportedNodeError


def _neuron(path: Path, q: QuantLayer) -> nir.NIRNode:
    layer = q.layer
    shape = layer.output_shape
    full = lambda v: np.full(shape, float(v))  # noqa: E731
    alpha, beta, vth = layer.alpha, layer.beta, float(q.vth)
    if not (0.0 <= alpha < 1.0) or not (0.0 <= beta <= 1.0):
        raise UnsupportedNodeError(f"netx file {path}: layer '{layer.name}': current decay {alpha:g} / voltage decay "
                                   f"{beta:g} per step; a current that never decays (iDecay 0) has no NIR form")
    if alpha == 0.0:
        if beta == 1.0:
            return nir.IF(r=full(1.0), v_threshold=full(vth), v_reset=full(0.0))
        tau = 1.0 / (1.0 - beta)
        return nir.LIF(tau=full(tau), r=full(tau), v_leak=full(0.0), v_threshold=full(vth), v_reset=full(0.0))
    if beta == 1.0:
        raise UnsupportedNodeError(f"netx file {path}: layer '{layer.name}': a current-based neuron without voltage "
                                   f"leak (vDecay 0) has no NIR CubaLIF form (tau_mem would be infinite)")
    tau_syn, tau_mem = 1.0 / (1.0 - alpha), 1.0 / (1.0 - beta)
    return nir.CubaLIF(tau_syn=full(tau_syn), tau_mem=full(tau_mem), r=full(tau_mem), v_leak=full(0.0),
                       v_threshold=full(vth), w_in=full(tau_syn), v_reset=full(0.0))


def to_nir(nx: NetxNetwork) -> nir.NIRGraph:
    """The float view of a read netx network as a NIR graph (dt = 1 in the metadata)."""
    path = nx.path
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type=np.array(nx.input_shape))}
    edges: list[tuple[str, str]] = []
    prev = "input"

    def add(name: str, node: nir.NIRNode) -> None:
        nonlocal prev
        nodes[name] = node
        edges.append((prev, name))
        prev = name

    for i, q in enumerate(nx.net.layers):
        layer = q.layer
        if q.input_neurons:
            raise UnsupportedNodeError(f"netx file {path}: layer '{layer.name}' is an input layer with neurons, driven "
                                       f"by their bias alone; NIR's Input node has no neurons")
        if layer.flatten_before:
            add(f"flatten{i}", nir.Flatten(input_type={"input": np.array(layer.input_shape)}, start_dim=0))
        delay = q.delay
        if delay is not None and delay.ndim == 2:
            raise UnsupportedNodeError(f"netx file {path}: layer '{layer.name}': one delay per synapse has no NIR form "
                                       f"(NIR delays one neuron's spikes)")
        w = q.weight.astype(np.float64)
        bias = np.zeros(w.shape[0]) if q.bias is None else q.bias.astype(np.float64)
        if layer.kind == "conv":
            if bias.ndim > 1:
                raise UnsupportedNodeError(f"netx file {path}: layer '{layer.name}': a bias per neuron of a "
                                           f"convolution has no NIR Conv2d form (one per channel)")
            add(layer.synapse, nir.Conv2d(input_shape=tuple(layer.input_shape[1:]), weight=w, stride=layer.stride,
                                          padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                                          bias=bias))
        else:
            add(layer.synapse, nir.Affine(weight=w, bias=bias.reshape(-1)))
        if delay is not None and np.any(delay):
            add(f"{layer.name}.delay", nir.Delay(delay=delay.astype(np.float64).reshape(layer.output_shape)))
        add(layer.name, _neuron(path, q))
        if q.rec_weight is not None:
            rec = f"{layer.name}.rec"
            nodes[rec] = nir.Linear(weight=q.rec_weight.astype(np.float64))
            edges += [(layer.name, rec), (rec, layer.name)]
    out_shape = nx.net.layers[-1].layer.output_shape
    nodes["output"] = nir.Output(output_type=np.array(out_shape))
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False, metadata={"dt": 1.0, "source": "lava-dl netx"})


def netx_to_nir(path: str | Path) -> nir.NIRGraph:
    return to_nir(read_netx(Path(path)))
