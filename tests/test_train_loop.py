"""The training loop: losses fall, resume is exact, NaN stops cleanly, early stopping, config checks."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from spikeport.errors import ConfigError
from spikeport.train.checkpoint import MODEL_FILE, RESUME_FILE, RESUME_FORMAT, read_checkpoint
from spikeport.train.config import TrainConfig, read_config_file
from spikeport.train.loop import (StopFlag, TrainingDiverged, TrainingInterrupted, fit,
                                  sigint_checkpoint)
from spikeport.train.models import MODEL_NAMES, ModelSpec, build_model, default_spec

T = 4


def toy_data(spec: ModelSpec, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Spike trains whose per-neuron rate depends on the class: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    protos = (torch.rand(spec.num_classes, *spec.input_shape, generator=g) < 0.3).float() * 0.9
    y = torch.arange(n) % spec.num_classes
    x = (torch.rand(n, T, *spec.input_shape, generator=g) < protos[y].unsqueeze(1)).float()
    return x, y


def make(dataset: str, ann: bool = False, **kw) -> tuple[torch.nn.Module, dict]:
    spec = default_spec("baseline", dataset, chip_native=True, ann=ann, **kw)
    spec = spec.replace(timesteps=T)
    torch.manual_seed(0)
    return build_model(spec), spec


def ce(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return F.cross_entropy(model(x).logits.float(), y).item()


@pytest.mark.parametrize("dataset,ann", [("nmnist-embedded", False), ("shd-embedded", False),
                                         ("nmnist-embedded", True), ("shd-embedded", True)])
def test_loss_falls(dataset, ann):
    model, spec = make(dataset, ann=ann)
    x, y = toy_data(spec, 48)
    before = ce(model, x, y)
    result = fit(model, spec, [(x, y)], [], TrainConfig(epochs=3, batch_size=16, lr=1e-2, progress=False))
    after = ce(model, x, y)
    assert after < 0.8 * before, (before, after)
    assert len(result.history) == 3


def _run(tmp: Path, stop_at: tuple[int, int] | None = None, resume: dict | None = None, **extra):
    model, spec = make("shd-embedded")
    x, y = toy_data(spec, 40)
    xv, yv = toy_data(spec, 20, seed=1)
    cfg = TrainConfig(epochs=3, batch_size=8, lr=5e-3, progress=False, seed=3, **extra)

    def on_step(epoch: int, step: int) -> None:
        if stop_at == (epoch, step):
            os.kill(os.getpid(), signal.SIGINT)  # the real signal path: handler sets the flag

    with sigint_checkpoint(StopFlag()) as stop:
        fit(model, spec, [(x, y)], [(xv, yv)], cfg, out_dir=tmp, resume=resume, stop=stop, on_step=on_step)
    return model


# the random regularisers (drawn from the saved generator states) and the EMA resume exactly too
@pytest.mark.parametrize("extra", [{}, {"drop_p": 0.2, "spike_dropout": 0.2, "ema": 0.9, "label_smoothing": 0.1}])
def test_resume_reproduces_uninterrupted_run(tmp_path, extra):
    full = _run(tmp_path / "full", **extra)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        _run(tmp_path / "cut", stop_at=(1, 2), **extra)  # mid-epoch 2
    state = read_checkpoint(tmp_path / "cut" / RESUME_FILE, RESUME_FORMAT)
    assert (state["epoch"], state["step"]) == (1, 3)
    resumed = _run(tmp_path / "cut", resume=state, **extra)
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    m_full = read_checkpoint(tmp_path / "full" / MODEL_FILE)
    m_cut = read_checkpoint(tmp_path / "cut" / MODEL_FILE)
    assert m_full["epoch"] == m_cut["epoch"]
    assert all(torch.equal(m_full["state_dict"][k], m_cut["state_dict"][k]) for k in m_full["state_dict"])


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    model, spec = make("shd-embedded", ann=True)
    x, y = toy_data(spec, 32)

    def poison(epoch: int, step: int) -> None:
        if (epoch, step) == (1, 0):
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    cfg = TrainConfig(epochs=3, batch_size=8, progress=False)
    with pytest.raises(TrainingDiverged, match="nan.*epoch 2.*last good checkpoint"):
        fit(model, spec, [(x, y)], [], cfg, out_dir=tmp_path, on_step=poison)
    kept = read_checkpoint(tmp_path / RESUME_FILE, RESUME_FORMAT)
    assert (kept["epoch"], kept["step"]) == (1, 0)
    assert all(torch.isfinite(v).all() for v in kept["model"].values())


def test_early_stopping_on_flat_validation():
    model, spec = make("shd-embedded", ann=True)
    x, y = toy_data(spec, 16)
    # lr this small cannot move the validation accuracy: no epoch after the first improves it.
    cfg = TrainConfig(epochs=6, batch_size=8, lr=1e-12, min_lr=0.0, patience=2, progress=False)
    result = fit(model, spec, [(x, y)], [(x, y)], cfg)
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1


@pytest.mark.parametrize("key,value", [("epochs", 0), ("lr", 0.0), ("lr", -1e-3), ("batch_size", 0),
                                       ("grad_clip", 0), ("patience", 0), ("device", "tpu"),
                                       ("shift_px", -1), ("drop_p", 1.0), ("label_smoothing", 1.0),
                                       ("spike_dropout", -0.1), ("ema", 1.0), ("warmup_epochs", -1),
                                       ("warmup_epochs", 10)])
def test_config_out_of_range_names_the_key(key, value):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        TrainConfig(**{key: value}).validate()


def test_unknown_model_and_dataset_list_valid_names():
    with pytest.raises(ConfigError) as exc:
        default_spec("resnet", "nmnist-embedded")
    assert all(name in str(exc.value) for name in MODEL_NAMES)
    with pytest.raises(ConfigError, match="nmnist-embedded.*shd-embedded"):
        default_spec("baseline", "mnist")


def test_config_file_unknown_key_and_bad_yaml(tmp_path):
    good = tmp_path / "ok.yaml"
    good.write_text("epochs: 2\nbatch-size: 16\nlr: 0.002\n")
    assert read_config_file(good) == {"epochs": 2, "batch_size": 16, "lr": 0.002}
    bad = tmp_path / "bad.yaml"
    bad.write_text("epocs: 2\n")
    with pytest.raises(ConfigError, match="epocs.*valid keys"):
        read_config_file(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_config_file(broken)


def test_ann_twin_has_the_snn_weight_layer_names_and_sums_frames():
    snn, spec = make("nmnist-embedded")
    ann, _ = make("nmnist-embedded", ann=True)
    weights = lambda m: [k for k in m.state_dict() if k.endswith("weight")]
    assert weights(ann) == weights(snn)
    x = torch.rand(3, T, *spec.input_shape)
    # summing the frames over T by hand gives the same logits
    assert torch.allclose(ann(x).logits, ann(x.sum(1)).logits)


def test_frame_shift_and_drop_match_a_hand_computation():
    from spikeport.data.preprocess import augment_frames
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, 4, (6, 3, 2, 9, 8)).float()
    out = augment_frames(x, shift_px=2, generator=torch.Generator().manual_seed(5))
    offsets = torch.randint(-2, 3, (6, 2), generator=g).tolist()  # the draws augment_frames makes
    for b, (dx, dy) in enumerate(offsets):
        want = torch.zeros_like(x[b])
        for yy in range(9):
            for xx in range(8):  # every count moves by (dx, dy); those pushed off the sensor are lost
                if 0 <= yy + dy < 9 and 0 <= xx + dx < 8:
                    want[..., yy + dy, xx + dx] = x[b, ..., yy, xx]
        assert torch.equal(out[b], want), (b, dx, dy)
    # dropping: each of n events kept with probability 1 - p, so a count n has mean n (1 - p)
    n = torch.full((20000,), 10.0)
    kept = augment_frames(n, drop_p=0.3, generator=torch.Generator().manual_seed(0))
    assert kept.max() <= 10 and abs(kept.mean().item() - 7.0) < 0.05
    assert abs(kept.var().item() - 10 * 0.3 * 0.7) < 0.1
    assert torch.equal(augment_frames(x), x)


def test_label_smoothing_loss_is_the_smoothed_cross_entropy():
    from spikeport.train.losses import model_loss
    from spikeport.train.models.base import ModelOutput
    from spikeport.train.models.spec import SeedASpec
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.5, 0.5, 2.0]])
    y = torch.tensor([0, 1])
    eps, c = 0.2, 3
    logp = torch.log_softmax(logits, 1)
    target = torch.full((2, c), eps / c)
    target[torch.arange(2), y] += 1 - eps
    want = -(target * logp).sum(1).mean()
    spec = SeedASpec(model="baseline", input_shape=[3], num_classes=c)
    got = model_loss(spec, ModelOutput(logits=logits), y, label_smoothing=eps)
    assert torch.allclose(got, want)
    plain = model_loss(spec, ModelOutput(logits=logits), y)
    assert torch.allclose(plain, -logp[torch.arange(2), y].mean())


def test_ema_keeps_the_average_of_the_weights_after_each_step():
    model, spec = make("shd-embedded")
    x, y = toy_data(spec, 24)
    decay = 0.6
    ema = {k: v.clone() for k, v in model.state_dict().items()}

    def track(epoch: int, step: int) -> None:  # by hand: e = decay e + (1 - decay) w after every step
        for k, v in model.state_dict().items():
            ema[k] = decay * ema[k] + (1 - decay) * v.detach() if v.is_floating_point() else v.clone()

    cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-2, progress=False, ema=decay)
    result = fit(model, spec, [(x, y)], [(x, y)], cfg, on_step=track)
    assert result.best_epoch == 1
    for k, v in model.state_dict().items():  # the kept (validated) weights are the average
        assert torch.allclose(v, ema[k], atol=1e-6), k


def test_spike_dropout_acts_in_training_only():
    model, spec = make("nmnist-embedded")
    x, _ = toy_data(spec, 4)
    model.eval()
    ref = model(x).logits
    model.spike_dropout = 0.5
    assert torch.equal(model(x).logits, ref)  # inference: no dropout
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model(x).logits, ref)
    model.spike_dropout = 0.0
    assert torch.equal(model(x).logits, ref)  # training mode itself changes nothing else


def test_warmup_ramps_the_lr_linearly_then_follows_the_cosine():
    import math
    model, spec = make("shd-embedded")
    x, y = toy_data(spec, 16)   # 2 steps an epoch
    lr, min_lr, epochs, warm = 1e-2, 1e-4, 4, 1
    seen: list[float] = []
    opt_lr = {}

    def record(epoch: int, step: int) -> None:   # the lr the next step will use
        seen.append(opt_lr["opt"].param_groups[0]["lr"])

    import spikeport.train.loop as loop
    make_scheduler = loop.make_scheduler

    def spy(optimizer, cfg, steps):  # keep the optimizer to read its lr after every step
        opt_lr["opt"] = optimizer
        return make_scheduler(optimizer, cfg, steps)

    loop.make_scheduler = spy
    try:
        cfg = TrainConfig(epochs=epochs, batch_size=8, lr=lr, min_lr=min_lr, warmup_epochs=warm, progress=False)
        fit(model, spec, [(x, y)], [], cfg, on_step=record)
    finally:
        loop.make_scheduler = make_scheduler
    # by hand: steps 1..2 ramp from lr/100 to lr; the remaining 6 steps are a cosine to min_lr
    ramp = [lr * (0.01 + 0.99 * k / 2) for k in (1, 2)]
    cosine = [min_lr + (lr - min_lr) * (1 + math.cos(math.pi * k / 6)) / 2 for k in range(1, 7)]
    assert seen == pytest.approx(ramp + cosine, rel=1e-6)
