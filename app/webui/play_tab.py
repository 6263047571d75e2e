"""The Play tab: a dream of the world model next to the real env, played by keyboard, buttons or the agent.

Keys and action buttons go through the page's move queue (app/webui/keys.py), which the ``/play_keys``
event plays a batch at a time; a held key streams over the lane (app/webui/lane.py) and ends with ``/play_sync``.
The widgets and what a step shows live in app/webui/play_view.py.
"""
from __future__ import annotations

import json
import random
from typing import Any, Callable

import gradio as gr

from app.webui.common import (PRIVATE, TabState, UISettings, checkpoint_choices, gallery_path, key_labels,
                              load_bundle, shown_to_user)
from app.webui.futures_panel import FuturesPanel, futures_layout, inspector_layout
from app.webui.guard import number, one_of, refuse, short, text, whole
from app.webui.keys import DONE_JS, FAILED_JS, TAKE_JS, parse_keys
from app.webui.play_view import (HORIZON_MAX, TEMPERATURE_RANGE, PlayOptions, PlayView, button_label, error_frame,
                                 note_error, stats_text)

MAX_ACTIONS = 18  # the most any env here has (Atari's full set); unused buttons are hidden
DEFAULT_KEYS_HINT = "WASD/arrows move, Space do, Tab sleep, R/T/F/P place, 1-6 make, Enter reset"
QUIET = dict(show_progress="hidden")  # no spinner flicker per step, and an error does not cover the frames
PLAY = dict(concurrency_limit=8)  # each page plays its own session: pages step side by side


# ------------------------------------------------------------------------------------ layout

def _dream_column(names: list[str], keys: dict[str, int]) -> dict[str, Any]:
    labels = key_labels(keys)
    with gr.Row():
        frame = gr.Image(label="Dream (world model)", elem_id="frame", format="png", height=400,
                         width=400, interactive=False, buttons=[])
        real = gr.Image(label="Real env (same actions)", elem_id="real", format="png", height=400,
                        width=400, interactive=False, buttons=[])
    stats = gr.Markdown("Loading…", elem_id="stats")
    pending = gr.HTML("<span id='pending-count'></span>", elem_id="pending-moves", padding=False)
    with gr.Row(elem_id="action-buttons"):
        buttons = []
        for i in range(MAX_ACTIONS):
            buttons.append(gr.Button(button_label(i, names, labels), elem_id=f"act-{i}", size="sm",
                                     visible=i < len(names), min_width=90))
    gr.Markdown(f"Keyboard: {DEFAULT_KEYS_HINT} (click the page first). Every press is played, in order; "
                "hold a key to keep moving.", elem_id="keys-hint")
    # The page's move queue sends its batches through these two (app/webui/keys.py).
    batch = gr.Textbox("", visible="hidden", elem_id="key-batch", label="moves")
    batch_btn = gr.Button("play moves", visible="hidden", elem_id="btn-keys")
    # A held key streams over the lane (app/webui/lane.py); then the page syncs every widget once.
    lane = gr.Textbox("", visible="hidden", elem_id="lane", label="lane")
    claim = gr.Textbox("", visible="hidden", elem_id="claim", label="claim")  # the splash's session (prepaint.py)
    sync_btn = gr.Button("sync", visible="hidden", elem_id="btn-sync")
    return dict(frame=frame, real=real, stats=stats, pending=pending, buttons=buttons, keys=batch,
                keys_btn=batch_btn, lane=lane, claim=claim, sync_btn=sync_btn, futures=futures_layout(names),
                inspector=inspector_layout())


