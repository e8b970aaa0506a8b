"""A batched torch twin of Lava's fixed-point Loihi arithmetic, spike for spike.

Lava runs one sample at a time, one Python process per block, one time step per message
round; this engine runs chunks of samples, each layer's synaptic input for all time steps of a
chunk at once (a feed-forward block does not depend on its own past: one convolution over
``T * batch`` frames), then the neuron update step by step, the chunks spread over worker
threads. The integer arithmetic copies, line by line:

- ``lava/proc/dense/models.py`` ``PyDenseModelBitAcc``: sum of the weights of the spikes that
  arrived (graded: weights . payload), shifted by the weight exponent netx derives (exact for
  the even 8-bit weights ``quantize`` writes, so the sum of the stored weights);
- ``lava/proc/conv/models.py`` ``PyConvModelFixed``: the convolution sum, wrapped to 24 bits
  (``utils.signed_clamp``);
- ``lava/proc/dense/models.py`` ``PyDelayDenseModelBitAcc``: an axonal delay ``d`` (per output
  neuron, or per synapse) adds ``d`` steps to the block's own one; in local time the synaptic
  input of those synapses is shifted by ``d`` steps (the bias is not);
- ``lava/proc/lif/models.py`` ``PyLifModelBitAcc``: 12-bit decays rounded toward zero, input
  shifted left by 6, current wrapped once at +-2**23, voltage saturated to 24 bits, threshold
  shifted left by 6, strict ``>``, reset to 0.

Exactness. All of the above is integer arithmetic; it is carried out in floating point only
where every value involved is an integer the format holds exactly, which is proven per layer
before the run, never assumed:

- synaptic sums: whatever order a convolution or matrix product adds its terms in, each partial
  sum is a sum of a subset of the products ``w_i * x_i``, so its magnitude is at most
  ``bound = max_payload * max over outputs of sum_i |w_i|`` (at most fan-in * 254 *
  max_payload). float32 is used while ``bound < 2**24``, float64 while ``bound < 2**53``, int64
  beyond (``accumulation_dtype``);
- neuron state without current memory and voltage leak (IF, the chip-native default): float32
  in units of 2**6 (scaling by a power of two is exact in binary floating point). The
  synaptic input is checked to be below 2**17 (so Lava's current wrap and the conv's 24-bit
  clamp cannot fire); then every state value is an integer below 2**24 in magnitude, and a
  sum that is not exactly representable is beyond the 24-bit saturation anyway, which rounding
  (monotonic) cannot move back inside;
- neuron state with leak or current memory: float64 (products ``state * (4096 - decay)`` stay
  below 2**53 while ``T * max input < 2**35``); otherwise the whole network runs in int64.

``run_fast(..., arithmetic="int64")`` runs the plain int64 transcription of the Lava models
instead, the reference the fast paths are tested against.

Time alignment: every Lava synapse block delays by one step, so layer k of the Lava run sees
step t of the input at global step t + k + 1; here every layer is indexed by the input step
("local" time), which is what a float model computes. ``lava_run`` shifts back.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from spikeport.deploy.loihi.quantize import QuantLayer, QuantNet

MAX_UV = 2**23          # 24-bit states
DECAY_UNITY = 4096      # 12-bit decays
ACT_SHIFT = 64          # activation and threshold are MSB-aligned by 6 bits
FLOAT32_EXACT = 2**24   # float32 holds every integer below this exactly
FLOAT64_EXACT = 2**53
NO_WRAP = 2**17         # |a| < 2**17: a << 6 stays inside (-2**23, 2**23), no wrap or clamp fires
ARITHMETIC = ("auto", "int64")


@dataclass
class FastResult:
    spikes: dict[str, torch.Tensor] | None   # layer -> [T, N, *shape] uint8 (when recorded)
    output: torch.Tensor                      # last layer [T, N, *shape] uint8
    input_events: torch.Tensor                # [n_in] nonzero input entries per input neuron, summed
    neuron_spikes: dict[str, torch.Tensor]    # layer -> [n] spikes per neuron, summed over samples and steps


def max_payload(net: QuantNet) -> int:
    """Largest value an input spike carries: 1 for binary spikes, else the graded maximum."""
    return 1 if net.input_bits == 0 else 2**net.input_bits - 1


def synaptic_bound(weight: np.ndarray, payload: int) -> int:
    """Largest magnitude any partial sum of ``weight`` times inputs in [0, payload] can reach."""
    if weight.size == 0:
        return 0
    return int(np.abs(weight).reshape(weight.shape[0], -1).sum(1).max()) * int(payload)


def accumulation_dtype(bound: int) -> torch.dtype:
    """The cheapest dtype in which sums with every partial sum at most ``bound`` are exact."""
    if bound < FLOAT32_EXACT:
        return torch.float32
    if bound < FLOAT64_EXACT:
        return torch.float64
    return torch.int64


@dataclass
class _Plan:
    """How one layer runs: the dtypes proven exact for it, its weights in those dtypes."""

    q: QuantLayer
    mode: str                  # "if" | "lif" | "cuba" (fast paths) | "int64" (reference)
    acc: torch.dtype           # feed-forward accumulation dtype
    bound: int                 # feed-forward partial-sum bound
    weight: torch.Tensor       # conv [Cout, Cin, kH, kW]; dense [n_in, n_out] (transposed)
    bias: torch.Tensor | None  # bias mantissa per output channel (conv) or neuron (dense), acc dtype
    rec_acc: torch.dtype | None = None
    rec_weight: torch.Tensor | None = None  # [n, n] transposed
    # axonal delays: (delay, output neuron indices) per distinct delay, or (delay, weight [n_in, n_out]
    # holding only the synapses of that delay) where delays differ within a neuron's synapses
    delays: list[tuple[int, torch.Tensor]] | None = None

    @property
    def conv(self) -> bool:
        return self.q.layer.kind == "conv"

    @property
    def fuse_bias(self) -> bool:
        # with |a| < 2**17 proven, u = a << 6 and the bias add as one integer in units of 2**6;
        # not where the input is delayed (the bias is not) or a conv bias is per neuron
        per_channel = self.q.bias is None or not self.conv or self.q.bias.ndim == 1
        return self.mode in ("if", "lif") and self.bound < NO_WRAP and self.delays is None and per_channel


def _plan(net: QuantNet, timesteps: int, arithmetic: str) -> list[_Plan]:
    if arithmetic not in ARITHMETIC:
        raise ValueError(f"arithmetic '{arithmetic}' is not one of {ARITHMETIC}")
    plans, payload = [], max_payload(net)
    for q in net.layers:
        lay = q.layer
        bound = synaptic_bound(q.weight, payload)
        acc = accumulation_dtype(bound)
        rec_bound = synaptic_bound(q.rec_weight, 1) if q.rec_weight is not None else 0
        # the general float64 update is exact while |u| <= 64 * T * max|a| keeps u * 4096 below 2**53
        a_max = (min(bound, MAX_UV) if lay.kind == "conv" else bound) + rec_bound
        general_exact = timesteps * a_max < 2**35
        if q.i_decay >= DECAY_UNITY and q.rec_weight is None:
            # IF / LIF; a chunk whose inputs reach 2**17 falls back to the general update
            mode = "if" if q.v_decay == 0 else "lif"
            if bound >= NO_WRAP and not general_exact:
                mode = "int64"
        else:
            mode = "cuba" if general_exact else "int64"
        if acc == torch.int64 or arithmetic == "int64":
            mode = "int64"
        plans.append(_Plan(q, mode, acc, bound, torch.empty(0), None))
        payload = 1
    if any(p.mode == "int64" for p in plans):  # one layout for the whole network
        for p in plans:
            p.mode, p.acc = "int64", torch.int64
    for p in plans:
        q = p.q
        w = torch.as_tensor(q.weight).to(p.acc)
        p.weight = w.t().contiguous() if q.layer.kind == "dense" else w
        p.bias = torch.as_tensor(q.bias).to(p.acc) if q.bias is not None else None
        if q.rec_weight is not None:
            p.rec_acc = torch.int64 if p.mode == "int64" else accumulation_dtype(synaptic_bound(q.rec_weight, 1))
            p.rec_weight = torch.as_tensor(q.rec_weight).to(p.rec_acc).t().contiguous()
        p.delays = _delay_groups(q, p.weight)
    return plans


def _delay_groups(q: QuantLayer, weight: torch.Tensor) -> list[tuple[int, torch.Tensor]] | None:
    """Group a dense layer's synapses by delay (see ``_Plan.delays``)."""
    if q.delay is None:
        return None
    if q.layer.kind != "dense":
        raise ValueError(f"layer {q.name}: delays are carried on dense layers only")
    d = np.asarray(q.delay, dtype=np.int64)
    if d.ndim == 1:
        return [(int(v), torch.as_tensor(np.flatnonzero(d == v))) for v in np.unique(d)]
    dt = torch.as_tensor(d.T.copy())  # [n_in, n_out] as the transposed weight
    return [(int(v), torch.where(dt == int(v), weight, torch.zeros((), dtype=weight.dtype))) for v in np.unique(d)]


