"""The shipped full recipes end to end at SD1.5's topology with small widths: an SD1.5-layout folder and a
wav2vec2 CTC folder (fada.standins), teacher stage 1 and 2, export, Balanced and Fast distillation from the export
with the SD1.5 and wav2vec2 folders gone, exports that move between machines, and generation in every mode."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from fada.config import load_recipe
from fada.standins import SMALL_SD_WIDTHS, write_sd15, write_wav2vec2
from tests.fixtures import make_manifest


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    sd = write_sd15(root / "sd15", widths=SMALL_SD_WIDTHS, cross_attention_dim=64)
    w2v = write_wav2vec2(root / "wav2vec2", small=True)
    manifest = make_manifest(root / "curated", n_clips=2, seconds=0.8, size=64)
    return root, sd, w2v, manifest


SMALL = ["model.resolution=64", "model.unet.cross_attention_dim=64", "model.audio.hidden_dim=64",
         "model.audio.n_tokens=4", "model.unet.temporal_heads=2", "data.batch_size=1", "train.max_steps=2",
         "train.checkpoint_every=2", "train.log_every=1", "train.lr_warmup_steps=0", "data.num_workers=1"]


def test_full_recipes_at_sd15_topology(world, tmp_path):
    from fada.pipeline import FadaPipeline
    from fada.stages.distill import run as distill
    from fada.stages.export import run as export
    from fada.stages.train_teacher import run as train_teacher

    root, sd, w2v, manifest = world
    paths = [f"model.vae.path={sd}", f"model.unet.pretrained={sd}", f"model.audio.path={w2v}",
             f"data.manifest={manifest}"]
    s1 = load_recipe("teacher", SMALL + paths + [
        "teacher.stage=1", "model.num_frames=1", "train.optimizer=adafactor", "train.ema_decay=0",
        f"train.output_dir={tmp_path / 's1'}", "train.validate_every=0"], stage="teacher")
    train_teacher(s1, progress=False)
    s2 = load_recipe("teacher", SMALL + paths + [
        "model.num_frames=2", f"teacher.init_from={tmp_path / 's1'}", f"train.output_dir={tmp_path / 's2'}",
        "train.validate_every=2"], stage="teacher")
    train_teacher(s2, progress=False)
    assert (tmp_path / "s2" / "samples").is_dir() or any((tmp_path / "s2").rglob("*.png"))
    ck = next((tmp_path / "s2").glob("step-*"))
    net_cfg = json.loads((ck / "net_config.json").read_text())
    unet = net_cfg["parts"]["denoising_net"]["unet"]
    assert unet["down_block_types"][-1] == "DownBlock2D" and unet["layers_per_block"] == 2
    assert unet["attention_head_dim"] == 8 and len(unet["block_out_channels"]) == 4
    teacher_dir = export(tmp_path / "s2", tmp_path / "teacher", dtype="fp32")
    assert (teacher_dir / "audio" / "model.safetensors").is_file() and (teacher_dir / "vae").is_dir()

    # the SD1.5 and wav2vec2 folders are gone: distillation and generation read only the exported teacher
    shutil.move(str(sd), str(root / "sd15-away"))
    shutil.move(str(w2v), str(root / "w2v-away"))
    moved = tmp_path / "elsewhere" / "teacher"
    shutil.copytree(teacher_dir, moved)
    shutil.rmtree(teacher_dir)
    try:
        students = {}
        for name, extra in (("balanced", []), ("fast", ["distill.trainable=[lora,audio,cfg]", "distill.lora_rank=4",
                                                        "train.optimizer=adafactor"])):
            r = load_recipe(name, SMALL + [f"data.manifest={manifest}", "model.num_frames=2",
                                           f"distill.teacher={moved}", f"train.output_dir={tmp_path / name}",
                                           *extra], stage="distill")
            distill(r, progress=False)
            students[name] = export(tmp_path / name, tmp_path / f"{name}-model", dtype="fp32")
        portrait = np.full((64, 64, 3), 128, np.uint8)
        audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
        for folder, mode in ((moved, "teacher"), (students["balanced"], "balanced"), (students["fast"], "fast")):
            pipe = FadaPipeline.from_pretrained(folder)
            assert pipe.spec.model.audio.path.startswith(str(folder))  # its own copy of wav2vec2
            frames = np.concatenate(list(pipe.generate_frames(portrait, audio, crop=False, seed=0, mode=mode,
                                                              steps=2 if mode == "teacher" else None)))
            assert frames.shape[1:] == (64, 64, 3) and len(frames) >= 2 and np.isfinite(frames).all()
    finally:
        shutil.move(str(root / "sd15-away"), str(sd))
        shutil.move(str(root / "w2v-away"), str(w2v))
