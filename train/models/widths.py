"""The papers' layer widths, one table per architecture (FACTS §6), and the layer lists made of them.

Every other place that needs a paper width (the seed backbones, the chip-native ``paper`` stacks,
the ANN twins, the S-CMRL defaults) reads it from here. Torch-free, so the model names and specs
are known without importing torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SeedAWidths:
    """Seed A's backbones: visual conv(2->32, 5x5) -> pool -> conv(32->64, 5x5) -> pool ->
    fc 1024 -> fc 512 (feature layer); audio fc 1024 -> fc 1024 -> fc 512 (feature layer)."""

    visual_conv_channels: tuple[int, ...]
    visual_hidden: tuple[int, ...]
    audio_hidden: tuple[int, ...]
    kernel_size: int


@dataclass(frozen=True)
class ScmrlWidths:
    """S-CMRL's transformer: embedding width E (stage widths E/8..E), heads, MLP ratio."""

    embed_dim: int            # MNISTDVS-NTIDIGITS; CREMA-D used embed_dim_large
    embed_dim_large: int
    num_heads: int
    mlp_ratio: int


SEED_A = SeedAWidths(visual_conv_channels=(32, 64), visual_hidden=(1024, 512),
                     audio_hidden=(1024, 1024, 512), kernel_size=5)
SCMRL = ScmrlWidths(embed_dim=64, embed_dim_large=256, num_heads=16, mlp_ratio=4)


def seed_a_layers(modality: str, num_classes: int, downsample: str) -> list[dict[str, Any]]:
    """Seed A's backbone as layer specs with a readout of ``num_classes``.

    ``downsample``: "pool" (the paper's conv -> max pool 2, as an ANN may run it) or "stride"
    (the chip-native form: the pooling folded into a stride-2 convolution, no pooling layer)."""
    if downsample not in ("pool", "stride"):
        raise ValueError(f"downsample must be 'pool' or 'stride', got {downsample!r}")
    layers: list[dict[str, Any]] = []
    if modality == "visual":
        for channels in SEED_A.visual_conv_channels:
            layers.append({"type": "conv", "out_channels": channels, "kernel_size": SEED_A.kernel_size,
                           "stride": 1 if downsample == "pool" else 2, "padding": 0})
            if downsample == "pool":
                layers.append({"type": "maxpool", "kernel_size": 2})
        layers.append({"type": "flatten"})
        hidden = SEED_A.visual_hidden
    elif modality == "audio":
        hidden = SEED_A.audio_hidden
    else:
        raise ValueError(f"no paper backbone for modality {modality!r}")
    layers += [{"type": "dense", "out_features": width} for width in hidden]
    layers.append({"type": "dense", "out_features": int(num_classes)})
    return layers
