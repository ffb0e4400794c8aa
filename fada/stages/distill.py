"""`fada distill`: PeRFlow distillation of the teacher into a 6-step student on the lenient set B (paper §3)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from fada.config import recipe_to_yaml, require_inputs, save_resolved
from fada.config.schema import DistillRecipe
from fada.errors import FadaError
from fada.training import TrainResult, train
from fada.training.loop import ClipTask, process_state


class DistillTask(ClipTask):
    """The shared loop's view of distillation: the student is trained and checkpointed; the teacher is frozen."""

    def __init__(self, student, teacher, dataset, settings, trainable=("all",)):
        from fada.training.trainable import select_trainable

        frozen = {f"reference_net.{n}" for n in getattr(student, "frozen_reference_parameters", [])}
        super().__init__(student, dataset, select_trainable(student, list(trainable), exclude=frozen))
        self.teacher, self.settings = teacher, settings
        self.schedule = teacher.schedule  # the student learns in its teacher's parametrisation

    def loss(self, model, batch, generator):
        from fada.training.distill import distill_loss

        return distill_loss(model, self.teacher, batch, generator, self.schedule, self.settings)


def load_teacher(recipe: DistillRecipe, latent_channels: int, audio_feature_shape):
    """The teacher named by ``distill.teacher`` (exported model, checkpoint or run folder), frozen, in eval mode.
    Built from its own configs when it has them (no SD1.5 folder read, each net loaded once)."""
    from fada.models.avatar import build_avatar_net
    from fada.stages.train_teacher import load_avatar, load_init

    require_inputs(recipe, ["distill.teacher"])
    teacher = load_avatar(recipe.distill.teacher)
    if teacher is None:  # a checkpoint without net_config.json: rebuild from the recipe's model section
        teacher_cfg = dataclasses.replace(recipe.model, cfg=dataclasses.replace(recipe.model.cfg, mode="none"))
        teacher = build_avatar_net(teacher_cfg, student=False, latent_channels=latent_channels,
                                   audio_feature_shape=audio_feature_shape)
        load_init(teacher, recipe.distill.teacher)
    if teacher.student:
        raise FadaError(f"distill.teacher: {recipe.distill.teacher} is a student model; distil from a teacher")
    if teacher.latent_channels != latent_channels or tuple(teacher.audio_feature_shape) != tuple(audio_feature_shape):
        raise FadaError(f"distill.teacher: {recipe.distill.teacher} takes {teacher.latent_channels} latent channels "
                        f"and audio features {tuple(teacher.audio_feature_shape)}; the recipe's codec and audio "
                        f"give {latent_channels} and {tuple(audio_feature_shape)}")
    teacher.requires_grad_(False)
    return teacher.eval()


def with_teacher_models(recipe: DistillRecipe) -> DistillRecipe:
    """The recipe with the codec and audio model the teacher was trained with, read from the teacher itself (an
    exported folder's spec, or a checkpoint's recipe.yaml): the data must be cached with those, and the student
    copies the teacher's audio projection. When the teacher carries its net configs (exports, and checkpoints
    with net_config.json) model.unet.pretrained is not read: no SD1.5 folder is needed."""
    from fada.export import SPEC_NAME, read_spec
    from fada.stages.export import read_checkpoint_meta, resolve_checkpoint

    require_inputs(recipe, ["distill.teacher"])
    root = Path(recipe.distill.teacher)
    if (root / SPEC_NAME).is_file():
        spec = read_spec(root)
        if spec.kind != "teacher":
            raise FadaError(f"distill.teacher: {root} is a {spec.kind} model; distil from a teacher")
        model, own_configs = spec.model, True
    else:
        ckpt = resolve_checkpoint(root)
        meta = read_checkpoint_meta(ckpt)
        if meta["kind"] != "teacher":
            raise FadaError(f"distill.teacher: {ckpt} is a {meta['kind']} checkpoint; distil from a teacher")
        model, own_configs = meta["model"], (ckpt / "net_config.json").is_file()
    unet = dataclasses.replace(recipe.model.unet, pretrained=None) if own_configs else recipe.model.unet
    # the student learns in the teacher's parametrisation: its schedule is the teacher's, whatever the recipe says
    m = dataclasses.replace(recipe.model, vae=model.vae, audio=model.audio, unet=unet, schedule=model.schedule,
                            conditions=model.conditions, resolution=model.resolution, fps=model.fps,
                            num_frames=model.num_frames, motion_frames=model.motion_frames)
    return dataclasses.replace(recipe, model=m)


def run(recipe: DistillRecipe, progress: bool = True, stop_after: int | None = None) -> TrainResult:
    from fada.models.audio import build_audio_frontend
    from fada.models.avatar import AvatarNet
    from fada.models.vae import build_vae
    from fada.stages.train_teacher import build_data
    from fada.training.distill import DistillSettings
    from fada.training.loop import weight_dtype
    from fada.training.teacher import mouth_weight_map
    from fada.training.trainable import add_lora

    require_inputs(recipe)  # every missing input at once, before any model is built
    d = recipe.distill
    torch.manual_seed(recipe.train.seed)
    device = process_state().device  # this process's own GPU under torchrun / accelerate launch
    recipe = with_teacher_models(recipe)
    m = recipe.model
    vae = build_vae(m.vae, device=device)
    frontend = build_audio_frontend(m.audio, device=device)
    teacher = load_teacher(recipe, vae.latent_channels, frontend.feature_shape).to(device)  # where accelerate trains
    dataset = build_data(recipe, frontend, vae, progress)
    del vae, frontend  # the clips are cached: neither is needed while training
    settings = DistillSettings.from_config(d, m.cfg.mode)
    settings.pixel_weight = mouth_weight_map(dataset.store.latent_shape, d.mouth_box, d.mouth_weight)
    student = AvatarNet.from_teacher(teacher, m.cfg.mode, n_tokens=m.cfg.n_tokens, cfg_norm=m.cfg.normalize,
                                     precond_windows=0 if d.variant == "tcd" else settings.num_windows)
    teacher.to(dtype=weight_dtype(recipe.train))  # frozen: the training dtype (train.frozen_dtype)
    if "lora" in d.trainable:
        add_lora(student, d.lora_rank, d.lora_alpha)
    student.requires_grad_(True)
    student.freeze_unused_()
    student.train()
    if recipe.train.gradient_checkpointing:
        student.enable_gradient_checkpointing()
    save_resolved(recipe, Path(recipe.train.output_dir))
    task = DistillTask(student, teacher, dataset, settings, d.trainable)
    result = train(task, recipe.train, batch_size=recipe.data.batch_size, recipe_yaml=recipe_to_yaml(recipe),
                   progress=progress, stop_after=stop_after, num_workers=recipe.data.num_workers,
                   extra_state={"kind": d.variant})
    if progress and process_state().is_main_process:
        n, total = result.trained_parameters, result.total_parameters
        print(f"distill: trained {n / 1e6:.1f}M of {total / 1e6:.1f}M parameters ({', '.join(d.trainable)})")
        print(f"distill ({d.variant}, cfg {m.cfg.mode}, mixed {d.mixed.mode}): step {result.step}, "
              f"checkpoint {result.last_checkpoint}")
    return result
