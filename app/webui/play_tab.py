"""The Play tab: a dream of the world model next to the real env, played by keyboard, buttons or the agent.

Every handler returns its outputs by name through :class:`PlayView`; the outputs of each event are
listed once, as names, in the view.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr
import pandas as pd

from app.webui.common import (PRIVATE, TabState, UISettings, View, big, checkpoint_choices, gallery_path,
                              key_labels, load_bundle, seed_of, shown_to_user)
from app.webui.futures_panel import (LAST_ACTION, FuturesPanel, FuturesView, InspectorView, action_choices,
                                     futures_layout, inspector_layout)

MAX_ACTIONS = 18  # the most any env here has (Atari's full set); unused buttons are hidden
DEFAULT_KEYS_HINT = "WASD/arrows move, Space do, Tab sleep, R/T/F/P place, 1-6 make, Enter reset"
QUIET = dict(show_progress="hidden")  # no spinner flicker per step, and an error does not cover the frames


# ------------------------------------------------------------------------------------ the view

@dataclass
class PlayOptions:
    """The settings a (re)load reads, in the order of :attr:`PlayView.OPTIONS`."""

    seed: float | None
    i_tokens: bool
    shadow: bool
    horizon: float
    temperature: float
    controller: str
    record: bool


@dataclass
class PlayView(View):
    """The Play tab's widgets."""

    state: gr.State
    checkpoint: gr.Dropdown
    load_btn: gr.Button
    frame: gr.Image
    real: gr.Image
    stats: gr.Markdown
    buttons: list[gr.Button]
    seed: gr.Number
    reset_btn: gr.Button
    controller: gr.Radio
    agent_step_btn: gr.Button
    run_agent_btn: gr.Button
    pause_agent_btn: gr.Button
    itok: gr.Checkbox
    shadow: gr.Checkbox
    horizon: gr.Slider
    temperature: gr.Slider
    record: gr.Checkbox
    gif_btn: gr.Button
    gif_file: gr.File
    achievements: gr.Markdown
    err_plot: gr.LinePlot
    action_idx: gr.Number
    step_btn: gr.Button
    keymap: gr.Textbox
    agent_timer: gr.Timer
    futures: FuturesView
    inspector: InspectorView

    STEP = ("state", "frame", "real", "stats", "achievements", "err_plot")  # what every step shows
    OPTIONS = ("seed", "itok", "shadow", "horizon", "temperature", "controller", "record")

    def step_outputs(self) -> list[Any]:
        """A step's widgets, and the futures it makes stale."""
        return [*self.parts(*self.STEP), *self.futures.parts(*FuturesView.STALE)]

    def option_inputs(self) -> list[Any]:
        return self.parts(*self.OPTIONS)

    def load_inputs(self) -> list[Any]:
        return [self.state, self.checkpoint, *self.option_inputs()]

    def load_outputs(self) -> list[Any]:
        return [*self.step_outputs(), *self.buttons, self.keymap, self.itok, self.futures.action]

    def show(self, st: TabState, info: Any, names: tuple[str, ...] = STEP) -> dict[Any, Any]:
        """A step's outputs (``names`` of :attr:`STEP`; a whole step also clears the futures it made stale);
        records the step's error for the plot."""
        env = st.session.env_name if st.session is not None else ""
        if info is not None and info.pixel_error is not None:
            if info.step == 0:
                st.errors = []
            if len(st.errors) <= info.step:  # one point per step (a setting change re-shows the same step)
                st.errors.append(float(info.pixel_error))
        every = dict(state=st, frame=big(info.dream_frame if info else None),
                     real=big(info.real_frame if info else None), stats=stats_text(info, st),
                     achievements=achievements_text(info, env), err_plot=error_frame(st))
        stale = self.futures.stale() if names == self.STEP else {}
        return {**self.values(**{n: every[n] for n in names}), **stale}

    def show_loaded(self, st: TabState, info: Any) -> dict[Any, Any]:
        """A (re)load's outputs: the step, and the buttons, keymap and I-token box of the session's env."""
        s = st.session
        labels = key_labels(s.keymap)
        buttons = {b: gr.update(value=button_label(i, s.action_names, labels), visible=True)
                   if i < len(s.action_names) else gr.update(visible=False) for i, b in enumerate(self.buttons)}
        actions = self.futures.values(action=gr.update(choices=action_choices(s.action_names), value=LAST_ACTION))
        return {**self.show(st, info), **buttons, **self.values(keymap=json.dumps(s.keymap), itok=s.i_tokens),
                **actions}


