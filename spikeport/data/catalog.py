"""The dataset catalogue: names, shapes, default binnings and presets (no heavy imports, so the
command line can list them cheaply). ``spikeport.data.registry`` re-exports all of it and builds
one dataset object per entry; a composite entry (``parts``) is described from its parts by
``paired``, so its shapes and bins cannot drift from theirs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


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
    parts: Optional[tuple[str, str]] = None          # composite: (visual dataset, audio dataset)


def paired(name: str, visual: DatasetMeta, audio: DatasetMeta, *, num_classes: int, timesteps: int,
           audio_dt: float, description: str) -> DatasetMeta:
    """The entry of a dataset of (visual sample, audio sample) pairs with the same label, labels
    ``0 .. num_classes - 1``: both streams ``timesteps`` bins, the visual one at its own bin width,
    the audio one at ``audio_dt``."""
    return DatasetMeta(
        name, "audiovisual", list(visual.input_shape), num_classes, timesteps, visual.dt,
        input_shapes=[list(visual.input_shape), list(audio.input_shape)], dts=[visual.dt, audio_dt],
        embedded=visual.embedded and audio.embedded, family=f"{visual.family}+{audio.family}",
        description=description, parts=(visual.name, audio.name))


_NMNIST_EMBEDDED = DatasetMeta(
    "nmnist-embedded", "visual", [2, 34, 34], 10, 25, 0.012, embedded=True, family="NMNIST",
    denoise_us=10_000, description="scikit-learn digits as N-MNIST-like event recordings "
    "(3 saccades, 300 ms, 34x34x2), N-MNIST file format")
_SHD_EMBEDDED = DatasetMeta(
    "shd-embedded", "audio", [700], 20, 100, 0.010, embedded=True, family="SHD",
    description="spoken digits 0-9 in English and German (espeak-ng voices) through a "
    "700-channel cochlear model, SHD HDF5 format; test voices unseen in training")

DATASETS: dict[str, DatasetMeta] = {
    "nmnist-embedded": _NMNIST_EMBEDDED,
    "shd-embedded": _SHD_EMBEDDED,
    # the English words of shd-embedded are labels 0-9, so pairing by label pairs digits; 25 bins
    # of 12 ms (the whole 300 ms visual recording) and of 40 ms (1 s of audio)
    "av-digits": paired(
        "av-digits", _NMNIST_EMBEDDED, _SHD_EMBEDDED, num_classes=10, timesteps=25, audio_dt=0.040,
        description="pairs (nmnist-embedded sample, English shd-embedded sample) of the same "
        "digit 0-9; T bins of 12 ms (visual) and 40 ms (audio)"),
    "nmnist": DatasetMeta(
        "nmnist", "visual", [2, 34, 34], 10, 15, 0.020, family="NMNIST", denoise_us=10_000,
        description="N-MNIST (real), the whole recording (3 saccades, 300 ms) in 15 bins of 20 ms; "
        "preset 'paper': the first 25 ms in 1 ms bins as seed A"),
    "shd": DatasetMeta("shd", "audio", [700], 20, 100, 0.010, family="SHD",
                       description="Spiking Heidelberg Digits (real)"),
    "ssc": DatasetMeta("ssc", "audio", [700], 35, 100, 0.010, family="SSC",
                       description="Spiking Speech Commands (real)"),
    "dvsgesture": DatasetMeta(
        "dvsgesture", "visual", [2, 128, 128], 11, 30, 0.050, family="DVSGesture",
        denoise_us=10_000, description="IBM DVS Gesture (tonic's release, real)"),
}

#: Named binnings (timesteps, bin width in seconds) a run may pick instead of the dataset's
#: default (``spikeport train --preset``). "default" is the DatasetMeta's own. For real N-MNIST
#: "paper" is seed A's 25 bins of 1 ms (only the first saccade's first 25 ms).
PRESETS: dict[str, dict[str, tuple[int, float]]] = {
    "nmnist": {"paper": (25, 0.001)},
}

SENSORS = {"NMNIST": (34, 34, 2), "SHD": (700, 1, 1), "SSC": (700, 1, 1),
           "DVSGesture": (128, 128, 2)}
