"""Quantisation-aware fine-tuning of a chip-native SNN through a chip's own integer arithmetic.

``spikeport train ... --finetune-for loihi2|speck``. Each step the model is exported and
quantised exactly as ``spikeport deploy`` does it (``export.to_nir`` -> ``deploy.lowering`` ->
``deploy/loihi/quantize.py`` or ``deploy/speck/quantize.py``: the one copy of each chip's
rule), and the integers are mapped back into the model's units:

- a weight ``w_int`` of a layer with scale ``s`` is ``w_int / (s * g)``, ``g`` the factor the
  lowering applied between the torch weight and the layer's (1 / threshold);
- the threshold becomes the chip's integer test in float: Loihi fires on ``v > vth`` (so the
  float threshold is ``(vth + 1/4) / (s g)``), Speck on ``v >= threshold_high`` (``(thr - 0.6)
  / (s g)``). The fractions keep float rounding away from the integer's edge; re-quantising
  these parameters returns the same integers.

The forward pass runs on these values and the gradient updates the float weights under them
(straight-through rounding: d(round(w))/dw taken as 1). At the end the model is *left on the
chip's grid*, so the exported float model and that chip compute the same spikes. The two grids
differ: sinabs scales a layer by its positive maximum (127) or its negative minimum (-128),
Loihi by the largest magnitude (254, mixed-sign): a layer whose most negative weight sets
Speck's scale lands between Loihi's levels, so each chip gets its own fine-tuning.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import snntorch as snn
import torch
from torch import nn

from spikeport.errors import ConfigError
from spikeport.train.config import TrainConfig
from spikeport.train.loop import Stream, epoch_schedule, loss_function, seed_everything, take, to_device
from spikeport.train.distributed import DistContext
from spikeport.train.models.spec import ModelSpec

TARGETS = ("loihi", "loihi2", "speck")
#: Fine-tuning epochs when none are given: on real N-MNIST a few epochs at a small learning
#: rate move the spikes back onto the chip's grid without forgetting.
DEFAULT_FINETUNE_EPOCHS = 3
DEFAULT_FINETUNE_LR = 5e-4
LOIHI_MARGIN = 0.25   # float threshold (vth + 1/4) / scale: fires exactly when v_int > vth
SPECK_MARGIN = 0.6    # float threshold (thr - 0.6) / scale: fires exactly when v_int >= thr


@dataclass
class LayerGrid:
    """One layer's chip integers in the torch model's units."""

    synapse: str                 # conv1, fc1, ... (the torch module's name)
    neuron: str                  # lif1, ...
    weight: torch.Tensor         # the torch weight's shape
    bias: torch.Tensor | None
    threshold: float
    scale: float                 # integer units per float unit of the torch layer


@dataclass
class ChipGrid:
    target: str
    layers: list[LayerGrid]
    notes: list[str] = field(default_factory=list)


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise ConfigError(f"finetune_for: {target!r} is not a chip to fine-tune for; valid: {', '.join(TARGETS)}")
    return target


def _ratio(chip_weight: torch.Tensor, torch_weight: torch.Tensor) -> float:
    """g: chip-layer weight / torch weight (one factor a layer: the lowering divides by the threshold)."""
    a = float(torch.as_tensor(chip_weight).abs().max())
    b = float(torch_weight.detach().abs().max())
    return a / b if b > 0 else 1.0


@torch.no_grad()
def chip_grid(model: nn.Module, dt: float, target: str) -> ChipGrid:
    """The model's parameters as ``target``'s quantiser makes them, back in torch units."""
    from spikeport.deploy.lowering import lower
    from spikeport.export.to_nir import chip_native_to_nir

    check_target(target)
    graph, _ = chip_native_to_nir(model, dt)
    lowered = lower(graph, dt)
    blocks = model.blocks
    layers: list[LayerGrid] = []
    if target == "speck":
        from spikeport.deploy.speck.chip_form import SpeckLimits
        from spikeport.deploy.speck.from_nir import chip_form
        from spikeport.deploy.speck.quantize import quantise
        from spikeport.hw_profiles import load_profile

        form = chip_form(lowered)
        quant = quantise(form, SpeckLimits.from_profile(load_profile("speck")))
        notes = list(quant.approximations)
        for cl, q in zip(form.layers, quant.layers):
            w_t = blocks[cl.name].weight
            su = q.scale * _ratio(cl.weight, w_t)
            b = blocks[cl.name].bias
            layers.append(LayerGrid(cl.name, cl.neuron, q.weight.double().reshape(w_t.shape).div(su).to(w_t.dtype),
                                    None if b is None else q.bias.double().div(su).to(b.dtype),
                                    (q.threshold - SPECK_MARGIN) / su, su))
    else:
        from spikeport.deploy.loihi.quantize import quantize
        from spikeport.deploy.loihi.target import loihi_layers

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # clipping is reported in the notes
            net = quantize(loihi_layers(lowered))
        notes = list(net.approximations)
        for q in net.layers:
            w_t = blocks[q.layer.synapse].weight
            su = q.scale * _ratio(q.layer.weight, w_t)
            b = blocks[q.layer.synapse].bias
            bias = None
            if b is not None:
                bias = torch.zeros_like(b) if q.bias is None else \
                    torch.as_tensor(q.bias, dtype=torch.float64).reshape(-1).div(su).to(b.dtype)
            layers.append(LayerGrid(q.layer.synapse, q.name,
                                    torch.as_tensor(q.weight, dtype=torch.float64).reshape(w_t.shape).div(su)
                                    .to(w_t.dtype), bias, (q.vth + LOIHI_MARGIN) / su, su))
    return ChipGrid(target, layers, notes)


class OnGrid:
    """While active, the model's weights, biases and thresholds are the chip's (the float
    weights kept aside); on exit the float weights come back, gradients computed on the grid
    stay in ``.grad``: straight-through rounding."""

    def __init__(self, model: nn.Module, grid: ChipGrid) -> None:
        self.model, self.grid = model, grid
        self.saved: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __enter__(self) -> "OnGrid":
        set_grid(self.model, self.grid, self.saved)
        return self

    def __exit__(self, *_: Any) -> None:
        with torch.no_grad():
            for param, value in self.saved:
                param.data.copy_(value)
        self.saved.clear()


@torch.no_grad()
def set_grid(model: nn.Module, grid: ChipGrid, saved: list | None = None) -> None:
    """Write the grid's values into the model (keeping the float weights in ``saved``)."""
    for lg in grid.layers:
        module = model.blocks[lg.synapse]
        for param, value in ((module.weight, lg.weight), (module.bias, lg.bias)):
            if param is None or value is None:
                continue
            if saved is not None:
                saved.append((param, param.data.clone()))
            param.data.copy_(value.to(param.device))
        lif = model.blocks[lg.neuron]
        if isinstance(lif, snn.Leaky):
            lif.threshold.fill_(lg.threshold)


