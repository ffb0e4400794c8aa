"""`fada app`'s live page: the browser's microphone drives a portrait, and the frames come back as they are made.

A WebSocket beside the Gradio page, served by the same server (``live_routes`` are handed to the FastAPI app that
Gradio builds). Gradio's own events are request/response through its queue, and fastrtc (WebRTC) pins gradio<6,
so a socket that carries PCM one way and JPEG frames the other is the smallest thing that streams both ways.

Protocol on ``/live/ws`` (one ``AvatarSession`` per connection):

    client -> {"type": "start", "model": LABEL, "sample_rate": 48000, "channels": 1, "portrait": "demo"|"upload",
               "crop": true, "mode": null, "seed": 0, "lookahead_ms": null}
    client -> (portrait "upload" only) one binary message: the image file (png / jpg / webp)
    server -> {"type": "ready", "fps", "frames_per_clip", "lookahead_ms", "mode", "model", "size"}
    client -> binary messages: int16 little-endian PCM at sample_rate, interleaved when channels > 1 (~20 ms each)
    server -> binary messages: FRAME_HEADER (index, timestamp s, mic audio s the frame shows up to, -1 while
              idle) + JPEG
    client -> {"type": "stop"}: the utterance ends, the frames it still owes come, then
    server -> {"type": "end", "frames", "dropped"} and the socket closes
    server -> {"type": "error", "message": ONE LINE} and the socket closes, on any refusal or failure

The mic stream is continuous, so the session's segment stays open while the mic is (silence is audio too) and
each clip is generated as soon as its audio and lookahead are in; Stop ends the segment. Before the first audio the
session runs idle (after a grace second, paced to real time), so the face lives while no audio comes.
Generation runs on a worker thread; frames wait in a small bounded queue that drops the oldest when the client
reads slowly, so memory stays flat whatever the network does. One live session per app at a time (they would share
the accelerator), and only pages of this server may open the socket (WebSockets skip CORS). uvicorn speaks
WebSocket through wsproto (a dependency: gradio brings neither it nor websockets).
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
import threading
import time
from collections import deque
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

import numpy as np

from fada.errors import FadaError

from .service import MODES, ModelRegistry, face_preview, first_line

LIVE_PATH = "/live"
WS_PATH = "/live/ws"
FRAME_HEADER = struct.Struct("<Idd")   # frame index, timestamp (s), mic seconds shown up to (-1: idle)
MAX_QUEUED_FRAMES = 8                  # frames waiting for a slow client; older ones are dropped
MAX_PORTRAIT_BYTES = 10 << 20
MAX_BEHIND_SECONDS = 20.0              # mic audio not yet turned into frames before the session gives up
IDLE_AFTER_SECONDS = 1.0               # no audio this long after "ready": the face idles until it comes
IDLE_AHEAD_SECONDS = 1.0               # idle frames made ahead of real time
START_TIMEOUT_SECONDS = 30.0
GATE_WAIT_SECONDS = 10.0               # for the previous session's last clip
JPEG_QUALITY = 85
PAGE = Path(__file__).with_name("live.html")


def live_routes(registry: ModelRegistry) -> list:
    """The page (GET ``/live``) and its socket (``/live/ws``), for ``FastAPI(routes=...)``."""
    from starlette.responses import HTMLResponse
    from starlette.routing import Route, WebSocketRoute

    gate = asyncio.Lock()  # one live session at a time: they would share the one accelerator

    async def page(request):
        models = json.dumps(registry.labels).replace("</", "<\\/")
        return HTMLResponse(PAGE.read_text().replace("__FADA_MODELS__", models)
                            .replace("__FADA_WS__", WS_PATH.lstrip("/")))  # relative to the page

    async def socket(ws):
        await serve(ws, registry, gate)

    return [Route(LIVE_PATH, page, methods=["GET"]), WebSocketRoute(WS_PATH, socket)]


# ---- the start message ----------------------------------------------------------------------------------------

def parse_start(text: Optional[str], labels: list) -> dict:
    """The first message, checked field by field (one-line FadaErrors)."""
    try:
        msg = json.loads(text) if text is not None else None
    except ValueError:
        msg = None
    if not isinstance(msg, dict) or msg.get("type") != "start":
        raise FadaError('live: the first message must be JSON {"type": "start", ...}')
    out = {}
    out["model"] = msg.get("model")
    if out["model"] not in labels:
        raise FadaError(f"live: model {out['model']!r} is not one this app serves")
    for key, lo, hi, default in (("sample_rate", 8000, 192000, None), ("channels", 1, 8, 1), ("seed", 0, 2**31 - 1, 0)):
        v = msg.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise FadaError(f"live: {key} {v!r}: expected an integer in [{lo}, {hi}]")
        out[key] = v
    if msg.get("portrait", "demo") not in ("demo", "upload"):
        raise FadaError(f"live: portrait {msg.get('portrait')!r}: expected 'demo' or 'upload'")
    out["portrait"] = msg.get("portrait", "demo")
    out["crop"] = msg.get("crop", True)
    if not isinstance(out["crop"], bool):
        raise FadaError("live: crop must be true or false")
    out["mode"] = msg.get("mode") or None
    if out["mode"] is not None and out["mode"] not in MODES:
        raise FadaError(f"live: mode {out['mode']!r}: expected one of {', '.join(MODES)}")
    la = msg.get("lookahead_ms")
    if la is not None and (isinstance(la, bool) or not isinstance(la, (int, float)) or not math.isfinite(la)
                           or not 0 <= la <= 5000):
        raise FadaError(f"live: lookahead_ms {la!r}: expected a number of ms in [0, 5000]")
    out["lookahead_ms"] = la
    return out


def decode_portrait(data: bytes) -> np.ndarray:
    import cv2

    if len(data) > MAX_PORTRAIT_BYTES:
        raise FadaError(f"live: the portrait is over {MAX_PORTRAIT_BYTES >> 20} MB")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise FadaError("live: the portrait is not an image (png / jpg / webp)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def demo_portrait(size: int = 256) -> np.ndarray:
    """The face of `fada demo`'s first held-out clip (same generator and seed), with a closed mouth."""
    from fada.data.synthetic import render_clip, sample_identity

    ident = sample_identity(np.random.default_rng(777))
    return render_clip(ident, np.zeros(1, np.float32), size=size, seed=777, static=True, n_frames=1)[0]


