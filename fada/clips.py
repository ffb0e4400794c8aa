"""One video, clip by clip: the audio's per-frame features (``AudioFeatures``), the output frame rate's mapping onto
the model's (``gen_index``) and the stream of frames (``FrameStream``) that ``FadaPipeline.generate_frames``
returns -- denoising on the caller's thread, decoding on ``fada.engine``'s worker. Each step of generation is
labelled ``fada.<step>`` for torch.profiler (``component``).
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Callable, Iterator, Optional

import numpy as np
import torch

from fada.errors import FadaError

if TYPE_CHECKING:
    from fada.pipeline import FadaPipeline, GenerationPlan

FEATURE_BLOCK_SECONDS = 30.0


# ---------------------------------------------------------------------------------------------------------------
# profiling labels, frame rates, audio features


PROFILE_SYNC = False  # benchmarks' profile run: wait for the GPU at the end of each labelled step


def component(name: str):
    """Label a step of generation ``fada.<name>`` for torch.profiler (benchmarks/bench_generate.py --profile
    reads the labels; without a profiler running a label costs about a microsecond). With ``PROFILE_SYNC`` the
    step waits for its GPU work, so that its host-side time is its own (a profile, never a production run)."""
    def wrap(fn):
        @functools.wraps(fn)
        def labelled(*args, **kwargs):
            with torch.profiler.record_function(f"fada.{name}"):
                out = fn(*args, **kwargs)
                if PROFILE_SYNC and torch.cuda.is_available():
                    torch.cuda.synchronize()
                return out
        return labelled
    return wrap


def gen_index(j, out_fps: int, gen_fps: int):
    """The model frame shown as output frame j when the output rate differs: the one whose interval holds output
    frame j's centre, floor((j + 1/2)·gen_fps / out_fps) (exact integers; the identity when the rates match)."""
    return ((2 * j + 1) * gen_fps) // (2 * out_fps)


