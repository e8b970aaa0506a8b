"""lava-dl's own netx test networks, read by ``read_netx`` and run by the fast engine, against the
outputs lava-dl ships beside them (``site-packages/tests/lava/lib/dl/netx/gts``), bit for bit.

Time alignment. The fast engine indexes every layer by the input step ("local" time); each
recording has its own frame, found from lava-dl's tests and checked here on every step run:

- tinynet (slayer recordings, one frame for every layer): recorded step ``t`` is the engine's
  local step ``t - 1``; recorded step 0 is empty. lava-dl's test compares Lava's ``output[2:17]``
  to ``gt[1:]`` for the same reason (Lava adds one synapse step per layer on top).
- ntidigits (three dense layers with axonal delays): the output at recorded step ``t`` is the
  engine's local step ``t - 4``: one step per layer plus one for the input (Lava's global time).
- pilotnet_lif (recorded on Loihi 2, reset every 16 steps): the input layer has no synapse
  block, so its recorded step ``t`` is local ``t``; layer ``k``'s current at recorded step
  ``t`` comes from layer ``k - 1``'s spikes recorded at ``t - 1``.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from spikeport.deploy.loihi import fast_engine as fe
from spikeport.deploy.loihi.fast_engine import run_fast
from spikeport.deploy.loihi.netx_reader import read_netx
from spikeport.deploy.loihi.netx_writer import write_netx
from spikeport.deploy.loihi.quantize import Layer, QuantLayer, QuantNet
from spikeport.errors import ArtifactError, UnsupportedNodeError


def _netx_tests() -> Path | None:
    spec = importlib.util.find_spec("lava")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]).parent / "tests" / "lava" / "lib" / "dl" / "netx"


ROOT = _netx_tests()
GTS = ROOT / "gts" if ROOT else None
needs_gts = pytest.mark.skipif(GTS is None or not GTS.is_dir(),
                               reason="lava-dl's netx ground truths (site-packages/tests/lava/lib/dl/netx/gts) "
                                      "are not installed")
ARITHMETIC = ("auto", "int64")


def _trains(res, name: str) -> np.ndarray:
    """Recorded trains of one layer, [T, neurons] in (C, H, W) order, first sample."""
    s = res.spikes[name][:, 0]
    return s.reshape(s.shape[0], -1).numpy().astype(np.int64)


def _time_major(a: np.ndarray, lava_order: bool) -> np.ndarray:
    """A recording with time last -> [T, neurons] in (C, H, W) order (Lava's arrays are (W, H, C))."""
    a = np.asarray(a)
    if lava_order and a.ndim == 4:
        a = a.transpose(2, 1, 0, 3)
    return np.moveaxis(a.reshape(-1, a.shape[-1]), -1, 0).astype(np.int64)


@needs_gts
@pytest.mark.parametrize("arithmetic", ARITHMETIC)
def test_tinynet_every_layer_equals_the_ground_truth(arithmetic: str):
    """Input neurons driven by a per-neuron bias, two strided convolutions, leak: all 16 steps."""
    r = read_netx(ROOT / "tiny.net")
    net = r.net
    assert [q.input_neurons for q in net.layers] == [True, False, False]
    # lava-dl's test sets this bias on the built network; it is in Lava's (W, H, C) order
    bias = np.load(GTS / "tinynet" / "input_bias.npy").astype(np.int64).transpose(2, 1, 0)
    net.layers[0] = dataclasses.replace(net.layers[0], bias=bias)
    steps = 16
    res = run_fast(net, torch.zeros(1, steps, *net.input_shape), record=True, arithmetic=arithmetic)
    for name, file in zip([q.name for q in net.layers], ("input.npy", "layer1.npy", "output.npy")):
        gt = _time_major(np.load(GTS / "tinynet" / file)[0], lava_order=False)  # [1, C, H, W, T]
        assert gt.shape[0] == steps
        assert gt[0].sum() == 0, "recorded step 0 is before the first local step"
        mine = _trains(res, name)
        assert np.array_equal(mine[:-1], gt[1:]), f"{name}: {int(np.abs(mine[:-1] - gt[1:]).sum())} spikes differ"
        assert gt.sum() > 50


@needs_gts
@pytest.mark.parametrize("arithmetic", ARITHMETIC)
def test_ntidigits_with_axonal_delays_equals_the_ground_truth(arithmetic: str):
    """Three dense layers with current memory and per-neuron axonal delays up to 62: all 3000 steps."""
    path = GTS / "ntidigits" / "ntidigits.net"
    net = read_netx(path, num_layers=5).net  # the sixth entry is an averaging layer netx does not read
    assert [q.delay is not None for q in net.layers] == [True, True, False]
    assert max(int(q.delay.max()) for q in net.layers if q.delay is not None) == 62
    x = torch.from_numpy(np.load(GTS / "ntidigits" / "input.npy").T.copy()).float()[None]  # [1, T, 64]
    gt = np.load(GTS / "ntidigits" / "output.npy").T.astype(np.int64)  # [T, 242]
    lag = len(net.layers) + 1
    res = run_fast(net, x, arithmetic=arithmetic)
    mine = res.output[:, 0].numpy().astype(np.int64)
    assert gt[:lag].sum() == 0
    diff = int(np.abs(mine[:-lag] - gt[lag:]).sum())
    assert diff == 0, f"{diff} output spikes differ"
    assert gt.sum() > 20000
    # the delays matter: without them the same network misses the recording
    plain = QuantNet(net.input_shape, [dataclasses.replace(q, delay=None) for q in net.layers], 0)
    undelayed = run_fast(plain, x[:, :600], arithmetic=arithmetic).output[:, 0].numpy().astype(np.int64)
    assert np.abs(undelayed[:-lag] - gt[lag:600]).sum() > 100


def _pilotnet() -> QuantNet:
    net = read_netx(GTS / "pilotnet_lif" / "network.net").net
    bias = np.load(GTS / "pilotnet_lif" / "image.npy").astype(np.int64).transpose(2, 1, 0)  # (W, H, C) -> (C, H, W)
    net.layers[0] = dataclasses.replace(net.layers[0], bias=bias)
    return net


@needs_gts
def test_pilotnet_lif_input_layer_and_every_layers_currents_equal_the_hardware_recording():
    """The input layer's spikes (bias-driven, leaky) and the synaptic current of the five conv and
    three dense layers after it, each from the recorded spikes of the layer before, all 24 steps.

    The run was recorded on Loihi 2 with a reset every 16 steps; input.npy resets the input layer
    at step 17, input-s.npy at step 16: each later step is a fresh sample's step from rest.
    The conv and dense layers' voltages and spikes are not compared: Loihi 2 records, for a neuron
    that fired, a voltage Lava's fixed-point model (the engine's reference) does not produce."""
    gt_dir = GTS / "pilotnet_lif"
    net = _pilotnet()
    steps = 24
    inp = net.layers[0]
    res = run_fast(QuantNet(net.input_shape, [inp], 0), torch.zeros(1, steps, *net.input_shape), record=True)
    mine = _trains(res, inp.name)
    for file, reset in (("input.npy", 17), ("input-s.npy", 16)):
        gt = _time_major(np.load(gt_dir / file), lava_order=True)
        assert np.array_equal(mine[:reset], gt[:reset]), file
        assert np.array_equal(mine[:steps - reset], gt[reset:]), file

    spikes = ["input", "conv-0", "conv-1", "conv-2", "conv-3", "conv-4", "fc-0", "fc-1"]
    currents = ["conv-0-u", "conv-1-u", "conv-2-u", "conv-3-u", "conv-4-u", "fc-0-u", "fc-1-u", "fc-2-u"]
    for q, s_file, u_file in zip(net.layers[1:], spikes, currents):
        assert q.i_decay == 4096  # no current memory: the current is the step's synaptic input << 6
        s = _time_major(np.load(gt_dir / f"{s_file}.npy"), lava_order=True)
        u = _time_major(np.load(gt_dir / f"{u_file}.npy"), lava_order=True)
        plan = fe._plan(QuantNet(q.layer.input_shape, [q], 0), steps, "auto")[0]
        h = torch.from_numpy(s[:steps - 1]).float().reshape(steps - 1, 1, *q.layer.input_shape)
        a = fe._synaptic(plan, h, None).reshape(steps - 1, -1).double().numpy()
        assert not u[0].any(), u_file
        diff = int((a * 64 != u[1:steps]).sum())
        assert diff == 0, f"{q.name} ({u_file}): {diff} currents differ"
        assert np.count_nonzero(u) > 100


@needs_gts
def test_lava_dl_networks_read_write_read_unchanged(tmp_path):
    for file, kw in (("tiny.net", {}), ("gts/ntidigits/ntidigits.net", {"num_layers": 5}),
                     ("gts/pilotnet_lif/network.net", {}), ("mnist.net", {})):
        a = read_netx(ROOT / file, **kw).net
        b = read_netx(write_netx(a, tmp_path / "copy.net")).net
        _assert_same(a, b)


def _assert_same(a: QuantNet, b: QuantNet) -> None:
    assert a.input_shape == b.input_shape and len(a.layers) == len(b.layers)
    for qa, qb in zip(a.layers, b.layers):
        for key in ("weight", "rec_weight", "bias", "delay"):
            x, y = getattr(qa, key), getattr(qb, key)
            assert (x is None) == (y is None) and (x is None or np.array_equal(x, y)), (qa.name, key)
        for key in ("vth", "i_decay", "v_decay", "input_neurons", "name"):
            assert getattr(qa, key) == getattr(qb, key), (qa.name, key)
        for key in ("kind", "input_shape", "output_shape", "stride", "padding", "dilation", "groups", "flatten_before"):
            assert getattr(qa.layer, key) == getattr(qb.layer, key), (qa.name, key)


def _hand_net(seed: int = 0) -> QuantNet:
    """conv -> flatten -> dense with per-neuron delays -> dense with per-synapse delays (with leak)."""
    rng = np.random.default_rng(seed)

    def q(name, kind, ins, outs, w, bias, delay=None, i_decay=4096, v_decay=0, vth=150, **conv):
        lay = Layer(name, f"{name}.syn", kind, ins, outs, w.astype(np.float64), None, 1.0, 0.0, float(vth), **conv)
        return QuantLayer(lay, w, None, bias, vth, i_decay, v_decay, 1.0, delay=delay)

    conv = q("l1", "conv", (2, 8, 8), (4, 4, 4), rng.integers(-60, 80, (4, 2, 3, 3)) * 2, rng.integers(-5, 9, 4),
             stride=(2, 2), padding=(1, 1))
    d1 = q("l2", "dense", (4, 4, 4), (12,), rng.integers(-40, 60, (12, 64)) * 2, None, rng.integers(0, 7, 12),
           i_decay=1024, v_decay=256, flatten_before=True)
    d2 = q("l3", "dense", (12,), (5,), rng.integers(-50, 90, (5, 12)) * 2, rng.integers(-3, 4, 5),
           rng.integers(0, 5, (5, 12)), v_decay=128)
    return QuantNet((2, 8, 8), [conv, d1, d2], 0)


def test_spikeport_netx_files_with_delays_read_back_and_run_the_same(tmp_path):
    """A network with both delay forms written by ``write_netx`` reads back equal, and the delays
    shift each neuron's (or synapse's) input by exactly its delay in both arithmetics."""
    net = _hand_net()
    back = read_netx(write_netx(net, tmp_path / "delays.net"))
    _assert_same(net, back.net)
    assert back.net.layers[1].delay.ndim == 1 and back.net.layers[2].delay.ndim == 2
    x = (torch.rand(6, 20, 2, 8, 8, generator=torch.Generator().manual_seed(3)) < 0.4).float()
    fast = run_fast(back.net, x, record=True, batch_size=4)
    ref = run_fast(back.net, x, record=True, arithmetic="int64")
    for name in fast.spikes:
        assert torch.equal(fast.spikes[name], ref.spikes[name]), name
    assert int(fast.spikes["l3"].sum()) > 10

    # per-synapse delays by hand: the second dense layer's input, one delay at a time
    q = back.net.layers[2]
    s = ref.spikes["l2"].reshape(20, 6, 12).to(torch.int64)
    want = torch.zeros(20, 6, 5, dtype=torch.int64)
    w, d = torch.as_tensor(q.weight), torch.as_tensor(q.delay)
    for t in range(20):
        for j in range(5):
            for i in range(12):
                src = t - int(d[j, i])
                if src >= 0:
                    want[t, :, j] += w[j, i] * s[src, :, i]
    plan = fe._plan(QuantNet((12,), [q], 0), 20, "int64")[0]
    assert torch.equal(fe._delayed_input(plan, s, None), want)


def test_a_file_that_is_not_hdf5_names_the_file(tmp_path):
    bad = tmp_path / "random.net"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ArtifactError, match="random.net"):
        read_netx(bad)
    with pytest.raises(ArtifactError, match="no such file"):
        read_netx(tmp_path / "missing.net")
    empty = tmp_path / "empty.net"
    with h5py.File(empty, "w") as f:
        f.create_group("simulation")
    with pytest.raises(ArtifactError, match=r"empty\.net.*'layer'"):
        read_netx(empty)


