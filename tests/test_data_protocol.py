"""The dataset protocol: one object per name, av-digits as a composite of its two parts (the same
pairs as the pairing rule computed here from the parts' own tensors), one parser for pair names,
one error for bad names, and no import cycle inside spikeport.data."""
from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from spikeport.data import names, registry
from spikeport.data.av import PairedDataset
from spikeport.data.catalog import DATASETS
from spikeport.data.protocol import Dataset
from spikeport.errors import ConfigError, DataError

DATA_DIR = Path(__file__).resolve().parents[1] / "spikeport" / "data"


@pytest.fixture(scope="module")
def av_root(tmp_path_factory):
    import os
    base = tmp_path_factory.mktemp("av")
    old = os.environ.get("SPIKEPORT_CACHE")
    os.environ["SPIKEPORT_CACHE"] = str(base / "cache")
    root = registry.generate("av-digits", root=base / "data", n=60, seed=0, progress=False)
    yield root
    if old is None:
        os.environ.pop("SPIKEPORT_CACHE", None)
    else:
        os.environ["SPIKEPORT_CACHE"] = old


# ------------------------------------------------------------------------------------------------
# the registry

def test_every_name_is_one_dataset_object():
    assert list(registry.REGISTRY) == list(DATASETS)
    for name, ds in registry.REGISTRY.items():
        assert isinstance(ds, Dataset) and registry.get(name) is ds
        assert ds.info() is DATASETS[name] and ds.name == name
    av = registry.get("av-digits")
    assert isinstance(av, PairedDataset)
    assert av.parts == (registry.get("nmnist-embedded"), registry.get("shd-embedded"))


def test_composite_entry_comes_from_its_parts():
    m = DATASETS["av-digits"]
    # what the av-digits entry said when it was written by hand
    assert (m.modality, m.input_shape, m.input_shapes, m.num_classes, m.timesteps, m.dt, m.dts,
            m.embedded, m.family) == ("audiovisual", [2, 34, 34], [[2, 34, 34], [700]], 10, 25, 0.012,
                                      [0.012, 0.040], True, "NMNIST+SHD")
    assert m.parts == ("nmnist-embedded", "shd-embedded")


# ------------------------------------------------------------------------------------------------
# av-digits: exactly the pairs of its two parts

