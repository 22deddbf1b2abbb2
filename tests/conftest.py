"""Shared test setup: one torch thread per process, deterministic seeds."""
import os

os.environ.setdefault("TUNESMITH_CACHE", os.path.join(os.path.dirname(__file__), "..", "var", "test-cache"))

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
