"""Chip-native SNNs: networks that NIR, Loihi and Speck can all carry whole.

Rules that make a network chip-native (issue "Train", item 4):
- only Conv2d, Flatten, Linear and spiking neurons; downsampling by strided convolution
  (no max pooling); a layer spec may ask for a BatchNorm after its weights while training
  (``"batch_norm": true``), which ``fold_batch_norm`` folds into the weights and bias, so the
  chips see a plain conv/linear layer with bias;
- every weight layer is followed by a snntorch ``Leaky`` with ``reset_mechanism="zero"``,
  inside the time loop, up to the output layer; the prediction is the output spike count.

snntorch's zero reset (with its default delayed reset) computes
``v[t] = beta * v[t-1] * (1 - s[t-1]) + I[t]``, ``s[t] = v[t] > threshold``: exactly the
Lava/Loihi LIF with current decay 1 (no current memory) and reset to 0, and with
``beta = 1`` exactly Speck's IAF with reset to zero. The default ``beta`` is therefore 1.0
(integrate-and-fire): the only neuron both chips compute without approximation.
"""
from __future__ import annotations

from typing import Any

import snntorch as snn
import torch
from snntorch import surrogate
import torch.nn.functional as F
from torch import nn

from spikeport.train.fused_neurons import leaky_cell_scan
from spikeport.train.models.base import ModelOutput
from spikeport.train.models.spec import ChipNativeSpec

LayerSpec = dict[str, Any]

VISUAL_SMALL: list[LayerSpec] = [
    {"type": "conv", "out_channels": 8, "kernel_size": 5, "stride": 2, "padding": 2},
    {"type": "conv", "out_channels": 16, "kernel_size": 3, "stride": 2, "padding": 1},
    {"type": "conv", "out_channels": 16, "kernel_size": 3, "stride": 2, "padding": 1},
    {"type": "flatten"},
    {"type": "dense", "out_features": 64},
    {"type": "dense", "out_features": 10},
]
#: Twice the small stack's channels and a 128-neuron hidden layer: what real N-MNIST needs (the
#: small stack underfits 720 real recordings once they are augmented). Same strides, no pooling;
#: the last convolution is unpadded (9x9 -> 4x4) so that fc1's kernel, 32 channels x 16 x 128,
#: fits one Speck core's 64 Ki kernel memory (5x5 would round up to 32 x 32 x 128 = 128 Ki).
VISUAL_MEDIUM: list[LayerSpec] = [
    {"type": "conv", "out_channels": 16, "kernel_size": 5, "stride": 2, "padding": 2},
    {"type": "conv", "out_channels": 32, "kernel_size": 3, "stride": 2, "padding": 1},
    {"type": "conv", "out_channels": 32, "kernel_size": 3, "stride": 2, "padding": 0},
    {"type": "flatten"},
    {"type": "dense", "out_features": 128},
    {"type": "dense", "out_features": 10},
]
AUDIO_SMALL: list[LayerSpec] = [
    {"type": "dense", "out_features": 64},
    {"type": "dense", "out_features": 64},
    {"type": "dense", "out_features": 20},
]


