"""Multiply-accumulates per inference of an ANN, layer by layer: from its ONNX graph, and
from torch's own operation counter as a cross-check.

The ONNX count is the project's own code because neither onnx nor onnxruntime ships an
operation counter; it reads only operator types and the shapes ONNX shape inference gives,
so it counts what a GPU would run from that file, independently of torch.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import shape_inference
from torch.utils.flop_counter import FlopCounterMode

MAC_OPS = ("Conv", "Gemm", "MatMul")


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        # a symbolic axis is the dynamic batch: count one inference
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]
    return shapes


def _module_path(path: str) -> str:
    """A torch module path as the layer's name: without the wrapper's ``model.`` and the stacks'
    ``blocks.`` ("model.blocks.conv1" -> "conv1"; S-CMRL's twin keeps its path,
    "head.block_audio.attn.spatial.q.conv"), so nested layers of the same leaf name stay apart."""
    parts = [p for p in path.split(".") if p]
    if parts[:1] == ["model"]:
        parts = parts[1:]
    if parts[:1] == ["blocks"]:
        parts = parts[1:]
    return ".".join(parts) or path


def _layer_name(weight_name: str) -> str:
    # initialisers keep the torch parameter name ("model.blocks.conv1.weight"): the layer is "conv1"
    parts = weight_name.split(".")
    if len(parts) >= 2 and parts[-1] in ("weight", "bias"):
        return _module_path(".".join(parts[:-1]))
    return weight_name


def _scope_name(node: onnx.NodeProto) -> str:
    """A product of two activations (attention's Q K^T, its product with V) named by the module
    the exporter recorded it in (``pkg.torch.onnx.name_scopes``), else by the node."""
    meta = {p.key: p.value for p in node.metadata_props}
    scopes = meta.get("pkg.torch.onnx.name_scopes")
    if scopes:
        try:
            import ast
            # module paths from the root down, then the op itself: the innermost module's
            names = [s for s in ast.literal_eval(scopes) if s == "model" or s.startswith("model.")]
        except (ValueError, SyntaxError):
            names = []
        if names:
            return f"{_module_path(names[-1])}.{node.op_type.lower()}"
    return node.name or node.op_type


def onnx_macs(model: onnx.ModelProto | str | Path) -> list[dict]:
    """[{name, op, macs}] in graph order, per inference (divided by the batch size of the graph)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    model = shape_inference.infer_shapes(model)
    shapes = _shapes(model)
    attrs = lambda node: {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}  # noqa: E731
    inits = {i.name for i in model.graph.initializer}
    first_input = next(i.name for i in model.graph.input if i.name not in inits)
    batch = max(shapes.get(first_input, [1])[0], 1)  # per inference: divide by the graph's batch
    layers = []
    for node in model.graph.node:
        if node.op_type not in MAC_OPS:
            continue
        a, b, out = node.input[0], node.input[1], node.output[0]
        if a not in shapes or b not in shapes or out not in shapes:
            raise ValueError(f"ONNX node {node.name} ({node.op_type}): shapes unknown after shape inference")
        sa, sb, so = shapes[a], shapes[b], shapes[out]
        if node.op_type == "Conv":
            # each output element: (C_in / groups) * prod(kernel) MACs; weight [C_out, C_in/g, *k]
            macs = int(np.prod(so)) * int(np.prod(sb[1:]))
        elif node.op_type == "Gemm":
            k = sa[0] if attrs(node).get("transA", 0) else sa[1]
            macs = int(np.prod(so)) * k
        else:  # MatMul (numpy semantics): each output element is a dot product of length K
            macs = int(np.prod(so)) * sa[-1]
        name = _layer_name(b) if b in inits else _scope_name(node)
        layers.append({"name": name, "op": node.op_type, "macs": macs // batch})
    return layers


def torch_macs(module: torch.nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...]
               ) -> tuple[int, dict[str, int]]:
    """(total, per module) MACs of one forward pass over ``example`` (batch 1; a tuple of tensors
    is passed as separate arguments), from ``torch.utils.flop_counter.FlopCounterMode`` (flops / 2
    of conv, mm, addmm, bmm)."""
    args = tuple(example) if isinstance(example, (tuple, list)) else (example,)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(*args)
    batch = args[0].shape[0]
    per_module: dict[str, int] = defaultdict(int)
    for mod_name, ops in counter.get_flop_counts().items():
        # "LogitsOnly.model.blocks.conv1" -> "conv1" (the layer names of ``onnx_macs``); every
        # parent repeats its children's totals under its own path
        if mod_name.count(".") >= 1:
            per_module[_module_path(mod_name.split(".", 1)[1])] += int(sum(ops.values())) // 2 // batch
    return int(counter.get_total_flops()) // 2 // batch, dict(per_module)
