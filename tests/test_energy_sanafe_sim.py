"""The deployed Loihi network in SANA-FE's simulator: its spikes per layer against the fast engine,
the padded-convolution expansion against torch, and the report without sanafe installed."""
from __future__ import annotations

import builtins
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spikeport.deploy.loihi.fast_engine import run_fast
from spikeport.deploy.loihi.quantize import QuantLayer, QuantNet
from spikeport.deploy.lowering import Layer
from spikeport.deploy.sanafe_sim import INSTALL_HINT, conv_pairs, run_sanafe


def _conv(rng, cin, cout, hw, pad, stride, vth, v_decay=0, bias=None, groups=1) -> QuantLayer:
    out = (hw + 2 * pad - 3) // stride + 1
    w = 2 * rng.integers(-40, 80, size=(cout, cin // groups, 3, 3))
    w[rng.random(w.shape) < 0.2] = 0  # zero weights are no synapses
    lay = Layer("c", "conv", "conv", (cin, hw, hw), (cout, out, out), w.astype(float), None, 1.0, 0.0, 1.0,
                stride=(stride, stride), padding=(pad, pad), groups=groups)
    return QuantLayer(lay, w.astype(np.int64), None, bias, vth, 4096, v_decay, 1.0)


def _dense(rng, in_shape, n_out, vth, v_decay=0) -> QuantLayer:
    """A dense layer after a conv: it sees the conv's (C, H, W) events, flattened (as lowering writes it)."""
    w = 2 * rng.integers(-30, 60, size=(n_out, int(np.prod(in_shape))))
    lay = Layer("d", "fc", "dense", tuple(in_shape), (n_out,), w.astype(float), None, 1.0, 0.0, 1.0,
                flatten_before=True)
    return QuantLayer(lay, w.astype(np.int64), None, None, vth, 4096, v_decay, 1.0)


def test_padded_conv_expansion_equals_torch_conv():
    rng = np.random.default_rng(1)
    for pad, stride, groups in ((1, 2, 1), (0, 1, 1), (2, 1, 2)):
        q = _conv(rng, 2, 4, 7, pad, stride, 100, groups=groups)
        src, dst, w = conv_pairs(q)
        dense = np.zeros((q.layer.neurons, 2 * 7 * 7))
        np.add.at(dense, (dst, src), w)
        x = torch.rand(1, 2, 7, 7, dtype=torch.float64)
        want = F.conv2d(x, torch.as_tensor(q.weight, dtype=torch.float64), stride=stride, padding=pad, groups=groups)
        assert np.allclose(dense @ x.reshape(-1).numpy(), want.reshape(-1).numpy())
        assert (w != 0).all()


@pytest.mark.skipif(importlib.util.find_spec("sanafe") is None,
                    reason="sanafe is not installed (pip install sanafe==2.2.9; requirements.txt pins it)")
def test_sanafe_spikes_per_layer_equal_the_fast_engine_on_a_bias_free_net():
    """Padded strided conv with leak, then a leaky dense layer, no bias: every neuron's spike total in
    SANA-FE (T + depth steps, reset between samples) equals the fast engine's."""
    rng = np.random.default_rng(0)
    conv = _conv(rng, 2, 4, 8, 1, 2, 200, v_decay=300)
    dense = _dense(rng, (4, 4, 4), 10, 300, v_decay=100)
    net = QuantNet((2, 8, 8), [conv, dense], 0)
    x = (torch.rand(3, 12, 2, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    fast = run_fast(net, x).neuron_spikes
    sim = run_sanafe(net, x, fast_spikes=fast)
    assert sim.steps_run == 12 + 2
    for layer in sim.layers:
        assert layer.neurons_equal == 1.0, layer
        assert layer.fast_spikes == layer.sanafe_spikes > 5
    assert sim.spikes_equal
    # SANA-FE charged every unit: synapses, neurons and messages all cost something
    assert sim.energy["synapse"] > 0 and sim.energy["soma"] > 0 and sim.energy["network"] > 0
    assert sim.step_time_s > 0 and sim.cores_used == 3  # one input core, one a layer


@pytest.mark.skipif(importlib.util.find_spec("sanafe") is None,
                    reason="sanafe is not installed (pip install sanafe==2.2.9; requirements.txt pins it)")
def test_biased_layers_switched_per_layer_window_equal_the_fast_engine():
    """With biases (per channel on the conv, per neuron on the dense layer), each layer's bias is on for
    its own T steps only: the spike totals stay the fast engine's, neuron by neuron."""
    rng = np.random.default_rng(3)
    conv = _conv(rng, 2, 3, 6, 1, 1, 300, v_decay=200, bias=np.array([20, -10, 35]))
    dense = _dense(rng, (3, 6, 6), 4, 400)
    dense.bias = np.array([30, 0, -20, 50])
    net = QuantNet((2, 6, 6), [conv, dense], 0)
    x = (torch.rand(2, 10, 2, 6, 6, generator=torch.Generator().manual_seed(1)) < 0.2).float()
    fast = run_fast(net, x).neuron_spikes
    sim = run_sanafe(net, x, fast_spikes=fast)
    assert all(la.neurons_equal == 1.0 and la.sanafe_spikes > 0 for la in sim.layers), sim.layers


def _make_run(tmp_path: Path) -> Path:
    spec = importlib.util.spec_from_file_location("energy_report_helpers",
                                                  Path(__file__).with_name("test_energy_report.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_run(tmp_path)


def test_report_without_sanafe_says_how_to_get_it_and_still_works(tmp_path, monkeypatch, capsys):
    from spikeport.deploy.report import report_run
    real_import = builtins.__import__

    def no_sanafe(name, *args, **kwargs):
        if name == "sanafe" or name.startswith("sanafe."):
            raise ImportError("No module named 'sanafe'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sanafe)
    run = _make_run(tmp_path)
    energy = report_run(run, ["loihi2", "speck"], "gpu-horowitz45", crosscheck="sanafe")
    sim = energy.chips["loihi2"].model_extra["sanafe_sim"]
    assert sim == {"skipped": INSTALL_HINT}
    assert "pip install sanafe==2.2.9" in sim["skipped"]
    md = (run / "report" / "energy.md").read_text()
    assert "SANA-FE simulation not run" in md and "pip install sanafe==2.2.9" in md
    assert "## Summary" in md  # the rest of the report is there
    assert "sanafe_sim" not in (energy.chips["speck"].model_extra or {})
    assert "pip install sanafe" in capsys.readouterr().out


def test_unknown_crosscheck_is_refused(tmp_path):
    from spikeport.deploy.report import report_run
    from spikeport.errors import ConfigError
    with pytest.raises(ConfigError, match="crosscheck 'nemo'"):
        report_run(_make_run(tmp_path), ["loihi2"], "gpu-horowitz45", crosscheck="nemo")
