"""The training loop: AdamW + cosine schedule + gradient clipping + early stopping, resumable.

Data are in-memory tensors (``spikeport.data.registry.load_tensors`` gives them): a *stream*
is one ``(x, y)`` pair, ``x`` a tensor ``[N, T, ...]`` or a tuple of them (audio-visual pairs).
Most models train on one stream; the joint model alternates batches of two (visual, audio).
Batches are cut from the tensors by index (no DataLoader workers to start: the data already
sit in memory), in the order a ``DistributedSampler`` gives, so one process and several
processes with the same global batch see the same samples at each step.

``fit`` checkpoints at every epoch end and whenever it is asked to stop (SIGINT), with
everything needed to continue bit for bit: weights, optimizer, scheduler, AMP scaler, random
generator states, epoch, step within the epoch and the running sums of the epoch.
"""
from __future__ import annotations

import importlib
import random
import signal
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from spikeport.errors import ConfigError, DataError, SpikeportError
from spikeport.train.checkpoint import (MODEL_FILE, RESUME_FILE, RESUME_FORMAT, VERSION,
                                        model_payload, save_checkpoint, spec_record)
from spikeport.train.config import TrainConfig
from spikeport.train.distributed import DistContext
from spikeport.train.models.spec import ModelSpec

Inputs = torch.Tensor | tuple[torch.Tensor, ...]
Stream = tuple[Inputs, torch.Tensor]


class TrainingInterrupted(SpikeportError):
    """Training stopped on request (SIGINT) after saving a checkpoint to resume from."""


