"""Symlog two-hot encoding of scalars (rewards, values), as in DreamerV3 and Δ-IRIS.

A scalar ``y`` becomes a distribution over ``R`` buckets placed uniformly in symlog space: the mass
is split between the two buckets around ``symlog(y)`` so that the expected bucket equals it.
Regressing with a cross-entropy on such targets is insensitive to the scale of rewards, and a
softmax over the buckets decodes back to a scalar with ``symexp(E[bucket])``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(torch.abs(x))


class TwoHot(nn.Module):
    """``num_buckets`` buckets uniform in symlog space on ``[low, high]``.

    The bucket positions are a non-persistent buffer: they follow ``.to(device)`` but stay out of
    checkpoints (they are a pure function of the config)."""

    def __init__(self, num_buckets: int, low: float = -20.0, high: float = 20.0) -> None:
        super().__init__()
        assert num_buckets >= 2 and high > low
        self.num_buckets = num_buckets
        self.low, self.high = float(low), float(high)
        self.register_buffer("buckets", torch.linspace(low, high, num_buckets), persistent=False)

    def encode(self, values: torch.Tensor) -> torch.Tensor:
        """values (...) -> probabilities (..., R); each row has at most two non-zero entries."""
        x = symlog(values.float()).clamp(self.low, self.high)
        step = (self.high - self.low) / (self.num_buckets - 1)
        pos = (x - self.low) / step  # fractional bucket index in [0, R-1]
        lo = pos.floor().long().clamp(0, self.num_buckets - 2)
        w_hi = (pos - lo.float()).clamp(0.0, 1.0)
        probs = torch.zeros(*x.shape, self.num_buckets, device=x.device, dtype=torch.float32)
        probs.scatter_(-1, lo.unsqueeze(-1), (1.0 - w_hi).unsqueeze(-1))
        probs.scatter_add_(-1, (lo + 1).unsqueeze(-1), w_hi.unsqueeze(-1))
        return probs

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (..., R) -> values (...): symexp of the expected bucket under the softmax."""
        probs = F.softmax(logits.float(), dim=-1)
        return symexp(probs @ self.buckets)

    def loss(self, logits: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy between ``logits`` (N, R) and the two-hot targets of ``values`` (N,)."""
        return F.cross_entropy(logits.float(), self.encode(values))


class SignClasses(nn.Module):
    """Rewards as 3 classes, sign(r) in {-1, 0, +1}: the published code's ``two_hot_rews: false``
    (its Atari setting). Same interface as :class:`TwoHot` (``encode`` to target probabilities,
    ``decode`` logits to a value), so the world model swaps one for the other.

    Why: for sparse +-1 rewards (GridWorld's coins) a plain 3-way classifier learns the rare class
    far sooner than 255 two-hot buckets. Decoding takes the expectation p(+1) - p(-1) rather than a sample,
    as :meth:`TwoHot.decode` does."""

    num_buckets = 3

    def encode(self, values: torch.Tensor) -> torch.Tensor:
        return F.one_hot(torch.sign(values.float()).long() + 1, 3).float()

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        probs = F.softmax(logits.float(), dim=-1)
        return probs[..., 2] - probs[..., 0]


_CODECS = {"twohot": TwoHot, "sign": lambda num_buckets: SignClasses()}
REWARD_ENCODINGS = tuple(_CODECS)


def reward_codec(encoding: str, num_buckets: int) -> nn.Module:
    """The reward head's target encoding by name (``WorldModelConfig.reward_encoding``)."""
    if encoding not in _CODECS:
        raise ValueError(f"unknown reward encoding {encoding!r}; choose one of {', '.join(REWARD_ENCODINGS)}")
    return _CODECS[encoding](num_buckets)
