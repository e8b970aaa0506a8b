"""`spikeport import`: graphs made by other tools inside the test (sinabs, snntorch), simulated
by spikeport's float runtime and held to the producing tool's own simulation spike for spike;
then deployed (Loihi fast engine == Lava) and reported; and every bad input named."""
from __future__ import annotations

import warnings
from pathlib import Path

import nir
import numpy as np
import pytest
import sinabs
import sinabs.layers as sl
import snntorch as snn
import snntorch.utils
import torch
from snntorch.export_nir import export_to_nir
from torch import nn
from typer.testing import CliRunner

from spikeport.cli import app
from spikeport.deploy.float_runtime import run_float
from spikeport.deploy.lowering import Conventions, lower
from spikeport.errors import ArtifactError, ConfigError, DataError, SpikeportError, UnsupportedNodeError
from spikeport.importing import PRODUCERS, import_network
from spikeport.io import read_json_model
from spikeport.schemas import Stats

T = 12


# ---------------------------------------------------------------- graphs from other tools ---
def sinabs_cnn(seed: int = 0) -> tuple[nn.Sequential, nir.NIRGraph]:
    """A small N-MNIST-style CNN in sinabs (Conv2d, IF, SumPool2d, Flatten, Linear) and its NIR."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False), sl.IAFSqueeze(batch_size=1, num_timesteps=T),
        sl.SumPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1, bias=False), sl.IAFSqueeze(batch_size=1, num_timesteps=T),
        sl.SumPool2d(2),
        nn.Flatten(), nn.Linear(6 * 2 * 2, 5, bias=False), sl.IAFSqueeze(batch_size=1, num_timesteps=T))
    for m in model:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            # weights on a 1/8 grid: every sum is exact in float, so spike-for-spike equality is meaningful
            m.weight.data = torch.round((torch.randn(m.weight.shape, generator=g) * 0.45 + 0.08) * 8) / 8
    graph = sinabs.to_nir(model, torch.zeros(T, 2, 8, 8))
    graph.infer_types()  # sinabs 3.1 leaves some node types empty, which nir.write rejects
    return model, graph


def sinabs_reference(graph: nir.NIRGraph, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """sinabs' own simulation of the graph (sinabs.from_nir): each IF node's spikes [T, N, ...]."""
    n = x.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        executor = sinabs.from_nir(graph, batch_size=n, num_timesteps=T)
    seen: dict[str, torch.Tensor] = {}
    for name, mod in executor.named_children():
        if isinstance(mod, sl.IAFSqueeze):
            mod.register_forward_hook(lambda m, a, out, name=name: seen.__setitem__(name, out))
    with torch.no_grad():
        executor(x.reshape(n * T, *x.shape[2:]))  # sinabs' squeeze layout: [N * T, ...], sample-major
    return {k: v.reshape(n, T, *v.shape[1:]).transpose(0, 1) for k, v in seen.items()}


def _on_grid(*linears: nn.Linear) -> None:
    # weights on a binary grid: sums are exact in float32 and float64 alike
    for lin in linears:
        lin.weight.data = torch.round(lin.weight.data * 64) / 32
        lin.bias.data = torch.round(lin.bias.data * 64) / 128


class SnnTorchRecurrent(nn.Module):
    """Linear -> RLeaky (a subgraph in NIR: neuron + recurrent dense) -> Linear -> Leaky.

    Integrate-and-fire (beta = 1) with reset by subtraction, where snntorch's update and NIR's
    agree exactly. (snntorch's RLeaky/RSynaptic "zero" reset also drops the input of the step
    after a spike, rleaky.py ``_base_zero``, which neither NIR nor the chips can express.)"""

    def __init__(self, seed: int = 1, reset: str = "subtract") -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(12, 16)
        self.lif1 = snn.RLeaky(beta=torch.ones(16), threshold=torch.ones(16), linear_features=16,
                               reset_mechanism=reset, init_hidden=True, all_to_all=True)
        self.fc2 = nn.Linear(16, 4)
        self.lif2 = snn.Leaky(beta=torch.ones(4), threshold=torch.ones(4), reset_mechanism=reset,
                              init_hidden=True)
        _on_grid(self.fc1, self.lif1.recurrent, self.fc2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif2(self.fc2(self.lif1(self.fc1(x))))

    @torch.no_grad()
    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """snntorch's own simulation: spikes of both layers [T, N, ...]."""
        snntorch.utils.reset(self)
        s1, s2 = [], []
        for t in range(x.shape[1]):
            s1.append(self.lif1(self.fc1(x[:, t])))
            s2.append(self.lif2(self.fc2(s1[-1])))
        return {"lif1.lif": torch.stack(s1), "lif2": torch.stack(s2)}