class TrainingDiverged(SpikeportError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_accuracy: float | None
    test: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False
    wall_s: float = 0.0


# --- batches ---------------------------------------------------------------------------------
def stream_len(stream: Stream) -> int:
    return int(stream[1].shape[0])


def take(x: Inputs, idx: torch.Tensor) -> Inputs:
    return tuple(t[idx] for t in x) if isinstance(x, tuple) else x[idx]


def to_device(x: Inputs, device: torch.device) -> Inputs:
    """Move a batch to ``device``; integer counts (augmented training data are kept as uint8
    in memory) become float32."""
    if isinstance(x, tuple):
        return tuple(to_device(t, device) for t in x)
    x = x.to(device, non_blocking=True)
    return x if x.is_floating_point() else x.float()


def epoch_schedule(streams: Sequence[Stream], epoch: int, cfg: TrainConfig,
                   ctx: DistContext) -> list[tuple[int, torch.Tensor]]:
    """This rank's batches of an epoch as (stream index, sample indices), streams interleaved.

    DistributedSampler shuffles with ``seed + epoch`` and deals indices round-robin to the
    ranks, so rank r's k-th batch of size B/world holds exactly the samples that a single
    process's k-th batch of size B holds at positions r, r + world, ...
    """
    local_bs = cfg.batch_size // ctx.world_size
    per_stream: list[list[torch.Tensor]] = []
    for s in streams:
        sampler = DistributedSampler(range(stream_len(s)), num_replicas=ctx.world_size, rank=ctx.rank,
                                     shuffle=True, seed=cfg.seed, drop_last=False)
        sampler.set_epoch(epoch)
        idx = torch.tensor(list(sampler), dtype=torch.long)
        per_stream.append(list(idx.split(local_bs)))
    schedule: list[tuple[int, torch.Tensor]] = []
    for k in range(max((len(b) for b in per_stream), default=0)):
        for si, batches in enumerate(per_stream):
            if k < len(batches):
                schedule.append((si, batches[k]))
    return schedule


# --- losses ----------------------------------------------------------------------------------
def loss_function(spec: ModelSpec, label_smoothing: float | None = None
                  ) -> Callable[[Any, torch.Tensor], torch.Tensor]:
    """The model's training loss: cross-entropy on the logits (spike counts for an SNN) plus the
    model's own terms (SupCon for ``scl``, alignment for ``scmrl``), as
    ``spikeport.train.losses.model_loss(spec, output, y)`` defines them. The ANN twins train on
    cross-entropy alone. ``label_smoothing`` (None: the model's own) smooths the cross-entropy.
    """
    if spec.ann:
        ls = float(label_smoothing or 0.0)
        return lambda out, y: F.cross_entropy(out.logits.float(), y, label_smoothing=ls)
    losses = importlib.import_module("spikeport.train.losses")
    return lambda out, y: losses.model_loss(spec, out, y, label_smoothing=label_smoothing)


def augment_batch(x: Inputs, cfg: TrainConfig) -> Inputs:
    """A training batch with ``cfg``'s random frame augmentation (``shift_px``, ``drop_p``) drawn
    from torch's generator (saved in checkpoints, so a resumed run draws the same)."""
    if not (cfg.shift_px or cfg.drop_p) or isinstance(x, tuple):
        return x
    from spikeport.data.preprocess import augment_frames
    return augment_frames(x, cfg.shift_px, cfg.drop_p)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine from ``lr`` to ``min_lr`` over all steps; with ``warmup_epochs`` a linear ramp from
    ``lr / 100`` over those epochs first and the cosine over the rest (stepped once a batch)."""
    total = max(cfg.epochs * steps_per_epoch, 1)
    warm = cfg.warmup_epochs * steps_per_epoch
    if not warm:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=cfg.min_lr)
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, end_factor=1.0, total_iters=warm)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total - warm, 1), eta_min=cfg.min_lr)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warm])


# --- random generator states (saved as tensors/ints so weights_only loading accepts them) ---
def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                      int(np_state[3]), float(np_state[4])],
            "python": _to_lists(random.getstate())}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    random.setstate(_to_tuples(state["python"]))


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, (tuple, list)) else x


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- stop requests ---------------------------------------------------------------------------
class StopFlag:
    """Set by SIGINT (or a test); the loop checkpoints at the next step boundary and stops."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, *_: Any) -> None:
        self.requested = True


@contextmanager
def sigint_checkpoint(flag: StopFlag) -> Iterator[StopFlag]:
    """While training, SIGINT sets ``flag`` instead of raising KeyboardInterrupt mid-step; a
    second SIGINT interrupts at once (the last checkpoint stays valid: writes are atomic)."""
    try:
        previous = signal.getsignal(signal.SIGINT)
    except ValueError:
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.requested:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        flag()

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: no signal handling, the flag still works
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


# --- evaluation ------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: nn.Module, stream: Stream, loss_fn: Callable, cfg: TrainConfig,
             ctx: DistContext, amp: bool) -> dict[str, float]:
    """Mean loss and accuracy over a stream; ranks split it and sum their counts."""
    model.eval()
    x, y = stream
    idx = torch.arange(ctx.rank, stream_len(stream), ctx.world_size)
    loss_sum = correct = count = 0.0
    for chunk in idx.split(cfg.eval_batch_size):
        xb, yb = to_device(take(x, chunk), ctx.device), y[chunk].to(ctx.device)
        with _autocast(ctx.device, amp):
            out = model(xb)
            loss = loss_fn(out, yb)
        loss_sum += float(loss) * len(chunk)
        correct += float((out.logits.argmax(1) == yb).sum())
        count += len(chunk)
    loss_sum, correct, count = ctx.all_reduce_sum([loss_sum, correct, count])
    return {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1), "n": int(count)}


def evaluate_streams(model: nn.Module, streams: Sequence[Stream], names: Sequence[str], loss_fn: Callable,
                     cfg: TrainConfig, ctx: DistContext, amp: bool) -> dict[str, float]:
    """Loss and accuracy over all streams together, and per stream when there are several."""
    parts = [evaluate(model, s, loss_fn, cfg, ctx, amp) for s in streams]
    n = sum(p["n"] for p in parts)
    out = {"loss": sum(p["loss"] * p["n"] for p in parts) / max(n, 1),
           "accuracy": sum(p["accuracy"] * p["n"] for p in parts) / max(n, 1), "n": n}
    if len(parts) > 1:
        for name, p in zip(names, parts):
            out[f"accuracy_{name}"] = p["accuracy"]
    return out


def _autocast(device: torch.device, amp: bool):
    # Mixed precision only on CUDA: float16 with a gradient scaler. On CPU training stays in
    # float32 (CPU autocast would use bfloat16, too coarse for membrane potentials near threshold).
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return nullcontext()


