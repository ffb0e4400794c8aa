"""The ``fada`` command: a thin Typer layer over ``fada.stages``.

Each command parses its options, loads the recipe where it takes one, and calls one stage function.
A FadaError becomes one line on stderr and exit code 2; ``fada --debug ...`` shows the traceback.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import traceback
from pathlib import Path
from typing import List, Optional

# Logs (Slurm, nohup, CI): stderr is not a terminal, so a progress bar's redraws are kept, not overwritten; draw one
# every 10 s instead of 10 a second. tqdm reads TQDM_* defaults when it is imported, hence before anything imports
# it; a value the user set wins.
if not sys.stderr.isatty():
    os.environ.setdefault("TQDM_MININTERVAL", "10")

import typer  # noqa: E402

import fada  # noqa: E402
from fada.errors import ConfigError, FadaError  # noqa: E402


def _value_type_unless_flag(self, ctx, _value_type=typer.core.TyperOption.display_type_rich):
    # Typer's rich help asks every option for the type of its value, flags included, and shows `--quick <bool>` as
    # if the flag took one; a flag (or a counter) takes no value, as Typer's plain help already says.
    return None if self.is_flag or self.count else _value_type(self, ctx)


typer.core.TyperOption.display_type_rich = _value_type_unless_flag  # once, for every command's --help
app = typer.Typer(
    name="fada",
    help="FADA: fast audio-driven talking-portrait diffusion. Curate data, train a teacher, distill a 6-step "
         "student, export it, generate video from one portrait and one audio file, and evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class _State:
    debug = False


STATE = _State()

RECIPE_HELP = "Shipped recipe name (see `fada recipes`) or path to a YAML recipe."
OVERRIDES_HELP = "Recipe overrides after the options, as key.sub=value (e.g. train.max_steps=100)."


def _fail(msg: str, code: int) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def guard():
    """Map errors to one-line messages and exit codes (2: user error, 1: internal error, 130: interrupted)."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except ConfigError as e:
        if STATE.debug:
            traceback.print_exc()
        where = f"{e.source}: " if e.source else ""
        for problem in e.problems:
            typer.echo(f"error: {where}{problem}", err=True)
        raise typer.Exit(2)
    except FadaError as e:
        if STATE.debug:
            traceback.print_exc()
        _fail(str(e), 2)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as e:  # a bug, not the user's input
        if STATE.debug:
            raise
        _fail(f"internal error: {type(e).__name__}: {e} (run `fada --debug ...` for the traceback)", 1)


def run_stage(name: str, **kwargs):
    """Import ``fada.stages.<name>`` and call its ``run``; a stage that is not built yet is a clear exit 2."""
    module_name = f"fada.stages.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise FadaError(f"`fada {name.replace('_', '-')}` is not implemented yet in fada {fada.__version__}") from None
    return module.run(**kwargs)


def load(recipe: str, overrides: Optional[List[str]], stage: str):
    from fada.config import load_recipe

    return load_recipe(recipe, overrides, stage=stage)


def _version(value: bool):
    if value:
        typer.echo(f"fada {fada.__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                           help="Print the version and exit."),
):
    STATE.debug = debug


@app.command("recipes")
def recipes_cmd(
    show: Optional[str] = typer.Argument(None, help="A recipe to print fully resolved (defaults filled in)."),
):
    """List the shipped recipes (name, stage, what each is for), or print one fully resolved."""
    with guard():
        from fada.config import recipe_to_yaml, shipped_recipe_summaries, shipped_recipes
        from fada.config.recipes import resolve_recipe

        if show:
            import yaml

            from fada.config import load_recipe

            text, _ = resolve_recipe(show)
            stage = (yaml.safe_load(text) or {}).get("stage")
            typer.echo(recipe_to_yaml(load_recipe(show, stage=stage)), nl=False)
            return
        summaries = shipped_recipe_summaries()
        for name, stage in shipped_recipes().items():
            typer.echo(f"{name:<16} {stage:<8} {summaries[name]}".rstrip())


