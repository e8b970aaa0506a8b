"""`spikeport reproduce`: the first paper's tables through the whole pipeline.

Every model of the zoo on each modality (plus joint, and S-CMRL on paired data) is trained,
exported, deployed to Loihi 2 and Speck where its chip part allows, and reported. The tables
in ``results/`` have the paper's shape (accuracy per model and modality) extended with the
deployed accuracy per chip, synaptic operations and energy per inference against the ANN
baseline.

Decisions:
- Models are trained as their chip-native variants (strided conv, IF neurons, reset to zero),
  so that every backbone deploys; heads that NIR cannot carry (Hopfield, HGRN, attention)
  run on the host and are charged as host MACs. Joint deploys one chip graph a modality (its
  encoders; the trunk on the host), S-CMRL its two patch embeddings (``deploy.multi``).
  ``--variant paper`` trains the seed code's backbones instead (MaxPool, subtract reset):
  their visual chip part is empty, so they get float accuracies only.
- Every (model, modality) runs with several seeds (three by default); the tables give the mean
  and the sample standard deviation, and say which differences from the baseline lie inside
  the seed spread.
- A run whose chip part cannot go onto a target records why (the error's message) instead of
  a number; nothing is made up.
"""
from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from spikeport.deploy.targets import CHIPS
from spikeport.errors import SpikeportError
from spikeport.io import atomic_path, write_json_atomic, write_text_atomic

console = Console()

SEED_A_MODELS = ["baseline", "scl", "hopfield", "hgrn", "hybrid"]
# Published accuracies of the first paper (FACTS §6), shown beside ours for reference only.
PAPER_TABLE = {"baseline": (96.77, 80.04), "scl": (96.72, 82.16), "hopfield": (97.68, 76.15),
               "hgrn": (97.48, 80.08), "hybrid": (97.58, 76.94), "joint": (94.41, 79.37)}
#: S-CMRL and the rows of its ablation (the paper's own comparison): the cross-modal residual
#: off, the SAO loss off, and each modality alone (the reference the fusion must beat), all on
#: the same pairs with the same schedule. Only the full model is deployed.
SCMRL_VARIANTS: dict[str, dict[str, Any]] = {
    "scmrl": {}, "scmrl-no-ccssa": {"ccssa": False}, "scmrl-no-sao": {"sao_weight": 0.0},
    "scmrl-visual-only": {"inputs": "visual"}, "scmrl-audio-only": {"inputs": "audio"}}
#: S-CMRL on a CPU: the paper's T for MNISTDVS-NTIDIGITS (16), embed 32 with 4 heads (the paper's
#: 64 / 16 costs 1.7x the CPU time a step), its lr 5e-3.
SCMRL_TIMESTEPS = 16
SCMRL_ARCH: dict[str, Any] = {"embed_dim": 32, "num_heads": 4}
SCMRL_LR = 5e-3


@dataclass(frozen=True)
class Schedule:
    epochs: int | None        # None: the dataset's default (paper epochs on real data)
    max_train: int | None
    deploy_samples: int | None
    seeds: int = 3            # seeds per model and modality (mean and spread in the tables)


QUICK = Schedule(epochs=8, max_train=None, deploy_samples=None)
FULL = Schedule(epochs=None, max_train=None, deploy_samples=None)
TINY = Schedule(epochs=1, max_train=24, deploy_samples=6, seeds=1)  # for tests
# S-CMRL's quick schedule: 384 training pairs, 6 epochs (its CPU time per step is ~4x a seed
# model's); the full schedule trains on all pairs for the dataset's default epochs.
SCMRL_QUICK = Schedule(epochs=6, max_train=384, deploy_samples=None)


@dataclass
class RunRow:
    model: str
    modality: str
    dataset: str
    run: str
    seed: int = 0
    readout: str | None = None      # head readout of the seed-A head models (current | spike)
    float_accuracy: float | None = None
    chips: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_modality: dict[str, float] = field(default_factory=dict)  # joint: accuracy on each modality
    error: str | None = None
    wall_s: float = 0.0
    cpu_s: float = 0.0
    date: str | None = None         # day of the reproduce run that produced the row


