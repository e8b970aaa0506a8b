"""The energy model: deployment counts x hardware profile figures -> joules per inference, by term,
in two symmetric modes.

Chip (one inference = one test sample, counts are the per-sample means of stats.json):

    dynamic  = synops x E_synop + neuron_updates x E_update + spikes x E_route
             + host_MACs x E_MAC(host profile)                              (host part, if any)
    real     = timesteps x bin width (the data's bin: stats ``bin_s`` when present, else ``dt``)
    chip     = the chip's own time for the sample run flat out: timesteps x ``timing.step_time``
               (clocked chips), or input events x ``timing.event_time`` (event-driven chips)

ANN baseline (the ANN twin):

    dynamic(B) = MACs x E_MAC + weight_values x value_bytes x E_weight_byte / B
               + activation_values x value_bytes x E_activation_byte          (per inference, batch B)
    time(B)    = weight_layers x layer_overhead
               + max(2 MACs B / peak_flops, (weights + activations B) x value_bytes / memory_bandwidth)

    E_MAC derived from board power uses (board_power - idle_power): the idle part is charged
    separately below, never twice.

The two modes charge static / idle power the same way on both sides:

    sensor_paced  each side handles one sample as it arrives and pays its static (idle) power for
                  the sample's real duration (or its own compute time, when that is longer):
                  E = dynamic(1) + P_static x max(real, time(1))
    throughput    each side runs flat out and pays static power only while it works:
                  chip E = dynamic + P_static x chip;  baseline E = dynamic(B) + P_idle x time(B) / B
                  at batch 1 and at the batch B (a power of two up to 1024) that spends least.

The papers' shortcut (MACs x 4.6 pJ versus synops x 0.9 pJ, on the 45 nm profile) is computed
beside it and labelled as such. All functions are pure: counts and profiles in, numbers out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from spikeport.errors import ArtifactError, ConfigError
from spikeport.hw_profiles import Profile, load_profile
from spikeport.schemas import LayerCounts, Stats

KIND_ORDER = {"estimate": 0, "published": 1, "measured": 2}
CHIP_TERMS = ("synops", "neuron_updates", "routing", "static", "host")
LAYER_TERMS = ("synops", "neuron_updates", "routing")
BASELINE_TERMS = ("compute", "weight_memory", "activation_memory")
SHORTCUT_PROFILE = "gpu-horowitz45"
MODES = ("sensor_paced", "throughput")
# batch sizes tried for the baseline's throughput mode; the best is the smallest within 1 % of
# the least energy per inference (past the compute-bound point a larger batch buys nothing)
BATCHES = tuple(2 ** k for k in range(11))
BEST_BATCH_TOLERANCE = 0.01
BIN_FIELDS = ("bin_s", "bin_width_s", "step_duration_s", "step_s")  # a run's bin width, when recorded


@dataclass(frozen=True)
class FigureUse:
    """One profile figure as the model used it, in SI units (J, W, s, J/byte, bytes, ...)."""

    key: str
    value: float
    unit: str
    kind: str
    source: str
    derivation: str | None = None  # how it was computed from other figures, when it was

    def as_dict(self) -> dict:
        d = {"key": self.key, "value": self.value, "unit": self.unit, "kind": self.kind, "source": self.source}
        if self.derivation:
            d["derivation"] = self.derivation
        return d


def weakest_kind(kinds: list[str]) -> str:
    """The least trustworthy kind among figures (estimate < published < measured)."""
    return min(kinds, key=KIND_ORDER.__getitem__) if kinds else "published"


def _use(profile: Profile, section: str, key: str, dimension: str, si_unit: str, prefix: str = "") -> FigureUse:
    fig = profile.figure(section, key)
    return FigureUse(f"{prefix}{section}.{key}", profile.si(section, key, dimension), si_unit, fig.kind, fig.source)


def _where(profile: Profile) -> str:
    return profile.path or profile.name


def _positive(profile: Profile, use: FigureUse) -> FigureUse:
    """A figure that divides or sets a time scale: zero would make a latency or a rate meaningless."""
    if use.value <= 0:
        raise ConfigError(f"{_where(profile)}: key '{use.key}' must be positive (got {use.value:g} {use.unit})")
    return use


def idle_power(profile: Profile) -> FigureUse:
    """The static (chip) or idle (GPU/CPU) power: what the device draws doing nothing."""
    key = "static_power" if profile.device == "chip" else "idle_power"
    use = _use(profile, "energy", key, "power", "W")
    if profile.has("energy", "board_power") and use.value >= profile.si("energy", "board_power", "power"):
        raise ConfigError(f"{_where(profile)}: key 'energy.{key}' ({use.value:g} W) must be below "
                          f"'energy.board_power' ({profile.si('energy', 'board_power', 'power'):g} W)")
    return use


# --- figures, with the derivations the profiles rely on -------------------------------------
def synop_energy(profile: Profile) -> FigureUse:
    """Energy of one synaptic operation. Given directly (``energy.synop``), or derived from the
    chip's dynamic power at a stated rate: (operating_power - static_power) / reference_synop_rate."""
    if profile.has("energy", "synop"):
        return _use(profile, "energy", "synop", "energy", "J")
    parts = [("energy", "operating_power", "power"), ("energy", "static_power", "power"),
             ("timing", "reference_synop_rate", "rate")]
    missing = [f"{s}.{k}" for s, k, _ in parts if not profile.has(s, k)]
    if missing:
        raise ConfigError(f"{profile.path or profile.name}: missing key 'energy.synop' (or, to derive it, "
                          f"{', '.join(missing)})")
    p_op, p_static, rate = (profile.si(s, k, d) for s, k, d in parts)
    if p_op < p_static:
        raise ConfigError(f"{profile.path or profile.name}: key 'energy.operating_power' is below "
                          "'energy.static_power'; cannot derive a per-synop energy")
    if rate <= 0:
        raise ConfigError(f"{profile.path or profile.name}: key 'timing.reference_synop_rate' must be positive")
    kinds = [profile.figure(s, k).kind for s, k, _ in parts]
    return FigureUse("energy.synop", (p_op - p_static) / rate, "J", "estimate" if "estimate" in kinds else weakest_kind(kinds),
                     "; ".join(profile.figure(s, k).source for s, k, _ in parts),
                     derivation=f"(operating_power {p_op * 1e3:g} mW - static_power {p_static * 1e3:g} mW) "
                                f"/ reference_synop_rate {rate:g} /s")


