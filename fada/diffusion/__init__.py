"""Diffusion math of FADA: schedule, DDIM, multi-CFG (Eq. 9), PeRFlow (Eq. 2–5), mixed supervision (Eq. 6–8),
the video noise prior.

Pure tensor code: no file I/O (beyond the scheduler's diffusers save/load), no fada.models / fada.data imports.
Samplers take ``eps_fn(z, t) -> eps``; `conditional` / `guided` build one from the models' shared contract
``model_fn(z, t_index, keep_audio, keep_ref) -> eps``.
"""

from .ddim import Callback, EpsFn, ddim_solve, ddim_step, ddim_timesteps, sample_ddim, solve_indices
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
from .schedule import (
    NUM_TRAIN_TIMESTEPS,
    ab_at_index,
    add_noise,
    alpha_bar,
    linear_eps_prior,
    precond_loss_weight,
    precond_output_scale,
    precondition_eps,
    make_alphas_cumprod,
    sample_train_timesteps,
    sd15_alphas_cumprod,
    t_to_index,
)

__all__ = [
    "Callback", "EpsFn", "ModelFn", "ddim_solve", "ddim_step", "ddim_timesteps", "sample_ddim", "solve_indices",
    "Guidance", "TEACHER_GUIDANCE", "DISTILLED_GUIDANCE", "NO_GUIDANCE", "multi_cfg", "guided_eps",
    "conditional_eps", "guided", "conditional",
    "MIXED_MODES", "ground_truth_endpoint", "mixed_weight", "mixed_loss", "per_sample_mse",
    "PeRFlowScheduler", "PeRFlowSchedulerOutput", "PerflowWindow", "perflow_window", "perflow_target",
    "EXTRA_STEPS", "perflow_step", "sample_perflow", "sample_t", "step_times", "student_input", "window_coefficients",
    "window_of", "window_target", "implied_endpoint", "velocity_weight", "window_line_remap",
    "NUM_TRAIN_TIMESTEPS", "make_alphas_cumprod", "sd15_alphas_cumprod", "t_to_index", "alpha_bar",
    "ab_at_index", "add_noise", "linear_eps_prior", "precond_loss_weight", "precond_output_scale", "precondition_eps",
    "sample_train_timesteps", "clip_noises", "mix_noise", "shared_shape", "video_noise",
]