def button_label(i: int, names: list[str], labels: dict[int, str]) -> str:
    """Action button ``i``: the action's name and its key."""
    if i >= len(names):
        return f"action {i}"
    return f"{names[i]} ({labels[i]})" if i in labels else names[i]


def stats_text(info: Any, st: TabState) -> str:
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


def achievements_text(info: Any, env_name: str) -> str:
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


def error_frame(st: TabState, last: int = 300) -> pd.DataFrame | None:
    if not st.errors:
        return None  # an empty frame would make the plot's axes categorical for good
    start = max(0, len(st.errors) - last)
    return pd.DataFrame({"step": list(range(start, len(st.errors))), "error": st.errors[start:]})


# ------------------------------------------------------------------------------------ layout

def _dream_column(names: list[str], keys: dict[str, int]) -> dict[str, Any]:
    labels = key_labels(keys)
    with gr.Row():
        frame = gr.Image(label="Dream (world model)", elem_id="frame", format="png", height=400,
                         width=400, interactive=False, buttons=[])
        real = gr.Image(label="Real env (same actions)", elem_id="real", format="png", height=400,
                        width=400, interactive=False, buttons=[])
    stats = gr.Markdown("Loading…", elem_id="stats")
    with gr.Row(elem_id="action-buttons"):
        buttons = []
        for i in range(MAX_ACTIONS):
            buttons.append(gr.Button(button_label(i, names, labels), elem_id=f"act-{i}", size="sm",
                                     visible=i < len(names), min_width=90))
    gr.Markdown(f"Keyboard: {DEFAULT_KEYS_HINT} (click the page first).", elem_id="keys-hint")
    return dict(frame=frame, real=real, stats=stats, buttons=buttons, futures=futures_layout(names),
                inspector=inspector_layout())


def _control_column(keys: dict[str, int]) -> dict[str, Any]:
    w: dict[str, Any] = {}
    with gr.Row():
        w["seed"] = gr.Number(-1, label="Seed (-1 = random)", precision=0, elem_id="seed")
        w["reset_btn"] = gr.Button("Reset (Enter)", variant="primary", elem_id="btn-reset")
    w["controller"] = gr.Radio(["human", "agent"], value="human", label="Controller", elem_id="controller")
    with gr.Row():
        w["agent_step_btn"] = gr.Button("Agent step", elem_id="btn-agent-step", size="sm")
        w["run_agent_btn"] = gr.Button("Run agent ▶", elem_id="btn-run-agent", size="sm")
        w["pause_agent_btn"] = gr.Button("Pause", elem_id="btn-pause-agent", size="sm")
    w["itok"] = gr.Checkbox(True, label="I-tokens (world model with I-tokens)", elem_id="itok")
    w["shadow"] = gr.Checkbox(True, label="Real env side by side (takes effect on reset)", elem_id="shadow")
    w["horizon"] = gr.Slider(1, 200, value=16, step=1, label="Memory horizon (steps before re-priming)",
                             elem_id="horizon")
    w["temperature"] = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Sampling temperature",
                                 elem_id="temperature")
    with gr.Row():
        w["record"] = gr.Checkbox(False, label="Record", elem_id="record")
        w["gif_btn"] = gr.Button("Export GIF", elem_id="btn-gif")
    w["gif_file"] = gr.File(label="GIF", elem_id="gif-file", interactive=False)
    w["achievements"] = gr.Markdown("", elem_id="achievements")
    w["err_plot"] = gr.LinePlot(None, x="step", y="error", height=200,
                                title="Dream vs real: mean pixel error per step", elem_id="err-plot",
                                y_title="|dream - real| (0-255)")
    with gr.Accordion("API (step by action index)", open=False):
        w["action_idx"] = gr.Number(0, label="action index", precision=0, elem_id="action-idx")
        w["step_btn"] = gr.Button("Step", elem_id="btn-step")
    w["keymap"] = gr.Textbox(json.dumps(keys), visible="hidden", elem_id="keymap")
    return w


def _layout(settings: UISettings, state: gr.State, start_ckpt: str | None, names: list[str],
            keys: dict[str, int]) -> PlayView:
    with gr.Tab("Play", id="play", elem_id="tab-play"):
        with gr.Row():
            ckpt = gr.Dropdown(checkpoint_choices(settings), value=start_ckpt, label="Checkpoint",
                               allow_custom_value=True, elem_id="ckpt", scale=4,
                               info="a checkpoint folder or a run folder (its latest checkpoint)")
            load_btn = gr.Button("Load", elem_id="btn-load", scale=1)
        with gr.Row():
            with gr.Column(scale=3):
                dream = _dream_column(names, keys)
            with gr.Column(scale=2):
                controls = _control_column(keys)
        timer = gr.Timer(0.3, active=False)
    return PlayView(state=state, checkpoint=ckpt, load_btn=load_btn, agent_timer=timer, **dream, **controls)