class AudioFeatures:
    """Windowed per-frame audio features, (F, 2w+1, L, D) rows on request, computed block by block.

    The front end runs on blocks of about ``block_seconds`` plus ``context`` frames on each side (at frame
    boundaries that fall on whole samples), so rows equal those of one ``front_end.features`` call on the whole
    audio (exactly, for the log-mel front end) while memory stays bounded. Rows past the audio's last frame repeat
    that frame (the padded last clip). A front end that must see the whole utterance at once
    (``whole_utterance``: wav2vec2 in Hallo's mode) is run once on all of it, and its windows and the padded last
    clip read the frames it computes past the audio (``window_source``), as Hallo's do.
    """

    def __init__(self, front_end, waveform: np.ndarray, num_frames: int, fps: int,
                 block_seconds: float = FEATURE_BLOCK_SECONDS):
        self.fe, self.wav, self.n, self.fps = front_end, waveform, int(num_frames), int(fps)
        self.sr, self.w = int(front_end.sample_rate), int(front_end.window)
        self.q = self.fps // math.gcd(self.sr, self.fps)  # block starts are multiples of q: exact sample offsets
        ctx = max(self.w + 1, 2 * self.fps)
        self.ctx = -(-ctx // self.q) * self.q
        block = max(int(block_seconds * self.fps), 1)
        self.block = -(-block // self.q) * self.q
        self._feats: Optional[torch.Tensor] = None
        self._lo = self._hi = self._a0 = 0
        self.blocks_computed = 0
        self.whole = bool(getattr(front_end, "whole_utterance", False))

    def _load(self, s: int, e: int) -> None:
        lo = s - s % self.q
        hi = min(self.n, max(e, lo + self.block))
        a0, a1 = max(0, lo - self.ctx), min(self.n, hi + self.ctx)
        start = a0 * self.sr // self.fps
        feats = self.fe.frame_features(self.wav[start:], a1 - a0, self.fps)
        self._feats = feats.float().cpu()
        self._lo, self._hi, self._a0 = lo, hi, a0
        self.blocks_computed += 1

    def rows(self, s: int, e: int) -> torch.Tensor:
        if not 0 <= s < self.n or e <= s:
            raise ValueError(f"rows [{s}, {e}) outside the audio's {self.n} frames")
        if self.whole:
            if self._feats is None:
                self._feats = self.fe.window_source(self.wav, self.n, self.fps).float().cpu()
                self.blocks_computed = 1
            idx = torch.arange(s, e)[:, None] + torch.arange(-self.w, self.w + 1)[None]
            return self._feats[idx.clamp(0, self._feats.shape[0] - 1)]
        real_e = min(e, self.n)
        if self._feats is None or not (self._lo <= s and real_e <= self._hi):
            self._load(s, real_e)
        idx = torch.arange(s, e).clamp(max=self.n - 1)[:, None] + torch.arange(-self.w, self.w + 1)[None]
        return self._feats[idx.clamp(0, self.n - 1) - self._a0]


# ---------------------------------------------------------------------------------------------------------------
# the stream of one video


class FrameStream:
    """``pipe.generate_frames(...)``: iterate once for uint8 RGB chunks (n, H, W, 3) at ``fps``, or hand every
    chunk to a sink with ``write_to``; the sizes are known before the first chunk (``total_frames``, ``clips``,
    ``plan``, ``waveform`` for muxing).

    The denoiser runs clip after clip on the caller's thread; with ``overlap`` a worker
    (``fada.engine.DecodeWorker``) decodes clip c's output frames and hands them on while clip c+1's bank is
    encoded and clip c+1 denoises. Without it the same calls run in order on one thread; both give the same
    frames. ``overlap`` None (the default) overlaps on an accelerator only: there the CPU waits for the device and is
    free to decode, while on a CPU the denoiser's threads already use every core and a worker competing for them
    made the demo's generation 2x slower (one 1.6 s clip at 32x32 on 2 cores: 22-24 s against 11-14 s)."""

    def __init__(self, pipe: "FadaPipeline", image: np.ndarray, waveform: np.ndarray, plan: GenerationPlan,
                 fps: int, seed: int, progress: bool, on_step: Optional[Callable[[int, int], None]] = None,
                 overlap: Optional[bool] = None, queue_depth: int = 2):
        from fada.models.audio import frames_for_duration

        self.pipe, self.image, self.waveform, self.plan, self.fps, self.seed = pipe, image, waveform, plan, fps, seed
        self.sample_rate = pipe.frontend.sample_rate
        self.model_fps = pipe.model_cfg.fps
        self.total_frames = frames_for_duration(len(waveform), self.sample_rate, fps)
        if self.total_frames < 1:
            raise FadaError(f"audio: {len(waveform) / self.sample_rate:.3f} s is shorter than one video frame "
                            f"(1/{fps} s)")
        self.gen_frames = gen_index(self.total_frames - 1, fps, self.model_fps) + 1
        self.clips = -(-self.gen_frames // pipe.model_cfg.num_frames)
        self.progress = progress
        self.on_step = on_step  # called (steps done, steps in all) after every sampler step (the web page's bar)
        if overlap is None:
            overlap = torch.device(pipe.device).type != "cpu"
        self.overlap, self.queue_depth = bool(overlap), int(queue_depth)
        self.frames_done = 0
        self._started = False
        self._iter = self._chunks()

    @property
    def audio_seconds(self) -> float:
        return len(self.waveform) / self.sample_rate

    @property
    def nfe_per_clip(self) -> int:
        return self.plan.nfe_per_clip

    def __iter__(self) -> Iterator[np.ndarray]:
        return self._iter

    def __next__(self) -> np.ndarray:
        return next(self._iter)

    def close(self) -> None:
        self._iter.close()

    def _step_callback(self, bar, clip: int):
        if bar is None and self.on_step is None:
            return None
        total = self.clips * self.plan.steps

        def callback(i, *_):
            if bar is not None:
                bar.update(1)
            if self.on_step is not None:
                self.on_step(clip * self.plan.steps + i + 1, total)
        return callback

    def _start(self) -> None:
        if self._started:
            raise RuntimeError("a FrameStream runs once")
        self._started = True

    def _decoder(self, sink):
        from fada.engine import DecodeWorker, InlineDecoder

        def counted(frames: np.ndarray) -> None:
            self.frames_done += len(frames)
            sink(frames)

        if self.overlap:
            return DecodeWorker(self.pipe.decode_frames, counted, self.queue_depth, self.pipe.device)
        return InlineDecoder(self.pipe.decode_frames, counted)

    def write_to(self, sink: Callable[[np.ndarray], None]) -> None:
        """Generate every chunk into ``sink`` (with ``overlap``, called on the decode worker's thread)."""
        self._start()
        dec = self._decoder(sink)
        try:
            for latents, order in self._clip_latents():
                dec.submit(latents, order)
            dec.close()
        except BaseException:
            dec.cancel()
            raise

    def _chunks(self) -> Iterator[np.ndarray]:
        import queue

        self._start()
        ready: queue.Queue = queue.Queue()
        dec = self._decoder(ready.put)
        try:
            for latents, order in self._clip_latents():
                dec.submit(latents, order)
                while not ready.empty():
                    yield ready.get_nowait()
            dec.close()
            while not ready.empty():
                yield ready.get_nowait()
        finally:
            dec.cancel()

    def _clip_latents(self) -> Iterator[tuple]:
        """Denoise clip after clip; yield each clip's (latents (n, C, h, w) of the model frames it shows, their
        output order or None) -- model frames repeat or drop when ``fps`` differs from the model's, and the padded
        tail of the last clip is left out. The clip loop itself (motion frames, banks, noise) is ``fada.engine.ClipEngine``,
        the one a streaming session runs."""
        pipe, plan = self.pipe, self.plan
        F = pipe.model_cfg.num_frames
        feats = AudioFeatures(pipe.frontend, self.waveform, self.gen_frames, self.model_fps)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.clips * plan.steps, unit="step", desc=f"clip 1/{self.clips}", leave=False,
                       dynamic_ncols=True)
        try:
            from fada.engine import ClipEngine

            engine = ClipEngine(pipe, self.image, plan, self.seed)
            j = 0  # next output frame
            for c in range(self.clips):
                if bar is not None:
                    bar.set_description(f"clip {c + 1}/{self.clips}")
                s = c * F
                with torch.profiler.record_function("fada.audio_features"):
                    rows = feats.rows(s, s + F)[None]
                z = engine.denoise(rows, self._step_callback(bar, c))
                e = min(s + F, self.gen_frames)
                stop = j
                while stop < self.total_frames and gen_index(stop, self.fps, self.model_fps) < e:
                    stop += 1
                if stop > j:  # decode each model frame shown once; `order` repeats it where the output rate is higher
                    shown = [gen_index(k, self.fps, self.model_fps) - s for k in range(j, stop)]
                    uniq = sorted(set(shown))
                    order = None if len(uniq) == len(shown) else np.searchsorted(uniq, shown)
                    j = stop
                    yield z[0].index_select(1, torch.tensor(uniq, device=z.device)).transpose(0, 1), order
            assert j == self.total_frames, (j, self.total_frames)
        finally:
            if bar is not None:
                bar.close()
