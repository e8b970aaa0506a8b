"""Loihi target benchmark: the fast engine against Lava, and the accuracy kept by deployment.

    .venv/bin/python bench/bench_loihi.py [--run runs/X] [--lava-samples 20] [--epochs 3]
                                          [--batch-size 32] [--threads N] [--repeats 5]
                                          [--device cpu|cuda] [--events auto|always|never|kernel]

1. Speed and exactness: the same quantised network (``target.prepare``, the function
   ``spikeport deploy`` uses) and the same test samples through Lava's bit-accurate
   simulation (``Loihi2SimCfg("fixed_pt")``) and through the batched fast engine, both
   recording every layer's spikes: samples/s of each and their ratio (target >= 2000x), then
   the fast engine alone on the whole test split, and whether every spike of every layer at
   every step is equal; then where the fast engine's time goes (torch's profiler, one thread,
   the ops that take most of it, with their shapes), and per layer of the compiled event-driven
   run (input density, event-driven and dense time, which the cost model picks); then the same
   samples thinned to ``--thin`` input density (0.4 %: what finer time bins give) through Lava
   and both paths, equality and speed. Lava's time is its run only (building and compiling the processes is
   printed apart); the fast engine's is a whole ``run_fast`` call after one warm-up call, the
   median of ``--repeats`` calls (a call on 20 samples takes milliseconds, so one call alone is
   at the mercy of the scheduler).
2. Accuracy: the float model against the deployed Loihi 2 model (fast engine) on the whole
   embedded test split (target: drop < 1 point for chip-native models).

Without ``--run`` a small chip-native model is trained on nmnist-embedded and exported first
(the ordinary ``train`` and ``export`` stages) into runs/bench_loihi, reused on later runs.
Timings are wall-clock on whatever else the machine is doing: compare the two engines within
one run only. The last line, which other tools read:
``loihi fast engine: <ratio>x vs lava (equal: yes|no)`` (the ratio on the same samples).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _ensure_run(run: Path | None, epochs: int, tmp: Path) -> Path:
    from spikeport.export.run import export_run
    from spikeport.train.run import train_run

    if run is None:
        run = Path("runs") / "bench_loihi"
    if not (run / "model.pt").is_file():
        t0 = time.perf_counter()
        metrics = train_run("baseline", "nmnist-embedded", run, chip_native=True, epochs=epochs, seed=0)
        print(f"trained chip-native baseline on nmnist-embedded: {epochs} epochs, test accuracy "
              f"{metrics.test_accuracy:.4f}, {time.perf_counter() - t0:.0f} s")
    if not (run / "export" / "export.json").is_file():
        export_run(run)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=None, help="a trained chip-native run folder (default: train one)")
    ap.add_argument("--lava-samples", type=int, default=20)
    ap.add_argument("--samples", type=int, default=None, help="test samples for the accuracy part (default: all)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--target", default="loihi2", choices=["loihi", "loihi2"])
    ap.add_argument("--batch-size", type=int, default=32, help="fast engine: samples per chunk")
    ap.add_argument("--threads", type=int, default=None, help="fast engine: chunks at once (default: torch's threads)")
    ap.add_argument("--repeats", type=int, default=5, help="fast engine: timed calls (the median is reported)")
    ap.add_argument("--device", default="cpu", help="fast engine: cpu or cuda")
    ap.add_argument("--thin", type=float, default=0.004, help="input density of the sparse-input check")
    ap.add_argument("--events", default="auto", choices=["auto", "always", "never", "kernel"],
                    help="fast engine: event-driven accumulation (same results)")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: no CUDA GPU is available to this torch build ({torch.__version__})")

    from spikeport.deploy.loihi.fast_engine import run_fast
    from spikeport.deploy.loihi.lava_run import run_lava
    from spikeport.deploy.loihi.netx_writer import write_netx
    from spikeport.deploy.loihi.target import deploy_loihi, prepare
    from spikeport.deploy.run import build_deploy_input
    from spikeport.hw_profiles import load_profile

    def fast_rate(xs: torch.Tensor, record: bool, clock=time.perf_counter, **over) -> tuple[float, float]:
        """(median samples/s, best samples/s) of ``--repeats`` run_fast calls on ``xs``; ``clock``:
        wall-clock, or ``time.thread_time`` (one thread: the CPU time it got, whatever else runs)."""
        times = []
        for _ in range(args.repeats):
            t0 = clock()
            run_fast(net, xs, record=record, **{**opts, **over})
            times.append(clock() - t0)
        return xs.shape[0] / statistics.median(times), xs.shape[0] / min(times)

    with tempfile.TemporaryDirectory(prefix="bench-loihi-") as tmpdir:
        tmp = Path(tmpdir)
        run = _ensure_run(args.run, args.epochs, tmp)
        profile = load_profile(args.target)
        inp = build_deploy_input(run, args.target, "fast", args.samples)
        inp.out_dir = tmp / "deploy"
        graph, net, x, bits = prepare(inp, profile)
        names = [q.name for q in net.layers]
        print(f"model: {run}  layers: " + ", ".join(f"{q.name} {q.layer.kind} {q.layer.neurons}" for q in net.layers))
        print(f"test split: {x.shape[0]} samples, T={x.shape[1]}, input message bits {bits}")
        threads = args.threads or torch.get_num_threads()
        print(f"fast engine: chunks of {args.batch_size} samples, {threads} at once; machine: "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")

        # --- 1. fast vs Lava, same network and samples ---------------------------------
        n = min(args.lava_samples, x.shape[0])
        xs = x[:n]
        netx_file = write_netx(net, tmp / "model.net")
        lava = run_lava(netx_file, xs, names, input_bits=bits)
        opts = dict(batch_size=args.batch_size, threads=args.threads, device=args.device, events=args.events)
        run_fast(net, xs[:2], **opts)  # warm-up (first torch calls, the cached plan)
        fast = run_fast(net, xs, record=True, **opts)
        diff = {k: int((fast.spikes[k] != lava.spikes[k]).sum()) for k in names}
        dense = run_fast(net, xs, record=True, **{**opts, "events": "never"})
        diff_dense = {k: int((dense.spikes[k] != lava.spikes[k]).sum()) for k in names}
        equal = all(v == 0 for v in diff.values()) and all(v == 0 for v in diff_dense.values())
        print(f"\n[equality] spike trains equal to Lava's, every layer and step: {equal} "
              f"(differences: events={args.events} {diff}; torch paths {diff_dense})")
        fast_sps, fast_best = fast_rate(xs, record=True)
        one_sps, one_best = fast_rate(xs, record=True, threads=1)
        cpu_sps, cpu_best = fast_rate(xs, record=True, clock=time.thread_time, threads=1)
        dense_sps, dense_best = fast_rate(xs, record=True, events="never")
        # the engine before the int8 products and the compiled scans, timed the same way in this run
        from spikeport.deploy.loihi import fast_engine as fe

        saved = fe.INT8, fe.FUSED_SCAN
        fe.INT8, fe.FUSED_SCAN = False, False
        try:
            run_fast(net, xs[:2], **opts)
            old_cpu_sps, old_cpu_best = fast_rate(xs, record=True, clock=time.thread_time, threads=1)
        finally:
            fe.INT8, fe.FUSED_SCAN = saved
        new_cpu_sps, new_cpu_best = fast_rate(xs, record=True, clock=time.thread_time, threads=1)
        all_sps, all_best = fast_rate(x, record=False)
        spikes = {k: int(lava.spikes[k].sum()) for k in names}
        lava_sps = n / lava.run_s
        print(f"\n[speed] {n} samples, {lava.steps} Lava steps")
        print(f"  Lava fixed_pt  : {lava_sps:9.2f} samples/s  ({lava.steps / lava.run_s:.1f} steps/s, run {lava.run_s:.2f} s, "
              f"build+compile {lava.compile_s:.2f} s apart)")
        print(f"  fast engine    : {fast_sps:9.1f} samples/s  (same {n} samples, every layer recorded; "
              f"median of {args.repeats}, best {fast_best:.1f})")
        print(f"  fast engine    : {one_sps:9.1f} samples/s  (same, one thread; best {one_best:.1f}): {one_sps / lava_sps:.0f}x")
        print(f"  fast engine    : {cpu_sps:9.1f} samples/s  (same, one thread, by its thread CPU time: what an idle "
              f"core gives; best {cpu_best:.1f}): {cpu_sps / lava_sps:.0f}x Lava's wall-clock rate")
        print(f"  torch paths    : {dense_sps:9.1f} samples/s  (same, events=never: no compiled kernel; best {dense_best:.1f})")
        print(f"  products       : " + ", ".join(f"{k} {v}" for k, v in fe.int8_layers(net, xs.shape[1], args.device).items()))
        print(f"  old vs new     : one thread, thread CPU time, same samples: float products and torch scans "
              f"{1e3 / old_cpu_best:.3f} ms a sample (best; median {1e3 / old_cpu_sps:.3f}), int8 products and "
              f"compiled scans {1e3 / new_cpu_best:.3f} (median {1e3 / new_cpu_sps:.3f}): "
              f"{old_cpu_sps and new_cpu_sps / old_cpu_sps:.2f}x (medians)")
        print(f"  fast engine    : {all_sps:9.1f} samples/s  (whole test split, {x.shape[0]} samples; best {all_best:.1f})")
        print(f"  machine load average now: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        print(f"  ratio fast/Lava: {fast_sps / lava_sps:.0f}x on the same {n} samples, "
              f"{all_sps / lava_sps:.0f}x at whole-split throughput (target >= 2000x)")
        print(f"  spikes per layer (Lava): {spikes}")
        _where_time_goes(lambda: run_fast(net, xs, record=True, **{**opts, "threads": 1, "events": "never"}))
        _where_time_goes_cpu(net, xs, opts["batch_size"])
        _kernel_layers(net, xs, opts["batch_size"])

        # --- 1b. the same samples thinned to ~1 % input density (finer time bins give such input) ---
        g = torch.Generator().manual_seed(0)
        thin = xs * (torch.rand(xs.shape, generator=g) < args.thin / max(float((xs != 0).float().mean()), 1e-9))
        lava_thin = run_lava(netx_file, thin, names, input_bits=bits)
        got = {ev: run_fast(net, thin, record=True, **{**opts, "events": ev}) for ev in ("auto", "never")}
        thin_equal = all(torch.equal(r.spikes[k], lava_thin.spikes[k]) for r in got.values() for k in names)
        thin_sps = {ev: fast_rate(thin, record=True, clock=time.thread_time, events=ev, threads=1)[0]
                    for ev in ("auto", "never")}
        lava_thin_sps = n / lava_thin.run_s
        plans = fe._cached_plan(net, thin.shape[1], "auto", torch.device("cpu"))
        probe = thin[:args.batch_size]
        auto_pick = ("compiled run" if all(p.kernel is not None for p in plans)
                     and fe._events_pay(plans[0], int((probe != 0).sum()), probe.shape[0] * probe.shape[1])
                     else "torch paths")
        print(f"\n[sparse input] the same {n} samples, each event kept with probability "
              f"{args.thin / float((xs != 0).float().mean()):.3f}: input density {100 * float((thin != 0).float().mean()):.2f} %; "
              f"equal to Lava on every layer and step: {thin_equal}")
        print(f"  Lava {lava_thin_sps:.2f} samples/s; one thread, by its thread CPU time: fast engine (auto: {auto_pick}) "
              f"{thin_sps['auto']:.1f} samples/s ({thin_sps['auto'] / lava_thin_sps:.0f}x), torch paths "
              f"{thin_sps['never']:.1f} ({thin_sps['never'] / lava_thin_sps:.0f}x)")
        _kernel_layers(net, thin, opts["batch_size"])
        equal = equal and thin_equal

        # --- 2. accuracy drop on the whole test split -----------------------------------
        t0 = time.perf_counter()
        stats = deploy_loihi(inp, profile)
        wall = time.perf_counter() - t0
        print(f"\n[accuracy] {stats.samples} test samples, target {args.target}, engine fast ({wall:.1f} s, "
              f"{stats.samples / wall:.0f} samples/s incl. mapping and counting)")
        print(f"  float model    : {stats.float_accuracy:.4f}")
        print(f"  deployed Loihi : {stats.accuracy:.4f}")
        print(f"  drop           : {100 * (stats.float_accuracy - stats.accuracy):.2f} points (target < 1)")
        print(f"  agreement with float predictions: {stats.agreement_with_float:.4f}")
        print(f"  cores used: {stats.cores_used}; clipped weights: {stats.clipped_weights}")
        for note in stats.approximations:
            print(f"  approximation: {note}")
    print(f"loihi fast engine: {fast_sps / lava_sps:.0f}x vs lava (equal: {'yes' if equal else 'no'})")


def _where_time_goes(call, top: int = 8) -> None:
    """The ops that take the fast engine's time (one thread, one call), with their input shapes."""
    from torch.profiler import ProfilerActivity, profile

    call()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        call()
    rows = [e for e in prof.key_averages(group_by_input_shape=True) if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in rows) or 1.0
    rows.sort(key=lambda e: -e.self_cpu_time_total)
    print(f"\n[where the time goes, torch paths] one call on the same samples, one thread: {total / 1e3:.1f} ms of ops")
    for e in rows[:top]:
        shapes = [list(sh) for sh in e.input_shapes if sh][:2]
        print(f"  {100 * e.self_cpu_time_total / total:5.1f} %  {e.key:28s} x{e.count:<4d} {shapes}")


