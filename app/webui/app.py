"""`deltaplay ui`: the Gradio web UI (play, tokenizers, I-tokens, training, gallery).

Every browser tab owns a :class:`TabState` in a ``gr.State`` (its own PlaySession), so two tabs never
share a dream. The engine (app/engine.py) does the work; this file only wires widgets to it.
Keyboard play is a small page script generated from ``model.data.envs.keymap_for`` (the one keymap
table): it maps a key to the action button with that index and clicks it.

Binds 127.0.0.1 by default, never shares a public link, sends no telemetry (see app/__init__.py),
and serves files only from its runs and gallery folders.
"""
from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import app  # noqa: F401  (no-telemetry environment before gradio is imported)
import gradio as gr
import numpy as np
import pandas as pd

from app.webui import compare
from app.webui.jobs import JobError, JobManager, TrainSpec, format_eta, latest_checkpoint

SCALE = 6  # 64x64 frames are shown at 384x384, upscaled nearest on the server (crisp in any browser)
MAX_ACTIONS = 18  # the most any env here has (Atari's full set); unused buttons are hidden
DEFAULT_KEYS_HINT = "WASD/arrows move, Space do, Tab sleep, R/T/F/P place, 1-6 make, Enter reset"

CSS = """
#frame img, #real img, .pixelated img { image-rendering: pixelated; image-rendering: crisp-edges; }
#action-buttons button { min-width: 0; }
#keymap { display: none !important; }
"""


# ------------------------------------------------------------------------------------ state

@dataclass
class TabState:
    """One browser tab: its checkpoint, its PlaySession, and what its plots show."""

    checkpoint: str | None
    session: Any = None
    errors: list[float] = field(default_factory=list)
    rollout: Any = None  # the I-tokens tab's last rollout
    lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


def _close_state(st: Any) -> None:
    if isinstance(st, TabState):
        st.close()


def _user_error(e: BaseException) -> gr.Error:
    """A problem the user can act on, as a toast instead of a traceback."""
    return gr.Error(str(e) or type(e).__name__, print_exception=False)


def _load_bundle(checkpoint: str | None, device: str):
    from app.engine import CheckpointMissing, ModelBundle
    from model.checkpoint import CheckpointError

    try:
        return ModelBundle.load(checkpoint or None, device=device)
    except (CheckpointMissing, CheckpointError, ValueError) as e:
        raise _user_error(e) from None


def _big(frame: np.ndarray | None, scale: int = SCALE) -> np.ndarray | None:
    return None if frame is None else compare.upscale(np.asarray(frame, np.uint8), scale)


def _seed(v: Any) -> int | None:
    """The Seed box: a negative or empty value means a random seed."""
    return None if v is None or int(v) < 0 else int(v)


def _key_labels(keymap: dict[str, int]) -> dict[int, str]:
    """action -> the first key that plays it (letters before arrows), for the button labels."""
    out: dict[int, str] = {}
    for key, a in sorted(keymap.items(), key=lambda kv: (len(kv[0]) > 1 and kv[0] not in ("space", "tab"), kv[0])):
        out.setdefault(a, key.upper() if len(key) == 1 else key.capitalize())
    return out


def keyboard_js(keymap: dict[str, int]) -> str:
    """The page script for keyboard play. The live keymap is read from the hidden #keymap box
    (updated when a checkpoint of another env is loaded); ``keymap`` is the fallback."""
    return """
() => {
  const fallback = %s;
  const names = {" ": "space", "Tab": "tab", "Enter": "enter", "ArrowUp": "up", "ArrowDown": "down",
                 "ArrowLeft": "left", "ArrowRight": "right"};
  document.addEventListener("keydown", (e) => {
    const t = e.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)) return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const frame = document.getElementById("frame");
    if (!frame || frame.offsetParent === null) return;  // only while the Play tab is shown
    const key = names[e.key] || (e.key || "").toLowerCase();
    let map = fallback;
    const box = document.querySelector("#keymap textarea, #keymap input");
    if (box && box.value) { try { map = JSON.parse(box.value); } catch (_) {} }
    let id = null;
    if (Object.prototype.hasOwnProperty.call(map, key)) id = "act-" + map[key];
    else if (key === "enter") id = "btn-reset";
    if (!id) return;
    const btn = document.getElementById(id);
    if (!btn) return;
    e.preventDefault();
    btn.click();
  });
}
""" % json.dumps(keymap)


