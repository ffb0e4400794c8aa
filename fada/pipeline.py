"""The generation pipeline: one portrait + one audio file -> a talking-portrait mp4. ``fada generate`` wraps it.

    pipe = FadaPipeline.from_pretrained("models/fast")          # a folder written by `fada export`
    result = pipe("portrait.png", "speech.wav", out="talk.mp4")   # mode/steps/scales default to the folder's
    for chunk in pipe.generate_frames("portrait.png", "speech.wav"):  # or: uint8 (n, H, W, 3) chunks
        ...

Generation runs clip by clip (F = model.num_frames frames). The ReferenceNet encodes the reference latent once per
video and, per clip, the M motion latents (the last M generated latents of the previous clip; for the first clip
the reference repeated, whose bank is the reference's) into a bank that every denoising step reuses; the sampler
runs from seeded noise; the latents of the frames shown are decoded on a worker while the next clip denoises
(``fada.clips.FrameStream``, ``fada.engine``) and the frames streamed out. Modes:

    teacher   DDIM (25 steps), multi-CFG Eq. 9: the three branches as one batch of 3  -> NFE 75 per clip
    balanced  PeRFlow (6 steps, K windows), multi-CFG, batch of 3                     -> NFE 18
    fast      PeRFlow (6 steps), one pass; the student is told (cfg_a, cfg_r)         -> NFE 6

NFE counts denoiser passes per clip (a batched 3-branch pass counts 3). Audio features are computed by the front
end in blocks of ``FEATURE_BLOCK_SECONDS`` (with context on both sides, so the result equals one whole-audio call)
and sliced per clip; the last clip is padded by repeating the last feature frame and its output trimmed. The
number of frames is always ``frames_for_duration(len(audio), sr, fps)``; when ``fps`` differs from the model's, the
model's frames are generated and resampled by nearest index. Memory stays flat however long the audio: only the
waveform (4 bytes per sample) grows with it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch

from fada.clips import FEATURE_BLOCK_SECONDS, AudioFeatures, FrameStream, component, gen_index  # noqa: F401
from fada.data.portrait import find_face, prepare_portrait, read_portrait, to_uint8_rgb  # noqa: F401 (re-exported)
from fada.diffusion import (TEACHER_GUIDANCE, Guidance, conditional, guided, sample_ddim, sample_perflow,
                            step_times)
from fada.errors import FadaError
from fada.export import DTYPES, ModelSpec, load_codec, load_frontend, load_net, read_spec, supported_modes
from fada.models.attention import Bank

MODES = ("teacher", "balanced", "fast")


def check_mode(mode: Optional[str], kind: str, cfg_mode: str, root, scales_given: bool = False) -> str:
    """The mode a request runs (default: the model's own) for a model folder of ``kind``; a one-line FadaError
    when the folder cannot run it. Needs only what fada_model.json says, so that ``fada generate`` can check a
    request before the weights load."""
    if mode is not None and mode not in MODES:
        raise FadaError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
    modes = supported_modes(kind, cfg_mode)
    mode = mode or ("fast" if "fast" in modes else kind)
    if mode not in modes:
        why = ""
        if kind == "fast" and mode == "balanced":
            why = (": it was distilled on the guided teacher's output, so multi-CFG passes on top would apply "
                   "guidance twice")
        elif kind == "teacher":
            why = ": a teacher samples with DDIM; distill it (`fada distill`) for the 6-step modes"
        raise FadaError(f"--mode {mode}: the {kind} model at {root} runs only {' or '.join(modes)}{why}")
    if mode == "fast" and cfg_mode == "none" and scales_given:
        raise FadaError("--cfg-audio/--cfg-ref: this Fast model was distilled without CFG conditioning "
                        "(cfg mode 'none'); its guidance is fixed")
    return mode


# ---------------------------------------------------------------------------------------------------------------
# plans and results


@dataclass(frozen=True)
class GenerationPlan:
    mode: str            # teacher | balanced | fast
    sampler: str         # ddim | perflow
    steps: int
    num_windows: int     # PeRFlow windows (0 for DDIM)
    cfg_audio: float
    cfg_ref: float
    passes: int          # denoiser passes per step: 3 (multi-CFG, one batch of 3), 2 (one scale), or 1
    told_scales: bool    # fast students with CFG conditioning get (cfg_a, cfg_r) as an input
    extra_steps: str = "early"  # PeRFlow: the windows that get the steps mod num_windows (step_times)

    @property
    def nfe_per_clip(self) -> int:
        return self.steps * self.passes

    @property
    def branches(self) -> tuple[tuple[bool, bool], ...]:
        """(keep_audio, keep_ref) of each batched guidance branch, in batch order (``Guidance.branches``)."""
        return Guidance(self.cfg_audio, self.cfg_ref).branches if self.passes > 1 else ((True, True),)

    def describe(self) -> str:
        if self.sampler == "ddim":
            how = f"DDIM {self.steps} steps"
        elif self.sampler == "tcd":
            how = f"TCD {self.steps} steps"
        else:
            late = ", extra steps late" if self.extra_steps == "late" and self.steps % self.num_windows else ""
            how = f"PeRFlow {self.steps} steps ({self.num_windows} window{'s' * (self.num_windows != 1)}{late})"
        if self.passes == 3:
            cfg = f"multi-CFG cfg_audio {self.cfg_audio:g} / cfg_ref {self.cfg_ref:g}, 3 passes per step batched"
        elif self.passes == 2:
            cfg = f"CFG scale {self.cfg_audio:g} (audio and reference together), 2 passes per step batched"
        elif self.told_scales:
            cfg = (f"1 pass per step, scales told to the student: cfg_audio {self.cfg_audio:g} / "
                   f"cfg_ref {self.cfg_ref:g}")
        elif self.mode == "fast":
            cfg = "1 pass per step (guidance distilled into the student)"
        else:
            cfg = "1 pass per step (guidance scales 1)"
        return f"mode {self.mode}: {how}, {cfg}; NFE {self.nfe_per_clip} per clip"


@dataclass
class GenerationResult:
    path: Optional[Path]
    frames: int
    fps: int
    nfe_per_clip: int
    clips: int
    seconds: float            # wall time of the generation (portrait, audio, sampling, decoding, writing)
    audio_seconds: float = 0.0
    plan: Optional[GenerationPlan] = None

    @property
    def seconds_per_video_second(self) -> float:
        return self.seconds / self.audio_seconds if self.audio_seconds else float("nan")


class FadaPipeline:
    """A loaded model folder: AvatarNet + image codec + audio front end + sampler defaults. ``decoder`` decodes the
    sampled latents (default: the codec; a TAESD `TinyDecoder` with ``decoder="taesd..."``)."""

    def __init__(self, net, codec, frontend, spec: ModelSpec, device=None, dtype: Optional[torch.dtype] = None,
                 decoder=None):
        self.net, self.codec, self.frontend, self.spec = net, codec, frontend, spec
        self.decoder = codec if decoder is None else decoder
        p = next(net.parameters())
        self.device = torch.device(device) if device is not None else p.device
        self.dtype = dtype or p.dtype
        self._detector = None
        self.compiled: Optional[str] = None  # torch.compile mode after ``compile()``
        self.conditions_fn = None  # image -> PortraitConditions (nets with model.conditions; set to inject one)

    @property
    def model_cfg(self):
        return self.spec.model

    @property
    def resolution(self) -> int:
        return int(self.spec.model.resolution)

    @classmethod
    def from_pretrained(cls, model_dir, device=None, dtype: Union[torch.dtype, str, None] = None,
                        attention_backend: Optional[str] = None, decoder: Optional[str] = None) -> "FadaPipeline":
        """Load a folder written by ``fada export``. device: default CUDA when available, else CPU. dtype: default
        float32 on the CPU (half precision is slow there) and the folder's dtype on a GPU. decoder: "sd" (the
        codec), "taesd" (the folder's copy) or "taesd:PATH"; default the folder's own (``fada.models.taesd``)."""
        spec = read_spec(model_dir)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if isinstance(dtype, str):
            if dtype not in DTYPES:
                raise FadaError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
            dtype = DTYPES[dtype]
        if dtype is None:
            dtype = torch.float32 if device.type == "cpu" else DTYPES[spec.dtype]
        net = load_net(spec, device=device, dtype=dtype)
        if attention_backend:
            net.set_attention_backend(attention_backend)
        return cls.from_net(net, spec, device, dtype, decoder=decoder)

    @classmethod
    def from_net(cls, net, spec: ModelSpec, device=None, dtype: Optional[torch.dtype] = None,
                 decoder: Optional[str] = None) -> "FadaPipeline":
        """A pipeline around an in-memory AvatarNet (``spec`` from ``fada.export.spec_for``): the codec and the
        audio front end are built from the spec's model config and checked against the net; ``decoder`` as in
        `from_pretrained`."""
        from fada.models.taesd import load_decoder

        p = next(net.parameters())
        device, dtype = torch.device(device or p.device), dtype or p.dtype
        net = net.to(device=device, dtype=dtype).eval().requires_grad_(False)
        codec = load_codec(spec, device=device, dtype=dtype)
        frontend = load_frontend(spec, device=device)
        return cls(net, codec, frontend, spec, device, dtype,
                   decoder=load_decoder(decoder, spec, codec, device=device, dtype=dtype))

    # -- compiled graphs -----------------------------------------------------------------------------------------
    def compile(self, mode: Optional[str] = None, decoder: bool = True) -> "FadaPipeline":
        """Compile the denoising UNet and the decoder in place with ``torch.compile`` for the clip's static shapes
        (``dynamic=False``). ``mode`` default: 'reduce-overhead' on CUDA (CUDA graphs: one replay per step instead
        of a thousand kernel launches), 'default' elsewhere. The work happens at the first call of each shape
        (``warm_up`` triggers it outside the timed run); the decoder then always gets whole clips (the last
        clip's latents padded, the padding's frames dropped), so no later call meets a new shape."""
        mode = mode or ("reduce-overhead" if self.device.type == "cuda" else "default")
        options = dict(mode=mode, dynamic=False)
        self.net.denoising_net.unet.compile(**options)
        if decoder:
            self.decoder.compile(**options)
        self.compiled = mode
        return self

    def warm_up(self, portrait, mode: Optional[str] = None, **kwargs) -> float:
        """Generate one clip of silence (output discarded) so that compiled graphs are built, lazy state is set
        up and kernels are chosen before a timed or live run; returns its seconds (for a compiled pipeline,
        mostly compile time)."""
        t0 = time.perf_counter()
        seconds = self.model_cfg.num_frames / self.model_cfg.fps
        silence = np.zeros(int(round(seconds * self.frontend.sample_rate)), np.float32)
        stream = self.generate_frames(portrait, silence, mode=mode, **kwargs)
        stream.write_to(lambda frames: None)
        return time.perf_counter() - t0

    # -- planning ------------------------------------------------------------------------------------------------
    def plan(self, mode: Optional[str] = None, steps: Optional[int] = None, cfg_audio: Optional[float] = None,
             cfg_ref: Optional[float] = None) -> GenerationPlan:
        """Sampler, steps, scales and NFE for a request, checked against what this model folder supports."""
        spec = self.spec
        mode = check_mode(mode, spec.kind, spec.cfg_mode, spec.root, cfg_audio is not None or cfg_ref is not None)
        told = mode == "fast" and spec.cfg_mode != "none"
        if mode == spec.kind:
            da, dr = spec.cfg_audio, spec.cfg_ref
        else:
            da, dr = float(TEACHER_GUIDANCE.cfg_a), float(TEACHER_GUIDANCE.cfg_r)
        cfg_a = float(da if cfg_audio is None else cfg_audio)
        cfg_r = float(dr if cfg_ref is None else cfg_ref)
        for name, v in (("--cfg-audio", cfg_a), ("--cfg-ref", cfg_r)):
            if not math.isfinite(v) or v < 0:
                raise FadaError(f"{name} {v}: must be a finite number >= 0")
        sampler = "ddim" if mode == "teacher" else ("tcd" if spec.sampler == "tcd" else "perflow")
        windows = 0 if sampler != "perflow" else spec.num_windows
        n = int(steps if steps is not None else spec.steps)
        if sampler == "ddim":
            if not 1 <= n <= 1000:
                raise FadaError(f"--steps {n}: DDIM needs 1..1000 steps")
        elif sampler == "tcd":
            if not 1 <= n <= spec.tcd["original_steps"]:
                raise FadaError(f"--steps {n}: TCD needs 1..{spec.tcd['original_steps']} steps")
        else:
            try:
                step_times(n, windows, spec.extra_steps)
            except ValueError:
                raise FadaError(f"--steps {n}: PeRFlow needs at least one step per window "
                                f"({windows} windows: use --steps {windows} or more)") from None
        passes = 1 if mode == "fast" else Guidance(cfg_a, cfg_r).passes
        return GenerationPlan(mode, sampler, n, windows, cfg_a, cfg_r, passes, told, spec.extra_steps)

    # -- steps ---------------------------------------------------------------------------------------------------
    @component("portrait")
    def load_portrait(self, portrait, crop: bool = True) -> np.ndarray:
        """Path or image array -> the (resolution, resolution, 3) uint8 reference frame."""
        if isinstance(portrait, (str, os.PathLike)):
            image, source = read_portrait(portrait), str(portrait)
        else:
            image, source = to_uint8_rgb(portrait), "portrait"
        if crop and self._detector is None:
            from fada.data.face import FaceDetector

            self._detector = FaceDetector()
        return prepare_portrait(image, self.resolution, crop=crop, detector=self._detector, source=source)

    @component("audio_load")
    def load_audio(self, audio) -> np.ndarray:
        """Path (wav/mp3/flac/ogg/m4a, resampled), or a float mono array at the front end's rate, or
        (array, sample_rate)."""
        from fada.models.audio import load_audio

        sr = self.frontend.sample_rate
        if isinstance(audio, (str, os.PathLike)):
            p = Path(audio).expanduser()
            if p.is_dir():
                raise FadaError(f"{p}: is a folder, expected an audio file")
            return load_audio(p, sr)
        if isinstance(audio, tuple):
            wav, rate = audio
            wav = np.asarray(wav, dtype=np.float32)
            if int(rate) != sr:
                import librosa

                wav = librosa.resample(wav, orig_sr=int(rate), target_sr=sr).astype(np.float32)
        else:
            wav = np.asarray(audio, dtype=np.float32)
        if wav.ndim != 1 or wav.size == 0 or not np.all(np.isfinite(wav)):
            raise FadaError("audio: expected a non-empty, finite, mono (1-D) waveform")
        return wav

    @torch.inference_mode()
    @component("reference_encode")
    def encode_reference(self, image: np.ndarray) -> torch.Tensor:
        from fada.models.vae import frames_to_tensor

        x = frames_to_tensor(image, device=self.device, dtype=self.dtype)[None]
        return self.codec.encode(x).to(self.dtype)

    @torch.inference_mode()
    @component("bank")
    def encode_reference_bank(self, ref):
        """The reference frame's part of every clip's bank (the ReferenceNet once per video)."""
        return self.net.encode_bank(ref)

    @torch.inference_mode()
    @component("bank")
    def first_clip_bank(self, ref_bank):
        """The first clip's bank: its motion frames are the reference itself, so the reference's bank is reused."""
        return Bank.concat_views([ref_bank] * (1 + self.model_cfg.motion_frames))

    @torch.inference_mode()
    @component("bank")
    def encode_bank(self, ref, motion, ref_bank=None):
        """One clip's bank: the reference's (cached) plus the M motion latents', encoded once per clip."""
        return self.net.encode_bank(ref, motion, ref_bank)

    @component("portrait_conditions")
    def portrait(self, image: np.ndarray):
        """The per-portrait conditions of nets that read them (``model.conditions``, Hallo's: identity embedding,
        face-locator mask, region masks; detectors loaded once), as a ``Portrait`` of one clip; None otherwise."""
        c = self.model_cfg.conditions
        if c.kind == "none":
            return None
        if self.conditions_fn is None:
            from fada.data.face_analysis import conditions_function

            self.conditions_fn = conditions_function(c, self.resolution)
        return self.conditions_fn(image).portrait(self.model_cfg.num_frames, c.motion_scale, self.device, self.dtype)

    @torch.inference_mode()
    @component("bank")
    def guidance_bank(self, plan: GenerationPlan, ref, motion, portrait):
        """One clip's bank for nets whose ReferenceNet reads identity tokens (Hallo's): the reference and motion
        views encoded together for each guidance branch with that branch's identity tokens, as Hallo encodes
        them (``AvatarNet.encode_guidance_bank``; batch = the plan's branches)."""
        return self.net.encode_guidance_bank(ref, motion, portrait.face_embeds, [kr for _, kr in plan.branches])

    def eps_fn(self, plan: GenerationPlan, bank, feats, portrait=None):
        """The sampler's ``eps_fn(z, t)`` for one clip under ``plan``: guidance (one batch of 3 or 2 branches) or
        one pass, with the scales told to a Fast student; ``portrait`` for nets that read one."""
        scales = torch.tensor([[plan.cfg_audio, plan.cfg_ref]], device=self.device) if plan.told_scales else None
        fn = self.net.model_fn(bank, feats.to(self.device, self.dtype), cfg_scales=scales, portrait=portrait,
                               branch_keep_ref=[kr for _, kr in plan.branches])
        if self.compiled == "reduce-overhead":  # CUDA graphs: each call a new step; its output outlives the replay
            fn = _graph_step(fn)
        return guided(fn, Guidance(plan.cfg_audio, plan.cfg_ref)) if plan.passes > 1 else conditional(fn)

    @torch.inference_mode()
    @component("denoise")
    def denoise_clip(self, plan: GenerationPlan, bank, feats, noise, callback=None, seed: tuple[int, int] = (0, 0),
                     portrait=None) -> torch.Tensor:
        """One clip from its bank: the sampler over the plan's steps -> latents (1, C, F, h, w), left on the
        device (nothing here waits for the GPU). ``seed`` (video seed, clip index) seeds a stochastic sampler's
        draws (TCD)."""
        eps_fn = self.eps_fn(plan, bank, feats, portrait)
        z = noise.to(self.device, self.dtype)
        schedule = self.spec.schedule
        if plan.sampler == "ddim":
            return sample_ddim(eps_fn, z, plan.steps, schedule, callback)
        if plan.sampler == "tcd":
            return self._sample_tcd(eps_fn, z, plan.steps, seed, callback)
        return sample_perflow(eps_fn, z, plan.steps, schedule, plan.num_windows, callback, plan.extra_steps)

    @torch.inference_mode()
    def decode_frames(self, latents: torch.Tensor, order: Optional[np.ndarray] = None) -> np.ndarray:
        """Latents (n, C, h, w) -> uint8 RGB frames (n, H, W, 3) through ``decoder``, then ``frames[order]`` when
        given (output frames that repeat a model frame, decoded once)."""
        from fada.models.vae import tensor_to_frames

        n, full = latents.shape[0], self.model_cfg.num_frames
        if self.compiled and n < full:  # one static shape for the compiled decoder: pad with the last frame
            latents = torch.cat([latents, latents[-1:].expand(full - n, *latents.shape[1:])])
        latents = latents.contiguous()  # one memory layout too (compiled graphs are specialised on strides)
        images = component("decode")(self.decoder.decode)(latents)
        with torch.profiler.record_function("fada.to_frames"):
            frames = tensor_to_frames(images)[:n]
        return frames if order is None else frames[order]

    def _sample_tcd(self, eps_fn, z, steps: int, seed: tuple[int, int], callback=None):
        """diffusers' TCDScheduler over ``steps`` of the TCD grid on the model's own schedule, γ from the model
        folder; its stochastic steps draw from a generator seeded by (video seed, clip index), so a seed reproduces
        the video."""
        from fada.diffusion.tcd import tcd_scheduler

        sched = tcd_scheduler(self.spec.schedule, self.spec.tcd["original_steps"])
        sched.set_timesteps(steps, device=z.device)
        state = int(np.random.SeedSequence([int(s) for s in seed]).generate_state(1, np.uint64)[0] >> 1)
        g = torch.Generator(device=z.device).manual_seed(state)
        for i, t in enumerate(sched.timesteps):
            eps = eps_fn(z, torch.full((z.shape[0],), float(t), device=z.device))
            z = sched.step(eps, t, z, eta=self.spec.tcd["gamma"], generator=g).prev_sample
            if callback is not None:
                callback(i, t, z)
        return z

    # -- public entry points -------------------------------------------------------------------------------------
    def generate_frames(self, portrait, audio, mode: Optional[str] = None, steps: Optional[int] = None,
                        cfg_audio: Optional[float] = None, cfg_ref: Optional[float] = None, seed: int = 0,
                        crop: bool = True, fps: Optional[int] = None, progress: bool = False,
                        on_step: Optional[Callable[[int, int], None]] = None,
                        overlap: Optional[bool] = None) -> FrameStream:
        """Check the inputs now, then stream uint8 RGB chunks (n, H, W, 3) at ``fps`` (default: the model's),
        ``frames_for_duration(len(audio), sr, fps)`` frames in all. ``on_step(done, total)`` follows the sampler
        steps over all clips. ``overlap``: decode on a worker while the next clip denoises (same frames; None: on an
        accelerator only, ``FrameStream``)."""
        plan = self.plan(mode, steps, cfg_audio, cfg_ref)
        fps = int(fps or self.model_cfg.fps)
        if fps < 1:
            raise FadaError(f"--fps {fps}: must be at least 1")
        image = self.load_portrait(portrait, crop)
        wav = self.load_audio(audio)
        return FrameStream(self, image, wav, plan, fps, seed, progress, on_step, overlap=overlap)

    def __call__(self, portrait, audio, mode: Optional[str] = None, steps: Optional[int] = None,
                 cfg_audio: Optional[float] = None, cfg_ref: Optional[float] = None, seed: int = 0, out=None,
                 crop: bool = True, fps: Optional[int] = None, progress: bool = True,
                 on_step: Optional[Callable[[int, int], None]] = None,
                 overlap: Optional[bool] = None) -> GenerationResult:
        """Generate and write an H.264 mp4 with the (resampled, mono) input audio muxed in; frames are streamed to
        the file (with ``overlap``, decoded, converted and muxed on a worker while the next clip denoises).
        ``out`` defaults to ``<portrait>_<audio>.mp4`` in the current folder."""
        from fada.data.media import VideoWriter

        t0 = time.perf_counter()
        stream = self.generate_frames(portrait, audio, mode, steps, cfg_audio, cfg_ref, seed, crop, fps, progress,
                                      on_step, overlap)
        out = Path(out) if out is not None else Path(default_output_name(portrait, audio))
        with VideoWriter(out, stream.fps, (self.resolution, self.resolution), audio=stream.waveform,
                         sample_rate=stream.sample_rate) as writer:
            stream.write_to(component("write")(writer.write))  # decoding, conversion, muxing on the decode worker
        return GenerationResult(path=out, frames=stream.frames_done, fps=stream.fps,
                                nfe_per_clip=stream.nfe_per_clip, clips=stream.clips,
                                seconds=time.perf_counter() - t0, audio_seconds=stream.audio_seconds,
                                plan=stream.plan)

    def session(self, portrait, **kwargs):
        """A streaming session on ``portrait``: push audio as it arrives, iterate frames (``fada.session``)."""
        from fada.session import AvatarSession

        return AvatarSession(self, portrait, **kwargs)


def _graph_step(fn):
    """A model function run under CUDA graphs (torch.compile 'reduce-overhead'): every call starts a new graph step
    and returns a copy, since the next replay overwrites the graph's output buffer."""
    def step(*args, **kwargs):
        torch.compiler.cudagraph_mark_step_begin()
        return fn(*args, **kwargs).clone()
    return step


def default_output_name(portrait, audio) -> str:
    ps = Path(portrait).stem if isinstance(portrait, (str, os.PathLike)) else "portrait"
    au = Path(audio).stem if isinstance(audio, (str, os.PathLike)) else "audio"
    return f"{ps}_{au}.mp4"
