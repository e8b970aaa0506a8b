"""Speck target benchmark: accuracy drop from the float model to Speck's quantised chip form on
the embedded N-MNIST test split (target: under 2 points for a chip-native model), and the Speck
engine against sinabs on the same quantised network and samples: spike trains of every layer, the
readout and the counts checked equal first, then simulated samples per second of both, in the same
run, with one thread and with torch's default threads (each timed ``--repeats`` times, alternating,
best of each: the machine may be shared; the load average is printed beside).

    python bench/bench_speck.py                      # trains a small chip-native model first
    python bench/bench_speck.py --run runs/X         # an exported run (spikeport export runs/X)
    python bench/bench_speck.py --event              # also the event-driven semantics' difference

Prints one line per figure and ends with ``speck engine: <ratio>x vs sinabs (equal: yes|no)``;
nothing is written outside a temporary folder.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from spikeport.deploy.common import DeployInput
from spikeport.deploy.speck import fast_engine
from spikeport.deploy.speck.chip_form import SpeckLimits
from spikeport.deploy.speck.from_nir import nir_to_chip_form
from spikeport.deploy.speck.quantize import quantise
from spikeport.deploy.speck.simulate import SimResult, build_chip_net, simulate
from spikeport.deploy.speck.target import deploy_speck, logits_from
from spikeport.hw_profiles import load_profile


def train_small(dataset: str, n_train: int, epochs: int, seed: int):
    from spikeport.data.registry import DATASETS, load_tensors
    from spikeport.train.models.chip_native import VISUAL_SMALL, ChipNativeSNN

    meta = DATASETS[dataset]
    x, y = load_tensors(dataset, "train", max_samples=n_train, seed=seed)
    torch.manual_seed(seed)
    model = ChipNativeSNN(meta.input_shape, VISUAL_SMALL)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    start = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(x.shape[0])
        for i in range(0, x.shape[0], 32):
            idx = order[i:i + 32]
            loss = F.cross_entropy(model(x[idx]).logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"train epoch {epoch + 1}/{epochs}: last batch loss {loss.item():.3f} "
              f"({time.perf_counter() - start:.0f} s)")
    return model.eval(), meta


@torch.no_grad()
def timed_predictions(model, x: torch.Tensor, batch: int = 64) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    preds = torch.cat([model(x[i:i + batch]).logits.argmax(1) for i in range(0, x.shape[0], batch)])
    return preds, x.shape[0] / (time.perf_counter() - start)


def same_run(a: SimResult, b: SimResult) -> list[str]:
    """What differs between two runs (empty: every layer's spikes, every tap and every count equal)."""
    diff = [f"layer {k}" for k in a.layers if not torch.equal(a.layers[k], b.layers[k])]
    diff += [f"tap {k}" for k in a.taps if not torch.equal(a.taps[k], b.taps[k])]
    for name in ("synops", "spikes", "input_events"):
        if not torch.equal(getattr(a, name), getattr(b, name)):
            diff.append(name)
    return diff


def compare_engines(inp: DeployInput, repeats: int, event: bool) -> None:
    """sinabs and the fast engine on the same quantised network and samples: equality, then speed."""
    form = nir_to_chip_form(inp.graph, inp.dt, inp.conventions)
    quant = quantise(form, SpeckLimits.from_profile(load_profile("speck")))
    x, t = inp.inputs, inp.timesteps
    max_input = float(x.max())
    net = build_chip_net(form, t, quant, max_input=max_input)
    plan = fast_engine.plan(form, t, quant, max_input=max_input)
    print(f"engine arithmetic: sinabs {str(net.dtype).removeprefix('torch.')}, fast "
          f"{str(plan.dtype).removeprefix('torch.')} (a priori bound {plan.bound:.3g}; float32 exact below 2^24)")
    ref = simulate(net, x, record=True)
    ours = fast_engine.run(plan, x, record=True)
    diff = same_run(ref, ours)
    equal = not diff
    n_spikes = sum(float(v.sum()) for v in ref.layers.values())
    print(f"spike equality (every layer and step, taps, synops, input events): {'yes' if equal else 'NO'} "
          f"({len(ref.layers)} layers, {n_spikes:.0f} spikes{'' if equal else '; differ: ' + ', '.join(diff)})")
    import os

    n = x.shape[0]
    threads = torch.get_num_threads()
    best = {}
    for label, nthreads in (("one thread", 1), (f"{threads} threads", threads)):
        prev = torch.get_num_threads()
        torch.set_num_threads(nthreads)  # sinabs' ops; the fast engine spreads chunks over as many threads
        try:
            best_sinabs = best_fast = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                simulate(net, x)
                best_sinabs = min(best_sinabs, time.perf_counter() - start)
                start = time.perf_counter()
                fast_engine.run(plan, x, threads=nthreads)
                best_fast = min(best_fast, time.perf_counter() - start)
        finally:
            torch.set_num_threads(prev)
        best[label] = (best_sinabs, best_fast)
        print(f"simulated samples/s, quantised form, T = {t}, {label}: sinabs {n / best_sinabs:.1f}, fast engine "
              f"{n / best_fast:.1f} (best of {repeats}): {best_sinabs / best_fast:.1f}x; "
              f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    best_sinabs, best_fast = best[f"{threads} threads"]
    print("products: " + ", ".join(f"{k} {v}" for k, v in fast_engine.int8_layers(plan).items()))
    # one thread by thread CPU time (what an idle core gives): sinabs, this engine, and this engine as it
    # was before its int8 products and compiled neuron update (the same spikes), alternating, best of each
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    saved = fast_engine.INT8, fast_engine.FUSED_SCAN
    try:
        fast_engine.INT8 = False
        plan_old = fast_engine.plan(form, t, quant, max_input=max_input)
        fast_engine.INT8 = saved[0]

        def old_engine() -> None:
            fast_engine.FUSED_SCAN = False
            try:
                fast_engine.run(plan_old, x, threads=1)
            finally:
                fast_engine.FUSED_SCAN = saved[1]

        cpu = {"sinabs": float("inf"), "fast": float("inf"), "before": float("inf")}
        for _ in range(repeats):
            for label, call in (("sinabs", lambda: simulate(net, x)),
                                ("fast", lambda: fast_engine.run(plan, x, threads=1)), ("before", old_engine)):
                start = time.thread_time()
                call()
                cpu[label] = min(cpu[label], time.thread_time() - start)
    finally:
        fast_engine.INT8, fast_engine.FUSED_SCAN = saved
        torch.set_num_threads(prev)
    print(f"one thread, thread CPU time (best of {repeats}): sinabs {1e3 * cpu['sinabs'] / n:.3f} ms a sample, "
          f"Speck engine {1e3 * cpu['fast'] / n:.3f} ({cpu['sinabs'] / cpu['fast']:.2f}x sinabs); the engine "
          f"before its int8 products and compiled neuron update {1e3 * cpu['before'] / n:.3f} "
          f"({cpu['sinabs'] / cpu['before']:.2f}x)")
    if event:
        start = time.perf_counter()
        ev = fast_engine.run(plan, x, semantics="event")
        wall = time.perf_counter() - start
        with torch.no_grad():
            p_ref = logits_from(ref, form, inp.host).argmax(1)
            p_ev = logits_from(ev, form, inp.host).argmax(1)
        acc_ref = float((p_ref == inp.labels).float().mean())
        acc_ev = float((p_ev == inp.labels).float().mean())
        agree = float((p_ev == p_ref).float().mean())
        print(f"event-driven semantics ({n / wall:.1f} samples/s): accuracy {100 * acc_ref:.2f} % time-stepped -> "
              f"{100 * acc_ev:.2f} % event-driven, predictions agree on {100 * agree:.2f} %")
        print("  spikes per sample, time-stepped -> event-driven:")
        for row in fast_engine.spike_difference(ref, ev, [layer.name for layer in form.layers]):
            print(f"  {row['layer']}: {row['spikes_per_sample_stepped']:.1f} -> {row['spikes_per_sample_event']:.1f} "
                  f"({100 * row['relative_difference']:+.1f} %)")
    print(f"speck engine: {best_sinabs / best_fast:.1f}x vs sinabs (equal: {'yes' if equal else 'no'})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="an exported run folder (else a small model is trained)")
    ap.add_argument("--dataset", default="nmnist-embedded")
    ap.add_argument("--samples", type=int, default=500, help="test samples")
    ap.add_argument("--train-samples", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each engine (best is kept)")
    ap.add_argument("--event", action="store_true", help="also run the event-driven semantics (fast-event)")
    args = ap.parse_args()
    out_dir = Path(tempfile.mkdtemp(prefix="bench_speck_"))
    torch.set_num_threads(max(1, torch.get_num_threads()))

    if args.run:
        from spikeport.deploy.run import build_deploy_input
        inp = build_deploy_input(args.run, "speck", "fast", args.samples)
        inp.out_dir = out_dir
        float_rate = None
        print(f"run: {args.run}")
    else:
        from spikeport.data.registry import load_tensors
        from spikeport.export.to_nir import chip_native_to_nir

        model, meta = train_small(args.dataset, args.train_samples, args.epochs, args.seed)
        x, y = load_tensors(args.dataset, "test", max_samples=args.samples, seed=args.seed)
        preds, float_rate = timed_predictions(model, x)
        graph, _ = chip_native_to_nir(model, meta.dt)
        inp = DeployInput(graph=graph, dt=meta.dt, timesteps=x.shape[1], inputs=x, labels=y,
                          float_predictions=preds, host=None, out_dir=out_dir, target="speck", engine="fast")
        print(f"model: ChipNativeSNN VISUAL_SMALL (IF), trained {args.epochs} epochs on {args.train_samples} "
              f"{args.dataset} samples")
    print(f"test samples: {inp.inputs.shape[0]}, T = {inp.timesteps}, classes present: "
          f"{int(inp.labels.unique().numel())}")

    stats = deploy_speck(inp, load_profile("speck"))
    drop = 100 * (stats.float_accuracy - stats.accuracy)
    print(f"float model accuracy:          {100 * stats.float_accuracy:.2f} %")
    print(f"float chip form accuracy:      {100 * stats.float_chip_form_accuracy:.2f} % "
          f"(agreement with float {100 * stats.float_chip_form_agreement_with_float:.2f} %)")
    print(f"Speck quantised accuracy:      {100 * stats.accuracy:.2f} % "
          f"(agreement with float {100 * stats.agreement_with_float:.2f} %)")
    print(f"accuracy drop float -> Speck:  {drop:.2f} points (target < 2): {'PASS' if drop < 2 else 'FAIL'}")
    print(f"cores used: {stats.cores_used}, mapping {stats.core_mapping}, clipped weights {stats.clipped_weights}")
    print("synops per sample:             " + ", ".join(f"{l.name} {l.synops:.0f}" for l in stats.per_sample)
          + f" (total {sum(l.synops for l in stats.per_sample):.0f})")
    if float_rate:
        print(f"float snntorch model samples/s:          {float_rate:.1f}")
    print(f"approximations: {stats.approximations}")
    compare_engines(inp, args.repeats, args.event)


if __name__ == "__main__":
    main()
