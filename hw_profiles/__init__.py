"""Hardware profiles: one TOML file a chip or baseline, every figure with unit, source and kind.

A profile file looks like::

    name = "loihi"
    title = "Intel Loihi"
    device = "chip"                     # chip | gpu | cpu

    [energy.synop]                      # figures used by the energy model
    value = 23.6
    unit = "pJ"
    source = "Davies et al., IEEE Micro 2018, Table 2"
    kind = "published"                  # measured | published | estimate

    [limits.cores]                      # figures used by the core mappers
    value = 128
    unit = "count"
    source = "..."
    kind = "published"

A user adds a chip by adding a file here (or passing a path). Loading validates every figure
and names the file and key of the first bad one.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from spikeport.errors import ConfigError

PROFILE_DIR = Path(__file__).resolve().parent

# unit -> factor to the SI base of its dimension (J, W, s, bytes, count)
UNIT_SCALE: dict[str, float] = {
    "fJ": 1e-15, "pJ": 1e-12, "nJ": 1e-9, "uJ": 1e-6, "mJ": 1e-3, "J": 1.0,
    "uW": 1e-6, "mW": 1e-3, "W": 1.0,
    "ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0,
    "bytes": 1.0, "KiB": 1024.0, "MiB": 1024.0**2, "Ki entries": 1024.0, "entries": 1.0,
    "bits": 1.0, "count": 1.0, "ops/s": 1.0, "FLOP/s": 1.0, "bytes/s": 1.0, "fraction": 1.0,
    "TFLOP/s": 1e12, "GB/s": 1e9, "TB/s": 1e12, "inferences/s": 1.0,
    # energy per byte moved; memory figures are often quoted per bit or per 64-bit access
    "pJ/byte": 1e-12, "pJ/bit": 8e-12, "pJ/64bit": 1e-12 / 8, "nJ/64bit": 1e-9 / 8,
}
# unit -> what it measures, so a figure used as an energy cannot silently be a power
UNIT_DIMENSION: dict[str, str] = {
    **{u: "energy" for u in ("fJ", "pJ", "nJ", "uJ", "mJ", "J")},
    **{u: "power" for u in ("uW", "mW", "W")},
    **{u: "time" for u in ("ns", "us", "ms", "s")},
    **{u: "energy/byte" for u in ("pJ/byte", "pJ/bit", "pJ/64bit", "nJ/64bit")},
    **{u: "size" for u in ("bytes", "KiB", "MiB", "Ki entries", "entries", "bits")},
    **{u: "rate" for u in ("ops/s", "FLOP/s", "bytes/s", "TFLOP/s", "GB/s", "TB/s", "inferences/s")},
    "count": "count", "fraction": "fraction",
}
FigureKind = Literal["measured", "published", "estimate"]


class Figure(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: float | list[float]
    unit: str
    source: str = Field(min_length=3)
    kind: FigureKind
    note: str | None = None

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, unit: str) -> str:
        if unit not in UNIT_SCALE:
            raise ValueError(f"unknown unit {unit!r}; use one of {sorted(UNIT_SCALE)}")
        return unit

    @field_validator("value")
    @classmethod
    def _non_negative(cls, value: float | list[float]) -> float | list[float]:
        values = value if isinstance(value, list) else [value]
        if any(v < 0 for v in values):
            raise ValueError("must not be negative")
        return value

    def si(self) -> float:
        """The scalar value in SI base units (J, W, s, bytes, count)."""
        if isinstance(self.value, list):
            raise ConfigError(f"figure with unit {self.unit} is a list, not a scalar")
        return float(self.value) * UNIT_SCALE[self.unit]

    def si_list(self) -> list[float]:
        values = self.value if isinstance(self.value, list) else [self.value]
        return [float(v) * UNIT_SCALE[self.unit] for v in values]


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    title: str
    device: Literal["chip", "gpu", "cpu"]
    notes: str | None = None
    energy: dict[str, Figure] = {}
    limits: dict[str, Figure] = {}
    timing: dict[str, Figure] = {}
    path: str | None = None

    def figure(self, section: str, key: str) -> Figure:
        table: dict[str, Figure] = getattr(self, section)
        if key not in table:
            raise ConfigError(f"{self.path or self.name}: missing key '{section}.{key}'")
        return table[key]

    def has(self, section: str, key: str) -> bool:
        return key in getattr(self, section)

    def si(self, section: str, key: str, dimension: str) -> float:
        """The scalar figure ``section.key`` in SI units, checked to measure ``dimension``
        (energy, power, time, energy/byte, size, rate, count, fraction)."""
        fig = self.figure(section, key)
        if UNIT_DIMENSION[fig.unit] != dimension:
            raise ConfigError(f"{self.path or self.name}: key '{section}.{key}': unit {fig.unit!r} "
                              f"is a {UNIT_DIMENSION[fig.unit]}, expected a {dimension}")
        if isinstance(fig.value, list):
            raise ConfigError(f"{self.path or self.name}: key '{section}.{key}': expected one value, got a list")
        return fig.si()


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a profile by name (a file in this folder) or by path, validated."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ConfigError(f"hardware profile '{name_or_path}' not found (known: {', '.join(available_profiles())})")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    try:
        profile = Profile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise ConfigError(f"{path}: key '{key}': {first['msg']}") from None
    profile.path = str(path)
    return profile
