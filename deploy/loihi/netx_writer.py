"""Write a quantised layer list as a lava-dl netx HDF5 network (the file a Loihi deployment loads).

Keys follow lava-dl's reader (``lava/lib/dl/netx/hdf5.py``): ``layer/<i>/type``, ``shape``
(C, H, W or N), ``weight`` (dense: out x in; conv: Cout, Cin, kH, kW, 1 in torch's
correlation order; netx flips it for Lava's true convolution), ``weight_rec`` for
``dense_rec``, ``bias``, conv ``stride``/``padding``/``dilation``/``groups`` in (H, W) order,
and ``neuron/{type, iDecay, vDecay, vThMant, refDelay, gradedSpike}``. A ``flatten`` layer
marks the (C, H, W) -> N reshape before a dense layer. Layer 0 is an ``input`` layer holding
only the input shape: the input spikes go straight into the first synapse block; or, for a first
layer with ``input_neurons``, the input layer with its neuron group (netx drives those neurons
with the input directly). A dense layer's axonal ``delay`` is written as netx reads it (per
output neuron, or per synapse); a per-neuron conv bias in Lava's (W, H, C) order.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from spikeport.deploy.loihi.quantize import QuantLayer, QuantNet
from spikeport.errors import UnsupportedNodeError
from spikeport.io import atomic_path


def _neuron(group: h5py.Group, q: QuantLayer) -> None:
    n = group.create_group("neuron")
    n.create_dataset("type", data=np.bytes_("CUBA"))
    n.create_dataset("iDecay", data=np.int64(q.i_decay))
    n.create_dataset("vDecay", data=np.int64(q.v_decay))
    n.create_dataset("vThMant", data=np.int64(q.vth))
    n.create_dataset("refDelay", data=np.int64(1))
    n.create_dataset("gradedSpike", data=False)


def _check_input_neurons(net: QuantNet, k: int, q: QuantLayer) -> None:
    """Input neurons are netx's input layer: first, one to one, and without a bias netx would read."""
    if k != 0:
        raise UnsupportedNodeError(f"layer {q.name}: input neurons after the first layer have no netx form")
    if q.bias is not None:
        raise UnsupportedNodeError(f"layer {q.name}: netx reads no bias for input neurons (Lava sets it on the "
                                   f"built network)")
    if tuple(q.layer.output_shape) != tuple(net.input_shape):
        raise UnsupportedNodeError(f"layer {q.name}: input neurons of shape {q.layer.output_shape} for an input "
                                   f"of shape {net.input_shape}")


def write_netx(net: QuantNet, path: str | Path) -> Path:
    """Write ``net`` to ``path`` atomically; return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["producer"] = "spikeport"
            layers = f.create_group("layer")
            i = 0

            def new(kind: str) -> h5py.Group:
                nonlocal i
                g = layers.create_group(str(i))
                g.create_dataset("type", data=np.bytes_(kind))
                i += 1
                return g

            g = new("input")
            g.create_dataset("shape", data=np.asarray(net.input_shape, dtype=np.int64))
            for k, q in enumerate(net.layers):
                lay = q.layer
                if q.input_neurons:
                    _check_input_neurons(net, k, q)
                    g.attrs["name"] = lay.name
                    g.attrs["synapse"] = lay.synapse
                    _neuron(g, q)
                    continue
                if lay.kind == "dense" and lay.flatten_before:
                    new("flatten").create_dataset("shape", data=np.asarray([int(np.prod(lay.input_shape))]))
                if lay.kind == "conv":
                    g = new("conv")
                    g.create_dataset("shape", data=np.asarray(lay.output_shape, dtype=np.int64))
                    g.create_dataset("weight", data=q.weight[..., None].astype(np.int64))
                    g.create_dataset("stride", data=np.asarray(lay.stride, dtype=np.int64))
                    g.create_dataset("padding", data=np.asarray(lay.padding, dtype=np.int64))
                    g.create_dataset("dilation", data=np.asarray(lay.dilation, dtype=np.int64))
                    g.create_dataset("groups", data=np.int64(lay.groups))
                else:
                    g = new("dense_rec" if q.rec_weight is not None else "dense")
                    g.create_dataset("shape", data=np.asarray(lay.output_shape, dtype=np.int64))
                    g.create_dataset("weight", data=q.weight.astype(np.int64))
                    if q.rec_weight is not None:
                        g.create_dataset("weight_rec", data=q.rec_weight.astype(np.int64))
                if q.delay is not None:
                    if lay.kind != "dense" or q.rec_weight is not None:
                        raise UnsupportedNodeError(f"layer {lay.name}: netx carries delays on dense layers only")
                    g.create_dataset("delay", data=np.asarray(q.delay, dtype=np.int64))
                if q.bias is not None:
                    b = q.bias.astype(np.int64)
                    if lay.kind == "conv" and b.ndim == 3:  # per neuron: netx neurons are (W, H, C)
                        b = b.transpose(2, 1, 0)
                    g.create_dataset("bias", data=b)
                g.attrs["name"] = lay.name
                g.attrs["synapse"] = lay.synapse
                _neuron(g, q)
    return path
