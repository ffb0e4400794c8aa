"""`fada app`: the page in a real browser (Debian's Chromium through Selenium, no browser download), the same
endpoint through gradio_client, and the service's checks. Each test starts the app on a free loopback port with
tiny random models exported through the real code path.

``FADA_APP_SCREENSHOT=PATH pytest tests/app -k browser`` also saves the finished page there (the README's picture).
"""

from __future__ import annotations

import os
import shutil
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from fada.data.media import read_audio_track, read_video
from fada.errors import FadaError
from tests.stages.generate_helpers import export_model, write_portrait, write_speech

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SECONDS = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("app_models")
    return {k: export_model(root, k) for k in ("fast", "balanced", "teacher")}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    import cv2

    root = tmp_path_factory.mktemp("app_inputs")
    blank = root / "blank.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 128, np.uint8))  # no face in it
    return {"face": write_portrait(root / "astronaut.png"), "speech": write_speech(root / "speech.wav", SECONDS),
            "blank": blank, "long": write_speech(root / "long.wav", 3.0)}


@pytest.fixture
def server(models, monkeypatch, tmp_path):
    from fada.app import start

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no last demo
    monkeypatch.delenv("FADA_MODEL", raising=False)
    app = start([models["fast"], models["balanced"], models["teacher"]], port=free_port(), block=False,
                quiet=True, max_audio_seconds=2.0)
    yield app.url, app.workspace
    app.close()
    assert not app.workspace.root.exists()  # uploads and videos go with the app


def check_video(path: Path, seconds: float = SECONDS):
    frames, fps = read_video(path)
    assert fps == pytest.approx(25.0) and frames.shape[0] == int(round(seconds * 25)), (frames.shape, fps)
    assert len(read_audio_track(path, 16000)) / 16000 == pytest.approx(seconds, abs=0.05)


# ---- browser --------------------------------------------------------------------------------------------------

def chrome(*extra: str):
    """Debian's headless Chromium through its chromedriver (skips the test when they are not installed)."""
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip("Debian chromium / chromium-driver not installed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1700", *extra):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


@pytest.fixture
def browser():
    driver = chrome()
    yield driver
    driver.quit()


def _upload(driver, elem_id: str, path: Path):
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]").send_keys(str(path))


def _wait_text(driver, css: str, text: str, timeout: float = 120):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: text in d.find_element(By.CSS_SELECTOR, css).text)


