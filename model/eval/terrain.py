"""What a frame shows, tile by tile: each tile named after its nearest real tile.

A dream can scroll the right way and still turn into an empty field, and it invents the terrain it
scrolls into view, so no real env can label it. Both Crafter and GridWorld draw their worlds from a small
set of fixed tile images, so a dreamed tile is named by the nearest tile seen in real frames (labelled by
the env itself), and called ``"?"`` when no real tile is close: a smear matches nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from einops import rearrange

UNKNOWN = "?"


@dataclass(frozen=True)
class TileGrid:
    """Where an env draws its world's tiles in a frame: ``rows`` x ``cols`` tiles of ``tile`` pixels."""

    rows: int
    cols: int
    tile: int

    def tiles(self, frame: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) frame -> (rows * cols, tile * tile * 3) uint8, row by row."""
        t = self.tile
        view = np.asarray(frame)[:self.rows * t, :self.cols * t]
        return rearrange(view, "(r th) (c tw) ch -> (r c) (th tw ch)", th=t, tw=t)


# Crafter at 64x64: a 9x7 world view of 7-pixel tiles above the inventory; GridWorld: 8x8 cells of 8 pixels.
GRIDS = {"crafter": TileGrid(rows=7, cols=9, tile=7), "gridworld": TileGrid(rows=8, cols=8, tile=8)}
# What counts as terrain in a Crafter view (the materials besides grass; creatures and the player are not).
CRAFTER_TERRAIN = ("water", "stone", "path", "sand", "tree", "lava", "coal", "iron", "diamond", "table", "furnace")


MOVE_KEYS = {"crafter": ("move_left", "move_right", "move_up", "move_down"), "gridworld": ("left", "right", "up", "down")}


def grid_for(env_name: str) -> TileGrid:
    if env_name not in GRIDS:
        raise ValueError(f"{env_name!r} has no tile grid to judge (only {', '.join(GRIDS)})")
    return GRIDS[env_name]


class TileJudge:
    """Names every tile of a frame by its nearest labelled real tile (mean squared pixel difference, 0..1
    units); a tile farther than ``max_mse`` from every real tile is :data:`UNKNOWN`."""

    def __init__(self, tiles: np.ndarray, labels: Sequence[str], grid: TileGrid, max_mse: float = 0.01) -> None:
        flat = np.asarray(tiles, np.uint8).reshape(len(tiles), -1)
        flat, first = np.unique(flat, axis=0, return_index=True)  # real tiles repeat a lot
        self.tiles = flat.astype(np.float32) / 255
        self.norms = (self.tiles * self.tiles).sum(1)  # for the squared distances of every classify
        self.labels = np.asarray(labels, dtype=object)[first]
        self.grid, self.max_mse = grid, max_mse

    def classify(self, frame: np.ndarray) -> np.ndarray:
        """(rows, cols) array of tile names."""
        x = self.grid.tiles(frame).astype(np.float32) / 255
        d = (x * x).sum(1)[:, None] - 2 * x @ self.tiles.T + self.norms[None]
        d = np.maximum(d, 0) / x.shape[1]
        nearest = d.argmin(1)
        names = self.labels[nearest].copy()
        names[d[np.arange(len(x)), nearest] > self.max_mse] = UNKNOWN
        return names.reshape(self.grid.rows, self.grid.cols)

    @classmethod
    def collect(cls, env_name: str, seeds: Sequence[int], steps: int) -> "TileJudge":
        """Real walks (straight runs of move keys) on ``seeds``: every frame's tiles, labelled by the env's
        ``view_labels()``."""
        from model.data.envs import action_names, make_env
        from model.eval.keys import walk_keys

        grid, names = grid_for(env_name), action_names(env_name)
        moves = MOVE_KEYS[env_name]
        tiles, labels = [], []
        for seed in seeds:
            env = make_env(env_name)
            frame = env.reset(seed=seed)[0]
            for key in walk_keys(seed, steps, keys=moves):
                tiles.append(grid.tiles(frame)), labels.append(env.unwrapped.view_labels().reshape(-1))
                frame, _, terminated, truncated, _ = env.step(names.index(key))
                if terminated or truncated:
                    break
            env.close()
        return cls(np.concatenate(tiles), np.concatenate(labels), grid)


def terrain_share(views: Sequence[np.ndarray], terrain: Sequence[str] = CRAFTER_TERRAIN) -> float:
    """Share of tiles, over the classified ``views``, that show one of ``terrain``."""
    if not views:
        return float("nan")
    return float(np.mean([np.isin(v, terrain).mean() for v in views]))


def shows(views: Sequence[np.ndarray], name: str) -> bool:
    """Whether any of the classified ``views`` has a tile of ``name``."""
    return any((v == name).any() for v in views)


def clean_gridworld_frame(view: np.ndarray) -> bool:
    """A GridWorld frame as the real env could draw it: exactly one agent and no tile that matches nothing."""
    return int((view == "agent").sum()) == 1 and not (view == UNKNOWN).any()


def terrain_mix(walks: Sequence[tuple[Sequence[np.ndarray], Sequence[np.ndarray]]],
                kinds: Sequence[str] = ("tree", "water", "stone", "sand")) -> dict[str, object]:
    """Classified (real views, dream views) of the same steps of each walk -> the terrain share of each, the
    dream's share relative to the real one's, how much of the dream matches no real tile, and, for each of
    ``kinds``, in how many of the walks whose real env shows it the dream shows it too."""
    real = [terrain_share(r) for r, _ in walks]
    dream = [terrain_share(d) for _, d in walks]
    presence = {}
    for kind in kinds:
        shown = [shows(d, kind) for r, d in walks if shows(r, kind)]
        presence[kind] = {"real_walks": len(shown), "dream_too": int(sum(shown)),
                          "rate": float(np.mean(shown)) if shown else None}
    real_share, dream_share = float(np.mean(real)), float(np.mean(dream))
    return {"walks": len(walks), "real_share": real_share, "dream_share": dream_share,
            "relative": dream_share / real_share - 1 if real_share > 0 else None,
            "unknown_share": float(np.mean([(v == UNKNOWN).mean() for _, d in walks for v in d])),
            "presence": presence}
