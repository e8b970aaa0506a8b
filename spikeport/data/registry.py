"""The dataset registry: names, shapes, generation, and frame tensors for training.

``load_tensors(name, split)`` returns ``(x, y)``: ``x`` float32 ``[N, T, *input_shape]`` spike
counts per bin, ``y`` int64 ``[N]``; for ``av-digits`` ``x`` is ``(x_visual, x_audio)``.
Splits: ``train`` and ``test`` are the dataset's own; ``val`` is a seeded 10% slice of the train
split (the rest is ``train``; SSC uses its official valid file). Embedded datasets are generated
into the cache at first use (with generation seed 0; ``seed`` here only picks the val slice and
the ``max_samples`` subset). Binned frames are cached, keyed by the files, preprocessing, T and
selected samples. See ``spikeport.data.preprocess`` for the binning choices.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from spikeport.data import cache, preprocess, sources
from spikeport.data.parallel import map_progress
from spikeport.errors import DataError

SPLITS = ("train", "val", "test")
VAL_FRACTION = 0.1
FRAMES_VERSION = 1


@dataclass(frozen=True)
class DatasetMeta:
    name: str
    modality: str                       # "visual" | "audio" | "audiovisual"
    input_shape: list[int]              # per time step (audiovisual: the visual shape)
    num_classes: int
    timesteps: int                      # default T
    dt: float                           # seconds a bin (audiovisual: the visual stream's)
    input_shapes: Optional[list[list[int]]] = None   # audiovisual: [visual, audio]
    dts: Optional[list[float]] = None                # audiovisual: [visual, audio]
    embedded: bool = False
    family: str = ""                    # tonic reader: NMNIST | SHD | SSC | DVSGesture
    denoise_us: Optional[int] = None
    description: str = ""


DATASETS: dict[str, DatasetMeta] = {
    "nmnist-embedded": DatasetMeta(
        "nmnist-embedded", "visual", [2, 34, 34], 10, 25, 0.012, embedded=True, family="NMNIST",
        denoise_us=10_000, description="scikit-learn digits as N-MNIST-like event recordings "
        "(3 saccades, 300 ms, 34x34x2), N-MNIST file format"),
    "shd-embedded": DatasetMeta(
        "shd-embedded", "audio", [700], 20, 100, 0.010, embedded=True, family="SHD",
        description="spoken digits 0-9 in English and German (espeak-ng voices) through a "
        "700-channel cochlear model, SHD HDF5 format; test voices unseen in training"),
    "av-digits": DatasetMeta(
        "av-digits", "audiovisual", [2, 34, 34], 10, 25, 0.012, input_shapes=[[2, 34, 34], [700]],
        dts=[0.012, 0.040], embedded=True, family="NMNIST+SHD",
        description="pairs (nmnist-embedded sample, English shd-embedded sample) of the same "
        "digit 0-9; T bins of 12 ms (visual) and 40 ms (audio)"),
    "nmnist": DatasetMeta(
        "nmnist", "visual", [2, 34, 34], 10, 25, 0.001, family="NMNIST", denoise_us=10_000,
        description="N-MNIST (real), first 25 ms in 1 ms bins as seed A"),
    "shd": DatasetMeta("shd", "audio", [700], 20, 100, 0.010, family="SHD",
                       description="Spiking Heidelberg Digits (real)"),
    "ssc": DatasetMeta("ssc", "audio", [700], 35, 100, 0.010, family="SSC",
                       description="Spiking Speech Commands (real)"),
    "dvsgesture": DatasetMeta(
        "dvsgesture", "visual", [2, 128, 128], 11, 30, 0.050, family="DVSGesture",
        denoise_us=10_000, description="IBM DVS Gesture (tonic's release, real)"),
}

SENSORS = {"NMNIST": (34, 34, 2), "SHD": (700, 1, 1), "SSC": (700, 1, 1),
           "DVSGesture": (128, 128, 2)}


def meta(name: str) -> DatasetMeta:
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}' (known: {', '.join(DATASETS)})")
    return DATASETS[name]


# ----------------------------------------------------------------------------------------------
# where the files are, and generation

def _root(name: str, root: str | os.PathLike | None) -> Path:
    if root is not None:
        return Path(root).expanduser().resolve()
    m = meta(name)
    return (cache.default_embedded_root() if m.embedded else cache.default_real_root()).resolve()


def _generated(name: str, root: Path) -> bool:
    if name == "nmnist-embedded":
        return (root / "NMNIST" / "spikeport.json").is_file()
    if name == "shd-embedded":
        return (root / "SHD" / "spikeport.json").is_file()
    return _generated("nmnist-embedded", root) and _generated("shd-embedded", root)


def generate(name: str, root: str | os.PathLike | None = None, n: int | None = None,
             seed: int = 0, progress: bool = True) -> Path:
    """Generate an embedded dataset (deterministic from ``seed``) under ``root``; returns the root.

    ``n`` is the number of samples in all (train + test); None means the default size. For
    ``av-digits`` both underlying sets are generated with that ``n`` each.
    """
    m = meta(name)
    if not m.embedded:
        raise DataError(f"'{name}' is a real dataset: it cannot be generated; place the official "
                        f"files under --root (see `spikeport data info --dataset {name}`)")
    if n is not None and n < 1:
        raise DataError(f"--n must be at least 1 (got {n})")
    root = _root(name, root)
    sources.open_split.cache_clear()   # readers opened before list the old files
    if name in ("nmnist-embedded", "av-digits"):
        from spikeport.data.embedded_visual import write_dataset
        write_dataset(root, n=n, seed=seed, progress=progress)
    if name in ("shd-embedded", "av-digits"):
        from spikeport.data.embedded_audio import write_dataset
        write_dataset(root, n=n, seed=seed, progress=progress)
    return root


def ensure_generated(name: str, root: str | os.PathLike | None = None) -> Path:
    """The dataset's root, generating an embedded set there first only if it is missing."""
    return _ensure(name, root)


