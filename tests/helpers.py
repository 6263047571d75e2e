"""Plain helpers shared by tests (pytest puts this folder on sys.path: ``from helpers import ...``)."""
from pathlib import Path

import numpy as np

from model.data.envs import make_env
from model.data.store import Episode

REPO = Path(__file__).resolve().parents[1]
"""The repository root (tests live at several depths below it)."""


def gridworld_episode(seed: int, max_steps: int = 40) -> Episode:
    """A real GridWorld rollout under a seeded random policy."""
    env = make_env("gridworld", max_steps=max_steps)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    frames, actions, rewards, term, trunc = [obs], [], [], [], []
    while True:
        a = int(rng.integers(5))
        obs, r, te, tr, _ = env.step(a)
        frames.append(obs), actions.append(a), rewards.append(r), term.append(te), trunc.append(tr)
        if te or tr:
            return Episode(np.stack(frames), actions, rewards, term, trunc, seed=seed, env="gridworld")