# --- the loop ---------------------------------------------------------------------------------
def fit(model: nn.Module, spec: ModelSpec, train: Sequence[Stream], val: Sequence[Stream],
        cfg: TrainConfig, *, ctx: DistContext | None = None, out_dir: Path | None = None,
        resume: dict[str, Any] | None = None, stop: StopFlag | None = None,
        stream_names: Sequence[str] = (), on_step: Callable[[int, int], None] | None = None) -> FitResult:
    """Train ``model`` on the ``train`` streams, early-stopping on ``val``; leaves the best weights
    in ``model``. With ``out_dir`` (rank 0) writes ``checkpoint.pt`` (resume state) after every
    epoch and on a stop request, and ``model.pt`` (best weights so far) after every epoch.
    ``resume``: a checkpoint dict from ``checkpoint.pt`` to continue from.
    """
    ctx = ctx or DistContext()
    stop = stop or StopFlag()
    cfg.validate()
    if cfg.batch_size % ctx.world_size:
        raise ConfigError(f"batch_size: {cfg.batch_size} is not divisible by the {ctx.world_size} "
                             "processes (each takes an equal share of a global batch)")
    if not train or min(stream_len(s) for s in train) == 0:
        raise DataError("train split: no samples to train on")
    device = ctx.device
    amp = cfg.amp and device.type == "cuda"
    names = list(stream_names) or [str(i) for i in range(len(train))]

    seed_everything(cfg.seed)
    model.to(device)
    net: nn.Module = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if ctx.distributed else model
    loss_fn = loss_function(spec)
    train_loss_fn = loss_function(spec, cfg.label_smoothing) if cfg.label_smoothing else loss_fn
    if cfg.spike_dropout:
        model.spike_dropout = float(cfg.spike_dropout)  # read by ChipNativeSNN while training
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # EMA of the weights (cfg.ema > 0): validated and kept in place of the raw weights
    ema: dict[str, torch.Tensor] | None = None
    if cfg.ema:
        ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    steps_per_epoch = len(epoch_schedule(train, 0, cfg, ctx))
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    history: list[dict[str, Any]] = []
    best = {"val_accuracy": None, "epoch": -1, "state_dict": None, "bad_epochs": 0}
    start_epoch, start_step = 0, 0
    running = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0, "wall_s": 0.0}
    wall_before = 0.0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        if resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        history = list(resume["history"])
        best = dict(resume["best"])
        start_epoch, start_step = int(resume["epoch"]), int(resume["step"])
        running = dict(resume["running"])
        wall_before = float(resume.get("wall_s", 0.0))
        set_rng_state(resume["rng"])
        if ema is not None and resume.get("ema") is not None:
            ema = {k: v.to(device) for k, v in resume["ema"].items()}

    t0 = time.perf_counter()

    def checkpoint(epoch: int, step: int) -> None:
        if out_dir is None or not ctx.is_main:
            return
        save_checkpoint(Path(out_dir) / RESUME_FILE, {
            "format": RESUME_FORMAT, "version": VERSION, "spec": spec_record(spec), "config": cfg.to_dict(),
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if amp else None, "rng": rng_state(),
            "epoch": epoch, "step": step, "running": dict(running), "history": history, "best": best,
            "wall_s": wall_before + time.perf_counter() - t0, "world_size": ctx.world_size,
            "ema": {k: v.detach().cpu().clone() for k, v in ema.items()} if ema is not None else None})

    stopped_early = best["bad_epochs"] >= cfg.patience
    for epoch in range(start_epoch, cfg.epochs):
        if stopped_early:
            break
        net.train()
        schedule = epoch_schedule(train, epoch, cfg, ctx)
        first = start_step if epoch == start_epoch else 0
        if first == 0:
            running = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0, "wall_s": 0.0}
        epoch_t0 = time.perf_counter() - running["wall_s"]
        show = ctx.is_main and cfg.progress is not False
        # disable=None: tqdm shows the bar only on a terminal
        bar = tqdm(total=len(schedule), initial=first, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=None if (show and cfg.progress is None) else not show,
                   leave=False, dynamic_ncols=True)
        for step in range(first, len(schedule)):
            si, idx = schedule[step]
            x, y = train[si]
            xb, yb = augment_batch(to_device(take(x, idx), device), cfg), y[idx].to(device)
            with _autocast(device, amp):
                out = net(xb)
                loss = train_loss_fn(out, yb)
            bad = not torch.isfinite(loss.detach()).item()
            if ctx.any(bad):
                bar.close()
                where = f"{out_dir / RESUME_FILE}" if out_dir is not None else "no checkpoint written"
                kept = (f"; the last good checkpoint (end of epoch {epoch}) is kept at {where}"
                        if epoch > 0 or start_step else "; no epoch had finished, nothing was kept")
                raise TrainingDiverged(f"loss became {float(loss.detach()):.4g} at epoch {epoch + 1}, step {step + 1} "
                                       f"(try a lower lr than {cfg.lr:g}){kept}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                with torch.no_grad():
                    for k, v in model.state_dict().items():
                        if v.is_floating_point():
                            ema[k].mul_(cfg.ema).add_(v.detach(), alpha=1.0 - cfg.ema)
                        else:
                            ema[k].copy_(v)
            n = len(idx)
            running["loss_sum"] += float(loss.detach()) * n
            running["correct"] += float((out.logits.detach().argmax(1) == yb).sum())
            running["count"] += n
            bar.update(1)
            bar.set_postfix(loss=f"{running['loss_sum'] / running['count']:.3f}",
                            acc=f"{running['correct'] / running['count']:.3f}")
            if on_step is not None:
                on_step(epoch, step)
            if ctx.any(stop.requested):
                bar.close()
                running["wall_s"] = time.perf_counter() - epoch_t0
                checkpoint(epoch, step + 1)
                ctx.barrier()
                where = f"{Path(out_dir) / RESUME_FILE}" if out_dir is not None else "memory only"
                raise TrainingInterrupted(f"interrupted at epoch {epoch + 1}, step {step + 1}; "
                                          f"checkpoint saved ({where}); continue with --resume")
        bar.close()
        loss_sum, correct, count = ctx.all_reduce_sum(
            [running["loss_sum"], running["correct"], running["count"]])
        record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": loss_sum / count,
                                  "train_accuracy": correct / count, "lr": optimizer.param_groups[0]["lr"]}
        raw = None
        if ema is not None:  # validate (and keep) the averaged weights
            raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
            model.load_state_dict(ema)
        if val and min(stream_len(s) for s in val) > 0:
            v = evaluate_streams(net, val, names, loss_fn, cfg, ctx, amp)
            record.update(val_loss=v["loss"], val_accuracy=v["accuracy"],
                          **{f"val_{k}": a for k, a in v.items() if k.startswith("accuracy_")})
            score = v["accuracy"]
        else:
            score = None
        record["wall_s"] = time.perf_counter() - epoch_t0
        history.append(record)
        improved = best["val_accuracy"] is None or score is None or score > best["val_accuracy"]
        if improved:
            best = {"val_accuracy": score, "epoch": epoch + 1, "bad_epochs": 0,
                    "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        else:
            best["bad_epochs"] += 1
        if raw is not None:
            model.load_state_dict(raw)
        if ctx.is_main:
            msg = (f"epoch {epoch + 1}/{cfg.epochs}: loss {record['train_loss']:.4f} "
                   f"acc {record['train_accuracy']:.3f}")
            if score is not None:
                msg += f" | val loss {record['val_loss']:.4f} acc {score:.3f}"
            tqdm.write(msg)
        running = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0, "wall_s": 0.0}
        if out_dir is not None and ctx.is_main:
            save_checkpoint(Path(out_dir) / MODEL_FILE, model_payload(
                spec, best["state_dict"], seed=cfg.seed, epoch=best["epoch"], val_accuracy=best["val_accuracy"]))
        checkpoint(epoch + 1, 0)
        ctx.barrier()
        stopped_early = best["bad_epochs"] >= cfg.patience and epoch + 1 < cfg.epochs

    if best["state_dict"] is not None:
        model.load_state_dict(best["state_dict"])
    return FitResult(history=history, best_epoch=best["epoch"], best_val_accuracy=best["val_accuracy"],
                     stopped_early=stopped_early, wall_s=wall_before + time.perf_counter() - t0)
