"""FadaPipeline (the Python API): plans and NFE, frame streaming, seeding, audio feature blocks, portraits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from fada.clips import AudioFeatures, gen_index
from fada.errors import FadaError
from fada.models.audio import MelFrontEnd, frames_for_duration
from fada.pipeline import FadaPipeline, prepare_portrait
from fada.utils.cache import last_demo_model, record_demo_model

from .stages.generate_helpers import SR, _isolated_cache, models, speech  # noqa: F401


@pytest.fixture(scope="module")
def pipes(models):
    return {k: FadaPipeline.from_pretrained(v) for k, v in models.items()}


def test_plans_and_nfe(pipes):
    t, b, f = pipes["teacher"].plan(), pipes["balanced"].plan(), pipes["fast"].plan()
    assert (t.mode, t.sampler, t.steps, t.passes, t.nfe_per_clip, t.cfg_audio, t.cfg_ref) == \
        ("teacher", "ddim", 25, 3, 75, 3.0, 2.5)  # tiny-teacher's model.cfg.guidance
    assert (b.mode, b.sampler, b.steps, b.num_windows, b.nfe_per_clip, b.cfg_ref) == \
        ("balanced", "perflow", 6, 4, 18, 1.0)  # tiny-balanced's model.cfg.guidance
    assert (f.mode, f.nfe_per_clip, f.told_scales, f.cfg_audio, f.cfg_ref) == ("fast", 6, True, 3.0, 1.0)
    assert pipes["teacher"].plan(cfg_audio=1.0, cfg_ref=1.0).nfe_per_clip == 25  # Eq. 9 collapses to one pass
    assert pipes["balanced"].plan(steps=8).nfe_per_clip == 24
    with pytest.raises(FadaError, match="choose one of teacher, balanced, fast"):
        pipes["fast"].plan("turbo")
    with pytest.raises(FadaError, match="--cfg-ref -1.0: must be a finite number >= 0"):
        pipes["fast"].plan(cfg_ref=-1.0)
    assert "NFE 75 per clip" in t.describe() and "3 passes per step batched" in t.describe()


def test_students_sample_at_their_exported_step_times(pipes, monkeypatch):
    pipe = pipes["balanced"]  # tiny-balanced: the paper's placement
    plan = pipe.plan(cfg_audio=1.0, cfg_ref=1.0)
    assert plan.extra_steps == "early" and "extra steps" not in plan.describe()
    seen, denoise = [], pipe.net.denoise

    def spy(z, t, *args, **kwargs):
        seen.append(float(torch.as_tensor(t).reshape(-1)[0]))
        return denoise(z, t, *args, **kwargs)

    monkeypatch.setattr(pipe.net, "denoise", spy)
    list(pipe.generate_frames(data.astronaut(), speech(0.2), cfg_audio=1.0, cfg_ref=1.0))
    assert seen == pytest.approx([1000.0, 875.0, 750.0, 625.0, 500.0, 250.0])  # one clip, one pass per step


def test_stream_is_seeded_and_exact(pipes):
    pipe = pipes["fast"]
    img = data.astronaut()
    wav = speech(0.7)
    s = pipe.generate_frames(img, wav, seed=1)
    assert (s.total_frames, s.clips, s.nfe_per_clip) == (17, 3, 6)  # 17 frames in clips of 8: last one padded
    chunks = list(s)
    assert [len(c) for c in chunks] == [8, 8, 1] and chunks[0].dtype == np.uint8
    a = np.concatenate(chunks)
    assert a.shape == (17, 32, 32, 3)
    assert np.array_equal(a, np.concatenate(list(pipe.generate_frames(img, wav, seed=1))))
    assert not np.array_equal(a, np.concatenate(list(pipe.generate_frames(img, wav, seed=2))))
    # (array, rate) audio is resampled; a different output rate keeps the count rule at that rate
    s = pipe.generate_frames(img, (speech(0.6, 8000), 8000), fps=10)
    assert s.total_frames == frames_for_duration(9600, SR, 10) == 6
    assert sum(len(c) for c in s) == 6


def test_gen_index_nearest():
    assert [gen_index(j, 25, 25) for j in range(5)] == [0, 1, 2, 3, 4]
    assert [gen_index(j, 50, 25) for j in range(6)] == [0, 0, 1, 1, 2, 2]
    assert [gen_index(j, 10, 25) for j in range(4)] == [1, 3, 6, 8]
    # never past the model frames the audio has
    for fps in (7, 24, 30, 60):
        n = frames_for_duration(16000 * 3 + 123, SR, fps)
        assert gen_index(n - 1, fps, 25) < frames_for_duration(16000 * 3 + 123, SR, 25) + 1


@pytest.mark.parametrize("fps", [25, 30])
def test_feature_blocks_equal_one_call(fps):
    fe = MelFrontEnd(SR, n_mels=16, window=2)
    wav = speech(7.3, seed=3)
    n = frames_for_duration(len(wav), SR, fps) + 2  # two frames past the audio: silence, as in one call
    want = fe.features(wav, n, fps)
    blocks = AudioFeatures(fe, wav, n, fps, block_seconds=1.0)
    got = torch.cat([blocks.rows(s, min(s + 8, n)) for s in range(0, n, 8)])
    assert blocks.blocks_computed > 3
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    pad = blocks.rows(n - 3, n + 5)  # past the end: the last frame repeated
    assert pad.shape[0] == 8 and torch.equal(pad[3:], want[-1:].expand(5, *want.shape[1:]))


def test_prepare_portrait_crops_the_face():
    a = data.astronaut()
    crop = prepare_portrait(a, 64)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    full = prepare_portrait(a, 64, crop=False)
    assert not np.array_equal(crop, full)
    with pytest.raises(FadaError, match="no face found.*--no-crop"):
        prepare_portrait(np.full((300, 200, 3), 90, np.uint8), 64)


def test_api_writes_mp4(pipes, tmp_path):
    from fada.data.media import video_info

    res = pipes["balanced"](data.astronaut(), speech(0.6), out=tmp_path / "a.mp4", progress=False)
    assert res.frames == 15 and res.clips == 2 and res.nfe_per_clip == 18 and res.seconds > 0
    assert video_info(tmp_path / "a.mp4").frames == 15


def test_demo_model_record(tmp_path):
    assert last_demo_model() is None
    record_demo_model(tmp_path / "fast")
    assert last_demo_model() == (tmp_path / "fast").resolve()


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_video_noise_prior_is_drawn_once_per_video(pipes, share):
    """model.noise_share = 1: every frame of every clip starts from the video's one shared noise frame."""
    import dataclasses

    src = pipes["fast"]
    spec = dataclasses.replace(src.spec, model=dataclasses.replace(src.spec.model, noise_share=share))
    pipe = FadaPipeline(src.net, src.codec, src.frontend, spec)
    seen = []
    real = pipe.denoise_clip

    def spy(plan, bank, rows, noise, cb, **kw):
        seen.append(noise.clone())
        return real(plan, bank, rows, noise, cb, **kw)

    pipe.denoise_clip = spy
    list(pipe.generate_frames(data.astronaut(), speech(0.7), seed=4))
    assert len(seen) == 3
    noise = torch.cat(seen, dim=2)  # (1, C, clips * F, h, w)
    same = torch.equal(noise, noise[:, :, :1].expand_as(noise))
    assert same == (share == 1.0)
    assert abs(float(noise.std()) - 1.0) < 0.1


