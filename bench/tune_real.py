"""Choose a real N-MNIST recipe on the validation recordings only (never the held-out 200).

Trains the chip-native baseline on the 720 training recordings of the seeded split
(``spikeport.data.registry``; ``--seed`` also moves the 80 validation recordings, a second fold)
with the given TrainConfig keys, and prints one JSON line: best validation accuracy and its
epoch, the mean of the last five epochs, the last training accuracy (on augmented batches) and
the wall time. The held-out test split is not loaded.

Run: ``.venv/bin/python bench/tune_real.py --name NAME --cfg '{"epochs": 40, "shift_px": 3}'``
(``--root``: a folder holding ``NMNIST/Train``; default: the shared subset, linked as
bench_real.py links it). ``--bn all`` trains with a BatchNorm after every weight layer (the real
N-MNIST default of ``spikeport train``; ``hidden``: all but the output). ``--log FILE`` appends
the line to FILE.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_real import DEFAULT_DATA, dataset_root  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--root", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", default="medium")
    ap.add_argument("--timesteps", type=int, default=15)
    ap.add_argument("--bin-s", type=float, default=0.02)
    ap.add_argument("--cfg", default="{}", help="TrainConfig keys as JSON (epochs, lr, shift_px, ema, ...)")
    ap.add_argument("--channels", default=None,
                    help="conv channels of the chip-native stack, e.g. 32,64,32 (default: --width's)")
    ap.add_argument("--bn", choices=("none", "hidden", "all"), default="none",
                    help="BatchNorm after the weight layers while training: none, all but the output, all")
    ap.add_argument("--dense", type=int, default=None, help="width of the hidden dense layer")
    ap.add_argument("--log", type=Path, default=None)
    a = ap.parse_args()
    root = dataset_root(a.root)
    if root is None:
        print(f"skipped: no real N-MNIST at {a.root}")
        return 0

    from spikeport.data.registry import load_tensors
    from spikeport.train.config import TrainConfig
    from spikeport.train.loop import fit, seed_everything
    from spikeport.train.models import build_model, default_spec

    values = dict(epochs=40, lr=5e-3, seed=a.seed, progress=False, patience=10 ** 6)
    values.update(json.loads(a.cfg))
    cfg = TrainConfig.from_dict(values)
    data = {s: load_tensors("nmnist", s, root=root, timesteps=a.timesteps, bin_s=a.bin_s, seed=a.seed,
                            progress=False) for s in ("train", "val")}
    spec = default_spec("baseline", "nmnist", True, False, seed=a.seed, timesteps=a.timesteps, width=a.width)
    spec = spec.replace(dt=a.bin_s)
    if a.channels:
        layers = [dict(layer) for layer in spec.layers]   # the spec is frozen: a new stack, then a new spec
        convs = [layer for layer in layers if layer["type"] == "conv"]
        chans = [int(c) for c in a.channels.split(",")]
        if len(chans) != len(convs):
            raise SystemExit(f"--channels: {len(convs)} convolutions, {len(chans)} channel counts given")
        for layer, c in zip(convs, chans):
            layer["out_channels"] = c
        spec = spec.replace(layers=layers)
    if a.bn != "none" or a.dense:
        layers = [dict(layer) for layer in spec.layers]
        weights = [layer for layer in layers if layer["type"] in ("conv", "dense")]
        for layer in weights[:-1] if a.bn == "hidden" else weights if a.bn == "all" else []:
            layer["batch_norm"] = True
        if a.dense:
            weights[-2]["out_features"] = a.dense
        spec = spec.replace(layers=layers)
    seed_everything(a.seed)   # as spikeport train does: the initial weights depend on the seed only
    model = build_model(spec)
    t0 = time.perf_counter()
    res = fit(model, spec, [data["train"]], [data["val"]], cfg)
    accs = [r["val_accuracy"] for r in res.history]
    line = dict(name=a.name, seed=a.seed, cfg=values, width=a.width, channels=a.channels, bn=a.bn, dense=a.dense,
                timesteps=a.timesteps, bin_s=a.bin_s,
                best_val=res.best_val_accuracy, best_epoch=res.best_epoch, last_val=accs[-1],
                mean_last5=sum(accs[-5:]) / len(accs[-5:]), last_train=res.history[-1]["train_accuracy"],
                curve=[round(v, 4) for v in accs],
                wall_s=time.perf_counter() - t0)
    print(json.dumps(line), flush=True)
    if a.log is not None:
        with open(a.log, "a") as f:
            f.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
