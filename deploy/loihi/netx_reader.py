"""Read a lava-dl netx HDF5 network into the integer ``QuantNet`` the fast engine runs.

Semantics follow lava-dl 0.6 ``lava/lib/dl/netx/hdf5.py`` and the Lava models it builds, so that
``run_fast`` on the result equals Lava's ``Loihi2SimCfg("fixed_pt")`` run of the same file:

- ``input``: only a shape (the input spikes go straight into the first synapse block), or with a
  ``neuron`` group a population without a synapse block, so without its one-step delay
  (``QuantLayer.input_neurons``, identity weights). netx gives these neurons no bias from the file
  (its ``weight``/``bias`` are an input transform netx stores and never applies) and leaves their
  input port unconnected: in Lava they are driven by the bias set on the built network alone.
  ``run_fast`` adds the given input through the identity weights; a zero input is netx's case.
- ``dense`` / ``dense_rec``: netx runs ``optimize_weight_bits`` on the integer weights (a shift
  ``k`` to fill the 8-bit mantissa, exponent ``-k``); Lava then clips and truncates the shifted
  weights in its own sign mode and right-shifts every sum by ``k``. That chain is replayed here;
  it is kept only where the sum of the resulting weights shifted back is exact.
- ``delay`` on a dense layer: per output neuron (length out), per input (length in) or per
  synapse, clipped to 62 as netx does; a delay ``d`` adds ``d`` steps to the synapse block's one.
- ``conv``: integer weights as stored (torch correlation order, [Cout, Cin, kH, kW(, 1)]),
  stride / padding / dilation in (H, W) order; no weight exponent.
- ``flatten``: the (C, H, W) -> N reshape before a dense layer, in torch order (netx transposes
  Lava's (W, H, C) to (C, H, W) before flattening).
- neuron ``CUBA`` / ``LOIHI``: ``iDecay`` (Lava's ``du = iDecay - 1`` plus its 1-bit offset),
  ``vDecay``, ``vThMant``, bias mantissa with exponent 6. A dense layer without a neuron group
  gets netx's default (iDecay 0, vDecay 4096, vThMant 2**17).

Everything else (pooling, averaging, concatenation, transposed convolution, complex weights,
sigma-delta or resonate-and-fire neurons, refractory delays, graded output spikes, ``wgtExp``)
raises ``UnsupportedNodeError`` naming the file, the layer and why.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from spikeport.deploy.loihi.quantize import DECAY_UNITY, Layer, QuantLayer, QuantNet
from spikeport.errors import ArtifactError, UnsupportedNodeError

MAX_DELAY = 62                   # netx clips axonal delays to this
DEFAULT_NEURON = {"type": "CUBA", "iDecay": 0, "vDecay": 4096, "vThMant": 1 << 17}  # netx's dense default
NEURON_TYPES = ("CUBA", "LOIHI")
UNSUPPORTED_TYPES = {
    "pool": "pooling layers are not read by lava-dl netx (fold them into the next weight layer)",
    "convT": "transposed convolution is not read by lava-dl netx",
    "unpool": "unpooling is not read by lava-dl netx",
    "average": "averaging layers are not read by lava-dl netx (read the layers before it with num_layers)",
    "concat": "concatenation is not read by lava-dl netx; the fast engine runs a chain of layers",
    "dense_comp": "complex-valued dense layers have no CUBA neuron the fast engine runs",
}


@dataclass
class NetxNetwork:
    """A netx file read back: the integer network plus what netx keeps beside it."""

    path: Path
    net: QuantNet
    source_layers: list[int]               # file layer index of each QuantLayer
    input_transform: dict[str, int] = field(default_factory=dict)  # input layer's weight/bias, if any
    notes: list[str] = field(default_factory=list)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.net.input_shape


class _File:
    """Reads one layer group with errors that name the file and the layer."""

    def __init__(self, path: Path, group: h5py.Group, index: int, kind: str) -> None:
        self.path, self.g, self.index, self.kind = path, group, index, kind

    def unsupported(self, why: str) -> UnsupportedNodeError:
        return UnsupportedNodeError(f"netx file {self.path}: layer {self.index} ({self.kind}): {why}")

    def bad(self, why: str) -> ArtifactError:
        return ArtifactError(f"netx file {self.path}: layer {self.index} ({self.kind}): {why}")

    def has(self, key: str) -> bool:
        return key in self.g

    def array(self, key: str) -> np.ndarray:
        if key not in self.g:
            raise self.bad(f"no '{key}' dataset")
        return np.asarray(self.g[key][()])

    def ints(self, key: str) -> np.ndarray:
        # netx reads weight/bias with ``.astype(int)``: toward zero
        return self.array(key).astype(np.int64)


def _text(value) -> str:
    v = np.asarray(value)
    v = v.reshape(-1)[0] if v.ndim else v[()]
    return v.decode("ascii") if isinstance(v, bytes) else str(v)


def _pair(x: np.ndarray) -> tuple[int, int]:
    a = np.asarray(x).reshape(-1).astype(int)
    return (int(a[0]), int(a[0])) if a.size == 1 else (int(a[0]), int(a[1]))


# --- neurons ---------------------------------------------------------------------------------------

@dataclass
class _Neuron:
    i_decay: int
    v_decay: int
    vth: int


def _neuron(f: _File) -> _Neuron:
    if "neuron" in f.g:
        g = f.g["neuron"]
        cfg = {k: g[k][()] for k in g.keys()}
    elif f.kind in ("dense", "dense_rec"):
        cfg = dict(DEFAULT_NEURON)
    else:
        raise f.bad("no 'neuron' group")
    kind = _text(cfg.get("type", b""))
    if kind not in NEURON_TYPES:
        what = "sigma-delta" if kind == "SDNN" else "resonate-and-fire" if "RF" in kind else f"'{kind}'"
        raise f.unsupported(f"{what} neurons: the fast engine runs CUBA LIF neurons only")
    for key in ("iDecay", "vDecay", "vThMant"):
        if key not in cfg:
            raise f.bad(f"neuron has no '{key}'")
    if bool(np.asarray(cfg.get("gradedSpike", False))):
        raise f.unsupported("graded output spikes: Lava's CUBA neuron that netx builds sends binary spikes")
    if int(np.asarray(cfg.get("refDelay", 1))) > 1:
        raise f.unsupported(f"refractory delay {int(np.asarray(cfg['refDelay']))}: netx builds neurons without one")
    if int(np.asarray(cfg.get("wgtExp", 0))) != 0:
        raise f.unsupported(f"weight exponent wgtExp={int(np.asarray(cfg['wgtExp']))}: netx ignores it, so the "
                            f"file's intent and Lava's run differ")
    i_decay, v_decay, vth = (int(np.asarray(cfg[k])) for k in ("iDecay", "vDecay", "vThMant"))
    if not (0 <= i_decay <= DECAY_UNITY and 0 <= v_decay <= DECAY_UNITY):
        raise f.unsupported(f"decays iDecay={i_decay}, vDecay={v_decay} outside the 12-bit range 0..4096")
    if vth < 0:
        raise f.unsupported(f"negative threshold mantissa {vth}")
    # iDecay 0 (du = -1 in Lava, offset by its 1-bit register) is no current decay at all
    return _Neuron(i_decay, v_decay, vth)


# --- weights ---------------------------------------------------------------------------------------

def _sign_mode(w: np.ndarray) -> str:
    """Lava's ``determine_sign_mode``."""
    if w.min() >= 0:
        return "excitatory"
    return "inhibitory" if w.max() <= 0 else "mixed"


