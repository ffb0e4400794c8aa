"""The Gradio page of `fada app`: a Generate tab (portrait, speech, model, mode, guidance, steps, seed -> video) and
a Compare tab (the same inputs in teacher, Balanced and Fast mode side by side, with their times), and a Live tab
that links to the live page (``fada.app.live``: the microphone drives the portrait as the frames are made).

The work is `fada.app.service`; a ``FadaError`` becomes a ``gr.Error`` with its one-line message (shown in the
page, and raised by ``gradio_client``), and the page stays usable. The Generate button is also the API endpoint
``/generate`` (README: "The same generation from Python").
"""

from __future__ import annotations

from typing import Optional

from fada.app.service import (MAX_AUDIO_SECONDS, MODES, ModelRegistry, Request, Workspace, face_preview,
                              first_line, read_image, render)
from fada.errors import FadaError


def _mode_choices(registry: ModelRegistry, label: Optional[str]) -> list[tuple[str, str]]:
    if not label:
        return []
    try:
        return [(f"{m} · {nfe} NFE per clip", m) for m, nfe in registry.modes(label)]
    except FadaError:
        return []


def build_page(registry: ModelRegistry, workspace: Workspace, max_audio_seconds: float = MAX_AUDIO_SECONDS):
    import gradio as gr

    def fail(e: Exception):
        """The page shows the one line (no traceback in the page or the console); the console logs it."""
        print(f"request refused: {first_line(e)}", flush=True)
        return gr.Error(first_line(e), duration=None, print_exception=False)

    def defaults(label, mode):
        """Guidance sliders for a model and mode: the model's defaults; off where the mode takes none."""
        try:
            pipe = registry.get(label)
            plan = pipe.plan(mode)
        except FadaError:
            return gr.update(), gr.update()
        fixed = mode == "fast" and not plan.told_scales
        return (gr.update(value=plan.cfg_audio, interactive=not fixed),
                gr.update(value=plan.cfg_ref, interactive=not fixed))

    def on_model(label):
        choices = _mode_choices(registry, label)
        mode = choices[0][1] if choices else None
        note = "" if choices else f"**{first_line(_load_error(registry, label))}**"
        return (gr.update(choices=choices, value=mode), *defaults(label, mode), note)

    def on_portrait(portrait, no_crop):
        if not portrait:
            return None, ""
        try:
            return face_preview(read_image(workspace.upload(portrait, "portrait")), not no_crop), \
                ("the central square, as it is" if no_crop else "the detected face")
        except FadaError as e:
            return None, f"**{first_line(e)}**"

    def generate(portrait, no_crop, audio, label, mode, cfg_audio, cfg_ref, steps, seed,
                 progress=gr.Progress()):
        try:
            pipe = registry.get(label)
            plan = pipe.plan(mode)
            told = mode != "fast" or plan.told_scales
            req = Request(workspace.upload(portrait, "portrait"), workspace.upload(audio, "audio"), not no_crop,
                          mode, int(steps) if steps else None, float(cfg_audio) if told else None,
                          float(cfg_ref) if told else None, int(seed or 0))
            progress(0, desc="starting")
            res = render(pipe, req, workspace, max_audio_seconds,
                         lambda done, total: progress((done, total), desc="sampling", unit="steps"))
        except FadaError as e:
            raise fail(e) from None
        return str(res.video), f"{res.summary()}  \n{res.describe}", str(res.video)

    def compare(portrait, no_crop, audio, t_label, b_label, f_label, seed, progress=gr.Progress()):
        videos, lines = [], ["| mode | model | NFE per clip | seconds | s per video s |", "| --- | --- | ---: | ---: | ---: |"]
        try:
            p, a = workspace.upload(portrait, "portrait"), workspace.upload(audio, "audio")
            chosen = [(m, lab) for m, lab in zip(MODES, (t_label, b_label, f_label)) if lab]
            if not chosen:
                raise FadaError("no model chosen for any mode")
            for i, (mode, label) in enumerate(chosen):
                progress(i / len(chosen), desc=f"{mode}")
                res = render(registry.get(label), Request(p, a, not no_crop, mode, seed=int(seed or 0)), workspace,
                             max_audio_seconds,
                             lambda d, t, i=i: progress((i + d / t) / len(chosen), desc=mode))
                videos.append((mode, str(res.video)))
                lines.append(f"| {mode} | {label} | {res.nfe_per_clip} | {res.seconds:.1f} | "
                             f"{res.seconds_per_video_second:.2f} |")
        except FadaError as e:
            raise fail(e) from None
        by_mode = dict(videos)
        return (*(by_mode.get(m) for m in MODES), "\n".join(lines))

    labels = registry.labels
    first = labels[0] if labels else None
    first_modes = _mode_choices(registry, first)
    with gr.Blocks(title="fada: talking portraits", delete_cache=(900, 3600)) as page:
        gr.Markdown("# fada · talking portrait from one photo and one voice\n"
                    "Upload a portrait and speech (or record it), pick a model and mode, press **Generate**.")
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column():
                    portrait = gr.Image(label="Portrait (png / jpg / webp)", type="filepath", sources=["upload"],
                                        elem_id="portrait")
                    no_crop = gr.Checkbox(label="no crop: use the central square as it is", value=False,
                                          elem_id="no-crop")
                    preview = gr.Image(label="What the model sees", interactive=False, height=200,
                                       elem_id="preview")
                    face_note = gr.Markdown(elem_id="face-note")
                    audio = gr.Audio(label=f"Speech (upload or record, up to {max_audio_seconds:g} s)",
                                     sources=["upload", "microphone"], type="filepath", elem_id="audio")
                with gr.Column():
                    model = gr.Dropdown(choices=labels, value=first, label="Model", elem_id="model")
                    # every mode at build time (the API checks against these; the model refuses a mode it does
                    # not run), the chosen model's own modes with their NFE once the page loads
                    mode = gr.Radio(choices=[(m, m) for m in MODES],
                                    value=first_modes[0][1] if first_modes else None, label="Mode", elem_id="mode")
                    model_note = gr.Markdown(elem_id="model-note")
                    with gr.Row():
                        cfg_audio = gr.Slider(0.0, 10.0, value=3.0, step=0.1, label="Audio guidance",
                                              elem_id="cfg-audio")
                        cfg_ref = gr.Slider(0.0, 5.0, value=1.0, step=0.1, label="Reference guidance",
                                            elem_id="cfg-ref")
                    with gr.Row():
                        steps = gr.Number(value=0, precision=0, minimum=0, label="Steps (0: the model's own)",
                                          elem_id="steps")
                        seed = gr.Number(value=0, precision=0, label="Seed", elem_id="seed")
                    go = gr.Button("Generate", variant="primary", elem_id="generate")
                    video = gr.Video(label="Video", elem_id="video", buttons=["download"], autoplay=False)
                    stats = gr.Markdown(elem_id="stats")
                    download = gr.File(label="Download the mp4", elem_id="download")
        with gr.Tab("Compare"):
            gr.Markdown("The same portrait, speech and seed in every mode, each with the model that runs it.")
            with gr.Row():
                pick = {m: gr.Dropdown(choices=labels, value=registry.for_mode(m), label=f"{m} model",
                                       elem_id=f"compare-{m}") for m in MODES}
            run_all = gr.Button("Compare", variant="primary", elem_id="compare")
            with gr.Row():
                outs = [gr.Video(label=m, elem_id=f"compare-video-{m}") for m in MODES]
            table = gr.Markdown(elem_id="compare-table")
        with gr.Tab("Live"):
            # a page of its own: the microphone and the frames stream over a WebSocket, which Gradio's request/
            # response events do not carry
            gr.HTML('<p>Speak into the microphone and the portrait moves as the frames are made: pick a model and '
                    'a portrait there, press <b>Start</b>.</p><p><a id="live-link" href="live" target="_blank">'
                    '<b>Open the live page</b></a></p><p><small>The browser lends the microphone only to a secure '
                    'page: http://127.0.0.1 and http://localhost qualify; from another machine, serve the app '
                    'over https.</small></p>', elem_id="live-tab")

        model.change(on_model, [model], [mode, cfg_audio, cfg_ref, model_note])
        mode.change(defaults, [model, mode], [cfg_audio, cfg_ref])
        portrait.change(on_portrait, [portrait, no_crop], [preview, face_note])
        no_crop.change(on_portrait, [portrait, no_crop], [preview, face_note])
        go.click(generate, [portrait, no_crop, audio, model, mode, cfg_audio, cfg_ref, steps, seed],
                 [video, stats, download], api_name="generate")
        run_all.click(compare, [portrait, no_crop, audio, *pick.values(), seed], [*outs, table],
                      api_name="compare")
        page.load(on_model, [model], [mode, cfg_audio, cfg_ref, model_note])
    return page


def _load_error(registry: ModelRegistry, label) -> Exception:
    try:
        registry.get(label)
    except FadaError as e:
        return e
    return FadaError("this model runs no mode")
