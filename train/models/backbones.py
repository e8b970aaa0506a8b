"""The spiking backbones of seed A as its code ran them (FACTS §6), and the time loop they share.

Visual (input ``[B, T, 2, 34, 34]``)::

    conv1 (2->32, 5x5) -> pool1 (max 2) -> lif1 -> conv2 (32->64, 5x5) -> pool2 -> lif2
    -> flatten -> fc1 (1600->1024) -> lif3 -> fc2 (1024->512) -> lif4   (feature layer)
    [-> fc3 (512->C) -> lif5]                                            (output layer)

Audio (input ``[B, T, 700]``)::

    fc1 (700->1024) -> lif1 -> fc2 (1024->1024) -> lif2 -> fc3 (1024->512) -> lif3 (feature)
    [-> fc4 (512->C) -> lif4]

Every LIF is a snntorch ``Leaky`` (beta 0.9, threshold 1, subtract reset, atan surrogate).
The module names above are the node names an exporter sees.

The network is feed-forward, so it is run layer by layer over all time steps at once (one
conv/matmul over ``T*B`` samples, then the LIF's time loop), which gives exactly the spikes
of the step-by-step loop the seed code ran, at a fraction of the kernel launches.
"""
from __future__ import annotations

from dataclasses import dataclass
import snntorch as snn
import torch
from snntorch import surrogate
from torch import nn

from spikeport.errors import ConfigError
from spikeport.train.models.spec import SeedASpec
from spikeport.train.models.widths import SEED_A

VISUAL_CONV_CHANNELS = list(SEED_A.visual_conv_channels)
VISUAL_HIDDEN = list(SEED_A.visual_hidden)
AUDIO_HIDDEN = list(SEED_A.audio_hidden)


def run_lif(lif: snn.Leaky, current: torch.Tensor) -> torch.Tensor:
    """Run a snntorch ``Leaky`` over the time axis: ``current`` [T, B, ...] -> spikes [T, B, ...].

    The membrane starts at zero for every call (never the module's stale state from the
    previous batch).
    """
    mem = torch.zeros_like(current[0])
    spikes = []
    for t in range(current.shape[0]):
        spk, mem = lif(current[t], mem)
        spikes.append(spk)
    return torch.stack(spikes)


def seed_lif(beta: float, threshold: float) -> snn.Leaky:
    """The seed's neuron: snntorch Leaky, subtract reset, atan surrogate."""
    return snn.Leaky(beta=beta, threshold=threshold, reset_mechanism="subtract",
                     spike_grad=surrogate.atan(), init_hidden=False)


@dataclass
class BackboneOutput:
    """out: spikes of the backbone's last LIF [T, B, ...]; features: spikes of its feature
    layer [T, B, D] (per-step trains, not counts); spikes: every LIF's train when recorded."""

    out: torch.Tensor
    features: torch.Tensor
    spikes: dict[str, torch.Tensor] | None = None


