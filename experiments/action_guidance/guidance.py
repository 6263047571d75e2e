"""Action guidance for the dream: sample each Δ-token from the world model's prediction for the chosen action pushed
away from its prediction for a contrast action (``noop``), with the same past:

    guided = log p(. | a) + w * (log p(. | a) - log p(. | noop))

Why: on some real moves the Crafter dream keeps its view still. The difference between the two predictions is what
the action itself changes; ``w > 0`` weighs it more, as classifier-free guidance does for a prompt, without training
anything. ``w = 0`` is the product's sampling; a ``noop`` step is unchanged for any ``w`` (both rows are the same).

Each guided step copies the batch-1 cache into a batch of two (the action, the contrast), runs one step over both,
samples every token once from the guided logits and feeds it to both rows, and keeps the first row as the cache.
:func:`action_guidance` swaps this step in for every world model for the length of a ``with`` block.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

import model.nets.world_model as world_model
from model.nets.kv_cache import KVCache
from model.nets.world_model import WorldModel, WorldModelOutput


def guided_logits(logits: torch.Tensor, contrast: torch.Tensor, weight: float) -> torch.Tensor:
    """(B, V) logits of the action and of the contrast -> (B, V) guided log-probabilities."""
    logp, base = logits.float().log_softmax(-1), contrast.float().log_softmax(-1)
    return logp + weight * (logp - base)


def _keep_first_row(cache: KVCache, pair: KVCache) -> None:
    """``cache`` takes row 0 of the two-row cache ``pair`` after a step (views, no copy)."""
    cache.k = [k[:1] for k in pair.k]
    cache.v = [v[:1] for v in pair.v]
    cache.emb = pair.emb[:1]
    cache.length, cache.start_step = pair.length, pair.start_step
    cache.pending = None if pair.pending is None else pair.pending[:1]
    cache.motion = None if pair.motion is None else pair.motion[:1]
    last = pair.last
    cache.last = WorldModelOutput(last.token_logits[:1], last.reward_logits[:1], last.end_logits[:1],
                                  None if last.motion_logits is None else last.motion_logits[:1])
    cache.outcomes = None if pair.outcomes is None else tuple(o[:1] for o in pair.outcomes)


def guided_step(wm: WorldModel, plain_step, cache: KVCache, frame: torch.Tensor | None, action: torch.Tensor,
                temperature: float, weight: float, contrast: int, **kwargs):
    """``WorldModel.generate_step`` (``plain_step``) with action guidance, for a batch-1 cache."""
    if cache.batch != 1 or weight == 0 or kwargs.get("tokens") is not None or int(action[0]) == contrast:
        return plain_step(wm, cache, frame, action, temperature, **kwargs)
    motions = kwargs.pop("motions", None)
    if motions is not None:
        raise ValueError("action guidance picks the contrast's motion itself; do not pass motions")
    wm.settle(cache)
    pair = cache.repeat(2)
    actions = torch.cat([action.view(1), action.new_tensor([contrast])])
    frames = None if frame is None else frame.expand(2, *frame.shape[1:])
    sampler = world_model.sample_tokens

    def sample_guided(logits: torch.Tensor, t: float) -> torch.Tensor:
        token = sampler(guided_logits(logits[:1], logits[1:], weight), t)
        return token.expand(2)

    world_model.sample_tokens = sample_guided
    try:
        tokens, reward, end_prob = plain_step(wm, pair, frames, actions, temperature, **kwargs)
    finally:
        world_model.sample_tokens = sampler
    _keep_first_row(cache, pair)
    return tokens[:1], reward[:1], end_prob[:1]


@contextmanager
def action_guidance(weight: float, contrast: int = 0) -> Iterator[None]:
    """Every world model's dream step is guided by ``weight`` against action ``contrast`` inside the block."""
    plain = WorldModel.generate_step

    def step(self, cache, frame, action, temperature=1.0, **kwargs):
        return guided_step(self, plain, cache, frame, action, temperature, weight, contrast, **kwargs)

    WorldModel.generate_step = step
    try:
        yield
    finally:
        WorldModel.generate_step = plain
