"""`spikeport demo`: the whole flow on the embedded default, on a laptop CPU in minutes.

data -> train (visual and audio chip-native baselines + their ANN twins) -> export ->
deploy (Loihi 2, fast engine on the test split, plus a Lava run on a few samples to show
the two engines agree; Speck) -> report.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

console = Console()
EDGE_BASELINE = "gpu-jetson-orin-nano"  # the report's baseline: an edge GPU that idles too (symmetric static)
LOWER_BOUND = "gpu-horowitz45"  # printed beside it: a per-operation 45 nm model, no idle power (one-sided)


@dataclass(frozen=True)
class DemoSizes:
    epochs: dict[str, int]  # per modality
    max_train: int | None
    test_samples: int | None
    lava_samples: int
    data_n: int | None  # None: the embedded sets' default size


# Epochs measured on a 2-core CPU: visual 15 (about 40 s, ~91 % test), audio 20 (about 60 s, ~97 %).
FULL = DemoSizes(epochs={"visual": 15, "audio": 20}, max_train=None, test_samples=None, lava_samples=4,
                 data_n=None)
QUICK = DemoSizes(epochs={"visual": 1, "audio": 1}, max_train=40, test_samples=8, lava_samples=1, data_n=60)


class _Clock:
    """Wall time per stage, printed at the end so a user sees where the minutes went."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self._name: str | None = None
        self._t = time.perf_counter()

    def stage(self, title: str, key: str) -> None:
        self._stop()
        console.rule(f"[bold]{title}")
        self._name, self._t = key, time.perf_counter()

    def _stop(self) -> None:
        if self._name is not None:
            self.spent[self._name] = self.spent.get(self._name, 0.0) + time.perf_counter() - self._t
        self._name = None

    def summary(self) -> str:
        self._stop()
        return ", ".join(f"{k} {v:.0f} s" for k, v in self.spent.items())


def run_demo(out: Path, quick: bool = False, data_root: Path | None = None) -> Path:
    from spikeport.data.registry import ensure_generated, generate
    from spikeport.deploy.report import ratio_words, report_run, summary_lines
    from spikeport.deploy.run import deploy_run
    from spikeport.export.run import export_run
    from spikeport.train.run import train_run

    sizes = QUICK if quick else FULL
    out = Path(out)
    t0 = time.perf_counter()
    clock = _Clock()
    if quick and data_root is None:
        data_root = out / "data"
    plan = [("visual", "nmnist-embedded"), ("audio", "shd-embedded")]
    clock.stage("1/5 data", "data")
    for _, dataset in plan:  # the default sizes are generated once, then reused from the cache
        if sizes.data_n is None:
            ensure_generated(dataset, root=data_root)
        else:
            generate(dataset, root=data_root, n=sizes.data_n)
    reports = []
    for modality, dataset in plan:
        run = out / f"{modality}-baseline"
        clock.stage(f"2/5 train {modality} chip-native baseline and its ANN twin", "train")
        common = dict(model="baseline", dataset=dataset, root=data_root, epochs=sizes.epochs[modality],
                      max_samples=sizes.max_train, seed=0)
        train_run(out=run, chip_native=True, ann=False, **common)
        train_run(out=Path(f"{run}_ann"), chip_native=True, ann=True, **common)
        clock.stage(f"3/5 export {modality} to NIR and ONNX", "export")
        export_run(run, samples=min(8, sizes.test_samples or 8))
        clock.stage(f"4/5 deploy {modality} to Loihi 2 and Speck", "deploy")
        deploy_run(run, target="loihi2", engine="lava", samples=sizes.lava_samples)
        lava_stats = (run / "deploy" / "loihi2" / "stats.json").read_text()
        (run / "deploy" / "loihi2" / "stats_lava.json").write_text(lava_stats)
        deploy_run(run, target="loihi2", engine="fast", samples=sizes.test_samples)
        deploy_run(run, target="speck", samples=sizes.test_samples)
        clock.stage(f"5/5 report {modality}", "report")
        reports.append(report_run(run, chips=["loihi2", "speck"], baseline=EDGE_BASELINE))
    console.print(f"demo finished in {time.perf_counter() - t0:.0f} s ({clock.summary()})")
    for (modality, _), energy in zip(plan, reports):
        console.print(f"  {modality}: {out / f'{modality}-baseline' / 'report' / 'energy.md'}")
        # per chip: energy per inference and the ratio, sensor-paced and throughput, side by side
        for line in summary_lines(energy):
            console.print(f"    {line}", markup=False, highlight=False)
        # the same against the 45 nm per-operation model: no idle power, so its sensor-paced ratio
        # charges static power to the chip only (a one-sided lower bound of a GPU, labelled as such)
        bound = (energy.other_baselines or {}).get(LOWER_BOUND, {})
        for chip, r in bound.get("chips", {}).items():
            console.print(f"    {chip} vs {LOWER_BOUND} (no idle power: one-sided lower bound): "
                          f"sensor-paced ratio {r['sensor_paced_ratio']:.3g}x "
                          f"({ratio_words(r['sensor_paced_ratio'])}), throughput ratio {r['throughput_ratio']:.3g}x "
                          f"({ratio_words(r['throughput_ratio'])})", markup=False, highlight=False)
    return out
