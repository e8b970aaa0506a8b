"""Engram analysis of a trained run (the first paper's analysis, FACTS §6), done honestly.

For up to ``samples_per_class`` test samples of every class it measures:

- per-class clustering quality (silhouette, Davies-Bouldin, Calinski-Harabasz, scikit-learn)
  of every feature set, each labelled by kind: ``spike-rate`` (spike counts / T of a spiking
  layer) or ``continuous`` (a host part's real-valued output, e.g. the input of an HGRN or
  Hopfield head's readout). The paper's 0.871 silhouette was measured on the continuous HGRN
  output, not on spike rates; the two kinds are never mixed in one number here;
- effective dimensionality: the participation ratio (sum l)^2 / sum l^2 of the covariance
  eigenvalues l, and the number of principal components that hold 90 % of the variance;
- cross-modal class-centroid alignment against a second run (``other``, e.g. a visual and an
  audio run): the mean diagonal of the cosine similarity between class centroids (labels mod
  the smaller class count), the paper's "alignment", which compares coordinates neuron by
  neuron and is therefore only defined when both feature sets have the same dimension. Two
  separately trained networks have no common neuron order, so the same number is also given in
  a basis-free form: the Spearman correlation between the two runs' class-centroid similarity
  matrices (representational similarity analysis), defined for any pair of dimensions. CCA is
  not used: with one centroid per class it has fewer samples than dimensions and fits any pair
  perfectly.

``analyze_run`` loads a run and writes ``analysis/analysis.json`` and the figures; the lower
level functions take ``(model, x, y)`` and plain arrays.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.decomposition import PCA
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score
from sklearn.metrics.pairwise import cosine_similarity
from torch import nn

from spikeport.errors import ArtifactError, ConfigError, DataError
from spikeport.io import write_json_atomic
from spikeport.train.models.spec import ModelSpec

SPIKE_RATE = "spike-rate"
CONTINUOUS = "continuous"
RAW_COSINE_NOTE = (
    "raw-space cosine compares the two feature vectors coordinate by coordinate; it means "
    "something only when both runs share one feature space (a shared encoder or head). For two "
    "separately trained networks the neuron order is arbitrary: read rsa_spearman instead.")


@dataclass
class FeatureSet:
    """One set of per-sample features: ``values`` [N, D], with its kind and where it came from."""

    name: str
    kind: str  # SPIKE_RATE | CONTINUOUS
    role: str  # "features" (ModelOutput.features), "layer", "head input", "extra"
    source: str
    values: np.ndarray


@dataclass
class Extracted:
    """Everything the analysis reads from one model on the selected samples."""

    labels: np.ndarray  # [N] int
    predictions: np.ndarray  # [N] int
    timesteps: int
    feature_sets: list[FeatureSet]
    firing_rates: dict[str, float] = field(default_factory=dict)  # spikes / (neuron * step)
    raster: dict[str, np.ndarray] = field(default_factory=dict)  # sample 0: layer -> [T, neurons]
    raster_label: int | None = None

    def primary(self, kind: str) -> FeatureSet | None:
        """The model's feature layer of a kind: ModelOutput.features, else the head input."""
        sets = [s for s in self.feature_sets if s.kind == kind]
        for role in ("features", "head input", "extra"):
            for s in sets:
                if s.role == role:
                    return s
        # no declared feature layer: the last hidden spiking layer (the one before the output)
        layers = [s for s in sets if s.role == "layer"]
        return layers[-2] if len(layers) >= 2 else (layers or [None])[-1]


# --- sample selection -----------------------------------------------------------------------
def select_per_class(y: np.ndarray | torch.Tensor, samples_per_class: int) -> np.ndarray:
    """Indices of the first ``samples_per_class`` samples of every class, in data order."""
    if samples_per_class < 1:
        raise ConfigError(f"samples_per_class: must be >= 1, got {samples_per_class}")
    y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y).astype(np.int64)
    picked = [np.flatnonzero(y == c)[:samples_per_class] for c in np.unique(y)]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def _take(x: Any, idx: np.ndarray | slice) -> Any:
    """Index a batch tensor or a tuple of them (audio-visual input)."""
    if isinstance(x, (tuple, list)):
        return tuple(_take(part, idx) for part in x)
    return x[torch.as_tensor(idx) if isinstance(idx, np.ndarray) else idx]


def _length(x: Any) -> int:
    return int(x[0].shape[0]) if isinstance(x, (tuple, list)) else int(x.shape[0])