class SeedSNN(nn.Module):
    """Seed A's visual (conv) or audio (dense) SNN, chosen by the rank of ``input_shape``.

    ``num_classes=None`` leaves out the output layer: the backbone then ends at the feature
    layer and a host head reads its per-step spike trains.
    """

    def __init__(self, input_shape: list[int], conv_channels: list[int], hidden: list[int],
                 num_classes: int | None, kernel_size: int = 5, beta: float = 0.9,
                 threshold: float = 1.0, init_gain: float = 1.0) -> None:
        super().__init__()
        self.input_shape = [int(s) for s in input_shape]
        self.layers = nn.ModuleDict()
        n_lif = 0
        shape = list(self.input_shape)
        if len(shape) == 3:
            for i, channels in enumerate(conv_channels, start=1):
                c, h, w = shape
                h, w = h - kernel_size + 1, w - kernel_size + 1
                if h < 2 or w < 2:
                    raise ConfigError(f"spec key conv_channels: input {self.input_shape} is too small "
                                      f"for {len(conv_channels)} conv({kernel_size}x{kernel_size}) + pool stages")
                self.layers[f"conv{i}"] = nn.Conv2d(c, channels, kernel_size)
                self.layers[f"pool{i}"] = nn.MaxPool2d(2)
                n_lif += 1
                self.layers[f"lif{n_lif}"] = seed_lif(beta, threshold)
                shape = [channels, h // 2, w // 2]
            self.layers["flatten"] = nn.Flatten(start_dim=1)
            shape = [shape[0] * shape[1] * shape[2]]
        elif len(shape) == 1:
            if conv_channels:
                raise ConfigError("spec key conv_channels: an audio (1-d) input takes no conv stages")
        else:
            raise ConfigError(f"spec key input_shape: {self.input_shape} is neither [C, H, W] nor [N]")
        if not hidden:
            raise ConfigError("spec key hidden: at least one hidden layer (the feature layer) is needed")
        widths = list(hidden) + ([num_classes] if num_classes is not None else [])
        for i, width in enumerate(widths, start=1):
            self.layers[f"fc{i}"] = nn.Linear(shape[0], width)
            n_lif += 1
            self.layers[f"lif{n_lif}"] = seed_lif(beta, threshold)
            shape = [width]
            if i == len(hidden):
                self.feature_layer = f"lif{n_lif}"
        self.feature_dim = int(hidden[-1])
        self.output_shape = shape
        if init_gain != 1.0:
            # With PyTorch's default init and threshold 1 the dense layers stay silent for the
            # first ~10 time steps (the seed ran T = 25); a gain lets short inputs train.
            with torch.no_grad():
                for module in self.layers.values():
                    if isinstance(module, (nn.Conv2d, nn.Linear)):
                        module.weight.mul_(init_gain)

    @property
    def lif_names(self) -> list[str]:
        return [name for name, m in self.layers.items() if isinstance(m, snn.Leaky)]

    def forward(self, x: torch.Tensor, record: bool = False) -> BackboneOutput:
        """x: [B, T, *input_shape] -> BackboneOutput (time-major spike trains)."""
        if list(x.shape[2:]) != self.input_shape:
            raise ConfigError(f"spec key input_shape: backbone expects [B, T, {self.input_shape}], "
                              f"got input of shape {list(x.shape)}")
        steps, batch = x.shape[1], x.shape[0]
        h = x.transpose(0, 1)  # [T, B, ...]
        recorded: dict[str, torch.Tensor] = {}
        features = None
        for name, module in self.layers.items():
            if isinstance(module, snn.Leaky):
                h = run_lif(module, h)
                if record:
                    recorded[name] = h
                if name == self.feature_layer:
                    features = h
            else:
                flat = module(h.reshape(steps * batch, *h.shape[2:]))
                h = flat.reshape(steps, batch, *flat.shape[1:])
        return BackboneOutput(out=h, features=features, spikes=recorded if record else None)


def build_seed_backbone(spec: SeedASpec, modality: str, with_output: bool) -> SeedSNN:
    """A SeedSNN from a seed-A spec (see ``seed_a.fill_defaults``) for one modality."""
    shape = spec.input_shapes[modality] if spec.input_shapes is not None and modality in spec.input_shapes \
        else spec.input_shape
    if modality == "visual":
        conv, hidden = spec.conv_channels, spec.visual_hidden
    else:
        conv, hidden = [], spec.audio_hidden
    return SeedSNN(shape, conv, hidden, spec.num_classes if with_output else None,
                   kernel_size=spec.kernel_size, beta=spec.beta, threshold=spec.threshold,
                   init_gain=_gain(spec.init_gain, modality))


def _gain(gain: float | dict[str, float], modality: str) -> float:
    # joint may give one gain per modality
    return float(gain.get(modality, 1.0)) if isinstance(gain, dict) else float(gain)
