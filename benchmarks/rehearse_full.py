"""Full-shape rehearsal: every stage with the shipped full recipes at SD1.5 / wav2vec2-base shapes, random weights.

    python benchmarks/rehearse_full.py                         # 256x256, 4 frames per clip, 2 steps per stage
    python benchmarks/rehearse_full.py --resolution 512 --frames 16 --device-note "A100 80GB"

Writes random-weight stand-ins in the real layouts (fada.standins: a diffusers SD1.5 folder with SD1.5's own
unet/ and vae/ configs, a transformers Wav2Vec2ForCTC folder with wav2vec2-base-960h's config) and a small
synthetic curated corpus, then runs, each in its own process so that its peak memory is its own:

    teacher-stage1   recipes/teacher.yaml, teacher.stage=1 model.num_frames=1 + the 24 GB options below
    teacher-stage2   recipes/teacher.yaml from stage 1's checkpoint
    export-teacher   fada export (fp16)
    balanced, fast   recipes/balanced.yaml / fast.yaml from the exported teacher (no SD1.5 folder read)
    export-*         both students
    generate-*       teacher (DDIM), Balanced (multi-CFG) and Fast (one pass) on one portrait and 2 clips of audio

and prints one JSON object: per stage wall seconds, seconds per training step (the last logged step), peak RSS
(GB), parameters trained / in the model; for generation the per-clip fixed costs (ReferenceNet bank, VAE decode,
audio features) beside the denoiser's (step time x steps), and the wall-time ratios teacher/Fast and
teacher/Balanced with the limit the fixed costs allow. Options the stages ran with are listed under "options";
they are recipe keys a user can set. Needs about 25 GB of disk and fits a 24 GB, 2-core machine at the default
size (about 40 minutes there).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# What a 24 GB machine needs (README, "Training at scale"): stage 1 trains 1.67 B parameters, so Adafactor's
# factored state; on this CPU rehearsal host and device memory are one, so the EMA is off for stage 1 (on a GPU,
# train.ema_device=cpu keeps it in host RAM instead). The students train LoRA adapters, the audio layers and the
# CFG layers beside a bf16 teacher. Frozen weights are bf16 everywhere (train.frozen_dtype=auto).
STAGE1_OPTIONS = ["train.optimizer=adafactor", "train.ema_decay=0"]
STUDENT_OPTIONS = ["distill.trainable=[lora,audio,cfg]", "train.optimizer=adafactor"]


def gb(kib: int) -> float:
    return round(kib / 2 ** 20, 2)


def child(spec: dict) -> dict:
    """Run one stage in this process; return its figures (peak RSS of this process included)."""
    import torch

    torch.set_num_threads(spec.get("threads") or os.cpu_count())
    t0 = time.perf_counter()
    out: dict = {}
    if spec["stage"] in ("teacher", "distill"):
        from fada.config import load_recipe

        recipe = load_recipe(spec["recipe"], spec["overrides"], stage=spec["stage"])
        if spec["stage"] == "teacher":
            from fada.stages.train_teacher import run
        else:
            from fada.stages.distill import run
        res = run(recipe, progress=False)
        rates = [m["it_per_s"] for m in res.metrics if "it_per_s" in m]
        out.update(steps=res.step, seconds_per_step=round(1.0 / rates[-1], 1) if rates else None,
                   parameters_trained_M=round(res.trained_parameters / 1e6, 2),
                   parameters_total_M=round(res.total_parameters / 1e6, 2))
    elif spec["stage"] == "export":
        from fada.stages.export import run

        run(spec["checkpoint"], spec["out"], dtype="fp16")
    elif spec["stage"] == "generate":
        out.update(generate(spec))
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["peak_rss_GB"] = gb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return out


def generate(spec: dict) -> dict:
    """One video of ``clips`` clips through the pipeline, and the per-clip costs measured apart."""
    import numpy as np
    import torch

    from fada.pipeline import FadaPipeline
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_generate import component_times

    pipe = FadaPipeline.from_pretrained(spec["model"], dtype=torch.float32)
    mode = spec["mode"]
    plan = pipe.plan(mode)
    portrait = np.asarray(__import__("skimage.data", fromlist=["astronaut"]).astronaut())
    F = pipe.model_cfg.num_frames
    sr = pipe.frontend.sample_rate
    audio = np.random.default_rng(0).standard_normal(int(spec["clips"] * F / pipe.model_cfg.fps * sr)) * 0.1
    t0 = time.perf_counter()
    frames = sum(len(c) for c in pipe.generate_frames(portrait, audio.astype(np.float32), crop=False, seed=0,
                                                      mode=mode))
    wall = time.perf_counter() - t0
    comp = component_times(pipe, mode, repeats=1)
    t1 = time.perf_counter()
    pipe.frontend.features(audio[: int(F / pipe.model_cfg.fps * sr)].astype(np.float32), F, pipe.model_cfg.fps)
    comp["audio_features"] = 1e3 * (time.perf_counter() - t1)
    denoise = comp["step"] * plan.steps
    fixed = comp["bank_encode"] + comp["decode"] + comp["audio_features"]
    return {"mode": mode, "nfe_per_clip": plan.steps * plan.passes, "steps": plan.steps, "frames": frames,
            "wall_seconds": round(wall, 1), "per_clip_ms": {
                "denoiser": round(denoise), "reference_bank": round(comp["bank_encode"]),
                "vae_decode": round(comp["decode"]), "audio_features": round(comp["audio_features"]),
                "fixed_share": round(fixed / (fixed + denoise), 3)}}


def run_child(spec: dict, log: Path) -> dict:
    with log.open("a") as f:
        f.write(f"\n=== {spec['name']}: {json.dumps(spec)}\n")
        f.flush()
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], stdout=subprocess.PIPE,
                              stderr=f, text=True)
    if proc.returncode:
        return {"failed": f"exit {proc.returncode}; see {log}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_corpus(folder: Path, size: int, frames: int, n: int = 2) -> Path:
    import numpy as np

    from fada.data.media import write_video, write_wav
    from fada.data.synthetic import render_clip, sample_identity, synth_speech

    rng = np.random.default_rng(0)
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    rows = []
    seconds = (frames + 4) / 25
    for i in range(n):
        audio = synth_speech(seconds, rng)
        clip = render_clip(sample_identity(rng, detectable=False), audio, size=size, seed=i)
        write_video(folder / "clips" / f"c{i}.mp4", clip, 25, audio=audio, threads=1)
        write_wav(folder / "clips" / f"c{i}.wav", audio)
        rows.append({"id": f"c{i}", "video": f"clips/c{i}.mp4", "wav": f"clips/c{i}.wav", "in_A": True,
                     "in_B": True})
    manifest = folder / "A.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--frames", type=int, default=4, help="frames per clip (model.num_frames) for stage 2 and after")
    ap.add_argument("--steps", type=int, default=2, help="training steps per stage")
    ap.add_argument("--workdir", default=None, help="keep everything here (default: a temporary folder)")
    ap.add_argument("--only", default=None, help="comma-separated stage names to run (the others must exist)")
    ap.add_argument("--device-note", default=None, help="what the figures were measured on, for the record")
    args = ap.parse_args(argv)

    from fada.standins import write_sd15, write_wav2vec2

    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="rehearse-")
    work = Path(args.workdir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "rehearsal.log"
    t0 = time.perf_counter()
    sd, w2v = work / "sd15", work / "wav2vec2-base-960h"
    if not (sd / "unet" / "config.json").is_file():
        write_sd15(sd)
    if not (w2v / "config.json").is_file():
        write_wav2vec2(w2v)
    manifest = work / "curated" / "A.jsonl"
    if not manifest.is_file():
        manifest = write_corpus(work / "curated", args.resolution, args.frames)
    setup_s = time.perf_counter() - t0

    common = [f"model.resolution={args.resolution}", f"data.manifest={manifest}", "data.batch_size=1",
              "data.num_workers=1", f"train.max_steps={args.steps}", f"train.checkpoint_every={args.steps}",
              "train.log_every=1", "train.keep_last=1", "train.validate_every=0", "train.lr_warmup_steps=0"]
    models = [f"model.vae.path={sd}", f"model.unet.pretrained={sd}", f"model.audio.path={w2v}"]
    F = f"model.num_frames={args.frames}"
    stages = [
        {"name": "teacher-stage1", "stage": "teacher", "recipe": "teacher", "overrides": common + models + [
            "teacher.stage=1", "model.num_frames=1", f"train.output_dir={work / 'runs/stage1'}", *STAGE1_OPTIONS]},
        {"name": "teacher-stage2", "stage": "teacher", "recipe": "teacher", "overrides": common + models + [
            F, f"teacher.init_from={work / 'runs/stage1'}", f"train.output_dir={work / 'runs/teacher'}"]},
        {"name": "export-teacher", "stage": "export", "checkpoint": str(work / "runs/teacher"),
         "out": str(work / "models/teacher")},
    ]
    for kind in ("balanced", "fast"):
        stages.append({"name": kind, "stage": "distill", "recipe": kind, "overrides": common + [
            F, f"distill.teacher={work / 'models/teacher'}", f"train.output_dir={work / 'runs' / kind}",
            *STUDENT_OPTIONS]})
        stages.append({"name": f"export-{kind}", "stage": "export", "checkpoint": str(work / "runs" / kind),
                       "out": str(work / "models" / kind)})
    for mode in ("teacher", "balanced", "fast"):
        stages.append({"name": f"generate-{mode}", "stage": "generate", "mode": mode, "clips": 2,
                       "model": str(work / "models" / mode)})
    only = set(args.only.split(",")) if args.only else None
    results = {}
    for spec in stages:
        if only and spec["name"] not in only:
            continue
        print(f"[{time.perf_counter() - t0:7.0f} s] {spec['name']} ...", file=sys.stderr, flush=True)
        results[spec["name"]] = run_child(spec, log)
        print(f"[{time.perf_counter() - t0:7.0f} s] {spec['name']}: {json.dumps(results[spec['name']])}",
              file=sys.stderr, flush=True)
    report = {"resolution": args.resolution, "frames": args.frames, "steps_per_stage": args.steps,
              "machine": args.device_note or f"{os.cpu_count()} CPU cores, fp32/bf16 on CPU",
              "setup_seconds": round(setup_s, 1),
              "options": {"teacher-stage1": STAGE1_OPTIONS, "balanced": STUDENT_OPTIONS, "fast": STUDENT_OPTIONS,
                          "all": ["train.mixed_precision=bf16 (shipped)", "train.frozen_dtype=auto (default)",
                                  "train.gradient_checkpointing=true (shipped)"]},
              "stages": results}
    gen = {m: results.get(f"generate-{m}", {}) for m in ("teacher", "balanced", "fast")}
    if all("per_clip_ms" in g for g in gen.values()):
        def clip_ms(g):
            c = g["per_clip_ms"]
            return c["denoiser"] + c["reference_bank"] + c["vae_decode"] + c["audio_features"]

        fast_fixed = clip_ms(gen["fast"]) - gen["fast"]["per_clip_ms"]["denoiser"]
        report["ratios"] = {
            "teacher_over_fast": round(clip_ms(gen["teacher"]) / clip_ms(gen["fast"]), 2),
            "teacher_over_balanced": round(clip_ms(gen["teacher"]) / clip_ms(gen["balanced"]), 2),
            "teacher_over_fast_wall": round(gen["teacher"]["wall_seconds"] / gen["fast"]["wall_seconds"], 2),
            "limit_with_fixed_costs": round(clip_ms(gen["teacher"]) / fast_fixed, 1),
        }
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return report


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
    else:
        main()