def _where_time_goes_cpu(net, xs: torch.Tensor, batch_size: int) -> None:
    """One chunk through the torch paths (as ``run_fast`` with events="never"), one thread, thread CPU
    ms per stage (best of 5): input preparation, then per layer the product and the scan (with the
    count and the recorded train's copy)."""
    from spikeport.deploy.loihi import fast_engine as fe

    plans = fe._cached_plan(net, xs.shape[1], "auto", torch.device("cpu"))
    xb = xs[:batch_size]
    t = xb.shape[1]
    prev = torch.get_num_threads()
    torch.set_num_threads(1)

    def cpu_ms(f, k: int = 5):
        best, r = float("inf"), None
        for _ in range(k):
            t0 = time.thread_time()
            r = f()
            best = min(best, time.thread_time() - t0)
        return 1e3 * best, r

    try:
        with torch.inference_mode():
            ms_in, (h, _) = cpu_ms(lambda: fe._prepare_input(plans, net, xb, fe._Buffers()))
            h = h.clone()
            parts = [f"input {ms_in:.2f}"]
            total = ms_in
            for k, p in enumerate(plans):
                train = torch.empty((t, xb.shape[0], *p.q.layer.output_shape), dtype=torch.uint8)
                bias = p.bias if p.fuse_bias else None
                ms_syn, a = cpu_ms(lambda: fe._delayed_input(p, h, bias, "never", k == 0 and net.input_bits > 0))
                ms_all, (s, _) = cpu_ms(lambda: fe._run_layer_counted(p, h, "never", k == 0 and net.input_bits > 0,
                                                                       None, train, 0))
                ms_scan = max(ms_all - ms_syn, 0.0)
                kind = "int8" if (p.int8_dense is not None or p.int8_conv is not None) else "float"
                parts.append(f"{p.q.name} {kind} product {ms_syn:.2f} + scan/count/record {ms_scan:.2f}")
                total += ms_syn + ms_scan
                h = s
        print(f"\n[where the time goes, by stage] {xb.shape[0]} samples, one thread, thread CPU ms (best of 5): "
              + "; ".join(parts) + f"; sum {total:.2f} ms = {1e3 * xb.shape[0] / total:.0f} samples/s")
    finally:
        torch.set_num_threads(prev)