@app.command("curate")
def curate_cmd(
    input_dir: Path = typer.Argument(..., help="Folder of talking videos (mp4/mov/mkv/webm/avi with audio)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: clips/, manifest.jsonl, A.jsonl, B.jsonl, report."),
    recipe: str = typer.Option("curate", "--recipe", "-r", help=RECIPE_HELP),
    overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP),
    engine: str = typer.Option("local", "--engine", help="local (processes on this machine) or ray (Ray tasks)."),
    address: Optional[str] = typer.Option(None, "--address",
                                          help="With --engine ray: the cluster (auto, HOST:PORT, ray://...); "
                                               "default: a local Ray instance."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j",
                                          help="Processes (local) or the local Ray instance's CPUs (default: "
                                               "curate.workers, else all cores)."),
):
    """Curate talking videos into face-cropped clips, score them, and split them into strict set A and lenient set B."""
    with guard():
        run_stage("curate", input_dir=input_dir, out=out, recipe=load(recipe, overrides, "curate"), workers=workers,
                  engine=engine, address=address)


@app.command("train-teacher")
def train_teacher_cmd(
    recipe: str = typer.Option("teacher", "--recipe", "-r", help=RECIPE_HELP),
    overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP),
):
    """Train the dual-UNet teacher (ReferenceNet + denoising net) on set A; resumes from its last checkpoint."""
    with guard():
        run_stage("train_teacher", recipe=load(recipe, overrides, "teacher"))


@app.command("distill")
def distill_cmd(
    recipe: str = typer.Option("fast", "--recipe", "-r", help=RECIPE_HELP + " balanced, fast, or tiny-*."),
    overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP),
):
    """Distill the teacher into a 6-step PeRFlow student on set B (Balanced or Fast), with mixed supervision."""
    with guard():
        run_stage("distill", recipe=load(recipe, overrides, "distill"))


