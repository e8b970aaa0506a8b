"""The fused multi-step LIF against snntorch's own Leaky cells stepped through time (snntorch's
autograd gives the reference gradients), alone and inside ChipNativeSNN."""
from __future__ import annotations

import pytest
import snntorch as snn
import torch
import torch.nn.functional as F
from snntorch import surrogate

from spikeport.train.fused_neurons import fusable_params, leaky_cell_scan, leaky_zero_scan
from spikeport.train.models.chip_native import ChipNativeSNN


def _snntorch_steps(cell: snn.Leaky, current: torch.Tensor) -> torch.Tensor:
    mem = torch.zeros_like(current[0])
    out = []
    for t in range(current.shape[0]):
        spk, mem = cell(current[t], mem)
        out.append(spk)
    return torch.stack(out)


def _cell(shape: list[int], beta: torch.Tensor | float, threshold: float = 1.0, alpha: float = 2.0) -> snn.Leaky:
    beta_t = beta if torch.is_tensor(beta) else torch.full(shape, float(beta))
    return snn.Leaky(beta=beta_t, threshold=torch.full(shape, threshold), reset_mechanism="zero",
                     spike_grad=surrogate.atan(alpha))


@pytest.mark.parametrize("beta", [1.0, 0.85, "per-neuron"])
@pytest.mark.parametrize("threshold,alpha", [(1.0, 2.0), (0.6, 5.0)])
def test_scan_equals_snntorch_cell(beta, threshold: float, alpha: float) -> None:
    g = torch.Generator().manual_seed(1)
    steps, batch, n = 40, 5, 24
    if beta == "per-neuron":
        beta = torch.rand(n, generator=g) * 0.6 + 0.4  # 0.4 .. 1.0
    cell = _cell([n], beta, threshold, alpha)
    current = (torch.randn(steps, batch, n, generator=g) * 0.7 + 0.25).requires_grad_()
    upstream = torch.randn(steps, batch, n, generator=g)

    ref = _snntorch_steps(cell, current)
    (ref * upstream).sum().backward()
    ref_grad, current.grad = current.grad.clone(), None

    out = leaky_cell_scan(cell, current)
    (out * upstream).sum().backward()

    assert 0.05 < float(ref.detach().mean()) < 0.6  # the neurons spike and also integrate without spiking
    assert torch.equal(out, ref)
    torch.testing.assert_close(current.grad, ref_grad, rtol=1e-6, atol=1e-6)
    # the functional form with plain numbers is the same scan
    again = leaky_zero_scan(current.detach(), beta if torch.is_tensor(beta) else float(beta), threshold, alpha)
    assert torch.equal(again, ref)


def test_scan_one_step_and_reset_order() -> None:
    """Hand count with the delayed reset: a neuron above threshold at t keeps its potential for
    the spike at t and starts from 0 at t + 1."""
    current = torch.tensor([[[0.6]], [[0.6]], [[0.6]], [[0.3]], [[0.3]]])
    spikes = leaky_zero_scan(current, 1.0, 1.0)
    # v: 0.6, 1.2 (spike), 0 + 0.6, 0.9, 1.2 (spike)
    assert spikes.flatten().tolist() == [0.0, 1.0, 0.0, 0.0, 1.0]
    assert leaky_zero_scan(current[:1], 1.0, 0.5).flatten().tolist() == [1.0]


def test_unsupported_cells_are_left_to_snntorch() -> None:
    shape = [3]
    subtract = snn.Leaky(beta=torch.ones(shape), threshold=torch.ones(shape), reset_mechanism="subtract",
                         spike_grad=surrogate.atan())
    sigmoid = snn.Leaky(beta=torch.ones(shape), threshold=torch.ones(shape), reset_mechanism="zero",
                        spike_grad=surrogate.fast_sigmoid())
    learned = snn.Leaky(beta=torch.ones(shape), threshold=torch.ones(shape), reset_mechanism="zero",
                        spike_grad=surrogate.atan(), learn_beta=True)
    for cell in (subtract, sigmoid, learned):
        assert fusable_params(cell) is None
        assert leaky_cell_scan(cell, torch.zeros(4, 2, 3)) is None
    assert fusable_params(_cell(shape, 1.0, alpha=3.0)).alpha == 3.0


def test_scan_rejects_a_tensor_without_time_and_batch() -> None:
    with pytest.raises(ValueError, match=r"\[T, B, \.\.\.\]"):
        leaky_zero_scan(torch.zeros(5), 1.0, 1.0)


