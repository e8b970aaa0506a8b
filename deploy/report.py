"""`spikeport report runs/X`: per-chip energy from the deployment counts and hardware profiles,
against an ANN baseline, written to runs/X/report/energy.{json,md,png}.

Inputs: runs/X/export/export.json (ANN MACs) and ann.onnx (weights and activations moved),
runs/X/deploy/<chip>/stats.json for each chip, hw_profiles/<chip>.toml and the baseline profile.
The arithmetic is in spikeport.deploy.energy; this module reads, assembles and writes.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from spikeport.deploy.energy import (CHIP_TERMS, LAYER_TERMS, SHORTCUT_PROFILE, AnnWorkload, BaselineEstimate,
                                     BaselineModes, ChipEstimate, FigureUse, MeasuredRun, ModeEnergy, ann_energy,
                                     ann_workload_from_onnx, baseline_modes, chip_energy, measured_modes,
                                     papers_shortcut, weakest_kind)
from spikeport.errors import ArtifactError, ConfigError
from spikeport.hw_profiles import Profile, available_profiles, load_profile
from spikeport.io import atomic_path, read_json_model, write_json_atomic, write_text_atomic
from spikeport.schemas import ChipEnergy, Energy, EnergyEntry, ExportInfo, Metrics, Stats
from spikeport.schemas import ModeEnergy as ModeRecord

ModesAt = Callable[[float], BaselineModes]  # the baseline's two modes for samples of a given real duration

MEASURED = "gpu-measured"
FALLBACK = "gpu-horowitz45"
TERM_LABELS = {"synops": "synaptic ops", "neuron_updates": "neuron updates", "routing": "spike routing",
               "static": "static power", "host": "host part (MACs)", "compute": "MACs",
               "weight_memory": "weight reads", "activation_memory": "activation traffic",
               "measured_dynamic": "measured (NVML, idle subtracted)",
               "idle": "idle power x the sample's real duration"}
MODE_TEXT = {
    "sensor_paced": "sensor-paced (real time): each side handles one sample as it arrives and pays its static or "
                    "idle power for the sample's real duration (timesteps x bin width, or its own compute time "
                    "when longer), plus its dynamic energy; the baseline runs the ANN twin at batch 1",
    "throughput": "throughput (as fast as possible): each side runs flat out and pays static or idle power only "
                  "for the time the work takes; the chip one sample at a time at its profile's speed, the "
                  "baseline at the batch size that spends least (batch 1 shown beside it)",
    "top_level": "the top-level joules_per_inference, terms and ratio_vs_baseline of each entry are the "
                 "sensor-paced mode (reports before the two modes compared the chip's sensor-paced energy with "
                 "the baseline's dynamic energy alone, no idle power: one-sided)",
}

INCLUDES_EXCLUDES = """\
**Included.** Per inference (one test sample, counts averaged over the samples the deploy step
ran): synaptic operations x energy per synop, neuron updates x energy per update, output spikes
x routing energy per spike, the chip's static power (see "Two comparisons" for the span), and for
models with a host part its MACs on the host profile. The ANN baseline: the twin's MACs x energy
per MAC, its weights read once an inference from on-chip memory when they fit the profile's
on-chip capacity, else from off-chip memory, and its layer outputs written and read once on chip
(batch 1); "The range" shows it with the weights forced off chip and as an int8 twin.

Both sides pay static or idle power in both modes (see "Two comparisons"): the chip's static
power and the baseline's idle power, over the sample's real duration (sensor-paced) or over the
time the work takes (throughput). The baseline's time per batch is a roofline (compute or memory,
whichever is slower) plus one launch per weight layer; the chip's is its profile's time per step,
per event, or (Loihi 2) the step's events times per-event latencies over the cores used plus the
barrier.

