"""Where a deployment loses accuracy: each layer's chip spikes against the float model's, same inputs.

For the first ``DIVERGENCE_SAMPLES`` test samples, the float reference is the lowered graph run
in float64 by ``deploy.float_runtime.run_float`` (what the trained model computes); the chip's
per-layer spikes come from the target's own engine (Loihi: the fixed-point twin on the
quantised network; Speck: the sinabs simulation of the 8/16-bit chip form). Per layer:

- ``correlation``: Pearson correlation of the spike counts of every (sample, neuron) pair;
- ``rate_error``: (chip spikes - float spikes) / float spikes, over the whole layer;
- ``local_correlation``: the same correlation when the float layer is fed the *chip's* input
  spikes to that layer, so it isolates the layer's own arithmetic from what came in;
- ``first_divergent``: the first layer whose correlation falls below ``CORRELATION_MIN`` or
  whose rate is off by more than ``RATE_ERROR_MAX``: the layer to look at first.

Speck also gets each core's peak synaptic-operation rate (``deploy.speck.mapper.core_load``):
sinabs' docs say a core that receives more synaptic operations per second than it can process
stalls the whole chip.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from spikeport.deploy.common import DeployInput
from spikeport.deploy.float_runtime import run_float, run_layer
from spikeport.deploy.lowering import LayerGraph, lower

DIVERGENCE_SAMPLES = 64
CORRELATION_MIN = 0.99   # plain rounding on real N-MNIST: 0.999 in the first layer, ~0.98 by the fourth
RATE_ERROR_MAX = 0.10


@dataclass
class LayerDivergence:
    layer: str
    neurons: int
    float_spikes_per_sample: float
    chip_spikes_per_sample: float
    rate_error: float | None           # None: the float layer is silent
    correlation: float | None          # None: a constant layer on either side (no variance)
    local_correlation: float | None
    identical_fraction: float           # (sample, neuron) counts that are exactly equal
    diverges: bool


def _corr(a: torch.Tensor, b: torch.Tensor) -> float | None:
    a, b = a.double().flatten(), b.double().flatten()
    if a.numel() < 2:
        return None
    da, db = a - a.mean(), b - b.mean()
    den = float(da.norm() * db.norm())
    if den == 0.0:
        return 1.0 if torch.equal(a, b) else None
    return float((da * db).sum()) / den


def _counts(train: torch.Tensor) -> torch.Tensor:
    """[T, N, ...] -> [N, neurons] spike counts."""
    return train.double().sum(0).reshape(train.shape[1], -1)


def compare_layers(graph: LayerGraph, inputs: torch.Tensor, chip: dict[str, torch.Tensor]) -> list[LayerDivergence]:
    """``chip``: layer name -> the chip's spike trains [T, N, *shape] (before pooling), for ``inputs``
    [N, T, ...]. Layers follow ``graph.layers``; a layer missing from ``chip`` is skipped."""
    ref = run_float(graph, inputs)
    rows: list[LayerDivergence] = []
    below = inputs.to(torch.float64).transpose(0, 1)   # what enters layer 0 on the chip
    for layer in graph.layers:
        if layer.name not in chip:
            continue
        c_train = chip[layer.name].double()
        f_train = ref.spikes[layer.name]
        t, n = f_train.shape[:2]
        c_train = c_train.reshape(t, n, -1)
        local, _ = run_layer(layer, below, graph.conventions)
        fc, cc, lc = _counts(f_train), _counts(c_train), _counts(local)
        f_total, c_total = float(fc.sum()), float(cc.sum())
        rate_error = (c_total - f_total) / f_total if f_total > 0 else (None if c_total == 0 else float("inf"))
        corr = _corr(fc, cc)
        diverges = (corr is not None and corr < CORRELATION_MIN) or \
            (rate_error is not None and abs(rate_error) > RATE_ERROR_MAX)
        rows.append(LayerDivergence(
            layer=layer.name, neurons=layer.neurons, float_spikes_per_sample=f_total / n,
            chip_spikes_per_sample=c_total / n, rate_error=rate_error, correlation=corr,
            local_correlation=_corr(lc, cc), identical_fraction=float((fc == cc).double().mean()),
            diverges=bool(diverges)))
        below = c_train.reshape(t, n, *layer.output_shape)
    return rows


def summary(rows: list[LayerDivergence], samples: int, extra: dict | None = None) -> dict:
    """The ``divergence`` record of stats.json."""
    first = next((r.layer for r in rows if r.diverges), None)
    return {"samples": samples, "correlation_min": CORRELATION_MIN, "rate_error_max": RATE_ERROR_MAX,
            "first_divergent": first, "layers": [asdict(r) for r in rows], **(extra or {})}


# --- the chips' per-layer spikes ---------------------------------------------------------------------
def _loihi(inp: DeployInput, profile, x: torch.Tensor) -> tuple[LayerGraph, dict[str, torch.Tensor], dict]:
    from spikeport.deploy.loihi.fast_engine import run_fast
    from spikeport.deploy.loihi.target import prepare
    sub = DeployInput(**{**inp.__dict__, "inputs": x})
    _, net, xx, _ = prepare(sub, profile)
    res = run_fast(net, xx, record=True)
    return lower(inp.graph, inp.dt, inp.conventions), dict(res.spikes or {}), {}


def _speck(inp: DeployInput, profile, x: torch.Tensor) -> tuple[LayerGraph, dict[str, torch.Tensor], dict]:
    from spikeport.deploy.speck.chip_form import SpeckLimits
    from spikeport.deploy.speck.from_nir import chip_form
    from spikeport.deploy.speck.mapper import core_load
    from spikeport.deploy.speck.quantize import quantise
    from spikeport.deploy.speck.simulate import build_chip_net, simulate

    graph = lower(inp.graph, inp.dt, inp.conventions)
    form = chip_form(graph)
    quant = quantise(form, SpeckLimits.from_profile(profile))
    res = simulate(build_chip_net(form, inp.timesteps, quant, max_input=float(inp.inputs.max())), x,
                   record=True)
    by_neuron = {cl.name: cl.neuron for cl in form.layers}
    recorded = getattr(res, "layers", None) or {}
    spikes = {by_neuron[k]: v for k, v in recorded.items()}
    bin_s = inp.step_s if inp.step_s is not None else inp.dt
    return graph, spikes, {"core_load": core_load(form, x, recorded, bin_s, profile)}


def divergence(inp: DeployInput, profile, samples: int = DIVERGENCE_SAMPLES) -> dict | None:
    """Per-layer divergence of ``inp.target`` from the float reference; None for a target without one."""
    x = inp.inputs[:samples, :inp.timesteps]
    if inp.target in ("loihi", "loihi2"):
        graph, chip, extra = _loihi(inp, profile, x)
    elif inp.target == "speck":
        graph, chip, extra = _speck(inp, profile, x)
    else:
        return None
    return summary(compare_layers(graph, x, chip), int(x.shape[0]), extra)


# --- report ------------------------------------------------------------------------------------------
def _f(v: float | None, fmt: str = ".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def markdown_lines(stats) -> list[str]:
    """The report's per-layer section for one chip's Stats (empty when stats.json has none)."""
    div = getattr(stats, "divergence", None) or (stats.model_extra or {}).get("divergence")
    if not div or "layers" not in div:
        return []
    first = div.get("first_divergent")
    lines = ["", f"Where the chip's spikes leave the float model's ({div['samples']} test samples, same inputs): "
             + (f"first divergent layer **{first}** (correlation < {div['correlation_min']} or rate off by more than "
                f"{div['rate_error_max']:.0%})." if first else "no layer diverges (correlation >= "
                f"{div['correlation_min']}, rate within {div['rate_error_max']:.0%})."),
             "", "| layer | float spikes / sample | chip spikes / sample | rate error | correlation | "
             "local correlation | identical counts |", "|---|---|---|---|---|---|---|"]
    for r in div["layers"]:
        mark = " **(diverges)**" if r["diverges"] else ""
        lines.append(f"| {r['layer']}{mark} | {r['float_spikes_per_sample']:.4g} | {r['chip_spikes_per_sample']:.4g} | "
                     f"{_f(r['rate_error'], '+.1%')} | {_f(r['correlation'])} | {_f(r['local_correlation'])} | "
                     f"{r['identical_fraction']:.1%} |")
    lines.append("")
    lines.append("Local correlation: the float layer fed the chip's own input spikes; high there but low end to end "
                 "means the layer inherits its error from the layers before it.")
    load = div.get("core_load")
    if load:
        lines += ["", f"Core load (input events and synaptic operations per second, peak over {load['bin_s']:g} s "
                  f"bins; bound {load['limit_events_per_s']:.3g} events/s a core, {load['limit_kind']}: "
                  f"{load['limit_source']}):", "",
                  "| layer | peak events / s | mean events / s | peak synops / s | mean synops / s | of the bound |",
                  "|---|---|---|---|---|---|"]
        for r in load["layers"]:
            lines.append(f"| {r['layer']}{' **(may stall)**' if r['overloaded'] else ''} | "
                         f"{r['peak_events_per_s']:.4g} | {r['mean_events_per_s']:.4g} | {r['peak_synops_per_s']:.4g} | "
                         f"{r['mean_synops_per_s']:.4g} | {r['of_limit']:.1%} |")
        lines += [f"- {w}" for w in load.get("warnings", [])]
    return lines


def attach(stats, inp: DeployInput, profile) -> None:
    """Add the ``divergence`` record to ``stats`` (and warn about cores that may stall)."""
    import warnings

    from spikeport.errors import SpikeportError
    try:
        div = divergence(inp, profile)
    except (SpikeportError, ValueError, RuntimeError, KeyError) as exc:
        # a diagnostic: a graph it cannot follow layer by layer does not fail the deployment
        warnings.warn(f"per-layer divergence not computed: {exc}", stacklevel=2)
        stats.divergence = {"error": str(exc)}
        return
    if div is None:
        return
    stats.divergence = div
    for w in (div.get("core_load") or {}).get("warnings", []):
        warnings.warn(f"Speck core load: {w}", stacklevel=2)