def _clip_truncate(w: np.ndarray, num_weight_bits: int) -> np.ndarray:
    """Lava's ``clip_weights(num_bits=8)`` then ``truncate_weights(num_weight_bits)`` in its sign mode."""
    mode = _sign_mode(w)
    mixed = int(mode == "mixed")
    x = -w if mode == "inhibitory" else w.copy()
    x = np.clip(x, -256 * mixed, 255)
    drop = 8 - num_weight_bits + mixed
    if drop > 0:
        x = (x >> drop) << drop
    elif drop < 0:
        x = x << -drop
    return -x if mode == "inhibitory" else x


def _lava_dense_weights(f: _File, blocks: list[np.ndarray]) -> list[np.ndarray]:
    """The integer weights a Lava Dense block effectively applies to the file's weights.

    netx's ``optimize_weight_bits`` (over all ``blocks`` together: input and recurrent weights
    share one exponent) shifts by ``k``; Lava clips and truncates the shifted weights and shifts
    each sum right by ``k`` (a floor). Exact as plain weights where every processed weight is a
    multiple of ``2**k``.
    """
    w = np.concatenate([b.reshape(b.shape[0], -1) for b in blocks], axis=1)
    mx, mn = int(w.max()), int(w.min())
    if (mx > 254 and mn < 0) or (mn < -256 and mx > 0):
        w = np.clip(w, -256, 254)  # netx prints a warning and clips
        mx, mn = int(w.max()), int(w.min())
    if mx == 0 and mn == 0:
        raise f.unsupported("all weights are zero: netx cannot derive a weight exponent")
    if mx < 0:
        signed, scale = 0, -256 / mn
    elif mn >= 0:
        signed, scale = 0, 255 / mx
    else:
        signed, scale = 1, min(127 / mx if mx > 0 else math.inf, -128 / mn)
    shift = int(math.floor(math.log2(scale))) + signed
    if shift < 0:
        raise f.unsupported(f"weights up to {max(mx, -mn)} exceed the 8-bit mantissa; netx would need a "
                            f"positive weight exponent {-shift}")
    n = 8
    while n > 0 and np.any(w % (1 << n)):
        n -= 1
    num_weight_bits = 8 - shift - (n - signed)
    out, col = [], 0
    for b in blocks:
        part = w[:, col:col + b.reshape(b.shape[0], -1).shape[1]] << shift
        col += part.shape[1]
        eff = _clip_truncate(part, num_weight_bits)
        if np.any(eff % (1 << shift)):
            raise f.unsupported(f"Lava's weight exponent -{shift} floors the sums of its truncated weights; "
                                f"not representable as integer weights")
        out.append((eff >> shift).reshape(b.shape))
    return out


