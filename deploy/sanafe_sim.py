"""Run the deployed Loihi network in SANA-FE's simulator and compare it with the fast engine.

SANA-FE (PyPI ``sanafe`` 2.2.9, GPL-3.0; Boyle et al., IEEE TCAD 44(8) 2025: energy within 12 %,
latency within 25 % of measured Loihi) simulates a chip from per-event energies and latencies.
This module builds the network from the same quantised integers the netx writer writes
(``QuantNet``), maps it onto SANA-FE's Loihi cores the way ``deploy/loihi/mapper.py`` does (with
the Loihi 1 profile's limits: SANA-FE models Loihi 1, 1024 neurons a core, 128 cores), runs every
sample for T plus the network's depth steps (each layer adds one step), resets the chip between
samples and reads SANA-FE's energy by unit and its chip time.

Translation, in SANA-FE's units (Lava's integer units divided by 2**6, so that SANA-FE's 1/64
potential quantisation is Lava's rounding toward zero):

- weights: the 8-bit integers as they are (Lava adds ``a << 6``); padded convolutions expanded to
  explicit sparse connections (SANA-FE's conv connector assumes no padding), zero weights dropped
  (they take no synaptic memory on the chip, and spikeport does not count them either);
- ``threshold = vThMant``, ``bias`` = the bias mantissa, ``reset`` 0 (hard), strict ``>``;
- ``leak_decay = 1 - vDecay / 4096``, ``input_decay = 1 - iDecay / 4096``. SANA-FE keeps the
  current in floating point, Lava rounds it toward zero: with current memory (0 < iDecay < 4096)
  the two can drift apart; without (iDecay 4096, the chip-native default) and for any vDecay the
  arithmetic is the same;
- input spikes: one SANA-FE input unit per input neuron (its spike train is held per unit), graded
  inputs sent as one spike (SANA-FE's input model is binary).

SANA-FE resets the whole chip at once and runs every layer for all T + depth steps, where the fast
engine runs each layer for its own T steps (local time: layer k's step t is SANA-FE's step t + k,
plus one behind an input group). A bias left on would integrate during the steps before a
layer's input arrives and after its sample ends, and drift. The run therefore goes step by step
and switches each layer's bias on for its own T steps only; on a bias-free network no switching
is needed and the per-layer spike counts are the fast engine's exactly. Current memory (0 <
iDecay < 4096) keeps a current after a layer's window, which SANA-FE integrates on: such a
network can drift (reported, not hidden).

sanafe is imported in this module only, when a cross-check is asked for.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from spikeport.deploy.loihi.quantize import DECAY_UNITY, QuantLayer, QuantNet

INSTALL_HINT = ("sanafe is not installed: `pip install sanafe==2.2.9` (GPL-3.0, a cp311 wheel; "
                "scripts/setup_env.sh installs it with the pinned stack)")
SOURCE = ("SANA-FE 2.2.9 simulator, Loihi architecture sanafe/examples/loihi.yaml (Boyle et al., IEEE TCAD "
          "44(8) 2025; per-event figures from Davies et al. 2018, calibrated against Loihi)")
INPUT_GROUP = "input"
INPUT_UNITS_PER_CORE = 1024  # loihi.yaml: loihi_inputs[0..1023]
SOMA = "loihi_lif"
SYNAPSE = {"conv": "loihi_conv_synapse", "dense": "loihi_dense_synapse"}
ENERGY_TERMS = ("synapse", "dendrite", "soma", "network")
V_MIN = -(2**23) / 64  # Lava saturates the voltage at -2**23


class SanafeUnavailable(Exception):
    """sanafe cannot be imported here; the message says how to install it."""


def import_sanafe():
    """The sanafe module, or SanafeUnavailable with the install hint."""
    try:
        import sanafe
    except ImportError:
        raise SanafeUnavailable(INSTALL_HINT) from None
    return sanafe


@dataclass(frozen=True)
class LayerAgreement:
    name: str
    neurons: int
    fast_spikes: float       # per sample
    sanafe_spikes: float     # per sample
    neurons_equal: float     # fraction of neurons whose spike totals are the same in both

    @property
    def ratio(self) -> float | None:
        return self.sanafe_spikes / self.fast_spikes if self.fast_spikes > 0 else None

    def as_dict(self) -> dict:
        return {"name": self.name, "neurons": self.neurons, "fast_spikes": self.fast_spikes,
                "sanafe_spikes": self.sanafe_spikes, "neurons_equal": self.neurons_equal, "ratio": self.ratio}


@dataclass(frozen=True)
class SanafeRun:
    samples: int
    timesteps: int                  # the sample's T
    steps_run: int                  # T + depth, per sample
    energy: dict[str, float]        # ENERGY_TERMS -> joules per inference (SANA-FE's units of the chip)
    sim_time_s: float               # SANA-FE's chip time per inference
    cores_used: int
    layers: list[LayerAgreement]
    counts: dict[str, float]        # SANA-FE's own event counts per inference
    notes: list[str] = field(default_factory=list)

    @property
    def dynamic_j(self) -> float:
        return sum(self.energy.values())

    @property
    def step_time_s(self) -> float:
        return self.sim_time_s / self.steps_run

    @property
    def spikes_equal(self) -> bool:
        return all(abs(la.fast_spikes - la.sanafe_spikes) < 1e-9 for la in self.layers)

    def as_dict(self) -> dict:
        return {"samples": self.samples, "timesteps": self.timesteps, "steps_run": self.steps_run,
                "energy": self.energy, "dynamic_joules": self.dynamic_j, "sim_time_s": self.sim_time_s,
                "step_time_s": self.step_time_s, "cores_used": self.cores_used,
                "layers": [la.as_dict() for la in self.layers], "spikes_equal": self.spikes_equal,
                "counts": self.counts, "notes": self.notes, "source": SOURCE}


# --- connectivity ---------------------------------------------------------------------------
def conv_pairs(q: QuantLayer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source index, destination index, weight) of every nonzero synapse of a conv layer, padding
    expanded: flattened (C, H, W) order on both sides, as the fast engine and the mapper count."""
    lay = q.layer
    cin, h, w = lay.input_shape
    cout, cin_g, kh, kw = q.weight.shape
    idx = torch.arange(1, cin * h * w + 1, dtype=torch.float64).reshape(1, cin, h, w)  # 0 = padding
    groups = lay.groups
    src_all, dst_all, w_all = [], [], []
    per_group_out = cout // groups
    for g in range(groups):
        x = idx[:, g * cin_g:(g + 1) * cin_g]
        cols = F.unfold(x, (kh, kw), dilation=lay.dilation, padding=lay.padding, stride=lay.stride)[0]
        cols = cols.round().to(torch.int64).numpy()  # [cin_g * kh * kw, L]
        n_loc = cols.shape[1]
        for co in range(g * per_group_out, (g + 1) * per_group_out):
            wk = q.weight[co].reshape(-1)
            keep = np.flatnonzero(wk)
            src = cols[keep]                     # [k, L]
            valid = src > 0
            k_i, loc = np.nonzero(valid)
            src_all.append(src[k_i, loc] - 1)
            dst_all.append(co * n_loc + loc)
            w_all.append(wk[keep][k_i])
    return (np.concatenate(src_all), np.concatenate(dst_all), np.concatenate(w_all))


