"""The Play tab's view: its widgets by name, the options a (re)load reads, and the texts and plot a step
shows. Every handler of app/webui/play_tab.py returns its outputs by name through :class:`PlayView`;
the outputs of each event are listed once, as names, here.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from app.webui.common import TabState, View, big, key_labels, signed
from app.webui.futures_panel import LAST_ACTION, FuturesView, InspectorView, action_choices
from app.webui.guard import number, one_of, seed_of, whole
from app.webui.lane import LANES

HORIZON_MAX = 200  # the Memory horizon slider's range
PLOT_EVERY_S = 1.0  # the dream-vs-real plot is redrawn at most this often while playing
TEMPERATURE_RANGE = (0.1, 2.0)


@dataclass
class PlayOptions:
    """The settings a (re)load reads, in the order of :attr:`PlayView.OPTIONS`."""

    seed: Any
    i_tokens: Any
    shadow: Any
    horizon: Any
    temperature: Any
    controller: Any

    def checked(self) -> "PlayOptions":
        """The options with each one checked: the API may send anything."""
        return PlayOptions(seed=seed_of(self.seed), i_tokens=self.i_tokens is not False,
                           shadow=self.shadow is not False,
                           horizon=whole(self.horizon, "the memory horizon", 1, HORIZON_MAX),
                           temperature=number(self.temperature, "the temperature", *TEMPERATURE_RANGE),
                           controller=one_of(self.controller or "human", "the controller", ["human", "agent"]))


@dataclass
class PlayView(View):
    """The Play tab's widgets."""

    state: gr.State
    checkpoint: gr.Dropdown
    load_btn: gr.Button
    frame: gr.Image
    real: gr.Image
    stats: gr.Markdown
    pending: gr.HTML
    buttons: list[gr.Button]
    keys: gr.Textbox
    keys_btn: gr.Button
    lane: gr.Textbox
    claim: gr.Textbox
    sync_btn: gr.Button
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
    clip_btn: gr.Button
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
    OPTIONS = ("seed", "itok", "shadow", "horizon", "temperature", "controller")

    def step_outputs(self) -> list[Any]:
        """A step's widgets, and the futures it makes stale."""
        return [*self.parts(*self.STEP), *self.futures.parts(*FuturesView.STALE)]

    def option_inputs(self) -> list[Any]:
        return self.parts(*self.OPTIONS)

    def load_inputs(self) -> list[Any]:
        return [self.state, self.checkpoint, *self.option_inputs()]

    def load_outputs(self) -> list[Any]:
        return [*self.step_outputs(), *self.buttons, self.keymap, self.itok, self.lane, self.futures.action]

    def show(self, st: TabState, info: Any, names: tuple[str, ...] = STEP) -> dict[Any, Any]:
        """A step's outputs (``names`` of :attr:`STEP`; a whole step also clears the futures it made stale);
        records the step's error for the plot. Only what changed is sent: the plot at most once a second
        (redrawing it each step would slow play down), the futures only when some are on show."""
        env = st.session.env_name if st.session is not None else ""
        note_error(st, info)
        every = dict(state=st, frame=big(info.dream_frame if info else None),
                     real=big(info.real_frame if info else None), stats=stats_text(info, st),
                     achievements=achievements_text(info, env))
        now = time.monotonic()
        if "err_plot" in names and (info is None or info.step == 0 or now - st.plot_at >= PLOT_EVERY_S):
            every["err_plot"], st.plot_at = error_frame(st), now
        out = self.values(**{n: every[n] for n in names if n in every})
        if names == self.STEP and st.futures_shown:
            st.futures_shown = False
            out.update(self.futures.stale())
        return out

    def show_loaded(self, st: TabState, info: Any) -> dict[Any, Any]:
        """A (re)load's outputs: the step, and the buttons, keymap and I-token box of the session's env."""
        s = st.session
        labels = key_labels(s.keymap)
        buttons = {b: gr.update(value=button_label(i, s.action_names, labels), visible=True)
                   if i < len(s.action_names) else gr.update(visible=False) for i, b in enumerate(self.buttons)}
        actions = self.futures.values(action=gr.update(choices=action_choices(s.action_names), value=LAST_ACTION))
        return {**self.show(st, info), **buttons,
                **self.values(keymap=json.dumps(s.keymap), itok=s.i_tokens, lane=LANES.open(st)), **actions}


def note_error(st: TabState, info: Any) -> None:
    """One point of the dream-vs-real plot per step (a setting change re-shows the same step)."""
    if info is None or info.pixel_error is None:
        return
    if info.step == 0:
        st.errors = []
    if len(st.errors) <= info.step:
        st.errors.append(float(info.pixel_error))


def button_label(i: int, names: list[str], labels: dict[int, str]) -> str:
    """Action button ``i``: the action's name and its key."""
    if i >= len(names):
        return f"action {i}"
    return f"{names[i]} ({labels[i]})" if i in labels else names[i]


def stats_text(info: Any, st: TabState) -> str:
    if info is None:
        return "No dream yet: press **Reset**."
    parts = [f"**step** {info.step}", f"**action** {info.action_name or '-'}",
             f"**reward** {signed(info.reward)}", f"**return** {signed(info.return_)}",
             f"**end p** {info.end_prob:.2f}"]
    if info.pixel_error is not None:
        parts.append(f"**error vs real** {info.pixel_error:.1f}/255")
    if info.real_return is not None:
        parts.append(f"**real return** {signed(info.real_return)}")
    parts += [f"**{info.fps:.1f}** steps/s", f"I-tokens **{'on' if info.i_tokens else 'off'}**",
              f"**{info.controller}**", f"memory {info.steps_since_flush}/{info.horizon}"]
    if st.session is not None and st.session.recording:
        rec = st.session.recorder
        parts.append(f"● clip from step {rec.clip_from} ({len(rec)} frames)")
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
