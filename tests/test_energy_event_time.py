"""The event-based chip time (Loihi 2: events' latencies over the cores used, plus the barrier), the
ratio said in words and the accuracy intervals, each against numbers worked out by hand."""
from __future__ import annotations

from pathlib import Path

import pytest

from spikeport.deploy.energy import chip_energy
from spikeport.deploy.report import ratio_words, wilson_interval
from spikeport.errors import ConfigError
from spikeport.hw_profiles import load_profile
from spikeport.schemas import LayerCounts, Stats

FIG = 'value = {v}\nunit = "{u}"\nsource = "test figure"\nkind = "estimate"\n'
CHIP = "\n".join([
    'name = "evchip"', 'title = "Event-timed chip"', 'device = "chip"',
    "[energy.synop]", FIG.format(v=10, u="pJ"), "[energy.neuron_update]", FIG.format(v=2, u="pJ"),
    "[energy.spike_route]", FIG.format(v=1, u="pJ"), "[energy.static_power]", FIG.format(v=100, u="mW"),
    "[timing.synop_time]", FIG.format(v=4, u="ns"), "[timing.conv_synop_time]", FIG.format(v=3, u="ns"),
    "[timing.neuron_update_time]", FIG.format(v=10, u="ns"), "[timing.spike_time]", FIG.format(v=30, u="ns"),
    "[timing.sync_time]", FIG.format(v=1, u="us")])


def _stats(cores: int) -> Stats:
    layers = [LayerCounts(name="c1", neurons=8, synapses=72, spikes=20, synops=2000, neuron_updates=80, kind="conv"),
              LayerCounts(name="d1", neurons=2, synapses=16, spikes=4, synops=400, neuron_updates=20, kind="dense")]
    return Stats(target="evchip", engine="fast", samples=1, timesteps=10, dt=1e-3, accuracy=1.0,
                 agreement_with_float=1.0, cores_used=cores, layers=layers, per_sample=layers)


def test_event_time_and_both_modes_by_hand(tmp_path: Path):
    path = tmp_path / "evchip.toml"
    path.write_text(CHIP)
    est = chip_energy(_stats(cores=2), load_profile(path))
    # busy: 2000 x 3 ns + 400 x 4 ns + 100 x 10 ns + 24 x 30 ns = 6000 + 1600 + 1000 + 720 = 9320 ns a sample;
    # over 10 steps and 2 cores 466 ns a step, plus the 1 us barrier: 1.466 us a step, 14.66 us a sample
    assert est.chip_s == pytest.approx(14.66e-6)
    # dynamic 2400 x 10 pJ + 100 x 2 pJ + 24 x 1 pJ = 24.224 nJ; throughput adds 100 mW x 14.66 us
    tp, sp = est.throughput(), est.sensor_paced()
    assert tp.joules == pytest.approx(24.224e-9 + 1.466e-6)
    assert tp.inferences_per_s == pytest.approx(1 / 14.66e-6)
    # sensor-paced: 100 mW over the 10 ms of real time
    assert sp.joules == pytest.approx(24.224e-9 + 1e-3)
    # twice the cores: half the busy time a step, the same barrier
    est4 = chip_energy(_stats(cores=4), load_profile(path))
    assert est4.chip_s == pytest.approx(10 * (0.233e-6 + 1e-6))


def test_event_time_figure_missing_is_named(tmp_path: Path):
    path = tmp_path / "evchip.toml"
    path.write_text(CHIP.replace("[timing.sync_time]", "[timing.other]"))
    with pytest.raises(ConfigError, match="timing.sync_time"):
        chip_energy(_stats(cores=1), load_profile(path))


def test_ratio_in_words():
    assert ratio_words(7.0) == "the chip uses 7x less"
    assert ratio_words(1 / 413) == "the chip uses 413x more"
    assert ratio_words(None) == "n/a"


def test_wilson_interval_by_hand():
    # 337 of 359 right (93.87 %), z = 1.96: centre (p + z^2/2n) / (1 + z^2/n) = 0.93407,
    # half-width z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n) = 0.02511
    lo, hi = wilson_interval(337 / 359, 359)
    assert lo == pytest.approx(0.90896, abs=1e-4) and hi == pytest.approx(0.95919, abs=1e-4)
    # one sample of 359 (93.87 % against 93.59 %) sits well inside that interval
    assert lo < 336 / 359 < hi