@torch.no_grad()
def _accuracy(model: nn.Module, stream: Stream, device: torch.device, batch: int = 256) -> float:
    model.eval()
    x, y = stream
    correct = 0
    for i in range(0, len(y), batch):
        idx = torch.arange(i, min(i + batch, len(y)))
        out = model(to_device(take(x, idx), device))
        correct += int((out.logits.argmax(1).cpu() == y[idx]).sum())
    return correct / max(len(y), 1)


@dataclass
class FinetuneResult:
    target: str
    epochs: int
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_accuracy: float
    start_val_accuracy: float      # the model rounded to the grid before any fine-tuning
    wall_s: float
    notes: list[str]


def finetune(model: nn.Module, spec: ModelSpec, train: Sequence[Stream], val: Sequence[Stream],
             cfg: TrainConfig, target: str, epochs: int = DEFAULT_FINETUNE_EPOCHS,
             lr: float = DEFAULT_FINETUNE_LR, log: Callable[[str], None] = print) -> FinetuneResult:
    """Fine-tune ``model`` through ``target``'s integers; leaves the best epoch's model on the grid."""
    check_target(target)
    if not spec.chip_native:
        raise ConfigError("finetune_for: only chip-native models run whole on a chip; train with --chip-native")
    if epochs < 1:
        raise ConfigError(f"finetune_epochs: must be an integer >= 1, got {epochs!r}")
    dt = float(spec.dt)
    ctx = DistContext()
    device = ctx.device if cfg.device is None else torch.device(cfg.device)
    model.to(device)
    seed_everything(cfg.seed)
    loss_fn = loss_function(spec)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    steps = len(epoch_schedule(train, 0, cfg, ctx))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs * steps, 1),
                                                       eta_min=min(cfg.min_lr, lr))
    t0 = time.perf_counter()

    def grid_val() -> tuple[float, ChipGrid]:
        grid = chip_grid(model.cpu(), dt, target)
        model.to(device)
        with OnGrid(model, grid):
            acc = sum(_accuracy(model, s, device) * len(s[1]) for s in val) / max(sum(len(s[1]) for s in val), 1)
        return acc, grid

    start_acc, best_grid = grid_val()
    best = {"acc": start_acc, "epoch": 0}
    log(f"fine-tuning for {target}: rounded to its grid, val accuracy {start_acc:.4f}")
    history: list[dict[str, Any]] = []
    for epoch in range(epochs):
        model.train()
        loss_sum = correct = count = 0.0
        for si, idx in epoch_schedule(train, epoch, cfg, ctx):
            x, y = train[si]
            xb, yb = to_device(take(x, idx), device), y[idx].to(device)
            grid = chip_grid(model.cpu(), dt, target)
            model.to(device)
            with OnGrid(model, grid):
                out = model(xb)
                loss = loss_fn(out, yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += float((out.logits.detach().argmax(1) == yb).sum())
            count += len(idx)
        acc, grid = grid_val()
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / count, "train_accuracy": correct / count,
                        "val_accuracy": acc, "wall_s": time.perf_counter() - t0})
        log(f"fine-tune epoch {epoch + 1}/{epochs}: loss {loss_sum / count:.4f} acc {correct / count:.3f} "
            f"| val acc on the {target} grid {acc:.3f}")
        if acc > best["acc"] or (acc == best["acc"] and best["epoch"] == 0 and not math.isnan(acc)):
            best = {"acc": acc, "epoch": epoch + 1}
            best_grid = grid
    model.cpu()
    set_grid(model, best_grid)   # the kept model *is* the chip's model
    return FinetuneResult(target, epochs, history, best["epoch"], best["acc"], start_acc,
                          time.perf_counter() - t0, best_grid.notes)


