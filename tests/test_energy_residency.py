"""Weight residency from the baseline's on-chip capacity, and the int8 iso-precision twin, by hand."""
from __future__ import annotations

from pathlib import Path

import pytest

from spikeport.deploy.energy import AnnWorkload, ann_energy
from spikeport.errors import ConfigError
from spikeport.hw_profiles import load_profile

FIG = 'value = {v}\nunit = "{u}"\nsource = "test figure"\nkind = "published"\n'
BASE = "\n".join([
    'name = "toyops"', 'title = "Toy per-op model"', 'device = "gpu"',
    "[energy.mac]", FIG.format(v=4, u="pJ"), "[energy.int8_mult]", FIG.format(v=0.2, u="pJ"),
    "[energy.int8_add]", FIG.format(v=0.05, u="pJ"),
    "[energy.weight_byte]", FIG.format(v=100, u="pJ/byte"), "[energy.activation_byte]", FIG.format(v=2, u="pJ/byte"),
    "[limits.value_bytes]", FIG.format(v=4, u="bytes"), "[energy.idle_power]", FIG.format(v=0, u="W")])
ON_CHIP = "\n".join(["[limits.on_chip_memory]", FIG.format(v=1, u="KiB"),
                     "[energy.on_chip_weight_byte]", FIG.format(v=10, u="pJ/byte")])


def _profile(tmp_path: Path, text: str):
    path = tmp_path / "toyops.toml"
    path.write_text(text)
    return load_profile(path)


def test_weights_that_fit_on_chip_are_charged_on_chip(tmp_path):
    p = _profile(tmp_path, BASE + "\n" + ON_CHIP)
    small = AnnWorkload(macs=1000, weight_values=200, activation_values=50)  # 800 B <= 1024 B
    est = ann_energy(small, p)
    assert est.terms["compute"] == pytest.approx(1000 * 4e-12)
    assert est.terms["weight_memory"] == pytest.approx(200 * 4 * 10e-12)     # on chip
    assert est.terms["activation_memory"] == pytest.approx(50 * 4 * 2e-12)
    assert any("on-chip memory (0.8 kB <= 1.024 kB" in n for n in est.assumptions)
    big = AnnWorkload(macs=1000, weight_values=300, activation_values=50)    # 1200 B > 1024 B
    assert ann_energy(big, p).terms["weight_memory"] == pytest.approx(300 * 4 * 100e-12)  # off chip
    # forced off chip, the small one pays DRAM too
    assert ann_energy(small, p, resident=False).terms["weight_memory"] == pytest.approx(200 * 4 * 100e-12)


def test_int8_twin_by_hand(tmp_path):
    p = _profile(tmp_path, BASE + "\n" + ON_CHIP)
    # 1 byte a value: 300 weights = 300 B fit on chip where the fp32 twin's 1200 B do not
    est = ann_energy(AnnWorkload(macs=1000, weight_values=300, activation_values=50), p, int8=True)
    assert est.terms["compute"] == pytest.approx(1000 * (0.2e-12 + 0.05e-12))
    assert est.terms["weight_memory"] == pytest.approx(300 * 10e-12)
    assert est.terms["activation_memory"] == pytest.approx(50 * 2e-12)
    assert est.profile == "toyops-int8"


def test_no_on_chip_figure_means_off_chip(tmp_path):
    p = _profile(tmp_path, BASE)
    est = ann_energy(AnnWorkload(macs=10, weight_values=2, activation_values=1), p)
    assert est.terms["weight_memory"] == pytest.approx(2 * 4 * 100e-12)
    assert any("no on-chip capacity" in n for n in est.assumptions)
    with pytest.raises(ConfigError, match="energy.on_chip_weight_byte"):
        ann_energy(AnnWorkload(macs=10, weight_values=2, activation_values=1), p, resident=True)


def _make_run(tmp_path: Path) -> Path:
    import importlib.util
    spec = importlib.util.spec_from_file_location("energy_report_helpers",
                                                  Path(__file__).with_name("test_energy_report.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_run(tmp_path)


def test_report_range_and_speck_band_by_hand(tmp_path):
    from spikeport.deploy.report import report_run
    run = _make_run(tmp_path)
    energy = report_run(run, ["loihi2", "speck"], "gpu-horowitz45")
    rng = energy.model_extra["baseline_range"]["variants"]
    # the report tests' twin: 276 MACs, 114 weights, 61 activation values (45 nm figures)
    dram = 276 * 4.6e-12 + 114 * 4 * 1.3e-9 / 8 + 61 * 4 * 20e-12 / 8
    on_chip = 276 * 4.6e-12 + 114 * 4 * 100e-12 / 8 + 61 * 4 * 20e-12 / 8
    int8 = 276 * (0.2e-12 + 0.03e-12) + 114 * 1 * 100e-12 / 8 + 61 * 1 * 20e-12 / 8
    assert [v["joules_per_inference"] for v in rng.values()] == pytest.approx([dram, on_chip, int8])
    # Speck's 28 pJ re-derived at 1.5e6 and 3e7 synops/s: (0.70 - 0.42) mW / rate
    band = energy.chips["speck"].model_extra["synop_band"]["band"]
    assert band["reference_synop_rate_low"]["synop_j"] == pytest.approx(0.28e-3 / 1.5e6)
    assert band["reference_synop_rate_high"]["synop_j"] == pytest.approx(0.28e-3 / 3e7)
    sp = energy.chips["speck"].sensor_paced.joules_per_inference
    assert band["reference_synop_rate_low"]["sensor_paced_j"] == pytest.approx(sp + 650 * (0.28e-3 / 1.5e6 - 28e-12))
    md = (run / "report" / "energy.md").read_text()
    assert "## The range: where the weights live" in md and "uses" in md
