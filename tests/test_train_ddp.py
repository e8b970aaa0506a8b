"""DistributedDataParallel through torchrun on 2 CPU processes (gloo) matches one process with the
same global batch."""
from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import torch

from spikeport.train.loop import fit
from spikeport.train.models import build_model

# Both runs build the same model and data from these lines (the worker runs them under torchrun).
SETUP = textwrap.dedent("""
    import torch
    from spikeport.train.config import TrainConfig
    from spikeport.train.models import build_model, default_spec
    spec = default_spec("baseline", "shd-embedded", chip_native=True)
    spec = spec.replace(timesteps=5)
    g = torch.Generator().manual_seed(0)
    protos = (torch.rand(spec.num_classes, 700, generator=g) < 0.3).float()
    y = torch.arange(32) % spec.num_classes
    x = (torch.rand(32, 5, 700, generator=g) < protos[y].unsqueeze(1)).float()
    cfg = TrainConfig(epochs=2, batch_size=8, lr=5e-3, seed=1, progress=False)
    torch.manual_seed(0)
    model = build_model(spec)
""")

WORKER = SETUP + textwrap.dedent("""
    import sys
    from spikeport.train import distributed
    from spikeport.train.loop import fit
    ctx = distributed.init_from_env("cpu")
    assert ctx.world_size == 2 and torch.distributed.get_backend() == "gloo"
    fit(model, spec, [(x, y)], [], cfg, ctx=ctx)
    if ctx.is_main:
        torch.save(model.state_dict(), sys.argv[1])
    distributed.shutdown(ctx)
""")


def test_ddp_two_cpu_processes_match_single_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "ddp.pt"
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
         "--master_addr=127.0.0.1", f"--master_port={port}", str(script), str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp_state = torch.load(out, weights_only=True)

    scope: dict = {}
    exec(SETUP, scope)
    single = scope["model"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun worker (OMP_NUM_THREADS=1): same summation order
    try:
        fit(single, scope["spec"], [(scope["x"], scope["y"])], [], scope["cfg"])
    finally:
        torch.set_num_threads(threads)
    for k, v in single.state_dict().items():
        assert torch.allclose(ddp_state[k], v, atol=1e-5, rtol=1e-4), k
    # and training did change the weights (8 steps), so the comparison is not trivial
    torch.manual_seed(0)
    init = build_model(scope["spec"]).state_dict()
    moved = max((single.state_dict()[k] - init[k]).abs().max().item() for k in init)
    assert moved > 1e-3
