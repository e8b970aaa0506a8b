"""Paired audio-visual datasets: a composite of a visual and an audio dataset, paired by label.

``av-digits`` is ``nmnist-embedded`` with ``shd-embedded`` restricted to the English words (labels
0-9), so the label of a pair is the digit. Each split pairs within the same split of both sets
(val with val, test with test, so test voices stay unseen): every visual sample gets an audio
sample of its label, drawn without replacement from a seeded shuffle of that label's audio
samples and reused cyclically when there are fewer audio than visual samples. Both parts are
loaded through their own datasets (so their frames are their own cached frames), each at the bin
width the composite's catalogue entry gives it (``dts``: for av-digits 12 ms visual, 40 ms audio),
both ``T`` steps (25 by default: 300 ms and 1 s).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from spikeport.data.catalog import DATASETS, DatasetMeta
from spikeport.data.protocol import Dataset
from spikeport.errors import DataError

#: av-digits' audio bin width in microseconds (from its catalogue entry)
AUDIO_DT_US = int(round(DATASETS["av-digits"].dts[1] * 1e6))


def pair_indices(y_visual: np.ndarray, y_audio: np.ndarray, seed: int,
                 num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(visual index, audio index) for every visual sample whose label (0 .. num_classes - 1) has
    audio samples, in visual order."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 31]))
    vis, aud = [], []
    for label in range(num_classes):
        v = np.flatnonzero(y_visual == label)
        a = rng.permutation(np.flatnonzero(y_audio == label))
        if v.size == 0 or a.size == 0:
            continue
        vis.append(v)
        aud.append(a[np.arange(v.size) % a.size])
    if not vis:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    vi, ai = np.concatenate(vis), np.concatenate(aud)
    order = np.argsort(vi, kind="stable")
    return vi[order], ai[order]


class PairedDataset(Dataset):
    """(visual sample, audio sample) pairs of the same label, from two datasets on one root."""

    def __init__(self, meta: DatasetMeta, visual: Dataset, audio: Dataset):
        if meta.parts != (visual.name, audio.name):
            raise ValueError(f"{meta.name}: its entry names parts {meta.parts}, "
                             f"not ({visual.name!r}, {audio.name!r})")
        if (visual.meta.modality, audio.meta.modality) != ("visual", "audio"):
            raise ValueError(f"{meta.name}: needs a visual and an audio part, not "
                             f"{visual.meta.modality} and {audio.meta.modality}")
        super().__init__(meta)
        self.visual, self.audio = visual, audio

    @property
    def parts(self) -> tuple[Dataset, Dataset]:
        return self.visual, self.audio

    def generated(self, root: Path) -> bool:
        return all(p.generated(root) for p in self.parts)

    def generate(self, root: str | os.PathLike | None = None, n: int | None = None, seed: int = 0,
                 progress: bool = True) -> Path:
        """Both parts under one root, each with ``n`` samples."""
        if not self.meta.embedded:
            return super().generate(root, n, seed, progress)
        path = self.root(root)
        for part in self.parts:
            part.generate(path, n=n, seed=seed, progress=progress)
        return path

    def ensure(self, root: str | os.PathLike | None = None) -> Path:
        path = self.root(root)
        for part in self.parts:
            part.ensure(path)
        return path

    def _load(self, split: str, root: Path, timesteps: int | None, max_samples: int | None, seed: int,
              progress: bool, bin_s: float | None) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        m = self.meta
        if bin_s is not None and bin_s != m.dt:
            raise DataError(f"{m.name}: the bin widths are the dataset's own ({m.dts} s, visual and "
                            f"audio); got bin_s={bin_s}")
        t = timesteps or m.timesteps
        # the whole split of each part (seeded val slice), then pairs, then the subset of pairs
        xv, yv = self.visual.load(split, root, timesteps=t, seed=seed, progress=progress, bin_s=m.dts[0])
        xa, ya = self.audio.load(split, root, timesteps=t, seed=seed, progress=progress, bin_s=m.dts[1])
        vi, ai = pair_indices(yv.numpy(), ya.numpy(), seed, m.num_classes)
        if vi.size == 0:
            raise DataError(f"{root}: {m.name} {split} split has no label with both a {self.visual.name} "
                            f"and a {self.audio.name} sample (labels 0-{m.num_classes - 1}; generate "
                            "larger sets)")
        if max_samples is not None and max_samples < vi.size:
            pick = np.sort(np.random.default_rng(np.random.SeedSequence([seed, 32]))
                           .permutation(vi.size)[:max_samples])
            vi, ai = vi[pick], ai[pick]
        vi_t, ai_t = torch.from_numpy(vi), torch.from_numpy(ai)
        if not torch.equal(yv[vi_t], ya[ai_t]):
            raise AssertionError(f"{m.name}: paired samples differ in label")
        return (xv[vi_t], xa[ai_t]), yv[vi_t]

    def split_scheme(self, root: str | os.PathLike | None = None, seed: int = 0) -> dict:
        schemes = {p.name: p.split_scheme(self.root(root), seed) for p in self.parts}
        if all(s["scheme"] == "official" for s in schemes.values()):
            return super().split_scheme(root, seed)
        return {"scheme": "paired", "parts": schemes,
                "note": "each split pairs the same split of both parts"}

    def describe_files(self, root: Path) -> list[str]:
        lines = []
        for part in self.parts:
            lines.append(f"  {part.name}:")
            lines += part.describe_files(root)
        lines.append(f"  pairs: every {self.visual.name} sample with a {self.audio.name} sample of its "
                     f"label (0-{self.meta.num_classes - 1})")
        return lines
