"""Shared test fixtures. The tests are not a package (lava installs a top-level `tests`)."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_dir() -> Path:
    return REPO


@pytest.fixture
def shared_dir() -> Path:
    """The shared folder beside the checkout (benchmarks' data; tests must not need it)."""
    return REPO.parent / "shared"


@pytest.fixture
def real_nmnist_sample() -> Path:
    """One real N-MNIST recording kept in the repository (tonic's test data, GPL-3.0: 4,325 events)."""
    return REPO / "tests" / "data" / "nmnist_sample.bin"


@pytest.fixture
def fit_losses():
    """Train ``net`` on one fixed batch with the project's loss for ``steps`` AdamW steps
    (lr 5e-3, clip 1, as the training loop does) and return the loss after each step."""
    import torch

    from spikeport.train.losses import model_loss

    def run(net, x, y, steps: int) -> list[float]:
        opt = torch.optim.AdamW(net.parameters(), lr=5e-3)
        losses = []
        for _ in range(steps):
            loss = model_loss(net.spec, net(x), y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
        return losses

    return run
