"""`spikeport train` end to end on a tiny generated dataset: files, metrics, reload, errors."""
from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from spikeport.cli import app
from spikeport.io import read_json_model
from spikeport.schemas import Metrics
from spikeport.train.checkpoint import load_run_model


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    import os
    root = tmp_path_factory.mktemp("data")
    old = os.environ.get("SPIKEPORT_CACHE")
    os.environ["SPIKEPORT_CACHE"] = str(root / "cache")  # keep binned frames out of the user's cache
    from spikeport.data.registry import generate
    generate("nmnist-embedded", root=root, n=40, progress=False)
    yield root
    if old is None:
        os.environ.pop("SPIKEPORT_CACHE", None)
    else:
        os.environ["SPIKEPORT_CACHE"] = old


def train(*args: str):
    return CliRunner().invoke(app, ["train", *args])


def test_train_writes_a_run_that_reloads(data_root, tmp_path):
    from spikeport.data.registry import load_tensors
    out = tmp_path / "run"
    res = train("--model", "baseline", "--chip-native", "--dataset", "nmnist-embedded", "--root",
                str(data_root), "--epochs", "1", "--batch-size", "8", "--seed", "3", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert {"model.pt", "metrics.json", "config.yaml", "checkpoint.pt"} <= {p.name for p in out.iterdir()}
    metrics = read_json_model(out / "metrics.json", Metrics)
    assert metrics.seed == 3 and len(metrics.epochs) == 1 and metrics.device.startswith("cpu")
    model, spec = load_run_model(out)
    assert spec.chip_native and spec.dataset == "nmnist-embedded" and spec.seed == 3
    # the recorded test accuracy is what the reloaded model scores on the test split
    x, y = load_tensors("nmnist-embedded", "test", root=data_root, progress=False)
    with torch.no_grad():
        acc = (model(x).logits.argmax(1) == y).float().mean().item()
    assert acc == pytest.approx(metrics.test_accuracy)

    # a finished run resumes to the same end; a changed recipe is refused, naming the key
    res = train("--model", "baseline", "--chip-native", "--dataset", "nmnist-embedded", "--root",
                str(data_root), "--epochs", "2", "--out", str(out), "--resume")
    assert res.exit_code == 2 and "epochs" in res.output


def test_ann_twin_run(data_root, tmp_path):
    out = tmp_path / "run_ann"
    res = train("--model", "baseline", "--chip-native", "--ann", "--dataset", "nmnist-embedded",
                "--root", str(data_root), "--epochs", "1", "--out", str(out))
    assert res.exit_code == 0, res.output
    model, spec = load_run_model(out)
    assert spec.ann and "fc1.weight" in {k.split("blocks.")[-1] for k in model.state_dict()}


def test_bad_input_is_one_clear_line(data_root, tmp_path):
    res = train("--model", "resnet", "--dataset", "nmnist-embedded", "--out", str(tmp_path / "r"))
    assert res.exit_code == 2 and "baseline" in res.output and "scmrl" in res.output
    assert "Traceback" not in res.output
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: -0.1\n")
    res = train("--model", "baseline", "--dataset", "nmnist-embedded", "--config", str(cfg),
                "--out", str(tmp_path / "r"))
    assert res.exit_code == 2 and "lr:" in res.output
    res = train("--model", "baseline", "--dataset", "nmnist-embedded", "--out", str(tmp_path / "none"),
                "--resume")
    assert res.exit_code == 2 and "no checkpoint to resume" in res.output


def test_model_options_from_a_config_file(data_root, tmp_path):
    """``model_options`` in a --config YAML sets the model's architecture keys (S-CMRL's size, seed
    A's Hopfield temperature, ...); an unknown key or a non-mapping is one clear error."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model_options:\n  hopfield_temperature: 0.2\n")
    out = tmp_path / "hop"
    res = train("--model", "hopfield", "--dataset", "nmnist-embedded", "--root", str(data_root),
                "--epochs", "1", "--max-samples", "16", "--config", str(cfg), "--out", str(out))
    assert res.exit_code == 0, res.output
    _, spec = load_run_model(out)
    assert spec.hopfield_temperature == 0.2
    for text, named in (("model_options:\n  no_such_key: 1\n", "no_such_key"),
                        ("model_options: 32\n", "model_options")):
        cfg.write_text(text)
        res = train("--model", "hopfield", "--dataset", "nmnist-embedded", "--root", str(data_root),
                    "--epochs", "1", "--config", str(cfg), "--out", str(tmp_path / "bad"))
        assert res.exit_code == 2 and named in res.output and "Traceback" not in res.output
        assert not (tmp_path / "bad" / "model.pt").exists()