def mac_energy(profile: Profile, prefix: str = "", dynamic: bool = False) -> FigureUse:
    """Energy of one MAC. Given directly (``energy.mac``), or derived from power at peak
    throughput: 2 FLOP a MAC x board_power / peak_flops (a lower bound: full utilisation).
    ``dynamic``: use board_power - idle_power, for a caller that charges the idle power itself."""
    if profile.has("energy", "mac"):
        return _use(profile, "energy", "mac", "energy", "J", prefix)
    if not (profile.has("energy", "board_power") and profile.has("timing", "peak_flops")):
        raise ConfigError(f"{profile.path or profile.name}: missing key 'energy.mac' (or, to derive it, "
                          "'energy.board_power' and 'timing.peak_flops')")
    power = profile.si("energy", "board_power", "power")
    flops = profile.si("timing", "peak_flops", "rate")
    if flops <= 0:
        raise ConfigError(f"{profile.path or profile.name}: key 'timing.peak_flops' must be positive")
    keys = ["board_power", "peak_flops"]
    sources = [profile.figure("energy", "board_power").source, profile.figure("timing", "peak_flops").source]
    how = f"2 FLOP/MAC x board_power {power:g} W / peak_flops {flops:g} FLOP/s"
    if dynamic:
        idle = idle_power(profile)
        power -= idle.value
        keys.append("idle_power")
        sources.append(idle.source)
        how = f"2 FLOP/MAC x (board_power - idle_power {idle.value:g} W) / peak_flops {flops:g} FLOP/s"
    kinds = [profile.figure("energy" if k != "peak_flops" else "timing", k).kind for k in keys]
    return FigureUse(f"{prefix}energy.mac", 2.0 * power / flops, "J", "estimate", "; ".join(sources),
                     derivation=f"{how} (inputs: {', '.join(kinds)})")


# --- chip -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerEnergy:
    name: str
    kind: str | None
    synops: float
    neuron_updates: float
    spikes: float
    terms: dict[str, float]  # LAYER_TERMS -> joules per inference


