"""`fada export`: checkpoint -> self-contained model folder; loading checks shapes and names the wrong file."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from fada.config import DistillRecipe, from_dict, recipe_to_yaml, to_dict
from fada.errors import FadaError, MissingFileError
from fada.export import SPEC_NAME, load_codec, load_net, read_spec
from fada.models.avatar import build_avatar_net
from fada.stages import export
from fada.training.checkpoint import load_model_weights, save_checkpoint

from .generate_helpers import _isolated_cache, make_checkpoint, tiny_recipe  # noqa: F401


def _no_pickle(root):
    bad = [p for p in root.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
    assert not bad, bad


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_export_fast_layout_and_weights(tmp_path, dtype):
    ckpt = make_checkpoint(tmp_path / "run", "fast")
    out = export.run(ckpt, tmp_path / "model", dtype=dtype, ema=True)
    for rel in (SPEC_NAME, "net/avatar_config.json", "net/denoising_net/model.safetensors",
                "net/reference_net/model.safetensors", "net/audio_proj/model.safetensors", "net/cfg/model.safetensors",
                "scheduler/scheduler_config.json"):
        assert (out / rel).is_file(), rel
    _no_pickle(out)
    spec = json.loads((out / SPEC_NAME).read_text())
    assert spec["kind"] == "fast" and spec["cfg_mode"] == "tokens" and spec["dtype"] == dtype
    assert spec["sampler"] == {"name": "perflow", "steps": 6, "num_windows": 4, "extra_steps": "early"}  # tiny-fast
    assert spec["guidance"] == {"cfg_audio": 3.0, "cfg_ref": 1.0}  # tiny-fast's model.cfg.guidance
    assert spec["audio"]["kind"] == "mel" and spec["vae"] == {"kind": "pixel", "factor": 2}
    assert spec["source"]["weights"] == "raw"  # no EMA in this checkpoint: said, and the raw weights exported
    sched = json.loads((out / "scheduler/scheduler_config.json").read_text())
    assert sched["_class_name"] == "PeRFlowScheduler" and sched["num_windows"] == 4 and sched["extra_steps"] == "early"

    s = read_spec(out)
    want = build_avatar_net(tiny_recipe("fast").model, student=True)
    load_model_weights(ckpt, want, use_ema=False)
    got = load_net(s)
    tol = 0 if dtype == "fp32" else 1e-3
    for (k, a), b in zip(want.state_dict().items(), got.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=tol, rtol=tol), k
    assert load_file(str(out / "net/denoising_net/model.safetensors"))["unet.conv_in.weight"].dtype == \
        {"fp32": torch.float32, "fp16": torch.float16}[dtype]


def test_export_kinds_from_recipe_and_run_folder(tmp_path):
    make_checkpoint(tmp_path / "t", "teacher", step=5)
    make_checkpoint(tmp_path / "t", "teacher", step=9)
    out = export.run(tmp_path / "t", tmp_path / "teacher", dtype="bf16")  # a run folder: its latest checkpoint
    s = read_spec(out)
    assert (s.kind, s.sampler, s.steps, s.num_windows) == ("teacher", "ddim", 25, 0)
    assert (s.cfg_audio, s.cfg_ref, s.modes) == (3.0, 2.5, ("teacher",))  # tiny-teacher's model.cfg.guidance
    assert s.source["step"] == 9
    assert json.loads((out / "scheduler/scheduler_config.json").read_text())["_class_name"] == "DDIMScheduler"

    s = read_spec(export.run(make_checkpoint(tmp_path / "b", "balanced"), tmp_path / "balanced"))
    # tiny-balanced's model.cfg.guidance [1.5, 1.0] becomes the folder's default (the paper's 2.5 otherwise)
    assert (s.kind, s.sampler, s.steps, s.num_windows, s.cfg_audio, s.cfg_ref) == ("balanced", "perflow", 6, 4,
                                                                                   1.5, 1.0)
    s = read_spec(export.run(make_checkpoint(tmp_path / "r", "rflow"), tmp_path / "rflow"))
    assert (s.kind, s.variant, s.num_windows) == ("balanced", "rflow", 1)


def test_extra_steps_exported_checked_and_defaulted(tmp_path):
    out = export.run(make_checkpoint(tmp_path / "run", "balanced"), tmp_path / "m", dtype="fp32")
    assert read_spec(out).extra_steps == "early"  # tiny-balanced's distill.extra_steps
    spec_file, sched_file = out / SPEC_NAME, out / "scheduler/scheduler_config.json"
    spec, sched = json.loads(spec_file.read_text()), json.loads(sched_file.read_text())
    spec["sampler"]["extra_steps"] = "late"  # the spec and the scheduler disagree: the scheduler file is named
    spec_file.write_text(json.dumps(spec))
    with pytest.raises(FadaError, match=r"scheduler_config.json: extra_steps 'early' != 'late' in fada_model.json"):
        read_spec(out)
    spec["sampler"]["extra_steps"] = "sideways"
    spec_file.write_text(json.dumps(spec))
    with pytest.raises(FadaError, match=r"fada_model.json: sampler.extra_steps 'sideways' is not one of early, late"):
        read_spec(out)
    del spec["sampler"]["extra_steps"], sched["extra_steps"]  # a folder written before the option: the paper's
    spec_file.write_text(json.dumps(spec))
    sched_file.write_text(json.dumps(sched))
    assert read_spec(out).extra_steps == "early"
    late = export.run(make_checkpoint(tmp_path / "run2", "balanced", extra=["distill.extra_steps=late"]),
                      tmp_path / "m2", dtype="fp32")
    assert read_spec(late).extra_steps == "late"


def test_export_ema_choice(tmp_path):
    ckpt = make_checkpoint(tmp_path / "run", "balanced", ema=True)  # EMA = raw weights halved
    raw = load_file(str(ckpt / "model.safetensors"))
    k = "denoising_net.unet.conv_in.weight"
    for ema, scale in ((True, 0.5), (False, 1.0)):
        out = export.run(ckpt, tmp_path / f"m{ema}", dtype="fp32", ema=ema)
        got = load_file(str(out / "net/denoising_net/model.safetensors"))["unet.conv_in.weight"]
        assert torch.allclose(got, raw[k] * scale)
        assert read_spec(out).source["weights"] == ("ema" if ema else "raw")


def test_loading_names_the_wrong_file(tmp_path):
    out = export.run(make_checkpoint(tmp_path / "run", "fast"), tmp_path / "m", dtype="fp32")
    # a tensor of the wrong shape
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    f = bad / "net/audio_proj/model.safetensors"
    state = load_file(str(f))
    state["mlp.0.weight"] = torch.zeros(3, 3)
    save_file(state, str(f))
    with pytest.raises(FadaError, match=r"audio_proj/model.safetensors: mlp.0.weight has shape \(3, 3\)"):
        load_net(read_spec(bad))
    # the spec disagrees with the net's own config
    bad2 = tmp_path / "bad2"
    shutil.copytree(out, bad2)
    spec = json.loads((bad2 / SPEC_NAME).read_text())
    spec["latent_channels"] = 4
    (bad2 / SPEC_NAME).write_text(json.dumps(spec))
    with pytest.raises(FadaError, match=r"net/avatar_config.json: latent_channels is 12 but fada_model.json says 4"):
        read_spec(bad2)
    # a missing part
    (bad2 / "scheduler/scheduler_config.json").unlink()
    spec["latent_channels"] = 12
    (bad2 / SPEC_NAME).write_text(json.dumps(spec))
    with pytest.raises(MissingFileError, match="scheduler_config.json"):
        read_spec(bad2)


def test_export_errors(tmp_path):
    with pytest.raises(MissingFileError, match="checkpoint not found"):
        export.run(tmp_path / "nope", tmp_path / "m")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FadaError, match="neither a checkpoint"):
        export.run(tmp_path / "empty", tmp_path / "m")
    ckpt = make_checkpoint(tmp_path / "run", "fast")
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "notes.txt").write_text("mine")
    with pytest.raises(FadaError, match="not a model folder"):
        export.run(ckpt, tmp_path / "occupied")
    assert (tmp_path / "occupied" / "notes.txt").read_text() == "mine"
    out = export.run(ckpt, tmp_path / "m")
    export.run(ckpt, out, dtype="fp32")  # re-exporting over a model folder replaces it
    assert read_spec(out).dtype == "fp32"
    with pytest.raises(FadaError, match="training checkpoint, not a model folder"):
        read_spec(ckpt)
    (ckpt / "recipe.yaml").unlink()
    with pytest.raises(MissingFileError, match="recipe.yaml"):
        export.run(ckpt, tmp_path / "m2")


@pytest.mark.parametrize("copy_vae", [True, False])
def test_sd_vae_copied_or_referenced(tmp_path, copy_vae):
    from diffusers import AutoencoderKL

    sd = tmp_path / "sd15"
    AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, norm_num_groups=4,
                  latent_channels=4).save_pretrained(str(sd / "vae"), safe_serialization=True)
    d = to_dict(tiny_recipe("fast"))
    d["model"]["vae"] = {"kind": "sd", "path": str(sd)}
    recipe = from_dict(DistillRecipe, d)
    net = build_avatar_net(recipe.model, student=True)
    ckpt = save_checkpoint(tmp_path / "run", 1, net, recipe_yaml=recipe_to_yaml(recipe))
    out = export.run(ckpt, tmp_path / "m", dtype="fp32", copy_vae=copy_vae)
    spec = json.loads((out / SPEC_NAME).read_text())
    assert spec["vae"]["path"] == ("vae" if copy_vae else str(sd.resolve()))
    assert (out / "vae" / "config.json").is_file() == copy_vae
    if copy_vae:
        shutil.rmtree(sd)  # the folder is self-contained
    s = read_spec(out)
    codec = load_codec(s)
    assert codec.latent_channels == 4 and s.latent_channels == 4
    _no_pickle(out)


V_SCHEDULE = ["model.schedule.prediction_type=v_prediction", "model.schedule.timestep_spacing=trailing",
              "model.schedule.beta_schedule=linear", "model.schedule.rescale_betas_zero_snr=true",
              "model.schedule.set_alpha_to_one=true"]


@pytest.mark.parametrize("kind", ["teacher", "balanced"])
def test_a_v_prediction_folder_is_read_completely_and_checked(tmp_path, kind):
    """The scheduler config of a v / trailing / zero-SNR model is written whole and read back whole; a folder whose
    scheduler says otherwise than its net is refused, naming the file (it would be sampled in the wrong
    parametrisation)."""
    from fada.config import load_recipe
    from fada.export import write_model_folder
    from fada.models.avatar import AvatarNet
    from tests.fixtures import TINY_TEST_MODEL

    m = load_recipe("tiny-teacher", TINY_TEST_MODEL + V_SCHEDULE).model
    net = build_avatar_net(m)
    if kind != "teacher":
        net = AvatarNet.from_teacher(net, "none")
    out = write_model_folder(tmp_path / "m", net, m, kind=kind, dtype="fp32", log=lambda *_: None)
    cfg = json.loads((out / "scheduler/scheduler_config.json").read_text())
    assert cfg["prediction_type"] == "v_prediction" and cfg["timestep_spacing"] == "trailing"
    assert cfg["rescale_betas_zero_snr"] is True and cfg["set_alpha_to_one"] is True
    s = read_spec(out)
    assert s.schedule == net.schedule and s.schedule.zero_terminal_snr
    assert load_net(s).schedule == s.schedule
    cfg["prediction_type"] = "epsilon"
    cfg["rescale_betas_zero_snr"] = False
    (out / "scheduler/scheduler_config.json").write_text(json.dumps(cfg))
    with pytest.raises(FadaError, match="scheduler_config.json.*differs.*prediction_type"):
        read_spec(out)
    cfg["timestep_spacing"] = "linspace"
    (out / "scheduler/scheduler_config.json").write_text(json.dumps(cfg))
    with pytest.raises(FadaError, match="timestep_spacing"):
        read_spec(out)


def test_taesd_decoder_copied_and_used_by_default(tmp_path):
    """``--decoder taesd:PATH`` copies the TAESD folder into taesd/, the spec names it, a pipeline decodes with it
    by default and ``decoder="sd"`` goes back to the SD VAE."""
    from fada.models.taesd import TinyDecoder
    from fada.pipeline import FadaPipeline
    from tests.fixtures import tiny_taesd

    from .generate_helpers import export_sd_model

    src = tiny_taesd(tmp_path / "taesd-src")
    out = export_sd_model(tmp_path, decoder=f"taesd:{src}")
    spec = json.loads((out / SPEC_NAME).read_text())
    assert spec["decoder"] == {"kind": "taesd", "path": "taesd"}
    assert sorted(p.name for p in (out / "taesd").iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    _no_pickle(out)
    shutil.rmtree(src)  # the folder carries its own copy
    assert read_spec(out).decoder == {"kind": "taesd", "path": str(out / "taesd")}

    pipe = FadaPipeline.from_pretrained(out, device="cpu")
    assert isinstance(pipe.decoder, TinyDecoder) and pipe.decoder.name == "taesd(x8, 4ch)"
    assert pipe.codec.name == "sd-vae(x8, 4ch)"  # the reference is still encoded by the SD VAE
    sd = FadaPipeline.from_pretrained(out, device="cpu", decoder="sd")
    assert sd.decoder is sd.codec
    assert isinstance(FadaPipeline.from_pretrained(out, device="cpu", decoder="taesd").decoder, TinyDecoder)

    shutil.rmtree(out / "taesd")
    with pytest.raises(MissingFileError, match=r"TAESD decoder config not found: .*taesd/config.json"):
        read_spec(out)


def test_taesd_export_errors(tmp_path):
    from tests.fixtures import tiny_taesd

    from .generate_helpers import export_sd_model

    ckpt = make_checkpoint(tmp_path / "run", "fast")  # the pixel codec: not the SD VAE's latent space
    src = tiny_taesd(tmp_path / "taesd")
    with pytest.raises(FadaError, match="TAESD decodes SD VAE latents; this model uses the pixel codec"):
        export.run(ckpt, tmp_path / "m", decoder=f"taesd:{src}")
    with pytest.raises(FadaError, match="--decoder taesd: name the TAESD folder"):
        export.run(ckpt, tmp_path / "m", decoder="taesd")
    with pytest.raises(FadaError, match="--decoder 'vae'"):
        export.run(ckpt, tmp_path / "m", decoder="vae")
    x4 = tiny_taesd(tmp_path / "x4", stages=3)
    with pytest.raises(FadaError, match=r"x4/config.json: TAESD decodes 4 latent channels at x4, .* makes 4 "
                                        r"channels at x8") as e:
        export_sd_model(tmp_path, decoder=f"taesd:{x4}")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "m").exists() and not (tmp_path / "model-sd-fast").exists()
    out = export_sd_model(tmp_path / "plain", decoder="sd")  # sd: the VAE decodes, nothing copied
    assert "decoder" not in json.loads((out / SPEC_NAME).read_text()) and not (out / "taesd").exists()
    assert read_spec(out).decoder == {}


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_model_folder_modes_follow_the_umask(tmp_path, umask, mask):
    """The folder is assembled under a temporary name (tempfile: 0700) and renamed: it must end as mkdir would
    make it, on a first export and on one that replaces an older folder."""
    import os
    import stat

    umask(mask)
    ckpt = make_checkpoint(tmp_path / "run", "fast")
    for _ in range(2):  # the second export swaps the first one out
        out = export.run(ckpt, tmp_path / "model")
        for p in [out, *out.rglob("*")]:
            want = (0o777 if p.is_dir() else 0o666) & ~mask
            assert stat.S_IMODE(os.stat(p).st_mode) == want, p
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