def test_browser_generates_a_video_and_shows_errors(server, browser, inputs, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    d = browser
    d.get(url)
    WebDriverWait(d, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#generate"))
    _wait_text(d, "#mode", "6 NFE per clip")  # the Fast model's mode, with its NFE
    _upload(d, "portrait", inputs["face"])
    _wait_text(d, "#face-note", "the detected face")
    WebDriverWait(d, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#preview img"))
    _upload(d, "audio", inputs["speech"])
    WebDriverWait(d, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#audio audio, #audio .waveform-container"))
    d.find_element(By.CSS_SELECTOR, "#generate").click()
    WebDriverWait(d, 180).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#video video[src]"))
    _wait_text(d, "#stats", "NFE 6 per clip")
    assert "s per video second" in d.find_element(By.CSS_SELECTOR, "#stats").text
    src = d.find_element(By.CSS_SELECTOR, "#video video").get_attribute("src")
    served = tmp_path / "served.mp4"
    urllib.request.urlretrieve(src, served)
    check_video(served)
    shot = tmp_path / "page.png"
    d.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("FADA_APP_SCREENSHOT"):
        shutil.copy(shot, os.environ["FADA_APP_SCREENSHOT"])

    # a portrait without a face: the preview says so, and Generate shows the message, not a traceback
    _upload(d, "portrait", inputs["blank"])
    _wait_text(d, "#face-note", "no face found")
    d.find_element(By.CSS_SELECTOR, "#generate").click()
    WebDriverWait(d, 60).until(lambda d: "tick 'no crop'" in d.find_element(By.TAG_NAME, "body").text)
    body = d.find_element(By.TAG_NAME, "body").text
    assert "Traceback" not in body
    # the page stays usable: 'no crop' takes the central square, and the video comes
    d.find_element(By.CSS_SELECTOR, "#no-crop input").click()
    _wait_text(d, "#face-note", "the central square")


# ---- API ------------------------------------------------------------------------------------------------------

def test_gradio_client_generates_compares_and_refuses(server, inputs):
    from gradio_client import Client, handle_file

    url, ws = server
    c = Client(url, verbose=False)
    fast = "model-fast-fp32 (fast)"
    video, stats, download = c.predict(handle_file(str(inputs["face"])), False, handle_file(str(inputs["speech"])),
                                       fast, "fast", 3.0, 1.0, 0, 7, api_name="/generate")
    check_video(Path(video))
    assert "NFE 6 per clip" in stats and Path(download).is_file()
    assert list(ws.videos.glob("*.mp4")) and list(ws.uploads.rglob("*.png"))  # made and uploaded in the app's folder
    *videos, table = c.predict(handle_file(str(inputs["face"])), False, handle_file(str(inputs["speech"])),
                               "model-teacher-fp32 (teacher)", "model-balanced-fp32 (balanced)", fast, 0,
                               api_name="/compare")
    for v in videos:
        check_video(Path(v))
    assert "| teacher |" in table and "| 75 |" in table and "| 18 |" in table and "| 6 |" in table

    from gradio_client.exceptions import AppError

    for args, msg in [
        ((inputs["blank"], False, inputs["speech"], fast, "fast"), "no face found"),
        ((inputs["face"], False, inputs["long"], fast, "fast"), "longer than this app's limit of 2 s"),
        ((inputs["face"], False, inputs["speech"], fast, "balanced"), "runs only fast"),
        ((inputs["face"], False, inputs["face"], fast, "fast"), "audio:"),
    ]:
        p, crop, a, model, mode = args
        with pytest.raises(AppError, match=msg):
            c.predict(handle_file(str(p)), crop, handle_file(str(a)), model, mode, 3.0, 1.0, 0, 0,
                      api_name="/generate")
    # after the failures the app still works, with 'no crop' on the faceless image
    video, _, _ = c.predict(handle_file(str(inputs["blank"])), True, handle_file(str(inputs["speech"])), fast,
                            "fast", 3.0, 1.0, 0, 0, api_name="/generate")
    check_video(Path(video))


# ---- service --------------------------------------------------------------------------------------------------

def test_workspace_refuses_paths_outside_it(tmp_path):
    from fada.app.service import Workspace

    ws = Workspace(tmp_path / "ws")
    inside = ws.uploads / "a.png"
    inside.write_bytes(b"x")
    assert ws.upload(str(inside), "portrait") == inside.resolve()
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"x")
    for bad in (str(outside), str(ws.uploads / ".." / ".." / "secret.png")):
        with pytest.raises(FadaError, match="uploaded through the page"):
            ws.upload(bad, "portrait")
    with pytest.raises(FadaError, match="no audio"):
        ws.upload(None, "audio")


def test_models_come_from_flags_env_and_the_last_demo(models, tmp_path, monkeypatch):
    from fada.app.service import ModelRegistry, find_models
    from fada.utils.cache import record_demo_model

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("FADA_MODEL", str(models["balanced"]))
    demo = tmp_path / "demo" / "models"
    for k in ("teacher", "fast"):
        shutil.copytree(models[k], demo / k)
    record_demo_model(demo / "fast")
    found = find_models([models["fast"], models["fast"]])  # a duplicate once
    assert [(e.label, e.source) for e in found] == [
        ("model-fast-fp32 (fast)", "--model"), ("model-balanced-fp32 (balanced)", "$FADA_MODEL"),
        ("fast (fast)", "the last `fada demo`"), ("teacher (teacher)", "the last `fada demo`")]
    bad = tmp_path / "broken"
    shutil.copytree(models["fast"], bad)
    next((bad / "net" / "denoising_net").glob("*.safetensors")).write_bytes(b"not safetensors")
    reg = ModelRegistry(find_models([bad]))
    assert reg.get("model-balanced-fp32 (balanced)") is reg.get("model-balanced-fp32 (balanced)")  # loaded once
    with pytest.raises(FadaError, match="does not load"):
        reg.get("broken (fast)")
    assert reg.modes("model-balanced-fp32 (balanced)") == [("balanced", 18)]


def test_no_model_is_one_line(tmp_path, monkeypatch):
    from fada.app import start

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FADA_MODEL", raising=False)
    with pytest.raises(FadaError, match="no model: pass --model DIR"):
        start([], block=False)


class _FakePage:
    """Stands in for the Gradio Blocks: records launch()'s arguments and prints Gradio's banner unless quiet."""

    def __init__(self):
        self.launched = None

    def queue(self, **kwargs):
        return self

    def launch(self, **kwargs):
        self.launched = kwargs
        if not kwargs.get("quiet"):
            print("* Running on local URL:  http://127.0.0.1:1")
            print("* To create a public link, set `share=True` in `launch()`.")
        return None, "http://127.0.0.1:1/", None

    def close(self):
        pass


@pytest.mark.parametrize("share", [False, True])
def test_the_share_hint_names_the_cli_flag(share, monkeypatch, capsys):
    """Gradio's own hint speaks to its Python API; `fada app` users are told about --share instead."""
    import fada.app
    from fada.app import start

    class Registry:
        labels = []

        def __init__(self, entries, device=None, compile=False):
            pass

    page = _FakePage()
    monkeypatch.setattr(fada.app, "find_models", lambda models: ["model"])
    monkeypatch.setattr(fada.app, "ModelRegistry", Registry)
    monkeypatch.setattr("fada.app.page.build_page", lambda *args: page)
    monkeypatch.setattr("fada.app.live.live_routes", lambda registry: [])
    start(["model"], share=share, block=False).close()
    out = capsys.readouterr().out
    assert page.launched["quiet"] is True and page.launched["share"] is share
    assert "share=True" not in out and "launch()" not in out and out.count("http://127.0.0.1:1/") == 1
    assert ("`fada app --share`" in out) is not share
