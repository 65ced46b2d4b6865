"""Shared fixtures."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny models: they run faster on one thread, and far faster
    on a machine shared with other jobs (measured: 4 training steps 0.65 s on one thread, 39 s on two
    with the cores oversubscribed; a tiny-pipeline sample 0.04 s against 6.6 s). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
