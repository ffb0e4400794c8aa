"""`fada app`'s live page: the socket's protocol without a browser (Starlette's TestClient on the same routes),
the frame queue's bound, and the page in headless Chromium with a fake microphone playing a WAV file (Debian's
Chromium through Selenium, as tests/app/test_app.py drives it).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest

from tests.app.test_app import chrome, free_port
from tests.stages.generate_helpers import export_model, speech, write_portrait

FAST = "model-fast-fp32 (fast)"


@pytest.fixture(scope="module")
def fast_model(tmp_path_factory):
    return export_model(tmp_path_factory.mktemp("live_models"), "fast")


@pytest.fixture(scope="module")
def client(fast_model):
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from fada.app.live import live_routes
    from fada.app.service import ModelRegistry, find_models

    with TestClient(Starlette(routes=live_routes(ModelRegistry(find_models([fast_model]))))) as c:
        yield c


def _frame(data: bytes):
    import cv2

    from fada.app.live import FRAME_HEADER

    index, ts, mic = FRAME_HEADER.unpack_from(data)
    image = cv2.imdecode(np.frombuffer(data[FRAME_HEADER.size:], np.uint8), cv2.IMREAD_COLOR)
    return index, ts, mic, image


def _one_line_error(ws, match: str):
    msg = ws.receive_json()
    assert msg["type"] == "error" and match in msg["message"] and "\n" not in msg["message"], msg
    assert "Traceback" not in msg["message"]
    closing = ws.receive()
    assert closing["type"] == "websocket.close" and closing["code"] == 1008, closing


# ---- the protocol ---------------------------------------------------------------------------------------------

def test_socket_streams_frames_for_pushed_pcm(client, tmp_path, monkeypatch):
    """An uploaded portrait, 0.8 s of stereo int16 at 48 kHz in 20 ms chunks, stop: every speech frame comes, in
    order, as a decodable JPEG with its timestamp and the mic time it shows; then the end message. (The queue is
    unbounded here: on a loaded machine the server's sender can fall behind the worker, and dropping is tested
    on its own below.)"""
    monkeypatch.setattr("fada.app.live.MAX_QUEUED_FRAMES", 10 ** 6)
    png = write_portrait(tmp_path / "face.png").read_bytes()
    wav = speech(0.8, 48000)
    pcm = (np.stack([wav, 0.5 * wav], axis=1) * 32767).astype("<i2")
    with client.websocket_connect("/live/ws") as ws:
        ws.send_json({"type": "start", "model": FAST, "sample_rate": 48000, "channels": 2, "portrait": "upload"})
        ws.send_bytes(png)
        ready = ws.receive_json()
        assert ready["type"] == "ready" and ready["fps"] == 25 and ready["mode"] == "fast", ready
        for i in range(0, len(pcm), 960):
            ws.send_bytes(pcm[i:i + 960].tobytes())
        ws.send_json({"type": "stop"})
        frames, end = [], None
        while end is None:
            msg = ws.receive()
            if msg.get("bytes") is not None:
                frames.append(_frame(msg["bytes"]))
            else:
                end = json.loads(msg["text"])
        assert end["type"] == "end" and end["dropped"] == 0 and end["frames"] == len(frames), end
    speech_frames = [f for f in frames if f[2] >= 0]
    assert len(speech_frames) == 20  # 0.8 s at 25 fps
    assert [f[0] for f in frames] == list(range(len(frames)))  # idle frames (if any) first, then speech
    assert all(f[1] == pytest.approx(f[0] / 25) for f in frames)
    assert [f[2] for f in speech_frames] == pytest.approx([(k + 1) / 25 for k in range(20)])
    size = ready["size"]
    assert all(f[3] is not None and f[3].shape == (size, size, 3) and f[3].std() > 1 for f in frames)


def test_socket_idles_until_the_audio_comes(client):
    """No audio for a while: idle frames (mic time -1, whole clips) keep the face alive; then the speech's frames
    follow with contiguous indices (the demo face, 16 kHz mono: no resampling)."""
    with client.websocket_connect("/live/ws") as ws:
        ws.send_json({"type": "start", "model": FAST, "sample_rate": 16000})
        ready = ws.receive_json()
        frames = [_frame(ws.receive_bytes())]  # the first idle frame, after the grace second
        pcm = (speech(0.32, 16000) * 32767).astype("<i2")
        for i in range(0, len(pcm), 320):
            ws.send_bytes(pcm[i:i + 320].tobytes())
        ws.send_json({"type": "stop"})
        while (msg := ws.receive()).get("bytes") is not None:
            frames.append(_frame(msg["bytes"]))
        end = json.loads(msg["text"])
        assert end["type"] == "end" and end["frames"] == len(frames), end
    idle = [f for f in frames if f[2] < 0]
    assert idle and all(f[2] < 0 for f in frames[:len(idle)])
    # This client reads nothing while it pushes the audio, so on a slow machine the bounded queue may drop some of
    # the idle frames made meanwhile (oldest first: the 8 speech frames fit in the queue and are never dropped);
    # every missing index must be one counted as dropped, and the idle frames still come in whole clips.
    indices = [f[0] for f in frames]
    assert indices == sorted(set(indices)) and indices[0] == 0
    assert indices[-1] + 1 - len(frames) == end["dropped"]
    assert (len(idle) + end["dropped"]) % ready["frames_per_clip"] == 0
    speech_frames = frames[len(idle):]
    assert [f[0] for f in speech_frames] == list(range(indices[-1] - 7, indices[-1] + 1))
    assert [f[2] for f in speech_frames] == pytest.approx([(k + 1) / 25 for k in range(8)])


@pytest.mark.parametrize("first, match", [
    ("hello", "the first message must be JSON"),
    (json.dumps({"type": "start", "model": "nope", "sample_rate": 48000}), "model 'nope' is not one"),
    (json.dumps({"type": "start", "model": FAST, "sample_rate": 44.1}), "sample_rate 44.1"),
    (json.dumps({"type": "start", "model": FAST, "sample_rate": 16000, "mode": "teacher"}), "runs only fast"),
])
def test_bad_start_is_one_line_and_a_clean_close(client, first, match):
    with client.websocket_connect("/live/ws") as ws:
        ws.send_text(first)
        _one_line_error(ws, match)


def test_bad_portrait_and_bad_pcm_are_one_line(client):
    with client.websocket_connect("/live/ws") as ws:
        ws.send_json({"type": "start", "model": FAST, "sample_rate": 16000, "portrait": "upload"})
        ws.send_bytes(b"not an image")
        _one_line_error(ws, "not an image")
    with client.websocket_connect("/live/ws") as ws:
        ws.send_json({"type": "start", "model": FAST, "sample_rate": 16000})
        assert ws.receive_json()["type"] == "ready"
        ws.send_bytes(b"\x00\x01\x02")  # not whole int16 samples
        while (msg := ws.receive()).get("bytes") is not None:  # idle frames may come first
            pass
        assert "not whole int16" in json.loads(msg["text"])["message"]


def test_one_live_session_at_a_time(client, monkeypatch):
    with client.websocket_connect("/live/ws") as first:
        first.send_json({"type": "start", "model": FAST, "sample_rate": 16000})
        ready = first.receive_json()  # waits (10 s at most) for an earlier test's session to wind down
        assert ready["type"] == "ready", ready
        monkeypatch.setattr("fada.app.live.GATE_WAIT_SECONDS", 0.2)
        with client.websocket_connect("/live/ws") as second:
            second.send_json({"type": "start", "model": FAST, "sample_rate": 16000})
            _one_line_error(second, "another live session is running")
        first.send_json({"type": "stop"})
        while (msg := first.receive()).get("bytes") is not None:
            pass
        assert json.loads(msg["text"])["type"] == "end"


def test_a_closed_socket_frees_the_app_for_the_next_session(client, monkeypatch):
    """The server may cancel a connection's handler while it waits for the worker's last clip (this test client
    does on closing); the next session must still get in once that clip is done."""
    from fada.app.live import LiveStream

    work = LiveStream.work

    def slow_work(self):
        work(self)
        time.sleep(1.0)  # a long last clip, still running when the client has gone

    monkeypatch.setattr(LiveStream, "work", slow_work)
    with client.websocket_connect("/live/ws") as ws:
        ws.send_json({"type": "start", "model": FAST, "sample_rate": 16000})
        assert ws.receive_json()["type"] == "ready"
    monkeypatch.setattr(LiveStream, "work", work)
    monkeypatch.setattr("fada.app.live.GATE_WAIT_SECONDS", 5.0)
    with client.websocket_connect("/live/ws") as ws:
        ws.send_json({"type": "start", "model": FAST, "sample_rate": 16000})
        assert ws.receive_json()["type"] == "ready"
        ws.send_json({"type": "stop"})
        while (msg := ws.receive()).get("bytes") is not None:
            pass
        assert json.loads(msg["text"])["type"] == "end"


def test_a_page_from_another_site_cannot_open_the_socket(client):
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect) as e:
        with client.websocket_connect("/live/ws", headers={"origin": "http://evil.example"}):
            pass
    assert e.value.code == 1008


def test_frames_for_a_slow_client_are_bounded():
    """Frames the client has not read are dropped oldest first; the outcome is never dropped and drops no frame
    (the utterance's last frames reach a slow client too)."""
    from fada.app.live import MAX_QUEUED_FRAMES, LiveStream

    loop = asyncio.new_event_loop()
    try:
        stream = LiveStream(SimpleNamespace(fps=25), loop)
        for i in range(3 * MAX_QUEUED_FRAMES):
            stream._put(bytes([i]))
        stream._put(("end",))
        assert len(stream.queue) == MAX_QUEUED_FRAMES + 1 and stream.dropped == 2 * MAX_QUEUED_FRAMES
        assert list(stream.queue)[:-1] == [bytes([i]) for i in range(2 * MAX_QUEUED_FRAMES, 3 * MAX_QUEUED_FRAMES)]
        assert stream.queue[-1] == ("end",)
    finally:
        loop.close()


# ---- the page in a browser with a fake microphone -------------------------------------------------------------

WAV_SECONDS = 12.0


def test_browser_microphone_drives_the_portrait(fast_model, tmp_path, monkeypatch):
    """Chromium's fake microphone plays a WAV of voice-like audio; frames arrive and are drawn while it plays."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from fada.app import start
    from fada.data.media import write_wav

    wav = write_wav(tmp_path / "voice.wav", speech(WAV_SECONDS, 48000), 48000)
    driver = chrome("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                    f"--use-file-for-fake-audio-capture={wav}%noloop", "--autoplay-policy=no-user-gesture-required")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FADA_MODEL", raising=False)
    app = start([fast_model], port=free_port(), block=False, quiet=True)
    try:
        with urllib.request.urlopen(app.url + "config") as r:
            assert 'href=\\"live\\"' in r.read().decode()  # the Live tab links to the page
        driver.get(app.url + "live")
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#live-model option"))
        live = lambda: driver.execute_script("return window.fadaLive")  # noqa: E731
        driver.find_element(By.ID, "live-start").click()
        t0 = time.monotonic()
        WebDriverWait(driver, 60, 0.05).until(lambda d: live()["firstFrameMs"] is not None or live()["error"])
        first_seen = time.monotonic() - t0
        state = live()
        assert not state["error"], state
        # the first speech frame is drawn while the file is still playing, and a clip more follows while it plays
        assert first_seen < WAV_SECONDS, state
        drawn = state["drawn"]
        WebDriverWait(driver, 30, 0.05).until(lambda d: live()["drawn"] >= drawn + 8)
        assert time.monotonic() - t0 < WAV_SECONDS, live()
        state = live()
        assert state["peak"] > 0.2, state  # the fake microphone plays the file (a silent one reads 0)
        first_ms = float(driver.find_element(By.ID, "live-first-ms").text)
        assert math.isfinite(first_ms) and 0 < first_ms < 20_000 and first_ms == pytest.approx(
            state["firstFrameMs"], abs=1)
        assert state["lagMs"] is not None and 0 < state["lagMs"] < 20_000, state
        assert int(driver.find_element(By.ID, "live-frames").text) >= state["drawn"] > 0
        spread = driver.execute_script("""
            const c = document.getElementById('live-canvas'), d = c.getContext('2d').getImageData(0, 0, c.width,
                c.height).data;
            let s = 0, s2 = 0, n = 0;
            for (let i = 0; i < d.length; i += 4) { const v = d[i] + d[i + 1] + d[i + 2]; s += v; s2 += v * v; n++; }
            return Math.sqrt(s2 / n - (s / n) ** 2);""")
        assert spread > 5, spread  # a face, not a blank canvas
        driver.find_element(By.ID, "live-stop").click()
        WebDriverWait(driver, 30).until(lambda d: "ended" in d.find_element(By.ID, "live-status").text)
        assert "Traceback" not in driver.find_element(By.TAG_NAME, "body").text
        print(f"\nlive page: first-frame latency {first_ms:.0f} ms, lag {state['lagMs']:.0f} ms, "
              f"{live()['frames']} frames")
    finally:
        driver.quit()
        app.close()
