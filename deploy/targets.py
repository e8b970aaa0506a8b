"""The one registry of chip targets: name -> engines, what of the lowered graph it runs, deploy function.

The CLI, the demo and the reproduction read target and engine names from here. Each target's
module is imported only when it is used (the Loihi engines pull in Lava, the Speck one sinabs).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from spikeport.errors import ConfigError

if TYPE_CHECKING:
    from spikeport.deploy.common import DeployInput
    from spikeport.deploy.lowering import LayerFeatures
    from spikeport.hw_profiles import Profile
    from spikeport.schemas import Stats


@dataclass(frozen=True)
class Target:
    name: str                      # the CLI name and the profile's name (hw_profiles/<name>.toml)
    title: str
    engines: tuple[str, ...]       # the first is the default
    module: str                    # where deploy_fn and the features live
    deploy_fn: str
    features_name: str             # the module's LayerFeatures: what of the lowered graph it runs

    @property
    def default_engine(self) -> str:
        return self.engines[0]

    @property
    def deploy(self) -> Callable[["DeployInput", "Profile"], "Stats"]:
        return getattr(importlib.import_module(self.module), self.deploy_fn)

    @property
    def features(self) -> "LayerFeatures":
        return getattr(importlib.import_module(self.module), self.features_name)


_LOIHI = "spikeport.deploy.loihi.target"
TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("loihi", "Loihi", ("fast", "lava"), _LOIHI, "deploy_loihi", "LOIHI_FEATURES"),
    Target("loihi2", "Loihi 2", ("fast", "lava"), _LOIHI, "deploy_loihi", "LOIHI_FEATURES"),
    Target("speck", "Speck", ("fast", "sinabs", "fast-event"), "spikeport.deploy.speck.target", "deploy_speck",
           "SPECK_FEATURES"),
)}
CHIPS = ("loihi2", "speck")  # the chips the demo and the reproduction deploy to


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise ConfigError(f"unknown target '{name}'; valid: {', '.join(TARGETS)}")
    return TARGETS[name]


def resolve_engine(target: str, engine: str | None) -> str:
    """The engine to run on ``target``: ``engine`` if the target has it, its default for None."""
    t = get_target(target)
    if engine is None:
        return t.default_engine
    if engine not in t.engines:
        raise ConfigError(f"engine '{engine}' is not available for target '{target}'; valid: {', '.join(t.engines)}")
    return engine
