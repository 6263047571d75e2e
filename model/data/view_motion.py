"""Which way did a scrolling view move between two frames?

Crafter draws the world as a 9x7 grid of 7-pixel tiles centred on the player, so a successful move
scrolls every tile by exactly one tile, and a blocked move scrolls nothing (the player only turns). A
frame pair is scored against each candidate motion (none, one tile left/right/up/down) by the mean
squared difference after undoing that motion, over the world view minus the player's neighbourhood
(the sprite turns on every move key, scrolled or not). The best candidate is the motion.

A pair is *ambiguous* when a second candidate fits almost as well: a view of plain grass looks the same
scrolled or not (the grass texture repeats every tile).

Two users: the keys check of the evaluation (:mod:`model.eval.keys`, one pair at a time in numpy) and the
world model's motion input (:func:`motion_labels`, a training batch at once in torch: the label a pair's
motion classifier learns).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from model.data.envs import action_names

MOTIONS = ("none", "left", "right", "up", "down")  # which way the view's content moved


@dataclass(frozen=True)
class ViewGeometry:
    tile: int  # pixels per tile: one move scrolls this far
    height: int  # rows of the scrolling world view (from the top)
    width: int  # its columns (from the left)
    player: tuple[int, int, int, int]  # (top, bottom, left, right) of the pixels left out

    @property
    def classes(self) -> int:
        """How many motions a pair can show (``MOTIONS``)."""
        return len(MOTIONS)

    @property
    def reach(self) -> tuple[int, int]:
        """How many tiles the view shows on each side of the player (across, down): the player is its middle tile."""
        return self.width // self.tile // 2, self.height // self.tile // 2

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
    def chw(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float() / 255

    return motion_errors_batch(chw(prev), chw(frame), view)[0].numpy().astype(np.float64)


def classify(errors: np.ndarray, margin: float = 3.0, floor: float = 1e-3) -> int | None:
    """Index into ``MOTIONS`` of the best fit, or None when the runner-up is within ``margin`` times the best
    plus ``floor`` (the pair cannot tell the motions apart)."""
    order = np.sort(errors)
    if order[1] <= margin * order[0] + floor:
        return None
    return int(np.argmin(errors))


# The view's content moves against the player: a step right scrolls the world left.
KEY_MOTION = {"move_left": "right", "move_right": "left", "move_up": "down", "move_down": "up"}


def motion_errors_batch(prev: torch.Tensor, frame: torch.Tensor, view: ViewGeometry,
                        tight: bool = False) -> torch.Tensor:
    """:func:`motion_errors` for a batch: float frames (N, 3, H, W) in [0, 1] -> (N, len(MOTIONS)).

    ``tight`` leaves out only the player's tile and, per candidate, the tile its sprite would land on, instead
    of the whole neighbourhood: a wall next to the player then tells a blocked move from a scroll."""
    h, w = view.height, view.width
    a, b = prev[:, :, :h, :w].float(), frame[:, :, :h, :w].float()
    top, bottom, left, right = view.player
    t = view.tile
    out = []
    for dy, dx in view.shifts():
        keep = torch.ones(h, w, dtype=torch.bool, device=prev.device)
        if tight:
            keep[top + t:bottom - t, left + t:right - t] = False
            keep[top + t + dy:bottom - t + dy, left + t + dx:right - t + dx] = False
        else:
            keep[top:bottom, left:right] = False
        to_y, to_x = slice(max(0, dy), h + min(0, dy)), slice(max(0, dx), w + min(0, dx))
        from_y, from_x = slice(max(0, -dy), h + min(0, -dy)), slice(max(0, -dx), w + min(0, -dx))
        diff = ((b[:, :, to_y, to_x] - a[:, :, from_y, from_x]) ** 2).mean(1)  # (N, h', w')
        k = keep[to_y, to_x]
        out.append((diff * k).sum((1, 2)) / k.sum())
    return torch.stack(out, dim=1)


def new_strip(motions: torch.Tensor, view: ViewGeometry, size: int) -> torch.Tensor:
    """(N,) indices into ``MOTIONS`` -> (N, 1, size, size) bool: the pixels a scroll brings into view (the tile-wide
    strip on the side the content moved away from; nothing for "none")."""
    t, h, w = view.tile, view.height, view.width
    out = torch.zeros(motions.size(0), 1, size, size, dtype=torch.bool, device=motions.device)
    strips = {"left": (slice(0, h), slice(w - t, w)), "right": (slice(0, h), slice(0, t)),
              "up": (slice(h - t, h), slice(0, w)), "down": (slice(0, t), slice(0, w))}
    for name, (rows, cols) in strips.items():
        out[motions == MOTIONS.index(name), :, rows, cols] = True
    return out


def strip_weights(motions: torch.Tensor, view: ViewGeometry, size: int, weight: float) -> torch.Tensor:
    """(N,) indices into ``MOTIONS`` -> (N, 1, size, size) per-pixel loss weights: ``weight`` on the strip each
    scroll brought into view, 1 elsewhere (``tokenizer.strip_weight``: the new strip is what a dream must draw)."""
    return 1.0 + (weight - 1.0) * new_strip(motions, view, size).float()


def key_motions(actions: Sequence[str]) -> list[int]:
    """Per action of an env (its names): the index into ``MOTIONS`` of the scroll its key makes when the
    way is free, 0 (none) for an action that does not move."""
    return [MOTIONS.index(KEY_MOTION[a]) if a in KEY_MOTION else 0 for a in actions]


def env_key_motions(env_name: str, device: torch.device | str | None = None) -> torch.Tensor:
    """:func:`key_motions` of an env's actions as the tensor :func:`motion_labels` takes."""
    return torch.tensor(key_motions(action_names(env_name)), device=device)


def motion_labels(prev: torch.Tensor, frame: torch.Tensor, actions: torch.Tensor, moves: torch.Tensor,
                  view: ViewGeometry, margin: float = 1.2, floor: float = 1e-5) -> torch.Tensor:
    """Which way the view moved, per pair: float frames (N, 3, H, W), actions (N,), ``moves`` the
    :func:`key_motions` of the env as a tensor -> (N,) indices into ``MOTIONS``.

    A pair whose candidates fit within ``margin`` of the best (plain grass) is labelled with the action's own
    scroll when that is among them, else with "none" when that is, else with the best fit: what the env most
    likely did (grass is walkable). The margin is tighter than the keys check's: at night Crafter draws noise
    over the view, and with the wide margin many blocked moves at night passed for scrolls
    (tests/model/data/test_view_motion.py checks the labels against where the player went)."""
    err = motion_errors_batch(prev, frame, view, tight=True)
    near = err <= margin * err.min(1, keepdim=True).values + floor
    key = moves.to(err.device)[actions.long()]
    label = err.argmin(1)
    label = torch.where(near[:, 0], torch.zeros_like(label), label)
    return torch.where(near.gather(1, key[:, None])[:, 0], key, label)
