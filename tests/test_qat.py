"""Quantisation-aware fine-tuning: on a small network whose plain rounding to Loihi's and
Speck's integers loses agreement with the float model, fine-tuning through the chip's
arithmetic raises it. The chips are the deploy path's own engines (Loihi's fixed-point twin,
Speck's sinabs simulation), not the fine-tuning code."""
from __future__ import annotations

import functools

import pytest
import torch

from spikeport.train.config import TrainConfig
from spikeport.train.models.chip_native import ChipNativeSNN
from spikeport.train.models.spec import ChipNativeSpec
from spikeport.train.qat import chip_grid, finetune

DT = 1e-3
T = 10
TRAIN_STEPS = 8


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Four classes, each a different group of 8 of 32 inputs firing more often."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    rate = torch.full((n, 32), 0.1)
    for k in range(4):
        rate[y == k, 8 * k:8 * k + 8] = 0.35
    x = (torch.rand(n, T, 32, generator=g) < rate[:, None, :]).float()
    return x, y


@functools.lru_cache(maxsize=1)
def _trained_state() -> dict:
    return _train_model().state_dict()


def _model() -> ChipNativeSNN:
    model = _clone_from(_trained_state())
    return model


def _train_model() -> ChipNativeSNN:
    torch.manual_seed(0)
    model = ChipNativeSNN([32], [{"type": "dense", "out_features": 24}, {"type": "dense", "out_features": 4}],
                          init_gain=3.0)
    x, y = _data(256, 1)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(TRAIN_STEPS):
        loss = torch.nn.functional.cross_entropy(model(x).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        # one large weight per layer sets the chip's scale: the others keep few integer levels
        for name in ("fc1", "fc2"):
            w = model.blocks[name].weight
            w[0, 0] = 100 * float(w.abs().max())
    return model


def _clone_from(state: dict) -> ChipNativeSNN:
    new = ChipNativeSNN([32], [{"type": "dense", "out_features": 24}, {"type": "dense", "out_features": 4}])
    new.load_state_dict({k: v.detach().clone() for k, v in state.items()})
    return new


def _clone(model: ChipNativeSNN) -> ChipNativeSNN:
    return _clone_from(model.state_dict())


def _float_preds(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x).logits.argmax(1)


def _loihi_preds(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    from spikeport.deploy.loihi.fast_engine import run_fast
    from spikeport.deploy.loihi.quantize import quantize
    from spikeport.deploy.loihi.target import loihi_layers
    from spikeport.deploy.lowering import lower
    from spikeport.export.to_nir import chip_native_to_nir

    graph, _ = chip_native_to_nir(model, DT)
    with _no_warn():
        net = quantize(loihi_layers(lower(graph, DT)))
    out = run_fast(net, x).output.float()
    return out.sum(0).argmax(1)


def _speck_preds(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    from spikeport.deploy.speck.chip_form import SpeckLimits
    from spikeport.deploy.speck.from_nir import nir_to_chip_form
    from spikeport.deploy.speck.quantize import quantise
    from spikeport.deploy.speck.simulate import build_chip_net, simulate
    from spikeport.export.to_nir import chip_native_to_nir
    from spikeport.hw_profiles import load_profile

    graph, _ = chip_native_to_nir(model, DT)
    form = nir_to_chip_form(graph, DT)
    quant = quantise(form, SpeckLimits.from_profile(load_profile("speck")))
    res = simulate(build_chip_net(form, T, quant, max_input=1.0), x)
    spikes = next(iter(res.taps.values()))
    return spikes.sum(0).reshape(x.shape[0], -1).argmax(1)


class _no_warn:
    def __enter__(self):
        import warnings
        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *a):
        self._cm.__exit__(*a)


@pytest.mark.parametrize("target,chip", [("loihi2", _loihi_preds), ("speck", _speck_preds)])
def test_finetune_raises_agreement(target, chip):
    base = _model()
    x_test, _ = _data(200, 2)
    before = float((chip(base, x_test) == _float_preds(base, x_test)).float().mean())
    assert before < 0.95, f"plain rounding should lose agreement in this case (got {before:.3f})"

    tuned = _clone(base)
    spec = ChipNativeSpec(model="baseline", chip_native=True, dt=DT, input_shape=[32], num_classes=4,
                          layers=[{"type": "dense", "out_features": 24}, {"type": "dense", "out_features": 4}],
                          init_gain=3.0)
    res = finetune(tuned, spec, [_data(128, 3)], [_data(64, 4)], TrainConfig(batch_size=64, seed=0), target,
                   epochs=1, log=lambda m: None)
    after = float((chip(tuned, x_test) == _float_preds(tuned, x_test)).float().mean())
    assert after > before and after >= 0.99, (before, after, res.history)


def test_grid_is_what_the_chip_quantiser_gives_back():
    """A model left on the grid quantises to itself (the integers do not move again)."""
    from spikeport.train.qat import set_grid
    model = _model()
    for target in ("loihi2", "speck"):
        m = _clone(model)
        grid = chip_grid(m, DT, target)
        set_grid(m, grid)
        again = chip_grid(m, DT, target)
        for a, b in zip(grid.layers, again.layers):
            assert torch.equal(a.weight, b.weight) and a.threshold == pytest.approx(b.threshold, rel=1e-12)
