"""Training configuration: defaults (the first paper's recipe, FACTS §6), a YAML file, range checks.

A config file holds the ``spikeport train`` options as keys (``model``, ``dataset``, ``epochs``,
``batch_size``, ``lr``, ...) plus the recipe keys below; options given on the command line
override the file. Every value is checked here, and a bad one raises ConfigError naming its key.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from spikeport.errors import ConfigError

#: Default epochs on the embedded datasets: measured to reach ~91 % (visual) and ~97 % (audio) with the
#: chip-native baseline in about a minute each on a 2-core CPU. Real N-MNIST: 100 epochs over the
#: training recordings, each batch freshly augmented (DEFAULT_REGULARISERS), cosine to the end
#: (with BatchNorm, train.run.DEFAULT_BATCH_NORM): 40 epochs still underfit (train accuracy ~93 %
#: on the augmented batches, 98-99 % at 100). The other real datasets get the paper's epoch counts.
DEFAULT_EPOCHS = {"nmnist-embedded": 15, "shd-embedded": 20, "av-digits": 10,
                  "nmnist": 100, "shd": 40, "ssc": 40, "dvsgesture": 30}
FALLBACK_EPOCHS = 10
#: TrainConfig regularisers a dataset's training gets unless given (``spikeport train`` fills
#: them in; a config file or option overrides each). Real N-MNIST: a fresh random shift (up to
#: 3 px) and 10 % event drop for every batch, label smoothing 0.1 and an EMA of the weights
#: (decay 0.995, ~9 epochs of 23 steps), with BatchNorm (train.run.DEFAULT_BATCH_NORM) and 100
#: epochs. Chosen on the 80 validation recordings of three folds (never the held-out 200; mean of
#: the last 5 epochs, folds 0/1/2, bench/tune_real.py): 94.8/95.8/97.5 % with BatchNorm and 100
#: epochs, against 91.5/91.5/95.3 % for the former 40 epochs without BatchNorm, 93.3/92.3/96.8 %
#: for 100 epochs without and 92.3/94.3/95.0 % for 40 epochs with it (README "Real N-MNIST").
DEFAULT_REGULARISERS: dict[str, dict[str, Any]] = {
    "nmnist": {"shift_px": 3, "drop_p": 0.1, "label_smoothing": 0.1, "ema": 0.995},
}
#: Learning rate of the whole-chip (chip-native baseline/scl) SNNs when none is given. Their
#: integrate-and-fire layers learn slowly at the paper's 1e-3: on nmnist-embedded, 3 epochs
#: reach 31% test accuracy at 1e-3 and 72% at 5e-3 (same seed, same data).
CHIP_NATIVE_LR = 5e-3


@dataclass
class TrainConfig:
    """The training recipe. Defaults: AdamW lr 1e-3, wd 1e-4, cosine to 1e-6, clip 1, batch 32."""

    epochs: int = FALLBACK_EPOCHS
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    min_lr: float = 1e-6
    grad_clip: float = 1.0
    patience: int = 5          # epochs without a better val accuracy before stopping early
    seed: int = 0
    device: str | None = None  # None: cuda when present, else cpu
    amp: bool = True           # mixed precision on CUDA (ignored on CPU)
    eval_batch_size: int = 256
    progress: bool | None = None  # progress bar: None = when the output is a terminal
    # Regularisers (all off by default). ``shift_px``/``drop_p``: random frame augmentation of
    # every training batch (spikeport.data.preprocess.augment_frames); ``label_smoothing``: of the
    # cross-entropy; ``spike_dropout``: dropout on hidden spike trains of chip-native SNNs while
    # training (the exported model has none); ``ema``: decay of an exponential moving average of
    # the weights, which is what is validated and kept (0: off).
    shift_px: int = 0
    drop_p: float = 0.0
    label_smoothing: float = 0.0
    spike_dropout: float = 0.0
    ema: float = 0.0
    # Linear learning-rate warmup over the first ``warmup_epochs`` epochs (from lr / 100), then the
    # cosine over the remaining steps (0: cosine from the first step, as before).
    warmup_epochs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in data.items() if k in known})
        cfg.validate()
        return cfg

    def validate(self) -> "TrainConfig":
        def need(key: str, ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(f"{key}: {what}, got {getattr(self, key)!r}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        need("epochs", is_int(self.epochs) and self.epochs >= 1, "must be an integer >= 1")
        need("batch_size", is_int(self.batch_size) and self.batch_size >= 1, "must be an integer >= 1")
        need("lr", is_num(self.lr) and 0 < self.lr <= 10, "must be a number in (0, 10]")
        need("weight_decay", is_num(self.weight_decay) and self.weight_decay >= 0, "must be a number >= 0")
        need("min_lr", is_num(self.min_lr) and 0 <= self.min_lr <= self.lr, "must be in [0, lr]")
        need("grad_clip", is_num(self.grad_clip) and self.grad_clip > 0, "must be a number > 0")
        need("patience", is_int(self.patience) and self.patience >= 1, "must be an integer >= 1")
        need("seed", is_int(self.seed) and self.seed >= 0, "must be an integer >= 0")
        need("device", self.device is None or str(self.device).split(":")[0] in ("cpu", "cuda"),
             "must be cpu or cuda (or cuda:N)")
        need("amp", isinstance(self.amp, bool), "must be true or false")
        need("eval_batch_size", is_int(self.eval_batch_size) and self.eval_batch_size >= 1,
             "must be an integer >= 1")
        need("shift_px", is_int(self.shift_px) and 0 <= self.shift_px <= 16, "must be an integer in [0, 16]")
        need("drop_p", is_num(self.drop_p) and 0 <= self.drop_p < 1, "must be a number in [0, 1)")
        need("label_smoothing", is_num(self.label_smoothing) and 0 <= self.label_smoothing < 1,
             "must be a number in [0, 1)")
        need("spike_dropout", is_num(self.spike_dropout) and 0 <= self.spike_dropout < 1,
             "must be a number in [0, 1)")
        need("ema", is_num(self.ema) and 0 <= self.ema < 1, "must be a number in [0, 1)")
        need("warmup_epochs", is_int(self.warmup_epochs) and 0 <= self.warmup_epochs < self.epochs,
             "must be an integer in [0, epochs)")
        return self


#: Keys a config file may hold: the CLI options and the recipe.
RUN_KEYS = ("model", "dataset", "out", "chip_native", "ann", "root", "max_samples", "timesteps",
            "width", "beta", "preset", "augment", "bin_s", "split",
            "finetune_for", "finetune_epochs", "init_from", "readout", "train_on_val", "batch_norm",
            "model_options")
CONFIG_KEYS = RUN_KEYS + tuple(f.name for f in fields(TrainConfig))


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config; unknown keys and non-mapping files are ConfigErrors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config: file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config: {path} is not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config: {path} must hold a mapping of keys to values")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"config: {path}: unknown key(s) {', '.join(unknown)}; "
                          f"valid keys: {', '.join(CONFIG_KEYS)}")
    return data
