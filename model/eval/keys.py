"""Which way did a scrolling view move between two frames? The check behind "the agent moves in the
dream the way the keys say".

Crafter draws the world as a 9x7 grid of 7-pixel tiles centred on the player, so a successful move
scrolls every tile by exactly one tile, and a blocked move scrolls nothing (the player only turns). A
frame pair is scored against each candidate motion (none, one tile left/right/up/down) by the mean
squared difference after undoing that motion, over the world view minus the player's neighbourhood
(the sprite turns on every move key, scrolled or not). The best candidate is the motion.

A pair is *ambiguous* when a second candidate fits almost as well: a view of plain grass looks the same
scrolled or not (the grass texture repeats every tile). Only unambiguous real pairs are scored, and the
dream's motion is whatever fits its own pair best.

:func:`closed_loop` gives the dream of a perfect world model to score beside the real ones, :func:`random_loop`
that of a world model that knows nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

MOTIONS = ("none", "left", "right", "up", "down")  # which way the view's content moved


@dataclass(frozen=True)
class ViewGeometry:
    tile: int  # pixels per tile: one move scrolls this far
    height: int  # rows of the scrolling world view (from the top)
    width: int  # its columns (from the left)
    player: tuple[int, int, int, int]  # (top, bottom, left, right) of the pixels left out

    def shifts(self) -> list[tuple[int, int]]:
        t = self.tile
        return [(0, 0), (0, -t), (0, t), (-t, 0), (t, 0)]


# Crafter at 64x64 (crafter.Env.render: unit 64 // 9 = 7 px, no border): the world is rows 0-48 and
# columns 0-62 (the inventory below it does not scroll); the player is tile (3, 4): rows 21-27, columns
# 28-34, left out with one tile around it.
VIEWS = {"crafter": ViewGeometry(tile=7, height=49, width=63, player=(14, 35, 21, 42))}


def geometry_for(env_name: str) -> ViewGeometry:
    if env_name not in VIEWS:
        raise ValueError(f"{env_name!r} has no scrolling view to check (only {', '.join(VIEWS)})")
    return VIEWS[env_name]


def motion_errors(prev: np.ndarray, frame: np.ndarray, view: ViewGeometry) -> np.ndarray:
    """uint8 (H, W, 3) frames -> the mean squared difference (0..1 pixel units) for each of ``MOTIONS``:
    entry k is small when ``frame`` is ``prev`` with its content moved by ``view.shifts()[k]``."""
    h, w = view.height, view.width
    a = prev[:h, :w].astype(np.float32) / 255
    b = frame[:h, :w].astype(np.float32) / 255
    keep = np.ones((h, w), bool)
    top, bottom, left, right = view.player
    keep[top:bottom, left:right] = False
    out = []
    for dy, dx in view.shifts():
        to_y, to_x = slice(max(0, dy), h + min(0, dy)), slice(max(0, dx), w + min(0, dx))
        from_y, from_x = slice(max(0, -dy), h + min(0, -dy)), slice(max(0, -dx), w + min(0, -dx))
        diff = (b[to_y, to_x] - a[from_y, from_x]) ** 2  # frame[y] == prev[y - dy] when the content moved by dy
        out.append(float(diff[keep[to_y, to_x]].mean()))
    return np.asarray(out)


def classify(errors: np.ndarray, margin: float = 3.0, floor: float = 1e-3) -> int | None:
    """Index into ``MOTIONS`` of the best fit, or None when the runner-up is within ``margin`` times the best
    plus ``floor`` (the pair cannot tell the motions apart)."""
    order = np.sort(errors)
    if order[1] <= margin * order[0] + floor:
        return None
    return int(np.argmin(errors))


# The view's content moves against the player: a step right scrolls the world left.
KEY_MOTION = {"move_left": "right", "move_right": "left", "move_up": "down", "move_down": "up"}


def score_walk(real: list[np.ndarray], dream: list[np.ndarray], keys: list[str],
               view: ViewGeometry) -> tuple[list[tuple[int, int, int]], int]:
    """One walk: T+1 real and dreamed frames under T move keys -> (the (real, dream, key) motion triples of
    its unambiguous real steps, for :func:`agreement`; the number of ambiguous steps left out)."""
    triples, ambiguous = [], 0
    for t, key in enumerate(keys):
        motion = classify(motion_errors(real[t], real[t + 1], view))
        if motion is None:
            ambiguous += 1
            continue
        dreamt = int(np.argmin(motion_errors(dream[t], dream[t + 1], view)))
        triples.append((motion, dreamt, MOTIONS.index(KEY_MOTION[key])))
    return triples, ambiguous


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
