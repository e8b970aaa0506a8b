"""What the Loihi twin (``deploy/loihi/fast_engine.py``) and the Speck engine
(``deploy/speck/fast_engine.py``) share: the chunk-and-thread driver and the compiled
event-driven kernels' plumbing.

Both engines run a network on chunks of samples, each chunk through all layers before the
next, the chunks spread over worker threads with every torch op single-threaded (small ops
on a few samples stay efficient that way, also when other processes share the cores).

Event-driven kernels. A layer whose input is a few percent of its input neurons is cheaper as
an event list: each event adds its kernel column to the neurons it reaches, and the neuron
update of the same step can emit the next layer's event list directly. torch has no op for
that (``index_add_`` pays a dispatch per index row, about 50 multiply-adds of a dense
convolution per added value), so the engines compile small loops with numba (a dependency
of tonic's librosa, so present wherever the project is installed). ``njit`` below falls back
to the plain Python function when numba is missing; ``KERNELS`` then says the compiled path
is unavailable and the engines keep their torch paths.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

import torch

try:  # compiled event-driven kernels; the engines fall back to their torch paths without numba
    import numba as _numba

    KERNELS = True
except ImportError:  # pragma: no cover - numba ships with tonic's librosa
    _numba = None
    KERNELS = False

F = TypeVar("F", bound=Callable)


def njit(fn: F) -> F:
    """``numba.njit`` with the GIL released (the worker threads run kernels at once) and the
    machine code cached next to the module (compiling takes seconds, once)."""
    if _numba is None:
        return fn
    return _numba.njit(nogil=True, cache=True)(fn)  # type: ignore[return-value]


T = TypeVar("T")


@njit
def _nonzero(x):  # pragma: no cover - compiled
    n = 0
    for i in range(x.shape[0]):
        n += x[i] != 0
    return n


def count_nonzero(x: torch.Tensor) -> int:
    """Nonzero entries of a CPU tensor, on the calling thread. ``torch.count_nonzero`` runs on torch's
    OpenMP threads, which spin and wait when other processes share the cores (measured 3-8 ms for the
    1.2 M entries of 20 samples there, against 0.8 ms on one thread, less compiled)."""
    if KERNELS and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        return int(_nonzero(x.detach().reshape(-1).contiguous().numpy()))
    return int(torch.count_nonzero(x))


def run_chunks(work: Callable[[int, int], T], n: int, batch_size: int, threads: int | None,
               parallel: bool = True) -> list[T]:
    """``work(i0, size)`` for the chunks ``[i0, i0 + size)`` of ``n`` samples, results in order.

    ``threads`` chunks at once (default: torch's thread count), each torch op single-threaded
    meanwhile; ``parallel=False`` runs one chunk at a time with torch's threads as they are
    (one CUDA stream keeps a GPU busy). ``size`` is ``batch_size`` or less: a few samples still
    give every worker a chunk."""
    workers = max(1, threads or torch.get_num_threads()) if parallel else 1
    batch_size = max(1, min(batch_size, -(-n // workers)))
    starts = list(range(0, n, batch_size))
    workers = min(workers, len(starts))
    prev = torch.get_num_threads()
    if parallel:
        torch.set_num_threads(1)  # parallel over chunks, not inside each small op
    try:
        if workers <= 1:
            results = [work(i, batch_size) for i in starts]
        else:
            with ThreadPoolExecutor(workers) as ex:
                results = list(ex.map(lambda i: work(i, batch_size), starts))
    finally:
        torch.set_num_threads(prev)
    return results
