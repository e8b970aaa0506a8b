"""Seed A's model zoo ("Modality-Dependent Memory Mechanisms in Cross-Modal Neuromorphic
Computing", FACTS §6): baseline, scl, hopfield, hgrn, hybrid and joint.

Every model has two parts:

- ``model.backbone``: the spiking feature extractor (``SeedSNN`` from ``backbones.py``, or
  ``ChipNativeSNN`` when the spec says ``chip_native``; for ``joint`` a ``JointEncoders`` with
  one per modality). Its forward on ``[B, T, ...]`` gives per-step spike trains.
- ``model.head``: what stays on the host.

What feeds the head (for the exporter):

============  ======================================  =========================================
model         backbone ends at                         head consumes
============  ======================================  =========================================
baseline/scl  output LIF (C neurons)                   output spike COUNTS (sum over T) = logits;
                                                       no parameters (the chip can count)
hopfield      feature LIF (D = last hidden width)      feature spike RATE (mean over T) -> Hopfield
                                                       -> FC -> single-step LIF
hgrn          feature LIF                              per-step feature spike TRAINS [T, B, D]
                                                       -> HGRN over T -> mean over T -> FC -> LIF
hybrid        feature LIF                              per-step TRAINS -> Hopfield at every step
                                                       -> HGRN -> mean -> FC -> LIF
joint         feature LIF of the input's modality      per-step TRAINS -> shared HGRN -> FC(10) -> LIF
============  ======================================  =========================================

The feature LIF is named by ``model.feature_layer`` (a module name inside ``model.backbone``;
``lif4`` visual / ``lif3`` audio for the seed backbones, ``blocks.lifN`` for chip-native ones;
``visual.lif4`` / ``audio.lif3`` for joint).

Readout (spec key ``readout``, recorded in every run's spec):

- ``"current"`` (default): the logits are the readout FC's output current, i.e. the input a
  non-spiking output neuron integrates over the run (the head's features are already averaged
  over T). It trains: cross-entropy sees a graded value for every class.
- ``"spike"``: the seed's readout, FC + one LIF step from zero membrane, logits = that LIF's
  spikes (0/1). Kept for faithful reproduction; on a short schedule it learns slowly (its
  logits are binary, so every class that fires ties, and the surrogate gradient is the only
  signal): hgrn on nmnist-embedded, 8 epochs, 0.58 with it and 0.89 with ``"current"``.

Hybrid: the seed applied the Hopfield layer to the time-averaged features and then a
zero-state gated cell; with a real HGRN the sequence must survive the Hopfield layer, so the
Hopfield layer (same weights) is applied to each time step's features.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from spikeport.errors import ConfigError
from spikeport.train.models.backbones import BackboneOutput, SeedSNN, build_seed_backbone, seed_lif
from spikeport.train.models.base import ModelOutput
from spikeport.train.models.chip_native import ChipNativeSNN
from spikeport.train.models.hgrn import HGRN
from spikeport.train.models.hopfield import ModernHopfield
from spikeport.train.models.spec import (DEFAULT_INPUT_SHAPES, READOUTS, SEED_A_DEFAULTS,  # noqa: F401
                                         SEED_A_LEGACY_DEFAULTS, SEED_A_MODELS, SeedASpec)

HEAD_MODELS = ("hopfield", "hgrn", "hybrid", "joint")
#: The architecture keys and their defaults (the fields of ``spec.SeedASpec``).
DEFAULTS: dict[str, Any] = SEED_A_DEFAULTS
#: What keys added after the first stored specs meant before they existed (``spec.SeedASpec.from_dict``).
LEGACY_DEFAULTS: dict[str, Any] = SEED_A_LEGACY_DEFAULTS


def fill_defaults(spec: dict[str, Any] | SeedASpec) -> SeedASpec:
    """The typed spec of ``spec`` with every seed-A model key filled in and checked (store its
    ``to_dict()`` in checkpoints, so a later change of a default cannot change a trained model)."""
    return spec if isinstance(spec, SeedASpec) else SeedASpec.from_dict(spec)


# ----------------------------------------------------------------------------- backbones

def init_gain_of(spec: SeedASpec, modality: str) -> float:
    """The initial-weight gain of a modality's backbone (joint may give one per modality)."""
    gain = spec.init_gain
    return float(gain.get(modality, 1.0)) if isinstance(gain, dict) else float(gain)