def gpu_choices() -> list[tuple[str, str]]:
    """Device choices for the Train form; a GPU is shown by name when present."""
    import torch

    out = [("auto", "auto"), ("cpu", "cpu")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            out.append((f"cuda:{i} ({torch.cuda.get_device_name(i)})", f"cuda:{i}"))
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        out.append(("mps (Apple GPU)", "mps"))
    return out


def env_choices() -> list[str]:
    out = ["crafter", "gridworld"]
    try:
        import ale_py  # noqa: F401

        out += ["atari:Pong", "atari:Breakout"]
    except ImportError:
        pass
    return out


# ------------------------------------------------------------------------------------ the app

@dataclass
class UISettings:
    checkpoint: str | None
    runs_dir: Path
    gallery_dir: Path
    device: str = "auto"


def checkpoint_choices(settings: UISettings) -> list[str]:
    """Checkpoints the Play tab offers: the bundled one, --checkpoint, and every run's latest."""
    from app.engine import BUNDLED_CHECKPOINT
    from model.checkpoint import checkpoint_exists

    out: list[str] = []
    if settings.checkpoint:
        out.append(str(settings.checkpoint))
    if checkpoint_exists(BUNDLED_CHECKPOINT) and str(BUNDLED_CHECKPOINT) not in out:
        out.append(str(BUNDLED_CHECKPOINT))
    if settings.runs_dir.exists():
        for d in sorted(settings.runs_dir.iterdir()):
            if d.is_dir() and latest_checkpoint(d) is not None and str(d) not in out:
                out.append(str(d))
    return out


def default_checkpoint(settings: UISettings) -> str | None:
    choices = checkpoint_choices(settings)
    return choices[0] if choices else None


def build_app(checkpoint: str | Path | None = None, runs_dir: str | Path = "runs",
              gallery_dir: str | Path | None = None, device: str = "auto") -> gr.Blocks:
    """The whole UI. ``checkpoint``: what the Play tab opens on (None: the bundled Crafter
    checkpoint if present, else the newest run's). Launch it with :func:`launch`."""
    runs = Path(runs_dir).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    gallery = Path(gallery_dir).resolve() if gallery_dir else runs.parent / "gallery"
    gallery.mkdir(parents=True, exist_ok=True)
    settings = UISettings(str(checkpoint) if checkpoint else None, runs, gallery, device)
    jobs = JobManager(runs)

    # The keymap and button labels the page starts with (the first checkpoint's env, else Crafter).
    from model.data.envs import action_names, keymap_for

    start_ckpt = default_checkpoint(settings)
    start_env = "crafter"
    if start_ckpt:
        try:
            from model.checkpoint import load_config

            from app.engine import resolve_checkpoint_path

            start_env = load_config(resolve_checkpoint_path(start_ckpt)).env.name
        except Exception:  # a broken checkpoint shows its error when loaded, not at build time
            pass
    start_names = action_names(start_env)
    start_keys = keymap_for(start_env)

    with gr.Blocks(title="Δ-IRIS Playground", analytics_enabled=False) as demo:
        state = gr.State(None, delete_callback=_close_state)
        gr.Markdown("## Δ-IRIS Playground — play inside a learned world model")
        with gr.Tabs(elem_id="tabs") as tabs:
            play = _play_tab(settings, state, start_ckpt, start_names, start_keys)
            _tokenizer_tab(settings, state, play)
            _itoken_tab(settings, state, play)
            _train_tab(settings, state, jobs, play, tabs)
            _gallery_tab(settings)
        demo.load(play.on_load, play.load_inputs, play.load_outputs, api_visibility="private")
    demo.deltaplay = {"settings": settings, "jobs": jobs, "js": keyboard_js(start_keys), "css": CSS,
                      "allowed_paths": [str(runs), str(gallery)]}
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, block: bool = True,
           quiet: bool = False) -> tuple[Any, str]:
    """Serve ``demo`` with its page script, CSS and file allow-list. Never opens a public share link."""
    extra = demo.deltaplay
    app_, url, _ = demo.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block,
                               quiet=quiet, js=extra["js"], css=extra["css"], allowed_paths=extra["allowed_paths"],
                               footer_links=["gradio", "settings"], show_error=True)
    return app_, url


# -------------------------------------------------------------------------------------- Play

@dataclass
class PlayWidgets:
    checkpoint: Any
    frame: Any
    real: Any
    outputs: list  # what every play handler returns, after the state
    load_outputs: list
    on_load: Any  # (re)opens the tab's checkpoint: page load, Load, "play this run"
    load_inputs: list


def _stats(info: Any, st: TabState, env_name: str) -> str:
    if info is None:
        return "No dream yet: press **Reset**."
    parts = [f"**step** {info.step}", f"**action** {info.action_name or '-'}",
             f"**reward** {info.reward:+.2f}", f"**return** {info.return_:+.2f}",
             f"**end p** {info.end_prob:.2f}"]
    if info.pixel_error is not None:
        parts.append(f"**error vs real** {info.pixel_error:.1f}/255")
    if info.real_return is not None:
        parts.append(f"**real return** {info.real_return:+.2f}")
    parts += [f"**{info.fps:.1f}** steps/s", f"I-tokens **{'on' if info.i_tokens else 'off'}**",
              f"**{info.controller}**", f"memory {info.steps_since_flush}/{info.horizon}"]
    if st.session is not None and st.session.recording:
        parts.append(f"● recording ({len(st.session.recorder)} frames)")
    text = " · ".join(parts)
    if info.message:
        text += f"\n\n_{info.message}_"
    return text


def _achievements(info: Any, env_name: str) -> str:
    if info is None or info.achievements is None:
        return ""
    from model.data.envs import achievement_names

    try:
        total = len(achievement_names(env_name))
    except Exception:
        total = None
    got = sorted(info.achievements)
    head = f"**Achievements (real env): {len(got)}{f'/{total}' if total else ''}**"
    return head + ("\n\n" + ", ".join(got) if got else "\n\nnone yet")


def _error_frame(st: TabState, last: int = 300) -> pd.DataFrame | None:
    if not st.errors:
        return None  # see _long: an empty frame would make the plot's axes categorical
    start = max(0, len(st.errors) - last)
    return pd.DataFrame({"step": list(range(start, len(st.errors))), "error": st.errors[start:]})


def _play_view(st: TabState, info: Any) -> list:
    """Outputs of every Play handler: state, dream, real, stats, achievements, error plot."""
    s = st.session
    env = s.env_name if s is not None else ""
    if info is not None and info.pixel_error is not None:
        if info.step == 0:
            st.errors = []
        if len(st.errors) <= info.step:  # one point per step (a setting change re-shows the same step)
            st.errors.append(float(info.pixel_error))
    return [st, _big(info.dream_frame if info else None), _big(info.real_frame if info else None),
            _stats(info, st, env), _achievements(info, env), _error_frame(st)]