# ------------------------------------------------------------------------------------ handlers

class PlayTab:
    """The Play tab's widgets and what its events do; ``load`` also serves the Train tab's "Play this run"."""

    def __init__(self, settings: UISettings, view: PlayView, start_ckpt: str | None):
        self.settings = settings
        self.view = view
        self.start_ckpt = start_ckpt

    def ensure(self, st: TabState | None) -> TabState:
        return st if st is not None else TabState(self.start_ckpt)

    def need_session(self, st: TabState | None) -> TabState:
        st = self.ensure(st)
        if st.session is None:
            raise gr.Error("No dream loaded: choose a checkpoint and press Reset "
                           "(or train one in the Train tab).", print_exception=False)
        return st

    def open(self, st: TabState, ckpt: str, opts: PlayOptions) -> Any:
        """A new PlaySession on ``ckpt`` in this browser tab, reset; its first StepInfo."""
        from app.engine import PlaySession, VariantUnavailable

        bundle = load_bundle(ckpt, self.settings.device)  # a bad path leaves the tab's checkpoint as it was
        st.checkpoint = ckpt
        st.close()
        want = bool(opts.i_tokens)
        variant = [v for v in (want, not want) if v in bundle.world_models][0]
        s = PlaySession(bundle, shadow=bool(opts.shadow), temperature=float(opts.temperature),
                        horizon=int(opts.horizon), i_tokens=variant)
        st.session = s
        info = s.reset(seed=seed_of(opts.seed))
        if opts.controller == "agent":
            try:
                info = s.set_controller("agent") or info
            except VariantUnavailable as e:
                gr.Warning(str(e))
        if opts.record:
            s.start_recording()
        if variant != want:
            gr.Warning(f"this checkpoint has no world model {'with' if want else 'without'} I-tokens; "
                       f"using the one {'with' if variant else 'without'}")
        return info

    def load(self, st: TabState | None, checkpoint: str | None, *options: Any) -> dict[Any, Any]:
        """(Re)open the tab's checkpoint: page load, Load, "Play this run"."""
        st = self.ensure(st)
        ckpt = checkpoint or st.checkpoint
        if not ckpt:
            from app.engine import TRAIN_HINT

            msg = f"No checkpoint yet: start a run in the **Train** tab, or {TRAIN_HINT}."
            return self.view.values(state=st, frame=None, real=None, stats=msg, achievements="",
                                    err_plot=error_frame(st))
        with st.lock:
            info = self.open(st, ckpt, PlayOptions(*options))
            return self.view.show_loaded(st, info)

    def reset(self, st: TabState | None, checkpoint: str | None, *options: Any) -> dict[Any, Any]:
        st = self.ensure(st)
        if checkpoint and checkpoint != st.checkpoint or st.session is None:
            return self.load(st, checkpoint, *options)
        opts = PlayOptions(*options)
        with st.lock:
            s = st.session
            if bool(opts.shadow) != s.shadow:
                s.set_shadow(bool(opts.shadow))
            info = s.reset(seed=seed_of(opts.seed))
            if opts.record:
                s.start_recording()
            return self.view.show_loaded(st, info)

    def step(self, st: TabState | None, action: Any) -> dict[Any, Any]:
        st = self.need_session(st)
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
            return self.view.show(st, s.step(action))

    def act(self, i: int) -> Callable[[TabState | None], dict[Any, Any]]:
        """The handler of action button ``i``."""
        return lambda st: self.step(st, i)

    def agent_step(self, st: TabState | None) -> dict[Any, Any]:
        from app.engine import VariantUnavailable

        st = self.need_session(st)
        if st.session.controller != "agent":
            with shown_to_user(VariantUnavailable), st.lock:
                st.session.set_controller("agent")
        return self.step(st, None)

    def timer_step(self, st: TabState | None) -> dict[Any, Any]:
        if st is None or st.session is None or st.session.controller != "agent":
            return self.view.values(state=st)
        return self.step(st, None)

    def set_i_tokens(self, st: TabState | None, on: bool) -> dict[Any, Any]:
        from app.engine import VariantUnavailable

        st = self.need_session(st)
        with st.lock, shown_to_user(VariantUnavailable):
            info = st.session.set_i_tokens(bool(on))
            return {**self.view.show(st, info, ("state", "frame", "real", "stats")),
                    **self.view.values(itok=st.session.i_tokens)}

    def set_controller(self, st: TabState | None, ctrl: str) -> dict[Any, Any]:
        from app.engine import VariantUnavailable

        st = self.need_session(st)
        with st.lock, shown_to_user(VariantUnavailable, ValueError):
            info = st.session.set_controller(ctrl)
            return self.view.values(state=st, stats=stats_text(info, st), controller=st.session.controller)

    def set_horizon(self, st: TabState | None, h: float) -> TabState | None:
        if st is not None and st.session is not None:
            st.session.set_horizon(int(h))
        return st

    def set_temperature(self, st: TabState | None, t: float) -> TabState | None:
        if st is not None and st.session is not None:
            with shown_to_user(ValueError):
                st.session.set_temperature(float(t))
        return st

    def set_record(self, st: TabState | None, on: bool) -> dict[Any, Any]:
        st = self.need_session(st)
        with st.lock:
            if on:
                st.session.start_recording()
            else:
                st.session.stop_recording()
            return self.view.values(state=st, stats=stats_text(st.session.info, st))

    def export_gif(self, st: TabState | None) -> str:
        st = self.need_session(st)
        with st.lock:
            if len(st.session.recorder) == 0:
                raise gr.Error("Nothing recorded: tick Record, take a few steps, then export.", print_exception=False)
            out = st.session.export_gif(gallery_path(self.settings, "play"), fps=10, scale=4, side_by_side=True)
            return str(out)

    def wire(self) -> None:
        """Connect the widgets' events to the handlers (the api names are the HTTP API)."""
        v = self.view
        for i, b in enumerate(v.buttons):
            b.click(self.act(i), [v.state], v.step_outputs(), **PRIVATE, **QUIET)
        v.step_btn.click(self.step, [v.state, v.action_idx], v.step_outputs(), api_name="step", **QUIET)
        v.reset_btn.click(self.reset, v.load_inputs(), v.load_outputs(), api_name="reset")
        v.load_btn.click(self.load, v.load_inputs(), v.load_outputs(), api_name="load_checkpoint")
        v.agent_step_btn.click(self.agent_step, [v.state], v.step_outputs(), api_name="agent_step", **QUIET)
        controller_outputs = v.parts("state", "stats", "controller")
        v.run_agent_btn.click(lambda: gr.Timer(active=True), None, v.agent_timer, **PRIVATE).then(
            lambda st: self.set_controller(st, "agent"), [v.state], controller_outputs, **PRIVATE)
        v.pause_agent_btn.click(lambda: gr.Timer(active=False), None, v.agent_timer, **PRIVATE)
        v.agent_timer.tick(self.timer_step, [v.state], v.step_outputs(), **PRIVATE)
        # On a refused switch, put the widgets back to what the session really uses.
        v.itok.input(self.set_i_tokens, [v.state, v.itok], v.parts("state", "frame", "real", "stats", "itok"),
                     api_name="set_i_tokens", **QUIET).failure(
            lambda st: st.session.i_tokens if st is not None and st.session is not None else True, [v.state],
            [v.itok], **PRIVATE)
        v.controller.input(self.set_controller, [v.state, v.controller], controller_outputs,
                           api_name="set_controller", **QUIET).failure(
            lambda st: st.session.controller if st is not None and st.session is not None else "human",
            [v.state], [v.controller], **PRIVATE)
        v.horizon.release(self.set_horizon, [v.state, v.horizon], [v.state], **PRIVATE)
        v.temperature.release(self.set_temperature, [v.state, v.temperature], [v.state], **PRIVATE)
        v.record.input(self.set_record, [v.state, v.record], [v.state, v.stats], api_name="set_record", **QUIET)
        v.gif_btn.click(self.export_gif, [v.state], [v.gif_file], api_name="export_gif")
        FuturesPanel(self, v.futures, v.inspector).wire()


def play_tab(settings: UISettings, state: gr.State, start_ckpt: str | None, env: str) -> PlayTab:
    """Lay out the Play tab with the action buttons and keys of ``env`` (the start checkpoint's) and
    wire its events."""
    from model.data.envs import action_names, keymap_for

    tab = PlayTab(settings, _layout(settings, state, start_ckpt, action_names(env), keymap_for(env)), start_ckpt)
    tab.wire()
    return tab
