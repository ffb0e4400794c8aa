"""Model configuration: one dataclass tree shared by every stage (teacher, student, export, generate).

Each field's docstring is what `fada recipes --explain` style help and the recipe README are written from.
Validation (types, ranges, choices) happens in `fada.config.validate`; field metadata carries the limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional


def _f(default, **meta):
    """A dataclass field with validation metadata (ge/le/gt/choices/path)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class VAEConfig:
    kind: Literal["pixel", "sd"] = "pixel"
    """'sd': the SD1.5 AutoencoderKL loaded from `path` (a local diffusers folder with vae/);
    'pixel': the weight-free, exactly invertible space-to-depth codec used at CPU scale."""
    path: Optional[str] = _f(None, path="dir")
    """Local Stable Diffusion 1.5 folder (diffusers layout) for kind 'sd'."""
    factor: int = _f(2, ge=1, le=16)
    """Spatial downsampling factor of the pixel codec (latent channels = 3·factor²)."""
    scaling_factor: float = _f(0.18215, gt=0.0)
    """Latent scaling of the SD VAE (SD1.5: 0.18215)."""

    def check(self) -> list[str]:
        return ["path: required when kind is 'sd' (a local SD1.5 folder)"] if self.kind == "sd" and not self.path else []


@dataclass
class UNetConfig:
    pretrained: Optional[str] = _f(None, path="dir")
    """Local SD1.5 folder (diffusers layout, with unet/): both nets start from its UNet. None: random init
    from the shape fields below (tiny recipes)."""
    block_out_channels: list[int] = _f([320, 640, 1280, 1280])
    """Channels per resolution level (ignored when `pretrained` is set)."""
    down_block_types: list[str] = _f(
        ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"])
    """diffusers down-block class names, one per level."""
    up_block_types: list[str] = _f(
        ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])
    """diffusers up-block class names, one per level."""
    layers_per_block: int = _f(2, ge=1, le=8)
    """ResNet/attention layers per level."""
    attention_head_dim: int = _f(8, ge=1)
    """Attention heads per level in diffusers' (historically misnamed) convention: SD1.5 uses 8 heads."""
    cross_attention_dim: int = _f(768, ge=1)
    """Width of the audio tokens read by the cross-attention (SD1.5: 768)."""
    norm_num_groups: int = _f(32, ge=1)
    """GroupNorm groups (must divide every entry of block_out_channels)."""
    temporal_heads: int = _f(8, ge=1)
    """Heads of the temporal self-attention layers."""
    max_frames: int = _f(32, ge=1)
    """Longest frame sequence the temporal position encoding covers."""
    bank_positions: bool = False
    """CPU-scale option: add a fixed 2-D position code to the queries and keys of the reference-bank attention, so
    a from-scratch net can copy the reference place by place (SD1.5's attention has no position input; keep
    False when starting from SD1.5 weights)."""
    reference_concat: bool = False
    """CPU-scale option: also give the denoising net the reference frame's latents as extra input channels, at
    every frame (zeros where the reference is dropped; new conv_in weights start at zero). A from-scratch tiny net
    then copies the identity it is given from its first steps; through the bank attention alone (the paper's
    ReferenceNet path, kept as well) it learned to ignore the reference. False for SD1.5 recipes."""
    motion_concat: bool = False
    """CPU-scale option: also give the denoising net the latest motion frame's latents (the last frame of the
    previous clip; the reference at a video's start) as extra input channels, like ``reference_concat``."""
    precond_data_var: float = _f(0.0, ge=0.0)
    """CPU-scale option: > 0 preconditions the ε output for data of this variance, ε̂ = c(t)·z_t + κ(t)·F (EDM's
    c_skip/c_out for an ε net; fada.diffusion.linear_eps_prior, precond_output_scale), and the training losses
    weight the ε error by 1/κ(t)² so it is uniform in F. A from-scratch tiny net then learns in minutes what it
    would otherwise learn in hours; 0 (SD1.5, plain Eq. 1) disables it."""
    precond_ref_var: float = _f(0.0, ge=0.0)
    """CPU-scale option, with ``precond_data_var``: > 0 centres the preconditioning's x0 prior on the reference
    frame's latents, with this variance, for samples that read their reference (the others keep 0 ±
    ``precond_data_var``): ε̂ = c(t)·(z_t − √ᾱ_t·x_ref) + κ(t)·F (fada.diffusion.precondition). A
    from-scratch net is then a still copy of its reference from its first step and learns what moves; 0 (the
    default) keeps the zero-mean prior."""

    def check(self) -> list[str]:
        out = []
        if self.precond_ref_var > 0 and self.precond_data_var <= 0:
            out.append("precond_ref_var: needs precond_data_var > 0 (it changes that preconditioning's prior)")
        if self.pretrained:
            return out
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            out.append(f"down_block_types/up_block_types: need {n} entries each (one per block_out_channels level)")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            out.append(f"norm_num_groups: {self.norm_num_groups} does not divide channels {bad}")
        return out