class SnnTorchCuba(nn.Module):
    """Linear -> Synaptic (CubaLIF in NIR): its membrane below threshold checks the current's gain."""

    def __init__(self, seed: int = 2, alpha: float = 0.75, beta: float = 0.875) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(12, 6)
        self.lif1 = snn.Synaptic(alpha=torch.full((6,), alpha), beta=torch.full((6,), beta),
                                 threshold=torch.full((6,), 1e6), reset_mechanism="zero", init_hidden=True,
                                 output=True)
        _on_grid(self.fc1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif1(self.fc1(x))[0]

    @torch.no_grad()
    def membrane(self, x: torch.Tensor) -> torch.Tensor:
        snntorch.utils.reset(self)
        return torch.stack([self.lif1(self.fc1(x[:, t]))[2] for t in range(x.shape[1])])


def spikes(n: int, shape, p: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((n, T, *shape), generator=g) < p).float()


def write_inputs(path: Path, x: torch.Tensor, labels=None) -> Path:
    arrays = {"inputs": x.numpy().astype(np.uint8)}
    if labels is not None:
        arrays["labels"] = np.asarray(labels)
    np.savez(path, **arrays)
    return path


# ---------------------------------------------------------------- the producers' own simulation
def test_sinabs_graph_runs_as_sinabs_runs_it_spike_for_spike():
    _, graph = sinabs_cnn()
    x = spikes(6, (2, 8, 8), 0.3, seed=2)
    ours = run_float(lower(graph, PRODUCERS["sinabs"].dt, PRODUCERS["sinabs"].conventions), x).spikes
    ref = sinabs_reference(graph, x)
    assert set(ref) == set(ours)
    for name in ref:
        assert torch.equal(ours[name].float(), ref[name]), name
    assert all(float(v.sum()) > 20 for v in ref.values())  # every layer is active: the check has teeth
    assert float(ref["8"].max()) > 1  # several spikes in one step: MultiSpike really is exercised
    # NIR read literally (one spike a step, reset to zero, no floor) is a different network
    literal = run_float(lower(graph, 1.0), x).spikes
    assert not all(torch.equal(literal[k].float(), ref[k]) for k in ref)


def test_snntorch_recurrent_graph_runs_as_snntorch_runs_it():
    net = SnnTorchRecurrent()
    graph = export_to_nir(net, torch.zeros(1, 12), ignore_dims=[0])
    x = spikes(8, (12,), 0.4, seed=3)
    lowered = lower(graph, PRODUCERS["snntorch"].dt, Conventions(reset="subtract"))
    assert lowered.layers[0].rec_weight is not None  # the RLeaky subgraph, inlined, is a recurrent layer
    ours = run_float(lowered, x).spikes
    ref = net.run(x)
    for name in ref:
        assert torch.equal(ours[name].float(), ref[name]), f"{name}: {int((ours[name] != ref[name]).sum())} differ"
    assert float(ref["lif1.lif"].sum()) > 30 and float(ref["lif2"].sum()) > 5


def test_cuba_lif_current_gain_matches_snntorch_synaptic():
    """NIR CubaLIF under forward Euler carries dt / tau_syn into the current; snntorch's exporter
    writes w_in = tau_syn / dt to cancel it. Without the factor the membrane is 4x too large here."""
    from spikeport.deploy.float_runtime import run_layer
    net = SnnTorchCuba()
    graph = export_to_nir(net, torch.zeros(1, 12), ignore_dims=[0])
    x = spikes(5, (12,), 0.4, seed=4)
    layer = lower(graph, PRODUCERS["snntorch"].dt).layers[0]
    assert layer.neuron_type == "CubaLIF" and layer.alpha == pytest.approx(0.75)
    assert layer.current_bias is not None and layer.bias is None  # the Affine bias feeds the current
    _, v = run_layer(layer, x.transpose(0, 1).double(), PRODUCERS["snntorch"].conventions)
    ref = net.membrane(x).double()
    assert float(ref.abs().max()) > 1
    assert torch.allclose(v * layer.threshold / 1e6, ref, atol=1e-5)


# ---------------------------------------------------------------- import -> deploy -> report
@pytest.fixture(scope="module")
def sinabs_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sinabs")
    _, graph = sinabs_cnn(seed=4)
    nir.write(root / "cnn.nir", graph)
    x = spikes(10, (2, 8, 8), 0.25, seed=5)
    write_inputs(root / "in.npz", x, labels=np.arange(10) % 5)
    result = CliRunner().invoke(app, ["import", str(root / "cnn.nir"), "--out", str(root / "run"),
                                      "--inputs", str(root / "in.npz"), "--from", "sinabs", "--bin-ms", "2"])
    assert result.exit_code == 0, result.output
    return root / "run"


def test_import_writes_the_run_layout_and_records_both_times(sinabs_run):
    from spikeport.schemas import ExportInfo, Partition
    info = read_json_model(sinabs_run / "export" / "export.json", ExportInfo)
    assert info.imported.dt == 1.0 and info.imported.dt_source == "--from sinabs"
    assert info.imported.step_s == pytest.approx(2e-3) and info.imported.timesteps == T
    assert info.imported.conventions["reset"] == "subtract"
    assert read_json_model(sinabs_run / "export" / "partition.json", Partition).host == []
    # the ANN twin: the graph's own convolutions and dense layer, MACs counted by hand
    assert info.ann.macs_onnx == 4 * 2 * 9 * 64 + 6 * 4 * 9 * 16 + 5 * 24


def test_imported_run_deploys_to_both_chips_and_reports(sinabs_run):
    runner = CliRunner()
    for args in (["--target", "loihi2"], ["--target", "loihi2", "--engine", "lava"], ["--target", "speck"]):
        result = runner.invoke(app, ["deploy", str(sinabs_run), *args])
        assert result.exit_code == 0, result.output
        stats = read_json_model(sinabs_run / "deploy" / args[1] / "stats.json", Stats)
        assert stats.samples == 10 and stats.step_s == pytest.approx(2e-3)
        assert stats.conventions["spikes_per_step"] == "multi"
        if args[1] == "loihi2":
            # Lava's LIF fires once a step and resets to zero: the difference is said, not hidden
            assert any("subtraction" in a for a in stats.approximations)
    result = runner.invoke(app, ["report", str(sinabs_run), "--chips", "loihi2,speck"])
    assert result.exit_code == 0, result.output
    assert (sinabs_run / "report" / "energy.json").is_file()


def test_loihi_fast_engine_equals_lava_on_an_imported_snntorch_graph(tmp_path):
    from spikeport.deploy.loihi.fast_engine import run_fast
    from spikeport.deploy.loihi.lava_run import run_lava
    from spikeport.deploy.loihi.netx_writer import write_netx
    from spikeport.deploy.loihi.quantize import quantize
    from spikeport.deploy.loihi.target import loihi_layers
    net = SnnTorchRecurrent(seed=6)
    graph = export_to_nir(net, torch.zeros(1, 12), ignore_dims=[0])
    q = quantize(loihi_layers(lower(graph, PRODUCERS["snntorch"].dt)))
    x = spikes(4, (12,), 0.4, seed=7)
    fast = run_fast(q, x, record=True)
    lava = run_lava(write_netx(q, tmp_path / "net.net"), x, [layer.name for layer in q.layers])
    for name in fast.spikes:
        assert torch.equal(fast.spikes[name], lava.spikes[name]), name
    assert sum(float(v.sum()) for v in lava.spikes.values()) > 20


# ---------------------------------------------------------------- dt --------------------------
def test_a_graph_without_dt_needs_one_and_a_wrong_dt_is_warned(tmp_path):
    _, graph = sinabs_cnn()
    nir.write(tmp_path / "cnn.nir", graph)
    npz = write_inputs(tmp_path / "in.npz", spikes(4, (2, 8, 8), 0.3, seed=8))
    with pytest.raises(ConfigError, match=r"does not say its dt.*--dt.*sinabs: dt = 1"):
        import_network(tmp_path / "cnn.nir", tmp_path / "run", inputs=npz)
    with pytest.warns(UserWarning, match=r"layer '1' emits no spike.*r \* dt = 0\.001"):
        import_network(tmp_path / "cnn.nir", tmp_path / "run", inputs=npz, dt=1e-3)


# ---------------------------------------------------------------- bad input --------------------
@pytest.fixture()
def good(tmp_path):
    _, graph = sinabs_cnn()
    nir.write(tmp_path / "cnn.nir", graph)
    return tmp_path / "cnn.nir", spikes(3, (2, 8, 8), 0.3, seed=9)


def _assert_fails(tmp_path, error, match, file, **kwargs):
    with pytest.raises(error, match=match):
        import_network(file, tmp_path / "run", producer_name="sinabs", **kwargs)
    assert not (tmp_path / "run" / "export" / "model.nir").exists()


def test_bad_files_are_named(tmp_path, good):
    nir_file, x = good
    npz = write_inputs(tmp_path / "in.npz", x)
    corrupt = tmp_path / "corrupt.nir"
    corrupt.write_bytes(b"\x89HDF\r\n" + bytes(range(200)))
    _assert_fails(tmp_path, ArtifactError, "corrupt.nir: not a readable HDF5/NIR file", corrupt, inputs=npz)
    foreign = tmp_path / "model.onnx"
    foreign.write_bytes(b"onnx")
    _assert_fails(tmp_path, ArtifactError, r"model.onnx: unknown network format '\.onnx'", foreign, inputs=npz)
    bad_npz = tmp_path / "bad.npz"
    bad_npz.write_bytes(b"not a zip")
    _assert_fails(tmp_path, DataError, "bad.npz: not a readable .npz", nir_file, inputs=bad_npz)


def test_an_unsupported_node_is_named(tmp_path):
    nodes = {"input": nir.Input(np.array([4])), "fc1": nir.Linear(weight=np.ones((4, 4))),
             "thr": nir.Threshold(np.ones(4)), "output": nir.Output(np.array([4]))}
    g = nir.NIRGraph(nodes=nodes, edges=[("input", "fc1"), ("fc1", "thr"), ("thr", "output")], type_check=False)
    nir.write(tmp_path / "thr.nir", g)
    npz = write_inputs(tmp_path / "in.npz", spikes(2, (4,), 0.3, seed=1))
    _assert_fails(tmp_path, UnsupportedNodeError, r"NIR node 'thr' \(Threshold\) has no chip form", tmp_path / "thr.nir",
                  inputs=npz)


@pytest.mark.parametrize("arrays,error,match", [
    (lambda x: {"spikes": x}, DataError, r"no array 'inputs' \(found: spikes\)"),
    (lambda x: {"inputs": x, "labels": np.zeros(2, np.int64)}, DataError, r"'labels' has shape \[2\]; expected \[3\]"),
    (lambda x: {"inputs": -x}, DataError, "entries that are not non-negative integers"),
    (lambda x: {"inputs": x * 0.5}, DataError, "entries that are not non-negative integers"),
    (lambda x: {"inputs": x[:, :, :, :4]}, ConfigError, r"inputs are \[N, T, 2, 4, 8\].*input node 'input' takes \[2, 8, 8\]"),
])
def test_bad_inputs_are_named(tmp_path, good, arrays, error, match):
    nir_file, x = good
    np.savez(tmp_path / "in.npz", **arrays(x.numpy()))
    _assert_fails(tmp_path, error, match, nir_file, inputs=tmp_path / "in.npz")


def test_cli_import_error_is_one_line_and_exit_code_non_zero(tmp_path, good):
    nir_file, x = good
    np.savez(tmp_path / "in.npz", spikes=x.numpy())
    result = CliRunner().invoke(app, ["import", str(nir_file), "--out", str(tmp_path / "run"), "--inputs",
                                      str(tmp_path / "in.npz"), "--from", "sinabs"])
    assert result.exit_code != 0
    assert "no array 'inputs'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run" / "export").exists()
    with pytest.raises(SpikeportError, match="exactly one of --dataset"):
        import_network(nir_file, tmp_path / "run")


