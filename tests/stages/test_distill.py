"""`fada distill` on tiny models: every variant runs, the Fast target is Eq. 9's, training resumes exactly."""

import json

import pytest
import torch

from fada.config import load_recipe
from fada.errors import FadaError
from fada.stages.distill import run
from fada.training import latest_checkpoint
from tests.fixtures import TINY_TEST_MODEL, make_manifest


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from fada.stages.train_teacher import run as train_teacher

    root = tmp_path_factory.mktemp("distill")
    manifest = make_manifest(root / "curated", n_clips=3)
    r = load_recipe("tiny-teacher", TINY_TEST_MODEL + [f"data.manifest={manifest}", f"train.output_dir={root / 't'}",
                                                       "data.batch_size=2", "train.max_steps=2"], stage="teacher")
    train_teacher(r, progress=False)
    return manifest, root / "t"


def recipe(teacher, out, name="tiny-fast", *extra):
    manifest, tdir = teacher
    return load_recipe(name, TINY_TEST_MODEL + [
        f"data.manifest={manifest}", f"distill.teacher={tdir}", f"train.output_dir={out}", "data.batch_size=2",
        "train.max_steps=4", "train.checkpoint_every=2", "train.log_every=1", *extra], stage="distill")


@pytest.mark.parametrize("name,extra", [
    ("tiny-fast", []), ("tiny-balanced", []), ("tiny-fast", ["model.cfg.mode=time_embed", "distill.mixed.mode=off"]),
    ("tiny-fast", ["model.cfg.mode=layer", "distill.mixed.mode=fixed", "distill.mixed.fixed=0.2"]),
    ("tiny-fast", ["model.cfg.mode=none", "distill.mixed.mode=adaptive_unlimited"]),
    ("tiny-balanced", ["distill.variant=rflow", "distill.mixed.mode=adaptive"]),
    ("tiny-balanced", ["distill.timesteps=inference", "distill.mixed.mode=off"]),
])
def test_variants_train_and_log(teacher, tmp_path, name, extra):
    r = recipe(teacher, tmp_path / "run", name, *extra)
    res = run(r, progress=False)
    ck = latest_checkpoint(tmp_path / "run")
    assert res.step == 4 and ck.name == "step-0000004"
    kind = json.loads((ck / "state.json").read_text())["kind"]
    assert kind == ("rflow" if "distill.variant=rflow" in extra else name.split("-")[1])
    last = res.metrics[-1]
    assert torch.isfinite(torch.tensor(last["loss"]))
    mixed_off = "distill.mixed.mode=off" in extra
    assert ("w_mean" in last) != mixed_off  # the GT pass and its stats exist exactly when mixed supervision is on
    if r.distill.mixed.mode == "fixed":  # the tiny recipes' own W (Balanced 3, Fast 4), or the override's
        assert last["w_mean"] == pytest.approx(r.distill.mixed.fixed)