@dataclass(frozen=True)
class ModeEnergy:
    """One side of one comparison mode, per inference."""

    mode: str                   # sensor_paced | throughput
    dynamic_j: float
    static_j: float             # static (chip) or idle (baseline) power x period_s
    period_s: float             # the time static power is charged for, per inference
    latency_s: float | None     # from the sample's first input to its result
    inferences_per_s: float | None
    batch: int = 1

    @property
    def joules(self) -> float:
        return self.dynamic_j + self.static_j

    @property
    def edp(self) -> float | None:
        """Energy-delay product (J s): lower is better on both counts."""
        return None if self.latency_s is None else self.joules * self.latency_s

    def as_dict(self) -> dict:
        return {"joules_per_inference": self.joules, "dynamic_joules": self.dynamic_j, "static_joules": self.static_j,
                "static_period_s": self.period_s, "latency_s": self.latency_s,
                "inferences_per_s": self.inferences_per_s, "edp_js": self.edp, "batch": self.batch}


@dataclass(frozen=True)
class ChipEstimate:
    profile: str
    terms: dict[str, float]           # CHIP_TERMS -> joules per inference (sensor-paced static term)
    layers: list[LayerEnergy]
    figures: list[FigureUse]
    timesteps: int
    dt: float
    step_s: float                      # real time of one step: the data's bin width
    duration_s: float                  # the sensor-paced static span: max(real_s, chip_s)
    synops: float
    neuron_updates: float
    spikes: float
    host_macs: float
    real_s: float = 0.0                # timesteps x bin width: the sample's real duration
    chip_s: float = 0.0                # the chip's own time for the sample, run flat out
    static_w: float = 0.0
    timing: str = ""                   # how chip_s was obtained

    @property
    def total(self) -> float:
        return sum(self.terms.values())

    @property
    def dynamic(self) -> float:
        """Everything but the static power: what the network's activity costs."""
        return self.total - self.terms["static"]

    @property
    def kind(self) -> str:
        return weakest_kind([f.kind for f in self.figures])

    @property
    def estimated(self) -> list[str]:
        return [f.key for f in self.figures if f.kind == "estimate"]

    @property
    def keeps_up(self) -> bool:
        """Whether the chip finishes a sample within the sample's real duration."""
        return self.chip_s <= self.real_s

    def sensor_paced(self) -> ModeEnergy:
        # one sample at a time, as it arrives: static power for the whole real span
        return ModeEnergy("sensor_paced", self.dynamic, self.static_w * self.duration_s, self.duration_s,
                          self.duration_s, 1.0 / self.duration_s)

    def throughput(self) -> ModeEnergy:
        # samples back to back, as fast as the chip goes: static power only while it works
        return ModeEnergy("throughput", self.dynamic, self.static_w * self.chip_s, self.chip_s, self.chip_s,
                          1.0 / self.chip_s)


def per_sample_counts(stats: Stats) -> list[LayerCounts]:
    """Per-sample mean counts per layer: ``per_sample`` when the target wrote it, else the
    totals divided by the number of samples."""
    if stats.per_sample:
        return stats.per_sample
    n = stats.samples
    return [layer.model_copy(update={"spikes": layer.spikes / n, "synops": layer.synops / n,
                                     "neuron_updates": layer.neuron_updates / n,
                                     **({"input_events": layer.input_events / n}
                                        if getattr(layer, "input_events", None) is not None else {})})
            for layer in stats.layers]


def bin_width(stats: Stats) -> float:
    """Real time of one step: the run's recorded bin width when it has one, else its dt."""
    for name in BIN_FIELDS:
        value = getattr(stats, name, None)
        if value:
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"{stats.target}: stats field '{name}' must be a positive number of seconds")
            return float(value)
    return float(stats.dt)


def input_events(counts: list[LayerCounts]) -> tuple[float, str]:
    """Events entering the chip per sample: the first layer's input events when the target
    counted them, else every spike routed (an upper bound of what the cores must handle)."""
    first = getattr(counts[0], "input_events", None) if counts else None
    if first is not None:
        return float(first), "input events"
    return float(sum(c.spikes for c in counts)), "routed spikes (input events not counted by the target)"


EVENT_TIME_KEYS = ("synop_time", "neuron_update_time", "spike_time", "sync_time")