def _play_tab(settings: UISettings, state: gr.State, start_ckpt: str | None, names: list[str],
              keys: dict[str, int]) -> PlayWidgets:
    labels = _key_labels(keys)
    with gr.Tab("Play", id="play", elem_id="tab-play"):
        with gr.Row():
            ckpt = gr.Dropdown(checkpoint_choices(settings), value=start_ckpt, label="Checkpoint",
                               allow_custom_value=True, elem_id="ckpt", scale=4,
                               info="a checkpoint folder or a run folder (its latest checkpoint)")
            load_btn = gr.Button("Load", elem_id="btn-load", scale=1)
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Row():
                    frame = gr.Image(label="Dream (world model)", elem_id="frame", format="png", height=400,
                                     width=400, interactive=False, buttons=[])
                    real = gr.Image(label="Real env (same actions)", elem_id="real", format="png", height=400,
                                    width=400, interactive=False, buttons=[])
                stats = gr.Markdown("Loading…", elem_id="stats")
                with gr.Row(elem_id="action-buttons"):
                    act_btns = []
                    for i in range(MAX_ACTIONS):
                        label = f"{names[i]} ({labels[i]})" if i < len(names) and i in labels else (
                            names[i] if i < len(names) else f"action {i}")
                        act_btns.append(gr.Button(label, elem_id=f"act-{i}", size="sm", visible=i < len(names),
                                                  min_width=90))
                gr.Markdown(f"Keyboard: {DEFAULT_KEYS_HINT} (click the page first).", elem_id="keys-hint")
            with gr.Column(scale=2):
                with gr.Row():
                    seed = gr.Number(-1, label="Seed (-1 = random)", precision=0, elem_id="seed")
                    reset_btn = gr.Button("Reset (Enter)", variant="primary", elem_id="btn-reset")
                controller = gr.Radio(["human", "agent"], value="human", label="Controller", elem_id="controller")
                with gr.Row():
                    agent_step = gr.Button("Agent step", elem_id="btn-agent-step", size="sm")
                    run_agent = gr.Button("Run agent ▶", elem_id="btn-run-agent", size="sm")
                    pause_agent = gr.Button("Pause", elem_id="btn-pause-agent", size="sm")
                itok = gr.Checkbox(True, label="I-tokens (world model with I-tokens)", elem_id="itok")
                shadow = gr.Checkbox(True, label="Real env side by side (takes effect on reset)", elem_id="shadow")
                horizon = gr.Slider(1, 200, value=16, step=1, label="Memory horizon (steps before re-priming)",
                                    elem_id="horizon")
                temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Sampling temperature",
                                        elem_id="temperature")
                with gr.Row():
                    record = gr.Checkbox(False, label="Record", elem_id="record")
                    gif_btn = gr.Button("Export GIF", elem_id="btn-gif")
                gif_file = gr.File(label="GIF", elem_id="gif-file", interactive=False)
                ach = gr.Markdown("", elem_id="achievements")
                err_plot = gr.LinePlot(None, x="step", y="error", height=200,
                                       title="Dream vs real: mean pixel error per step", elem_id="err-plot",
                                       y_title="|dream - real| (0-255)")
                with gr.Accordion("API (step by action index)", open=False):
                    action_idx = gr.Number(0, label="action index", precision=0, elem_id="action-idx")
                    step_btn = gr.Button("Step", elem_id="btn-step")
                keymap_box = gr.Textbox(json.dumps(keys), visible="hidden", elem_id="keymap")
        agent_timer = gr.Timer(0.3, active=False)

    outputs = [state, frame, real, stats, ach, err_plot]

    def ensure(st: TabState | None) -> TabState:
        return st if st is not None else TabState(start_ckpt)

    def need_session(st: TabState | None) -> TabState:
        st = ensure(st)
        if st.session is None:
            raise gr.Error("No dream loaded: choose a checkpoint and press Reset "
                           "(or train one in the Train tab).", print_exception=False)
        return st

    def new_session(st: TabState, ckpt: str | None, seed_v: float | None, itok_v: bool, shadow_v: bool,
                    horizon_v: float, temp_v: float, ctrl: str, rec: bool) -> Any:
        from app.engine import PlaySession, VariantUnavailable

        bundle = _load_bundle(ckpt, settings.device)  # a bad path leaves the tab's checkpoint as it was
        st.checkpoint = ckpt
        st.close()
        variants = [v for v in (bool(itok_v), not bool(itok_v)) if v in bundle.world_models]
        s = PlaySession(bundle, shadow=bool(shadow_v), temperature=float(temp_v), horizon=int(horizon_v),
                        i_tokens=variants[0])
        st.session = s
        info = s.reset(seed=_seed(seed_v))
        if ctrl == "agent":
            try:
                info = s.set_controller("agent") or info
            except VariantUnavailable as e:
                gr.Warning(str(e))
        if rec:
            s.start_recording()
        if variants[0] != bool(itok_v):
            gr.Warning(f"this checkpoint has no world model {'with' if itok_v else 'without'} I-tokens; "
                       f"using the one {'with' if variants[0] else 'without'}")
        return info

    def on_load(st, checkpoint, seed_v, itok_v, shadow_v, horizon_v, temp_v, ctrl, rec):
        st = ensure(st)
        ckpt = checkpoint or st.checkpoint
        if not ckpt:
            from app.engine import TRAIN_HINT

            msg = f"No checkpoint yet: start a run in the **Train** tab, or {TRAIN_HINT}."
            return [st, None, None, msg, "", _error_frame(st)] + _button_updates(None) + [gr.update(), gr.update()]
        with st.lock:
            info = new_session(st, ckpt, seed_v, itok_v, shadow_v, horizon_v, temp_v, ctrl, rec)
            s = st.session
            return (_play_view(st, info) + _button_updates(s)
                    + [json.dumps(s.keymap), s.i_tokens])

    def _button_updates(s: Any) -> list:
        if s is None:
            return [gr.update() for _ in range(MAX_ACTIONS)]
        labels = _key_labels(s.keymap)
        return [gr.update(value=f"{n} ({labels[i]})" if i in labels else n, visible=True) if i < len(s.action_names)
                else gr.update(visible=False) for i, n in enumerate(s.action_names + [""] * MAX_ACTIONS)][:MAX_ACTIONS]

    load_inputs = [state, ckpt, seed, itok, shadow, horizon, temperature, controller, record]
    load_outputs = outputs + act_btns + [keymap_box, itok]

    def do_reset(st, checkpoint, seed_v, itok_v, shadow_v, horizon_v, temp_v, ctrl, rec):
        st = ensure(st)
        if checkpoint and checkpoint != st.checkpoint or st.session is None:
            return on_load(st, checkpoint, seed_v, itok_v, shadow_v, horizon_v, temp_v, ctrl, rec)
        with st.lock:
            s = st.session
            if bool(shadow_v) != s.shadow:
                s.set_shadow(bool(shadow_v))
            info = s.reset(seed=_seed(seed_v))
            if rec:
                s.start_recording()
            return _play_view(st, info) + _button_updates(s) + [json.dumps(s.keymap), s.i_tokens]

    def do_step(st, action):
        st = need_session(st)
        with st.lock:
            s = st.session
            if action is not None:
                try:
                    action = int(action)
                except (TypeError, ValueError):
                    raise gr.Error(f"action must be an integer, got {action!r}", print_exception=False) from None
                if not 0 <= action < len(s.action_names):
                    raise gr.Error(f"action {action} out of range: {s.env_name} has actions 0.."
                                   f"{len(s.action_names) - 1} ({', '.join(s.action_names)})", print_exception=False)
            elif s.controller != "agent":
                raise gr.Error("no action given and the controller is human: pick an action or switch to agent",
                               print_exception=False)
            info = s.step(action)
            return _play_view(st, info)

    def make_act(i: int):
        def act(st):
            return do_step(st, i)
        return act

    def do_agent_step(st):
        st = need_session(st)
        if st.session.controller != "agent":
            from app.engine import VariantUnavailable

            try:
                with st.lock:
                    st.session.set_controller("agent")
            except VariantUnavailable as e:
                raise _user_error(e) from None
        return do_step(st, None)

    def timer_step(st):
        if st is None or st.session is None or st.session.controller != "agent":
            return [st, gr.update(), gr.update(), gr.update(), gr.update(), gr.update()]
        return do_step(st, None)

    def set_itok(st, on):
        from app.engine import VariantUnavailable

        st = need_session(st)
        with st.lock:
            try:
                info = st.session.set_i_tokens(bool(on))
            except VariantUnavailable as e:
                raise _user_error(e) from None
            return _play_view(st, info)[:4] + [st.session.i_tokens]

    def set_controller(st, ctrl):
        from app.engine import VariantUnavailable

        st = need_session(st)
        with st.lock:
            try:
                info = st.session.set_controller(ctrl)
            except (VariantUnavailable, ValueError) as e:
                raise _user_error(e) from None
            return [st, _stats(info, st, st.session.env_name), st.session.controller]

    def set_horizon(st, h):
        if st is not None and st.session is not None:
            st.session.set_horizon(int(h))
        return st

    def set_temperature(st, t):
        if st is not None and st.session is not None:
            try:
                st.session.set_temperature(float(t))
            except ValueError as e:
                raise _user_error(e) from None
        return st

    def set_record(st, on):
        st = need_session(st)
        with st.lock:
            if on:
                st.session.start_recording()
            else:
                st.session.stop_recording()
            return [st, _stats(st.session.info, st, st.session.env_name)]

    def export_gif(st):
        st = need_session(st)
        with st.lock:
            if len(st.session.recorder) == 0:
                raise gr.Error("Nothing recorded: tick Record, take a few steps, then export.", print_exception=False)
            path = settings.gallery_dir / f"play-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.gif"
            out = st.session.export_gif(path, fps=10, scale=4, side_by_side=True)
            return str(out)

    ev = dict(api_visibility="private")
    quiet = dict(show_progress="hidden")  # no spinner flicker per step, and an error does not cover the frames
    for i, b in enumerate(act_btns):
        b.click(make_act(i), [state], outputs, **ev, **quiet)
    step_btn.click(do_step, [state, action_idx], outputs, api_name="step", **quiet)
    reset_btn.click(do_reset, load_inputs, load_outputs, api_name="reset")
    load_btn.click(on_load, load_inputs, load_outputs, api_name="load_checkpoint")
    agent_step.click(do_agent_step, [state], outputs, api_name="agent_step", **quiet)
    run_agent.click(lambda: gr.Timer(active=True), None, agent_timer, **ev).then(
        lambda st: set_controller(st, "agent"), [state], [state, stats, controller], **ev)
    pause_agent.click(lambda: gr.Timer(active=False), None, agent_timer, **ev)
    agent_timer.tick(timer_step, [state], outputs, **ev)
    # On a refused switch, put the widgets back to what the session really uses.
    itok.input(set_itok, [state, itok], [state, frame, real, stats, itok], api_name="set_i_tokens",
               show_progress="hidden").failure(
        lambda st: st.session.i_tokens if st is not None and st.session is not None else True, [state], [itok], **ev)
    controller.input(set_controller, [state, controller], [state, stats, controller], api_name="set_controller",
                     show_progress="hidden").failure(
        lambda st: st.session.controller if st is not None and st.session is not None else "human", [state],
        [controller], **ev)
    horizon.release(set_horizon, [state, horizon], [state], **ev)
    temperature.release(set_temperature, [state, temperature], [state], **ev)
    record.input(set_record, [state, record], [state, stats], api_name="set_record", **quiet)
    gif_btn.click(export_gif, [state], [gif_file], api_name="export_gif")
    return PlayWidgets(ckpt, frame, real, outputs, load_outputs, on_load, load_inputs)


