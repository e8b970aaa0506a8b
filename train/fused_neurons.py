"""A fused multi-step LIF layer: snntorch's ``Leaky`` (zero reset, delayed reset, atan
surrogate) over all T steps of a layer in one autograd node.

snntorch steps a ``Leaky`` cell once per time step, each step a dozen small autograd nodes;
when the currents of all steps come from one ``[T, B, ...]`` tensor, every step's backward
also materialises a zero tensor of the whole sequence to put its slice into (the backward of
indexing), which makes the backward quadratic in T. Here the forward runs the recursion

    v[t] = beta * v[t-1] * (1 - s[t-1]) + I[t],   s[t] = H(v[t] - threshold),   v[-1] = 0

without a graph, and the backward is the hand-written BPTT scan of the same function with
snntorch's gradient (the reset is detached, ds/dv is the atan surrogate):

    dL/dv[t] = dL/ds[t] * alpha/2 / (1 + (pi/2 * alpha * (v[t] - threshold))^2)
               + dL/dv[t+1] * beta * (1 - s[t])

Every floating-point operation is the one snntorch performs (same operands, same order), so
spikes are identical and the gradient with respect to the currents is identical too; what
differs in a network is only the order in which weight gradients are summed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import snntorch as snn
import torch


@dataclass(frozen=True)
class LeakyParams:
    """What the fused scan needs of a ``snn.Leaky``: per-neuron (or scalar) beta and threshold
    tensors and the atan surrogate's slope."""

    beta: torch.Tensor
    threshold: torch.Tensor
    alpha: float


def _atan_alpha(spike_grad: object) -> float | None:
    """The slope of an ``snntorch.surrogate.atan(alpha)`` closure, None for any other surrogate."""
    if getattr(spike_grad, "__qualname__", "") != "atan.<locals>.inner":
        return None
    cells = dict(zip(spike_grad.__code__.co_freevars, spike_grad.__closure__ or ()))  # type: ignore[attr-defined]
    alpha = cells.get("alpha")
    return float(alpha.cell_contents) if alpha is not None else None


def fusable_params(cell: snn.Leaky) -> LeakyParams | None:
    """The cell's parameters when the fused scan computes exactly what the cell computes
    (zero reset with snntorch's default delayed reset, atan surrogate, nothing learnable, no
    inhibition, quantisation or graded spikes); None otherwise (step it with snntorch)."""
    alpha = _atan_alpha(cell.spike_grad)
    beta, threshold = cell.beta, cell.threshold
    graded = cell.graded_spikes_factor
    if (alpha is None or getattr(cell, "surrogate_disable", False) or cell.inhibition or cell.state_quant
            or not getattr(cell, "reset_delay", True) or int(cell.reset_mechanism_val) != 1
            or not torch.is_tensor(beta) or not torch.is_tensor(threshold)
            or beta.requires_grad or threshold.requires_grad
            or (torch.is_tensor(graded) and (graded.requires_grad or bool((graded != 1).any())))
            or (not torch.is_tensor(graded) and graded != 1)):
        return None
    return LeakyParams(beta=beta.detach().clamp(0, 1), threshold=threshold.detach(), alpha=alpha)


