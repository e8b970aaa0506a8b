"""Exact integer synaptic products for the fast engines: int8 x int8 -> int32 (``torch._int_mm``,
oneDNN's VNNI kernels on x86), used where every operand is an integer int8 holds.

Why exact. A layer's synaptic input is a sum of products ``w_i * x_i`` of integers. Where the weights
are ``w = w8 << shift`` with ``w8`` in [-128, 127] (Loihi's even 8-bit weights: ``shift`` 1; Speck's
8-bit weights: ``shift`` 0) and the inputs are spike counts or payloads in [0, 127], the int32
accumulator holds every partial sum exactly while the engine's bound (``max_payload * max sum |w|``,
proven per layer before a run) is below 2**31, and multiplying back by ``2**shift`` and adding the bias
in the engine's float dtype is exact because the engines have proven the result below 2**24 (float32)
or 2**53 (float64). So the int8 product gives the same integers as the float one, not close ones.

Where an operand does not fit (a weight of 300, a weight set with no common power of two bringing it
into [-128, 127], an input count above 127) the engines keep their float products; ``int8_weight``
returns why. ``EXACT`` is a one-time check that this CPU's int8 kernel is exact on the worst-case
operands (x86 kernels without VNNI add byte pairs into saturating 16-bit lanes, which would not be):
if it is not, or ``torch._int_mm`` is missing, every layer keeps its float product.

Convolutions run as im2col + product: the float frames [F, C, H, W] are written once as padded
channels-last int8 frames (``_pad_hwc``), the patch matrix [F * OH * OW, kH * kW * C] is gathered from
them a pixel's channels at a time as one machine word (``_im2col``: int16 / int32 / int64 views where
C is 2 / 4 / 8k bytes), multiplied by the weights [kH * kW * C, C_out] and the int32 result written
back as float [F, C_out, OH, OW] with the bias (``_to_chw``). On small channel counts the layout work
costs more than the product saves (one thread, thread CPU time, 800 frames, float convolution against
the int8 path: 2 -> 8 5x5 stride 2 on 34 x 34: 2.9-3.2 ms against 7.8 (the int8 product alone 0.9-1.3,
the patch gather 3.7-4.0); 8 -> 16 3x3 s2 on 17 x 17: 1.0-1.1 against 3.3; 16 -> 16 3x3 s2 on 9 x 9:
0.7-1.0 against 1.4), so the engines choose per layer with ``conv_pays`` (the measured constants
below); dense layers always pay (400 -> 64 on 800 rows: 0.40 ms float, 0.05 int8 plus 0.02 for the
input's conversion).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from spikeport.deploy.engine_common import KERNELS, njit

INT8_MIN, INT8_MAX = -128, 127
INT32_EXACT = 2**31

# Per-layer choice for convolutions (never changes results). Measured on this project's CPU (AVX-512
# VNNI, one thread, thread CPU time, 800 frames of the benchmark's three convolutions: 2 -> 8 5x5 s2,
# 8 -> 16 3x3 s2, 16 -> 16 3x3 s2): float convolution 0.029, 0.0125, 0.0154 ns a multiply-add (oneDNN
# is least efficient on 2 input channels); int8 product 0.010, 0.0039, 0.0037 ns; gathering the patch
# matrix 0.65 ns a 2-byte word, 0.8-0.9 ns an 8-byte word; writing the padded int8 frames and
# converting the int32 result back about 0.5 ns and 0.15-0.5 ns an element. The estimates err on
# the float side (the int8 path measured 1.0-1.5x the estimate).
FLOAT_NS_PER_MAC = {1: 0.03, 2: 0.03}      # by input channels; 0.015 otherwise
FLOAT_NS_PER_MAC_DEFAULT = 0.015
INT8_NS_PER_MAC = 0.006
GATHER_NS_PER_WORD = {1: 0.45, 2: 0.65, 4: 0.7, 8: 0.8}  # by word bytes
PAD_NS_PER_ELEMENT = 0.5
OUT_NS_PER_ELEMENT = 0.15


def _self_check() -> bool:
    """Whether ``torch._int_mm`` is present and exact on worst-case int8 operands on this CPU."""
    if not hasattr(torch, "_int_mm"):
        return False
    try:
        k = 256
        a = torch.tensor([[127, -128] * (k // 2), [-128, -128] * (k // 2), [127, 127] * (k // 2)] * 6, dtype=torch.int8)
        b = torch.tensor([[127, -128, -128, 127, 1, 0, -1, 127]] * k, dtype=torch.int8)
        got = torch._int_mm(a, b)
        return bool(torch.equal(got.to(torch.int64), a.to(torch.int64) @ b.to(torch.int64)))
    except RuntimeError:  # pragma: no cover - a build without the kernel
        return False


EXACT = _self_check()


def int8_weight(weight: np.ndarray | torch.Tensor) -> tuple[torch.Tensor | None, int, str]:
    """Integer weights as ``w8 << shift`` with ``w8`` int8: (w8 int64 tensor, shift, "") or
    (None, 0, why not). The shift is the largest power of two dividing every weight."""
    w = torch.as_tensor(np.asarray(weight)).to(torch.int64)
    if not EXACT:
        return None, 0, "no exact int8 product on this CPU / torch build"
    if w.numel() == 0:
        return None, 0, "no weights"
    mags = np.abs(w.numpy()).ravel()
    common = int(np.bitwise_or.reduce(mags)) if mags.size else 0
    shift = ((common & -common).bit_length() - 1) if common else 0
    w8 = w >> shift if shift else w  # exact: every weight is a multiple of 2**shift
    lo, hi = int(w8.min()), int(w8.max())
    if lo < INT8_MIN or hi > INT8_MAX:
        return None, 0, f"weights {int(w.min())}..{int(w.max())} do not fit int8 (x 2**{shift})"
    return w8, shift, ""


class _Buffers(threading.local):
    """Per worker thread, reusable int8 buffers (a fresh one a chunk costs page faults)."""

    def get(self, key: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        n = int(np.prod(shape))
        buf = self.__dict__.get(key)
        if buf is None or buf.numel() < n or buf.dtype != dtype:
            buf = self.__dict__[key] = torch.empty(n, dtype=dtype)
        return buf[:n].view(shape)


_BUFS = _Buffers()


def _scaled(a: torch.Tensor, shift: int, bias: torch.Tensor | None, dtype: torch.dtype,
            out: torch.Tensor | None = None) -> torch.Tensor:
    """int32 sums (any view) -> ``bias + a * 2**shift`` in ``dtype``, one pass (exact: see the module notes)."""
    if out is None:
        out = torch.empty(a.shape, dtype=dtype)
    if bias is not None:
        torch.add(bias, a, alpha=2**shift, out=out)
    else:
        out.copy_(a)
        if shift:
            out.mul_(2**shift)
    return out


def dense_int8(x: torch.Tensor, w8: torch.Tensor, shift: int, bias: torch.Tensor | None,
               dtype: torch.dtype) -> torch.Tensor:
    """x [M, K] (any dtype) holding integers in [0, 127] -> ``bias + x @ (w8 << shift)`` [M, N] in
    ``dtype``; ``w8`` [K, N] int8."""
    a = torch._int_mm(x.to(torch.int8), w8)
    return _scaled(a, shift, bias, dtype)


@dataclass
class ConvInt8:
    """A convolution's constants for ``conv_int8`` (groups of 1)."""

    w8: torch.Tensor          # [kH * kW * C_in, C_out] int8, rows in (ky, kx, c) order
    shift: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    in_shape: tuple[int, int, int]   # (C, H, W)
    out_shape: tuple[int, int, int]  # (C_out, OH, OW)

    @property
    def word(self) -> torch.dtype:
        """The widest integer a pixel's int8 channels split into evenly (one copy a word)."""
        c = self.in_shape[0]
        for size, dtype in ((8, torch.int64), (4, torch.int32), (2, torch.int16)):
            if c % size == 0:
                return dtype
        return torch.int8

    def cost_ns(self, frames: int) -> tuple[float, float]:
        """(float convolution, int8 path) estimated nanoseconds for ``frames`` frames."""
        c, h, w = self.in_shape
        co, oh, ow = self.out_shape
        k = int(self.w8.shape[0])
        macs = frames * oh * ow * k * co
        t_float = macs * FLOAT_NS_PER_MAC.get(c, FLOAT_NS_PER_MAC_DEFAULT)
        word_bytes = torch.empty(0, dtype=self.word).element_size()
        words = frames * oh * ow * k / word_bytes
        hp, wp = h + 2 * self.padding[0], w + 2 * self.padding[1]
        t_int = (macs * INT8_NS_PER_MAC + words * GATHER_NS_PER_WORD[word_bytes]
                 + frames * hp * wp * c * PAD_NS_PER_ELEMENT + frames * co * oh * ow * OUT_NS_PER_ELEMENT)
        return t_float, t_int