def _shift(a: torch.Tensor, d: int) -> torch.Tensor:
    """a [T, b, n] delayed by ``d`` steps (zeros shifted in)."""
    if d == 0:
        return a
    out = torch.zeros_like(a)
    if d < a.shape[0]:
        out[d:] = a[:-d]
    return out


def _delayed_input(p: _Plan, h: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Synaptic input with the layer's axonal delays: Lava's ``DelayDense`` adds ``d`` steps to the
    block's own one, which the local time frame leaves out; the bias is never delayed."""
    if p.delays is None:
        return _synaptic(p, h, bias)
    assert bias is None, "a delayed layer never fuses its bias"
    if p.q.delay.ndim == 1:
        a = _synaptic(p, h, None)
        out = torch.zeros_like(a)
        t = a.shape[0]
        for d, idx in p.delays:
            if d < t:
                out[d:, :, idx] = a[:t - d, :, idx]
        return out
    out = None
    for d, w in p.delays:
        a = _shift(_synaptic(p, h, None, w), d)
        out = a if out is None else out.add_(a)
    return out


# --- synaptic input ---------------------------------------------------------------------------

def _synaptic(p: _Plan, h: torch.Tensor, bias: torch.Tensor | None, weight: torch.Tensor | None = None) -> torch.Tensor:
    """h [T, b, *frame] -> summed input [T, b, n] (all steps of the chunk in one convolution / product);
    ``weight`` replaces the plan's (one delay's synapses)."""
    lay = p.q.layer
    w = p.weight if weight is None else weight
    t, b = h.shape[:2]
    x = h if h.dtype == p.acc else h.to(p.acc)
    if lay.kind == "conv":
        # NCHW: at these chunk sizes oneDNN is faster on it than on channels-last, and no reorder is needed
        a = F.conv2d(x.reshape(t * b, *lay.input_shape), w, bias, stride=lay.stride, padding=lay.padding,
                     dilation=lay.dilation, groups=lay.groups)
        return a.reshape(t, b, -1)
    x = x.reshape(t * b, -1)
    a = torch.addmm(bias, x, w) if bias is not None else x @ w
    return a.reshape(t, b, -1)


def _per_neuron(p: _Plan, values: torch.Tensor) -> torch.Tensor:
    """Per-channel conv values repeated over each channel's map (neurons in (C, H, W) order)."""
    lay = p.q.layer
    if lay.kind != "conv":
        return values
    if values.ndim > 1:  # already per neuron (C, H, W)
        return values.reshape(-1)
    return values.repeat_interleave(int(np.prod(lay.output_shape[1:])))


def _signed_clamp24(a: torch.Tensor) -> torch.Tensor:
    """Lava conv's ``signed_clamp(x, 24)``, skipped when nothing is out of range."""
    mn, mx = torch.aminmax(a)
    if mn >= -MAX_UV and mx < MAX_UV:
        return a
    a = a.to(torch.float64) if a.is_floating_point() else a
    return torch.remainder(a + MAX_UV, 2 * MAX_UV) - MAX_UV


# --- neuron updates: each overwrites step k of its input with the 0/1 spikes of step k ------------

def _scan_if(w: torch.Tensor, vth: int) -> None:
    """No current memory, no leak: v = sat24(v + u + bias); everything in units of 2**6."""
    hi = (MAX_UV - 1) / ACT_SHIFT
    v = torch.zeros_like(w[0])
    for k in range(w.shape[0]):
        s = w[k]
        v.add_(s)
        v.clamp_(-hi, hi)
        torch.gt(v, vth, out=s)
        v.addcmul_(v, s, value=-1)  # reset to 0 where spiked (v - v * 1), exact


def _scan_lif(w: torch.Tensor, vth: int, v_decay: int) -> None:
    """No current memory, leak: v = sat24(trunc(v * (4096 - vDecay) / 4096) + ((a + bias) << 6)); float64."""
    c = (DECAY_UNITY - v_decay) / DECAY_UNITY  # exact: an integer over 2**12
    v = torch.zeros(w.shape[1:], dtype=torch.float64)
    for k in range(w.shape[0]):
        s = w[k]
        v.mul_(c).trunc_()
        v.add_(s, alpha=ACT_SHIFT)
        v.clamp_(-MAX_UV + 1, MAX_UV - 1)
        torch.gt(v, vth * ACT_SHIFT, out=s)
        v.addcmul_(v, s, value=-1)


def _scan_cuba(p: _Plan, a: torch.Tensor) -> None:
    """Current memory and/or a recurrent block: the full CUBA update in float64."""
    q = p.q
    cu = (DECAY_UNITY - min(q.i_decay, DECAY_UNITY)) / DECAY_UNITY
    cv = (DECAY_UNITY - q.v_decay) / DECAY_UNITY
    bias = _per_neuron(p, p.bias.to(torch.float64) * ACT_SHIFT) if p.bias is not None else None
    u = torch.zeros(a.shape[1:], dtype=torch.float64)
    v = torch.zeros_like(u)
    prev = torch.zeros(a.shape[1:], dtype=a.dtype)
    for k in range(a.shape[0]):
        s = a[k]
        u.mul_(cu).trunc_()
        u.add_(s, alpha=ACT_SHIFT)
        if p.rec_weight is not None:  # recurrent dense block: own spikes of the previous step
            u.add_(prev.to(p.rec_acc) @ p.rec_weight, alpha=ACT_SHIFT)
        # wrapped once, as PyLifModelBitAcc does
        u = torch.where(u > MAX_UV, u - 2 * MAX_UV, torch.where(u <= -MAX_UV, u + 2 * MAX_UV, u))
        v.mul_(cv).trunc_()
        v.add_(u)
        if bias is not None:
            v.add_(bias)
        v.clamp_(-MAX_UV + 1, MAX_UV - 1)
        torch.gt(v, q.vth * ACT_SHIFT, out=s)
        v.addcmul_(v, s, value=-1)
        prev = s


def _run_layer(p: _Plan, h: torch.Tensor) -> torch.Tensor:
    """h [T, b, *frame] -> spikes [T, b, n] as 0/1 floats."""
    q = p.q
    if p.mode == "int64":
        return _run_layer_int64(p, h)
    fused = p.fuse_bias
    a = _delayed_input(p, h, p.bias if fused else None)
    mode = p.mode
    if mode in ("if", "lif") and not fused:
        mn, mx = torch.aminmax(a)
        if mn > -NO_WRAP and mx < NO_WRAP:
            if p.bias is not None:
                a.add_(_per_neuron(p, p.bias))
        else:  # large inputs: Lava's wraps may fire; the general update handles them
            mode = "cuba"
    if mode == "if":
        _scan_if(a, q.vth)
    elif mode == "lif":
        _scan_lif(a, q.vth, q.v_decay)
    else:
        a = _signed_clamp24(a) if p.conv else a
        _scan_cuba(p, a)
    return a


# --- int64 reference: the Lava models transcribed with integer tensors ---------------------------

def _trunc_decay(x: torch.Tensor, decay: int) -> torch.Tensor:
    # sign(x) * (|x| * (4096 - decay) >> 12): rounding toward zero, as Lava does
    if decay == 0:
        return x
    if decay >= DECAY_UNITY:
        return torch.zeros_like(x)
    return torch.div(x * (DECAY_UNITY - decay), DECAY_UNITY, rounding_mode="trunc")


def _run_layer_int64(p: _Plan, h: torch.Tensor) -> torch.Tensor:
    q, lay = p.q, p.q.layer
    a = _delayed_input(p, h.to(torch.int64), None)
    if lay.kind == "conv":  # utils.signed_clamp(x, 24), unconditionally
        a = torch.remainder(a + MAX_UV, 2 * MAX_UV) - MAX_UV
    t, b, n = a.shape
    bias = _per_neuron(p, p.bias) * ACT_SHIFT if p.bias is not None else torch.zeros(n, dtype=torch.int64)
    vth = q.vth * ACT_SHIFT
    u = torch.zeros(b, n, dtype=torch.int64)
    v = torch.zeros(b, n, dtype=torch.int64)
    s = torch.zeros(b, n, dtype=torch.bool)
    out = torch.empty(t, b, n, dtype=torch.float32)
    for k in range(t):
        ak = a[k]
        if p.rec_weight is not None:
            ak = ak + s.to(torch.int64) @ p.rec_weight
        x = _trunc_decay(u, q.i_decay) + ak * ACT_SHIFT
        w = torch.where(x > MAX_UV, x - 2 * MAX_UV, x)  # wrapped once, as PyLifModelBitAcc does
        u = torch.where(w <= -MAX_UV, x + 2 * MAX_UV, w)
        v = torch.clamp(_trunc_decay(v, q.v_decay) + u + bias, -MAX_UV + 1, MAX_UV - 1)
        s = v > vth
        out[k] = s
        v = v.masked_fill(s, 0)
    return out


# --- driver ------------------------------------------------------------------------------------

class _Buffers(threading.local):
    """Per worker thread, reusable flat buffers: a fresh multi-megabyte tensor per chunk costs
    page faults on first touch, as much time as the work done in it."""

    def get(self, key: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        n = int(np.prod(shape))
        buf = self.__dict__.get(key)
        if buf is None or buf.numel() < n or buf.dtype != dtype:
            buf = self.__dict__[key] = torch.empty(n, dtype=dtype)
        return buf[:n].view(shape)


def _prepare_input(plans: list[_Plan], net: QuantNet, x: torch.Tensor, bufs: _Buffers) -> tuple[torch.Tensor, torch.Tensor]:
    """x [b, T, *shape] -> (input payloads [T, b, *shape], nonzero entries per input summed)."""
    dtype = plans[0].acc if plans[0].acc.is_floating_point else torch.float64
    shape = (x.shape[1], x.shape[0], *x.shape[2:])
    h = bufs.get("input", shape, dtype)
    h.copy_(x.transpose(0, 1))
    if net.input_bits == 0:
        events = _count(h.ne_(0))
    else:  # events are counted on the values given, as the Lava engine's caller counts them
        events = _count(torch.ne(h, 0, out=bufs.get("nonzero", shape, dtype)))
        h.round_().clamp_(0, 2**net.input_bits - 1)
    return h, events


def _count(s: torch.Tensor) -> torch.Tensor:
    """Sum of 0/1 entries [T, b, *frame] over steps and samples, per entry of a frame (float64).

    A matrix-vector product (exact: counts stay far below 2**24) is much faster than a
    reduction over the two leading dimensions."""
    m = s.reshape(s.shape[0] * s.shape[1], -1)
    if m.shape[0] >= FLOAT32_EXACT:
        return m.sum(0, dtype=torch.float64)
    return (torch.ones(m.shape[0], dtype=m.dtype) @ m).to(torch.float64)


def run_fast(net: QuantNet, inputs: torch.Tensor, *, batch_size: int = 32, record: bool = False,
             threads: int | None = None, arithmetic: str = "auto") -> FastResult:
    """Run ``inputs`` [N, T, *shape] through ``net``: per-neuron spike totals always, trains when ``record``.

    ``batch_size`` samples go through all layers together (small chunks keep each layer's
    tensors in cache); ``threads`` chunks run at once, each op single-threaded (default: torch's
    thread count), which stays efficient when other processes share the cores.
    ``arithmetic="int64"`` runs the integer reference instead of the proven-exact float paths.
    """
    n, t = inputs.shape[:2]
    plans = _plan(net, t, arithmetic)
    output = torch.empty((t, n, *plans[-1].q.layer.output_shape), dtype=torch.uint8)
    rec = {p.q.name: torch.empty((t, n, *p.q.layer.output_shape), dtype=torch.uint8) for p in plans} if record else {}
    x = inputs.detach()
    bufs = _Buffers()

    def work(i0: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with torch.inference_mode():
            h, events = _prepare_input(plans, net, x[i0:i0 + batch_size], bufs)
            b = h.shape[1]
            counts = []
            for p in plans:
                h = _run_layer(p, h)
                counts.append(_count(h))
                if record:
                    rec[p.q.name][:, i0:i0 + b].copy_(h.reshape(t, b, *p.q.layer.output_shape))
            output[:, i0:i0 + b].copy_(h.reshape(t, b, *plans[-1].q.layer.output_shape))
            return events, counts

    workers = max(1, threads or torch.get_num_threads())
    batch_size = max(1, min(batch_size, -(-n // workers)))  # a few samples still give every worker a chunk
    starts = list(range(0, n, batch_size))
    workers = min(workers, len(starts))
    prev = torch.get_num_threads()
    torch.set_num_threads(1)  # parallel over chunks, not inside each small op
    try:
        if workers == 1:
            results = [work(i) for i in starts]
        else:
            with ThreadPoolExecutor(workers) as ex:
                results = list(ex.map(work, starts))
    finally:
        torch.set_num_threads(prev)
    in_events = torch.zeros(int(np.prod(inputs.shape[2:])), dtype=torch.float64)
    totals = {p.q.name: torch.zeros(p.q.layer.neurons, dtype=torch.float64) for p in plans}
    for events, counts in results:
        in_events += events
        for p, c in zip(plans, counts):
            totals[p.q.name] += c
    return FastResult(rec if record else None, output, in_events, totals)