def _timesteps(x: Any) -> int:
    return int(x[0].shape[1]) if isinstance(x, (tuple, list)) else int(x.shape[1])


# --- feature extraction ---------------------------------------------------------------------
class _ReadoutInputs:
    """Records the input of every nn.Linear inside ``head`` in call order.

    The last Linear called is the readout; its input is the continuous representation the
    classifier sees (the HGRN / Hopfield output of the first paper's models). Hooks are used
    because a head need not return that representation; this finds it in any head.
    """

    def __init__(self, head: nn.Module) -> None:
        self.calls: list[tuple[str, torch.Tensor]] = []
        self.handles = [m.register_forward_pre_hook(self._hook(name))
                        for name, m in head.named_modules() if isinstance(m, nn.Linear)]

    def _hook(self, name: str):
        def hook(_module, inputs):
            self.calls.append((name, inputs[0].detach()))
        return hook

    def take(self, batch: int) -> tuple[str, torch.Tensor] | None:
        calls, self.calls = self.calls, []
        if not calls:
            return None
        last = calls[-1][0]
        values = [self._per_sample(v, batch) for name, v in calls if name == last]
        values = [v for v in values if v is not None]
        if not values:
            return None
        # a readout called once per time step: average its inputs over the steps
        return last, torch.stack(values).mean(0)

    @staticmethod
    def _per_sample(v: torch.Tensor, batch: int) -> torch.Tensor | None:
        """[B, D] from a readout input [B, D], [B, T|tokens, D] or [T, B, D] (mean over the
        extra axis, as the first paper's head averaged its features over time)."""
        if v.dim() == 2 and v.shape[0] == batch:
            return v
        if v.dim() == 3 and v.shape[0] == batch:
            return v.mean(1)
        if v.dim() == 3 and v.shape[1] == batch:
            return v.mean(0)
        return None

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _classify(values: np.ndarray, rates: dict[str, np.ndarray], steps: dict[str, int],
              timesteps: int) -> tuple[str, str | None]:
    """Kind of a feature tensor: spike-rate when it equals a recorded layer's rate or count, or
    when it is made of whole spike counts (values x T integer, >= 0); else continuous."""
    for name, r in rates.items():
        if r.shape == values.shape and (np.allclose(values, r, atol=1e-6)
                                        or np.allclose(values, r * steps[name], atol=1e-4)):
            return SPIKE_RATE, name
    counts = values * timesteps
    if values.size and values.min() >= 0 and np.allclose(counts, np.round(counts), atol=1e-4):
        return SPIKE_RATE, None
    return CONTINUOUS, None


