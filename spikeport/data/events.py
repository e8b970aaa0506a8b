"""Event datasets read from files through tonic: real ones, and embedded ones generated offline
into the same formats (so one reader serves both).

Splits: ``train`` and ``test`` are the dataset's own; ``val`` is a seeded 10% slice of the train
split (the rest is ``train``; SSC uses its official valid file). Real N-MNIST with only a
``Train`` folder (e.g. a subset of the official training set) is split by a fixed hold-out:
``test`` is a seeded 20% of the files (seed ``HOLDOUT_SEED``, independent of the training seed,
so every run and every stage scores the same recordings), ``val`` a seeded 10% of the rest and
``train`` the remainder; ``split_scheme`` describes which split a root gets. Embedded datasets
are generated into the cache at first use (with generation seed 0; ``seed`` in ``load`` only picks
the val slice and the ``max_samples`` subset). Binned frames are cached, keyed by the files,
preprocessing, T and selected samples. See ``spikeport.data.preprocess`` for the binning choices.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from spikeport.data import cache, nmnist, preprocess, sources
from spikeport.data.catalog import SENSORS, DatasetMeta
from spikeport.data.parallel import map_progress
from spikeport.data.protocol import SPLITS, VAL_FRACTION, Dataset, generation_line  # noqa: F401 (SPLITS re-exported)
from spikeport.errors import DataError

FRAMES_VERSION = 1
#: Real N-MNIST without a Test folder: the fraction of the Train files held out as ``test``, and
#: the fixed seed that picks them (not the training seed: the hold-out never moves).
HOLDOUT_FRACTION = 0.2
HOLDOUT_SEED = 0

#: Writes an embedded dataset: ``writer(root, n, seed, progress)`` -> root
Writer = Callable[[Path, Optional[int], int, bool], Path]


# ----------------------------------------------------------------------------------------------
# splits and frames (functions of the catalogue entry, shared by every event dataset)

def family_split(m: DatasetMeta, split: str) -> str:
    """The file split a requested split reads from."""
    if split == "val":
        return "valid" if m.family == "SSC" else "train"
    return split


def uses_holdout(m: DatasetMeta, root: Path) -> bool:
    """Real N-MNIST with a Train folder and no Test folder: test is a fixed hold-out of Train."""
    return (m.family == "NMNIST" and not m.embedded and nmnist.split_folder(root, "train").is_dir()
            and not nmnist.split_folder(root, "test").is_dir())


def holdout_indices(n: int) -> np.ndarray:
    """The sorted indices (into the Train files, tonic's order) held out as ``test``: a fixed
    seeded ``HOLDOUT_FRACTION`` of ``n`` (seed ``HOLDOUT_SEED``)."""
    if n < 2:
        return np.zeros(0, dtype=np.int64)
    perm = np.random.default_rng(np.random.SeedSequence([HOLDOUT_SEED, 13])).permutation(n)
    return np.sort(perm[: max(1, int(round(n * HOLDOUT_FRACTION)))])


def select(m: DatasetMeta, root: Path, split: str, seed: int,
           max_samples: int | None) -> tuple[str, np.ndarray, np.ndarray]:
    """(file split, indices, labels) of the requested split, seeded val slice and subset."""
    holdout = uses_holdout(m, root)
    fsplit = "train" if holdout else family_split(m, split)
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


def _binned(m: DatasetMeta, root: Path, key: dict, jobs: list[tuple], desc: str,
            prep: preprocess.Preprocess, y: np.ndarray, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Bin ``jobs`` (one sample each) on all cores and cache the counts under ``key``."""
    frames = map_progress(_bin_one, jobs, desc=desc, chunksize=8, progress=progress)
    x = torch.from_numpy(np.stack(frames)) if frames else \
        torch.zeros((0, prep.timesteps, *prep.frame_shape()), dtype=torch.int16)
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    cache.save_frames(key, x, yt)
    return x, yt


def frames(m: DatasetMeta, root: Path, split: str, prep: preprocess.Preprocess,
           max_samples: int | None, seed: int, progress: bool = True
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Float frames and labels of one split of ``m`` under ``root`` binned by ``prep`` (cached)."""
    fsplit, idx, y = select(m, root, split, seed, max_samples)
    key = {"dataset": m.name, "split": split, "family": m.family, "root": str(root),
           "file_split": fsplit, "version": FRAMES_VERSION, "prep": prep.key(),
           "indices": cache.digest(idx.tolist()),
           "files": cache.digest(sources.fingerprint(m.family, str(root), fsplit, idx))}
    hit = cache.load_frames(key)
    if hit is not None:
        return hit[0].float(), hit[1]
    jobs = [(m.family, str(root), fsplit, int(i), prep) for i in idx]
    x, yt = _binned(m, root, key, jobs, f"binning {m.name} {split}", prep, y, progress)
    return x.float(), yt


def split_summary(m: DatasetMeta, root: Path, fsplit: str, probe: int = 20) -> str:
    """One ``describe`` line: samples, per-class counts, events per sample of a file split."""
    y = sources.labels(m.family, str(root), fsplit)
    counts = np.bincount(y, minlength=m.num_classes)
    rng = np.random.default_rng(0)
    sample = rng.choice(len(y), size=min(probe, len(y)), replace=False)
    n_ev = [len(sources.read(m.family, str(root), fsplit, int(i))[0]) for i in sample]
    unit = "spikes" if m.family in ("SHD", "SSC") else "events"
    return (f"  {fsplit}: {len(y)} samples, per class min {counts.min()} max {counts.max()}, "
            f"{unit} per sample ~{np.mean(n_ev):.0f} (mean of {len(n_ev)})")


# ----------------------------------------------------------------------------------------------
# the datasets

class EventDataset(Dataset):
    """A single-modality event dataset in one of the tonic-read families (``meta.family``)."""

    def __init__(self, meta: DatasetMeta):
        if meta.family not in SENSORS:
            raise ValueError(f"{meta.name}: family {meta.family!r} has no reader "
                             f"(readers: {', '.join(SENSORS)})")
        super().__init__(meta)

    def preprocessing(self, timesteps: int | None = None, bin_s: float | None = None) -> preprocess.Preprocess:
        """The binning ``load`` applies; ``timesteps`` / ``bin_s`` override the defaults."""
        m = self.meta
        if bin_s is not None and not bin_s > 0:
            raise DataError(f"bin width must be positive (got {bin_s} s)")
        return preprocess.Preprocess(sensor_size=SENSORS[m.family], timesteps=timesteps or m.timesteps,
                                     dt_us=int(round((bin_s or m.dt) * 1e6)), denoise_us=m.denoise_us)

    def _load(self, split: str, root: Path, timesteps: int | None, max_samples: int | None, seed: int,
              progress: bool, bin_s: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        # re-open and re-check the files on every call (they may have changed since the last
        # one); within the call, workers share the opened readers
        sources.open_split.cache_clear()
        return frames(self.meta, root, split, self.preprocessing(timesteps, bin_s), max_samples, seed,
                      progress)

    def augmented(self, root: str | os.PathLike | None = None, copies: int = 1,
                  augment: preprocess.Augment | None = None, timesteps: int | None = None,
                  max_samples: int | None = None, seed: int = 0, progress: bool = True,
                  bin_s: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``copies`` event-level augmented copies of the ``train`` split (``preprocess.Augment``,
        then the same binning as ``load``): ``(x, y)`` with ``x`` uint8/int16 counts
        ``[copies * N, T, ...]`` (copy-major), cached like the plain frames. Training only: the
        val and test splits are never augmented."""
        m = self.meta
        if copies < 1:
            raise DataError(f"augmentation: copies must be at least 1 (got {copies})")
        augment = augment or preprocess.Augment()
        path = self.ensure(root)
        sources.open_split.cache_clear()
        prep = self.preprocessing(timesteps, bin_s)
        fsplit, idx, y = select(m, path, "train", seed, max_samples)
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
        x, yt = _binned(m, path, key, jobs, f"augmenting {m.name} train x{copies}", prep,
                        np.tile(np.asarray(y, dtype=np.int64), copies), progress)
        return cache.load_frames(key) or (x, yt)

    def split_scheme(self, root: str | os.PathLike | None = None, seed: int = 0) -> dict:
        m = self.meta
        path = self.root(root)
        if not uses_holdout(m, path):
            return super().split_scheme(root, seed)
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

    def describe_files(self, root: Path) -> list[str]:
        m = self.meta
        sources.open_split.cache_clear()
        lines = generation_line(root / m.family / "spikeport.json")
        fam_splits = ("train", "valid", "test") if m.family == "SSC" else ("train", "test")
        return lines + [split_summary(m, root, fs) for fs in fam_splits]


class EmbeddedEventDataset(EventDataset):
    """An event dataset spikeport writes itself (``writer``) into the real family's layout, with a
    generation record ``<root>/<family>/spikeport.json`` written last (its presence means done)."""

    def __init__(self, meta: DatasetMeta, writer: Writer):
        if not meta.embedded:
            raise ValueError(f"{meta.name}: not an embedded dataset")
        super().__init__(meta)
        self.writer = writer

    def generated(self, root: Path) -> bool:
        return (Path(root) / self.meta.family / "spikeport.json").is_file()

    def generate(self, root: str | os.PathLike | None = None, n: int | None = None, seed: int = 0,
                 progress: bool = True) -> Path:
        if n is not None and n < 1:
            raise DataError(f"--n must be at least 1 (got {n})")
        path = self.root(root)
        sources.open_split.cache_clear()   # readers opened before list the old files
        self.writer(path, n, seed, progress)
        return path

    def ensure(self, root: str | os.PathLike | None = None) -> Path:
        """The root, generated first if missing. A lock file serialises first-use generation, so
        two training processes started together generate once and both read the same files."""
        path = self.root(root)
        if self.generated(path):
            return path
        import fcntl

        path.mkdir(parents=True, exist_ok=True)
        with open(path / ".generate.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.generated(path):
                self.generate(path)
        return path