def _chip_native_backbone(input_shape: list[int], layers: list[dict], spec: SeedASpec, with_output: bool,
                          key: str, modality: str) -> ChipNativeSNN:
    layers = copy.deepcopy(layers)
    if with_output and (layers[-1].get("type") != "dense" or layers[-1].get("out_features") != spec.num_classes):
        raise ConfigError(f"spec key {key}: the last chip-native layer must be a dense layer of "
                          f"num_classes = {spec.num_classes} outputs, got {layers[-1]}")
    if not with_output:
        # Head models read the last hidden LIF; the spec's last (output) layer is not built.
        if len(layers) < 2 or layers[-1].get("type") != "dense":
            raise ConfigError(f"spec key {key}: the last chip-native layer must be the dense output layer")
        layers = layers[:-1]
    return ChipNativeSNN(input_shape, layers, beta=spec.beta, threshold=spec.threshold,
                         bias=spec.bias, init_gain=init_gain_of(spec, modality))


def _backbone(spec: SeedASpec, modality: str, with_output: bool) -> nn.Module:
    if spec.chip_native:
        if spec.model == "joint":
            key = f"{modality}_layers"
            shape = spec.input_shapes[modality]
            layers = spec.visual_layers if modality == "visual" else spec.audio_layers
        else:
            key, shape, layers = "layers", spec.input_shape, spec.layers
        return _chip_native_backbone(shape, layers, spec, with_output, key, modality)
    return build_seed_backbone(spec, modality, with_output)


def _feature_layer(backbone: nn.Module, with_output: bool) -> str:
    if isinstance(backbone, SeedSNN):
        return backbone.feature_layer
    names = backbone.lif_names
    return f"blocks.{names[-2] if with_output else names[-1]}"


def _feature_dim(backbone: nn.Module, with_output: bool) -> int:
    if isinstance(backbone, SeedSNN):
        return backbone.feature_dim
    probe = torch.zeros(1, 1, *backbone.input_shape)
    with torch.no_grad():
        spikes = backbone(probe, record=True).spikes
    name = backbone.lif_names[-2] if with_output else backbone.lif_names[-1]
    return int(spikes[name][0].flatten(1).shape[1])


def run_backbone(backbone: nn.Module, x: torch.Tensor, record: bool, feature_layer: str) -> BackboneOutput:
    """Both backbone kinds as a BackboneOutput (time-major spike trains)."""
    if isinstance(backbone, SeedSNN):
        return backbone(x, record=record)
    spikes = backbone(x, record=True).spikes
    last = backbone.lif_names[-1]
    feats = spikes[feature_layer.removeprefix("blocks.")]
    return BackboneOutput(out=spikes[last], features=feats.flatten(2),
                          spikes={f"blocks.{k}": v for k, v in spikes.items()} if record else None)


# ----------------------------------------------------------------------------- heads

class SpikeCountReadout(nn.Module):
    """Logits = output spike counts over T (no parameters); features = feature spike rates."""

    def forward(self, bb: BackboneOutput) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        return bb.out.sum(0), bb.features.mean(0), {}


class SpikingReadout(nn.Module):
    """FC + a single-step LIF from zero membrane, as the seed's heads end."""

    def __init__(self, dim: int, num_classes: int, spec: SeedASpec) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)
        self.lif = seed_lif(spec.beta, spec.threshold)
        self.use_spikes = spec.readout == "spike"

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        current = self.fc(z)
        spk, _ = self.lif(current, torch.zeros_like(current))
        return (spk if self.use_spikes else current), spk