def event_step_time(stats: Stats, profile: Profile, counts: list[LayerCounts]) -> tuple[float, list[FigureUse], str]:
    """Chip time of one sample from its events: every core works through its synops, neuron updates
    and spikes of a step, then all wait at the barrier:

        per step = (synops x t_synop + neuron_updates x t_update + spikes x t_spike) / (T x cores) + t_sync

    the events spread evenly over the cores the deployment uses (a balanced placement); convolution
    synops at ``timing.conv_synop_time`` where the profile gives it."""
    figs = [_positive(profile, _use(profile, "timing", k, "time", "s")) for k in EVENT_TIME_KEYS]
    t_syn, t_upd, t_spk, t_sync = (f.value for f in figs)
    t_conv = t_syn
    if profile.has("timing", "conv_synop_time"):
        conv = _positive(profile, _use(profile, "timing", "conv_synop_time", "time", "s"))
        figs.append(conv)
        t_conv = conv.value
    busy = sum(c.synops * (t_conv if c.kind == "conv" else t_syn) + c.neuron_updates * t_upd + c.spikes * t_spk
               for c in counts)
    cores = max(1, int(stats.cores_used))
    step = busy / stats.timesteps / cores + t_sync
    return stats.timesteps * step, figs, (f"{stats.timesteps} steps x {step:.4g} s a step (events' latencies over "
                                          f"{cores} cores + {t_sync:g} s barrier)")


def chip_time(stats: Stats, profile: Profile, counts: list[LayerCounts]) -> tuple[float, list[FigureUse], str]:
    """The chip's own time for one sample run flat out, the figures it rests on, and how."""
    if profile.has("timing", "synop_time"):
        return event_step_time(stats, profile, counts)
    for key in ("step_time", "step_duration"):  # step_duration: the older name of the same figure
        if profile.has("timing", key):
            fig = _positive(profile, _use(profile, "timing", key, "time", "s"))
            return stats.timesteps * fig.value, [fig], f"{stats.timesteps} steps x {fig.value:g} s a step"
    if profile.has("timing", "event_time"):
        fig = _positive(profile, _use(profile, "timing", "event_time", "time", "s"))
        events, what = input_events(counts)
        return events * fig.value, [fig], f"{events:.4g} {what} x {fig.value:g} s an event"
    raise ConfigError(f"{_where(profile)}: missing key 'timing.step_time' (chip time per step, run flat out; "
                      "or 'timing.event_time' for an event-driven chip, or 'timing.synop_time' with "
                      "neuron_update_time, spike_time and sync_time for the event model)")


def chip_energy(stats: Stats, profile: Profile, host_profile: Profile | None = None) -> ChipEstimate:
    """Joules per inference of one deployed target, by term and by layer, with its timing."""
    if profile.device != "chip":
        raise ConfigError(f"{profile.path or profile.name}: profile is a {profile.device}, not a chip")
    e_syn = synop_energy(profile)
    e_upd = _use(profile, "energy", "neuron_update", "energy", "J")
    e_route = _use(profile, "energy", "spike_route", "energy", "J")
    p_static = idle_power(profile)
    counts = per_sample_counts(stats)
    chip_s, time_figs, timing = chip_time(stats, profile, counts)
    figures = [e_syn, e_upd, e_route, p_static, *time_figs]
    layers = []
    for c in counts:
        terms = {"synops": c.synops * e_syn.value, "neuron_updates": c.neuron_updates * e_upd.value,
                 "routing": c.spikes * e_route.value}
        layers.append(LayerEnergy(c.name, c.kind, c.synops, c.neuron_updates, c.spikes, terms))
    step_s = bin_width(stats)
    real_s = stats.timesteps * step_s
    duration = max(real_s, chip_s)  # a chip slower than the sensor keeps its static power on longer
    host_macs = float(stats.host_macs_per_sample)
    host_j = 0.0
    if host_macs > 0:
        if host_profile is None:
            raise ConfigError(f"{stats.target}: the model has a host part ({host_macs:g} MACs a sample) "
                              "but no host profile was given")
        e_host = mac_energy(host_profile, prefix=f"host:{host_profile.name}:")
        figures.append(e_host)
        host_j = host_macs * e_host.value
    terms = {t: sum(layer.terms[t] for layer in layers) for t in LAYER_TERMS}
    terms["static"] = p_static.value * duration
    terms["host"] = host_j
    return ChipEstimate(
        profile=profile.name, terms=terms, layers=layers, figures=figures, timesteps=stats.timesteps,
        dt=stats.dt, step_s=step_s, duration_s=duration,
        synops=sum(layer.synops for layer in layers), neuron_updates=sum(layer.neuron_updates for layer in layers),
        spikes=sum(layer.spikes for layer in layers), host_macs=host_macs,
        real_s=real_s, chip_s=chip_s, static_w=p_static.value, timing=timing)


