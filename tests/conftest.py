"""Shared test fixtures: tiny, fast channel configs."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def tiny_channel_kwargs() -> dict:
    """A small grid that keeps Sionna generation in the millisecond range."""
    return {
        "num_samples": 10,
        "num_subcarriers": 6,
        "bs_rows": 1,
        "bs_cols": 2,
        "history_slots": 4,
        "future_slots": 2,
        "batch_size": 4,
    }


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module's runs, as in worker processes: the same kernels, the same
    sums (numbers compared across runtimes depend on the thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
