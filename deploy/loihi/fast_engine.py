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

Where the time goes (CPU, one thread, thread CPU time, the benchmark's N-MNIST network: 2 -> 8 ->
16 -> 16 channels, 64, 10, T = 25, graded 4-bit input at 5.7 % density, 20 samples, every layer
recorded; ``bench/bench_loihi.py`` prints it): the three convolutions 2.7-3.0 ms (the first, 2 input
channels, oneDNN's least efficient case at 0.03 ns a multiply-add, 1.7-1.9 of it), the input copy and
count 0.25-0.7, the compiled neuron scans with their counts and recorded trains 0.45-0.65, the dense
layers' int8 products 0.08: a whole call 0.26-0.29 ms a sample (median of 5; 3500-3800 samples/s;
before the int8 products and compiled scans 0.35-0.46 in the same runs). What was tried, and kept
where it pays:

- int8 x int8 -> int32 products (``deploy/int_products.py``, ``torch._int_mm``, exact: the weights are
  the even 8-bit integers netx writes, ``w8 << 1``, the payloads at most 15, the partial sums proven
  below 2**17): the dense layers 5-7x faster (400 -> 64: 0.40 -> 0.07 ms on 800 frames); for the
  convolutions the im2col layout work (padded channels-last int8 frames, the patch gather) costs more
  than the 2.5-3x faster product saves at these channel counts, so ``INT8 = None`` (default) chooses per
  layer by the measured cost rule ``int_products.conv_pays`` and keeps oneDNN's float convolutions here;
  ``INT8 = True`` forces every layer (tests), ``False`` none. Payloads above 127 (8-bit input) are
  checked per chunk and fall back to the float product, as do weights no power of two brings into int8;
- the neuron scans compiled (``_scan_fused_if`` / ``_lif``, ``FUSED_SCAN``): the torch scans' float
  operations on the same integers, one pass a step with the count and the recorded train's copy
  (lif1: 0.5 against 1.5 ms on 32 samples);
- the compiled event-driven first layer (``_event_layer``, numba; ``events="auto"`` or
  ``"kernel"``): the input's nonzero entries become an event list in one pass; each event adds its
  weight vector (all output channels, contiguous) to the channel vector of every output pixel it
  reaches (tables built once from the kernel), then Lava's neuron update runs in its own integers
  (int32, exact: the synaptic sum is proven below 2**17), writing the counts, the recorded trains
  and the 0/1 frames the torch paths take on from. ``KERNEL_EVENTS = True`` runs every layer so
  (spikes passed on as event lists), for tests and measurements. The choice is per call, a cost
  model on the first chunk's event count (``KERNEL_EVENT_COST``: the accumulation alone costs 17-23
  multiply-adds of the dense product an added value, the whole compiled layer with its neuron update
  and the frames it hands on broke even near 1 % input density end to end, near 0.2 % since the torch
  paths' scans are compiled too); the hidden layers stay on the torch paths (their convolutions run 2x
  faster a multiply-add, and the vectorised scans beat the event-driven neuron update). On the
  benchmark's input (5.7 %) the dense convolution is the cheaper (first layer, 20 samples, thread
  CPU time: 3.2-5.3 ms of events against 1.5-2.6 ms + a 0.3-0.4 ms scan; whole run 0.75-0.81x), so
  "auto" runs the torch paths there. Real N-MNIST
  recordings (50 of them, tonic's reader and ``ToFrame``) have 4.3 % nonzero entries at 25 bins and
  0.6 % at 300 (the compiled layer paid there before the scans were compiled; now near break-even);
- event-driven accumulation in torch (``events="always"``; ``index_add_`` of weights, a dense
  layer's weight rows, a convolution's channel vectors): an indexed add costs 50-100 multiply-adds
  of oneDNN or MKL, so it pays below about 1-2 % (``EVENT_COST``), chosen per chunk;
- channels-last convolutions kept from layer to layer (``CHANNELS_LAST``): each convolution is
  faster, but the transposing input copy and the recorded trains' copies back to (C, H, W) cost
  as much on that network, so it is off by default (same results either way);
- space-to-depth of the strided first convolution and im2col + GEMM for it: slower (the copies);
- plans (weights converted and permuted, event tables) cached per network, steps and device;
  thresholds as tensors in the scans (a Python number is wrapped, a copy, at every step).

On CUDA (``device="cuda"``; refused by name where torch sees no GPU) the torch paths run, one
chunk at a time on one stream: the compiled kernels are CPU code. Convolutions are computed as
``unfold`` + matrix product with TF32 off and cuDNN deterministic, without autotuning
(``_exact_cuda``): cuDNN may pick Winograd or FFT algorithms, whose intermediate values are not sums
of products and so not exact; a plain FP32 GEMM's partial sums are (in whatever order or split its
reduction runs), and the bound holds for them. The neuron scans are the same element-wise float
operations on integers as on the CPU, exact on any device.

