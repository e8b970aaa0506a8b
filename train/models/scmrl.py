"""S-CMRL (He et al. 2025, code Brain-Cog-Lab/S-CMRL; FACTS §6): audio-visual spiking
transformer with cross-modal complementary spatio-temporal spiking attention (CCSSA).

Input ``(xv, xa)``: visual ``[B, T, 2, 34, 34]`` and audio ``[B, T, 700]`` spike counts.

Pipeline (time-major ``[T, B, C, N]`` tokens inside)::

    per modality  SpikingPatchEmbed: 4 stages Conv3x3-BN-LIF-pool (widths E/8, E/4, E/2, E)
                  + positional branch Conv3x3-BN-LIF, added: tokens = x + rpe(x)   [backbone]
    audio block   CCSSA(Q from audio, K/V from visual), x + 1.5 * branch           [head]
    visual block  CCSSA(Q from visual, K/V from audio), x + 1.5 * branch           [head]
    per modality  spiking MLP block x + MLP(x) (Conv1d-BN-LIF x2, ratio 4)           [head]
    head          mean over tokens, audio + visual, mean over T, Linear            [head]

CCSSA: spatial branch ``(Q K^T) V * 0.25`` over tokens and temporal branch the same over time
steps (per token), each with its own Conv1d-BN-LIF Q/K/V, an attention LIF (threshold 0.5)
and a Conv1d-BN-LIF projection, no softmax; the branch is the outer product of the spatial
branch's token mean [T, B, C] and the temporal branch's time mean [B, C, N].

LIF (braincog's, as the code ran): ``mem += (x - mem) / 2``, threshold 1, hard reset,
sigmoid surrogate with alpha 4. Written as snntorch ``Leaky`` with ``beta = 1 - 1/tau`` fed
``x / tau``, reset to zero without delay, and the sigmoid surrogate in braincog's form
``alpha * s * (1 - s)``, ``s = sigmoid(alpha * u)`` (``SigmoidSurrogate`` below). snntorch's own
``surrogate.sigmoid`` computes the same derivative as ``k exp(-k u) / (exp(-k u) + 1)^2``, which is
inf / inf = NaN in float32 once ``u < -88 / k`` (-22 for k = 4). Such membranes do occur here:
BatchNorm over the very sparse attention spikes (a channel almost always 0) gives inputs of
+-40 to the projection LIFs, and with the snntorch form a whole training run turned NaN at its
second step on av-digits; braincog's form gives the true, vanishing gradient there.

Audio layout: the code fed a spectrogram image; here each time step carries 700 cochlear
channels, which are laid out in frequency order as a one-channel ``audio_map`` image
(default 28 x 25: rows of 25 adjacent channels), so the 3x3 convolutions see neighbouring
frequencies. The temporal branch pairs tokens of the two modalities position by position,
so both embeddings must give the same token grid: the first three stages pool with
MaxPool(3, 2, 1) as the code did and the fourth with an adaptive max pool to ``token_grid``
(default 3 x 3). On a 34 x 34 input this is exactly the code's fourth MaxPool(3, 2, 1).

Backbone / head split (for the exporter): ``model.backbone`` (``ScmrlEncoders``) holds the two
patch embeddings; they give per-step token maps (spike TRAINS, values 0..2 since the positional
branch is added) ``[T, B, E, N]`` per modality, which the host head consumes step by step.
Everything after (attention products, MLP blocks, Linear) is ``model.head``. The patch
embeddings contain MaxPool and BatchNorm: BN folds into the convs, MaxPool is not NIR-expressible
(FACTS §6), so this backbone deploys only with a pooling substitute.

Loss (``losses.model_loss``): label-smoothed CE (0.1) + SAO alignment loss on ``extra["f_a"]``,
``extra["f_v"]``: the audio and visual CCSSA branches averaged over tokens and T, [B, E].

Switches (spec keys, for the paper's ablation and its unimodal references):

- ``ccssa: false``: no cross-modal residual; each modality's tokens go straight to its MLP
  block. The SAO loss then aligns the two modalities' own token means (there is no branch).
- ``sao_weight: 0``: no SAO loss (label-smoothed CE alone).
- ``inputs: "visual"`` / ``"audio"``: one modality alone (patch embedding, MLP block, head),
  the reference S-CMRL's fusion must beat on the same pairs; no cross-modal block, no SAO.
- ``chip_native: true``: patch embeddings the chips carry (``ChipPatchEmbed``): every max
  pool replaced by a stride-2 convolution, integrate-and-fire neurons with reset to zero (the
  chip-native rule of the zoo), BatchNorm kept for training and folded at export. The last
  stage is an unpadded convolution whose kernel lands on ``token_grid`` (visual 5x5 -> 3x3
  with 3x3, audio 4x4 -> 3x3 with 2x2), so both modalities give the same tokens. The
  positional branch (Conv-BN-LIF on the tokens, added to them) runs on the host with the
  attention, since adding two spike trains is a host operation.

ANN twin (``ScmrlAnnTwin``, ``build_ann_twin``): this model with a ReLU for every spiking neuron,
run once on the frames summed over time (the zoo's twin convention), what the energy report's GPU
baseline runs. Its spec is a twin spec (``ann: true``) whose layer stack is one composite layer
holding these architecture keys (``twin_layers``).

Training speed: every neuron layer runs its whole sequence as one autograd node (``_BraincogScan``
here, ``train.fused_neurons`` for the chip-native embeddings' ``snn.Leaky``); stepping them
through time cost about twice the CPU time a training step (``bench/bench_scmrl.py``).
"""
from __future__ import annotations

