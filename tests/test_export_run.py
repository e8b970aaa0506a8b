"""export_run / export_model end to end, the chip/host partition, and bad input."""
from __future__ import annotations

import h5py
import nir
import numpy as np
import pytest
import torch

from spikeport.errors import ArtifactError, SpikeportError, UnsupportedNodeError
from spikeport.export.nir_io import read_nir, write_nir
from spikeport.export.partition import load_host
from spikeport.export.run import export_model, export_run
from spikeport.export.verify import run_nir
from spikeport.io import read_json_model
from spikeport.schemas import ExportInfo, Partition
from spikeport.train.checkpoint import model_payload, save_checkpoint
from spikeport.train.models import build_model

DENSE = [{"type": "dense", "out_features": 12}, {"type": "dense", "out_features": 3}]


def _spec(**over):
    spec = {"model": "baseline", "chip_native": True, "ann": False, "dataset": "shd-embedded",
            "modality": "audio", "input_shape": [10], "num_classes": 3, "timesteps": 8, "dt": 1e-3,
            "seed": 0, "layers": DENSE, "beta": 1.0, "threshold": 0.5}
    return {**spec, **over}


def _x(shape, n=4, steps=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, steps, *shape, generator=g) < 0.3).float()


def test_chip_native_export_writes_verified_files(tmp_path):
    torch.manual_seed(0)
    spec = _spec()
    model = build_model(spec)
    info = export_model(model, spec, _x([10]), tmp_path / "export", ann=None)
    files = sorted(p.name for p in (tmp_path / "export").iterdir())
    assert files == ["export.json", "model.nir", "partition.json"]
    info = read_json_model(tmp_path / "export" / "export.json", ExportInfo)
    assert info.verification.exact and info.verification.output_agreement == 1.0
    assert [la.name for la in info.verification.layers] == ["lif1", "lif2"]
    part = read_json_model(tmp_path / "export" / "partition.json", Partition)
    assert part.host == [] and part.chip_outputs == ["lif2"]
    assert float(read_nir(tmp_path / "export" / "model.nir").metadata["dt"]) == spec["dt"]
    assert not list(tmp_path.glob(".export*"))  # no staging folder left


def test_seed_model_partition_host_reproduces_model(tmp_path):
    """Audio hgrn: the dense spiking backbone on chip, HGRN + readout on the host (host.pt)."""
    torch.manual_seed(0)
    spec = {"model": "hgrn", "chip_native": False, "ann": False, "dataset": "shd-embedded", "modality": "audio",
            "input_shape": [10], "num_classes": 3, "timesteps": 6, "dt": 1e-3, "seed": 0,
            "audio_hidden": [16, 8]}
    model = build_model(spec).eval()
    x = _x([10], n=5, steps=6)
    info = export_model(model, spec, x, tmp_path / "export", ann=None)
    part = read_json_model(tmp_path / "export" / "partition.json", Partition)
    assert part.host and part.host[0].inputs == ["lif2"] and part.host_input == "spike_trains"
    assert any("subtract" in a for a in info.approximations)
    torch.load(tmp_path / "export" / "host.pt", weights_only=True)  # plain tensors and dicts only
    host = load_host(tmp_path)
    with torch.no_grad():
        out = model(x, record=True)
    logits = host({"lif2": out.spikes["lif2"]})
    torch.testing.assert_close(logits, out.logits)


