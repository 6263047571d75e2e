"""The world model's generation memory: per-layer keys and values plus the raw input embeddings (see the
world model's module docstring for the rolling window that uses them)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from model.nets.world_model import WorldModelOutput


class KVCache:
    """Per-layer keys/values plus the raw input embeddings (for re-priming after a flush)."""

    def __init__(self, num_layers: int, batch: int, heads: int, max_len: int, head_dim: int, embed_dim: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        shape = (batch, heads, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.emb = torch.zeros(batch, max_len, embed_dim, device=device)
        self.batch = batch
        self.length = 0  # tokens whose keys/values are in the cache
        self.start_step = 0  # steps dropped since prime: the window's first step, relative to the context
        self.pending: torch.Tensor | None = None  # (B, p, D) embeddings to feed before the next chunk
        self.last: WorldModelOutput | None = None  # logits of the last generate_step, (B, 1, ...) shaped
        self.outcomes: tuple[torch.Tensor, torch.Tensor] | None = None  # generate_step(score_actions=True)
        self.motion: torch.Tensor | None = None  # (B,) the last step's motion, with a motion input

    def clear(self) -> None:
        self.length = 0
        self.start_step = 0
        self.pending = None
        self.last = None
        self.motion = None

    def repeat(self, n: int) -> "KVCache":
        """A copy of this batch-1 cache with the batch repeated ``n`` times (branching futures): the n
        copies share the context and go their own ways from the next token."""
        if self.batch != 1:
            raise ValueError(f"only a batch-1 cache can be repeated, this one has batch {self.batch}")
        out = object.__new__(KVCache)
        used = slice(0, self.length)
        out.k = [_repeat_used(k, n, used) for k in self.k]
        out.v = [_repeat_used(v, n, used) for v in self.v]
        out.emb = _repeat_used(self.emb, n, used)
        out.batch, out.length, out.start_step = n, self.length, self.start_step
        out.pending = None if self.pending is None else self.pending.expand(n, -1, -1).clone()
        out.last, out.outcomes, out.motion = None, None, None
        return out


def _repeat_used(t: torch.Tensor, n: int, used: slice) -> torch.Tensor:
    """A zeroed buffer shaped like ``t`` with batch ``n``, holding ``t``'s filled positions in each row."""
    out = t.new_zeros((n,) + t.shape[1:])
    seq = 2 if t.dim() == 4 else 1  # k/v: (B, heads, L, hd); emb: (B, L, D)
    index = (slice(None),) * seq + (used,)
    out[index] = t[index]
    return out
