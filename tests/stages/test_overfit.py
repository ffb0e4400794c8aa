"""The sanity check every generative pipeline needs: a model that cannot reproduce the clips it was trained on
cannot learn a corpus. A tiny teacher trained on two clips (seconds of CPU, through `fada train-teacher`) must
redraw them, from their first frame and their audio, with unguided 25-step DDIM; a Balanced student distilled from
it (through `fada distill`) must redraw them in 6 steps. And the reference must get through: given the other
identity's first frame, the same net must draw the other face. test_overfit_v.py does the same in the v-prediction,
zero-terminal-SNR parametrisation of Hallo's teacher."""

from __future__ import annotations

import pytest

from tests.stages.overfit_helpers import student_scores, teacher_scores, train_pair


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_pair(tmp_path_factory.mktemp("overfit"), [])


def test_teacher_redraws_its_training_clips_and_reads_its_reference(trained):
    manifest, teacher_dir, _ = trained
    scores, swapped = teacher_scores(teacher_dir, manifest)
    assert min(scores) >= 28.0, scores
    assert max(swapped) <= min(scores) - 10.0, (scores, swapped)  # the face comes from the reference it is given


def test_distilled_student_redraws_them_in_six_steps(trained):
    manifest, _, student_dir = trained
    scores = student_scores(student_dir, manifest)
    assert min(scores) >= 26.0, scores