def encode_jpeg(image: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise FadaError("live: a frame could not be encoded")
    return buf.tobytes()


# ---- one connection -------------------------------------------------------------------------------------------

class LiveStream:
    """A session's worker thread and the bounded queue of encoded frames between it and the socket."""

    def __init__(self, session, loop: asyncio.AbstractEventLoop):
        self.session, self.loop = session, loop
        self.fps = session.fps
        self.queue: deque = deque()
        self.dropped = self.sent = 0
        self.ready = asyncio.Event()          # something queued for the sender
        self.wake = threading.Event()         # audio, stop or abandon: the worker looks again
        self.heard = threading.Event()        # the first audio came: no more idle clips are begun
        self.lock = threading.Lock()
        self.pushed = 0                       # mic samples pushed (per channel)
        self.speech_frames = 0                # frames of the mic's audio sent: the backlog is pushed - these
        self.stopped = False                  # end_segment + close done: the worker drains and ends
        self.abandoned = False                # the socket went: the worker ends after its clip
        self.outcome: Optional[tuple] = None  # ("end",) or ("error", message): the last thing queued

    # -- the socket's side (event loop) --
    def push(self, pcm: bytes, rate: int, channels: int) -> None:
        if len(pcm) % (2 * channels):
            raise FadaError(f"live: a PCM message of {len(pcm)} bytes is not whole int16 frames of {channels} "
                            "channel(s)")
        with self.lock:
            self.session.push_audio(pcm, rate, channels)
            self.pushed += len(pcm) // (2 * channels)
            behind = self.pushed / rate - self.speech_frames / self.fps
        self.heard.set()
        self.wake.set()
        if behind > MAX_BEHIND_SECONDS:
            raise FadaError(f"live: generation is {behind:.0f} s behind the microphone: this model and mode are "
                            "slower than real time on this machine (try the fast mode)")

    def stop(self) -> None:
        """Stop pressed: the utterance ends, its frames still come."""
        if not self.stopped:
            self.session.end_segment()
            self.session.close()
            self.stopped = True  # after close(): a worker that sees it also sees the closed session
            self.heard.set()
            self.wake.set()

    def abandon(self) -> None:
        self.abandoned = True
        self.heard.set()
        self.session.close()
        self.wake.set()

    # -- the worker thread --
    def _put(self, item) -> None:
        """A frame displaces the oldest frame when MAX_QUEUED_FRAMES wait; the outcome displaces nothing (it would
        cost the utterance its last frame), so at most MAX_QUEUED_FRAMES frames and the outcome wait."""
        with self.lock:
            if isinstance(item, bytes) and len(self.queue) >= MAX_QUEUED_FRAMES:
                self.queue.popleft()
                self.dropped += 1
            self.queue.append(item)
        self.loop.call_soon_threadsafe(self.ready.set)

    def _send_frame(self, frame, mic_seconds: float) -> None:
        self._put(FRAME_HEADER.pack(frame.index, frame.timestamp, mic_seconds) + encode_jpeg(frame.image))

    def work(self) -> None:
        """Idle clips (paced) until the first audio, then every frame the mic's audio makes, until stopped."""
        from fada.session import SessionFrame

        s = self.session
        try:
            # the page opens the mic before it connects, so audio normally follows "ready" at once, and an idle
            # clip begun meanwhile would hold the first speech clip back by its whole generation time
            self.heard.wait(IDLE_AFTER_SECONDS)
            t0, idle = time.monotonic(), 0
            # speech_pending, not heard: the resampler may still hold the first pushed samples, and iterating an
            # idle session then would make a clip of silence in the middle of the speech's frame indices
            while not (s.speech_pending or self.abandoned or self.stopped):
                if self.heard.is_set() or idle / self.fps > time.monotonic() - t0 + IDLE_AHEAD_SECONDS:
                    self.wake.wait(0.05)
                    self.wake.clear()
                    continue
                for frame in s.next_idle_clip():  # whole clips: nothing idle is left queued in the session
                    if isinstance(frame, SessionFrame):
                        idle += 1
                        self._send_frame(frame, -1.0)
            while not self.abandoned:
                self.wake.clear()
                done = self.stopped  # read before iterating: stopped means closed, so no idle clip comes
                if done or s.speech_pending:  # the mic's segment stays open: pending from its first sample on
                    for item in s:  # generates each clip once its audio and lookahead are in
                        if self.abandoned:
                            return
                        if isinstance(item, SessionFrame):
                            with self.lock:
                                self.speech_frames += 1
                                n = self.speech_frames
                            self._send_frame(item, n / self.fps)
                if done:
                    break
                self.wake.wait(0.5)
            self.outcome = ("end",)
        except FadaError as e:
            self.outcome = ("error", first_line(e))
        except Exception as e:  # noqa: BLE001 - the page gets one line, the console the type
            print(f"live session failed: {type(e).__name__}: {first_line(e)}", flush=True)
            self.outcome = ("error", f"live: generation failed ({type(e).__name__}: {first_line(e)})")
        finally:
            self._put(self.outcome or ("end",))

    async def send_all(self, ws) -> None:
        """Frames as they come, then the outcome (end or error)."""
        while True:
            await self.ready.wait()
            self.ready.clear()
            while True:
                with self.lock:
                    if not self.queue:
                        break
                    item = self.queue.popleft()
                if isinstance(item, bytes):
                    await ws.send_bytes(item)
                    self.sent += 1
                    continue
                if item[0] == "error":
                    await ws.send_text(json.dumps({"type": "error", "message": item[1]}))
                else:
                    await ws.send_text(json.dumps({"type": "end", "frames": self.sent, "dropped": self.dropped}))
                return


def _same_origin(ws) -> bool:
    """A page on another site may open a socket to this one (sockets skip CORS): only this server's pages may."""
    origin = ws.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == ws.headers.get("host")


async def _receive_start(ws, registry: ModelRegistry) -> tuple[dict, np.ndarray]:
    msg = await asyncio.wait_for(ws.receive(), START_TIMEOUT_SECONDS)
    if msg["type"] == "websocket.disconnect":
        raise ConnectionResetError
    req = parse_start(msg.get("text"), registry.labels)
    if req["portrait"] == "upload":
        msg = await asyncio.wait_for(ws.receive(), START_TIMEOUT_SECONDS)
        if msg["type"] == "websocket.disconnect":
            raise ConnectionResetError
        if msg.get("bytes") is None:
            raise FadaError("live: portrait 'upload': the next message must be the image file's bytes")
        image = await asyncio.to_thread(decode_portrait, msg["bytes"])
    else:
        image = await asyncio.to_thread(demo_portrait)
    return req, image


def _open_session(registry: ModelRegistry, req: dict, image: np.ndarray):
    pipe = registry.get(req["model"])
    face_preview(image, req["crop"])  # the page's wording for a portrait without a face
    return pipe.session(image, mode=req["mode"], seed=req["seed"], crop=req["crop"],
                        lookahead_ms=req["lookahead_ms"], idle=True)


async def serve(ws, registry: ModelRegistry, gate: asyncio.Lock) -> None:
    """One connection: start message, session, then audio in and frames out until stop, error or disconnect."""
    from starlette.websockets import WebSocketDisconnect

    if not _same_origin(ws):
        await ws.close(code=1008)
        return
    await ws.accept()
    stream = worker = sender = None
    held = False
    try:
        req, image = await _receive_start(ws, registry)
        try:  # a session just stopped may still be finishing its last clip: wait for it a little
            held = await asyncio.wait_for(gate.acquire(), GATE_WAIT_SECONDS)
        except asyncio.TimeoutError:
            raise FadaError("live: another live session is running in this app; stop it first") from None
        session = await asyncio.to_thread(_open_session, registry, req, image)
        stream = LiveStream(session, asyncio.get_running_loop())
        await ws.send_text(json.dumps({
            "type": "ready", "fps": session.fps, "frames_per_clip": session.num_frames,
            "lookahead_ms": round(1000 * session.lookahead_samples / session.sample_rate, 1),
            "mode": session.plan.mode, "model": req["model"], "size": int(session.image.shape[0])}))
        worker = asyncio.ensure_future(asyncio.to_thread(stream.work))
        sender = asyncio.ensure_future(stream.send_all(ws))
        receiver = asyncio.ensure_future(_receive_audio(ws, stream, req))
        done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        if receiver in done and receiver.exception() is not None:
            raise receiver.exception()
        if sender not in done:  # stop: the worker drains what the utterance owes, the sender sends it
            await sender
        receiver.cancel()
        await ws.close(code=1011 if stream.outcome and stream.outcome[0] == "error" else 1000)
    except (WebSocketDisconnect, ConnectionResetError):
        pass
    except (FadaError, asyncio.TimeoutError) as e:
        msg = "live: no start message came" if isinstance(e, asyncio.TimeoutError) else first_line(e)
        print(f"live session refused: {msg}", flush=True)
        await _close_with(ws, msg, sender)
    except Exception as e:  # noqa: BLE001 - one line to the page, never a traceback
        print(f"live session failed: {type(e).__name__}: {first_line(e)}", flush=True)
        await _close_with(ws, f"live: {type(e).__name__}: {first_line(e)}", sender)
    finally:
        if sender is not None:
            sender.cancel()
        if stream is not None:
            stream.abandon()
        if held and worker is not None and not worker.done():
            # the clip being made finishes before the next session may start; the release rides on the worker, not
            # on this coroutine, which its server may cancel while it waits (a test client does on closing)
            worker.add_done_callback(lambda _: gate.release())
            await asyncio.shield(worker)
        elif held:
            gate.release()


async def _receive_audio(ws, stream: LiveStream, req: dict) -> None:
    """PCM in until the stop message; a disconnect abandons the session."""
    from starlette.websockets import WebSocketDisconnect

    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(msg.get("code", 1000))
        if msg.get("bytes") is not None:
            stream.push(msg["bytes"], req["sample_rate"], req["channels"])
            continue
        try:
            kind = json.loads(msg.get("text") or "null").get("type")
        except (ValueError, AttributeError):
            kind = None
        if kind != "stop":
            raise FadaError('live: after start, only PCM bytes and {"type": "stop"} are understood')
        stream.stop()
        return


async def _close_with(ws, message: str, sender: Optional[asyncio.Future] = None) -> None:
    """The one-line message, then the close (the frame sender stopped first: one writer at a time)."""
    if sender is not None:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    try:
        await ws.send_text(json.dumps({"type": "error", "message": message}))
        await ws.close(code=1008)
    except Exception:  # noqa: BLE001 - the client is already gone
        pass
