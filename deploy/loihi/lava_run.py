"""Run a netx HDF5 network in Lava's bit-accurate Loihi simulation (``Loihi2SimCfg("fixed_pt")``).

The network is built by ``lava.lib.dl.netx.hdf5.Network`` from the file the netx writer wrote,
driven by a ``RingBuffer`` source holding every sample back to back, one period of
``T + depth + 1`` steps each (each synapse block delays by one step). netx's ``reset_interval``
zeroes each layer's currents and voltages at the first step of every period in that layer's
own phase, so each sample starts from rest.

That reset does not cover a recurrent block's loop. Layer k resets at period step k + 2: it
zeroes ``u`` and ``v`` and then adds that step's input, which holds, through the recurrent
synapse's one-step buffer (``a_buff``), the layer's own spikes of step k + 1 - spikes of the
previous sample's state, still running until the reset (with current memory it keeps firing
past the end of its input). So the run pauses after period step k + 1 of every sample and sets
that buffer to zero: the recurrent input at the reset step is then empty, as at the fast
engine's first step, and each sample's trains equal those of a run of that sample alone.

A netx file whose first layer is an ``input`` layer with neurons is refused: netx builds an
``Input`` block whose port reaches no neuron (those neurons are driven by their bias alone, set
on the built network), so there is nothing a source could feed.

Spikes are read by ``SpikeRecorder``, a small Lava process that writes what it receives into
a memory-mapped file: Lava's own sink returns its buffer through one message per element,
far slower than the run itself. Layer k's spike for input step t arrives at period step
``t + k + 1``; the returned trains are shifted back to input time, the frame the fast engine
and the float model use.
"""
from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from spikeport.errors import UnsupportedNodeError


class SpikeRecorder(AbstractProcess):
    """Writes the spikes it receives at every step into row ``time_step - 1`` of a uint8 file."""

    def __init__(self, *, shape: tuple[int, ...], path: str, steps: int) -> None:
        super().__init__(shape=shape, path=path, steps=steps)
        self.a_in = InPort(shape=shape)


