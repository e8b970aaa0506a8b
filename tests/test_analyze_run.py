"""`spikeport analyze` on tiny models: features, files written, cross-modal pairs, bad input."""
import json

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import spikeport.analyze as analyze
from spikeport.analyze import CONTINUOUS, SPIKE_RATE, analyze_model, extract_features
from spikeport.cli import app
from spikeport.errors import ArtifactError, ConfigError
from spikeport.io import read_json_model
from spikeport.schemas import Analysis
from spikeport.train.models.base import ModelOutput
from spikeport.train.models.chip_native import ChipNativeSNN
from spikeport.train.models.spec import SeedASpec

VISUAL = [{"type": "conv", "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1},
          {"type": "flatten"},
          {"type": "dense", "out_features": 12},
          {"type": "dense", "out_features": 3}]
AUDIO = [{"type": "dense", "out_features": 10}, {"type": "dense", "out_features": 6}]
PNG = b"\x89PNG\r\n\x1a\n"


def _visual(n=24, T=5, seed=0):
    torch.manual_seed(seed)
    model = ChipNativeSNN([2, 8, 8], VISUAL, beta=0.9, threshold=0.5)
    y = torch.arange(n) % 3
    # class-dependent event density, so classes differ in the spike rates
    x = (torch.rand(n, T, 2, 8, 8) < 0.05 + 0.1 * y.view(-1, 1, 1, 1, 1)).float()
    return model, x, y


def _audio(n=36, T=5, seed=1):
    torch.manual_seed(seed)
    model = ChipNativeSNN([20], AUDIO, beta=0.9, threshold=0.5)
    y = torch.arange(n) % 6  # 6 classes: mod 3 -> the visual run's 3
    x = (torch.rand(n, T, 20) < 0.1 + 0.05 * y.view(-1, 1, 1)).float()
    return model, x, y


class TinyHybrid(nn.Module):
    """A spiking backbone with a continuous host head (like the first paper's HGRN models)."""

    def __init__(self):
        super().__init__()
        self.backbone = ChipNativeSNN([2, 8, 8], VISUAL[:3] + [{"type": "dense", "out_features": 12}],
                                      beta=0.9, threshold=0.5)
        self.head = nn.Sequential(nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x, record=False):
        b = self.backbone(x, record=record)
        rates = b.features / x.shape[1]
        return ModelOutput(logits=self.head(rates), features=rates, spikes=b.spikes)


def test_spike_rates_and_feature_layer_match_the_recorded_spikes():
    model, x, y = _visual()
    ex = extract_features(model, x, y, samples_per_class=5)
    assert ex.labels.tolist() == y[:15].tolist()  # first 5 of each class, in data order
    with torch.no_grad():
        out = model(x[:15], record=True)
    by_name = {fs.name: fs for fs in ex.feature_sets}
    for name, s in out.spikes.items():
        want = s.sum(0).reshape(15, -1).numpy() / x.shape[1]
        np.testing.assert_allclose(by_name[name].values, want)
        assert ex.firing_rates[name] == pytest.approx(float(s.mean()))
        np.testing.assert_array_equal(ex.raster[name], s[:, 0].reshape(x.shape[1], -1).numpy())
    primary = ex.primary(SPIKE_RATE)
    assert primary.name == model.lif_names[-2] and primary.role == "features"
    assert ex.primary(CONTINUOUS) is None
    np.testing.assert_array_equal(ex.predictions, out.logits.argmax(1).numpy())


def test_continuous_head_features_are_labelled_continuous():
    torch.manual_seed(0)
    model = TinyHybrid()
    _, x, y = _visual()
    ex = extract_features(model, x, y, samples_per_class=4)
    cont = ex.primary(CONTINUOUS)
    assert cont is not None and cont.role == "head input" and cont.kind == CONTINUOUS
    with torch.no_grad():
        rates = model.backbone(x[:12]).features / x.shape[1]
        want = torch.tanh(model.head[0](rates)).numpy()
    np.testing.assert_allclose(cont.values, want, rtol=1e-5, atol=1e-6)
    # ModelOutput.features are the backbone's last layer rates: spike-rate, not continuous
    assert ex.primary(SPIKE_RATE).name == "lif2"


def test_analyze_model_writes_json_and_every_figure(tmp_path):
    model, x, y = _visual()
    result = analyze_model(model, x, y, tmp_path / "analysis", samples_per_class=6, tsne=True,
                           info={"run": "tiny"})
    out = tmp_path / "analysis"
    assert set(result["figures"]) == {"projection_pca", "projection_tsne", "firing_rates", "raster"}
    for name in result["figures"].values():
        assert (out / name).read_bytes()[:8] == PNG
    saved = read_json_model(out / "analysis.json", Analysis)
    assert saved.samples == 18 and saved.samples_per_class == {0: 6, 1: 6, 2: 6}
    assert [fs.name for fs in saved.feature_sets][0] == "lif2"
    assert {fs.kind for fs in saved.feature_sets} == {SPIKE_RATE}
    assert saved.cross_modal is None
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_cross_modal_alignment_between_a_visual_and_an_audio_model(tmp_path):
    vm, vx, vy = _visual()
    am, ax, ay = _audio()
    audio = extract_features(am, ax, ay, samples_per_class=6)
    result = analyze_model(vm, vx, vy, tmp_path, other=audio, samples_per_class=6)
    (pair,) = result["cross_modal"]["pairs"]
    assert pair["kind"] == SPIKE_RATE and pair["classes"] == 3
    assert pair["dims"] == [12, 10] and pair["raw_cosine"]["same_class"] is None  # 12 vs 10 neurons
    # same feature dimension (the visual run against itself): raw cosine of identical centroids = 1
    same = analyze_model(vm, vx, vy, tmp_path / "self", other=extract_features(vm, vx, vy, samples_per_class=6),
                         samples_per_class=6)["cross_modal"]["pairs"][0]
    assert same["raw_cosine"]["same_class"] == pytest.approx(1.0)
    assert same["rsa_spearman"] == pytest.approx(1.0)
    assert json.loads((tmp_path / "analysis.json").read_text())["cross_modal"]["pairs"][0]["dims"] == [12, 10]


def test_bad_run_dir_gives_one_clear_error(tmp_path):
    with pytest.raises(ArtifactError, match="run folder not found"):
        analyze.analyze_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="model.pt: file not found"):
        analyze.analyze_run(tmp_path / "empty")
    runner = CliRunner()
    res = runner.invoke(app, ["analyze", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "run folder not found" in res.output
    assert "Traceback" not in res.output


def test_cli_analyze_prints_summary_and_writes_output(tmp_path, monkeypatch):
    vm, vx, vy = _visual()
    am, ax, ay = _audio()
    runs = {"v": (vm, SeedASpec(model="baseline", dataset="tiny-v", input_shape=list(vx.shape[2:]), num_classes=3), vx, vy),
            "a": (am, SeedASpec(model="baseline", dataset="tiny-a", input_shape=list(ax.shape[2:]), num_classes=6), ax, ay)}
    monkeypatch.setattr(analyze, "load_run", lambda run_dir, root=None: runs[run_dir.name])
    res = CliRunner().invoke(app, ["analyze", str(tmp_path / "v"), "--other", str(tmp_path / "a"),
                                   "--samples-per-class", "4", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "silh." in res.output and "RSA Spearman" in res.output
    saved = read_json_model(tmp_path / "o" / "analysis.json", Analysis)
    assert saved.samples == 12 and saved.model_extra["other"]["modality"] == "audio"


class TinySeedStyle(nn.Module):
    """Like the first paper's HGRN models: features = the head's continuous output, and the head's
    single-step readout LIF recorded as a layer with one time step."""

    def __init__(self):
        super().__init__()
        self.backbone = ChipNativeSNN([2, 8, 8], VISUAL[:3] + [{"type": "dense", "out_features": 12}],
                                      beta=0.9, threshold=0.5)
        self.head = nn.ModuleDict({"mix": nn.Linear(12, 8), "fc": nn.Linear(8, 3)})

    def forward(self, x, record=False):
        b = self.backbone(x, record=True)
        z = torch.tanh(self.head["mix"](b.features / x.shape[1]))
        spk = (self.head["fc"](z) > 0).float()
        spikes = {**b.spikes, "head.lif": spk.unsqueeze(0)} if record else None
        return ModelOutput(logits=spk, features=z, spikes=spikes)


def test_head_output_as_features_is_continuous_once_and_single_step_layers_use_their_own_steps():
    torch.manual_seed(0)
    model = TinySeedStyle()
    _, x, y = _visual()
    ex = extract_features(model, x, y, samples_per_class=4)
    names = [fs.name for fs in ex.feature_sets]
    assert ex.primary(CONTINUOUS).name == "features" and ex.primary(CONTINUOUS).role == "features"
    assert not [n for n in names if n.startswith("head.fc")]  # the readout input repeats "features"
    with torch.no_grad():
        spk = (model.head["fc"](model(x[:12]).features) > 0).float().numpy()
    head = next(fs for fs in ex.feature_sets if fs.name == "head.lif")
    np.testing.assert_array_equal(head.values, spk)  # one step: rate = the spike itself, not / T
    assert ex.firing_rates["head.lif"] == pytest.approx(spk.mean())


class TinyJoint(nn.Module):
    """Two encoders and one shared continuous head; the input's rank picks the encoder."""

    def __init__(self):
        super().__init__()
        self.visual = ChipNativeSNN([2, 8, 8], VISUAL[:3] + [{"type": "dense", "out_features": 12}],
                                    beta=0.9, threshold=0.5)
        self.audio = ChipNativeSNN([20], [{"type": "dense", "out_features": 12}] * 2, beta=0.9, threshold=0.5)
        self.head = nn.Sequential(nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x, record=False):
        b = (self.visual if x.dim() == 5 else self.audio)(x, record=record)
        return ModelOutput(logits=self.head(b.features / x.shape[1]), features=b.features / x.shape[1],
                           spikes=b.spikes)


def test_joint_run_is_aligned_with_its_own_audio_side(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = TinyJoint()
    _, vx, vy = _visual()
    _, ax, ay = _audio()
    spec = SeedASpec(model="joint", dataset="v+a", modality="audiovisual")
    monkeypatch.setattr(analyze, "load_run", lambda run_dir, root=None:
                        (model, spec, {"visual": vx, "audio": ax}, {"visual": vy, "audio": ay % 3}))
    (tmp_path / "j").mkdir()
    result = analyze.analyze_run(tmp_path / "j", samples_per_class=4)
    pairs = {p["kind"]: p for p in result["cross_modal"]["pairs"]}
    # the shared head gives both modalities one 8-d continuous space: raw cosine is defined
    assert pairs[CONTINUOUS]["dims"] == [8, 8] and pairs[CONTINUOUS]["raw_cosine"]["same_class"] is not None
    assert result["modality"] == "visual" and result["other"]["modality"] == "audio"
    assert result["other_metrics"]["samples"] == 12
    with pytest.raises(ConfigError, match="own audio modality"):
        analyze.analyze_run(tmp_path / "j", other=tmp_path / "j")
    assert (tmp_path / "j" / "analysis" / "analysis.json").is_file()