def _delay(f: _File, n_out: int, n_in: int, notes: list[str]) -> np.ndarray | None:
    """netx's delay expansion, reduced to one delay per output neuron where it is one."""
    if not f.has("delay"):
        return None
    d = f.array("delay").astype(np.float64)
    if d.max(initial=0) > MAX_DELAY:
        notes.append(f"layer {f.index}: delays up to {d.max():g} clipped to {MAX_DELAY}, as netx does")
        d = np.clip(d, 0, MAX_DELAY)
    if d.min(initial=0) < 0:
        raise f.unsupported("negative axonal delay")
    d = d.astype(np.int64)  # netx: ``delay.astype(int)``
    if d.ndim == 0:
        d = np.full(n_out, int(d))
    elif d.ndim == 1 and d.size == n_out:  # netx tests the output count first
        pass
    elif d.ndim == 1 and d.size == n_in:
        d = np.broadcast_to(d.reshape(1, -1), (n_out, n_in)).copy()
    elif d.shape == (n_out, n_in):
        pass
    else:
        raise f.bad(f"delay of shape {d.shape} fits neither {n_out} outputs nor {n_in} inputs")
    if d.ndim == 2 and np.all(d == d[:, :1]):
        d = d[:, 0].copy()
    return None if not np.any(d) else d


# --- layers ----------------------------------------------------------------------------------------

def _name(f: _File, default: str, key: str = "name") -> str:
    v = f.g.attrs.get(key)
    return default if v is None else _text(v)


def _bias(f: _File, out_shape: tuple[int, ...]) -> np.ndarray | None:
    """Bias mantissa per output channel or per neuron (C, H, W), as netx broadcasts it."""
    if not f.has("bias"):
        return None
    b = f.ints("bias")
    n = int(np.prod(out_shape))
    if len(out_shape) == 1:
        if b.size == 1:
            return np.full(n, int(b.reshape(-1)[0]), dtype=np.int64)
        if b.size != n:
            raise f.bad(f"bias of {b.size} values for {n} neurons")
        return b.reshape(n)
    lava_shape = tuple(out_shape[::-1])  # netx neurons are (W, H, C)
    if b.shape == lava_shape:
        return np.ascontiguousarray(b.transpose(2, 1, 0))
    if b.ndim == 1 and b.size == out_shape[0]:
        return b
    raise f.bad(f"bias of shape {b.shape} fits neither channels {out_shape[0]} nor neurons {lava_shape}")


def _layer(name: str, synapse: str, kind: str, in_shape, out_shape, weight: np.ndarray, bias, nrn: _Neuron,
           **conv) -> Layer:
    # float view of the integers at scale 1: weights, bias and threshold in integer units
    alpha = 1.0 - nrn.i_decay / DECAY_UNITY if nrn.i_decay > 0 else 1.0
    return Layer(name, synapse, kind, tuple(in_shape), tuple(out_shape), weight.astype(np.float64),
                 None if bias is None else bias.astype(np.float64), 1.0 - nrn.v_decay / DECAY_UNITY, alpha,
                 float(nrn.vth), **conv)


