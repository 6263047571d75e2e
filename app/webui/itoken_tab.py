"""The I-tokens tab: the same actions in the real env and in the world models with and without I-tokens."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import random

import gradio as gr
import numpy as np
import pandas as pd

from app.webui import compare
from app.webui.common import (PRIVATE, TabState, UISettings, View, big, bundle_of, default_checkpoint,
                              gallery_path, shown_to_user)
from app.webui.guard import SEED_MAX, number, one_of, refuse, seed_of, whole

ITOKEN_SCALE = 5
MAX_STEPS = 200  # the Steps slider's range
POLICIES = ["random", "agent"]


@dataclass
class ITokensView(View):
    """The I-tokens tab's widgets."""

    state: gr.State
    steps: gr.Slider
    seed: gr.Number
    temperature: gr.Slider
    policy: gr.Radio
    run_btn: gr.Button
    summary: gr.Markdown
    scrub: gr.Slider
    real: gr.Image
    with_i: gr.Image
    without_i: gr.Image
    plot: gr.LinePlot
    gif_btn: gr.Button
    gif_file: gr.File

    def show_step(self, st: TabState | None, t: float) -> dict[Any, Any]:
        """The real frame and both dreams at step ``t`` of the tab's last rollout."""
        r = st.rollout if st is not None else None
        if r is None:
            return self.values(real=None, with_i=None, without_i=None)
        t = int(np.clip(int(t), 0, len(r.real) - 1))
        return self.values(real=big(r.real[t], ITOKEN_SCALE), with_i=big(r.with_i[t], ITOKEN_SCALE),
                           without_i=big(r.without_i[t], ITOKEN_SCALE))

    def show(self, st: TabState, seed: int) -> dict[Any, Any]:
        """A new rollout: its summary, the scrubber and images at its last step, the error plot."""
        r = st.rollout
        mw, mo = float(np.mean(r.err_with[1:] or r.err_with)), float(np.mean(r.err_without[1:] or r.err_without))
        text = (f"{len(r.actions)} steps · seed {seed} · mean error with I-tokens **{mw:.1f}** · without "
                f"**{mo:.1f}** (0-255 scale) · actions: {', '.join(r.actions[:12])}"
                f"{' …' if len(r.actions) > 12 else ''}")
        last = len(r.real) - 1
        return {**self.values(state=st, summary=text, scrub=gr.update(maximum=max(1, last), value=last),
                              plot=pd.DataFrame(r.rows())), **self.show_step(st, last)}


def _layout(state: gr.State) -> ITokensView:
    w: dict[str, Any] = {}
    with gr.Tab("I-tokens", id="itokens", elem_id="tab-itokens"):
        gr.Markdown("The same actions played in the real env and in the world models **with** and **without** "
                    "I-tokens (the paper's ablation). Lower error vs the real frames is better.")
        with gr.Row():
            w["steps"] = gr.Slider(1, MAX_STEPS, value=30, step=1, label="Steps", elem_id="it-steps")
            w["seed"] = gr.Number(0, label="Seed (-1 = random)", precision=0, elem_id="it-seed")
            w["temperature"] = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature", elem_id="it-temp")
            w["policy"] = gr.Radio(POLICIES, value="random", label="Actions from", elem_id="it-policy")
        w["run_btn"] = gr.Button("Roll out", variant="primary", elem_id="btn-itok-run")
        w["summary"] = gr.Markdown("", elem_id="it-summary")
        w["scrub"] = gr.Slider(0, 30, value=0, step=1, label="Show step", elem_id="it-scrub")
        with gr.Row():
            im_kw = dict(format="png", interactive=False, height=300, elem_classes=["pixelated"], buttons=[])
            w["real"] = gr.Image(label="Real env", elem_id="it-real", **im_kw)
            w["with_i"] = gr.Image(label="With I-tokens", elem_id="it-with", **im_kw)
            w["without_i"] = gr.Image(label="Without I-tokens", elem_id="it-without", **im_kw)
        w["plot"] = gr.LinePlot(None, x="step", y="error", color="variant",
                                title="Mean pixel error vs the real env, per step", height=260,
                                elem_id="it-plot", y_title="|dream - real| (0-255)")
        with gr.Row():
            w["gif_btn"] = gr.Button("Export GIF (real | with | without)", elem_id="btn-itok-gif")
            w["gif_file"] = gr.File(label="GIF", interactive=False, elem_id="it-gif-file")
    return ITokensView(state=state, **w)


def itoken_tab(settings: UISettings, state: gr.State) -> ITokensView:
    """Lay out the I-tokens tab and wire its events."""
    v = _layout(state)

    def run(st: TabState | None, n: Any, seed_v: Any, temp: Any, pol: Any) -> dict[Any, Any]:
        from app.engine import VariantUnavailable

        steps = whole(n, "the number of steps", 1, MAX_STEPS)
        seed = seed_of(seed_v)
        seed = random.randrange(SEED_MAX) if seed is None else seed
        temperature = number(temp, "the temperature", 0.1, 2.0)
        policy = one_of(pol, "the action source", POLICIES)
        bundle = bundle_of(st, settings)
        st = st if st is not None else TabState(default_checkpoint(settings))
        with settings.gate("itoken_rollout")(), shown_to_user(VariantUnavailable, ValueError):
            st.rollout = compare.itoken_rollout(bundle, steps=steps, seed=seed, temperature=temperature,
                                                policy=policy)
        return v.show(st, seed)

    def gif(st: TabState | None) -> str:
        if st is None or st.rollout is None:
            raise refuse("Roll out first, then export.")
        with settings.gate("export_gif")():
            return str(compare.itoken_gif(st.rollout, gallery_path(settings, "itokens")))

    v.run_btn.click(run, v.parts("state", "steps", "seed", "temperature", "policy"),
                    v.parts("state", "summary", "scrub", "real", "with_i", "without_i", "plot"),
                    api_name="itoken_rollout", concurrency_limit=None)
    v.scrub.change(v.show_step, v.parts("state", "scrub"), v.parts("real", "with_i", "without_i"), **PRIVATE)
    v.gif_btn.click(gif, [v.state], [v.gif_file], api_name="itoken_gif", concurrency_limit=None)
    return v