@app.command("export")
def export_cmd(
    checkpoint: Path = typer.Argument(..., help="A training checkpoint (step-XXXXXXX/) or run folder (a run's "
                                                 "train.output_dir, e.g. fada-demo/runs/fast)."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write."),
    dtype: str = typer.Option("fp16", "--dtype", help="fp16, bf16 or fp32."),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Export the EMA weights (default) or the raw ones."),
    copy_models: bool = typer.Option(True, "--copy-models/--link-models",
                                     help="Copy the SD VAE and wav2vec2 into the folder (default: it moves between "
                                          "machines whole) or reference them by absolute path."),
    decoder: Optional[str] = typer.Option(None, "--decoder",
                                          help="taesd:PATH copies a local TAESD folder (diffusers AutoencoderTiny) "
                                               "into the model folder as its default decoder; sd (default): the "
                                               "SD VAE decodes."),
):
    """Export a checkpoint as a self-contained model folder (configs + safetensors) that `generate` loads."""
    with guard():
        if dtype not in ("fp16", "bf16", "fp32"):
            raise FadaError(f"--dtype: {dtype!r} is not one of fp16, bf16, fp32")
        run_stage("export", checkpoint=checkpoint, out=out, dtype=dtype, ema=ema, copy_vae=copy_models,
                  copy_audio=copy_models, decoder=decoder)


@app.command("generate")
def generate_cmd(
    portrait: Optional[Path] = typer.Argument(None, help="Portrait image (png/jpg/webp)."),
    audio: Optional[Path] = typer.Argument(None, help="Driving audio (wav/mp3/flac/ogg/m4a), any length: mixed to "
                                                      "mono and resampled to the model's audio rate (16 kHz for "
                                                      "wav2vec2 and the demo's models); the video carries that "
                                                      "audio."),
    model: Optional[Path] = typer.Option(None, "--model", "-m",
                                         help="Exported model folder (default: $FADA_MODEL, else the last demo's Fast model)."),
    mode: Optional[str] = typer.Option(None, "--mode", help="teacher (DDIM, multi-CFG), balanced (PeRFlow, "
                                                             "multi-CFG) or fast (PeRFlow, one pass); default: the "
                                                             "model's own, the only one a model folder runs."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Denoising steps (default: the model's own)."),
    cfg_audio: Optional[float] = typer.Option(None, "--cfg-audio", help="Audio guidance scale (default: the model's "
                                                                        "own)."),
    cfg_ref: Optional[float] = typer.Option(None, "--cfg-ref", help="Reference guidance scale (default: the model's "
                                                                    "own)."),
    seed: int = typer.Option(0, "--seed", help="Noise seed."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output .mp4, square at the model's resolution "
                                                                  "(default: <portrait>_<audio>.mp4); with --batch, "
                                                                  "the folder for rows without 'out'."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files (else an existing "
                                                              "one is an error)."),
    no_crop: bool = typer.Option(False, "--no-crop", help="No face detection: take the centre square of the image, "
                                                          "resized to the model's resolution."),
    fps: Optional[int] = typer.Option(None, "--fps", help="Output frame rate (default: the model's own, 25 for the "
                                                          "demo's models)."),
    batch: Optional[Path] = typer.Option(None, "--batch", help="JSONL of {portrait, audio, out} pairs; the model loads once."),
    decoder: Optional[str] = typer.Option(None, "--decoder",
                                          help="sd (the SD VAE), taesd (the model folder's TAESD copy) or taesd:PATH "
                                               "(a local TAESD folder: cheaper decoding, softer detail); default: "
                                               "the model folder's own."),
    compile: bool = typer.Option(False, "--compile",
                                 help="torch.compile the denoiser and decoder for the clip's shapes (CUDA graphs on a "
                                      "GPU); the compile time is reported apart and not counted in the rate."),
):
    """Generate a talking-portrait mp4 from one portrait and one audio file."""
    with guard():
        if batch is None and (portrait is None or audio is None):
            raise FadaError("give PORTRAIT and AUDIO, or --batch LIST.jsonl")
        run_stage("generate", portrait=portrait, audio=audio, model=model, mode=mode, steps=steps,
                  cfg_audio=cfg_audio, cfg_ref=cfg_ref, seed=seed, out=out, no_crop=no_crop, fps=fps, batch=batch,
                  decoder=decoder, compile=compile, overwrite=overwrite)


@app.command("stream")
def stream_cmd(
    portrait: Path = typer.Argument(..., help="Portrait image (png/jpg/webp)."),
    audio: str = typer.Argument(..., help="Driving audio file, or - for raw s16le PCM on stdin."),
    model: Optional[Path] = typer.Option(None, "--model", "-m",
                                         help="Exported model folder (default: $FADA_MODEL, else the last demo's Fast model)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output .mp4, fragmented, square at the model's "
                                                                  "resolution (default: <portrait>_stream.mp4)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file (else it is an "
                                                              "error)."),
    mode: Optional[str] = typer.Option(None, "--mode", help="teacher, balanced or fast (default: the model's own, "
                                                             "the only one a model folder runs)."),
    seed: int = typer.Option(0, "--seed", help="Noise seed."),
    no_crop: bool = typer.Option(False, "--no-crop", help="No face detection: take the centre square of the image, "
                                                          "resized to the model's resolution."),
    sample_rate: int = typer.Option(16000, "--sample-rate", help="With -: the PCM's sample rate."),
    channels: int = typer.Option(1, "--channels", help="With -: the PCM's interleaved channels."),
    no_pace: bool = typer.Option(False, "--no-pace", help="Push the audio as fast as possible, not at real time."),
    lookahead_ms: Optional[float] = typer.Option(None, "--lookahead-ms",
                                                 help="Audio past a clip's end needed before it is generated (default: "
                                                      "exact features; less: lower latency)."),
    buffer_ms: float = typer.Option(0.0, "--buffer-ms",
                                    help="Playout delay: the player starts this long after the first frame is ready "
                                         "(a jitter buffer); lateness is counted against it."),
    compile: bool = typer.Option(False, "--compile",
                                 help="torch.compile the denoiser and decoder and warm them up before the clock "
                                      "starts (on a CPU the demo's Fast model needs it to keep up with real time)."),
):
    """Stream audio through a live session into an mp4 written as frames come; report latency and lateness."""
    with guard():
        run_stage("stream", portrait=portrait, audio=audio, model=model, out=out, mode=mode, seed=seed,
                  no_crop=no_crop, sample_rate=sample_rate, channels=channels, pace=not no_pace,
                  lookahead_ms=lookahead_ms, buffer_ms=buffer_ms, compile=compile, overwrite=overwrite)


@app.command("eval")
def eval_cmd(
    metrics: str = typer.Option("fid,fvd,sync", "--metrics",
                                help="Comma list of fid, fvd (FVD-R), fvd_i (I3D), sync (SyncNet; weight-free "
                                     "sync_wf_* without its weights), sync_wf, efid, iqa, regions (mouth / "
                                     "elsewhere PSNR against a still copy), or all."),
    generated: Optional[Path] = typer.Option(None, "--generated", help="Folder of generated videos."),
    reference: Optional[Path] = typer.Option(None, "--reference",
                                             help="Folder of reference videos, paired with --generated by file name."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model folder to generate with (with --testset)."),
    testset: Optional[Path] = typer.Option(None, "--testset",
                                           help="JSONL rows {portrait, audio, reference?, name?} for --model."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir",
                                               help="Folder with the metric networks' weights "
                                                    "(pt_inception-2015-12-05-6726825d.pth, resnet-50-kinetics.pth, "
                                                    "i3d_torchscript.pt, syncnet_v2.model)."),
    sweep: Optional[str] = typer.Option(None, "--sweep",
                                        help="cfg_audio=START:STOP:STEP or cfg_ref=... (or a comma list): generate and "
                                             "evaluate at each value, plot each metric vs the scale (PNG)."),
    out: Path = typer.Option(Path("report.json"), "--out", "-o", help="JSON report (a CSV is written beside it)."),
    mode: Optional[str] = typer.Option(None, "--mode", help="With --model: teacher, balanced or fast."),
    steps: Optional[int] = typer.Option(None, "--steps", help="With --model: denoising steps."),
    cfg_audio: Optional[float] = typer.Option(None, "--cfg-audio", help="With --model: audio guidance scale."),
    cfg_ref: Optional[float] = typer.Option(None, "--cfg-ref", help="With --model: reference guidance scale."),
    seed: int = typer.Option(0, "--seed", help="With --model: noise seed (a testset row's 'seed' wins)."),
    frame_stride: int = typer.Option(1, "--frame-stride",
                                     help="FID / E-FID use every k-th frame of each video (faster)."),
    coeffs: Optional[Path] = typer.Option(None, "--coeffs",
                                          help="E-FID coefficients: DIR/generated/<name>.npy and "
                                               "DIR/reference/<name>.npy (else the efid_sub substitute)."),
    device: Optional[str] = typer.Option(None, "--device", help="Metric networks' device (default: cuda if "
                                                                 "available, else cpu)."),
    decoder: Optional[str] = typer.Option(None, "--decoder",
                                          help="With --model: sd, taesd or taesd:PATH (default: the folder's own)."),
):
    """Evaluate videos: FID, FVD, Sync-C/D, E-FID, IQA, and NFE-D and wall time with --model.

    Metrics whose weights are missing are skipped with the reason; the rest run.
    """
    with guard():
        run_stage("evaluate", metrics=[m.strip() for m in metrics.split(",") if m.strip()], generated=generated,
                  reference=reference, model=model, testset=testset, weights_dir=weights_dir, sweep=sweep, out=out,
                  mode=mode, steps=steps, cfg_audio=cfg_audio, cfg_ref=cfg_ref, seed=seed, frame_stride=frame_stride,
                  coeffs=coeffs, device=device, decoder=decoder)


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("fada-demo"), "--out", "-o", help="Output folder."),
    quick: bool = typer.Option(False, "--quick", help="Same stages, smaller (about 2 minutes on 2 cores)."),
    ablations: bool = typer.Option(False, "--ablations", help="Also distill the paper's Table 3/4 variants."),
):
    """The whole paper in miniature on a CPU: synthesise data, curate, train, distill, export, generate, evaluate."""
    with guard():
        run_stage("demo", out=out, quick=quick, ablations=ablations)


@app.command("app")
def app_cmd(
    model: Optional[List[Path]] = typer.Option(None, "--model", "-m",
                                               help="Exported model folder; repeat for several (also $FADA_MODEL and "
                                                    "the last demo's models)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to serve on (loopback by default)."),
    port: int = typer.Option(7860, "--port", help="Port."),
    share: bool = typer.Option(False, "--share", help="Also open a public gradio.live link (a warning is printed)."),
    max_audio_seconds: float = typer.Option(60.0, "--max-audio-seconds", help="Longest speech a request may send."),
    compile: bool = typer.Option(False, "--compile",
                                 help="torch.compile each model's denoiser and decoder when it loads (CUDA graphs on "
                                      "a GPU; minutes of compiling once, faster requests after)."),
):
    """A local web page: portrait + speech in, talking-portrait video out (Gradio; also an API); its Live tab opens
    a page where the microphone drives the portrait as the frames are made."""
    with guard():
        from fada.app import launch

        launch(model or [], host=host, port=port, share=share, max_audio_seconds=max_audio_seconds,
               compile=compile)


@app.command("synth")
def synth_cmd(
    out_dir: Path = typer.Argument(..., help="Output folder: videos/clip_XXXX.mp4 and labels.json (the answer key)."),
    count: int = typer.Option(60, "--count", "-n", help="Number of clips."),
    size: int = typer.Option(128, "--size", help="Frame width = height in pixels (even, >= 64; faces need >= 96)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed writes the same corpus."),
    defect_fraction: float = typer.Option(0.4, "--defect-fraction",
                                          help="Share of clips with one defect: out_of_sync, blur, shaky, static "
                                               "or no_face (in turn)."),
    seconds: str = typer.Option("3:5", "--seconds", help="Clip length range MIN:MAX in seconds (or one number)."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Parallel processes (default: all cores)."),
):
    """Write a labelled synthetic talking-head corpus: drawn faces speaking synthetic speech, as mp4 with audio.

    A share of the clips carries a known defect; labels.json lists each clip's defects (curation never reads it).
    """
    with guard():
        try:
            parts = [float(x) for x in seconds.split(":")]
        except ValueError:
            raise FadaError(f"--seconds {seconds!r}: expected MIN:MAX, e.g. 3:5") from None
        if len(parts) not in (1, 2):
            raise FadaError(f"--seconds {seconds!r}: expected MIN:MAX, e.g. 3:5")
        run_stage("synth", out=out_dir, count=count, size=size, seed=seed, defect_fraction=defect_fraction,
                  seconds=(parts[0], parts[-1]), workers=workers)


import_app = typer.Typer(help="Bring a published model into fada as an ordinary model folder.", no_args_is_help=True)
app.add_typer(import_app, name="import")


@import_app.command("hallo")
def import_hallo_cmd(
    pretrained_dir: Path = typer.Argument(..., help="Hallo's pretrained_models folder (hallo/net.pth, "
                                                    "stable-diffusion-v1-5/unet, sd-vae-ft-mse, wav2vec, "
                                                    "face_analysis)."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write."),
    dtype: str = typer.Option("fp16", "--dtype", help="fp16, bf16 or fp32."),
    copy_models: bool = typer.Option(True, "--copy-models/--link-models",
                                     help="Copy wav2vec2 into the folder (default) or reference it by path; the VAE "
                                          "is always copied, the face-analysis files always referenced."),
    face_analysis: Optional[Path] = typer.Option(None, "--face-analysis",
                                                 help="InsightFace + MediaPipe folder (default: "
                                                      "PRETRAINED_DIR/face_analysis/models)."),
    resolution: int = typer.Option(512, "--resolution", help="Frame size the model runs at (Hallo: 512)."),
    num_frames: int = typer.Option(16, "--num-frames", help="Frames per clip (Hallo: 16)."),
):
    """Import Hallo's teacher: forward-equal to Hallo's own code, sampled with its protocol (80 NFE) by default."""
    with guard():
        run_stage("import_hallo", pretrained_dir=pretrained_dir, out=out, dtype=dtype, copy_models=copy_models,
                  face_analysis=face_analysis, resolution=resolution, num_frames=num_frames)


def _close_process_group() -> None:
    """Under torchrun / accelerate launch: leave the process group before the interpreter exits; left to exit-time
    destructors, gloo's threads can abort a finished rank ("terminate called without an active exception")."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main() -> None:
    # ``--debug`` must take effect before Typer parses anything else (errors while parsing need it too).
    STATE.debug = "--debug" in sys.argv[1:]
    try:
        app()
    finally:
        _close_process_group()


if __name__ == "__main__":
    main()