def _netx_with(path: Path, kind: str, neuron: str = "CUBA") -> Path:
    with h5py.File(path, "w") as f:
        g = f.create_group("layer/0")
        g.create_dataset("type", data=np.bytes_("input"))
        g.create_dataset("shape", data=np.array([2, 8, 8]))
        g = f.create_group("layer/1")
        g.create_dataset("type", data=np.bytes_(kind))
        g.create_dataset("shape", data=np.array([4, 6, 6]))
        g.create_dataset("weight", data=np.ones((4, 2, 3, 3)))
        n = g.create_group("neuron")
        n.create_dataset("type", data=np.bytes_(neuron))
        for key, val in (("iDecay", 4096), ("vDecay", 0), ("vThMant", 10)):
            n.create_dataset(key, data=np.int64(val))
    return path


def test_unsupported_layers_and_neurons_raise_one_clear_error(tmp_path):
    with pytest.raises(UnsupportedNodeError, match=r"pool\.net: layer 1 \(pool\): pooling") as e:
        read_netx(_netx_with(tmp_path / "pool.net", "pool"))
    assert str(e.value).count("\n") == 0
    with pytest.raises(UnsupportedNodeError, match=r"layer 1 \(conv\): sigma-delta neurons"):
        read_netx(_netx_with(tmp_path / "sdnn.net", "conv", neuron="SDNN"))
    read_netx(_netx_with(tmp_path / "ok.net", "conv"))  # the same file with a CUBA neuron reads
    with h5py.File(tmp_path / "ok.net", "a") as f:
        f["layer/1/neuron"].create_dataset("gradedSpike", data=True)
    with pytest.raises(UnsupportedNodeError, match="graded output spikes"):
        read_netx(tmp_path / "ok.net")


