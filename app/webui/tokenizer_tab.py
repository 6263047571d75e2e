"""The Tokenizers tab: one transition (or a batch) through the IRIS-style tokenizer and the Δ-tokenizer."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from app.webui import compare
from app.webui.common import PRIVATE, TabState, UISettings, View, big, bundle_of, shown_to_user
from app.webui.guard import SEED_MAX, one_of, refuse, seed_of, whole
from model.config import IMAGE_SIZE

TOK_SCALE = 4
MAP_SCALE = 3  # token maps: 64x64 at 192x192, many to a row
MAPS_HELP = ("**Token maps**: for each token position, how much the decoded frame x<sub>t</sub> changes when "
             "that one token is swapped for random codes (bright = moved; each row scaled by its own maximum, "
             "square-root brightness). Each IRIS token paints a fixed patch of the frame; a Δ-token moves what "
             "changed since x<sub>t-1</sub>.")
SOURCES = ["fresh rollout", "stored episode", "upload"]
MAX_INDEX = 255  # the Transition index slider's range
MAX_EPISODES = 1_000_000
BATCH_RANGE = (16, 1024)  # the batch slider's range


@dataclass
class TokenizersView(View):
    """The Tokenizers tab's widgets."""

    state: gr.State
    picked: gr.State
    source: gr.Radio
    seed: gr.Number
    index: gr.Slider
    episode: gr.Number
    upload_row: gr.Row
    up_prev: gr.File
    up_next: gr.File
    up_action: gr.Number
    run_btn: gr.Button
    notice: gr.Markdown
    original: gr.Image
    iris: gr.Image
    delta: gr.Image
    prev: gr.Image
    iris_err: gr.Image
    delta_err: gr.Image
    metrics: gr.Dataframe
    tokens: gr.Markdown
    batch_n: gr.Slider
    batch_btn: gr.Button
    batch_table: gr.Dataframe
    worst: gr.Gallery
    maps_note: gr.Markdown
    maps_delta: gr.Gallery
    maps_iris: gr.Gallery

    COMPARE_INPUTS = ("state", "picked", "source", "seed", "index", "episode", "up_prev", "up_next", "up_action")
    COMPARE_OUTPUTS = ("picked", "notice", "original", "iris", "delta", "prev", "iris_err", "delta_err", "metrics",
                       "tokens")
    MAPS_OUTPUTS = ("maps_note", "maps_delta", "maps_iris")

    def show(self, cmp_: compare.PairComparison) -> dict[Any, Any]:
        """One transition's images, table and token grids, with its notices above them."""
        by_kind = {("iris" if v.label.startswith("IRIS") else "delta"): v for v in cmp_.views}
        notices = list(cmp_.notices)
        if "iris" not in by_kind:
            notices.append("this checkpoint has no IRIS-style tokenizer (train with --baselines to compare)")
        iv, dv = by_kind.get("iris"), by_kind.get("delta")
        return self.values(
            notice="\n".join(f"ⓘ {n}" for n in notices),
            original=big(cmp_.original, TOK_SCALE), prev=big(cmp_.prev, TOK_SCALE),
            iris=big(iv.recon, TOK_SCALE) if iv else None, delta=big(dv.recon, TOK_SCALE) if dv else None,
            iris_err=big(iv.error, TOK_SCALE) if iv else None, delta_err=big(dv.error, TOK_SCALE) if dv else None,
            metrics=pd.DataFrame(cmp_.table(), columns=compare.TABLE_HEADERS),
            tokens="\n\n".join(token_text(v) for v in cmp_.views))


    def show_maps(self, maps: dict[str, np.ndarray]) -> dict[Any, Any]:
        """Each tokenizer's token maps, one image per position, under a label that counts them."""
        out = {}
        for kind, name in (("delta", "Δ-tokenizer"), ("iris", "IRIS tokenizer")):
            m = maps.get(kind)
            if m is None:
                out[kind] = gr.update(value=None, label=f"{name}: not in this checkpoint")
            else:
                out[kind] = gr.update(value=map_gallery(m), label=f"{name}: {len(m)} maps")
        note = MAPS_HELP
        if "iris" not in maps:
            note += "\n\nⓘ this checkpoint has no IRIS-style tokenizer (train with --baselines to compare)"
        return self.values(maps_note=note, maps_delta=out["delta"], maps_iris=out["iris"])