from typing import Any

import snntorch as snn
import torch
from torch import nn

from spikeport.errors import ConfigError
from spikeport.train.fused_neurons import leaky_cell_scan
from spikeport.train.models.base import ModelOutput
from spikeport.train.models.spec import DEFAULT_INPUT_SHAPES, SCMRL_DEFAULTS, SCMRL_INPUTS, ScmrlSpec  # noqa: F401

#: The architecture keys and their defaults (the fields of ``spec.ScmrlSpec``; widths from
#: ``widths.SCMRL``).
DEFAULTS: dict[str, Any] = SCMRL_DEFAULTS
INPUTS = SCMRL_INPUTS


def fill_defaults(spec: dict[str, Any] | ScmrlSpec) -> ScmrlSpec:
    """The typed spec of ``spec`` with every S-CMRL key filled in and checked (store its
    ``to_dict()`` in checkpoints)."""
    return spec if isinstance(spec, ScmrlSpec) else ScmrlSpec.from_dict(spec)


class SigmoidSurrogate(torch.autograd.Function):
    """Heaviside forward, ``alpha * s * (1 - s)`` with ``s = sigmoid(alpha * u)`` backward.

    Written by hand because snntorch's ``surrogate.sigmoid`` evaluates the same derivative with
    ``exp(-alpha u)`` squared, which overflows to NaN for membranes far below threshold; this is
    the form braincog (the library S-CMRL's code ran on) uses, finite for every ``u``.
    """

    @staticmethod
    def forward(ctx, u: torch.Tensor, alpha: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(u)
        ctx.alpha = alpha
        return (u > 0).to(u.dtype)  # snntorch's spike condition (mem - threshold > 0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        (u,) = ctx.saved_tensors
        s = torch.sigmoid(ctx.alpha * u)
        return grad_output * ctx.alpha * s * (1.0 - s), None


def sigmoid_surrogate(alpha: float):
    """A ``spike_grad`` callable for snntorch neurons (see ``SigmoidSurrogate``)."""
    def spike_grad(u: torch.Tensor) -> torch.Tensor:
        return SigmoidSurrogate.apply(u, alpha)
    return spike_grad


class _BraincogScan(torch.autograd.Function):
    """The braincog LIF over a whole sequence in one autograd node: scaled currents [T, B, ...]
    -> spikes [T, B, ...].

    Forward, per step (the operations of the step loop, same operands, same order, so the same
    bits): ``m = beta * v + i[t]``, ``s = H(m - threshold)``, ``v = m - s * m`` (= 0 where it
    spiked, else ``m``: exact). Backward: the BPTT of exactly that graph, the reset not detached
    (as autograd differentiates the loop): with ``g_v`` the gradient reaching ``v[t]`` from step
    t + 1 and ``sg = alpha * q * (1 - q)``, ``q = sigmoid(alpha * (m[t] - threshold))``,

        dL/dm[t] = (dL/ds[t] - g_v * m[t]) * sg[t] + g_v * (1 - s[t]),   g_v(t - 1) = beta * dL/dm[t]

    The step loop left every step's backward to materialise a zero tensor of the whole sequence
    (the backward of ``x[t]``) and a dozen small nodes a step; here the surrogate terms are
    computed for all steps at once and the loop is one multiply-add a step.
    """

    @staticmethod
    def forward(ctx, scaled: torch.Tensor, beta: float, threshold: float,  # type: ignore[override]
                alpha: float) -> torch.Tensor:
        mem = torch.empty_like(scaled)      # m[t], the membrane before the reset
        keep = torch.empty_like(scaled)     # 1 - s[t]
        v = torch.zeros_like(scaled[0])
        for t in range(scaled.shape[0]):
            m = mem[t]
            torch.add(beta * v, scaled[t], out=m)
            # m - threshold > 0 is exactly m > threshold (gradual underflow, the default), and
            # m - s * m is m * (1 - s) exactly (m or +0: a spiking m is > threshold > 0)
            torch.le(m, threshold, out=keep[t])
            v = m * keep[t]
        ctx.save_for_backward(mem, keep)
        ctx.beta, ctx.threshold, ctx.alpha = beta, threshold, alpha
        return 1.0 - keep

    @staticmethod
    def backward(ctx, grad_spikes: torch.Tensor):  # type: ignore[override]
        mem, keep = ctx.saved_tensors
        q = torch.sigmoid(ctx.alpha * (mem - ctx.threshold))
        sg = ctx.alpha * q * (1.0 - q)
        direct = grad_spikes * sg                  # dL/ds[t] * sg[t]
        carry = keep - mem * sg                    # dv[t] / dm[t] = (1 - s[t]) - m[t] * sg[t]
        grad = direct                              # becomes dL/dm[t], last step first
        for t in range(grad.shape[0] - 2, -1, -1):
            grad[t].addcmul_(carry[t], grad[t + 1], value=ctx.beta)
        return grad, None, None, None


class MultiStepLIF(nn.Module):
    """braincog LIF over time: ``mem += (x - mem) / tau``, spike at mem > threshold, reset to 0.

    Input and output [T, ...]. When ``keep`` is set the last output is kept in ``last`` (for
    ``record=True``). ``fused`` (default True): the whole sequence as one autograd node
    (``_BraincogScan``: the same spikes, bit for bit, and the same gradients up to the order of
    float sums); False: the step loop, written out.
    """

    def __init__(self, tau: float = 2.0, threshold: float = 1.0, alpha: float = 4.0) -> None:
        super().__init__()
        self.tau = float(tau)
        self.beta = 1.0 - 1.0 / self.tau
        self.threshold = float(threshold)
        self.alpha = float(alpha)
        self.keep = False
        self.fused = True
        self.last: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # snntorch Leaky(beta = 1 - 1/tau, reset "zero", reset_delay False) fed x / tau, step for
        # step in its own float order.
        scaled = x / self.tau
        if self.fused:
            spikes = _BraincogScan.apply(scaled, self.beta, self.threshold, self.alpha)
        else:
            mem = torch.zeros_like(x[0])
            out = []
            for t in range(x.shape[0]):
                mem = self.beta * mem + scaled[t]
                spk = SigmoidSurrogate.apply(mem - self.threshold, self.alpha)
                mem = mem - spk * mem
                out.append(spk)
            spikes = torch.stack(out)
        if self.keep:
            self.last = spikes
        return spikes


def _lif(spec: ScmrlSpec, threshold: float | None = None) -> MultiStepLIF:
    return MultiStepLIF(spec.tau, spec.threshold if threshold is None else threshold, spec.surrogate_alpha)


def _per_step(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a stateless module to [T, B, ...] by folding T into the batch."""
    y = module(x.flatten(0, 1))
    return y.reshape(x.shape[0], x.shape[1], *y.shape[1:])


class SpikingPatchEmbed(nn.Module):
    """[T, B, C, H, W] -> tokens [T, B, E, N] (4 Conv-BN-LIF-pool stages + positional branch)."""

    def __init__(self, in_channels: int, spec: ScmrlSpec) -> None:
        super().__init__()
        e = int(spec.embed_dim)
        widths = [e // 8, e // 4, e // 2, e]
        self.stages = nn.ModuleList()
        c = in_channels
        for i, w in enumerate(widths):
            pool = nn.MaxPool2d(3, 2, 1) if i < 3 else nn.AdaptiveMaxPool2d(tuple(spec.token_grid))
            self.stages.append(nn.ModuleDict({
                "conv": nn.Conv2d(c, w, 3, 1, 1, bias=False), "bn": nn.BatchNorm2d(w),
                "lif": _lif(spec), "pool": pool}))
            c = w
        self.rpe_conv = nn.Conv2d(e, e, 3, 1, 1, bias=False)
        self.rpe_bn = nn.BatchNorm2d(e)
        self.rpe_lif = _lif(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for st in self.stages:
            x = _per_step(st["pool"], st["lif"](_per_step(lambda z: st["bn"](st["conv"](z)), x)))
        rpe = self.rpe_lif(_per_step(lambda z: self.rpe_bn(self.rpe_conv(z)), x))
        x = x + rpe
        return x.flatten(3)  # [T, B, E, N]


class ConvBNLIF1d(nn.Module):
    """Conv1d(k=1)-BN-LIF on tokens [T, B, C, N]."""

    def __init__(self, c_in: int, c_out: int, spec: ScmrlSpec, bias: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, 1, bias=bias)
        self.bn = nn.BatchNorm1d(c_out)
        self.lif = _lif(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif(_per_step(lambda z: self.bn(self.conv(z)), x))


class SpikingCrossAttention(nn.Module):
    """One CCSSA branch: Q from x, K and V from y (spikes), no softmax.

    ``axis="spatial"``: attention over tokens within each time step;
    ``axis="temporal"``: attention over time steps within each token.
    """

    def __init__(self, spec: ScmrlSpec, axis: str) -> None:
        super().__init__()
        e = int(spec.embed_dim)
        self.heads = int(spec.num_heads)
        self.scale = float(spec.attn_scale)
        self.axis = axis
        self.q = ConvBNLIF1d(e, e, spec)
        self.k = ConvBNLIF1d(e, e, spec)
        self.v = ConvBNLIF1d(e, e, spec)
        self.attn_lif = _lif(spec, spec.attn_threshold)
        self.proj = ConvBNLIF1d(e, e, spec)

    def _split(self, z: torch.Tensor) -> torch.Tensor:
        """[T, B, C, N] -> heads over the attended axis: spatial [T, B, h, N, d], temporal [N, B, h, T, d]."""
        t, b, c, n = z.shape
        z = z.reshape(t, b, self.heads, c // self.heads, n)
        return z.permute(0, 1, 2, 4, 3) if self.axis == "spatial" else z.permute(4, 1, 2, 0, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t, b, c, n = x.shape
        q, k, v = self._split(self.q(x)), self._split(self.k(y)), self._split(self.v(y))
        out = (q @ k.transpose(-2, -1)) @ v * self.scale
        if self.axis == "spatial":
            out = out.permute(0, 1, 2, 4, 3)              # [T, B, h, d, N]
        else:
            out = out.permute(3, 1, 2, 4, 0)              # [N, B, h, T, d] -> [T, B, h, d, N]
        out = out.reshape(t, b, c, n)
        return self.proj(self.attn_lif(out))


class CCSSA(nn.Module):
    """Cross-modal complementary spatio-temporal spiking attention: outer product of the
    spatial branch's token mean and the temporal branch's time mean."""

    def __init__(self, spec: ScmrlSpec) -> None:
        super().__init__()
        self.spatial = SpikingCrossAttention(spec, "spatial")
        self.temporal = SpikingCrossAttention(spec, "temporal")

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = self.spatial(x, y).mean(dim=3, keepdim=True)   # [T, B, C, 1]
        tm = self.temporal(x, y).mean(dim=0, keepdim=True)  # [1, B, C, N]
        return s * tm


class CrossModalBlock(nn.Module):
    """x + alpha * CCSSA(x, y); returns (new x, branch)."""

    def __init__(self, spec: ScmrlSpec) -> None:
        super().__init__()
        self.attn = CCSSA(spec)
        self.alpha = float(spec.residual_alpha)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        branch = self.attn(x, y)
        return x + self.alpha * branch, branch


class SpikingMLPBlock(nn.Module):
    """x + MLP(x), MLP = Conv1d-BN-LIF (E -> ratio E) then Conv1d-BN-LIF (-> E)."""

    def __init__(self, spec: ScmrlSpec) -> None:
        super().__init__()
        e = int(spec.embed_dim)
        hidden = int(e * spec.mlp_ratio)
        self.fc1 = ConvBNLIF1d(e, hidden, spec, bias=True)
        self.fc2 = ConvBNLIF1d(hidden, e, spec, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.fc1(x))


class ChipPatchEmbed(nn.Module):
    """Chip-native patch embedding: [T, B, C, H, W] -> stage-4 spike maps [T, B, E, g, g].

    ``blocks``: conv1, bn1, lif1, ..., conv4, bn4, lif4 (the names of the NIR nodes once the
    BatchNorms are folded; with ``folded`` the convs carry the folded bias and there is no BN).
    Stages 1-3: Conv3x3 stride 2 padding 1; stage 4: an unpadded convolution whose kernel maps
    the stage-3 map onto ``token_grid``. Neurons: snntorch Leaky with beta 1 (integrate and
    fire), threshold 1, reset to zero, as every chip-native layer of the zoo.
    """

    def __init__(self, input_shape: list[int], spec: ScmrlSpec, folded: bool = False) -> None:
        super().__init__()
        from snntorch import surrogate
        self.input_shape = [int(s) for s in input_shape]
        e = int(spec.embed_dim)
        widths = [e // 8, e // 4, e // 2, e]
        c, h, w = self.input_shape
        grid = [int(g) for g in spec.token_grid]
        self.blocks = nn.ModuleDict()
        for i, width in enumerate(widths, 1):
            if i < 4:
                conv = nn.Conv2d(c, width, 3, 2, 1, bias=folded)
                h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
            else:
                kernel = (h - grid[0] + 1, w - grid[1] + 1)
                if min(kernel) < 1:
                    raise ConfigError(f"spec key token_grid: {grid} is larger than the stage-3 map {h}x{w} "
                                      f"of input {self.input_shape}")
                conv = nn.Conv2d(c, width, kernel, 1, 0, bias=folded)
                h, w = grid
            self.blocks[f"conv{i}"] = conv
            if not folded:
                self.blocks[f"bn{i}"] = nn.BatchNorm2d(width)
            self.blocks[f"lif{i}"] = snn.Leaky(beta=1.0, threshold=float(spec.threshold), reset_mechanism="zero",
                                               spike_grad=surrogate.atan(), init_hidden=False)
            c = width
        self.output_shape = [c, h, w]

    @property
    def lif_names(self) -> list[str]:
        return [n for n, m in self.blocks.items() if isinstance(m, snn.Leaky)]

    def forward(self, x: torch.Tensor, record: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """x: [T, B, C, H, W] -> lif4's spikes [T, B, E, g, g]; ``record`` gets every LIF's train."""
        steps, batch = x.shape[:2]
        h = x.flatten(0, 1)
        for name, m in self.blocks.items():
            if not isinstance(m, snn.Leaky):
                h = m(h)
                continue
            cur = h.reshape(steps, batch, *h.shape[1:])
            # one fused scan over the sequence (snntorch's arithmetic and gradients,
            # train.fused_neurons); the step loop when the cell is one the scan does not cover
            train = leaky_cell_scan(m, cur) if getattr(self, "fused_neurons", True) else None
            if train is None:
                mem = torch.zeros_like(cur[0])
                out = []
                for t in range(steps):
                    spk, mem = m(cur[t], mem)
                    out.append(spk)
                train = torch.stack(out)
            if record is not None:
                record[name] = train
            h = train.flatten(0, 1)
        return h.reshape(steps, batch, *h.shape[1:])


class PositionalBranch(nn.Module):
    """The chip-native embedding's positional branch, on the host: maps + LIF(BN(conv(maps)))."""

    def __init__(self, spec: ScmrlSpec) -> None:
        super().__init__()
        e = int(spec.embed_dim)
        self.conv = nn.Conv2d(e, e, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(e)
        self.lif = _lif(spec)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """[T, B, E, g, g] spike maps -> tokens [T, B, E, N]."""
        rpe = self.lif(_per_step(lambda z: self.bn(self.conv(z)), maps))
        return (maps + rpe).flatten(3)


def _modalities(spec: ScmrlSpec) -> tuple[str, ...]:
    return ("visual", "audio") if spec.inputs == "both" else (spec.inputs,)


class ScmrlEncoders(nn.Module):
    """The spiking part: one patch embedding per modality used. forward(xv, xa) -> (tokens_v,
    tokens_a): per-step spike trains [T, B, E, N] (chip-native: stage-4 maps [T, B, E, g, g]);
    None for a modality the spec does not use."""

    def __init__(self, spec: ScmrlSpec) -> None:
        super().__init__()
        self.input_shapes = spec.input_shapes
        self.audio_map = list(spec.audio_map)
        self.chip_native = bool(spec.chip_native)
        self.used = _modalities(spec)
        shapes = {"visual": list(self.input_shapes["visual"]), "audio": [1, *self.audio_map]}
        for m in self.used:
            enc = ChipPatchEmbed(shapes[m], spec) if self.chip_native else SpikingPatchEmbed(shapes[m][0], spec)
            setattr(self, m, enc)

    def audio_image(self, xa: torch.Tensor) -> torch.Tensor:
        """[B, T, N] audio -> [T, B, 1, H, W] (channels in frequency order, rows of adjacent ones)."""
        return xa.transpose(0, 1).reshape(xa.shape[1], xa.shape[0], 1, *self.audio_map)

    def forward(self, xv: torch.Tensor, xa: torch.Tensor):
        for name, x in (("visual", xv), ("audio", xa)):
            if x.dim() != len(self.input_shapes[name]) + 2 or list(x.shape[2:]) != self.input_shapes[name]:
                raise ConfigError(f"scmrl: {name} input must be [B, T, {self.input_shapes[name]}], "
                                  f"got {list(x.shape)} (spec key input_shapes)")
        if xv.shape[:2] != xa.shape[:2]:
            raise ConfigError(f"scmrl: visual and audio inputs need the same batch and time steps, "
                              f"got {list(xv.shape[:2])} and {list(xa.shape[:2])}")
        tv = self.visual(xv.transpose(0, 1)) if "visual" in self.used else None
        ta = self.audio(self.audio_image(xa)) if "audio" in self.used else None
        return tv, ta


class ScmrlHead(nn.Module):
    """Host part: (chip-native: positional branches), cross-modal blocks, spiking MLP blocks,
    pooling, Linear."""

    def __init__(self, spec: ScmrlSpec) -> None:
        super().__init__()
        self.used = _modalities(spec)
        self.ccssa = bool(spec.ccssa) and len(self.used) == 2
        for m in self.used:
            if spec.chip_native:
                setattr(self, f"rpe_{m}", PositionalBranch(spec))
            if self.ccssa:
                setattr(self, f"block_{m}", CrossModalBlock(spec))
            setattr(self, f"mlp_{m}", SpikingMLPBlock(spec))
        self.chip_native = bool(spec.chip_native)
        self.fc = nn.Linear(int(spec.embed_dim), int(spec.num_classes))
        nn.init.trunc_normal_(self.fc.weight, std=0.02)
        nn.init.zeros_(self.fc.bias)

    def forward(self, tv: torch.Tensor | None, ta: torch.Tensor | None):
        """-> (logits, fused features [B, E], f_a, f_v); f_a / f_v are None for one modality."""
        tokens = {"visual": tv, "audio": ta}
        if self.chip_native:
            tokens = {m: getattr(self, f"rpe_{m}")(tokens[m]) for m in self.used}
        branches = {}
        if self.ccssa:
            a, branches["audio"] = self.block_audio(tokens["audio"], tokens["visual"])
            v, branches["visual"] = self.block_visual(tokens["visual"], tokens["audio"])
            tokens = {"audio": a, "visual": v}
        pooled = {m: getattr(self, f"mlp_{m}")(tokens[m]).mean(-1) for m in self.used}  # [T, B, E]
        fused = sum(pooled.values()).mean(0)            # [B, E]
        if len(self.used) < 2:
            return self.fc(fused), fused, None, None
        if self.ccssa:
            f_a, f_v = (branches[m].mean(-1).mean(0) for m in ("audio", "visual"))
        else:  # no branch to align: the modalities' own features
            f_a, f_v = pooled["audio"].mean(0), pooled["visual"].mean(0)
        return self.fc(fused), fused, f_a, f_v


class SCMRL(nn.Module):
    def __init__(self, spec: ScmrlSpec) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = ScmrlEncoders(spec)
        self.head = ScmrlHead(spec)

    def forward(self, x, record: bool = False) -> ModelOutput:
        """x: (xv [B, T, C, H, W], xa [B, T, N]) -> ModelOutput(logits, features = fused [B, E],
        extra = {f_a, f_v} for the alignment loss (both modalities only), spikes = every LIF
        [T, B, ...] if record)."""
        if not isinstance(x, (tuple, list)) or len(x) != 2:
            raise ConfigError("scmrl takes a pair (visual [B, T, C, H, W], audio [B, T, N])")
        lifs = {name: m for name, m in self.named_modules() if isinstance(m, MultiStepLIF)}
        for m in lifs.values():
            m.keep, m.last = record, None
        try:
            tv, ta = self.backbone(*x)
            logits, fused, f_a, f_v = self.head(tv, ta)
        finally:
            spikes = {name: m.last for name, m in lifs.items()} if record else None
            for m in lifs.values():
                m.keep, m.last = False, None
        if record and self.backbone.chip_native:  # the chip stages' trains, by module path
            for mod in self.backbone.used:
                got: dict[str, torch.Tensor] = {}
                enc = getattr(self.backbone, mod)
                enc(x[0].transpose(0, 1) if mod == "visual" else self.backbone.audio_image(x[1]), got)
                spikes.update({f"backbone.{mod}.blocks.{k}": v for k, v in got.items()})
        extra = {} if f_a is None else {"f_a": f_a, "f_v": f_v}
        return ModelOutput(logits=logits, features=fused, spikes=spikes, extra=extra)


class ScmrlChipPart(nn.Module):
    """One modality's chip-native patch embedding, BatchNorm folded, as its own model: what a
    chip runs for S-CMRL (spec key ``part``: visual | audio). Input: the audio-visual pair (or
    the modality's tensor); logits: the stage-4 spike counts [B, E * N] (the chip's output; the
    S-CMRL head reads the trains on the host)."""

    chip_part = True

    def __init__(self, spec: ScmrlSpec) -> None:
        super().__init__()
        self.spec = spec
        self.part = spec.part
        shape = list(spec.input_shapes["visual"]) if self.part == "visual" else [1, *spec.audio_map]
        self.backbone = ChipPatchEmbed(shape, spec, folded=True)
        self.input_shape = self.backbone.input_shape
        self.audio_map = list(spec.audio_map)

    def chip_inputs(self, x) -> torch.Tensor:
        """The pair (or this modality's [B, T, ...]) -> the chip's input [B, T, *input_shape]."""
        if isinstance(x, (tuple, list)):
            x = x[0] if self.part == "visual" else x[1]
        return x.reshape(x.shape[0], x.shape[1], *self.input_shape)

    def forward(self, x, record: bool = False) -> ModelOutput:
        got: dict[str, torch.Tensor] = {}
        maps = self.backbone(self.chip_inputs(x).transpose(0, 1), got)
        return ModelOutput(logits=maps.sum(0).flatten(1), spikes={f"blocks.{k}": v for k, v in got.items()}
                           if record else None)


def chip_part(model: SCMRL, modality: str) -> tuple[ScmrlSpec, dict[str, torch.Tensor]]:
    """(spec, state_dict) of ``modality``'s chip part of a trained chip-native S-CMRL, its
    BatchNorms folded into the convolutions (``torch.nn.utils.fusion``)."""
    from spikeport.export.bn_fold import fold_pair
    if not model.spec.chip_native:
        raise ConfigError("scmrl: only the chip-native variant (spec key chip_native) has a chip part")
    if modality not in model.backbone.used:
        raise ConfigError(f"scmrl: modality {modality!r} is not used by this model (inputs {model.spec.inputs!r})")
    enc = getattr(model.backbone, modality)
    spec = model.spec.replace(part=modality)
    if isinstance(spec.dts, dict):  # the part's bins: its own stream's width
        spec = spec.replace(dt=float(spec.dts[modality]))
    state = dict(ScmrlChipPart(spec).state_dict())  # the neurons' buffers (threshold, beta, ...)
    state.update({f"backbone.blocks.{k}": v.detach().clone() for k, v in enc.blocks.state_dict().items()
                  if k.startswith("lif")})
    for i in range(1, 5):
        folded = fold_pair(enc.blocks[f"conv{i}"], enc.blocks[f"bn{i}"], f"bn{i}")
        state[f"backbone.blocks.conv{i}.weight"] = folded.weight.detach().clone()
        state[f"backbone.blocks.conv{i}.bias"] = folded.bias.detach().clone()
    return spec, state


def build_scmrl(spec: dict[str, Any] | ScmrlSpec) -> nn.Module:
    """An S-CMRL model from its spec (defaults filled in; see ``fill_defaults``); a spec with
    ``part`` builds that modality's chip part (``ScmrlChipPart``)."""
    spec = fill_defaults(spec)
    if spec.part is not None:
        if spec.part not in ("visual", "audio") or not spec.chip_native:
            raise ConfigError(f"spec key part: {spec.part!r} needs chip_native and visual or audio")
        return ScmrlChipPart(spec)
    return SCMRL(spec)


# ----------------------------------------------------------------------------- the ANN twin

#: The layer type of an S-CMRL twin's layer stack: the twin spec (``spec.AnnSpec``, a layer
#: stack) holds one composite layer ``{"type": "scmrl", <S-CMRL's architecture keys>}``.
TWIN_LAYER = "scmrl"


def twin_layers(spec: ScmrlSpec) -> list[dict[str, Any]]:
    """The twin spec's ``layers`` for an S-CMRL spec: one composite layer with every architecture
    key (``ScmrlSpec.OPTIONS``, chip_native included)."""
    record = spec.to_dict()
    return [{"type": TWIN_LAYER, **{k: record[k] for k in ScmrlSpec.OPTIONS}}]


def twin_snn_spec(twin: Any) -> ScmrlSpec:
    """The S-CMRL spec an ANN twin spec (``ann``, ``layers`` = ``twin_layers(...)``) was made from."""
    record = twin.to_dict() if hasattr(twin, "to_dict") else dict(twin)
    layers = record.get("layers") or []
    if len(layers) != 1 or not isinstance(layers[0], dict) or layers[0].get("type") != TWIN_LAYER:
        raise ConfigError(f"spec key layers: an S-CMRL twin has one layer of type {TWIN_LAYER!r}, got {layers!r}")
    arch = {k: v for k, v in layers[0].items() if k != "type"}
    common = {k: v for k, v in record.items() if k not in ("layers", "width", "beta", "threshold", "init_gain")}
    return ScmrlSpec.from_dict({**common, **arch, "ann": False})


class ScmrlAnnTwin(SCMRL):
    """The ANN twin of S-CMRL: the same modules (patch embeddings, positional branches,
    cross-modal blocks with both attention branches, MLP blocks, head; their names too, so
    per-layer counts line up) with every spiking neuron (``MultiStepLIF``, the chip-native
    embeddings' ``snn.Leaky``) replaced by a ReLU; BatchNorm, pooling (the adaptive max pool in
    its sliced, exportable form), attention scale, residual weight and means as in the SNN.

    Time, as every twin of the zoo (``ann.AnnTwin``): the input frames are summed over T and the
    network runs once on that one dense frame, i.e. the SNN's architecture at T = 1 (its temporal
    attention branch then attends over a single step). Input: the pair (visual [B, T, C, H, W],
    audio [B, T, N]), or the already summed pair ([B, C, H, W], [B, N]). Trained on the
    cross-entropy alone, as every twin (``train.loop.loss_function``); ``extra`` still carries
    f_a / f_v.
    """

    takes_pair = True

    def __init__(self, spec: ScmrlSpec) -> None:
        super().__init__(spec)
        _relu_for_neurons(self)
        self.input_shapes = {m: list(s) for m, s in spec.input_shapes.items()}

    def accumulate(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """The pair of [B, T, ...] spike frames -> the pair of [B, 1, ...] summed frames (one step)."""
        if not isinstance(x, (tuple, list)) or len(x) != 2:
            raise ConfigError("scmrl ANN twin takes a pair (visual [B, T, C, H, W], audio [B, T, N])")
        out = []
        for name, v in zip(("visual", "audio"), x):
            n = len(self.input_shapes[name])
            if v.dim() == n + 2:
                v = v.sum(1, keepdim=True)
            elif v.dim() == n + 1:
                v = v.unsqueeze(1)
            else:
                raise ConfigError(f"scmrl ANN twin: {name} input of shape {list(v.shape)} is neither "
                                  f"[B, T, {self.input_shapes[name]}] nor [B, {self.input_shapes[name]}]")
            out.append(v)
        return out[0], out[1]

    def forward(self, x, record: bool = False) -> ModelOutput:
        acts: dict[str, torch.Tensor] = {}
        hooks = []
        if record:  # every ReLU's output, by module path
            for name, m in self.named_modules():
                if isinstance(m, nn.ReLU):  # [1, B, ...] time-major, or [B, ...] where T is folded in
                    hooks.append(m.register_forward_hook(
                        lambda _m, _i, out, name=name: acts.__setitem__(name, out.detach())))
        try:
            tv, ta = self.backbone(*self.accumulate(x))
            logits, fused, f_a, f_v = self.head(tv, ta)
        finally:
            for h in hooks:
                h.remove()
        extra = {} if f_a is None else {"f_a": f_a, "f_v": f_v}
        return ModelOutput(logits=logits, features=fused, spikes=acts if record else None, extra=extra)


class SlicedAdaptiveMaxPool2d(nn.Module):
    """``nn.AdaptiveMaxPool2d`` written as the max over each of its windows (PyTorch's: rows
    ``floor(i H / h)`` to ``ceil((i + 1) H / h)``, likewise columns), for a fixed input size.

    The same values; ONNX has no adaptive pooling whose output does not divide the input (the
    patch embedding's 5x5 -> 3x3), and slices and maxima export everywhere.
    """

    def __init__(self, output_size: tuple[int, int]) -> None:
        super().__init__()
        self.output_size = (int(output_size[0]), int(output_size[1]))

    @staticmethod
    def _windows(size: int, out: int) -> list[tuple[int, int]]:
        return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self._windows(int(x.shape[-2]), self.output_size[0])
        cols = self._windows(int(x.shape[-1]), self.output_size[1])
        out = [torch.stack([x[..., r0:r1, c0:c1].amax(dim=(-2, -1)) for c0, c1 in cols], dim=-1)
               for r0, r1 in rows]
        return torch.stack(out, dim=-2)


def _relu_for_neurons(module: nn.Module) -> None:
    """Replace every spiking neuron below ``module`` by a ReLU, in place (same names), and every
    adaptive max pool by its sliced form (the same values, exportable to ONNX)."""
    for name, child in module.named_children():
        if isinstance(child, (MultiStepLIF, snn.Leaky)):
            setattr(module, name, nn.ReLU())
        elif isinstance(child, nn.AdaptiveMaxPool2d):
            size = child.output_size if isinstance(child.output_size, tuple) else (child.output_size,) * 2
            setattr(module, name, SlicedAdaptiveMaxPool2d(size))
        else:
            _relu_for_neurons(child)


def build_scmrl_twin(spec: Any) -> ScmrlAnnTwin:
    """The ANN twin of an S-CMRL spec (or of the twin's own spec, ``ann: true``), untrained."""
    if getattr(spec, "ann", False) or (isinstance(spec, dict) and spec.get("ann")):
        snn_spec = twin_snn_spec(spec)
    else:
        snn_spec = fill_defaults(spec)
    if snn_spec.part is not None:
        raise ConfigError("scmrl ANN twin: the twin is of the whole model, not of a chip part (spec key part)")
    return ScmrlAnnTwin(snn_spec)
