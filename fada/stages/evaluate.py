"""``fada eval``: evaluate generated videos against references (paper §4.2) and sweep guidance scales (§4.3).

Three ways in:

* ``--generated DIR [--reference DIR]``: evaluate existing videos, paired by file name;
* ``--model DIR --testset LIST.jsonl``: generate every test item with the pipeline first (into
  ``<report>_videos/`` beside the report), timed: NFE-D and wall seconds per generated video second;
* ``--model DIR --testset LIST.jsonl --sweep cfg_audio=1:8:0.5`` (or ``cfg_ref=...``): generate and evaluate at
  every value, write one entry per value and ``sweep_<param>_<metric>.png`` beside the report.

Metrics whose weights are missing are skipped with a one-line reason naming the expected file and
``--weights-dir``; the others run. If none can run the stage fails (exit 2) with the reasons. The report is JSON
(``--out``, default report.json) with a CSV beside it; a table is printed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import fada
from fada.errors import FadaError


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _check_inputs(generated, reference, model, testset, sweep, cfg_audio, cfg_ref) -> None:
    if generated is not None and (model is not None or testset is not None):
        raise FadaError("give --generated DIR [--reference DIR], or --model DIR --testset LIST.jsonl, not both")
    if generated is None and model is None and testset is None:
        if reference is not None:
            raise FadaError("--reference needs --generated DIR (the videos to compare with it)")
        raise FadaError("nothing to evaluate: give --generated DIR [--reference DIR], or --model DIR --testset "
                        "LIST.jsonl")
    if generated is None:
        if model is None:
            raise FadaError("--testset needs --model DIR (the model that generates the test set)")
        if testset is None:
            raise FadaError("--model needs --testset LIST.jsonl (rows {portrait, audio, reference, name})")
        if reference is not None:
            raise FadaError("--reference is for --generated; with --testset give each row's 'reference'")
    if sweep is not None and generated is not None:
        raise FadaError("--sweep generates videos: use it with --model DIR --testset LIST.jsonl")
    if sweep is not None:
        param = str(sweep).partition("=")[0].strip().replace("-", "_")
        if (param == "cfg_audio" and cfg_audio is not None) or (param == "cfg_ref" and cfg_ref is not None):
            raise FadaError(f"--sweep {sweep}: --{param.replace('_', '-')} is set too; the sweep sets it")


def _out_path(out) -> Path:
    out = Path(out if out is not None else "report.json").expanduser()
    if out.is_dir():
        out = out / "report.json"
    return out


def run(metrics=("fid", "fvd", "sync"), generated=None, reference=None, model=None, testset=None, weights_dir=None,
        sweep: Optional[str] = None, out="report.json", *, mode: Optional[str] = None, steps: Optional[int] = None,
        cfg_audio: Optional[float] = None, cfg_ref: Optional[float] = None, seed: int = 0, frame_stride: int = 1,
        coeffs=None, device: Optional[str] = None, print_table: bool = True, decoder: Optional[str] = None) -> dict:
    """Run the evaluation; returns the report dict that was written to ``out`` (JSON) and its CSV."""
    from fada.evaluation.metrics import COST_KEYS, Evaluator, default_device, plan_metrics
    from fada.evaluation.report import print_report, print_sweep, write_report

    _check_inputs(generated, reference, model, testset, sweep, cfg_audio, cfg_ref)
    if decoder is not None:
        from fada.models.taesd import parse_decoder

        if model is None:
            raise FadaError("--decoder is for --model DIR (how the model's latents are decoded)")
        parse_decoder(decoder)
    sweep_param, sweep_values = None, None
    if sweep is not None:
        from fada.evaluation.sweep import parse_sweep

        sweep_param, sweep_values = parse_sweep(sweep)
    out = _out_path(out)
    plan = plan_metrics(metrics, weights_dir, coeffs)
    if not plan.runnable:
        raise FadaError("; ".join(plan.skipped.values()))
    items = None
    if testset is not None:
        from fada.evaluation.testset import read_testset

        items = read_testset(testset)  # checked before any model loads
    device = device or default_device()
    evaluator = Evaluator(plan, weights_dir=weights_dir, coeffs=coeffs, frame_stride=frame_stride, device=device,
                          log=_log)
    if not plan.runnable:  # every weights file there was refused
        raise FadaError("; ".join(plan.skipped.values()))
    settings = {
        "metrics_requested": plan.requested, "metrics_run": plan.run + plan.iqa,
        "generated": str(generated) if generated is not None else None,
        "reference": str(reference) if reference is not None else None,
        "model": str(model) if model is not None else None, "testset": str(testset) if testset is not None else None,
        "weights_dir": str(weights_dir) if weights_dir is not None else None,
        "coeffs": str(coeffs) if coeffs is not None else None, "frame_stride": int(frame_stride), "device": device,
    }
    head = {"fada_version": fada.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "settings": settings}

    if generated is not None:
        from fada.evaluation.pairing import pair_folders

        pairing = pair_folders(generated, reference)
        report = {**head, **evaluator.evaluate(pairing)}
        _finish(report, out, print_report if print_table else None, write_report, COST_KEYS)
        return report

    from fada.evaluation.pairing import pair_paths
    from fada.evaluation.testset import generate_testset, load_pipeline

    pipe, load_s = load_pipeline(model, decoder=decoder)
    settings.update(mode=mode, steps=steps, cfg_audio=cfg_audio, cfg_ref=cfg_ref, seed=int(seed),
                    model_load_seconds=load_s, decoder=pipe.decoder.name)
    videos_root = out.parent / f"{out.stem}_videos"
    gen_kw = dict(mode=mode, steps=steps, cfg_audio=cfg_audio, cfg_ref=cfg_ref, seed=seed, log=_log)

    if sweep_param is None:
        plan_ = pipe.plan(mode, steps, cfg_audio, cfg_ref)
        settings["plan"] = plan_.describe()
        rows, cost = generate_testset(pipe, items, videos_root, **gen_kw)
        report = {**head, **evaluator.evaluate(pair_paths(rows), cost)}
        _finish(report, out, print_report if print_table else None, write_report, COST_KEYS)
        return report

    from fada.evaluation.sweep import plot_sweep, value_label

    for v in sweep_values:  # every value must be valid for this model before the first video is generated
        pipe.plan(mode, steps, **{**{"cfg_audio": cfg_audio, "cfg_ref": cfg_ref}, sweep_param: v})
    settings["sweep"] = str(sweep)
    entries = []
    for v in sweep_values:
        _log(f"sweep {sweep_param} = {value_label(v)}")
        kw = {**gen_kw, sweep_param: v}
        p = pipe.plan(kw["mode"], kw["steps"], kw["cfg_audio"], kw["cfg_ref"])
        rows, cost = generate_testset(pipe, items, videos_root / f"{sweep_param}={value_label(v)}", **kw)
        res = evaluator.evaluate(pair_paths(rows), cost)
        entries.append({sweep_param: v, "plan": p.describe(), **res})
    report = {**head, "sweep": {"param": sweep_param, "values": sweep_values}, "entries": entries,
              "notes": list(plan.notes)}
    write_report(report, out)
    report["plots"] = [str(p) for p in plot_sweep(report, out.parent, exclude=COST_KEYS)]
    write_report(report, out)
    if print_table:
        print_sweep(report)
        _log(f"wrote {out}, {out.with_suffix('.csv')} and {len(report['plots'])} plot(s) in {out.parent}")
    if not any(k not in COST_KEYS for e in entries for k in e["metrics"]):
        raise FadaError("no metric could be computed: " + "; ".join(
            f"{k}: {v}" for k, v in entries[0]["skipped"].items()))
    return report


def _finish(report: dict, out: Path, printer, writer, cost_keys) -> None:
    json_path, csv_path = writer(report, out)
    if printer is not None:
        printer(report)
        _log(f"wrote {json_path} and {csv_path}")
    if not any(k not in cost_keys for k in report["metrics"]):
        reasons = "; ".join(f"{k}: {v}" for k, v in report["skipped"].items()) or "no metric values"
        raise FadaError(f"no metric could be computed ({reasons}); report written to {json_path}")
