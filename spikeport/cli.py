"""The command line: one Typer app, one command a stage. Each command is a thin call into its stage.

Errors of the user's input (SpikeportError) are printed as one line, without a traceback.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, Optional

import typer

from spikeport.deploy.targets import CHIPS, TARGETS
from spikeport.errors import ConfigError, SpikeportError

app = typer.Typer(
    help="spikeport: spiking neural networks from training to neuromorphic chips.\n\n"
    "Stages: data -> train -> export -> deploy -> report (or `demo` for the whole flow); `import` brings "
    "a NIR or netx network made by another tool to deploy and report.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Embedded default datasets and real dataset checks.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _user_errors(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SpikeportError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
    return wrapper


@data_app.command("generate")
@_user_errors
def data_generate(
    dataset: str = typer.Option("nmnist-embedded", help="nmnist-embedded | shd-embedded | av-digits"),
    root: Optional[Path] = typer.Option(None, help="where to write (default: the cache folder)"),
    n: Optional[int] = typer.Option(None, help="samples in all (default: the full default size)"),
    seed: int = typer.Option(0),
) -> None:
    """Generate an embedded dataset offline (deterministic from the seed)."""
    from spikeport.data.registry import generate
    path = generate(dataset, root=root, n=n, seed=seed)
    typer.echo(f"{dataset}: written to {path}")


@data_app.command("info")
@_user_errors
def data_info(dataset: str = typer.Option(..., help="dataset name"),
              root: Optional[Path] = typer.Option(None)) -> None:
    """Describe a dataset: where it lives, splits, classes, sizes, events or spikes per sample."""
    from spikeport.data.registry import info
    typer.echo(info(dataset, root=root))


def _train_names() -> tuple[str, str, str]:
    """Model names, dataset names and binning presets, for ``spikeport train --help``."""
    from spikeport.data.catalog import DATASETS, PRESETS
    from spikeport.train.models import MODEL_NAMES
    presets = "; ".join(f"{d}: default | {' | '.join(p)}" for d, p in PRESETS.items())
    return " | ".join(MODEL_NAMES), " | ".join(DATASETS), presets


_MODELS, _DATASETS, _PRESETS = _train_names()


@app.command()
@_user_errors
def train(
    model: str = typer.Option(..., help=f"model name: {_MODELS}"),
    dataset: str = typer.Option(..., help=f"dataset name: {_DATASETS}"),
    out: Path = typer.Option(..., help="run folder, e.g. runs/X"),
    chip_native: bool = typer.Option(False, "--chip-native", help="chip-native variant (deploys whole)"),
    ann: bool = typer.Option(False, "--ann", help="the ANN twin (ReLU, accumulated frames)"),
    root: Optional[Path] = typer.Option(None, help="dataset root (real data) or cache"),
    epochs: Optional[int] = typer.Option(None, min=1),
    batch_size: Optional[int] = typer.Option(None, min=1),
    lr: Optional[float] = typer.Option(None),
    device: Optional[str] = typer.Option(None, help="cpu | cuda (default: cuda when present)"),
    seed: int = typer.Option(0),
    max_samples: Optional[int] = typer.Option(None, help="use at most this many training samples"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run"),
    config: Optional[Path] = typer.Option(None, help="YAML config (keys as these options)"),
    preset: Optional[str] = typer.Option(None, help=f"binning preset (default: the dataset's own); {_PRESETS}"),
    augment: Optional[int] = typer.Option(None, min=0, help="event-level augmented copies of the training "
                                                            "split (default: the dataset's; 0: none)"),
    readout: Optional[str] = typer.Option(None, help="head readout of hopfield/hgrn/hybrid/joint: current "
                                                     "(default) or spike (the seed's single-step LIF)"),
    finetune_for: Optional[str] = typer.Option(None, "--finetune-for", help="then fine-tune through a chip's "
                                               "integer arithmetic: loihi2 | loihi | speck (leaves the model on its grid)"),
    finetune_epochs: Optional[int] = typer.Option(None, "--finetune-epochs", min=1, help="fine-tuning epochs (default 3)"),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="with --finetune-for: fine-tune this trained "
                                             "run instead of training first"),
) -> None:
    """Train a model of the zoo with surrogate gradients; writes model.pt and metrics.json."""
    from spikeport.train.run import train_run
    train_run(model=model, dataset=dataset, out=out, chip_native=chip_native, ann=ann, root=root,
              epochs=epochs, batch_size=batch_size, lr=lr, device=device, seed=seed,
              max_samples=max_samples, resume=resume, config=config, preset=preset, augment=augment,
              readout=readout, finetune_for=finetune_for, finetune_epochs=finetune_epochs,
              init_from=str(init_from) if init_from is not None else None)


@app.command()
@_user_errors
def export(run: Path = typer.Argument(..., help="run folder"),
           samples: int = typer.Option(8, min=1, help="test samples for the round-trip check"),
           root: Optional[Path] = typer.Option(None, help="dataset folder (default: the one the run recorded)")) -> None:
    """Export a trained run to NIR (+ host part) and its ANN twin to ONNX, verified."""
    from spikeport.export.run import export_run
    info = export_run(run, samples=samples, root=root)
    v = info.verification
    ann = f"; ANN twin {info.ann.macs_onnx} MACs/inference (torch counter {info.ann.macs_torch})" if info.ann else ""
    typer.echo(f"{run / 'export' / info.nir_file}: re-run by {v.runtime} on {v.samples} samples, "
               f"{'exact' if v.exact else f'output agreement {v.output_agreement:.3f}'}{ann}")


@app.command(name="import")
@_user_errors
def import_(file: Path = typer.Argument(..., help="a NIR graph (.nir) or a lava-dl netx network (.net / .h5)"),
            out: Path = typer.Option(..., help="the run folder to create, e.g. runs/X"),
            dataset: Optional[str] = typer.Option(None, help="test data: a dataset name (see `spikeport data info`)"),
            root: Optional[Path] = typer.Option(None, help="folder holding a real dataset"),
            inputs: Optional[Path] = typer.Option(None, help="test data: .npz with inputs [N, T, ...] (+ labels [N])"),
            timesteps: Optional[int] = typer.Option(None, min=1, help="time steps per sample"),
            bin_ms: Optional[float] = typer.Option(None, help="real time of one step in ms (the bin width)"),
            dt: Optional[float] = typer.Option(None, help="seconds the graph's neuron parameters are discretised with"),
            from_: Optional[str] = typer.Option(None, "--from", help="the producing tool: sinabs | snntorch | norse | "
                                                                    "lava-dl (sets dt and neuron conventions)")) -> None:
    """Import a network made by another tool as a run that deploy and report take."""
    import warnings

    from spikeport.importing import import_network
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = import_network(file, out, dataset=dataset, root=root, inputs=inputs, timesteps=timesteps,
                              bin_ms=bin_ms, dt=dt, producer_name=from_)
    for w in caught:
        typer.echo(f"warning: {w.message}", err=True)
    imp = info.imported
    typer.echo(f"{out / 'export' / info.nir_file}: {imp.format} graph, dt {imp.dt:g} s ({imp.dt_source}), "
               f"{imp.timesteps} steps of {imp.step_s * 1e3:g} ms; ANN twin {info.ann.macs_onnx} MACs/inference")


@app.command()
@_user_errors
def deploy(run: Path = typer.Argument(..., help="run folder"),
           target: str = typer.Option(..., help="a chip target: " + " | ".join(TARGETS)),
           engine: Optional[str] = typer.Option(None, help="; ".join(f"{t.name}: {' | '.join(t.engines)}"
                                                                      for t in TARGETS.values()) + " (first: default)"),
           samples: Optional[int] = typer.Option(None, min=1, help="test samples (default: all)"),
           root: Optional[Path] = typer.Option(None, help="dataset folder (default: the one the run recorded)"),
           workers: int = typer.Option(1, min=1, help="processes the test samples are split over (counts merged exactly)")) -> None:
    """Deploy the exported NIR graph to a chip target: quantise, map, simulate, count."""
    from spikeport.deploy.multi import deploy_multi, has_parts
    from spikeport.deploy.run import deploy_run
    if has_parts(run):  # joint / S-CMRL: one chip graph per modality (runs/X/parts/<modality>/)
        if workers != 1:
            raise ConfigError(f"{run}: --workers applies to one chip graph; a two-modality run deploys in one process")
        for name, stats in deploy_multi(run, target=target, engine=engine, samples=samples, root=root).items():
            typer.echo(f"{target} ({stats.engine}) {name}: accuracy {stats.accuracy:.4f} on {stats.samples} samples, "
                       f"agreement with float {stats.agreement_with_float:.4f}, {stats.cores_used} cores")
        return
    stats = deploy_run(run, target=target, engine=engine, samples=samples, root=root, workers=workers)
    typer.echo(f"{target} ({stats.engine}): accuracy {stats.accuracy:.4f} on {stats.samples} samples, "
               f"agreement with float {stats.agreement_with_float:.4f}, {stats.cores_used} cores; "
               f"{run / 'deploy' / target / 'stats.json'}")


@app.command()
@_user_errors
def report(run: Path = typer.Argument(..., help="run folder"),
           chips: str = typer.Option(",".join(CHIPS), help="comma-separated deployed targets"),
           baseline: str = typer.Option("gpu-jetson-orin-nano", help="gpu-jetson-orin-nano (an edge GPU that idles, as the chips do) | gpu-horowitz45 (45 nm per-operation model, no idle power) | gpu-a100 | gpu-h100 | cpu | gpu-measured"),
           crosscheck: Optional[str] = typer.Option(None, help="sanafe: also run the Loihi network in SANA-FE"),
           crosscheck_samples: int = typer.Option(4, min=1, help="test samples the cross-check runs")) -> None:
    """Per-chip energy from the deployment counts and hardware profiles, against a GPU ANN baseline."""
    from spikeport.deploy.report import report_run
    report_run(run, chips=[c.strip() for c in chips.split(",") if c.strip()], baseline=baseline,
               crosscheck=crosscheck, crosscheck_samples=crosscheck_samples)


@app.command()
@_user_errors
def analyze(run: Path = typer.Argument(..., help="run folder"),
            other: Optional[Path] = typer.Option(None, help="a second run (other modality) for centroid alignment"),
            samples_per_class: int = typer.Option(100, min=1, help="test samples per class"),
            out: Optional[Path] = typer.Option(None, help="output folder (default: RUN/analysis)"),
            root: Optional[Path] = typer.Option(None, help="dataset root (real data) or cache"),
            tsne: bool = typer.Option(False, "--tsne", help="also a t-SNE projection (slower)")) -> None:
    """Engram analysis: clustering quality, dimensionality, cross-modal alignment, figures."""
    from spikeport.analyze import analyze_run, format_summary
    result = analyze_run(run, other=other, samples_per_class=samples_per_class, out=out, root=root, tsne=tsne)
    typer.echo(format_summary(result))
    typer.echo(f"written to {out if out is not None else run / 'analysis'}")


@app.command()
@_user_errors
def demo(out: Path = typer.Option(Path("runs/demo"), help="where the demo runs go"),
         quick: bool = typer.Option(False, "--quick", help="tiny sizes (for tests)")) -> None:
    """The whole flow on the embedded default: data, train, export, Loihi 2 and Speck, report."""
    from spikeport.demo import run_demo
    run_demo(out, quick=quick)


@app.command()
@_user_errors
def reproduce(out: Path = typer.Option(Path("results"), help="where the tables go"),
              runs: Path = typer.Option(Path("runs/reproduce"), help="where the runs go"),
              root: Optional[Path] = typer.Option(None, help="real data root (with --real) or cache"),
              quick: bool = typer.Option(False, "--quick", help="short schedule on the embedded default (CPU, < 1 h)"),
              real: bool = typer.Option(False, "--real", help="N-MNIST and SHD from --root instead of embedded data"),
              variant: str = typer.Option("chip-native", help="chip-native | paper"),
              models: Optional[str] = typer.Option(None, help="comma-separated subset of the zoo"),
              seed: int = typer.Option(0, help="first seed"),
              seeds: Optional[int] = typer.Option(None, min=1, help="how many seeds from --seed on "
                                                  "(default: the schedule's 3); other seeds' rows are kept")) -> None:
    """The first paper's tables through the whole pipeline: train, export, deploy, report every model."""
    from spikeport.reproduce import reproduce as run_reproduce
    run_reproduce(out=out, runs=runs, root=root, quick=quick, seed=seed, variant=variant, real=real,
                  models=[m.strip() for m in models.split(",")] if models else None, seeds=seeds)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