def _datasets(root: Path | None, real: bool) -> dict[str, str]:
    if real:
        return {"visual": "nmnist", "audio": "shd", "joint": "nmnist+shd", "audiovisual": "av-digits"}
    return {"visual": "nmnist-embedded", "audio": "shd-embedded",
            "joint": "nmnist-embedded+shd-embedded", "audiovisual": "av-digits"}


def plan(models: list[str], datasets: dict[str, str]) -> list[tuple[str, str, str]]:
    """(model, modality, dataset) of every run, in the paper's table order. A seed-A model runs on
    both modalities; ``MODEL:visual`` or ``MODEL:audio`` runs it on one."""
    rows = []
    for entry in models:
        model, _, only = entry.partition(":")
        if only and (model not in SEED_A_MODELS or only not in ("visual", "audio")):
            raise SpikeportError(f"models: {entry!r}: only {', '.join(SEED_A_MODELS)} take a modality, "
                                 "visual or audio")
        if model in SEED_A_MODELS:
            rows += [(model, m, datasets[m]) for m in ("visual", "audio") if only in ("", m)]
        elif model == "joint":
            rows.append((model, "joint", datasets["joint"]))
        elif model in SCMRL_VARIANTS:
            rows.append((model, "audiovisual", datasets["audiovisual"]))
        else:
            raise SpikeportError(f"models: unknown model {model!r}; valid: "
                                 f"{', '.join(SEED_A_MODELS + ['joint', *SCMRL_VARIANTS])}")
    return rows


def _energy_entry(energy: Any, chip: str) -> dict[str, Any]:
    entry = energy.chips[chip]
    shortcut = (getattr(energy, "shortcut", None) or {}).get("chips", {}).get(chip, {})
    return {"joules_per_inference": entry.joules_per_inference, "shortcut_ratio": shortcut.get("ratio"),
            "ratio_vs_baseline": entry.ratio_vs_baseline,
            "ratio_dynamic_vs_baseline": getattr(entry, "ratio_dynamic_vs_baseline", None)}


def _chip_record(stats: Any) -> dict[str, Any]:
    return {"accuracy": stats.accuracy, "agreement_with_float": stats.agreement_with_float,
            "synops_per_sample": sum(layer.synops for layer in stats.per_sample),
            "cores_used": stats.cores_used, "host_macs_per_sample": stats.host_macs_per_sample}


def _deploy_single(run: Path, schedule: Schedule) -> dict[str, dict[str, Any]]:
    from spikeport.deploy.run import deploy_run
    return _deploy_and_report(run, lambda chip: deploy_run(run, target=chip, engine=None,
                                                            samples=schedule.deploy_samples))


def _deploy_and_report(run: Path, deploy_one: Callable[[str], Any]) -> dict[str, dict[str, Any]]:
    """Each chip deployed by ``deploy_one(chip)`` (a refusal recorded, not raised), then the energy
    report of the run folder ``run`` over the chips that deployed."""
    from spikeport.deploy.report import report_run
    chips: dict[str, dict[str, Any]] = {}
    for chip in CHIPS:
        try:
            chips[chip] = _chip_record(deploy_one(chip))
        except SpikeportError as exc:
            chips[chip] = {"not_deployed": str(exc)}
    deployed = [c for c in CHIPS if "accuracy" in chips[c]]
    if deployed:
        energy = report_run(run, chips=deployed, baseline="gpu-horowitz45")
        for chip in deployed:
            chips[chip].update(_energy_entry(energy, chip))
        chips["baseline_joules"] = {"gpu-horowitz45": energy.baseline.joules_per_inference}
    return chips