def _quant(layer: Layer, weight: np.ndarray, rec: np.ndarray | None, bias, nrn: _Neuron, **extra) -> QuantLayer:
    return QuantLayer(layer, weight.astype(np.int64), None if rec is None else rec.astype(np.int64),
                      None if bias is None else bias.astype(np.int64), nrn.vth, nrn.i_decay, nrn.v_decay, 1.0,
                      **extra)


def _input_neurons(f: _File, shape: tuple[int, ...]) -> QuantLayer:
    """Input neurons the input drives one to one: identity weights (depthwise 1x1 conv for maps)."""
    nrn = _neuron(f)
    name = _name(f, f"input{f.index}")
    if len(shape) == 3:
        c = shape[0]
        w = np.ones((c, 1, 1, 1), dtype=np.int64)
        layer = _layer(name, _name(f, name, "synapse"), "conv", shape, shape, w, None, nrn, groups=c)
    else:
        n = int(np.prod(shape))
        shape = (n,)
        w = np.eye(n, dtype=np.int64)
        layer = _layer(name, _name(f, name, "synapse"), "dense", shape, shape, w, None, nrn)
    return _quant(layer, w, None, None, nrn, input_neurons=True)


def _conv(f: _File, in_shape: tuple[int, ...]) -> QuantLayer:
    import torch

    if len(in_shape) != 3:
        raise f.bad(f"convolution after a flat input of shape {in_shape}")
    if f.has("delay"):
        raise f.unsupported("delays on a convolution: netx ignores them")
    w = f.ints("weight")
    if w.ndim == 5:
        if w.shape[-1] != 1:
            raise f.unsupported(f"3-d convolution kernel of shape {w.shape}")
        w = w[..., 0]
    if w.ndim != 4:
        raise f.bad(f"convolution weight of shape {w.shape}")
    stride, padding, dilation = (_pair(f.array(k)) if f.has(k) else d
                                 for k, d in (("stride", (1, 1)), ("padding", (0, 0)), ("dilation", (1, 1))))
    groups = int(np.asarray(f.array("groups")).reshape(-1)[0]) if f.has("groups") else 1
    if w.shape[1] * groups != in_shape[0]:
        raise f.bad(f"weight of shape {w.shape} with {groups} groups does not take {in_shape[0]} input channels")
    out = torch.nn.functional.conv2d(torch.zeros(1, *in_shape), torch.zeros(w.shape), stride=stride,
                                     padding=padding, dilation=dilation, groups=groups).shape[1:]
    out_shape = tuple(int(v) for v in f.array("shape").reshape(-1))
    if tuple(out) != out_shape:
        raise f.bad(f"shape {out_shape} is not the convolution's output {tuple(out)}")
    nrn = _neuron(f)
    bias = _bias(f, out_shape)
    name = _name(f, f"layer{f.index}")
    layer = _layer(name, _name(f, f"conv{f.index}", "synapse"), "conv", in_shape, out_shape, w, bias, nrn,
                   stride=stride, padding=padding, dilation=dilation, groups=groups)
    if int(np.abs(w).max(initial=0)) > 255:
        layer.notes.append(f"{name}: convolution weights beyond 8 bits, carried as Lava's simulation runs them")
    return _quant(layer, w, None, bias, nrn)


def _dense(f: _File, in_shape: tuple[int, ...], flatten: bool, notes: list[str]) -> QuantLayer:
    n_in = int(np.prod(in_shape))
    if len(in_shape) > 1 and not flatten:
        raise f.bad(f"dense layer after a map of shape {in_shape} without a 'flatten' layer")
    n_out = int(np.prod(f.array("shape")))
    rec = f.kind == "dense_rec"
    w = f.ints("weight")
    if w.ndim == 1:
        w = w.reshape(n_out, -1)
    if w.shape != (n_out, n_in):
        raise f.bad(f"weight of shape {w.shape} for {n_in} inputs and {n_out} outputs")
    blocks = [w]
    if rec:
        wr = f.ints("weight_rec")
        wr = wr.reshape(n_out, -1) if wr.ndim == 1 else wr
        if wr.shape != (n_out, n_out):
            raise f.bad(f"recurrent weight of shape {wr.shape} for {n_out} neurons")
        blocks.append(wr)
    if "weight/imag" in f.g:
        raise f.unsupported(UNSUPPORTED_TYPES["dense_comp"])
    eff = _lava_dense_weights(f, blocks)
    delay = _delay(f, n_out, n_in, notes)
    if rec and delay is not None:
        raise f.unsupported("delays on a recurrent dense layer: netx gives its recurrent synapse the same delays "
                            "and no weight exponent")
    nrn = _neuron(f)
    bias = _bias(f, (n_out,))
    name = _name(f, f"layer{f.index}")
    layer = _layer(name, _name(f, f"fc{f.index}", "synapse"), "dense", (n_in,), (n_out,), eff[0], bias, nrn,
                   flatten_before=flatten and len(in_shape) > 1,
                   rec_weight=eff[1].astype(np.float64) if rec else None,
                   rec_synapse=f"{name}.rec" if rec else None)
    layer.input_shape = in_shape if layer.flatten_before else (n_in,)
    return _quant(layer, eff[0], eff[1] if rec else None, bias, nrn, delay=delay)


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise ArtifactError(f"netx file {path}: no such file")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise ArtifactError(f"netx file {path}: not an HDF5 file ({e})") from None


