"""S-CMRL training speed: the step-by-step neurons against the fused scans, on the same batches.

    .venv/bin/python bench/bench_scmrl.py [--samples 128] [--repeats 3] [--threads 1] [--profile]

Builds the chip-native S-CMRL that ``spikeport reproduce`` trains (T = 16, embed 32, 4 heads),
loads ``--samples`` av-digits training pairs and times optimisation steps (batch 32: forward,
loss, backward, AdamW) with every neuron layer stepped through time (``fused`` off: what the
model did before) and with the fused scans (on), alternating the two so that a load change on a
shared machine hits both. Prints the CPU seconds (``time.process_time``) and wall seconds per
sample of each, and checks that the two give the same logits and loss on a fixed batch.
"""
from __future__ import annotations

import argparse
import time

import torch


def set_fused(model: torch.nn.Module, on: bool) -> None:
    from spikeport.train.models.scmrl import ChipPatchEmbed, MultiStepLIF
    for m in model.modules():
        if isinstance(m, MultiStepLIF):
            m.fused = on
        elif isinstance(m, ChipPatchEmbed):
            m.fused_neurons = on


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--profile", action="store_true", help="torch.profiler table of one fused pass")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from spikeport.data.registry import load_tensors
    from spikeport.reproduce import SCMRL_ARCH, SCMRL_TIMESTEPS
    from spikeport.train.loop import loss_function
    from spikeport.train.models import build_model, default_spec

    spec = default_spec("scmrl", "av-digits", chip_native=True, timesteps=SCMRL_TIMESTEPS, options=dict(SCMRL_ARCH))
    (xv, xa), y = load_tensors("av-digits", "train", timesteps=SCMRL_TIMESTEPS, max_samples=args.samples, seed=0,
                               progress=False)
    xv, xa = xv.float(), xa.float()
    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)  # the same initial weights every time
        return build_model(spec).train()

    base = fresh()
    loss_fn = loss_function(spec)

    # the same logits and loss, fused or not, on the first batch (train mode: batch statistics)
    b = slice(0, args.batch)
    outs = {}
    for on in (False, True):
        set_fused(base, on)
        out = base((xv[b], xa[b]))
        outs[on] = (out.logits.detach(), loss_fn(out, y[b]).item())
    same = torch.equal(outs[False][0], outs[True][0]) and outs[False][1] == outs[True][1]
    print(f"fixed batch: logits equal {torch.equal(outs[False][0], outs[True][0])}, "
          f"loss {outs[False][1]!r} vs {outs[True][1]!r}")

    def epoch(model, opt) -> None:
        for i in range(0, args.samples, args.batch):
            out = model((xv[i:i + args.batch], xa[i:i + args.batch]))
            loss = loss_fn(out, y[i:i + args.batch])
            opt.zero_grad()
            loss.backward()
            opt.step()

    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(args.repeats):
        for on in (False, True):
            model = fresh()
            set_fused(model, on)
            opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
            c0, w0 = time.process_time(), time.perf_counter()
            epoch(model, opt)
            times[on].append((time.process_time() - c0, time.perf_counter() - w0))
    for on in (False, True):
        cpu = min(t[0] for t in times[on]) / args.samples
        wall = min(t[1] for t in times[on]) / args.samples
        print(f"{'fused' if on else 'step loop'}: {1e3 * cpu:.1f} ms CPU / sample-step, {1e3 * wall:.1f} ms wall "
              f"(best of {args.repeats}, {args.threads} thread(s), batch {args.batch})")
    loop_cpu = min(t[0] for t in times[False])
    fused_cpu = min(t[0] for t in times[True])
    print(f"speed-up (CPU time): {loop_cpu / fused_cpu:.2f}x")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        model = fresh()
        set_fused(model, True)
        opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            epoch(model, opt)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    if not same:
        raise SystemExit("fused and step-loop forward passes differ")


if __name__ == "__main__":
    main()
