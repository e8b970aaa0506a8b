"""Measured GPU baseline: the ANN twin on a CUDA GPU, energy read from NVML's counter.

NVML's ``nvmlDeviceGetTotalEnergyConsumption`` (millijoules since the driver loaded; Volta and
newer) is read before and after the twin runs at a fixed batch for at least ``min_seconds``.
The idle power, measured the same way over an idle window just before, times the run's
duration is subtracted: what remains is the energy the inferences themselves cost. Power
sampling (nvidia-smi) would see only part of the run on A100/H100 (Yang et al., SC24); the
energy counter integrates all of it.

The twin runs from ``runs/X/export/ann.onnx`` through onnxruntime's CUDA provider when it is
installed (onnxruntime-gpu), else as the torch twin built from the run's spec on CUDA (weights
do not change a dense network's energy). NVML and the runtimes are imported only when asked.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


class GpuUnavailable(Exception):
    """No measurement possible here (no CUDA device, no NVML, no energy counter); the message says why."""


@dataclass(frozen=True)
class GpuMeasurement:
    joules_per_inference: float
    device_name: str
    runtime: str
    batch: int
    inferences: int
    duration_s: float
    energy_j: float          # counter difference over the run
    idle_power_w: float      # measured over idle_s before the run
    idle_s: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def dynamic_joules_per_inference(energy_j: float, duration_s: float, idle_power_w: float, inferences: int) -> float:
    """(energy over the run - idle power x run time) / inferences."""
    if inferences <= 0 or duration_s <= 0:
        raise ValueError("need a positive number of inferences and a positive duration")
    return (energy_j - idle_power_w * duration_s) / inferences


def _nvml_handle(pynvml):
    """The NVML handle of the CUDA device the run uses (matched by PCI bus id when torch sees it)."""
    try:
        import torch
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(torch.cuda.current_device())
            bus = f"{p.pci_domain_id:08X}:{p.pci_bus_id:02X}:{p.pci_device_id:02X}.0"
            return pynvml.nvmlDeviceGetHandleByPciBusId(bus)
    except Exception:  # older torch without PCI ids, or NVML naming the bus differently
        pass
    index = int(os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or 0)
    return pynvml.nvmlDeviceGetHandleByIndex(index)


def random_feeds(sess, batch: int) -> tuple[dict[str, "np.ndarray"], int]:
    """Random float32 values for every input of an onnxruntime session (S-CMRL's twin takes the
    visual and the audio frames), a dynamic batch axis set to ``batch``, and the batch the graph
    runs (a fixed batch dimension keeps its own)."""
    import numpy as np

    rng = np.random.default_rng(0)
    feeds: dict[str, np.ndarray] = {}
    batch_run = batch
    for k, inp in enumerate(sess.get_inputs()):
        dims = [d if isinstance(d, int) and d > 0 else batch for d in inp.shape]
        if k == 0:
            batch_run = dims[0]
        feeds[inp.name] = rng.random(dims, dtype=np.float32)
    return feeds, batch_run


def _runner(run_dir: Path, batch: int) -> tuple[Callable[[], None], str, int]:
    """A function that runs one batch of the ANN twin on the GPU and waits for it, its name and
    the batch it runs (an ONNX file with a fixed batch dimension keeps its own)."""
    import numpy as np

    onnx_path = run_dir / "export" / "ann.onnx"
    try:
        import onnxruntime as ort
        if onnx_path.is_file() and "CUDAExecutionProvider" in ort.get_available_providers():
            sess = ort.InferenceSession(str(onnx_path), providers=["CUDAExecutionProvider"])
            feeds, batch_run = random_feeds(sess, batch)
            io = sess.io_binding()
            for name, x in feeds.items():
                io.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
            for out in sess.get_outputs():
                io.bind_output(out.name, "cuda")

            def run_ort() -> None:
                sess.run_with_iobinding(io)
            return run_ort, "onnxruntime-cuda", batch_run
    except ImportError:
        pass
    import torch
    if not torch.cuda.is_available():
        raise GpuUnavailable("no CUDA device visible to torch or onnxruntime")
    from spikeport.train.checkpoint import load_run_model
    from spikeport.train.models import build_ann_twin

    _, spec = load_run_model(run_dir)
    twin = build_ann_twin(spec).cuda().eval()
    if getattr(twin, "takes_pair", False):  # the audio-visual twin: one summed frame per modality
        x = tuple(torch.rand([batch, *twin.input_shapes[m]], device="cuda") for m in ("visual", "audio"))
    else:
        x = torch.rand([batch, *spec.input_shape], device="cuda")

    def run_torch() -> None:
        with torch.inference_mode():
            twin(x)
        torch.cuda.synchronize()
    return run_torch, "torch-cuda", batch


def measure_ann_energy(run_dir: str | Path, batch: int = 64, min_seconds: float = 5.0,
                       idle_seconds: float = 2.0) -> GpuMeasurement:
    """Joules per inference of the run's ANN twin on this machine's GPU, measured with NVML.

    Raises GpuUnavailable (with the reason) where no measurement is possible.
    """
    try:
        import pynvml  # the nvidia-ml-py package
    except ImportError:
        raise GpuUnavailable("NVML bindings not installed (pip install nvidia-ml-py)") from None
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        raise GpuUnavailable(f"NVML did not start ({exc}): no NVIDIA driver or GPU") from None
    try:
        run, runtime, batch_run = _runner(Path(run_dir), batch)
        handle = _nvml_handle(pynvml)
        name = pynvml.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else str(name)
        try:
            e0 = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except Exception as exc:
            raise GpuUnavailable(f"{name}: no energy counter ({exc}); needs Volta or newer") from None
        t0 = time.perf_counter()
        time.sleep(idle_seconds)
        idle_w = (pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) - e0) / 1e3 / (time.perf_counter() - t0)
        for _ in range(10):  # warm-up: kernels compiled, clocks up
            run()
        e1 = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        t1 = time.perf_counter()
        n = 0
        while time.perf_counter() - t1 < min_seconds:
            run()
            n += batch_run
        duration = time.perf_counter() - t1
        energy = (pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) - e1) / 1e3
        jpi = dynamic_joules_per_inference(energy, duration, idle_w, n)
        if jpi <= 0:
            raise GpuUnavailable(f"{name}: measured energy did not exceed idle power x time "
                                 f"({energy:.3f} J over {duration:.2f} s, idle {idle_w:.1f} W)")
        return GpuMeasurement(jpi, name, runtime, batch_run, n, duration, energy, idle_w, idle_seconds)
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
