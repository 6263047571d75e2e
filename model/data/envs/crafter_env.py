"""Crafter (Hafner, 2021) as a gymnasium.Env.

Crafter keeps the old gym API and seeds only through its constructor, so this wrapper:

* rebuilds ``crafter.Env(seed=...)`` on ``reset(seed=s)``; a later ``reset()`` without a seed goes on
  to Crafter's next world for that seed (Crafter derives each world from ``(seed, episode number)``),
  so a seeded sequence of episodes is reproducible;
* splits ``done`` into ``terminated`` (death: ``info["discount"] == 0``) and ``truncated`` (length);
* copies ``info["player_pos"]`` (Crafter hands out its live array; reset's info has it too) and drops ``info["semantic"]``
  (a 64x64 map per step that nothing here uses and that would cross process pipes every step);
* makes steps reproducible: Crafter keeps each chunk's objects in a ``set``, whose order follows
  memory addresses, and picks the creature to despawn by position in that order, so the same seed
  and actions could play out differently. The world's chunk sets are swapped for insertion-ordered
  ones (same contents, same rules).
"""
from __future__ import annotations

import collections
from typing import Any

import crafter
import gymnasium as gym
import numpy as np

ACHIEVEMENTS: list[str] = list(crafter.constants.achievements)
ACTIONS: list[str] = list(crafter.constants.actions)


class _OrderedSet(dict):
    """The subset of ``set`` Crafter uses on chunk contents, iterated in insertion order."""

    def add(self, item) -> None:
        self[item] = None

    def remove(self, item) -> None:
        del self[item]


class _OrderedWorld(crafter.engine.World):
    def reset(self, seed=None):
        super().reset(seed)
        self._chunks = collections.defaultdict(_OrderedSet)


class CrafterEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, size: int = 64, length: int = 10000, area: tuple[int, int] = (64, 64),
                 view: tuple[int, int] = (9, 9), reward: bool = True, render_mode: str | None = None):
        self.size, self.length, self.area, self.view, self.reward = size, length, area, view, reward
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(len(ACTIONS))
        self.action_names = ACTIONS
        self.achievement_names = ACHIEVEMENTS
        self._env: crafter.Env | None = None
        self._obs: np.ndarray | None = None

    def _build(self, seed: int) -> None:
        self._env = crafter.Env(area=self.area, view=self.view, size=(self.size, self.size),
                                reward=self.reward, length=self.length, seed=int(seed))
        self._env._world.__class__ = _OrderedWorld  # the views hold this object: retype it in place

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None or self._env is None:
            # Unseeded first reset: draw the world seed from np_random (itself seeded from the OS).
            self._build(seed if seed is not None else int(self.np_random.integers(2**31 - 1)))
        self._obs = self._env.reset()
        info = {"achievements": {name: 0 for name in ACHIEVEMENTS}, "discount": 1.0,
                "player_pos": np.array(self._env._player.pos)}
        return self._obs, info

    def step(self, action):
        if self._env is None:
            raise RuntimeError("call reset() before step()")
        obs, reward, done, info = self._env.step(int(action))
        self._obs = obs
        terminated = bool(info["discount"] == 0)
        truncated = bool(done and not terminated)
        info = {
            "achievements": dict(info["achievements"]),
            "inventory": dict(info["inventory"]),
            "discount": float(info["discount"]),
            "player_pos": np.array(info["player_pos"]),
        }
        return obs, float(reward), terminated, truncated, info

    def view_labels(self) -> np.ndarray:
        """(rows, cols) names of what each tile of the world view shows, as drawn: the creature or object
        standing there, else the material ("void" outside the world). Labels real tiles for
        ``model.eval.terrain.TileJudge``."""
        if self._env is None:
            raise RuntimeError("call reset() before view_labels()")
        world, view = self._env._world, self._env._local_view
        cols, rows = view._grid
        out = np.full((rows, cols), "void", dtype=object)
        for y in range(rows):
            for x in range(cols):
                material, obj = world[self._env._player.pos + np.array([x, y]) - view._offset]
                if material is not None:
                    out[y, x] = type(obj).__name__.lower() if obj is not None else material
        return out

    def render(self):
        return None if self._obs is None else self._obs.copy()

    def close(self):
        self._env = None