# --------------------------------------------------------------------------------- Tokenizers

TOK_SCALE = 4
SOURCES = ["fresh rollout", "stored episode", "upload"]


def _bundle_of(st: TabState | None, settings: UISettings):
    ckpt = st.checkpoint if st is not None else default_checkpoint(settings)
    if not ckpt:
        raise gr.Error("No checkpoint loaded: open one in the Play tab or train one in the Train tab.",
                       print_exception=False)
    return _load_bundle(ckpt, settings.device)


def _transitions(bundle: Any, source: str, seed: float | None, index: float, episode: float,
                 count: int) -> list[compare.Transition]:
    """``count`` transitions ending at ``index`` from a fresh real rollout or a stored episode."""
    seed_i = 0 if seed is None else int(seed)
    if source == "fresh rollout":
        return compare.rollout_transitions(bundle.env_name, max(int(index) + 1, count), seed=seed_i)
    if source == "stored episode":
        if bundle.store_dir is None:
            raise ValueError("this checkpoint is not inside a run folder with a store/; "
                             "use a fresh rollout or upload two frames")
        return compare.stored_transitions(bundle.store_dir, int(episode), limit=100_000)
    raise ValueError(f"unknown frame source {source!r}")


def _tokenizer_tab(settings: UISettings, state: gr.State, play: PlayWidgets) -> None:
    with gr.Tab("Tokenizers", id="tokenizers", elem_id="tab-tokenizers"):
        gr.Markdown("One transition x<sub>t-1</sub> → x<sub>t</sub> through the IRIS-style tokenizer "
                    "(frame alone) and the Δ-tokenizer (the change, given x<sub>t-1</sub> and the action). "
                    "Bits per frame = tokens × log2(vocabulary).")
        with gr.Row():
            source = gr.Radio(SOURCES, value="fresh rollout", label="Frames from", elem_id="tok-source")
            seed = gr.Number(0, label="Seed", precision=0, elem_id="tok-seed")
            index = gr.Slider(0, 255, value=10, step=1, label="Transition index", elem_id="tok-index")
            episode = gr.Number(-1, label="Stored episode (-1 = newest)", precision=0, elem_id="tok-episode")
        with gr.Row(visible=False) as upload_row:
            up_prev = gr.File(label="Upload: frame t-1", file_types=["image"], elem_id="tok-up-prev")
            up_next = gr.File(label="Upload: frame t", file_types=["image"], elem_id="tok-up-next")
            up_action = gr.Number(0, label="Upload: action index between them", precision=0,
                                  elem_id="tok-up-action")
        run_btn = gr.Button("Compare", variant="primary", elem_id="btn-compare")
        notice = gr.Markdown("", elem_id="tok-notice")
        with gr.Row():
            im_kw = dict(format="png", interactive=False, height=280, elem_classes=["pixelated"], buttons=[])
            original = gr.Image(label="Original x_t", elem_id="tok-original", **im_kw)
            iris = gr.Image(label="IRIS-style reconstruction", elem_id="tok-iris", **im_kw)
            delta = gr.Image(label="Δ reconstruction", elem_id="tok-delta", **im_kw)
        with gr.Row():
            prev = gr.Image(label="Previous frame x_t-1", elem_id="tok-prev", **im_kw)
            iris_err = gr.Image(label="IRIS-style error (x4)", elem_id="tok-iris-err", **im_kw)
            delta_err = gr.Image(label="Δ error (x4)", elem_id="tok-delta-err", **im_kw)
        metrics = gr.Dataframe(headers=compare.TABLE_HEADERS, label="This transition", elem_id="tok-metrics",
                               interactive=False)
        tokens = gr.Markdown("", elem_id="tok-tokens")
        with gr.Accordion("Batch: average and worst 1%", open=False):
            with gr.Row():
                batch_n = gr.Slider(16, 1024, value=128, step=16, label="Transitions", elem_id="tok-batch-n")
                batch_btn = gr.Button("Evaluate batch", elem_id="btn-tok-batch")
            batch_table = gr.Dataframe(headers=compare.BATCH_HEADERS, label="Batch", interactive=False,
                                       elem_id="tok-batch-table")
            worst = gr.Gallery(label="Worst 1%: original | reconstruction | error", columns=2, height="auto",
                               elem_id="tok-worst", format="png", preview=False, object_fit="contain",
                               elem_classes=["pixelated"])

    def run(st, src, seed_v, index_v, episode_v, prev_file, next_file, action_v):
        bundle = _bundle_of(st, settings)
        toks = compare.tokenizers_of(bundle)
        notices: list[str] = []
        try:
            if src == "upload":
                tr, notices = compare.uploaded_transition(prev_file, next_file, bundle.cfg.env.image_size,
                                                          int(action_v or 0))
                if not 0 <= tr.action < bundle.cfg.env.num_actions:
                    raise ValueError(f"action index {tr.action} out of range 0..{bundle.cfg.env.num_actions - 1}")
            else:
                trs = _transitions(bundle, src, seed_v, index_v, episode_v, 1)
                i = int(index_v)
                if i >= len(trs):
                    notices.append(f"the episode has {len(trs)} transitions; showing the last")
                    i = len(trs) - 1
                tr = trs[i]
            cmp_ = compare.compare_transition(toks, tr, notices)
        except ValueError as e:
            raise _user_error(e) from None
        by_kind = {("iris" if v.label.startswith("IRIS") else "delta"): v for v in cmp_.views}
        if "iris" not in by_kind:
            notices.append("this checkpoint has no IRIS-style tokenizer (train with --baselines to compare)")
        grids = []
        for v in cmp_.views:
            rows = compare.token_grid(v.tokens)
            body = "\n".join(" ".join(f"{t:>5}" for t in r) for r in rows)
            grids.append(f"**{v.label}** token ids ({v.tokens_per_frame} x log2({v.vocab_size}) = {v.bits:.0f} "
                         f"bits):\n```\n{body}\n```")
        iv, dv = by_kind.get("iris"), by_kind.get("delta")
        return [
            "\n".join(f"ⓘ {n}" for n in cmp_.notices + notices[len(cmp_.notices):]) if (cmp_.notices or notices) else "",
            _big(cmp_.original, TOK_SCALE), _big(iv.recon, TOK_SCALE) if iv else None,
            _big(dv.recon, TOK_SCALE) if dv else None, _big(cmp_.prev, TOK_SCALE),
            _big(iv.error, TOK_SCALE) if iv else None, _big(dv.error, TOK_SCALE) if dv else None,
            pd.DataFrame(cmp_.table(), columns=compare.TABLE_HEADERS), "\n\n".join(grids)]

    def run_batch(st, src, seed_v, episode_v, n):
        bundle = _bundle_of(st, settings)
        if src == "upload":
            raise gr.Error("a batch needs many transitions: choose a fresh rollout or a stored episode",
                           print_exception=False)
        try:
            trs = _transitions(bundle, src, seed_v, int(n) - 1, episode_v, int(n))[: int(n)]
        except ValueError as e:
            raise _user_error(e) from None
        stats = [compare.batch_stats(tok, label, trs) for label, tok in compare.tokenizers_of(bundle)]
        gallery = [g for s in stats for g in compare.worst_gallery(s, trs)]
        return pd.DataFrame(compare.batch_table(stats, trs), columns=compare.BATCH_HEADERS), gallery

    source.change(lambda src: gr.update(visible=src == "upload"), [source], [upload_row], api_visibility="private")
    run_btn.click(run, [state, source, seed, index, episode, up_prev, up_next, up_action],
                  [notice, original, iris, delta, prev, iris_err, delta_err, metrics, tokens],
                  api_name="compare_tokenizers")
    batch_btn.click(run_batch, [state, source, seed, episode, batch_n], [batch_table, worst],
                    api_name="tokenizer_batch")


