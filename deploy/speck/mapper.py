"""Layers -> Speck's 9 cores, by the chip's memory formulas.

Each core has its own kernel, neuron and bias memory (``[limits.*_memory]`` of the profile;
cores 0-2 hold many neurons and few weights, 5-6 the reverse). A layer needs
(sinabs ``DynapcnnLayer.memory_summary``, sinabs docs/speck/overview.md):

- kernel memory ``c_in * 2^(ceil(log2(k*k)) + ceil(log2(c_out)))``,
- neuron memory ``c_out * 2^(ceil(log2(h_out)) + ceil(log2(w_out)))`` (the neuron array is
  addressed by powers of two: a 17x17 layer takes 32x32 entries a channel),
- bias memory ``c_out`` when the layer has a bias, else 0.

One layer a core, each core at most one layer: a bipartite matching. ``map_layers`` finds one
with augmenting paths (Kuhn's algorithm), so it finds an assignment whenever one exists, also
when a greedy in-order choice would take a big core that a later layer needs. When none
exists, MappingError names the layer and how far over which memory it is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from spikeport.deploy.speck.chip_form import ChipLayer, SpeckLimits
from spikeport.errors import MappingError

MEMORIES = ("kernel", "neuron", "bias")


def _pow2_ceil_log2(n: int) -> int:
    return 2 ** math.ceil(math.log2(n)) if n > 1 else 1


@dataclass(frozen=True)
class LayerMemory:
    name: str
    kernel: int   # entries
    neuron: int
    bias: int

    def need(self, memory: str) -> int:
        return getattr(self, memory)


def layer_memory(layer: ChipLayer, has_bias: bool | None = None) -> LayerMemory:
    c_out, c_in, kh, kw = (int(v) for v in layer.weight.shape)
    _, h, w = layer.out_shape
    kernel = c_in * _pow2_ceil_log2(kh * kw) * _pow2_ceil_log2(c_out)
    neuron = c_out * _pow2_ceil_log2(h) * _pow2_ceil_log2(w)
    if has_bias is None:
        has_bias = bool((layer.bias != 0).any())
    return LayerMemory(layer.name, kernel, neuron, c_out if has_bias else 0)


def _capacity(limits: SpeckLimits, memory: str, core: int) -> int:
    return getattr(limits, f"{memory}_memory")[core]


def fits(need: LayerMemory, limits: SpeckLimits, core: int) -> bool:
    return all(need.need(m) <= _capacity(limits, m, core) for m in MEMORIES)


def _ki(entries: int) -> str:
    return f"{entries / 1024:g} Ki"


def _closest_miss(need: LayerMemory, limits: SpeckLimits, cores: range | list[int]) -> str:
    """'core 5: neuron memory over by 16 Ki entries (32 Ki needed, 16 Ki there)' for the core(s) the
    layer misses by the least (sum of relative overflows), one per memory layout."""
    def overflow(core: int) -> list[tuple[str, int, int]]:
        return [(m, need.need(m), _capacity(limits, m, core)) for m in MEMORIES
                if need.need(m) > _capacity(limits, m, core)]

    def score(core: int) -> float:
        return sum((n - cap) / max(cap, 1) for _, n, cap in overflow(core))

    low = min(score(c) for c in cores)
    best: dict[tuple, int] = {}  # one core of each memory layout among the closest misses
    for c in cores:
        layout = tuple(_capacity(limits, m, c) for m in MEMORIES)
        if score(c) == low and layout not in best:
            best[layout] = c
    return "; or ".join(
        f"core {c}: " + ", ".join(f"{m} memory over by {_ki(n - cap)} entries ({_ki(n)} needed, {_ki(cap)} there)"
                                  for m, n, cap in overflow(c)) for c in best.values())


def map_layers(needs: list[LayerMemory], limits: SpeckLimits) -> dict[str, int]:
    """{layer name: core} with every layer on its own core and within that core's memories."""
    cores = range(limits.cores)
    if len(needs) > limits.cores:
        raise MappingError(f"the network has {len(needs)} layers ({', '.join(n.name for n in needs)}); Speck has "
                           f"{limits.cores} cores, one layer each")
    options = [[c for c in cores if fits(n, limits, c)] for n in needs]
    for need, opts in zip(needs, options):
        if not opts:
            largest = {m: max(getattr(limits, f"{m}_memory")) for m in MEMORIES}
            over = [f"{m} memory {_ki(need.need(m))} entries is over the largest core's {_ki(largest[m])} by "
                    f"{_ki(need.need(m) - largest[m])}" for m in MEMORIES if need.need(m) > largest[m]]
            detail = "; ".join(over) if over else "no core has room for both; closest " + _closest_miss(need, limits, cores)
            raise MappingError(f"layer '{need.name}' fits no Speck core (kernel {_ki(need.kernel)}, neuron "
                               f"{_ki(need.neuron)}, bias {need.bias} entries): {detail}")
    # Kuhn's augmenting paths. Cores are tried smallest first (total memory), so small layers
    # take small cores when they can; the augmenting step moves them when a later layer needs it.
    size = {c: sum(_capacity(limits, m, c) for m in MEMORIES) for c in cores}
    options = [sorted(o, key=lambda c: (size[c], c)) for o in options]
    owner: dict[int, int] = {}

    def augment(i: int, seen: set[int]) -> bool:
        for core in options[i]:       # a free core first: move no other layer without need
            if core not in owner:
                owner[core] = i
                seen.add(core)
                return True
        for core in options[i]:
            if core in seen:
                continue
            seen.add(core)
            if augment(owner[core], seen):
                owner[core] = i
                return True
        return False

    for i in sorted(range(len(needs)), key=lambda i: (len(options[i]), i)):  # most constrained first
        seen: set[int] = set()
        if not augment(i, seen):
            # Hall's condition fails: the layers that can reach only the cores in ``seen`` are
            # more than those cores.
            rivals = sorted({owner[c] for c in seen if c in owner} | {i})
            names = ", ".join(needs[j].name for j in rivals)
            others = [c for c in cores if c not in seen]
            miss = _closest_miss(needs[i], limits, others) if others else "no other core exists"
            raise MappingError(
                f"layer '{needs[i].name}' has no core left: {len(rivals)} layers ({names}) fit only the "
                f"{len(seen)} cores {sorted(seen)}; the nearest other core for '{needs[i].name}' is {miss}")
    return {needs[i].name: core for core, i in sorted(owner.items(), key=lambda kv: kv[1])}


