"""fada.training.distill pieces: where in its window a training sample's time falls."""

import pytest
import torch

from fada.training.distill import DistillSettings
from fada.training.teacher import ConditionDropout


def _settings(**kw):
    base = dict(variant="balanced", num_windows=4, solver_steps=4, cfg_audio_range=(1.0, 8.0),
                cfg_ref_range=(1.0, 4.0), dropout=ConditionDropout(0.0, 0.0, 0.0), mixed_mode="off",
                mixed_kwargs={}, student_cfg_mode="none")
    base.update(kw)
    return DistillSettings(**base)


def test_inference_timesteps_are_the_sampler_times():
    from fada.diffusion import sample_t, step_times
    from fada.training.distill import sample_distill_t

    s = _settings(timesteps="inference", inference_steps=6)
    t = sample_distill_t(600, s, torch.Generator().manual_seed(0))
    assert sorted(set(t.tolist())) == pytest.approx([0.25, 0.5, 0.625, 0.75, 0.875, 1.0])
    assert set(t.tolist()) == set(step_times(6, 4).float().tolist())
    u = sample_distill_t(5, _settings(timesteps="uniform"), torch.Generator().manual_seed(1))
    assert torch.equal(u, sample_t(5, torch.Generator().manual_seed(1)))  # the PeRFlow default is unchanged


def test_inference_timesteps_follow_the_extra_steps():
    from fada.training.distill import sample_distill_t

    s = _settings(timesteps="inference", inference_steps=6, extra_steps="late")
    t = sample_distill_t(600, s, torch.Generator().manual_seed(0))
    assert sorted(set(t.tolist())) == pytest.approx([0.125, 0.25, 0.375, 0.5, 0.75, 1.0])


def test_settings_carry_the_timesteps():
    from fada.config.schema import DistillConfig

    s = DistillSettings.from_config(DistillConfig(timesteps="inference", inference_steps=8, extra_steps="late"),
                                    "none")
    assert (s.timesteps, s.inference_steps, s.extra_steps) == ("inference", 8, "late")
    assert DistillSettings.from_config(DistillConfig(), "tokens").timesteps == "uniform"
