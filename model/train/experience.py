"""The run's real-env side: topping the episode store up each epoch, and the agent's test episodes."""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

from model.config import Config
from model.data.collector import Collector
from model.data.envs import env_kwargs, move_actions
from model.data.policies import Agent, EpsilonGreedy, Policy, RandomPolicy
from model.data.store import EpisodeStore
from model.eval.parts import EpisodeFacts, episode_stats
from model.train.dist import Dist
from model.train.schedule import collection_target

EVAL_SEED_KEY = 10**6  # the test episodes' seed stream, apart from every collection epoch's


class Experience:
    """Collection and test episodes of one rank, into its own store, with the run's actor-critic."""

    def __init__(self, cfg: Config, store: EpisodeStore, dist: Dist, actor_critic: nn.Module):
        self.cfg, self.store, self.dist, self.actor_critic = cfg, store, dist, actor_critic
        self._train: Collector | None = None
        self._test: Collector | None = None

    def _collector(self, num_envs: int, seed_key: int) -> Collector:
        seed = int(np.random.SeedSequence([self.cfg.seed, self.dist.rank, seed_key]).generate_state(1)[0])
        env = self.cfg.env
        return Collector(env.name, num_envs, self.store, seed=seed, processes=env.name != "gridworld",
                         env_kwargs=env_kwargs(env.name, env.max_episode_steps))

    def _policy(self, epoch: int) -> Policy:
        """Epoch 1 plays uniformly at random (with sticky actions); later epochs the agent, epsilon-greedy."""
        cfg, seed, n = self.cfg, self.cfg.seed * 1000 + self.dist.rank, self.cfg.env.num_actions
        if epoch == 1:
            return RandomPolicy(n, seed=seed, repeat=cfg.train.random_repeat, moves=move_actions(cfg.env.name),
                                move_share=cfg.train.random_moves)
        return EpsilonGreedy(Agent(self.actor_critic), cfg.train.epsilon, n, seed=seed + epoch)

    def collect(self, epoch: int, progress: Callable[[int, int], None]) -> dict[str, float]:
        """Top this rank's store up to its share of ``collection_target(cfg, epoch)`` env steps."""
        cfg = self.cfg
        need = self.dist.share(collection_target(cfg, epoch)) - self.store.num_steps_in("train")
        if self._train is None:
            # A fresh seed stream per (run seed, rank, start epoch): a resumed run does not replay the worlds
            # of its first epochs.
            self._train = self._collector(cfg.train.num_envs, seed_key=epoch)
        if need <= 0:
            return {}
        policy = self._policy(epoch)
        t0 = time.perf_counter()
        out = self._train.collect(policy, need, progress=progress)
        while not self.store.num_steps_in("train"):  # nothing finished yet: training needs an episode
            more = self._train.collect(policy, 16 * cfg.train.num_envs, progress=progress)
            out = {k: out[k] + more[k] for k in out}
        stats: dict[str, float] = {}
        if out["returns"]:
            stats = {"collect/return": float(np.mean(out["returns"])), "collect/episodes": float(len(out["returns"]))}
        stats["collect/steps_per_s"] = out["steps"] / max(time.perf_counter() - t0, 1e-9)
        return stats

    def evaluate(self) -> dict[str, Any]:
        """``test_episodes`` real episodes with the agent (no exploration), split across ranks, summarised by
        :func:`model.eval.parts.episode_stats` (empty without test episodes)."""
        cfg = self.cfg
        n = math.ceil(cfg.train.test_episodes / self.dist.world)
        facts: list[EpisodeFacts] = []
        if n > 0:
            if self._test is None:
                self._test = self._collector(min(n, cfg.train.num_envs), seed_key=EVAL_SEED_KEY)
            self.store.clear("test")
            ids = self._test.collect_episodes(Agent(self.actor_critic), n, split="test")
            facts = [EpisodeFacts.of(self.store.get(i)) for i in ids]
        facts = [f for part in self.dist.all_gather(facts) for f in part]
        return episode_stats(facts) if facts else {}

    def close(self) -> None:
        for col in (self._train, self._test):
            if col is not None:
                col.close()
