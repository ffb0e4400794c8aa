"""`fada import hallo` against Hallo's own code: a Hallo ``pretrained_models/`` folder (the goldens' tiny one, or
``$FADA_HALLO_GOLDEN``'s) is imported, and the model folder, loaded as any fada model, reproduces Hallo's whole
sampling run through fada's sampler, guidance and schedule: every step's unconditional and conditional prediction,
the guided output and the latents, within 1e-4 relative (max abs error / max abs value), float32. The schedule
mutants (v read as ε, leading spacing) must miss them; the architecture's mutants are in tests/models/hallo."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from fada.diffusion import Guidance, NoiseSchedule, guided, sample_ddim
from fada.errors import FadaError, MissingFileError
from fada.export import load_codec, load_net, read_spec
from fada.models.conditioning import Portrait, stack_region_masks
from fada.stages import import_hallo
from tests.models.hallo.conftest import golden_dir, hallo_pretrained

RTOL = 1e-4


def rel_err(got, want) -> float:
    return float((got.float() - want.float()).abs().max() / want.float().abs().max())


@pytest.fixture(scope="module")
def golden():
    from safetensors.torch import load_file

    return load_file(str(golden_dir() / "golden.safetensors"))


@pytest.fixture(scope="module")
def meta():
    return json.loads((golden_dir() / "golden_meta.json").read_text())


@pytest.fixture(scope="module")
def imported(tmp_path_factory, meta):
    root = hallo_pretrained(tmp_path_factory.mktemp("hallo") / "pretrained_models")
    p = meta["pipeline"]
    lines = []
    out = import_hallo.run(root, tmp_path_factory.mktemp("m") / "hallo", dtype="fp32", copy_models=False,
                           resolution=p["width"], num_frames=p["video_length"], motion_frames=p["n_motion_frames"],
                           log=lines.append)
    return out, lines


def portrait(golden) -> Portrait:
    levels = sorted({int(k.rsplit(".", 1)[1]) for k in golden if k.startswith("in.full_mask.")})
    full, face, lip = ([golden[f"in.{kind}_mask.{lv}"] for lv in levels] for kind in ("full", "face", "lip"))
    return Portrait(face_embeds=golden["in.face_emb"], face_region=golden["in.face_region"],
                    region_masks=stack_region_masks(full, face, lip), motion_scale=golden["in.motion_scale"])


def sampling_run(spec, net, golden, scale: float, schedule=None):
    """Hallo's pipeline call, through fada: one-scale guidance ([uncond, cond]) at the goldens' ``scale``, the
    imported folder's schedule and fada's DDIM, from the goldens' inputs. Returns the recorded per-step tensors."""
    schedule = schedule or spec.schedule
    guidance = Guidance(scale, scale)
    lat = golden["out.ref_latents"]  # [reference, motion frames]
    bank = net.encode_guidance_bank(lat[:1], lat[1:][None], golden["in.face_emb"],
                                    [kr for _, kr in guidance.branches])
    fn = net.model_fn(bank, golden["in.audio_emb"], portrait=portrait(golden))
    rec: dict = {}

    def spy(z, t, keep_audio, keep_ref):
        out = fn(z, t, keep_audio, keep_ref)
        k = len([n for n in rec if n.endswith("uncond")])
        rec[f"step{k}.latents_in"] = z[:1]
        rec[f"step{k}.noise_pred_uncond"], rec[f"step{k}.noise_pred_cond"] = out.chunk(2)
        return out

    eps_fn = guided(spy, guidance)

    def cfg_spy(z, t):
        out = eps_fn(z, t)
        rec[f"step{len([n for n in rec if n.endswith('cfg')])}.noise_pred_cfg"] = out
        return out

    steps = len(golden["timesteps"])
    final = sample_ddim(cfg_spy, golden["in.init_noise"], steps, schedule,
                        callback=lambda i, t, z: rec.__setitem__(f"step{i}.latents_out", z))
    rec["out.final_latents"] = final
    return rec