@dataclass
class AudioConfig:
    kind: Literal["mel", "wav2vec2"] = "mel"
    """'wav2vec2': transformers Wav2Vec2Model from `path` (all hidden states); 'mel': weight-free log-mel front end."""
    path: Optional[str] = _f(None, path="dir")
    """Local wav2vec2 folder (transformers layout: config.json + weights) for kind 'wav2vec2'."""
    sample_rate: int = _f(16000, ge=8000)
    """Audio is resampled to this rate (wav2vec2 needs 16000)."""
    n_mels: int = _f(80, ge=8)
    """Mel bands of the log-mel front end."""
    window: int = _f(2, ge=0, le=8)
    """Each frame sees the audio features of ±window frames around it (paper: 2)."""
    n_tokens: int = _f(32, ge=1)
    """Audio tokens per frame produced by the projection."""
    hidden_dim: int = _f(512, ge=8)
    """Width of the projection MLP."""
    wav2vec2_mode: Literal["fada", "hallo"] = "fada"
    """How kind 'wav2vec2' makes per-frame features. 'fada': every hidden state (layers + 1) of the 50 Hz encoder,
    interpolated at the video frame centres, long audio in chunks. 'hallo': Hallo's AudioProcessor (what its
    teacher was trained on): the CNN features linearly resampled to the frame count before the transformer, the
    whole utterance in one pass, the layers' outputs only (12 x 768 for wav2vec2-base), Hallo's frame count,
    padding and window edges (fada.models.audio.Wav2Vec2FrontEnd). No vocal separation: the audio is fed as given.
    The mode is part of the features' cache key."""
    hallo_clip_frames: int = _f(16, ge=0)
    """wav2vec2_mode 'hallo': the utterance is zero-padded (after normalisation) to a multiple of this many frames
    before the encoder, as Hallo's inference does with its clip length (n_sample_frames: 16); every frame's features
    depend on it. 0: no padding, as Hallo's training-data preprocessing."""

    def check(self) -> list[str]:
        out = []
        if self.kind == "wav2vec2" and not self.path:
            out.append("path: required when kind is 'wav2vec2' (a local wav2vec2 folder)")
        if self.kind == "wav2vec2" and self.sample_rate != 16000:
            out.append("sample_rate: wav2vec2 needs 16000")
        if self.wav2vec2_mode != "fada" and self.kind != "wav2vec2":
            out.append(f"wav2vec2_mode: {self.wav2vec2_mode!r} needs kind 'wav2vec2'")
        return out


@dataclass
class CFGConfig:
    mode: Literal["none", "time_embed", "layer", "tokens"] = "none"
    """How the student is told the CFG scales: 'tokens' (learnable γ_a, γ_r, γ_b, Eq. 10, read by CFG layers),
    'layer' (CFG layers reading an MLP embedding of the scales, no tokens), 'time_embed' (scales added to the
    timestep embedding, ω-conditioning), 'none' (no CFG conditioning; the teacher and the Balanced student)."""
    n_tokens: int = _f(4, ge=1)
    """Tokens per learnable set γ (and per CFG embedding)."""
    normalize: bool = False
    """LayerNorm on the CFG embedding before the CFG layers read it. False: Eq. 10 as written, the embedding linear
    in the scales; True: the normalised variant (each token centred and rescaled, which drops the scale)."""
    guidance: Optional[list[float]] = _f(None, ge=0.0)
    """[cfg_audio, cfg_ref]: the default multi-CFG scales (Eq. 9) written into a model exported from this recipe;
    null: the paper's (6.5 / 2.5; 6.5 / 2.0 for CFG-distilled students). `fada generate --cfg-audio/--cfg-ref`
    still override them."""

    def check(self) -> list[str]:
        if self.guidance is not None and len(self.guidance) != 2:
            return [f"guidance: expected [cfg_audio, cfg_ref], got {self.guidance}"]
        return []


