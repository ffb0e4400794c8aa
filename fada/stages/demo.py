"""`fada demo`: the whole paper in miniature on a CPU.

synthesise a labelled corpus → curate it into A and B → train the tiny teacher on A → distill Balanced and Fast on
B → export → generate held-out identities with unseen audio (teacher 75 NFE, Balanced 18, Fast 6) → evaluate.
Writes DIR/report.md, DIR/report.json, DIR/videos/*.mp4 (truth | teacher | balanced | fast), DIR/contact_sheet.png
(per held-out identity: frames of the truth, teacher, balanced and fast, upscaled) and DIR/models/{teacher,balanced,fast}.
The report's ``reference`` row scores the still reference frame repeated for the clip's length: the floor a model
must beat on motion (sync) and the ceiling of a model that only copies the face it is given (PSNR / SSIM / FD). Its
``held pose`` row scores the generator's own rendering of each clip with the head held at its first pose (the mouth
and blinks as in the truth): the ceiling of a model that draws the mouth exactly and holds still the head sway
that no input tells it.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from fada.errors import FadaError
from fada.evaluation.regions import roughness


@dataclass(frozen=True)
class DemoSize:
    corpus: int            # synthetic videos
    seconds: tuple         # their length range
    teacher_steps: int
    distill_steps: int
    test_clips: int        # held-out identities
    test_seconds: float
    teacher_sample_steps: Optional[int] = None  # the teacher's DDIM steps when generating (None: the model's own)


# 360 short videos: the models must draw faces they never saw, and more identities teach them to copy the portrait
# (same training steps). 60 longer videos -> 240: held-out mouth correlation 0.77-0.80 -> 0.79-0.81. 240 -> 360
# (teacher, same harness): outside the mouth box 31.03 -> 31.34-31.45 dB over four runs (two seeds, 700 steps,
# noisier motion frames), inside it 25.08 -> 25.35-25.82; 480 gained 0.2 dB more outside but lost the mouth's
# correlation (0.787) and costs 40 s more (docs/demo.md). The students start from the teacher's weights and distil
# 50 steps, not 100: from the same teacher 50 steps scored the same (Balanced 25.09 / 31.59 dB in / outside the
# mouth box, correlation 0.789, against 25.01 / 31.56 / 0.787; Fast 25.06 / 31.53 / 0.785 against 24.86 / 31.44 /
# 0.784), and the demo fits 15 minutes on slower 2-core machines too
FULL = DemoSize(corpus=360, seconds=(2.5, 3.5), teacher_steps=600, distill_steps=50, test_clips=4, test_seconds=3.0)
# the smoke run samples its teacher in 10 steps, not 25: its pictures say nothing either way, and the teacher's
# 75-NFE generation was a quarter of the smoke run's time
QUICK = DemoSize(corpus=16, seconds=(2.2, 3.0), teacher_steps=60, distill_steps=12, test_clips=2, test_seconds=1.6,
                 teacher_sample_steps=10)

# Table 2/3/4 ablations: (row name, recipe, overrides) distilled in addition with --ablations.
ABLATIONS = [
    ("balanced / perflow, no mixed supervision (Table 2)", "tiny-balanced", ["distill.mixed.mode=off"]),
    ("balanced / rflow (Table 2)", "tiny-balanced", ["distill.variant=rflow", "distill.mixed.mode=off"]),
    ("balanced / tcd (Table 2)", "tiny-balanced", ["distill.variant=tcd", "distill.mixed.mode=off"]),
    ("fast / mixed off", "tiny-fast", ["distill.mixed.mode=off"]),
    ("fast / mixed fixed-0.2", "tiny-fast", ["distill.mixed.mode=fixed", "distill.mixed.fixed=0.2"]),
    ("fast / mixed adaptive unlimited", "tiny-fast", ["distill.mixed.mode=adaptive_unlimited"]),
    ("fast / mixed adaptive (Eq. 8)", "tiny-fast", ["distill.mixed.mode=adaptive"]),
    ("fast / fixed-scale guided, no CFG conditioning", "tiny-fast", ["model.cfg.mode=none"]),
    ("fast / cfg time-embed", "tiny-fast", ["model.cfg.mode=time_embed"]),
    ("fast / cfg layer", "tiny-fast", ["model.cfg.mode=layer"]),
]


def say(msg: str) -> None:
    print(msg, flush=True)


def variants(ablations: bool = False) -> list[tuple]:
    """(name, recipe, overrides) of every student the run distils: Balanced and Fast, then the ablations."""
    out = [("balanced", "tiny-balanced", []), ("fast", "tiny-fast", [])]
    return out + list(ABLATIONS) if ablations else out


def step_lines(size: DemoSize, students: list[tuple]) -> list[str]:
    """The headline of every step, numbered ``[k/n]`` in the order the run prints them; each distillation is a step
    of its own, so the count grows with ``--ablations``."""
    lines = [f"synthesising {size.corpus} labelled talking-head videos (some with defects) ...",
             "curating them into the strict set A (teacher) and the lenient set B (student) ...",
             f"training the tiny teacher on A ({size.teacher_steps} steps) ...",
             *(f"distilling {name} on B ({size.distill_steps} steps) ..." for name, _, _ in students),
             "exporting self-contained model folders ...",
             f"generating {size.test_clips} held-out identities with unseen audio ...",
             "evaluating: sync against own vs shuffled audio, PSNR / SSIM / Fréchet distance to the truth ..."]
    return [f"[{k}/{len(lines)}] {line}" for k, line in enumerate(lines, 1)]


def generation_runs(models: list[str], size: DemoSize, ablations: bool) -> list[tuple[str, str, dict]]:
    """(report row, model, generation options) per generated row. Table 4's first row (with ``--ablations``) is the
    mixed-supervised student without CFG distillation, run with its conditional branch only (one pass per step)."""
    runs = [(name, name, {"steps": size.teacher_sample_steps} if name == "teacher" else {}) for name in models]
    if ablations:
        runs.append(("balanced / conditional only (w/o CFG distillation)", "balanced",
                     {"cfg_audio": 1.0, "cfg_ref": 1.0}))
    return runs


# -- curation against the answer key --------------------------------------------------------------------------------

def curation_scores(labels: list[dict], manifest: Path) -> dict:
    """Precision (share of the set's videos that are defect-free) and recall (share of defect-free videos kept)
    of A and B, per source video, against the generator's labels."""
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    in_a = {r["source_video"] for r in rows if r.get("in_A")}
    in_b = {r["source_video"] for r in rows if r.get("in_B")}
    clean = {Path(lab["file"]).name for lab in labels if not lab["defects"]}
    out = {"videos": len(labels), "clean": len(clean)}
    for name, kept in (("A", in_a), ("B", in_b)):
        out[name] = {"videos": len(kept),
                     "precision": len(kept & clean) / len(kept) if kept else 0.0,
                     "recall": len(kept & clean) / len(clean) if clean else 0.0}
    return out


# -- held-out test clips --------------------------------------------------------------------------------------------

def truth_clip(frames: np.ndarray, audio: np.ndarray, resolution: int, detector=None) -> dict:
    """A rendered clip as the pipeline sees it: {"portrait": its first frame, "audio", "truth": every frame cropped
    exactly as the pipeline crops the portrait (the face found in the first frame by ``find_face``, with curate's
    margin)}, so generated and true frames line up pixel for pixel. No face: FadaError."""
    from fada.evaluation.faces import portrait_crops

    return {"portrait": frames[0], "audio": audio, "truth": portrait_crops(frames, resolution, detector)}


def test_clips(n: int, seconds: float, resolution: int, seed: int = 777):
    """New identities speaking unseen audio, rendered by the generator (the ground truth), cropped the way the
    pipeline crops the portrait (``truth_clip``); ``held``: the same clip rendered with the head held at its first
    pose (the report's ``held pose`` row), cropped the same way."""
    from fada.data.face import FaceDetector
    from fada.data.synthetic import render_clip, sample_identity, synth_speech

    rng = np.random.default_rng(seed)
    det = FaceDetector()
    clips = []
    for i in range(n):
        ident = sample_identity(rng)
        audio = synth_speech(seconds, rng)
        frames = render_clip(ident, audio, size=128, seed=seed + i)
        try:
            clip = truth_clip(frames, audio, resolution, det)
        except FadaError:
            raise FadaError("demo: the held-out portrait has no detectable face (generator changed?)") from None
        held = render_clip(ident, audio, size=128, seed=seed + i, hold_pose=True)  # its first frame is the truth's,
        clip["held"] = truth_clip(held, audio, resolution, det)["truth"]           # so it is cropped the same way
        clips.append(clip)
    return clips


# -- metrics --------------------------------------------------------------------------------------------------------

def frame_features(frames: np.ndarray) -> np.ndarray:
    """Weight-free frame features for the demo's Fréchet distance: an 8x8 colour thumbnail plus a 4x4x4 colour
    histogram (no Inception weights on a fresh machine; `fada eval --metrics fid` does the real FID)."""
    import cv2

    feats = []
    for f in frames:
        thumb = cv2.resize(f, (8, 8), interpolation=cv2.INTER_AREA).astype(np.float64).ravel() / 255.0
        hist = cv2.calcHist([f], [0, 1, 2], None, [4, 4, 4], [0, 256] * 3).ravel()
        feats.append(np.concatenate([thumb, hist / max(hist.sum(), 1.0)]))
    return np.stack(feats)


def evaluate(videos: list[np.ndarray], clips: list[dict], sr: int = 16000, fps: int = 25) -> dict:
    from skimage.metrics import structural_similarity

    from fada.evaluation.faces import mouth_box
    from fada.evaluation.regions import psnr as clip_psnr
    from fada.evaluation.regions import region_scores
    from fada.metrics.av_sync import WeightFreeSync
    from fada.metrics.frechet import frechet_from_features

    sync = WeightFreeSync(max_offset=15, mouth_box=mouth_box())  # curate's measure: the mouth of a curate crop
    own, shuffled, psnr, ssim, regions = [], [], [], [], []
    for i, (v, c) in enumerate(zip(videos, clips)):
        regions.append(region_scores(c["truth"], v, mouth_box()))
        own.append(sync.score(v, c["audio"], sr, fps)["av_corr_conf"])
        shuffled.append(sync.score(v, clips[(i + 1) % len(clips)]["audio"], sr, fps)["av_corr_conf"])
        n = min(len(v), len(c["truth"]))
        # per video, from the mean squared error over its frames (a per-frame mean is infinite as soon as one frame
        # is exact, as the still reference's first frame is); the truth scored against itself gets MAX_PSNR
        psnr.append(clip_psnr(c["truth"][:n], v[:n]))
        ssim.append(np.mean([structural_similarity(c["truth"][k], v[k], channel_axis=2, data_range=255,
                                                   win_size=7) for k in range(n)]))
    fd = frechet_from_features(frame_features(np.concatenate(videos)),
                               frame_features(np.concatenate([c["truth"] for c in clips])))
    return {"sync": float(np.mean(own)), "shuffled_sync": float(np.mean(shuffled)), "psnr": float(np.mean(psnr)),
            "ssim": float(np.mean(ssim)), "fd": float(fd), "roughness": roughness(np.concatenate(videos)),
            **{k: float(np.mean([r[k] for r in regions])) for k in regions[0]}}


def still_reference(clip: dict) -> np.ndarray:
    """The trivial baseline: the clip's reference frame (its first truth frame, cropped as the pipeline crops the
    portrait) repeated for the clip's length."""
    return np.repeat(clip["truth"][:1], len(clip["truth"]), axis=0)


def contact_sheet(path: Path, clips: list[dict], videos: dict, names=("teacher", "balanced", "fast"),
                  frames: int = 4, scale: int = 3) -> Path:
    """A PNG with one row per held-out identity: ``frames`` frames spread over the clip for the truth and each
    model, side by side, nearest-neighbour upscaled ``scale``× so the mouth can be seen; a title bar names the
    columns. Written atomically."""
    import cv2

    from fada.utils.io import atomic_path

    rows = []
    for i, c in enumerate(clips):
        n = min(len(c["truth"]), *(len(videos[k][i]) for k in names))
        idx = np.linspace(0, n - 1, frames).round().astype(int)
        panels = []
        for v in [c["truth"]] + [videos[k][i] for k in names]:
            panel = np.concatenate([v[j] for j in idx], axis=1)
            panels.append(np.pad(panel, ((2, 2), (2, 2), (0, 0)), constant_values=255))
        rows.append(np.concatenate(panels, axis=1))
    grid = np.concatenate(rows, axis=0)
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    bar = np.full((28, grid.shape[1], 3), 255, np.uint8)
    width = grid.shape[1] // (1 + len(names))
    for k, label in enumerate(("truth",) + tuple(names)):
        cv2.putText(bar, label, (k * width + 8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    sheet = np.concatenate([bar, grid], axis=0)
    with atomic_path(path) as tmp:  # the temporary name keeps .png, which tells OpenCV the format
        if not cv2.imwrite(str(tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
            raise FadaError(f"{path}: could not write the contact sheet")
    return Path(path)


def side_by_side(path: Path, clip: dict, videos: list[np.ndarray], fps: int = 25) -> None:
    from fada.data.media import write_video

    n = min(len(clip["truth"]), *(len(v) for v in videos))
    frames = np.concatenate([clip["truth"][:n]] + [v[:n] for v in videos], axis=2)
    write_video(path, frames, fps, audio=clip["audio"], threads=1)


# -- the run --------------------------------------------------------------------------------------------------------

def _recipe(name: str, overrides: list[str], stage: str):
    from fada.config import load_recipe

    return load_recipe(name, overrides, stage=stage)


def run(out, quick: bool = False, ablations: bool = False, progress: bool = True) -> dict:
    from fada.data.synthetic import generate_corpus
    from fada.pipeline import FadaPipeline
    from fada.stages import curate as curate_stage
    from fada.stages import distill as distill_stage
    from fada.stages import export as export_stage
    from fada.stages import train_teacher as teacher_stage
    from fada.utils.cache import record_demo_model
    from fada.utils.io import write_json, write_text

    size = QUICK if quick else FULL
    students = variants(ablations)
    headline = iter(step_lines(size, students))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    timings = {}

    def stage(name):
        timings[name] = time.perf_counter()

    def done(name):
        timings[name] = round(time.perf_counter() - timings[name], 1)

    stage("corpus")
    say(next(headline))
    labels = generate_corpus(out / "corpus", count=size.corpus, size=128, seed=0, seconds=size.seconds,
                             progress=progress)
    done("corpus")

    stage("curate")
    say(next(headline))
    cur = out / "curated"
    curate_stage.run(out / "corpus" / "videos", cur, _recipe("tiny-curate", [], "curate"), progress=progress)
    curation = curation_scores(labels, cur / "manifest.jsonl")
    say(f"      A: {curation['A']['videos']} videos (precision {curation['A']['precision']:.2f}), "
        f"B: {curation['B']['videos']} (recall of clean videos {curation['B']['recall']:.2f})")
    done("curate")

    common = [f"data.cache_dir={out / 'cache'}"]
    stage("teacher")
    say(next(headline))
    teacher_run = out / "runs" / "teacher"
    teacher_stage.run(_recipe("tiny-teacher", common + [
        f"data.manifest={cur / 'A.jsonl'}", f"train.output_dir={teacher_run}",
        f"train.max_steps={size.teacher_steps}", f"train.checkpoint_every={size.teacher_steps}"], "teacher"),
        progress=progress)
    done("teacher")

    stage("distill")
    runs = {}
    for name, recipe_name, extra in students:
        say(next(headline))
        slug = name.replace(" / ", "-").replace(" ", "-")
        runs[name] = out / "runs" / slug
        distill_stage.run(_recipe(recipe_name, common + extra + [
            f"data.manifest={cur / 'B.jsonl'}", f"distill.teacher={teacher_run}", f"train.output_dir={runs[name]}",
            f"train.max_steps={size.distill_steps}", f"train.checkpoint_every={size.distill_steps}"], "distill"),
            progress=progress)
    done("distill")

    stage("export")
    say(next(headline))
    models = {"teacher": export_stage.run(teacher_run, out / "models" / "teacher", dtype="fp32")}
    for name, _, _ in students:
        slug = name.replace(" / ", "-").replace(" ", "-")
        models[name] = export_stage.run(runs[name], out / "models" / slug, dtype="fp32")
    record_demo_model(models["fast"])
    done("export")

    stage("generate")
    say(next(headline))
    pipes = {name: FadaPipeline.from_pretrained(path) for name, path in models.items()}
    clips = test_clips(size.test_clips, size.test_seconds, pipes["teacher"].resolution)
    runs_gen = generation_runs(list(pipes), size, ablations)
    videos, rows = {}, []
    for name, model_name, opts in runs_gen:
        pipe = pipes[model_name]
        t0 = time.perf_counter()
        stream_plan = None
        vids = []
        for i, c in enumerate(clips):
            stream = pipe.generate_frames(c["portrait"], c["audio"], seed=i, **opts)
            stream_plan = stream.plan
            vids.append(np.concatenate(list(stream)))
        seconds = time.perf_counter() - t0
        videos[name] = vids
        audio_seconds = sum(len(c["audio"]) for c in clips) / 16000
        rows.append({"model": name, "nfe": stream_plan.nfe_per_clip,
                     "seconds_per_video_second": seconds / audio_seconds})
        say(f"      {name}: {stream_plan.describe()}; {seconds / audio_seconds:.2f} s per video second")
    done("generate")

    stage("evaluate")
    say(next(headline))
    shuffled = []
    for row in rows:
        m = evaluate(videos[row["model"]], clips)
        row["shuffled_sync"] = m.pop("shuffled_sync")
        shuffled.append(row["shuffled_sync"])
        row.update(m)
    # the trivial baseline, scored like the models: what copying the given face, without motion, achieves
    still = evaluate([still_reference(c) for c in clips], clips)
    rows.append({"model": "reference", "nfe": 0, "seconds_per_video_second": 0.0, **still})
    held = evaluate([c["held"] for c in clips], clips)
    rows.append({"model": "held pose", "nfe": 0, "seconds_per_video_second": 0.0, **held})
    truth = evaluate([c["truth"] for c in clips], clips)
    (out / "videos").mkdir(exist_ok=True)
    for i, c in enumerate(clips):
        side_by_side(out / "videos" / f"test_{i:02d}.mp4", c, [videos[k][i] for k in ("teacher", "balanced", "fast")])
    contact_sheet(out / "contact_sheet.png", clips, videos)
    done("evaluate")

    total = time.perf_counter() - t_start
    report = {"rows": rows, "shuffled_audio_sync": float(np.mean(shuffled)), "curation": curation,
              "truth": {"sync": truth["sync"], "shuffled_sync": truth["shuffled_sync"],
                        "roughness": truth["roughness"]},
              "ratio_teacher_fast": rows[0]["seconds_per_video_second"] / _row(rows, "fast")["seconds_per_video_second"],
              "seconds": round(total, 1), "stage_seconds": timings, "quick": quick,
              "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, {_cores()} cores",
              "models": {k: str(v) for k, v in models.items()}}
    write_json(out / "report.json", report)
    write_text(out / "report.md", render_markdown(report))
    say(render_markdown(report))
    say(f"done in {total / 60:.1f} min; models in {out / 'models'}, videos in {out / 'videos'}; "
        f"`fada generate PORTRAIT AUDIO` now uses {models['fast']}")
    return report


def _row(rows, name):
    return next(r for r in rows if r["model"] == name)


def _cores() -> int:
    import os

    return os.cpu_count() or 1


# The paper's ablation tables: (title, [(row label, demo row name)]); rows the run does not have are left out.
PAPER_TABLES = [
    ("Table 2: distillation methods, 18 NFE with multi-CFG, no mixed supervision or CFG distillation",
     [("TCD", "balanced / tcd (Table 2)"), ("RFlow", "balanced / rflow (Table 2)"),
      ("PeRFlow", "balanced / perflow, no mixed supervision (Table 2)")]),
    ("Table 3: mixed supervision (Fast students)",
     [("off", "fast / mixed off"), ("fixed W = 0.2", "fast / mixed fixed-0.2"),
      ("adaptive, no peak / dead", "fast / mixed adaptive unlimited"),
      ("adaptive (Eq. 8)", "fast / mixed adaptive (Eq. 8)"), ("fixed W = 4 (the demo's Fast)", "fast")]),
    ("Table 4: CFG distillation",
     [("w/o CFG distillation (conditional branch only, 6 NFE)", "balanced / conditional only (w/o CFG distillation)"),
      ("fixed-scale guided targets, no CFG conditioning", "fast / fixed-scale guided, no CFG conditioning"),
      ("time embedding", "fast / cfg time-embed"), ("CFG layer", "fast / cfg layer"), ("CFG tokens", "fast")]),
]


def paper_tables(rows: list[dict]) -> list[str]:
    """The ablation rows arranged as the paper's Tables 2-4 (only with ``--ablations``)."""
    have = {r["model"]: r for r in rows}
    out = []
    for title, entries in PAPER_TABLES:
        present = [(label, have[name]) for label, name in entries if name in have]
        if len(present) < 2:
            continue
        out += ["", f"**{title}**", "", "| row | NFE | sync ↑ | PSNR ↑ | SSIM ↑ | FD ↓ | noise |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        out += [f"| {label} | {r['nfe']} | {r['sync']:.3f} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['fd']:.3f} | "
                f"{r.get('roughness', float('nan')):.1f} |" for label, r in present]
    return out


def render_markdown(report: dict) -> str:
    lines = ["# fada demo report", ""]
    if report.get("quick"):
        lines += ["**Smoke run (`--quick`)**: every stage runs end to end on a few steps; its pictures are not meant "
                  "to be faces and its figures say nothing about quality. Run `fada demo` for those.", ""]
    lines += [f"Machine: {report['machine']}; total {report['seconds'] / 60:.1f} min.", "",
              "| model | NFE | s per video s | sync ↑ | PSNR ↑ | PSNR mouth ↑ | PSNR elsewhere ↑ | mouth corr. ↑ | "
              "SSIM ↑ | FD ↓ | noise | noise / truth |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    nan = float("nan")
    for r in report["rows"]:
        lines.append(f"| {r['model']} | {r['nfe']} | {r['seconds_per_video_second']:.2f} | {r['sync']:.3f} | "
                     f"{r['psnr']:.2f} | {r.get('psnr_mouth', nan):.2f} | {r.get('psnr_elsewhere', nan):.2f} | "
                     f"{r.get('mouth_corr', nan):.2f} | {r['ssim']:.3f} | {r['fd']:.3f} | "
                     f"{r.get('roughness', nan):.1f} | {r.get('noise_ratio', nan):.2f} |")
    c = report["curation"]
    truth = report.get("truth")
    lines += ["", "`reference`: the still reference frame repeated for the clip's length (no motion: the sync floor; "
                  "a perfect copy of the face: the PSNR a model that only copies would reach). `held pose`: the "
                  "generator's rendering of each clip with the head held at its first pose, mouth and blinks as in "
                  "the truth (what a model that draws the mouth exactly and holds the unforeseeable head sway still "
                  "would score; its mouth corr. is the ceiling for such a model, since the truth's mouth box also "
                  "moves with the sway). PSNR mouth / elsewhere: "
                  "inside and outside the mouth box that curate uses; mouth corr.: Pearson correlation over frames "
                  "of the mouth box's change from the first frame against the truth's. `noise`: mean "
                  "absolute difference of horizontally adjacent pixels" +
              (f" (the truth: {truth['roughness']:.1f}; its sync {truth['sync']:.3f})." if truth else "."),
              "", f"Shuffled-audio sync (the same measure against other clips' audio, mean over the models): "
                  f"{report['shuffled_audio_sync']:.3f}. Teacher → Fast speed-up: {report['ratio_teacher_fast']:.1f}× "
                  "(a figure, not a criterion: at 32×32 a call's fixed cost dominates).",
              "", f"Curation of {c['videos']} synthetic videos ({c['clean']} without defects): "
                  f"A {c['A']['videos']} videos, precision {c['A']['precision']:.2f}, recall {c['A']['recall']:.2f}; "
                  f"B {c['B']['videos']} videos, precision {c['B']['precision']:.2f}, recall {c['B']['recall']:.2f}.",
              "", "Stage times (s): " + ", ".join(f"{k} {v}" for k, v in report["stage_seconds"].items()), "",
              "Frames: `contact_sheet.png` (truth | teacher | balanced | fast per held-out identity); videos: "
              "`videos/*.mp4` (the same panels, with the audio).", ""]
    lines += paper_tables(report["rows"])
    return "\n".join(lines)
