"""Typed model specs: what a run's ``model.pt`` (and ``host.pt``, ``checkpoint.pt``) records about
its model, as frozen dataclasses checked where they are built.

One class per architecture family:

- ``ChipNativeSpec``: the whole-chip SNNs (``baseline`` / ``scl`` with ``chip_native``), a layer stack;
- ``SeedASpec``: seed A's models (baseline, scl, hopfield, hgrn, hybrid, joint; seed backbones or
  chip-native ones with a host head);
- ``ScmrlSpec``: S-CMRL, the audio-visual spiking transformer;
- ``AnnSpec``: the ANN twin of any of them (``ann``), a layer stack.

All share ``ModelSpec``'s fields: the model, the dataset it was built for (modality, input shape,
classes, time steps, bin width) and what the run recorded about it (seed, preset, data root,
fine-tuning). ``spec_from_dict`` reads the on-disk dict (the format the zoo has always written:
every family's architecture keys filled in, optional keys absent), ``to_dict`` writes it back;
``from_dict(d).to_dict() == d`` for every dict the zoo writes. A bad value raises a ConfigError
naming its key; so does a key the family does not know.

Frozen: a spec is never changed in place; ``spec.replace(key=value)`` gives a checked copy. Its
lists are its own copies (treat them as read-only).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Mapping

from spikeport.errors import ConfigError
from spikeport.train.models.widths import SCMRL, SEED_A

#: Every model name ``spikeport train --model`` accepts.
SEED_A_MODELS = ("baseline", "scl", "hopfield", "hgrn", "hybrid", "joint")
MODEL_NAMES = SEED_A_MODELS + ("scmrl",)
#: Chip-native models that run whole on a chip (a bare ``ChipNativeSNN``).
WHOLE_CHIP_MODELS = ("baseline", "scl")
MODALITIES = ("visual", "audio", "audiovisual")
#: Head readouts of seed A: "current" (default, trains) and "spike" (the seed's, for faithful reproduction).
READOUTS = ("current", "spike")
#: S-CMRL's inputs: both modalities, or one alone (the unimodal reference).
SCMRL_INPUTS = ("both", "visual", "audio")
DEFAULT_INPUT_SHAPES = {"visual": [2, 34, 34], "audio": [700]}

Layer = dict[str, Any]
#: Seed A's HGRN input embedding per modality (spec key ``hgrn_embed``): each step's (or window's)
#: feature counts go through a linear layer before the HGRN blocks. Audio's sparse steps need it
#: (one spike a step reaches the blocks' RMSNorm as a one-hot scaled to sqrt(D)); joint needs it on
#: both (the two encoders' feature neurons are unrelated and the trunk is shared: without a visual
#: embedding the visual path stayed at chance, validation 0.15 after 2 epochs). Visual alone gains
#: too: nmnist-embedded, default schedule, seeds 0-2, best validation without / with the visual
#: embedding: hgrn 0.882 / 0.833 / 0.826 -> 0.924 / 0.917 / 0.938, hybrid 0.903 / 0.882 / 0.917 ->
#: 0.944 / 0.944 / 0.951.
HGRN_EMBED = {"visual": True, "audio": True}

# A field's ``record`` metadata says when ``to_dict`` writes it: "always", or "if-set" (only when
# it differs from its default; the zoo never wrote these keys unless they were given).
ALWAYS, IF_SET = "always", "if-set"


def _always(default: Any = None, factory: Any = None) -> Any:
    if factory is not None:
        return field(default_factory=factory, metadata={"record": ALWAYS})
    return field(default=default, metadata={"record": ALWAYS})


def _if_set(default: Any = None) -> Any:
    return field(default=default, metadata={"record": IF_SET})


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_shape(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(_is_int(s) and s >= 1 for s in v)


def _need(key: str, ok: bool, what: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"spec key {key}: {what}, got {value!r}")


@dataclass(frozen=True)
class ModalityData:
    """One modality's data of a joint model (spec key ``modalities``)."""

    dataset: str
    modality: str
    num_classes: int
    timesteps: int
    dt: float
    input_shape: list[int]
    dts: dict[str, float] | None = None   # an audio-visual dataset's bin widths, as its meta gives them

    def __post_init__(self) -> None:
        if isinstance(self.input_shape, tuple):
            object.__setattr__(self, "input_shape", list(self.input_shape))
        object.__setattr__(self, "input_shape", copy.deepcopy(self.input_shape))
        object.__setattr__(self, "dts", copy.deepcopy(self.dts))
        key = f"modalities.{self.modality}"
        _need(f"{key}.modality", self.modality in ("visual", "audio"), "must be visual or audio", self.modality)
        _need(f"{key}.num_classes", _is_int(self.num_classes) and self.num_classes >= 1,
              "must be an integer >= 1", self.num_classes)
        _need(f"{key}.timesteps", _is_int(self.timesteps) and self.timesteps >= 1,
              "must be an integer >= 1", self.timesteps)
        _need(f"{key}.dt", _is_num(self.dt) and self.dt > 0, "must be a number of seconds > 0", self.dt)
        _need(f"{key}.input_shape", _is_shape(self.input_shape), "must be a list of sizes >= 1", self.input_shape)

    @classmethod
    def from_dict(cls, name: str, data: Any) -> "ModalityData":
        if isinstance(data, ModalityData):
            return data
        names = [f.name for f in fields(cls)]
        required = set(names) - {"dts"}
        if not isinstance(data, Mapping) or not required <= set(data) <= set(names):
            raise ConfigError(f"spec key modalities.{name}: must hold {', '.join(sorted(required))} "
                              f"(and optionally dts), got {data!r}")
        return cls(**copy.deepcopy(dict(data)))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)
                if not (f.name == "dts" and self.dts is None)}