# ----------------------------------------------------------------------------------- I-tokens

def _itoken_tab(settings: UISettings, state: gr.State, play: PlayWidgets) -> None:
    with gr.Tab("I-tokens", id="itokens", elem_id="tab-itokens"):
        gr.Markdown("The same actions played in the real env and in the world models **with** and **without** "
                    "I-tokens (the paper's ablation). Lower error vs the real frames is better.")
        with gr.Row():
            steps = gr.Slider(1, 200, value=30, step=1, label="Steps", elem_id="it-steps")
            seed = gr.Number(0, label="Seed", precision=0, elem_id="it-seed")
            temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature", elem_id="it-temp")
            policy = gr.Radio(["random", "agent"], value="random", label="Actions from", elem_id="it-policy")
        run_btn = gr.Button("Roll out", variant="primary", elem_id="btn-itok-run")
        summary = gr.Markdown("", elem_id="it-summary")
        scrub = gr.Slider(0, 30, value=0, step=1, label="Show step", elem_id="it-scrub")
        with gr.Row():
            im_kw = dict(format="png", interactive=False, height=300, elem_classes=["pixelated"], buttons=[])
            real = gr.Image(label="Real env", elem_id="it-real", **im_kw)
            with_i = gr.Image(label="With I-tokens", elem_id="it-with", **im_kw)
            without_i = gr.Image(label="Without I-tokens", elem_id="it-without", **im_kw)
        plot = gr.LinePlot(None, x="step", y="error",
                           color="variant", title="Mean pixel error vs the real env, per step", height=260,
                           elem_id="it-plot", y_title="|dream - real| (0-255)")
        with gr.Row():
            gif_btn = gr.Button("Export GIF (real | with | without)", elem_id="btn-itok-gif")
            gif_file = gr.File(label="GIF", interactive=False, elem_id="it-gif-file")

    def show(st, t):
        r = st.rollout if st is not None else None
        if r is None:
            return None, None, None
        t = int(np.clip(int(t), 0, len(r.real) - 1))
        return _big(r.real[t], 5), _big(r.with_i[t], 5), _big(r.without_i[t], 5)

    def run(st, n, seed_v, temp, pol):
        from app.engine import VariantUnavailable

        bundle = _bundle_of(st, settings)
        st = st if st is not None else TabState(default_checkpoint(settings))
        try:
            r = compare.itoken_rollout(bundle, steps=int(n), seed=0 if seed_v is None else int(seed_v),
                                       temperature=float(temp), policy=pol)
        except (VariantUnavailable, ValueError) as e:
            raise _user_error(e) from None
        st.rollout = r
        mw, mo = float(np.mean(r.err_with[1:] or r.err_with)), float(np.mean(r.err_without[1:] or r.err_without))
        text = (f"{len(r.actions)} steps · mean error with I-tokens **{mw:.1f}** · without **{mo:.1f}** "
                f"(0-255 scale) · actions: {', '.join(r.actions[:12])}{' …' if len(r.actions) > 12 else ''}")
        last = len(r.real) - 1
        return [st, text, gr.update(maximum=max(1, last), value=last), *show(st, last), pd.DataFrame(r.rows())]

    def gif(st):
        if st is None or st.rollout is None:
            raise gr.Error("Roll out first, then export.", print_exception=False)
        path = settings.gallery_dir / f"itokens-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.gif"
        return str(compare.itoken_gif(st.rollout, path))

    run_btn.click(run, [state, steps, seed, temperature, policy],
                  [state, summary, scrub, real, with_i, without_i, plot], api_name="itoken_rollout")
    scrub.change(show, [state, scrub], [real, with_i, without_i], api_visibility="private")
    gif_btn.click(gif, [state], [gif_file], api_name="itoken_gif")