**Excluded.** Input spike delivery into the chip and sensor power; mesh hops between tiles
(Loihi: 3-4 pJ a hop, placement-dependent; `--crosscheck sanafe` simulates them, with SANA-FE's
per-message costs); Speck's bias / leak clock updates (no per-update energy is published);
chip-to-chip links and host I/O; learning; the
host part's memory traffic and time; driver and control overhead beyond the launch time in the
estimated baselines; the host CPU that feeds a GPU or a chip. Every figure says whether it is
published, measured or an estimate; the estimates are listed per chip."""


# --- reading --------------------------------------------------------------------------------
def _read_export(run: Path) -> ExportInfo:
    path = run / "export" / "export.json"
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found; run `spikeport export {run}` first")
    return read_json_model(path, ExportInfo)


def _read_stats(run: Path, chip: str) -> Stats:
    path = run / "deploy" / chip / "stats.json"
    if not path.is_file():
        deployed = sorted(p.parent.name for p in (run / "deploy").glob("*/stats.json"))
        have = f" (deployed: {', '.join(deployed)})" if deployed else " (nothing deployed yet)"
        raise ArtifactError(f"{run}: target '{chip}' was not deployed{have}; "
                            f"run `spikeport deploy {run} --target {chip}` first")
    return read_json_model(path, Stats)


def _float_accuracy(run: Path, stats: Stats) -> float | None:
    if stats.float_accuracy is not None:
        return stats.float_accuracy
    metrics = run / "metrics.json"
    return read_json_model(metrics, Metrics).test_accuracy if metrics.is_file() else None


def _ann_workload(run: Path, export: ExportInfo) -> AnnWorkload:
    if export.ann is None:
        raise ArtifactError(f"{run / 'export' / 'export.json'}: no ANN twin ('ann' is missing); "
                            f"run `spikeport export {run}` again")
    onnx_path = Path(export.ann.onnx_file)
    if not onnx_path.is_absolute():
        onnx_path = run / "export" / onnx_path.name
    return ann_workload_from_onnx(onnx_path, export.ann.macs_onnx)


# --- assembling -----------------------------------------------------------------------------
def _mode_record(mode: ModeEnergy, **extra) -> ModeRecord:
    return ModeRecord(**mode.as_dict(), **extra)


def _with_modes(entry: EnergyEntry, modes: BaselineModes, figures: list[FigureUse]) -> EnergyEntry:
    """The baseline entry with both modes; its top level is the sensor-paced mode (idle as a term)."""
    sp = modes.sensor_paced
    entry.terms = {**entry.terms, "idle": sp.static_j}
    entry.joules_per_inference = sp.joules
    entry.figures = entry.figures + [f.as_dict() for f in figures]
    entry.kind = weakest_kind([entry.kind, *(f.kind for f in figures)])
    entry.sensor_paced = _mode_record(sp)
    entry.throughput = _mode_record(modes.best, batch_1=modes.batch_1.as_dict())
    entry.notes = entry.notes + modes.notes
    return entry


def _baseline_entry(est: BaselineEstimate) -> EnergyEntry:
    w = est.workload
    return EnergyEntry(profile=est.profile, kind=est.kind, joules_per_inference=est.total, terms=est.terms,
                       figures=[f.as_dict() for f in est.figures], notes=est.assumptions,
                       counts={"macs": w.macs, "weight_values": w.weight_values,
                               "activation_values": w.activation_values, "weight_layers": w.weight_layers})


def _measured_entry(m) -> EnergyEntry:
    return EnergyEntry(
        profile=MEASURED, kind="measured", joules_per_inference=m.joules_per_inference,
        terms={"measured_dynamic": m.joules_per_inference},
        figures=[{"key": "nvml.total_energy", "value": m.energy_j, "unit": "J", "kind": "measured",
                  "source": f"NVML nvmlDeviceGetTotalEnergyConsumption on {m.device_name}"},
                 {"key": "nvml.idle_power", "value": m.idle_power_w, "unit": "W", "kind": "measured",
                  "source": f"NVML energy counter over {m.idle_s:g} s idle before the run"}],
        notes=[f"{m.runtime}, batch {m.batch}, on {m.device_name}: {m.inferences} inferences in {m.duration_s:.2f} s; "
               f"{m.energy_j:.3f} J minus idle {m.idle_power_w:.1f} W x {m.duration_s:.2f} s"],
        counts={"batch": m.batch, "inferences": m.inferences})


def _measured_run(m) -> MeasuredRun:
    return MeasuredRun(m.joules_per_inference, m.idle_power_w, m.batch, m.inferences, m.duration_s)


def _profile_baseline(work: AnnWorkload, profile: Profile) -> tuple[EnergyEntry, ModesAt]:
    est = ann_energy(work, profile)
    baseline_modes(est, profile, 1.0)  # check the profile's idle and timing figures before any work
    return _baseline_entry(est), lambda real_s: baseline_modes(est, profile, real_s)


def _baseline(run: Path, baseline: str, work: AnnWorkload) -> tuple[EnergyEntry, ModesAt, list[str]]:
    notes: list[str] = []
    if baseline == MEASURED:
        from spikeport.deploy.gpu_energy import GpuUnavailable, measure_ann_energy
        try:
            m = measure_ann_energy(run)
            try:  # batch 1 as the sensor-paced side runs it; the larger batch is the throughput side
                m1 = _measured_run(measure_ann_energy(run, batch=1, min_seconds=2.0))
            except GpuUnavailable as exc:
                m1 = None
                notes.append(f"no batch-1 measurement ({exc})")
            best = _measured_run(m)
            return _measured_entry(m), lambda real_s: measured_modes(best, real_s, m1), notes
        except GpuUnavailable as exc:
            notes.append(f"A measured GPU baseline was asked for but is not available here ({exc}); "
                         f"the baseline below is ESTIMATED with the {FALLBACK} profile.")
            baseline = FALLBACK
    entry, modes_at = _profile_baseline(work, load_profile(baseline))
    return entry, modes_at, notes


def _ratio_of(base_j: float, chip_j: float) -> float:
    return base_j / chip_j if chip_j > 0 else float("inf")


def _chip_entry(est: ChipEstimate, stats: Stats, modes: BaselineModes, float_acc: float | None) -> ChipEnergy:
    if est.total <= 0:
        raise ConfigError(f"profile '{est.profile}': every energy term is zero for target '{stats.target}'")
    sp, tp = est.sensor_paced(), est.throughput()
    base_sp, base_tp = modes.sensor_paced, modes.best
    return ChipEnergy(
        profile=est.profile, kind=est.kind, joules_per_inference=est.total, terms=est.terms,
        figures=[f.as_dict() for f in est.figures],
        notes=list(stats.approximations) + ([] if est.keeps_up else [
            f"the chip needs {est.chip_s:.3g} s for a sample of {est.real_s:.3g} s: slower than real time, "
            "so in sensor-paced mode it pays static power for its own time"]),
        counts={"synops": est.synops, "neuron_updates": est.neuron_updates, "spikes": est.spikes,
                "host_macs": est.host_macs},
        ratio_vs_baseline=_ratio_of(base_sp.joules, est.total),
        ratio_dynamic_vs_baseline=base_sp.dynamic_j / est.dynamic if est.dynamic > 0 else None,
        estimated=est.estimated, accuracy=stats.accuracy, float_accuracy=float_acc,
        timesteps=est.timesteps, dt=est.dt, duration_s=est.duration_s, cores_used=stats.cores_used,
        bin_s=est.step_s, latency_s=tp.latency_s, inferences_per_s=tp.inferences_per_s,
        sensor_paced=_mode_record(sp, ratio_vs_baseline=_ratio_of(base_sp.joules, sp.joules),
                                  baseline_joules_per_inference=base_sp.joules, keeps_up=est.keeps_up),
        throughput=_mode_record(tp, ratio_vs_baseline=_ratio_of(base_tp.joules, tp.joules),
                                baseline_joules_per_inference=base_tp.joules, baseline_batch=base_tp.batch,
                                ratio_vs_baseline_batch1=_ratio_of(modes.batch_1.joules, tp.joules),
                                chip_time=est.timing),
        layers=[{"name": layer.name, "kind": layer.kind, "synops": layer.synops, "neuron_updates": layer.neuron_updates,
                 "spikes": layer.spikes, "terms": layer.terms} for layer in est.layers])


def _sanafe_check(est: ChipEstimate, stats: Stats) -> dict | None:
    """SANA-FE's calibrated Loihi figures on a Loihi deployment's counts, where sanafe is installed."""
    if not est.profile.startswith("loihi"):
        return None
    from spikeport.deploy.sanafe_check import SanafeUnavailable, check
    try:
        return check(est, stats.cores_used).as_dict()
    except SanafeUnavailable as exc:
        return {"skipped": str(exc)}


def _other_baselines(work: AnnWorkload, skip: str, estimates: dict[str, ChipEstimate]) -> dict:
    """Both modes against every other shipped GPU/CPU profile: the baselines a user would pick."""
    out: dict = {}
    for name in available_profiles():
        profile = load_profile(name)
        if profile.device == "chip" or name == skip:
            continue
        try:
            _, modes_at = _profile_baseline(work, profile)
        except ConfigError as exc:  # a user's own profile without the figures: say so, go on
            out[name] = {"error": str(exc)}
            continue
        row: dict = {"title": profile.title, "chips": {}}
        for chip, est in estimates.items():
            m = modes_at(est.real_s)
            row["sensor_paced"] = {"joules_per_inference": m.sensor_paced.joules, "latency_s": m.sensor_paced.latency_s}
            row["throughput"] = {"joules_per_inference": m.best.joules, "batch": m.best.batch,
                                 "latency_s": m.best.latency_s, "inferences_per_s": m.best.inferences_per_s}
            row["kind"] = weakest_kind([f.kind for f in m.figures] + [f.kind for f in ann_energy(work, profile).figures])
            row["chips"][chip] = {"sensor_paced_ratio": _ratio_of(m.sensor_paced.joules, est.sensor_paced().joules),
                                  "throughput_ratio": _ratio_of(m.best.joules, est.throughput().joules)}
        out[name] = row
    return out


CROSSCHECKS = ("sanafe",)


def _ann_twin_accuracy(run: Path) -> dict | None:
    """The trained ANN twin's test accuracy (iso-accuracy beside the chips), when its run sits beside
    this one as ``<run>_ann`` (how `spikeport demo` and `train --ann` name it)."""
    path = Path(f"{run}_ann") / "metrics.json"
    if not path.is_file():
        return None
    m = read_json_model(path, Metrics)
    n = int((m.model_extra or {}).get("test_samples") or 0)
    return {"accuracy": m.test_accuracy, "samples": n or None, "source": str(path)}


def _baseline_range(work: AnnWorkload, estimates: dict[str, ChipEstimate]) -> dict:
    """The 45 nm baseline three ways (weights from DRAM, weights where its on-chip capacity puts them,
    the int8 iso-precision twin) and each chip's ratio against each, in both modes: a range, since
    where the weights live and at what precision the twin runs decide the verdict."""
    profile = load_profile(SHORTCUT_PROFILE)
    variants = {"fp32, weights from DRAM": ann_energy(work, profile, resident=False),
                "fp32, weights where on-chip capacity puts them": ann_energy(work, profile),
                "int8 (iso-precision), weights where on-chip capacity puts them": ann_energy(work, profile, int8=True)}
    out: dict = {"profile": SHORTCUT_PROFILE, "variants": {}, "chips": {}}
    for label, est in variants.items():
        out["variants"][label] = {"joules_per_inference": est.total, "terms": est.terms, "notes": est.assumptions}
    for chip, c in estimates.items():
        sp, tp = c.sensor_paced().joules, c.throughput().joules
        rows = {label: {"sensor_paced_ratio": _ratio_of(est.total, sp), "throughput_ratio": _ratio_of(est.total, tp),
                        "dynamic_ratio": _ratio_of(est.total, c.dynamic)} for label, est in variants.items()}
        out["chips"][chip] = {"variants": rows, **{
            f"{mode}_range": [min(r[f"{mode}_ratio"] for r in rows.values()), max(r[f"{mode}_ratio"] for r in rows.values())]
            for mode in ("sensor_paced", "throughput", "dynamic")}}
    return out


def _synop_band(est: ChipEstimate, profile: Profile) -> dict | None:
    """A derived per-synop energy re-derived at the profile's low and high reference rates: the
    chip's energy in both modes across that band (about an order of magnitude for Speck)."""
    syn = next((f for f in est.figures if f.key == "energy.synop"), None)
    keys = ("reference_synop_rate_low", "reference_synop_rate_high")
    if syn is None or not syn.derivation or not all(profile.has("timing", k) for k in keys):
        return None
    rate = profile.si("timing", "reference_synop_rate", "rate")
    band = {}
    for k in keys:
        e = syn.value * rate / profile.si("timing", k, "rate")
        extra = est.synops * (e - syn.value)
        band[k] = {"rate": profile.si("timing", k, "rate"), "synop_j": e,
                   "sensor_paced_j": est.sensor_paced().joules + extra, "throughput_j": est.throughput().joules + extra}
    return {"synop_j": syn.value, "band": band,
            "label": "per-synop energy re-derived at the low and high reference rates of the profile"}