def token_maps_of(bundle: Any, tr: compare.Transition) -> dict[str, np.ndarray]:
    """{"delta" | "iris": float (K, H, W)}: what each token position of each tokenizer moves in ``tr``."""
    from app.branching import token_maps

    out = {}
    for _, tok in compare.tokenizers_of(bundle):
        kind = "iris" if getattr(tok, "kind", "delta") == "iris" else "delta"
        out.setdefault(kind, token_maps(tok, tr.prev, tr.action, tr.frame))
    return out


def map_gallery(maps: np.ndarray) -> list[tuple[np.ndarray, str]]:
    """Token maps coloured along the heat ramp, scaled by the tokenizer's largest change; the square root
    lets a token's faint patch show next to another token's bright one."""
    from app.branching import colorize

    top = max(float(maps.max()), 1e-6)
    return [(big(colorize(np.sqrt(m / top)), MAP_SCALE), f"token {k + 1}") for k, m in enumerate(maps)]


def token_text(v: compare.TokenizerView) -> str:
    """A tokenizer's token ids as their grid, with the bits per frame."""
    body = "\n".join(" ".join(f"{t:>5}" for t in r) for r in compare.token_grid(v.tokens))
    return (f"**{v.label}** token ids ({v.tokens_per_frame} x log2({v.vocab_size}) = {v.bits:.0f} "
            f"bits):\n```\n{body}\n```")


@dataclass
class TokForm:
    """The form's frame source, each field checked (the API may send anything)."""

    source: str
    seed: int | None  # None: a random seed, drawn when the frames are made
    index: int
    episode: int
    prev: Any
    next: Any
    action: int

    @classmethod
    def checked(cls, src: Any, seed_v: Any, index_v: Any, episode_v: Any, prev_file: Any = None,
                next_file: Any = None, action_v: Any = 0) -> "TokForm":
        return cls(one_of(src, "the frame source", SOURCES), seed_of(seed_v),
                   whole(index_v, "the transition index", 0, MAX_INDEX),
                   whole(-1 if episode_v is None else episode_v, "the stored episode", -MAX_EPISODES, MAX_EPISODES),
                   prev_file, next_file, whole(action_v or 0, "the action index", 0, 1023))

    def key(self) -> tuple:
        return (self.source, self.seed, self.index, self.episode, str(self.prev), str(self.next), self.action)


@dataclass
class Picked:
    """The transition Compare showed, so that the token maps after it (a random seed too) show the same one."""

    key: tuple
    transition: compare.Transition


def transitions(bundle: Any, form: TokForm, count: int) -> tuple[list[compare.Transition], list[str]]:
    """``count`` transitions ending at the form's index, from a fresh real rollout or a stored episode,
    and a notice naming a random seed (so it can be typed in to see the same frames again)."""
    if form.source == "fresh rollout":
        seed = form.seed if form.seed is not None else random.randrange(SEED_MAX)
        notice = [] if form.seed is not None else [f"random seed {seed}"]
        return compare.rollout_transitions(bundle.env_name, max(form.index + 1, count), seed=seed), notice
    if form.source == "stored episode":
        if bundle.store_dir is None:
            raise ValueError("this checkpoint is not inside a run folder with a store/; "
                             "use a fresh rollout or upload two frames")
        return compare.stored_transitions(bundle.store_dir, form.episode, limit=100_000), []
    raise ValueError(f"unknown frame source {form.source!r}")


