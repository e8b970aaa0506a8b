"""Speck's chip form, batched over samples and time: the spikes sinabs gives, at a fraction of the cost.

sinabs (``simulate.py``) runs ``Conv2d -> IAFSqueeze -> SumPool2d`` per core, its neuron update a
Python loop over steps through an autograd function that clones the state and allocates several
temporaries a step. This engine runs chunks of samples, each layer's synaptic input for all steps
of a chunk in one convolution over ``T * batch`` frames (a core does not depend on its own past),
then the neuron update step by step in place, the chunks spread over worker threads with each op
single-threaded (as the Loihi twin, ``deploy/loihi/fast_engine.py``).

Time-stepped semantics (``semantics="stepped"``, the default): sinabs' ``lif_forward_single`` with
``alpha_mem = 1`` and the chip form's conventions, line by line:

- ``v = v + I`` with ``I`` the convolution of the step's input events plus the bias;
- spikes: ``SingleSpike`` ``v >= threshold`` (one a step), ``MultiSpike`` ``(v > 0) * trunc(v / threshold)``;
- reset: ``MembraneReset`` ``v = v * (spikes == 0)``, ``MembraneSubtract`` ``v = v - spikes * threshold``;
- floor: ``v = relu(v - min_v_mem) + min_v_mem`` (``ChipForm.membrane_floor``, or the 16-bit minimum);
- sum pooling of the spikes (and of the input events, ``ChipForm.input_pool``) on the way to the next core.

``fire_at_threshold`` lives in the quantised threshold (``quantize.py``: ``floor(scale) + 1`` for the
strict test), so the integer test is ``v >= threshold_high`` either way.

Exactness. On the quantised form every value is an integer: weights, biases, thresholds, floors,
event counts. A sum of integers in floating point is exact while every partial sum stays below
2**24 (float32) or 2**53 (float64), whatever order a convolution adds its terms in; ``trunc(v / th)``
of integers below 2**24 is exact in float32 (``k - 1/th`` is more than half an ulp from ``k`` when
``k * th < 2**24``). ``plan`` bounds, per layer, the most events an input entry receives in one step
(the input's maximum times the pooling area; a layer's spikes a step times its pooling area), the
largest synaptic input ``events * max_c sum |W_c| + max |b|``, and the largest state
``max(threshold, |floor|) + input`` (plus ``T * input`` for one spike a step with subtraction, where
the state can climb by the input every step), and runs in float32 only when every bound is below
2**24, else float64. The results are then the same integers sinabs computes (itself exact only within
its own float bound), so spikes, taps and counts are equal, not close.

The float chip form (``quant=None``, the accuracy of the form before quantisation) runs the same
floating-point operations as sinabs in float32; its convolutions may add in another order, so it is
equal to sinabs up to float rounding, not proven bit for bit.

Where the time goes (the demo's visual net, N-MNIST-like input at 5.7 % density, one thread, thread
CPU time on 64 samples): the convolutions, the same float32 oneDNN ones sinabs runs, take about two
thirds of this engine's time (the 2-channel first convolution about half of all), the compiled neuron
update (``_scan_kernel``, ``FUSED_SCAN``: one pass a step with the per-sample counts, the same
integers as the torch ops) about a fifth, the dense cores' int8 products (``INT8``) next to nothing.
By CPU time with one thread this engine is 2.6-2.9x sinabs (``bench/bench_speck.py``; before the
int8 products and the compiled update 2.35-2.53x in the same runs); since both run the same
convolutions, the ratio with one thread cannot exceed sinabs' time over this engine's convolution
time (about 4.8x: 45 against 9.4 ms on those 64 samples), whatever the rest costs. Wall-clock
ratios depend on the load and the threads (``bench/bench_speck.py`` measures one thread and the
default threads in one run: 2.4-3.2x and 5.7-15x at load average 4-6 on 2 cores, where sinabs'
threads suffer the load most). Tried and left
out: scatter-based event accumulation in torch (10x slower than the dense convolution at this
density), a compiled (numba) event-driven first layer as in the Loihi twin (the same 2 -> 8, 5 x 5,
stride-2 shape there: 3.6-5.3 ms against 2.0-2.6 ms for the dense convolution on 20 samples at 6.5 %
input density; it pays below about 1 %), oneDNN's int8 convolution (``onednn.qconv2d_pointwise``, exact
with float output: 800 frames, 3.5 ms against 2.8 on the first layer, 0.77 against 0.89 and 0.46
against 0.72 on the others, before the input's conversion to channels-last uint8, 0.6-1.5 ms) and
im2col + ``torch._int_mm`` for the convolutions (``int_products``: the layout work costs more than
the faster product saves on these channel counts; ``conv_pays`` chooses per layer).

int8 products. The quantised weights are 8-bit integers and the inputs event counts: where a chunk's
counts are at most 127 (proven a priori, or that chunk's peak), int8 x int8 -> int32 gives the same
integers (``deploy/int_products.py``); a chunk with a count above 127 runs the float product.

Event-driven semantics (``semantics="event"``): Speck has no time steps. Every event reaching a
core adds its kernel weight to each neuron it reaches; the neuron then compares with threshold_high
and, at or above it, emits *one* spike and is reset (subtract or to zero); a state still above the
threshold after the reset fires again only when the next event arrives (sinabs docs,
``docs/speck/faqs/tips_for_training.md``: "Weight Clipping During Training", "Selection Of Spike
Function"). So a neuron fires up to once per incoming event, several times inside one step of the
binned input, and the result depends on the order of a step's events, which binning has lost. This
engine runs that rule for a stated order: within a step the layers are processed one after the other
(breadth-first, as SynSense's event simulator specksim does; the chip is depth-first,
``docs/speck/specksim.md``), each neuron receives its events in raster order of its inputs
(channel, row, column; repeated events of one input one after another), the bias (a leak, applied on
the chip per tick of its slow clock) is applied once at the start of every step and may fire the
neuron like an event, and the floor is applied after every update. It runs on the quantised form in
float64 (exact for any reachable state) and is much slower than the stepped run; ``spikes_per_step``
does not apply (the chip has no such setting).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from spikeport.deploy import int_products as ip
from spikeport.deploy.engine_common import KERNELS, njit, run_chunks
from spikeport.deploy.speck.chip_form import ChipForm, ChipLayer, check_neuron_options
from spikeport.deploy.speck.quantize import QuantisedForm
from spikeport.deploy.speck.simulate import SimResult, fanout_map, float_neuron
from spikeport.errors import ConfigError

FLOAT32_EXACT = 2**24   # float32 holds every integer below this exactly
FLOAT64_EXACT = 2**53
SEMANTICS = ("stepped", "event")
# int8 x int8 -> int32 products (``deploy/int_products.py``) on the quantised form, where a chunk's
# event counts are at most 127 (checked per chunk unless proven): None = dense cores (a kernel covering
# the whole input) always, convolutions where ``int_products.conv_pays`` estimates them cheaper; True =
# every layer; False = none. Same results either way (the module notes: the int32 sums are exact).
INT8: bool | None = None


@dataclass
class LayerPlan:
    layer: ChipLayer
    weight: torch.Tensor        # [C_out, C_in, k, k] float64 (integers on the quantised form)
    bias: torch.Tensor | None   # [C_out] float64, None where every bias is 0
    threshold: float
    floor: float | None         # min_v_mem (None: no floor, float form only)
    weight_sum: float           # max over output channels of sum |W|: a partial sum is at most events x this
    bias_max: float
    events_max: float           # most events one input entry can receive in a step (a priori)
    input_max: float            # largest |synaptic input| of a neuron in a step (a priori)
    state_max: float            # largest |v| (a priori)
    fanout: torch.Tensor        # [C_in * H * W] float64: neurons each input entry reaches
    dense: bool                 # the kernel covers the whole unpadded input: a matrix product
    weight32: torch.Tensor | None = None  # float32 copies, where float32 is exact for them
    bias32: torch.Tensor | None = None
    int8_dense: torch.Tensor | None = None   # [C_in*H*W, C_out] int8 (a dense core)
    int8_conv: "ip.ConvInt8 | None" = None
    int8_shift: int = 0                      # weight = int8 weight << int8_shift
    int8_why: str = ""                       # why the float product runs (empty where int8 may run)

    @property
    def int8(self) -> bool:
        return self.int8_dense is not None or self.int8_conv is not None


@dataclass
class EnginePlan:
    form: ChipForm
    layers: list[LayerPlan]
    dtype: torch.dtype          # the dtype the a priori bounds prove exact for every input
    integer: bool               # the quantised form (exact) or the float chip form
    timesteps: int
    multi: bool                 # MultiSpike
    subtract: bool              # MembraneSubtract

    @property
    def grows(self) -> bool:
        """One spike a step with subtraction: the state can climb by the input every step."""
        return self.subtract and not self.multi

    @property
    def bound(self) -> float:
        """The largest magnitude any sum in the stepped run can reach, over all inputs."""
        return max(max(p.state_max, p.input_max, p.events_max * self.timesteps) for p in self.layers)


def _state_max(threshold: float, floor: float | None, input_max: float, timesteps: int, grows: bool) -> float:
    # after a step's reset v < threshold (or >= floor); with one spike a step and subtraction it
    # can instead climb by the input every step
    return max(threshold, abs(floor or 0.0)) + input_max * (timesteps + 1 if grows else 1)


def plan(form: ChipForm, timesteps: int, quant: QuantisedForm | None = None, max_input: float = 1.0) -> EnginePlan:
    """Weights, neuron constants and the bounds that prove the arithmetic exact (see the module notes)."""
    check_neuron_options(form)
    if quant is not None and len(quant.layers) != len(form.layers):
        raise ConfigError(f"quantised form has {len(quant.layers)} layers, the chip form {len(form.layers)}")
    multi, subtract = form.spikes_per_step == "multi", form.reset_mode == "subtract"
    layers: list[LayerPlan] = []
    events = float(max_input) * form.input_pool ** 2
    for i, layer in enumerate(form.layers):
        if quant is None:
            weight, bias = layer.weight.double(), layer.bias.double()
            threshold, floor = float_neuron(form)
        else:
            q = quant.layers[i]
            weight, bias = q.weight.double(), q.bias.double()
            threshold, floor = float(q.threshold), float(q.min_v_mem)
        weight_sum = float(weight.abs().sum((1, 2, 3)).max())
        bias_max = float(bias.abs().max())
        input_max = events * weight_sum + bias_max
        state_max = _state_max(threshold, floor, input_max, timesteps, subtract and not multi)
        _, h, w = layer.in_shape
        dense = tuple(layer.weight.shape[-2:]) == (h, w) and tuple(layer.padding) == (0, 0)
        layers.append(LayerPlan(layer=layer, weight=weight, bias=bias if bool((bias != 0).any()) else None,
                                threshold=threshold, floor=floor, weight_sum=weight_sum, bias_max=bias_max,
                                events_max=events, input_max=input_max, state_max=state_max,
                                fanout=fanout_map(layer).flatten().repeat(layer.in_shape[0]), dense=dense))
        per_neuron = math.floor(state_max / threshold) if multi else 1  # most spikes a neuron sends a step
        events = float(per_neuron) * layer.pool ** 2
    out = EnginePlan(form=form, layers=layers, dtype=torch.float32, integer=quant is not None,
                     timesteps=timesteps, multi=multi, subtract=subtract)
    if out.integer:
        if out.bound >= FLOAT64_EXACT:
            raise ConfigError(f"Speck engine: sums up to {out.bound:.3g} exceed float64's exact integers; "
                              "this network and number of steps cannot be simulated exactly")
        if out.bound >= FLOAT32_EXACT:
            out.dtype = torch.float64
        for p in layers:
            if p.weight_sum < FLOAT32_EXACT and p.bias_max < FLOAT32_EXACT:
                p.weight32 = p.weight.float()
                p.bias32 = p.bias.float() if p.bias is not None else None
            _plan_int8(p)
    else:  # the float form: sinabs' float32 parameters as they are, and its convolution
        for p in layers:
            p.weight32, p.bias32 = p.layer.weight.float(), p.layer.bias.float()
            p.dense = False
    return out


def _plan_int8(p: LayerPlan) -> None:
    """The int8 constants of a quantised layer where its weights fit int8 (``int_products``)."""
    lay = p.layer
    if INT8 is False:
        p.int8_why = "int8 products switched off"
        return
    if ip.INT8_MAX * p.weight_sum >= ip.INT32_EXACT:  # partial sums of counts <= 127 must fit int32
        p.int8_why = f"partial sums up to 127 x {p.weight_sum:.0f} exceed int32"
        return
    w8, shift, why = ip.int8_weight(p.weight.to(torch.int64))
    if w8 is None:
        p.int8_why = why
        return
    if p.dense:
        p.int8_dense = w8.reshape(w8.shape[0], -1).t().to(torch.int8).contiguous()
        p.int8_shift = shift
        return
    out = tuple(lay.out_shape)
    conv, why = ip.conv_int8_plan((w8, shift, ""), lay.stride, lay.padding, (1, 1), 1, tuple(lay.in_shape), out)
    if conv is not None and INT8 is None and not ip.conv_pays(conv):
        conv, why = None, "im2col + int8 estimated slower than the float convolution (int_products.conv_pays)"
    p.int8_conv, p.int8_why = conv, why


def int8_layers(plan_: EnginePlan) -> dict[str, str]:
    """Per layer, which product the stepped run takes: "int8 (counts <= 127)" or "float (why)"."""
    return {p.layer.name: "int8 where a chunk's counts are <= 127" if p.int8 else f"float ({p.int8_why or 'float form'})"
            for p in plan_.layers}


# --- time-stepped run --------------------------------------------------------------------------

def _pool(h: torch.Tensor, k: int) -> torch.Tensor:
    """Sum pooling k x k, stride k, dropping a remainder (sinabs ``SumPool2d``) of [N, C, H, W]."""
    if k == 1:
        return h
    n, c, hh, ww = h.shape
    oh, ow = hh // k, ww // k
    return h[:, :, :oh * k, :ow * k].reshape(n, c, oh, k, ow, k).sum((3, 5))


def _synaptic(p: LayerPlan, h: torch.Tensor, int8: bool = False) -> torch.Tensor:
    """h [T*b, C, H, W] -> synaptic input [T*b, C_out * OH * OW] (bias included), all steps at once,
    in h's dtype (float32 only where ``_chunk`` has proven it exact); ``int8``: h's counts are proven
    at most 127, so the layer's int8 product (where planned) gives the same integers."""
    lay = p.layer
    if h.dtype == torch.float32:
        w, bias = p.weight32, p.bias32
    else:
        w, bias = p.weight, p.bias
    if int8 and p.int8_dense is not None:
        return ip.dense_int8(h.reshape(h.shape[0], -1), p.int8_dense, p.int8_shift, bias, h.dtype)
    if int8 and p.int8_conv is not None:
        return ip.conv_int8(p.int8_conv, h, bias, h.dtype).reshape(h.shape[0], -1)
    if p.dense:
        w = w.reshape(w.shape[0], -1)
        x = h.reshape(h.shape[0], -1)
        return torch.addmm(bias, x, w.t()) if bias is not None else x @ w.t()
    a = F.conv2d(h, w, bias, stride=lay.stride, padding=lay.padding)
    return a.reshape(a.shape[0], -1)


