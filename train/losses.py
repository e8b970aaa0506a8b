"""Training losses of the zoo: the full objective of each model from its ``ModelOutput``.

- ``supcon_loss``: supervised contrastive loss (Khosla et al. 2020, the "L_out" form) on
  L2-normalised features; seed A adds 0.1 x this (temperature 0.07 as its code ran) for ``scl``.
- ``sao_loss``: S-CMRL's semantic alignment loss, ``S = f_a f_v^T / tau`` (no normalisation),
  ``-mean over pairs (i, j) with y_i == y_j of log_softmax(S)[i, j]`` (softmax over the visual
  candidates j of each audio anchor i).
- ``model_loss(spec, output, y)``: CE on the logits plus the model's extra terms; ``joint``
  scores labels mod ``num_classes``; ``scmrl`` uses label-smoothed CE, plus SAO unless
  ``sao_weight`` is 0 or the model sees one modality (``inputs``).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from spikeport.errors import ConfigError
from spikeport.train.models.base import ModelOutput
from spikeport.train.models.spec import ModelSpec

CE_MODELS = ("baseline", "hopfield", "hgrn", "hybrid", "joint")


def supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Supervised contrastive loss over a batch.

    For anchor i with positives P(i) = {p != i : y_p == y_i}:
    ``l_i = -1/|P(i)| sum_p log( exp(z_i.z_p/t) / sum_{a != i} exp(z_i.z_a/t) )``;
    the loss is the mean of l_i over anchors that have at least one positive (0 when none has).
    The seed's code averaged over all anchors, counting those without positives as 0; with
    batches of 32 over 10-20 classes nearly every anchor has a positive, so the two agree closely.
    """
    z = F.normalize(features.float(), dim=1)
    n = z.shape[0]
    sim = z @ z.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels.view(-1, 1) == labels.view(1, -1)) & ~self_mask
    n_pos = pos.sum(1)
    has_pos = n_pos > 0
    if not bool(has_pos.any()):
        return features.sum() * 0.0
    per_anchor = -(log_prob.masked_fill(~pos, 0.0)).sum(1)[has_pos] / n_pos[has_pos]
    return per_anchor.mean()


def sao_loss(f_a: torch.Tensor, f_v: torch.Tensor, labels: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """S-CMRL semantic alignment: -mean_{(i,j): y_i == y_j} log_softmax_j(f_a f_v^T / tau)[i, j]."""
    s = f_a.float() @ f_v.float().T / tau
    log_p = torch.log_softmax(s, dim=1)
    same = labels.view(-1, 1) == labels.view(1, -1)
    return -log_p[same].mean()


def target_labels(spec: ModelSpec, y: torch.Tensor) -> torch.Tensor:
    """The labels a model is scored on: ``joint`` predicts labels mod num_classes (10)."""
    if spec.model == "joint":
        return y % int(spec.num_classes)
    return y


def model_loss(spec: ModelSpec, output: ModelOutput, y: torch.Tensor,
               label_smoothing: float | None = None) -> torch.Tensor:
    """The full training loss of the model described by ``spec`` on one batch.

    ``label_smoothing`` (None: the model's own, 0 except for ``scmrl``) smooths the cross-entropy
    term: the target puts ``1 - eps + eps / C`` on the label and ``eps / C`` on every class."""
    model = spec.model
    logits = output.logits.float()
    ls = 0.0 if label_smoothing is None else float(label_smoothing)
    if model in CE_MODELS:
        return F.cross_entropy(logits, target_labels(spec, y), label_smoothing=ls)
    if model == "scl":
        if output.features is None:
            raise ConfigError("model 'scl': the model output has no features for the contrastive loss")
        ce = F.cross_entropy(logits, y, label_smoothing=ls)
        return ce + float(spec.scl_weight) * supcon_loss(
            output.features, y, float(spec.scl_temperature))
    if model == "scmrl":
        ce = F.cross_entropy(logits, y, label_smoothing=float(spec.label_smoothing)
                             if label_smoothing is None else ls)
        weight = float(spec.sao_weight)
        if weight == 0 or spec.inputs != "both":
            return ce  # SAO off (ablation), or one modality alone: nothing to align
        if "f_a" not in output.extra or "f_v" not in output.extra:
            raise ConfigError("model 'scmrl': the model output lacks extra['f_a'] / extra['f_v'] for the SAO loss")
        return ce + weight * sao_loss(
            output.extra["f_a"], output.extra["f_v"], y, float(spec.sao_tau))
    raise ConfigError(f"spec key model: {model!r} has no loss; known: "
                      f"{', '.join(CE_MODELS + ('scl', 'scmrl'))}")