def prepare_finetune(opts: dict[str, Any], spec: ModelSpec, resume: bool
                     ) -> tuple[nn.Module | None, ModelSpec]:
    """Check the fine-tuning options; with ``init_from`` (a trained run) its model and spec."""
    target = opts.get("finetune_for")
    if target is None:
        raise ConfigError("init_from: starts a fine-tuning from a trained run; give finetune_for too "
                          f"({' | '.join(TARGETS)})")
    check_target(str(target))
    if resume:
        raise ConfigError("finetune_for: a fine-tuning run cannot be resumed; start it again (it is short)")
    if not spec.chip_native:
        raise ConfigError("finetune_for: only chip-native models run whole on a chip; train with --chip-native")
    epochs = opts.get("finetune_epochs")
    if epochs is not None and (not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1):
        raise ConfigError(f"finetune_epochs: must be an integer >= 1, got {epochs!r}")
    if opts.get("init_from") is None:
        return None, spec.replace(finetuned_for=target)
    from spikeport.train.checkpoint import load_run_model
    model, base = load_run_model(opts["init_from"])
    for key, trained, asked in (("model", base.model, spec.model), ("dataset", base.dataset, spec.dataset),
                                ("chip_native", base.chip_native, spec.chip_native)):
        if trained != asked:
            raise ConfigError(f"init_from: {opts['init_from']} trained {key} {trained!r}, this run asks for "
                              f"{asked!r}")
    new = base.replace(finetuned_for=target, finetuned_from=str(opts["init_from"]))
    if spec.root is not None:
        new = new.replace(root=spec.root)
    model.train()
    return model, new


def finetune_stage(model: nn.Module, spec: ModelSpec, train: Sequence[Stream], val: Sequence[Stream],
                   cfg: TrainConfig, opts: dict[str, Any], ctx: DistContext) -> dict[str, Any]:
    """The fine-tuning step of ``spikeport train``: its record for metrics.json."""
    if ctx.distributed:
        raise ConfigError("finetune_for: fine-tuning runs in one process (run it without torchrun)")
    epochs = int(opts.get("finetune_epochs") or DEFAULT_FINETUNE_EPOCHS)
    res = finetune(model, spec, train, val, cfg, str(opts["finetune_for"]), epochs=epochs,
                   log=lambda m: print(m, flush=True))
    return {"target": res.target, "epochs": res.epochs, "lr": DEFAULT_FINETUNE_LR, "best_epoch": res.best_epoch,
            "val_accuracy_rounded": res.start_val_accuracy, "val_accuracy": res.best_val_accuracy,
            "wall_s": res.wall_s, "history": res.history, "notes": res.notes}
