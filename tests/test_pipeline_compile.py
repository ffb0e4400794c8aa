"""FadaPipeline.compile: torch.compile'd denoiser and decoder (inductor on the CPU here) against eager, and no new
graph after the warm-up clip (the last, shorter clip's decode is padded to the warm-up's shape)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from fada.pipeline import FadaPipeline

from .stages.generate_helpers import _isolated_cache, export_sd_model, speech  # noqa: F401


def test_compiled_pipeline_matches_eager_and_builds_no_graph_after_warm_up(tmp_path):
    from torch._dynamo.utils import counters

    from tests.fixtures import tiny_taesd

    model, taesd = export_sd_model(tmp_path), tiny_taesd(tmp_path / "taesd")
    audio = speech(0.75)  # 18 frames at 25 fps: clips of 8, 8 and 2 (the last decode padded to 8)
    eager = FadaPipeline.from_pretrained(model, decoder=f"taesd:{taesd}")
    want = np.concatenate(list(eager.generate_frames(data.astronaut(), audio, seed=2)))
    pipe = FadaPipeline.from_pretrained(model, decoder=f"taesd:{taesd}").compile()
    assert pipe.compiled == "default"  # CPU: inductor without CUDA graphs
    pipe.warm_up(data.astronaut())
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0
    got = np.concatenate(list(pipe.generate_frames(data.astronaut(), audio, seed=2)))
    assert counters["stats"]["unique_graphs"] == graphs  # nothing compiled inside the timed run
    assert got.shape == want.shape == (18, 32, 32, 3) and want.std() > 1
    diff = np.abs(got.astype(int) - want)
    # tolerance: fused kernels reorder float32 sums (0 levels on this CPU; other SIMD widths round elsewhere)
    assert diff.max() <= 2 and diff.mean() < 0.1, (diff.max(), diff.mean())
    assert torch.compiler.is_compiling() is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graphs_match_eager_cuda(tmp_path):
    """'reduce-overhead' (CUDA graphs) on a GPU: each call a new graph step, outputs copied out; frames within
    two uint8 levels of eager ones and nothing compiled after the warm-up."""
    from torch._dynamo.utils import counters

    from tests.fixtures import tiny_taesd

    model, taesd = export_sd_model(tmp_path), tiny_taesd(tmp_path / "taesd")
    audio = speech(0.75)
    eager = FadaPipeline.from_pretrained(model, device="cuda", decoder=f"taesd:{taesd}")
    want = np.concatenate(list(eager.generate_frames(data.astronaut(), audio, seed=2)))
    pipe = FadaPipeline.from_pretrained(model, device="cuda", decoder=f"taesd:{taesd}").compile()
    assert pipe.compiled == "reduce-overhead"
    pipe.warm_up(data.astronaut())
    graphs = counters["stats"]["unique_graphs"]
    got = np.concatenate(list(pipe.generate_frames(data.astronaut(), audio, seed=2)))
    assert counters["stats"]["unique_graphs"] == graphs
    diff = np.abs(got.astype(int) - want)
    assert diff.max() <= 2 and diff.mean() < 0.1, (diff.max(), diff.mean())