# -------------------------------------------------------------------------------------- Train

RUN_HEADERS = ["run", "state", "epoch", "frames", "frames/s", "ETA"]


def _long(rows: list[dict[str, Any]], want) -> pd.DataFrame | None:
    """Metrics rows -> long format (epoch, value, series) for the numeric keys ``want`` accepts."""
    out = []
    for i, r in enumerate(rows):
        x = r.get("epoch", i)
        for k, v in r.items():
            if k != "epoch" and want(k) and isinstance(v, (int, float)) and not isinstance(v, bool):
                out.append({"epoch": x, "value": float(v), "series": k})
    # None, not an empty frame: an empty frame's object columns make the plot's axes categorical for good.
    return pd.DataFrame(out, columns=["epoch", "value", "series"]) if out else None


LOSS_KEYS = ("tokenizer_loss", "world_model_loss", "actor_critic_loss")  # model/train/loop.py's headline names
SCORE_KEYS = ("crafter_score", "return")


def _is_loss(k: str) -> bool:
    return k in LOSS_KEYS


def _is_score(k: str) -> bool:
    return k in SCORE_KEYS


def _progress_md(jobs: JobManager, name: str | None) -> tuple[str, str, str | None]:
    """(progress line, log tail, error or None) of one run."""
    if not name:
        return "No run selected.", "", None
    try:
        s = jobs.status(name)
    except JobError as e:
        return str(e), "", None
    p = s.progress
    frames = "-" if p["frames"] is None else f"{int(p['frames']):,}"
    if p["total_frames"]:
        frames += f" / {int(p['total_frames']):,}"
    fps = "-" if p["fps"] is None else f"{p['fps']:.0f}"
    line = (f"**{s.name}**: **{s.state}** · epoch {p['epoch'] if p['epoch'] is not None else '-'} · frames {frames}"
            f" · {fps} frames/s · ETA {format_eta(p['eta_s'])}")
    if s.pid:
        line += f" · pid {s.pid}"
    return line, jobs.log_tail(name, 30), s.error