class _LeakyZeroScan(torch.autograd.Function):
    """currents [T, B, ...] -> spikes [T, B, ...]; saves the membrane trace and 1 - spikes."""

    @staticmethod
    def forward(ctx, current: torch.Tensor, beta: torch.Tensor, threshold: torch.Tensor,  # type: ignore[override]
                alpha: float) -> torch.Tensor:
        steps = current.shape[0]
        dtype = torch.promote_types(current.dtype, beta.dtype)
        unit_beta = bool((beta == 1).all())
        mem = torch.empty(current.shape, dtype=dtype, device=current.device)
        keep = torch.empty(current.shape, dtype=dtype, device=current.device)  # 1 - s[t]
        # snntorch: v[t] = beta * ((1 - r) * v[t-1]) + I[t], r = (v[t-1] - thr > 0), v[-1] = 0,
        # so v[0] = I[0]. With gradual underflow (the default on CPU and CUDA) v - thr > 0 is
        # exactly v > thr. (1 - r) * v is v or 0, exact; with beta == 1 the product and the sum
        # round once, so one fused multiply-add gives the same bits; otherwise multiply, then add.
        mem[0] = current[0]
        for t in range(1, steps):
            prev = mem[t - 1]
            torch.le(prev, threshold, out=keep[t - 1])
            if unit_beta:
                torch.addcmul(current[t], keep[t - 1], prev, out=mem[t])
            else:
                torch.add(beta * (keep[t - 1] * prev), current[t], out=mem[t])
        torch.le(mem[steps - 1], threshold, out=keep[steps - 1])
        ctx.save_for_backward(mem, keep, beta, threshold)
        ctx.alpha = alpha
        ctx.unit_beta = unit_beta
        ctx.current_dtype = current.dtype
        return 1 - keep

    @staticmethod
    def backward(ctx, grad_spikes: torch.Tensor):  # type: ignore[override]
        mem, keep, beta, threshold = ctx.saved_tensors
        alpha = ctx.alpha
        # snntorch.surrogate.ATan.backward with the same operations in the same order.
        # In place, the same kernels as its out-of-place expression
        # alpha / 2 / (1 + (pi / 2 * alpha * (v - thr)) ** 2) * grad (``scalar / x`` is
        # ``reciprocal(x) * scalar``): one buffer instead of seven.
        grad = mem - threshold
        grad.mul_(torch.pi / 2 * alpha).pow_(2).add_(1).reciprocal_().mul_(alpha / 2).mul_(grad_spikes)
        # Through the membrane: dv[t+1]/dv[t] = beta * (1 - s[t]) (the reset itself is detached);
        # snntorch adds that term to the surrogate's: one rounding each for product and sum.
        if ctx.unit_beta:  # keep * g is exact (g or 0): a fused multiply-add rounds the same
            for t in range(grad.shape[0] - 2, -1, -1):
                grad[t].addcmul_(keep[t], grad[t + 1])
        else:
            for t in range(grad.shape[0] - 2, -1, -1):
                grad[t] += keep[t] * (grad[t + 1] * beta)
        return grad.to(ctx.current_dtype), None, None, None


def leaky_zero_scan(current: torch.Tensor, beta: torch.Tensor | float, threshold: torch.Tensor | float,
                    alpha: float = 2.0) -> torch.Tensor:
    """Spike trains [T, B, ...] of a zero-reset LIF layer driven by ``current`` [T, B, ...].

    ``beta`` (clipped to [0, 1] as snntorch does) and ``threshold`` broadcast against one step
    ``[B, ...]`` (per-neuron tensors of the neuron shape, or scalars); they are constants (no
    gradient). ``alpha``: the atan surrogate's slope (snntorch's default 2).
    """
    if current.dim() < 2 or current.shape[0] < 1:
        raise ValueError(f"leaky_zero_scan: currents must be [T, B, ...] with T >= 1, got {tuple(current.shape)}")
    if not math.isfinite(alpha):
        raise ValueError(f"leaky_zero_scan: alpha must be finite, got {alpha}")
    beta_t = torch.as_tensor(beta, device=current.device).detach()
    thr_t = torch.as_tensor(threshold, device=current.device).detach()
    if not beta_t.is_floating_point():
        beta_t = beta_t.to(current.dtype)
    if not thr_t.is_floating_point():
        thr_t = thr_t.to(current.dtype)
    return _LeakyZeroScan.apply(current, beta_t.clamp(0, 1), thr_t, float(alpha))


def leaky_cell_scan(cell: snn.Leaky, current: torch.Tensor) -> torch.Tensor | None:
    """``cell`` run over ``current`` [T, B, ...] by the fused scan; None when the cell has a
    configuration the scan does not reproduce (the caller then steps it with snntorch)."""
    params = fusable_params(cell)
    if params is None:
        return None
    return _LeakyZeroScan.apply(current, params.beta.to(current.device), params.threshold.to(current.device),
                                params.alpha)
