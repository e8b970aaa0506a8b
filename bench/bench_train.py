"""Training throughput: spikeport's loop against a plain snntorch loop of the same network.

For the visual and the audio chip-native baselines, one epoch over the same samples with the
same recipe (AdamW, batch 32, cross-entropy on output spike counts, gradient clipping) is
timed ``--repeats`` times, alternating the two, and the fastest epoch of each reported:

- spikeport: ``spikeport.train.loop.fit`` with ``ChipNativeSNN`` (weight layers on all T steps
  at once, each LIF layer one fused scan: ``spikeport.train.fused_neurons``);
- plain: the snntorch tutorial loop: an ``nn.Sequential`` with ``snn.Leaky(init_hidden=True)``
  stepped over time, a ``DataLoader``, the same initial weights.

Before timing, both networks' output spike counts and gradients on one batch are compared.
The last line, ``training step: <ratio>x vs snntorch (equal: yes|no)``, gives the smaller of
the two baselines' ratios.

Run: ``.venv/bin/python bench/bench_train.py [--samples N] [--threads N]``.
"""
from __future__ import annotations

import argparse
import time

import snntorch as snn
import torch
import torch.nn.functional as F
from snntorch import surrogate, utils
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from spikeport.train.config import TrainConfig
from spikeport.train.loop import fit
from spikeport.train.models import ModelSpec, build_model, default_spec

# Input spike densities of the embedded data (fraction of nonzero bins): N-MNIST-like ~6%,
# SHD-like ~1%.
DENSITY = {"nmnist-embedded": 0.06, "shd-embedded": 0.01}


def toy_data(spec: ModelSpec, n: int, density: float) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % spec.num_classes
    protos = torch.rand(spec.num_classes, *spec.input_shape, generator=g) * 2 * density
    x = (torch.rand(n, spec.timesteps, *spec.input_shape, generator=g) < protos[y].unsqueeze(1)).float()
    return x, y


def plain_network(model: nn.Module) -> nn.Sequential:
    """The same layers as a plain snntorch Sequential (hidden state inside each Leaky)."""
    layers = []
    for name, m in model.blocks.items():
        if isinstance(m, snn.Leaky):
            layers.append(snn.Leaky(beta=m.beta.clone(), threshold=m.threshold.clone(), reset_mechanism="zero",
                                    spike_grad=surrogate.atan(), init_hidden=True))
        else:
            layers.append(type(m)(**_ctor_args(m)) if not isinstance(m, nn.Flatten) else nn.Flatten())
            if hasattr(m, "weight"):
                layers[-1].load_state_dict(m.state_dict())
    return nn.Sequential(*layers)


def _ctor_args(m: nn.Module) -> dict:
    if isinstance(m, nn.Conv2d):
        return dict(in_channels=m.in_channels, out_channels=m.out_channels, kernel_size=m.kernel_size,
                    stride=m.stride, padding=m.padding)
    return dict(in_features=m.in_features, out_features=m.out_features)


def plain_epoch(net: nn.Sequential, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True)
    t0 = time.perf_counter()
    for xb, yb in loader:
        utils.reset(net)
        counts = 0
        for t in range(xb.shape[1]):
            counts = counts + net(xb[:, t])
        loss = F.cross_entropy(counts, yb)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
    return time.perf_counter() - t0


def spikeport_epoch(model: nn.Module, spec: ModelSpec, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    cfg = TrainConfig(epochs=1, batch_size=batch, progress=False)
    t0 = time.perf_counter()
    fit(model, spec, [(x, y)], [], cfg)
    return time.perf_counter() - t0


def check_equal(model: nn.Module, net: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> tuple[bool, str]:
    """Same output spike counts (fused path, snntorch path of the model, plain loop) and the same
    gradients of the same loss. Weight gradients are sums over T * B terms taken in another
    order (one batched matmul against T per-step ones), so they agree to float32 rounding:
    compared relative to each gradient's largest entry."""
    def grads(module: nn.Module) -> list[torch.Tensor]:
        return [p.grad.clone() for p in module.parameters()]

    model.zero_grad(set_to_none=True)
    stepped = model(x, fused=False)  # the same model, its LIF cells stepped by snntorch
    F.cross_entropy(stepped.logits, y).backward()
    g_stepped = grads(model)
    model.zero_grad(set_to_none=True)
    out = model(x)
    F.cross_entropy(out.logits, y).backward()
    g_fused = grads(model)
    net.zero_grad(set_to_none=True)
    utils.reset(net)
    counts = sum(net(x[:, t]) for t in range(x.shape[1]))
    F.cross_entropy(counts, y).backward()
    g_plain = grads(net)
    same_out = torch.equal(out.logits, counts) and torch.equal(out.logits, stepped.logits)
    same_path = all(torch.equal(a, b) for a, b in zip(g_fused, g_stepped))
    rel = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) for a, b in zip(g_fused, g_plain))
    active = sum(float(g.abs().sum() > 0) for g in g_plain)
    ok = same_out and same_path and rel <= 1e-5 and active == len(g_plain)
    return ok, (f"outputs equal: {'yes' if same_out else 'NO'}; gradients identical to the stepped "
                f"snntorch cells: {'yes' if same_path else 'NO'}, to the plain loop within "
                f"{rel:.1e} of each gradient's scale ({int(active)}/{len(g_plain)} tensors nonzero)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.samples} samples, "
          f"batch {args.batch}, best of {args.repeats} alternating epochs")
    ratios, all_equal = [], True
    for dataset in ("nmnist-embedded", "shd-embedded"):
        spec = default_spec("baseline", dataset, chip_native=True)
        x, y = toy_data(spec, args.samples, DENSITY[dataset])
        torch.manual_seed(0)
        model = build_model(spec)
        ok, msg = check_equal(model, plain_network(model), x[:args.batch], y[:args.batch])
        all_equal &= ok
        print(f"{dataset:16s} equality vs plain snntorch: {msg}")
        ours, plain = [], []
        for rep in range(args.repeats + 1):  # the first pair warms up (allocator, oneDNN kernels)
            torch.manual_seed(0)
            model = build_model(spec)
            net = plain_network(model)
            t_ours = spikeport_epoch(model, spec, x, y, args.batch)
            t_plain = plain_epoch(net, x, y, args.batch)
            if rep:
                ours.append(t_ours)
                plain.append(t_plain)
        s_ours, s_plain = args.samples / min(ours), args.samples / min(plain)
        ratios.append(s_ours / s_plain)
        pair = sorted(p / o for o, p in zip(ours, plain))
        print(f"{dataset:16s} T={spec.timesteps:3d}  spikeport {s_ours:8.1f} samples/s   "
              f"plain snntorch {s_plain:8.1f} samples/s   ratio {s_ours / s_plain:.2f}x "
              f"(per pair {pair[0]:.2f}-{pair[-1]:.2f}x)")
    print(f"training step: {min(ratios):.2f}x vs snntorch (equal: {'yes' if all_equal else 'no'})")


if __name__ == "__main__":
    main()