@needs_gts
def test_lava_dl_networks_it_cannot_carry_are_named():
    with pytest.raises(UnsupportedNodeError, match=r"ntidigits\.net: layer 5 \(average\)"):
        read_netx(GTS / "ntidigits" / "ntidigits.net")
    with pytest.raises(UnsupportedNodeError, match=r"layer 0 \(input\): sigma-delta"):
        read_netx(GTS / "pilotnet_sdnn" / "network.net")


def test_dense_weights_replay_netx_and_lava_exactly(tmp_path):
    """The reader's replay of netx's ``optimize_weight_bits`` and Lava's clip / truncate / shift gives
    the sums Lava's Dense block computes, including the inhibitory case where Lava truncates."""
    netx_utils = pytest.importorskip("lava.lib.dl.netx.utils")
    from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights

    from spikeport.deploy.loihi import netx_reader as nr

    rng = np.random.default_rng(1)
    cases = [rng.integers(-127, 128, (6, 9)) * 2, rng.integers(-10, 11, (6, 9)), rng.integers(0, 40, (6, 9)) * 4,
             -rng.integers(0, 100, (6, 9)), np.where(rng.random((6, 9)) < 0.5, -128, 0)]
    spikes = (rng.random((9, 20)) < 0.5).astype(np.int64)
    f = nr._File(tmp_path / "x.net", None, 1, "dense")
    for w in cases:
        mine = nr._lava_dense_weights(f, [w])[0]
        with np.errstate(divide="ignore"):  # netx divides by a zero largest weight in the last case
            shifted, bits, exp, _ = netx_utils.optimize_weight_bits(w)
        mode = determine_sign_mode(shifted)
        lw = truncate_weights(clip_weights(shifted, mode, num_bits=8), mode, bits)
        lava = np.right_shift(lw @ spikes, -exp) if exp <= 0 else np.left_shift(lw @ spikes, exp)
        assert np.array_equal(mine @ spikes, lava)
    assert not np.array_equal(nr._lava_dense_weights(f, [cases[-1]])[0], cases[-1])  # Lava really truncates there