def dense_pairs(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source, destination, weight) of the nonzero entries of a [out, in] matrix."""
    dst, src = np.nonzero(weight)
    return src, dst, weight[dst, src]


def _per_neuron_bias(q: QuantLayer) -> np.ndarray | None:
    if q.bias is None or not np.any(q.bias):
        return None
    n = q.layer.neurons
    b = np.asarray(q.bias, dtype=np.float64)
    if b.size == n:
        return b.reshape(-1)
    per = n // b.size  # one bias per output channel, (C, H, W) order
    return np.repeat(b.reshape(-1), per)


def _neuron_attributes(q: QuantLayer) -> dict:
    return {"threshold": float(q.vth), "reset": 0.0, "reset_mode": "hard",
            "reverse_threshold": V_MIN, "reverse_reset_mode": "saturate",
            "leak_decay": 1.0 - q.v_decay / DECAY_UNITY, "input_decay": 1.0 - q.i_decay / DECAY_UNITY}


# --- building -------------------------------------------------------------------------------
@dataclass
class _Built:
    chip: object
    n_in: int          # input neurons (0: the first layer's own neurons are the input)
    cores_used: int


MAPPINGS = ("mapper", "fill")


def core_slices(net: QuantNet, mapping: str = "mapper") -> list[tuple[str, int, int]]:
    """(layer, lo, hi) neuron slices a core, input first, then the mapper's slices with the Loihi 1
    profile's limits (``mapping="mapper"``), or each layer cut into slices of SANA-FE's 1024 neurons a
    core (``"fill"``: for a network the mapper's per-core limits do not place, SANA-FE checks neurons
    a core only)."""
    from spikeport.deploy.loihi.mapper import map_cores
    from spikeport.hw_profiles import load_profile
    n_in = int(np.prod(net.input_shape))
    out: list[tuple[str, int, int]] = []
    if not net.layers[0].input_neurons:
        out += [(INPUT_GROUP, lo, min(n_in, lo + INPUT_UNITS_PER_CORE)) for lo in range(0, n_in, INPUT_UNITS_PER_CORE)]
    if mapping == "fill":
        for q in net.layers:
            n = q.layer.neurons
            out += [(q.name, lo, min(n, lo + INPUT_UNITS_PER_CORE)) for lo in range(0, n, INPUT_UNITS_PER_CORE)]
        return out
    if mapping != "mapper":
        raise ValueError(f"mapping '{mapping}' is not one of {MAPPINGS}")
    mapping_ = map_cores(net, load_profile("loihi"))
    seen: dict[str, int] = {}
    for c in mapping_.cores:
        lo = seen.get(c.layer, 0)
        hi = lo + c.neurons
        out.append((c.layer, lo, hi))
        seen[c.layer] = hi
    return out


def _range(name: str) -> tuple[str, int, int]:
    """'loihi_tile[0..31]' -> ('loihi_tile', 0, 31)."""
    base, rest = name.split("[", 1)
    lo, hi = rest.rstrip("]").split("..")
    return base, int(lo), int(hi)


def loihi_arch(sanafe, input_cores: int, cores: int = 0):
    """SANA-FE's shipped Loihi architecture, every figure unchanged, with two changes of size only:
    the 1024 input units a core are kept on the tiles that hold input neurons (the others get one;
    building 128 x 1024 input units costs SANA-FE about 20 s, and units nobody maps cost nothing in
    its model); and a network needing more than its 128 cores gets a taller mesh of the same tiles,
    several Loihi chips as one mesh, as SANA-FE's own arch/loihi_large.yaml does."""
    import math
    import tempfile
    from importlib.resources import files

    import yaml
    arch = yaml.safe_load((files("sanafe.examples") / "loihi.yaml").read_text())
    top = arch["architecture"]["attributes"]
    tile = arch["architecture"]["tile"][0]
    base, lo, hi = _range(tile["name"])
    _, c_lo, c_hi = _range(tile["core"][0]["name"])
    per_tile = c_hi - c_lo + 1
    n_tiles = max(hi - lo + 1, math.ceil(cores / per_tile))
    if n_tiles > hi - lo + 1:
        top["height"] = math.ceil(n_tiles / int(top["width"]))
        n_tiles = int(top["width"]) * int(top["height"])
    input_tiles = min(n_tiles, math.ceil(input_cores / per_tile))
    tiles = []
    for first, last, units in ((0, input_tiles - 1, INPUT_UNITS_PER_CORE), (input_tiles, n_tiles - 1, 1)):
        if last < first:
            continue
        t = yaml.safe_load(yaml.safe_dump(tile))
        t["name"] = f"{base}[{lo + first}..{lo + last}]"
        for soma in t["core"][0]["soma"]:
            if soma["attributes"].get("model") == "input":
                soma["name"] = f"loihi_inputs[0..{units - 1}]"
        tiles.append(t)
    arch["architecture"]["tile"] = tiles
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        yaml.safe_dump(arch, fh)
    try:
        return sanafe.load_arch(fh.name)
    finally:
        Path(fh.name).unlink(missing_ok=True)


