"""Collector: parallel env processes, episodes stored whole and replayable from their seed,
policy hooks, their summary, benchmark."""
import numpy as np
import pytest

from model.data.collector import Collector, benchmark_collect
from model.data.crafter_score import crafter_score
from model.data.envs import make_env
from model.data.policies import RandomPolicy
from model.data.store import EpisodeStore
from model.eval.parts import episode_stats

SMALL_CRAFTER = {"area": (32, 32), "length": 30}  # fast world generation, short episodes


class RecordingPolicy(RandomPolicy):
    """A random policy that remembers the hook calls the collector makes."""

    burn_in_steps = 3

    def __init__(self, n, seed=0):
        super().__init__(n, seed)
        self.resets, self.burn_ins, self.calls = [], [], 0

    def __call__(self, obs):
        assert obs.dtype == np.uint8 and obs.shape[1:] == (64, 64, 3)
        self.calls += 1
        return super().__call__(obs)

    def reset(self, indices):
        self.resets.append(list(indices))

    def burn_in(self, frames):
        self.burn_ins.append(frames.copy())


def replay(env_name, ep, **kw):
    """Re-run an episode from its recorded seed and actions in a fresh env."""
    env = make_env(env_name, **kw)
    obs, _ = env.reset(seed=ep.seed)
    frames, rewards = [obs], []
    for a in ep.actions:
        obs, r, term, trunc, _ = env.step(int(a))
        frames.append(obs), rewards.append(r)
    return np.stack(frames), np.array(rewards, np.float32), term, trunc


def assert_whole_episode(ep):
    ends = ep.terminated | ep.truncated
    assert ends[-1] and not ends[:-1].any()


def test_gridworld_in_processes_with_spares(tmp_path):
    store = EpisodeStore(tmp_path)
    policy = RecordingPolicy(5)
    with Collector("gridworld", 2, store, seed=1, processes=True, spares=1) as col:
        out = col.collect(policy, 301)
        assert out["steps"] == 302  # whole rounds of 2 envs
        assert len(out["episode_ids"]) >= 2 and store.ids("train") == out["episode_ids"]
        assert policy.resets[0] == [0, 1]  # every slot starts fresh
        assert sum(len(r) for r in policy.resets[1:]) == len(out["episode_ids"])  # one per new episode
        n_steps = store.num_steps
        out2 = col.collect(policy, 5)  # the 1-step excess of the last call is taken off
        assert out2["steps"] == 4
        # burn-in frames: the frames before the current one of each in-flight episode, left-padded
        assert col.collect(policy, 0)["steps"] == 0  # only resets the policy and burns it in
        frames = policy.burn_ins[-1]
        assert frames.shape == (2, 3, 64, 64, 3) and frames.dtype == np.uint8
        for i, track in enumerate(col._tracks):
            past = track.frames[-4:-1]
            np.testing.assert_array_equal(frames[i, 3 - len(past):], np.stack(past) if past else frames[i, :0])
            assert not frames[i, :3 - len(past)].any()
    seeds = set()
    for ep in store.episodes("train"):
        assert_whole_episode(ep)
        f, r, term, trunc = replay("gridworld", ep)
        np.testing.assert_array_equal(ep.frames, f)
        np.testing.assert_array_equal(ep.rewards, r)
        assert (term, trunc) == (ep.terminated[-1], ep.truncated[-1])
        seeds.add(ep.seed)
    assert len(seeds) == len(store) and store.num_steps >= n_steps


def test_collect_episodes_and_evaluate(tmp_path):
    store = EpisodeStore(tmp_path)
    with Collector("gridworld", 3, store, seed=2) as col:  # in-process by default for GridWorld
        col.collect(RandomPolicy(5, 0), 50)  # leaves unfinished episodes in flight
        ids = col.collect_episodes(RandomPolicy(5, 1), 5)
        assert len(ids) == 5 and store.ids("test") == sorted(ids)
        assert col.collect_episodes(RandomPolicy(5, 2), 2, split="test2") == store.ids("test2")
    eps = [store.get(i) for i in ids]
    for ep in eps:
        assert_whole_episode(ep)
        assert ep.length <= 100
    stats = episode_stats(eps)
    assert stats["episodes"] == 5
    assert stats["return_mean"] == pytest.approx(np.mean([e.return_ for e in eps]))
    assert stats["length_mean"] == pytest.approx(np.mean([e.length for e in eps]))
    assert "crafter_score" not in stats


def test_crafter_collection_achievements_and_replay(tmp_path):
    store = EpisodeStore(tmp_path)
    with Collector("crafter", 1, store, seed=3, env_kwargs=SMALL_CRAFTER) as col:
        assert col.processes and col.num_spares == 1
        out = col.collect(RandomPolicy(17, 0), 61)
    assert out["steps"] == 61 and len(out["episode_ids"]) == 2  # two 30-step episodes ended
    eps = [store.get(i) for i in out["episode_ids"]]
    assert eps[0].seed != eps[1].seed
    for ep in eps:
        assert ep.length == 30 and ep.truncated[-1] and not ep.terminated.any()
        assert ep.achievements.shape == (30, 22) and len(ep.achievement_names) == 22
        assert (np.diff(ep.achievements.astype(int), axis=0) >= 0).all()  # counts never go down
    f, r, _, trunc = replay("crafter", eps[1], **SMALL_CRAFTER)
    np.testing.assert_array_equal(eps[1].frames, f)
    np.testing.assert_array_equal(eps[1].rewards, r)
    assert trunc
    stats = episode_stats(eps)
    assert set(stats["success_rates"]) == set(eps[0].achievement_names)
    for name, rate in stats["success_rates"].items():
        assert rate == pytest.approx(50.0 * sum(e.unlocked()[name] for e in eps))
    assert stats["crafter_score"] == pytest.approx(crafter_score(stats["success_rates"]))


def test_benchmark_collect_runs():
    assert benchmark_collect("gridworld", 2, 200) > 0