@implements(proc=SpikeRecorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySpikeRecorderModel(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self._rows = None

    def run_spk(self) -> None:
        data = self.a_in.recv()
        if self._rows is None:
            p = self.proc_params
            self._rows = np.memmap(p["path"], dtype=np.uint8, mode="r+",
                                   shape=(p["steps"], int(np.prod(p["shape"]))))
        self._rows[self.time_step - 1] = (data.reshape(-1) != 0)


@dataclass
class LavaResult:
    spikes: dict[str, torch.Tensor]  # layer -> [T, N, *shape] uint8, input-time aligned (C, H, W order)
    steps: int                       # Lava time steps run in total
    run_s: float                     # wall time of the steps
    compile_s: float                 # building the processes and compiling


def _to_lava(x: np.ndarray) -> np.ndarray:
    """(C, H, W) -> Lava's (W, H, C); 1-d unchanged."""
    return x.transpose(2, 1, 0) if x.ndim == 3 else x


def _input_neurons_first(netx_file: str | Path) -> bool:
    """Whether netx builds an ``Input`` block (an input layer with a neuron group) first."""
    import h5py

    with h5py.File(netx_file, "r") as f:
        g = f["layer/0"]
        kind = g["type"][()]
        kind = kind.reshape(-1)[0] if np.ndim(kind) else kind
        kind = kind.decode("ascii") if isinstance(kind, bytes) else str(kind)
        return kind == "input" and "neuron" in g


def run_lava(netx_file: str | Path, inputs: torch.Tensor, layer_names: list[str], input_bits: int = 0,
             progress: bool = False) -> LavaResult:
    """Run ``inputs`` [N, T, *shape] through the netx network; per-layer spike trains back."""
    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer as Source

    if _input_neurons_first(netx_file):
        raise UnsupportedNodeError(f"netx file {netx_file}: layer 0 is an input layer with neurons; netx leaves "
                                   f"its input port unconnected, so input spikes cannot drive it in Lava")
    t_start = time.perf_counter()
    n, t = inputs.shape[:2]
    x = inputs.detach().cpu().numpy()
    x = (x != 0).astype(np.int32) if input_bits == 0 else np.clip(np.round(x), 0, 2**input_bits - 1).astype(np.int32)
    depth = len(layer_names)
    period = t + depth + 1
    # reset_offset=1: layer k resets at period step k + 2, the step its first input arrives
    net = netx.hdf5.Network(net_config=str(netx_file), input_message_bits=input_bits,
                            reset_interval=period, reset_offset=1)
    if len(net.layers) != depth:
        raise ValueError(f"netx built {len(net.layers)} layers from {netx_file}, expected {depth}")
    in_shape = tuple(net.inp.shape)
    data = np.zeros(in_shape + (n * period,), dtype=np.int32)
    for i in range(n):
        for k in range(t):
            frame = x[i, k].reshape(-1) if len(in_shape) == 1 else _to_lava(x[i, k])
            data[..., i * period + k] = frame
    source = Source(data=data)
    source.s_out.connect(net.inp)
    total = n * period
    with tempfile.TemporaryDirectory(prefix="spikeport-lava-") as tmp:
        files, recorders = [], []
        for k, layer in enumerate(net.layers):
            path = Path(tmp) / f"layer{k}.u8"
            np.zeros((total, int(np.prod(layer.out.shape))), dtype=np.uint8).tofile(path)
            rec = SpikeRecorder(shape=tuple(layer.out.shape), path=str(path), steps=total)
            layer.out.connect(rec.a_in)
            files.append(path)
            recorders.append(rec)
        # period step after which each recurrent block's buffer is cleared: k + 1 for layer k
        clear_at: dict[int, list] = {}
        for k, layer in enumerate(net.layers):
            if hasattr(layer, "synapse_rec"):
                clear_at.setdefault(k + 1, []).append(layer.synapse_rec.a_buff)
            if type(getattr(layer, "synapse", None)).__name__ == "DelayDense":
                # netx's periodic reset leaves the axonal delay buffer alone: the previous sample's
                # spikes still in flight would land in this one
                clear_at.setdefault(k, []).append(layer.synapse.a_buff)
        with warnings.catch_warnings():
            # Lava's model search imports every module beside SpikeRecorder's and warns on each
            warnings.filterwarnings("ignore", message="Cannot import module")
            source.create_runtime(run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        compile_s = time.perf_counter() - t_start
        t0 = time.perf_counter()
        try:
            if clear_at:
                for i in range(n):
                    done = 0
                    for step in sorted(clear_at):
                        if step > done:
                            source.run(condition=RunSteps(num_steps=step - done))
                        for var in clear_at[step]:
                            var.set(np.zeros(var.shape, dtype=np.int32))
                        done = step
                    source.run(condition=RunSteps(num_steps=period - done))
                    if progress and (i + 1) % 10 == 0:
                        print(f"  lava: {i + 1}/{n} samples", flush=True)
            else:
                source.run(condition=RunSteps(num_steps=total))
        finally:
            source.stop()
        run_s = time.perf_counter() - t0
        spikes = {}
        for k, (name, layer, path) in enumerate(zip(layer_names, net.layers, files)):
            rows = np.fromfile(path, dtype=np.uint8).reshape(n, period, *tuple(layer.out.shape))
            arr = np.moveaxis(rows[:, k + 1:k + 1 + t], 1, 0)  # [T, N, *lava shape]
            if arr.ndim == 5:  # (W, H, C) -> (C, H, W)
                arr = arr.transpose(0, 1, 4, 3, 2)
            spikes[name] = torch.from_numpy(np.ascontiguousarray(arr))
    return LavaResult(spikes, total, run_s, compile_s)
