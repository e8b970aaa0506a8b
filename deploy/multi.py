"""Deploying a two-modality model whose chip part is one graph per modality (joint, S-CMRL).

``spikeport export`` writes such a model's chip parts as runs of their own under
``runs/X/parts/<modality>/`` (``spikeport.export.run.export_parts``). Here:

- **joint**: each part is a complete seed model (that modality's encoder on the chip, the shared
  HGRN trunk on the host); each deploys on its modality's test split, labels taken mod 10 as the
  joint model scores them. One deployment per modality: ``parts/<m>/deploy/<target>/stats.json``.
- **S-CMRL**: each part is one modality's chip-native patch embedding (BatchNorm folded); both
  run on the same test pairs, and the host runs the rest of the model (positional branches,
  cross-modal attention, MLP blocks, head) on the two chips' output spike trains. The audio
  part runs first and its output trains are kept; the visual part's host step then runs the
  head on both. ``runs/X/deploy/<target>/stats.json`` holds the whole inference: both parts'
  layers (named ``visual.<layer>``, ``audio.<layer>``), the head's host MACs, the accuracy of
  the whole model, and a real duration of T x the longer bin width (the audio stream's).

Chip arithmetic stays in the targets; this module only feeds them and merges what they count.
"""
from __future__ import annotations

from pathlib import Path

import torch

from spikeport.deploy.common import DeployInput
from spikeport.deploy.lowering import Conventions
from spikeport.deploy.run import CountingHost, build_deploy_input, float_predictions
from spikeport.errors import ArtifactError, ConfigError
from spikeport.io import write_json_atomic
from spikeport.schemas import Stats


def part_runs(run_dir: str | Path) -> dict[str, Path]:
    from spikeport.export.run import part_runs as parts
    return parts(run_dir)


def has_parts(run_dir: str | Path) -> bool:
    return bool(part_runs(run_dir))


def _run_target(inp: DeployInput, target: str) -> Stats:
    """What ``deploy_run`` does once its input is built (one process), written to inp.out_dir."""
    from spikeport.deploy.targets import get_target
    from spikeport.hw_profiles import load_profile
    stats = get_target(target).deploy(inp, load_profile(target))
    if isinstance(inp.host, CountingHost):
        stats.host_macs_per_sample = inp.host.macs_per_sample
    stats.step_s = inp.step_s or inp.dt
    stats.conventions = (inp.conventions or Conventions()).to_dict()
    write_json_atomic(inp.out_dir / "stats.json", stats)
    return stats


def deploy_joint(run_dir: str | Path, target: str, engine: str | None = None, samples: int | None = None,
                 root: Path | None = None, only: str | None = None) -> dict[str, Stats]:
    """Each modality's part of a joint run on its own test split: {modality: Stats}
    (``only``: that modality's part alone)."""
    from spikeport.deploy.targets import resolve_engine
    from spikeport.train.checkpoint import load_run_model
    parts = part_runs(run_dir)
    if not parts:
        raise ArtifactError(f"{run_dir}: no chip parts (parts/<modality>/); export a chip-native joint run first")
    engine = resolve_engine(target, engine)
    out = {}
    for modality, part in parts.items():
        if only is not None and modality != only:
            continue
        _, spec = load_run_model(part)
        inp = build_deploy_input(part, target, engine, samples, root)
        inp.labels = inp.labels % int(spec.label_mod if spec.label_mod is not None else spec.num_classes)
        out[modality] = _run_target(inp, target)
    return out


def _chip_trains(spikes: dict[str, torch.Tensor], node: str, shape: list[int]) -> torch.Tensor:
    """The output trains a target hands its host, as [T, N, *shape]."""
    trains = spikes.get(node)
    if trains is None:
        others = [k for k in spikes if k != "output"]
        if len(others) != 1:
            raise ArtifactError(f"S-CMRL host: no spikes of chip node '{node}' (got {sorted(spikes)})")
        trains = spikes[others[0]]
    return trains.to(torch.float32).reshape(trains.shape[0], trains.shape[1], *shape)


class _Collector:
    """Host step of the first part: keeps its output trains (one entry per call: a target may
    run its network more than once, e.g. Speck's float chip form after the quantised one) and
    returns neutral logits."""

    def __init__(self, node: str, shape: list[int], classes: int) -> None:
        self.node, self.shape, self.classes = node, shape, classes
        self.calls: list[torch.Tensor] = []

    def __call__(self, spikes: dict[str, torch.Tensor]) -> torch.Tensor:
        trains = _chip_trains(spikes, self.node, self.shape)
        self.calls.append(trains)
        return torch.zeros(trains.shape[1], self.classes)