@torch.no_grad()
def extract_features(model: nn.Module, x: Any, y: torch.Tensor | np.ndarray, *,
                     samples_per_class: int = 100, batch_size: int = 64) -> Extracted:
    """Run ``model`` on up to ``samples_per_class`` samples a class of ``(x, y)`` and collect
    per-layer spike rates, the model's features and any continuous head representation."""
    y_np = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y).astype(np.int64)
    if _length(x) != len(y_np):
        raise DataError(f"analysis data: {_length(x)} inputs but {len(y_np)} labels")
    idx = select_per_class(y_np, samples_per_class)
    if len(np.unique(y_np[idx])) < 2:
        raise DataError(f"analysis data: clustering needs at least 2 classes, the test split has "
                        f"{len(np.unique(y_np))}")
    model = model.eval().cpu()
    T = _timesteps(x)
    head = getattr(model, "head", None)
    readout = _ReadoutInputs(head) if isinstance(head, nn.Module) else None

    spike_sums: dict[str, list[np.ndarray]] = {}
    steps: dict[str, int] = {}  # time steps of each recorded layer (a head's readout may have 1)
    model_features: list[np.ndarray] = []
    head_inputs: list[np.ndarray] = []
    head_name = None
    extras: dict[str, list[np.ndarray]] = {}
    preds: list[np.ndarray] = []
    raster: dict[str, np.ndarray] = {}
    firing_sum: dict[str, float] = {}
    firing_count: dict[str, int] = {}
    try:
        for start in range(0, len(idx), batch_size):
            sel = idx[start:start + batch_size]
            xb = _take(x, sel)
            xb = tuple(p.float() for p in xb) if isinstance(xb, tuple) else xb.float()
            out = model(xb, record=True)
            B = len(sel)
            preds.append(out.logits.argmax(1).cpu().numpy())
            for name, s in (out.spikes or {}).items():
                s = s.detach().cpu().float()  # [T, B, ...]
                spike_sums.setdefault(name, []).append(s.sum(0).reshape(B, -1).numpy())
                steps[name] = int(s.shape[0])
                firing_sum[name] = firing_sum.get(name, 0.0) + float(s.sum())
                firing_count[name] = firing_count.get(name, 0) + s.numel()
                if start == 0:
                    raster[name] = s[:, 0].reshape(s.shape[0], -1).numpy()
            if out.features is not None:
                model_features.append(out.features.detach().cpu().float().reshape(B, -1).numpy())
            if readout is not None:
                got = readout.take(B)
                if got is not None:
                    head_name = got[0]
                    head_inputs.append(got[1].cpu().float().numpy())
            for key, v in (out.extra or {}).items():
                if isinstance(v, torch.Tensor) and v.dim() == 2 and v.shape[0] == B and v.is_floating_point():
                    extras.setdefault(key, []).append(v.detach().cpu().float().numpy())
    finally:
        if readout is not None:
            readout.close()

    rates = {name: np.concatenate(parts) / steps[name] for name, parts in spike_sums.items()}
    sets: list[FeatureSet] = []
    feature_layer = None
    if model_features:
        values = np.concatenate(model_features)
        kind, match = _classify(values, rates, steps, T)
        if match is not None:
            feature_layer = match
            sets.append(FeatureSet(match, SPIKE_RATE, "features",
                                   f"ModelOutput.features = spike rate of layer {match}", rates[match]))
        elif kind == SPIKE_RATE:
            sets.append(FeatureSet("features", SPIKE_RATE, "features",
                                   "ModelOutput.features (spike counts or rates of an unrecorded layer)",
                                   values))
        else:
            sets.append(FeatureSet("features", CONTINUOUS, "features", "ModelOutput.features", values))
    if head_inputs and sum(len(h) for h in head_inputs) == len(idx):
        values = np.concatenate(head_inputs)
        kind, match = _classify(values, rates, steps, T)
        if match is None and not _already(values, sets):  # nothing new if it repeats a set
            sets.append(FeatureSet(f"head.{head_name}.input", kind, "head input",
                                   f"input of the head's readout layer head.{head_name}", values))
    for key, parts in extras.items():
        values = np.concatenate(parts)
        kind, match = _classify(values, rates, steps, T)
        if match is None and not _already(values, sets):
            sets.append(FeatureSet(f"extra.{key}", kind, "extra", f"ModelOutput.extra[{key!r}]", values))
    for name, r in rates.items():
        if name != feature_layer:
            sets.append(FeatureSet(name, SPIKE_RATE, "layer", f"spike rate of layer {name}", r))

    return Extracted(
        labels=y_np[idx], predictions=np.concatenate(preds), timesteps=T, feature_sets=sets,
        firing_rates={k: firing_sum[k] / max(firing_count[k], 1) for k in firing_sum},
        raster=raster, raster_label=int(y_np[idx[0]]) if len(idx) else None)


def _already(values: np.ndarray, sets: list[FeatureSet]) -> bool:
    return any(fs.values.shape == values.shape and np.allclose(fs.values, values, atol=1e-6) for fs in sets)


