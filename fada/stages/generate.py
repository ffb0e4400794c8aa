"""``fada generate``: one portrait + one audio file -> an mp4 (or many pairs from a JSONL list, model loaded once).

The model folder comes from ``--model``, else ``$FADA_MODEL``, else the Fast model recorded by the last
``fada demo`` run (``$XDG_CACHE_HOME/fada/last_demo.json``); the choice is printed. All the work is
`fada.pipeline.FadaPipeline`; this module resolves the model, checks the inputs and reports.

Batch list (``--batch LIST.jsonl``): one JSON object per line with ``portrait`` and ``audio`` (paths relative to
the list's folder) and optionally ``out``, ``seed``, ``mode``, ``steps``, ``cfg_audio``, ``cfg_ref``, ``no_crop``.
Without ``out`` an item is written as ``<portrait>_<audio>.mp4`` into ``--out`` (a folder in batch mode) or beside
the list. Every line is checked before the model loads; an item that fails is reported and the others still run.

Outputs are MP4 files (another suffix is an error rather than an MP4 under a misleading name), and an existing one
is replaced only with ``overwrite`` (``--overwrite``); both are checked before the model loads, as is the mode
against the one the model folder runs (its ``fada_model.json``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from fada.errors import FadaError, MissingFileError
from fada.utils.io import read_pair_list

ITEM_KEYS = {"portrait", "audio", "out", "seed", "mode", "steps", "cfg_audio", "cfg_ref", "no_crop"}


def resolve_model(model) -> tuple[Path, str]:
    """(model folder, where the choice came from)."""
    if model:
        return Path(model).expanduser(), "--model"
    env = os.environ.get("FADA_MODEL")
    if env:
        return Path(env).expanduser(), "$FADA_MODEL"
    from fada.utils.cache import cache_dir, last_demo_model

    demo = last_demo_model()
    if demo is not None:
        if not demo.is_dir():
            raise FadaError(f"the last `fada demo` model {demo} (recorded in {cache_dir()}) no longer exists; pass "
                            f"--model DIR, set $FADA_MODEL, or run `fada demo` again")
        return demo, "the Fast model of the last `fada demo` run"
    raise FadaError("no model: pass --model DIR (a folder written by `fada export`), set $FADA_MODEL, or run "
                    "`fada demo` to train a small one")


def _check_file(path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise MissingFileError(p, what)
    if p.is_dir():
        raise FadaError(f"{p}: is a folder, expected a {what}")
    return p


def check_output(path: Path, overwrite: bool = False) -> Path:
    """An output video path that can be written: an .mp4 (the only container the writer makes), not a folder, and
    not an existing file unless ``overwrite``."""
    if path.suffix.lower() != ".mp4":
        raise FadaError(f"{path}: fada writes MP4 video; give the output a .mp4 name")
    if path.is_dir():
        raise FadaError(f"{path}: is a folder, expected an .mp4 output file")
    if path.exists() and not overwrite:
        raise FadaError(f"{path}: already exists; pass --overwrite to replace it")
    return path


def check_modes(model_dir: Path, requests) -> None:
    """Each (where, mode, scales given) request against the mode the model folder runs, from its fada_model.json
    only: a wrong mode fails before the weights load."""
    from fada.export import read_kind
    from fada.pipeline import check_mode

    kind, cfg_mode = read_kind(model_dir)
    for where, mode, scales in requests:
        try:
            check_mode(mode, kind, cfg_mode, model_dir, scales)
        except FadaError as e:
            raise FadaError(f"{where}{e}") from None


def _precheck_audio(path: Path) -> None:
    """An empty audio file is an error before any model loads (the full decode happens in the pipeline)."""
    try:
        import soundfile as sf

        frames = sf.info(str(path)).frames
    except Exception:  # not a format libsndfile knows: the pipeline's loader decides
        return
    if frames == 0:
        raise FadaError(f"audio file {path} is empty (no samples)")


def read_batch(batch, out_dir: Optional[Path], overwrite: bool = False) -> list[dict]:
    """Parse and check a batch list; every problem names the list and line."""
    path = _check_file(batch, "batch list")
    base = path.parent
    items, seen = [], {}
    for n, where, row in read_pair_list(path, ITEM_KEYS, "--batch list"):
        item = dict(row)
        for key, what in (("portrait", "portrait image"), ("audio", "audio file")):
            p = Path(os.path.expanduser(str(row[key])))
            p = p if p.is_absolute() else base / p
            try:
                item[key] = _check_file(p, what)
            except FadaError as e:
                raise FadaError(f"{where}: {e}") from None
        if row.get("out"):
            o = Path(os.path.expanduser(str(row["out"])))
            item["out"] = o if o.is_absolute() else base / o
        else:
            item["out"] = (out_dir or base) / f"{item['portrait'].stem}_{item['audio'].stem}.mp4"
        key = str(Path(item["out"]).resolve())
        if key in seen:
            raise FadaError(f"{where}: output {item['out']} is also written by line {seen[key]}; give an 'out'")
        try:
            check_output(item["out"], overwrite)
        except FadaError as e:
            raise FadaError(f"{where}: {e}") from None
        seen[key] = n
        item["line"], item["where"] = n, where
        items.append(item)
    if not items:
        raise FadaError(f"{path}: no items")
    return items


def _report(res) -> None:
    print(f"wrote {res.path}: {res.frames} frames at {res.fps} fps ({res.frames / res.fps:.2f} s, audio "
          f"{res.audio_seconds:.2f} s), {res.clips} clip(s) x NFE {res.nfe_per_clip}, {res.seconds:.1f} s "
          f"({res.seconds_per_video_second:.2f} s per video second)")


def run(portrait=None, audio=None, model=None, mode: Optional[str] = None, steps: Optional[int] = None,
        cfg_audio: Optional[float] = None, cfg_ref: Optional[float] = None, seed: int = 0, out=None,
        no_crop: bool = False, fps: Optional[int] = None, batch=None, progress: bool = True, device=None, compile: bool = False,
        decoder: Optional[str] = None, overwrite: bool = False):
    """Generate one video (returns its GenerationResult) or every item of ``batch`` (returns the list).
    ``decoder``: sd | taesd | taesd:PATH (default: the model folder's own; ``fada.models.taesd``). ``compile``:
    compile the denoiser and decoder (``FadaPipeline.compile``) and build the graphs on one warm-up clip first,
    so that the compile time is reported apart from each video's. ``overwrite``: replace existing output files
    (else each one is an error before the model loads)."""
    if mode is not None:
        from fada.pipeline import MODES

        if mode not in MODES:
            raise FadaError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
    if fps is not None and int(fps) < 1:
        raise FadaError(f"--fps {fps}: must be at least 1")
    if steps is not None and int(steps) < 1:
        raise FadaError(f"--steps {steps}: must be at least 1")
    if decoder is not None:  # a malformed --decoder fails before any work
        from fada.models.taesd import parse_decoder

        parse_decoder(decoder)
    if batch is not None:
        out_dir = Path(out).expanduser() if out is not None else None
        if out_dir is not None and out_dir.suffix.lower() == ".mp4":
            raise FadaError(f"--out {out}: with --batch, --out is a folder for the videos")
        items = read_batch(batch, out_dir, overwrite)
    else:
        if portrait is None or audio is None:
            raise FadaError("give PORTRAIT and AUDIO, or --batch LIST.jsonl")
        p, a = _check_file(portrait, "portrait image"), _check_file(audio, "audio file")
        o = check_output(Path(out).expanduser() if out is not None else Path(f"{p.stem}_{a.stem}.mp4"), overwrite)
        items = [{"portrait": p, "audio": a, "out": o}]

    model_dir, why = resolve_model(model)
    check_modes(model_dir, [(f"{item['where']}: " if "where" in item else "", item.get("mode", mode),
                             item.get("cfg_audio", cfg_audio) is not None or item.get("cfg_ref", cfg_ref) is not None)
                            for item in items])
    if batch is None:  # fail fast, before a model is loaded: a readable image with a face, audio with samples
        from fada.data.portrait import find_face, read_portrait

        image = read_portrait(items[0]["portrait"])
        if not no_crop:
            find_face(image, source=str(items[0]["portrait"]))
        _precheck_audio(items[0]["audio"])
    from fada.pipeline import FadaPipeline

    pipe = FadaPipeline.from_pretrained(model_dir, device=device, decoder=decoder)
    spec = pipe.spec
    print(f"model: {model_dir} (from {why}): {spec.kind} model, {spec.model.resolution}px, {spec.model.fps} fps, "
          f"{spec.model.num_frames} frames per clip, on {pipe.device} ({str(pipe.dtype).replace('torch.', '')}), "
          f"decoder {pipe.decoder.name}")
    if compile:
        pipe.compile()
        first = items[0]
        secs = pipe.warm_up(first["portrait"], mode=first.get("mode", mode), steps=first.get("steps", steps),
                            crop=not bool(first.get("no_crop", no_crop)))
        print(f"compiled ({pipe.compiled}) and warmed up in {secs:.1f} s, not counted in the timings below")

    results, failures = [], []
    for item in items:
        kw = dict(mode=item.get("mode", mode), steps=item.get("steps", steps),
                  cfg_audio=item.get("cfg_audio", cfg_audio), cfg_ref=item.get("cfg_ref", cfg_ref))
        try:
            plan = pipe.plan(**kw)
            if batch is None or item is items[0] or kw != dict(mode=mode, steps=steps, cfg_audio=cfg_audio,
                                                               cfg_ref=cfg_ref):
                print(plan.describe())
            res = pipe(item["portrait"], item["audio"], seed=int(item.get("seed", seed)), out=item["out"],
                       crop=not bool(item.get("no_crop", no_crop)), fps=fps, progress=progress, **kw)
        except FadaError as e:
            if batch is None:
                raise
            print(f"error: line {item['line']}: {e}")
            failures.append((item["line"], str(e)))
            continue
        _report(res)
        results.append(res)
    if batch is None:
        return results[0]
    print(f"batch: {len(results)} of {len(items)} videos written")
    if failures:
        line, msg = failures[0]
        raise FadaError(f"{len(failures)} of {len(items)} batch items failed (first: line {line}: {msg})")
    return results
