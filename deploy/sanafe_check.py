"""Cross-check of the Loihi energy and step time against SANA-FE's calibrated Loihi figures.

SANA-FE (PyPI ``sanafe`` 2.2.9, GPL-3.0; Boyle et al., IEEE TCAD 44(8) 2025: energy within 12 %,
latency within 25 % of the chip) ships a Loihi architecture file, ``sanafe/examples/loihi.yaml``,
with an energy and a latency for each event a core handles. This module applies those figures to
the deployment's own counts, beside the Davies et al. 2018 figures of the hw_profiles:

    synapses  synops x energy_process_spike (conv layers: the conv synapse, others: dense)
    neurons   neuron_updates x (energy_access_neuron + energy_update_neuron)
    spikes    spikes x (energy_spike_out + energy_message_out)

and estimates chip time per step as the events' summed latencies spread evenly over the cores
used (a lower bound: a perfectly balanced placement) plus the barrier synchronisation SANA-FE
gives for that many tiles. It does not run SANA-FE's simulator (the spikes are the deployment's,
not SANA-FE's), and no mesh hops are counted: both sides leave placement out. sanafe is imported
here only, when the check is asked for.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from spikeport.deploy.energy import ChipEstimate

SOURCE = ("SANA-FE 2.2.9, sanafe/examples/loihi.yaml (Boyle et al., IEEE TCAD 44(8) 2025; event figures "
          "from Davies et al. 2018 SPICE simulations, calibrated against Loihi)")
CORES_PER_TILE_KEY = "core"


class SanafeUnavailable(Exception):
    """sanafe is not installed here; the message says how to install it."""


@dataclass(frozen=True)
class SanafeCheck:
    terms: dict[str, float]      # synapses, neurons, spikes -> joules per inference
    step_time_s: float           # estimated chip time of one step
    model_dynamic_j: float       # the report's dynamic energy (no host part) for the same counts
    figures: dict[str, float]    # the SANA-FE figures used, SI units

    @property
    def dynamic_j(self) -> float:
        return sum(self.terms.values())

    @property
    def ratio(self) -> float:
        """SANA-FE figures over the report's figures, same counts."""
        return self.dynamic_j / self.model_dynamic_j if self.model_dynamic_j > 0 else float("inf")

    def as_dict(self) -> dict:
        return {"dynamic_joules": self.dynamic_j, "terms": self.terms, "step_time_s": self.step_time_s,
                "ratio_to_report_dynamic": self.ratio, "figures": self.figures, "source": SOURCE,
                "label": "SANA-FE's calibrated Loihi event figures applied to this deployment's counts "
                         "(not a SANA-FE simulation)"}


def loihi_figures() -> dict:
    """The Loihi architecture description shipped with sanafe, as a dict."""
    try:
        from importlib.resources import files

        import sanafe  # noqa: F401  (the package must be importable: its data sits beside it)
        import yaml
    except ImportError:
        raise SanafeUnavailable("sanafe is not installed (pip install sanafe==2.2.9)") from None
    return yaml.safe_load((files("sanafe.examples") / "loihi.yaml").read_text())


def _units(arch: dict) -> tuple[dict, dict, dict, dict, dict]:
    core = arch["architecture"]["tile"][0]["core"][0]
    soma = next(s["attributes"] for s in core["soma"] if s["attributes"].get("model") != "input")
    synapses = {s["name"]: s["attributes"] for s in core["synapse"]}
    return core, soma, synapses, core["axon_out"][0]["attributes"], arch["architecture"]["attributes"]


def _sync_latency(table: dict, tiles: int) -> float:
    """SANA-FE's barrier latency for the smallest listed tile count covering ``tiles``."""
    keys = sorted(int(k) for k in table)
    key = next((k for k in keys if k >= tiles), keys[-1])
    return float(table[key] if key in table else table[str(key)])


def check(est: ChipEstimate, cores_used: int, arch: dict | None = None) -> SanafeCheck:
    """SANA-FE's Loihi figures on the counts behind ``est`` (a Loihi chip estimate)."""
    arch = arch or loihi_figures()
    core, soma, synapses, axon_out, top = _units(arch)
    conv = synapses.get("loihi_conv_synapse") or next(iter(synapses.values()))
    dense = synapses.get("loihi_dense_synapse") or next(iter(synapses.values()))
    e_neuron = float(soma["energy_access_neuron"]) + float(soma["energy_update_neuron"])
    e_spike = float(soma["energy_spike_out"]) + float(axon_out["energy_message_out"])
    t_neuron = float(soma["latency_access_neuron"]) + float(soma["latency_update_neuron"])
    t_spike = float(soma["latency_spike_out"]) + float(axon_out["latency_message_out"])
    syn_j = syn_s = 0.0
    for layer in est.layers:
        unit = conv if (layer.kind or "") == "conv" else dense
        syn_j += layer.synops * float(unit["energy_process_spike"])
        syn_s += layer.synops * float(unit["latency_process_spike"])
    terms = {"synapses": syn_j, "neurons": est.neuron_updates * e_neuron, "spikes": est.spikes * e_spike}
    busy = syn_s + est.neuron_updates * t_neuron + est.spikes * t_spike  # per inference, all cores
    cores = max(1, cores_used)
    per_tile = len(arch["architecture"]["tile"][0][CORES_PER_TILE_KEY]) or 1
    names = core["name"]  # e.g. "loihi_core[0..3]": four cores a tile
    if "[" in names and ".." in names:
        lo, hi = names[names.index("[") + 1:names.index("]")].split("..")
        per_tile = int(hi) - int(lo) + 1
    sync = _sync_latency(top["latency_sync"], math.ceil(cores / per_tile)) if isinstance(
        top.get("latency_sync"), dict) else float(top.get("latency_sync", 0.0))
    step = busy / est.timesteps / cores + sync
    figures = {"synapse_conv_J": float(conv["energy_process_spike"]),
               "synapse_dense_J": float(dense["energy_process_spike"]), "neuron_access_update_J": e_neuron,
               "spike_out_message_J": e_spike, "sync_s": sync}
    model_dynamic = est.dynamic - est.terms.get("host", 0.0)
    return SanafeCheck(terms, step, model_dynamic, figures)