# --- ANN baseline ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AnnWorkload:
    """What one batch-1 inference of the ANN twin moves and computes."""

    macs: float
    weight_values: float       # parameters read once per inference
    activation_values: float   # values written or read through on-chip memory
    source: str = ""
    weight_layers: int = 1     # Conv/Gemm/MatMul kernels: one launch (dispatch) each per batch


@dataclass(frozen=True)
class BaselineEstimate:
    profile: str
    terms: dict[str, float]  # BASELINE_TERMS -> joules per inference
    figures: list[FigureUse]
    workload: AnnWorkload
    assumptions: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.terms.values())

    @property
    def kind(self) -> str:
        return weakest_kind([f.kind for f in self.figures])


def weight_residency(work: AnnWorkload, profile: Profile, value_bytes: float,
                     resident: bool | None = None) -> tuple[FigureUse, str]:
    """The energy a weight byte costs the baseline, and why: on-chip memory when the twin's weights
    fit the profile's ``limits.on_chip_memory`` (and it prices ``energy.on_chip_weight_byte``),
    else off-chip memory (``energy.weight_byte``) read once per inference. ``resident`` forces it."""
    size = work.weight_values * value_bytes
    has_chip = profile.has("limits", "on_chip_memory") and profile.has("energy", "on_chip_weight_byte")
    if has_chip:
        cap = profile.si("limits", "on_chip_memory", "size")
        fits = size <= cap if resident is None else resident
        if fits:
            return (_use(profile, "energy", "on_chip_weight_byte", "energy/byte", "J/byte"),
                    f"weights resident in on-chip memory ({size / 1e3:.4g} kB"
                    + (f" <= {cap / 1e3:.4g} kB on chip)" if size <= cap else ", forced)"))
        why = f"{size / 1e3:.4g} kB of weights" + (f" > {cap / 1e3:.4g} kB on chip" if size > cap else ", forced")
    else:
        if resident:
            raise ConfigError(f"{_where(profile)}: missing key 'energy.on_chip_weight_byte' (weights resident "
                              "on chip were asked for)")
        why = "the profile gives no on-chip capacity"
    return (_use(profile, "energy", "weight_byte", "energy/byte", "J/byte"),
            f"every weight read once per inference from off-chip memory ({why})")


def ann_energy(work: AnnWorkload, profile: Profile, *, int8: bool = False,
               resident: bool | None = None) -> BaselineEstimate:
    """Dynamic joules per batch-1 inference of the ANN twin on a GPU/CPU profile, by term (idle
    power is charged per mode, by ``baseline_modes``). ``int8``: the iso-precision twin (the chips
    use 8-bit weights): ``energy.int8_mult + energy.int8_add`` a MAC and 1-byte values."""
    if profile.device == "chip":
        raise ConfigError(f"{profile.path or profile.name}: profile is a chip, not a GPU/CPU baseline")
    if int8:
        mult = _use(profile, "energy", "int8_mult", "energy", "J")
        add = _use(profile, "energy", "int8_add", "energy", "J")
        e_mac = FigureUse("energy.int8_mac", mult.value + add.value, "J", weakest_kind([mult.kind, add.kind]),
                          f"{mult.source}; {add.source}", derivation="int8_mult + int8_add")
        vb = FigureUse("int8.value_bytes", 1.0, "bytes", "published", "8-bit weights and activations")
    else:
        e_mac = mac_energy(profile, dynamic=True)
        vb = _use(profile, "limits", "value_bytes", "size", "bytes")
    e_w, residency = weight_residency(work, profile, vb.value, resident)
    e_a = _use(profile, "energy", "activation_byte", "energy/byte", "J/byte")
    terms = {"compute": work.macs * e_mac.value,
             "weight_memory": work.weight_values * vb.value * e_w.value,
             "activation_memory": work.activation_values * vb.value * e_a.value}
    assumptions = [
        f"batch 1; {vb.value:g}-byte values" + ("; int8 arithmetic (iso-precision with the chips' 8-bit weights)"
                                                if int8 else ""),
        residency,
        "each weight layer's output written once and read once through on-chip memory; input read once "
        "(activations and pooling fused into the weight layers)",
        "dynamic energy only in these terms; idle power is charged per mode (sensor_paced, throughput)",
        "no control or instruction overhead beyond the per-layer launch time",
    ]
    name = f"{profile.name}-int8" if int8 else profile.name
    return BaselineEstimate(name, terms, [e_mac, e_w, e_a, vb], work, assumptions)