def _ensure(name: str, root: str | os.PathLike | None) -> Path:
    """The dataset root; an embedded set missing there is generated first (default size, seed 0).

    A lock file serialises first-use generation, so two training processes started together
    generate once and both read the same files.
    """
    path = _root(name, root)
    if not meta(name).embedded or _generated(name, path):
        return path
    import fcntl

    path.mkdir(parents=True, exist_ok=True)
    with open(path / ".generate.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for part in ("nmnist-embedded", "shd-embedded"):
            if name in (part, "av-digits") and not _generated(part, path):
                generate(part, path)
    return path


# ----------------------------------------------------------------------------------------------
# splits and frames

def _family_split(m: DatasetMeta, split: str) -> str:
    """The file split a requested split reads from."""
    if split == "val":
        return "valid" if m.family == "SSC" else "train"
    return split


def _select(m: DatasetMeta, root: Path, split: str, seed: int,
            max_samples: int | None) -> tuple[str, np.ndarray, np.ndarray]:
    """(file split, indices, labels) of the requested split, seeded val slice and subset."""
    fsplit = _family_split(m, split)
    y_all = sources.labels(m.family, str(root), fsplit)
    idx = np.arange(len(y_all))
    if fsplit == "train" and split in ("train", "val"):
        perm = np.random.default_rng(np.random.SeedSequence([seed, 11])).permutation(len(idx))
        n_val = max(1, int(round(len(idx) * VAL_FRACTION))) if len(idx) > 1 else 0
        idx = np.sort(perm[:n_val] if split == "val" else perm[n_val:])
    if max_samples is not None and max_samples < len(idx):
        pick = np.random.default_rng(np.random.SeedSequence([seed, 12])).permutation(len(idx))
        idx = np.sort(idx[pick[:max_samples]])
    return fsplit, idx, y_all[idx]


def _bin_one(job: tuple) -> np.ndarray:
    family, root, fsplit, index, prep = job
    events, _ = sources.read(family, root, fsplit, index)
    return prep(events)


def _frames(m: DatasetMeta, root: Path, split: str, prep: preprocess.Preprocess,
            max_samples: int | None, seed: int, progress: bool = True
            ) -> tuple[torch.Tensor, torch.Tensor]:
    fsplit, idx, y = _select(m, root, split, seed, max_samples)
    key = {"dataset": m.name, "split": split, "family": m.family, "root": str(root),
           "file_split": fsplit, "version": FRAMES_VERSION, "prep": prep.key(),
           "indices": cache.digest(idx.tolist()),
           "files": cache.digest(sources.fingerprint(m.family, str(root), fsplit, idx))}
    hit = cache.load_frames(key)
    if hit is not None:
        return hit[0].float(), hit[1]
    jobs = [(m.family, str(root), fsplit, int(i), prep) for i in idx]
    frames = map_progress(_bin_one, jobs, desc=f"binning {m.name} {split}", chunksize=8,
                          progress=progress)
    x = torch.from_numpy(np.stack(frames)) if frames else \
        torch.zeros((0, prep.timesteps, *prep.frame_shape()), dtype=torch.int16)
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    cache.save_frames(key, x, yt)
    return x.float(), yt


def preprocessing(name: str, timesteps: int | None = None, bin_s: float | None = None) -> preprocess.Preprocess:
    """The preprocessing ``load_tensors`` applies to ``name`` (single-modality datasets);
    ``bin_s`` overrides the dataset's bin width."""
    m = meta(name)
    if bin_s is not None and not bin_s > 0:
        raise DataError(f"bin width must be positive (got {bin_s} s)")
    return preprocess.Preprocess(sensor_size=SENSORS[m.family], timesteps=timesteps or m.timesteps,
                                 dt_us=int(round((bin_s or m.dt) * 1e6)), denoise_us=m.denoise_us)


def load_tensors(name: str, split: str, root: str | os.PathLike | None = None,
                 timesteps: int | None = None, max_samples: int | None = None, seed: int = 0,
                 progress: bool = True, bin_s: float | None = None):
    """Frame tensors of one split: ``(x, y)``; see the module docstring."""
    m = meta(name)
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, not '{split}'")
    if timesteps is not None and timesteps < 1:
        raise DataError(f"timesteps must be at least 1 (got {timesteps})")
    path = _ensure(name, root)
    # re-open and re-check the files on every call (they may have changed since the last one);
    # within the call, workers share the opened readers
    sources.open_split.cache_clear()
    if name == "av-digits":
        from spikeport.data.av import load_pairs
        return load_pairs(path, split, timesteps or m.timesteps, max_samples, seed, progress)
    return _frames(m, path, split, preprocessing(name, timesteps, bin_s), max_samples, seed, progress)


# ----------------------------------------------------------------------------------------------
# description

def _split_summary(m: DatasetMeta, root: Path, fsplit: str, probe: int = 20) -> str:
    y = sources.labels(m.family, str(root), fsplit)
    counts = np.bincount(y, minlength=m.num_classes)
    rng = np.random.default_rng(0)
    sample = rng.choice(len(y), size=min(probe, len(y)), replace=False)
    n_ev = [len(sources.read(m.family, str(root), fsplit, int(i))[0]) for i in sample]
    unit = "spikes" if m.family in ("SHD", "SSC") else "events"
    return (f"  {fsplit}: {len(y)} samples, per class min {counts.min()} max {counts.max()}, "
            f"{unit} per sample ~{np.mean(n_ev):.0f} (mean of {len(n_ev)})")


def info(name: str, root: str | os.PathLike | None = None) -> str:
    """A description of a dataset: location, splits, classes, sizes, events per sample."""
    m = meta(name)
    path = _root(name, root)
    sources.open_split.cache_clear()
    lines = [f"{m.name}: {m.description}",
             f"  modality {m.modality}, {m.num_classes} classes, input "
             f"{m.input_shapes or m.input_shape} per step, default T={m.timesteps}, "
             f"dt={m.dts or m.dt} s",
             f"  location: {path}"]
    if m.embedded and not _generated(name, path):
        lines.append(f"  not generated yet: `spikeport data generate --dataset {name}"
                     f"{'' if root is None else f' --root {path}'}` (or first use generates it)")
        return "\n".join(lines)
    parts = [m] if name != "av-digits" else [DATASETS["nmnist-embedded"], DATASETS["shd-embedded"]]
    for part in parts:
        if name == "av-digits":
            lines.append(f"  {part.name}:")
        for meta_file in (path / part.family / "spikeport.json",):
            if meta_file.is_file():
                gen = json.loads(meta_file.read_text())
                lines.append(f"  generated: seed {gen.get('seed')}, n {gen.get('n') or 'default'}"
                             f", generator v{gen.get('generator_version')}")
        fam_splits = ("train", "valid", "test") if part.family == "SSC" else ("train", "test")
        for fs in fam_splits:
            lines.append(_split_summary(part, path, fs))
    if name == "av-digits":
        lines.append("  pairs: every visual sample with an English audio sample of its digit")
    return "\n".join(lines)
