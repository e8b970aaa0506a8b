"""The ANN twin of a spiking backbone: the same weight layers, ReLU in place of each LIF, and the
input frames summed over time (one dense frame per sample instead of T spike frames).

It is the conventional network the energy report compares against (a GPU runs it as MACs), so
its weight layers carry the SNN's module names (``conv1``, ``fc1``, ...) and the per-layer MAC
count lines up with the SNN's per-layer synaptic operations. The output layer has no ReLU:
its outputs are the logits (a ReLU there would only clip them).

S-CMRL's twin, a transformer rather than a stack, lives beside its SNN (``scmrl.ScmrlAnnTwin``)
and follows the same rules: every neuron a ReLU, the frames summed over time.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from spikeport.train.models.base import ModelOutput
from spikeport.train.models.chip_native import _out_hw
from spikeport.train.models.widths import seed_a_layers


def paper_backbone_layers(modality: str, num_classes: int) -> list[dict[str, Any]]:
    """The first paper's backbones (FACTS §6) as layer specs, max pooling included (an ANN may
    pool), with a linear readout to the classes (widths from ``widths.SEED_A``)."""
    return seed_a_layers(modality, num_classes, downsample="pool")


class AnnTwin(nn.Module):
    """Feed-forward ANN from layer specs (conv, maxpool, flatten, dense); ReLU after each weight
    layer but the last. In the paper backbone the pooling sits between a conv and its
    activation (conv -> pool -> LIF), so the ReLU follows the pooling there, as in the SNN.
    """

    def __init__(self, input_shape: list[int], layers: list[dict[str, Any]], bias: bool = True) -> None:
        super().__init__()
        self.input_shape = list(input_shape)
        self.blocks = nn.ModuleDict()
        shape = list(input_shape)
        n_conv = n_fc = n_pool = n_act = 0
        n_weight = sum(1 for s in layers if s["type"] in ("conv", "dense"))
        pending_act = False
        for i, spec in enumerate(layers):
            kind = spec["type"]
            if kind == "conv":
                if pending_act:
                    n_act += 1
                    self.blocks[f"relu{n_act}"] = nn.ReLU()
                n_conv += 1
                c, h, w = shape
                k, s, p = spec["kernel_size"], spec.get("stride", 1), spec.get("padding", 0)
                self.blocks[f"conv{n_conv}"] = nn.Conv2d(c, spec["out_channels"], k, s, p, bias=bias)
                shape = [spec["out_channels"], _out_hw(h, k, s, p), _out_hw(w, k, s, p)]
                pending_act = True
            elif kind == "maxpool":
                n_pool += 1
                k = spec["kernel_size"]
                self.blocks[f"pool{n_pool}"] = nn.MaxPool2d(k)
                shape = [shape[0], shape[1] // k, shape[2] // k]
            elif kind == "flatten":
                if pending_act:
                    n_act += 1
                    self.blocks[f"relu{n_act}"] = nn.ReLU()
                    pending_act = False
                self.blocks["flatten"] = nn.Flatten(start_dim=1)
                shape = [int(torch.tensor(shape).prod())]
            elif kind == "dense":
                if pending_act:
                    n_act += 1
                    self.blocks[f"relu{n_act}"] = nn.ReLU()
                n_fc += 1
                self.blocks[f"fc{n_fc}"] = nn.Linear(shape[0], spec["out_features"], bias=bias)
                shape = [spec["out_features"]]
                pending_act = (n_conv + n_fc) < n_weight
            else:
                raise ValueError(f"ANN layer type {kind!r} is not one of conv, maxpool, flatten, dense")
        if pending_act:  # the stack ended on a pooling layer after a conv
            n_act += 1
            self.blocks[f"relu{n_act}"] = nn.ReLU()
        self.output_shape = shape
        names = list(self.blocks)
        # The feature layer: the activation before the last weight layer (the SNN's feature LIF).
        relus = [n for n in names if n.startswith("relu")]
        self.feature_name = relus[-1] if relus else None

    def accumulate(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, *input_shape] spike frames -> [B, *input_shape] summed frames; an already
        accumulated [B, *input_shape] passes through."""
        if x.dim() == len(self.input_shape) + 2:
            return x.sum(1)
        if x.dim() == len(self.input_shape) + 1:
            return x
        raise ValueError(f"ANN twin input of shape {list(x.shape)} does not match "
                         f"[B, T, {', '.join(map(str, self.input_shape))}]")

    def forward(self, x: torch.Tensor, record: bool = False) -> ModelOutput:
        h = self.accumulate(x)
        features = None
        acts: dict[str, torch.Tensor] = {}
        for name, module in self.blocks.items():
            h = module(h)
            if name == self.feature_name:
                features = h.flatten(1)
            if record and name.startswith("relu"):
                acts[name] = h.unsqueeze(0)  # [1, B, ...]: one "time step"
        return ModelOutput(logits=h, features=features, spikes=acts if record else None)