# --- metrics --------------------------------------------------------------------------------
def cluster_quality(features: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Silhouette (higher is better), Davies-Bouldin (lower), Calinski-Harabasz (higher).

    A feature set with no variance (a silent layer) has no clusters to measure: the metrics are
    None with a note, rather than scikit-learn's conventional 0 / 1 that would read as values.
    """
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    n_labels = len(np.unique(labels))
    if n_labels < 2 or n_labels >= len(labels):
        return {"silhouette": None, "davies_bouldin": None, "calinski_harabasz": None,
                "note": f"{n_labels} classes in {len(labels)} samples: clustering is undefined"}
    if not np.any(features.std(axis=0) > 0):
        return {"silhouette": None, "davies_bouldin": None, "calinski_harabasz": None,
                "note": "constant features (the layer is silent or saturated)"}
    return {"silhouette": float(silhouette_score(features, labels, metric="euclidean")),
            "davies_bouldin": float(davies_bouldin_score(features, labels)),
            "calinski_harabasz": float(calinski_harabasz_score(features, labels))}


def effective_dimensionality(features: np.ndarray, variance: float = 0.9) -> dict[str, Any]:
    """Participation ratio of the covariance eigenvalues and PCs for ``variance`` of the variance.

    PCA's explained variances are the covariance eigenvalues (ddof 1); taking them from the SVD
    of the N x D data avoids a D x D covariance for wide layers.
    """
    features = np.asarray(features, dtype=np.float64)
    if len(features) < 2 or not np.any(features.std(axis=0) > 0):
        return {"participation_ratio": None, "pcs_90": None, "dim": int(features.shape[1]),
                "note": "constant features"}
    pca = PCA(n_components=None, svd_solver="full").fit(features)
    eig = pca.explained_variance_
    cumulative = np.cumsum(pca.explained_variance_ratio_)
    return {"participation_ratio": float(eig.sum() ** 2 / np.square(eig).sum()),
            "pcs_90": int(np.searchsorted(cumulative, variance - 1e-12) + 1),
            "dim": int(features.shape[1])}


def sparsity(features: np.ndarray) -> float:
    """Fraction of exactly-zero feature values (silent neurons per sample for spike rates)."""
    return float(np.mean(np.asarray(features) == 0))


def _shared_labels(la: np.ndarray, lb: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Map both label sets onto the smaller class count (labels mod C, the paper's joint rule:
    SHD's 20 classes are 10 digits in two languages)."""
    ca, cb = int(la.max()) + 1, int(lb.max()) + 1
    common = min(ca, cb)
    if max(ca, cb) % common:
        raise ConfigError(f"alignment: class counts {ca} and {cb} are not multiples of one another; "
                          "labels cannot be matched mod the smaller count")
    return la % common, lb % common, common


def class_centroids(features: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    missing = [c for c in range(num_classes) if not np.any(labels == c)]
    if missing:
        raise DataError(f"alignment: no samples of class(es) {missing}")
    return np.stack([features[labels == c].mean(axis=0) for c in range(num_classes)])


def centroid_alignment(fa: np.ndarray, la: np.ndarray, fb: np.ndarray, lb: np.ndarray) -> dict[str, Any]:
    """Class-centroid alignment of two feature sets (see the module docstring)."""
    la, lb, common = _shared_labels(np.asarray(la), np.asarray(lb))
    ca = class_centroids(np.asarray(fa, dtype=np.float64), la, common)
    cb = class_centroids(np.asarray(fb, dtype=np.float64), lb, common)
    result: dict[str, Any] = {"classes": common, "dims": [int(ca.shape[1]), int(cb.shape[1])]}
    if ca.shape[1] == cb.shape[1]:
        sim = cosine_similarity(ca, cb)
        off = ~np.eye(common, dtype=bool)
        same, other = float(sim.diagonal().mean()), float(sim[off].mean())
        result["raw_cosine"] = {"same_class": same, "other_class": other,
                                "ratio": same / other if other != 0 else None,
                                "note": RAW_COSINE_NOTE}
    else:
        result["raw_cosine"] = {"same_class": None, "other_class": None, "ratio": None,
                                "note": f"not comparable: the feature dimensions differ "
                                        f"({ca.shape[1]} vs {cb.shape[1]}), so no coordinate-wise "
                                        "cosine exists; rsa_spearman compares the class geometry"}
    result["rsa_spearman"] = rsa(ca, cb)
    return result


def rsa(ca: np.ndarray, cb: np.ndarray) -> float | None:
    """Spearman correlation of the upper triangles of the two centroid cosine-similarity
    matrices: do the two runs place the same classes near each other? Needs >= 3 classes."""
    if len(ca) < 3:
        return None
    iu = np.triu_indices(len(ca), k=1)
    sa, sb = cosine_similarity(ca)[iu], cosine_similarity(cb)[iu]
    if np.ptp(sa) == 0 or np.ptp(sb) == 0:
        return None
    rho = spearmanr(sa, sb).statistic
    return None if math.isnan(rho) else float(rho)


def feature_metrics(fs: FeatureSet, labels: np.ndarray) -> dict[str, Any]:
    return {"name": fs.name, "kind": fs.kind, "role": fs.role, "source": fs.source,
            **cluster_quality(fs.values, labels), **effective_dimensionality(fs.values),
            "sparsity": sparsity(fs.values)}


def summarize(ex: Extracted) -> dict[str, Any]:
    """Metrics of one extraction: samples, accuracy on them, firing rates, every feature set."""
    counts = {int(c): int(n) for c, n in zip(*np.unique(ex.labels, return_counts=True))}
    return {"samples": int(len(ex.labels)), "samples_per_class": counts, "timesteps": ex.timesteps,
            "accuracy_on_samples": float(np.mean(ex.predictions == ex.labels)),
            "firing_rates": ex.firing_rates,
            "feature_sets": [feature_metrics(fs, ex.labels) for fs in ex.feature_sets]}


def analyze_features(ex: Extracted, other: Extracted | None = None) -> dict[str, Any]:
    """All metrics of one extraction (and of ``other`` with the alignment of the two's primary
    feature sets of each kind) as a JSON-able dict."""
    result: dict[str, Any] = {**summarize(ex), "cross_modal": None, "other_metrics": None}
    if other is not None:
        pairs = []
        for kind in (SPIKE_RATE, CONTINUOUS):
            a, b = ex.primary(kind), other.primary(kind)
            if a is None or b is None:
                continue
            pairs.append({"kind": kind, "this": a.name, "other": b.name,
                          **centroid_alignment(a.values, ex.labels, b.values, other.labels)})
        result["cross_modal"] = {"pairs": pairs}
        result["other_metrics"] = summarize(other)
    return result


# --- the whole analysis ---------------------------------------------------------------------
def analyze_model(model: nn.Module, x: Any, y: torch.Tensor | np.ndarray, out_dir: str | Path, *,
                  info: dict[str, Any] | None = None, other: Extracted | None = None,
                  samples_per_class: int = 100, tsne: bool = False) -> dict[str, Any]:
    """Extract, measure, write ``out_dir/analysis.json`` and the figures; return the result."""
    from spikeport.figures import plot_firing_rates, plot_projection, plot_raster

    out_dir = Path(out_dir)
    ex = extract_features(model, x, y, samples_per_class=samples_per_class)
    result = {"schema_version": 1, **(info or {}), **analyze_features(ex, other)}
    figures: dict[str, str] = {}
    panels = [s for s in (ex.primary(SPIKE_RATE), ex.primary(CONTINUOUS)) if s is not None]
    for method in ("pca", "tsne") if tsne else ("pca",):
        path = out_dir / f"projection_{method}.png"
        plot_projection([(f"{s.name} ({s.kind})", s.values) for s in panels], ex.labels, path, method)
        figures[f"projection_{method}"] = path.name
    if ex.firing_rates:
        path = out_dir / "firing_rates.png"
        plot_firing_rates(ex.firing_rates, path)
        figures["firing_rates"] = path.name
        path = out_dir / "raster.png"
        plot_raster(ex.raster, path, title=f"sample 0 (class {ex.raster_label}), {ex.timesteps} steps")
        figures["raster"] = path.name
    result["figures"] = figures
    write_json_atomic(out_dir / "analysis.json", _validated(result))
    return result


def _validated(result: dict[str, Any]) -> Any:
    from spikeport.schemas import Analysis
    return Analysis.model_validate(result)


def load_run(run_dir: Path, root: str | Path | None = None) -> tuple[nn.Module, ModelSpec, Any, Any]:
    """A run's model, spec and test split (through the checkpoint and data registry contracts).

    For a joint run ``x`` and ``y`` are dicts ``{"visual": ..., "audio": ...}`` with the labels
    taken mod the spec's ``label_mod``, as the joint model was trained.
    """
    if not run_dir.is_dir():
        raise ArtifactError(f"{run_dir}: run folder not found")
    if not (run_dir / "model.pt").is_file():
        raise ArtifactError(f"{run_dir / 'model.pt'}: file not found (train the run first: "
                            f"spikeport train ... --out {run_dir})")
    from spikeport.data.registry import is_pair, load_tensors
    from spikeport.train.checkpoint import load_run_model
    model, spec = load_run_model(run_dir)
    if spec.model != "joint":
        x, y = load_tensors(spec.dataset, "test", root=root, timesteps=spec.timesteps)
        return model, spec, (tuple(x) if isinstance(x, list) else x), y
    mod = int(spec.label_mod if spec.label_mod is not None else spec.num_classes)
    modalities = spec.modalities
    if is_pair(spec.dataset):
        xs, ys = {}, {}
        for m in ("visual", "audio"):
            xs[m], y = load_tensors(modalities[m].dataset, "test", root=root,
                                    timesteps=modalities[m].timesteps)
            ys[m] = y % mod
        return model, spec, xs, ys
    (xv, xa), y = load_tensors(spec.dataset, "test", root=root, timesteps=spec.timesteps)
    return model, spec, {"visual": xv, "audio": xa}, {"visual": y % mod, "audio": y % mod}


def _info(run_dir: Path, spec: ModelSpec, modality: str | None = None) -> dict[str, Any]:
    return {"run": str(run_dir), "model": spec.model, "dataset": spec.dataset,
            "modality": modality or spec.modality, "chip_native": bool(spec.chip_native)}


def analyze_run(run_dir: str | Path, other: str | Path | None = None, samples_per_class: int = 100,
                out: str | Path | None = None, *, root: str | Path | None = None,
                tsne: bool = False) -> dict[str, Any]:
    """``spikeport analyze``: the engram analysis of ``run_dir`` (optionally aligned with the
    run ``other``), written to ``out`` (default ``run_dir/analysis``).

    A joint run is analysed on its visual test set and aligned with its own audio test set: its
    shared head puts both modalities in one feature space, the one case where the raw cosine
    alignment compares like with like.
    """
    run_dir = Path(run_dir)
    model, spec, x, y = load_run(run_dir, root)
    other_ex, info = None, _info(run_dir, spec)
    if isinstance(x, dict):  # joint: visual is "this", audio the "other"
        if other is not None:
            raise ConfigError(f"{run_dir}: a joint run is aligned with its own audio modality; "
                              "--other is for single-modality runs")
        other_ex = extract_features(model, x["audio"], y["audio"], samples_per_class=samples_per_class)
        info = _info(run_dir, spec, "visual")
        info["other"] = _info(run_dir, spec, "audio")
        x, y = x["visual"], y["visual"]
    elif other is not None:
        other = Path(other)
        o_model, o_spec, o_x, o_y = load_run(other, root)
        if isinstance(o_x, dict):
            raise ConfigError(f"{other}: --other takes a single-modality run, not a joint one")
        other_ex = extract_features(o_model, o_x, o_y, samples_per_class=samples_per_class)
        info["other"] = _info(other, o_spec)
    out_dir = Path(out) if out is not None else run_dir / "analysis"
    return analyze_model(model, x, y, out_dir, info=info, other=other_ex,
                         samples_per_class=samples_per_class, tsne=tsne)


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _table(title: str, m: dict[str, Any]) -> list[str]:
    lines = [f"{title}: {m['samples']} samples, accuracy on them {m['accuracy_on_samples']:.3f}",
             f"  {'features':<28} {'kind':<11} {'dim':>6} {'silh.':>7} {'DB':>7} {'CH':>9} "
             f"{'PR':>7} {'PC90':>5} {'rate':>6}"]
    for fs in m["feature_sets"]:
        rate = m["firing_rates"].get(fs["name"]) if fs["kind"] == SPIKE_RATE else None
        lines.append(f"  {fs['name'][:28]:<28} {fs['kind']:<11} {fs['dim']:>6} "
                     f"{_fmt(fs['silhouette'], '.3f'):>7} {_fmt(fs['davies_bouldin'], '.3f'):>7} "
                     f"{_fmt(fs['calinski_harabasz'], '.1f'):>9} {_fmt(fs['participation_ratio'], '.2f'):>7} "
                     f"{_fmt(fs['pcs_90'], 'd'):>5} {_fmt(rate, '.3f'):>6}")
    return lines


def format_summary(result: dict[str, Any]) -> str:
    """A short plain-text table of the analysis (what the CLI prints)."""
    def title(info: dict[str, Any] | None, fallback: str) -> str:
        info = info or {}
        tags = ", ".join(str(info[k]) for k in ("model", "modality") if info.get(k))
        return f"{info.get('run', fallback)}" + (f" ({tags})" if tags else "")
    lines = _table(title(result, "model"), result)
    if result.get("other_metrics"):
        lines += _table(title(result.get("other"), "other"), result["other_metrics"])
    for p in (result.get("cross_modal") or {}).get("pairs", []):
        raw = p["raw_cosine"]
        same = _fmt(raw["same_class"], ".3f") if raw["same_class"] is not None else "not comparable"
        lines.append(f"alignment ({p['kind']}: {p['this']} vs {p['other']}, {p['classes']} classes): "
                     f"raw cosine same-class {same}, other-class {_fmt(raw['other_class'], '.3f')}; "
                     f"RSA Spearman {_fmt(p['rsa_spearman'], '.3f')}")
    return "\n".join(lines)
