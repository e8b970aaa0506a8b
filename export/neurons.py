"""The project's NIR neuron convention: discrete snntorch neurons <-> NIR continuous-time nodes.

A trained network steps ``v[t] = beta * v[t-1] + I[t]`` (reset to 0 after a spike, spike when
``v > threshold``), one step per time bin of ``dt`` seconds. NIR describes neurons as ODEs;
a forward-Euler step of length ``dt`` gives the discrete update back:

* ``beta < 1``  -> ``nir.LIF``: ``tau dv/dt = (v_leak - v) + r I`` with
  ``tau = dt / (1 - beta)``, ``r = tau / dt``, ``v_leak = 0``; Euler: ``v += dt/tau (v_leak - v + r I)``
  so ``beta = 1 - dt/tau`` and the per-step input gain ``r dt / tau = 1``.
* ``beta == 1`` -> ``nir.IF``: ``dv/dt = r I`` with ``r = 1 / dt``; Euler: ``v += dt r I``,
  per-step gain ``dt r = 1``. (This is the ``tau -> inf`` limit of the LIF above, whose
  ``r / tau`` is ``1 / dt``; it keeps IF and LIF in the same units of seconds.)

Both carry ``v_threshold`` and ``v_reset = 0`` per neuron (arrays of the layer's output shape).
``discrete_neuron(node, dt)`` is the inverse every target uses (the dt is in export.json).
"""
from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np

from spikeport.errors import UnsupportedNodeError


def neuron_node(beta: np.ndarray, threshold: np.ndarray, dt: float, name: str) -> nir.NIRNode:
    """NIR node for a layer of discrete LIF neurons with decay ``beta`` (per neuron)."""
    beta = np.asarray(beta, dtype=np.float64)
    threshold = np.asarray(threshold, dtype=np.float64)
    if np.any(beta < 0) or np.any(beta > 1):
        raise UnsupportedNodeError(f"layer '{name}': beta must lie in [0, 1] (snntorch clamps it there)")
    reset = np.zeros_like(threshold)
    if np.all(beta == 1.0):
        return nir.IF(r=np.full(beta.shape, 1.0 / dt), v_threshold=threshold, v_reset=reset)
    if np.any(beta == 1.0):
        # tau would be infinite for some neurons only: NIR has no node for a mixed layer.
        raise UnsupportedNodeError(
            f"layer '{name}': mixes beta == 1 (IF) and beta < 1 (LIF) neurons; NIR has no node for both")
    tau = dt / (1.0 - beta)
    return nir.LIF(tau=tau, r=tau / dt, v_leak=np.zeros_like(beta), v_threshold=threshold, v_reset=reset)


@dataclass
class DiscreteNeuron:
    """One Euler step of a NIR neuron, arrays of the layer's output shape (float32)::

        i = alpha * i + gain * I          (alpha = 0: no current state, i = gain * I)
        v = beta * v + i + leak;  spike if v > threshold;  v = v_reset where it spiked

    ``gain`` carries every input factor of the node (for CubaLIF ``w_in dt/tau_syn r dt/tau_mem``),
    so the current is in the membrane's units. Non-spiking nodes (LI, CubaLI) have threshold inf.
    """

    beta: np.ndarray
    gain: np.ndarray
    leak: np.ndarray
    threshold: np.ndarray
    v_reset: np.ndarray
    alpha: np.ndarray | None = None


def _if_from_infinite_tau(node: nir.LIF, dt: float) -> nir.IF | None:
    """snntorch writes beta == 1 as LIF(tau=inf, r=inf) (r = tau/dt): an IF whose per-step gain
    r*dt/tau -> 1 in the limit."""
    tau = np.asarray(node.tau, dtype=np.float64)
    if not np.all(np.isinf(tau)):
        return None
    r = np.asarray(node.r, dtype=np.float64)
    if not np.all(np.isinf(r)):
        raise UnsupportedNodeError("LIF with tau = inf and finite r has no input")
    return nir.IF(r=np.full(np.shape(r), 1.0 / dt), v_threshold=node.v_threshold, v_reset=node.v_reset)


def discrete_neuron(node: nir.NIRNode, dt: float, name: str = "?") -> DiscreteNeuron:
    """Forward-Euler discretisation of a NIR IF, LIF, CubaLIF, LI or CubaLI node with step ``dt`` (s).

    NIR: IF ``dv/dt = r I``; LIF ``tau dv/dt = v_leak - v + r I``; CubaLIF
    ``tau_syn dI/dt = -I + w_in x``, ``tau_mem dv/dt = v_leak - v + r I``; LI and CubaLI the same
    without spikes. Computed in float64 and rounded to float32 once, so the project's own exports
    round-trip to the trained float32 beta bit for bit (and the gain to exactly 1).
    """
    f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    alpha = None
    if isinstance(node, nir.LIF) and (as_if := _if_from_infinite_tau(node, dt)) is not None:
        node = as_if
    if isinstance(node, (nir.LIF, nir.LI)):
        k = dt / f64(node.tau)
        beta, gain, leak = 1.0 - k, k * f64(node.r), k * f64(node.v_leak)
    elif isinstance(node, nir.IF):
        r = f64(node.r)
        beta, gain, leak = np.ones_like(r), dt * r, np.zeros_like(r)
    elif isinstance(node, (nir.CubaLIF, nir.CubaLI)):
        ks, km = dt / f64(node.tau_syn), dt / f64(node.tau_mem)
        w_in = f64(node.w_in) if getattr(node, "w_in", None) is not None else 1.0
        # the factor dt/tau_syn is the current's Euler step: I += dt/tau_syn (w_in x - I)
        alpha, beta = 1.0 - ks, 1.0 - km
        gain, leak = w_in * ks * f64(node.r) * km, km * f64(node.v_leak)
    else:
        raise UnsupportedNodeError(f"node '{name}': {type(node).__name__} is not a NIR neuron node")
    spiking = isinstance(node, (nir.IF, nir.LIF, nir.CubaLIF))
    threshold = f64(node.v_threshold) if spiking else np.full(np.shape(beta), np.inf)
    v_reset = getattr(node, "v_reset", None)
    v_reset = np.zeros_like(threshold) if v_reset is None or not spiking else v_reset
    shape = np.broadcast_shapes(np.shape(beta), np.shape(gain), np.shape(threshold))
    as32 = lambda a: np.broadcast_to(np.asarray(a, dtype=np.float32), shape).copy()  # noqa: E731
    return DiscreteNeuron(beta=as32(beta), gain=as32(gain), leak=as32(leak), threshold=as32(threshold),
                          v_reset=as32(v_reset), alpha=as32(alpha) if alpha is not None else as32(np.zeros(shape)))