@dataclass(frozen=True)
class ModelSpec:
    """The fields every spec has. Use a family class (or ``spec_from_dict``), not this one."""

    model: str
    chip_native: bool = _always(False)
    ann: bool = _always(False)
    dataset: str | None = _if_set()
    modality: str | None = _if_set()
    input_shape: list[int] | None = _if_set()
    num_classes: int | None = _if_set()
    timesteps: int | None = _if_set()
    dt: float | None = _if_set()              # seconds a time step (the data's bin width)
    seed: int = _always(0)
    # audio-visual data: each modality's input shape (and bin width)
    input_shapes: dict[str, list[int]] | None = _if_set()
    dts: dict[str, float] | None = _if_set()
    # joint: labels are taken mod label_mod; each modality's data
    label_mod: int | None = _if_set()
    modalities: dict[str, ModalityData] | None = _if_set()
    # one modality's part of a joint / S-CMRL model (what one chip deployment runs)
    part: str | None = _if_set()
    # what the run recorded: the data preset and folder, the fine-tuning
    preset: str | None = _if_set()
    root: str | None = _if_set()
    finetuned_for: str | None = _if_set()
    finetuned_from: str | None = _if_set()

    #: The family's name in messages.
    family: ClassVar[str] = "model"

    # ------------------------------------------------------------------ building and checking

    def __post_init__(self) -> None:
        for f in fields(self):  # own copies of nested values, so no caller's list is shared
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            if isinstance(value, (list, dict)):
                object.__setattr__(self, f.name, copy.deepcopy(value))
        if self.modalities is not None:
            _need("modalities", isinstance(self.modalities, Mapping) and set(self.modalities) <= {"visual", "audio"},
                  "must map visual/audio to their data", self.modalities)
            object.__setattr__(self, "modalities", {m: ModalityData.from_dict(m, d) for m, d in self.modalities.items()})
        self._check_common()
        self._fill()
        self._check()

    def _fill(self) -> None:
        """Fill the family's derived defaults (``object.__setattr__``: the spec is frozen)."""

    def _check(self) -> None:
        """The family's own checks."""

    def _set(self, key: str, value: Any) -> None:
        object.__setattr__(self, key, value)

    def _check_common(self) -> None:
        need = lambda key, ok, what: _need(key, ok, what, getattr(self, key))  # noqa: E731
        need("model", isinstance(self.model, str) and self.model in MODEL_NAMES,
             f"unknown model; valid models: {', '.join(MODEL_NAMES)}")
        need("chip_native", isinstance(self.chip_native, bool), "must be true or false")
        need("ann", isinstance(self.ann, bool), "must be true or false")
        need("dataset", self.dataset is None or isinstance(self.dataset, str), "must be a dataset name")
        need("modality", self.modality is None or self.modality in MODALITIES, f"must be one of {', '.join(MODALITIES)}")
        need("input_shape", self.input_shape is None or _is_shape(self.input_shape), "must be a list of sizes >= 1")
        need("num_classes", self.num_classes is None or (_is_int(self.num_classes) and self.num_classes >= 1),
             "must be an integer >= 1")
        need("timesteps", self.timesteps is None or (_is_int(self.timesteps) and self.timesteps >= 1),
             "must be an integer >= 1")
        need("dt", self.dt is None or (_is_num(self.dt) and self.dt > 0), "must be a number of seconds > 0")
        need("seed", _is_int(self.seed) and self.seed >= 0, "must be an integer >= 0")
        need("input_shapes", self.input_shapes is None or (
            isinstance(self.input_shapes, dict) and set(self.input_shapes) <= {"visual", "audio"}
            and all(_is_shape(s) for s in self.input_shapes.values())), "must map visual/audio to input shapes")
        need("dts", self.dts is None or (isinstance(self.dts, dict) and set(self.dts) <= {"visual", "audio"}
                                         and all(_is_num(d) and d > 0 for d in self.dts.values())),
             "must map visual/audio to bin widths > 0")
        need("label_mod", self.label_mod is None or (_is_int(self.label_mod) and self.label_mod >= 1),
             "must be an integer >= 1")
        need("part", self.part is None or self.part in ("visual", "audio"), "must be visual or audio")
        for key in ("preset", "root", "finetuned_for", "finetuned_from"):
            need(key, getattr(self, key) is None or isinstance(getattr(self, key), str), "must be a string")

    def _need(self, key: str, ok: bool, what: str) -> None:
        _need(key, ok, what, getattr(self, key))

    # ------------------------------------------------------------------ the on-disk record

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able dict a run records (the zoo's on-disk spec format)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("record") == IF_SET and value == f.default:
                continue
            if f.name == "modalities":
                value = {m: d.to_dict() for m, d in value.items()}
            out[f.name] = copy.deepcopy(value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelSpec":
        """The spec of an on-disk dict; on ``ModelSpec`` itself, of the family the dict names."""
        if cls is ModelSpec:
            return spec_from_dict(data)
        if not isinstance(data, Mapping):
            raise ConfigError(f"spec: expected a mapping of keys to values, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in data if k not in names)
        if unknown:
            raise ConfigError(f"spec key {unknown[0]}: not a key of a {cls.family} spec "
                              f"(model {data.get('model')!r}); valid keys: {', '.join(sorted(names))}")
        if "model" not in data:
            raise ConfigError("spec key model is missing")
        return cls(**copy.deepcopy(dict(data)))

    def replace(self, **changes: Any) -> "ModelSpec":
        """A checked copy with ``changes`` applied."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ConfigError(f"spec key {unknown[0]}: not a key of a {self.family} spec (model {self.model!r})")
        return dataclasses.replace(self, **changes)

    def missing(self, keys: tuple[str, ...]) -> list[str]:
        """Which of ``keys`` this spec does not record (unset)."""
        record = self.to_dict()
        return [k for k in keys if k not in record]


def _check_stack(spec: ModelSpec, key: str) -> None:
    layers = getattr(spec, key)
    _need(key, isinstance(layers, list) and len(layers) > 0
          and all(isinstance(s, dict) and isinstance(s.get("type"), str) for s in layers),
          "must be a non-empty list of layer specs, each with a 'type'", layers)


def _check_gain(value: Any, allow_map: bool) -> None:
    gains = value.values() if allow_map and isinstance(value, dict) else [value]
    if isinstance(value, dict) and (not allow_map or set(value) - {"visual", "audio"}):
        raise ConfigError(f"spec key init_gain: keys must be visual/audio, got {sorted(value)}")
    if any(not _is_num(g) or float(g) <= 0 for g in gains):
        raise ConfigError(f"spec key init_gain: must be > 0 (or a visual/audio mapping of such), got {value}")


def _check_beta(spec: ModelSpec) -> None:
    if spec.beta is not None:
        _need("beta", _is_num(spec.beta) and 0.0 <= float(spec.beta) <= 1.0, "must lie in [0, 1]", spec.beta)


@dataclass(frozen=True)
class ChipNativeSpec(ModelSpec):
    """A whole-chip SNN (``baseline`` / ``scl``, ``chip_native``): a stack of conv / flatten / dense
    layers, each weight layer followed by an integrate-and-fire (beta 1) or LIF neuron."""

    width: str | None = _if_set()                 # small | medium | paper (the stack it was made from)
    layers: list[Layer] | None = _always()
    beta: float = _always(1.0)
    threshold: float = _always(1.0)
    init_gain: float = _always(1.0)
    bias: bool = _if_set(True)
    scl_weight: float = _if_set(0.1)              # scl's contrastive term (seed A's defaults)
    scl_temperature: float = _if_set(0.07)

    family: ClassVar[str] = "chip-native"

    def _check(self) -> None:
        self._need("model", self.model in WHOLE_CHIP_MODELS and self.chip_native and not self.ann,
                   f"a chip-native spec is one of {', '.join(WHOLE_CHIP_MODELS)} with chip_native")
        if self.layers is None:
            raise ConfigError("spec: chip-native spec has no 'layers'")
        _check_stack(self, "layers")
        _check_beta(self)
        self._need("threshold", _is_num(self.threshold) and self.threshold > 0, "must be > 0")
        _check_gain(self.init_gain, allow_map=False)
        self._need("bias", isinstance(self.bias, bool), "must be true or false")
        self._need("scl_weight", _is_num(self.scl_weight) and self.scl_weight >= 0, "must be >= 0")
        self._need("scl_temperature", _is_num(self.scl_temperature) and self.scl_temperature > 0, "must be > 0")


@dataclass(frozen=True)
class AnnSpec(ModelSpec):
    """The ANN twin of a model (``ann``): its layer stack (ReLU for each neuron). It keeps the
    chip-native keys of the SNN it was made from."""

    layers: list[Layer] | None = _always()
    width: str | None = _if_set()
    beta: float | None = _if_set()
    threshold: float | None = _if_set()
    init_gain: float | dict[str, float] | None = _if_set()

    family: ClassVar[str] = "ANN twin"

    def _check(self) -> None:
        self._need("ann", self.ann is True, "an ANN twin spec has ann: true")
        if self.layers is None:
            raise ConfigError("spec key layers is missing (the ANN twin's layer stack)")
        _check_stack(self, "layers")
        _check_beta(self)
        if self.init_gain is not None:
            _check_gain(self.init_gain, allow_map=True)


def _modality_of(shape: list[int]) -> str:
    return "visual" if len(shape) == 3 else "audio"


@dataclass(frozen=True)
class SeedASpec(ModelSpec):
    """Seed A's models: the seed backbones (or chip-native stacks) and the host heads.

    Architecture keys (all recorded; the defaults are seed A's, widths from ``widths.SEED_A``)."""

    conv_channels: list[int] = _always(factory=lambda: list(SEED_A.visual_conv_channels))
    visual_hidden: list[int] = _always(factory=lambda: list(SEED_A.visual_hidden))
    audio_hidden: list[int] = _always(factory=lambda: list(SEED_A.audio_hidden))
    kernel_size: int = _always(SEED_A.kernel_size)
    threshold: float = _always(1.0)
    # factor on PyTorch's default initial weights (1.0: as the seed ran); joint: a number or
    # {"visual": g, "audio": g}
    init_gain: float | dict[str, float] = _always(1.0)
    readout: str = _always("current")             # "current" (trains) or "spike" (the seed's single-step LIF)
    hopfield_patterns: int = _always(256)
    hopfield_temperature: float = _always(0.1)
    hgrn_layers: int = _always(2)
    hgrn_dim: int | None = _always(None)          # None: the feature width
    hgrn_mlp_ratio: float = _always(2.0)
    # Feature steps summed into one HGRN step: a number or {"visual": w, "audio": w}. Audio's 100
    # steps carry a median of one feature spike each; summed in fours they give the HGRN 25 denser
    # steps, as many as the visual data have (see seed_a.HGRNHead).
    hgrn_window: int | dict[str, int] = _always(factory=lambda: {"visual": 1, "audio": 4})
    # A linear embedding of each (window's) spike vector before the HGRN blocks, per modality: a
    # bool or {"visual": b, "audio": b}. None: HGRN_EMBED.
    hgrn_embed: bool | dict[str, bool] | None = _always()
    scl_weight: float = _always(0.1)
    scl_temperature: float = _always(0.07)
    beta: float | None = _always()                # None: 1.0 chip-native, else 0.9 (the seed's)
    # chip-native backbones: the stack (joint: one per modality) and the size it was made from
    width: str | None = _if_set()
    layers: list[Layer] | None = _if_set()
    visual_layers: list[Layer] | None = _if_set()
    audio_layers: list[Layer] | None = _if_set()
    bias: bool = _if_set(True)

    family: ClassVar[str] = "seed-A"
    #: The architecture keys ``spikeport train`` may set (``--model-options``).
    OPTIONS: ClassVar[tuple[str, ...]] = (
        "chip_native", "conv_channels", "visual_hidden", "audio_hidden", "kernel_size", "threshold",
        "init_gain", "readout", "hopfield_patterns", "hopfield_temperature", "hgrn_layers", "hgrn_dim",
        "hgrn_mlp_ratio", "hgrn_window", "hgrn_embed", "scl_weight", "scl_temperature")
    #: What keys added after the first stored specs meant before they existed: a stored spec that
    #: holds every other architecture key but not these was filled (and trained) before them, and
    #: gets the behaviour it had.
    LEGACY: ClassVar[dict[str, Any]] = {"hgrn_window": 1, "hgrn_embed": False}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SeedASpec":
        if isinstance(data, Mapping) and all(k in data for k in cls.OPTIONS if k not in cls.LEGACY):
            data = {**data, **{k: copy.deepcopy(v) for k, v in cls.LEGACY.items() if k not in data}}
        return super().from_dict(data)  # type: ignore[return-value]

    def _fill(self) -> None:
        if self.model not in SEED_A_MODELS:
            raise ConfigError(f"spec key model: {self.model!r} is not one of {', '.join(SEED_A_MODELS)}")
        if self.beta is None:
            self._set("beta", 1.0 if self.chip_native else 0.9)
        if self.hgrn_embed is None:
            self._set("hgrn_embed", copy.deepcopy(HGRN_EMBED))
        if self.model == "joint":
            shapes = self.input_shapes or {}
            self._set("input_shapes", {m: list(shapes.get(m, DEFAULT_INPUT_SHAPES[m])) for m in ("visual", "audio")})
            if self.num_classes is None:
                self._set("num_classes", 10)
            if self.modality is None:
                self._set("modality", "audiovisual")
            if self.chip_native:
                from spikeport.train.models.chip_native import AUDIO_SMALL, VISUAL_SMALL
                if self.visual_layers is None:
                    self._set("visual_layers", copy.deepcopy(VISUAL_SMALL))
                if self.audio_layers is None:
                    self._set("audio_layers", copy.deepcopy(AUDIO_SMALL))
        else:
            if self.input_shape is None:
                raise ConfigError("spec key input_shape is missing")
            if self.modality is None:
                self._set("modality", _modality_of(self.input_shape))
            if self.modality not in ("visual", "audio"):
                raise ConfigError(f"spec key modality: {self.modality!r} is not visual or audio")
        if self.num_classes is None:
            raise ConfigError("spec key num_classes is missing")
        if self.chip_native and self.model != "joint" and self.layers is None:
            from spikeport.train.models.chip_native import AUDIO_SMALL, VISUAL_SMALL
            layers = copy.deepcopy(VISUAL_SMALL if self.modality == "visual" else AUDIO_SMALL)
            layers[-1]["out_features"] = int(self.num_classes)
            self._set("layers", layers)

    def _check(self) -> None:
        self._need("ann", self.ann is False, "a seed-A spec has ann: false (the twin has its own)")
        if self.readout not in READOUTS:
            raise ConfigError(f"spec key readout: {self.readout!r} is not one of {', '.join(READOUTS)}")
        for key in ("hopfield_patterns", "hgrn_layers", "num_classes", "kernel_size"):
            value = getattr(self, key)
            if not _is_num(value) or int(value) < 1:
                raise ConfigError(f"spec key {key}: must be >= 1, got {value}")
        for key in ("hopfield_temperature", "scl_temperature", "threshold", "hgrn_mlp_ratio"):
            value = getattr(self, key)
            if not _is_num(value) or float(value) <= 0:
                raise ConfigError(f"spec key {key}: must be > 0, got {value}")
        self._need("hgrn_dim", self.hgrn_dim is None or (_is_int(self.hgrn_dim) and self.hgrn_dim >= 1),
                   "must be an integer >= 1 (or null: the feature width)")
        self._need("scl_weight", _is_num(self.scl_weight) and self.scl_weight >= 0, "must be >= 0")
        for key in ("conv_channels", "visual_hidden", "audio_hidden"):
            value = getattr(self, key)
            self._need(key, isinstance(value, list) and all(_is_int(w) and w >= 1 for w in value),
                       "must be a list of widths >= 1")
        _check_gain(self.init_gain, allow_map=True)
        _check_beta(self)
        window = self.hgrn_window
        windows = window.values() if isinstance(window, dict) else [window]
        if (isinstance(window, dict) and set(window) - {"visual", "audio"}) or any(
                not _is_int(w) or w < 1 for w in windows):
            raise ConfigError(f"spec key hgrn_window: must be an integer >= 1 (or a visual/audio mapping of such), "
                              f"got {window!r}")
        embed = self.hgrn_embed
        embeds = embed.values() if isinstance(embed, dict) else [embed]
        if (isinstance(embed, dict) and set(embed) - {"visual", "audio"}) or any(not isinstance(e, bool) for e in embeds):
            raise ConfigError(f"spec key hgrn_embed: must be true or false (or a visual/audio mapping of such), "
                              f"got {embed!r}")
        for key in ("layers", "visual_layers", "audio_layers"):
            if getattr(self, key) is not None:
                _check_stack(self, key)
        self._need("bias", isinstance(self.bias, bool), "must be true or false")


def _square_factors(n: int) -> list[int]:
    h = int(math.isqrt(n))
    while n % h:
        h -= 1
    return [n // h, h]


@dataclass(frozen=True)
class ScmrlSpec(ModelSpec):
    """S-CMRL (audio-visual spiking transformer). Architecture keys all recorded; widths from
    ``widths.SCMRL``, the rest S-CMRL's code's defaults."""

    embed_dim: int = _always(SCMRL.embed_dim)     # paper: 64 (MNISTDVS-NTIDIGITS), 256 (CREMA-D)
    num_heads: int = _always(SCMRL.num_heads)     # paper: 16
    mlp_ratio: float = _always(SCMRL.mlp_ratio)
    attn_scale: float = _always(0.25)
    residual_alpha: float = _always(1.5)
    tau: float = _always(2.0)
    threshold: float = _always(1.0)
    attn_threshold: float = _always(0.5)
    surrogate_alpha: float = _always(4.0)
    token_grid: list[int] = _always(factory=lambda: [3, 3])
    audio_map: list[int] | None = _always()       # None: the most square factorisation of the channel count
    label_smoothing: float = _always(0.1)
    sao_tau: float = _always(0.07)
    sao_weight: float = _always(1.0)
    ccssa: bool = _always(True)                   # False: the cross-modal residual is off (ablation)
    inputs: str = _always("both")                 # "visual" / "audio": one modality alone (unimodal reference)
    beta: float | None = _if_set()                # recorded when given; the braincog LIF uses tau

    family: ClassVar[str] = "S-CMRL"
    OPTIONS: ClassVar[tuple[str, ...]] = (
        "embed_dim", "num_heads", "mlp_ratio", "attn_scale", "residual_alpha", "tau", "threshold",
        "attn_threshold", "surrogate_alpha", "token_grid", "audio_map", "label_smoothing", "sao_tau",
        "sao_weight", "ccssa", "inputs", "chip_native")

    def _fill(self) -> None:
        if self.model != "scmrl":
            raise ConfigError(f"spec key model: {self.model!r} is not 'scmrl'")
        shapes = self.input_shapes or {}
        self._set("input_shapes", {m: list(shapes.get(m, DEFAULT_INPUT_SHAPES[m])) for m in ("visual", "audio")})
        if self.modality is None:
            self._set("modality", "audiovisual")
        if self.num_classes is None:
            raise ConfigError("spec key num_classes is missing")
        if len(self.input_shapes["visual"]) != 3 or len(self.input_shapes["audio"]) != 1:
            raise ConfigError(f"spec key input_shapes: need visual [C, H, W] and audio [N], got {self.input_shapes}")
        if self.audio_map is None:
            self._set("audio_map", _square_factors(self.input_shapes["audio"][0]))

    def _check(self) -> None:
        n_audio = self.input_shapes["audio"][0]
        if len(self.audio_map) != 2 or self.audio_map[0] * self.audio_map[1] != n_audio:
            raise ConfigError(f"spec key audio_map: {self.audio_map} must be [H, W] with H * W = {n_audio} channels")
        e, h = self.embed_dim, self.num_heads
        if not _is_int(e) or e < 8 or e % 8:
            raise ConfigError(f"spec key embed_dim: must be a multiple of 8 (stage widths E/8..E), got {e}")
        if not _is_int(h) or h < 1 or e % h:
            raise ConfigError(f"spec key num_heads: must divide embed_dim {e}, got {h}")
        for key in ("tau", "threshold", "attn_threshold", "surrogate_alpha", "sao_tau", "mlp_ratio"):
            value = getattr(self, key)
            if not _is_num(value) or float(value) <= 0:
                raise ConfigError(f"spec key {key}: must be > 0, got {value}")
        if self.inputs not in SCMRL_INPUTS:
            raise ConfigError(f"spec key inputs: {self.inputs!r} is not one of {', '.join(SCMRL_INPUTS)}")
        for key in ("ccssa", "chip_native"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"spec key {key}: must be true or false, got {getattr(self, key)!r}")
        if not _is_num(self.sao_weight) or float(self.sao_weight) < 0:
            raise ConfigError(f"spec key sao_weight: must be >= 0, got {self.sao_weight}")
        if not _is_num(self.label_smoothing) or not 0.0 <= float(self.label_smoothing) < 1.0:
            raise ConfigError(f"spec key label_smoothing: must lie in [0, 1), got {self.label_smoothing}")
        self._need("token_grid", _is_shape(self.token_grid) and len(self.token_grid) == 2, "must be [rows, columns]")
        self._need("ann", self.ann is False, "an S-CMRL spec has ann: false (the twin has its own)")
        _check_beta(self)


def _defaults(cls: type[ModelSpec], keys: tuple[str, ...]) -> dict[str, Any]:
    by_name = {f.name: f for f in fields(cls)}
    return {k: (by_name[k].default_factory() if by_name[k].default_factory is not dataclasses.MISSING
                else by_name[k].default) for k in keys}


#: Each family's architecture defaults (what ``--model-options`` may set), as a plain dict.
SEED_A_DEFAULTS: dict[str, Any] = {**_defaults(SeedASpec, SeedASpec.OPTIONS), "hgrn_embed": dict(HGRN_EMBED)}
SCMRL_DEFAULTS: dict[str, Any] = _defaults(ScmrlSpec, ScmrlSpec.OPTIONS)
SEED_A_LEGACY_DEFAULTS: dict[str, Any] = SeedASpec.LEGACY


def spec_class(data: Mapping[str, Any]) -> type[ModelSpec]:
    """The family of an on-disk spec dict: ANN twin, S-CMRL, whole-chip SNN or seed A."""
    if data.get("ann"):
        return AnnSpec
    if data.get("model") == "scmrl":
        return ScmrlSpec
    if data.get("chip_native") and data.get("model") in WHOLE_CHIP_MODELS:
        return ChipNativeSpec
    return SeedASpec


def spec_from_dict(data: Mapping[str, Any] | ModelSpec) -> ModelSpec:
    """The typed spec of an on-disk dict (a spec is returned as it is)."""
    if isinstance(data, ModelSpec):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"spec: expected a dict, got {type(data).__name__}")
    if data.get("model") not in MODEL_NAMES:
        raise ConfigError(f"spec key model: unknown model {data.get('model')!r}; valid models: {', '.join(MODEL_NAMES)}")
    return spec_class(data).from_dict(data)
