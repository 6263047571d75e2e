"""Min-p sampling of the world model's tokens: drop every token whose probability is below ``min_p`` times the
most likely one's, then sample the rest exactly (Gumbel-max).

Why: the dream's smears look like draws from the tail of the token distributions. Min-p cuts that tail where a
distribution is sure and leaves a flat one (a new strip the world model cannot know) nearly whole, which a lower
temperature does not. The product samples at a temperature only (``model.nets.world_model.sample_tokens``);
:func:`min_p_sampling` swaps this sampler in for the length of a ``with`` block.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch

import model.nets.world_model as world_model
from model.nets.world_model import sample_tokens  # the product's sampler, bound before any swap


def min_p_tokens(logits: torch.Tensor, temperature: float, min_p: float) -> torch.Tensor:
    """logits (B, V) -> (B,) tokens; ``min_p`` = 0 is plain sampling at ``temperature``, <= 0 temperature greedy."""
    if not 0 <= min_p <= 1:
        raise ValueError(f"min_p must be in [0, 1], got {min_p}")
    if min_p > 0 and temperature > 0:
        logp = (logits.float() / temperature).log_softmax(-1)
        logits = logits.float().masked_fill(logp < logp.max(-1, keepdim=True).values + math.log(min_p), float("-inf"))
    return sample_tokens(logits, temperature)


@contextmanager
def min_p_sampling(min_p: float) -> Iterator[None]:
    """Every world model samples its tokens with :func:`min_p_tokens` inside the block."""
    plain = world_model.sample_tokens
    world_model.sample_tokens = lambda logits, temperature: min_p_tokens(logits, temperature, min_p)
    try:
        yield
    finally:
        world_model.sample_tokens = plain