def _scan(plan_: EnginePlan, p: LayerPlan, a: torch.Tensor, time_major: bool) -> torch.Tensor:
    """Synaptic input a step, a [T, b, n] (``time_major``) or [b, T, n] -> spikes [T, b, n]
    (in place when time-major: each step's input is overwritten by its spikes)."""
    th, floor = p.threshold, p.floor
    t = a.shape[0] if time_major else a.shape[1]
    out = a if time_major else torch.empty((t, a.shape[0], a.shape[2]), dtype=a.dtype)
    v = torch.zeros_like(out[0])
    fired = torch.empty_like(v) if plan_.multi and not plan_.subtract else None
    exact = plan_.integer
    for k in range(t):
        s = out[k]
        v.add_(a[k] if time_major else a[:, k])
        if plan_.multi:
            torch.div(v, th, rounding_mode="trunc", out=s)
            s.clamp_(min=0)  # (v > 0) * trunc(v / th): trunc is <= 0 wherever v <= 0
        else:
            torch.ge(v, th, out=s)
        if plan_.subtract:
            v.sub_(s, alpha=th)           # v - spikes * th
        elif fired is not None:
            torch.gt(s, 0, out=fired)
            v.addcmul_(v, fired, value=-1)  # v * (spikes == 0)
        else:
            v.addcmul_(v, s, value=-1)
        if floor is not None:
            if exact:
                v.clamp_(min=floor)       # relu(v - floor) + floor on integers
            else:
                v.sub_(floor).clamp_(min=0).add_(floor)
    return out


