"""Deploy over several processes: the test samples split in contiguous shards, one per rank.

Every engine runs samples independently (each starts from rest), so a deployment is
embarrassingly parallel. Each rank deploys its shard with the target's own deploy function
(the same quantisation, mapping and engine as one process), then the ranks merge over a
``torch.distributed`` process group (gloo, CPU):

- per-layer spikes, synaptic operations, neuron updates (and a target's other per-layer counts,
  such as Speck's input events) are integers (floats in ``LayerCounts``, exact below 2**53):
  gathered with ``all_gather_object`` and summed as Python integers, exact; per-sample means are
  the totals over all samples;
- accuracy, float accuracy and agreement (every fraction field) as integer counts of samples
  (a shard's float32 fraction times its size rounds back to its count exactly below 2**23
  samples), summed, then divided as the targets divide; a samples-per-second figure becomes all
  samples over the slowest rank's time;
- the host part's multiply-accumulates and samples, summed;
- the approximations, in rank order without repeats; a note that depends on the shard's data
  (how many input entries it saw carry counts > 1) is kept per shard, prefixed with its samples.

Two ways in: ``spikeport deploy ... --workers N`` spawns N local ranks with
``torch.multiprocessing`` and a file-store process group (``deploy_parallel``); under
``torchrun`` (``WORLD_SIZE`` set, one or more machines) every rank builds the whole deploy
input itself and ``deploy_sharded`` uses the launcher's group. Rank 0 writes the target's
files (netx, mapping) into the run's folder; the other ranks write theirs into a scratch folder.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from spikeport.deploy.common import DeployInput
from spikeport.errors import ConfigError
from spikeport.schemas import LayerCounts, Stats

DeployFn = Callable[[DeployInput, object], Stats]


def shard_bounds(n: int, world: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) ranges of ``n`` samples over ``world`` ranks, sizes differing by at most 1."""
    if world < 1:
        raise ConfigError(f"workers must be >= 1, got {world}")
    if n < world:
        raise ConfigError(f"{n} test samples cannot be split over {world} workers (at most one worker a sample)")
    edges = np.linspace(0, n, world + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def shard_input(inp: DeployInput, start: int, stop: int, out_dir: Path) -> DeployInput:
    """The deploy input restricted to samples [start, stop), writing into ``out_dir``."""
    return dataclasses.replace(inp, inputs=inp.inputs[start:stop], labels=inp.labels[start:stop],
                               float_predictions=inp.float_predictions[start:stop], out_dir=out_dir)


def _count(fraction: float, n: int, what: str) -> int:
    """A shard's fraction back to its integer count (the float32 mean of n zeros and ones is within n * 2**-24)."""
    c = round(fraction * n)
    if abs(fraction * n - c) > 1e-3:
        raise ValueError(f"{what} {fraction!r} over {n} samples is not a whole count")
    return int(c)


def _fraction(count: int, n: int) -> float:
    """count / n as the targets compute it (the float32 mean of n zeros and ones), so 1 rank equals N."""
    return float(torch.tensor(count, dtype=torch.float32) / n)


def _exact(v: float, what: str) -> int:
    if v != int(v) or abs(v) >= 2**53:
        raise ValueError(f"{what}: count {v!r} is not an exact integer")
    return int(v)


# LayerCounts fields that describe the layer, the same on every rank; every other number is a count
_LAYER_FIXED = ("name", "neurons", "synapses", "kind")
_FRACTIONS = ("accuracy", "agreement")  # Stats fields named so are fractions of the samples
_RATE = "per_s"                         # ... and so, rates: samples / wall time


def _merge_layers(per_rank: list[list[dict]], total: int) -> tuple[list[LayerCounts], list[LayerCounts]]:
    totals, means = [], []
    for rows in zip(*per_rank):
        first = rows[0]
        if any({k: r.get(k) for k in _LAYER_FIXED} != {k: first.get(k) for k in _LAYER_FIXED} for r in rows):
            raise ValueError(f"layer {first['name']}: the shards deployed different layers")
        tot, mean = dict(first), dict(first)
        for key, v in first.items():
            if key in _LAYER_FIXED or isinstance(v, (str, bool)) or not isinstance(v, (int, float)):
                continue
            s = sum(_exact(r[key], f"layer {first['name']} {key}") for r in rows)  # exact: Python ints
            tot[key], mean[key] = float(s), s / total
        totals.append(LayerCounts.model_validate(tot))
        means.append(LayerCounts.model_validate(mean))
    return totals, means


def merge_stats(per_rank: list[Stats], bounds: list[tuple[int, int]]) -> Stats:
    """One Stats from the shards' (in rank order): counts summed as integers, fractions as counts."""
    dumps = [s.model_dump() for s in per_rank]
    sizes = [b - a for a, b in bounds]
    total = sum(sizes)
    for d, n in zip(dumps, sizes):
        if d["samples"] != n:
            raise ValueError(f"a shard reports {d['samples']} samples, it was given {n}")
    if any(d["cores_used"] != dumps[0]["cores_used"] for d in dumps):
        raise ValueError("the shards deployed different networks (cores used differ)")
    out = dict(dumps[0])
    out["samples"] = total
    for key, v in dumps[0].items():
        if not isinstance(v, float):
            continue
        if any(f in key for f in _FRACTIONS):
            out[key] = _fraction(sum(_count(d[key], n, key) for d, n in zip(dumps, sizes)), total)
        elif _RATE in key:  # the ranks ran side by side: all samples over the slowest rank's time
            out[key] = total / max(n / d[key] for d, n in zip(dumps, sizes))
    out["layers"], out["per_sample"] = _merge_layers([d["layers"] for d in dumps], total)
    out["approximations"] = merge_notes([d["approximations"] for d in dumps], bounds)
    return Stats.model_validate(out)


def merge_notes(per_rank: list[list[str]], bounds: list[tuple[int, int]]) -> list[str]:
    """Rank order without repeats; a note not every shard has word for word (one that counts what
    its shard saw) is kept per shard, prefixed with the shard's samples."""
    common = set(per_rank[0]).intersection(*per_rank[1:]) if per_rank else set()
    merged: list[str] = []
    for notes, (a, b) in zip(per_rank, bounds):
        for note in notes:
            text = note if note in common else f"samples {a}-{b - 1}: {note}"
            if text not in merged:
                merged.append(text)
    return merged


def deploy_sharded(deploy_fn: DeployFn, inp: DeployInput, profile: object) -> tuple[Stats, int, int]:
    """Inside an initialised process group: deploy this rank's shard of ``inp``, merge over all ranks.

    Returns (merged stats, host MACs, host samples); every rank gets the same."""
    rank, world = dist.get_rank(), dist.get_world_size()
    bounds = shard_bounds(int(inp.inputs.shape[0]), world)
    start, stop = bounds[rank]
    with tempfile.TemporaryDirectory(prefix=f"spikeport-rank{rank}-") as scratch:
        stats = deploy_fn(shard_input(inp, start, stop, inp.out_dir if rank == 0 else Path(scratch)), profile)
    host = (int(getattr(inp.host, "macs", 0)), int(getattr(inp.host, "samples", 0)))
    gathered: list = [None] * world
    dist.all_gather_object(gathered, (stats, host))  # the counts travel as they are; merged in Python ints
    merged = merge_stats([g[0] for g in gathered], bounds)
    return merged, sum(g[1][0] for g in gathered), sum(g[1][1] for g in gathered)


def _worker(rank: int, world: int, store: str, deploy_fn: DeployFn, inp: DeployInput, profile: object,
            result: str) -> None:
    torch.set_num_threads(1)  # one rank a core: the ranks are the parallelism
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        stats, macs, host_samples = deploy_sharded(deploy_fn, inp, profile)
        if rank == 0:
            Path(result).write_text(json.dumps({"stats": stats.model_dump(mode="json"), "macs": macs, "host_samples": host_samples}))
    finally:
        dist.destroy_process_group()


def deploy_parallel(deploy_fn: DeployFn, inp: DeployInput, profile: object, workers: int) -> Stats:
    """Deploy ``inp`` over ``workers`` local processes (or the torchrun group when one is running);
    the merged Stats equal one process's, and the host counter (if any) holds the summed MACs."""
    import torch.multiprocessing as mp

    if dist.is_available() and dist.is_initialized():
        stats, macs, host_samples = deploy_sharded(deploy_fn, inp, profile)
    elif workers == 1:
        return deploy_fn(inp, profile)
    else:
        shard_bounds(int(inp.inputs.shape[0]), workers)  # a clear error before any process starts
        with tempfile.TemporaryDirectory(prefix="spikeport-scale-") as tmp:
            store, result = os.path.join(tmp, "store"), os.path.join(tmp, "result.json")
            mp.start_processes(_worker, args=(workers, store, deploy_fn, inp, profile, result), nprocs=workers,
                               join=True, start_method="spawn")
            data = json.loads(Path(result).read_text())  # plain data, no pickle
        stats = Stats.model_validate(data["stats"])
        macs, host_samples = data["macs"], data["host_samples"]
    if hasattr(inp.host, "macs"):  # the parent's counter holds what the ranks counted
        inp.host.macs, inp.host.samples = macs, host_samples
    return stats


def init_from_env() -> bool:
    """Join the torchrun group when launched by torchrun (``WORLD_SIZE`` > 1); True if in a group."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return True


def is_writer() -> bool:
    """Whether this process writes the run's outputs (rank 0, or the only process)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