def _reference_pairs(y_visual: np.ndarray, y_audio: np.ndarray, seed: int, max_samples=None):
    """The pairing rule, written out: one seeded shuffle of each label's audio samples (labels 0-9
    in order), handed out in turn to that label's visual samples (cyclically when short), in
    visual order; then a seeded subset of the pairs."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 31]))
    pools = {label: rng.permutation(np.flatnonzero(y_audio == label)) for label in range(10)}
    handed = defaultdict(int)
    pairs = []
    for i, label in enumerate(y_visual.tolist()):
        pool = pools.get(label, np.zeros(0, np.int64))
        if len(pool):
            pairs.append((i, int(pool[handed[label] % len(pool)])))
            handed[label] += 1
    if max_samples is not None and max_samples < len(pairs):
        keep = np.random.default_rng(np.random.SeedSequence([seed, 32])).permutation(len(pairs))[:max_samples]
        pairs = [pairs[k] for k in sorted(keep)]
    return pairs


def _hand_audio_frames(root: Path, split: str, timesteps: int, bin_us: int) -> np.ndarray:
    """SHD-file spikes binned by hand: counts [N, T, 700] of bin floor(t_us / bin_us)."""
    with h5py.File(root / "SHD" / f"shd_{split}.h5", "r") as f:
        times, units = list(f["spikes/times"]), list(f["spikes/units"])
    out = np.zeros((len(times), timesteps, 700), np.int64)
    for i, (t, u) in enumerate(zip(times, units)):
        t_us = (np.asarray(t, np.float64) * 1e6).astype(np.int64)   # tonic's seconds -> us
        keep = t_us < timesteps * bin_us
        np.add.at(out[i], (t_us[keep] // bin_us, np.asarray(u, np.int64)[keep]), 1)
    return out


@pytest.mark.parametrize("split,seed,timesteps,max_samples", [
    ("train", 0, None, None), ("test", 0, None, None), ("train", 3, 10, 7)])
def test_av_digits_is_the_pairs_of_its_parts(av_root, split, seed, timesteps, max_samples):
    m = DATASETS["av-digits"]
    t = timesteps or m.timesteps
    (xv, xa), y = registry.load_tensors("av-digits", split, root=av_root, timesteps=timesteps,
                                        max_samples=max_samples, seed=seed, progress=False)
    # the parts as their own datasets give them, at the composite's T and bin widths
    pv, yv = registry.load_tensors("nmnist-embedded", split, root=av_root, timesteps=t, seed=seed,
                                   bin_s=m.dts[0], progress=False)
    pa, ya = registry.load_tensors("shd-embedded", split, root=av_root, timesteps=t, seed=seed,
                                   bin_s=m.dts[1], progress=False)
    pairs = _reference_pairs(yv.numpy(), ya.numpy(), seed, max_samples)
    assert len(pairs) == len(y) > 0
    vi = torch.tensor([p[0] for p in pairs])
    ai = torch.tensor([p[1] for p in pairs])
    assert torch.equal(xv, pv[vi]) and torch.equal(xa, pa[ai]) and torch.equal(y, yv[vi])
    assert torch.equal(ya[ai], y) and int(y.max()) <= 9          # English words only: the digit
    if split == "test":  # no val slice: the audio part's rows are the file's samples in order
        hand = _hand_audio_frames(av_root, split, t, int(round(m.dts[1] * 1e6)))
        assert np.array_equal(xa.numpy().astype(np.int64), hand[ai.numpy()])


def test_av_digits_other_methods_go_to_its_parts(av_root):
    av = registry.get("av-digits")
    assert av.generated(av_root) and registry.ensure_generated("av-digits", av_root) == av_root
    text = registry.info("av-digits", root=av_root)
    assert "  nmnist-embedded:" in text and "  shd-embedded:" in text
    assert registry.split_scheme("av-digits", av_root)["scheme"] == "official"
    with pytest.raises(DataError, match="only single-modality event datasets, not 'av-digits'"):
        registry.augmented_tensors("av-digits", root=av_root)
    with pytest.raises(DataError, match="bin widths are the dataset's own"):
        registry.load_tensors("av-digits", "test", root=av_root, bin_s=0.001, progress=False)


# ------------------------------------------------------------------------------------------------
# names

@pytest.mark.parametrize("name,expected", [
    ("nmnist-embedded", ("nmnist-embedded",)),
    ("nmnist-embedded+shd-embedded", ("nmnist-embedded", "shd-embedded")),
    (" nmnist + shd ", ("nmnist", "shd")),
    ("shd-embedded+nmnist-embedded", ("shd-embedded", "nmnist-embedded"))])
def test_parts_of_a_name(name, expected):
    assert names.parts(name) == expected
    assert names.is_pair(name) == (len(expected) == 2)


def test_joint_parts_keep_the_written_order():
    assert names.joint_parts("shd-embedded+nmnist-embedded") == {"audio": "shd-embedded",
                                                                 "visual": "nmnist-embedded"}
    assert list(names.joint_parts("nmnist+shd")) == ["visual", "audio"]
    assert names.parts(names.pair_name("dvsgesture", "ssc")) == ("dvsgesture", "ssc")


@pytest.mark.parametrize("name,message", [
    ("mnist", "unknown dataset 'mnist'"),
    ("nmnist-embedded+", "malformed pair 'nmnist-embedded+'"),
    ("+shd", "malformed pair '+shd'"),
    ("nmnist+shd+ssc", "malformed pair 'nmnist+shd+ssc'"),
    ("shd+shd", "malformed pair 'shd+shd'"),
    ("nmnist+cifar", "unknown dataset 'cifar' in 'nmnist+cifar'")])
def test_bad_names_get_one_config_error_listing_the_valid_names(name, message):
    with pytest.raises(ConfigError) as err:
        names.parts(name)
    text = str(err.value)
    assert message in text and all(n in text for n in DATASETS), text


@pytest.mark.parametrize("name,message", [
    ("nmnist+nmnist-embedded", "one visual and one audio dataset, not visual and visual"),
    ("av-digits+shd", "one visual and one audio dataset, not audiovisual and audio"),
    ("nmnist", "is one dataset")])
def test_joint_parts_need_one_visual_and_one_audio(name, message):
    with pytest.raises(ConfigError, match=message):
        names.joint_parts(name)


def test_every_stage_reports_a_bad_name_the_same_way(tmp_path):
    from spikeport.train.models import default_spec
    calls = [lambda n: registry.load_tensors(n, "train", root=tmp_path),
             lambda n: registry.generate(n, root=tmp_path), lambda n: registry.info(n),
             lambda n: registry.split_scheme(n), lambda n: default_spec("baseline", n),
             lambda n: default_spec("joint", n)]
    for name in ("cifar", "nmnist-embedded+"):
        messages = set()
        for call in calls:
            with pytest.raises(ConfigError) as err:
                call(name)
            assert isinstance(err.value, DataError)   # what the data functions raised before
            messages.add(str(err.value))
        assert len(messages) == 1, messages
    with pytest.raises(ConfigError, match="names two datasets"):
        registry.load_tensors("nmnist-embedded+shd-embedded", "train", root=tmp_path)


def test_joint_spec_from_a_pair_name():
    from spikeport.train.models import default_spec
    spec = default_spec("joint", "nmnist-embedded+shd-embedded", chip_native=True)
    assert {k: v.dataset for k, v in spec.modalities.items()} == {"visual": "nmnist-embedded",
                                                                   "audio": "shd-embedded"}
    assert spec.modalities["audio"].input_shape == [700]


# ------------------------------------------------------------------------------------------------
# imports

def _data_modules() -> list[str]:
    return sorted(p.stem for p in DATA_DIR.glob("*.py") if p.stem != "__init__")


def test_spikeport_data_imports_form_no_cycle():
    """Every import between spikeport.data modules, module-level or inside a function, read from
    the source: the graph has no cycle (a function-level circle is a circle all the same)."""
    mods = set(_data_modules())
    graph: dict[str, set[str]] = {}
    for mod in mods:
        deps = set()
        for node in ast.walk(ast.parse((DATA_DIR / f"{mod}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "spikeport.data":
                deps |= {a.name for a in node.names if a.name in mods}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("spikeport.data."):
                deps.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[2] for a in node.names if a.name.startswith("spikeport.data.")}
        graph[mod] = deps & mods
    assert graph["av"] and "registry" not in graph["av"]
    state: dict[str, int] = {}

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for dep in sorted(graph[mod]):
            assert state.get(dep) != 1, f"import cycle: {' -> '.join(path + [mod, dep])}"
            if dep not in state:
                visit(dep, path + [mod])
        state[mod] = 2

    for mod in sorted(mods):
        if mod not in state:
            visit(mod, [])


def test_each_data_module_imports_on_its_own():
    """Every module of spikeport.data imported first, in an interpreter with no spikeport module
    loaded (one interpreter, spikeport's modules dropped before each import: the third-party
    libraries it keeps loaded cannot take part in a cycle of ours, and it saves ~3 s a module)."""
    code = (
        "import importlib, sys\n"
        f"failed = []\nfor mod in {_data_modules()!r}:\n"
        "    for k in [k for k in sys.modules if k == 'spikeport' or k.startswith('spikeport.')]:\n"
        "        del sys.modules[k]\n"
        "    try:\n"
        "        importlib.import_module('spikeport.data.' + mod)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{mod}: {exc!r}')\n"
        "print('\\n'.join(failed))\nsys.exit(1 if failed else 0)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
