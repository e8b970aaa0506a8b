"""Real N-MNIST end to end: a linear baseline, the chip-native SNN in float, on Loihi 2 and on Speck.

Data: the 1,000 real N-MNIST training recordings in ``../shared/data/real/nmnist1k`` (or
``--root``: a folder holding ``NMNIST/Train/<label>/<id>.bin``, or the ``Train/<label>`` folder's
parent itself). With no Test folder, spikeport's registry holds out a fixed seeded 20 % of the
files (``HOLDOUT_SEED``, 200 of 1,000) as the test split; early stopping uses a seeded 10 % of
the other 800 (80), training the remaining 720. Nothing here is tuned on the hold-out: the
default recipe was chosen on those 80 (``bench/tune_real.py``), and its default run then trains on
all 800 (``train_on_val``) for the epochs chosen there.

Prints, in one run:
1. a linear classifier (scikit-learn logistic regression) on per-pixel, per-polarity event
   counts of the whole recording, fitted on the 800 non-held-out recordings;
2. the chip-native baseline trained with ``spikeport train``'s defaults (``--model baseline
   --chip-native --dataset nmnist``), its float accuracy on the hold-out;
3. its export, deployed with ``deploy_run(run, target="loihi2")`` and ``target="speck"`` on the
   same hold-out: accuracy and agreement with the float model, and the first layer whose spikes
   diverge from the float model's (``stats.divergence``);
4. the quantisation-aware variants: ``spikeport train ... --finetune-for loihi2|speck --init-from
   RUN`` (a few epochs through that chip's integer arithmetic, leaving the model on its grid),
   each exported and deployed to its chip: float accuracy on the grid, chip accuracy, agreement;
and ends with ``real nmnist: float <acc>, loihi2 <acc> (agree <a>), speck <acc> (agree <a>), n=<n>``
for the plain model (the default recipe, rounded by deploy).
Skips (exit 0) with a message when the data are absent.

Run: ``.venv/bin/python bench/bench_real.py [--root DIR] [--run runs/bench_real] [--retrain]``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "real" / "nmnist1k"


def dataset_root(path: Path) -> Path | None:
    """A folder whose ``NMNIST/Train`` holds the recordings: ``path`` itself, or one under runs/
    linking to ``path/Train`` (the shared subset's layout; it stays, as the run records it as its
    root); None when neither is there."""
    if (path / "NMNIST" / "Train").is_dir():
        return path
    if (path / "Train").is_dir():
        root = REPO / "runs" / f"{path.name}_root"
        link = root / "NMNIST" / "Train"
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() and link.resolve() != (path / "Train").resolve():
            link.unlink()
        if not link.exists():
            link.symlink_to((path / "Train").resolve(), target_is_directory=True)
        return root
    return None


def linear_baseline(root: Path) -> tuple[float, int, int]:
    """Logistic regression on event counts of the whole recording (one bin of 400 ms)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from spikeport.data.registry import load_tensors

    def counts(split: str):
        x, y = load_tensors("nmnist", split, root=root, timesteps=1, bin_s=0.4, progress=False)
        return x.flatten(1).numpy(), y.numpy()

    (xt, yt), (xv, yv), (xh, yh) = counts("train"), counts("val"), counts("test")

    def model(c: float):
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=c))

    # regularisation picked on the validation part, then refitted on train + val
    grid = (1e-3, 1e-2, 1e-1, 1.0)
    val_acc = {c: float((model(c).fit(xt, yt).predict(xv) == yv).mean()) for c in grid}
    best = max(grid, key=lambda c: (val_acc[c], -c))
    x_fit, y_fit = np.concatenate([xt, xv]), np.concatenate([yt, yv])
    clf = model(best).fit(x_fit, y_fit)
    return float((clf.predict(xh) == yh).mean()), len(y_fit), len(yh), best


