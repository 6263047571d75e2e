"""Segment sampler: shapes, padding masks at both episode ends, burn-in windows, priorities."""
import numpy as np
import pytest
import torch

from helpers import gridworld_episode
from model.data.sampler import SegmentSampler, to_torch
from model.data.store import EpisodeStore


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = EpisodeStore(tmp_path_factory.mktemp("store"))
    for seed, steps in enumerate([3, 7, 12, 25, 40]):
        s.add(gridworld_episode(seed, steps))
    s.add(gridworld_episode(99, 10), split="test")
    return s


def check_against_episodes(store, batch):
    """Every position holds exactly the episode's step s0 + t, or padding with the right masks."""
    B, L = batch.shape
    for b in range(B):
        ep = store.get(batch.episode_ids[b])
        T = ep.length
        for t in range(L):
            s = batch.starts[b] + t
            assert batch.mask[b, t] == (0 <= s <= T)
            assert batch.action_mask[b, t] == (0 <= s < T)
            if 0 <= s <= T:
                np.testing.assert_array_equal(batch.frames[b, t], ep.frames[s])
            else:
                assert not batch.frames[b, t].any()
            if 0 <= s < T:
                assert batch.actions[b, t] == ep.actions[s] and batch.rewards[b, t] == ep.rewards[s]
                assert batch.ends[b, t] == ep.terminated[s]
            else:
                assert batch.actions[b, t] == 0 and batch.rewards[b, t] == 0 and not batch.ends[b, t]


def test_segment_shapes_and_contents(store):
    sampler = SegmentSampler(store, seq_len=10, rng=0)
    batch = sampler.sample(16)
    assert batch.frames.shape == (16, 10, 64, 64, 3) and batch.frames.dtype == np.uint8
    assert batch.actions.shape == batch.rewards.shape == batch.ends.shape == batch.mask.shape == (16, 10)
    assert batch.actions.dtype == np.int64 and batch.rewards.dtype == np.float32
    assert set(batch.episode_ids) <= set(store.ids("train"))
    check_against_episodes(store, batch)
    assert batch.action_mask.any(axis=1).all()  # every segment holds at least one real transition


def test_padding_at_both_episode_ends(store):
    sampler = SegmentSampler(store, seq_len=10, recency_exponent=0.0, rng=1)
    left = right = 0
    for _ in range(20):
        batch = sampler.sample(8)
        check_against_episodes(store, batch)
        left += int((~batch.mask[:, 0]).sum())
        right += int((~batch.mask[:, -1]).sum())
        # padding is contiguous: real frames form one run
        for m in batch.mask:
            idx = np.flatnonzero(m)
            assert idx.size and (np.diff(idx) == 1).all()
    assert left > 0 and right > 0


def test_burn_in_windows(store):
    sampler = SegmentSampler(store, seq_len=10, burn_in=5, rng=2)
    for _ in range(20):
        batch = sampler.sample_burn_in(8)
        assert batch.frames.shape[:2] == (8, 6)
        check_against_episodes(store, batch)
        # the last position is a real step with an action (imagination starts there) ...
        assert batch.mask[:, -1].all() and batch.action_mask[:, -1].all()
        # ... and padding only ever sits on the left
        assert (np.diff(batch.mask.astype(int), axis=1) >= 0).all()
    short = sampler.sample_burn_in(64, burn_in=5)
    assert (~short.mask[:, 0]).any()  # the 3-step episode forces left padding
    assert sampler.sample_burn_in(4, burn_in=2).frames.shape[1] == 3


def test_count_priority(store):
    sampler = SegmentSampler(store, seq_len=4, recency_exponent=5.0, rng=3)
    np.testing.assert_allclose(sampler.probabilities(), np.full(5, 0.2))
    sampler.load_state_dict({"ids": [0, 1, 2, 3], "counts": [3, 1, 1, 0]})
    w = np.array([4.0 ** -5, 2.0 ** -5, 2.0 ** -5, 1.0, 1.0])
    np.testing.assert_allclose(sampler.probabilities(), w / w.sum())
    ids = sampler.sample(200).episode_ids
    assert (ids >= 3).mean() > 0.7  # the never-drawn episodes dominate
    assert sum(sampler.state_dict()["counts"]) == 5 + 200
    # a new episode enters with count 0, i.e. top priority
    before = len(store.ids("train"))
    new_id = store.add(gridworld_episode(50, 8))
    p = sampler.probabilities()
    assert len(p) == before + 1 and p[store.ids("train").index(new_id)] == p.max()
    uniform = SegmentSampler(store, seq_len=4, recency_exponent=0.0)
    uniform.load_state_dict(sampler.state_dict())
    np.testing.assert_allclose(uniform.probabilities(), 1 / (before + 1))


def test_seeded_and_split(store):
    a = SegmentSampler(store, seq_len=5, rng=7).sample(4)
    b = SegmentSampler(store, seq_len=5, rng=7).sample(4)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.starts, b.starts)
    test = SegmentSampler(store, seq_len=5, split="test", rng=0).sample(4)
    assert set(test.episode_ids) == set(store.ids("test"))
    with pytest.raises(ValueError):
        SegmentSampler(store, seq_len=5, split="nope").sample(1)


def test_to_torch(store):
    batch = SegmentSampler(store, seq_len=6, rng=0).sample(3)
    tb = to_torch(batch, "cpu")
    assert tb.frames.shape == (3, 6, 3, 64, 64) and tb.frames.dtype == torch.float32
    assert 0.0 <= tb.frames.min() and tb.frames.max() <= 1.0
    assert torch.equal(tb.frames[0, 0], torch.as_tensor(batch.frames[0, 0]).permute(2, 0, 1).float() / 255)
    assert tb.actions.dtype == torch.int64 and tb.ends.dtype == torch.int64
    assert tb.mask.dtype == torch.bool and torch.equal(tb.mask, torch.as_tensor(batch.mask))
