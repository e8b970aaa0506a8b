"""Energy model: every term recomputed by hand for a tiny network and a round-figure profile."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from spikeport.deploy.energy import (AnnWorkload, ann_energy, ann_workload_from_onnx, chip_energy, mac_energy,
                                     papers_shortcut, synop_energy)
from spikeport.deploy.gpu_energy import dynamic_joules_per_inference
from spikeport.errors import ArtifactError, ConfigError
from spikeport.hw_profiles import available_profiles, load_profile
from spikeport.schemas import LayerCounts, Stats

CHIP_TOML = """
name = "toychip"
title = "Toy chip"
device = "chip"
[energy.synop]
value = 10
unit = "pJ"
source = "test figure"
kind = "published"
[energy.neuron_update]
value = 2
unit = "pJ"
source = "test figure"
kind = "published"
[energy.spike_route]
value = 1
unit = "pJ"
source = "test figure"
kind = "estimate"
[energy.static_power]
value = 1
unit = "mW"
source = "test figure"
kind = "published"
[timing.step_time]
value = 10
unit = "us"
source = "test figure"
kind = "published"
"""

GPU_TOML = """
name = "toygpu"
title = "Toy GPU"
device = "gpu"
[energy.mac]
value = 4
unit = "pJ"
source = "test figure"
kind = "published"
[energy.weight_byte]
value = 8
unit = "pJ/64bit"
source = "test figure"
kind = "published"
[energy.activation_byte]
value = 2
unit = "pJ/byte"
source = "test figure"
kind = "published"
[limits.value_bytes]
value = 4
unit = "bytes"
source = "test figure"
kind = "published"
"""


def _stats(**kw) -> Stats:
    per_sample = [
        LayerCounts(name="conv1", neurons=12, synapses=216, spikes=30, synops=500, neuron_updates=120, kind="conv"),
        LayerCounts(name="fc1", neurons=5, synapses=60, spikes=4, synops=150, neuron_updates=50, kind="dense"),
    ]
    totals = [c.model_copy(update={"spikes": c.spikes * 4, "synops": c.synops * 4,
                                   "neuron_updates": c.neuron_updates * 4}) for c in per_sample]
    base = dict(target="toychip", engine="fast", samples=4, timesteps=10, dt=1e-3, accuracy=0.75,
                agreement_with_float=0.9, cores_used=2, layers=totals, per_sample=per_sample)
    base.update(kw)
    return Stats(**base)


@pytest.fixture
def chip(tmp_path: Path):
    p = tmp_path / "toychip.toml"
    p.write_text(CHIP_TOML)
    return load_profile(p)


@pytest.fixture
def gpu(tmp_path: Path):
    p = tmp_path / "toygpu.toml"
    p.write_text(GPU_TOML)
    return load_profile(p)


def test_chip_terms_by_hand(chip):
    est = chip_energy(_stats(), chip)
    # synops 500 + 150 = 650 x 10 pJ; updates 170 x 2 pJ; spikes 34 x 1 pJ; 1 mW x 10 x 1 ms
    assert est.terms["synops"] == pytest.approx(650 * 10e-12)
    assert est.terms["neuron_updates"] == pytest.approx(170 * 2e-12)
    assert est.terms["routing"] == pytest.approx(34 * 1e-12)
    assert est.terms["static"] == pytest.approx(1e-3 * 10 * 1e-3)
    assert est.terms["host"] == 0
    assert est.total == pytest.approx(6.5e-9 + 0.34e-9 + 0.034e-9 + 1e-5)
    assert est.dynamic == pytest.approx(6.5e-9 + 0.34e-9 + 0.034e-9)
    assert est.duration_s == pytest.approx(0.01)
    conv = est.layers[0]
    assert conv.terms == pytest.approx({"synops": 5e-9, "neuron_updates": 240e-12, "routing": 30e-12})
    assert est.kind == "estimate" and est.estimated == ["energy.spike_route"]
    assert est.chip_s == pytest.approx(10 * 10e-6) and est.keeps_up


def test_totals_used_when_no_per_sample(chip):
    a = chip_energy(_stats(), chip)
    b = chip_energy(_stats(per_sample=[]), chip)  # totals over 4 samples / 4
    assert b.terms == pytest.approx(a.terms)


def test_step_duration_is_the_older_name_of_step_time(tmp_path):
    p = tmp_path / "fast.toml"
    p.write_text(CHIP_TOML.replace("[timing.step_time]", "[timing.step_duration]").replace("value = 10\nunit = \"us\"",
                                                                                         "value = 20\nunit = \"us\""))
    est = chip_energy(_stats(), load_profile(p))
    assert est.chip_s == pytest.approx(10 * 20e-6)      # chip time flat out
    assert est.step_s == pytest.approx(1e-3)            # real time of a step: the bin (dt)
    assert est.terms["static"] == pytest.approx(1e-3 * 10 * 1e-3)


def test_chip_slower_than_real_time_pays_its_own_time(tmp_path):
    p = tmp_path / "slow.toml"
    p.write_text(CHIP_TOML.replace("value = 10\nunit = \"us\"", "value = 3\nunit = \"ms\""))
    est = chip_energy(_stats(), load_profile(p))  # 10 steps x 3 ms > 10 x 1 ms of sensor time
    assert not est.keeps_up and est.duration_s == pytest.approx(0.03)
    assert est.terms["static"] == pytest.approx(1e-3 * 0.03)


def test_host_macs_on_host_profile(chip, gpu):
    est = chip_energy(_stats(host_macs_per_sample=1000), chip, host_profile=gpu)
    assert est.terms["host"] == pytest.approx(1000 * 4e-12)
    with pytest.raises(ConfigError, match="host part"):
        chip_energy(_stats(host_macs_per_sample=1000), chip)


def test_ann_terms_by_hand(gpu):
    est = ann_energy(AnnWorkload(macs=276, weight_values=122, activation_values=61), gpu)
    assert est.terms["compute"] == pytest.approx(276 * 4e-12)
    assert est.terms["weight_memory"] == pytest.approx(122 * 4 * 1e-12)     # 8 pJ / 8 bytes
    assert est.terms["activation_memory"] == pytest.approx(61 * 4 * 2e-12)
    assert est.total == pytest.approx((1104 + 488 + 488) * 1e-12)


def _tiny_onnx(path: Path) -> Path:
    """Conv(2->3, 3x3) on 2x4x4 -> ReLU -> Flatten -> Gemm(12->5), built by hand."""
    w1 = helper.make_tensor("w1", TensorProto.FLOAT, [3, 2, 3, 3], [0.1] * 54)
    b1 = helper.make_tensor("b1", TensorProto.FLOAT, [3], [0.0] * 3)
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [5, 12], [0.1] * 60)
    b2 = helper.make_tensor("b2", TensorProto.FLOAT, [5], [0.0] * 5)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], kernel_shape=[3, 3], name="conv1"),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], transB=1, name="fc1")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], [w1, b1, w2, b2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_ann_workload_from_onnx(tmp_path):
    work = ann_workload_from_onnx(_tiny_onnx(tmp_path / "ann.onnx"), macs=276)
    assert work.weight_values == 54 + 3 + 60 + 5
    # input 2*4*4 read once; conv output 3*2*2 written + read; final 5 written once
    assert work.activation_values == 32 + 2 * 12 + 5
    with pytest.raises(ArtifactError, match="not found"):
        ann_workload_from_onnx(tmp_path / "missing.onnx", 1)
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(ArtifactError, match="bad.onnx"):
        ann_workload_from_onnx(tmp_path / "bad.onnx", 1)


def test_papers_shortcut_uses_45nm_figures():
    sc = papers_shortcut(macs=1000, synops=2000)
    assert sc.ann_joules == pytest.approx(1000 * 4.6e-12)
    assert sc.snn_joules == pytest.approx(2000 * 0.9e-12)
    assert sc.ratio == pytest.approx(4.6 / 1.8)


def test_derived_figures_of_shipped_profiles():
    speck = synop_energy(load_profile("speck"))  # (0.70 - 0.42) mW / 1e7 synops/s
    assert speck.value == pytest.approx(0.28e-3 / 1e7) and speck.kind == "estimate"
    assert speck.derivation and "reference_synop_rate" in speck.derivation
    a100 = mac_energy(load_profile("gpu-a100"))  # 2 x 400 W / 312 TFLOP/s
    assert a100.value == pytest.approx(2 * 400 / 312e12) and a100.kind == "estimate"
    assert mac_energy(load_profile("gpu-horowitz45")).value == pytest.approx(4.6e-12)


def test_every_shipped_profile_loads_and_feeds_the_model():
    names = available_profiles()
    for expected in ("loihi", "loihi2", "speck", "gpu-horowitz45", "gpu-a100", "gpu-h100", "cpu"):
        assert expected in names
    work = AnnWorkload(macs=1e6, weight_values=1e4, activation_values=1e3)
    for name in names:
        prof = load_profile(name)
        if prof.device == "chip":
            assert chip_energy(_stats(), prof).total > 0
        else:
            assert ann_energy(work, prof).total > 0
    # Loihi 2 has no published per-op energy: those figures are estimates, with a note; its static
    # power is Intel's measured PilotNet figure
    l2 = load_profile("loihi2")
    for key in ("synop", "neuron_update", "spike_route"):
        assert l2.energy[key].kind == "estimate" and l2.energy[key].note
    assert l2.energy["static_power"].si() == pytest.approx(0.232) and "PilotNet" in l2.energy["static_power"].source


def test_wrong_dimension_is_named(tmp_path):
    p = tmp_path / "watts.toml"
    p.write_text(CHIP_TOML.replace('value = 10\nunit = "pJ"', 'value = 10\nunit = "mW"'))
    with pytest.raises(ConfigError, match=r"watts.toml.*energy\.synop.*power"):
        chip_energy(_stats(), load_profile(p))


def test_gpu_measurement_arithmetic():
    # 100 J over 5 s with 12 W idle, 1000 inferences -> (100 - 60) / 1000
    assert dynamic_joules_per_inference(100.0, 5.0, 12.0, 1000) == pytest.approx(0.04)
    with pytest.raises(ValueError):
        dynamic_joules_per_inference(1.0, 0.0, 1.0, 10)