def deploy_both(run: Path, samples: int | None, export_run, deploy_run, label: str = "",
                targets: tuple[str, ...] = ("loihi2", "speck")) -> dict:
    """Export ``run`` and deploy it to Loihi 2 and Speck; prints each chip's figures."""
    info = export_run(run)
    print(f"{label}export: {run / 'export' / info.nir_file}, "
          f"{'exact' if info.verification.exact else 'NOT exact'} round trip ({info.verification.runtime})")
    chips = {}
    for target in targets:
        t0 = time.perf_counter()
        stats = deploy_run(run, target=target, samples=samples)
        chips[target] = stats
        div = (stats.model_extra or {}).get("divergence") or {}
        worst = min((r for r in div.get("layers", []) if r["correlation"] is not None),
                    key=lambda r: r["correlation"], default=None)
        print(f"{label}{target} ({stats.engine}): accuracy {stats.accuracy:.4f} (float {stats.float_accuracy:.4f}), "
              f"agreement with float {stats.agreement_with_float:.4f} on {stats.samples} held-out samples; "
              f"first divergent layer {div.get('first_divergent')}"
              + (f", lowest spike-count correlation {worst['correlation']:.3f} ({worst['layer']})" if worst else "")
              + f" ({time.perf_counter() - t0:.0f} s)")
        for w in (div.get("core_load") or {}).get("warnings", []):
            print(f"  core load: {w}")
    return chips


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_DATA, help="real N-MNIST folder")
    ap.add_argument("--run", type=Path, default=REPO / "runs" / "bench_real", help="run folder")
    ap.add_argument("--retrain", action="store_true", help="train again even if the run exists")
    ap.add_argument("--epochs", type=int, default=None, help="override the default epochs")
    ap.add_argument("--samples", type=int, default=None, help="deploy on this many held-out samples")
    ap.add_argument("--no-qat", action="store_true", help="skip the quantisation-aware variant")
    ap.add_argument("--finetune-epochs", type=int, default=None, help="epochs of the quantisation-aware fine-tuning")
    args = ap.parse_args()

    root = dataset_root(args.root)
    if root is None:
        print(f"skipped: no real N-MNIST at {args.root} (expected {args.root}/Train/<label>/<id>.bin or "
              f"{args.root}/NMNIST/Train/...); give --root")
        return 0

    from spikeport.data.registry import split_scheme
    from spikeport.deploy.run import deploy_run
    from spikeport.export.run import export_run
    from spikeport.io import read_json_model
    from spikeport.schemas import Metrics
    from spikeport.train.run import train_run

    scheme = split_scheme("nmnist", root)
    if scheme["scheme"] == "holdout":
        print(f"data: {args.root}, {scheme['files']} recordings; held out (test) {scheme['test']} "
              f"(fraction {scheme['test_fraction']}, seed {scheme['holdout_seed']}); "
              f"train {scheme['train']} + val {scheme['val']} (val seed {scheme['val_seed']})")
    else:
        print(f"data: {args.root}, the dataset's own Test split")

    acc_lin, n_fit, n_test, c = linear_baseline(root)
    print(f"linear classifier on event counts (logistic regression, C={c:g} picked on val, {n_fit} fitted): "
          f"held-out accuracy {acc_lin:.4f} (n={n_test})")

    run = args.run
    if args.retrain or not (run / "metrics.json").is_file():
        t0 = time.perf_counter()
        train_run(model="baseline", dataset="nmnist", out=run, chip_native=True, root=root,
                  epochs=args.epochs, progress=False)
        print(f"trained {run} in {time.perf_counter() - t0:.0f} s")
    metrics = read_json_model(run / "metrics.json", Metrics)
    data = (metrics.model_extra or {}).get("data", {})
    print(f"float chip-native baseline: held-out accuracy {metrics.test_accuracy:.4f} "
          f"(n={metrics.test_samples}; preset {data.get('preset')}, {data.get('timesteps')} bins of "
          f"{data.get('bin_s', 0) * 1e3:g} ms, augment x{data.get('augment')}; "
          f"{metrics.train_samples} training samples; best val {metrics.best_val_accuracy}, epoch "
          f"{metrics.best_epoch}; trained in {metrics.wall_s:.0f} s)")

    plain = deploy_both(run, args.samples, export_run, deploy_run)
    if not args.no_qat:
        for chip in ("loihi2", "speck"):
            qrun = run.parent / f"{run.name}_qat_{chip}"
            if args.retrain or not (qrun / "metrics.json").is_file() or \
                    (qrun / "metrics.json").stat().st_mtime < (run / "metrics.json").stat().st_mtime:
                train_run(model="baseline", dataset="nmnist", out=qrun, chip_native=True, root=root, progress=False,
                          finetune_for=chip, init_from=str(run), finetune_epochs=args.finetune_epochs, augment=0)
            qm = read_json_model(qrun / "metrics.json", Metrics)
            ft = (qm.model_extra or {}).get("finetune", {})
            print(f"quantisation-aware for {chip} (--finetune-for {chip} --init-from {run.name}, {ft.get('epochs')} "
                  f"epochs, {ft.get('wall_s', 0):.0f} s): float on the {chip} grid {qm.test_accuracy:.4f} (val: "
                  f"rounded {ft.get('val_accuracy_rounded')}, fine-tuned {ft.get('val_accuracy')} at epoch "
                  f"{ft.get('best_epoch')})")
            deploy_both(qrun, args.samples, export_run, deploy_run, f"qat-{chip} ", targets=(chip,))
    lo, sp = plain["loihi2"], plain["speck"]
    print(f"real nmnist: float {metrics.test_accuracy:.4f}, loihi2 {lo.accuracy:.4f} "
          f"(agree {lo.agreement_with_float:.4f}), speck {sp.accuracy:.4f} "
          f"(agree {sp.agreement_with_float:.4f}), n={lo.samples}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
