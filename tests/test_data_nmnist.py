"""N-MNIST format: the reader on real bytes, the embedded generator, determinism, separability."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tonic
import torch

from spikeport.data import nmnist, preprocess, registry, sources


def decode_nmnist_bytes(data: bytes) -> np.ndarray:
    """Independent decoder written from the format: 5 bytes an event, x, y, p (bit 7 of byte 2),
    23-bit timestamp (byte 2 bits 6-0, byte 3, byte 4); y == 240 marks a 2^13 us time overflow."""
    out, offset = [], 0
    for k in range(0, len(data), 5):
        x, y, b2, b3, b4 = data[k:k + 5]
        if y == 240:
            offset += 2 ** 13
            continue
        t = ((b2 & 0x7F) << 16) | (b3 << 8) | b4
        out.append((x, y, t + offset, b2 >> 7))
    return np.array(out, dtype=np.int64).reshape(-1, 4)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEPORT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_real_recording_decodes_exactly(real_nmnist_sample, tmp_path, cache):
    real = real_nmnist_sample
    dest = tmp_path / "root" / "NMNIST" / "Test" / "3" / "00001.bin"
    dest.parent.mkdir(parents=True)
    shutil.copy(real, dest)
    expected = decode_nmnist_bytes(real.read_bytes())
    assert len(expected) == 4325
    ds = nmnist.open_nmnist(tmp_path / "root", "test")
    events, label = nmnist.read_sample(ds, 0)
    got = np.stack([events[k] for k in ("x", "y", "t", "p")], axis=1)
    np.testing.assert_array_equal(got, expected)
    assert label == 3


def test_binning_matches_a_hand_histogram(real_nmnist_sample, tmp_path):
    raw = decode_nmnist_bytes((real_nmnist_sample).read_bytes())
    ev = np.zeros(len(raw), dtype=tonic.datasets.NMNIST.dtype)
    for i, k in enumerate(("x", "y", "t", "p")):
        ev[k] = raw[:, i]
    prep = preprocess.Preprocess(sensor_size=(34, 34, 2), timesteps=30, dt_us=5000)
    frames = prep(ev)
    hist = np.zeros((30, 2, 34, 34), dtype=np.int64)
    keep = raw[:, 2] < 30 * 5000
    for x, y, t, p in raw[keep]:
        hist[t // 5000, p, y, x] += 1
    np.testing.assert_array_equal(frames, hist)


def _bytes_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.bin"))}


def test_generated_files_are_nmnist_format_and_deterministic(tmp_path, cache):
    a = registry.generate("nmnist-embedded", root=tmp_path / "a", n=20, seed=3, progress=False)
    b = registry.generate("nmnist-embedded", root=tmp_path / "b", n=20, seed=3, progress=False)
    c = registry.generate("nmnist-embedded", root=tmp_path / "c", n=20, seed=4, progress=False)
    files_a, files_b = _bytes_of(a), _bytes_of(b)
    assert len(files_a) == 20 and files_a == files_b
    assert _bytes_of(c) != files_a
    # the layout real N-MNIST uses, labels balanced
    labels = [int(Path(k).parent.name) for k in files_a]
    assert np.bincount(labels).tolist() == [2] * 10
    assert {Path(k).parts[1] for k in files_a} == {"Train", "Test"}
    # tonic's own N-MNIST file reader gives what the independent decoder gives
    path = sorted((a / "NMNIST").rglob("*.bin"))[0]
    ev = tonic.io.read_mnist_file(str(path), dtype=tonic.datasets.NMNIST.dtype)
    ref = decode_nmnist_bytes(path.read_bytes())
    np.testing.assert_array_equal(np.stack([ev[k] for k in ("x", "y", "t", "p")], 1), ref)
    assert 1000 < len(ref) < 20000 and ref[:, 2].max() < 300_000
    assert ref[:, 0].max() < 34 and ref[:, 1].max() < 34


def test_load_tensors_shapes_splits_and_cache(tmp_path, cache):
    root = registry.generate("nmnist-embedded", root=tmp_path / "d", n=40, seed=0, progress=False)
    x, y = registry.load_tensors("nmnist-embedded", "train", root=root, progress=False)
    xv, yv = registry.load_tensors("nmnist-embedded", "val", root=root, progress=False)
    xt, yt = registry.load_tensors("nmnist-embedded", "test", root=root, progress=False)
    m = registry.DATASETS["nmnist-embedded"]
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert tuple(x.shape[1:]) == (m.timesteps, *m.input_shape)
    assert len(x) + len(xv) == 30 and len(xt) == 10   # 4 a class: 1 to test
    assert len(xv) >= 1
    # frames are counts of the file's events (denoise only removes events)
    assert float(x.sum()) > 0 and float(x.min()) >= 0
    # cached: the second call reads the frame file and returns equal tensors
    frames = list((cache / "frames").glob("*.pt"))
    assert len(frames) == 3
    x2, y2 = registry.load_tensors("nmnist-embedded", "train", root=root, progress=False)
    assert (x2 == x).all() and (y2 == y).all()
    xs, _ = registry.load_tensors("nmnist-embedded", "train", root=root, max_samples=5,
                                  timesteps=7, progress=False)
    assert tuple(xs.shape[:2]) == (5, 7)


def test_embedded_visual_is_linearly_separable(tmp_path, cache):
    from sklearn.linear_model import LogisticRegression

    root = registry.generate("nmnist-embedded", root=tmp_path / "e", n=120, seed=0, progress=False)
    x, y = registry.load_tensors("nmnist-embedded", "train", root=root, progress=False)
    xt, yt = registry.load_tensors("nmnist-embedded", "test", root=root, progress=False)
    feats = lambda v: v.sum(dim=1).reshape(len(v), -1).numpy()  # spike count per pixel/polarity
    clf = LogisticRegression(max_iter=2000).fit(feats(x), y.numpy())
    acc = clf.score(feats(xt), yt.numpy())
    assert acc > 0.6, acc   # chance is 0.1
