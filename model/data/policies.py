"""Policies that act in real envs: uniform random (with optional sticky actions), epsilon-greedy around
another policy, and the trained agent.

Policy protocol (the collector, evaluation and play use it): ``policy(obs)`` with obs uint8 (N, H, W, 3)
returns N actions. Optional hooks: ``policy.reset(indices)`` when the envs at ``indices`` start a new
episode, so a recurrent policy can clear its state there; ``policy.burn_in(frames)``, with
``policy.burn_in_steps = K``, receives the last K frames of each in-flight episode, uint8 (N, K, H, W, 3)
left-padded with zeros, to rebuild that state before acting again.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.distributions import Categorical

from .frames import to_tensor

if TYPE_CHECKING:
    from model.nets.actor_critic import ActorCritic

Policy = Callable[[np.ndarray], np.ndarray]
State = tuple[torch.Tensor, torch.Tensor]


class RandomPolicy:
    """Uniform random actions. With ``repeat`` > 0 each env keeps its previous action with that
    probability (runs of mean length 1 / (1 - repeat), the same marginal); with ``move_share`` > 0 that share
    of fresh actions is drawn from ``moves`` instead. Why: i.i.d. uniform
    play almost never walks several tiles in a row (Crafter: 4 of 17 actions move), which is exactly what
    a person at the keys does in the dream; models trained on i.i.d. data meet long walks only there."""

    def __init__(self, num_actions: int, seed: int | None = None, repeat: float = 0.0,
                 moves: Sequence[int] = (), move_share: float = 0.0):
        if not 0.0 <= repeat < 1.0:
            raise ValueError("repeat must be in [0, 1)")
        if not 0.0 <= move_share <= 1.0 or (move_share and not moves):
            raise ValueError("move_share must be in [0, 1], with the move actions given")
        self.n, self.rng, self.repeat = num_actions, np.random.default_rng(seed), repeat
        self.moves, self.move_share = np.asarray(list(moves), dtype=np.int64), move_share
        self.last: np.ndarray | None = None

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        fresh = self.rng.integers(0, self.n, size=len(obs))
        if self.move_share:  # a share of fresh actions are moves: a walker, who sees new terrain scroll in
            walk = self.rng.random(len(obs)) < self.move_share
            fresh = np.where(walk, self.rng.choice(self.moves, size=len(obs)), fresh)
        if self.repeat and self.last is not None and len(self.last) == len(obs):
            keep = (self.last >= 0) & (self.rng.random(len(obs)) < self.repeat)
            fresh = np.where(keep, self.last, fresh)
        self.last = fresh
        return fresh

    def reset(self, indices: Iterable[int]) -> None:
        if self.last is not None:
            self.last[np.asarray(list(indices), dtype=int)] = -1  # a new episode starts with a fresh action


class EpsilonGreedy:
    """With probability epsilon per env, a uniform random action replaces the policy's. The inner
    policy still sees every frame, so its recurrent state stays in step with the episode."""

    def __init__(self, policy: Policy, epsilon: float, num_actions: int, seed: int | None = None):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError("epsilon must be in [0, 1]")
        self.policy, self.epsilon, self.n, self.rng = policy, epsilon, num_actions, np.random.default_rng(seed)
        if hasattr(policy, "burn_in"):
            self.burn_in_steps = getattr(policy, "burn_in_steps", 0)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        actions = np.asarray(self.policy(obs)).copy()
        explore = self.rng.random(len(obs)) < self.epsilon
        actions[explore] = self.rng.integers(0, self.n, size=int(explore.sum()))
        return actions

    def reset(self, indices: Iterable[int]) -> None:
        if hasattr(self.policy, "reset"):
            self.policy.reset(indices)

    def burn_in(self, frames: np.ndarray) -> None:
        self.policy.burn_in(frames)


class Agent:
    """The actor-critic acting in real envs, one LSTM row per env.

    The recurrent state lives here, in ``state`` ((h, c), each (N, lstm_dim), or None before the first
    frame), and is threaded explicitly through the network, so agents sharing one network (play
    sessions, the trainer's collector and evaluation) never touch each other's memory. Actions are
    sampled at the config's ``temperature`` (greedy at <= 0); ``burn_in_steps`` is the config's burn-in."""

    def __init__(self, ac: ActorCritic):
        self.ac = ac
        self.temperature = ac.cfg.temperature
        self.burn_in_steps = ac.cfg.burn_in
        self.state: State | None = None

    def start(self, batch: int) -> None:
        """A fresh (zero) state for ``batch`` envs."""
        self.state = self.ac.zero_state(batch)

    def reset(self, indices: Iterable[int]) -> None:
        """Zero the state rows of envs that start a new episode (a state of another size is dropped)."""
        idx = list(indices)
        if self.state is None or not idx:
            return
        rows = self.state[0].size(0)
        if max(idx) >= rows:
            self.state = None
            return
        keep = torch.ones(rows, 1, device=self.state[0].device)
        keep[idx] = 0.0
        self.state = (self.state[0] * keep, self.state[1] * keep)

    @torch.no_grad()
    def observe(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (N, 3, H, W) float -> action logits (N, A); advances the state."""
        if self.state is None or self.state[0].size(0) != frames.size(0):
            self.start(frames.size(0))
        logits, _, self.state = self.ac.model(frames, self.state)
        return logits

    @torch.no_grad()
    def act(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (N, 3, H, W) float -> sampled actions (N,); advances the state."""
        logits = self.observe(frames)
        if self.temperature <= 0:
            return logits.argmax(-1)
        return Categorical(logits=logits.float() / self.temperature, validate_args=False).sample()

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.act(to_tensor(obs, self.ac.device)).cpu().numpy()

    def burn_in(self, frames: np.ndarray) -> None:
        """Rebuild the state from (N, K, H, W, 3) uint8 frames (zero padding included, as in training)."""
        self.start(frames.shape[0])
        for k in range(frames.shape[1]):
            self.observe(to_tensor(frames[:, k], self.ac.device))