def _kernel_layers(net, xs: torch.Tensor, batch_size: int) -> None:
    """Per layer (one thread, thread CPU time: the machine may be shared): input density, the
    compiled event-driven way's time and the torch dense way's (convolution / product, then scan)."""
    import numpy as np

    from spikeport.deploy.loihi import fast_engine as fe

    plans = fe._cached_plan(net, xs.shape[1], "auto", torch.device("cpu"))
    if not all(p.kernel is not None for p in plans):
        print("\n[per layer] the compiled run does not apply to this network")
        return
    xb = xs[:batch_size]
    b, t = xb.shape[:2]
    nf = t * b

    def cpu_ms(f, k: int = 5):
        best = float("inf")
        for _ in range(k):
            t0 = time.thread_time()
            r = f()
            best = min(best, time.thread_time() - t0)
        return 1e3 * best, r

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        room = max(max(int(np.prod(p.q.layer.input_shape)), p.q.layer.neurons) for p in plans) * nf + 1
        idx, val = np.empty(room, np.int32), np.empty(xb.numel() + 1, np.int32)
        off = np.empty(nf + 1, np.int64)
        graded = net.input_bits > 0
        frames = xb.reshape(b, t, -1).float().contiguous().numpy()
        ms, (m, _) = cpu_ms(lambda: fe._input_events(frames, graded, fe.max_payload(net), idx, val, off))
        ms_in, (h, _) = cpu_ms(lambda: fe._prepare_input(plans, net, xb, fe._Buffers()))
        h = h.clone()
        print(f"\n[per layer] {b} samples, one thread, thread CPU ms (best of 5); input: events {ms:.2f}, "
              f"torch copy and count {ms_in:.2f}")
        for k, p in enumerate(plans):
            kl, n_out = p.kernel, p.q.layer.neurons
            ev, ev_off = idx[:m].copy(), off.copy()
            train = np.zeros((t, b, n_out), np.uint8)
            out_idx, out_off = np.empty(room, np.int32), np.empty(nf + 1, np.int64)
            call = lambda: fe._event_layer(ev, val if k == 0 else fe._NO_VALUES, ev_off, b, graded and k == 0,  # noqa: E731
                                           kl.weights, kl.bias, kl.count, kl.pos, kl.row, kl.cout, kl.vth, kl.keep,
                                           train, True, np.zeros(n_out, np.int64), out_idx, out_off,
                                           np.zeros((1, 1), np.float32), False)
            ms_ev, m_out = cpu_ms(call)
            ms_conv, a = cpu_ms(lambda: fe._synaptic(p, h, p.bias))
            ms_copy, _ = cpu_ms(lambda: a.clone())
            ms_scan, _ = cpu_ms(lambda: fe._scan_if(a.clone(), p.q.vth) if p.mode == "if"
                                else fe._scan_lif(a.clone(), p.q.vth, p.q.v_decay))
            s = a.clone()
            fe._scan_if(s, p.q.vth) if p.mode == "if" else fe._scan_lif(s, p.q.vth, p.q.v_decay)
            density = m / (nf * int(np.prod(p.q.layer.input_shape)))
            pick = "events" if fe._events_pay(p, m, nf) else "dense"
            print(f"  {p.q.name}: input density {100 * density:5.2f} %  events (compiled) {ms_ev:6.2f} ms  dense "
                  f"(torch) {ms_conv:6.2f} + scan {max(ms_scan - ms_copy, 0):5.2f} ms  -> cost model: {pick}")
            idx[:m_out] = out_idx[:m_out]
            off[:] = out_off
            m, h = m_out, s
    finally:
        torch.set_num_threads(prev)


if __name__ == "__main__":
    main()
