"""ANN twin -> ONNX (checked with onnxruntime), MAC counts, BatchNorm folding."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from spikeport.errors import UnsupportedNodeError
from spikeport.export.bn_fold import fold_batchnorm, fold_sequential
from spikeport.export.macs import onnx_macs, torch_macs
from spikeport.export.onnx_twin import LogitsOnly, ann_summary, export_onnx, onnx_max_abs_diff


def _small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, 3, kernel_size=3, stride=1, padding=0), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 4 * 4, 5)).eval()


def test_onnx_matches_torch(tmp_path):
    torch.manual_seed(0)
    net = _small_net()
    export_onnx(net, torch.rand(1, 2, 6, 6), tmp_path / "ann.onnx")
    x = torch.rand(7, 2, 6, 6) * 3  # batch other than the export's: the batch axis is dynamic
    assert onnx_max_abs_diff(net, tmp_path / "ann.onnx", x) <= 1e-5


def test_mac_count_matches_hand_count(tmp_path):
    net = _small_net()
    export_onnx(net, torch.rand(1, 2, 6, 6), tmp_path / "ann.onnx")
    # by hand: conv output 3 x 4 x 4 = 48 values, each 2 x 3 x 3 = 18 MACs -> 864;
    # linear 48 -> 5 -> 240. Total 1104 per inference.
    layers = onnx_macs(tmp_path / "ann.onnx")
    assert [(la["op"], la["macs"]) for la in layers] == [("Conv", 864), ("Gemm", 240)]
    total, per_module = torch_macs(net, torch.rand(1, 2, 6, 6))
    assert total == 1104


def test_ann_summary_of_zoo_twin(tmp_path):
    from spikeport.train.models.ann import AnnTwin
    twin = AnnTwin([8], [{"type": "dense", "out_features": 6}, {"type": "dense", "out_features": 3}])
    info = ann_summary(twin, tmp_path / "ann.onnx", torch.rand(4, 8))
    assert info["macs_onnx"] == info["macs_torch"] == 8 * 6 + 6 * 3
    assert [la["name"] for la in info["layers"]] == ["fc1", "fc2"]
    assert info["max_abs_diff"] <= 1e-5


def _randomise_bn(bn: nn.Module) -> None:
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)


def test_batchnorm_folding_preserves_outputs():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 6 * 6, 7), nn.BatchNorm1d(7)).eval()
    _randomise_bn(seq[1])
    _randomise_bn(seq[5])
    folded = fold_sequential(seq).eval()
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in folded)
    x = torch.randn(5, 2, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), seq(x), atol=1e-5, rtol=1e-5)


def test_batchnorm_after_non_weight_layer_is_refused():
    with pytest.raises(UnsupportedNodeError, match="'bn'"):
        fold_batchnorm([("relu", nn.ReLU()), ("bn", nn.BatchNorm1d(3))])


# --- S-CMRL's twin: the transformer with ReLUs, two graph inputs ------------------------------

SCMRL_TINY = {"embed_dim": 8, "num_heads": 2}


def _scmrl_twin(chip_native: bool) -> nn.Module:
    from spikeport.train.models import build_model, default_spec
    spec = default_spec("scmrl", "av-digits", chip_native=chip_native, ann=True, timesteps=3, options=SCMRL_TINY)
    torch.manual_seed(0)
    twin = build_model(spec)
    for m in twin.modules():  # BatchNorm that is not the identity, as after training
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            _randomise_bn(m)
    return twin.eval()


def _summed_pair(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.poisson(torch.full((batch, 2, 34, 34), 1.0), generator=g),
            torch.poisson(torch.full((batch, 700), 1.5), generator=g))


@pytest.mark.parametrize("chip_native", [True, False])
def test_scmrl_twin_onnx_matches_torch(tmp_path, chip_native):
    """onnxruntime runs the exported twin (inputs 'visual' and 'audio', batch axis dynamic) and
    gives torch's logits to float tolerance."""
    import onnxruntime as ort
    twin = _scmrl_twin(chip_native)
    export_onnx(twin, _summed_pair(1), tmp_path / "ann.onnx")
    sess = ort.InferenceSession(str(tmp_path / "ann.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["visual", "audio"]
    xv, xa = _summed_pair(5, seed=1)
    got = sess.run(None, {"visual": xv.numpy(), "audio": xa.numpy()})[0]
    with torch.no_grad():
        want = twin((xv, xa)).logits.numpy()
    assert got.shape == (5, 10) and float(abs(want).max()) > 1e-3
    assert abs(got - want).max() <= 1e-5 * max(1.0, float(abs(want).max()))


def test_gpu_baseline_feeds_both_inputs_of_the_scmrl_twin(tmp_path):
    """The measured GPU baseline binds every input of the twin's graph: S-CMRL's has two."""
    import onnxruntime as ort
    from spikeport.deploy.gpu_energy import random_feeds
    twin = _scmrl_twin(True)
    export_onnx(twin, _summed_pair(1), tmp_path / "ann.onnx")
    sess = ort.InferenceSession(str(tmp_path / "ann.onnx"), providers=["CPUExecutionProvider"])
    feeds, batch = random_feeds(sess, 4)
    xv, xa = _summed_pair(1)
    assert batch == 4 and sorted(feeds) == ["audio", "visual"]
    assert feeds["visual"].shape == (4, *xv.shape[1:]) and feeds["audio"].shape == (4, *xa.shape[1:])
    assert sess.run(None, feeds)[0].shape == (4, 10)


def _conv_macs(c_in: int, c_out: int, k: tuple[int, int], out_hw: tuple[int, int]) -> int:
    return out_hw[0] * out_hw[1] * c_out * c_in * k[0] * k[1]


def test_scmrl_twin_macs_match_hand_count(tmp_path):
    """Chip-native S-CMRL's twin, E = 8, 2 heads, 3 x 3 tokens, 10 classes, one (summed) step."""
    twin = _scmrl_twin(True)
    e, n, classes = 8, 9, 10
    # visual 2 x 34 x 34: three 3x3 stride-2 convs (34 -> 17 -> 9 -> 5), then a 3x3 unpadded one (-> 3)
    visual = (_conv_macs(2, 1, (3, 3), (17, 17)) + _conv_macs(1, 2, (3, 3), (9, 9))
              + _conv_macs(2, 4, (3, 3), (5, 5)) + _conv_macs(4, 8, (3, 3), (3, 3)))
    # audio: 700 channels as a 1 x 28 x 25 image: 28x25 -> 14x13 -> 7x7 -> 4x4, then a 2x2 kernel (-> 3x3)
    audio = (_conv_macs(1, 1, (3, 3), (14, 13)) + _conv_macs(1, 2, (3, 3), (7, 7))
             + _conv_macs(2, 4, (3, 3), (4, 4)) + _conv_macs(4, 8, (2, 2), (3, 3)))
    positional = 2 * _conv_macs(e, e, (3, 3), (3, 3))
    # a CCSSA block: Q, K, V, projection (1x1 convs over 9 tokens) in each of its two branches;
    # spatial products Q K^T (9 x 9 per head, d = E / h) and (.)V: 2 * N * N * E; temporal ones
    # over one step: 2 * N * E
    block = 2 * 4 * n * e * e + 2 * n * n * e + 2 * n * e
    mlp = n * e * 4 * e + n * 4 * e * e
    hand = visual + audio + positional + 2 * block + 2 * mlp + e * classes
    export_onnx(twin, _summed_pair(1), tmp_path / "ann.onnx")
    layers = onnx_macs(tmp_path / "ann.onnx")
    assert sum(la["macs"] for la in layers) == hand
    total, per_module = torch_macs(LogitsOnly(twin), _summed_pair(1))  # the pair as two arguments
    assert total == hand
    names = {la["name"] for la in layers}
    assert {"backbone.visual.blocks.conv1", "head.block_audio.attn.spatial.q.conv", "head.fc"} <= names
    assert per_module["backbone.audio.blocks.conv4"] == _conv_macs(4, 8, (2, 2), (3, 3))
    info = ann_summary(twin, tmp_path / "ann2.onnx", _summed_pair(3))
    assert info["macs_onnx"] == info["macs_torch"] == hand and info["max_abs_diff"] <= 1e-4
