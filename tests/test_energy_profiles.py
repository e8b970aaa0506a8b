"""Profile validation: bad files are rejected with the file and key named."""
from __future__ import annotations

from pathlib import Path

import pytest

from spikeport.deploy.energy import chip_energy
from spikeport.errors import ConfigError
from spikeport.hw_profiles import load_profile
from spikeport.schemas import LayerCounts, Stats

GOOD = """
name = "chipx"
title = "Chip X"
device = "chip"
[energy.synop]
value = 10
unit = "pJ"
source = "Some et al. 2020, Table 1"
kind = "published"
[energy.neuron_update]
value = 2
unit = "pJ"
source = "Some et al. 2020, Table 1"
kind = "published"
[energy.spike_route]
value = 1
unit = "pJ"
source = "Some et al. 2020, Table 1"
kind = "published"
[energy.static_power]
value = 1
unit = "mW"
source = "Some et al. 2020, Table 1"
kind = "published"
[timing.step_time]
value = 5
unit = "us"
source = "Some et al. 2020, Table 2"
kind = "published"
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "chipx.toml"
    p.write_text(text)
    return p


def _stats() -> Stats:
    layer = LayerCounts(name="fc1", neurons=2, synapses=4, spikes=1, synops=2, neuron_updates=2)
    return Stats(target="chipx", engine="fast", samples=1, timesteps=1, dt=1e-3, accuracy=1.0,
                 agreement_with_float=1.0, cores_used=1, layers=[layer], per_sample=[layer])


def test_good_profile_loads(tmp_path):
    prof = load_profile(_write(tmp_path, GOOD))
    assert prof.energy["synop"].si() == pytest.approx(1e-11)


@pytest.mark.parametrize("bad, key, why", [
    (GOOD.replace("value = 10\n", "value = -10\n"), "energy.synop.value", "negative"),
    (GOOD.replace('value = 10\nunit = "pJ"\n', "value = 10\n"), "energy.synop.unit", "Field required"),
    (GOOD.replace('unit = "mW"', 'unit = "milliwatt"'), "energy.static_power.unit", "unknown unit"),
    (GOOD.replace('kind = "published"', 'kind = "guess"', 1), "energy.synop.kind", "measured"),
    (GOOD.replace('source = "Some et al. 2020, Table 1"\n', "", 1), "energy.synop.source", "Field required"),
    (GOOD.replace('device = "chip"', 'device = "fpga"'), "device", "chip"),
])
def test_bad_figure_names_file_and_key(tmp_path, bad, key, why):
    path = _write(tmp_path, bad)
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    msg = str(err.value)
    assert str(path) in msg and f"'{key}'" in msg and why in msg


def test_missing_figure_named_when_used(tmp_path):
    text = GOOD.split("[energy.neuron_update]")[0] + "[energy.spike_route]" + GOOD.split("[energy.spike_route]")[1]
    path = _write(tmp_path, text)
    prof = load_profile(path)  # loads: a figure may be absent until the model needs it
    with pytest.raises(ConfigError, match=r"chipx.toml: missing key 'energy.neuron_update'"):
        chip_energy(_stats(), prof)


def test_missing_synop_says_how_to_derive_it(tmp_path):
    text = GOOD.replace("[energy.synop]", "[energy.other]")
    with pytest.raises(ConfigError, match=r"missing key 'energy.synop'.*operating_power"):
        chip_energy(_stats(), load_profile(_write(tmp_path, text)))


def test_unknown_profile_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_profile("no-such-chip")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_profile(_write(tmp_path, "name = "))
