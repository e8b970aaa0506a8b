"""The dataset registry: one dataset object per name (``get``), and the functions other stages call.

Every dataset implements ``spikeport.data.protocol.Dataset`` (info / generate / ensure / load /
augmented / split_scheme / describe): the event datasets of ``spikeport.data.events`` (real, or
embedded and generated offline) and the composite ``av-digits`` of ``spikeport.data.av``, built
from ``nmnist-embedded`` and ``shd-embedded``. Names are checked, and pair names
``VISUAL+AUDIO`` parsed, by ``spikeport.data.names``.

``load_tensors(name, split)`` returns ``(x, y)``: ``x`` float32 ``[N, T, *input_shape]`` spike
counts per bin, ``y`` int64 ``[N]``; for ``av-digits`` ``x`` is ``(x_visual, x_audio)``. Splits,
the fixed hold-out of real N-MNIST without a Test folder and the frame cache are described in
``spikeport.data.events``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

from spikeport.data import preprocess
from spikeport.data.av import PairedDataset
from spikeport.data.catalog import DATASETS, PRESETS, SENSORS, DatasetMeta  # noqa: F401 (re-exported)
from spikeport.data.events import (FRAMES_VERSION, HOLDOUT_FRACTION, HOLDOUT_SEED,  # noqa: F401
                                   EmbeddedEventDataset, EventDataset, holdout_indices)
from spikeport.data.events import frames as _frames  # noqa: F401 (kept for older callers)
from spikeport.data.events import select as _select  # noqa: F401
from spikeport.data.names import (DatasetNameError, is_pair, joint_parts, meta, pair_name,  # noqa: F401
                                  parts, valid_names)
from spikeport.data.protocol import SPLITS, VAL_FRACTION, Dataset, Frames  # noqa: F401
from spikeport.errors import DataError


def _write_nmnist_embedded(root: Path, n: Optional[int], seed: int, progress: bool) -> Path:
    from spikeport.data.embedded_visual import write_dataset  # scipy / scikit-learn: only to generate
    return write_dataset(root, n=n, seed=seed, progress=progress)


def _write_shd_embedded(root: Path, n: Optional[int], seed: int, progress: bool) -> Path:
    from spikeport.data.embedded_audio import write_dataset  # espeak-ng: only to generate
    return write_dataset(root, n=n, seed=seed, progress=progress)


#: The generator of each embedded event dataset.
WRITERS = {"nmnist-embedded": _write_nmnist_embedded, "shd-embedded": _write_shd_embedded}


def _build() -> dict[str, Dataset]:
    """One object per catalogue entry: event datasets first, then composites of them."""
    out: dict[str, Dataset] = {}
    for name, m in DATASETS.items():
        if m.parts is None:
            out[name] = EmbeddedEventDataset(m, WRITERS[name]) if m.embedded else EventDataset(m)
    for name, m in DATASETS.items():
        if m.parts is not None:
            out[name] = PairedDataset(m, out[m.parts[0]], out[m.parts[1]])
    return {name: out[name] for name in DATASETS}   # catalogue order


#: name -> dataset object
REGISTRY: dict[str, Dataset] = _build()


def get(name: str) -> Dataset:
    """The dataset called ``name`` (one ConfigError naming it and the valid names if unknown)."""
    return REGISTRY[meta(name).name]


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
# the functions other stages call (each one the dataset object's method)

def generate(name: str, root: str | os.PathLike | None = None, n: int | None = None,
             seed: int = 0, progress: bool = True) -> Path:
    """Generate an embedded dataset (deterministic from ``seed``) under ``root``; returns the root.

    ``n`` is the number of samples in all (train + test); None means the default size. For
    ``av-digits`` both underlying sets are generated with that ``n`` each.
    """
    return get(name).generate(root, n=n, seed=seed, progress=progress)


def ensure_generated(name: str, root: str | os.PathLike | None = None) -> Path:
    """The dataset's root, generating an embedded set there first only if it is missing."""
    return get(name).ensure(root)


def split_scheme(name: str, root: str | os.PathLike | None = None, seed: int = 0) -> dict:
    """How ``name`` under ``root`` is split into train / val / test (for the run's records)."""
    return get(name).split_scheme(root, seed)


def preprocessing(name: str, timesteps: int | None = None, bin_s: float | None = None) -> preprocess.Preprocess:
    """The preprocessing ``load_tensors`` applies to ``name`` (single-modality datasets);
    ``bin_s`` overrides the dataset's bin width."""
    ds = get(name)
    if not isinstance(ds, EventDataset):
        raise DataError(f"preprocessing: '{name}' is built from {', '.join(ds.meta.parts or ())}; "
                        "ask each part")
    return ds.preprocessing(timesteps, bin_s)


def augmented_tensors(name: str, root: str | os.PathLike | None = None, copies: int = 1,
                      augment: preprocess.Augment | None = None, timesteps: int | None = None,
                      max_samples: int | None = None, seed: int = 0, progress: bool = True,
                      bin_s: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``copies`` event-level augmented copies of the ``train`` split (see
    ``EventDataset.augmented``); single-modality event datasets only."""
    return get(name).augmented(root, copies=copies, augment=augment, timesteps=timesteps,
                               max_samples=max_samples, seed=seed, progress=progress, bin_s=bin_s)


def load_tensors(name: str, split: str, root: str | os.PathLike | None = None,
                 timesteps: int | None = None, max_samples: int | None = None, seed: int = 0,
                 progress: bool = True, bin_s: float | None = None) -> tuple[Frames, torch.Tensor]:
    """Frame tensors of one split: ``(x, y)``; see the module docstring."""
    return get(name).load(split, root, timesteps=timesteps, max_samples=max_samples, seed=seed,
                          progress=progress, bin_s=bin_s)


def info(name: str, root: str | os.PathLike | None = None) -> str:
    """A description of a dataset: location, splits, classes, sizes, events per sample."""
    return get(name).describe(root)
