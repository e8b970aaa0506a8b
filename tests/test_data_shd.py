"""SHD format: generated files read by tonic's own SHD reader, determinism, speakers, separability."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import tonic

from spikeport.data import embedded_audio, registry


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEPORT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _contents(path):
    with h5py.File(path, "r") as f:
        return ([np.asarray(t) for t in f["spikes/times"]], [np.asarray(u) for u in f["spikes/units"]],
                f["labels"][()], f["extra/speaker"][()], list(f["extra/keys"][()]))


def test_generated_shd_reads_through_plain_tonic(tmp_path, cache):
    root = registry.generate("shd-embedded", root=tmp_path / "a", n=40, seed=1, progress=False)
    # FACTS: plain tonic.datasets.SHD opens the h5 without downloading when the zip is beside it
    (root / "SHD" / "shd_train.h5.zip").touch()
    ds = tonic.datasets.SHD(save_to=str(root), train=True)
    times, units, labels, speakers, keys = _contents(root / "SHD" / "shd_train.h5")
    assert len(ds) == len(labels) == 20 and len(keys) == 20
    for i in (0, 7, 19):
        events, label = ds[i]
        # tonic: seconds -> integer microseconds
        np.testing.assert_array_equal(events["t"], (times[i].astype(np.float64) * 1e6).astype(np.int64))
        np.testing.assert_array_equal(events["x"], units[i])
        assert label == labels[i]
    assert sorted(labels.tolist()) == list(range(20))            # balanced: one word each
    assert all(u.max() < 700 for u in units)
    assert 2000 < np.mean([len(t) for t in times]) < 30000       # SHD-like spike counts
    assert max(t.max() for t in times) < 1.5


def test_same_seed_same_bytes_and_unseen_test_speakers(tmp_path, cache):
    a = registry.generate("shd-embedded", root=tmp_path / "a", n=40, seed=2, progress=False)
    b = registry.generate("shd-embedded", root=tmp_path / "b", n=40, seed=2, progress=False)
    c = registry.generate("shd-embedded", root=tmp_path / "c", n=40, seed=5, progress=False)
    for split in ("train", "test"):
        assert (a / "SHD" / f"shd_{split}.h5").read_bytes() == (b / "SHD" / f"shd_{split}.h5").read_bytes()
    ta, tc = _contents(a / "SHD" / "shd_train.h5"), _contents(c / "SHD" / "shd_train.h5")
    assert any(len(x) != len(y) or not np.array_equal(x, y) for x, y in zip(ta[0], tc[0]))
    train_spk = set(_contents(a / "SHD" / "shd_train.h5")[3].tolist())
    test_spk = set(_contents(a / "SHD" / "shd_test.h5")[3].tolist())
    assert train_spk and test_spk and not (train_spk & test_spk)
    # the full default plan too: speakers disjoint, every class equally often
    items = embedded_audio.plan(embedded_audio.DEFAULT_N, seed=0)
    spk = {s: {it["speaker"] for it in items if it["split"] == s} for s in ("train", "test")}
    assert not (spk["train"] & spk["test"])
    for s in ("train", "test"):
        counts = np.bincount([it["label"] for it in items if it["split"] == s], minlength=20)
        assert counts.min() == counts.max()


def test_embedded_audio_is_linearly_separable(tmp_path, cache):
    from sklearn.linear_model import LogisticRegression

    root = registry.generate("shd-embedded", root=tmp_path / "e", n=240, seed=0, progress=False)
    x, y = registry.load_tensors("shd-embedded", "train", root=root, progress=False)
    xt, yt = registry.load_tensors("shd-embedded", "test", root=root, progress=False)
    assert tuple(x.shape[1:]) == (100, 700)

    def feats(v):  # spike counts in 10 time bins x 35 channel groups
        return v.reshape(len(v), 10, 10, 35, 20).sum(dim=(2, 4)).reshape(len(v), -1).numpy()

    clf = LogisticRegression(max_iter=3000).fit(np.log1p(feats(x)), y.numpy())
    acc = clf.score(np.log1p(feats(xt)), yt.numpy())
    assert acc > 0.3, acc   # 20 classes, unseen voices: chance is 0.05


def test_av_digits_pairs_share_the_digit(tmp_path, cache):
    root = registry.generate("av-digits", root=tmp_path / "av", n=60, seed=0, progress=False)
    (xv, xa), y = registry.load_tensors("av-digits", "train", root=root, progress=False)
    m = registry.DATASETS["av-digits"]
    assert tuple(xv.shape[1:]) == (m.timesteps, *m.input_shapes[0])
    assert tuple(xa.shape[1:]) == (m.timesteps, *m.input_shapes[1])
    assert len(xv) == len(xa) == len(y) > 0 and int(y.max()) <= 9
    # each audio frame tensor is one of the English shd-embedded samples of the same digit
    ya = registry.load_tensors("shd-embedded", "train", root=root, timesteps=m.timesteps, bin_s=m.dts[1],
                               progress=False)
    for k in range(len(y)):
        match = [(ya[0][j] == xa[k]).all() for j in range(len(ya[1]))]
        labels = {int(ya[1][j]) for j, ok in enumerate(match) if ok}
        assert int(y[k]) in labels
