"""The Play tab's look inside the Δ-tokens: branching futures and the token inspector.

A Δ-token state holds a distribution of next frames, not one: **Futures** samples N of them for one action
(the dream does not move) and lets the player continue from any; the **Token inspector** shows the current
frame's tokens with the world model's top alternatives, and swapping one shows what that token carries
(the new frame, and a heat map of the pixels it moved). The engine (:class:`app.engine.PlaySession`) does
the work; this module lays out the widgets and wires them to it, next to the Play tab's own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import gradio as gr
import numpy as np
import pandas as pd

from app.webui.common import PRIVATE, TabState, View, big, user_error
from app.webui.guard import whole

FUTURE_SCALE = 4  # 64x64 branches shown at 256x256 in the grid
HEAT_SCALE = 4
MAX_FUTURES = 16
LAST_ACTION = -1  # the Futures action box's "the action of the last step"
TOP_K = 5
FUTURES_HEADERS = ["branch", "Δ-tokens", "log p", "reward", "end p"]
INSPECT_HEADERS = ["pos", "token (p)", *[f"alt {i + 1}" for i in range(TOP_K)]]
NO_TOKENS = ("No Δ-tokens yet: the frame after a reset is the real one. Take a step, then the inspector "
             "shows the tokens the world model chose for it.")
NO_FUTURES = "No futures to pick from for this frame: press Futures first."
QUIET = dict(show_progress="hidden")


class PlayTabLike(Protocol):
    """What the panel needs of the Play tab (app.webui.play_tab.PlayTab), without importing it."""

    view: Any
    settings: Any

    def need_session(self, st: TabState | None) -> TabState: ...


# ------------------------------------------------------------------------------------ views

@dataclass
class FuturesView(View):
    """The Futures panel's widgets; ``sampled`` remembers (step, N) of the futures on show."""

    sampled: gr.State
    action: gr.Dropdown
    n: gr.Slider
    btn: gr.Button
    note: gr.Markdown
    grid: gr.Gallery
    table: gr.Dataframe
    index: gr.Number
    pick_btn: gr.Button

    STALE = ("grid", "table", "note")  # what a step, reset or token edit clears: those futures are gone

    def stale(self) -> dict[Any, Any]:
        return self.values(grid=None, table=None, note="")


@dataclass
class InspectorView(View):
    """The token inspector's widgets; ``shown`` is the :class:`Shown` the table and menus were built from."""

    is_open: gr.State
    shown: gr.State
    accordion: gr.Accordion
    refresh_btn: gr.Button
    note: gr.Markdown
    table: gr.Dataframe
    position: gr.Dropdown
    token: gr.Dropdown
    replace_btn: gr.Button
    resample_btn: gr.Button
    heat: gr.Image

    SHOWN = ("shown", "note", "table", "position", "token", "heat")  # what a refresh or an edit shows


@dataclass
class Shown:
    """The inspection on show: its dream step, and each position's (token, top alternatives)."""

    step: int
    slots: list[tuple[int, list[tuple[int, float]]]]
    heat_step: int | None = None  # the step the heat map belongs to (None: no edit shown)


def action_choices(names: list[str]) -> list[tuple[str, int]]:
    """The Futures action menu: the last step's action, then every action of the env."""
    return [("last action", LAST_ACTION)] + [(n, i) for i, n in enumerate(names)]


# ------------------------------------------------------------------------------------ layout

def futures_layout(names: list[str]) -> FuturesView:
    w: dict[str, Any] = {"sampled": gr.State(None)}
    with gr.Accordion("Futures: what could come next", open=False, elem_id="futures"):
        gr.Markdown("A dream state holds many possible next frames. **Futures** samples N of them for one "
                    "action without moving the dream; click one (or give its number) to continue from it.")
        with gr.Row(equal_height=True):
            w["action"] = gr.Dropdown(action_choices(names), value=LAST_ACTION, label="Action",
                                      elem_id="futures-action", allow_custom_value=True, scale=2)
            w["n"] = gr.Slider(1, MAX_FUTURES, value=8, step=1, label="Futures (N)", elem_id="futures-n", scale=2)
            w["btn"] = gr.Button("Futures", variant="primary", elem_id="futures-btn", scale=1)
        w["note"] = gr.Markdown("", elem_id="futures-note")
        w["grid"] = gr.Gallery(label="Sampled next frames", columns=4, elem_id="futures-grid",
                               format="png", allow_preview=False, object_fit="contain",
                               elem_classes=["pixelated", "fit-gallery"],
                               interactive=False, buttons=[])
        w["table"] = gr.Dataframe(headers=FUTURES_HEADERS, label="Branches", elem_id="futures-table",
                                  interactive=False)
        with gr.Row(equal_height=True):
            w["index"] = gr.Number(1, label="Branch", precision=0, elem_id="pick-index", scale=1)
            w["pick_btn"] = gr.Button("Continue from branch", elem_id="pick-branch", scale=1)
    return FuturesView(**w)


