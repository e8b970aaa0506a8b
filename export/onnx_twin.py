"""The ANN twin to ONNX, checked against torch with onnxruntime, with its MAC count."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Union

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from spikeport.export.macs import onnx_macs, torch_macs
from spikeport.io import atomic_path


#: The graph inputs of a twin that takes the audio-visual pair (S-CMRL's): one per modality.
PAIR_INPUTS = ("visual", "audio")

Inputs = Union[torch.Tensor, tuple[torch.Tensor, ...]]


class LogitsOnly(nn.Module):
    """Wraps a zoo model (forward -> ModelOutput) so the exported graph has one tensor output.
    Called with several tensors (a pair twin), it hands the model their tuple."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = self.model(xs[0] if len(xs) == 1 else tuple(xs))
        return out.logits if hasattr(out, "logits") else out


def _as_tuple(inputs: Inputs) -> tuple[torch.Tensor, ...]:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def _input_names(n: int) -> list[str]:
    if n == 1:
        return ["input"]
    if n == len(PAIR_INPUTS):
        return list(PAIR_INPUTS)
    return [f"input{i}" for i in range(n)]


def export_onnx(model: nn.Module, example: Inputs, path: str | Path) -> Path:
    """Write ``model`` (called on a batch like ``example``: a tensor, or a tuple of tensors for a
    twin of the audio-visual pair, one graph input each) to ONNX atomically, batch axis dynamic.

    torch's default exporter (torch.export + onnxscript) is used; the legacy TorchScript exporter
    is the fallback for a model torch.export cannot trace.
    """
    path = Path(path)
    wrapped = LogitsOnly(model).eval()
    args = _as_tuple(example)
    names = _input_names(len(args))
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        kwargs = dict(input_names=names, output_names=["logits"])
        batch = torch.export.Dim("batch")
        try:
            # LogitsOnly takes *xs: the dynamic shapes are one entry per positional input
            prog = torch.onnx.export(wrapped, args, dynamo=True, verbose=False,
                                     dynamic_shapes={"xs": tuple({0: batch} for _ in args)}, **kwargs)
            prog.save(str(tmp))
        except Exception:  # noqa: BLE001 - any tracing failure: try the legacy exporter
            torch.onnx.export(wrapped, args, str(tmp), dynamo=False,
                              dynamic_axes={**{n: {0: "batch"} for n in names}, "logits": {0: "batch"}}, **kwargs)
        onnx.checker.check_model(onnx.load(str(tmp)))
    return path


def onnx_outputs(path: str | Path, inputs: Inputs) -> np.ndarray:
    """The logits onnxruntime computes from the graph at ``path`` for ``inputs`` (graph inputs in order)."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: x.detach().cpu().numpy().astype(np.float32) for i, x in zip(sess.get_inputs(), _as_tuple(inputs))}
    return sess.run(None, feeds)[0]


def onnx_max_abs_diff(model: nn.Module, path: str | Path, inputs: Inputs) -> float:
    """Largest |onnxruntime - torch| over ``inputs`` (a batch; a tuple for a pair twin)."""
    got = onnx_outputs(path, inputs)
    with torch.no_grad():
        ref = LogitsOnly(model).eval()(*_as_tuple(inputs)).cpu().numpy()
    return float(np.max(np.abs(got - ref))) if ref.size else 0.0


def ann_summary(model: nn.Module, path: str | Path, inputs: Inputs) -> dict:
    """Export ``model`` to ``path`` and return the export.json ``ann`` fields (MACs per inference).
    ``inputs``: the twin's input batch (a tuple of the modalities' batches for a pair twin)."""
    model = model.eval()
    first = tuple(x[:1] for x in _as_tuple(inputs))
    export_onnx(model, first if len(first) > 1 else first[0], path)
    layers = onnx_macs(path)
    total_torch, per_module = torch_macs(LogitsOnly(model), first if len(first) > 1 else first[0])
    for layer in layers:
        layer["macs_torch"] = per_module.get(layer["name"])
    return {"onnx_file": Path(path).name, "macs_onnx": int(sum(la["macs"] for la in layers)),
            "macs_torch": total_torch, "max_abs_diff": onnx_max_abs_diff(model, path, inputs),
            "layers": layers}