class HopfieldHead(nn.Module):
    def __init__(self, dim: int, spec: SeedASpec) -> None:
        super().__init__()
        self.hopfield = ModernHopfield(dim, spec.hopfield_patterns, spec.hopfield_temperature)
        self.readout = SpikingReadout(dim, spec.num_classes, spec)

    def forward(self, bb: BackboneOutput):
        z = self.hopfield(bb.features.mean(0))
        logits, spk = self.readout(z)
        return logits, z, {"head.readout.lif": spk.unsqueeze(0)}


def window_of(spec: SeedASpec, modality: str) -> int:
    """Feature steps summed into one HGRN step for a modality (``hgrn_window``)."""
    w = spec.hgrn_window
    return int(w.get(modality, 1)) if isinstance(w, dict) else int(w)


def embeds(spec: SeedASpec, modality: str) -> bool:
    """Whether a modality's feature vectors are embedded linearly before the HGRN (``hgrn_embed``)."""
    e = spec.hgrn_embed
    return bool(e.get(modality, False)) if isinstance(e, dict) else bool(e)


def pool_steps(seq: torch.Tensor, window: int) -> torch.Tensor:
    """[B, T, D] spike trains -> [B, ceil(T / window), D] spike counts over windows of ``window``
    steps (the last window zero-padded)."""
    if window <= 1:
        return seq
    b, t, d = seq.shape
    pad = (-t) % window
    if pad:
        seq = torch.cat([seq, seq.new_zeros(b, pad, d)], dim=1)
    return seq.reshape(b, (t + pad) // window, window, d).sum(2)


class HGRNHead(nn.Module):
    """(window sums) -> (optional Hopfield at every step) -> (linear embedding) -> HGRN over T
    -> mean over T -> FC -> single-step LIF.

    Sparse audio: the chip-native audio backbone's feature layer gives a median of one spike of
    64 a step (30 % of the steps silent). The HGRN blocks RMS-normalise every step, so a step with
    one spike becomes a one-hot of height sqrt(64) = 8, as loud as a busy step: the recurrence
    then runs on noise. Summing the spikes over windows of ``hgrn_window`` steps (4 on audio: 25
    HGRN steps, as many as the visual data have) and embedding each window's counts with a linear
    layer (``hgrn_embed``) gives the blocks dense steps. hgrn on shd-embedded, 8 epochs, seed 0,
    best validation accuracy: 0.88 step by step, 0.83 with windows alone, 0.90 with the embedding
    alone, 0.99 with both.

    ``modalities``: those the head serves (joint: both, each with its own window and embedding).
    """

    def __init__(self, dim: int, spec: SeedASpec, hopfield: bool, num_classes: int | None = None,
                 modalities: tuple[str, ...] | None = None) -> None:
        super().__init__()
        hidden = int(spec.hgrn_dim or dim)
        self.modality = spec.modality
        modalities = modalities or (self.modality,)
        self.hopfield = ModernHopfield(dim, spec.hopfield_patterns, spec.hopfield_temperature) \
            if hopfield else None
        self.embed = nn.ModuleDict({m: nn.Linear(dim, dim) for m in modalities if embeds(spec, m)})
        self.hgrn = HGRN(dim, hidden, spec.hgrn_layers, spec.hgrn_mlp_ratio)
        self.readout = SpikingReadout(hidden, num_classes or spec.num_classes, spec)
        self.windows = {m: window_of(spec, m) for m in modalities}

    def forward(self, bb: BackboneOutput, return_gates: bool = False, modality: str | None = None):
        modality = modality or self.modality
        seq = bb.features.transpose(0, 1)  # [B, T, D]
        seq = pool_steps(seq, self.windows.get(modality, 1))
        if self.hopfield is not None:
            # A silent step (no feature spike) has no query: its cosine to every pattern is 0, so the
            # retrieval would return the patterns' mean, layer-normalised into the same unit-variance
            # vector at every silent step, which swamps the few active steps of sparse audio (hybrid on
            # shd-embedded, 8 epochs: 0.34 with it, 0.68 with silent steps left at zero).
            active = seq.abs().sum(-1, keepdim=True) > 0
            seq = torch.where(active, self.hopfield(seq), seq)
        if modality in self.embed:
            seq = self.embed[modality](seq)
        y, gates = self.hgrn(seq, return_gates=True)
        z = y.mean(1)
        logits, spk = self.readout(z)
        out = (logits, z, {"head.readout.lif": spk.unsqueeze(0)})
        return (*out, gates) if return_gates else out


# ----------------------------------------------------------------------------- models

class SeedAModel(nn.Module):
    """baseline / scl / hopfield / hgrn / hybrid on one modality."""

    def __init__(self, spec: SeedASpec) -> None:
        super().__init__()
        self.spec = spec
        with_output = spec.model not in HEAD_MODELS
        self.backbone = _backbone(spec, spec.modality, with_output)
        self.feature_layer = _feature_layer(self.backbone, with_output)
        dim = _feature_dim(self.backbone, with_output)
        kind = spec.model
        if kind in ("baseline", "scl"):
            self.head = SpikeCountReadout()
        elif kind == "hopfield":
            self.head = HopfieldHead(dim, spec)
        else:
            self.head = HGRNHead(dim, spec, hopfield=(kind == "hybrid"))

    def forward(self, x: torch.Tensor, record: bool = False) -> ModelOutput:
        if not isinstance(x, torch.Tensor):
            raise ConfigError(f"model {self.spec.model!r} takes one tensor [B, T, ...], got {type(x).__name__}")
        bb = run_backbone(self.backbone, x, record, self.feature_layer)
        logits, features, head_spikes = self.head(bb)
        spikes = {**bb.spikes, **head_spikes} if record else None
        return ModelOutput(logits=logits, features=features, spikes=spikes)


class JointEncoders(nn.Module):
    """One spiking encoder per modality; the input's rank picks the encoder."""

    def __init__(self, visual: nn.Module, audio: nn.Module, shapes: dict[str, list[int]]) -> None:
        super().__init__()
        self.visual = visual
        self.audio = audio
        self.shapes = shapes

    def modality_of(self, x: torch.Tensor, modality: str | None) -> str:
        if modality is None:
            by_rank = {len(s) + 2: m for m, s in self.shapes.items()}
            modality = by_rank.get(x.dim())
            if modality is None:
                raise ConfigError(f"joint model: input of shape {list(x.shape)} is neither visual "
                                  f"[B, T, {self.shapes['visual']}] nor audio [B, T, {self.shapes['audio']}]")
        if modality not in self.shapes:
            raise ConfigError(f"joint model: modality {modality!r} is not visual or audio")
        return modality

    def forward(self, x: torch.Tensor, record: bool = False, modality: str | None = None) -> BackboneOutput:
        m = self.modality_of(x, modality)
        encoder = getattr(self, m)
        return run_backbone(encoder, x, record, _feature_layer(encoder, False))


class JointModel(nn.Module):
    """Seed A's joint model: visual and audio encoders, a shared HGRN trunk, FC(10).

    ``forward(x, modality=None)`` takes one modality a batch (picked from x's rank unless given);
    labels are taken mod ``num_classes`` (10) by ``losses.model_loss``.
    """

    def __init__(self, spec: SeedASpec) -> None:
        super().__init__()
        self.spec = spec
        visual = _backbone(spec, "visual", with_output=False)
        audio = _backbone(spec, "audio", with_output=False)
        dims = {m: _feature_dim(b, False) for m, b in (("visual", visual), ("audio", audio))}
        if dims["visual"] != dims["audio"]:
            raise ConfigError(f"joint model: the visual and audio feature widths must match for the shared "
                              f"trunk, got {dims['visual']} and {dims['audio']} (spec keys visual_hidden/audio_hidden)")
        self.backbone = JointEncoders(visual, audio, spec.input_shapes)
        self.feature_layer = {m: f"{m}.{_feature_layer(getattr(self.backbone, m), False)}" for m in dims}
        self.head = HGRNHead(dims["visual"], spec, hopfield=False, num_classes=spec.num_classes,
                             modalities=("visual", "audio"))

    def forward(self, x: torch.Tensor, record: bool = False, modality: str | None = None) -> ModelOutput:
        if not isinstance(x, torch.Tensor):
            raise ConfigError("joint model takes one modality a batch: a tensor [B, T, ...], not a tuple")
        m = self.backbone.modality_of(x, modality)
        bb = self.backbone(x, record=record, modality=m)
        logits, features, head_spikes = self.head(bb, modality=m)
        spikes = None
        if record:
            spikes = {f"{m}.{k}": v for k, v in bb.spikes.items()} | head_spikes
        return ModelOutput(logits=logits, features=features, spikes=spikes)


class JointPart(nn.Module):
    """One modality's path through the joint model (spec key ``part``: visual | audio): that
    modality's encoder as ``backbone`` and the shared trunk as ``head``, computing exactly what
    ``JointModel`` computes on that modality. What a chip deployment of joint runs: the encoder
    on the chip, the trunk on the host (one deployment per modality)."""

    def __init__(self, spec: SeedASpec) -> None:
        super().__init__()
        self.spec = spec
        part = spec.part
        self.backbone = _backbone(spec, part, with_output=False)
        self.feature_layer = _feature_layer(self.backbone, False)
        # the shared trunk with both modalities' embeddings, as in JointModel (its weights load as
        # they are); this part runs its own modality's
        self.head = HGRNHead(_feature_dim(self.backbone, False), spec, hopfield=False,
                             num_classes=spec.num_classes, modalities=("visual", "audio"))

    def forward(self, x: torch.Tensor, record: bool = False) -> ModelOutput:
        bb = run_backbone(self.backbone, x, record, self.feature_layer)
        logits, features, head_spikes = self.head(bb)
        return ModelOutput(logits=logits, features=features,
                           spikes={**bb.spikes, **head_spikes} if record else None)


def joint_part(model: JointModel, modality: str) -> tuple[SeedASpec, dict[str, torch.Tensor]]:
    """(spec, state_dict) of ``modality``'s path through a trained joint model (``JointPart``):
    the spec is that modality's (dataset, input shape, time steps, bin width, layers)."""
    if modality not in ("visual", "audio"):
        raise ConfigError(f"joint: part must be visual or audio, got {modality!r}")
    spec = model.spec
    changes: dict[str, Any] = {}
    mod = (spec.modalities or {}).get(modality)
    if mod is not None:
        changes.update(dataset=mod.dataset, timesteps=mod.timesteps, dt=mod.dt)
    changes.update(part=modality, modality=modality, input_shape=list(spec.input_shapes[modality]))
    if spec.chip_native:  # the ANN twin's stack
        changes["layers"] = copy.deepcopy(spec.visual_layers if modality == "visual" else spec.audio_layers)
    spec = spec.replace(**changes)
    prefix = f"backbone.{modality}."
    state = {("backbone." + k[len(prefix):]): v.detach().clone() for k, v in model.state_dict().items()
             if k.startswith(prefix)}
    state.update({k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith("head.")})
    return spec, state


def build_seed_a(spec: dict[str, Any] | SeedASpec) -> nn.Module:
    """A seed-A zoo model from its spec (or its dict, defaults filled in; see ``fill_defaults``)."""
    spec = fill_defaults(spec)
    if spec.model == "joint":
        return JointPart(spec) if spec.part is not None else JointModel(spec)
    return SeedAModel(spec)

