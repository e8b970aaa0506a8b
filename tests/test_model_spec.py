"""The typed model spec: checked where it is built, a round trip through its on-disk dict, and the
dicts runs already hold (``tests/data/specs_v1.json``: every spec family as the zoo wrote them
before the spec was typed, including what ``spikeport train`` and export add) still load.

The fixture was written by the untyped zoo itself (commit f7df59a): ``default_spec`` for each
model, variant, width and option below, the keys ``spikeport train`` / ``qat`` added to its
result (dt, preset, root, finetuned_for / finetuned_from), and ``seed_a.joint_part`` /
``scmrl.chip_part`` of built models."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from spikeport.errors import ArtifactError, ConfigError
from spikeport.train.checkpoint import MODEL_FORMAT, VERSION, load_run_model
from spikeport.train.models import build_model, default_spec
from spikeport.train.models.spec import (AnnSpec, ChipNativeSpec, ModelSpec, ScmrlSpec, SeedASpec, spec_class,
                                         spec_from_dict)
from spikeport.train.models.widths import seed_a_layers

OLD = {e["name"]: e["spec"] for e in json.loads((Path(__file__).parent / "data" / "specs_v1.json").read_text())}
#: Keys that come from the dataset registry (not the spec's own doing).
DATA_KEYS = {"dataset", "modality", "input_shape", "input_shapes", "num_classes", "timesteps", "dt", "dts",
             "modalities", "label_mod"}



def meant(old: dict) -> dict:
    """What an old dict means: a seed-A spec stored before hgrn_window / hgrn_embed existed gets
    the values it was trained with (SeedASpec.LEGACY)."""
    if spec_class(old) is SeedASpec:
        return {**old, **{k: v for k, v in SeedASpec.LEGACY.items() if k not in old}}
    return old


AUDIO = {"model": "hgrn", "chip_native": False, "ann": False, "dataset": "shd-embedded", "modality": "audio",
         "input_shape": [700], "num_classes": 20, "timesteps": 100, "dt": 0.01, "seed": 0}


@pytest.mark.parametrize("key, value", [
    ("num_classes", 0), ("timesteps", 0), ("dt", -0.001), ("seed", -1), ("input_shape", [0]),
    ("modality", "tactile"), ("part", "left"), ("chip_native", "yes"), ("readout", "softmax"),
    ("hopfield_patterns", 0), ("hopfield_temperature", 0.0), ("beta", 1.5), ("init_gain", 0),
    ("hgrn_dim", 0), ("visual_hidden", [1024, -1]), ("root", 3), ("beta", "high"),
    ("hgrn_window", {"audio": 0}), ("hgrn_embed", "yes"),
])
def test_a_bad_seed_a_value_names_its_key(key, value):
    with pytest.raises(ConfigError, match=f"spec key {key}"):
        spec_from_dict({**AUDIO, key: value})
    with pytest.raises(ConfigError, match=f"spec key {key}"):
        spec_from_dict(AUDIO).replace(**{key: value})


@pytest.mark.parametrize("key, value", [
    ("embed_dim", 12), ("num_heads", 5), ("inputs", "all"), ("token_grid", [3]), ("audio_map", [7, 7]),
    ("sao_weight", -1.0), ("label_smoothing", 1.0), ("ccssa", 1), ("input_shapes", [[2, 34, 34], [700]]),
])
def test_a_bad_scmrl_value_names_its_key(key, value):
    with pytest.raises(ConfigError, match=f"spec key {key}"):
        spec_from_dict({**OLD["scmrl"], key: value})


@pytest.mark.parametrize("name, key, value", [
    ("baseline-shd-embedded-chip", "layers", []), ("baseline-shd-embedded-chip", "threshold", 0),
    ("baseline-shd-embedded-chip", "bias", "no"), ("baseline-shd-embedded-ann", "layers", [{"out_features": 3}]),
    ("joint-nmnist-embedded+shd-embedded", "modalities", {"visual": {"dataset": "x"}}),
    ("joint-nmnist-embedded+shd-embedded", "label_mod", 0),
])
def test_a_bad_stack_or_joint_value_names_its_key(name, key, value):
    with pytest.raises(ConfigError, match=f"spec key {key}"):
        spec_from_dict({**OLD[name], key: value})


def test_unknown_keys_and_models_are_named():
    with pytest.raises(ConfigError, match="spec key hopfield_pattern: not a key of a seed-A spec"):
        spec_from_dict({**AUDIO, "hopfield_pattern": 128})   # a typo of hopfield_patterns
    with pytest.raises(ConfigError, match="spec key embed_dim: not a key"):
        spec_from_dict({**AUDIO, "embed_dim": 64})            # an S-CMRL key on a seed-A model
    with pytest.raises(ConfigError, match="spec key model: unknown model 'resnet'"):
        spec_from_dict({**AUDIO, "model": "resnet"})
    with pytest.raises(ConfigError, match="spec key embed_dim: not a key"):
        spec_from_dict(AUDIO).replace(embed_dim=64)


def test_a_spec_is_frozen():
    spec = spec_from_dict(AUDIO)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.num_classes = 3  # type: ignore[misc]
    assert spec.replace(timesteps=7).timesteps == 7 and spec.timesteps == 100


@pytest.mark.parametrize("name", sorted(OLD))
def test_an_old_format_dict_loads_and_writes_back_what_it_meant(name):
    old = OLD[name]
    spec = spec_from_dict(old)
    assert spec.to_dict() == meant(old)
    assert json.loads(json.dumps(spec.to_dict())) == meant(old)
    if isinstance(spec, SeedASpec):
        assert spec.hgrn_window == 1 and spec.hgrn_embed is False  # the step-by-step head it trained
    expected = AnnSpec if old["ann"] else ScmrlSpec if old["model"] == "scmrl" else \
        ChipNativeSpec if old["chip_native"] and old["model"] in ("baseline", "scl") else SeedASpec
    assert type(spec) is expected and type(ModelSpec.from_dict(old)) is expected


@pytest.mark.parametrize("name", sorted(OLD))
def test_a_spec_round_trips_through_its_dict(name):
    spec = spec_from_dict(OLD[name])
    again = spec_from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again is not spec
    assert type(spec).from_dict(spec.to_dict()) == spec


def test_a_spec_owns_its_lists():
    layers = [{"type": "dense", "out_features": 4}]
    spec = ChipNativeSpec(model="baseline", chip_native=True, input_shape=[8], num_classes=4, layers=layers)
    layers[0]["out_features"] = 9
    assert spec.layers[0]["out_features"] == 4
    record = spec.to_dict()
    record["layers"][0]["out_features"] = 9
    assert spec.layers[0]["out_features"] == 4


def test_default_spec_writes_what_the_untyped_zoo_wrote():
    # the architecture keys of default_spec against the dicts the zoo wrote before the spec was
    # typed (the data keys come from the dataset registry and are left out, and the HGRN window
    # keys are newer than those dicts)
    calls = {
        "hgrn-nmnist-embedded": default_spec("hgrn", "nmnist-embedded"),
        "hybrid-shd-embedded-chip": default_spec("hybrid", "shd-embedded", chip_native=True),
        "baseline-nmnist-embedded-chip-ann": default_spec("baseline", "nmnist-embedded", chip_native=True, ann=True),
        "baseline-chip-paper": default_spec("baseline", "nmnist-embedded", chip_native=True, width="paper"),
        "hopfield-spike-readout": default_spec("hopfield", "shd-embedded", readout="spike",
                                               options={"hopfield_temperature": 0.2}),
        "joint-nmnist-embedded+shd-embedded-chip": default_spec("joint", "nmnist-embedded+shd-embedded",
                                                                chip_native=True),
        "scmrl-ablation": default_spec("scmrl", "av-digits", options={"ccssa": False, "sao_weight": 0.0}),
    }
    for name, spec in calls.items():
        got = {k: v for k, v in spec.to_dict().items() if k not in DATA_KEYS | set(SeedASpec.LEGACY)}
        want = {k: v for k, v in OLD[name].items() if k not in DATA_KEYS}
        assert got == want, name


def test_paper_widths_by_hand():
    # FACTS §6: conv 32 / 64 (5x5), dense 1024 / 512; audio dense 1024 / 1024 / 512
    assert seed_a_layers("audio", 20, "stride") == [
        {"type": "dense", "out_features": 1024}, {"type": "dense", "out_features": 1024},
        {"type": "dense", "out_features": 512}, {"type": "dense", "out_features": 20}]
    pooled = seed_a_layers("visual", 10, "pool")
    assert [(s["type"], s.get("out_channels", s.get("out_features"))) for s in pooled] == [
        ("conv", 32), ("maxpool", None), ("conv", 64), ("maxpool", None), ("flatten", None),
        ("dense", 1024), ("dense", 512), ("dense", 10)]
    # the chip-native paper stack: 34 -> (34 - 5) // 2 + 1 = 15 -> (15 - 5) // 2 + 1 = 6, so fc1 sees 64 * 6 * 6
    net = build_model(OLD["baseline-chip-paper"])
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items() if k.endswith(".weight")}
    assert shapes["blocks.conv1.weight"] == (32, 2, 5, 5) and shapes["blocks.conv2.weight"] == (64, 32, 5, 5)
    assert shapes["blocks.fc1.weight"] == (1024, 2304) and shapes["blocks.fc3.weight"] == (10, 512)
    # the seed backbone (pooling): 34 - 4 = 30 -> 15 -> 11 -> 5, so fc1 sees 64 * 5 * 5 = 1600
    seed = build_model(OLD["baseline-nmnist-embedded"]).state_dict()
    assert tuple(seed["backbone.layers.fc1.weight"].shape) == (1024, 1600)


def test_an_old_model_pt_loads(tmp_path):
    # a model.pt as the untyped zoo wrote it: the spec a plain dict
    old = OLD["run-baseline-chip"]
    torch.manual_seed(0)
    model = build_model(old)
    payload = {"format": MODEL_FORMAT, "version": VERSION, "spec": old, "seed": 3, "epoch": 1, "val_accuracy": None,
               "state_dict": {k: v.clone() for k, v in model.state_dict().items()}}
    torch.save(payload, tmp_path / "model.pt")
    loaded, spec = load_run_model(tmp_path)
    assert isinstance(spec, ChipNativeSpec) and spec.root == "/data/shd" and spec.dt == 0.002
    x = (torch.rand(2, 4, 700) < 0.2).float()
    assert torch.equal(loaded(x).logits, model(x).logits)
    # a spec this version cannot read: one error naming the file and the key
    torch.save({**payload, "spec": {**old, "threshold": -1.0}}, tmp_path / "model.pt")
    with pytest.raises(ArtifactError, match="model.pt.*spec key threshold"):
        load_run_model(tmp_path)


def test_part_specs_are_those_the_untyped_zoo_wrote():
    from spikeport.train.models import scmrl, seed_a
    joint = build_model(OLD["joint-nmnist-embedded+shd-embedded-chip"])
    for mod in ("visual", "audio"):
        assert seed_a.joint_part(joint, mod)[0].to_dict() == meant(OLD[f"joint-part-{mod}"])
    # the S-CMRL the parts came from: the visual part's spec without its part (its dt is the visual one)
    whole = {k: v for k, v in OLD["scmrl-part-visual"].items() if k != "part"}
    net = build_model(whole)
    for mod in ("visual", "audio"):
        assert scmrl.chip_part(net, mod)[0].to_dict() == OLD[f"scmrl-part-{mod}"]


def test_hgrn_embedding_defaults_per_model():
    assert SeedASpec(model="hgrn", input_shape=[700], num_classes=20).hgrn_embed == {"visual": True, "audio": True}
    assert SeedASpec(model="joint").hgrn_embed == {"visual": True, "audio": True}
    assert SeedASpec(model="joint", hgrn_embed=False).hgrn_embed is False
    assert spec_from_dict(OLD["joint-nmnist-embedded+shd-embedded"]).hgrn_embed is False  # stored before the key