def core_report(needs: list[LayerMemory], mapping: dict[str, int], limits: SpeckLimits) -> list[dict]:
    """Per core: the layer on it and the entries used of each memory (unused cores included)."""
    by_core = {core: need for need in needs for name, core in mapping.items() if name == need.name}
    rows = []
    for core in range(limits.cores):
        need = by_core.get(core)
        row: dict = {"core": core, "layer": need.name if need else None}
        for m in MEMORIES:
            row[f"{m}_entries"] = need.need(m) if need else 0
            row[f"{m}_capacity"] = _capacity(limits, m, core)
        rows.append(row)
    return rows


def sinabs_validator(layer: ChipLayer) -> str | None:
    """``sinabs.utils.validate_memory_mapping_speck`` on one layer: None when it accepts it, else
    its message. (Per layer only, and its neuron formula divides the output size without
    flooring, so it can be stricter than the chip by one power of two.)"""
    from sinabs.utils import validate_memory_mapping_speck

    c_out, c_in, kh, kw = (int(v) for v in layer.weight.shape)
    _, h, w = layer.in_shape
    try:
        validate_memory_mapping_speck(c_in, c_out, (kh, kw), layer.stride, layer.padding, (h, w))
    except Exception as exc:  # sinabs raises bare Exception / Warning with the reason
        return str(exc)
    return None


