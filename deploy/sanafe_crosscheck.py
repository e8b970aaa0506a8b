"""`spikeport report RUN --crosscheck sanafe`: the deployed Loihi network run in SANA-FE beside
spikeport's model, on the same test samples.

The network is the one the Loihi target quantised and wrote to netx (``target.prepare``: the same
integers); the fast engine and SANA-FE (deploy/sanafe_sim.py) run the same first ``samples`` test
samples. spikeport's energy is its model (deploy/energy.py) on the fast engine's counts of those
samples with the chip's profile; SANA-FE's is what its simulator charged. Both are dynamic
energy: SANA-FE's Loihi model has no static power. Graded input spikes (counts above 1 in a bin)
are sent as single spikes to both, since SANA-FE's input model is binary.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from spikeport.deploy.energy import ChipEstimate, chip_energy
from spikeport.deploy.sanafe_sim import SanafeRun, SanafeUnavailable, import_sanafe, run_sanafe

DEFAULT_SAMPLES = 4
# which SANA-FE unit corresponds to which spikeport term (for the side-by-side table)
TERM_PAIRS = (("synapses", "synapse", "synops"), ("neurons", "soma", "neuron_updates"),
              ("routing", "network", "routing"))


@dataclass(frozen=True)
class Crosscheck:
    chip: str
    sanafe: SanafeRun
    model: ChipEstimate   # spikeport's model on the same samples

    @property
    def ratio(self) -> float:
        """SANA-FE's dynamic energy over spikeport's (host part excluded)."""
        mine = self.model.dynamic - self.model.terms.get("host", 0.0)
        return self.sanafe.dynamic_j / mine if mine > 0 else float("inf")

    def as_dict(self) -> dict:
        mine = {k: self.model.terms[k] for k in ("synops", "neuron_updates", "routing")}
        return {"label": "SANA-FE simulation of the deployed network (same integers, same samples)",
                "sanafe": self.sanafe.as_dict(), "spikeport_terms": mine,
                "spikeport_dynamic_joules": sum(mine.values()), "ratio_sanafe_to_spikeport": self.ratio,
                "spikeport_step_time_s": self.model.chip_s / self.model.timesteps,
                "spikeport_profile": self.model.profile}


def crosscheck_run(run: str | Path, chip: str = "loihi2", samples: int = DEFAULT_SAMPLES) -> Crosscheck:
    """Run the first ``samples`` test samples of a deployed Loihi run in SANA-FE and in the fast engine."""
    from spikeport.deploy.loihi.counting import layer_counts
    from spikeport.deploy.loihi.fast_engine import run_fast
    from spikeport.deploy.loihi.target import prepare
    from spikeport.deploy.run import build_deploy_input
    from spikeport.hw_profiles import load_profile
    from spikeport.io import read_json_model
    from spikeport.schemas import Stats

    run = Path(run)
    profile = load_profile(chip)
    inp = build_deploy_input(run, chip, "fast", samples)
    _, net, x, _ = prepare(inp, profile)
    x = x[:samples]
    if net.input_bits:  # SANA-FE's input spikes are binary: both sides get the same binary spikes
        net = dataclasses.replace(net, input_bits=0)
        x = (x != 0).to(x.dtype)
    fast = run_fast(net, x)
    n, t = int(x.shape[0]), int(x.shape[1])
    totals, means = layer_counts(net, fast.input_events, fast.neuron_spikes, n, t)
    deployed = run / "deploy" / chip / "stats.json"
    base = read_json_model(deployed, Stats) if deployed.is_file() else None
    stats = Stats(target=chip, engine="fast", samples=n, timesteps=t, dt=inp.dt, accuracy=0.0,
                  agreement_with_float=0.0, cores_used=base.cores_used if base else 0, layers=totals,
                  per_sample=means)
    stats.step_s = inp.step_s or inp.dt
    sim = run_sanafe(net, x, fast_spikes=fast.neuron_spikes)
    return Crosscheck(chip, sim, chip_energy(stats, profile))


def crosscheck_or_hint(run: str | Path, chip: str, samples: int = DEFAULT_SAMPLES) -> dict:
    """The cross-check as a dict, or {"skipped": why} when sanafe is not installed (with how to get it)
    or the network has what the translation does not carry (axonal delays)."""
    from spikeport.errors import MappingError
    try:
        import_sanafe()  # before any work: without it, say how to get it
        return crosscheck_run(run, chip, samples).as_dict()
    except (SanafeUnavailable, MappingError) as exc:
        return {"skipped": str(exc)}