def report_run(run_dir: str | Path, chips: list[str], baseline: str = FALLBACK,
               host_profile: str = "cpu", crosscheck: str | None = None, crosscheck_samples: int = 4) -> Energy:
    """Write runs/X/report/energy.{json,md,png} for the given deployed chips; return the report.
    ``crosscheck="sanafe"``: also run each Loihi chip's deployed network in SANA-FE's simulator on
    the first ``crosscheck_samples`` test samples (deploy/sanafe_crosscheck.py)."""
    if crosscheck is not None and crosscheck not in CROSSCHECKS:
        raise ConfigError(f"report: --crosscheck '{crosscheck}' is not one of {', '.join(CROSSCHECKS)}")
    run = Path(run_dir)
    if not run.is_dir():
        raise ArtifactError(f"{run}: run folder not found")
    if not chips:
        raise ConfigError("report: no chips given (e.g. --chips loihi2,speck)")
    export = _read_export(run)
    stats = {chip: _read_stats(run, chip) for chip in chips}  # all checked before any work
    profiles = {chip: load_profile(chip) for chip in chips}
    host = load_profile(host_profile) if any(s.host_macs_per_sample for s in stats.values()) else None
    work = _ann_workload(run, export)
    estimates = {chip: chip_energy(stats[chip], profiles[chip], host) for chip in chips}
    base, modes_at, notes = _baseline(run, baseline, work)
    real_s = next(iter(estimates.values())).real_s  # the run's sample duration; chips differing are noted
    base_modes = modes_at(real_s)
    base = _with_modes(base, base_modes, base_modes.figures)
    if len({round(e.real_s, 12) for e in estimates.values()}) > 1:
        notes.append("the chips' samples differ in real duration; each chip's sensor-paced ratio uses the "
                     "baseline at its own duration, the baseline's entry the first chip's")
    shortcut_profile = load_profile(SHORTCUT_PROFILE)
    shortcut = {"label": "papers' shortcut: E_ANN = MACs x 4.6 pJ, E_SNN = synops x 0.9 pJ (45 nm); "
                         "ignores memory, static power, neuron updates and routing",
                "macs": work.macs, "ann_joules": papers_shortcut(work.macs, 0, shortcut_profile).ann_joules,
                "chips": {}}
    for chip, est in estimates.items():
        sc = papers_shortcut(work.macs, est.synops, shortcut_profile)
        shortcut["chips"][chip] = {"synops": est.synops, "snn_joules": sc.snn_joules,
                                   "ratio": sc.ratio if est.synops > 0 else None}
    checks = {chip: _sanafe_check(est, stats[chip]) for chip, est in estimates.items()}
    energy = Energy(
        baseline=base, run=str(run), model=export.model, baseline_requested=baseline, shortcut=shortcut,
        modes=dict(MODE_TEXT),
        chips={chip: _chip_entry(est, stats[chip], modes_at(est.real_s), _float_accuracy(run, stats[chip]))
               for chip, est in estimates.items()},
        other_baselines=_other_baselines(work, base.profile, estimates))
    energy.baseline.notes = notes + energy.baseline.notes
    for chip, found in checks.items():
        if found is not None:
            setattr(energy.chips[chip], "sanafe_check", found)  # an extra key of the chip's entry
    setattr(energy, "baseline_range", _baseline_range(work, estimates))  # an extra key of energy.json
    setattr(energy, "ann_twin_accuracy", _ann_twin_accuracy(run))
    for chip, est in estimates.items():
        band = _synop_band(est, profiles[chip])
        if band is not None:
            setattr(energy.chips[chip], "synop_band", band)
    if crosscheck == "sanafe":
        from spikeport.deploy.sanafe_crosscheck import crosscheck_or_hint
        for chip in chips:
            if profiles[chip].name.startswith("loihi"):
                setattr(energy.chips[chip], "sanafe_sim", crosscheck_or_hint(run, chip, crosscheck_samples))
    out = run / "report"
    write_json_atomic(out / "energy.json", energy)
    write_text_atomic(out / "energy.md", render_markdown(energy, profiles, stats))
    plot_layers(energy, out / "energy.png")
    for note in notes:
        print(f"note: {note}")
    for line in summary_lines(energy):
        print(line)
    for chip, c in energy.chips.items():
        for line in _sanafe_sim_lines(c):
            if line:
                print(f"{chip}: {line}")
    print(f"report: {out / 'energy.md'}")
    return energy


