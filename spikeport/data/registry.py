"""The dataset registry: names, shapes, generation, and frame tensors for training.

``load_tensors(name, split)`` returns ``(x, y)``: ``x`` float32 ``[N, T, *input_shape]`` spike
counts per bin, ``y`` int64 ``[N]``; for ``av-digits`` ``x`` is ``(x_visual, x_audio)``.
Splits: ``train`` and ``test`` are the dataset's own; ``val`` is a seeded 10% slice of the train
split (the rest is ``train``; SSC uses its official valid file). Real N-MNIST with only a
``Train`` folder (e.g. a subset of the official training set) is split by a fixed hold-out:
``test`` is a seeded 20% of the files (seed ``HOLDOUT_SEED``, independent of the training seed,
so every run and every stage scores the same recordings), ``val`` a seeded 10% of the rest and
``train`` the remainder; ``split_scheme`` describes which split a root gets. Embedded datasets are generated
into the cache at first use (with generation seed 0; ``seed`` here only picks the val slice and
the ``max_samples`` subset). Binned frames are cached, keyed by the files, preprocessing, T and
selected samples. See ``spikeport.data.preprocess`` for the binning choices.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from spikeport.data import cache, preprocess, sources
from spikeport.data.parallel import map_progress
from spikeport.errors import DataError

SPLITS = ("train", "val", "test")
VAL_FRACTION = 0.1
FRAMES_VERSION = 1
#: Real N-MNIST without a Test folder: the fraction of the Train files held out as ``test``, and
#: the fixed seed that picks them (not the training seed: the hold-out never moves).
HOLDOUT_FRACTION = 0.2
HOLDOUT_SEED = 0


from spikeport.data.catalog import DATASETS, PRESETS, SENSORS, DatasetMeta  # noqa: E402,F401 (re-exported)


def meta(name: str) -> DatasetMeta:
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}' (known: {', '.join(DATASETS)})")
    return DATASETS[name]


def preset_names(name: str) -> list[str]:
    """The binning presets of a dataset: always "default", plus its named ones."""
    return ["default", *PRESETS.get(name, {})]


def preset(name: str, preset_name: str | None = None) -> tuple[int, float]:
    """(timesteps, bin width in seconds) of a dataset's binning preset (None: "default")."""
    m = meta(name)
    if preset_name in (None, "default"):
        return int(m.timesteps), float(m.dt)
    presets = PRESETS.get(name, {})
    if preset_name not in presets:
        raise DataError(f"preset: dataset '{name}' has no preset '{preset_name}' "
                        f"(presets: {', '.join(preset_names(name))})")
    t, dt = presets[preset_name]
    return int(t), float(dt)


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


def _uses_holdout(m: DatasetMeta, root: Path) -> bool:
    """Real N-MNIST with a Train folder and no Test folder: test is a fixed hold-out of Train."""
    from spikeport.data import nmnist
    return (m.family == "NMNIST" and not m.embedded and nmnist.split_folder(root, "train").is_dir()
            and not nmnist.split_folder(root, "test").is_dir())


def holdout_indices(n: int) -> np.ndarray:
    """The sorted indices (into the Train files, tonic's order) held out as ``test``: a fixed
    seeded ``HOLDOUT_FRACTION`` of ``n`` (seed ``HOLDOUT_SEED``)."""
    if n < 2:
        return np.zeros(0, dtype=np.int64)
    perm = np.random.default_rng(np.random.SeedSequence([HOLDOUT_SEED, 13])).permutation(n)
    return np.sort(perm[: max(1, int(round(n * HOLDOUT_FRACTION)))])


def split_scheme(name: str, root: str | os.PathLike | None = None, seed: int = 0) -> dict:
    """How ``name`` under ``root`` is split into train / val / test (for the run's records)."""
    m = meta(name)
    path = _root(name, root)
    if name != "av-digits" and _uses_holdout(m, path):
        sources.open_split.cache_clear()
        n = len(sources.labels(m.family, str(path), "train"))
        n_test = len(holdout_indices(n))
        n_rest = n - n_test
        n_val = max(1, int(round(n_rest * VAL_FRACTION))) if n_rest > 1 else 0
        return {"scheme": "holdout", "file_split": "train", "files": n,
                "test": n_test, "val": n_val, "train": n_rest - n_val,
                "test_fraction": HOLDOUT_FRACTION, "holdout_seed": HOLDOUT_SEED,
                "val_fraction": VAL_FRACTION, "val_seed": int(seed),
                "note": "test = a fixed seeded hold-out of the Train files (no Test folder); "
                        "val = a seeded slice of the rest (early stopping); train = the remainder"}
    return {"scheme": "official", "test": "the dataset's own test split",
            "val_fraction": VAL_FRACTION, "val_seed": int(seed)}