# ---------------------------------------------------------------- netx in ----------------------
def _netx_file(tmp_path: Path, delays: bool = True) -> Path:
    """A lava-dl netx network with CUBA neurons, a recurrent layer and axonal delays, written in
    netx's format (the format lava-dl's own reader loads, tests/test_loihi_target.py)."""
    from spikeport.deploy.loihi.netx_writer import write_netx
    from spikeport.deploy.loihi.quantize import quantize
    from spikeport.deploy.loihi.target import loihi_layers
    rng = np.random.default_rng(5)
    def cuba(n, alpha, beta):
        ts, tm = 1 / (1 - alpha), 1 / (1 - beta)
        return nir.CubaLIF(tau_syn=np.full(n, ts), tau_mem=np.full(n, tm), r=np.full(n, tm), v_leak=np.zeros(n),
                           v_threshold=np.ones(n), w_in=np.full(n, ts))
    nodes = {"input": nir.Input(np.array([10])),
             "fc1": nir.Affine(weight=rng.normal(0.1, 0.5, (8, 10)), bias=np.zeros(8)), "lif1": cuba(8, 0.5, 0.75),
             "rec1": nir.Linear(weight=rng.normal(0, 0.3, (8, 8))),
             "fc2": nir.Linear(weight=rng.normal(0.1, 0.6, (3, 8))), "lif2": cuba(3, 0.5, 0.875),
             "output": nir.Output(np.array([3]))}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "rec1"), ("rec1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"),
             ("lif2", "output")]
    net = quantize(loihi_layers(lower(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), 1.0)))
    if delays:
        net.layers[1].delay = np.array([0, 2, 5])  # netx axonal delays, one per output neuron
    return write_netx(net, tmp_path / "lavadl.net")