def build(net: QuantNet, sanafe, mapping: str = "mapper") -> _Built:
    """The network in SANA-FE, mapped onto its Loihi cores, loaded on a chip."""
    from spikeport.errors import MappingError
    if any(q.delay is not None and np.any(q.delay) for q in net.layers):
        raise MappingError("SANA-FE cross-check: layers with axonal delays are not translated")
    slices = core_slices(net, mapping)
    arch = loihi_arch(sanafe, sum(1 for s in slices if s[0] == INPUT_GROUP), len(slices))
    cores = arch.cores()
    snn = sanafe.Network()
    n_in = int(np.prod(net.input_shape))
    groups: dict[str, object] = {}
    if not net.layers[0].input_neurons:
        g = snn.create_neuron_group(INPUT_GROUP, n_in, soma_hw_name="loihi_inputs[0]", log_spikes=False)
        for k, neuron in enumerate(g.neurons):  # one input unit a neuron: the unit holds the spike train
            neuron.set_attributes(soma_hw_name=f"loihi_inputs[{k % INPUT_UNITS_PER_CORE}]")
        groups[INPUT_GROUP] = g
    prev = INPUT_GROUP
    for q in net.layers:
        kind = q.layer.kind if q.layer.kind in SYNAPSE else "dense"
        g = snn.create_neuron_group(q.name, q.layer.neurons, soma_hw_name=SOMA,
                                    default_synapse_hw_name=SYNAPSE[kind], model_attributes=_neuron_attributes(q),
                                    log_spikes=True)
        groups[q.name] = g
        if not q.input_neurons:
            src, dst, w = conv_pairs(q) if q.layer.kind == "conv" else dense_pairs(q.weight)
            groups[prev].connect_neurons_sparse(g, {"weight": [float(v) for v in w]},
                                                list(zip(src.tolist(), dst.tolist())))
        if q.rec_weight is not None:
            src, dst, w = dense_pairs(q.rec_weight)
            g.connect_neurons_sparse(g, {"weight": [float(v) for v in w]}, list(zip(src.tolist(), dst.tolist())))
        prev = q.name
    assert len(slices) <= len(cores), (len(slices), len(cores))
    for core, (name, lo, hi) in zip(cores, slices):
        neurons = groups[name].neurons
        for k in range(lo, hi):
            neurons[k].map_to_core(core)
    chip = sanafe.SpikingChip(arch)
    chip.load(snn)
    return _Built(chip, n_in if INPUT_GROUP in groups else 0, len(slices))


