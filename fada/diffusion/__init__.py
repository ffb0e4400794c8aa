"""Diffusion math of FADA: schedule, DDIM, multi-CFG (Eq. 9), PeRFlow (Eq. 2–5), mixed supervision (Eq. 6–8),
the video noise prior.

Pure tensor code: no file I/O (beyond the scheduler's diffusers save/load), no fada.models / fada.data imports.
Samplers take ``eps_fn(z, t) -> output`` (ε or v, as the `NoiseSchedule` says) and the schedule; `conditional` /
`guided` build one from the models' shared contract ``model_fn(z, t_index, keep_audio, keep_ref) -> output``.
"""

from .ddim import Callback, EpsFn, ddim_solve, sample_ddim, solve_indices
from .guidance import (
    DISTILLED_GUIDANCE,
    NO_GUIDANCE,
    TEACHER_GUIDANCE,
    Guidance,
    ModelFn,
    conditional,
    conditional_eps,
    guided,
    guided_eps,
    multi_cfg,
)
from .mixed_supervision import MODES as MIXED_MODES
from .noise import clip_noises, mix_noise, shared_shape, video_noise
from .tcd import GAMMA as TCD_GAMMA, ORIGINAL_STEPS as TCD_ORIGINAL_STEPS, consistency_jump, sample_tcd, tcd_grid
from .mixed_supervision import ground_truth_endpoint, mixed_loss, mixed_weight, per_sample_mse
from .perflow import (
    EXTRA_STEPS,
    PeRFlowScheduler,
    PeRFlowSchedulerOutput,
    PerflowWindow,
    implied_endpoint,
    line_output,
    perflow_step,
    perflow_target,
    perflow_window,
    sample_perflow,
    sample_t,
    step_times,
    student_input,
    window_coefficients,
    window_of,
    velocity_weight,
    window_line_remap,
    window_target,
)
from .noise_schedule import PREDICTION_TYPES, SD15, SPACINGS, NoiseSchedule, as_schedule
from .schedule import (
    NUM_TRAIN_TIMESTEPS,
    add_noise,
    linear_eps_prior,
    precond_loss_weight,
    precond_output_scale,
    precondition,
    sample_train_timesteps,
)

__all__ = [
    "Callback", "EpsFn", "ModelFn", "ddim_solve", "sample_ddim", "solve_indices",
    "Guidance", "TEACHER_GUIDANCE", "DISTILLED_GUIDANCE", "NO_GUIDANCE", "multi_cfg", "guided_eps",
    "conditional_eps", "guided", "conditional",
    "MIXED_MODES", "ground_truth_endpoint", "mixed_weight", "mixed_loss", "per_sample_mse",
    "PeRFlowScheduler", "PeRFlowSchedulerOutput", "PerflowWindow", "perflow_window", "perflow_target",
    "EXTRA_STEPS", "perflow_step", "sample_perflow", "sample_t", "step_times", "student_input", "window_coefficients",
    "window_of", "window_target", "implied_endpoint", "velocity_weight", "window_line_remap", "line_output",
    "NoiseSchedule", "SD15", "PREDICTION_TYPES", "SPACINGS", "as_schedule",
    "NUM_TRAIN_TIMESTEPS", "add_noise", "linear_eps_prior", "precond_loss_weight", "precond_output_scale",
    "precondition",
    "sample_train_timesteps", "clip_noises", "mix_noise", "shared_shape", "video_noise",
]