def test_netx_network_imports_and_deploys_bit_for_bit_as_its_file_says(tmp_path):
    from spikeport.deploy.loihi.netx_reader import read_netx
    from spikeport.deploy.loihi.fast_engine import run_fast
    net_file = _netx_file(tmp_path)
    x = spikes(6, (10,), 0.4, seed=11)
    write_inputs(tmp_path / "in.npz", x, labels=np.arange(6) % 3)
    info = import_network(net_file, tmp_path / "run", inputs=tmp_path / "in.npz")
    assert info.imported.format == "lava-dl netx" and info.imported.dt == 1.0
    graph = nir.read(tmp_path / "run" / "export" / "model.nir")
    assert any(isinstance(n, nir.Delay) for n in graph.nodes.values())
    runner = CliRunner()
    stats = {}
    for engine in ("fast", "lava"):
        result = runner.invoke(app, ["deploy", str(tmp_path / "run"), "--target", "loihi2", "--engine", engine])
        assert result.exit_code == 0, result.output
        stats[engine] = read_json_model(tmp_path / "run" / "deploy" / "loihi2" / "stats.json", Stats)
    assert [la.spikes for la in stats["fast"].layers] == [la.spikes for la in stats["lava"].layers]
    # the deployed network is the file's integers, not a re-quantisation of its float view
    direct = run_fast(read_netx(net_file).net, x)
    assert stats["fast"].layers[-1].spikes == float(direct.output.sum())
    assert stats["fast"].agreement_with_float >= 0.5
    # Speck has no current memory: the CUBA layers are refused by name
    result = runner.invoke(app, ["deploy", str(tmp_path / "run"), "--target", "speck"])
    assert result.exit_code != 0 and "(CubaLIF): a synaptic current state" in result.output


def test_lava_dl_netx_files_that_nir_cannot_carry_are_refused_by_name(tmp_path):
    import lava.lib.dl.netx as netx_pkg
    gts = Path(netx_pkg.__file__).parents[4] / "tests" / "lava" / "lib" / "dl" / "netx"
    if not (gts / "tiny.net").is_file():
        pytest.skip(f"lava-dl's netx test networks are not installed under {gts}")
    npz = write_inputs(tmp_path / "in.npz", spikes(2, (1,), 0.3, seed=1))
    with pytest.raises(UnsupportedNodeError, match="tiny.net: layer .* input layer with neurons"):
        import_network(gts / "tiny.net", tmp_path / "run", inputs=npz)
    with pytest.raises(UnsupportedNodeError, match="ntidigits.*average"):
        import_network(gts / "gts" / "ntidigits" / "ntidigits.net", tmp_path / "run", inputs=npz)
    assert not (tmp_path / "run" / "export").exists()