TIMING_KEYS = ("peak_flops", "memory_bandwidth", "layer_overhead")


def ann_batch_time(work: AnnWorkload, profile: Profile, batch: int) -> tuple[float | None, list[FigureUse]]:
    """Seconds one batch of the ANN twin takes on the profile's device (a roofline: compute or
    memory, whichever is slower, plus one launch per weight layer), and the figures used.
    None when the profile has no timing figures at all (a per-operation model)."""
    have = [k for k in TIMING_KEYS if profile.has("timing", k)]
    if not have:
        return None, []
    missing = [k for k in TIMING_KEYS if k not in have]
    if missing:
        raise ConfigError(f"{_where(profile)}: missing key 'timing.{missing[0]}' (the time model needs "
                          f"{', '.join('timing.' + k for k in TIMING_KEYS)})")
    flops = _positive(profile, _use(profile, "timing", "peak_flops", "rate", "FLOP/s"))
    bw = _positive(profile, _use(profile, "timing", "memory_bandwidth", "rate", "bytes/s"))
    launch = _use(profile, "timing", "layer_overhead", "time", "s")
    vb = profile.si("limits", "value_bytes", "size")
    compute_s = 2.0 * work.macs * batch / flops.value
    memory_s = (work.weight_values + work.activation_values * batch) * vb / bw.value
    return max(1, work.weight_layers) * launch.value + max(compute_s, memory_s), [flops, bw, launch]


@dataclass(frozen=True)
class BaselineModes:
    """The baseline in both modes; ``batch_1`` and ``best`` are its throughput-mode points."""

    sensor_paced: ModeEnergy
    batch_1: ModeEnergy
    best: ModeEnergy
    figures: list[FigureUse]
    notes: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> ModeEnergy:
        return self.best


def _baseline_point(est: BaselineEstimate, batch: int, idle_w: float, batch_s: float | None) -> ModeEnergy:
    t = est.terms
    dynamic = t["compute"] + t["activation_memory"] + t["weight_memory"] / batch  # weights read once a batch
    per_inf = None if batch_s is None else batch_s / batch
    return ModeEnergy("throughput", dynamic, idle_w * (per_inf or 0.0), per_inf or 0.0, batch_s,
                      None if batch_s is None else batch / batch_s, batch)


def baseline_modes(est: BaselineEstimate, profile: Profile, real_s: float) -> BaselineModes:
    """The ANN twin in both modes on a GPU/CPU profile, for samples of ``real_s`` seconds."""
    idle = idle_power(profile)
    t1, timing = ann_batch_time(est.workload, profile, 1)
    notes = []
    if t1 is None:
        if idle.value > 0:
            raise ConfigError(f"{_where(profile)}: missing key 'timing.peak_flops' (a profile with idle power "
                              "needs the time model: " + ", ".join("timing." + k for k in TIMING_KEYS) + ")")
        notes.append(f"{profile.name} has no timing figures: latency unknown, batch 1 only")
        points = [_baseline_point(est, 1, 0.0, None)]
    else:
        points = [_baseline_point(est, b, idle.value, ann_batch_time(est.workload, profile, b)[0]) for b in BATCHES]
    least = min(p.joules for p in points)
    best = next(p for p in points if p.joules <= least * (1 + BEST_BATCH_TOLERANCE))
    # sensor-paced: the whole sample must arrive before the twin runs on it (batch 1)
    period = max(real_s, t1 or 0.0)
    sensor = ModeEnergy("sensor_paced", est.total, idle.value * period, period,
                        None if t1 is None else real_s + t1, 1.0 / period)
    return BaselineModes(sensor, points[0], best, [idle, *timing], notes)


