"""How close is a distilled 6-step student to its 75-NFE teacher? Prints one JSON object.

Generates the same held-out inputs (new synthetic identities, unseen audio, the same seeds) with

    teacher       DDIM 25 steps, multi-CFG (75 NFE per clip): the reference
    teacher_6     the undistilled teacher for 6 DDIM steps, multi-CFG (18 NFE): what distillation must beat
    student       the distilled model in its own mode (fast: 6 PeRFlow steps, 1 pass; balanced: 6 steps x 3)

at the same guidance scales (the teacher's defaults, cfg_audio 6.5 / cfg_ref 2.5, told to a Fast student), and
reports each one's distance to the teacher's frames: RMSE and PSNR over uint8 RGB frames, plus the ratio of the
student's error to the 6-step teacher's (below 1: the distillation helped); ``first_clip_vs_teacher`` the same on
each video's first clip, before the motion-frame feedback compounds differences from clip to clip.
``vs_ground_truth`` gives each one's distance to the rendered held-out clips themselves: mixed supervision
(Eq. 6-8) pulls a student from its teacher towards the data, so a student may be farther from the teacher yet as
close to the truth.

``--per-window`` adds where the student's error comes from: on each video's first clip, every PeRFlow window is
entered at the teacher's own trajectory point (a 64-step DDIM solve per window from the clip's noise) and crossed by
the student's steps in that window and by the teacher's DDIM with as many steps, each compared with the 64-step end
(RMS in latent units).

    python benchmarks/bench_distill.py TEACHER STUDENT [--clips 4] [--seconds 1.0] [--per-window]

TEACHER and STUDENT are run folders, checkpoints or exported model folders.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def load(src: Path, tmp: Path, name: str):
    from fada.pipeline import FadaPipeline

    if not (src / "fada_model.json").is_file():
        from fada.stages.export import run as export

        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON result
            export(checkpoint=src, out=tmp / name, dtype="fp32", ema=True)
        src = tmp / name
    return FadaPipeline.from_pretrained(src)


def distances(frames: list[np.ndarray], reference: list[np.ndarray]) -> dict:
    """RMSE (0..255 scale) and PSNR (dB) of uint8 videos against the reference videos, all clips pooled."""
    err = np.concatenate([(a.astype(np.float64) - b.astype(np.float64)).ravel() ** 2
                          for a, b in zip(frames, reference)])
    mse = float(err.mean())
    return {"rmse": round(mse ** 0.5, 3), "psnr": round(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)), 2)}


def corpus_clips(labels_file: Path, n: int, seconds: float, resolution: int) -> list[dict]:
    """The first ``n`` defect-free clips of a synthetic corpus (``fada synth``'s labels.json), re-rendered, cut to
    ``seconds`` and cropped as the demo crops its held-out clips (``truth_clip``): training identities instead of
    new ones. Clips without a face the pipeline would find are skipped."""
    from fada.data.face import FaceDetector
    from fada.data.synthetic import clip_from_label
    from fada.errors import FadaError
    from fada.stages.demo import truth_clip

    det, clips = FaceDetector(), []
    for label in json.loads(Path(labels_file).read_text()):
        if label["defects"] or len(clips) == n:
            continue
        frames, audio = clip_from_label(label)
        frames, audio = frames[:int(round(seconds * label["fps"]))], audio[:int(round(seconds * label["sample_rate"]))]
        try:
            clips.append(truth_clip(frames, audio, resolution, det))
        except FadaError:
            continue
    return clips


FINE_STEPS = 64  # DDIM steps per window taken as the window's exact end


@torch.inference_mode()
def per_window(teacher, student, clips, mode: str, scales: dict) -> list[dict]:
    """Per PeRFlow window: RMS distance to the teacher's 64-step window end, from the same start, of the student's
    steps in that window and of the teacher's DDIM with as many steps (first clip of each video, mean over clips)."""
    from fada.diffusion import clip_noises, ddim_solve, perflow_step, step_times, window_of
    from fada.pipeline import AudioFeatures

    t_plan, s_plan = teacher.plan("teacher", 25, **scales), student.plan(mode, None, **scales)
    K, sch = s_plan.num_windows, teacher.spec.schedule
    times = step_times(s_plan.steps, K, s_plan.extra_steps)
    starts = window_of(times, K)[0]
    own = [[float(t) for t, s in zip(times, starts) if round(float(s) * K) == K - k] for k in range(K)]
    cfg = teacher.model_cfg
    F = cfg.num_frames
    sums = np.zeros((K, 2))
    rms = lambda a, b: float((a.float() - b.float()).pow(2).mean().sqrt())
    for i, c in enumerate(clips):
        ref = teacher.encode_reference(teacher.load_portrait(c["portrait"]))
        feats = AudioFeatures(teacher.frontend, teacher.load_audio(c["audio"]), F, cfg.fps).rows(0, F)[None]
        z = next(clip_noises((1, ref.shape[1], F, *ref.shape[2:]), i, float(cfg.noise_share)))  # seed i's first clip
        teach, stud = (pipe.eps_fn(plan, pipe.first_clip_bank(pipe.encode_reference_bank(ref)), feats)
                       for pipe, plan in ((teacher, t_plan), (student, s_plan)))
        for k in range(K):
            t_s, t_e = 1 - k / K, 1 - (k + 1) / K
            i_s, i_e = int(sch.t_to_index(t_s)), int(sch.t_to_index(t_e))
            end = ddim_solve(teach, z, i_s, i_e, FINE_STEPS, sch)
            zs = z
            for a, b in zip(own[k], own[k][1:] + [t_e]):
                zs = perflow_step(zs, stud(zs, torch.full((1,), sch.num_train_timesteps * a)), a, b, K, sch)
            sums[k] += (rms(zs, end), rms(ddim_solve(teach, z, i_s, i_e, len(own[k]), sch), end))
            z = end
    return [{"window": f"{1 - k / K:g} -> {1 - (k + 1) / K:g}", "steps": len(own[k]),
             "student": round(sums[k, 0] / len(clips), 5), "teacher_same_steps": round(sums[k, 1] / len(clips), 5)}
            for k in range(K)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("teacher")
    ap.add_argument("student")
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=4321)
    ap.add_argument("--cfg-audio", type=float, default=6.5)
    ap.add_argument("--cfg-ref", type=float, default=2.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--corpus", default=None, help="a corpus labels.json: use its clean clips (training identities) "
                                                  "instead of new held-out ones")
    ap.add_argument("--noise-share", type=float, default=None,
                    help="sample both models under this video noise prior instead of their own model.noise_share")
    ap.add_argument("--per-window", action="store_true",
                    help="also report each PeRFlow window's error against the teacher's 64-step window end")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from fada.stages.demo import test_clips

    with tempfile.TemporaryDirectory() as tmp:
        teacher = load(Path(args.teacher), Path(tmp), "teacher")
        student = load(Path(args.student), Path(tmp), "student")
        if args.noise_share is not None:
            import dataclasses

            for pipe in (teacher, student):
                pipe.spec = dataclasses.replace(pipe.spec, model=dataclasses.replace(pipe.spec.model,
                                                                                     noise_share=args.noise_share))
        mode = "fast" if "fast" in student.spec.modes else "balanced"
        if args.corpus:
            clips = corpus_clips(Path(args.corpus), args.clips, args.seconds, teacher.resolution)
        else:
            clips = test_clips(args.clips, args.seconds, teacher.resolution, args.seed)  # face crops as truth
        scales = dict(cfg_audio=args.cfg_audio, cfg_ref=args.cfg_ref)

        def run(pipe, **kw):
            return [np.concatenate(list(pipe.generate_frames(c["portrait"], c["audio"], seed=i, **scales, **kw)))
                    for i, c in enumerate(clips)]

        ref = run(teacher, mode="teacher", steps=25)
        few = run(teacher, mode="teacher", steps=6)
        stu = run(student, mode=mode)
        windows = per_window(teacher, student, clips, mode, scales) if args.per_window else None
        nfe = {"teacher": teacher.plan("teacher", 25, **scales).nfe_per_clip,
               "teacher_6": teacher.plan("teacher", 6, **scales).nfe_per_clip,
               "student": student.plan(mode, None, **scales).nfe_per_clip}
    d_few, d_stu = distances(few, ref), distances(stu, ref)
    # the first clip of each video only: no motion frames from an earlier clip, so no feedback that compounds a
    # small difference clip after clip
    n1 = teacher.model_cfg.num_frames
    first = {"teacher_6": distances([v[:n1] for v in few], [v[:n1] for v in ref]),
             "student": distances([v[:n1] for v in stu], [v[:n1] for v in ref])}
    truth = [c["truth"][:len(v)] for c, v in zip(clips, ref)]  # the rendered held-out clips, cropped
    vs_truth = {"teacher": distances(ref, truth), "teacher_6": distances(few, truth), "student": distances(stu, truth)}
    spread = distances(ref, [np.roll(v, 1, axis=0) for v in ref])  # frame-to-frame change of the teacher itself
    print(json.dumps({"clips": len(clips), "seconds": args.seconds, "student_mode": mode, "nfe": nfe,
                      "teacher_6_vs_teacher": d_few, "student_vs_teacher": d_stu,
                      "error_ratio_student_over_teacher_6": round(d_stu["rmse"] / max(d_few["rmse"], 1e-9), 3),
                      "first_clip_vs_teacher": first,
                      "teacher_adjacent_frame_rmse": spread["rmse"], "vs_ground_truth": vs_truth,
                      **({"per_window": windows} if windows is not None else {})}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
