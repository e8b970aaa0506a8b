"""Bad dataset input: each case gives one DataError naming the file and the problem, and a
missing real dataset never reaches for the network."""
from __future__ import annotations

import shutil
import urllib.request

import h5py
import numpy as np
import pytest

from spikeport.data import registry, shd
from spikeport.errors import DataError


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEPORT_CACHE", str(tmp_path / "cache"))

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr("tonic.download_utils.download_url", no_network)


def _nmnist_file(root, split="Train", label="3", name="00001.bin"):
    path = root / "NMNIST" / split / label / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _good_event_bytes(n=20):
    raw = np.zeros((n, 5), np.uint8)
    raw[:, 0] = np.arange(n) % 34
    raw[:, 1] = 5
    raw[:, 4] = np.arange(n)
    return raw.tobytes()


def test_truncated_bin(tmp_path, real_nmnist_sample):
    path = _nmnist_file(tmp_path)
    path.write_bytes((real_nmnist_sample).read_bytes()[:-3])
    with pytest.raises(DataError, match=r"00001\.bin: truncated N-MNIST file .*multiple of 5"):
        registry.load_tensors("nmnist", "train", root=tmp_path, progress=False)


def test_event_outside_sensor(tmp_path):
    raw = np.frombuffer(_good_event_bytes(), np.uint8).reshape(-1, 5).copy()
    raw[7, 0] = 40
    path = _nmnist_file(tmp_path)
    path.write_bytes(raw.tobytes())
    with pytest.raises(DataError, match=r"00001\.bin: event 7 at x=40, y=5 is outside the 34x34"):
        registry.load_tensors("nmnist", "train", root=tmp_path, progress=False)


def test_nmnist_label_out_of_range(tmp_path):
    _nmnist_file(tmp_path, label="12").write_bytes(_good_event_bytes())
    with pytest.raises(DataError, match=r"12: label folder '12' out of range"):
        registry.load_tensors("nmnist", "train", root=tmp_path, progress=False)


def test_empty_folder(tmp_path):
    (tmp_path / "NMNIST" / "Train" / "0").mkdir(parents=True)
    with pytest.raises(DataError, match=r"Train: empty folder"):
        registry.load_tensors("nmnist", "train", root=tmp_path, progress=False)


@pytest.mark.parametrize("name,expected", [
    ("nmnist", "NMNIST"), ("shd", "shd_train.h5"), ("ssc", "ssc_train.h5"),
    ("dvsgesture", "ibmGestureTrain")])
def test_missing_real_dataset_names_path_and_source(tmp_path, name, expected):
    with pytest.raises(DataError) as err:
        registry.load_tensors(name, "train", root=tmp_path / "nowhere", progress=False)
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg and expected in msg and "http" in msg


def _shd(tmp_path, drop=None, labels=(0, 1, 2)):
    path = shd.h5_path(tmp_path, "SHD", "train")
    path.parent.mkdir(parents=True, exist_ok=True)
    shd.write_file(path, [np.array([0.1, 0.2])] * len(labels), [np.array([3, 4])] * len(labels),
                   list(labels), [0] * len(labels), ["a"] * 20)
    if drop:
        with h5py.File(path, "a") as f:
            del f[drop]
    return path


def test_hdf5_missing_key(tmp_path):
    _shd(tmp_path, drop="extra/speaker")
    with pytest.raises(DataError, match=r"shd_train\.h5: HDF5 key 'extra/speaker' missing"):
        registry.load_tensors("shd", "train", root=tmp_path, progress=False)


def test_hdf5_label_out_of_range(tmp_path):
    _shd(tmp_path, labels=(0, 25, 3))
    with pytest.raises(DataError, match=r"shd_train\.h5: label 25 of sample 1 out of range"):
        registry.load_tensors("shd", "train", root=tmp_path, progress=False)


def test_hdf5_not_hdf5(tmp_path):
    path = shd.h5_path(tmp_path, "SHD", "train")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an hdf5 file")
    with pytest.raises(DataError, match=r"shd_train\.h5: not a readable HDF5 file"):
        registry.load_tensors("shd", "train", root=tmp_path, progress=False)


def test_real_shd_layout_loads_without_download(tmp_path):
    _shd(tmp_path)
    x, y = registry.load_tensors("shd", "train", root=tmp_path, progress=False)
    assert y.tolist() in ([0, 2], [1, 2], [0, 1])          # one of three went to val
    # each sample: spikes at 0.1 s on unit 3 and 0.2 s on unit 4 -> 10 ms bins 10 and 20
    assert x[:, 10, 3].tolist() == [1.0, 1.0] and x[:, 20, 4].tolist() == [1.0, 1.0]
    assert float(x.sum()) == 4.0


def test_unknown_names_and_splits(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'mnist'"):
        registry.load_tensors("mnist", "train")
    with pytest.raises(DataError, match="split must be one of"):
        registry.load_tensors("nmnist-embedded", "dev", root=tmp_path)
    with pytest.raises(DataError, match="real dataset"):
        registry.generate("shd", root=tmp_path)


def test_dvsgesture_layout_loads_through_tonic(tmp_path):
    folder = tmp_path / "DVSGesture" / "ibmGestureTrain" / "user01_fluorescent"
    folder.mkdir(parents=True)
    # pairs of neighbouring events 1 ms apart at t = 10 ms and 120 ms; tonic's Denoise(10 ms)
    # keeps an event only when a neighbour fired in the 10 ms before it: the second of each pair
    ev = np.array([[5, 5, 1, 10], [6, 5, 1, 11], [50, 60, 0, 120], [50, 61, 0, 121]], np.int64)
    np.save(folder / "4.npy", ev)
    x, y = registry.load_tensors("dvsgesture", "train", root=tmp_path, progress=False)
    m = registry.DATASETS["dvsgesture"]
    assert tuple(x.shape) == (1, m.timesteps, 2, 128, 128) and y.tolist() == [4]
    assert float(x.sum()) == 2.0
    assert x[0, 0, 1, 5, 6] == 1       # 50 ms bins: t = 11 ms in bin 0 (p, y, x)
    assert x[0, 2, 0, 61, 50] == 1     # t = 121 ms in bin 2
    np.save(folder / "11.npy", ev)
    with pytest.raises(DataError, match=r"11\.npy: label '11' out of range"):
        registry.load_tensors("dvsgesture", "train", root=tmp_path, max_samples=1, progress=False)