# --- running --------------------------------------------------------------------------------
def _count_trace(trace, counts: dict[str, np.ndarray]) -> None:
    for step in trace:
        for addr in step:
            c = counts.get(addr.group_name)
            if c is not None:
                c[addr.neuron_offset] += 1


def _set_bias(group, index: np.ndarray, values: np.ndarray | None) -> None:
    """Switch a layer's biases on (``values``) or off (None) on the mapped neurons."""
    for j, k in enumerate(index):
        group[int(k)].set_attributes(model_attributes={"bias": 0.0 if values is None else float(values[j])})


def run_sanafe(net: QuantNet, inputs: torch.Tensor, fast_spikes: dict[str, torch.Tensor] | None = None,
               mapping: str = "mapper") -> SanafeRun:
    """Simulate ``inputs`` [N, T, *input_shape] sample by sample (reset between) in SANA-FE and compare
    the per-layer spikes with the fast engine's (run here unless ``fast_spikes`` is given)."""
    sanafe = import_sanafe()
    n, t = int(inputs.shape[0]), int(inputs.shape[1])
    built = build(net, sanafe, mapping)
    # local time: layer k's step t runs at SANA-FE step t + offset (one step a synapse block)
    offsets = [k + (1 if built.n_in else 0) for k in range(len(net.layers))]
    steps = t + offsets[-1]
    biases = []  # (mapped group, neuron indices, values, offset) of every biased layer
    for q, off in zip(net.layers, offsets):
        b = _per_neuron_bias(q)
        if b is not None:
            idx = np.flatnonzero(b)
            biases.append((built.chip.mapped_neuron_groups[q.name], idx, b[idx], off))
    notes = []
    if net.input_bits:
        notes.append("graded input spikes sent to SANA-FE as one spike each (its input model is binary)")
    if any(0 < q.i_decay < DECAY_UNITY for q in net.layers):
        notes.append("current decay in floating point in SANA-FE, rounded toward zero in Lava: spikes can drift")
    if biases:
        notes.append("biased layers: run step by step, each layer's bias on for its own T steps only "
                     "(SANA-FE resets the whole chip at once and runs every layer for all T + depth steps)")
    sizes = {q.name: q.layer.neurons for q in net.layers}
    starts = {off for *_, off in biases} | {off + t for *_, off in biases}
    totals = {name: np.zeros(s, dtype=np.int64) for name, s in sizes.items()}
    energy = dict.fromkeys(ENERGY_TERMS, 0.0)
    sim_time = 0.0
    counts = {"spikes": 0.0, "packets_sent": 0.0, "neurons_updated": 0.0, "neurons_fired": 0.0}
    flat = inputs.reshape(n, t, -1)
    mapped_in = built.chip.mapped_neuron_groups[INPUT_GROUP] if built.n_in else None
    for i in range(n):
        if mapped_in is not None:
            trains = (flat[i] != 0).T.numpy()  # [n_in, T]
            for k in range(built.n_in):
                mapped_in[k].set_attributes(model_attributes={"spikes": trains[k].tolist()})
        # without biases one call runs the sample; with them, a call between the switching points
        cuts = sorted({0, steps, *(c for c in starts if c < steps)})
        for a, b in zip(cuts[:-1], cuts[1:]):
            for group, idx, values, off in biases:
                if a == off:
                    _set_bias(group, idx, values)
                elif a == off + t:
                    _set_bias(group, idx, None)
            res = built.chip.sim(b - a, spike_trace=True, processing_threads=1)
            _count_trace(res["spike_trace"], totals)
            for term in ENERGY_TERMS:
                energy[term] += float(res["energy"].get(term, 0.0))
            sim_time += float(res["sim_time"])
            for key in counts:
                counts[key] += float(res.get(key, 0.0))
        for group, idx, _, off in biases:
            if off + t >= steps:  # still on: off before the next sample
                _set_bias(group, idx, None)
        built.chip.reset()
    if fast_spikes is None:
        from spikeport.deploy.loihi.fast_engine import run_fast
        fast_spikes = run_fast(net, inputs).neuron_spikes
    layers = []
    for q in net.layers:
        fs = fast_spikes[q.name].reshape(-1).to(torch.float64).numpy()
        ss = totals[q.name].astype(np.float64)
        layers.append(LayerAgreement(q.name, q.layer.neurons, float(fs.sum()) / n, float(ss.sum()) / n,
                                     float(np.mean(fs == ss)) if fs.size else 1.0))
    return SanafeRun(samples=n, timesteps=t, steps_run=steps, energy={k: v / n for k, v in energy.items()},
                     sim_time_s=sim_time / n, cores_used=built.cores_used, layers=layers,
                     counts={k: v / n for k, v in counts.items()}, notes=notes)
