"""The chip/host split of a model, and the host part's file (host.pt) and runner.

Chip part: the longest prefix of the spiking backbone that NIR can express (Conv2d, Linear,
Flatten, AvgPool2d, snntorch Leaky; a BatchNorm right after a Conv/Linear is folded into it),
ending at a neuron layer. Everything after it (max pooling, layer norm, softmax, gates,
attention, Hopfield retrieval, readouts; FACTS §6) runs on the host: ``load_host(run_dir)``
returns a callable that maps the chip part's output spike trains ``{node: [T, B, ...]}`` to
logits ``[B, C]``. A chip-native model (and a seed model whose head only counts output
spikes) has no host part: its logits are the output layer's spike counts.

host.pt is a plain dict ``{"format", "version", "spec", "chip_outputs", "host_layers",
"feature_layer", "state_dict"}``, read with ``torch.load(weights_only=True)``; the host
modules are rebuilt from the spec by the zoo's ``build_model`` and get the saved weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import snntorch as snn
import torch
from torch import nn

from spikeport.errors import ArtifactError
from spikeport.export.bn_fold import BATCHNORMS, fold_batchnorm
from spikeport.export.to_nir import chip_native_layers
from spikeport.io import atomic_path
from spikeport.train.models.spec import ModelSpec, spec_from_dict

HOST_FILE = "host.pt"
HOST_FORMAT = "spikeport-host"
HOST_VERSION = 1
# Modules the chip part may hold (BatchNorm only right after a Conv/Linear, folded away).
EXPRESSIBLE = (nn.Conv2d, nn.Linear, nn.Flatten, nn.AvgPool2d, nn.Identity, snn.Leaky)


@dataclass
class Plan:
    """What export writes for a model: the chip layers (BatchNorm folded) and the host part."""

    layers: list[tuple[str, nn.Module]]
    input_shape: list[int]
    output_layer: str                      # node whose spikes leave the chip ("input" if no chip layer)
    chip_outputs: list[str]
    reference_spikes: Callable[[Any], dict[str, torch.Tensor]]
    chip_inputs: Callable[[Any], torch.Tensor]
    recurrent: dict[str, tuple[str, nn.Linear]] = field(default_factory=dict)
    approximations: list[str] = field(default_factory=list)
    host: "HostRunner | None" = None
    host_name: str = "host"
    host_state_prefixes: list[str] = field(default_factory=list)
    host_takes_all_inputs: bool = False    # the host reads every modality's input, not chip outputs


def _first(inputs):
    # audio-visual inputs arrive as a tuple; the chip part takes the first modality (deploy/run.py)
    return inputs[0] if isinstance(inputs, tuple) else inputs


def _strip(spikes: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in spikes.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p):]
                break
        out[k] = v
    return out


def is_chip_native(model: nn.Module) -> bool:
    from spikeport.train.models.chip_native import ChipNativeSNN
    return isinstance(model, ChipNativeSNN)


def split_layers(layers: list[tuple[str, nn.Module]]) -> tuple[int, int]:
    """(index after the last neuron layer of the longest expressible prefix (0: nothing on
    chip), index of the first layer NIR cannot express (len(layers) if none))."""
    end = 0
    for i, (_, m) in enumerate(layers):
        foldable_bn = isinstance(m, BATCHNORMS) and i > 0 and isinstance(layers[i - 1][1], (nn.Conv2d, nn.Linear))
        if not (isinstance(m, EXPRESSIBLE) or foldable_bn):
            return end, i
        if isinstance(m, snn.Leaky):
            if m.inhibition or not torch.all(torch.as_tensor(m.graded_spikes_factor) == 1):
                return end, i
            end = i + 1
    return end, len(layers)


class HostRunner:
    """The host part of a seed model: the backbone layers after the chip part, then the head."""

    kind = "layers"

    def __init__(self, model: nn.Module, host_layers: list[tuple[str, nn.Module]], chip_outputs: list[str],
                 feature_layer: str | None) -> None:
        self.model, self.host_layers = model.eval(), host_layers
        self.chip_outputs, self.feature_layer = list(chip_outputs), feature_layer

    @torch.no_grad()
    def __call__(self, chip_spikes: dict[str, torch.Tensor]) -> torch.Tensor:
        from spikeport.train.models.backbones import BackboneOutput, run_lif
        missing = [n for n in self.chip_outputs if n not in chip_spikes]
        if missing:
            raise ArtifactError(f"host part: needs the spikes of chip node '{missing[0]}', got {sorted(chip_spikes)}")
        h = chip_spikes[self.chip_outputs[0]]
        seen = dict(chip_spikes)
        steps, batch = h.shape[:2]
        for name, m in self.host_layers:
            if isinstance(m, snn.Leaky):
                h = run_lif(m, h)  # spike trains over time, membrane from zero
            else:
                flat = m(h.reshape(steps * batch, *h.shape[2:]))
                h = flat.reshape(steps, batch, *flat.shape[1:])
            seen[name] = h
        features = seen.get(self.feature_layer, h)
        return self.model.head(BackboneOutput(out=h, features=features.flatten(2)))[0]


class WholeModelHost:
    """A model with no expressible backbone prefix: the host runs all of it on the input spikes."""

    kind = "whole"
    host_layers: list = []
    feature_layer = None
    chip_outputs = ["input"]

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval()

    @torch.no_grad()
    def __call__(self, chip_spikes: dict[str, torch.Tensor]) -> torch.Tensor:
        x = chip_spikes["input"]  # [T, B, ...], or a tuple of them for an audio-visual model
        x = tuple(v.transpose(0, 1) for v in x) if isinstance(x, (tuple, list)) else x.transpose(0, 1)
        return self.model(x).logits


def _seed_plan(model: nn.Module, spec: ModelSpec) -> Plan:
    """SeedAModel (one modality): backbone prefix on chip, rest of the backbone + head on host."""
    from spikeport.train.models.backbones import SeedSNN
    backbone = model.backbone
    if isinstance(backbone, SeedSNN):
        layers, prefix, recurrent = list(backbone.layers.items()), "layers.", {}
    else:
        layers, recurrent = chip_native_layers(backbone)
        prefix = "blocks."
    feature = model.feature_layer.removeprefix(prefix)
    end, blocker = split_layers(layers)
    if recurrent and end < len(layers):
        end = 0  # never split a stack with recurrent weights (they belong to their layer)
    chip_layers, host_layers = fold_batchnorm(layers[:end]), layers[end:]
    neurons = [n for n, m in chip_layers if isinstance(m, snn.Leaky)]
    output = neurons[-1] if neurons else "input"
    approximations = []
    if blocker < len(layers):
        name, m = layers[blocker]
        approximations.append(f"{name}: {type(m).__name__} is not expressible in NIR; the layers from "
                              f"'{layers[end][0]}' on run on the host")
    # A head without parameters only counts the chip's output spikes (the chip can count).
    needs_host = bool(host_layers) or any(True for _ in model.head.parameters())
    chip_outputs = [output] + ([feature] if needs_host and feature in neurons and feature != output else [])
    host = HostRunner(model, host_layers, chip_outputs, feature) if needs_host else None

    def reference(inputs):
        return _strip(model(_first(inputs), record=True).spikes, (prefix,))

    return Plan(layers=chip_layers, input_shape=list(backbone.input_shape), output_layer=output,
                chip_outputs=chip_outputs, reference_spikes=reference, chip_inputs=_first,
                recurrent={k: v for k, v in recurrent.items() if k in dict(chip_layers)},
                approximations=approximations, host=host, host_name=f"{spec.model}-host",
                host_state_prefixes=[f"backbone.{prefix}{n}." for n, _ in host_layers] + ["head."])


def _chip_part_plan(model: nn.Module) -> Plan:
    """A model that is only a chip part (S-CMRL's chip-native patch embedding of one modality,
    BatchNorm already folded): all of it on chip; its head runs elsewhere (deploy.multi)."""
    layers = fold_batchnorm(list(model.backbone.blocks.items()))
    neurons = [n for n, m in layers if isinstance(m, snn.Leaky)]
    return Plan(layers=layers, input_shape=list(model.input_shape), output_layer=neurons[-1],
                chip_outputs=[neurons[-1]], chip_inputs=model.chip_inputs,
                reference_spikes=lambda inputs: _strip(model(inputs, record=True).spikes, ("blocks.",)))


def plan_partition(model: nn.Module, spec: ModelSpec | dict[str, Any]) -> Plan:
    """The chip/host plan of a zoo model (chip-native: all on chip, no host)."""
    spec = spec_from_dict(spec)
    if getattr(model, "chip_part", False):
        return _chip_part_plan(model)
    if is_chip_native(model):
        layers, recurrent = chip_native_layers(model)
        return Plan(layers=layers, input_shape=list(model.input_shape), output_layer=model.lif_names[-1],
                    chip_outputs=[model.lif_names[-1]], recurrent=recurrent,
                    reference_spikes=lambda inputs: model(_first(inputs), record=True).spikes,
                    chip_inputs=_first)
    backbone = getattr(model, "backbone", None)
    if hasattr(model, "head") and (hasattr(backbone, "layers") or hasattr(backbone, "blocks")) \
            and hasattr(backbone, "input_shape"):
        return _seed_plan(model, spec)
    # Several branches, attention inside, or no backbone at all: nothing is claimed for the chip.
    return Plan(layers=[], input_shape=list(spec.input_shape), output_layer="input", chip_outputs=["input"],
                reference_spikes=lambda inputs: {}, chip_inputs=_first, host=WholeModelHost(model),
                host_takes_all_inputs=True,
                host_state_prefixes=[""], host_name=f"{spec.model}-host",
                approximations=[f"{type(model).__name__}: no ordered spiking layer stack; the whole model "
                                "runs on the host"])


def save_host(plan: Plan, spec: ModelSpec, path: str | Path) -> Path:
    """Write the host part (its weights + the spec that rebuilds its modules) atomically."""
    host = plan.host
    keep = {k: v.detach().cpu().clone() for k, v in host.model.state_dict().items()
            if any(k.startswith(p) for p in plan.host_state_prefixes)}
    payload = {"format": HOST_FORMAT, "version": HOST_VERSION, "kind": host.kind, "spec": spec.to_dict(),
               "chip_outputs": list(plan.chip_outputs), "host_layers": [n for n, _ in host.host_layers],
               "feature_layer": host.feature_layer, "state_dict": keep}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_host(run_dir: str | Path) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """The host part of an exported run: ``f({chip node: spikes [T, B, ...]}) -> logits [B, C]``."""
    from spikeport.train.models import build_model
    path = Path(run_dir) / "export" / HOST_FILE
    if not path.is_file():
        raise ArtifactError(f"{path}: host part not found (export the run first, or the model has none)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, foreign pickle, ...: one clear error
        raise ArtifactError(f"{path}: not a readable host part ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != HOST_FORMAT or data.get("version") != HOST_VERSION:
        raise ArtifactError(f"{path}: not a spikeport host part (format {HOST_FORMAT!r} v{HOST_VERSION})")
    model = build_model(data["spec"]).eval()
    state = model.state_dict()
    for k, v in data["state_dict"].items():
        if k not in state or state[k].shape != v.shape:
            raise ArtifactError(f"{path}: host weight '{k}' does not fit the model its spec describes")
        state[k].copy_(v)
    if data.get("kind") == "whole":
        return WholeModelHost(model)
    backbone = model.backbone
    layers = dict(backbone.layers.items() if hasattr(backbone, "layers") else backbone.blocks.items())
    unknown = [n for n in data["host_layers"] if n not in layers]
    if unknown:
        raise ArtifactError(f"{path}: host layer '{unknown[0]}' is not in the model its spec describes")
    return HostRunner(model, [(n, layers[n]) for n in data["host_layers"]], data["chip_outputs"],
                      data["feature_layer"])
