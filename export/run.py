"""`spikeport export runs/X`: the chip part to NIR (verified by an independent runtime), the
host part to host.pt, the ANN twin to ONNX with its MAC count.

Writes runs/X/export/{model.nir, partition.json, host.pt (if any), ann.onnx, export.json}.
Everything is built in a staging folder beside export/ and swapped in only when all of it
succeeded, so a failure leaves no model.nir (nor any other half of an export) behind.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spikeport.errors import ConfigError, SpikeportError
from spikeport.export.nir_io import read_nir, write_nir
from spikeport.export.partition import HOST_FILE, plan_partition, save_host
from spikeport.export.to_nir import layers_to_nir
from spikeport.export.verify import compare_spikes, run_nir
from spikeport.io import write_json_atomic
from spikeport.schemas import AnnExport, ExportInfo, Partition
from spikeport.train.models.spec import ModelSpec, spec_from_dict

NIR_FILE = "model.nir"
ONNX_FILE = "ann.onnx"
NEURON_CONVENTION = ("forward Euler at dt; LIF: tau = dt/(1-beta), r = tau/dt, v_leak = 0; "
                     "IF (beta = 1): r = 1/dt; v_reset = 0; spike if v > v_threshold")


def _stage_dir(out_dir: Path) -> Path:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))


def _swap_in(stage: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(stage, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_model(model: nn.Module, spec: ModelSpec | dict[str, Any], inputs: torch.Tensor | tuple,
                 out_dir: str | Path, ann: tuple[nn.Module, bool] | None = None) -> ExportInfo:
    """Export a built, trained ``model`` described by ``spec`` (or its dict) with test ``inputs``
    [N, T, ...] (a tuple for audio-visual models) into ``out_dir``; ``ann`` = (twin, trained) or None."""
    out_dir = Path(out_dir)
    spec = spec_from_dict(spec)
    dt, timesteps = float(spec.dt), int(spec.timesteps)
    model = model.eval()
    plan = plan_partition(model, spec)
    stage = _stage_dir(out_dir)
    try:
        graph, approximations = layers_to_nir(plan.layers, plan.input_shape, dt, plan.recurrent)
        approximations = plan.approximations + approximations
        # dt travels with the graph too, for tools that get model.nir without export.json
        graph.metadata = {"dt": dt, "neuron_convention": NEURON_CONVENTION}
        write_nir(graph, stage / NIR_FILE)

        # Verification: the graph as read back from the file, run by nirtorch, against the
        # trained model's own spikes; predictions end to end (chip part, then host part).
        chip_inputs = plan.chip_inputs(inputs)
        with torch.no_grad():
            reference = plan.reference_spikes(inputs)
            pred_model = model(inputs).logits.argmax(1)
        _, spikes = run_nir(read_nir(stage / NIR_FILE), chip_inputs, dt, source=stage / NIR_FILE)
        all_inputs = tuple(v.transpose(0, 1) for v in inputs) if isinstance(inputs, tuple) \
            else inputs.transpose(0, 1)
        spikes_in = {**spikes, "input": all_inputs if plan.host_takes_all_inputs else chip_inputs.transpose(0, 1)}
        chip_out = {name: spikes_in[name] for name in plan.chip_outputs}
        logits = plan.host(chip_out) if plan.host is not None else chip_out[plan.output_layer].sum(0).flatten(1)
        verification = compare_spikes(reference, spikes, pred_model, logits.argmax(1))
        # A model whose chip part is empty (joint: one trunk fed by two encoders) has nothing to compare.
        if spec.chip_native and verification.layers and not verification.exact:
            worst = min(verification.layers, key=lambda la: la.agreement, default=None)
            where = f"layer '{worst.name}' agrees on {worst.agreement:.6f} of its spikes" if worst else \
                "no layer could be compared"
            raise SpikeportError(f"export of a chip-native model is not exact: {where} when {NIR_FILE} is "
                                 f"re-run by {verification.runtime}")

        host = []
        if plan.host is not None:
            save_host(plan, spec, stage / HOST_FILE)
            host = [{"name": plan.host_name, "inputs": plan.chip_outputs, "file": HOST_FILE}]
        write_json_atomic(stage / "partition.json", Partition(
            chip_outputs=plan.chip_outputs, host=host, host_input="spike_trains" if host else "spike_counts"))

        ann_info = None
        if ann is not None:
            from spikeport.export.onnx_twin import ann_summary
            twin, trained = ann
            # the twin's input: frames summed over T (a twin of the audio-visual pair, S-CMRL's,
            # takes both modalities' sums; every other twin the chip's input)
            if getattr(twin, "takes_pair", False) and isinstance(inputs, tuple):
                frames = tuple(v.sum(1) for v in inputs)
            else:
                frames = chip_inputs.sum(1)
            ann_info = AnnExport(**ann_summary(twin, stage / ONNX_FILE, frames), trained=trained)

        info = ExportInfo(model=spec.model, chip_native=bool(spec.chip_native), nir_file=NIR_FILE,
                          dt=dt, timesteps=timesteps, verification=verification, ann=ann_info,
                          seed=int(spec.seed), neuron_convention=NEURON_CONVENTION,
                          approximations=approximations)
        write_json_atomic(stage / "export.json", info)
        _swap_in(stage, out_dir)
        return info
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def load_ann_twin(run_dir: Path, spec: ModelSpec) -> tuple[nn.Module, bool] | None:
    """The trained twin from the sibling run ``<run>_ann`` if there is one, else the twin
    architecture untrained (MACs only); None when the model has no twin (joint's two encoders
    and one trunk; S-CMRL has one, ``scmrl.ScmrlAnnTwin``)."""
    from spikeport.train.checkpoint import MODEL_FILE, load_run_model
    from spikeport.train.models import build_ann_twin
    sibling = run_dir.with_name(f"{run_dir.name}_ann")
    if (sibling / MODEL_FILE).is_file():
        twin, twin_spec = load_run_model(sibling)
        if not twin_spec.ann:
            raise ConfigError(f"{sibling}: is not an ANN twin run (its spec has ann: false)")
        return twin, True
    try:
        return build_ann_twin(spec), False
    except ConfigError:
        return None


def run_data(run_dir: Path, spec: ModelSpec, root: str | Path | None = None) -> dict[str, Any]:
    """Where and how a run's data are read: ``root`` (given, else the run's config.yaml, else the
    spec's, else None = the cache), bin width and time steps (the spec's, i.e. the run's preset)."""
    import yaml
    recorded: dict[str, Any] = {}
    config = run_dir / "config.yaml"
    if config.is_file():
        try:
            recorded = yaml.safe_load(config.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{config}: not valid YAML ({' '.join(str(exc).split())})") from None
        if not isinstance(recorded, dict):
            recorded = {}
    if root is None:
        root = recorded.get("root") or spec.root
    single = spec.modality in ("visual", "audio")
    return {"root": Path(root).expanduser() if root is not None else None,
            "timesteps": int(spec.timesteps),
            "bin_s": float(spec.dt) if single else None}


PARTS_DIR = "parts"


def part_runs(run_dir: str | Path) -> dict[str, Path]:
    """The per-modality chip parts of a two-modality run (joint, S-CMRL): {modality: run folder}."""
    parts = Path(run_dir) / PARTS_DIR
    return {m: parts / m for m in ("visual", "audio") if (parts / m / "model.pt").is_file()}


def export_parts(run_dir: Path, model: nn.Module, spec: ModelSpec, samples: int = 8,
                 root: str | Path | None = None) -> dict[str, ExportInfo]:
    """A two-modality chip-native model as one chip part per modality.

    joint: each modality's encoder (chip) + the shared trunk (host), a run of its own under
    ``runs/X/parts/<modality>/`` (its model.pt holds exactly that path's weights), exported like
    any seed model. S-CMRL: each modality's patch embedding with BatchNorm folded (chip only;
    the attention head that reads both runs on the host at deploy time, ``deploy.multi``).
    """
    import shutil

    from spikeport.train.checkpoint import MODEL_FILE, model_payload, save_checkpoint
    if spec.model == "joint":
        from spikeport.train.models.seed_a import joint_part as make_part
        modalities = ("visual", "audio")
    elif spec.model == "scmrl":
        from spikeport.train.models.scmrl import chip_part as make_part
        modalities = tuple(model.backbone.used)
    else:
        raise ConfigError(f"model {spec.model!r} has no per-modality chip parts")
    infos = {}
    for modality in modalities:
        part_spec, state = make_part(model, modality)
        part_dir = Path(run_dir) / PARTS_DIR / modality
        part_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(part_dir / MODEL_FILE, model_payload(part_spec, state, seed=int(spec.seed),
                                                             epoch=0, val_accuracy=None))
        if (Path(run_dir) / "config.yaml").is_file():  # the data's root and binning travel along
            shutil.copyfile(Path(run_dir) / "config.yaml", part_dir / "config.yaml")
        infos[modality] = export_run(part_dir, samples=samples, root=root)
    return infos


def export_run(run_dir: str | Path, samples: int = 8, root: str | Path | None = None) -> ExportInfo:
    """Export runs/X (see module doc); ``samples`` test samples verify the NIR round trip.

    The data are read where the run was trained (``root`` in its config.yaml), binned as it was
    (its preset's bin width and time steps), from its test split; ``root`` overrides the folder."""
    from spikeport.data.registry import is_pair, load_tensors
    from spikeport.train.checkpoint import load_run_model
    run_dir = Path(run_dir)
    model, spec = load_run_model(run_dir)
    dataset = spec.dataset
    data = run_data(run_dir, spec, root)
    if is_pair(dataset):  # joint model on two datasets: its chip input is the visual one
        dataset = spec.modalities["visual"].dataset
    x, _ = load_tensors(dataset, "test", root=data["root"], timesteps=data["timesteps"],
                        max_samples=samples, seed=int(spec.seed), bin_s=data["bin_s"])
    info = export_model(model, spec, x, run_dir / "export", ann=load_ann_twin(run_dir, spec))
    if spec.chip_native and spec.model in ("joint", "scmrl") and spec.part is None:
        export_parts(run_dir, model, spec, samples=samples, root=root)
    return info

