"""Per-layer divergence: with the chip's own engines (Loihi's fixed-point twin, Speck's sinabs
simulation) on a model left on the chip's grid, no layer diverges; perturbing one layer's
integer weights makes exactly that layer the first divergent one (the layers before it stay
identical, spike for spike)."""
from __future__ import annotations

import warnings

import pytest
import torch

from spikeport.deploy.divergence import compare_layers, summary
from spikeport.deploy.lowering import lower
from spikeport.export.to_nir import chip_native_to_nir
from spikeport.train.models.chip_native import ChipNativeSNN
from spikeport.train.qat import chip_grid, set_grid

DT = 1e-3
T = 12


def _model_and_inputs(target: str):
    torch.manual_seed(0)
    model = ChipNativeSNN([2, 12, 12], [
        {"type": "conv", "out_channels": 6, "kernel_size": 3, "stride": 2, "padding": 1},
        {"type": "flatten"},
        {"type": "dense", "out_features": 24},
        {"type": "dense", "out_features": 5}], init_gain=3.0)
    set_grid(model, chip_grid(model, DT, target))   # on the grid: the unperturbed chip is exact
    x = (torch.rand(16, T, 2, 12, 12) < 0.15).float()
    return model, x


def _loihi_spikes(graph, x, perturb: str | None):
    from spikeport.deploy.loihi.fast_engine import run_fast
    from spikeport.deploy.loihi.quantize import quantize
    from spikeport.deploy.loihi.target import loihi_layers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = quantize(loihi_layers(graph))
    for q in net.layers:
        if q.name == perturb:
            q.weight = -q.weight
    return run_fast(net, x, record=True).spikes


def _speck_spikes(graph, x, perturb: str | None):
    from spikeport.deploy.speck.chip_form import SpeckLimits
    from spikeport.deploy.speck.from_nir import chip_form
    from spikeport.deploy.speck.quantize import quantise
    from spikeport.deploy.speck.simulate import build_chip_net, simulate
    from spikeport.hw_profiles import load_profile
    form = chip_form(graph)
    quant = quantise(form, SpeckLimits.from_profile(load_profile("speck")))
    for cl, q in zip(form.layers, quant.layers):
        if cl.neuron == perturb:
            q.weight = -q.weight
    res = simulate(build_chip_net(form, T, quant, max_input=1.0), x, record=True)
    return {cl.neuron: res.layers[cl.name] for cl in form.layers}


@pytest.mark.parametrize("target,engine", [("loihi2", _loihi_spikes), ("speck", _speck_spikes)])
def test_perturbed_layer_is_named_first(target, engine):
    model, x = _model_and_inputs(target)
    graph_nir, _ = chip_native_to_nir(model, DT)
    graph = lower(graph_nir, DT)
    names = [layer.name for layer in graph.layers]

    clean = summary(compare_layers(graph, x, engine(graph, x, None)), x.shape[0])
    assert clean["first_divergent"] is None, clean
    assert all(r["identical_fraction"] == 1.0 for r in clean["layers"])

    for k in (1, 2):
        rows = compare_layers(graph, x, engine(graph, x, names[k]))
        div = summary(rows, x.shape[0])
        assert div["first_divergent"] == names[k], div
        assert all(r.identical_fraction == 1.0 for r in rows[:k])   # upstream untouched
        assert rows[k].local_correlation is not None and rows[k].local_correlation < 0.99
