"""`spikeport import FILE --out runs/X ...`: a network made by another tool becomes a run that
`deploy` and `report` take as if spikeport had exported it.

FILE is a NIR graph (``.nir``) or a lava-dl netx network (``.net`` / ``.h5``). The run gets
``export/model.nir`` (the graph, with its dt written into the metadata), ``export.json``
(``imported``: where the graph and the data come from, both times, the producer's
conventions), ``partition.json`` with an empty host part, ``ann.onnx`` (the ANN twin derived
from the graph: each neuron node a ReLU, the same weights) and, for ``--inputs``, a copy of the
inputs. Everything is written into a staging folder and swapped in whole, so a failed import
leaves no ``export/model.nir`` behind.

Two times are kept apart: ``dt`` is the step the graph's continuous-time neuron parameters
are discretised with (from the graph's metadata, ``--dt``, or the producer's convention);
``step_s`` is how long one step lasts in the world (the bin width of the data), which the
energy report's static power and latency use.
"""
from __future__ import annotations

import shutil
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nir
import numpy as np
import torch

from spikeport.deploy.lowering import Conventions, LayerGraph, lower
from spikeport.errors import ArtifactError, ConfigError, DataError
from spikeport.io import write_json_atomic
from spikeport.schemas import AnnExport, ExportInfo, ImportInfo, Partition, Verification

NIR_FILE = "model.nir"
ONNX_FILE = "ann.onnx"
INPUTS_FILE = "inputs.npz"
NETX_FILE = "model.net"
NETX_SUFFIXES = (".net", ".h5", ".hdf5")
DEFAULT_STEP_S = 1e-3


@dataclass(frozen=True)
class Producer:
    """What a tool's NIR export means but does not write, checked in the tool's own source."""

    name: str
    dt: float | None
    conventions: Conventions
    source: str


PRODUCERS: dict[str, Producer] = {p.name: p for p in (
    Producer("sinabs", 1.0, Conventions(reset="subtract", spikes_per_step="multi", membrane_floor=-1.0,
                                        fire_at_threshold=True),
             "sinabs 3.1 nir.py writes IF with r = 1 (v += input each step: dt = 1) and reads IF back as IAFSqueeze "
             "with MultiSpike, MembraneSubtract and min_v_mem = -v_threshold"),
    Producer("snntorch", 1e-4, Conventions(),
             "snntorch 1.0 export_nir.py fixes dt = 1e-4 (tau = dt / (1 - beta), r = tau / dt, w_in = tau_syn / dt) "
             "and writes v_reset = 0 (exact for reset_mechanism='zero')"),
    Producer("norse", 1e-3, Conventions(),
             "norse export_nir.py writes tau = 1 / tau_inv in seconds (time_scaling_factor 1) for cells stepped with "
             "norse's default dt = 1e-3; IF with r = 1"),
    Producer("lava-dl", 1.0, Conventions(),
             "lava-dl slayer and netx are discrete-time: one step per time unit (dt = 1), reset to zero"),
)}
UNVERIFIED = {
    "rockpool": "rockpool's NIR export writes tau in seconds for its module's dt (LIFTorch default 1e-3); pass the "
                "dt you trained with",
    "spyx": "spyx's NIR export converts its per-step decays with the dt given to spyx.nir.to_nir; pass that dt",
}


def producer(name: str | None) -> Producer | None:
    if name is None:
        return None
    if name not in PRODUCERS:
        known = ", ".join([*PRODUCERS, *UNVERIFIED])
        hint = f" ({UNVERIFIED[name]}, with --dt)" if name in UNVERIFIED else ""
        raise ConfigError(f"--from {name}: conventions not known here{hint}; known producers: {known}")
    return PRODUCERS[name]


def _dt_help() -> str:
    known = "; ".join(f"{p.name}: dt = {p.dt:g} ({p.source.split(' writes ')[0]})" for p in PRODUCERS.values())
    return (f"pass --dt SECONDS or --from TOOL. What common exporters assume: {known}; "
            + "; ".join(f"{k}: {v}" for k, v in UNVERIFIED.items()))


