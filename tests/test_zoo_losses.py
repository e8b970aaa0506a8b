"""The zoo's losses against hand computations written as explicit loops in numpy."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spikeport.errors import ConfigError
from spikeport.train.losses import model_loss, sao_loss, supcon_loss, target_labels
from spikeport.train.models.base import ModelOutput
from spikeport.train.models.spec import ChipNativeSpec, ScmrlSpec, SeedASpec, spec_from_dict


def _supcon_by_hand(feats: np.ndarray, labels: list[int], t: float) -> float:
    n = len(labels)
    z = [f / math.sqrt(sum(v * v for v in f)) for f in feats]
    per_anchor = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        denom = sum(math.exp(float(np.dot(z[i], z[a])) / t) for a in range(n) if a != i)
        terms = [math.log(math.exp(float(np.dot(z[i], z[p])) / t) / denom) for p in positives]
        per_anchor.append(-sum(terms) / len(terms))
    return sum(per_anchor) / len(per_anchor)


def _sao_by_hand(fa: np.ndarray, fv: np.ndarray, labels: list[int], tau: float) -> float:
    n = len(labels)
    total, count = 0.0, 0
    for i in range(n):
        s = [float(np.dot(fa[i], fv[j])) / tau for j in range(n)]
        log_z = math.log(sum(math.exp(v) for v in s))
        for j in range(n):
            if labels[i] == labels[j]:
                total += s[j] - log_z
                count += 1
    return -total / count


def _ce_by_hand(logits: np.ndarray, labels: list[int], smoothing: float = 0.0) -> float:
    total = 0.0
    for row, y in zip(logits, labels):
        log_z = math.log(sum(math.exp(v) for v in row))
        logp = [v - log_z for v in row]
        c = len(row)
        total += -sum(((1 - smoothing) * (k == y) + smoothing / c) * logp[k] for k in range(c))
    return total / len(labels)


@pytest.fixture
def batch():
    rng = np.random.default_rng(3)
    # label 3 has a single sample: an anchor without positives, which SupCon must skip
    labels = [0, 1, 0, 2, 1, 2, 0, 3]
    return rng.normal(size=(8, 5)), rng.normal(size=(8, 5)) * 0.3, labels


@pytest.mark.parametrize("t", [0.07, 0.5])
def test_supcon_matches_hand_computation(batch, t):
    feats, _, labels = batch
    got = supcon_loss(torch.tensor(feats), torch.tensor(labels), t).item()
    assert got == pytest.approx(_supcon_by_hand(feats, labels, t), rel=1e-5)


def test_supcon_without_positives_is_zero_and_differentiable():
    f = torch.randn(3, 4, requires_grad=True)
    loss = supcon_loss(f, torch.tensor([0, 1, 2]), 0.1)
    loss.backward()
    assert loss.item() == 0.0 and f.grad is not None


@pytest.mark.parametrize("tau", [0.07, 1.0])
def test_sao_matches_hand_computation(batch, tau):
    fa, fv, labels = batch
    got = sao_loss(torch.tensor(fa), torch.tensor(fv), torch.tensor(labels), tau).item()
    assert got == pytest.approx(_sao_by_hand(fa, fv, labels, tau), rel=1e-5)


def test_model_loss_scl_is_ce_plus_weighted_supcon(batch):
    feats, _, labels = batch
    logits = np.random.default_rng(0).normal(size=(8, 4))
    out = ModelOutput(logits=torch.tensor(logits), features=torch.tensor(feats))
    spec = SeedASpec(model="scl", input_shape=[4], num_classes=4, scl_weight=0.1, scl_temperature=0.07)
    want = _ce_by_hand(logits, labels) + 0.1 * _supcon_by_hand(feats, labels, 0.07)
    assert model_loss(spec, out, torch.tensor(labels)).item() == pytest.approx(want, rel=1e-5)
    # the chip-native scl records no contrastive keys and gets seed A's (0.1, 0.07)
    chip = ChipNativeSpec(model="scl", chip_native=True, input_shape=[4], num_classes=4,
                          layers=[{"type": "dense", "out_features": 4}])
    assert "scl_weight" not in chip.to_dict()
    assert model_loss(chip, out, torch.tensor(labels)).item() == pytest.approx(want, rel=1e-5)


def test_model_loss_scmrl_is_smoothed_ce_plus_sao(batch):
    fa, fv, labels = batch
    logits = np.random.default_rng(1).normal(size=(8, 4))
    out = ModelOutput(logits=torch.tensor(logits), features=None,
                      extra={"f_a": torch.tensor(fa), "f_v": torch.tensor(fv)})
    spec = ScmrlSpec(model="scmrl", num_classes=4, label_smoothing=0.1, sao_tau=0.07, sao_weight=1.0)
    want = _ce_by_hand(logits, labels, 0.1) + _sao_by_hand(fa, fv, labels, 0.07)
    assert model_loss(spec, out, torch.tensor(labels)).item() == pytest.approx(want, rel=1e-5)


def test_joint_scores_labels_mod_ten():
    logits = np.random.default_rng(2).normal(size=(4, 10))
    y = [3, 13, 19, 0]  # SHD-style labels 10..19 are the German digits 0..9
    spec = SeedASpec(model="joint", num_classes=10)
    out = ModelOutput(logits=torch.tensor(logits))
    assert model_loss(spec, out, torch.tensor(y)).item() == pytest.approx(
        _ce_by_hand(logits, [v % 10 for v in y]), rel=1e-6)
    assert target_labels(spec, torch.tensor(y)).tolist() == [3, 3, 9, 0]


def test_unknown_model_names_the_key():
    with pytest.raises(ConfigError, match="spec key model"):
        spec_from_dict({"model": "resnet"})