def inspector_layout() -> InspectorView:
    w: dict[str, Any] = {"is_open": gr.State(False), "shown": gr.State(None)}
    with gr.Accordion("Token inspector", open=False, elem_id="inspector") as w["accordion"]:
        w["note"] = gr.Markdown("", elem_id="inspector-note")
        w["table"] = gr.Dataframe(headers=INSPECT_HEADERS, label="The current frame's Δ-tokens, each with the world "
                                  "model's top alternatives: token (probability); click one to choose it",
                                  elem_id="inspector-table", interactive=False,
                                  column_widths=["8%", *[f"{92 / (TOP_K + 1):.1f}%"] * (TOP_K + 1)])
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Row(equal_height=True):
                    w["position"] = gr.Dropdown([], label="Position", elem_id="inspector-position",
                                                allow_custom_value=True)
                    w["token"] = gr.Dropdown([], label="Token (pick or type an id)", elem_id="inspector-token",
                                             allow_custom_value=True)
                with gr.Row():
                    w["replace_btn"] = gr.Button("Replace token", variant="primary", elem_id="replace-token")
                    w["resample_btn"] = gr.Button("Re-sample", elem_id="resample-token")
                    w["refresh_btn"] = gr.Button("Refresh", elem_id="inspect-btn")
            with gr.Column(scale=2):
                w["heat"] = gr.Image(label="Pixels the last edit changed", elem_id="heat-map", format="png",
                                     height=256, width=256, interactive=False, buttons=[],
                                     elem_classes=["pixelated"])
    return InspectorView(**w)


# ------------------------------------------------------------------------------------ content

def futures_gallery(found: list[Any]) -> list[tuple[np.ndarray, str]]:
    return [(big(b.frame, FUTURE_SCALE), f"{b.index + 1} · log p {b.logp:.1f}") for b in found]


def futures_frame(found: list[Any]) -> pd.DataFrame:
    rows = [[b.index + 1, " ".join(map(str, b.tokens)), round(b.logp, 2), round(b.reward, 3), round(b.end_prob, 3)]
            for b in found]
    return pd.DataFrame(rows, columns=FUTURES_HEADERS)


def inspect_frame(view: Any) -> pd.DataFrame:
    rows = [[s.position + 1, token_cell(s.token, s.prob), *[token_cell(t, p) for t, p in s.top],
             *[""] * (TOP_K - len(s.top))] for s in view.slots]
    return pd.DataFrame(rows, columns=INSPECT_HEADERS)


def token_cell(token: int, prob: float) -> str:
    return f"{token} ({prob:.0%})" if prob >= 0.01 else f"{token} (<1%)"


def token_menu(shown: Shown, position: int) -> Any:
    """The token menu of 1-based ``position``: its top alternatives, the likeliest other token chosen."""
    current, top = shown.slots[position - 1]
    choices = [(f"{token_cell(t, p)}{' now' if t == current else ''}", t) for t, p in top]
    other = next((t for t, _ in top if t != current), current)
    return gr.update(choices=choices, value=other)


# ------------------------------------------------------------------------------------ handlers

