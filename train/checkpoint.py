"""Run checkpoints: ``model.pt`` (the trained model) and ``checkpoint.pt`` (the state to resume).

Both are plain dicts of tensors, numbers, strings and lists, written atomically and read with
``torch.load(weights_only=True)``: a file that holds anything else (pickled code) is refused
by torch's restricted unpickler before a byte of it runs.

``model.pt``: ``{"format": "spikeport-model", "version": 1, "spec": dict (``ModelSpec.to_dict()``), "state_dict": ...,
"seed": int, "epoch": int, "val_accuracy": float | None}``.
``checkpoint.pt``: ``{"format": "spikeport-checkpoint", "version": 1, "spec", "config", "model",
"optimizer", "scheduler", "scaler", "rng", "epoch", "step", "history", "best", ...}``.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spikeport.errors import ArtifactError, ConfigError
from spikeport.io import atomic_path
from spikeport.train.models.spec import ModelSpec

MODEL_FILE = "model.pt"
RESUME_FILE = "checkpoint.pt"
MODEL_FORMAT = "spikeport-model"
RESUME_FORMAT = "spikeport-checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def model_payload(spec: ModelSpec | dict[str, Any], state_dict: dict[str, torch.Tensor], *, seed: int,
                  epoch: int, val_accuracy: float | None) -> dict[str, Any]:
    # Tensors are cloned to CPU so a checkpoint written on a GPU loads anywhere.
    return {"format": MODEL_FORMAT, "version": VERSION, "spec": spec_record(spec),
            "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
            "seed": int(seed), "epoch": int(epoch), "val_accuracy": val_accuracy}


def spec_record(spec: ModelSpec | dict[str, Any]) -> dict[str, Any]:
    """The plain dict a checkpoint stores for a spec (a dict is stored as it is)."""
    return spec.to_dict() if isinstance(spec, ModelSpec) else spec


def read_checkpoint(path: str | os.PathLike, expected_format: str = MODEL_FORMAT) -> dict[str, Any]:
    """Load a checkpoint dict with ``weights_only=True``; every failure is an ArtifactError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise ArtifactError(f"{path}: checkpoint is empty (truncated write?)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses globals outside its allow-list: a foreign or code-carrying pickle.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{path}: refused to load: not a plain tensor checkpoint "
                            f"(it holds objects that would run code on unpickling: {first})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ArtifactError(f"{path}: truncated or corrupt checkpoint ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(data, dict) or data.get("format") != expected_format:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ArtifactError(f"{path}: not a spikeport checkpoint (expected format "
                            f"{expected_format!r}, found {found!r})")
    if data.get("version") != VERSION:
        raise ArtifactError(f"{path}: checkpoint version {data.get('version')!r} is not {VERSION}")
    return data


def load_state(model: nn.Module, state_dict: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise ArtifactError(f"{path}: weights do not fit the model the spec describes: {detail[:400]}") from None


def load_run_model(run_dir: str | os.PathLike) -> tuple[nn.Module, ModelSpec]:
    """The trained model of a run folder (or of a ``model.pt`` path) and its spec, in eval mode."""
    from spikeport.train.models import build_model, spec_from_dict
    run_dir = Path(run_dir)
    path = run_dir if run_dir.suffix == ".pt" else run_dir / MODEL_FILE
    data = read_checkpoint(path, MODEL_FORMAT)
    spec, state = data.get("spec"), data.get("state_dict")
    if not isinstance(spec, dict) or not isinstance(state, dict):
        raise ArtifactError(f"{path}: checkpoint lacks 'spec' or 'state_dict'")
    try:
        model = build_model(spec)
        spec = spec_from_dict(spec)
    except ConfigError as exc:
        raise ArtifactError(f"{path}: its spec does not describe a model of this version: {exc}") from None
    load_state(model, state, path)
    model.eval()
    return model, spec
