"""The real SHD path: a file written here the way the official SHD files are laid out (h5py
variable-length float32 spike times in seconds, uint16 units, uint16 labels, extra/speaker,
extra/keys and extra/meta_info), not by spikeport's own writer, is read by ``--dataset shd``
and binned exactly as a hand count of its spikes says."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from spikeport.data import registry, sources

T, BIN_S = 100, 0.010


def _write_official_layout(path, n: int, seed: int):
    rng = np.random.default_rng(seed)
    times, units, labels = [], [], []
    for i in range(n):
        k = int(rng.integers(40, 200))
        t = np.sort(rng.uniform(0, 1.2, k)).astype(np.float32)   # some spikes beyond the 1 s of bins
        u = rng.integers(0, 700, k).astype(np.uint16)
        times.append(t)
        units.append(u)
        labels.append(i % 20)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        vt = f.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(np.dtype("float32")))
        vu = f.create_dataset("spikes/units", (n,), dtype=h5py.vlen_dtype(np.dtype("uint16")))
        for i in range(n):
            vt[i], vu[i] = times[i], units[i]
        f["labels"] = np.asarray(labels, dtype=np.uint16)
        f["extra/speaker"] = np.arange(n, dtype=np.uint16) % 10
        f["extra/keys"] = np.array([f"digit-{d}".encode() for d in range(20)])
        meta = f.create_group("extra/meta_info")
        meta["gender"] = np.array([b"female"] * 10)
        meta["age"] = np.arange(10, dtype=np.uint16) + 20
        meta["body_height"] = np.full(10, 170, dtype=np.uint16)
    return times, units, np.asarray(labels)


def _hand_count(t: np.ndarray, u: np.ndarray) -> np.ndarray:
    frame = np.zeros((T, 700), dtype=np.int64)
    us = np.round(t.astype(np.float64) * 1e6)            # tonic reads the seconds as microseconds
    b = (us // int(BIN_S * 1e6)).astype(np.int64)
    keep = b < T
    np.add.at(frame, (b[keep], u[keep].astype(np.int64)), 1)
    return frame


@pytest.fixture
def shd_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEPORT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SPIKEPORT_WORKERS", "1")
    root = tmp_path / "real"
    train = _write_official_layout(root / "SHD" / "shd_train.h5", 40, 0)
    test = _write_official_layout(root / "SHD" / "shd_test.h5", 12, 1)
    for split in ("train", "test"):   # tonic opens the h5 without downloading when its zip is beside it
        (root / "SHD" / f"shd_{split}.h5.zip").touch()
    sources.open_split.cache_clear()
    return root, train, test


def test_real_shd_layout_bins_as_a_hand_count(shd_root):
    root, _, (times, units, labels) = shd_root
    x, y = registry.load_tensors("shd", "test", root=root, timesteps=T, bin_s=BIN_S, progress=False)
    assert tuple(x.shape) == (12, T, 700)
    assert np.array_equal(y.numpy(), labels)
    for i in range(12):
        assert np.array_equal(x[i].numpy().astype(np.int64), _hand_count(times[i], units[i])), f"sample {i}"