def test_import_writes_an_ordinary_model_folder_and_counts_every_key(imported, meta):
    out, lines = imported
    spec = read_spec(out)
    assert (spec.kind, spec.variant, spec.sampler) == ("teacher", "hallo", "ddim")
    assert spec.schedule == NoiseSchedule.from_config(meta["scheduler"])  # v, trailing, zero SNR, ᾱ_final = 1
    assert (spec.steps, spec.cfg_audio, spec.cfg_ref) == (40, 3.5, 3.5)  # Hallo's 40 steps at 3.5: 80 NFE
    assert Guidance(spec.cfg_audio, spec.cfg_ref).passes == 2
    assert spec.model.conditions.kind == "hallo" and spec.model.audio.kind == "wav2vec2"
    keys = json.loads((golden_dir() / "net_keys.json").read_text())["keys"]
    src = json.loads((out / "fada_model.json").read_text())["source"]
    assert src["keys_mapped"] + sum(src["keys_ignored"].values()) == len(keys)  # 100 %: mapped or ignored
    assert any("mapped" in line and "ignored with a reason" in line for line in lines)
    assert not list(out.rglob("*.pth")) and not list(out.rglob("*.pt"))  # nothing pickled in the folder


@torch.no_grad()
def test_golden_sampling_run_through_the_imported_folder(imported, golden, meta):
    out, _ = imported
    spec = read_spec(out)
    net = load_net(spec, dtype=torch.float32)
    codec = load_codec(spec, dtype=torch.float32)
    assert rel_err(codec.encode(golden["in.ref_image_pixels"][0]), golden["out.ref_latents"]) < RTOL
    assert rel_err(net.audio_tokens(golden["in.audio_emb"]), golden["out.audio_tokens"]) < RTOL
    assert torch.equal(spec.schedule.ddim_timesteps(len(golden["timesteps"]))[0], golden["timesteps"])
    assert meta["pipeline"]["guidance_scale"] == spec.cfg_audio == spec.cfg_ref  # Hallo's 3.5 is the default
    rec = sampling_run(spec, net, golden, meta["pipeline"]["guidance_scale"])
    errors = {k: rel_err(v, golden[k]) for k, v in rec.items()}
    assert len(errors) == 5 * len(golden["timesteps"]) + 1  # latents in / out, uncond, cond, guided; the end
    assert max(errors.values()) < RTOL, {k: f"{v:.2e}" for k, v in errors.items()}


@torch.no_grad()
@pytest.mark.parametrize("mutant", ["v read as epsilon", "leading spacing"])
def test_schedule_mutants_miss_the_goldens(imported, golden, meta, mutant):
    out, _ = imported
    spec = read_spec(out)
    net = load_net(spec, dtype=torch.float32)
    if mutant == "leading spacing":
        wrong = dataclasses.replace(spec.schedule, timestep_spacing="leading")
    else:  # the same ᾱ, the output read as ε (a schedule that validation would refuse: built around it)
        wrong = dataclasses.replace(spec.schedule)
        object.__setattr__(wrong, "prediction_type", "epsilon")
    rec = sampling_run(spec, net, golden, meta["pipeline"]["guidance_scale"], wrong)
    err = rel_err(rec["out.final_latents"], golden["out.final_latents"])
    assert not err < RTOL, (mutant, err)  # NaN (ε at ᾱ = 0) fails too


def test_missing_files_are_one_line_errors(tmp_path):
    root = hallo_pretrained(tmp_path / "pretrained_models")
    (root / "sd-vae-ft-mse" / "config.json").unlink()
    with pytest.raises(MissingFileError, match="sd-vae-ft-mse"):
        import_hallo.run(root, tmp_path / "m", log=lambda *_: None)
    with pytest.raises(MissingFileError, match="net.pth"):
        import_hallo.run(_without(root, "hallo/net.pth"), tmp_path / "m", log=lambda *_: None)
    with pytest.raises(FadaError, match="multiple of 64"):
        import_hallo.run(hallo_pretrained(tmp_path / "p2"), tmp_path / "m", resolution=100, log=lambda *_: None)


def _without(root, rel):
    (root / rel).unlink()
    return root


# ---------------------------------------------------------------------------------------------------------------
# the whole chain on a CPU: import -> generate -> distil Balanced and Fast -> export -> generate in 6 steps

CPU = ["data.batch_size=1", "data.num_workers=0", "train.mixed_precision=no", "train.gradient_checkpointing=false",
       "train.max_steps=2", "train.checkpoint_every=2", "train.log_every=1", "train.validate_every=0",
       "train.lr_warmup_steps=0", "distill.solver_steps=2"]


