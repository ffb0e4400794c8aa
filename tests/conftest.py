"""Shared test setup: deterministic, single-machine, no network."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# Tiny models gain nothing from intra-op threads, and on a shared 2-core machine spinning threads slow
# everything down many times over. Benchmarks, not tests, measure speed.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def umask():
    """The process umask set to 022 for a test (call the fixture's value to set another); restored after."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)