def test_resume_equals_uninterrupted(teacher, tmp_path):
    from safetensors.torch import load_file

    run(recipe(teacher, tmp_path / "a"), progress=False)
    run(recipe(teacher, tmp_path / "b"), progress=False, stop_after=2)
    run(recipe(teacher, tmp_path / "b"), progress=False)
    a = load_file(str(latest_checkpoint(tmp_path / "a") / "model.safetensors"))
    b = load_file(str(latest_checkpoint(tmp_path / "b") / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_fast_teacher_endpoint_is_eq9_of_three_branches(teacher, tmp_path):
    """The batched, per-sample-scaled teacher solve equals an independent one built from three separate passes."""
    from fada.data.dataset import collate
    from fada.diffusion import perflow_window, sample_t, solve_indices
    from fada.models.audio import build_audio_frontend
    from fada.models.vae import build_vae
    from fada.stages.distill import load_teacher
    from fada.stages.train_teacher import build_data
    from fada.training.distill import DistillSettings, teacher_endpoint

    r = recipe(teacher, tmp_path / "run")
    vae, fe = build_vae(r.model.vae), build_audio_frontend(r.model.audio)
    net = load_teacher(r, vae.latent_channels, fe.feature_shape)
    batch = collate([build_data(r, fe, vae, progress=False)[(i, 0)] for i in range(2)])
    sched = net.schedule
    ac = sched.alphas_cumprod
    w = perflow_window(batch["x0"], torch.randn_like(batch["x0"]), sample_t(2, torch.Generator().manual_seed(1)), 4,
                       sched)
    scales = torch.tensor([[6.5, 2.0], [3.0, 1.5]])
    s = DistillSettings.from_config(r.distill, "tokens")
    ones = torch.ones(2, dtype=torch.bool)
    got = teacher_endpoint(net, batch, w, s, sched, ones, ones, scales)

    bank = net.encode_bank(batch["ref"], batch["motion"])
    z = w.z_s
    idx = solve_indices(w.index_s, w.index_e, s.solver_steps)
    with torch.no_grad():
        for k in range(s.solver_steps):
            t = idx[k].float()
            e_a = net(z, t, batch["audio"], bank, keep_audio=ones, keep_ref=ones)
            e_r = net(z, t, batch["audio"], bank, keep_audio=~ones, keep_ref=ones)
            e_b = net(z, t, batch["audio"], bank, keep_audio=~ones, keep_ref=~ones)
            ca, cr = scales[:, 0].view(2, 1, 1, 1, 1), scales[:, 1].view(2, 1, 1, 1, 1)
            eps = ca * (e_a - e_r) + cr * (e_r - e_b) + e_b  # Eq. 9, written out
            # ᾱ at a train index; −1 is the clean end (ᾱ = 1 with the recipe's set_alpha_to_one, else ᾱ[0])
            ab, ab_next = (torch.where(i < 0, torch.tensor(sched.final_alpha_cumprod), ac[i.clamp(min=0)])
                           .view(2, 1, 1, 1, 1) for i in (idx[k], idx[k + 1]))
            a, a_next = ab.sqrt(), ab_next.sqrt()  # DDIM written out: x̂0, then the jump to ᾱ_next
            z = a_next * (z - (1 - ab).sqrt() * eps) / a + (1 - ab_next).sqrt() * eps
    torch.testing.assert_close(got, z, rtol=1e-4, atol=1e-4)


def test_missing_teacher_is_a_user_error(teacher, tmp_path):
    with pytest.raises(FadaError, match="distill.teacher"):
        run(recipe(teacher, tmp_path / "x", "tiny-fast", "distill.teacher=null"), progress=False)


def test_two_processes_when_every_sample_drops_the_reference(teacher, tmp_path):
    """Balanced distillation at batch 1 with ref_drop 1 on 2 CPU processes (gloo): no student pass reads the bank,
    yet DDP must still reduce the ReferenceNet's gradients (it stopped at step 2 before)."""
    import os
    import subprocess
    import sys

    manifest, tdir = teacher
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "fada_cli.main", "distill", "--recipe", "tiny-balanced", *TINY_TEST_MODEL, f"data.manifest={manifest}",
           f"distill.teacher={tdir}", f"train.output_dir={out}", "distill.ref_drop=1.0", "data.batch_size=1",
           "train.max_steps=3", "train.checkpoint_every=3"]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert latest_checkpoint(out).name == "step-0000003"


def test_memory_options_train_resume_and_export(teacher, tmp_path):
    """The 24 GB options together: LoRA + audio + CFG groups, Adafactor, bf16 with frozen weights in bf16, EMA in
    host memory. Frozen weights are stored in bf16, the run resumes exactly, and the export merges the adapters."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from fada.models.avatar import AvatarNet
    from fada.stages.export import run as export

    opts = ["distill.trainable=[lora,audio,cfg]", "distill.lora_rank=4", "train.optimizer=adafactor",
            "train.mixed_precision=bf16", "train.ema_device=cpu"]
    run(recipe(teacher, tmp_path / "a", "tiny-fast", *opts), progress=False)
    run(recipe(teacher, tmp_path / "b", "tiny-fast", *opts), progress=False, stop_after=2)
    run(recipe(teacher, tmp_path / "b", "tiny-fast", *opts), progress=False)
    ck = latest_checkpoint(tmp_path / "a")
    a, b = load_file(str(ck / "model.safetensors")), load_file(str(latest_checkpoint(tmp_path / "b") /
                                                                     "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    lora = [k for k in a if ".lora_" in k]
    assert lora and all(a[k].dtype == torch.float32 for k in lora)
    assert a["audio_proj.mlp.0.weight"].dtype == torch.float32  # trained group: float32
    base = next(k for k in a if k.endswith("attn1.to_q.base_layer.weight"))
    assert a[base].dtype == torch.bfloat16 and a["reference_net.unet.conv_in.weight"].dtype == torch.bfloat16
    ema = load_file(str(ck / "ema.safetensors"))
    assert set(ema) == {n for n in a if ".lora_" in n or n.startswith("audio_proj.")
                        or (n.startswith("denoising_net.") and ".attn2." in n) or n.startswith("cfg.") or ".cfg." in n}
    out = export(tmp_path / "a", tmp_path / "model", dtype="fp32")
    with safe_open(str(out / "net" / "denoising_net" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any("lora_" in k or "base_layer" in k for k in keys)
    net = AvatarNet.from_pretrained(out / "net")
    plain = dict(net.named_parameters())
    name = base.replace(".base_layer", "")
    A, B = ema[base.replace("base_layer", "lora_A.default")], ema[base.replace("base_layer", "lora_B.default")]
    torch.testing.assert_close(plain[name], a[base].float() + B @ A, rtol=1e-5, atol=1e-5)  # alpha = rank


def test_bad_trainable_group_is_one_config_error(teacher, tmp_path):
    from fada.errors import ConfigError

    with pytest.raises(ConfigError, match="distill.trainable"):
        recipe(teacher, tmp_path / "x", "tiny-fast", "distill.trainable=[unet]")


def torchrun(args, env=None, timeout=900):
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "fada_cli.main", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_fast_with_the_24gb_options_on_two_processes(teacher, tmp_path):
    """Fast distillation with LoRA + audio + CFG groups and Adafactor under DDP on 2 CPU processes: the frozen base
    and the adapters live side by side in one DDP module, and the run checkpoints."""
    manifest, tdir = teacher
    out = tmp_path / "ddp"
    torchrun(["distill", "--recipe", "tiny-fast", *TINY_TEST_MODEL, f"data.manifest={manifest}",
              f"distill.teacher={tdir}", f"train.output_dir={out}", "data.batch_size=1", "train.max_steps=2",
              "train.checkpoint_every=2", "distill.trainable=[lora,audio,cfg]", "distill.lora_rank=4",
              "train.optimizer=adafactor"])
    assert latest_checkpoint(out).name == "step-0000002"


def test_fsdp_on_two_processes_saves_full_tensors_and_resumes(teacher, tmp_path):
    """Fast distillation of the whole student under accelerate's FSDP2 on 2 CPU processes (gloo; FADA_FSDP_CPU,
    since accelerate enables FSDP only on GPUs): parameters are sharded, yet checkpoints hold full tensors in the
    usual layout; a run stopped at step 2 and resumed under FSDP equals an uninterrupted one, and the FSDP
    checkpoint resumes in a single process and exports. (The stopped run is the uninterrupted run's folder with
    its last checkpoint removed: two launches instead of three.)"""
    import shutil

    from safetensors.torch import load_file

    from fada.stages.export import run as export

    manifest, tdir = teacher
    env = {"FADA_FSDP_CPU": "1"}

    def args(out, steps):
        return ["distill", "--recipe", "tiny-fast", *TINY_TEST_MODEL, f"data.manifest={manifest}",
                f"distill.teacher={tdir}", f"train.output_dir={out}", "data.batch_size=1",
                f"train.max_steps={steps}", "train.checkpoint_every=2", "train.ema_decay=0.9"]

    out = torchrun(args(tmp_path / "a", 4), env)
    assert "FSDP2: parameters sharded over 2 processes" in out.stdout + out.stderr
    assert [c.name for c in sorted((tmp_path / "a").glob("step-*"))] == ["step-0000002", "step-0000004"]
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "step-0000002", tmp_path / "b" / "step-0000002")
    torchrun(args(tmp_path / "b", 4), env)  # resume=auto from step 2, under FSDP
    ca, cb = latest_checkpoint(tmp_path / "a"), latest_checkpoint(tmp_path / "b")
    a, b = load_file(str(ca / "model.safetensors")), load_file(str(cb / "model.safetensors"))
    from fada.stages.train_teacher import load_avatar

    full = {n: p.shape for n, p in load_avatar(tmp_path / "a").state_dict().items()}  # unsharded shapes
    assert set(a) == set(b) == set(full) and all(a[k].shape == full[k] for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5, msg=k)
    ema_a, ema_b = load_file(str(ca / "ema.safetensors")), load_file(str(cb / "ema.safetensors"))
    for k in ema_a:
        torch.testing.assert_close(ema_a[k], ema_b[k], rtol=0, atol=1e-5, msg=k)
    from fada.training.state import optimizer_state_from_files

    state, groups = optimizer_state_from_files(ca)
    assert len(groups[0]["params"]) == len(state) and all("exp_avg" in s for s in state.values())
    # portable: the FSDP checkpoint resumes in one process (no sharding) and exports
    shutil.copytree(tmp_path / "a", tmp_path / "c")
    r = load_recipe("tiny-fast", TINY_TEST_MODEL + [
        f"data.manifest={manifest}", f"distill.teacher={tdir}", f"train.output_dir={tmp_path / 'c'}",
        "data.batch_size=1", "train.max_steps=5", "train.checkpoint_every=5", "train.ema_decay=0.9"], stage="distill")
    assert run(r, progress=False).step == 5
    assert (export(tmp_path / "a", tmp_path / "model", dtype="fp32") / "net").is_dir()


def test_rflow_is_a_balanced_student_sampled_with_multi_cfg(teacher, tmp_path):
    """Table 2's RFlow baseline: guidance-1 targets, so it is exported as a one-window Balanced model whose multi-CFG
    at sampling is the only guidance (before, it distilled the guided teacher and was guided again)."""
    from fada.errors import ConfigError
    from fada.export import read_spec
    from fada.pipeline import FadaPipeline
    from fada.stages.export import run as export

    run(recipe(teacher, tmp_path / "r", "tiny-balanced", "distill.variant=rflow"), progress=False)
    spec = read_spec(export(tmp_path / "r", tmp_path / "m", dtype="fp32"))
    assert (spec.kind, spec.variant, spec.num_windows, spec.modes) == ("balanced", "rflow", 1, ("balanced",))
    pipe = FadaPipeline.from_pretrained(spec.root)
    assert pipe.plan().nfe_per_clip == 18
    assert pipe.net.precond_windows == 1  # its one window's lines are read as their noising-path points
    with pytest.raises(ConfigError, match="model.cfg.mode"):
        recipe(teacher, tmp_path / "x", "tiny-fast", "distill.variant=rflow")


def test_fast_without_cfg_distillation_records_its_trained_scales_and_refuses_balanced(teacher, tmp_path):
    """A Fast student told no scales learned the teacher guided at 6.5 / 2.0: its folder says so, and running it with
    multi-CFG passes on top (Balanced mode) is refused as double guidance."""
    from fada.export import read_spec
    from fada.pipeline import FadaPipeline
    from fada.stages.export import run as export

    run(recipe(teacher, tmp_path / "f", "tiny-fast", "model.cfg.mode=none", "model.cfg.guidance=null",
               "train.max_steps=2"), progress=False)
    spec = read_spec(export(tmp_path / "f", tmp_path / "m", dtype="fp32"))
    assert (spec.cfg_audio, spec.cfg_ref) == (6.5, 2.0) and spec.modes == ("fast",)
    with pytest.raises(FadaError, match="guidance twice"):
        FadaPipeline.from_pretrained(spec.root).plan("balanced")


def test_tcd_baseline_trains_exports_and_samples_with_diffusers_tcd(teacher, tmp_path):
    """Table 2's TCD: distilled like Balanced, exported with diffusers' TCDScheduler, sampled with multi-CFG
    (3 passes per step)."""
    import numpy as np

    from fada.errors import ConfigError
    from fada.export import read_spec
    from fada.pipeline import FadaPipeline
    from fada.stages.export import run as export

    res = run(recipe(teacher, tmp_path / "t", "tiny-balanced", "distill.variant=tcd", "distill.mixed.mode=off"),
              progress=False)
    assert res.step == 4 and torch.isfinite(torch.tensor(res.metrics[-1]["loss"]))
    spec = read_spec(export(tmp_path / "t", tmp_path / "m", dtype="fp32"))
    assert (spec.kind, spec.variant, spec.sampler, spec.tcd) == ("balanced", "tcd", "tcd",
                                                                 {"gamma": 0.3, "original_steps": 50})
    pipe = FadaPipeline.from_pretrained(spec.root)
    assert pipe.net.precond_windows == 0  # a TCD student is queried on the noising path
    plan = pipe.plan()
    assert (plan.sampler, plan.steps, plan.nfe_per_clip) == ("tcd", 6, 18) and "TCD 6 steps" in plan.describe()
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    a = np.concatenate(list(pipe.generate_frames(np.full((32, 32, 3), 128, np.uint8), audio, crop=False, seed=3)))
    b = np.concatenate(list(pipe.generate_frames(np.full((32, 32, 3), 128, np.uint8), audio, crop=False, seed=3)))
    assert a.shape[1:] == (32, 32, 3) and np.array_equal(a, b)  # stochastic steps, yet reproducible per seed
    from fada.export import spec_for

    mem_spec = spec_for(pipe.net, spec.model, "balanced", tcd=spec.tcd)  # described in memory, nothing read
    assert (mem_spec.sampler, mem_spec.variant, mem_spec.schedule) == ("tcd", "tcd", spec.schedule)
    mem = FadaPipeline.from_net(pipe.net, mem_spec)
    c = np.concatenate(list(mem.generate_frames(np.full((32, 32, 3), 128, np.uint8), audio, crop=False, seed=3)))
    assert np.array_equal(a, c)
    d = np.concatenate(list(mem.generate_frames(np.full((32, 32, 3), 128, np.uint8), audio, crop=False, seed=4)))
    assert not np.array_equal(a, d)
    with pytest.raises(ConfigError, match="distill.mixed.mode"):
        recipe(teacher, tmp_path / "x", "tiny-balanced", "distill.variant=tcd")
