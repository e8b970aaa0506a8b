"""Dataset names: the one place a name is checked and a pair name ``VISUAL+AUDIO`` is parsed.

A run's dataset is one catalogue name (``nmnist-embedded``, ``av-digits``, ...) or, for the joint
model, two single-modality names joined by ``+`` (``nmnist-embedded+shd-embedded``): a visual and
an audio dataset trained side by side, unpaired. Every stage asks this module rather than looking
for ``+`` itself, so a malformed or unknown name gets the same error wherever it is met. Only the
catalogue is imported (no torch, no tonic), so the command line can check names cheaply.
"""
from __future__ import annotations

from spikeport.data.catalog import DATASETS, DatasetMeta
from spikeport.errors import ConfigError, DataError

JOINER = "+"
PAIR_MODALITIES = ("visual", "audio")
EXAMPLE_PAIR = "nmnist-embedded+shd-embedded"


class DatasetNameError(ConfigError, DataError):
    """An unknown dataset name or a malformed pair name. A ConfigError (a run's configuration
    names it); also a DataError, which the data functions raised for unknown names before."""


def valid_names() -> str:
    """The names a dataset may have, for error messages."""
    return (f"valid datasets: {', '.join(DATASETS)}; or VISUAL{JOINER}AUDIO for the joint model "
            f"(e.g. {EXAMPLE_PAIR})")


def is_pair(name: str) -> bool:
    """Whether ``name`` is written as a pair ``A+B`` (checked by ``parts``)."""
    return JOINER in name


def pair_name(visual: str, audio: str) -> str:
    """The pair name of two datasets (the inverse of ``parts``)."""
    return f"{visual}{JOINER}{audio}"


def _unknown(part: str, name: str) -> DatasetNameError:
    where = "" if part == name else f" in {name!r}"
    return DatasetNameError(f"dataset: unknown dataset {part!r}{where}; {valid_names()}")


def parts(name: str) -> tuple[str, ...]:
    """The dataset names in ``name``: ``(name,)`` for one dataset, ``(a, b)`` for a pair ``a+b``
    (blanks around either part ignored); each part a known single dataset, the two different."""
    if not isinstance(name, str):
        raise DatasetNameError(f"dataset: a dataset name is a string, not {name!r}; {valid_names()}")
    if not is_pair(name):
        if name not in DATASETS:
            raise _unknown(name, name)
        return (name,)
    names = tuple(p.strip() for p in name.split(JOINER))
    if len(names) != 2 or not all(names) or names[0] == names[1]:
        raise DatasetNameError(f"dataset: malformed pair {name!r}: a pair is two different dataset "
                               f"names joined by '{JOINER}', VISUAL{JOINER}AUDIO (e.g. "
                               f"{EXAMPLE_PAIR}); valid datasets: {', '.join(DATASETS)}")
    for part in names:
        if part not in DATASETS:
            raise _unknown(part, name)
    return names


def meta(name: str) -> DatasetMeta:
    """The catalogue entry of one dataset; a pair name is not one dataset."""
    if is_pair(name):
        parts(name)  # a malformed pair is reported as such
        raise DatasetNameError(f"dataset: {name!r} names two datasets (the joint model's "
                               f"VISUAL{JOINER}AUDIO), not one; use each part on its own")
    return DATASETS[parts(name)[0]]


def joint_parts(name: str) -> dict[str, str]:
    """``{modality: dataset}`` of a pair name: one visual and one audio dataset, in the order
    written."""
    names = parts(name)
    if len(names) != 2:
        raise DatasetNameError(f"dataset: {name!r} is one dataset; the joint model takes a pair "
                               f"VISUAL{JOINER}AUDIO (e.g. {EXAMPLE_PAIR})")
    mods = [DATASETS[n].modality for n in names]
    if sorted(mods) != sorted(PAIR_MODALITIES):
        by_mod = {m: [n for n, d in DATASETS.items() if d.modality == m] for m in PAIR_MODALITIES}
        raise DatasetNameError(
            f"dataset: {name!r} must pair one visual and one audio dataset, not {' and '.join(mods)} "
            f"(visual: {', '.join(by_mod['visual'])}; audio: {', '.join(by_mod['audio'])})")
    return dict(zip(mods, names))