Time alignment: every Lava synapse block delays by one step, so layer k of the Lava run sees
step t of the input at global step t + k + 1; here every layer is indexed by the input step
("local" time), which is what a float model computes. ``lava_run`` shifts back.
"""
from __future__ import annotations

import contextlib
import threading
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from spikeport.deploy import int_products as ip
from spikeport.deploy.engine_common import KERNELS, count_nonzero, njit, run_chunks
from spikeport.deploy.loihi.quantize import QuantLayer, QuantNet

MAX_UV = 2**23          # 24-bit states
DECAY_UNITY = 4096      # 12-bit decays
ACT_SHIFT = 64          # activation and threshold are MSB-aligned by 6 bits
FLOAT32_EXACT = 2**24   # float32 holds every integer below this exactly
FLOAT64_EXACT = 2**53
NO_WRAP = 2**17         # |a| < 2**17: a << 6 stays inside (-2**23, 2**23), no wrap or clamp fires
ARITHMETIC = ("auto", "int64")
# an event-driven add of one weight value (index_add_) costs about this many multiply-adds of the
# dense product (measured on AVX-512: oneDNN's channels-last convolution, MKL's GEMM), so events pay
# below about 2 % (conv) and 1 % (dense) input density; the choice never changes results, only speed
EVENT_COST = {"conv": 50.0, "dense": 100.0}
EVENTS = ("auto", "always", "never", "kernel")
# convolutions channels-last on CPU, kept so from layer to layer: faster convolutions, but the
# transposing input copy and the recorded trains' copies back to (C, H, W) cost as much on the
# benchmark's network (measured in one run: 0.9-1.0x), so off by default; the results are the same
CHANNELS_LAST = False
# int8 x int8 -> int32 products (``deploy/int_products.py``) where every operand fits int8: None = dense
# layers always (5-7x faster products) and convolutions where ``int_products.conv_pays`` estimates the
# im2col + int8 product cheaper than oneDNN's float convolution (not on the benchmark's small channel
# counts); True = every layer where the operands fit; False = none (the float products throughout).
# Results are the same either way.
INT8: bool | None = None


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
    in_hwc: bool = False       # conv input / dense rows in (H, W, C) order (the previous conv's layout)
    out_hwc: bool = False      # conv output kept channels-last: neurons in (H, W, C) order
    events: "_EventTable | None" = None
    kernel: "_KernelLayer | None" = None  # constants of the compiled event-driven run, where it applies
    int8_dense: torch.Tensor | None = None   # dense [n_in, n_out] int8 with weight = int8_dense << int8_shift
    int8_conv: "ip.ConvInt8 | None" = None   # a convolution's int8 constants
    int8_shift: int = 0
    int8_check: bool = False                 # payloads may exceed 127: each chunk's maximum is checked
    int8_why: str = ""                       # why the float product runs (empty where int8 runs)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def conv(self) -> bool:
        return self.q.layer.kind == "conv"

    @property
    def fuse_bias(self) -> bool:
        # with |a| < 2**17 proven, u = a << 6 and the bias add as one integer in units of 2**6;
        # not where the input is delayed (the bias is not) or a conv bias is per neuron
        per_channel = self.q.bias is None or not self.conv or self.q.bias.ndim == 1
        return self.mode in ("if", "lif") and self.bound < NO_WRAP and self.delays is None and per_channel


_PLANS: dict[tuple, tuple[weakref.ref, list[_Plan]]] = {}
_PLANS_LOCK = threading.Lock()


def _fingerprint(net: QuantNet) -> int:
    """Hash of everything a plan is made from: a network changed in place gets a new plan."""
    parts: list = [net.input_bits, tuple(net.input_shape)]
    for q in net.layers:
        lay = q.layer
        parts += [q.name, lay.kind, tuple(lay.input_shape), tuple(lay.output_shape), tuple(lay.stride),
                  tuple(lay.padding), tuple(lay.dilation), lay.groups, q.vth, q.i_decay, q.v_decay, q.input_neurons]
        for a in (q.weight, q.rec_weight, q.bias, q.delay):
            parts.append(None if a is None else (a.shape, str(a.dtype), np.ascontiguousarray(a).tobytes()))
    return hash(tuple(parts))


def _cached_plan(net: QuantNet, timesteps: int, arithmetic: str, device: torch.device) -> list[_Plan]:
    """``_plan`` once per (network, steps, arithmetic, device): converting and permuting weights and
    building event tables costs as much as running a few samples."""
    key = (id(net), _fingerprint(net), timesteps, arithmetic, str(device), CHANNELS_LAST, INT8)
    with _PLANS_LOCK:
        hit = _PLANS.get(key)
        if hit is not None and hit[0]() is net:
            return hit[1]
    plans = _plan(net, timesteps, arithmetic, device)
    with _PLANS_LOCK:
        for k in [k for k, (ref, _) in _PLANS.items() if ref() is None]:
            del _PLANS[k]
        _PLANS[key] = (weakref.ref(net), plans)
    return plans


def hwc_index(shape: tuple[int, ...]) -> torch.Tensor:
    """For a (C, H, W) shape: position j of the (H, W, C) order holds (C, H, W) neuron ``idx[j]``."""
    c, h, w = shape
    return torch.arange(c * h * w).reshape(c, h, w).permute(1, 2, 0).reshape(-1)


def _plan(net: QuantNet, timesteps: int, arithmetic: str, device: torch.device | str = "cpu") -> list[_Plan]:
    if arithmetic not in ARITHMETIC:
        raise ValueError(f"arithmetic '{arithmetic}' is not one of {ARITHMETIC}")
    device = torch.device(device)
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
    # channels-last through the convolutions on CPU (the int64 reference keeps the plain layout)
    hwc = CHANNELS_LAST and device.type == "cpu" and plans[0].mode != "int64"
    for i, p in enumerate(plans):
        q, lay = p.q, p.q.layer
        p.device = device
        p.out_hwc = hwc and lay.kind == "conv"
        p.in_hwc = plans[i - 1].out_hwc if i > 0 else (hwc and lay.kind == "conv")
        rows = hwc_index(lay.input_shape) if p.in_hwc and lay.kind == "dense" else None
        w = torch.as_tensor(q.weight).to(p.acc)
        if lay.kind == "dense":
            w = w.t()
            w = (w[rows] if rows is not None else w).contiguous()
        elif p.out_hwc:
            w = w.contiguous(memory_format=torch.channels_last)
        p.weight = w.to(device)
        p.bias = torch.as_tensor(q.bias).to(p.acc).to(device) if q.bias is not None else None
        if q.rec_weight is not None:
            p.rec_acc = torch.int64 if p.mode == "int64" else accumulation_dtype(synaptic_bound(q.rec_weight, 1))
            p.rec_weight = torch.as_tensor(q.rec_weight).to(p.rec_acc).t().contiguous().to(device)
        p.delays = _delay_groups(q, p.weight, rows)
        if p.mode != "int64" and p.delays is None:
            p.events = _event_table(p)
        _plan_int8(p, max_payload(net) if i == 0 else 1)
    if _kernel_applies(plans):
        for p in plans:
            p.kernel = _kernel_layer(p.q)
    return plans


def _plan_int8(p: _Plan, payload: int) -> None:
    """Whether the layer's product runs as int8 x int8 -> int32 (``int_products``; exact where every
    weight is an int8 times a common power of two, every input payload is at most 127 and the
    partial-sum bound is below 2**31), and its int8 constants; else ``int8_why`` says why not."""
    q, lay = p.q, p.q.layer
    why = ""
    if INT8 is False:
        why = "int8 products switched off"
    elif p.mode == "int64":
        why = "int64 reference"
    elif p.device.type != "cpu":
        why = "not on the CPU"
    elif p.delays is not None:
        why = "axonal delays"
    elif p.in_hwc or p.out_hwc:
        why = "channels-last layout"
    elif p.bound >= ip.INT32_EXACT:
        why = f"partial sums up to {p.bound} exceed int32"
    if why:
        p.int8_why = why
        return
    w8, shift, why = ip.int8_weight(q.weight)
    if w8 is None:
        p.int8_why = why
        return
    p.int8_check = payload > ip.INT8_MAX
    if lay.kind == "dense":
        p.int8_dense = w8.t().to(torch.int8).contiguous()
        p.int8_shift = shift
        return
    conv, why = ip.conv_int8_plan((w8, shift, ""), lay.stride, lay.padding, lay.dilation, lay.groups,
                                  lay.input_shape, lay.output_shape)
    if conv is not None and INT8 is None and not ip.conv_pays(conv):
        conv, why = None, "im2col + int8 estimated slower than the float convolution (int_products.conv_pays)"
    p.int8_conv, p.int8_shift, p.int8_why = conv, shift, why


def int8_layers(net: QuantNet, timesteps: int, device: str | torch.device = "cpu") -> dict[str, str]:
    """Per layer, which product the torch paths run: "int8" or "float (why)" (for reports)."""
    plans = _cached_plan(net, timesteps, "auto", torch.device(device))
    return {p.q.name: "int8" + (" (payloads checked per chunk)" if p.int8_check else "")
            if (p.int8_dense is not None or p.int8_conv is not None) else f"float ({p.int8_why})" for p in plans}


def _delay_groups(q: QuantLayer, weight: torch.Tensor, rows: torch.Tensor | None = None
                  ) -> list[tuple[int, torch.Tensor]] | None:
    """Group a dense layer's synapses by delay (see ``_Plan.delays``); ``rows``: the weight's row order."""
    if q.delay is None:
        return None
    if q.layer.kind != "dense":
        raise ValueError(f"layer {q.name}: delays are carried on dense layers only")
    d = np.asarray(q.delay, dtype=np.int64)
    if d.ndim == 1:
        return [(int(v), torch.as_tensor(np.flatnonzero(d == v)).to(weight.device)) for v in np.unique(d)]
    dt = torch.as_tensor(d.T.copy())  # [n_in, n_out] as the transposed weight
    dt = (dt[rows] if rows is not None else dt).to(weight.device)
    return [(int(v), torch.where(dt == int(v), weight, torch.zeros((), dtype=weight.dtype))) for v in np.unique(d)]


def _shift(a: torch.Tensor, d: int) -> torch.Tensor:
    """a [T, b, n] delayed by ``d`` steps (zeros shifted in)."""
    if d == 0:
        return a
    out = torch.zeros_like(a)
    if d < a.shape[0]:
        out[d:] = a[:-d]
    return out


def _delayed_input(p: _Plan, h: torch.Tensor, bias: torch.Tensor | None, events: str = "never",
                   graded: bool = False, n_events: int | None = None) -> torch.Tensor:
    """Synaptic input with the layer's axonal delays: Lava's ``DelayDense`` adds ``d`` steps to the
    block's own one, which the local time frame leaves out; the bias is never delayed."""
    if p.delays is None:
        return _synaptic(p, h, bias, events=events, graded=graded, n_events=n_events)
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