def _train_tab(settings: UISettings, state: gr.State, jobs: JobManager, play: PlayWidgets, tabs: gr.Tabs) -> None:
    from model.config import PRESETS

    def run_names() -> list[str]:
        return [r.name for r in jobs.list_runs()]

    def runs_table() -> pd.DataFrame:
        rows = []
        for r in jobs.list_runs():
            p = r.progress
            rows.append([r.name, r.state, p["epoch"], p["frames"],
                         None if p["fps"] is None else round(p["fps"], 1), format_eta(p["eta_s"])])
        return pd.DataFrame(rows, columns=RUN_HEADERS)

    with gr.Tab("Train", id="train", elem_id="tab-train"):
        with gr.Row():
            name = gr.Textbox(f"run-{time.strftime('%Y%m%d-%H%M%S')}", label="Run name", elem_id="train-name")
            env = gr.Dropdown(env_choices(), value="crafter", label="Environment", elem_id="train-env",
                              allow_custom_value=True)
            preset = gr.Dropdown(list(PRESETS), value="cpu", label="Preset", elem_id="train-preset")
            device = gr.Dropdown(gpu_choices(), value="auto", label="Device", elem_id="train-device")
        with gr.Row():
            tokenizer = gr.Radio(["delta", "iris"], value="delta", label="Tokenizer", elem_id="train-tokenizer")
            itok = gr.Checkbox(True, label="I-tokens", elem_id="train-itok")
            baselines = gr.Checkbox(False, label="Also train baselines (no-I-token WM, IRIS tokenizer)",
                                    elem_id="train-baselines")
            frames = gr.Number(0, label="Frame budget (0 = preset's)", precision=0, elem_id="train-frames")
            epochs = gr.Number(0, label="Stop after epoch (0 = at the budget)", precision=0, elem_id="train-epochs")
        with gr.Row():
            start_btn = gr.Button("Start", variant="primary", elem_id="btn-train-start")
            stop_btn = gr.Button("Stop", variant="stop", elem_id="btn-train-stop")
            resume_btn = gr.Button("Resume", elem_id="btn-train-resume")
            play_btn = gr.Button("Play this run", elem_id="btn-train-play")
        with gr.Row():
            run_sel = gr.Dropdown(run_names(), value=None, label="Run", elem_id="train-run", allow_custom_value=True,
                                  scale=3)
            refresh_btn = gr.Button("Refresh", elem_id="btn-train-refresh", scale=1)
        progress = gr.Markdown("No run selected.", elem_id="train-progress")
        error = gr.Textbox(label="Error (crashed run)", lines=8, visible=False, elem_id="train-error",
                           interactive=False)
        with gr.Row():
            loss_plot = gr.LinePlot(None, x="epoch", y="value", color="series", title="Losses",
                                    height=260, elem_id="train-loss")
            score_plot = gr.LinePlot(None, x="epoch", y="value", color="series",
                                     title="Crafter score / return", height=260, elem_id="train-score")
        log = gr.Textbox(label="Log (tail)", lines=10, max_lines=10, interactive=False, elem_id="train-log",
                         autoscroll=True)
        runs = gr.Dataframe(runs_table(), headers=RUN_HEADERS, label="Runs", interactive=False, elem_id="train-runs")
        timer = gr.Timer(1.0)

    def view(run: str | None):
        line, tail_text, err = _progress_md(jobs, run)
        rows = jobs.metrics(run) if run else []
        return [line, gr.update(value=err or "", visible=bool(err)), _long(rows, _is_loss),
                _long(rows, _is_score), tail_text]

    view_outputs = [progress, error, loss_plot, score_plot, log]

    def start(run, env_v, preset_v, dev, tok, itok_v, base, frames_v, epochs_v):
        spec = TrainSpec(name=(run or "").strip(), env=env_v, preset=preset_v, tokenizer=tok, i_tokens=bool(itok_v),
                         device=dev or "auto", frames=int(frames_v) if frames_v else None, baselines=bool(base),
                         epochs=int(epochs_v) if epochs_v else None)
        try:
            jobs.start(spec)
        except JobError as e:
            raise _user_error(e) from None
        return [gr.update(choices=run_names(), value=spec.name), runs_table(), *view(spec.name),
                f"run-{time.strftime('%Y%m%d-%H%M%S')}"]

    def stop(run):
        try:
            jobs.stop(run or "")
        except JobError as e:
            raise _user_error(e) from None
        return [runs_table(), *view(run)]

    def resume(run):
        try:
            jobs.resume(run or "")
        except JobError as e:
            raise _user_error(e) from None
        return [runs_table(), *view(run)]

    def refresh(run):
        return [gr.update(choices=run_names(), value=run), runs_table(), *view(run)]

    def tick(run):
        return [runs_table(), *view(run)] if run else [gr.update()] * (1 + len(view_outputs))

    def play_run(st, run, *load_values):
        if not run:
            raise gr.Error("Select a run first.", print_exception=False)
        ckpt = latest_checkpoint(settings.runs_dir / run)
        if ckpt is None:
            raise gr.Error(f"run {run!r} has no checkpoint yet (one is written at the end of each epoch)",
                           print_exception=False)
        run_dir = str(settings.runs_dir / run)
        out = play.on_load(st, run_dir, *load_values)
        return [gr.update(selected="play"), gr.update(choices=checkpoint_choices(settings), value=run_dir), *out]

    start_btn.click(start, [name, env, preset, device, tokenizer, itok, baselines, frames, epochs],
                    [run_sel, runs, *view_outputs, name], api_name="train_start")
    stop_btn.click(stop, [run_sel], [runs, *view_outputs], api_name="train_stop")
    resume_btn.click(resume, [run_sel], [runs, *view_outputs], api_name="train_resume")
    refresh_btn.click(refresh, [run_sel], [run_sel, runs, *view_outputs], api_name="train_refresh")
    run_sel.input(lambda r: view(r), [run_sel], view_outputs, api_visibility="private")
    timer.tick(tick, [run_sel], [runs, *view_outputs], api_visibility="private")
    # Load inputs after (state, checkpoint): seed, i-tokens, shadow, horizon, temperature, controller, record.
    play_btn.click(play_run, [state, run_sel, *play.load_inputs[2:]], [tabs, play.checkpoint, *play.load_outputs],
                   api_name="train_play")


