"""A perfect dream for GridWorld: the real env stands in for the world model.

Why: when an agent trained in imagination fails, the world model and the actor-critic are both
suspects. ``OracleDream`` has :class:`model.nets.imagination.DreamEnv`'s interface (``reset(frames,
actions)``, ``step(actions)``), but each row restores a real :class:`GridWorldEnv` from the last burn-in
frame (:func:`model.data.envs.gridworld.parse_frame`) and steps it, so rewards, ends and frames are exact.
:func:`train_in_oracle` then trains an actor-critic exactly as the trainer does
(``ActorCritic.imagine_and_loss``, the trainer's optimizer and gradient clipping) and tests it in the
real env: what the actor-critic reaches with a flawless world model in a given number of updates.
``python -m experiments.oracle.cli`` is its command line.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch

from model.config import Config
from model.data.envs.gridworld import COIN, MOVES, GridWorldEnv
from model.data.frames import to_tensor, to_uint8
from model.data.store import Episode


class OracleDream:
    """``DreamEnv``'s interface over real GridWorld envs. After a row's episode ends, the row repeats its
    last frame with reward 0 and end 1 (the actor-critic's loss ignores steps after the first end)."""

    def __init__(self, batch: int, seed: int = 0) -> None:
        self.envs = [GridWorldEnv() for _ in range(batch)]
        for i, env in enumerate(self.envs):
            env.reset(seed=seed * 100_003 + i)  # seeds each env's spawn stream
        self.ended = np.zeros(batch, bool)
        self.outcomes: tuple[torch.Tensor, torch.Tensor] | None = None  # see step

    def reset(self, frames: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """frames (B, T0, 3, H, W) in [0, 1], actions (B, T0-1) -> the current frame x_{T0-1}."""
        if frames.size(0) != len(self.envs):
            raise ValueError(f"this oracle runs {len(self.envs)} envs, got a batch of {frames.size(0)}")
        for env, frame in zip(self.envs, to_uint8(frames[:, -1])):
            env.restore(frame)
        self.ended[:] = False
        return frames[:, -1].float().clone()

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """actions (B,) -> (next frame (B, 3, H, W), reward (B,), end (B,) as 0/1 probabilities). Also sets
        ``outcomes``: the exact reward and end (B, A) every action would have had from the state before the step
        (what ``DreamEnv(probe_actions=True)`` estimates with the world model)."""
        self.outcomes = self._outcomes()
        obs, rewards, ends = [], [], []
        for i, (env, a) in enumerate(zip(self.envs, torch.as_tensor(actions).view(-1).tolist())):
            if self.ended[i]:
                obs.append(env.render()), rewards.append(0.0), ends.append(1.0)
                continue
            o, r, terminated, _, _ = env.step(int(a))
            self.ended[i] = terminated
            obs.append(o), rewards.append(float(r)), ends.append(float(terminated))
        return to_tensor(np.stack(obs)), torch.tensor(rewards), torch.tensor(ends)

    def _outcomes(self) -> tuple[torch.Tensor, torch.Tensor]:
        rewards = torch.zeros(len(self.envs), len(MOVES))
        ends = torch.zeros(len(self.envs), len(MOVES))
        for i, env in enumerate(self.envs):
            if self.ended[i]:
                ends[i] = 1.0
                continue
            for a in range(len(MOVES)):
                r, end = env.outcome(a)
                rewards[i, a], ends[i, a] = r, float(end)
        return rewards, ends


def burn_in_windows(episodes: list[Episode], steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every window of ``steps`` transitions whose last frame is not a terminal one (an oracle cannot
    restore a frame whose agent stands on the enemy that ended the episode)."""
    out = []
    for ep in episodes:
        last = ep.length - 1 if ep.length and ep.terminated[-1] else ep.length
        for a in range(0, last - steps + 1):
            out.append((ep.frames[a:a + steps + 1], np.asarray(ep.actions[a:a + steps])))
    return out


def adjacent_coin_states(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames (N, 64, 64, 3) from random play where a coin lies next to the agent, and the move onto it.
    The probability a policy gives that move (uniform: 0.2) says whether it reads the frame at all."""
    rng = np.random.default_rng(seed)
    env = GridWorldEnv()
    obs, _ = env.reset(seed=seed)
    frames, moves = [], []
    while len(frames) < count:
        for a in range(1, len(MOVES)):
            cell = env.next_cell(a)
            if (cell != env.agent).any() and env.grid[tuple(cell)] == COIN:
                frames.append(obs), moves.append(a)
                break
        obs, _, terminated, truncated, _ = env.step(int(rng.integers(len(MOVES))))
        if terminated or truncated:
            obs, _ = env.reset(seed=int(rng.integers(1 << 30)))
    return np.stack(frames), np.array(moves)


@torch.no_grad()
def move_probability(ac, frames: np.ndarray, moves: np.ndarray) -> float:
    """Mean probability the policy (fresh LSTM state) gives ``moves`` on ``frames``."""
    from model.data.policies import Agent

    logits = Agent(ac).observe(to_tensor(frames, ac.device))
    return float(logits.float().softmax(-1)[torch.arange(len(moves)), torch.as_tensor(moves)].mean())


def train_in_oracle(cfg: Config, updates: int, eval_every: int, test_episodes: int = 20,
                    data_episodes: int = 64, seed: int = 0,
                    report: Callable[[dict[str, Any]], None] | None = None,
                    progress: Callable[[str, int, int], None] | None = None) -> list[dict[str, Any]]:
    """Train ``cfg``'s actor-critic for ``updates`` updates in the oracle dream (batch
    ``cfg.train.actor_critic_batch``, lr ``cfg.train.lr``) from burn-in windows of random play, and test it
    every ``eval_every`` updates (and at 0) on ``test_episodes`` real episodes, next to a random policy on the
    same seeds. Returns those records; ``report`` gets each one as it comes, ``progress(what, done, total)`` each
    update."""
    from model.nets.actor_critic import ActorCritic
    from model.data.policies import Agent, RandomPolicy
    from model.eval.parts import episode_stats, run_episodes
    from model.train.phases import make_optimizer

    if cfg.env.name != "gridworld":
        raise ValueError(f"the oracle dream is GridWorld's (its frames can be parsed), not {cfg.env.name!r}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    ac, t = ActorCritic(cfg.actor_critic, cfg.env.num_actions), cfg.train
    opt = make_optimizer(ac.model, t.lr, t.weight_decay)
    data = run_episodes("gridworld", RandomPolicy(cfg.env.num_actions, seed=seed),
                        [10_000 + seed * 1000 + i for i in range(data_episodes)])
    windows = burn_in_windows(data, cfg.actor_critic.burn_in)
    probe = adjacent_coin_states(200, seed=seed + 1)
    dream = OracleDream(t.actor_critic_batch, seed=seed)
    test_seeds = [20_000 + seed * 1000 + i for i in range(test_episodes)]
    random = episode_stats(run_episodes("gridworld", RandomPolicy(cfg.env.num_actions, seed=seed), test_seeds))
    records: list[dict[str, Any]] = []
    t0, last = time.perf_counter(), {}

    def test(update: int) -> None:
        ac.eval()
        stats = episode_stats(run_episodes("gridworld", Agent(ac), test_seeds))
        rec = {"update": update, "wall_s": round(time.perf_counter() - t0, 1), "return": stats["return_mean"],
               "return_std": stats["return_std"], "deaths": stats["terminated"],
               "random_return": random["return_mean"], "random_return_std": random["return_std"],
               "p_onto_adjacent_coin": round(move_probability(ac, *probe), 3),
               **{k: round(v, 4) for k, v in last.items()
                  if k in ("entropy", "imagined_reward", "value", "lookahead_best_prob")}}
        ac.train()
        records.append(rec)
        if report:
            report(rec)

    test(0)
    ac.train()
    for u in range(1, updates + 1):
        picks = rng.integers(len(windows), size=t.actor_critic_batch)
        frames = to_tensor(np.stack([windows[i][0] for i in picks]))
        actions = torch.as_tensor(np.stack([windows[i][1] for i in picks]), dtype=torch.long)
        loss, last = ac.imagine_and_loss(dream, frames, actions)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ac.model.parameters(), t.grad_clip)
        opt.step()
        if progress:
            progress("oracle updates", u, updates)
        if u % eval_every == 0 or u == updates:
            test(u)
    return records