def test_visual_seed_backbone_stays_on_host(tmp_path):
    """MaxPool sits between every conv and its LIF: nothing of the seed's visual backbone is
    expressible, the whole model runs on the host from the input spikes."""
    torch.manual_seed(0)
    spec = {"model": "baseline", "chip_native": False, "ann": False, "dataset": "nmnist-embedded",
            "modality": "visual", "input_shape": [2, 16, 16], "num_classes": 3, "timesteps": 4, "dt": 1e-3,
            "seed": 0, "conv_channels": [2, 3], "visual_hidden": [8, 6]}
    model = build_model(spec).eval()
    x = _x([2, 16, 16], n=3, steps=4)
    info = export_model(model, spec, x, tmp_path / "export", ann=None)
    assert "pool1" in info.approximations[0]
    host = load_host(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(host({"input": x.transpose(0, 1)}), model(x).logits)


def _write_run(run_dir, spec, model):
    save_checkpoint(run_dir / "model.pt", model_payload(spec, model.state_dict(), seed=0, epoch=1,
                                                         val_accuracy=None))


def test_export_run_uses_dataset_and_ann_twin(tmp_path, monkeypatch):
    from spikeport.data import registry
    spec = _spec()
    model = build_model(spec)
    _write_run(tmp_path / "r", spec, model)
    monkeypatch.setattr(registry, "load_tensors", lambda name, split, **kw: (_x([10], n=kw["max_samples"]),
                                                                           torch.zeros(kw["max_samples"])))
    info = export_run(tmp_path / "r", samples=3)
    assert info.verification.samples == 3 and info.verification.exact
    assert info.ann is not None and info.ann.trained is False
    assert info.ann.macs_onnx == info.ann.macs_torch == 10 * 12 + 12 * 3
    assert (tmp_path / "r" / "export" / "ann.onnx").is_file()


# ---------------------------------------------------------------------------- bad input

def test_run_without_model(tmp_path):
    (tmp_path / "r").mkdir()
    with pytest.raises(ArtifactError, match="model.pt"):
        export_run(tmp_path / "r")
    assert not (tmp_path / "r" / "export").exists()


def test_unknown_model_spec(tmp_path):
    spec = _spec()
    model = build_model(spec)
    _write_run(tmp_path / "r", {**spec, "model": "no-such-model"}, model)
    with pytest.raises(ArtifactError, match="no-such-model"):
        export_run(tmp_path / "r")
    assert not (tmp_path / "r" / "export").exists()


def test_failure_leaves_no_model_nir(tmp_path):
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("twin cannot run")

    spec = _spec()
    with pytest.raises(Exception):
        export_model(build_model(spec), spec, _x([10]), tmp_path / "export", ann=(Broken(), False))
    assert not (tmp_path / "export").exists()
    assert not list(tmp_path.rglob("model.nir"))


def test_corrupt_nir_file(tmp_path):
    bad = tmp_path / "model.nir"
    bad.write_bytes(b"not a nir file at all")
    with pytest.raises(ArtifactError, match="model.nir"):
        read_nir(bad)
    # a real file cut in half
    graph = nir.NIRGraph.from_list(nir.Affine(weight=np.ones((2, 3), np.float32), bias=np.zeros(2, np.float32)))
    write_nir(graph, tmp_path / "ok.nir")
    data = (tmp_path / "ok.nir").read_bytes()
    (tmp_path / "cut.nir").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="cut.nir"):
        read_nir(tmp_path / "cut.nir")
    with pytest.raises(ArtifactError, match="not found"):
        read_nir(tmp_path / "missing.nir")


def test_nir_file_with_unknown_node_type(tmp_path):
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([3])),
                                "fc1": nir.Linear(weight=np.ones((3, 3), np.float32)),
                                "output": nir.Output(output_type=np.array([3]))},
                         edges=[("input", "fc1"), ("fc1", "output")])
    write_nir(graph, tmp_path / "g.nir")
    with h5py.File(tmp_path / "g.nir", "r+") as f:
        del f["node/nodes/fc1/type"]
        f["node/nodes/fc1"].create_dataset("type", data="Spiral", dtype=h5py.string_dtype())
    with pytest.raises(UnsupportedNodeError, match="'fc1'.*Spiral"):
        read_nir(tmp_path / "g.nir")


def test_node_type_the_runtime_cannot_run(tmp_path):
    cuba = nir.CubaLIF(tau_mem=np.ones(3), tau_syn=np.ones(3), r=np.ones(3), v_leak=np.zeros(3),
                       v_threshold=np.ones(3))
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([3])), "syn1": cuba,
                                "output": nir.Output(output_type=np.array([3]))},
                         edges=[("input", "syn1"), ("syn1", "output")])
    write_nir(graph, tmp_path / "g.nir")
    with pytest.raises(UnsupportedNodeError, match="g.nir.*'syn1'.*CubaLIF"):
        run_nir(read_nir(tmp_path / "g.nir"), torch.zeros(1, 2, 3), 1e-3, source=tmp_path / "g.nir")


def test_mixed_if_lif_layer_is_refused(tmp_path):
    spec = _spec()
    model = build_model(spec)
    with torch.no_grad():
        model.blocks["lif1"].beta[0] = 0.5
    with pytest.raises(SpikeportError, match="lif1"):
        export_model(model, spec, _x([10]), tmp_path / "export", ann=None)
    assert not (tmp_path / "export").exists()


ZOO = [("baseline", "shd-embedded"), ("scl", "nmnist-embedded"), ("hopfield", "shd-embedded"),
       ("hgrn", "nmnist-embedded"), ("hybrid", "shd-embedded"), ("joint", "nmnist-embedded+shd-embedded"),
       ("scmrl", "av-digits")]


@pytest.mark.parametrize("name,dataset", ZOO)
def test_every_zoo_model_exports_with_a_working_host_part(tmp_path, name, dataset):
    from spikeport.train.models import default_spec
    torch.manual_seed(0)
    spec = default_spec(name, dataset, timesteps=3)
    model = build_model(spec).eval()
    shapes = list(spec.input_shapes.values()) if name == "scmrl" else [spec.input_shape]
    xs = tuple(_x(s, n=2, steps=3) for s in shapes)
    x = xs if name == "scmrl" else xs[0]
    info = export_model(model, spec, x, tmp_path / "export", ann=None)
    # the chip part as re-run by nirtorch, then the host part, predicts what the model predicts
    assert info.verification.output_agreement == 1.0
    part = read_json_model(tmp_path / "export" / "partition.json", Partition)
    assert part.host or name == "baseline"
    read_nir(tmp_path / "export" / "model.nir")