@pytest.mark.parametrize("mode,nfe", [("teacher", 75), ("balanced", 18), ("fast", 6)])
def test_nfe_counted_from_the_denoiser_calls(pipes, mode, nfe):
    """Denoiser passes (batch rows through the denoising net) per clip, counted where they happen, not from the
    plan's arithmetic: 25 DDIM steps x 3 branches, 6 PeRFlow steps x 3, 6 x 1 (at cfg 6.5 / 2.0)."""
    import numpy as np

    pipe = pipes[mode]
    rows = []
    hook = pipe.net.denoising_net.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    try:
        F, fps = pipe.model_cfg.num_frames, pipe.model_cfg.fps
        audio = np.random.default_rng(0).standard_normal(int(2 * F / fps * 16000)).astype(np.float32) * 0.1
        frames = np.concatenate(list(pipe.generate_frames(np.full((32, 32, 3), 128, np.uint8), audio, crop=False,
                                                          mode=mode, cfg_audio=6.5, cfg_ref=2.0)))
    finally:
        hook.remove()
    clips = -(-len(frames) // F)
    assert clips == 2 and sum(rows) == nfe * clips, (rows, len(frames))
    assert pipe.plan(mode, cfg_audio=6.5, cfg_ref=2.0).nfe_per_clip == nfe