def summary_lines(energy: Energy) -> list[str]:
    """One line a chip, both modes side by side (never one alone)."""
    b = energy.baseline
    lines = []
    for chip, c in energy.chips.items():
        sp, tp = c.sensor_paced, c.throughput
        lines.append(
            f"{chip} vs {b.profile} ({c.kind}): sensor-paced {fmt_j(sp.joules_per_inference)} vs "
            f"{fmt_j(sp.baseline_joules_per_inference)}, ratio {_ratio(sp.ratio_vs_baseline)} "
            f"({ratio_words(sp.ratio_vs_baseline)}); throughput "
            f"{fmt_j(tp.joules_per_inference)} vs {fmt_j(tp.baseline_joules_per_inference)} (batch "
            f"{getattr(tp, 'baseline_batch', 1)}), ratio {_ratio(tp.ratio_vs_baseline)} "
            f"({ratio_words(tp.ratio_vs_baseline)}); "
            f"{_secs(c.latency_s)} a sample flat out, {_rate(c.inferences_per_s)}")
    return lines


# --- writing --------------------------------------------------------------------------------
def fmt_j(joules: float) -> str:
    """Joules with an SI prefix, 3 significant digits."""
    if joules == 0:
        return "0 J"
    for scale, prefix in ((1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p"), (1e-15, "f")):
        if abs(joules) >= scale:
            return f"{joules / scale:.3g} {prefix}J"
    return f"{joules:.3g} J"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _share(x: float) -> str:
    return f"{100 * x:.3g}%"


def _ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}x"


def ratio_words(x: float | None, subject: str = "the chip") -> str:
    """A ratio (baseline joules / chip joules) in words: which side spends more, and by how much."""
    if x is None or x != x:
        return "n/a"
    if x == float("inf"):
        return f"{subject} spends nothing measurable"
    if x >= 1:
        return f"{subject} uses {x:.3g}x less"
    return f"{subject} uses {1 / x:.3g}x more"


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of an accuracy ``p`` measured on ``n`` samples."""
    if n <= 0:
        return 0.0, 1.0
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _pct_ci(p: float | None, n: int) -> str:
    if p is None:
        return "n/a"
    lo, hi = wilson_interval(p, n)
    return f"{100 * p:.2f}% (95 % CI {100 * lo:.1f}-{100 * hi:.1f}%, n = {n})"


# Dampfhoffer et al., IEEE TETCI 2023 ("Are SNNs really more energy-efficient than ANNs? An in-depth
# hardware-aware study"): an SNN beats its ANN only below about 0.15-1.38 synaptic operations per
# synapse per inference, depending on the architecture and memory.
BREAK_EVEN = (0.15, 1.38)


def _break_even_line(stats: Stats) -> str:
    counts = stats.per_sample or stats.layers
    synapses = sum(c.synapses for c in counts)
    synops = sum(c.synops for c in counts) / (1 if stats.per_sample else stats.samples)
    if synapses <= 0:
        return "- Synops per synapse per inference: n/a (no synapses counted)"
    r = synops / synapses
    lo, hi = BREAK_EVEN
    where = ("below the whole break-even range: the SNN's sparsity pays on every architecture studied" if r < lo
             else "above the whole break-even range: no architecture studied makes the SNN cheaper" if r > hi
             else "inside the break-even range: the verdict depends on the architecture")
    return (f"- Synops per synapse per inference: {r:.3g} ({synops:.4g} / {synapses:.4g}); Dampfhoffer et al. "
            f"2023 put the SNN/ANN break-even at {lo}-{hi}: {where}")


def _secs(x: float | None) -> str:
    if x is None:
        return "n/a"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g} s"


def _rate(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g} inferences/s"


def _edp(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g} J s"


def _figure_rows(figures: list[dict]) -> list[str]:
    rows = []
    for f in figures:
        how = f" Derived: {f['derivation']}." if f.get("derivation") else ""
        rows.append(f"| `{f['key']}` | {f['value']:.4g} {f['unit']} | {f['kind']} | {f['source']}.{how} |")
    return rows


def _mode_rows(energy: Energy) -> list[str]:
    """The two comparisons, one row a chip a mode, then the baseline's rows."""
    b = energy.baseline
    rows = ["| chip | mode | energy / inference | of which static / idle | latency | inferences / s | "
            "energy-delay | baseline energy / inference | ratio vs baseline |", "|---|---|---|---|---|---|---|---|---|"]
    for chip, c in energy.chips.items():
        for label, m in (("sensor-paced", c.sensor_paced), ("throughput", c.throughput)):
            batch = f" (batch {getattr(m, 'baseline_batch', 1)})" if label == "throughput" else " (batch 1)"
            rows.append(f"| {chip} | {label} | {fmt_j(m.joules_per_inference)} | {fmt_j(m.static_joules or 0)} | "
                        f"{_secs(m.latency_s)} | {_rate(m.inferences_per_s)} | {_edp(m.edp_js)} | "
                        f"{fmt_j(m.baseline_joules_per_inference)}{batch} | **{_ratio(m.ratio_vs_baseline)}** |")
    for label, m in (("sensor-paced", b.sensor_paced), ("throughput", b.throughput)):
        rows.append(f"| baseline: {b.profile} | {label}, batch {m.batch} | {fmt_j(m.joules_per_inference)} | "
                    f"{fmt_j(m.static_joules or 0)} | {_secs(m.latency_s)} | {_rate(m.inferences_per_s)} | "
                    f"{_edp(m.edp_js)} | | 1x |")
    return rows


def _modes_section(energy: Energy) -> list[str]:
    b = energy.baseline
    lines = ["", "## Two comparisons", "",
             f"- **{MODE_TEXT['sensor_paced']}.**", f"- **{MODE_TEXT['throughput']}.**",
             "- In energy.json each chip and the baseline carry `sensor_paced` and `throughput`; "
             f"{MODE_TEXT['top_level']} (`ratio_vs_baseline` = the sensor-paced ratio; "
             "`ratio_dynamic_vs_baseline` compares dynamic energy alone).", "",
             *_mode_rows(energy)]
    t1 = (b.throughput.model_extra or {}).get("batch_1") if b.throughput else None
    if t1:
        lines += ["", f"Baseline at batch 1, flat out: {fmt_j(t1['joules_per_inference'])} an inference, "
                      f"latency {_secs(t1['latency_s'])}; the throughput rows use batch {b.throughput.batch}, the "
                      "smallest batch within 1 % of the least energy an inference."]
    if any("no timing figures" in n for n in b.notes) or b.sensor_paced.static_joules == 0:
        lines += ["", f"> The {b.profile} baseline has no idle power: against it the chip's static power is "
                      "charged and the GPU's is not, in both modes. See the device baselines below."]
    return lines


def _range_rows(energy: Energy) -> list[str]:
    rng = (energy.model_extra or {}).get("baseline_range")
    if not rng:
        return []
    chips = list(rng["chips"])
    lines = ["", "## The range: where the weights live, and at what precision", "",
             f"The {rng['profile']} baseline three ways; ratio = baseline joules / chip joules, sensor-paced / "
             "throughput (this baseline has no idle power, so its joules are the same in both modes).", "",
             "| baseline | J / inference | " + " | ".join(f"{c}: sensor-paced / throughput" for c in chips) + " |",
             "|" + "---|" * (2 + len(chips))]
    for label, v in rng["variants"].items():
        cells = [f"{_ratio(rng['chips'][c]['variants'][label]['sensor_paced_ratio'])} / "
                 f"{_ratio(rng['chips'][c]['variants'][label]['throughput_ratio'])}" for c in chips]
        lines.append(f"| {label} | {fmt_j(v['joules_per_inference'])} | " + " | ".join(cells) + " |")
    for c in chips:
        r = rng["chips"][c]
        lines.append(f"- {c}: sensor-paced {_ratio(r['sensor_paced_range'][0])}-{_ratio(r['sensor_paced_range'][1])} "
                     f"({ratio_words(r['sensor_paced_range'][0])} at worst, {ratio_words(r['sensor_paced_range'][1])} "
                     f"at best); throughput {_ratio(r['throughput_range'][0])}-{_ratio(r['throughput_range'][1])}; "
                     f"dynamic energy alone {_ratio(r['dynamic_range'][0])}-{_ratio(r['dynamic_range'][1])}")
    for chip, c in energy.chips.items():
        band = (c.model_extra or {}).get("synop_band")
        if band:
            lo, hi = band["band"]["reference_synop_rate_high"], band["band"]["reference_synop_rate_low"]
            lines.append(f"- {chip}: the per-synop estimate ({fmt_j(band['synop_j'])}) rests on an assumed synop "
                         f"rate; at {hi['rate']:.3g} to {lo['rate']:.3g} synops/s it is {fmt_j(hi['synop_j'])} to "
                         f"{fmt_j(lo['synop_j'])}, and an inference {fmt_j(lo['sensor_paced_j'])}-"
                         f"{fmt_j(hi['sensor_paced_j'])} sensor-paced, {fmt_j(lo['throughput_j'])}-"
                         f"{fmt_j(hi['throughput_j'])} throughput")
    return lines


def _other_rows(energy: Energy) -> list[str]:
    other = energy.other_baselines or {}
    if not other:
        return []
    chips = list(energy.chips)
    head = "| baseline | kind | sensor-paced J / inf | throughput J / inf (batch) | " + " | ".join(
        f"{c}: ratio sensor-paced / throughput" for c in chips) + " |"
    lines = ["", "## Against other baselines", "",
             "The same two modes against every other shipped GPU/CPU profile (ratio = baseline joules / chip "
             "joules).", "", head, "|" + "---|" * (4 + len(chips))]
    for name, row in other.items():
        if "error" in row:
            lines.append(f"| {name} | skipped: {row['error']} |" + " |" * (2 + len(chips)))
            continue
        cells = [f"{_ratio(row['chips'][c]['sensor_paced_ratio'])} / {_ratio(row['chips'][c]['throughput_ratio'])}"
                 for c in chips]
        lines.append(f"| {name} | {row['kind']} | {fmt_j(row['sensor_paced']['joules_per_inference'])} | "
                     f"{fmt_j(row['throughput']['joules_per_inference'])} ({row['throughput']['batch']}) | "
                     + " | ".join(cells) + " |")
    return lines


def _sanafe_lines(c: ChipEnergy) -> list[str]:
    sf = (c.model_extra or {}).get("sanafe_check")
    if not sf:
        return []
    if "skipped" in sf:
        return ["", f"SANA-FE cross-check skipped: {sf['skipped']}."]
    t = sf["terms"]
    return ["", f"SANA-FE cross-check ({sf['label']}; {sf['source']}): dynamic "
                f"{fmt_j(sf['dynamic_joules'])} (synapses {fmt_j(t['synapses'])}, neurons {fmt_j(t['neurons'])}, "
                f"spikes {fmt_j(t['spikes'])}), **{sf['ratio_to_report_dynamic']:.3g}x** the dynamic energy above; "
                f"chip time about {_secs(sf['step_time_s'])} a step (events' latencies spread evenly over "
                f"{c.cores_used} cores, plus barrier sync: a lower bound) against the profile's "
                f"{_secs(c.latency_s / c.timesteps if c.latency_s and c.timesteps else None)}."]


def _sanafe_sim_lines(c: ChipEnergy) -> list[str]:
    """The SANA-FE simulation beside spikeport's model: energy by term, time per step, spikes per layer."""
    x = (c.model_extra or {}).get("sanafe_sim")
    if not x:
        return []
    if "skipped" in x:
        return ["", f"SANA-FE simulation not run: {x['skipped']}."]
    sf = x["sanafe"]
    e, mine = sf["energy"], x["spikeport_terms"]
    lines = ["", f"SANA-FE simulation ({sf['source']}) of the deployed network, {sf['samples']} test samples, "
                 f"{sf['steps_run']} steps each (T = {sf['timesteps']} plus the depth), reset between samples, "
                 f"{sf['cores_used']} cores: dynamic **{fmt_j(sf['dynamic_joules'])}** against spikeport's "
                 f"{fmt_j(x['spikeport_dynamic_joules'])} ({x['spikeport_profile']} profile, same samples): "
                 f"**{x['ratio_sanafe_to_spikeport']:.3g}x**; chip time {_secs(sf['step_time_s'])} a step against "
                 f"the profile's {_secs(x['spikeport_step_time_s'])}.", "",
             "| term | SANA-FE | spikeport |", "|---|---|---|",
             f"| synapses | {fmt_j(e['synapse'])} | {fmt_j(mine['synops'])} |",
             f"| neurons (SANA-FE soma: access, update, spike out) | {fmt_j(e['soma'] + e['dendrite'])} | "
             f"{fmt_j(mine['neuron_updates'])} |",
             f"| spike messages and mesh hops | {fmt_j(e['network'])} | {fmt_j(mine['routing'])} |",
             "", "| layer | neurons | spikes / sample, fast engine | spikes / sample, SANA-FE | neurons with equal "
                 "counts |", "|---|---|---|---|---|"]
    for la in sf["layers"]:
        lines.append(f"| {la['name']} | {la['neurons']} | {la['fast_spikes']:.5g} | {la['sanafe_spikes']:.5g} | "
                     f"{_share(la['neurons_equal'])} |")
    lines += [f"- {n}" for n in sf["notes"]]
    return lines


def render_markdown(energy: Energy, profiles: dict[str, Profile], stats: dict[str, Stats]) -> str:
    from spikeport.deploy.divergence import markdown_lines as divergence_lines
    b = energy.baseline
    lines = [f"# Energy report: {energy.run} ({energy.model})", "",
             "Energy per inference (one test sample) of each deployed chip, from the deployment's counts and "
             "the hardware profiles, against the ANN twin on the baseline, in two symmetric modes: sensor-paced "
             "(real time) and throughput (flat out). `ratio` = baseline joules / chip joules (above 1: the chip "
             "spends less).", ""]
    lines += [f"> {n}" for n in b.notes if "ESTIMATED" in n]
    lines += ["", "## Summary", "",
              "| chip | accuracy float | accuracy deployed | sensor-paced J / inf | ratio, sensor-paced | "
              "throughput J / inf | ratio, throughput | latency flat out | inferences / s | kind |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for chip, c in energy.chips.items():
        sp, tp = c.sensor_paced, c.throughput
        lines.append(f"| {chip} | {_pct(c.float_accuracy)} | {_pct(c.accuracy)} | {fmt_j(sp.joules_per_inference)} | "
                     f"{_ratio(sp.ratio_vs_baseline)} | {fmt_j(tp.joules_per_inference)} | "
                     f"{_ratio(tp.ratio_vs_baseline)} | {_secs(c.latency_s)} | {_rate(c.inferences_per_s)} | {c.kind} |")
    twin = (energy.model_extra or {}).get("ann_twin_accuracy")
    twin_acc = "n/a (no `<run>_ann` beside this run)" if not twin else (
        _pct_ci(twin["accuracy"], twin["samples"]) if twin.get("samples") else _pct(twin["accuracy"]))
    lines.append(f"| baseline: {b.profile} | ANN twin: {twin_acc} | | {fmt_j(b.sensor_paced.joules_per_inference)} | 1x | "
                 f"{fmt_j(b.throughput.joules_per_inference)} (batch {b.throughput.batch}) | 1x | "
                 f"{_secs(b.throughput.latency_s)} | {_rate(b.throughput.inferences_per_s)} | {b.kind} |")
    lines += _modes_section(energy)
    lines += _range_rows(energy)
    lines += _other_rows(energy)

    lines += ["", f"## Baseline: {b.profile} ({b.kind})", ""]
    if b.profile == MEASURED:
        lines += [f"- {n}" for n in b.notes]
        lines += ["", f"Dynamic energy per inference: **{fmt_j(b.terms['measured_dynamic'])}** (measured); "
                      f"sensor-paced with idle: **{fmt_j(b.joules_per_inference)}**."]
    else:
        lines += [f"- ANN twin: {b.counts['macs']:.4g} MACs, {b.counts['weight_values']:.4g} weights, "
                  f"{b.counts['activation_values']:.4g} activation values moved, per inference",
                  *[f"- {n}" for n in b.notes if "ESTIMATED" not in n], "",
                  "Sensor-paced terms (batch 1):", "", "| term | joules / inference | share |", "|---|---|---|"]
        for t, j in b.terms.items():
            share = _share(j / b.joules_per_inference) if b.joules_per_inference > 0 else "n/a"
            lines.append(f"| {TERM_LABELS.get(t, t)} | {fmt_j(j)} | {share} |")
        lines += [f"| **total** | **{fmt_j(b.joules_per_inference)}** | |"]
    lines += ["", "| figure | value (SI) | kind | source |", "|---|---|---|---|", *_figure_rows(b.figures)]

    for chip, c in energy.chips.items():
        st = stats[chip]
        title = profiles[chip].title
        sp, tp = c.sensor_paced, c.throughput
        lines += ["", f"## {chip}: {title} ({c.kind})", "",
                  f"- Accuracy: float {_pct_ci(c.float_accuracy, st.samples)}, deployed "
                  f"{_pct_ci(c.accuracy, st.samples)} "
                  f"(agreement with float {_pct(st.agreement_with_float)}) on {st.samples} test samples; "
                  f"engine `{st.engine}`",
                  f"- Cores used: {c.cores_used}",
                  _break_even_line(st),
                  f"- Real time: {c.timesteps} steps x {c.bin_s:g} s bins = {c.timesteps * c.bin_s:g} s a sample "
                  f"(the sensor-paced static span: {c.duration_s:g} s)",
                  f"- Chip time flat out: {getattr(tp, 'chip_time', '')} = {_secs(c.latency_s)} a sample, "
                  f"{_rate(c.inferences_per_s)} (the throughput static span)",
                  f"- Per inference: {c.counts['spikes']:.4g} spikes, {c.counts['synops']:.4g} synaptic ops, "
                  f"{c.counts['neuron_updates']:.4g} neuron updates"
                  + (f", {c.counts['host_macs']:.4g} host MACs" if c.counts.get("host_macs") else ""),
                  "", "| layer | kind | spikes | synops | neuron updates | E synops | E updates | E routing |",
                  "|---|---|---|---|---|---|---|---|"]
        for layer in c.layers:
            t = layer["terms"]
            lines.append(f"| {layer['name']} | {layer['kind'] or ''} | {layer['spikes']:.4g} | {layer['synops']:.4g} | "
                         f"{layer['neuron_updates']:.4g} | {fmt_j(t['synops'])} | {fmt_j(t['neuron_updates'])} | "
                         f"{fmt_j(t['routing'])} |")
        lines += ["", "Sensor-paced terms:", "", "| term | joules / inference | share |", "|---|---|---|"]
        for t in CHIP_TERMS:
            lines.append(f"| {TERM_LABELS[t]} | {fmt_j(c.terms[t])} | {_share(c.terms[t] / c.joules_per_inference)} |")
        lines += [f"| **total** | **{fmt_j(c.joules_per_inference)}** | |", "",
                  f"Against the {b.profile} baseline: sensor-paced **{_ratio(sp.ratio_vs_baseline)}** "
                  f"({ratio_words(sp.ratio_vs_baseline)}), throughput "
                  f"**{_ratio(tp.ratio_vs_baseline)}** ({ratio_words(tp.ratio_vs_baseline)}) (batch {getattr(tp, 'baseline_batch', 1)}; at batch 1 "
                  f"{_ratio(getattr(tp, 'ratio_vs_baseline_batch1', None))}); dynamic energy only: "
                  f"{_ratio(c.ratio_dynamic_vs_baseline)}. Throughput mode: {fmt_j(tp.joules_per_inference)} "
                  f"({fmt_j(tp.static_joules or 0)} static).", "",
                  "Estimated figures: " + (", ".join(f"`{k}`" for k in c.estimated) if c.estimated else "none") + ".",
                  "", "| figure | value (SI) | kind | source |", "|---|---|---|---|", *_figure_rows(c.figures)]
        if c.notes:
            lines += ["", "Approximations and notes:", *[f"- {n}" for n in c.notes]]
        lines += _sanafe_lines(c)
        lines += _sanafe_sim_lines(c)
        lines += divergence_lines(st)  # per layer: where the chip's spikes leave the float model's

    sc = energy.shortcut or {}
    if sc:
        lines += ["", "## The papers' shortcut (for comparison only; not the model above)", "",
                  f"{sc['label']}.", "", "| chip | E_ANN = MACs x 4.6 pJ | E_SNN = synops x 0.9 pJ | shortcut ratio |",
                  "|---|---|---|---|"]
        for chip, s in sc["chips"].items():
            lines.append(f"| {chip} | {fmt_j(sc['ann_joules'])} | {fmt_j(s['snn_joules'])} | {_ratio(s['ratio'])} |")
    lines += ["", "## What this report includes and excludes", "", INCLUDES_EXCLUDES, ""]
    return "\n".join(lines)


def plot_layers(energy: Energy, path: Path) -> Path:
    """Per-layer energy by term (grouped bars, log scale), one panel a chip; the static power and
    the host part as their own bars. Zero terms are left out (a log axis has no zero)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chips = list(energy.chips.items())
    fig, axes = plt.subplots(len(chips), 1, figsize=(8, 3.2 * len(chips)), squeeze=False)
    colors = {"synops": "tab:blue", "neuron_updates": "tab:orange", "routing": "tab:green",
              "static": "tab:gray", "host": "tab:red"}
    width = 0.8 / len(LAYER_TERMS)
    for ax, (chip, c) in zip(axes[:, 0], chips):
        names = [layer["name"] for layer in c.layers]
        for k, term in enumerate(LAYER_TERMS):
            xs = [i + (k - 1) * width for i, layer in enumerate(c.layers) if layer["terms"][term] > 0]
            vals = [layer["terms"][term] for layer in c.layers if layer["terms"][term] > 0]
            if vals:
                ax.bar(xs, vals, width=width, color=colors[term], label=TERM_LABELS[term])
        extra = [t for t in ("static", "host") if c.terms[t] > 0]
        for j, term in enumerate(extra):
            ax.bar([len(names) + j], [c.terms[term]], width=0.6, color=colors[term], label=TERM_LABELS[term])
        ax.set_xticks(range(len(names) + len(extra)), names + [f"({t})" for t in extra])
        ax.set_yscale("log")
        ax.set_ylabel("J / inference")
        ax.set_title(f"{chip} vs {energy.baseline.profile}: sensor-paced {fmt_j(c.sensor_paced.joules_per_inference)}, "
                     f"ratio {_ratio(c.sensor_paced.ratio_vs_baseline)} ({ratio_words(c.sensor_paced.ratio_vs_baseline)});"
                     f"\nthroughput {fmt_j(c.throughput.joules_per_inference)}, ratio "
                     f"{_ratio(c.throughput.ratio_vs_baseline)} ({ratio_words(c.throughput.ratio_vs_baseline)})",
                     fontsize=9)
        ax.legend(fontsize=7, loc="best")
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


# --- summary across runs --------------------------------------------------------------------
SUMMARY_HEADER = ("| run | model | chip | accuracy float | accuracy deployed | synops / inf "
                  "| sensor-paced energy / inf | baseline | baseline sensor-paced / inf | ratio, sensor-paced "
                  "| throughput energy / inf | baseline throughput / inf | ratio, throughput | latency flat out "
                  "| ratio, dynamic | shortcut ratio | kind |")


def _summary_rows(run: Path) -> dict[tuple[str, str], str]:
    energy = read_json_model(run / "report" / "energy.json", Energy)
    rows = {}
    sc = (energy.shortcut or {}).get("chips", {})
    for chip, c in energy.chips.items():
        sp, tp = c.sensor_paced, c.throughput
        if sp is None or tp is None:  # a report written before the two modes: rewrite it to list it
            continue
        rows[(str(run), chip)] = (
            f"| {run} | {energy.model or ''} | {chip} | {_pct(c.float_accuracy)} | {_pct(c.accuracy)} | "
            f"{c.counts.get('synops', 0):.4g} | {fmt_j(sp.joules_per_inference)} | {energy.baseline.profile} | "
            f"{fmt_j(sp.baseline_joules_per_inference)} | {_ratio(sp.ratio_vs_baseline)} | "
            f"{fmt_j(tp.joules_per_inference)} | {fmt_j(tp.baseline_joules_per_inference)} | "
            f"{_ratio(tp.ratio_vs_baseline)} | {_secs(c.latency_s)} | "
            f"{_ratio(c.ratio_dynamic_vs_baseline)} | {_ratio(sc.get(chip, {}).get('ratio'))} | {c.kind} |")
    return rows


def write_results_summary(run_dirs: list[str | Path], path: str | Path = "results/summary.md") -> Path:
    """Add or update the rows of these runs in a markdown table across runs (other runs' rows kept)."""
    path = Path(path)
    rows: dict[tuple[str, str], str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("| ") and len(cells) == SUMMARY_HEADER.count("|") - 1 and cells[0] != "run" \
                    and not re.fullmatch(r"-+", cells[0]):
                rows[(cells[0], cells[2])] = line
    for run in run_dirs:
        rows.update(_summary_rows(Path(run)))
    text = "\n".join([
        "# Energy across runs", "",
        "Written by `spikeport.deploy.report.write_results_summary` from each run's report/energy.json. "
        "ratio = baseline joules / chip joules per inference, in two symmetric modes: sensor-paced (each side "
        "handles one sample as it arrives and pays static / idle power for its real duration) and throughput "
        "(each side runs flat out, static power only while working; the baseline at its best batch). The "
        "shortcut ratio is the papers' MACs x 4.6 pJ versus synops x 0.9 pJ, shown for comparison only.", "",
        SUMMARY_HEADER, "|" + "---|" * (SUMMARY_HEADER.count("|") - 1), *[rows[k] for k in sorted(rows)], ""])
    return write_text_atomic(path, text)


def load_energy(run_dir: str | Path) -> Energy:
    """The report of a run, validated (for tools that read it)."""
    return read_json_model(Path(run_dir) / "report" / "energy.json", Energy)


__all__ = ["report_run", "write_results_summary", "render_markdown", "plot_layers", "load_energy", "fmt_j"]