def graph_dt(graph: nir.NIRGraph, dt: float | None, prod: Producer | None, path: Path) -> tuple[float, str]:
    """(dt, where it came from): the graph's metadata, then --dt, then the producer's convention."""
    meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    if "dt" in meta:
        value = float(np.asarray(meta["dt"]).reshape(-1)[0])
        if dt is not None and not np.isclose(dt, value):
            raise ConfigError(f"{path}: the graph's metadata says dt = {value:g} s, --dt says {dt:g} s")
        return value, "graph metadata"
    if dt is not None:
        return float(dt), "--dt"
    if prod is not None and prod.dt is not None:
        return prod.dt, f"--from {prod.name}"
    raise ConfigError(f"{path}: the graph does not say its dt (the step its continuous-time neuron parameters "
                      f"assume); {_dt_help()}")


# ---------------------------------------------------------------- inputs --------------------
def read_inputs_npz(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``inputs`` [N, T, *input_shape] event counts and optional ``labels`` [N] from an .npz."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise DataError(f"{path}: inputs file not found") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if "inputs" not in arrays:
        raise DataError(f"{path}: no array 'inputs' (found: {', '.join(arrays) or 'none'}); expected inputs "
                        f"[N, T, *input_shape] of spike counts and optional labels [N]")
    x = arrays["inputs"]
    if x.ndim < 3 or x.shape[0] < 1 or x.shape[1] < 1:
        raise DataError(f"{path}: array 'inputs' has shape {list(x.shape)}; expected [N, T, *input_shape]")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{path}: array 'inputs' has dtype {x.dtype}; expected spike counts")
    xf = x.astype(np.float64)
    if not np.all(np.isfinite(xf)) or np.any(xf < 0) or np.any(xf != np.round(xf)):
        bad = int(np.count_nonzero(~np.isfinite(xf) | (xf < 0) | (xf != np.round(xf))))
        raise DataError(f"{path}: array 'inputs' has {bad} entries that are not non-negative integers; "
                        f"inputs are spike counts per step")
    labels = None
    if "labels" in arrays:
        y = arrays["labels"]
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError(f"{path}: array 'labels' has shape {list(y.shape)}; expected [{x.shape[0]}] "
                            f"(one per input)")
        if not np.issubdtype(y.dtype, np.integer) or np.any(y < 0):
            raise DataError(f"{path}: array 'labels' must hold non-negative integer classes (dtype {y.dtype})")
        labels = torch.as_tensor(y.astype(np.int64))
    return torch.as_tensor(xf, dtype=torch.float32), labels


def load_inputs(info: ImportInfo, run_dir: Path, max_samples: int | None = None, root: Path | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The imported run's inputs and labels, as recorded at import."""
    if info.inputs_file:
        x, y = read_inputs_npz(run_dir / "export" / info.inputs_file)
    else:
        from spikeport.data.registry import load_tensors
        x, y = load_tensors(info.dataset, "test", root=root or info.root, timesteps=info.timesteps,
                            bin_s=info.step_s, max_samples=max_samples, progress=False)
    if max_samples is not None:
        x, y = x[:max_samples], (None if y is None else y[:max_samples])
    return x.float(), y


def check_input_shape(graph: LayerGraph, x: torch.Tensor, what: str) -> None:
    if tuple(x.shape[2:]) != tuple(graph.input_shape):
        raise ConfigError(f"{what}: inputs are [N, T, {', '.join(map(str, x.shape[2:]))}] per step, but the graph's "
                          f"input node '{graph.input_name}' takes {list(graph.input_shape)}")


# ---------------------------------------------------------------- ANN twin ------------------
class _Pool(torch.nn.Module):
    def __init__(self, pool) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool.apply(x)


def ann_twin(graph: LayerGraph) -> torch.nn.Sequential:
    """The graph as an ANN: the same synapses and weights, each neuron population a ReLU, on the
    frames summed over time (the convention of the project's own twins)."""
    mods: list[torch.nn.Module] = []
    for i, layer in enumerate(graph.layers):
        if layer.pool is not None:
            mods.append(_Pool(layer.pool))
        w = torch.as_tensor(layer.weight, dtype=torch.float32)
        b = torch.as_tensor(layer.bias if layer.bias is not None else np.zeros(w.shape[0]), dtype=torch.float32)
        if layer.kind == "conv" and len(layer.output_shape) == 3:
            m = torch.nn.Conv2d(w.shape[1] * layer.groups, w.shape[0], tuple(w.shape[2:]), stride=layer.stride,
                                padding=layer.padding, dilation=layer.dilation, groups=layer.groups)
        elif layer.kind == "conv":  # Conv1d (lowered with height 1)
            w = w[:, :, 0, :]
            m = torch.nn.Conv1d(w.shape[1] * layer.groups, w.shape[0], w.shape[2], stride=layer.stride[1],
                                padding=layer.padding[1], dilation=layer.dilation[1], groups=layer.groups)
        else:
            if layer.flatten_before:
                mods.append(torch.nn.Flatten())
            m = torch.nn.Linear(w.shape[1], w.shape[0])
        m.weight.data, m.bias.data = w.clone(), b.clone()
        mods.append(m)
        if i < len(graph.layers) - 1:
            mods.append(torch.nn.ReLU())
    return torch.nn.Sequential(*mods)


# ---------------------------------------------------------------- the import ----------------
def _read_graph(path: Path) -> tuple[nir.NIRGraph, str]:
    from spikeport.export.nir_io import read_nir
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    if path.suffix.lower() in NETX_SUFFIXES:
        from spikeport.deploy.loihi.netx_import import netx_to_nir
        return netx_to_nir(path), "lava-dl netx"
    if path.suffix.lower() != ".nir":
        raise ArtifactError(f"{path}: unknown network format '{path.suffix}'; spikeport imports NIR graphs (.nir) "
                            f"and lava-dl netx networks (.net, .h5)")
    return read_nir(path), "NIR"


def silent_layers(graph: LayerGraph, spikes: dict[str, torch.Tensor], nodes: dict[str, nir.NIRNode]) -> list[str]:
    """A warning for each spiking layer that never fired: the signature of a wrong dt."""
    out = []
    for layer in graph.layers:
        if layer.spiking and float(spikes[layer.name].sum()) == 0:
            node = nodes.get(layer.name)
            detail = ""
            if isinstance(node, nir.IF):
                detail = f"r * dt = {float(np.max(np.asarray(node.r))) * graph.dt:.4g}"
            elif node is not None and (hasattr(node, "tau") or hasattr(node, "tau_mem")):
                tau = np.asarray(getattr(node, "tau", getattr(node, "tau_mem", np.nan)), dtype=np.float64)
                detail = f"tau / dt = {float(np.min(tau)) / graph.dt:.4g}"
            out.append(f"layer '{layer.name}' emits no spike on the first inputs ({detail}, dt = {graph.dt:g} s): "
                       f"is dt right for this graph?")
    return out


def import_network(file: str | Path, out: str | Path, *, dataset: str | None = None, root: str | Path | None = None,
                   inputs: str | Path | None = None, timesteps: int | None = None, bin_ms: float | None = None,
                   dt: float | None = None, producer_name: str | None = None, probe: int = 16) -> ExportInfo:
    """Import ``file`` into the run folder ``out`` (see the module docstring); returns export.json."""
    from spikeport.deploy.float_runtime import run_float
    from spikeport.deploy.lowering import inline_subgraphs
    from spikeport.export.nir_io import write_nir
    from spikeport.export.run import _stage_dir, _swap_in

    file, out = Path(file), Path(out)
    if (dataset is None) == (inputs is None):
        raise ConfigError("import needs exactly one of --dataset NAME or --inputs FILE.npz")
    if timesteps is not None and timesteps < 1:
        raise ConfigError(f"--timesteps must be at least 1 (got {timesteps})")
    if bin_ms is not None and not bin_ms > 0:
        raise ConfigError(f"--bin-ms must be positive (got {bin_ms})")
    if dt is not None and not dt > 0:
        raise ConfigError(f"--dt must be a positive number of seconds (got {dt})")
    prod = producer(producer_name)
    if file.suffix.lower() in NETX_SUFFIXES and prod is None:
        prod = PRODUCERS["lava-dl"]
    graph, kind = _read_graph(file)
    gdt, dt_source = graph_dt(graph, dt, prod, file)
    conventions = prod.conventions if prod else Conventions()
    lowered = lower(graph, gdt, conventions)

    if inputs is not None:
        x, y = read_inputs_npz(Path(inputs))
        if timesteps is not None:
            x = x[:, :timesteps]
        # The file cannot say how long a step lasted in the world; without --bin-ms the common
        # event-camera binning (1 ms) is assumed and recorded as an assumption.
        step_s = bin_ms / 1e3 if bin_ms is not None else DEFAULT_STEP_S
        step_source = "--bin-ms" if bin_ms is not None else f"assumed {DEFAULT_STEP_S * 1e3:g} ms (no --bin-ms given)"
    else:
        from spikeport.data.registry import load_tensors, meta
        m = meta(dataset)
        step_s = bin_ms / 1e3 if bin_ms is not None else m.dt
        step_source = "--bin-ms" if bin_ms is not None else f"dataset '{dataset}' default bin"
        x, y = load_tensors(dataset, "test", root=root, timesteps=timesteps, bin_s=step_s, max_samples=probe,
                            progress=False)
        x = x.float()
    check_input_shape(lowered, x, str(inputs or f"dataset '{dataset}'"))
    steps = int(x.shape[1])

    run = run_float(lowered, x[:probe])
    notes = silent_layers(lowered, run.spikes, inline_subgraphs(graph)[0])
    for note in notes:
        warnings.warn(note, stacklevel=2)

    out.mkdir(parents=True, exist_ok=True)
    export_dir = out / "export"
    stage = _stage_dir(export_dir)
    try:
        graph.metadata = {**(graph.metadata if isinstance(graph.metadata, dict) else {}), "dt": gdt}
        write_nir(graph, stage / NIR_FILE)
        if inputs is not None:
            shutil.copyfile(inputs, stage / INPUTS_FILE)
        if kind == "lava-dl netx":
            shutil.copyfile(file, stage / NETX_FILE)
        write_json_atomic(stage / "partition.json", Partition(chip_outputs=[t.name for t in lowered.taps], host=[]))
        from spikeport.export.onnx_twin import ann_summary
        frames = x[:probe].sum(1)
        ann = AnnExport(**ann_summary(ann_twin(lowered), stage / ONNX_FILE, frames), trained=False)
        imported = ImportInfo(
            file=str(file.resolve()), format=kind, producer=prod.name if prod else None, dt=gdt, dt_source=dt_source,
            step_s=step_s, step_source=step_source, conventions=conventions.to_dict(),
            inputs_file=INPUTS_FILE if inputs is not None else None, dataset=dataset,
            netx_file=NETX_FILE if kind == "lava-dl netx" else None,
            root=str(Path(root).resolve()) if root is not None else None, timesteps=steps,
            bin_ms=step_s * 1e3, warnings=notes)
        verification = Verification(runtime="spikeport float runtime (the lowered graph in float64)",
                                    samples=int(min(probe, x.shape[0])), layers=[], output_agreement=1.0, exact=True)
        info = ExportInfo(model=f"imported:{file.name}", chip_native=True, nir_file=NIR_FILE, dt=gdt,
                          timesteps=steps, verification=verification, ann=ann, seed=0,
                          neuron_convention=f"{kind} graph, dt {gdt:g} s ({dt_source})",
                          approximations=lowered.approximations, imported=imported)
        write_json_atomic(stage / "export.json", info)
        _swap_in(stage, export_dir)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return info
