"""What every dataset is: the interface the registry's objects implement.

A dataset has a catalogue entry (``info``: name, modality, classes, input shape(s), default T and
bin width(s)); a root folder its files live in; ``generate`` (embedded datasets only: written
offline, deterministic from a seed) and ``ensure`` (the root, generated there first if missing);
``load`` (frame tensors of one split); ``augmented`` (event-level augmented copies of the train
split, single-modality event datasets only); ``split_scheme`` (how train / val / test are cut, for
a run's records); ``describe`` (a text for ``spikeport data info``).

Implementations: ``spikeport.data.events.EventDataset`` (files read through tonic; its subclass
``EmbeddedEventDataset`` also writes them) and ``spikeport.data.av.PairedDataset`` (a composite of
a visual and an audio dataset, paired by label).
"""
from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Union

from spikeport.data import cache
from spikeport.data.catalog import DatasetMeta
from spikeport.errors import DataError

if TYPE_CHECKING:
    import torch

    from spikeport.data.preprocess import Augment

SPLITS = ("train", "val", "test")
#: ``val`` is a seeded slice of this fraction of the train files (the rest is ``train``)
VAL_FRACTION = 0.1
#: ``x`` of ``load``: ``[N, T, *input_shape]`` counts, or (visual, audio) for a paired dataset
Frames = Union["torch.Tensor", tuple["torch.Tensor", "torch.Tensor"]]


class Dataset(ABC):
    """One dataset of the registry (see the module docstring)."""

    def __init__(self, meta: DatasetMeta):
        self.meta = meta

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.meta.name!r})"

    @property
    def name(self) -> str:
        return self.meta.name

    def info(self) -> DatasetMeta:
        """Name, modality, classes, input shape(s), default T, bin width(s)."""
        return self.meta

    # ------------------------------------------------------------------------------------------
    # files

    def root(self, root: str | os.PathLike | None = None) -> Path:
        """The folder the files are in: ``root``, or the cache's embedded / real folder."""
        if root is not None:
            return Path(root).expanduser().resolve()
        return (cache.default_embedded_root() if self.meta.embedded else cache.default_real_root()).resolve()

    def generated(self, root: Path) -> bool:
        """Whether an embedded dataset's files are there (real files are never generated)."""
        return True

    def generate(self, root: str | os.PathLike | None = None, n: int | None = None, seed: int = 0,
                 progress: bool = True) -> Path:
        """Write an embedded dataset (deterministic from ``seed``) under ``root``; returns the root.
        ``n``: samples in all (train + test), None for the default size."""
        raise DataError(f"'{self.name}' is a real dataset: it cannot be generated; place the official "
                        f"files under --root (see `spikeport data info --dataset {self.name}`)")

    def ensure(self, root: str | os.PathLike | None = None) -> Path:
        """The root; an embedded dataset missing there is generated first (default size, seed 0)."""
        return self.root(root)

    # ------------------------------------------------------------------------------------------
    # tensors

    def load(self, split: str, root: str | os.PathLike | None = None, *, timesteps: int | None = None,
             max_samples: int | None = None, seed: int = 0, progress: bool = True,
             bin_s: float | None = None) -> tuple[Frames, "torch.Tensor"]:
        """Frame tensors ``(x, y)`` of one split: ``x`` float32 counts (see ``Frames``), ``y`` int64
        ``[N]``. ``timesteps`` / ``bin_s`` override the default T and bin width; ``seed`` picks the
        val slice and the ``max_samples`` subset."""
        if split not in SPLITS:
            raise DataError(f"split must be one of {', '.join(SPLITS)}, not '{split}'")
        if timesteps is not None and timesteps < 1:
            raise DataError(f"timesteps must be at least 1 (got {timesteps})")
        if bin_s is not None and not bin_s > 0:
            raise DataError(f"bin width must be positive (got {bin_s} s)")
        return self._load(split, self.ensure(root), timesteps, max_samples, seed, progress, bin_s)

    @abstractmethod
    def _load(self, split: str, root: Path, timesteps: int | None, max_samples: int | None, seed: int,
              progress: bool, bin_s: float | None) -> tuple[Frames, "torch.Tensor"]:
        """``load`` on an ensured root, arguments checked."""

    def augmented(self, root: str | os.PathLike | None = None, copies: int = 1,
                  augment: "Augment | None" = None, timesteps: int | None = None,
                  max_samples: int | None = None, seed: int = 0, progress: bool = True,
                  bin_s: float | None = None) -> tuple["torch.Tensor", "torch.Tensor"]:
        """``copies`` event-level augmented copies of the train split (single-modality event data)."""
        raise DataError(f"augmentation: only single-modality event datasets, not '{self.name}'")

    # ------------------------------------------------------------------------------------------
    # records and descriptions

    def split_scheme(self, root: str | os.PathLike | None = None, seed: int = 0) -> dict:
        """How the dataset under ``root`` is split into train / val / test (for a run's records)."""
        return {"scheme": "official", "test": "the dataset's own test split",
                "val_fraction": VAL_FRACTION, "val_seed": int(seed)}

    def describe(self, root: str | os.PathLike | None = None) -> str:
        """Location, splits, classes, sizes, events per sample (``spikeport data info``)."""
        m = self.meta
        path = self.root(root)
        lines = [f"{m.name}: {m.description}",
                 f"  modality {m.modality}, {m.num_classes} classes, input "
                 f"{m.input_shapes or m.input_shape} per step, default T={m.timesteps}, "
                 f"dt={m.dts or m.dt} s",
                 f"  location: {path}"]
        if m.embedded and not self.generated(path):
            lines.append(f"  not generated yet: `spikeport data generate --dataset {m.name}"
                         f"{'' if root is None else f' --root {path}'}` (or first use generates it)")
            return "\n".join(lines)
        return "\n".join(lines + self.describe_files(path))

    @abstractmethod
    def describe_files(self, root: Path) -> list[str]:
        """The lines of ``describe`` about the files under ``root`` (present or generated)."""


def generation_line(meta_file: Path) -> list[str]:
    """The ``describe`` line of an embedded dataset's generation record, if there is one."""
    if not meta_file.is_file():
        return []
    gen = json.loads(meta_file.read_text())
    return [f"  generated: seed {gen.get('seed')}, n {gen.get('n') or 'default'}"
            f", generator v{gen.get('generator_version')}"]