class FuturesPanel:
    """The handlers of the Futures panel and the token inspector of one Play tab."""

    def __init__(self, tab: PlayTabLike, futures: FuturesView, inspector: InspectorView):
        self.tab = tab
        self.fv = futures
        self.iv = inspector

    def sample(self, st: TabState | None, action: Any, n: Any) -> dict[Any, Any]:
        """N next steps of the current dream state for ``action`` (LAST_ACTION: the last step's)."""
        st = self.tab.need_session(st)
        n = whole(n, "the number of futures", 1, MAX_FUTURES)
        with self.tab.settings.gate("futures")(), st.lock:
            s = st.session
            a = self.action_of(s, action)
            try:
                found = s.branches(a, n)
            except (ValueError, RuntimeError) as e:
                raise user_error(e) from None
            step = s.info.step
            st.futures_shown = True
        note = (f"{n} futures of step {step} for **{s.action_names[a]}** (temperature {s.temperature:g}): "
                "click one to continue the dream from it.")
        return self.fv.values(sampled=(step, n), grid=futures_gallery(found), table=futures_frame(found), note=note)

    @staticmethod
    def action_of(s: Any, action: Any) -> int:
        """The Futures action box's value as an action index (the last action: noop right after a reset)."""
        names = s.action_names
        a = LAST_ACTION if action in (None, "") else action
        try:
            a = whole(a, "the action", LAST_ACTION, len(names) - 1)
        except gr.Error:
            raise gr.Error(f"action {action!r} out of range: {s.env_name} has actions 0..{len(names) - 1} "
                           f"({', '.join(names)}), or {LAST_ACTION} for the last action",
                           print_exception=False) from None
        return s.last_action if a == LAST_ACTION else a

    def pick(self, st: TabState | None, sampled: Any, index: Any) -> dict[Any, Any]:
        """Continue the dream from branch ``index`` (1-based) of the futures on show: its exact frame."""
        st = self.tab.need_session(st)
        with st.lock:
            s = st.session
            if sampled is None or s.info is None or sampled[0] != s.info.step:
                raise gr.Error(NO_FUTURES, print_exception=False)
            k = whole(index, "the branch", 1, sampled[1])
            try:
                info = s.pick_branch(k - 1)
            except ValueError:  # a token edit or reset since the futures were sampled discarded them
                raise gr.Error(NO_FUTURES, print_exception=False) from None
            return {**self.tab.view.show(st, info), **self.fv.values(sampled=None, index=k)}

    def select(self, st: TabState | None, sampled: Any, evt: gr.SelectData) -> dict[Any, Any]:
        return self.pick(st, sampled, int(evt.index) + 1)

    def refresh(self, st: TabState | None, shown: Shown | None, force: bool = True) -> dict[Any, Any]:
        """The current frame's tokens and their alternatives; the heat map goes once the dream moved on.
        Unless ``force``, a table that already shows these tokens is left alone (a token edit's own note stays)."""
        if st is None or st.session is None:
            return self.iv.values(note="No dream loaded: press **Reset** first.")
        with st.lock:
            s = st.session
            try:
                view = s.inspect(TOP_K)
            except RuntimeError:
                empty = gr.update(choices=[], value=None)
                return self.iv.values(shown=None, note=NO_TOKENS, table=None, heat=None, position=empty, token=empty)
            step = s.info.step
        if not force and shown is not None and shown.step == step and [t for t, _ in shown.slots] == view.tokens:
            return self.iv.values(shown=gr.skip())
        keep = shown is not None and shown.heat_step == step
        out = self.show_inspection(view, step, heat_step=step if keep else None)
        if not keep:
            out.update(self.iv.values(heat=None))
        return out

    def show_inspection(self, view: Any, step: int, heat_step: int | None = None,
                        position: int = 1, note: str = "") -> dict[Any, Any]:
        shown = Shown(step, [(s.token, s.top) for s in view.slots], heat_step)
        k = len(view.slots)
        note = note or (f"Step {step}: {k} Δ-tokens. Choose a position and a token (or click an alternative "
                        "in the table), then **Replace token**; the dream frame and the heat map show what it moved.")
        return self.iv.values(shown=shown, note=note, table=inspect_frame(view),
                              position=gr.update(choices=[(str(i + 1), i + 1) for i in range(k)], value=position),
                              token=token_menu(shown, position))

    def open(self, st: TabState | None, shown: Shown | None) -> dict[Any, Any]:
        return {**self.refresh(st, shown), **self.iv.values(is_open=True)}

    def refresh_if_open(self, st: TabState | None, is_open: bool, shown: Shown | None) -> dict[Any, Any]:
        """After the dream frame changed: refresh the table only while the inspector is open."""
        if not is_open:
            return self.iv.values(shown=gr.skip())  # (an empty dict is refused)
        return self.refresh(st, shown, force=False)

    def choose_position(self, shown: Shown | None, position: Any) -> Any:
        if shown is None or position in (None, ""):
            return gr.skip()
        try:
            return token_menu(shown, whole(position, "the position", 1, len(shown.slots)))
        except gr.Error:
            return gr.skip()

    def choose_cell(self, shown: Shown | None, evt: gr.SelectData) -> dict[Any, Any]:
        """A click on the table: its row's position and, on an alternative, that token."""
        if shown is None or not isinstance(evt.index, (list, tuple)) or not 0 <= int(evt.index[0]) < len(shown.slots):
            return self.iv.values(position=gr.skip())
        row, col = int(evt.index[0]), int(evt.index[1])
        _, top = shown.slots[row]
        out = {self.iv.position: row + 1, self.iv.token: token_menu(shown, row + 1)}
        alt = col - (len(INSPECT_HEADERS) - TOP_K)
        if 0 <= alt < len(top):
            out[self.iv.token] = gr.update(value=top[alt][0])
        return out

    def edit(self, st: TabState | None, position: Any, token: Any, resample: bool) -> dict[Any, Any]:
        """Swap (or re-sample) the token at 1-based ``position`` of the current frame and decode it again."""
        st = self.tab.need_session(st)
        with st.lock:
            s = st.session
            k = s.bundle.tokenizer.tokens_per_frame
            pos = whole(position, "the token position", 1, k)
            vocab = s.bundle.tokenizer.vocab_size
            tok = None if resample else whole(token, "the token", 0, vocab - 1)
            try:
                before = s.inspect(TOP_K).slots[pos - 1].token
                view = s.set_token(pos - 1, tok)
            except RuntimeError:
                raise gr.Error(NO_TOKENS, print_exception=False) from None
            except ValueError as e:
                raise user_error(e) from None
            info = s.info
            after = view.tokens[pos - 1]
            note = (f"Step {info.step}: token {pos} {before} → {after}; the frame changed by "
                    f"{view.changed:.1f}/255 on average (the heat map shows where).")
            if resample and after == before:
                note = f"Step {info.step}: the world model drew token {after} again at position {pos}; nothing changed."
            out = self.show_inspection(view, info.step, heat_step=info.step, position=pos, note=note)
            st.futures_shown = False
            return {**out, **self.iv.values(heat=big(view.heat, HEAT_SCALE)),
                    **self.tab.view.show(st, info, ("state", "frame", "real", "stats")),
                    **self.fv.stale(), **self.fv.values(sampled=None)}

    def replace(self, st: TabState | None, position: Any, token: Any) -> dict[Any, Any]:
        return self.edit(st, position, token, resample=False)

    def resample(self, st: TabState | None, position: Any) -> dict[Any, Any]:
        return self.edit(st, position, None, resample=True)

    def wire(self) -> None:
        """Connect the panel's events (api names: futures, pick_branch, inspect, set_token, resample_token)."""
        fv, iv, pv = self.fv, self.iv, self.tab.view
        step_out = pv.step_outputs()
        fv.btn.click(self.sample, [pv.state, fv.action, fv.n], fv.parts("sampled", "grid", "table", "note"),
                     api_name="futures", concurrency_limit=None)
        picked = [*step_out, fv.sampled, fv.index]
        fv.pick_btn.click(self.pick, [pv.state, fv.sampled, fv.index], picked, api_name="pick_branch", **QUIET)
        fv.grid.select(self.select, [pv.state, fv.sampled], picked, **PRIVATE, **QUIET)
        shown_out = iv.parts(*iv.SHOWN)
        iv.accordion.expand(self.open, [pv.state, iv.shown], [*shown_out, iv.is_open], **PRIVATE)
        iv.accordion.collapse(lambda: False, None, iv.is_open, **PRIVATE)
        iv.refresh_btn.click(self.refresh, [pv.state, iv.shown], shown_out, api_name="inspect")
        pv.frame.change(self.refresh_if_open, [pv.state, iv.is_open, iv.shown], shown_out, **PRIVATE, **QUIET)
        iv.position.input(self.choose_position, [iv.shown, iv.position], iv.token, **PRIVATE, **QUIET)
        iv.table.select(self.choose_cell, [iv.shown], iv.parts("position", "token"), **PRIVATE, **QUIET)
        edit_out = [*shown_out, *pv.parts("state", "frame", "real", "stats"),
                    *fv.parts(*fv.STALE), fv.sampled]
        iv.replace_btn.click(self.replace, [pv.state, iv.position, iv.token], edit_out, api_name="set_token")
        iv.resample_btn.click(self.resample, [pv.state, iv.position], edit_out, api_name="resample_token")