def pick_transition(bundle: Any, form: TokForm) -> tuple[compare.Transition, list[str]]:
    """The transition the form asks for, and notices for the user (a resized upload, a short episode)."""
    if form.source == "upload":
        tr, notices = compare.uploaded_transition(form.prev, form.next, IMAGE_SIZE, form.action)
        if not 0 <= tr.action < bundle.cfg.env.num_actions:
            raise ValueError(f"action index {tr.action} out of range 0..{bundle.cfg.env.num_actions - 1}")
        return tr, notices
    trs, notices = transitions(bundle, form, 1)
    if form.index >= len(trs):
        return trs[-1], notices + [f"the episode has {len(trs)} transitions; showing the last"]
    return trs[form.index], notices


def _layout(state: gr.State) -> TokenizersView:
    w: dict[str, Any] = {}
    with gr.Tab("Tokenizers", id="tokenizers", elem_id="tab-tokenizers"):
        w["picked"] = gr.State(None)  # inside the tab: a bare child of gr.Tabs would shift the tab labels
        gr.Markdown("One transition x<sub>t-1</sub> → x<sub>t</sub> through the IRIS-style tokenizer "
                    "(frame alone) and the Δ-tokenizer (the change, given x<sub>t-1</sub> and the action). "
                    "Bits per frame = tokens × log2(vocabulary).")
        with gr.Row():
            w["source"] = gr.Radio(SOURCES, value="fresh rollout", label="Frames from", elem_id="tok-source")
            w["seed"] = gr.Number(0, label="Seed (-1 = random)", precision=0, elem_id="tok-seed")
            w["index"] = gr.Slider(0, MAX_INDEX, value=10, step=1, label="Transition index", elem_id="tok-index")
            w["episode"] = gr.Number(-1, label="Stored episode (-1 = newest)", precision=0, elem_id="tok-episode")
        with gr.Row(visible=False) as w["upload_row"]:
            w["up_prev"] = gr.File(label="Upload: frame t-1", file_types=["image"], elem_id="tok-up-prev")
            w["up_next"] = gr.File(label="Upload: frame t", file_types=["image"], elem_id="tok-up-next")
            w["up_action"] = gr.Number(0, label="Upload: action index between them", precision=0,
                                       elem_id="tok-up-action")
        w["run_btn"] = gr.Button("Compare", variant="primary", elem_id="btn-compare")
        w["notice"] = gr.Markdown("", elem_id="tok-notice")
        im_kw = dict(format="png", interactive=False, height=280, elem_classes=["pixelated"], buttons=[])
        with gr.Row():
            w["original"] = gr.Image(label="Original x_t", elem_id="tok-original", **im_kw)
            w["iris"] = gr.Image(label="IRIS-style reconstruction", elem_id="tok-iris", **im_kw)
            w["delta"] = gr.Image(label="Δ reconstruction", elem_id="tok-delta", **im_kw)
        with gr.Row():
            w["prev"] = gr.Image(label="Previous frame x_t-1", elem_id="tok-prev", **im_kw)
            w["iris_err"] = gr.Image(label="IRIS-style error (x4)", elem_id="tok-iris-err", **im_kw)
            w["delta_err"] = gr.Image(label="Δ error (x4)", elem_id="tok-delta-err", **im_kw)
        w["metrics"] = gr.Dataframe(headers=compare.TABLE_HEADERS, label="This transition", elem_id="tok-metrics",
                                    interactive=False)
        w["tokens"] = gr.Markdown("", elem_id="tok-tokens")
        w["maps_note"] = gr.Markdown(MAPS_HELP, elem_id="tok-maps-note")
        map_kw = dict(height="auto", format="png", allow_preview=False, object_fit="contain", interactive=False,
                  fit_columns=False,
                      elem_classes=["pixelated", "fit-gallery"], buttons=[])
        w["maps_delta"] = gr.Gallery(label="Δ-tokenizer: token maps", columns=8, elem_id="tok-maps-delta", **map_kw)
        w["maps_iris"] = gr.Gallery(label="IRIS tokenizer: token maps", columns=8, elem_id="tok-maps-iris", **map_kw)
        with gr.Accordion("Batch: average and worst 1%", open=False):
            with gr.Row():
                w["batch_n"] = gr.Slider(*BATCH_RANGE, value=128, step=16, label="Transitions", elem_id="tok-batch-n")
                w["batch_btn"] = gr.Button("Evaluate batch", elem_id="btn-tok-batch")
            w["batch_table"] = gr.Dataframe(headers=compare.BATCH_HEADERS, label="Batch", interactive=False,
                                            elem_id="tok-batch-table")
            w["worst"] = gr.Gallery(label="Worst 1%: original | reconstruction | error", columns=2, height="auto",
                                    elem_id="tok-worst", format="png", preview=False, object_fit="contain",
                                    elem_classes=["pixelated"])
    return TokenizersView(state=state, **w)


