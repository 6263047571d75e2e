"""Tokens of stored transitions, encoded once per tokenizer version instead of once per sample.

While the world model trains, the tokenizer is frozen, yet every world-model batch would re-encode
its B x L frame pairs, a large share of a cpu-preset world-model step, and the same transitions come
back many times within a phase (many more pairs are drawn than the store holds). The cache
keys tokens by (episode, step); :meth:`TokenCache.clear` must be called whenever the tokenizer
changes (the trainer does so at the start of each world-model phase).

The tokens are exactly those of the uncached path, padding included: a pair that touches a real frame
(x_s -> x_{s+1}, zero padding -> x_0, x_T -> zero padding) is a fixed function of (episode, step), and a
pair of two padding frames gets the tokens of an all-zero pair.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from model.data.sampler import Batch

Encode = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class TokenCache:
    def __init__(self, tokens_per_frame: int, frame_only: bool = False) -> None:
        # frame_only: IRIS-style tokens of x_s alone (defined for the last frame too).
        self.K, self.frame_only = tokens_per_frame, frame_only
        self._tokens: dict[tuple[int, int], np.ndarray] = {}  # (episode id, step) -> (K,)
        self._pad: torch.Tensor | None = None
        self.hits = self.misses = 0

    def clear(self) -> None:
        self._tokens.clear()
        self._pad = None

    def __len__(self) -> int:
        return len(self._tokens)

    def tokens(self, batch: Batch, frames: torch.Tensor, encode: Encode) -> torch.Tensor:
        """(B, L-1, K) tokens for a world-model batch of L frames: at position t, the tokens of the
        transition x_t -> x_{t+1} (Δ) or of x_t (frame_only). ``frames`` is ``batch.frames`` as a
        float tensor (B, L, 3, H, W) on the model's device; ``encode(prev, actions, next)``."""
        B, L = batch.actions.shape
        m = batch.mask
        # Every pair that touches a real frame is a fixed function of (episode, step): also the one
        # from zero padding into x_0 and the one from x_T into padding.
        valid = m[:, :-1] if self.frame_only else m[:, :-1] | m[:, 1:]
        bs, ts = np.nonzero(valid)
        keys = list(zip(batch.episode_ids[bs].tolist(), (batch.starts[bs] + ts).tolist()))
        first: dict[tuple[int, int], int] = {}
        for i, k in enumerate(keys):
            if k not in self._tokens:
                first.setdefault(k, i)  # a segment may repeat in one batch: encode it once
        todo = np.fromiter(first.values(), dtype=np.int64, count=len(first))
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)
        if len(todo):
            bi, ti = torch.as_tensor(bs[todo]), torch.as_tensor(ts[todo])
            prev = frames[bi, ti]
            nxt = prev if self.frame_only else frames[bi, ti + 1]
            acts = torch.as_tensor(batch.actions[bs[todo], ts[todo]], device=frames.device)
            for i, z in zip(todo.tolist(), encode(prev, acts, nxt).cpu().numpy()):
                self._tokens[keys[i]] = z
        out = torch.empty((B, L - 1, self.K), dtype=torch.long, device=frames.device)
        if not valid.all():
            if self._pad is None:
                zero = torch.zeros_like(frames[:1, 0])
                self._pad = encode(zero, torch.zeros(1, dtype=torch.long, device=frames.device), zero)[0]
            out[:] = self._pad
        if keys:
            out[torch.as_tensor(bs), torch.as_tensor(ts)] = torch.as_tensor(
                np.stack([self._tokens[k] for k in keys]), device=frames.device)
        return out