def _control_column(keys: dict[str, int], gif_frames: int) -> dict[str, Any]:
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
    w["horizon"] = gr.Slider(1, HORIZON_MAX, value=16, step=1, label="Memory horizon (steps before re-priming)",
                             elem_id="horizon")
    w["temperature"] = gr.Slider(*TEMPERATURE_RANGE, value=1.0, step=0.05, label="Sampling temperature",
                                 elem_id="temperature")
    with gr.Row():
        w["clip_btn"] = gr.Button("Start clip here", elem_id="btn-clip")
        w["gif_btn"] = gr.Button("Export GIF", elem_id="btn-gif")
    gr.Markdown(f"Export GIF writes the last {gif_frames} steps of this episode, or the clip from where you "
                "pressed Start clip.", elem_id="gif-hint")
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
                controls = _control_column(keys, settings.gif_frames)
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
            raise refuse("No dream loaded: choose a checkpoint and press Reset (or train one in the Train tab).")
        return st

    def new_session(self, bundle: Any, variant: bool, opts: PlayOptions, claim: str = "") -> tuple[Any, Any]:
        """A reset session for these options: the one whose frames the page's splash shows (``claim``,
        app/webui/prepaint.py) or a spare one made in advance when it fits (the fast paths)."""
        from app.engine import PlaySession

        spares, claims, s = self.settings.spares, self.settings.claims, None
        if claim and claims is not None and opts.seed is None and opts.shadow:
            s = claims.take(claim, bundle, variant)
        if s is None and spares is not None:
            s = spares.take(bundle, variant, opts.shadow, opts.seed)
        if s is not None:
            s.set_temperature(opts.temperature)
            s.set_horizon(opts.horizon)
            s.keep_last(self.settings.gif_frames)
            return s, s.info
        s = PlaySession(bundle, shadow=opts.shadow, temperature=opts.temperature, horizon=opts.horizon,
                        i_tokens=variant)
        s.keep_last(self.settings.gif_frames)
        return s, self.fresh(s, opts.seed)

    def fresh(self, s: Any, seed: int | None) -> Any:
        """``s`` reset to ``seed`` (random if None); its real env's world is made in the spares' env process, so
        that building it does not slow the other pages' play (app/webui/sessions.py)."""
        seed = seed if seed is not None else random.randrange(2**31)
        spares = self.settings.spares
        made = spares.envs.reset(s.env_name, seed) if s.shadow and spares is not None else None
        return s.reset(seed, made=made)

    def open(self, st: TabState, ckpt: str, opts: PlayOptions, claim: str = "") -> Any:
        """A new PlaySession on ``ckpt`` in this browser tab, reset; its first StepInfo."""
        from app.engine import VariantUnavailable

        with self.settings.gate("load")():
            bundle = load_bundle(ckpt, self.settings.device)  # a bad path leaves the tab's checkpoint as it was
        st.checkpoint = ckpt
        st.close()
        want = opts.i_tokens
        variant = [v for v in (want, not want) if v in bundle.world_models][0]
        st.session, info = self.new_session(bundle, variant, opts, claim)
        if opts.controller == "agent":
            try:
                info = st.session.set_controller("agent") or info
            except VariantUnavailable as e:
                gr.Warning(str(e))
        if variant != want:
            gr.Warning(f"this checkpoint has no world model {'with' if want else 'without'} I-tokens; "
                       f"using the one {'with' if variant else 'without'}")
        return info

    def first_load(self, st: TabState | None, checkpoint: Any, *options_and_claim: Any) -> dict[Any, Any]:
        """The page's load: :meth:`load`, with the session its splash showed when it has a claim."""
        *options, claim = options_and_claim
        return self.load(st, checkpoint, *options, claim=claim if isinstance(claim, str) else "")

    def load(self, st: TabState | None, checkpoint: Any, *options: Any, claim: str = "") -> dict[Any, Any]:
        """(Re)open the tab's checkpoint: page load, Load, "Play this run"."""
        st = self.ensure(st)
        opts = PlayOptions(*options).checked()
        ckpt = text(checkpoint, "the checkpoint path", 1024) or st.checkpoint
        if not ckpt:
            from app.engine import TRAIN_HINT

            msg = f"No checkpoint yet: start a run in the **Train** tab, or {TRAIN_HINT}."
            return self.view.values(state=st, frame=None, real=None, stats=msg, achievements="",
                                    err_plot=error_frame(st))
        with st.lock:
            info = self.open(st, ckpt, opts, claim[:64])
            return self.view.show_loaded(st, info)

    def reset(self, st: TabState | None, checkpoint: Any, *options: Any) -> dict[Any, Any]:
        st = self.ensure(st)
        ckpt = text(checkpoint, "the checkpoint path", 1024)
        if ckpt and ckpt != st.checkpoint or st.session is None:
            return self.load(st, ckpt, *options)
        opts = PlayOptions(*options).checked()
        with st.lock:
            s = st.session
            if opts.shadow != s.shadow:
                s.set_shadow(opts.shadow)
            return self.view.show_loaded(st, self.fresh(s, opts.seed))

    @staticmethod
    def action_of(s: Any, action: Any) -> int:
        """A human action index, checked against the session's env."""
        n = len(s.action_names)
        try:
            return whole(action, "the action", 0, n - 1)
        except gr.Error:
            raise refuse(f"action {short(action)} out of range: {s.env_name} has actions 0..{n - 1} "
                         f"({', '.join(s.action_names)})") from None

    def step(self, st: TabState | None, action: Any) -> dict[Any, Any]:
        st = self.need_session(st)
        with st.lock:
            s = st.session
            if action is not None:
                action = self.action_of(s, action)
            elif s.controller != "agent":
                raise refuse("no action given and the controller is human: pick an action or switch to agent")
            return self.view.show(st, s.step(action))

    def play_keys(self, st: TabState | None, batch: Any) -> dict[Any, Any]:
        """The page's queued moves (``"3,3,1"``), played in order; the last one is shown."""
        st = self.need_session(st)
        with st.lock:
            s = st.session
            moves = parse_keys(text(batch, "the moves"), len(s.action_names))
            if not moves:
                return self.view.values(state=st)
            for a in moves:
                info = s.step(a)
                note_error(st, info)
            return self.view.show(st, info)

    def play_sync(self, st: TabState | None) -> dict[Any, Any]:
        """Every widget of a step at the session's current step: after a held key's lane, which drew only the
        frames and the stats line."""
        st = self.need_session(st)
        with st.lock:
            return self.view.show(st, st.session.info)

    def act(self, i: int) -> Callable[[TabState | None], dict[Any, Any]]:
        """The handler of action button ``i`` (the page's script sends clicks through the move queue)."""
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

    def set_i_tokens(self, st: TabState | None, on: Any) -> dict[Any, Any]:
        from app.engine import VariantUnavailable

        st = self.need_session(st)
        with st.lock, shown_to_user(VariantUnavailable):
            info = st.session.set_i_tokens(on is not False)
            return {**self.view.show(st, info, ("state", "frame", "real", "stats")),
                    **self.view.values(itok=st.session.i_tokens)}

    def set_controller(self, st: TabState | None, ctrl: Any) -> dict[Any, Any]:
        from app.engine import VariantUnavailable

        st = self.need_session(st)
        ctrl = one_of(ctrl, "the controller", ["human", "agent"])
        with st.lock, shown_to_user(VariantUnavailable, ValueError):
            info = st.session.set_controller(ctrl)
            return self.view.values(state=st, stats=stats_text(info, st), controller=st.session.controller)

    def set_horizon(self, st: TabState | None, h: Any) -> TabState | None:
        if st is not None and st.session is not None:
            st.session.set_horizon(whole(h, "the memory horizon", 1, HORIZON_MAX))
        return st

    def set_temperature(self, st: TabState | None, t: Any) -> TabState | None:
        if st is not None and st.session is not None:
            st.session.set_temperature(number(t, "the temperature", *TEMPERATURE_RANGE))
        return st

    def start_clip(self, st: TabState | None) -> dict[Any, Any]:
        """Mark the current step as where the next GIF export starts."""
        st = self.need_session(st)
        with st.lock:
            st.session.start_recording()
            return self.view.values(state=st, stats=stats_text(st.session.info, st))

    def export_gif(self, st: TabState | None) -> str:
        """The clip (from Start clip) or the last steps of the episode, dream | real with named columns."""
        st = self.need_session(st)
        with self.settings.gate("export_gif")(), st.lock:
            if len(st.session.recorder) == 0:
                raise refuse("Nothing to export yet: press Reset, take a few steps, then export.")
            out = st.session.export_gif(gallery_path(self.settings, "play"), fps=10, scale=4, side_by_side=True)
            return str(out)

    def wire(self) -> None:
        """Connect the widgets' events to the handlers (the api names are the HTTP API)."""
        v = self.view
        step_out = v.step_outputs()
        for i, b in enumerate(v.buttons):
            b.click(self.act(i), [v.state], step_out, **PRIVATE, **QUIET, **PLAY)
        v.step_btn.click(self.step, [v.state, v.action_idx], step_out, api_name="step", **QUIET, **PLAY)
        moves = v.keys_btn.click(self.play_keys, [v.state, v.keys], step_out, js=TAKE_JS, api_name="play_keys",
                                 trigger_mode="always_last", **QUIET, **PLAY)
        moves.success(None, None, None, js=DONE_JS, **PRIVATE)
        moves.failure(None, None, None, js=FAILED_JS, **PRIVATE)
        synced = v.sync_btn.click(self.play_sync, [v.state], step_out, api_name="play_sync", **QUIET, **PLAY)
        synced.success(None, None, None, js=DONE_JS, **PRIVATE)
        synced.failure(None, None, None, js=FAILED_JS, **PRIVATE)
        v.reset_btn.click(self.reset, v.load_inputs(), v.load_outputs(), api_name="reset", **PLAY)
        v.load_btn.click(self.load, v.load_inputs(), v.load_outputs(), api_name="load_checkpoint", **PLAY)
        v.agent_step_btn.click(self.agent_step, [v.state], step_out, api_name="agent_step", **QUIET, **PLAY)
        self.wire_settings()
        v.clip_btn.click(self.start_clip, [v.state], [v.state, v.stats], api_name="start_clip", **QUIET)
        v.gif_btn.click(self.export_gif, [v.state], [v.gif_file], api_name="export_gif", concurrency_limit=None)
        FuturesPanel(self, v.futures, v.inspector).wire()

    def wire_settings(self) -> None:
        """The agent's run/pause timer and the settings boxes; a refused switch puts its box back."""
        v = self.view
        controller_outputs = v.parts("state", "stats", "controller")
        v.run_agent_btn.click(lambda: gr.Timer(active=True), None, v.agent_timer, **PRIVATE).then(
            lambda st: self.set_controller(st, "agent"), [v.state], controller_outputs, **PRIVATE)
        v.pause_agent_btn.click(lambda: gr.Timer(active=False), None, v.agent_timer, **PRIVATE)
        v.agent_timer.tick(self.timer_step, [v.state], v.step_outputs(), **PRIVATE, **PLAY)
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


def play_tab(settings: UISettings, state: gr.State, start_ckpt: str | None, env: str) -> PlayTab:
    """Lay out the Play tab with the action buttons and keys of ``env`` (the start checkpoint's) and
    wire its events."""
    from model.data.envs import action_names, keymap_for

    tab = PlayTab(settings, _layout(settings, state, start_ckpt, action_names(env), keymap_for(env)), start_ckpt)
    tab.wire()
    return tab