def tokenizer_tab(settings: UISettings, state: gr.State) -> TokenizersView:
    """Lay out the Tokenizers tab and wire its events."""
    v = _layout(state)

    def run(st: TabState | None, picked: Picked | None, *form_values: Any) -> dict[Any, Any]:
        form = TokForm.checked(*form_values)
        bundle = bundle_of(st, settings)
        with settings.gate("compare")(), shown_to_user(ValueError):
            tr, notices = pick_transition(bundle, form)
            cmp_ = compare.compare_transition(compare.tokenizers_of(bundle), tr, notices)
        return {**v.show(cmp_), **v.values(picked=Picked(form.key(), tr))}

    def run_batch(st: TabState | None, src: Any, seed_v: Any, episode_v: Any, n_v: Any) -> dict[Any, Any]:
        n = whole(n_v, "the number of transitions", *BATCH_RANGE)
        form = TokForm.checked(src, seed_v, 0, episode_v)
        if form.source == "upload":
            raise refuse("a batch needs many transitions: choose a fresh rollout or a stored episode")
        bundle = bundle_of(st, settings)
        with settings.gate("tokenizer_batch")(), shown_to_user(ValueError):
            trs = transitions(bundle, form, n)[0][:n]
            stats = [compare.batch_stats(tok, label, trs) for label, tok in compare.tokenizers_of(bundle)]
            gallery = [g for s in stats for g in compare.worst_gallery(s, trs)]
        return v.values(batch_table=pd.DataFrame(compare.batch_table(stats, trs), columns=compare.BATCH_HEADERS),
                        worst=gallery)

    def maps(st: TabState | None, picked: Picked | None, *form_values: Any) -> dict[Any, Any]:
        form = TokForm.checked(*form_values)
        bundle = bundle_of(st, settings)
        with settings.gate("token_maps")(), shown_to_user(ValueError):
            if picked is not None and picked.key == form.key():
                tr = picked.transition
            else:
                tr = pick_transition(bundle, form)[0]
            return v.show_maps(token_maps_of(bundle, tr))

    v.source.change(lambda src: gr.update(visible=src == "upload"), [v.source], [v.upload_row], **PRIVATE)
    heavy = dict(concurrency_limit=None)  # the busy gates (app/webui/guard.py) bound these, and say "busy"
    v.run_btn.click(run, v.parts(*v.COMPARE_INPUTS), v.parts(*v.COMPARE_OUTPUTS), api_name="compare_tokenizers",
                    **heavy).success(maps, v.parts(*v.COMPARE_INPUTS), v.parts(*v.MAPS_OUTPUTS),
                                     api_name="token_maps", **heavy)
    v.batch_btn.click(run_batch, v.parts("state", "source", "seed", "episode", "batch_n"),
                      v.parts("batch_table", "worst"), api_name="tokenizer_batch", **heavy)
    return v
