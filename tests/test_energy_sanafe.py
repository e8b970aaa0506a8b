"""SANA-FE cross-check: its Loihi event figures applied to the deployment's counts, by hand."""
from __future__ import annotations

import pytest

from spikeport.deploy.energy import chip_energy
from spikeport.deploy.sanafe_check import check, loihi_figures
from spikeport.hw_profiles import load_profile
from spikeport.schemas import LayerCounts, Stats

ARCH = {"architecture": {
    "attributes": {"latency_sync": {1: 1e-6, 2: 2e-6}},
    "tile": [{"core": [{
        "name": "core[0..1]",
        "soma": [{"name": "lif", "attributes": {"model": "leaky_integrate_fire", "energy_access_neuron": 5e-12,
                                                "latency_access_neuron": 1e-9, "energy_update_neuron": 1e-12,
                                                "latency_update_neuron": 1e-9, "energy_spike_out": 10e-12,
                                                "latency_spike_out": 2e-9}},
                 {"name": "in", "attributes": {"model": "input"}}],
        "synapse": [{"name": "loihi_dense_synapse", "attributes": {"energy_process_spike": 30e-12,
                                                                   "latency_process_spike": 4e-9}},
                    {"name": "loihi_conv_synapse", "attributes": {"energy_process_spike": 20e-12,
                                                                  "latency_process_spike": 3e-9}}],
        "axon_out": [{"name": "out", "attributes": {"energy_message_out": 100e-12, "latency_message_out": 8e-9}}],
    }]}]}}


def _stats() -> Stats:
    layers = [LayerCounts(name="c1", neurons=8, synapses=64, spikes=10, synops=400, neuron_updates=80, kind="conv"),
              LayerCounts(name="d1", neurons=2, synapses=16, spikes=2, synops=100, neuron_updates=20, kind="dense")]
    return Stats(target="loihi2", engine="fast", samples=1, timesteps=10, dt=1e-3, accuracy=1.0,
                 agreement_with_float=1.0, cores_used=3, layers=layers, per_sample=layers)


def test_sanafe_figures_by_hand():
    est = chip_energy(_stats(), load_profile("loihi2"))
    sf = check(est, cores_used=3, arch=ARCH)
    assert sf.terms["synapses"] == pytest.approx(400 * 20e-12 + 100 * 30e-12)
    assert sf.terms["neurons"] == pytest.approx(100 * (5e-12 + 1e-12))
    assert sf.terms["spikes"] == pytest.approx(12 * (10e-12 + 100e-12))
    # busy time: 400 x 3 ns + 100 x 4 ns + 100 x 2 ns + 12 x 10 ns = 1.92 us over 10 steps and 3 cores;
    # 3 cores at 2 a tile = 2 tiles -> 2 us sync
    assert sf.step_time_s == pytest.approx(1.92e-6 / 10 / 3 + 2e-6)
    # against the report's Loihi 1 figures on the same counts: 500 x 23.6 pJ + 100 x 81 pJ + 12 x 1.7 pJ
    assert sf.ratio == pytest.approx(sf.dynamic_j / (500 * 23.6e-12 + 100 * 81e-12 + 12 * 1.7e-12))


def test_shipped_sanafe_loihi_file_reads():
    pytest.importorskip("sanafe")
    sf = check(chip_energy(_stats(), load_profile("loihi2")), cores_used=3, arch=loihi_figures())
    assert sf.figures["synapse_conv_J"] == pytest.approx(24.0e-12)   # FACTS section 8: conv 24.0 pJ
    assert sf.figures["synapse_dense_J"] == pytest.approx(35.5e-12)  # dense 35.5 pJ
    assert 0.2 < sf.ratio < 5
