"""Validation samples during teacher training: a short generated clip every ``train.validate_every`` steps.

The clip is generated for one fixed training window (its reference frame, motion frames and audio, seeded noise)
with the teacher's sampler (DDIM, multi-CFG at the paper's scales) and written as RUN/validation/step-XXXXXXX.png:
the generated frames above the ground-truth frames. Its latent MSE to the ground truth is logged as ``val/mse``,
so a run that stops learning shows it in metrics.jsonl as well as in the pictures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fada.diffusion import TEACHER_GUIDANCE, Guidance, guided, sample_ddim, video_noise
from fada.utils.io import write_bytes


class TeacherValidation:
    def __init__(self, dataset, codec, steps: int = 10, guidance: Guidance = TEACHER_GUIDANCE, seed: int = 0,
                 scale: int = 4, noise_share: float = 0.0):
        from fada.data.dataset import collate

        self.batch = collate([dataset[(0, 0)]])  # the first window of the first clip, always the same
        self.codec, self.steps, self.guidance, self.seed, self.scale = codec, int(steps), guidance, seed, scale
        self.noise_share = float(noise_share)

    @torch.no_grad()
    def __call__(self, model, step: int, run_dir: Path) -> dict:
        import cv2

        from fada.models.vae import tensor_to_frames

        was_training = model.training
        model.eval()
        p = next(model.parameters())
        b = {k: v.to(device=p.device, dtype=p.dtype) for k, v in self.batch.items()}
        motion = b["motion"] if b["motion"].shape[1] > 0 else None
        fn = model.model_fn(model.encode_bank(b["ref"], motion), b["audio"])
        noise = video_noise(b["x0"].shape, torch.Generator().manual_seed(self.seed), self.noise_share)
        noise = noise.to(p.device, p.dtype)
        z = sample_ddim(guided(fn, self.guidance), noise, self.steps, model.schedule)
        mse = float(torch.mean((z.float() - b["x0"].float()) ** 2))
        rows = [np.concatenate(list(tensor_to_frames(self.codec.decode_video(x.permute(0, 2, 1, 3, 4))[0])), 1)
                for x in (z, b["x0"])]
        image = np.concatenate(rows, 0)
        image = cv2.resize(image, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_NEAREST)
        ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if ok:
            write_bytes(Path(run_dir) / "validation" / f"step-{step:07d}.png", png.tobytes())
        model.train(was_training)
        return {"mse": mse}
