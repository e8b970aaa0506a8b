"""The energy report on a hand-made run folder: every section written, numbers recomputed by hand."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from spikeport.cli import app
from spikeport.deploy.report import report_run, write_results_summary
from spikeport.errors import ArtifactError
from spikeport.io import read_json_model, write_json_atomic
from spikeport.schemas import Energy

MACS = 276  # conv 12 outputs x 18 inputs + fc 5 x 12


def _onnx(path: Path) -> None:
    w1 = helper.make_tensor("w1", TensorProto.FLOAT, [3, 2, 3, 3], [0.1] * 54)
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [5, 12], [0.1] * 60)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "w2"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], [w1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _layers(scale: float) -> list[dict]:
    return [{"name": "conv1", "kind": "conv", "neurons": 12, "synapses": 216, "spikes": 30 * scale,
             "synops": 500 * scale, "neuron_updates": 120 * scale},
            {"name": "fc1", "kind": "dense", "neurons": 5, "synapses": 60, "spikes": 4 * scale,
             "synops": 150 * scale, "neuron_updates": 50 * scale}]


def make_run(root: Path, targets=("loihi2", "speck"), name: str = "tiny") -> Path:
    run = root / name
    (run / "export").mkdir(parents=True)
    _onnx(run / "export" / "ann.onnx")
    write_json_atomic(run / "export" / "export.json", {
        "schema_version": 1, "model": "baseline", "chip_native": True, "nir_file": "model.nir", "dt": 1e-3,
        "timesteps": 10, "seed": 0,
        "verification": {"runtime": "test", "samples": 1, "layers": [], "output_agreement": 1.0, "exact": True},
        "ann": {"onnx_file": "ann.onnx", "macs_onnx": MACS, "macs_torch": MACS, "max_abs_diff": 0.0}})
    for target in targets:
        write_json_atomic(run / "deploy" / target / "stats.json", {
            "schema_version": 1, "target": target, "engine": "fast", "samples": 4, "timesteps": 10, "dt": 1e-3,
            "accuracy": 0.75, "float_accuracy": 0.8, "agreement_with_float": 0.9, "cores_used": 3,
            "layers": _layers(4), "per_sample": _layers(1), "approximations": ["weights rounded to 8 bits"]})
    return run


def test_report_writes_every_section(tmp_path):
    run = make_run(tmp_path)
    energy = report_run(run, ["loihi2", "speck"], "gpu-horowitz45")
    out = run / "report"
    assert read_json_model(out / "energy.json", Energy) == energy
    assert (out / "energy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # baseline by hand (45 nm): 276 MACs x 4.6 pJ; 114 weights x 4 B = 456 B fit the 1 MB SRAM, so
    # x 100 pJ / 8 B; activations (32 in + 2 x 12 + 5) x 4 B x 20 pJ / 8 B
    base = energy.baseline
    assert base.terms["compute"] == pytest.approx(276 * 4.6e-12)
    assert base.terms["weight_memory"] == pytest.approx(114 * 4 * 100e-12 / 8)
    assert base.terms["activation_memory"] == pytest.approx(61 * 4 * 20e-12 / 8)
    # Loihi 2 (Loihi 1 per-op figures): 650 synops x 23.6 pJ, 170 updates x 81 pJ, 34 spikes x 1.7 pJ;
    # static: Loihi 2's measured 0.232 W x 10 steps x 1 ms (sensor-paced, the top level)
    l2 = energy.chips["loihi2"]
    hand = {"synops": 650 * 23.6e-12, "neuron_updates": 170 * 81e-12, "routing": 34 * 1.7e-12,
            "static": 0.232 * 10 * 1e-3, "host": 0.0}
    assert l2.terms == pytest.approx(hand)
    assert l2.ratio_vs_baseline == pytest.approx(base.joules_per_inference / sum(hand.values()))
    assert l2.ratio_dynamic_vs_baseline == pytest.approx(base.joules_per_inference / (sum(hand.values()) - hand["static"]))
    assert l2.kind == "estimate" and "energy.synop" in l2.estimated
    # Speck: synop derived = 0.28 mW / 1e7 /s = 28 pJ; updates and routing folded into it
    sp = energy.chips["speck"]
    assert sp.terms["synops"] == pytest.approx(650 * 28e-12)
    assert sp.terms["static"] == pytest.approx(0.42e-3 * 10e-3)
    # the papers' shortcut, labelled
    assert energy.shortcut["ann_joules"] == pytest.approx(276 * 4.6e-12)
    assert energy.shortcut["chips"]["speck"]["snn_joules"] == pytest.approx(650 * 0.9e-12)

    md = (out / "energy.md").read_text()
    for section in ("## Summary", "## Baseline: gpu-horowitz45", "## loihi2: Intel Loihi 2", "## speck: SynSense Speck",
                    "## The papers' shortcut", "## What this report includes and excludes"):
        assert section in md
    for text in ("80.00%", "75.00%", "Cores used: 3", "conv1", "Estimated figures:", "reference_synop_rate",
                 "weights rounded to 8 bits", "static power", "spike routing", "Davies et al"):
        assert text in md


def test_report_target_not_deployed(tmp_path):
    run = make_run(tmp_path, targets=("loihi2",))
    with pytest.raises(ArtifactError, match=rf"'speck' was not deployed.*spikeport deploy {run} --target speck"):
        report_run(run, ["loihi2", "speck"], "gpu-horowitz45")
    assert not (run / "report").exists()  # nothing half-written


def test_report_without_export(tmp_path):
    run = tmp_path / "bare"
    run.mkdir()
    with pytest.raises(ArtifactError, match=r"export.json: file not found; run `spikeport export"):
        report_run(run, ["loihi2"], "gpu-horowitz45")


def test_measured_baseline_falls_back_without_gpu(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # NVML bindings absent: as on a machine without a GPU
    run = make_run(tmp_path)
    energy = report_run(run, ["speck"], "gpu-measured")
    assert energy.baseline.profile == "gpu-horowitz45" and energy.baseline_requested == "gpu-measured"
    assert energy.baseline.kind != "measured"
    md = (run / "report" / "energy.md").read_text()
    assert "not available here" in md and "ESTIMATED" in md


def test_results_summary_adds_and_updates(tmp_path):
    a, b = make_run(tmp_path, name="a"), make_run(tmp_path, name="b")
    report_run(a, ["loihi2"], "gpu-horowitz45")
    report_run(b, ["speck"], "gpu-a100")
    path = tmp_path / "results" / "summary.md"
    write_results_summary([a], path)
    write_results_summary([b], path)  # a's row is kept
    text = path.read_text()
    assert f"| {a} | baseline | loihi2 |" in text and f"| {b} | baseline | speck |" in text
    assert "gpu-a100" in text
    report_run(a, ["loihi2", "speck"], "gpu-horowitz45")
    write_results_summary([a], path)
    rows = [line for line in path.read_text().splitlines() if line.startswith(f"| {tmp_path}")]
    assert len(rows) == 3


def test_cli_report_error_is_one_line(tmp_path):
    run = make_run(tmp_path, targets=("speck",))
    result = CliRunner().invoke(app, ["report", str(run), "--chips", "loihi2"])
    assert result.exit_code == 2
    assert "spikeport deploy" in result.output and "Traceback" not in result.output
    ok = CliRunner().invoke(app, ["report", str(run), "--chips", "speck"])
    assert ok.exit_code == 0, ok.output
    assert json.loads((run / "report" / "energy.json").read_text())["schema_version"] == 1


class _FakeNvml:
    """NVML stand-in: the energy counter grows by IDLE_W x time plus JOULES_PER_BATCH a batch run."""

    IDLE_W = 50.0
    JOULES_PER_BATCH = 0.02

    def __init__(self):
        import time
        self._time = time
        self._t0 = time.perf_counter()
        self.batches = 0

    def counter_mj(self) -> int:
        return int(1e3 * (self.IDLE_W * (self._time.perf_counter() - self._t0) + self.JOULES_PER_BATCH * self.batches))

    def module(self):
        import types
        m = types.ModuleType("pynvml")
        m.nvmlInit = m.nvmlShutdown = lambda: None
        m.nvmlDeviceGetHandleByIndex = m.nvmlDeviceGetHandleByPciBusId = lambda *_: "gpu0"
        m.nvmlDeviceGetName = lambda _h: "Fake GPU"
        m.nvmlDeviceGetTotalEnergyConsumption = lambda _h: self.counter_mj()
        return m


def test_measured_path_with_a_stand_in_counter(tmp_path, monkeypatch):
    """The measurement flow (idle window, warm-up, timed loop, idle subtraction) and its report
    entry, with NVML and the GPU runner replaced; the real GPU path needs a CUDA machine."""
    from spikeport.deploy import gpu_energy

    fake = _FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake.module())

    def runner(_run, _batch):
        def run():
            fake.batches += 1
        return run, "stand-in", 32
    monkeypatch.setattr(gpu_energy, "_runner", runner)
    m = gpu_energy.measure_ann_energy(tmp_path, batch=32, min_seconds=0.3, idle_seconds=0.2)
    assert m.idle_power_w == pytest.approx(_FakeNvml.IDLE_W, rel=0.05)
    # 0.02 J a batch of 32, idle removed (the mJ counter rounds; idle estimate within 5%)
    assert m.joules_per_inference == pytest.approx(0.02 / 32, rel=0.25)
    assert m.inferences == 32 * (fake.batches - 10)  # ten warm-up batches not counted

    monkeypatch.setattr(gpu_energy, "measure_ann_energy", lambda run, **kw: m)
    run = make_run(tmp_path / "r")
    energy = report_run(run, ["speck"], "gpu-measured")
    assert energy.baseline.profile == "gpu-measured" and energy.baseline.kind == "measured"
    # sensor-paced: measured dynamic + measured idle x 10 steps x 1 ms; throughput: what the counter saw
    sp = m.joules_per_inference + m.idle_power_w * 10e-3
    assert energy.baseline.sensor_paced.joules_per_inference == pytest.approx(sp)
    assert energy.baseline.throughput.joules_per_inference == pytest.approx(m.energy_j / m.inferences)
    assert energy.chips["speck"].ratio_vs_baseline == pytest.approx(sp / energy.chips["speck"].joules_per_inference)
    assert "Fake GPU" in (run / "report" / "energy.md").read_text()
