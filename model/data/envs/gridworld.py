"""GridWorld: the paper's didactic example of a world with a deterministic and a stochastic part.

The agent (blue) moves deterministically on an 8x8 grid (noop/up/down/left/right; walls stop it).
Coins (yellow) and enemies (red) appear at random cells: that is the stochastic part a Δ-tokenizer
has to encode, while the agent's motion is predictable from the action alone.

* +1 for stepping onto a coin (it disappears); at most 3 coins, each step a new one appears with
  probability 0.25.
* Stepping onto an enemy: -1 and the episode terminates. At most 2 enemies; each step one appears
  with probability 0.08 (never on the agent) and each one vanishes with probability 0.05.
* Truncated after 100 steps.

A uniform random policy collects about one coin and dies in about half of its episodes, while a
policy that walks to the nearest coin around enemies collects many (docs/decisions.md has the
figures), so an agent trained in imagination shows clear progress quickly.

Frames are 64x64 RGB, 8 px per cell, flat colours (pixel-exact when scaled).
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

GRID, CELL = 8, 8
EMPTY, COIN, ENEMY = 0, 1, 2
MOVES = np.array([(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)])  # noop, up, down, left, right (row, col)
ACTIONS = ["noop", "up", "down", "left", "right"]

BG = ((24, 26, 40), (32, 35, 54))  # checkerboard, so every cell is visible
AGENT_RGB, COIN_RGB, ENEMY_RGB = (60, 140, 255), (255, 205, 0), (235, 40, 40)


class GridWorldEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, max_steps: int = 100, coin_prob: float = 0.25, max_coins: int = 3,
                 enemy_prob: float = 0.08, enemy_vanish_prob: float = 0.05, max_enemies: int = 2,
                 render_mode: str | None = None):
        self.max_steps, self.coin_prob, self.max_coins = max_steps, coin_prob, max_coins
        self.enemy_prob, self.enemy_vanish_prob, self.max_enemies = enemy_prob, enemy_vanish_prob, max_enemies
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0, 255, (GRID * CELL, GRID * CELL, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(len(ACTIONS))
        self.action_names = ACTIONS
        self.achievement_names: list[str] = []
        self.grid = np.zeros((GRID, GRID), np.int8)
        self.agent = np.array([GRID // 2, GRID // 2])
        self.t = 0
        self._background = np.zeros((GRID * CELL, GRID * CELL, 3), np.uint8)
        for r in range(GRID):
            for c in range(GRID):
                self._background[r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = BG[(r + c) % 2]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.grid[:] = EMPTY
        self.agent = self.np_random.integers(0, GRID, size=2)
        self.t = 0
        self._spawn(COIN, 1.0)  # one coin to start with, so the first steps already have a goal
        return self._render(), self._info()

    def step(self, action):
        action = int(action)
        if not 0 <= action < len(ACTIONS):
            raise ValueError(f"invalid action {action}")
        self.t += 1
        reward, terminated = self.outcome(action)
        self.agent = self.next_cell(action)
        if reward > 0:
            self.grid[tuple(self.agent)] = EMPTY  # the coin is taken
        if not terminated:
            vanish = (self.grid == ENEMY) & (self.np_random.random(self.grid.shape) < self.enemy_vanish_prob)
            self.grid[vanish] = EMPTY
            self._spawn(COIN, self.coin_prob)
            self._spawn(ENEMY, self.enemy_prob)
        truncated = not terminated and self.t >= self.max_steps
        return self._render(), reward, terminated, truncated, self._info()

    def outcome(self, action: int) -> tuple[float, bool]:
        """(reward, terminated) of ``action`` from the current state, which stays as it is: +1 onto a coin,
        -1 and the end onto an enemy (the oracle's lookahead scores every action with it)."""
        cell = self.grid[tuple(self.next_cell(action))]
        return (1.0, False) if cell == COIN else (-1.0, True) if cell == ENEMY else (0.0, False)

    def next_cell(self, action: int) -> np.ndarray:
        """Where ``action`` takes the agent (walls stop it)."""
        return np.clip(self.agent + MOVES[action], 0, GRID - 1)

    def _spawn(self, kind: int, prob: float) -> None:
        limit = self.max_coins if kind == COIN else self.max_enemies
        if (self.grid == kind).sum() >= limit or self.np_random.random() >= prob:
            return
        free = self.grid == EMPTY
        free[tuple(self.agent)] = False
        cells = np.argwhere(free)
        if len(cells):
            self.grid[tuple(cells[self.np_random.integers(len(cells))])] = kind

    def _info(self) -> dict[str, Any]:
        return {"agent": self.agent.copy(), "coins": int((self.grid == COIN).sum()),
                "enemies": int((self.grid == ENEMY).sum())}

    def _render(self) -> np.ndarray:
        img = self._background.copy()
        for (r, c) in np.argwhere(self.grid == COIN):
            img[r * CELL + 2:r * CELL + 6, c * CELL + 2:c * CELL + 6] = COIN_RGB
        for (r, c) in np.argwhere(self.grid == ENEMY):
            img[r * CELL + 1:r * CELL + 7, c * CELL + 1:c * CELL + 7] = ENEMY_RGB
        r, c = self.agent
        img[r * CELL + 1:r * CELL + 7, c * CELL + 1:c * CELL + 7] = AGENT_RGB
        return img

    def render(self):
        return self._render()

    def view_labels(self) -> np.ndarray:
        """(8, 8) names of what each cell shows: "agent", "coin", "enemy" or "floor"."""
        out = np.array(["floor", "coin", "enemy"], dtype=object)[self.grid]
        out[tuple(self.agent)] = "agent"
        return out

    def restore(self, frame: np.ndarray, t: int = 0) -> None:
        """Put the env in the state a rendered frame shows (``parse_frame``), at step ``t``: what lets the
        real env stand in for a perfect world model (experiments/oracle/oracle_dream.py)."""
        self.grid[:], self.agent = parse_frame(frame)
        self.t = t


def parse_frame(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (64, 64, 3) frame -> (grid (8, 8) of EMPTY/COIN/ENEMY, agent (row, col)). Exact on rendered
    frames: flat colours, and a cell's corner pixel is the agent's or an enemy's colour, its centre a coin's."""
    f = np.asarray(frame)
    if f.shape != (GRID * CELL, GRID * CELL, 3):
        raise ValueError(f"a GridWorld frame is {(GRID * CELL, GRID * CELL, 3)}, got {f.shape}")
    corner = f[1::CELL, 1::CELL].astype(int)  # (8, 8, 3)
    centre = f[3::CELL, 3::CELL].astype(int)
    grid = np.zeros((GRID, GRID), np.int8)
    grid[(centre == COIN_RGB).all(-1)] = COIN
    grid[(corner == ENEMY_RGB).all(-1)] = ENEMY
    agent = np.argwhere((corner == AGENT_RGB).all(-1))
    if len(agent) != 1:
        raise ValueError(f"a GridWorld frame shows one agent, this one {len(agent)}")
    return grid, agent[0]
