"""`fada train-teacher` on tiny models and synthetic clips: it learns, it resumes exactly, it runs on 2 processes."""

import json

import pytest
import torch

from fada.config import load_recipe
from fada.errors import FadaError
from fada.stages.train_teacher import run
from fada.training import latest_checkpoint
from tests.fixtures import TINY_TEST_MODEL, make_manifest


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_manifest(tmp_path_factory.mktemp("curated"), n_clips=4)


def recipe(manifest, out, *extra):
    return load_recipe("tiny-teacher", TINY_TEST_MODEL + [
        f"data.manifest={manifest}", f"train.output_dir={out}", "data.batch_size=2", "train.max_steps=6",
        "train.checkpoint_every=3", "train.log_every=1", "train.lr_warmup_steps=2", *extra], stage="teacher")


def test_trains_and_writes_checkpoints(manifest, tmp_path):
    res = run(recipe(manifest, tmp_path / "run"), progress=False)
    assert res.step == 6
    ck = latest_checkpoint(tmp_path / "run")
    assert ck.name == "step-0000006"
    assert json.loads((ck / "state.json").read_text())["kind"] == "teacher"
    assert (tmp_path / "run" / "recipe.yaml").is_file() and (ck / "recipe.yaml").is_file()
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 6


def test_loss_falls_when_overfitting_one_batch(manifest, tmp_path):
    from fada.data.dataset import collate
    from fada.models.audio import build_audio_frontend
    from fada.models.avatar import build_avatar_net
    from fada.models.vae import build_vae
    from fada.stages.train_teacher import build_data
    from fada.training.teacher import ConditionDropout, teacher_loss

    r = recipe(manifest, tmp_path / "run")
    vae, fe = build_vae(r.model.vae), build_audio_frontend(r.model.audio)
    data = build_data(r, fe, vae, progress=False)
    batch = collate([data[(0, 0)], data[(1, 0)]])
    net = build_avatar_net(r.model, latent_channels=vae.latent_channels, audio_feature_shape=fe.feature_shape)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        g = torch.Generator().manual_seed(0)  # the same t and noise every step: pure overfitting
        loss, _ = teacher_loss(net, batch, g, net.schedule, ConditionDropout(0.0, 0.0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_resume_equals_uninterrupted(manifest, tmp_path):
    run(recipe(manifest, tmp_path / "a"), progress=False)
    run(recipe(manifest, tmp_path / "b"), progress=False, stop_after=3)
    run(recipe(manifest, tmp_path / "b"), progress=False)  # resume=auto from step-0000003
    from safetensors.torch import load_file

    a = load_file(str(latest_checkpoint(tmp_path / "a") / "model.safetensors"))
    b = load_file(str(latest_checkpoint(tmp_path / "b") / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def _torchrun(*args):
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "fada_cli.main", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=600)


def test_two_processes_when_every_sample_drops_the_reference(manifest, tmp_path):
    """Stage 1 at batch 1 with ref_drop 1: no sample reads the bank, yet the ReferenceNet must stay in the graph or
    DDP stops at the second step ("Expected to have finished reduction")."""
    out = tmp_path / "drop"
    res = _torchrun("train-teacher", "--recipe", "tiny-teacher", *TINY_TEST_MODEL, f"data.manifest={manifest}",
                    f"train.output_dir={out}", "teacher.stage=1", "model.num_frames=1", "teacher.ref_drop=1.0",
                    "data.batch_size=1", "train.max_steps=3", "train.checkpoint_every=3")
    assert res.returncode == 0, res.stderr[-2000:]
    assert latest_checkpoint(out).name == "step-0000003"


def test_each_rank_keeps_its_own_random_state_across_a_resume(manifest, tmp_path):
    """torchrun starts 2 CPU processes and accelerate sets up gloo DDP inside the shared loop (as `accelerate
    launch` does on GPUs); every rank's generator is saved and restored as its own: after a resume the ranks do not
    all draw rank 0's noise, timesteps and dropout."""
    from safetensors.torch import load_file

    from fada.training.checkpoint import rank_rng

    out = tmp_path / "rng"
    common = ["train-teacher", "--recipe", "tiny-teacher", *TINY_TEST_MODEL, f"data.manifest={manifest}",
              f"train.output_dir={out}", "data.batch_size=2", "train.checkpoint_every=2"]
    first = _torchrun(*common, "train.max_steps=2")
    assert first.returncode == 0, first.stderr[-2000:]
    assert latest_checkpoint(out).name == "step-0000002"
    res = _torchrun(*common, "train.max_steps=4")  # resumes from step 2
    assert res.returncode == 0, res.stderr[-2000:]
    for ck in (out / "step-0000002", out / "step-0000004"):
        rng = load_file(str(ck / "rng.safetensors"))
        assert not torch.equal(rng["rank0.generator"], rng["rank1.generator"])
        assert not torch.equal(rng["rank0.torch_cpu"], rng["rank1.torch_cpu"])
    saved = load_file(str(out / "step-0000002" / "rng.safetensors"))
    g = torch.Generator()
    for rank in (0, 1):  # what load_checkpoint(..., rank=) restores on each rank
        rank_rng(saved, g, rank)
        assert torch.equal(g.get_state(), saved[f"rank{rank}.generator"])
    # a rank the file has no state for (more processes than saved it, or a file from before per-rank states)
    legacy = {k.split(".", 1)[1]: v for k, v in saved.items() if k.startswith("rank0.")}
    states = []
    for rank in (0, 1, 2):
        rank_rng(legacy, g, rank)
        states.append(g.get_state())
    assert torch.equal(states[0], saved["rank0.generator"])
    assert not torch.equal(states[1], states[0]) and not torch.equal(states[2], states[1])


def test_stage_one_needs_single_frames(manifest, tmp_path):
    with pytest.raises(FadaError, match="model.num_frames"):
        run(recipe(manifest, tmp_path / "s1", "teacher.stage=1"), progress=False)


def test_missing_manifest_is_a_user_error(tmp_path):
    r = load_recipe("tiny-teacher", TINY_TEST_MODEL + [f"train.output_dir={tmp_path}"], stage="teacher")
    with pytest.raises(FadaError, match="data.manifest"):
        run(r, progress=False)


def test_validation_clips_are_written_and_logged(manifest, tmp_path):
    import cv2

    run(recipe(manifest, tmp_path / "v", "train.validate_every=3"), progress=False)
    pngs = sorted((tmp_path / "v" / "validation").glob("*.png"))
    assert [p.name for p in pngs] == ["step-0000003.png", "step-0000006.png"]
    image = cv2.imread(str(pngs[0]))
    assert image.shape == (2 * 32 * 4, 4 * 32 * 4, 3)  # generated over truth, 4 frames, 32 px, x4
    rows = [json.loads(line) for line in (tmp_path / "v" / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if "val/mse" in r]
    assert [r["step"] for r in val] == [3, 6] and all(r["val/mse"] > 0 for r in val)


def test_stage_one_under_fsdp_on_two_processes(manifest, tmp_path):
    """Teacher stage 1 (ReferenceNet + spatial layers trained) under accelerate's FSDP2 on 2 CPU processes, a
    third of the samples without reference: it shards, trains and writes a full checkpoint that loads."""
    import os
    import subprocess
    import sys

    from fada.stages.train_teacher import load_avatar

    out = tmp_path / "fsdp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "fada_cli.main", "train-teacher", "--recipe", "tiny-teacher", *TINY_TEST_MODEL,
           f"data.manifest={manifest}", f"train.output_dir={out}", "teacher.stage=1", "model.num_frames=1",
           "teacher.ref_drop=0.3", "data.batch_size=1", "train.max_steps=3", "train.checkpoint_every=3"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "FADA_FSDP_CPU": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "FSDP2: parameters sharded over 2 processes" in res.stdout + res.stderr
    net = load_avatar(out)
    assert net is not None and all(torch.isfinite(p).all() for p in net.parameters())


def test_init_from_an_export_names_missing_and_unexpected_weights(tmp_path):
    from fada.config import load_recipe
    from fada.export import write_model_folder
    from fada.models.avatar import AvatarNet, build_avatar_net
    from fada.stages.train_teacher import load_init
    from tests.fixtures import TINY_TEST_MODEL

    m = load_recipe("tiny-teacher", TINY_TEST_MODEL).model
    teacher = build_avatar_net(m)
    out = write_model_folder(tmp_path / "t", teacher, m, kind="teacher", dtype="fp32", log=lambda *_: None)
    load_init(build_avatar_net(m), str(out))  # fits exactly
    with pytest.raises(FadaError, match=r"missing \(e\.g\. .*cfg"):  # a student's CFG layers are not in a teacher
        load_init(AvatarNet.from_teacher(teacher, "tokens"), str(out))
    student = write_model_folder(tmp_path / "s", AvatarNet.from_teacher(teacher, "tokens"), m, kind="fast",
                                 dtype="fp32", log=lambda *_: None)
    with pytest.raises(FadaError, match="unexpected"):
        load_init(build_avatar_net(m), str(student))