@dataclass
class ScheduleConfig:
    """The noise schedule and output parametrisation (``fada.diffusion.NoiseSchedule``; keys as in a diffusers
    ``DDIMScheduler`` config). The defaults are Stable Diffusion 1.5's; an imported Hallo teacher uses
    linear betas, v-prediction, trailing spacing, ``set_alpha_to_one`` and zero terminal SNR."""

    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    """What the denoising net predicts: the noise ε, or v = √ᾱ·ε − √(1−ᾱ)·x0."""
    timestep_spacing: Literal["leading", "trailing"] = "leading"
    """Where a DDIM run's steps sit on the 1000 train steps: 'leading' (SD1.5, + steps_offset) or 'trailing'
    (from the last train step down)."""
    beta_schedule: Literal["scaled_linear", "linear"] = "scaled_linear"
    """β over the train steps: linear in √β (SD1.5) or in β."""
    beta_start: float = _f(0.00085, gt=0.0, le=1.0)
    """First β."""
    beta_end: float = _f(0.012, gt=0.0, le=1.0)
    """Last β."""
    num_train_timesteps: int = _f(1000, ge=2)
    """Train steps T."""
    steps_offset: int = _f(1, ge=0)
    """Offset of the 'leading' DDIM grid."""
    set_alpha_to_one: bool = False
    """ᾱ past the last DDIM step: 1 (clean), or ᾱ[0] as SD1.5."""
    rescale_betas_zero_snr: bool = False
    """Rescale the betas to zero terminal SNR (needs v-prediction)."""

    def check(self) -> list[str]:
        from fada.diffusion.noise_schedule import schedule_problems

        return schedule_problems(self)

    def build(self):
        from fada.diffusion.noise_schedule import NoiseSchedule

        return NoiseSchedule(**self.__dict__)


@dataclass
class ConditionsConfig:
    """Conditions computed once per portrait for nets that read more than its latents (Hallo's parts)."""

    kind: Literal["none", "hallo"] = "none"
    """'hallo': Hallo's per-portrait conditions (fada.data.face_conditions): the InsightFace identity embedding, the
    face-locator mask and the full / face / lip region masks, from the detectors in ``face_analysis``; 'none':
    the portrait's latents alone (fada's own nets)."""
    face_analysis: Optional[str] = None
    """Hallo's ``pretrained_models/face_analysis/models`` folder: InsightFace's ONNX files and MediaPipe's
    ``face_landmarker_v2_with_blendshapes.task`` (extra ``[hallo]``; InsightFace's files carry their own
    non-commercial terms)."""
    face_expand_ratio: float = _f(1.2, gt=0.0)
    """Growth of the landmarks' face box for the face-locator mask (Hallo: 1.2)."""
    motion_scale: list[float] = _f([1.0, 1.0, 1.0], ge=0.0)
    """Weights of the full (pose), face and lip regions' audio (Hallo's pose_weight, face_weight, lip_weight)."""

    def check(self) -> list[str]:
        return [] if len(self.motion_scale) == 3 else [f"motion_scale: expected 3 weights, got {self.motion_scale}"]


@dataclass
class ModelConfig:
    resolution: int = _f(512, ge=8)
    """Square frame size in pixels (paper: 512)."""
    fps: int = _f(25, ge=1, le=120)
    """Video frame rate the model is trained and run at."""
    num_frames: int = _f(16, ge=1)
    """Frames generated per clip (paper setting: 16)."""
    motion_frames: int = _f(2, ge=0)
    """Last frames of the previous clip fed to the ReferenceNet with the reference image."""
    attention_backend: Literal["auto", "sdpa", "xformers"] = "auto"
    """'auto': xformers when CUDA and xformers are present, else PyTorch SDPA."""
    vae: VAEConfig = field(default_factory=VAEConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    cfg: CFGConfig = field(default_factory=CFGConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    conditions: ConditionsConfig = field(default_factory=ConditionsConfig)
    noise_share: float = _f(0.0, ge=0.0, le=1.0)
    """Share ρ of each frame's starting noise common to all frames of a video at generation (the PYoCo mixed
    noise prior, fada.diffusion.noise; the shared part is drawn once per video). Training keeps independent noise
    (Eq. 1). 0: independent noise per frame (the paper). The CPU recipes use 1: a tiny net's samples then change
    from frame to frame only where the conditions (audio, motion frames) change them instead of flickering."""

    def check(self) -> list[str]:
        out = []
        if self.resolution % self.vae_downsample:
            out.append(f"resolution: {self.resolution} is not a multiple of the VAE downsampling {self.vae_downsample}")
        if self.num_frames > self.unet.max_frames:
            out.append(f"num_frames: {self.num_frames} exceeds unet.max_frames {self.unet.max_frames}")
        return out

    @property
    def vae_downsample(self) -> int:
        return 8 if self.vae.kind == "sd" else self.vae.factor