class NFECounter:
    """Counts denoiser function evaluations from real calls: the rows of every denoising-net forward, per clip of F
    frames (a row is one clip's pass)."""

    def __init__(self, net):
        self.rows = 0
        self._h = net.denoising_net.register_forward_hook(lambda m, args, kw, out: self._count(args), with_kwargs=True)

    def _count(self, args):
        self.rows += int(args[0].shape[0])

    def close(self):
        self._h.remove()


def _generate(model_dir, audio, mode, portrait):
    import numpy as np

    from fada.pipeline import FadaPipeline

    pipe = FadaPipeline.from_pretrained(model_dir)
    counter = NFECounter(pipe.net)
    stream = pipe.generate_frames(portrait, audio, mode=mode, crop=False, seed=1)
    frames = np.concatenate(list(stream))
    counter.close()
    return frames, counter.rows / stream.clips, stream


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    import shutil

    import numpy as np

    from fada.config import load_recipe
    from fada.stages.distill import run as distill
    from fada.stages.export import run as export
    from tests.fixtures import FakeFaceAnalysis, make_manifest, tiny_hallo_wav2vec2

    mp = pytest.MonkeyPatch()
    mp.setattr("fada.data.face_analysis.HalloFaceAnalysis", FakeFaceAnalysis)  # no InsightFace files here
    tmp = tmp_path_factory.mktemp("chain")
    root = hallo_pretrained(tmp / "pretrained_models")
    w2v = root / "wav2vec" / "wav2vec2-base-960h"
    shutil.rmtree(w2v)
    tiny_hallo_wav2vec2(w2v)
    (root / "face_analysis" / "models").mkdir(parents=True)
    teacher = import_hallo.run(root, tmp / "hallo", dtype="fp32", copy_models=False, resolution=64, num_frames=4,
                               log=lambda *_: None)
    manifest = make_manifest(tmp / "curated", n_clips=2, seconds=0.8, size=64, seed=1)
    out = {"teacher": teacher}
    for kind in ("balanced", "fast"):
        distill(load_recipe(f"hallo-{kind}", CPU + [
            f"distill.teacher={teacher}", f"data.manifest={manifest}", f"data.cache_dir={tmp / 'cache'}",
            f"train.output_dir={tmp / kind}", "model.resolution=64", "model.num_frames=4"], stage="distill"),
            progress=False)
        out[kind] = export(tmp / kind, tmp / f"{kind}-model", dtype="fp32")
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(int(16000 * 0.32)) * 0.1).astype(np.float32)  # 8 frames: 2 clips of 4
    portrait = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    yield out, audio, portrait
    mp.undo()


def test_hallo_teacher_to_six_step_students_on_a_cpu(chain):
    """Hallo's protocol on the imported teacher is 80 NFE per clip; the Balanced student (multi-CFG, 3 branches)
    18; the Fast one 6; counted from the denoising net's real calls. Every stage reads the imported folder as an
    ordinary model, with the per-portrait conditions (computed once per portrait, and per curated clip)."""
    import numpy as np

    out, audio, portrait = chain
    calls = FakeFaceAnalysisCalls()
    frames, nfe, stream = _generate(out["teacher"], audio, "teacher", portrait)
    assert (stream.clips, stream.plan.steps, stream.plan.passes, nfe) == (2, 40, 2, 80)
    assert frames.shape == (8, 64, 64, 3) and calls.since() == 1  # conditions once per video
    for kind, want in (("balanced", 18), ("fast", 6)):
        spec = read_spec(out[kind])
        assert spec.schedule == read_spec(out["teacher"]).schedule  # the student keeps Hallo's parametrisation
        assert spec.model.conditions.kind == "hallo" and spec.steps == 6
        frames, nfe, stream = _generate(out[kind], audio, kind, portrait)
        assert frames.shape == (8, 64, 64, 3) and np.isfinite(frames).all()
        assert (stream.plan.steps, nfe) == (6, want), (kind, stream.plan.describe())


class FakeFaceAnalysisCalls:
    def __init__(self):
        from tests.fixtures import FakeFaceAnalysis

        self.cls, self.start = FakeFaceAnalysis, FakeFaceAnalysis.calls

    def since(self) -> int:
        return self.cls.calls - self.start
