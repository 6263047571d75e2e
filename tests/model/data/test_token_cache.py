"""Token cache: a world-model batch built from cached tokens equals the one encoded from scratch."""
import numpy as np
import pytest
import torch

from helpers import gridworld_episode
from model.config import tiny
from model.data.sampler import SegmentSampler, to_torch
from model.data.store import EpisodeStore
from model.data.token_cache import TokenCache
from model.nets.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = EpisodeStore(tmp_path_factory.mktemp("store"))
    for seed, steps in enumerate([4, 9, 15, 30]):
        s.add(gridworld_episode(seed, steps))
    return s


@pytest.mark.parametrize("kind", ["delta", "iris"])
def test_cached_tokens_equal_fresh_encoding(store, kind):
    torch.manual_seed(0)
    cfg = tiny().tokenizer
    cfg.kind = kind
    if kind == "iris":
        cfg.tokens_per_frame = 16
    tok = build_tokenizer(cfg, 5).eval()
    calls = []

    def encode(prev, actions, nxt):
        calls.append(len(prev))
        with torch.no_grad():
            return tok.encode(prev, actions, nxt)

    cache = TokenCache(cfg.tokens_per_frame, frame_only=kind == "iris")
    sampler = SegmentSampler(store, 8, 0.0, rng=np.random.default_rng(0))
    for draw in range(6):
        raw = sampler.sample(6)
        b = to_torch(raw)
        got = cache.tokens(raw, b.frames, encode)
        frames, nxt, actions = b.frames[:, :-1], b.frames[:, 1:], b.actions[:, :-1]
        with torch.no_grad():  # the uncached reference: every position encoded in one batch
            ref = tok.encode(frames.flatten(0, 1), actions.flatten(),
                             (frames if kind == "iris" else nxt).flatten(0, 1)).view(got.shape)
        assert got.shape == (6, 7, cfg.tokens_per_frame)
        assert torch.equal(got, ref), draw  # padding included
        assert (~b.mask).any()  # the draws do pad
    assert cache.hits > 0 and cache.misses == len(cache) <= store.num_steps_in("train") + 2 * 4
    before = sum(calls)
    cache.clear()  # a retrained tokenizer: everything is encoded again
    raw = sampler.sample(6)
    cache.tokens(raw, to_torch(raw).frames, encode)
    assert sum(calls) > before and cache.misses > 0
