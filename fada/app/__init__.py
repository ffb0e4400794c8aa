"""`fada app`: a local web page (Gradio) for generating talking portraits.

``launch`` finds the model folders (``--model``, ``$FADA_MODEL``, the last ``fada demo``), loads each once, and
serves the page on loopback unless told otherwise; requests wait in one queue (one generation at a time), and the
uploads and videos live in a temporary folder the app owns and removes when it stops. The same server serves the
live page (``/live``, ``fada.app.live``): the microphone drives a portrait over a WebSocket.
"""

from __future__ import annotations

import os
from typing import Optional

from fada.errors import FadaError

from .service import MAX_AUDIO_SECONDS, ModelRegistry, Workspace, find_models

__all__ = ["launch", "start", "RunningApp", "MAX_AUDIO_SECONDS"]

QUEUE_SIZE = 32


class RunningApp:
    """A served page (``start(block=False)``): ``url``, ``workspace``; ``close()`` stops the server, removes the
    workspace and restores the process's GRADIO_TEMP_DIR."""

    def __init__(self, page, url: str, workspace: Workspace, old_temp_dir: Optional[str]):
        self.page, self.url, self.workspace, self._old = page, url, workspace, old_temp_dir

    def close(self) -> None:
        try:
            self.page.close()
        finally:
            self.workspace.remove()
            _set_env("GRADIO_TEMP_DIR", self._old)


def _set_env(key: str, value: Optional[str]) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


def start(models: list, host: str = "127.0.0.1", port: Optional[int] = 7860, share: bool = False,
          max_audio_seconds: float = MAX_AUDIO_SECONDS, device=None, block: bool = True, quiet: bool = False,
          compile: bool = False):
    """Build and serve the page; with ``block`` until interrupted, else return a ``RunningApp`` (tests)."""
    entries = find_models(list(models or []))
    if not entries:
        raise FadaError("no model: pass --model DIR (a folder written by `fada export`), set $FADA_MODEL, or run "
                        "`fada demo` to train a small one")
    if max_audio_seconds <= 0:
        raise FadaError(f"--max-audio-seconds {max_audio_seconds}: must be > 0")
    workspace = Workspace()
    old = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(workspace.uploads)  # Gradio's upload cache: inside the app's own folder
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        registry = ModelRegistry(entries, device, compile=compile)
        for label in registry.labels:  # one load per model, before the first request; a bad folder is reported
            try:
                registry.get(label)
            except FadaError as e:
                print(f"warning: {e}", flush=True)
        from .live import live_routes
        from .page import build_page

        page = build_page(registry, workspace, max_audio_seconds)
        page.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
        if share:
            print("warning: --share opens a public gradio.live link: anyone who has it can run this machine's "
                  "models and upload files to it", flush=True)
        # quiet: Gradio's own banner tells users to "set `share=True` in `launch()`"; the app prints its URL and the
        # CLI's --share itself (Gradio still prints the public URL, and any failure to open it, with share)
        _, url, _ = page.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True,
                                allowed_paths=[str(workspace.videos)], quiet=True, show_error=False,
                                footer_links=["api"],
                                # the live page and its socket, ahead of Gradio's own routes on the same server
                                app_kwargs={"routes": live_routes(registry)})
    except BaseException:
        workspace.remove()
        _set_env("GRADIO_TEMP_DIR", old)
        raise
    running = RunningApp(page, url, workspace, old)
    if not quiet:
        print(f"* Running on local URL:  {url}", flush=True)
        if not share:
            print("* For a public link, run `fada app --share` (a temporary gradio.live address).", flush=True)
    if not block:
        return running
    try:
        page.block_thread()
    finally:
        running.close()


def launch(models: list, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           max_audio_seconds: float = MAX_AUDIO_SECONDS, compile: bool = False) -> None:
    """`fada app`: serve until interrupted."""
    start(models, host, port, share, max_audio_seconds, block=True, compile=compile)