# the quantised form's neuron update compiled (``_scan_kernel``): one pass a step instead of 4-5 torch
# ops, the per-sample spike counts in the same pass (one thread, thread CPU time, 64 samples of the
# demo's visual net: scans and counts about 8 ms -> 2 ms); False: the torch scans (same results)
FUSED_SCAN = True


def _scan_compiled(plan_: EnginePlan, p: LayerPlan, a: torch.Tensor, time_major: bool
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``_scan`` on the quantised form, compiled, and the spikes per sample and neuron summed over
    steps ([b, n] float64, as ``_sum_steps``)."""
    t = a.shape[0] if time_major else a.shape[1]
    b, n = (a.shape[1] if time_major else a.shape[0]), a.shape[2]
    out = a if time_major else torch.empty((t, b, n), dtype=a.dtype)
    counts = torch.zeros((b, n), dtype=torch.float64)
    cast = np.float32 if a.dtype == torch.float32 else np.float64
    floor = p.floor if p.floor is not None else -math.inf
    _scan_kernel(a.numpy(), time_major, cast(p.threshold), plan_.multi, plan_.subtract, cast(floor), cast(0), cast(1),
                 out.numpy(), counts.numpy())
    return out, counts


@njit
def _scan_kernel(a, time_major, th, multi, subtract, floor, zero, one, out, counts):  # pragma: no cover
    """``_scan`` on integers, step by step: ``v += I``; spikes ``max(trunc(v / th), 0)`` (multi) or
    ``v >= th``; ``v -= spikes * th`` (subtract) or ``v = 0`` where it spiked; ``v = max(v, floor)`` (-inf:
    no floor); in
    a's dtype (float32 only where the engine proved every value below 2**24: the same integers as the
    torch ops). a [T, b, n] (``time_major``) or [b, T, n]; spikes to out [T, b, n] (may be a), summed
    into counts [b, n]."""
    t_, b_, n_ = out.shape
    v = np.zeros((b_, n_), out.dtype)
    spk = np.empty(n_, out.dtype)  # a step's spikes, local: the update loops see no aliasing and vectorise
    for k in range(t_):
        for s in range(b_):
            vs = v[s]
            ak = a[k, s] if time_major else a[s, k]
            # the conventions' branches outside the neuron loops
            if multi and subtract:
                for j in range(n_):
                    x = vs[j] + ak[j]
                    q = np.trunc(x / th)
                    q = q if q > zero else zero
                    vs[j] = max(x - q * th, floor)
                    spk[j] = q
            elif multi:
                for j in range(n_):
                    x = vs[j] + ak[j]
                    q = np.trunc(x / th)
                    q = q if q > zero else zero
                    vs[j] = max(zero if q > zero else x, floor)
                    spk[j] = q
            elif subtract:
                for j in range(n_):
                    x = vs[j] + ak[j]
                    q = one if x >= th else zero
                    vs[j] = max(x - q * th, floor)
                    spk[j] = q
            else:
                for j in range(n_):
                    x = vs[j] + ak[j]
                    q = one if x >= th else zero
                    vs[j] = max(zero if q > zero else x, floor)
                    spk[j] = q
            ok = out[k, s]
            for j in range(n_):
                ok[j] = spk[j]
            cs = counts[s]
            for j in range(n_):
                cs[j] += spk[j]


def _sum_steps(h: torch.Tensor, b: int, t: int, time_major: bool, exact32: bool) -> torch.Tensor:
    """Frames [T*b, ...] (or [b*T, ...]) -> [b, m] summed over steps, in float32 where ``exact32``.
    Time-major, a vector-matrix product: much faster than a reduction over the leading dimension."""
    dtype = torch.float32 if exact32 else torch.float64
    if time_major:
        m = h.reshape(t, -1).to(dtype)
        return (torch.ones(t, dtype=dtype) @ m).reshape(b, -1).double()
    if KERNELS and h.dtype in (torch.float32, torch.float64) and h.is_contiguous():
        out = torch.zeros((b, h[0].numel()), dtype=torch.float64)  # float64 sums of integers: exact
        _sum_sample_major(h.reshape(b, t, -1).numpy(), out.numpy())
        return out
    return h.reshape(b, t, -1).to(dtype).sum(1).double()


@njit
def _sum_sample_major(h, out):  # pragma: no cover - compiled
    """h [b, T, n] -> out [b, n] += sum over steps (0.24-0.27 against 0.5 ms for torch's reduction over the
    middle dimension, 64 samples of 2 x 34 x 34)."""
    b_, t_, n_ = h.shape
    for s in range(b_):
        o = out[s]
        for k in range(t_):
            row = h[s, k]
            for j in range(n_):
                o[j] += row[j]


def _peak(x: torch.Tensor) -> float:
    return float(x.abs().max()) if x.numel() else 0.0


def _chunk(plan_: EnginePlan, x: torch.Tensor, semantics: str, record: bool) -> dict:
    """One chunk of samples through every layer. The input frames are taken sample-major, as they
    come ([b*T, C, H, W], no copy): a convolution does not care about the order of its frames; the
    first scan reads each step as a strided view and writes time-major spikes, and from there on
    every layer is time-major ([T*b, ...]: a step's neurons contiguous)."""
    form, t = plan_.form, plan_.timesteps
    b = x.shape[0]
    event = semantics == "event"
    # proven a priori for every input: float32 throughout, no per-chunk checks
    proven = plan_.dtype == torch.float32 and not event
    h = x.reshape(b * t, *form.input_shape).to(torch.float64 if event else torch.float32)
    time_major = False
    if event:  # the event-driven run walks steps: time-major from the start
        h = h.reshape(b, t, *form.input_shape).transpose(0, 1).reshape(t * b, *form.input_shape)
        time_major = True
    h = _pool(h, form.input_pool)
    synops, spikes, events, taps, trains = [], [], [], {}, {}
    per_entry = None
    for i, p in enumerate(plan_.layers):
        lay = p.layer
        most = p.events_max if proven else _peak(h)  # events one input entry gets in a step
        if per_entry is None:  # [b, C_in*H*W] events per input entry, over all steps
            per_entry = _sum_steps(h, b, t, time_major, t * most < FLOAT32_EXACT)
        events.append(per_entry.sum(1))
        synops.append(per_entry @ p.fanout)
        if event:
            s = _event_layer(plan_, p, h.reshape(t, b, *h.shape[1:]))
        else:
            # float32 where the events prove every partial sum and state below 2**24, else float64
            f32 = p.weight32 is not None and (
                proven or not plan_.integer or most * p.weight_sum + p.bias_max < FLOAT32_EXACT)
            # int8 where the chunk's counts are at most 127 (a priori, or this chunk's peak); else float
            int8 = p.int8 and plan_.integer and (most <= ip.INT8_MAX or (proven and _peak(h) <= ip.INT8_MAX))
            a = _synaptic(p, h.to(torch.float32 if f32 else torch.float64), int8)
            if not proven and plan_.integer and a.dtype == torch.float32:
                if _state_max(p.threshold, p.floor, _peak(a), t, plan_.grows) >= FLOAT32_EXACT:
                    a = a.double()
            a = a.reshape((t, b, -1) if time_major else (b, t, -1))
            if FUSED_SCAN and KERNELS and plan_.integer and a.is_contiguous():
                s, per_neuron = _scan_compiled(plan_, p, a, time_major)
            else:
                s = _scan(plan_, p, a, time_major)
                per_neuron = None
        if event or per_neuron is None:
            s = s.reshape(t * b, *lay.out_shape)
            per_neuron = _sum_steps(s, b, t, True, proven or t * _peak(s) < FLOAT32_EXACT)  # [b, n]
        time_major = True
        s = s.reshape(t * b, *lay.out_shape)
        spikes.append(per_neuron.sum(1))
        # the next layer's events per input entry: these sums, pooled (sums commute)
        per_entry = _pool(per_neuron.reshape(b, *lay.out_shape), lay.pool).reshape(b, -1)
        pooled = _pool(s, lay.pool)
        for tap in form.outputs:
            if tap.layer == i:
                src = pooled if tap.pooled else s
                taps[tap.name] = src.reshape(t, b, *tap.shape).float()
        if record:
            trains[lay.name] = s.reshape(t, b, *lay.out_shape).float()
        h = pooled
    return {"synops": torch.stack(synops, 1), "spikes": torch.stack(spikes, 1), "events": torch.stack(events, 1),
            "taps": taps, "trains": trains}


# --- event-driven run --------------------------------------------------------------------------

def _event_layer(plan_: EnginePlan, p: LayerPlan, h: torch.Tensor) -> torch.Tensor:
    """h [T, b, C, H, W] input events a step -> spikes [T, b, C_out, OH, OW] under the per-event rule."""
    lay = p.layer
    t, b = h.shape[:2]
    c_out, oh, ow = lay.out_shape
    k = int(lay.weight.shape[-1])
    w = p.weight.reshape(c_out, -1)                              # [C_out, C_in*k*k], unfold's order
    bias = p.bias[None, :, None] if p.bias is not None else None
    th, floor = p.threshold, p.floor
    v = torch.zeros(b, c_out, oh * ow, dtype=torch.float64)
    out = torch.zeros(t, b, c_out, oh * ow, dtype=torch.float64)
    fired = torch.empty_like(v)
    got = torch.empty(b, 1, oh * ow, dtype=torch.float64)

    def update(count: torch.Tensor, received: torch.Tensor | None) -> None:
        # only a neuron that was just updated compares (one still above threshold waits for an event)
        torch.ge(v, th, out=fired)
        if received is not None:
            fired.mul_(received)
        count.add_(fired)
        if plan_.subtract:
            v.sub_(fired, alpha=th)
        else:
            v.addcmul_(v, fired, value=-1)
        if floor is not None:
            v.clamp_(min=floor)

    for step in range(t):
        count = out[step]
        if bias is not None:  # every neuron of a layer with a bias takes it once a step
            v.add_(bias)
            update(count, None)
        u = F.unfold(h[step], k, padding=lay.padding, stride=lay.stride)  # [b, C_in*k*k, L]: raster order
        most = u.amax((0, 2))
        for j in torch.nonzero(most > 0).flatten().tolist():
            col = u[:, j]                                         # [b, L] events of entry j
            wj = w[:, j][None, :, None]
            for r in range(int(most[j])):
                torch.gt(col, r, out=got[:, 0])
                v.addcmul_(wj, got)
                update(count, got)
    return out.reshape(t, b, c_out, oh, ow)


# --- driver ------------------------------------------------------------------------------------

def run(plan_: EnginePlan, inputs: torch.Tensor, *, batch_size: int = 32, threads: int | None = None,
        semantics: str = "stepped", record: bool = False) -> SimResult:
    """Run ``inputs`` [N, T, *nir input shape] (event counts) through the planned chip form.

    Returns simulate's ``SimResult`` (taps [T, N, *shape], per-sample counts); ``record`` adds every
    layer's spike trains (``SimResult.layers``, [T, N, C, H, W])."""
    if semantics not in SEMANTICS:
        raise ConfigError(f"Speck engine semantics '{semantics}': expected one of {', '.join(SEMANTICS)}")
    if semantics == "event" and not plan_.integer:
        raise ConfigError("the event-driven semantics runs the quantised form only (its states are integers)")
    n, t = inputs.shape[:2]
    if t != plan_.timesteps:
        raise ConfigError(f"inputs have {t} steps, the engine was planned for {plan_.timesteps}")
    x = inputs.detach()

    def work(i0: int, size: int) -> dict:
        with torch.inference_mode():
            return _chunk(plan_, x[i0:i0 + size], semantics, record)

    parts = run_chunks(work, n, batch_size, threads)
    taps = {tap.name: torch.cat([q["taps"][tap.name] for q in parts], 1) for tap in plan_.form.outputs}
    trains = {p.layer.name: torch.cat([q["trains"][p.layer.name] for q in parts], 1)
              for p in plan_.layers} if record else None
    return SimResult(taps=taps, synops=torch.cat([q["synops"] for q in parts]),
                     spikes=torch.cat([q["spikes"] for q in parts]),
                     input_events=torch.cat([q["events"] for q in parts]), layers=trains)


def spike_difference(stepped: SimResult, event: SimResult, names: list[str]) -> list[dict]:
    """Per layer: spikes a sample under each semantics, and the relative difference."""
    rows = []
    for i, name in enumerate(names):
        a = float(stepped.spikes[:, i].double().mean())
        e = float(event.spikes[:, i].double().mean())
        rows.append({"layer": name, "spikes_per_sample_stepped": a, "spikes_per_sample_event": e,
                     "relative_difference": (e - a) / a if a > 0 else (0.0 if e == 0 else math.inf)})
    return rows

