"""`fada train-teacher`: the dual-UNet teacher on the strict set A (paper §3.1, Eq. 1)."""

from __future__ import annotations

from pathlib import Path

import torch

from fada.config import recipe_to_yaml, require_inputs, save_resolved
from fada.config.schema import TeacherRecipe
from fada.errors import FadaError
from fada.training import TrainResult, train
from fada.training.loop import ClipTask, process_state


class TeacherTask(ClipTask):
    """What the shared loop needs: model, trainable parameters, data, and the Eq. 1 loss."""

    def __init__(self, net, dataset, stage, dropout, use_audio: bool, timesteps=None, pixel_weight=None,
                 motion_augment=None):
        from fada.training.teacher import TimestepSampling, teacher_trainable

        super().__init__(net, dataset, teacher_trainable(net, stage))
        self.stage, self.dropout, self.use_audio = stage, dropout, use_audio
        self.timesteps = timesteps or TimestepSampling()
        self.pixel_weight = pixel_weight
        self.motion_augment = motion_augment
        self.schedule = net.schedule  # the parametrisation the net is trained in (model.schedule)

    def loss(self, model, batch, generator):
        from fada.training.teacher import teacher_loss

        return teacher_loss(model, batch, generator, self.schedule, self.dropout, self.use_audio,
                            self.timesteps, self.pixel_weight, self.motion_augment)


def build_data(recipe, frontend, vae, progress: bool = True):
    """Curated clips of ``data.manifest`` → a resumable window dataset (shared with distillation)."""
    from fada.data.dataset import ClipStore, ClipWindowDataset, read_manifest

    require_inputs(recipe, ["data.manifest"])
    m = recipe.model
    rows = read_manifest(recipe.data.manifest)
    cache = recipe.data.cache_dir or str(Path(recipe.train.output_dir) / "cache")
    state = process_state()
    from fada.data.face_analysis import conditions_function

    store = ClipStore(rows, vae, frontend, m.resolution, m.fps, cache, min_frames=m.num_frames + 1,
                      progress=progress and state.is_main_process, rank=state.process_index,
                      world=state.num_processes, barrier=state.wait_for_everyone,
                      conditions=conditions_function(m.conditions, m.resolution))
    if len(store) < recipe.data.batch_size:
        raise FadaError(f"{recipe.data.manifest}: {len(store)} usable clip(s), fewer than data.batch_size "
                        f"{recipe.data.batch_size}")
    return ClipWindowDataset(store, m.num_frames, m.motion_frames, recipe.train.seed,
                             motion_scale=m.conditions.motion_scale if store.has_conditions else None,
                             reference_gap=recipe.data.reference_gap)


def load_avatar(path):
    """The AvatarNet at ``path`` built from its own configs, no SD1.5 folder read: an exported model folder, or a
    checkpoint / run folder whose checkpoint carries net_config.json (EMA weights when present). None for a
    checkpoint written before checkpoints carried their configs."""
    from fada.models.avatar import AvatarNet
    from fada.training.checkpoint import latest_checkpoint, load_model_weights

    p = Path(path)
    if (p / "net").is_dir() and not (p / "state.json").is_file():
        return AvatarNet.from_pretrained(p / "net")
    ckpt = p if (p / "state.json").is_file() else latest_checkpoint(p)
    if ckpt is None:
        raise FadaError(f"{path}: not a checkpoint, run folder or exported model")
    cfg_file = ckpt / "net_config.json"
    if not cfg_file.is_file():
        return None
    net = AvatarNet.from_config_file(cfg_file)
    load_model_weights(ckpt, net, use_ema=True)
    return net.eval()


def load_init(net, path: str) -> None:
    """Start from a checkpoint, a run folder (its latest checkpoint) or an exported model folder."""
    from fada.training.checkpoint import latest_checkpoint, load_model_weights

    p = Path(path)
    if (p / "state.json").is_file():
        load_model_weights(p, net, use_ema=True)
        return
    latest = latest_checkpoint(p)
    if latest is not None:
        load_model_weights(latest, net, use_ema=True)
        return
    if (p / "net").is_dir():  # an exported model folder (fada export)
        from fada.models.avatar import AvatarNet

        src = AvatarNet.from_pretrained(p / "net")
        res = net.load_state_dict(src.state_dict(), strict=False)
        if res.unexpected_keys or res.missing_keys:
            what = [f"{len(keys)} {name} (e.g. {keys[0]})" for name, keys in
                    (("unexpected", res.unexpected_keys), ("missing", res.missing_keys)) if keys]
            raise FadaError(f"{p}: does not fit this model: {', '.join(what)} weights")
        return
    raise FadaError(f"{path}: not a checkpoint, run folder or exported model")


def run(recipe: TeacherRecipe, progress: bool = True, stop_after: int | None = None) -> TrainResult:
    from fada.models.audio import build_audio_frontend
    from fada.models.avatar import build_avatar_net
    from fada.models.vae import build_vae
    from fada.training.teacher import ConditionDropout, TimestepSampling, mouth_weight_map

    require_inputs(recipe)  # before any model is built
    m, tcfg = recipe.model, recipe.teacher
    if tcfg.stage == 1 and m.num_frames != 1:
        raise FadaError("model.num_frames: stage 1 trains on single frames; set model.num_frames=1")
    torch.manual_seed(recipe.train.seed)  # weight init: a fresh run is reproducible
    device = process_state().device  # this process's own GPU under torchrun / accelerate launch
    vae = build_vae(m.vae, device=device)
    frontend = build_audio_frontend(m.audio, device=device)
    dataset = build_data(recipe, frontend, vae, progress)
    feature_shape = frontend.feature_shape
    del frontend  # the clips are cached; the VAE stays only for validation samples
    net = build_avatar_net(m, student=False, latent_channels=vae.latent_channels, audio_feature_shape=feature_shape)
    if tcfg.init_from:
        load_init(net, tcfg.init_from)
    if recipe.train.gradient_checkpointing:
        net.enable_gradient_checkpointing()
    out = Path(recipe.train.output_dir)
    save_resolved(recipe, out)
    dropout = ConditionDropout(tcfg.audio_drop, tcfg.ref_drop)
    timesteps = TimestepSampling(tcfg.timesteps, tcfg.lognormal_mean, tcfg.lognormal_std)
    pixel_weight = mouth_weight_map(dataset.store.latent_shape, tcfg.mouth_box, tcfg.mouth_weight)
    task = TeacherTask(net, dataset, tcfg.stage, dropout, use_audio=tcfg.stage != 1, timesteps=timesteps,
                       pixel_weight=pixel_weight, motion_augment=tcfg.motion_augment)
    validate = None
    if recipe.train.validate_every and tcfg.stage != 1:  # stage 1 trains single frames without audio
        from fada.training.validation import TeacherValidation

        validate = TeacherValidation(dataset, vae, seed=recipe.train.seed, noise_share=recipe.model.noise_share)
    result = train(task, recipe.train, batch_size=recipe.data.batch_size, recipe_yaml=recipe_to_yaml(recipe),
                   progress=progress, stop_after=stop_after, num_workers=recipe.data.num_workers,
                   extra_state={"kind": "teacher"}, validate=validate)
    if progress and process_state().is_main_process:
        n, total = result.trained_parameters, result.total_parameters
        print(f"teacher: trained {n / 1e6:.1f}M of {total / 1e6:.1f}M parameters (stage {tcfg.stage})")
        print(f"teacher: step {result.step}, checkpoint {result.last_checkpoint}")
    return result
