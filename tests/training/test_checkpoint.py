"""Checkpoint folders: assembled under a temporary name and renamed, with the modes mkdir and open would give."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from fada.training.checkpoint import load_checkpoint, save_checkpoint


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_checkpoint_modes_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    model = torch.nn.Linear(3, 2)
    path = save_checkpoint(tmp_path / "run", 7, model, recipe_yaml="x: 1\n")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o777 & ~mask
    files = list(path.iterdir())
    assert {p.name for p in files} >= {"model.safetensors", "state.json", "recipe.yaml"}
    for p in files:
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o666 & ~mask, p
    assert load_checkpoint(path, torch.nn.Linear(3, 2))["step"] == 7
