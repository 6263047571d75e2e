"""Collector: parallel env processes, episodes stored whole and replayable from their seed,
policy hooks, evaluation, benchmark."""
import numpy as np
import pytest

from model.data.collector import Collector, EpsilonGreedy, RandomPolicy, benchmark_collect, evaluate
from model.data.crafter_score import crafter_score
from model.data.envs import make_env
from model.data.store import EpisodeStore

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
    stats = evaluate(eps)
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
    stats = evaluate(eps)
    assert set(stats["success_rates"]) == set(eps[0].achievement_names)
    for name, rate in stats["success_rates"].items():
        assert rate == pytest.approx(50.0 * sum(e.unlocked()[name] for e in eps))
    assert stats["crafter_score"] == pytest.approx(crafter_score(stats["success_rates"]))


def test_epsilon_greedy():
    class Constant:
        def __init__(self):
            self.reset_calls = []

        def __call__(self, obs):
            return np.full(len(obs), 2)

        def reset(self, idx):
            self.reset_calls.append(idx)

    obs = np.zeros((1000, 64, 64, 3), np.uint8)
    inner = Constant()
    assert (EpsilonGreedy(inner, 0.0, 17, seed=0)(obs) == 2).all()
    mixed = EpsilonGreedy(inner, 0.3, 17, seed=0)(obs)
    assert 0.6 < (mixed == 2).mean() < 0.8 and len(np.unique(mixed)) == 17
    wrapped = EpsilonGreedy(inner, 1.0, 17, seed=0)
    wrapped.reset([1])
    assert inner.reset_calls == [[1]]
    with pytest.raises(ValueError):
        EpsilonGreedy(inner, 1.5, 17)


def test_benchmark_collect_runs():
    assert benchmark_collect("gridworld", 2, 200) > 0


def test_random_policy_repeat_walks_with_a_uniform_marginal():
    obs = np.zeros((4, 8, 8, 3), np.uint8)
    iid, sticky = RandomPolicy(5, seed=0), RandomPolicy(5, seed=0, repeat=0.75)
    a = np.stack([iid(obs) for _ in range(4000)])
    b = np.stack([sticky(obs) for _ in range(4000)])
    same = lambda x: float((x[1:] == x[:-1]).mean())
    assert abs(same(a) - 0.2) < 0.03  # i.i.d.: the next action matches 1 time in 5
    assert abs(same(b) - (0.75 + 0.25 * 0.2)) < 0.03  # kept 3 times in 4, else a fresh uniform draw
    assert np.abs(np.bincount(b.ravel(), minlength=5) / b.size - 0.2).max() < 0.03
    sticky.reset([1])  # a new episode in env 1 draws afresh: -1 is never returned, other envs keep theirs
    assert sticky.last[1] == -1 and (sticky(obs) >= 0).all()
    with pytest.raises(ValueError, match="repeat"):
        RandomPolicy(5, repeat=1.0)
