"""torch -> NIR for the spiking layer stacks of the zoo (the chip-native models whole, the
spiking backbone prefix of the others).

Why not ``snntorch.export_nir.export_to_nir`` itself: in snntorch 1.0.0 it hard-codes
``dt = 1e-4`` for every neuron, divides by zero for ``beta == 1`` (our default, IF), writes
Conv2d nodes without ``input_shape`` (so conv graphs carry no types), drops the reset
mechanism (every Leaky becomes reset-to-zero) and traces one call of the module, which does
not fit models that loop over time inside ``forward``. The layer stacks here are explicit
ordered module lists, so the graph is written directly with nir's node classes, one node a
module, named by the module's name; neuron parameters follow ``neurons.py``.

Graph layout: ``input -> <layer> -> ... -> output``; a recurrent dense layer adds the cycle
``lif<k> -> rec<k> -> lif<k>`` (``rec<k>`` a bias-free ``nir.Linear``): NIR sums the edges
into ``lif<k>``, and a cycle carries the previous step's spikes.
"""
from __future__ import annotations

from typing import Iterable

import nir
import numpy as np
import snntorch as snn
import torch
from torch import nn

from spikeport.errors import UnsupportedNodeError
from spikeport.export.bn_fold import fold_batchnorm
from spikeport.export.neurons import neuron_node


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy().copy()


def _pair(v) -> np.ndarray:
    return np.array(v if isinstance(v, (tuple, list)) else (v, v), dtype=np.int64)


def _out_shape(module: nn.Module, shape: list[int]) -> list[int]:
    with torch.no_grad():
        return list(module(torch.zeros(1, *shape)).shape[1:])


def _leaky_node(name: str, m: snn.Leaky, shape: list[int], dt: float,
                approximations: list[str]) -> nir.NIRNode:
    if getattr(m, "inhibition", False):
        raise UnsupportedNodeError(f"layer '{name}': snntorch Leaky with inhibition has no NIR node")
    if not torch.all(torch.as_tensor(m.graded_spikes_factor) == 1):
        raise UnsupportedNodeError(f"layer '{name}': graded spikes (factor != 1) have no NIR node")
    if m.reset_mechanism != "zero":
        # NIR's LIF/IF reset to v_reset; subtract / no reset cannot be written, so the graph
        # approximates the layer (and verification records the disagreement).
        approximations.append(f"{name}: reset '{m.reset_mechanism}' written as reset to zero")
    beta = torch.broadcast_to(m.beta.detach().clamp(0, 1).float(), shape)
    thr = torch.broadcast_to(torch.as_tensor(m.threshold).detach().float(), shape)
    return neuron_node(_np(beta), _np(thr), dt, name)


def module_node(name: str, m: nn.Module, shape: list[int], dt: float,
                approximations: list[str]) -> tuple[nir.NIRNode, list[int]]:
    """One torch module -> (NIR node, output shape without batch)."""
    if isinstance(m, snn.Leaky):
        return _leaky_node(name, m, shape, dt, approximations), list(shape)
    if isinstance(m, nn.Conv2d):
        if len(shape) != 3:
            raise UnsupportedNodeError(f"layer '{name}': Conv2d expects [C, H, W] input, got {shape}")
        bias = _np(m.bias) if m.bias is not None else np.zeros(m.out_channels, dtype=np.float32)
        padding = m.padding if isinstance(m.padding, str) else _pair(m.padding)
        node = nir.Conv2d(input_shape=tuple(shape[1:]), weight=_np(m.weight), stride=_pair(m.stride),
                          padding=padding, dilation=_pair(m.dilation), groups=m.groups, bias=bias)
        return node, _out_shape(m, shape)
    if isinstance(m, nn.Linear):
        if m.bias is None:
            node = nir.Linear(weight=_np(m.weight))
        else:
            node = nir.Affine(weight=_np(m.weight), bias=_np(m.bias))
        return node, [m.out_features]
    if isinstance(m, nn.Flatten):
        # NIR shapes have no batch axis: torch's dims shift down by one.
        start = m.start_dim - 1 if m.start_dim > 0 else m.start_dim
        end = m.end_dim - 1 if m.end_dim > 0 else m.end_dim
        return nir.Flatten(input_type={"input": np.array(shape)}, start_dim=start, end_dim=end), \
            _out_shape(m, shape)
    if isinstance(m, nn.AvgPool2d):
        node = nir.AvgPool2d(kernel_size=_pair(m.kernel_size), stride=_pair(m.stride or m.kernel_size),
                             padding=_pair(m.padding))
        return node, _out_shape(m, shape)
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        raise UnsupportedNodeError(f"layer '{name}': BatchNorm must be folded into the layer before it "
                                   "(spikeport.export.bn_fold) before export")
    raise UnsupportedNodeError(f"layer '{name}': {type(m).__name__} cannot be expressed in NIR "
                               "(chip part: Conv2d, Linear, Flatten, AvgPool2d, snntorch Leaky)")


def layers_to_nir(layers: Iterable[tuple[str, nn.Module]], input_shape: list[int], dt: float,
                  recurrent: dict[str, tuple[str, nn.Linear]] | None = None,
                  ) -> tuple[nir.NIRGraph, list[str]]:
    """An ordered stack of modules -> (NIR graph, approximations made).

    ``recurrent`` maps a neuron layer name to ``(rec_name, bias-free Linear)``: the layer's
    spikes of step t-1 enter it again through that weight at step t.
    """
    recurrent = recurrent or {}
    approximations: list[str] = []
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type=np.array(input_shape))}
    edges: list[tuple[str, str]] = []
    prev, shape = "input", list(input_shape)
    for name, m in layers:
        if name in ("input", "output"):
            raise UnsupportedNodeError(f"layer name '{name}' is reserved for the graph's input/output node")
        if isinstance(m, nn.Identity):
            continue
        nodes[name], shape = module_node(name, m, shape, dt, approximations)
        edges.append((prev, name))
        if name in recurrent:
            rec_name, rec = recurrent[name]
            if rec.bias is not None or rec.in_features != rec.out_features or [rec.out_features] != shape:
                raise UnsupportedNodeError(f"layer '{rec_name}': recurrent weight must be a bias-free "
                                           f"{shape} x {shape} Linear")
            nodes[rec_name] = nir.Linear(weight=_np(rec.weight))
            edges += [(name, rec_name), (rec_name, name)]
        prev = name
    nodes["output"] = nir.Output(output_type=np.array(shape))
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges), approximations


def chip_native_layers(model: nn.Module) -> tuple[list[tuple[str, nn.Module]], dict[str, tuple[str, nn.Linear]]]:
    """The ordered layers of a ChipNativeSNN and its recurrent weights, by NIR node name; a
    BatchNorm (``"batch_norm": true`` layers, inference statistics) is folded into the conv or
    linear before it, so the graph holds plain weights and biases."""
    layers = fold_batchnorm(list(model.blocks.items()))
    rec_of = getattr(model, "rec_of", {})
    recurrent = {lif: (rec, model.recurrent[rec]) for lif, rec in rec_of.items()}
    return layers, recurrent


def chip_native_to_nir(model: nn.Module, dt: float) -> tuple[nir.NIRGraph, list[str]]:
    layers, recurrent = chip_native_layers(model)
    return layers_to_nir(layers, model.input_shape, dt, recurrent)