class _ScmrlHead:
    """Host step of the last part: the S-CMRL head on this part's trains and the kept ones."""

    def __init__(self, model: torch.nn.Module, modality: str, node: str, shape: list[int],
                 kept: dict[str, _Collector]) -> None:
        self.model, self.modality, self.node, self.shape, self.kept = model.eval(), modality, node, shape, kept
        self.calls = 0

    @torch.no_grad()
    def __call__(self, spikes: dict[str, torch.Tensor]) -> torch.Tensor:
        maps = {self.modality: _chip_trains(spikes, self.node, self.shape)}
        for m, col in self.kept.items():
            if not col.calls:
                raise ArtifactError(f"S-CMRL host: the {m} part has not run")
            maps[m] = col.calls[min(self.calls, len(col.calls) - 1)]
        self.calls += 1
        return self.model.head(maps.get("visual"), maps.get("audio"))[0]


def _prefixed(stats: Stats, modality: str, field: str) -> list:
    return [layer.model_copy(update={"name": f"{modality}.{layer.name}"}) for layer in getattr(stats, field)]


def deploy_scmrl(run_dir: str | Path, target: str, engine: str | None = None, samples: int | None = None,
                 root: Path | None = None) -> Stats:
    """Both patch embeddings on the chip, the rest on the host, on the same test pairs."""
    from spikeport.data.registry import load_tensors
    from spikeport.deploy.targets import resolve_engine
    from spikeport.train.checkpoint import load_run_model
    run_dir = Path(run_dir)
    parts = part_runs(run_dir)
    if not parts:
        raise ArtifactError(f"{run_dir}: no chip parts (parts/<modality>/); export a chip-native S-CMRL run first")
    engine = resolve_engine(target, engine)
    model, spec = load_run_model(run_dir)
    if spec.model != "scmrl":
        raise ConfigError(f"{run_dir}: model {spec.model!r} is not scmrl")
    x, y = load_tensors(spec.dataset, "test", root=root or spec.root, timesteps=int(spec.timesteps),
                        max_samples=samples, seed=int(spec.seed))
    float_preds = float_predictions(model, x)
    order = [m for m in ("audio", "visual") if m in parts]
    kept: dict[str, _Collector] = {}
    per_part: dict[str, Stats] = {}
    head: CountingHost | None = None
    for i, modality in enumerate(order):
        part_model, _ = load_run_model(parts[modality])
        shape = list(part_model.backbone.output_shape)
        node = part_model.backbone.lif_names[-1]
        inp = build_deploy_input(parts[modality], target, engine, samples, root)
        inp.inputs = part_model.chip_inputs(x)
        inp.labels, inp.float_predictions = y, float_preds
        if i < len(order) - 1:
            kept[modality] = _Collector(node, shape, int(spec.num_classes))
            inp.host = kept[modality]
        else:
            head = CountingHost(_ScmrlHead(model, modality, node, shape, kept))
            inp.host = head
        per_part[modality] = _run_target(inp, target)
    last = per_part[order[-1]]
    stats = Stats(
        target=last.target, engine=last.engine, samples=last.samples, timesteps=last.timesteps,
        dt=max(s.dt for s in per_part.values()), accuracy=last.accuracy, float_accuracy=last.float_accuracy,
        agreement_with_float=last.agreement_with_float,
        cores_used=sum(s.cores_used for s in per_part.values()),
        layers=[la for m in order for la in _prefixed(per_part[m], m, "layers")],
        per_sample=[la for m in order for la in _prefixed(per_part[m], m, "per_sample")],
        approximations=[f"{m}: {a}" for m in order for a in per_part[m].approximations]
        + [f"the {order[0]} part's own accuracy in parts/{order[0]}/deploy/{target}/stats.json is not "
           "meaningful (its host step only keeps the trains); this file scores the whole model"],
        clipped_weights=sum(s.clipped_weights for s in per_part.values()),
        host_macs_per_sample=head.macs_per_sample if head is not None else 0,
        step_s=max(s.step_s or s.dt for s in per_part.values()), conventions=last.conventions)
    write_json_atomic(run_dir / "deploy" / target / "stats.json", stats)
    return stats


def deploy_multi(run_dir: str | Path, target: str, engine: str | None = None, samples: int | None = None,
                 root: Path | None = None) -> dict[str, Stats]:
    """A two-modality run on one target: joint gives {visual, audio}, S-CMRL {audiovisual}."""
    from spikeport.train.checkpoint import load_run_model
    _, spec = load_run_model(Path(run_dir))
    if spec.model == "joint":
        return deploy_joint(run_dir, target, engine, samples, root)
    if spec.model == "scmrl":
        return {"audiovisual": deploy_scmrl(run_dir, target, engine, samples, root)}
    raise ConfigError(f"{run_dir}: model {spec.model!r} has one chip graph; use `spikeport deploy`")
