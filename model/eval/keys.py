"""Does the dream's view move the way the keys say? The scoring behind `deltaplay eval checkpoint --parts
keys`; which way a view moved between two frames is :mod:`model.data.view_motion`'s rule.

Only unambiguous real pairs are scored (a view of plain grass looks the same scrolled or not), and the
dream's motion is whatever fits its own pair best.

:func:`closed_loop` gives the dream of a perfect world model to score beside the real ones, :func:`random_loop`
that of a world model that knows nothing.
"""
from __future__ import annotations

from typing import Collection, Sequence

import numpy as np
import torch

from model.data.view_motion import (KEY_MOTION, MOTIONS, VIEWS, ViewGeometry, classify,  # noqa: F401
                                     geometry_for, motion_errors)


# Where each move key takes the player in Crafter's world coordinates (x to the right, y down).
KEY_STEP = {"move_left": (-1, 0), "move_right": (1, 0), "move_up": (0, -1), "move_down": (0, 1)}


def score_walk(real: list[np.ndarray], dream: list[np.ndarray], keys: list[str], view: ViewGeometry,
               steps: Collection[int] | None = None) -> tuple[list[tuple[int, int, int]], int]:
    """One walk: T+1 real and dreamed frames under T move keys -> (the (real, dream, key) motion triples of
    its unambiguous real steps, for :func:`agreement`; the number of ambiguous steps left out). ``steps``: score
    only these step indices."""
    triples, ambiguous = [], 0
    for t, key in enumerate(keys):
        if steps is not None and t not in steps:
            continue
        motion = classify(motion_errors(real[t], real[t + 1], view))
        if motion is None:
            ambiguous += 1
            continue
        dreamt = int(np.argmin(motion_errors(dream[t], dream[t + 1], view)))
        triples.append((motion, dreamt, MOTIONS.index(KEY_MOTION[key])))
    return triples, ambiguous


def first_view_steps(positions: Sequence[Sequence[int]], keys: Sequence[str], view: ViewGeometry) -> list[int]:
    """The steps whose move leads into a tile of the walk's first view, from the real player's world positions
    before each step. Only there did the world model see what the real world holds (a wall or a free tile); every
    other tile it drew itself, and where it drew grass the real world may hold a tree. Even the game's own
    simulator, drawing the unseen terrain anew, agrees with the real walk on only about three of four such moves
    (``experiments/keys_ceiling``)."""
    half_x, half_y = view.reach
    x0, y0 = positions[0]
    return [t for t, ((x, y), key) in enumerate(zip(positions, keys))
            if abs(x + KEY_STEP[key][0] - x0) <= half_x and abs(y + KEY_STEP[key][1] - y0) <= half_y]


def score_split(real: list[np.ndarray], dream: list[np.ndarray], keys: list[str], view: ViewGeometry,
                steps: Collection[int]) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]], int]:
    """:func:`score_walk` in one pass, its triples split: those of ``steps``, those of the other steps, and the
    number of ambiguous steps in all."""
    inside, ambiguous_in = score_walk(real, dream, keys, view, steps)
    rest, ambiguous_out = score_walk(real, dream, keys, view, set(range(len(keys))) - set(steps))
    return inside, rest, ambiguous_in + ambiguous_out


def agreement(pairs: list[tuple[int, int, int]]) -> dict[str, object]:
    """(real motion, dream motion, the key's motion) index triples -> the agreement overall and per real
    motion, beside what two dumb dreams would score: one that never scrolls (``still_baseline``) and one
    that always scrolls the way the key points, walls or not (``key_baseline``)."""
    real, dream, key = (np.array([p[i] for p in pairs], dtype=int) for i in range(3))
    rate = (lambda x: float(x.mean())) if pairs else (lambda x: None)
    out: dict[str, object] = {"pairs": len(pairs), "agreement": rate(real == dream),
                              "still_baseline": rate(real == 0), "key_baseline": rate(real == key)}
    per: dict[str, dict[str, float]] = {}
    for k, name in enumerate(MOTIONS):
        sel = real == k
        if sel.any():
            per[name] = {"pairs": int(sel.sum()), "same": float((dream[sel] == k).mean()),
                         "dream_still": float((dream[sel] == 0).mean())}
    out["per_motion"] = per
    return out


def walk_keys(seed: int, steps: int, keys: Sequence[str] = tuple(KEY_MOTION)) -> list[str]:
    """A person's walk: straight runs of 3-5 presses of one move key, directions drawn with ``seed``."""
    rng, keys = np.random.default_rng(seed), list(keys)
    out: list[str] = []
    while len(out) < steps:
        out += [keys[int(rng.integers(len(keys)))]] * int(rng.integers(3, 6))
    return out[:steps]


@torch.no_grad()
def random_loop(tokenizer, first: torch.Tensor, actions: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(B, 3, H, W) start frames and (B, T) actions -> (B, T, 3, H, W): uniformly random tokens decoded in a
    closed loop, the dream of a world model that knows nothing. Scored like a dream, it tells what the decoder
    makes of the start frame and the action alone (a scroll the action implies, a wall it sees)."""
    g = torch.Generator().manual_seed(seed)
    decoded, prev = [], first
    for t in range(actions.size(1)):
        tokens = torch.randint(0, tokenizer.vocab_size, (first.size(0), tokenizer.tokens_per_frame), generator=g)
        prev = tokenizer.decode(prev, actions[:, t], tokens.to(first.device))
        decoded.append(prev)
    return torch.stack(decoded, dim=1)


@torch.no_grad()
def closed_loop(tokenizer, frames: torch.Tensor, actions: torch.Tensor, from_decoded: bool = False) -> torch.Tensor:
    """(B, T+1, 3, H, W) real frames and (B, T) actions -> (B, T, 3, H, W) in [0, 1]: the real walk's tokens,
    each decoded from the previous *decoded* frame, as in a dream. Scored like a dream, it tells the tokenizer's
    share of a miss from the world model's. The tokens are those of the real pairs, or with ``from_decoded`` those
    that lead from the decoded previous frame to the real next one: the best a world model of the dream could
    give, so a dream that still drifts then is the code's limit."""
    decoded, prev = [], frames[:, 0]
    for t in range(actions.size(1)):
        tokens = tokenizer.encode(prev if from_decoded else frames[:, t], actions[:, t], frames[:, t + 1])
        prev = tokenizer.decode(prev, actions[:, t], tokens)
        decoded.append(prev)
    return torch.stack(decoded, dim=1)
