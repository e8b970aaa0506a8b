"""`spikeport deploy runs/X --target T`: read the export, build a DeployInput, run the target.

This module only gathers inputs and writes stats.json; chip arithmetic lives in
deploy/loihi and deploy/speck.
"""
from __future__ import annotations

from pathlib import Path

import nir
import torch

from spikeport.deploy.common import DeployInput
from spikeport.deploy.lowering import Conventions
from spikeport.errors import ArtifactError, SpikeportError
from spikeport.io import read_json_model, write_json_atomic
from spikeport.schemas import ExportInfo, Partition, Stats

class CountingHost:
    """Wraps the host part to count its multiply-accumulates with torch's own FLOP counter,
    so the energy report can charge the host for what it computes (MACs = FLOPs / 2)."""

    def __init__(self, host) -> None:
        self.host = host
        self.macs = 0
        self.samples = 0

    def __call__(self, spikes: dict[str, torch.Tensor]) -> torch.Tensor:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            logits = self.host(spikes)
        self.macs += counter.get_total_flops() // 2
        self.samples += int(logits.shape[0])
        return logits

    @property
    def macs_per_sample(self) -> int:
        return self.macs // self.samples if self.samples else 0


@torch.no_grad()
def float_predictions(model: torch.nn.Module, inputs: torch.Tensor | tuple, batch: int = 64) -> torch.Tensor:
    """Predictions of the trained float model on the same inputs the chip gets."""
    model.eval()
    preds = []
    n = inputs[0].shape[0] if isinstance(inputs, tuple) else inputs.shape[0]
    for i in range(0, n, batch):
        xb = tuple(x[i:i + batch] for x in inputs) if isinstance(inputs, tuple) else inputs[i:i + batch]
        preds.append(model(xb).logits.argmax(1))
    return torch.cat(preds)


def _imported_input(run_dir: Path, info: ExportInfo, graph: nir.NIRGraph, target: str, engine: str,
                    samples: int | None, root: Path | None) -> DeployInput:
    """A run made by `spikeport import`: no trained model; the float reference is the graph
    itself, simulated by the float runtime on the same inputs."""
    from spikeport.deploy.float_runtime import run_float
    from spikeport.deploy.lowering import Conventions, lower
    from spikeport.importing import check_input_shape, load_inputs

    imp = info.imported
    conventions = Conventions(**imp.conventions)
    lowered = lower(graph, imp.dt, conventions)
    x, y = load_inputs(imp, run_dir, samples, root)
    check_input_shape(lowered, x, f"{run_dir}: recorded inputs")
    float_preds = run_float(lowered, x).logits(lowered.output_name).argmax(1)
    if y is None:  # no labels: accuracy is scored against the float reference's own predictions
        y = float_preds.clone()
    return DeployInput(graph=graph, dt=imp.dt, timesteps=int(x.shape[1]), inputs=x, labels=y,
                       float_predictions=float_preds, host=None, out_dir=run_dir / "deploy" / target,
                       target=target, engine=engine, conventions=conventions, step_s=imp.step_s,
                       netx_file=run_dir / "export" / imp.netx_file if imp.netx_file else None)


def build_deploy_input(run_dir: Path, target: str, engine: str, samples: int | None,
                       root: Path | None = None) -> DeployInput:
    from spikeport.data.registry import load_tensors
    from spikeport.export.nir_io import read_nir
    from spikeport.export.partition import load_host
    from spikeport.train.checkpoint import load_run_model

    run_dir = Path(run_dir)
    export_dir = run_dir / "export"
    if not (export_dir / "export.json").is_file():
        raise ArtifactError(f"{run_dir}: no export found; run `spikeport export {run_dir}` "
                            f"(or `spikeport import FILE --out {run_dir}`) first")
    info = read_json_model(export_dir / "export.json", ExportInfo)
    partition = read_json_model(export_dir / "partition.json", Partition)
    graph = read_nir(export_dir / info.nir_file)
    if not any(isinstance(node, (nir.LIF, nir.IF, nir.CubaLIF, nir.LI, nir.CubaLI, nir.NIRGraph))
               for node in graph.nodes.values()):
        raise SpikeportError(f"{export_dir / info.nir_file}: the chip part of model '{info.model}' is empty "
                             "(the whole model runs on the host); there is nothing to deploy to a chip")
    if info.imported is not None:
        return _imported_input(run_dir, info, graph, target, engine, samples, root)
    model, spec = load_run_model(run_dir)
    bin_s = spec.dt if spec.modality in ("visual", "audio") else None  # the run's own binning
    x, y = load_tensors(spec.dataset, "test", root=root or spec.root, timesteps=info.timesteps,
                        max_samples=samples, seed=spec.seed, bin_s=bin_s)
    chip_inputs = x[0] if isinstance(x, tuple) else x  # audio-visual: chip part takes the first modality
    return DeployInput(graph=graph, dt=info.dt, timesteps=info.timesteps, inputs=chip_inputs, labels=y,
                       float_predictions=float_predictions(model, x),
                       host=CountingHost(load_host(run_dir)) if partition.host else None,
                       out_dir=run_dir / "deploy" / target, target=target, engine=engine)


def deploy_run(run_dir: Path, target: str, engine: str | None = None, samples: int | None = None,
               root: Path | None = None, workers: int = 1) -> Stats:
    from spikeport.deploy.scale_out import deploy_parallel, init_from_env, is_writer
    from spikeport.deploy.targets import get_target, resolve_engine
    from spikeport.hw_profiles import load_profile

    engine = resolve_engine(target, engine)
    inp = build_deploy_input(Path(run_dir), target, engine, samples, root)
    profile = load_profile(target)
    init_from_env()  # under torchrun: join its group, deploy this rank's shard
    stats = deploy_parallel(get_target(target).deploy, inp, profile, workers)
    if isinstance(inp.host, CountingHost):
        stats.host_macs_per_sample = inp.host.macs_per_sample
    stats.step_s = inp.step_s or inp.dt
    stats.conventions = (inp.conventions or Conventions()).to_dict()
    from spikeport.deploy.divergence import attach
    attach(stats, inp, profile)  # per layer: how far the chip's spikes are from the float model's
    if is_writer():
        write_json_atomic(inp.out_dir / "stats.json", stats)
    return stats
