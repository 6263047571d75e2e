"""`deltaplay ui`: the Gradio web UI (play, tokenizers, I-tokens, training, gallery).

Every browser tab owns a :class:`~app.webui.common.TabState` in a ``gr.State`` (its own PlaySession),
so two tabs never share a dream. The engine (app/engine.py) does the work; each tab's module only
wires widgets to it, and this module assembles the tabs and serves them: the start checkpoint loaded and
warmed first (app/webui/sessions.py), every event behind input checks and plain-words errors
(app/webui/guard.py), the training run's state on every tab.

Binds 127.0.0.1 by default, never shares a public link, sends no telemetry (see app/__init__.py),
and serves files only from its runs and gallery folders.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from app.webui.common import CSS, PRIVATE, UISettings, close_state, default_checkpoint, env_of
from app.webui.gallery_tab import gallery_tab
from app.webui.guard import GuardedBlocks
from app.webui.itoken_tab import itoken_tab
from app.webui.jobs import GALLERY, JobManager
from app.webui.keys import keyboard_js
from app.webui.play_tab import play_tab
from app.webui.prepaint import Claims, splash_maker
from app.webui.sessions import SpareSessions
from app.webui.tokenizer_tab import tokenizer_tab
from app.webui.train_tab import train_tab, training_line

CLAIM_JS = "(...args) => [...args.slice(0, -1), window.deltaplayClaim || '']"  # the splash's session, if any
QUEUE_SIZE = 64  # events waiting at most; one more hears "the queue is full, try again"
STATUS_EVERY_S = 3.0  # how often each page rereads whether a training run is going


def build_app(checkpoint: str | Path | None = None, runs_dir: str | Path = "runs",
              gallery_dir: str | Path | None = None, device: str = "auto", gif_frames: int = 300,
              warm: bool = True) -> gr.Blocks:
    """The whole UI. ``checkpoint``: what the Play tab opens on (None: the bundled Crafter
    checkpoint if present, else the newest run's). ``gif_frames``: the steps the Play tab keeps for
    Export GIF. With ``warm``, the start checkpoint's models are loaded and a session is made ready
    before this returns, so the first page shows its frames at once. Launch it with :func:`launch`."""
    from app.engine import set_play_threads
    from model.data.envs import keymap_for
    from model.device import resolve_device

    runs = Path(runs_dir).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    gallery = Path(gallery_dir).resolve() if gallery_dir else runs / GALLERY  # inside the git-ignored runs/
    gallery.mkdir(parents=True, exist_ok=True)
    settings = UISettings(str(checkpoint) if checkpoint else None, runs, gallery, device, gif_frames=max(1, gif_frames))
    settings.spares = SpareSessions(device, settings.gif_frames)
    settings.claims = Claims()
    set_play_threads(0, resolve_device(device))  # one thread on CPU: a batch-1 dream step gains nothing from more
    jobs = JobManager(runs)
    # The keymap and buttons the page starts with: the first checkpoint's env, else Crafter.
    start_ckpt = default_checkpoint(settings)
    start_env = env_of(start_ckpt)
    if warm:
        settings.spares.warm(start_ckpt)

    with GuardedBlocks(title="Δ-IRIS Playground", analytics_enabled=False) as demo:
        state = gr.State(None, delete_callback=close_state)
        gr.Markdown("## Δ-IRIS Playground — play inside a learned world model")
        status = gr.Markdown("", elem_id="train-status")
        with gr.Tabs(elem_id="tabs") as tabs:
            play = play_tab(settings, state, start_ckpt, start_env)
            tokenizer_tab(settings, state)
            itoken_tab(settings, state)
            train_tab(settings, jobs, play, tabs)
            gallery_tab(settings)
        pv = play.view
        demo.load(play.first_load, [*pv.load_inputs(), pv.claim], pv.load_outputs(), js=CLAIM_JS, **PRIVATE,
                  concurrency_limit=None)
        status_timer = gr.Timer(STATUS_EVERY_S)
        for event in (demo.load, status_timer.tick):
            event(lambda: training_line(jobs), None, status, **PRIVATE, concurrency_limit=None,
                  show_progress="hidden")
    demo.scrub = settings.scrubber()
    demo.queue(max_size=QUEUE_SIZE)
    demo.deltaplay = {"settings": settings, "jobs": jobs, "js": keyboard_js(keymap_for(start_env)), "css": CSS,
                      "allowed_paths": [str(runs), str(gallery)], "splash": splash_maker(settings, start_ckpt)}
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, block: bool = True,
           quiet: bool = False) -> tuple[Any, str]:
    """Serve ``demo`` with its page script, CSS and file allow-list. Never opens a public share link;
    an error reaches the browser only as the plain message of a ``gr.Error`` (GuardedBlocks)."""
    from starlette.middleware import Middleware

    from app.webui.lane import add_routes
    from app.webui.prepaint import PrepaintMiddleware

    extra = demo.deltaplay
    app_, url, _ = demo.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block,
                               quiet=quiet, js=extra["js"], css=extra["css"], allowed_paths=extra["allowed_paths"],
                               footer_links=["gradio", "settings"], show_error=False,
                               app_kwargs={"middleware": [Middleware(PrepaintMiddleware, make=extra["splash"])]})
    add_routes(app_)  # the held-key lane (app/webui/lane.py)
    return app_, url
