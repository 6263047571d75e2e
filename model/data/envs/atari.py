"""Atari games through the optional ale-py package (``pip install '.[atari]'``).

Preprocessing as in the IRIS / Δ-IRIS Atari 100k setup: up to 30 random no-ops at reset, action
repeat 4 with a max-pool over the last two raw frames (Atari sprites flicker), area-resize to 64x64
RGB, sticky actions off by default (``repeat_action_probability=0``), 108k raw frames per episode.
Life loss is not an episode end; it is reported as ``info["life_loss"]`` so a trainer may treat it
as one (``terminate_on_life_loss=True`` makes it terminal instead).
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from PIL import Image

INSTALL_HINT = "Atari needs the optional ale-py package: pip install 'deltaplay[atari]' (or pip install ale-py)"


def _import_ale():
    try:
        import ale_py
    except ImportError as e:  # pragma: no cover - depends on the optional install
        raise ImportError(INSTALL_HINT) from e
    gym.register_envs(ale_py)
    return ale_py


class AtariEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, game: str, size: int = 64, frame_skip: int = 4, noop_max: int = 30,
                 sticky_actions: float = 0.0, terminate_on_life_loss: bool = False,
                 max_raw_frames: int = 108_000, render_mode: str | None = None):
        _import_ale()
        self.game, self.size, self.frame_skip, self.noop_max = game, size, frame_skip, noop_max
        self.terminate_on_life_loss = terminate_on_life_loss
        self.render_mode = render_mode
        self._env = gym.make(f"ALE/{game}-v5", frameskip=1, repeat_action_probability=sticky_actions,
                             full_action_space=False, max_num_frames_per_episode=max_raw_frames)
        self.action_names = [n.lower() for n in self._env.unwrapped.get_action_meanings()]
        self.achievement_names: list[str] = []
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(len(self.action_names))
        self._lives = 0
        self._obs: np.ndarray | None = None

    def _resize(self, frame: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(frame).resize((self.size, self.size), Image.Resampling.BOX))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        frame, info = self._env.reset(seed=seed)
        for _ in range(int(self.np_random.integers(0, self.noop_max + 1))):
            frame, _, terminated, truncated, info = self._env.step(0)
            if terminated or truncated:
                frame, info = self._env.reset()
        self._lives = self._env.unwrapped.ale.lives()
        self._obs = self._resize(frame)
        return self._obs, {"lives": self._lives, "life_loss": False}

    def step(self, action):
        total, last = 0.0, []
        terminated = truncated = False
        for _ in range(self.frame_skip):
            frame, reward, terminated, truncated, _ = self._env.step(int(action))
            total += float(reward)
            last = (last + [frame])[-2:]
            if terminated or truncated:
                break
        pooled = np.maximum(last[0], last[-1])
        lives = self._env.unwrapped.ale.lives()
        life_loss = lives < self._lives
        self._lives = lives
        if life_loss and self.terminate_on_life_loss:
            terminated = True
        self._obs = self._resize(pooled)
        return self._obs, total, bool(terminated), bool(truncated), {"lives": lives, "life_loss": life_loss}

    def render(self):
        return None if self._obs is None else self._obs.copy()

    def close(self):
        self._env.close()


def atari_action_names(game: str) -> list[str]:
    env = AtariEnv(game)
    try:
        return list(env.action_names)
    finally:
        env.close()