def _deploy_scmrl(run: Path, schedule: Schedule) -> dict[str, dict[str, Any]]:
    """Both patch embeddings on the chip, the head on the host (deploy.multi), then the run's
    energy report against a GPU running S-CMRL's ANN twin (``scmrl.ScmrlAnnTwin``: the same
    transformer with ReLUs, on the frames summed over time; its MACs in export.json), as every
    other row."""
    from spikeport.deploy.multi import deploy_scmrl
    return _deploy_and_report(run, lambda chip: deploy_scmrl(run, chip, samples=schedule.deploy_samples))


def _readout(run: Path) -> str | None:
    import yaml
    config = run / "config.yaml"
    if not config.is_file():
        return None
    return (yaml.safe_load(config.read_text()) or {}).get("readout")


def _run_one(model: str, modality: str, dataset: str, run: Path, schedule: Schedule, root: Path | None,
             seed: int, chip_native: bool) -> list[RunRow]:
    """Train, export, deploy and report one model on one modality; joint gives one row a modality."""
    from spikeport.export.run import export_run
    from spikeport.train.run import train_run

    row = RunRow(model=model, modality=modality, dataset=dataset, run=str(run), seed=seed)
    t0, c0 = time.perf_counter(), time.process_time()
    extra: dict[str, Any] = {}
    if model in SCMRL_VARIANTS:
        extra = {"model_options": {**SCMRL_ARCH, **SCMRL_VARIANTS[model]}, "lr": SCMRL_LR,
                 "timesteps": SCMRL_TIMESTEPS}
    try:
        metrics = train_run(model="scmrl" if model in SCMRL_VARIANTS else model, dataset=dataset, out=run,
                            chip_native=chip_native, root=root, epochs=schedule.epochs,
                            max_samples=schedule.max_train, seed=seed, progress=False, **extra)
        row.float_accuracy = metrics.test_accuracy
        row.readout = _readout(run)
        row.by_modality = {k.removeprefix("test_accuracy_"): v for k, v in metrics.model_dump().items()
                           if k.startswith("test_accuracy_") and isinstance(v, float)}
        if model in SCMRL_VARIANTS and model != "scmrl":
            row.chips = {chip: {"not_deployed": "ablation row: float only"} for chip in CHIPS}
        else:
            export_run(run, samples=min(8, schedule.deploy_samples or 8))
    except SpikeportError as exc:
        row.error = str(exc)
        row.wall_s, row.cpu_s = time.perf_counter() - t0, time.process_time() - c0
        return [row]
    rows = [row]
    if model == "joint":
        from spikeport.export.run import part_runs
        rows = []
        for mod, part in part_runs(run).items():
            rows.append(RunRow(model=model, modality=mod, dataset=dataset, run=str(part), seed=seed,
                               readout=row.readout, float_accuracy=row.by_modality.get(mod),
                               chips=_deploy_joint_part(run, part, schedule)))
        if not rows:  # the seed-code variant: no chip parts
            rows = [RunRow(model=model, modality=mod, dataset=dataset, run=str(run), seed=seed, readout=row.readout,
                           float_accuracy=row.by_modality.get(mod),
                           chips={c: {"not_deployed": "the paper variant's encoders are not chip-native"}
                                  for c in CHIPS}) for mod in ("visual", "audio")]
    elif model == "scmrl":
        row.chips = _deploy_scmrl(run, schedule)
    elif not row.chips:
        row.chips = _deploy_single(run, schedule)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    for r in rows:
        r.wall_s, r.cpu_s = wall / len(rows), cpu / len(rows)
    return rows


def _deploy_joint_part(run: Path, part: Path, schedule: Schedule) -> dict[str, dict[str, Any]]:
    from spikeport.deploy.multi import deploy_joint
    modality = part.name
    return _deploy_and_report(part, lambda chip: deploy_joint(run, chip, samples=schedule.deploy_samples,
                                                               only=modality)[modality])


# ----------------------------------------------------------------------------- aggregation