LAYERS = [
    {"type": "conv", "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1},
    {"type": "flatten"},
    {"type": "dense", "out_features": 12},
    {"type": "dense", "out_features": 3},
]


def _net_and_batch(beta: float, recurrent: bool = False) -> tuple[ChipNativeSNN, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    layers = [dict(spec) for spec in LAYERS]
    layers[2]["recurrent"] = recurrent
    net = ChipNativeSNN([2, 8, 8], layers, beta=beta, init_gain=3.0)
    x = (torch.rand(6, 12, 2, 8, 8) < 0.3).float()
    return net, x, torch.arange(6) % 3


def _grads(net: ChipNativeSNN, x: torch.Tensor, y: torch.Tensor, fused: bool):
    net.zero_grad(set_to_none=True)
    out = net(x, record=True, fused=fused)
    (F.cross_entropy(out.logits, y) + 0.1 * out.features.sum()).backward()
    return out, {k: p.grad.clone() for k, p in net.named_parameters()}


@pytest.mark.parametrize("beta", [1.0, 0.9])
def test_model_forward_unchanged_by_fused_path(beta: float) -> None:
    net, x, y = _net_and_batch(beta)
    fused, g_fused = _grads(net, x, y, fused=True)
    stepped, g_stepped = _grads(net, x, y, fused=False)
    assert float(fused.logits.detach().sum()) > 0 and float(fused.features.detach().sum()) > 0
    assert torch.equal(fused.logits, stepped.logits)
    assert torch.equal(fused.features, stepped.features)
    assert fused.spikes.keys() == stepped.spikes.keys() == set(net.lif_names)
    for name in net.lif_names:
        assert torch.equal(fused.spikes[name], stepped.spikes[name]), name
    assert g_fused.keys() == g_stepped.keys()
    for name, grad in g_stepped.items():
        assert float(grad.abs().sum()) > 0, name
        torch.testing.assert_close(g_fused[name], grad, rtol=1e-6, atol=1e-6, msg=name)
    # the attribute switch picks the snntorch path for fit() and everything else
    net.fused_neurons = False
    assert torch.equal(net(x).logits, stepped.logits)


def test_model_equals_a_plain_snntorch_step_loop() -> None:
    """The whole net against snntorch's tutorial order: every layer stepped once per time step."""
    net, x, y = _net_and_batch(0.95)
    out = net(x)
    F.cross_entropy(out.logits, y).backward()
    plain = {k: torch.nn.Parameter(p.detach().clone()) for k, p in net.named_parameters()}
    cells = {k: _cell(list(m.beta.shape), 0.95) for k, m in net.blocks.items() if isinstance(m, snn.Leaky)}
    mems = {k: None for k in cells}
    counts = 0
    for t in range(x.shape[1]):
        h = F.conv2d(x[:, t], plain["blocks.conv1.weight"], plain["blocks.conv1.bias"], stride=2, padding=1)
        s, mems["lif1"] = cells["lif1"](h, mems["lif1"] if mems["lif1"] is not None else torch.zeros_like(h))
        h = F.linear(s.flatten(1), plain["blocks.fc1.weight"], plain["blocks.fc1.bias"])
        s, mems["lif2"] = cells["lif2"](h, mems["lif2"] if mems["lif2"] is not None else torch.zeros_like(h))
        h = F.linear(s, plain["blocks.fc2.weight"], plain["blocks.fc2.bias"])
        s, mems["lif3"] = cells["lif3"](h, mems["lif3"] if mems["lif3"] is not None else torch.zeros_like(h))
        counts = counts + s
    F.cross_entropy(counts, y).backward()
    assert torch.equal(out.logits, counts)
    for name, p in net.named_parameters():
        torch.testing.assert_close(p.grad, plain[name].grad, rtol=1e-5, atol=1e-6, msg=name)


def test_recurrent_layer_keeps_its_step_path() -> None:
    net, x, y = _net_and_batch(1.0, recurrent=True)
    assert net.rec_of == {"lif2": "rec2"}
    fused, g_fused = _grads(net, x, y, fused=True)
    stepped, g_stepped = _grads(net, x, y, fused=False)
    assert torch.equal(fused.logits, stepped.logits)
    assert float(g_stepped["recurrent.rec2.weight"].abs().sum()) > 0
    for name, grad in g_stepped.items():
        torch.testing.assert_close(g_fused[name], grad, rtol=1e-6, atol=1e-6, msg=name)