# ------------------------------------------------------------------------------------ Gallery

def gallery_files(settings: UISettings) -> list[Path]:
    """GIFs exported from this UI and those written by training runs (run/media), newest first."""
    files = list(settings.gallery_dir.glob("*.gif")) + list(settings.runs_dir.glob("*/media/*.gif"))
    return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)


def _gallery_tab(settings: UISettings) -> None:
    with gr.Tab("Gallery", id="gallery", elem_id="tab-gallery") as tab:
        gr.Markdown(f"GIFs exported here (saved in `{settings.gallery_dir}`) and dream GIFs written by training runs.")
        refresh = gr.Button("Refresh", elem_id="btn-gallery-refresh")
        gallery = gr.Gallery(label="GIFs", columns=3, height=420, elem_id="gallery", format="gif",
                             preview=False, object_fit="contain", elem_classes=["pixelated"])
        files = gr.File(label="Download", file_count="multiple", interactive=False, elem_id="gallery-files")

    def load():
        paths = [str(p) for p in gallery_files(settings)[:60]]
        return [(p, Path(p).name) for p in paths], paths or None

    refresh.click(load, None, [gallery, files], api_name="gallery")
    tab.select(load, None, [gallery, files], api_visibility="private")


# ---------------------------------------------------------------------------------------- CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it to your network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 = any free port)")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint or run folder to open (default: checkpoints/crafter, else the newest run)")
    p.add_argument("--runs-dir", default="runs", help="where the Train tab writes runs (default runs/)")
    p.add_argument("--gallery-dir", default=None, help="where exported GIFs go (default: next to the runs folder)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] | mps, for playing (default auto)")


def run(args: argparse.Namespace) -> int:
    from app.cli import UserError

    if args.checkpoint:
        from app.engine import CheckpointMissing, resolve_checkpoint_path

        try:
            resolve_checkpoint_path(args.checkpoint)
        except CheckpointMissing as e:
            raise UserError(str(e)) from None
    try:
        from model.device import resolve_device

        resolve_device(args.device)
    except ValueError as e:
        raise UserError(str(e)) from None
    demo = build_app(args.checkpoint, args.runs_dir, args.gallery_dir, args.device)
    jobs: JobManager = demo.deltaplay["jobs"]
    import signal
    import sys

    # SIGTERM (e.g. a service manager) stops the server like Ctrl-C, so training children are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        _, url = launch(demo, host=args.host, port=args.port or None, block=False, quiet=True)
        print(f"Δ-IRIS Playground: {url}  (Ctrl-C to stop; runs in {demo.deltaplay['settings'].runs_dir})", flush=True)
        demo.block_thread()
    finally:
        jobs.shutdown()
        demo.close()
    return 0