# --- event load per core -----------------------------------------------------------------------------
#: sinabs docs (docs/speck/faqs/tips_for_training.md, "SynOps/s Bandwidth Constrains"): each core
#: executes at most a certain number of synaptic operations per second, and when one core exceeds
#: it the whole chip stalls. No figure is published there (nor in sinabs' overview, samna's
#: reference or Yao et al. 2024). The published figure nearest to it is the latency of 3.36 us
#: for one input event through a 9-layer network (Yao et al. 2024; the profile's
#: ``timing.event_time``): a core that receives events faster than one per 3.36 us is flagged.
#: That bound is conservative (the 3.36 us cover nine cores in turn); synops/s are reported too.
LOAD_SOURCE = ("no per-core figure is published (sinabs docs tips_for_training.md: a core over its SynOps/s "
               "bandwidth stalls the chip); bound used: 1 input event per timing.event_time = 3.36 us, the "
               "published latency of one event through a 9-layer network (Yao et al. 2024)")


def core_load(form, inputs, layer_spikes: dict, bin_s: float, profile) -> dict:
    """Peak and mean input events/s and synops/s of each layer's core over ``bin_s`` bins.

    ``inputs`` [N, T, *input shape] (event counts), ``layer_spikes`` layer -> [T, N, C, H, W]
    spikes before pooling (``simulate(..., record=True)``)."""
    import torch
    import torch.nn.functional as F

    from spikeport.deploy.speck.simulate import fanout_map, to_chip_input

    n, t = inputs.shape[:2]
    event_time = profile.timing["event_time"].si() if "event_time" in getattr(profile, "timing", {}) else 3.36e-6
    limit_events = 1.0 / event_time
    rows, warnings = [], []
    h = to_chip_input(form, inputs).double().reshape(n, t, *form.input_shape)      # [N, T, C, H, W]
    if form.input_pool > 1:   # sum pooling of the input merges addresses, not events
        k = form.input_pool
        c, hh, ww = form.input_shape
        h = F.avg_pool2d(h.reshape(n * t, c, hh, ww), k).mul(k * k).reshape(n, t, c, hh // k, ww // k)
    for layer in form.layers:
        events = h.sum((2, 3, 4))                                                   # [N, T]
        synops = (h * fanout_map(layer)).sum((2, 3, 4))
        peak_ev, peak_syn = float(events.max()) / bin_s, float(synops.max()) / bin_s
        over = peak_ev > limit_events
        rows.append({"layer": layer.name, "peak_events_per_s": peak_ev, "mean_events_per_s": float(events.mean()) / bin_s,
                     "peak_synops_per_s": peak_syn, "mean_synops_per_s": float(synops.mean()) / bin_s,
                     "of_limit": peak_ev / limit_events, "overloaded": bool(over)})
        if over:
            warnings.append(f"{layer.name}: its core receives up to {peak_ev:.3g} events/s (in a {bin_s:g} s bin), "
                            f"above one event per {event_time * 1e6:.3g} us ({limit_events:.3g}/s): the core may stall")
        if layer.name not in layer_spikes:
            break
        s = layer_spikes[layer.name].double().transpose(0, 1)                       # [N, T, C, H, W]
        if s.dim() == 3:
            s = s.reshape(n, t, *layer.out_shape)
        if layer.pool > 1:
            c, hh, ww = layer.out_shape
            s = F.avg_pool2d(s.reshape(n * t, c, hh, ww), layer.pool).mul(layer.pool ** 2) \
                .reshape(n, t, c, hh // layer.pool, ww // layer.pool)
        h = s
    return {"bin_s": bin_s, "limit_events_per_s": limit_events, "limit_synops_per_s": None,
            "limit_kind": "conservative bound from a published latency", "limit_source": LOAD_SOURCE,
            "layers": rows, "warnings": warnings}