def _out_hw(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _batch_norm(layer: LayerSpec) -> bool:
    flag = layer.get("batch_norm", False)
    if not isinstance(flag, bool):
        raise ValueError(f"chip-native layer {layer!r}: batch_norm must be true or false")
    return flag


class ChipNativeSNN(nn.Module):
    """A feed-forward SNN built from a list of layer specs; each weight layer gets a LIF after it.

    Module names (``conv1``, ``lif1``, ``flatten``, ``fc1``, ``lif3`` ...) are the node names
    used in the NIR graph and in every per-layer count downstream.
    """

    def __init__(self, input_shape: list[int], layers: list[LayerSpec], beta: float = 1.0,
                 threshold: float = 1.0, bias: bool = True, init_gain: float = 1.0) -> None:
        super().__init__()
        self.input_shape = list(input_shape)
        self.beta = float(beta)
        self.threshold = float(threshold)
        self.blocks = nn.ModuleDict()
        # Optional recurrent weights of dense layers ({"type": "dense", "recurrent": true}):
        # ``rec<k>`` feeds ``lif<k>``'s spikes of the previous step back into ``lif<k>``
        # (a cycle lif<k> -> rec<k> -> lif<k> in the NIR graph). Empty by default.
        self.recurrent = nn.ModuleDict()
        self.rec_of: dict[str, str] = {}
        shape = list(input_shape)
        n_conv = n_fc = n_lif = 0
        grad = surrogate.atan()
        for spec in layers:
            kind = spec["type"]
            if kind == "conv":
                n_conv += 1
                c, h, w = shape
                k, s, p = spec["kernel_size"], spec.get("stride", 1), spec.get("padding", 0)
                self.blocks[f"conv{n_conv}"] = nn.Conv2d(c, spec["out_channels"], k, s, p, bias=bias)
                shape = [spec["out_channels"], _out_hw(h, k, s, p), _out_hw(w, k, s, p)]
                if _batch_norm(spec):
                    self.blocks[f"bn{n_lif + 1}"] = nn.BatchNorm2d(spec["out_channels"])
            elif kind == "flatten":
                self.blocks["flatten"] = nn.Flatten(start_dim=1)
                shape = [int(torch.tensor(shape).prod())]
                continue
            elif kind == "dense":
                n_fc += 1
                self.blocks[f"fc{n_fc}"] = nn.Linear(shape[0], spec["out_features"], bias=bias)
                shape = [spec["out_features"]]
                if _batch_norm(spec):
                    self.blocks[f"bn{n_lif + 1}"] = nn.BatchNorm1d(spec["out_features"])
                if spec.get("recurrent", False):
                    n = spec["out_features"]
                    self.recurrent[f"rec{n_lif + 1}"] = nn.Linear(n, n, bias=False)
                    self.rec_of[f"lif{n_lif + 1}"] = f"rec{n_lif + 1}"
            else:
                raise ValueError(f"chip-native layer type {kind!r} is not one of conv, flatten, dense")
            n_lif += 1
            # Per-neuron beta/threshold tensors of the output shape: what snntorch's NIR
            # exporter needs to write per-neuron parameters (FACTS §2).
            self.blocks[f"lif{n_lif}"] = snn.Leaky(
                beta=torch.full(shape, self.beta), threshold=torch.full(shape, self.threshold),
                reset_mechanism="zero", spike_grad=grad, init_hidden=False)
        self.output_shape = shape
        if init_gain != 1.0:
            # PyTorch's default init is sized for ReLU nets; integrate-and-fire neurons with a
            # threshold of 1 then barely fire past the first layer and training stalls. A gain
            # on the initial weights (spec key ``init_gain``) restores activity in every layer.
            with torch.no_grad():
                for module in self.blocks.values():
                    if isinstance(module, (nn.Conv2d, nn.Linear)):
                        module.weight.mul_(init_gain)

    @property
    def lif_names(self) -> list[str]:
        return [name for name, m in self.blocks.items() if isinstance(m, snn.Leaky)]

    def forward(self, x: torch.Tensor, record: bool = False, fused: bool | None = None) -> ModelOutput:
        """x: [B, T, *input_shape] -> ModelOutput(logits = output spike counts [B, C]).

        ``features`` holds the spike counts of the last hidden LIF layer; ``spikes`` (when
        ``record``) every LIF layer's spike train [T, B, ...].

        Computed layer by layer over all time steps: a conv or linear layer has no state, so one
        call on the [T*B, ...] stack gives what T calls give step by step (larger matrix
        products, several times faster on a CPU); only the neurons (and recurrent weights) step
        through time. The results are those of the step-by-step order.

        ``fused`` (default: the attribute ``fused_neurons``, True when unset): each LIF layer
        without recurrent weights runs as one fused scan over its whole sequence
        (``spikeport.train.fused_neurons``: snntorch's arithmetic and gradients, one autograd
        node per layer); False steps every ``snn.Leaky`` cell through time as snntorch does.
        """
        if fused is None:
            fused = getattr(self, "fused_neurons", True)
        batch, steps = x.shape[0], x.shape[1]
        h = x.transpose(0, 1).reshape(steps * batch, *x.shape[2:])
        lif_names = self.lif_names
        feature_name = lif_names[-2] if len(lif_names) > 1 else None
        features = None
        recorded: dict[str, torch.Tensor] = {}
        for name, module in self.blocks.items():
            if not isinstance(module, snn.Leaky):
                h = module(h)
                continue
            currents = h.reshape(steps, batch, *h.shape[1:])
            rec = self.recurrent[self.rec_of[name]] if name in self.rec_of else None
            train = leaky_cell_scan(module, currents) if fused and rec is None else None
            if train is None:  # recurrent weights (or a cell the scan does not cover): step it
                mem = torch.zeros_like(currents[0])
                spk: torch.Tensor | None = None
                out_steps = []
                for t in range(steps):
                    cur = currents[t]
                    if rec is not None and spk is not None:
                        cur = cur + rec(spk)
                    spk, mem = module(cur, mem)
                    out_steps.append(spk)
                train = torch.stack(out_steps)  # [T, B, ...]
            drop = float(getattr(self, "spike_dropout", 0.0))
            if drop and self.training and name != lif_names[-1]:
                # training-time regulariser only (TrainConfig.spike_dropout): hidden spikes are
                # zeroed at random and the rest scaled by 1 / (1 - p); inference has no dropout
                train = F.dropout(train, drop, training=True)
            if name == feature_name:
                features = train.sum(0).flatten(1)
            if record:
                recorded[name] = train
            h = train.reshape(steps * batch, *train.shape[2:])
        out = h.reshape(steps, batch, *h.shape[1:])
        return ModelOutput(logits=out.sum(0), features=features, spikes=recorded if record else None)


def has_batch_norm(spec: ChipNativeSpec) -> bool:
    return any(_batch_norm(layer) for layer in spec.layers)


@torch.no_grad()
def fold_batch_norm(model: ChipNativeSNN, spec: ChipNativeSpec) -> tuple[ChipNativeSNN, ChipNativeSpec]:
    """The model with every BatchNorm folded into the conv/linear before it (inference statistics),
    and its spec without ``batch_norm`` keys: a plain chip-native model computing what ``model``
    computes in eval mode. A model without BatchNorm comes back as it is."""
    if not has_batch_norm(spec):
        return model, spec
    if not spec.bias:
        raise ValueError("chip-native spec: batch_norm needs bias=true (the folded shift is a bias)")
    from spikeport.export.bn_fold import fold_batchnorm

    plain_spec = spec.replace(layers=[{k: v for k, v in layer.items() if k != "batch_norm"}
                                      for layer in spec.layers])
    folded = dict(fold_batchnorm(list(model.blocks.items())))
    plain = build_chip_native(plain_spec).to(next(model.parameters()).device)
    state = {}
    for name, module in plain.blocks.items():
        for key, value in folded[name].state_dict().items():
            state[f"blocks.{name}.{key}"] = value
    for key, value in model.recurrent.state_dict().items():
        state[f"recurrent.{key}"] = value
    plain.load_state_dict(state)
    for attr in ("fused_neurons", "spike_dropout"):
        if hasattr(model, attr):
            setattr(plain, attr, getattr(model, attr))
    return plain.train(model.training), plain_spec


def build_chip_native(spec: ChipNativeSpec) -> ChipNativeSNN:
    return ChipNativeSNN(spec.input_shape, spec.layers, beta=spec.beta, threshold=spec.threshold,
                         bias=spec.bias, init_gain=spec.init_gain)