@dataclass
class _EventTable:
    """Event-driven synaptic input: per input neuron (in the layer's input order) the output rows it
    reaches and the weight vector it adds to each (a dense layer: one row, its weight row)."""

    pos: torch.Tensor | None  # [n_in, P] int64 output pixel within a frame (conv); None for dense
    vals: torch.Tensor        # conv [n_in, P, Cout] (zeros where a tap falls outside); dense [n_in, n_out]
    rows: int                 # output rows a frame (pixels; 1 for dense)
    width: int                # values a row (output channels; n_out for dense)
    dense_macs: int           # multiply-adds a frame of the dense product

    @property
    def per_event(self) -> int:
        return self.vals[0].numel()


def _axis_taps(size: int, out: int, k: int, stride: int, pad: int, dil: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each input coordinate along one axis: the (output coordinate, kernel tap) pairs it feeds,
    padded to the largest count; (out [size, P], tap [size, P], valid [size, P])."""
    pairs = []
    for y in range(size):
        row = []
        for ky in range(k):
            num = y + pad - ky * dil
            if num >= 0 and num % stride == 0 and num // stride < out:
                row.append((num // stride, ky))
        pairs.append(row)
    width = max(1, max(len(r) for r in pairs))
    o = torch.zeros(size, width, dtype=torch.int64)
    t = torch.zeros(size, width, dtype=torch.int64)
    v = torch.zeros(size, width, dtype=torch.bool)
    for y, row in enumerate(pairs):
        for j, (oy, ky) in enumerate(row):
            o[y, j], t[y, j], v[y, j] = oy, ky, True
    return o, t, v


def _event_table(p: _Plan) -> _EventTable:
    lay = p.q.layer
    if lay.kind == "dense":
        w = p.weight  # [n_in, n_out], rows in the input's order
        return _EventTable(None, w, 1, int(w.shape[1]), int(w.numel()))
    weight = torch.as_tensor(p.q.weight)
    cout, cin_g, kh, kw = weight.shape
    cin, h, w_ = lay.input_shape
    _, oh, ow = lay.output_shape
    g = lay.groups
    full = torch.zeros(cout, cin, kh, kw, dtype=weight.dtype)  # groups spelled out: zeros across groups
    og = cout // g
    for gi in range(g):
        full[gi * og:(gi + 1) * og, gi * cin_g:(gi + 1) * cin_g] = weight[gi * og:(gi + 1) * og]
    oy, ky, vy = _axis_taps(h, oh, kh, lay.stride[0], lay.padding[0], lay.dilation[0])
    ox, kx, vx = _axis_taps(w_, ow, kw, lay.stride[1], lay.padding[1], lay.dilation[1])
    py, px = oy.shape[1], ox.shape[1]
    # per pixel (y, x) and tap pair (a, b): output pixel, kernel tap, validity  [h, w, py, px]
    pos = oy[:, None, :, None] * ow + ox[None, :, None, :]
    valid = vy[:, None, :, None] & vx[None, :, None, :]
    kyy = ky[:, None, :, None].expand(h, w_, py, px)
    kxx = kx[None, :, None, :].expand(h, w_, py, px)
    taps = full.permute(1, 2, 3, 0)[:, kyy, kxx] * valid[None, ..., None]  # [cin, h, w, py, px, cout]
    n_in, n_p = cin * h * w_, py * px
    pos = torch.where(valid, pos, torch.zeros_like(pos))  # a padding tap adds zeros to pixel 0: harmless
    pos = pos.reshape(1, h * w_, n_p).expand(cin, h * w_, n_p).reshape(n_in, n_p)
    vals = taps.reshape(n_in, n_p, cout).to(p.acc)
    if p.in_hwc:
        idx = hwc_index(lay.input_shape)
        pos, vals = pos[idx], vals[idx]
    return _EventTable(pos.contiguous().to(p.device), vals.contiguous().to(p.device), oh * ow, cout,
                       cout * cin_g * kh * kw * oh * ow)


def _use_events(p: _Plan, x: torch.Tensor, events: str, n_events: int | None = None) -> bool:
    """Whether adding only the events' weights costs less than the dense product (never changes results).
    ``n_events``: the nonzero inputs, when the caller has counted them (a pass over x saved)."""
    if p.events is None or events == "never":
        return False
    if events == "always":
        return True
    frames = x.shape[0] * x.shape[1]
    if n_events is None:
        n_events = int(torch.count_nonzero(x))
    return n_events * p.events.per_event * EVENT_COST[p.q.layer.kind] < frames * p.events.dense_macs


def _synaptic_events(p: _Plan, x: torch.Tensor, bias: torch.Tensor | None, graded: bool) -> torch.Tensor:
    """x [T, b, n_in] -> [T, b, n_out] by ``index_add_`` of the weights of the nonzero inputs only."""
    t, b, n_in = x.shape
    ev = p.events
    flat = x.reshape(-1)
    idx = torch.nonzero(flat).squeeze(1)
    frame = torch.div(idx, n_in, rounding_mode="floor")
    i = idx - frame * n_in
    src = ev.vals.index_select(0, i)
    if graded:  # payloads other than 1 (the first layer's graded input): weight times payload, exact
        src.mul_(flat[idx].reshape(-1, *([1] * (src.ndim - 1))))
    n_rows = t * b * ev.rows
    if ev.pos is not None and not p.out_hwc:  # conv output in (C, H, W) order: element-wise adds
        out = torch.zeros(t * b, ev.width, ev.rows, dtype=src.dtype, device=src.device)
        if bias is not None:
            out.add_(bias.reshape(1, ev.width, 1))
        pix = ev.pos.index_select(0, i)  # [E, P]
        chan = torch.arange(ev.width, device=src.device) * ev.rows
        el = (frame * (ev.width * ev.rows)).reshape(-1, 1, 1) + pix.unsqueeze(2) + chan
        out.view(-1).index_add_(0, el.reshape(-1), src.reshape(-1))
        return out.reshape(t, b, -1)
    if bias is not None:
        out = bias.reshape(1, ev.width).expand(n_rows, ev.width).clone()
    else:
        out = torch.zeros(n_rows, ev.width, dtype=src.dtype, device=src.device)
    if ev.pos is None:
        out.index_add_(0, frame, src)
    else:
        rows = (frame * ev.rows).unsqueeze(1) + ev.pos.index_select(0, i)
        out.index_add_(0, rows.reshape(-1), src.reshape(-1, ev.width))
    return out.reshape(t, b, -1)


def _conv(p: _Plan, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    lay = p.q.layer
    if x.device.type == "cuda":
        return _conv_unfold(p, x, w, bias)
    return F.conv2d(x, w, bias, stride=lay.stride, padding=lay.padding, dilation=lay.dilation, groups=lay.groups)


def _conv_unfold(p: _Plan, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The convolution as unfold + FP32 matrix product, for CUDA (TF32 off, see ``_exact_cuda``): every
    partial sum is a sum of products, which cuDNN's Winograd / FFT algorithms do not guarantee."""
    lay = p.q.layer
    cout, cin_g, kh, kw = w.shape
    _, oh, ow = lay.output_shape
    g = lay.groups
    cols = F.unfold(x, (kh, kw), dilation=lay.dilation, padding=lay.padding, stride=lay.stride)
    cols = cols.reshape(x.shape[0], g, cin_g * kh * kw, oh * ow)
    out = torch.matmul(w.reshape(g, cout // g, cin_g * kh * kw), cols)  # [F, g, cout/g, L]
    out = out.reshape(x.shape[0], cout, oh, ow)
    if bias is not None:
        out.add_(bias.reshape(1, cout, 1, 1))
    return out


def _synaptic(p: _Plan, h: torch.Tensor, bias: torch.Tensor | None, weight: torch.Tensor | None = None,
              events: str = "never", graded: bool = False, n_events: int | None = None) -> torch.Tensor:
    """h [T, b, *frame] -> summed input [T, b, n] (all steps of the chunk in one convolution / product);
    ``weight`` replaces the plan's (one delay's synapses).

    A conv input given as [T, b, C, H, W] gives its output in (C, H, W) order; one given flat
    [T, b, n] is in the plan's layouts (``in_hwc`` / ``out_hwc``)."""
    lay = p.q.layer
    w = p.weight if weight is None else weight
    t, b = h.shape[:2]
    x = h if h.dtype == p.acc else h.to(p.acc)
    if weight is None and h.ndim == 3 and _use_events(p, x, events, n_events):
        return _synaptic_events(p, x, bias, graded)
    if weight is None and (p.int8_dense is not None or p.int8_conv is not None) and (
            not p.int8_check or float(h.max()) <= ip.INT8_MAX):  # payloads above 127: the float product
        if p.int8_dense is not None:
            return ip.dense_int8(h.reshape(t * b, -1), p.int8_dense, p.int8_shift, bias, p.acc).reshape(t, b, -1)
        c, hh, ww = lay.input_shape
        return ip.conv_int8(p.int8_conv, h.reshape(t * b, c, hh, ww), bias, p.acc).reshape(t, b, -1)
    if lay.kind == "conv":
        c, hh, ww = lay.input_shape
        standard = h.ndim == 5
        if standard or not p.in_hwc:
            xin = x.reshape(t * b, c, hh, ww)
            if p.out_hwc:
                xin = xin.contiguous(memory_format=torch.channels_last)
        else:  # (H, W, C) frames seen as channels-last NCHW: no copy
            xin = x.reshape(t * b, hh, ww, c).permute(0, 3, 1, 2)
        a = _conv(p, xin, w, bias)
        if p.out_hwc and not standard:
            return a.permute(0, 2, 3, 1).reshape(t, b, -1)  # a view when oneDNN kept channels-last
        return a.reshape(t, b, -1)
    x = x.reshape(t * b, -1)
    a = torch.addmm(bias, x, w) if bias is not None else x @ w
    return a.reshape(t, b, -1)


def _per_neuron(p: _Plan, values: torch.Tensor) -> torch.Tensor:
    """Per-channel conv values repeated over each channel's map, in the layer's neuron order."""
    lay = p.q.layer
    if lay.kind != "conv":
        return values
    if p.out_hwc:
        if values.ndim > 1:  # per neuron (C, H, W) -> (H, W, C)
            return values.permute(1, 2, 0).reshape(-1)
        return values.repeat(int(np.prod(lay.output_shape[1:])))
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
    th = torch.tensor(vth, dtype=v.dtype, device=v.device)  # a Python number would be wrapped (a copy) each step
    for k in range(w.shape[0]):
        s = w[k]
        v.add_(s)
        v.clamp_(-hi, hi)
        torch.gt(v, th, out=s)
        v.addcmul_(v, s, value=-1)  # reset to 0 where spiked (v - v * 1), exact


def _scan_lif(w: torch.Tensor, vth: int, v_decay: int) -> None:
    """No current memory, leak: v = sat24(trunc(v * (4096 - vDecay) / 4096) + ((a + bias) << 6)); float64."""
    c = (DECAY_UNITY - v_decay) / DECAY_UNITY  # exact: an integer over 2**12
    v = torch.zeros(w.shape[1:], dtype=torch.float64, device=w.device)
    th = torch.tensor(vth * ACT_SHIFT, dtype=v.dtype, device=v.device)
    for k in range(w.shape[0]):
        s = w[k]
        v.mul_(c).trunc_()
        v.add_(s, alpha=ACT_SHIFT)
        v.clamp_(-MAX_UV + 1, MAX_UV - 1)
        torch.gt(v, th, out=s)
        v.addcmul_(v, s, value=-1)


def _scan_cuba(p: _Plan, a: torch.Tensor) -> None:
    """Current memory and/or a recurrent block: the full CUBA update in float64."""
    q = p.q
    cu = (DECAY_UNITY - min(q.i_decay, DECAY_UNITY)) / DECAY_UNITY
    cv = (DECAY_UNITY - q.v_decay) / DECAY_UNITY
    bias = _per_neuron(p, p.bias.to(torch.float64) * ACT_SHIFT) if p.bias is not None else None
    u = torch.zeros(a.shape[1:], dtype=torch.float64, device=a.device)
    v = torch.zeros_like(u)
    prev = torch.zeros(a.shape[1:], dtype=a.dtype, device=a.device)
    th = torch.tensor(q.vth * ACT_SHIFT, dtype=v.dtype, device=v.device)
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
        torch.gt(v, th, out=s)
        v.addcmul_(v, s, value=-1)
        prev = s


def _run_layer(p: _Plan, h: torch.Tensor, events: str = "never", graded: bool = False,
               n_events: int | None = None) -> torch.Tensor:
    """h [T, b, *frame] -> spikes [T, b, n] as 0/1 floats; ``n_events``: h's nonzero entries, if known."""
    return _run_layer_counted(p, h, events, graded, n_events)[0]


def _run_layer_counted(p: _Plan, h: torch.Tensor, events: str = "never", graded: bool = False,
                       n_events: int | None = None, train: torch.Tensor | None = None,
                       i0: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``_run_layer`` and the spikes per neuron (``_count``); with ``train`` ([T, N, *shape] uint8) the
    spikes are also written to ``train[:, i0:i0 + b]`` in (C, H, W) order. IF / LIF layers on the CPU
    run the compiled scan (``_scan_fused_if`` / ``_lif``: neuron update, count and recorded train in one pass, the
    same float operations as ``_scan_if`` / ``_scan_lif``); the rest the torch scans and copies."""
    q = p.q
    if p.mode == "int64":
        a = _run_layer_int64(p, h)
        mode = "int64"
    else:
        fused = p.fuse_bias
        a = _delayed_input(p, h, p.bias if fused else None, events, graded, n_events)
        mode = p.mode
        if mode in ("if", "lif") and not fused:
            mn, mx = torch.aminmax(a)
            if mn > -NO_WRAP and mx < NO_WRAP:
                if p.bias is not None:
                    a.add_(_per_neuron(p, p.bias))
            else:  # large inputs: Lava's wraps may fire; the general update handles them
                mode = "cuba"
        if (FUSED_SCAN and KERNELS and mode in ("if", "lif") and a.device.type == "cpu" and not p.out_hwc
                and a.is_contiguous() and (train is None or train.is_contiguous())):
            t, b = a.shape[:2]
            counts = np.zeros(a.shape[2], np.float64)
            rec = train.view(t, train.shape[1], -1).numpy() if train is not None else _NO_REC
            if mode == "if":
                _scan_fused_if(a.numpy(), np.float32(q.vth), np.float32((MAX_UV - 1) / ACT_SHIFT), counts, rec, i0,
                               train is not None)
            else:
                _scan_fused_lif(a.numpy(), float(q.vth * ACT_SHIFT), float(MAX_UV - 1),
                                (DECAY_UNITY - q.v_decay) / DECAY_UNITY, counts, rec, i0, train is not None)
            return a, torch.from_numpy(counts)
        if mode == "if":
            _scan_if(a, q.vth)
        elif mode == "lif":
            _scan_lif(a, q.vth, q.v_decay)
        else:
            a = _signed_clamp24(a) if p.conv else a
            _scan_cuba(p, a)
    if train is not None:
        train[:, i0:i0 + a.shape[1]].copy_(_chw_view(p, a))
    return a, _count(a)


# neuron scans compiled (``_scan_fused_if`` / ``_lif``) for IF / LIF layers on the CPU: one pass a step instead of four
# torch ops, the count and the recorded train in the same pass (one thread, thread CPU time, 32
# samples x 25 steps of the benchmark's layers: 0.5 against 1.5 ms on 2312 neurons, 0.2 against 1.0 on
# 1296); False: the torch scans (same results)
FUSED_SCAN = True


@njit
def _emit(ak, counts, rec, k, row, record):  # pragma: no cover - compiled
    """One sample's spikes of step ``k``: summed per neuron into ``counts`` and, when ``record``,
    written to ``rec[k, row]`` (uint8); the tail both compiled scans share."""
    if record:
        r = rec[k, row]
        for j in range(ak.shape[0]):
            r[j] = np.uint8(ak[j])
    for j in range(ak.shape[0]):
        counts[j] += ak[j]


@njit
def _scan_fused_if(a, th, hi, counts, rec, i0, record):  # pragma: no cover - compiled
    """``_scan_if`` step by step over a [T, b, n] (synaptic input in units of 2**6 in, 0/1 spikes out, in
    place): ``v = clamp(v + a, -hi, hi)`` in a's dtype, spike ``v > th``, reset to 0. Every value is an
    integer the dtype holds (the engine's bounds) and the operations are the torch scan's, so the
    spikes are its spikes. Spikes are summed per neuron into ``counts`` and, when ``record``, written to
    ``rec[t, i0 + s]`` (uint8)."""
    t_, b_, n_ = a.shape
    v = np.zeros((b_, n_), a.dtype)
    for k in range(t_):
        for s in range(b_):
            vs = v[s]
            ak = a[k, s]
            for j in range(n_):
                x = min(max(vs[j] + ak[j], -hi), hi)
                fired = x > th
                vs[j] = 0.0 if fired else x
                ak[j] = 1.0 if fired else 0.0
            _emit(ak, counts, rec, k, i0 + s, record)


@njit
def _scan_fused_lif(a, th, hi, keep, counts, rec, i0, record):  # pragma: no cover - compiled
    """``_scan_lif`` as ``_scan_fused_if``: ``v = clamp(trunc(v * keep) + a * 64, -hi, hi)`` in float64."""
    t_, b_, n_ = a.shape
    v = np.zeros((b_, n_), np.float64)
    for k in range(t_):
        for s in range(b_):
            vs = v[s]
            ak = a[k, s]
            for j in range(n_):
                x = min(max(np.trunc(vs[j] * keep) + np.float64(ak[j]) * 64.0, -hi), hi)
                fired = x > th
                vs[j] = 0.0 if fired else x
                ak[j] = 1.0 if fired else 0.0
            _emit(ak, counts, rec, k, i0 + s, record)


_NO_REC = np.zeros((1, 1, 1), np.uint8)  # a layer not recorded


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
    dev = a.device
    bias = _per_neuron(p, p.bias) * ACT_SHIFT if p.bias is not None else torch.zeros(n, dtype=torch.int64, device=dev)
    vth = q.vth * ACT_SHIFT
    u = torch.zeros(b, n, dtype=torch.int64, device=dev)
    v = torch.zeros(b, n, dtype=torch.int64, device=dev)
    s = torch.zeros(b, n, dtype=torch.bool, device=dev)
    out = torch.empty(t, b, n, dtype=torch.float32, device=dev)
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


# --- compiled event-driven run ------------------------------------------------------------------
#
# Frames are time-major (frame f = step * b + sample), as the torch paths' [T, b, n]. A compiled
# layer emits its spikes as an event list (input neurons in (C, H, W) order, frame offsets) for a
# next compiled layer, or as 0/1 frames for the torch paths that run the layers after it.

@njit
def _fire(v, a, s, vth, keep, frame, rec, record, counts, out_idx, m, pixels, cout, frames, dense):  # pragma: no cover
    """Lava's PyLifModelBitAcc without current memory for one frame, in its integers (units of one):
    ``v = sat24(trunc(v * keep / 4096) + a << 6)``, spike ``v > vth``, reset to 0. ``a`` is the
    synaptic sum (below 2**17 in magnitude, ``_kernel_applies``) plus the bias mantissa, so the current
    wrap and the conv's 24-bit clamp never fire. ``a`` and the state ``v[s]`` are in (H, W, C) order
    (``pixels`` pixels of ``cout`` channels; ``cout`` 1: (C, H, W) order as it is); spikes are emitted
    in (C, H, W) order, to ``counts``, to the zeroed ``rec[t, s]`` when ``record``, to the zeroed 0/1
    ``frames[frame]`` when ``dense`` (the next layer's input on the torch paths), and to ``out_idx``
    from ``m`` on. Returns the new event count."""
    hi = 2**23 - 1
    n_out = a.shape[0]
    vs = v[s]
    if keep == 4096:  # IF: no leak (one vectorised pass, then the few spikes)
        for j in range(n_out):
            vs[j] = min(max(vs[j] + np.int32(a[j]) * np.int32(64), -hi), hi)
    else:  # leak: rounded toward zero, as Lava's right shift of |v|
        for j in range(n_out):
            d = np.int32((np.int64(abs(vs[j])) * keep) >> 12)
            vs[j] = min(max((d if vs[j] >= 0 else -d) + np.int32(a[j]) * np.int32(64), -hi), hi)
    t = frame // v.shape[0]
    j = 0
    for pix in range(pixels):
        for o in range(cout):
            if vs[j] > vth:
                vs[j] = 0
                n = o * pixels + pix
                out_idx[m] = n
                m += 1
                counts[n] += 1
                if record:
                    rec[t, s, n] = 1
                if dense:
                    frames[frame, n] = 1.0
            j += 1
    return m


@njit
def _event_layer(ev_idx, ev_val, ev_off, b, graded, weights, bias, count, pos, row, cout, vth, keep,
                 rec, record, counts, out_idx, out_off, frames, dense):  # pragma: no cover - compiled
    """One IF / LIF layer (no current memory) over a chunk's frames, event-driven, in Lava's integers.

    Events: ``ev_idx`` input neurons ((C, H, W) order), ``ev_val`` their payloads (``graded``), frame f's
    in ``ev_off[f]:ev_off[f + 1]``, ``b`` samples a step. Input neuron i reaches ``count[i]`` output
    pixels; to the channel vector at ``pos[i, j]`` (offset into the (H, W, C) accumulator) it adds the
    weight vector ``weights[row[i, j]]`` (a dense layer: one pixel, its weight row): a sum of a subset
    of the products, exact in int32 below the proven 2**17. Then ``_fire``. Spikes go to
    ``rec[t, s, n]`` (when ``record``) and ``counts[n]``, and as the next layer's events to ``out_idx``
    (room for every neuron of every frame; reused buffers, a fresh one a call costs page faults) and
    ``out_off``; returns their number."""
    n_frames = ev_off.shape[0] - 1
    n_out = bias.shape[0]
    pixels = n_out // cout
    acc = np.empty(n_out, np.int32)
    v = np.zeros((b, n_out), np.int32)  # |v| < 2**23
    lanes = cout % 8 == 0
    m = 0
    for f in range(n_frames):
        out_off[f] = m
        for j in range(n_out):
            acc[j] = bias[j]
        for e in range(ev_off[f], ev_off[f + 1]):
            i = ev_idx[e]
            p = ev_val[e] if graded else np.int32(1)
            for j in range(count[i]):
                base = pos[i, j]
                r = row[i, j]
                if lanes:  # whole vectors of 8 (a loop of a runtime length 8 stays scalar)
                    for o0 in range(0, cout, 8):
                        a_ = acc[base + o0:base + o0 + 8]
                        w_ = weights[r, o0:o0 + 8]
                        if graded:
                            for o in range(8):
                                a_[o] += w_[o] * p
                        else:
                            for o in range(8):
                                a_[o] += w_[o]
                else:
                    for o in range(cout):
                        acc[base + o] += weights[r, o] * p
        m = _fire(v, acc, f % b, vth, keep, f, rec, record, counts, out_idx, m, pixels, cout, frames, dense)
    out_off[n_frames] = m
    return m


@njit
def _prepare_frames(x, graded, most, h, counts):  # pragma: no cover - compiled
    """Input x [b, T, n] -> the torch paths' payload frames h [T, b, n] and nonzero entries per input
    neuron, in one pass, on the values given (as the int64 reference and ``_input_events``: a float64
    value float32 cannot hold still counts): binary input gives 1 where nonzero, graded input its value
    rounded (half to even, as torch) and clamped to [0, most], an integer h's dtype holds exactly."""
    b, steps, n = x.shape
    for t in range(steps):
        for s in range(b):
            for i in range(n):
                a = x[s, t, i]
                nz = a != 0
                counts[i] += nz
                if graded:
                    h[t, s, i] = min(max(np.rint(a), 0.0), most)
                else:
                    h[t, s, i] = 1.0 if nz else 0.0


@njit
def _input_events(x, graded, most, idx, val, off):  # pragma: no cover - compiled
    """Input x [b, T, n] (float) -> (events: input neurons, payloads, time-major frame offsets; nonzero
    entries per input neuron). An entry is an event where it is nonzero (as the Lava engine's caller
    counts them); graded payloads are rounded (half to even, as torch) and clamped to [0, most], as
    Lava's input is quantised. Into the buffers ``idx``, ``val`` (room for every entry, plus one) and
    ``off``; returns the number of events and the counts."""
    b, steps, n = x.shape
    counts = np.zeros(n, np.int64)
    m = 0
    for t in range(steps):
        for s in range(b):
            off[t * b + s] = m
            for i in range(n):  # without branches: written at every entry, kept where nonzero
                a = x[s, t, i]
                nz = a != 0
                idx[m] = i
                counts[i] += nz
                if graded:
                    val[m] = np.int32(min(max(np.rint(a), 0.0), most))
                m += nz
    off[b * steps] = m
    return m, counts


@dataclass
class _KernelLayer:
    """A layer's constants for ``_event_layer``: per input neuron ((C, H, W) order) the output pixels
    it reaches (offsets into the (H, W, C) accumulator) and the weight vector it adds to each (a row
    of ``weights``, one per input channel and kernel tap); the bias per neuron in (H, W, C) order."""

    weights: np.ndarray  # [C_in * kH * kW, C_out] int32 (a dense layer: [n_in, n_out])
    bias: np.ndarray     # [n_out] int32, (H, W, C) order
    count: np.ndarray    # [n_in] int64
    pos: np.ndarray      # [n_in, P] int64
    row: np.ndarray      # [n_in, P] int64
    cout: int
    vth: int             # threshold in units of one (vth << 6)
    keep: int            # 4096 - vDecay


def _kernel_layer(q: QuantLayer) -> _KernelLayer:
    lay = q.layer
    w = np.asarray(q.weight, dtype=np.int64)
    if lay.kind == "dense":
        n_out, n_in = w.shape
        weights, cout, pixels = w.T, n_out, 1
        count = np.ones(n_in, np.int64)
        pos = np.zeros((n_in, 1), np.int64)
        row = np.arange(n_in, dtype=np.int64).reshape(n_in, 1)
    else:
        cout, cin_g, kh, kw = w.shape
        cin, h, wd = lay.input_shape
        _, oh, ow = lay.output_shape
        g, og = lay.groups, cout // lay.groups
        full = np.zeros((cout, cin, kh, kw), np.int64)  # groups spelled out: zeros across groups
        for gi in range(g):
            full[gi * og:(gi + 1) * og, gi * cin_g:(gi + 1) * cin_g] = w[gi * og:(gi + 1) * og]
        weights, pixels = full.transpose(1, 2, 3, 0).reshape(cin * kh * kw, cout), oh * ow
        oy, ky, vy = (a.numpy() for a in _axis_taps(h, oh, kh, lay.stride[0], lay.padding[0], lay.dilation[0]))
        ox, kx, vx = (a.numpy() for a in _axis_taps(wd, ow, kw, lay.stride[1], lay.padding[1], lay.dilation[1]))
        n_in = cin * h * wd
        width = oy.shape[1] * ox.shape[1]
        count = np.zeros(n_in, np.int64)
        pos = np.zeros((n_in, width), np.int64)
        row = np.zeros((n_in, width), np.int64)
        for c in range(cin):
            for y in range(h):
                for x in range(wd):
                    i = (c * h + y) * wd + x
                    for a in np.flatnonzero(vy[y]):
                        for b in np.flatnonzero(vx[x]):
                            j = count[i]
                            pos[i, j] = (oy[y, a] * ow + ox[x, b]) * cout
                            row[i, j] = (c * kh + ky[y, a]) * kw + kx[x, b]
                            count[i] += 1
    if q.bias is None:
        bias = np.zeros(cout * pixels, np.int64)
    else:
        b_ = np.asarray(q.bias, dtype=np.int64)
        if lay.kind == "conv" and b_.ndim > 1:  # per neuron (C, H, W) -> (H, W, C)
            bias = b_.reshape(cout, pixels).T.reshape(-1)
        elif lay.kind == "conv":
            bias = np.tile(b_, pixels)
        else:
            bias = b_.reshape(-1)
    i32 = lambda a: np.ascontiguousarray(a, dtype=np.int32)  # noqa: E731
    return _KernelLayer(i32(weights), i32(bias), count, pos, row, cout, int(q.vth) * ACT_SHIFT,
                        DECAY_UNITY - int(q.v_decay))


# Which layers the compiled run takes event-driven: None the first (the torch paths run the rest:
# at the hidden layers' densities their convolutions and scans are the cheaper), True all of them,
# False none (the torch paths throughout); for measurements and tests, results are the same
KERNEL_EVENTS: bool | None = None
# Whether to compile the first layer: an added weight value of the event-driven kernel costs
# KERNEL_EVENT_COST multiply-adds of the layer's dense product (and the values an event adds, summed
# over a frame's inputs, are that product's multiply-adds: so the break-even density is 1 / cost).
# Measured in thread CPU time (the machine is shared), one thread, AVX-512, on the benchmark's
# network: the accumulation alone costs 0.75 ns an added value on the graded 2-channel first layer
# against 0.032 ns a multiply-add of its oneDNN convolution (23x; 0.24 against 0.0145 ns, 17x, on the
# second); with the compiled neuron update (about 1 ns a neuron, its spike loop does not vectorise,
# against 0.3 ns for torch's scan) and the frames it writes for the torch paths, the whole run breaks
# even near 1 % input density: 0.99-1.04x (best of 15) at 1 %, 0.75-0.81x at the benchmark's 5.7 %.
# Since the torch paths' scans are compiled too (``_scan_fused_if``), the break-even moved to about
# 0.2 %: compiled run against torch paths, 64 samples, best of 7: 1.06x at 0.1 %, 0.96x at 0.2 % and
# 0.4 %, 0.86x at 0.8 % (and ``_input_events`` costs a full pass over the input either way).
KERNEL_EVENT_COST = 400.0
PROBE_SAMPLES = 8  # samples whose input density decides "auto" (never changes results, only speed)


def _events_pay(p: _Plan, n_events: int, frames: int) -> bool:
    """Whether the compiled event-driven accumulation is cheaper than the dense convolution / product
    for an input of ``n_events`` events in ``frames`` frames (never changes results, only speed): a
    cost model on the event count."""
    kl = p.kernel
    per_event = float(kl.count.mean()) * kl.cout  # values an event adds, on average over input neurons
    return n_events * per_event * KERNEL_EVENT_COST < frames * p.events.dense_macs


def _kernel_applies(plans: list[_Plan]) -> bool:
    """The compiled event-driven run covers IF / LIF layers without current memory, recurrence or
    delays whose synaptic sums are proven below 2**17 (no wrap, no clamp: ``_event_layer``), on the CPU."""
    return KERNELS and all(
        p.device.type == "cpu" and p.mode in ("if", "lif") and p.fuse_bias and not p.in_hwc and not p.out_hwc
        and p.q.rec_weight is None and p.events is not None
        and (p.q.bias is None or int(np.abs(p.q.bias).max(initial=0)) < NO_WRAP)
        for p in plans)


# --- driver ------------------------------------------------------------------------------------

class _Buffers(threading.local):
    """Per worker thread, reusable flat buffers: a fresh multi-megabyte tensor per chunk costs
    page faults on first touch, as much time as the work done in it."""

    def get(self, key: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        n = int(np.prod(shape))
        buf = self.__dict__.get(key)
        if buf is None or buf.numel() < n or buf.dtype != dtype or buf.device != device:
            buf = self.__dict__[key] = torch.empty(n, dtype=dtype, device=device)
        return buf[:n].view(shape)


def _prepare_input(plans: list[_Plan], net: QuantNet, x: torch.Tensor, bufs: _Buffers) -> tuple[torch.Tensor, torch.Tensor]:
    """x [b, T, *shape] -> (input payloads [T, b, n] in the first layer's input order, nonzero entries
    per input summed, in (C, H, W) order): the one copy transposes into the layout too."""
    p0 = plans[0]
    dtype = p0.acc if p0.acc.is_floating_point else torch.float64
    b, t = x.shape[:2]
    n = int(np.prod(x.shape[2:]))
    if (KERNELS and p0.mode != "int64" and not p0.in_hwc and p0.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64)):  # (the int64 reference keeps the torch ops)
        # one compiled pass instead of a transposing copy, a comparison, a count, a rounding and a clamp
        h = bufs.get("input", (t, b, n), dtype, p0.device)
        counts = np.zeros(n, np.int64)
        _prepare_frames(x.reshape(b, t, n).contiguous().numpy(), net.input_bits > 0, max_payload(net), h.numpy(),
                        counts)
        return h, torch.from_numpy(counts).double()
    raw = x.is_floating_point() and x.dtype != dtype
    given = x
    if raw:  # counted and rounded on the values given, as the int64 reference (a float64 value float32 cannot hold)
        nonzero = x != 0
        given = x.round().clamp(0, max_payload(net)) if net.input_bits else nonzero.to(dtype)
    if p0.in_hwc:
        c, hh, ww = x.shape[2:]
        h = bufs.get("input", (t, b, hh, ww, c), dtype, p0.device)
        h.copy_(given.permute(1, 0, 3, 4, 2))
    else:
        h = bufs.get("input", (t, b, *x.shape[2:]), dtype, p0.device)
        h.copy_(given.transpose(0, 1))
    h = h.view(t, b, n)
    if raw:
        return h, _count(nonzero.transpose(0, 1).reshape(t, b, n).to(dtype))  # (C, H, W) order, as x
    if net.input_bits == 0:
        events = _count(h.ne_(0))
    else:  # events are counted on the values given, as the Lava engine's caller counts them
        events = _count(torch.ne(h, 0, out=bufs.get("nonzero", (t, b, n), dtype, p0.device)))
        h.round_().clamp_(0, 2**net.input_bits - 1)
    return h, _to_chw(events, tuple(x.shape[2:]), p0.in_hwc)


def _count(s: torch.Tensor) -> torch.Tensor:
    """Sum of 0/1 entries [T, b, *frame] over steps and samples, per entry of a frame (float64).

    A matrix-vector product (exact: counts stay far below 2**24) is much faster than a
    reduction over the two leading dimensions."""
    m = s.reshape(s.shape[0] * s.shape[1], -1)
    if m.shape[0] >= FLOAT32_EXACT:
        return m.sum(0, dtype=torch.float64)
    return (torch.ones(m.shape[0], dtype=m.dtype, device=m.device) @ m).to(torch.float64)


def _chw_view(p: _Plan, h: torch.Tensor) -> torch.Tensor:
    """Spikes [T, b, n] in the layer's order as [T, b, *output_shape] in (C, H, W) order (a view)."""
    t, b = h.shape[:2]
    shape = p.q.layer.output_shape
    if p.out_hwc:
        c, hh, ww = shape
        return h.reshape(t, b, hh, ww, c).permute(0, 1, 4, 2, 3)
    return h.reshape(t, b, *shape)


def _to_chw(values: torch.Tensor, shape: tuple[int, ...], hwc: bool) -> torch.Tensor:
    """Per-neuron values in (H, W, C) order (when ``hwc``) back in (C, H, W) order."""
    if not hwc:
        return values
    out = torch.empty_like(values)
    out[hwc_index(shape).to(values.device)] = values
    return out


@contextlib.contextmanager
def _exact_cuda(device: torch.device):
    """On CUDA: no TF32 (10-bit mantissas: not exact) in matrix products or cuDNN, deterministic cuDNN."""
    if device.type != "cuda":
        yield
        return
    b = torch.backends
    saved = (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.deterministic, b.cudnn.benchmark)
    b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.deterministic, b.cudnn.benchmark = False, False, True, False
    try:
        yield
    finally:
        b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.deterministic, b.cudnn.benchmark = saved


def run_fast(net: QuantNet, inputs: torch.Tensor, *, batch_size: int = 32, record: bool = False,
             threads: int | None = None, arithmetic: str = "auto", events: str = "auto",
             device: str | torch.device | None = None) -> FastResult:
    """Run ``inputs`` [N, T, *shape] through ``net``: per-neuron spike totals always, trains when ``record``.

    ``batch_size`` samples go through all layers together (small chunks keep each layer's
    tensors in cache); ``threads`` chunks run at once, each op single-threaded (default: torch's
    thread count), which stays efficient when other processes share the cores.
    ``arithmetic="int64"`` runs the integer reference instead of the proven-exact float paths.
    ``events``: "auto" runs the compiled event-driven kernel where it applies (``_kernel_applies``)
    and otherwise the torch paths with event-driven accumulation where it is cheaper; "kernel"
    insists on the compiled kernel; "always" / "never": the torch paths with / without event-driven
    accumulation wherever it applies. Results are the same. ``device``: "cpu" (default) or "cuda";
    results come back on the CPU.
    """
    if events not in EVENTS:
        raise ValueError(f"events '{events}' is not one of {EVENTS}")
    dev = _device(device)
    n, t = inputs.shape[:2]
    if tuple(inputs.shape[2:]) != tuple(net.input_shape):
        want = ", ".join(map(str, net.input_shape))
        raise ValueError(f"inputs of shape {tuple(inputs.shape)}: expected [N, T, {want}]")
    plans = _cached_plan(net, t, arithmetic, dev)
    kernel = events in ("auto", "kernel") and all(p.kernel is not None for p in plans)
    if kernel and events == "auto":
        # the compiled run pays where the first layer's events do (its dense layers are no faster
        # than the torch paths: the same convolutions, scans of about the same cost)
        # the first samples' density stands for the rest: a pass over all of them costs 3-5 %, and even
        # one chunk's (32 samples) about 5 % of a call on 20 samples
        probe = inputs[:min(batch_size, PROBE_SAMPLES)]
        kernel = _events_pay(plans[0], count_nonzero(probe), t * probe.shape[0])
    if events == "kernel" and not kernel:
        raise ValueError("events='kernel': the compiled event-driven run does not apply to this network "
                         "(it needs numba, the CPU, IF / LIF layers without current memory, recurrence or "
                         "delays, and synaptic sums below 2**17)")
    output = torch.empty((t, n, *plans[-1].q.layer.output_shape), dtype=torch.uint8)
    rec = {p.q.name: torch.empty((t, n, *p.q.layer.output_shape), dtype=torch.uint8) for p in plans} if record else {}
    x = inputs.detach()
    bufs = _Buffers()
    graded = net.input_bits > 0

    def work(i0: int, size: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with torch.inference_mode():
            h, in_events = _prepare_input(plans, net, x[i0:i0 + size].to(dev), bufs)
            b = h.shape[1]
            counts = []
            n_events = int(in_events.sum())  # the totals give each layer's input events for free
            for k, p in enumerate(plans):
                h, c = _run_layer_counted(p, h, events, graded and k == 0, n_events,
                                          rec[p.q.name] if record else None, i0)
                counts.append(c)
                n_events = int(c.sum())
            output[:, i0:i0 + b].copy_(_chw_view(plans[-1], h))
            return in_events, counts

    def work_kernel(i0: int, size: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The first layer (all layers with ``KERNEL_EVENTS``) compiled and event-driven, the rest on
        the torch paths."""
        compiled = len(plans) if KERNEL_EVENTS else (0 if KERNEL_EVENTS is False else 1)
        if compiled == 0:
            return work(i0, size)
        xb = x[i0:i0 + size]
        b = xb.shape[0]
        frames = xb.reshape(b, t, -1)
        if frames.dtype not in (torch.float32, torch.float64):
            frames = frames.to(torch.float32)
        nf = t * b
        most = max(max(int(np.prod(p.q.layer.input_shape)), p.q.layer.neurons) for p in plans) * nf + 1  # room for all
        ev = [bufs.get(f"events{j}", (most,), torch.int32, dev).numpy() for j in (0, 1)]
        offs = [bufs.get(f"offsets{j}", (nf + 1,), torch.int64, dev).numpy() for j in (0, 1)]
        val = bufs.get("payloads", (frames.numel() + 1,) if graded else (0,), torch.int32, dev).numpy()
        m, in_events = _input_events(frames.contiguous().numpy(), graded, max_payload(net), ev[0], val, offs[0])
        counts = []
        h = None
        with torch.inference_mode():
            for k, p in enumerate(plans[:compiled]):
                keep = record or k == len(plans) - 1
                train = (rec[p.q.name] if record else output)[:, i0:i0 + b] if keep else _NO_TRAIN
                train = train.view(train.shape[0], train.shape[1], -1)
                if keep:
                    train.zero_()
                dense = k == compiled - 1 and compiled < len(plans)  # the torch paths take over after it
                h = bufs.get("frames", (t, b, p.q.layer.neurons), torch.float32, dev) if dense else _NO_FRAMES
                if dense:
                    h.zero_()
                c = np.zeros(p.q.layer.neurons, np.int64)
                kl = p.kernel
                m = _event_layer(ev[k % 2][:m], val if k == 0 else _NO_VALUES, offs[k % 2], b, graded and k == 0,
                                 kl.weights, kl.bias, kl.count, kl.pos, kl.row, kl.cout, kl.vth, kl.keep, train.numpy(),
                                 keep, c, ev[(k + 1) % 2], offs[(k + 1) % 2],
                                 h.view(h.shape[0] * h.shape[1], -1).numpy(), dense)
                counts.append(torch.from_numpy(c).double())
            n_events = m
            for p in plans[compiled:]:  # as ``work``
                h, c = _run_layer_counted(p, h, events, False, n_events, rec[p.q.name] if record else None, i0)
                counts.append(c)
                n_events = int(c.sum())
            if compiled < len(plans):
                output[:, i0:i0 + b].copy_(_chw_view(plans[-1], h))
        if record and compiled == len(plans):
            output[:, i0:i0 + b].copy_(rec[plans[-1].q.name][:, i0:i0 + b])
        return torch.from_numpy(in_events).double(), counts

    with _exact_cuda(dev):
        results = run_chunks(work_kernel if kernel else work, n, batch_size, threads, parallel=dev.type == "cpu")
    in_events = torch.zeros(int(np.prod(inputs.shape[2:])), dtype=torch.float64, device=dev)
    totals = {p.q.name: torch.zeros(p.q.layer.neurons, dtype=torch.float64, device=dev) for p in plans}
    for ev, counts in results:
        in_events += ev.to(dev)
        for p, c in zip(plans, counts):
            totals[p.q.name] += c.to(dev)
    in_events = in_events.cpu()
    # compiled layers count in (C, H, W) order; kernels apply only where no layer is channels-last
    totals = {p.q.name: _to_chw(c, p.q.layer.output_shape, p.out_hwc and not kernel).cpu()
              for p, c in zip(plans, totals.values())}
    return FastResult(rec if record else None, output, in_events, totals)


_NO_TRAIN = torch.zeros(1, 2, 1, dtype=torch.uint8)[:, :1]  # a layer not recorded (strided, as the recorded ones)
_NO_VALUES = np.zeros(0, np.int32)  # hidden layers' events carry 1
_NO_FRAMES = torch.zeros(1, 1, 1)      # a compiled layer followed by another compiled one


def _device(device: str | torch.device | None) -> torch.device:
    """The engine's device; "cuda" without a usable GPU is refused with a clear message."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{device}': no CUDA GPU is available to this torch build "
                         f"({torch.__version__}); run on the CPU (device='cpu') or install torch's CUDA build")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device '{device}': the fast engine runs on 'cpu' or 'cuda'")
    return dev
