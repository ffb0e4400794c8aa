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
