"""The overfit check of test_overfit.py in Hallo's parametrisation (``model.schedule``: v-prediction, trailing DDIM,
linear betas rescaled to zero terminal SNR, the clean end at ᾱ = 1): the tiny teacher trained on two clips redraws
them over the same bar as the ε teacher (28 dB, the other identity's reference 10 dB below), and the Balanced student
distilled from it comes within 2 dB of it. (A separate module, so that the two trainings run on different workers.)"""

from __future__ import annotations

import numpy as np
import pytest

from tests.stages.overfit_helpers import V_SCHEDULE, student_scores, teacher_scores, train_pair


@pytest.fixture(scope="module")
def trained_v(tmp_path_factory):
    return train_pair(tmp_path_factory.mktemp("overfit_v"), V_SCHEDULE)


def test_v_prediction_zero_snr_teacher_and_student_redraw_them_too(trained_v):
    from fada.export import read_spec

    manifest, teacher_dir, student_dir = trained_v
    assert read_spec(teacher_dir).schedule.prediction_type == "v_prediction"
    assert read_spec(teacher_dir).schedule.zero_terminal_snr
    assert read_spec(student_dir).schedule == read_spec(teacher_dir).schedule
    scores, swapped = teacher_scores(teacher_dir, manifest)
    assert min(scores) >= 28.0, scores  # the ε teacher's bar (test_overfit.py)
    assert max(swapped) <= min(scores) - 10.0, (scores, swapped)
    student = student_scores(student_dir, manifest)
    assert np.mean(student) >= np.mean(scores) - 2.0, (student, scores)
