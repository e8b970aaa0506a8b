"""The two comparison modes (sensor-paced, throughput): hand computations from the profile figures,
the symmetry of the accounting, the energy.json keys, and clear errors for bad figures."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spikeport.cli import app
from spikeport.deploy.energy import (BATCHES, AnnWorkload, ann_energy, baseline_modes, bin_width, chip_energy)
from spikeport.deploy.report import report_run
from spikeport.errors import ConfigError
from spikeport.hw_profiles import load_profile
from spikeport.schemas import LayerCounts, Stats

# Round figures, so the hand computations below read as arithmetic.
CHIP = """
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
kind = "published"
[energy.static_power]
value = {static_mw}
unit = "mW"
source = "test figure"
kind = "published"
[timing.step_time]
value = 20
unit = "us"
source = "test figure"
kind = "estimate"
"""

GPU = """
name = "toygpu"
title = "Toy GPU"
device = "gpu"
[energy.board_power]
value = 100
unit = "W"
source = "test figure"
kind = "published"
[energy.idle_power]
value = {idle_w}
unit = "W"
source = "test figure"
kind = "published"
[timing.peak_flops]
value = 1
unit = "TFLOP/s"
source = "test figure"
kind = "published"
[timing.memory_bandwidth]
value = 100
unit = "GB/s"
source = "test figure"
kind = "published"
[timing.layer_overhead]
value = 10
unit = "us"
source = "test figure"
kind = "estimate"
[energy.weight_byte]
value = 8
unit = "pJ/byte"
source = "test figure"
kind = "published"
[energy.activation_byte]
value = 2
unit = "pJ/byte"
source = "test figure"
kind = "published"
[limits.value_bytes]
value = 2
unit = "bytes"
source = "test figure"
kind = "published"
"""

WORK = AnnWorkload(macs=1e6, weight_values=1e5, activation_values=1e4, weight_layers=2)


def _profile(tmp_path: Path, template: str, name: str, **figures) -> object:
    path = tmp_path / f"{name}.toml"
    path.write_text(template.format(**figures))
    return load_profile(path)


def _make_run(*args, **kw) -> Path:
    """The report tests' hand-made run folder (loaded by path: the tests are not a package)."""
    spec = importlib.util.spec_from_file_location("energy_report_tests", Path(__file__).with_name("test_energy_report.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_run(*args, **kw)


def _stats(**kw) -> Stats:
    layer = LayerCounts(name="fc1", neurons=10, synapses=100, spikes=40, synops=1000, neuron_updates=250, kind="dense")
    base = dict(target="toychip", engine="fast", samples=1, timesteps=50, dt=1e-3, accuracy=1.0,
                agreement_with_float=1.0, cores_used=1, layers=[layer], per_sample=[layer])
    base.update(kw)
    return Stats(**base)


# --- hand computations ----------------------------------------------------------------------
def test_chip_both_modes_by_hand(tmp_path):
    est = chip_energy(_stats(), _profile(tmp_path, CHIP, "toychip", static_mw=2))
    dynamic = 1000 * 10e-12 + 250 * 2e-12 + 40 * 1e-12           # 10.54 nJ
    sp, tp = est.sensor_paced(), est.throughput()
    assert sp.joules == pytest.approx(dynamic + 2e-3 * 50 * 1e-3)  # 2 mW over 50 ms of sensor time
    assert sp.latency_s == pytest.approx(0.05) and sp.inferences_per_s == pytest.approx(20)
    assert tp.joules == pytest.approx(dynamic + 2e-3 * 50 * 20e-6)  # 2 mW over 50 steps x 20 us of chip time
    assert tp.latency_s == pytest.approx(1e-3) and tp.inferences_per_s == pytest.approx(1000)
    assert tp.edp == pytest.approx(tp.joules * 1e-3)


def test_baseline_both_modes_by_hand(tmp_path):
    gpu = _profile(tmp_path, GPU, "toygpu", idle_w=40)
    modes = baseline_modes(ann_energy(WORK, gpu), gpu, real_s=0.05)
    # dynamic at batch 1: MAC energy from (100 - 40) W over 1e12 FLOP/s at 2 FLOP a MAC = 120 pJ
    mac = 2 * 60 / 1e12
    weights = 1e5 * 2 * 8e-12
    acts = 1e4 * 2 * 2e-12
    dyn1 = 1e6 * mac + weights + acts
    # time at batch 1: 2 launches x 10 us + max(2e6 FLOP / 1e12, 2.2e5 bytes / 1e11) = 20 us + 2.2 us
    t1 = 2 * 10e-6 + max(2e6 / 1e12, (1e5 + 1e4) * 2 / 100e9)
    assert modes.batch_1.latency_s == pytest.approx(t1)
    assert modes.batch_1.joules == pytest.approx(dyn1 + 40 * t1)
    # sensor-paced: idle over the whole 50 ms sample (the GPU is far faster than the sensor)
    assert modes.sensor_paced.joules == pytest.approx(dyn1 + 40 * 0.05)
    assert modes.sensor_paced.latency_s == pytest.approx(0.05 + t1)
    # the best batch, recomputed at the batch the model chose: weights read once a batch
    b = modes.best.batch
    assert b in BATCHES and modes.best.joules <= modes.batch_1.joules
    tb = 2 * 10e-6 + max(2e6 * b / 1e12, (1e5 + 1e4 * b) * 2 / 100e9)
    assert modes.best.joules == pytest.approx(1e6 * mac + weights / b + acts + 40 * tb / b)
    assert modes.best.inferences_per_s == pytest.approx(b / tb)


# --- symmetry -------------------------------------------------------------------------------
def test_no_idle_power_on_either_side_makes_the_modes_agree(tmp_path):
    chip = chip_energy(_stats(), _profile(tmp_path, CHIP, "toychip", static_mw=0))
    gpu = _profile(tmp_path, GPU, "toygpu", idle_w=0)
    modes = baseline_modes(ann_energy(WORK, gpu), gpu, real_s=chip.real_s)
    assert chip.sensor_paced().joules == pytest.approx(chip.throughput().joules)
    assert modes.sensor_paced.joules == pytest.approx(modes.batch_1.joules)
    # so the ratios agree too (throughput at batch 1, where both sides run one sample at a time)
    assert (modes.sensor_paced.joules / chip.sensor_paced().joules
            == pytest.approx(modes.batch_1.joules / chip.throughput().joules))


def test_doubling_the_bin_width_raises_both_sides_sensor_paced(tmp_path):
    chip_p = _profile(tmp_path, CHIP, "toychip", static_mw=2)
    gpu = _profile(tmp_path, GPU, "toygpu", idle_w=40)
    base = ann_energy(WORK, gpu)
    narrow, wide = chip_energy(_stats(dt=1e-3), chip_p), chip_energy(_stats(dt=2e-3), chip_p)
    m_narrow, m_wide = baseline_modes(base, gpu, narrow.real_s), baseline_modes(base, gpu, wide.real_s)
    assert wide.sensor_paced().joules > narrow.sensor_paced().joules
    assert m_wide.sensor_paced.joules > m_narrow.sensor_paced.joules
    # static power doubles on both sides: 2 mW x 50 ms more for the chip, 40 W x 50 ms more for the GPU
    assert wide.sensor_paced().joules - narrow.sensor_paced().joules == pytest.approx(2e-3 * 0.05)
    assert m_wide.sensor_paced.joules - m_narrow.sensor_paced.joules == pytest.approx(40 * 0.05)
    # throughput does not depend on the sensor's pace
    assert wide.throughput().joules == pytest.approx(narrow.throughput().joules)
    assert m_wide.best.joules == pytest.approx(m_narrow.best.joules)


def test_bin_width_field_preferred_over_dt():
    assert bin_width(_stats()) == pytest.approx(1e-3)
    assert bin_width(_stats(bin_s=5e-3)) == pytest.approx(5e-3)  # a run that records its bin width


# --- energy.json ----------------------------------------------------------------------------
def test_energy_json_carries_both_modes(tmp_path):
    run = _make_run(tmp_path)
    report_run(run, ["loihi2", "speck"], "gpu-jetson-orin-nano")
    data = json.loads((run / "report" / "energy.json").read_text())
    for key in ("joules_per_inference", "terms", "sensor_paced", "throughput"):
        assert key in data["baseline"]
    for mode in ("sensor_paced", "throughput"):
        assert data["baseline"][mode]["joules_per_inference"] > 0
    assert data["baseline"]["terms"]["idle"] == pytest.approx(2.18 * 10 * 1e-3)  # Jetson idle x 10 ms
    for chip in ("loihi2", "speck"):
        c = data["chips"][chip]
        for key in ("joules_per_inference", "terms", "ratio_vs_baseline", "estimated", "latency_s",
                    "inferences_per_s", "sensor_paced", "throughput"):
            assert key in c, (chip, key)
        for mode in ("sensor_paced", "throughput"):
            assert c[mode]["joules_per_inference"] > 0 and c[mode]["ratio_vs_baseline"] > 0
            assert c[mode]["ratio_vs_baseline"] == pytest.approx(
                c[mode]["baseline_joules_per_inference"] / c[mode]["joules_per_inference"])
        assert c["ratio_vs_baseline"] == pytest.approx(c["sensor_paced"]["ratio_vs_baseline"])  # top level
    # Loihi 2, events over 3 cores a step plus the barrier, by hand: 500 conv synops x 3.1 ns + 150 dense
    # x 3.8 ns + 170 updates x 9.7 ns + 34 spikes x 35.1 ns = 4962.4 ns a sample; / 10 steps / 3 cores
    # = 165.413 ns, + 1.8 us a step, x 10 steps. Speck: no input events, so routed spikes
    assert data["chips"]["loihi2"]["latency_s"] == pytest.approx(10 * (4962.4e-9 / 30 + 1.8e-6))
    assert data["chips"]["speck"]["latency_s"] == pytest.approx(34 * 3.36e-6)
    assert set(data["other_baselines"]) >= {"gpu-horowitz45", "gpu-a100", "gpu-h100", "cpu"}
    md = (run / "report" / "energy.md").read_text()
    for text in ("## Two comparisons", "sensor-paced", "throughput", "## Against other baselines",
                 "top-level joules_per_inference"):
        assert text in md


# --- bad figures ----------------------------------------------------------------------------
def test_missing_idle_power_named(tmp_path):
    text = GPU.format(idle_w=1).replace('[energy.idle_power]\nvalue = 1\nunit = "W"\nsource = "test figure"\n'
                                        'kind = "published"\n', "")
    path = tmp_path / "noidle.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"noidle.toml: missing key 'energy.idle_power'"):
        ann_energy(WORK, load_profile(path))


def test_idle_above_board_power_named(tmp_path):
    gpu = _profile(tmp_path, GPU, "hotidle", idle_w=150)
    with pytest.raises(ConfigError, match=r"hotidle.toml: key 'energy.idle_power' \(150 W\) must be below"):
        ann_energy(WORK, gpu)


def test_zero_step_time_named(tmp_path):
    path = tmp_path / "stall.toml"
    path.write_text(CHIP.format(static_mw=1).replace("value = 20\n", "value = 0\n"))
    with pytest.raises(ConfigError, match=r"stall.toml: key 'timing.step_time' must be positive"):
        chip_energy(_stats(), load_profile(path))


def test_missing_timing_is_one_clear_cli_error(tmp_path, monkeypatch):
    path = tmp_path / "notime.toml"
    path.write_text(CHIP.format(static_mw=1).split("[timing.step_time]")[0])
    with pytest.raises(ConfigError, match=r"notime.toml: missing key 'timing.step_time'"):
        chip_energy(_stats(), load_profile(path))
    # through the CLI: a baseline profile missing a timing figure gives one line, no traceback
    bad = tmp_path / "halfgpu.toml"
    bad.write_text(GPU.format(idle_w=5).replace('[timing.layer_overhead]\nvalue = 10\nunit = "us"\n'
                                                'source = "test figure"\nkind = "estimate"\n', ""))
    run = _make_run(tmp_path / "runs", targets=("speck",))
    result = CliRunner().invoke(app, ["report", str(run), "--chips", "speck", "--baseline", str(bad)])
    assert result.exit_code == 2, result.output
    assert "halfgpu.toml: missing key 'timing.layer_overhead'" in result.output
    assert "Traceback" not in result.output


def test_shipped_baselines_give_both_modes():
    for name in ("gpu-a100", "gpu-h100", "gpu-jetson-orin-nano", "cpu", "gpu-horowitz45"):
        prof = load_profile(name)
        modes = baseline_modes(ann_energy(WORK, prof), prof, real_s=0.025)
        assert modes.sensor_paced.joules >= modes.sensor_paced.dynamic_j > 0
        assert modes.best.joules <= modes.batch_1.joules
        if name != "gpu-horowitz45":  # a per-operation model has no time
            assert modes.batch_1.latency_s > 0 and modes.sensor_paced.static_j > 0
        fig = prof.figure("energy", "idle_power")
        assert fig.kind in ("published", "estimate", "measured") and len(fig.source) > 10


def test_measured_modes_by_hand():
    from spikeport.deploy.energy import MeasuredRun, measured_modes

    big = MeasuredRun(joules_per_inference=1e-4, idle_power_w=50.0, batch=64, inferences=64000, duration_s=2.0)
    one = MeasuredRun(joules_per_inference=4e-4, idle_power_w=50.0, batch=1, inferences=20000, duration_s=2.0)
    modes = measured_modes(big, real_s=0.025, batch_1=one)
    # throughput: dynamic + idle x (2 s / 64000 inferences)
    assert modes.best.joules == pytest.approx(1e-4 + 50 * 2.0 / 64000) and modes.best.batch == 64
    # sensor-paced: batch-1 dynamic + idle over the 25 ms sample (one batch-1 run takes 100 us)
    assert modes.sensor_paced.joules == pytest.approx(4e-4 + 50 * 0.025)
    assert modes.sensor_paced.latency_s == pytest.approx(0.025 + 2.0 / 20000)
    assert not modes.notes
    assert measured_modes(big, real_s=0.025).notes  # without a batch-1 run: a lower bound, said so