@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation (n - 1) of a figure over seeds."""
    mean: float
    sd: float
    n: int

    def pct(self) -> str:
        return f"{100 * self.mean:.2f}" if self.n < 2 else f"{100 * self.mean:.2f} ± {100 * self.sd:.2f}"


def spread(values: list[float]) -> Spread | None:
    values = [float(v) for v in values if v is not None]
    if not values:
        return None
    n = len(values)
    mean = sum(values) / n
    sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else 0.0
    return Spread(mean, sd, n)


def aggregate(rows: list[RunRow]) -> dict[tuple[str, str], dict[str, Spread | None]]:
    """{(model, modality): {"float": Spread, <chip>: Spread of its accuracy, "<chip>_joules": ...}}
    over the seeds of each (model, modality)."""
    groups: dict[tuple[str, str], list[RunRow]] = {}
    for r in rows:
        groups.setdefault((r.model, r.modality), []).append(r)
    out: dict[tuple[str, str], dict[str, Spread | None]] = {}
    for key, rs in groups.items():
        cell: dict[str, Spread | None] = {"float": spread([r.float_accuracy for r in rs])}
        for chip in CHIPS:
            cell[chip] = spread([r.chips.get(chip, {}).get("accuracy") for r in rs])
            cell[f"{chip}_joules"] = spread([r.chips.get(chip, {}).get("joules_per_inference") for r in rs])
        cell["wall_s"] = spread([r.wall_s for r in rs])
        cell["cpu_s"] = spread([r.cpu_s for r in rs])
        out[key] = cell
    return out


def inside_spread(a: Spread, b: Spread) -> bool:
    """Whether two seed means differ by less than twice the standard error of their difference
    (with one seed each: never claimed outside)."""
    if a.n < 2 or b.n < 2:
        return True
    return abs(a.mean - b.mean) < 2 * (a.sd ** 2 / a.n + b.sd ** 2 / b.n) ** 0.5


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _cell(cells: dict[str, Spread | None] | None, key: str, rows: list[RunRow], model: str, modality: str) -> str:
    if cells is None:
        return ""
    sp = cells.get(key)
    if sp is not None:
        return sp.pct()
    if key in CHIPS and any("not_deployed" in r.chips.get(key, {}) for r in rows
                            if r.model == model and r.modality == modality):
        return "n/d"
    return "-"


def accuracy_table(rows: list[RunRow]) -> str:
    """The paper's shape: a row a model, visual and audio columns (float, then each chip);
    mean ± sample standard deviation over the seeds."""
    agg = aggregate(rows)
    head = ["model", "visual float", "visual loihi2", "visual speck", "audio float", "audio loihi2",
            "audio speck", "paper (N-MNIST / SHD)"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for model in dict.fromkeys(r.model for r in rows if r.modality in ("visual", "audio", "joint")):
        cells = []
        for mod in ("visual", "audio"):
            got = agg.get((model, mod))
            cells += [_cell(got, k, rows, model, mod) for k in ("float", "loihi2", "speck")]
        paper = PAPER_TABLE.get(model)
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {f'{paper[0]} / {paper[1]}' if paper else '-'} |")
    return "\n".join(lines)


def scmrl_table(rows: list[RunRow]) -> str:
    """S-CMRL and its ablation on the same pairs: float accuracy, and the deployed model per chip."""
    agg = aggregate(rows)
    lines = ["| model | float | loihi2 | speck | vs S-CMRL |", "|---|---|---|---|---|"]
    full = agg.get(("scmrl", "audiovisual"))
    for model in SCMRL_VARIANTS:
        got = agg.get((model, "audiovisual"))
        if got is None:
            continue
        cmp = "-"
        if full and full["float"] and got["float"] and model != "scmrl":
            d = got["float"].mean - full["float"].mean
            cmp = f"{100 * d:+.2f} ({'inside' if inside_spread(got['float'], full['float']) else 'outside'} the spread)"
        lines.append(f"| {model} | {_cell(got, 'float', rows, model, 'audiovisual')} | "
                     f"{_cell(got, 'loihi2', rows, model, 'audiovisual')} | "
                     f"{_cell(got, 'speck', rows, model, 'audiovisual')} | {cmp} |")
    return "\n".join(lines)


def spread_notes(rows: list[RunRow]) -> str:
    """Which float differences from the baseline lie inside the seed spread."""
    agg = aggregate(rows)
    out = []
    for mod in ("visual", "audio"):
        base = (agg.get(("baseline", mod)) or {}).get("float")
        if base is None:
            continue
        for (model, m), cells in agg.items():
            if m != mod or model == "baseline" or cells["float"] is None:
                continue
            d = cells["float"].mean - base.mean
            out.append(f"- {model} {mod}: {100 * d:+.2f} points vs baseline, "
                       f"{'inside' if inside_spread(cells['float'], base) else 'outside'} the seed spread")
    return "\n".join(out)


def timing_table(rows: list[RunRow]) -> str:
    agg = aggregate(rows)
    lines = ["| model | modality | wall s per run (mean ± sd) | CPU s per run | seeds |", "|---|---|---|---|---|"]
    for (model, mod), cells in agg.items():
        w, c = cells["wall_s"], cells["cpu_s"]
        lines.append(f"| {model} | {mod} | {w.mean:.0f} ± {w.sd:.0f} | {c.mean:.0f} | {w.n} |")
    return "\n".join(lines)


def deployment_table(rows: list[RunRow]) -> str:
    lines = ["| model | modality | seed | chip | accuracy | agreement with float | synops / inference | cores "
             "| host MACs / inference | energy / inference (J) | ratio vs GPU ANN (total) | ratio (dynamic only) "
             "| papers' shortcut ratio |", "|---" * 13 + "|"]
    for r in rows:
        for chip in CHIPS:
            e = r.chips.get(chip, {})
            if not e:
                continue
            if "not_deployed" in e:
                lines.append(f"| {r.model} | {r.modality} | {r.seed} | {chip} | not deployed: "
                             f"{e['not_deployed'][:90]} |||||||||")
                continue
            dyn, short, ratio = e.get("ratio_dynamic_vs_baseline"), e.get("shortcut_ratio"), e.get("ratio_vs_baseline")
            lines.append(f"| {r.model} | {r.modality} | {r.seed} | {chip} | {_pct(e['accuracy'])} "
                         f"| {_pct(e['agreement_with_float'])} | {e['synops_per_sample']:.3g} | {e['cores_used']} "
                         f"| {e.get('host_macs_per_sample', 0):.3g} | {e.get('joules_per_inference', 0):.3g} "
                         f"| {'-' if ratio is None else f'{ratio:.3g}'} | {'-' if dyn is None else f'{dyn:.3g}'} "
                         f"| {'-' if short is None else f'{short:.3g}'} |")
    return "\n".join(lines)


def accuracy_figure(rows: list[RunRow], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = aggregate(rows)
    keys = list(agg)
    labels = [f"{m}\n{mod}" for m, mod in keys]
    series = ["float", *CHIPS]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(keys)), 4))
    width = 0.8 / len(series)
    for i, name in enumerate(series):
        cells = [agg[k].get(name) for k in keys]
        ax.bar([x + i * width for x in range(len(keys))], [100 * c.mean if c else 0 for c in cells], width,
               yerr=[100 * c.sd if c else 0 for c in cells], capsize=2, label=name)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(keys))], labels, fontsize=7)
    ax.set_ylabel("test accuracy (%), mean ± sd over seeds")
    ax.set_title("float model vs deployed (Loihi 2 fast engine, Speck sinabs)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def kept_rows(out: Path, todo: list[tuple[str, str, str]], variant: str, schedule: Schedule, real: bool,
              seeds: list[int] | None = None) -> tuple[list[RunRow], str | None]:
    """The rows of ``out/reproduce.json`` for the (model, modality) pairs not in the plan ``todo``,
    when that file was written with the same variant, schedule and data (so its cells are
    comparable), and its date; ([], None) otherwise. A ``--models`` subset thus updates its rows of
    the tables and keeps the others, instead of dropping them. With ``seeds`` (the seeds this run
    trains), a planned pair's rows of other seeds are kept too: ``--seed 3`` adds seeds 3-5 to the
    0-2 of an earlier run."""
    path = Path(out) / "reproduce.json"
    if not path.is_file():
        return [], None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return [], None
    if (record.get("variant"), record.get("schedule"), bool(record.get("real"))) != (variant, asdict(schedule), real):
        return [], None
    known = {f for f in RunRow.__dataclass_fields__}
    # joint is planned as one run ("joint") and gives a row a modality
    planned = {(m, mod) for m, mods, _ in todo for mod in (("visual", "audio") if mods == "joint" else (mods,))}
    ran = set(seeds) if seeds is not None else None
    rows = [RunRow(**{k: v for k, v in r.items() if k in known}) for r in record.get("rows", [])
            if (r.get("model"), r.get("modality")) not in planned or (ran is not None and r.get("seed", 0) not in ran)]
    for r in rows:  # rows written before rows carried their day: the file's
        r.date = r.date or str(record.get("date", "?"))[:10]
    return rows, str(record.get("date", "?"))[:10]


def reproduce(out: Path = Path("results"), runs: Path = Path("runs/reproduce"), root: Path | None = None,
              quick: bool = False, seed: int = 0, models: list[str] | None = None, variant: str = "chip-native",
              schedule: Schedule | None = None, real: bool = False, seeds: int | None = None) -> list[RunRow]:
    """Run the whole table over ``seeds`` seeds (from ``seed`` on; default: the schedule's);
    write results/{accuracy.md, deployment.md, accuracy.png, reproduce.json}.

    With a subset of ``models``, the other models' rows of an existing ``out/reproduce.json``
    written with the same variant, schedule and data are kept in the tables (``kept_rows``; the
    provenance line says which rows come from which run). Returns the rows run now."""
    if variant not in ("chip-native", "paper"):
        raise SpikeportError(f"variant: must be 'chip-native' or 'paper', got {variant!r}")
    schedule = schedule or (QUICK if quick else FULL)
    n_seeds = int(seeds or schedule.seeds)
    all_models = SEED_A_MODELS + ["joint", *SCMRL_VARIANTS]
    models = models or all_models
    todo = plan(models, _datasets(root, real))
    subset = set(todo) != set(plan(all_models, _datasets(root, real)))
    kept, kept_date = kept_rows(Path(out), todo, variant, schedule, real, seeds=list(range(seed, seed + n_seeds))) \
        if subset else ([], None)
    rows: list[RunRow] = []
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    for s in range(seed, seed + n_seeds):
        for i, (model, modality, dataset) in enumerate(todo, 1):
            console.rule(f"[bold]seed {s}, {i}/{len(todo)}: {model} on {dataset}")
            run = Path(runs) / f"seed{s}" / f"{model}-{modality}"
            chip_native = variant == "chip-native"
            run_schedule = schedule
            if model in SCMRL_VARIANTS and schedule == QUICK:
                run_schedule = SCMRL_QUICK
            rows += _run_one(model, modality, dataset, run, run_schedule, root, s, chip_native)
    total_s = time.perf_counter() - t0
    for r in rows:
        r.date = f"{started:%Y-%m-%d}"
    ran = rows
    out = Path(out)
    command = ' '.join(['spikeport', *sys.argv[1:]]) if sys.argv[0].endswith('spikeport') else 'spikeport reproduce'
    readouts = sorted({r.readout for r in rows if r.readout})
    provenance = (f"Written by `{command}` on {started:%Y-%m-%d}, seeds {seed}..{seed + n_seeds - 1}, variant "
                  f"{variant}, schedule {asdict(schedule)}, head readout {', '.join(readouts) or '-'}, "
                  f"{'real data' if real else 'embedded default data'}, {platform.machine()} "
                  f"({platform.processor() or 'cpu'}), {total_s / 60:.1f} min in all. Cells: mean ± sample "
                  "standard deviation over the seeds.")
    if kept:
        rerun = {m for m, _, _ in todo}
        by_date: dict[str, dict[str, list[int]]] = {}
        for r in kept:
            name = f"{r.model} {r.modality}" if r.model in rerun or r.model in {k.model for k in rows} else r.model
            if r.model in rerun:  # a planned model's rows of other seeds: named with their seeds
                name = r.model
            seeds_of = by_date.setdefault(r.date or "?", {}).setdefault(name, [])
            if r.model in rerun and r.seed not in seeds_of:
                seeds_of.append(r.seed)
        parts = [", ".join(f"{n} (seed{'s' if len(s) > 1 else ''} {', '.join(map(str, sorted(s)))})" if s else n
                           for n, s in names.items())
                 + f" from the run of {day}" for day, names in sorted(by_date.items())]
        provenance += (f" That run trained {', '.join(models)}; the other rows are kept from earlier runs with the "
                       f"same variant, schedule and data: {'; '.join(parts)}.")
        order = {m: i for i, m in enumerate(all_models)}
        mods = {"visual": 0, "audio": 1}
        rows = sorted(kept + rows, key=lambda r: (r.seed, order.get(r.model, len(order)), mods.get(r.modality, 2)))
    notes = spread_notes(rows)
    text = ("# Test accuracy (%) per model and modality\n\n" + provenance + "\n\n" + accuracy_table(rows)
            + "\n\nn/d: not deployed (see deployment.md). With ~360 (visual) / 600 (audio) test samples one "
            "test set's own sampling error is about 1.5 points at 90 %.\n")
    if notes:
        text += "\n## Float differences from the baseline\n\nInside the spread: the two means differ by less " \
                "than twice the standard error of their difference over seeds.\n\n" + notes + "\n"
    if any(r.model in SCMRL_VARIANTS for r in rows):
        text += (f"\n## S-CMRL on av-digits (T = {SCMRL_TIMESTEPS}, embed {SCMRL_ARCH['embed_dim']}, "
                 f"{SCMRL_ARCH['num_heads']} heads, chip-native patch embeddings)\n\n" + scmrl_table(rows) + "\n")
    text += "\n## Time per run\n\n" + timing_table(rows) + "\n"
    write_text_atomic(out / "accuracy.md", text)
    write_text_atomic(out / "deployment.md", "# Deployment per chip\n\n" + provenance + "\n\n"
                      + deployment_table(rows) + "\n")
    accuracy_figure(rows, out / "accuracy.png")
    from spikeport.deploy.report import write_results_summary
    # the runs of this call (summary.md keeps the other runs' rows itself; kept rows' folders may be gone)
    write_results_summary([r.run for r in ran if any("ratio_vs_baseline" in c for c in r.chips.values())],
                          out / "summary.md")
    agg = {f"{m}/{mod}": {k: (asdict(v) if v else None) for k, v in cells.items()}
           for (m, mod), cells in aggregate(rows).items()}
    write_json_atomic(out / "reproduce.json", {"schema_version": 2, "date": started.isoformat(), "seeds":
                                               list(range(seed, seed + n_seeds)), "variant": variant,
                                               "schedule": asdict(schedule), "real": real, "total_s": total_s,
                                               "models_run": list(models),
                                               "kept_from": sorted({r.date for r in kept}) if kept else None,
                                               "aggregate": agg, "rows": [asdict(r) for r in rows]})
    console.print(f"tables in {out}/accuracy.md and {out}/deployment.md")
    return ran


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps([asdict(r) for r in reproduce(quick=True)], indent=1))
