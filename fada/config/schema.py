"""Recipe schemas: one dataclass per section, one recipe class per command.

A recipe YAML names its ``stage``; ``fada train-teacher`` takes 'teacher' recipes, ``fada distill`` 'distill'
recipes, ``fada curate`` 'curate' recipes. Defaults are the full-scale paper settings; the tiny-*.yaml recipes
override the sizes so that everything runs on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal, Optional

from fada.config.model import ModelConfig, _f


@dataclass
class DataConfig:
    manifest: Optional[str] = _f(None, path="file")
    """Curated manifest to train on: A.jsonl for the teacher, B.jsonl for distillation (from `fada curate`)."""
    batch_size: int = _f(4, ge=1)
    """Clips per optimiser step per process."""
    num_workers: int = _f(2, ge=0)
    """DataLoader worker processes."""
    cache_dir: Optional[str] = None
    """Where latents and audio features are cached once (safetensors); None: next to the run's outputs."""
    reference_gap: Optional[list[int]] = _f(None, ge=1)
    """[lo, hi]: draw each window's reference frame lo..hi frames before its first frame or after its last (where
    the clip has one; anywhere outside the window otherwise). None: anywhere in the clip outside the window, as
    Hallo trains. A nearby reference shares the window's head pose, so a net learns to keep the pose it is given
    instead of drawing a random sway it cannot know (the CPU recipes; fada.data.dataset.reference_index)."""

    def check(self) -> list[str]:
        g = self.reference_gap
        if g is not None and (len(g) != 2 or g[0] > g[1]):
            return [f"reference_gap: needs [lo, hi] with 1 <= lo <= hi, got {g}"]
        return []


