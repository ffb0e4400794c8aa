"""What the overfit tests share: train a tiny teacher on two clips and distil a Balanced student from it (through
the stages), and score their redraws of the training clips."""

from __future__ import annotations

import numpy as np
import torch

from fada.config import load_recipe
from tests.fixtures import make_manifest

# the tiny recipes' net, at the demo's 32x32, on two short clips
OVERFIT = ["data.batch_size=2", "train.log_every=50", "train.validate_every=0", "train.lr_warmup_steps=10",
           "data.num_workers=0"]
TEACHER_STEPS, STUDENT_STEPS = 250, 60
V_SCHEDULE = ["model.schedule.prediction_type=v_prediction", "model.schedule.timestep_spacing=trailing",
              "model.schedule.beta_schedule=linear", "model.schedule.rescale_betas_zero_snr=true",
              "model.schedule.set_alpha_to_one=true"]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def train_pair(root, schedule: list[str]):
    from fada.stages.distill import run as distill
    from fada.stages.export import run as export
    from fada.stages.train_teacher import run as train_teacher

    # the mouth, driven by the audio, is the clips' only motion: random head sway and blinks are in no input, so no
    # model could redraw them pixel for pixel (with them, a still copy of the first frame already scores ~26 dB)
    manifest = make_manifest(root / "curated", n_clips=2, seconds=1.2, size=32, seed=3, head_motion=False)
    common = [f"data.manifest={manifest}", f"data.cache_dir={root / 'cache'}", *OVERFIT]
    torch.manual_seed(0)
    train_teacher(load_recipe("tiny-teacher", common + schedule + [
        f"train.output_dir={root / 't'}", f"train.max_steps={TEACHER_STEPS}",
        f"train.checkpoint_every={TEACHER_STEPS}"], stage="teacher"), progress=False)
    distill(load_recipe("tiny-balanced", common + [
        f"distill.teacher={root / 't'}", f"train.output_dir={root / 'b'}", f"train.max_steps={STUDENT_STEPS}",
        f"train.checkpoint_every={STUDENT_STEPS}"], stage="distill"), progress=False)
    return manifest, export(root / "t", root / "teacher", dtype="fp32"), export(root / "b", root / "balanced",
                                                                            dtype="fp32")


def training_clips(manifest, pipe) -> list[dict]:
    """The clips as training saw them: the cached latents decoded (the pixel codec is exact), and their audio."""
    from fada.data.dataset import ClipStore, read_manifest
    from fada.data.media import read_audio
    from fada.models.vae import tensor_to_frames

    rows = read_manifest(manifest)
    store = ClipStore(rows, pipe.codec, pipe.frontend, pipe.resolution, pipe.model_cfg.fps,
                      manifest.parent.parent / "cache", progress=False)
    return [{"frames": tensor_to_frames(pipe.codec.decode(store.latents(i))),
             "audio": read_audio(row["wav"], pipe.frontend.sample_rate)} for i, row in enumerate(store.rows)]


def redraw(pipe, clip, portrait, **kw) -> np.ndarray:
    return np.concatenate(list(pipe.generate_frames(portrait, clip["audio"], crop=False, seed=0, **kw)))


def teacher_scores(teacher_dir, manifest) -> tuple[list[float], list[float]]:
    """PSNR of the unguided 25-step redraw of each clip from its own first frame, and from the other clip's."""
    from fada.pipeline import FadaPipeline

    pipe = FadaPipeline.from_pretrained(teacher_dir)
    clips = training_clips(manifest, pipe)
    scores, swapped = [], []
    for i, c in enumerate(clips):
        out = redraw(pipe, c, c["frames"][0], mode="teacher", steps=25, cfg_audio=1.0, cfg_ref=1.0)
        n = min(len(out), len(c["frames"]))
        scores.append(psnr(out[:n], c["frames"][:n]))
        other = clips[1 - i]["frames"][0]  # the other identity's portrait, the same audio
        out2 = redraw(pipe, c, other, mode="teacher", steps=25, cfg_audio=1.0, cfg_ref=1.0)
        swapped.append(psnr(out2[:n], c["frames"][:n]))
    return scores, swapped


def student_scores(student_dir, manifest) -> list[float]:
    from fada.pipeline import FadaPipeline

    pipe = FadaPipeline.from_pretrained(student_dir)
    assert pipe.plan("balanced", cfg_audio=1.0, cfg_ref=1.0).steps == 6
    scores = []
    for c in training_clips(manifest, pipe):
        out = redraw(pipe, c, c["frames"][0], mode="balanced", cfg_audio=1.0, cfg_ref=1.0)
        n = min(len(out), len(c["frames"]))
        scores.append(psnr(out[:n], c["frames"][:n]))
    return scores