def _select(m: DatasetMeta, root: Path, split: str, seed: int,
            max_samples: int | None) -> tuple[str, np.ndarray, np.ndarray]:
    """(file split, indices, labels) of the requested split, seeded val slice and subset."""
    holdout = _uses_holdout(m, root)
    fsplit = "train" if holdout else _family_split(m, split)
    y_all = sources.labels(m.family, str(root), fsplit)
    idx = np.arange(len(y_all))
    if holdout:
        held = holdout_indices(len(idx))
        idx = held if split == "test" else np.setdiff1d(idx, held)
    if fsplit == "train" and split in ("train", "val"):
        perm = np.random.default_rng(np.random.SeedSequence([seed, 11])).permutation(len(idx))
        n_val = max(1, int(round(len(idx) * VAL_FRACTION))) if len(idx) > 1 else 0
        idx = np.sort(idx[perm[:n_val]] if split == "val" else idx[perm[n_val:]])
    if max_samples is not None and max_samples < len(idx):
        pick = np.random.default_rng(np.random.SeedSequence([seed, 12])).permutation(len(idx))
        idx = np.sort(idx[pick[:max_samples]])
    return fsplit, idx, y_all[idx]


def _bin_one(job: tuple) -> np.ndarray:
    family, root, fsplit, index, prep = job[:5]
    events, _ = sources.read(family, root, fsplit, index)
    if len(job) > 5:  # (augment, seed): an augmented copy
        augment, seed = job[5:]
        events = augment.apply(events, prep.sensor_size, seed)
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


def augmented_tensors(name: str, root: str | os.PathLike | None = None, copies: int = 1,
                      augment: preprocess.Augment | None = None, timesteps: int | None = None,
                      max_samples: int | None = None, seed: int = 0, progress: bool = True,
                      bin_s: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``copies`` event-level augmented copies of the ``train`` split (``preprocess.Augment``,
    then the same binning as ``load_tensors``): ``(x, y)`` with ``x`` uint8/int16 counts
    ``[copies * N, T, ...]`` (copy-major), cached like the plain frames. Training only: the
    val and test splits are never augmented."""
    m = meta(name)
    if m.modality not in ("visual", "audio") or name == "av-digits":
        raise DataError(f"augmentation: only single-modality event datasets, not '{name}'")
    if copies < 1:
        raise DataError(f"augmentation: copies must be at least 1 (got {copies})")
    augment = augment or preprocess.Augment()
    path = _ensure(name, root)
    sources.open_split.cache_clear()
    prep = preprocessing(name, timesteps, bin_s)
    fsplit, idx, y = _select(m, path, "train", seed, max_samples)
    key = {"dataset": m.name, "split": "train-augmented", "family": m.family, "root": str(path),
           "file_split": fsplit, "version": FRAMES_VERSION, "prep": prep.key(),
           "augment": augment.key(), "copies": int(copies), "seed": int(seed),
           "indices": cache.digest(idx.tolist()),
           "files": cache.digest(sources.fingerprint(m.family, str(path), fsplit, idx))}
    hit = cache.load_frames(key)
    if hit is not None:
        return hit
    jobs = [(m.family, str(path), fsplit, int(i), prep, augment, [int(seed), 17, c, int(i)])
            for c in range(copies) for i in idx]
    frames = map_progress(_bin_one, jobs, desc=f"augmenting {m.name} train x{copies}", chunksize=8,
                          progress=progress)
    x = torch.from_numpy(np.stack(frames)) if frames else \
        torch.zeros((0, prep.timesteps, *prep.frame_shape()), dtype=torch.int16)
    yt = torch.from_numpy(np.tile(np.asarray(y, dtype=np.int64), copies))
    cache.save_frames(key, x, yt)
    return cache.load_frames(key) or (x, yt)


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
