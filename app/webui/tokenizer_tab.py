"""The Tokenizers tab: one transition (or a batch) through the IRIS-style tokenizer and the Δ-tokenizer."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from app.webui import compare
from app.webui.common import PRIVATE, TabState, UISettings, View, big, bundle_of, shown_to_user
from model.config import IMAGE_SIZE

TOK_SCALE = 4
MAP_SCALE = 3  # token maps: 64x64 at 192x192, many to a row
MAPS_HELP = ("**Token maps**: for each token position, how much the decoded frame x<sub>t</sub> changes when "
             "that one token is swapped for random codes (bright = moved; each row scaled by its own maximum, "
             "square-root brightness). Each IRIS token paints a fixed patch of the frame; a Δ-token moves what "
             "changed since x<sub>t-1</sub>.")
SOURCES = ["fresh rollout", "stored episode", "upload"]


@dataclass
class TokenizersView(View):
    """The Tokenizers tab's widgets."""

    state: gr.State
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

    COMPARE_INPUTS = ("state", "source", "seed", "index", "episode", "up_prev", "up_next", "up_action")
    COMPARE_OUTPUTS = ("notice", "original", "iris", "delta", "prev", "iris_err", "delta_err", "metrics", "tokens")
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


def transitions(bundle: Any, source: str, seed: float | None, index: float, episode: float,
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


def pick_transition(bundle: Any, src: str, seed_v: float | None, index_v: float, episode_v: float,
                    prev_file: Any, next_file: Any, action_v: float | None) -> tuple[compare.Transition, list[str]]:
    """The transition the form asks for, and notices for the user (a resized upload, a short episode)."""
    if src == "upload":
        tr, notices = compare.uploaded_transition(prev_file, next_file, IMAGE_SIZE,
                                                  int(action_v or 0))
        if not 0 <= tr.action < bundle.cfg.env.num_actions:
            raise ValueError(f"action index {tr.action} out of range 0..{bundle.cfg.env.num_actions - 1}")
        return tr, notices
    trs = transitions(bundle, src, seed_v, index_v, episode_v, 1)
    i = int(index_v)
    if i >= len(trs):
        return trs[-1], [f"the episode has {len(trs)} transitions; showing the last"]
    return trs[i], []


def _layout(state: gr.State) -> TokenizersView:
    w: dict[str, Any] = {}
    with gr.Tab("Tokenizers", id="tokenizers", elem_id="tab-tokenizers"):
        gr.Markdown("One transition x<sub>t-1</sub> → x<sub>t</sub> through the IRIS-style tokenizer "
                    "(frame alone) and the Δ-tokenizer (the change, given x<sub>t-1</sub> and the action). "
                    "Bits per frame = tokens × log2(vocabulary).")
        with gr.Row():
            w["source"] = gr.Radio(SOURCES, value="fresh rollout", label="Frames from", elem_id="tok-source")
            w["seed"] = gr.Number(0, label="Seed", precision=0, elem_id="tok-seed")
            w["index"] = gr.Slider(0, 255, value=10, step=1, label="Transition index", elem_id="tok-index")
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
                w["batch_n"] = gr.Slider(16, 1024, value=128, step=16, label="Transitions", elem_id="tok-batch-n")
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

    def run(st: TabState | None, src, seed_v, index_v, episode_v, prev_file, next_file, action_v):
        bundle = bundle_of(st, settings)
        with shown_to_user(ValueError):
            tr, notices = pick_transition(bundle, src, seed_v, index_v, episode_v, prev_file, next_file, action_v)
            cmp_ = compare.compare_transition(compare.tokenizers_of(bundle), tr, notices)
        return v.show(cmp_)

    def run_batch(st: TabState | None, src, seed_v, episode_v, n):
        bundle = bundle_of(st, settings)
        if src == "upload":
            raise gr.Error("a batch needs many transitions: choose a fresh rollout or a stored episode",
                           print_exception=False)
        with shown_to_user(ValueError):
            trs = transitions(bundle, src, seed_v, int(n) - 1, episode_v, int(n))[: int(n)]
        stats = [compare.batch_stats(tok, label, trs) for label, tok in compare.tokenizers_of(bundle)]
        gallery = [g for s in stats for g in compare.worst_gallery(s, trs)]
        return v.values(batch_table=pd.DataFrame(compare.batch_table(stats, trs), columns=compare.BATCH_HEADERS),
                        worst=gallery)

    def maps(st: TabState | None, src, seed_v, index_v, episode_v, prev_file, next_file, action_v):
        bundle = bundle_of(st, settings)
        with shown_to_user(ValueError):
            tr, _ = pick_transition(bundle, src, seed_v, index_v, episode_v, prev_file, next_file, action_v)
            return v.show_maps(token_maps_of(bundle, tr))

    v.source.change(lambda src: gr.update(visible=src == "upload"), [v.source], [v.upload_row], **PRIVATE)
    v.run_btn.click(run, v.parts(*v.COMPARE_INPUTS), v.parts(*v.COMPARE_OUTPUTS), api_name="compare_tokenizers"
                    ).success(maps, v.parts(*v.COMPARE_INPUTS), v.parts(*v.MAPS_OUTPUTS), api_name="token_maps")
    v.batch_btn.click(run_batch, v.parts("state", "source", "seed", "episode", "batch_n"),
                      v.parts("batch_table", "worst"), api_name="tokenizer_batch")
    return v
