"""Real-data runs: a run trained on a root elsewhere exports and deploys from that root; the
binning preset is recorded; the hold-out split of an N-MNIST Train-only folder is fixed and
disjoint from training. Fast, and needs no ../shared: the root is written here in the real
N-MNIST file format by the embedded generator (only a Train folder, as the real subset has)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from spikeport.data import nmnist, registry, sources


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEPORT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SPIKEPORT_WORKERS", "1")
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def _generated_root(tmp_path_factory) -> Path:
    from spikeport.data.embedded_visual import write_dataset
    root = tmp_path_factory.mktemp("generated")
    os.environ.setdefault("SPIKEPORT_WORKERS", "1")
    write_dataset(root, n=40, seed=0, progress=False)
    return root


@pytest.fixture
def train_only_root(tmp_path, cache, _generated_root) -> Path:
    """``<root>/NMNIST/Train/<label>/<id>.bin`` with 40 recordings and no Test folder."""
    root = tmp_path / "elsewhere" / "nmnist_root"
    shutil.copytree(_generated_root, root)
    # the generator's test files become training files too (ids are unique): 40 in all
    for f in sorted((root / "NMNIST" / "Test").rglob("*.bin")):
        dest = root / "NMNIST" / "Train" / f.parent.name
        dest.mkdir(exist_ok=True)
        shutil.move(str(f), dest / f.name)
    shutil.rmtree(root / "NMNIST" / "Test")
    (root / "NMNIST" / "spikeport.json").unlink()
    assert sum(1 for _ in (root / "NMNIST" / "Train").rglob("*.bin")) == 40
    sources.open_split.cache_clear()
    return root


def _indices(root: Path, split: str, seed: int = 0, max_samples=None) -> np.ndarray:
    m = registry.meta("nmnist")
    return registry._select(m, root, split, seed, max_samples)[1]


def test_holdout_is_fixed_and_disjoint(train_only_root):
    root = train_only_root
    test = _indices(root, "test")
    train, val = _indices(root, "train"), _indices(root, "val")
    assert len(test) == round(40 * registry.HOLDOUT_FRACTION) == 8
    assert not set(test) & set(train) and not set(test) & set(val) and not set(train) & set(val)
    assert sorted(set(test) | set(train) | set(val)) == list(range(40))
    # deterministic, and the held-out part does not move with the training seed or a subset
    np.testing.assert_array_equal(test, _indices(root, "test"))
    np.testing.assert_array_equal(test, _indices(root, "test", seed=5))
    np.testing.assert_array_equal(test, registry.holdout_indices(40))
    for seed in (0, 1, 7):
        assert not set(test) & set(_indices(root, "train", seed=seed, max_samples=10))
        assert not set(test) & set(_indices(root, "val", seed=seed))
    scheme = registry.split_scheme("nmnist", root)
    assert scheme["scheme"] == "holdout" and (scheme["train"], scheme["val"], scheme["test"]) == (29, 3, 8)
    # with a Test folder the dataset's own split is used
    (root / "NMNIST" / "Test").mkdir()
    shutil.copytree(root / "NMNIST" / "Train" / "0", root / "NMNIST" / "Test" / "0")
    assert registry.split_scheme("nmnist", root)["scheme"] == "official"


def test_augmented_copies_are_reproducible_and_train_only(train_only_root):
    from spikeport.data.preprocess import Augment
    x, y = registry.load_tensors("nmnist", "train", root=train_only_root, progress=False)
    xa, ya = registry.augmented_tensors("nmnist", root=train_only_root, copies=2, progress=False)
    assert xa.shape == (2 * x.shape[0], *x.shape[1:]) and ya.tolist() == y.tolist() * 2
    assert not np.array_equal(xa[: len(x)].float().numpy(), x.numpy())   # augmented
    sources.open_split.cache_clear()
    again, _ = registry.augmented_tensors("nmnist", root=train_only_root, copies=2, progress=False,
                                          augment=Augment())
    np.testing.assert_array_equal(again.numpy(), xa.numpy())
    # events stay on the sensor and in time order after every transform
    ev, _ = sources.read("NMNIST", str(train_only_root), "train", 0)
    out = Augment(shift_px=3, spatial_var=1.0).apply(ev, nmnist.SENSOR, [0, 1])
    assert out["x"].min() >= 0 and out["x"].max() < 34 and out["y"].max() < 34
    assert np.all(np.diff(out["t"]) >= 0) and out.dtype == ev.dtype


def test_run_on_a_root_elsewhere_exports_and_deploys(train_only_root, tmp_path, monkeypatch):
    from spikeport.deploy.run import deploy_run
    from spikeport.export.run import export_run
    from spikeport.train.checkpoint import load_run_model
    from spikeport.train.run import train_run

    run = tmp_path / "runs" / "real"
    metrics = train_run(model="baseline", dataset="nmnist", out=run, chip_native=True,
                        root=train_only_root, epochs=1, augment=1, progress=False)
    assert metrics.test_samples == 8   # scored on the hold-out
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["root"] == str(train_only_root.resolve())
    assert (config["preset"], config["timesteps"], config["bin_s"], config["augment"]) == ("default", 15, 0.02, 1)
    assert config["split"]["scheme"] == "holdout" and config["split"]["test"] == 8
    data = json.loads((run / "metrics.json").read_text())["data"]
    assert data["preset"] == "default" and data["split"]["holdout_seed"] == registry.HOLDOUT_SEED
    _, spec = load_run_model(run)
    assert spec.root == str(train_only_root.resolve()) and spec.dt == 0.02

    # from another working directory, with an empty cache: the recorded root is what is read
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("SPIKEPORT_CACHE", str(tmp_path / "empty-cache"))
    info = export_run(run, samples=4)
    assert info.verification.exact and info.dt == 0.02 and info.timesteps == 15
    for target in ("loihi2", "speck"):
        stats = deploy_run(run, target=target, samples=4)
        assert stats.samples == 4
        assert (run / "deploy" / target / "stats.json").is_file()


def test_export_takes_root_override_and_says_where_data_are_missing(train_only_root, tmp_path):
    from spikeport.errors import DataError
    from spikeport.export.run import export_run
    from spikeport.train.run import train_run

    run = tmp_path / "runs" / "moved"
    train_run(model="baseline", dataset="nmnist", out=run, chip_native=True, root=train_only_root,
              epochs=1, augment=0, max_samples=8, timesteps=6, progress=False)
    moved = tmp_path / "moved_root"
    shutil.move(str(train_only_root), moved)
    sources.open_split.cache_clear()
    with pytest.raises(DataError, match="N-MNIST folder not found"):
        export_run(run, samples=2)
    info = export_run(run, samples=2, root=moved)
    assert info.verification.exact


def test_paper_preset_is_recorded(train_only_root, tmp_path):
    from spikeport.train.run import train_run

    run = tmp_path / "runs" / "paper"
    metrics = train_run(model="baseline", dataset="nmnist", out=run, chip_native=True,
                        root=train_only_root, epochs=1, preset="paper", max_samples=8, progress=False)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["preset"], config["timesteps"], config["bin_s"], config["augment"]) == ("paper", 25, 0.001, 0)
    assert metrics.model_extra["data"]["preset"] == "paper"
    assert registry.preset("nmnist", "paper") == (25, 0.001)
    assert registry.preset("nmnist") == (registry.meta("nmnist").timesteps, registry.meta("nmnist").dt)


def test_unknown_preset_is_a_config_error(train_only_root, tmp_path):
    from spikeport.errors import ConfigError
    from spikeport.train.run import train_run
    with pytest.raises(ConfigError, match="preset"):
        train_run(model="baseline", dataset="nmnist", out=tmp_path / "r", chip_native=True,
                  root=train_only_root, epochs=1, preset="nope", progress=False)


def test_train_help_lists_models_datasets_and_presets():
    from typer.testing import CliRunner

    from spikeport.cli import app
    out = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    for name in ("baseline", "scmrl", "nmnist-embedded", "dvsgesture", "paper"):
        assert name in out
    assert "see `spikeport train --help`" not in out


def test_train_on_val_and_the_regularisers_from_a_config_file(train_only_root, tmp_path):
    from spikeport.train.run import train_run

    recipe = {"shift_px": 3, "drop_p": 0.1, "label_smoothing": 0.1, "ema": 0.995, "spike_dropout": 0.05}
    cfg_file = tmp_path / "recipe.yaml"
    cfg_file.write_text(yaml.safe_dump({**recipe, "augment": 0, "train_on_val": True}))
    run = tmp_path / "runs" / "all"
    metrics = train_run(model="baseline", dataset="nmnist", out=run, chip_native=True,
                        root=train_only_root, epochs=1, progress=False, config=cfg_file)
    config = yaml.safe_load((run / "config.yaml").read_text())
    for key, value in recipe.items():
        assert config[key] == value and metrics.config[key] == value, key
    # 40 recordings: 8 held out, the 29 + 3 others all train; nothing is left to validate on
    assert config["train_on_val"] is True
    assert metrics.train_samples == 32 and metrics.test_samples == 8
    assert metrics.best_val_accuracy is None
    # a fine-tuning run keeps the val split to pick its epoch
    ft = tmp_path / "runs" / "ft"
    fm = train_run(model="baseline", dataset="nmnist", out=ft, chip_native=True, root=train_only_root,
                   progress=False, finetune_for="speck", init_from=str(run), finetune_epochs=1, augment=0,
                   train_on_val=True)
    assert fm.train_samples == 29 and yaml.safe_load((ft / "config.yaml").read_text())["train_on_val"] is False
    # the defaults of real N-MNIST: those regularisers, no fixed copies, val joins training;
    # train_on_val false keeps 29 training and 3 validating
    from spikeport.train.config import DEFAULT_REGULARISERS
    off = train_run(model="baseline", dataset="nmnist", out=tmp_path / "runs" / "off", chip_native=True,
                    root=train_only_root, epochs=1, progress=False, train_on_val=False)
    config = yaml.safe_load((tmp_path / "runs" / "off" / "config.yaml").read_text())
    assert config["augment"] == 0 and config["train_on_val"] is False
    assert all(config[k] == v for k, v in DEFAULT_REGULARISERS["nmnist"].items())
    assert off.train_samples == 29 and off.best_val_accuracy is not None


def test_batch_norm_run_saves_folded_layers_that_export_deploy_and_finetune(train_only_root, tmp_path):
    from spikeport.deploy.run import deploy_run
    from spikeport.export.run import export_run
    from spikeport.train.checkpoint import RESUME_FILE, RESUME_FORMAT, load_run_model, read_checkpoint
    from spikeport.train.run import train_run

    run = tmp_path / "runs" / "bn"
    train_run(model="baseline", dataset="nmnist", out=run, chip_native=True, root=train_only_root,
              epochs=1, progress=False, batch_norm=True, train_on_val=False)
    assert yaml.safe_load((run / "config.yaml").read_text())["batch_norm"] is True
    # trained with BatchNorm (the resume state holds its statistics), saved folded
    state = read_checkpoint(run / RESUME_FILE, RESUME_FORMAT)
    assert any(k.startswith("blocks.bn") and k.endswith("running_var") for k in state["model"])
    assert sum("batch_norm" in layer for layer in state["spec"]["layers"]) == 5   # every weight layer
    model, spec = load_run_model(run)
    assert not any(name.startswith("bn") for name in model.blocks)
    assert all("batch_norm" not in layer for layer in spec.layers)
    info = export_run(run, samples=4)
    assert info.verification.exact
    for target in ("loihi2", "speck"):
        assert deploy_run(run, target=target, samples=4).samples == 4
    ft = train_run(model="baseline", dataset="nmnist", out=tmp_path / "runs" / "ft", chip_native=True,
                   root=train_only_root, progress=False, finetune_for="loihi2", init_from=str(run),
                   finetune_epochs=1)
    assert ft.finetune["target"] == "loihi2"


def test_batch_norm_is_only_for_chip_native_models(train_only_root, tmp_path):
    from spikeport.errors import ConfigError
    from spikeport.train.run import train_run

    with pytest.raises(ConfigError, match="batch_norm"):
        train_run(model="baseline", dataset="nmnist", out=tmp_path / "r", root=train_only_root,
                  epochs=1, progress=False, batch_norm=True)
    with pytest.raises(ConfigError, match="batch_norm: must be true or false"):
        train_run(model="baseline", dataset="nmnist", out=tmp_path / "r", chip_native=True,
                  root=train_only_root, epochs=1, progress=False, batch_norm="yes")
