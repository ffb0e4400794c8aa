"""`fada distill`: PeRFlow distillation of the teacher into a 6-step student on the lenient set B (paper §3)."""

from __future__ import annotations

from pathlib import Path

import torch

from fada.config import recipe_to_yaml, save_resolved
from fada.config.schema import DistillRecipe
from fada.errors import FadaError
from fada.training import TrainResult, train
from fada.training.loop import ClipTask


class DistillTask(ClipTask):
    """The shared loop's view of distillation: the student is trained and checkpointed; the teacher is frozen."""

    def __init__(self, student, teacher, dataset, settings):
        from fada.diffusion import sd15_alphas_cumprod

        frozen = {f"reference_net.{n}" for n in getattr(student, "frozen_reference_parameters", [])}
        super().__init__(student, dataset, [(n, p) for n, p in student.named_parameters() if n not in frozen])
        self.teacher, self.settings = teacher, settings
        self.alphas_cumprod = sd15_alphas_cumprod()

    def loss(self, model, batch, generator):
        from fada.training.distill import distill_loss

        return distill_loss(model, self.teacher, batch, generator, self.alphas_cumprod, self.settings)


def load_teacher(recipe: DistillRecipe, latent_channels: int, audio_feature_shape):
    """The teacher named by ``distill.teacher`` (checkpoint, run folder or exported model), frozen, in eval mode."""
    import dataclasses

    from fada.models.avatar import build_avatar_net
    from fada.stages.train_teacher import load_init

    if not recipe.distill.teacher:
        raise FadaError("distill.teacher: not set; point it at the teacher's run folder, checkpoint or export")
    teacher_cfg = dataclasses.replace(recipe.model, cfg=dataclasses.replace(recipe.model.cfg, mode="none"))
    teacher = build_avatar_net(teacher_cfg, student=False, latent_channels=latent_channels,
                               audio_feature_shape=audio_feature_shape)
    load_init(teacher, recipe.distill.teacher)
    teacher.requires_grad_(False)
    return teacher.eval()


def run(recipe: DistillRecipe, progress: bool = True, stop_after: int | None = None) -> TrainResult:
    from fada.models.audio import build_audio_frontend
    from fada.models.avatar import AvatarNet
    from fada.models.vae import build_vae
    from fada.stages.train_teacher import build_data
    from fada.training.distill import DistillSettings

    m, d = recipe.model, recipe.distill
    if d.variant == "fast" and d.inference_steps < d.num_windows:
        raise FadaError(f"distill.inference_steps: {d.inference_steps} is fewer than num_windows {d.num_windows}")
    torch.manual_seed(recipe.train.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    vae = build_vae(m.vae, device=device)
    frontend = build_audio_frontend(m.audio, device=device)
    teacher = load_teacher(recipe, vae.latent_channels, frontend.feature_shape).to(device)  # where accelerate trains
    dataset = build_data(recipe, frontend, vae, progress)
    student = AvatarNet.from_teacher(teacher, m.cfg.mode, n_tokens=m.cfg.n_tokens)
    student.requires_grad_(True)
    student.freeze_unused_()
    student.train()
    if recipe.train.gradient_checkpointing:
        student.enable_gradient_checkpointing()
    save_resolved(recipe, Path(recipe.train.output_dir))
    settings = DistillSettings.from_config(d, m.cfg.mode)
    task = DistillTask(student, teacher, dataset, settings)
    result = train(task, recipe.train, batch_size=recipe.data.batch_size, recipe_yaml=recipe_to_yaml(recipe),
                   progress=progress, stop_after=stop_after, extra_state={"kind": d.variant})
    if progress:
        print(f"distill ({d.variant}, cfg {m.cfg.mode}, mixed {d.mixed.mode}): step {result.step}, "
              f"checkpoint {result.last_checkpoint}")
    return result