def read_netx(path: str | Path, *, num_layers: int | None = None, input_bits: int = 0) -> NetxNetwork:
    """Read ``path`` (a lava-dl netx HDF5 network) into the fast engine's integer form.

    ``num_layers`` reads only the first entries of ``layer/``, as netx's ``Network(num_layers=)``
    does (e.g. to leave out a final averaging layer); ``input_bits`` is netx's
    ``input_message_bits`` (0: binary input spikes).
    """
    path = Path(path)
    with _open(path) as h5:
        if "layer" not in h5 or not isinstance(h5["layer"], h5py.Group) or not len(h5["layer"]):
            raise ArtifactError(f"netx file {path}: no 'layer' group of netx layers")
        group = h5["layer"]
        keys = sorted(group.keys(), key=lambda k: int(k) if k.isdigit() else -1)
        if not all(k.isdigit() for k in keys) or [int(k) for k in keys] != list(range(len(keys))):
            raise ArtifactError(f"netx file {path}: 'layer' entries {keys} are not 0, 1, ...")
        count = len(keys) if num_layers is None else min(num_layers, len(keys))
        layers, sources, notes = [], [], []
        in_shape: tuple[int, ...] | None = None
        cur: tuple[int, ...] | None = None  # shape the next layer receives, (C, H, W) or (N,)
        transform: dict[str, int] = {}
        flatten = False
        for i in range(count):
            g = group[str(i)]
            if not isinstance(g, h5py.Group) or "type" not in g:
                raise ArtifactError(f"netx file {path}: layer {i} has no 'type'")
            kind = _text(g["type"][()])
            f = _File(path, g, i, kind)
            if kind in UNSUPPORTED_TYPES:
                raise f.unsupported(UNSUPPORTED_TYPES[kind])
            if kind == "input":
                if layers or cur is not None:
                    raise f.unsupported("an input layer after the first layer")
                cur = tuple(int(v) for v in f.array("shape").reshape(-1))
                if len(cur) not in (1, 3):
                    raise f.bad(f"input shape {cur} is neither (C, H, W) nor (N,)")
                if "neuron" in g:
                    transform = {k: int(np.asarray(f.array(k)).reshape(-1)[0]) for k in ("weight", "bias") if f.has(k)}
                    q = _input_neurons(f, cur)
                    in_shape = cur = q.layer.output_shape
                    layers.append(q)
                    sources.append(i)
                continue
            if cur is None:
                raise f.bad("no input layer before it gives the input shape")
            if kind == "flatten":
                flatten = True
                continue
            if kind == "conv":
                q = _conv(f, cur)
            elif kind in ("dense", "dense_rec"):
                if not layers:  # netx feeds a first dense layer the flat input itself
                    cur, flatten = (int(np.prod(cur)),), False
                q = _dense(f, cur, flatten, notes)
                flatten = False
            else:
                raise f.unsupported(f"unknown netx layer type '{kind}'")
            if in_shape is None:
                in_shape = q.layer.input_shape
            layers.append(q)
            sources.append(i)
            cur = q.layer.output_shape
        if not layers:
            raise ArtifactError(f"netx file {path}: no layer with neurons in the first {count} entries")
    for q in layers:
        notes += q.layer.notes
    if notes:
        warnings.warn(f"netx file {path}: " + "; ".join(notes), stacklevel=2)
    return NetxNetwork(path, QuantNet(tuple(in_shape), layers, input_bits, list(notes)), sources, transform, notes)
