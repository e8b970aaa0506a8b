"""BatchNorm in chip-native SNNs: trained with it, folded into the weights and biases for the
chips. The folded model must compute what the BatchNorm model computes in eval mode, and its
weights must be the textbook fold w * g / sqrt(var + eps), b' = (b - mean) * g / sqrt(var + eps) + beta
(computed here by hand, not by the folding code)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spikeport.train.models.chip_native import ChipNativeSNN, fold_batch_norm, has_batch_norm
from spikeport.train.models.spec import ChipNativeSpec

LAYERS = [
    {"type": "conv", "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1, "batch_norm": True},
    {"type": "flatten"},
    {"type": "dense", "out_features": 8, "batch_norm": True},
    {"type": "dense", "out_features": 3},
]


def _spec() -> ChipNativeSpec:
    return ChipNativeSpec(model="baseline", dataset="nmnist", chip_native=True, input_shape=[2, 8, 8],
                          num_classes=3, timesteps=6, dt=0.02, modality="visual", layers=LAYERS,
                          init_gain=4.0)


def _model(spec: ChipNativeSpec) -> ChipNativeSNN:
    torch.manual_seed(0)
    model = ChipNativeSNN(spec.input_shape, spec.layers, init_gain=spec.init_gain)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():   # statistics and affine parameters far from the identity
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.2)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.3 + 0.5)
    return model.eval()


def _hand_fold(layer: nn.Module, bn: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    w = layer.weight.detach().double().numpy()
    b = layer.bias.detach().double().numpy()
    mean, var = bn.running_mean.double().numpy(), bn.running_var.double().numpy()
    g, beta = bn.weight.detach().double().numpy(), bn.bias.detach().double().numpy()
    scale = g / np.sqrt(var + bn.eps)
    return w * scale.reshape(-1, *([1] * (w.ndim - 1))), (b - mean) * scale + beta


def test_model_has_batch_norm_modules_and_the_fold_removes_them():
    spec = _spec()
    model = _model(spec)
    assert list(model.blocks) == ["conv1", "bn1", "lif1", "flatten", "fc1", "bn2", "lif2", "fc2", "lif3"]
    plain, plain_spec = fold_batch_norm(model, spec)
    assert list(plain.blocks) == ["conv1", "lif1", "flatten", "fc1", "lif2", "fc2", "lif3"]
    assert has_batch_norm(spec) and not has_batch_norm(plain_spec)
    assert all("batch_norm" not in layer for layer in plain_spec.layers)
    for name, bn in (("conv1", "bn1"), ("fc1", "bn2")):
        w, b = _hand_fold(model.blocks[name], model.blocks[bn])
        np.testing.assert_allclose(plain.blocks[name].weight.detach().double().numpy(), w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(plain.blocks[name].bias.detach().double().numpy(), b, rtol=1e-5, atol=1e-6)
    # a model without BatchNorm comes back unchanged
    same, same_spec = fold_batch_norm(plain, plain_spec)
    assert same is plain and same_spec is plain_spec


def test_folded_model_computes_the_eval_mode_batch_norm_model():
    spec = _spec()
    model = _model(spec)
    x = (torch.rand(16, 6, 2, 8, 8, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    with torch.no_grad():
        ref = model(x, record=True)
        plain, _ = fold_batch_norm(model, spec)
        got = plain.eval()(x, record=True)
    assert ref.logits.sum() > 0   # the network is active: the comparison means something
    torch.testing.assert_close(got.logits, ref.logits)
    for name in ("lif1", "lif2", "lif3"):
        assert torch.equal(got.spikes[name], ref.spikes[name]), name


def test_nir_graph_of_a_batch_norm_model_holds_the_folded_layers():
    from spikeport.export.to_nir import chip_native_to_nir

    spec = _spec()
    model = _model(spec)
    graph, _ = chip_native_to_nir(model, spec.dt)
    assert not any(name.startswith("bn") for name in graph.nodes)
    w, b = _hand_fold(model.blocks["conv1"], model.blocks["bn1"])
    np.testing.assert_allclose(np.asarray(graph.nodes["conv1"].weight, dtype=np.float64), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(graph.nodes["conv1"].bias, dtype=np.float64), b, rtol=1e-5, atol=1e-6)
    w, b = _hand_fold(model.blocks["fc1"], model.blocks["bn2"])
    np.testing.assert_allclose(np.asarray(graph.nodes["fc1"].weight, dtype=np.float64), w, rtol=1e-5, atol=1e-6)


def test_batch_norm_flag_must_be_a_bool():
    layers = [dict(LAYERS[0], batch_norm="yes"), *LAYERS[1:]]
    with pytest.raises(ValueError, match="batch_norm"):
        ChipNativeSNN([2, 8, 8], layers)
