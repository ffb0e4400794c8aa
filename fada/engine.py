"""Decoding off the critical path: the denoiser runs clip after clip on the caller's thread while a worker decodes
the previous clip's latents, turns them into uint8 frames and hands them on (to a video writer, a queue, a socket).

A clip's denoising needs only the previous clip's latents (its motion frames), never its pixels, so decoding,
colour conversion and muxing can run beside it. ``DecodeWorker`` is one thread fed through a bounded queue
(``depth`` clips waiting at most, so a slow sink holds the denoiser back instead of filling memory); frames reach
the sink in submission order. ``InlineDecoder`` does the same work on the caller's thread, in the same order and
with the same calls, so the two write identical frames.

On CUDA the worker decodes on its own stream: it waits on an event recorded after the clip's last denoising
kernel (so it reads finished latents) and marks the latents as used on its stream (so the allocator does not
hand their memory to the next clip before the decode is done); the decode's copy to the host syncs that stream
only, not the denoiser's.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Optional

import numpy as np
import torch

Decode = Callable[..., np.ndarray]  # (latents (n, C, h, w), *args) -> uint8 frames (m, H, W, 3)
Sink = Callable[[np.ndarray], None]

_STOP = object()


class InlineDecoder:
    """Decode and hand on each clip at once, on the caller's thread (the sequential path)."""

    def __init__(self, decode: Decode, sink: Sink):
        self.decode, self.sink = decode, sink

    def submit(self, latents: torch.Tensor, *args) -> None:
        self.sink(self.decode(latents, *args))

    def close(self) -> None:
        pass

    def cancel(self) -> None:
        pass


class DecodeWorker:
    """Decode clips on one worker thread, in order, behind a queue of at most ``depth`` waiting clips.

    ``submit`` blocks while the queue is full and re-raises an error the worker met; ``close`` waits for every
    submitted clip to reach the sink (and re-raises); ``cancel`` drops what is waiting and stops the thread."""

    def __init__(self, decode: Decode, sink: Sink, depth: int = 2, device=None):
        self.decode, self.sink = decode, sink
        self._q: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
        self._error: Optional[BaseException] = None
        self._cancelled = False
        dev = torch.device(device) if device is not None else torch.device("cpu")
        self._stream = torch.cuda.Stream(dev) if dev.type == "cuda" else None
        self._thread = threading.Thread(target=self._loop, name="fada-decode", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is _STOP:
                return
            if self._error is not None or self._cancelled:
                continue  # drain without work after a failure or a cancel
            latents, args, ready = item
            try:
                with torch.inference_mode():
                    if self._stream is None:
                        frames = self.decode(latents, *args)
                    else:
                        with torch.cuda.stream(self._stream):
                            self._stream.wait_event(ready)
                            latents.record_stream(self._stream)
                            frames = self.decode(latents, *args)
                self.sink(frames)
            except BaseException as e:  # re-raised on the caller's thread
                self._error = e

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            self._cancelled = True
            raise err

    def submit(self, latents: torch.Tensor, *args) -> None:
        """Queue one clip's latents (and the decode's other arguments) for the worker."""
        self._raise()
        if not self._thread.is_alive():
            raise RuntimeError("the decode worker has stopped")
        ready = None
        if self._stream is not None:
            ready = torch.cuda.Event()
            ready.record()  # on the denoiser's (current) stream, after the kernels that wrote the latents
        self._q.put((latents, args, ready))

    def close(self) -> None:
        if self._thread.is_alive():
            self._q.put(_STOP)
            self._thread.join()
        self._raise()

    def cancel(self) -> None:
        self._cancelled = True
        try:
            while True:
                self._q.get_nowait()
        except queue.Empty:
            pass
        if self._thread.is_alive():
            self._q.put(_STOP)
            self._thread.join()


class ClipEngine:
    """The clip loop every generation runs, whatever feeds it (a whole file: ``fada.clips.FrameStream``; audio as it
    arrives: ``fada.session.AvatarSession``): the portrait's reference latent and bank, prepared once; then clip
    after clip, the sampler from that clip's noise (drawn in clip order from the video seed) and bank, after which
    the clip's last M latents become the next clip's motion frames and the next bank is encoded from them when the
    next clip asks for it (so a video's last clip, or a session that stops, encodes none). The clip counter seeds a
    stochastic sampler and keeps counting across utterances and idle clips, so the face continues."""

    def __init__(self, pipe, image: np.ndarray, plan, seed: int):
        from fada.diffusion import clip_noises

        self.pipe, self.plan, self.seed = pipe, plan, int(seed)
        M, F = int(pipe.model_cfg.motion_frames), int(pipe.model_cfg.num_frames)
        self.motion_frames, self.num_frames = M, F
        ref = pipe.encode_reference(image)
        self.ref = ref
        self.motion = ref[:, None].expand(1, M, *ref.shape[1:]) if M else None
        self.portrait = pipe.portrait(image)
        if self.portrait is None:
            self.ref_bank = pipe.encode_reference_bank(ref)
            self.bank = pipe.first_clip_bank(self.ref_bank)
        else:  # the first clip's motion frames are the reference itself, as Hallo starts a video
            self.ref_bank = None
            self.bank = pipe.guidance_bank(plan, ref, self.motion, self.portrait)
        c_, h_, w_ = ref.shape[1:]
        self._noises = clip_noises((1, c_, F, h_, w_), self.seed, float(pipe.model_cfg.noise_share))
        self.clips = 0

    @torch.inference_mode()
    def denoise(self, rows: torch.Tensor, callback=None) -> torch.Tensor:
        """One clip from its audio rows (1, F, ...) -> latents (1, C, F, h, w), left on the device."""
        pipe = self.pipe
        if self.bank is None:
            self.bank = pipe.encode_bank(self.ref, self.motion, self.ref_bank) if self.portrait is None else \
                pipe.guidance_bank(self.plan, self.ref, self.motion, self.portrait)
        z = pipe.denoise_clip(self.plan, self.bank, rows, next(self._noises), callback,
                              seed=(self.seed, self.clips), portrait=self.portrait)
        self.clips += 1
        M = self.motion_frames
        if M:  # the last M latents condition the next clip
            self.motion = torch.cat([self.motion, z.permute(0, 2, 1, 3, 4)], dim=1)[:, -M:]
            self.bank = None
        return z