def conv_int8_plan(shift_weight: tuple[torch.Tensor | None, int, str], stride, padding, dilation, groups: int,
                   in_shape, out_shape) -> tuple[ConvInt8 | None, str]:
    """The int8 constants of a convolution from ``int8_weight``'s answer [C_out, C_in, kH, kW], or
    (None, why not)."""
    w8, shift, why = shift_weight
    if w8 is None:
        return None, why
    if groups != 1:
        return None, f"groups={groups} (the int8 path runs groups of 1)"
    if not KERNELS:
        return None, "numba is missing (the patch gather is compiled)"
    cout, cin, kh, kw = w8.shape
    rows = w8.permute(2, 3, 1, 0).reshape(kh * kw * cin, cout).to(torch.int8).contiguous()
    return ConvInt8(rows, shift, (kh, kw), tuple(stride), tuple(padding), tuple(dilation), tuple(in_shape),
                    tuple(out_shape)), ""


def conv_pays(c: ConvInt8, frames: int = 800) -> bool:
    """Whether the int8 path is estimated cheaper than the float convolution (``cost_ns``)."""
    t_float, t_int = c.cost_ns(frames)
    return t_int < t_float


def conv_int8(c: ConvInt8, x: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """x [F, C, H, W] float holding integers in [0, 127] -> ``conv(x, w8 << shift) + bias`` as
    [F, C_out, OH, OW] in ``dtype`` (``bias`` [C_out] in that dtype)."""
    f = x.shape[0]
    cin, h, w = c.in_shape
    cout, oh, ow = c.out_shape
    hp, wp = h + 2 * c.padding[0], w + 2 * c.padding[1]
    padded = _BUFS.get("padded", (f, hp, wp, cin), torch.int8)
    if c.padding != (0, 0):
        padded.zero_()  # the border (a memset, cheaper than writing it pixel by pixel)
    _pad_hwc(x.reshape(f, cin, h, w).contiguous().numpy(), c.padding[0], c.padding[1], padded.numpy())
    k = int(c.w8.shape[0])
    cols = _BUFS.get("cols", (f * oh * ow, k), torch.int8)
    word = c.word
    per = torch.empty(0, dtype=word).element_size()
    _im2col(padded.view(word).reshape(f, hp, wp * (cin // per)).numpy(), c.kernel[0], c.kernel[1], c.stride[0],
            c.stride[1], c.dilation[0], c.dilation[1], oh, ow, cin // per, cols.view(word).numpy())
    a = torch._int_mm(cols, c.w8)  # [F * OH * OW, C_out]: channels-last
    out = torch.empty((f, cout, oh * ow), dtype=dtype)
    _to_chw(a.view(f, oh * ow, cout).numpy(), c.shift, (bias if bias is not None else out[0, :, 0]).contiguous().numpy(),
            bias is not None, out.numpy())
    return out.view(f, cout, oh, ow)


@njit
def _pad_hwc(x, py, px, out):  # pragma: no cover - compiled
    """Frames x [F, C, H, W] (float, integers in [0, 127]) -> the interior of out [F, H + 2 py, W + 2 px, C]
    int8 (the caller zeroes the border)."""
    f_, c_, h_, w_ = x.shape
    for f in range(f_):
        for c in range(c_):
            for y in range(h_):
                dst = out[f, y + py]
                src = x[f, c, y]
                for xx in range(w_):
                    dst[xx + px, c] = np.int8(np.int32(src[xx]))


@njit
def _im2col(p, kh, kw, sy, sx, dy, dx, oh, ow, cw, cols):  # pragma: no cover - compiled
    """Padded channels-last frames seen as words p [F, Hp, Wp * cw] (``cw`` words a pixel) -> the patch
    matrix cols [F * OH * OW, kH * kW * cw] in words, patch entries in (ky, kx, channel) order."""
    f_ = p.shape[0]
    run = kw * cw
    for f in range(f_):
        for oy in range(oh):
            for ky in range(kh):
                row = p[f, oy * sy + ky * dy]
                for ox in range(ow):
                    dst = cols[(f * oh + oy) * ow + ox, ky * run:(ky + 1) * run]
                    if dx == 1:  # one contiguous run of kW pixels
                        b0 = ox * sx * cw
                        for j in range(run):
                            dst[j] = row[b0 + j]
                    else:
                        for kx in range(kw):
                            b0 = (ox * sx + kx * dx) * cw
                            for i in range(cw):
                                dst[kx * cw + i] = row[b0 + i]


@njit
def _to_chw(a, shift, bias, has_bias, out):  # pragma: no cover - compiled
    """int32 sums a [F, L, C_out] (channels-last) -> out [F, C_out, L] = bias + a * 2**shift (float)."""
    f_, l_, c_ = a.shape
    scale = 1 << shift
    for f in range(f_):
        for c in range(c_):
            b = bias[c] if has_bias else 0.0
            for j in range(l_):
                out[f, c, j] = b + a[f, j, c] * scale