@dataclass
class TrainConfig:
    output_dir: str = "runs/fada"
    """Run folder: checkpoints (step-XXXXXXX/), metrics.jsonl, samples, the resolved recipe."""
    max_steps: int = _f(30000, ge=1)
    """Optimiser steps to train for."""
    learning_rate: float = _f(1e-5, gt=0.0)
    """AdamW learning rate after warm-up."""
    lr_warmup_steps: int = _f(500, ge=0)
    """Linear warm-up steps."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """After warm-up: 'constant', or 'cosine' (half a cosine down to 0 at max_steps; diffusers' schedule)."""
    weight_decay: float = _f(1e-2, ge=0.0)
    """AdamW weight decay."""
    gradient_accumulation_steps: int = _f(1, ge=1)
    """Micro-batches per optimiser step."""
    max_grad_norm: float = _f(1.0, gt=0.0)
    """Gradient clipping norm."""
    ema_decay: float = _f(0.9999, ge=0.0, lt=1.0)
    """EMA decay of the trained weights (0 disables EMA)."""
    ema_device: Literal["accelerator", "cpu"] = "accelerator"
    """Where the EMA copy lives: beside the weights, or in host RAM (frees 4 bytes per trained parameter of GPU
    memory at the cost of a host copy per step)."""
    optimizer: Literal["adamw", "adafactor", "adamw8bit"] = "adamw"
    """adamw: torch AdamW (8 bytes of state per trained parameter); adafactor: transformers' Adafactor with
    factored second moments and no first moment (well under 1 byte per parameter; any device); adamw8bit:
    bitsandbytes' 8-bit AdamW (2 bytes per parameter; CUDA; `pip install fada[cuda]`)."""
    mixed_precision: Literal["no", "fp16", "bf16"] = "bf16"
    """accelerate mixed precision."""
    frozen_dtype: Literal["auto", "fp32"] = "auto"
    """Frozen weights (the distillation teacher, the trained net's frozen parts): 'auto' keeps them in the
    mixed-precision dtype (half the memory; as diffusers' training scripts do), 'fp32' keeps them in float32.
    Trained parameters, their gradients and the EMA stay float32."""
    gradient_checkpointing: bool = True
    """Trade compute for memory in the UNets."""
    seed: int = 42
    """Seed for weights init, data order and noise."""
    checkpoint_every: int = _f(1000, ge=1)
    """Write step-XXXXXXX/ every N steps (and at the end)."""
    keep_last: int = _f(3, ge=1)
    """Checkpoints kept on disk."""
    log_every: int = _f(10, ge=1)
    """Metrics line every N steps."""
    validate_every: int = _f(2000, ge=0)
    """A short validation clip every N steps (0: never)."""
    resume: str = "auto"
    """'auto' (latest checkpoint in output_dir if any), 'none', or a checkpoint folder."""


@dataclass
class MotionAugmentConfig:
    """Corrupted motion frames in training (fada.training.motion_augment), against the drift of a model that
    conditions each clip on its own last frames. Off by default (the paper's recipes)."""

    noise: float = _f(0.0, ge=0.0)
    """Largest standard deviation (latent units) of the Gaussian noise added to a sample's motion frames; each
    sample's is drawn uniformly from [0, noise]. 0: off."""
    to_ref: float = _f(0.0, ge=0.0, le=1.0)
    """P(a sample's motion frames are replaced by its reference frame, as a video's first clip sees them)."""


# (x0, y0, x1, y1): where a `fada curate` crop at the default face_margin 0.4 puts the mouth (the loss weights'
# box; the sync and E-FID measures keep their own, fada.metrics.av_sync)
TRAIN_MOUTH_BOX = (0.34, 0.57, 0.66, 0.77)


def check_box(key: str, b) -> list[str]:
    """Problems with a (x0, y0, x1, y1) box of frame fractions (ConfigError lines)."""
    if len(b) != 4 or b[0] >= b[2] or b[1] >= b[3]:
        return [f"{key}: needs [x0, y0, x1, y1] with x0 < x1 and y0 < y1, got {b}"]
    return []


@dataclass
class TeacherConfig:
    stage: Literal[1, 2, "joint"] = 2
    """1: single frames, ReferenceNet + spatial layers trainable; 2: clips, audio + temporal layers trainable
    (the rest frozen); 'joint': everything at once (the from-scratch CPU recipes)."""
    init_from: Optional[str] = _f(None, path="dir")
    """Checkpoint or model folder to start from (stage 2 starts from stage 1's output)."""
    audio_drop: float = _f(0.05, ge=0.0, le=1.0)
    """P(audio dropped): learns the reference-only branch ε_r of multi-CFG."""
    ref_drop: float = _f(0.05, ge=0.0, le=1.0)
    """P(audio and reference dropped together): learns the unconditional branch ε_b."""
    timesteps: Literal["uniform", "lognormal"] = "uniform"
    """Train timesteps: 'uniform' on the 1000 steps (Eq. 1, SD1.5), or 'lognormal' on the noise-to-signal ratio
    σ = √(1−ᾱ)/√ᾱ, ln σ ~ N(lognormal_mean, lognormal_std²) (EDM's training distribution: far more samples at
    the low and middle noise levels where a small net's detail is decided)."""
    lognormal_mean: float = -1.2
    """Mean of ln σ for timesteps 'lognormal' (EDM: −1.2)."""
    lognormal_std: float = _f(1.2, gt=0.0)
    """Standard deviation of ln σ for timesteps 'lognormal' (EDM: 1.2)."""
    mouth_weight: float = _f(0.0, ge=0.0)
    """Extra loss weight on the mouth region: weight 1 + mouth_weight inside ``mouth_box``, 1 elsewhere, the map
    normalised to mean 1. The mouth is a few percent of a frame yet the only place the audio decides, so a
    from-scratch net otherwise learns the face long before the audio. 0 = Eq. 1 as written."""
    mouth_box: list[float] = _f(list(TRAIN_MOUTH_BOX), ge=0.0, le=1.0)
    """(x0, y0, x1, y1) of the mouth as fractions of a training frame. Default: where a `fada curate` crop at the
    default face_margin 0.4 puts the mouth (fada.curation.scores.mouth_box_in_crop)."""
    motion_augment: MotionAugmentConfig = field(default_factory=MotionAugmentConfig)
    """Motion-frame corruption during training (off by default; the CPU recipes use it)."""

    def check(self) -> list[str]:
        return check_box("mouth_box", self.mouth_box)


@dataclass
class MixedSupervisionConfig:
    mode: Literal["off", "fixed", "adaptive_unlimited", "adaptive"] = "adaptive"
    """Weight W of the ground-truth loss (Eq. 7-8): off, fixed (W = fixed), adaptive without peak/dead, adaptive."""
    s: float = _f(0.25, ge=0.0)
    """Exponent s of Eq. 8."""
    w0: float = _f(0.2, ge=0.0)
    """W0 of Eq. 8."""
    r_peak: float = _f(30.0, gt=0.0)
    """Peak threshold R_p of Eq. 8."""
    r_dead: float = _f(100.0, gt=0.0)
    """Dead threshold R_d of Eq. 8."""
    fixed: float = _f(0.2, ge=0.0)
    """W for mode 'fixed'."""

    def check(self) -> list[str]:
        return [f"r_dead: must exceed r_peak ({self.r_peak})"] if self.r_dead <= self.r_peak else []


@dataclass
class DistillConfig:
    teacher: Optional[str] = _f(None, path="dir")
    """Teacher checkpoint or exported model folder (from `fada train-teacher` / `fada export`)."""
    variant: Literal["balanced", "fast", "rflow", "tcd"] = "fast"
    """balanced: teacher at guidance 1 on the student's dropped conditions (student keeps multi-CFG);
    fast: teacher with multi-CFG (Eq. 9) at sampled scales, student told the scales (model.cfg.mode);
    rflow: the rectified-flow baseline of Table 2 (one window, velocity target), distilled and sampled like
    balanced (guidance-1 teacher on dropped conditions, multi-CFG at sampling; model.cfg.mode none);
    tcd: the trajectory consistency distillation baseline of Table 2 (fada.diffusion.tcd), distilled like balanced,
    sampled with diffusers' TCDScheduler and multi-CFG (mixed.mode off: it has no ground-truth term)."""
    tcd_original_steps: int = _f(50, ge=2, le=1000)
    """TCD: points of the teacher's skipping-step grid (TCD and LCM: 50)."""
    tcd_gamma: float = _f(0.3, ge=0.0, le=1.0)
    """TCD: the sampler's stochasticity γ written into the exported model (TCD's default 0.3)."""
    num_windows: int = _f(4, ge=1, le=50)
    """PeRFlow windows K (paper: 4)."""
    solver_steps: int = _f(8, ge=1)
    """Teacher DDIM steps inside one window to reach its end."""
    inference_steps: int = _f(6, ge=1)
    """Student steps at inference (paper: 6 → t = 1, .875, .75, .625, .5, .25)."""
    extra_steps: Literal["early", "late"] = "early"
    """Which windows get the inference_steps mod num_windows extra steps: 'early', those nearest the noise (the
    paper: 6 steps in 4 windows → 2, 2, 1, 1), or 'late', those nearest the data (1, 1, 2, 2: t = 1, .75, .5,
    .375, .25, .125). Exported with the model; with timesteps 'inference' it also sets the training times."""
    cfg_audio_range: list[float] = _f([1.0, 8.0], ge=0.0)
    """Range cfg_a is drawn from per sample (covers the inference value 6.5)."""
    cfg_ref_range: list[float] = _f([1.0, 4.0], ge=0.0)
    """Range cfg_r is drawn from per sample (covers 2.0 and 2.5)."""
    audio_drop: float = _f(0.05, ge=0.0, le=1.0)
    """Balanced and rflow: P(audio dropped) for the student's own conditions."""
    ref_drop: float = _f(0.05, ge=0.0, le=1.0)
    """Balanced and rflow: P(audio and reference dropped)."""
    mixed: MixedSupervisionConfig = field(default_factory=MixedSupervisionConfig)
    motion_augment: MotionAugmentConfig = field(default_factory=MotionAugmentConfig)
    """Motion-frame corruption for the teacher's targets and the student alike (off by default; the CPU recipes
    use the teacher's)."""
    trainable: list[str] = _f(["all"])
    """Which student parameters distillation trains: 'all' (the paper), or a list of groups from reference_net,
    spatial, audio, temporal, cfg, and 'lora' (low-rank adapters of rank lora_rank on the denoising net, base
    weights frozen; merged into plain weights on export). E.g. [lora, audio, cfg] fits a 24 GB GPU
    (see fada.training.trainable and the README's memory table)."""
    lora_rank: int = _f(64, ge=1)
    """Rank of the LoRA adapters when trainable lists 'lora' (LCM-LoRA: 64)."""
    lora_alpha: Optional[float] = _f(None, gt=0.0)
    """LoRA scale numerator (update = alpha/rank · B·A); None: alpha = rank."""
    mouth_weight: float = _f(0.0, ge=0.0)
    """Extra weight of the mouth region in both loss terms (Eq. 5 and the ground-truth term of Eq. 7), as
    ``teacher.mouth_weight``: 1 + mouth_weight inside ``mouth_box``, the map normalised to mean 1, so R of Eq. 8
    compares like with like. 0 = the paper's losses as written."""
    mouth_box: list[float] = _f(list(TRAIN_MOUTH_BOX), ge=0.0, le=1.0)
    """(x0, y0, x1, y1) of the mouth as fractions of a training frame (as ``teacher.mouth_box``)."""
    timesteps: Literal["uniform", "inference"] = "uniform"
    """Where in its window a sample's t is drawn. uniform: t uniform on the 1000-step grid (PeRFlow, the paper).
    inference: only the inference_steps times the sampler queries (e.g. 1, .875, .75, .625, .5, .25): the target
    near a window's end asks the student to recover the window's noisy start from an almost clean point, a hard
    target the sampler never queries, which a small student otherwise spends its capacity on."""

    def check(self) -> list[str]:
        from fada.training.trainable import check_choice

        out = check_choice(list(self.trainable)) + check_box("mouth_box", self.mouth_box)
        for name in ("cfg_audio_range", "cfg_ref_range"):
            r = getattr(self, name)
            if len(r) != 2 or r[0] > r[1]:
                out.append(f"{name}: needs [low, high] with low <= high, got {r}")
        if self.variant in ("balanced", "fast") and self.inference_steps < self.num_windows:
            # a window without a step would be crossed on another window's line (step_times refuses it)
            out.append(f"inference_steps: {self.inference_steps} < num_windows {self.num_windows}; PeRFlow needs a "
                       f"step per window")
        return out


@dataclass
class FilterThresholds:
    """One threshold set of curation. Every score is measured so that its value means the same at any source
    resolution (see fada.curation.scores); the defaults are the strict set."""

    min_sharpness: float = _f(60.0, ge=0.0)
    """Variance of the Laplacian of the grey face region resampled to 128x128 (higher = sharper; < ~50 looks soft)."""
    min_brightness: float = _f(40.0, ge=0.0, le=255.0)
    """Mean luma of the face region, lower bound (under-exposure)."""
    max_brightness: float = _f(220.0, ge=0.0, le=255.0)
    """Mean luma of the face region, upper bound (over-exposure)."""
    min_face_size: int = _f(256, ge=1)
    """Smallest median face-box side in source pixels (a face smaller than the crop needs is upscaled)."""
    max_sync_offset: int = _f(2, ge=0)
    """Largest |audio-video offset| in frames (2 frames = 80 ms at 25 fps)."""
    min_sync_confidence: float = _f(0.35, ge=0.0)
    """Smallest weight-free sync confidence (peak minus median of the correlation-vs-offset curve). 0.35 is about
    the 95th percentile of the same measure on mismatched audio (a noise floor) for 3-5 s clips."""
    min_syncnet_confidence: float = _f(3.0, ge=0.0)
    """Smallest SyncNet confidence (Sync-C), used instead of min_sync_confidence when curate.syncnet_weights is set."""
    max_background_motion: float = _f(0.5, ge=0.0)
    """Largest mean absolute grey-level change per frame outside the person (0-255 scale, frames at most 160 px
    wide); a static, compressed background stays far below 0.5."""
    min_mouth_motion: float = _f(0.08, ge=0.0)
    """Smallest mean mouth-region motion (normalised grey levels per frame); a shut mouth reads about 0.05."""
    max_head_motion: float = _f(0.01, ge=0.0)
    """Largest mean face-centre motion per frame as a fraction of the face size (0.01 = a quarter face per second)."""
    sources: list[str] = _f([])
    """Allowed data-source tags (empty: any)."""


def _lenient() -> FilterThresholds:
    return FilterThresholds(min_sharpness=20.0, min_brightness=25.0, max_brightness=235.0, min_face_size=128,
                            max_sync_offset=4, min_sync_confidence=0.25, min_syncnet_confidence=1.5,
                            max_background_motion=2.0, min_mouth_motion=0.06, max_head_motion=0.03)


@dataclass
class CurateConfig:
    resolution: int = _f(512, ge=16)
    """Square crop size of the curated clips (even: H.264)."""
    fps: int = _f(25, ge=1)
    """Frame rate of the curated clips."""
    sample_rate: int = _f(16000, ge=8000)
    """Audio rate of the curated clips."""
    min_clip_seconds: float = _f(2.0, gt=0.0)
    """Shortest clip."""
    max_clip_seconds: float = _f(10.0, gt=0.0)
    """Longest clip; longer face tracks are sliced."""
    face_margin: float = _f(0.4, ge=0.0)
    """Extra margin around the detected face box, as a fraction of its size."""
    workers: int = _f(0, ge=0)
    """Parallel worker processes (0: number of cores)."""
    detect_every: int = _f(5, ge=1)
    """Run the face detector on every N-th output frame; boxes in between are interpolated and smoothed."""
    max_face_gap: float = _f(0.5, gt=0.0)
    """Seconds between face detections that end a face track (and so a clip)."""
    sync_search: int = _f(15, ge=1)
    """Audio-video offsets searched, in frames either way."""
    crf: int = _f(18, ge=0, le=51)
    """x264 quality of the curated clips (lower: better and larger). 0 is lossless: the clips decode to exactly the
    crops, run after run (at other values x264 gave different bytes for a few percent of identical clips between
    runs, so training data and models differed)."""
    metadata: Optional[str] = _f(None, path="file")
    """Optional JSON/JSONL with per-video data-source tags."""
    syncnet_weights: Optional[str] = _f(None, path="file")
    """SyncNet weights (syncnet_v2.model); without them a weight-free sync measure is used."""
    strict: FilterThresholds = field(default_factory=FilterThresholds)
    """Thresholds of set A (teacher)."""
    lenient: FilterThresholds = field(default_factory=_lenient)
    """Thresholds of set B (student): never stricter than strict, for every filter, so that A ⊆ B."""

    def check(self) -> list[str]:
        out = []
        if self.max_clip_seconds < self.min_clip_seconds:
            out.append("max_clip_seconds: must be >= min_clip_seconds")
        if self.resolution % 2:
            out.append(f"resolution: must be even (H.264), got {self.resolution}")
        for level in ("strict", "lenient"):
            t = getattr(self, level)
            if t.min_brightness > t.max_brightness:
                out.append(f"{level}.min_brightness: must be <= {level}.max_brightness ({t.max_brightness})")
        for f in fields(FilterThresholds):
            s, l = getattr(self.strict, f.name), getattr(self.lenient, f.name)
            if f.name.startswith("min_") and l > s:
                out.append(f"lenient.{f.name}: {l} is stricter than strict.{f.name} ({s}); set B must contain A")
            elif f.name.startswith("max_") and l < s:
                out.append(f"lenient.{f.name}: {l} is stricter than strict.{f.name} ({s}); set B must contain A")
        if self.lenient.sources and not (self.strict.sources and set(self.strict.sources) <= set(self.lenient.sources)):
            out.append(f"lenient.sources: {self.lenient.sources} must include every strict source "
                       f"({self.strict.sources or 'any'}); set B must contain A")
        return out


@dataclass
class TeacherRecipe:
    stage: Literal["teacher"] = "teacher"
    """Which command this recipe is for."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)


@dataclass
class DistillRecipe:
    stage: Literal["distill"] = "distill"
    """Which command this recipe is for."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def check(self) -> list[str]:
        out = []
        if self.distill.variant in ("balanced", "rflow", "tcd") and self.model.cfg.mode != "none":
            out.append(f"model.cfg.mode: a {self.distill.variant} student keeps multi-CFG at inference and takes no "
                       "CFG conditioning; use 'none'")
        if self.distill.variant == "tcd" and self.distill.mixed.mode != "off":
            out.append("distill.mixed.mode: the TCD baseline has no ground-truth term; use 'off'")
        return out


@dataclass
class CurateRecipe:
    stage: Literal["curate"] = "curate"
    """Which command this recipe is for."""
    curate: CurateConfig = field(default_factory=CurateConfig)


RECIPE_TYPES = {"teacher": TeacherRecipe, "distill": DistillRecipe, "curate": CurateRecipe}
