"""Decoding off the critical path (fada.engine): order, back-pressure, errors, real overlap, and the overlapped
pipeline writing exactly the frames of the sequential one."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from skimage import data

from fada.engine import DecodeWorker, InlineDecoder
from fada.pipeline import FadaPipeline

from .stages.generate_helpers import _isolated_cache, models, speech  # noqa: F401


def _frames(latents, order=None):
    out = (latents.reshape(latents.shape[0], -1)[:, :1].numpy() * np.ones((1, 4))).astype(np.uint8)
    return out if order is None else out[order]


def test_worker_keeps_order_and_passes_arguments():
    got = []
    w = DecodeWorker(_frames, got.append, depth=2)
    for i in range(6):
        w.submit(torch.full((2, 3), float(i)), None if i % 2 else np.array([0, 0, 1]))
    w.close()
    assert [int(g[0, 0]) for g in got] == [0, 1, 2, 3, 4, 5]
    assert [len(g) for g in got] == [3, 2, 3, 2, 3, 2]


def test_decode_runs_beside_the_caller():
    """The first clip's decode waits until the caller has moved on to the next clip: only a worker can finish."""
    next_clip_started, got = threading.Event(), []

    def decode(latents):
        if int(latents[0, 0]) == 0:
            assert next_clip_started.wait(timeout=20), "the decode did not overlap the next clip"
        return _frames(latents)

    w = DecodeWorker(decode, got.append)
    w.submit(torch.zeros(1, 1))
    next_clip_started.set()  # "denoising" clip 1 while clip 0 decodes
    w.submit(torch.ones(1, 1))
    w.close()
    assert len(got) == 2


def test_bounded_queue_holds_the_caller_back():
    release, entered = threading.Event(), threading.Event()

    def slow_sink(frames):
        entered.set()
        assert release.wait(timeout=20)

    w = DecodeWorker(_frames, slow_sink, depth=1)
    w.submit(torch.zeros(1, 1))
    assert entered.wait(timeout=20)       # clip 0 is in the sink
    w.submit(torch.zeros(1, 1))           # clip 1 waits in the queue (depth 1)
    done = threading.Event()
    t = threading.Thread(target=lambda: (w.submit(torch.zeros(1, 1)), done.set()))
    t.start()
    assert not done.wait(timeout=0.5)     # clip 2 blocks: the queue is full
    release.set()
    t.join(timeout=20)
    assert done.is_set()
    w.close()


def test_worker_errors_reach_the_caller():
    def bad(latents):
        raise ValueError("decoder broke")

    w = DecodeWorker(bad, lambda f: None)
    w.submit(torch.zeros(1, 1))
    with pytest.raises(ValueError, match="decoder broke"):
        w.close()


def test_inline_decoder_is_the_same_calls():
    got = []
    d = InlineDecoder(_frames, got.append)
    d.submit(torch.full((2, 3), 7.0), np.array([1, 1, 0]))
    d.close()
    assert got[0].shape == (3, 4) and int(got[0][0, 0]) == 7


@pytest.fixture(scope="module")
def pipes(models):
    return {k: FadaPipeline.from_pretrained(v) for k, v in models.items()}


@pytest.mark.parametrize("mode,fps", [("fast", None), ("teacher", None), ("fast", 40), ("fast", 10)])
def test_overlapped_frames_equal_sequential(pipes, mode, fps):
    pipe = pipes[mode]
    image, audio = data.astronaut(), speech(0.7)
    steps = 5 if mode == "teacher" else None  # the teacher's 25 x 3 passes add nothing to what overlap changes
    runs = {}
    for overlap in (False, True):
        got = []
        s = pipe.generate_frames(image, audio, mode=mode, steps=steps, seed=3, fps=fps, overlap=overlap)
        s.write_to(got.append)
        runs[overlap] = (np.concatenate(got), s.frames_done, s.total_frames)
        it = np.concatenate(list(pipe.generate_frames(image, audio, mode=mode, steps=steps, seed=3, fps=fps,
                                                      overlap=overlap)))
        assert np.array_equal(it, runs[overlap][0])
    assert runs[False][1] == runs[False][2] == len(runs[False][0])
    assert np.array_equal(runs[False][0], runs[True][0])  # bit-equal
    assert runs[True][0].std() > 1  # not a blank video


def test_overlapped_mp4_equals_sequential(pipes, tmp_path):
    pipe, image, audio = pipes["fast"], data.astronaut(), speech(0.7)
    a = pipe(image, audio, seed=1, out=tmp_path / "seq.mp4", overlap=False, progress=False)
    b = pipe(image, audio, seed=1, out=tmp_path / "ovl.mp4", overlap=True, progress=False)
    assert a.frames == b.frames > 0
    assert (tmp_path / "seq.mp4").read_bytes() == (tmp_path / "ovl.mp4").read_bytes()


def test_overlap_by_default_on_an_accelerator_only(pipes):
    """On a CPU the denoiser's threads use every core: a decode worker beside them only competes (2x slower)."""
    pipe, image, audio = pipes["fast"], data.astronaut(), speech(0.3)
    assert pipe.generate_frames(image, audio).overlap is False
    assert pipe.generate_frames(image, audio, overlap=True).overlap is True


def test_a_stream_closed_early_stops_its_worker(pipes):
    s = pipes["fast"].generate_frames(data.astronaut(), speech(1.5), seed=0, overlap=True)
    next(iter(s))
    s.close()
    assert not [t for t in threading.enumerate() if t.name == "fada-decode" and t.is_alive()]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_overlap_on_a_cuda_side_stream_equals_sequential_cuda(models):
    """On a GPU the worker decodes on its own stream after an event: the frames equal the in-line path's."""
    pipe = FadaPipeline.from_pretrained(models["fast"], device="cuda")
    image, audio = data.astronaut(), speech(0.7)
    runs = [np.concatenate(list(pipe.generate_frames(image, audio, seed=3, overlap=o))) for o in (False, True)]
    assert np.array_equal(runs[0], runs[1]) and runs[0].std() > 1