@dataclass(frozen=True)
class MeasuredRun:
    """What an NVML measurement of the twin at one batch size saw (deploy/gpu_energy.py)."""

    joules_per_inference: float  # dynamic: idle power x time subtracted
    idle_power_w: float
    batch: int
    inferences: int
    duration_s: float

    def point(self, mode: str = "throughput") -> ModeEnergy:
        per_inf = self.duration_s / self.inferences
        return ModeEnergy(mode, self.joules_per_inference, self.idle_power_w * per_inf, per_inf,
                          per_inf * self.batch, 1.0 / per_inf, self.batch)


def measured_modes(best: MeasuredRun, real_s: float, batch_1: MeasuredRun | None = None) -> BaselineModes:
    """Both modes from NVML measurements: throughput is what the counter saw at the larger batch
    (dynamic + idle over the run); sensor-paced charges the measured idle power over each sample's
    real duration on top of the batch-1 dynamic energy (the larger batch's, a lower bound, when no
    batch-1 run was measured)."""
    one = batch_1 or best
    t1 = one.duration_s / one.inferences * one.batch
    period = max(real_s, t1)
    sensor = ModeEnergy("sensor_paced", one.joules_per_inference, best.idle_power_w * period, period,
                        real_s + t1, 1.0 / period)
    notes = [] if batch_1 else [f"dynamic energy measured at batch {best.batch} only; at batch 1 it is higher, "
                                "so the sensor-paced baseline is a lower bound"]
    return BaselineModes(sensor, one.point(), best.point(), [], notes)


def ann_workload_from_onnx(onnx_path: str | Path, macs: float) -> AnnWorkload:
    """Weights and activation traffic of the ANN twin, read from its ONNX graph.

    Weights: every initializer element. Activations: the graph inputs (read once) plus the
    outputs of every Conv/Gemm/MatMul node, written once and read once (the last one only
    written). Symbolic (batch) dimensions count as 1.
    """
    import onnx  # imported here: the energy model itself needs no ONNX

    path = Path(onnx_path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found (run `spikeport export` first)")
    try:
        model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    except Exception as exc:  # onnx raises several types for a corrupt file
        raise ArtifactError(f"{path}: not a readable ONNX model ({exc})") from None
    graph = model.graph

    def n_elems(value_info) -> int:
        n = 1
        for d in value_info.type.tensor_type.shape.dim:
            n *= d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
        return n

    init_names = {t.name for t in graph.initializer}
    weights = 0
    for t in graph.initializer:
        n = 1
        for d in t.dims:
            n *= int(d)
        weights += n
    shapes = {vi.name: vi for vi in list(graph.value_info) + list(graph.output) + list(graph.input)}
    inputs = sum(n_elems(vi) for vi in graph.input if vi.name not in init_names)
    layer_outputs: list[int] = []
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose"):
            out = node.output[0]
            if out not in shapes:
                raise ArtifactError(f"{path}: no shape known for output '{out}' of node '{node.name}'")
            layer_outputs.append(n_elems(shapes[out]))
    if not layer_outputs:
        raise ArtifactError(f"{path}: no Conv/Gemm/MatMul node found")
    activations = inputs + 2 * sum(layer_outputs[:-1]) + layer_outputs[-1]
    return AnnWorkload(macs=float(macs), weight_values=float(weights), activation_values=float(activations),
                       source=str(path), weight_layers=len(layer_outputs))


# --- the papers' shortcut -------------------------------------------------------------------
@dataclass(frozen=True)
class Shortcut:
    """E_ANN = MACs x E_MAC versus E_SNN = synops x E_add on the 45 nm profile: what SNN papers
    report. It ignores memory traffic, static power, neuron updates and routing."""

    ann_joules: float
    snn_joules: float
    figures: list[FigureUse]

    @property
    def ratio(self) -> float:
        return self.ann_joules / self.snn_joules if self.snn_joules > 0 else float("inf")


def papers_shortcut(macs: float, synops: float, profile: Profile | None = None) -> Shortcut:
    profile = profile or load_profile(SHORTCUT_PROFILE)
    e_mac = _use(profile, "energy", "mac", "energy", "J")
    e_add = _use(profile, "energy", "add", "energy", "J")
    return Shortcut(macs * e_mac.value, synops * e_add.value, [e_mac, e_add])
