"""What every chip target receives from `spikeport deploy` and what it gives back.

deploy/run.py reads the export artifacts (model.nir, partition.json, host part), loads the
test split and the float model's predictions, and hands a DeployInput to the target
(deploy/loihi or deploy/speck); the target quantises, maps, simulates, counts, and returns a
spikeport.schemas.Stats that run.py writes to runs/X/deploy/<target>/stats.json.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nir
import torch

from spikeport.deploy.lowering import Conventions

# Maps the chip part's output spike trains {nir output node -> [T, B, ...]} to logits [B, C].
# None when the whole model runs on the chip (chip-native): the logits are then the
# output layer's spike counts.
HostHead = Callable[[dict[str, torch.Tensor]], torch.Tensor]


@dataclass
class DeployInput:
    graph: nir.NIRGraph            # the chip part, as read back from runs/X/export/model.nir
    dt: float                      # seconds per time step (from export.json)
    timesteps: int
    inputs: torch.Tensor           # [N, T, *input_shape] test inputs (spike counts per bin)
    labels: torch.Tensor           # [N] int64
    float_predictions: torch.Tensor  # [N] predictions of the trained float model, same inputs
    host: HostHead | None          # the host part, or None
    out_dir: Path                  # runs/X/deploy/<target>/ (the target may write files here)
    target: str                    # loihi | loihi2 | speck
    engine: str                    # lava | fast | sinabs
    conventions: Conventions | None = None  # the producer's neuron conventions (None: NIR's literal reading)
    step_s: float | None = None    # real time one step lasts (the bin width); None: dt
    netx_file: Path | None = None  # an imported lava-dl network: the Loihi target runs this file as it is
