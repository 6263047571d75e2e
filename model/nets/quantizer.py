"""Cosine-similarity vector quantizer with an EMA codebook, as in Δ-IRIS, and finite scalar quantization.

Inputs are projected to ``code_dim``, L2-normalised and snapped to the most similar unit-norm code.
The codebook is not trained by gradients: each used code moves (EMA, decay 0.99) toward the mean
of the normalised inputs assigned to it. A usage EMA (decay 0.98) finds dead codes, which can be
replaced by current inputs ("revival"). Gradients reach the encoder through the straight-through
estimator; a small commitment loss (0.02) pulls inputs toward their code.

Revival policies (``revival``), each a bound on the usage entropy below which dead codes are revived:
* ``"collapsed"``: below 1 bit, i.e. only a codebook collapsed onto about one code (the published
  Crafter setting, ``max_codebook_updates_with_revival: 0``);
* ``"low_entropy"``: below log2(V) - 2 bits (the published rule without an update limit);
* ``"always"``, ``"off"``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class QuantizerOutput:
    q: torch.Tensor  # (N, K, input_dim) quantized, projected back, straight-through gradient
    tokens: torch.Tensor  # (N, K) long
    commitment: torch.Tensor  # scalar, already weighted
    metrics: dict[str, float]
    normalized: torch.Tensor | None = None  # (N, K, code_dim) detached unit inputs: what update_codebook takes


class Quantizer(nn.Module):
    def __init__(self, input_dim: int, vocab_size: int = 1024, code_dim: int = 64, commitment: float = 0.02,
                 ema_decay: float = 0.99, usage_decay: float = 0.98, revival: str = "collapsed") -> None:
        super().__init__()
        bounds = {"collapsed": min(1.0, math.log2(vocab_size) - 2), "low_entropy": math.log2(vocab_size) - 2,
                  "always": math.inf, "off": -math.inf}
        if revival not in bounds:
            raise ValueError(f"unknown revival policy {revival!r} ({'|'.join(bounds)})")
        self.vocab_size, self.code_dim = vocab_size, code_dim
        self.commitment_weight, self.ema_decay, self.usage_decay = commitment, ema_decay, usage_decay
        self.revival = revival
        self.revival_entropy_bits = bounds[revival]  # revive while the usage entropy is below this
        self.dead_threshold = 1.0 / (10 * vocab_size)
        self.proj_in = nn.Linear(input_dim, code_dim)
        self.proj_out = nn.Linear(code_dim, input_dim)
        self.register_buffer("codebook", F.normalize(torch.randn(vocab_size, code_dim), dim=-1))
        self.register_buffer("usage", torch.full((vocab_size,), 1.0 / vocab_size))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def normalized(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj_in(z).float(), dim=-1)

    @torch.no_grad()
    def nearest(self, e: torch.Tensor) -> torch.Tensor:
        """Unit vectors (..., code_dim) -> index of the most cosine-similar code (float32 even under
        autocast: bf16 similarities tie too often)."""
        with torch.autocast(device_type=e.device.type, enabled=False):
            return (e.float() @ self.codebook.float().t()).argmax(dim=-1)

    def forward(self, z: torch.Tensor, update: bool = False) -> QuantizerOutput:
        """``z`` (N, K, input_dim). ``update=True`` applies one EMA/revival step (training only)."""
        e = self.normalized(z)
        tokens = self.nearest(e)
        q = self.codebook[tokens]
        commitment = self.commitment_weight * (e - q).pow(2).mean()
        metrics = {"codebook_perplexity": batch_perplexity(tokens, self.vocab_size)}
        if update:
            metrics["codewords_revived"] = float(self.update_codebook(e.detach().flatten(0, -2), tokens.flatten()))
        metrics["codebook_entropy_bits"] = self.entropy_bits()
        q = e + (q - e).detach()
        return QuantizerOutput(self.proj_out(q.to(z.dtype)), tokens, commitment, metrics, e.detach())

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens (...,) -> the decoder-side vectors (..., input_dim)."""
        return self.proj_out(self.codebook[tokens])

    @torch.no_grad()
    def update_codebook(self, e: torch.Tensor, tokens: torch.Tensor) -> int:
        """EMA of each used code toward the mean of its inputs, usage EMA, then revival. Returns
        the number of revived codes."""
        counts = update_usage(self, tokens)
        sums = torch.zeros_like(self.codebook).index_add_(0, tokens, e.float())
        used = counts > 0
        means = F.normalize(sums[used] / counts[used, None], dim=-1)
        self.codebook[used] = F.normalize(self.codebook[used].lerp(means, 1 - self.ema_decay), dim=-1)

        if self.entropy_bits() >= self.revival_entropy_bits:
            return 0
        dead = torch.nonzero(self.usage < self.dead_threshold).flatten()
        if dead.numel() == 0:
            return 0
        dead = dead[torch.randperm(dead.numel(), device=dead.device)[: e.size(0)]]
        donors = torch.randperm(e.size(0), device=e.device)[: dead.numel()]
        self.codebook[dead] = e[donors]
        self.usage[dead] = 1.0 / self.vocab_size
        return int(dead.numel())

    def entropy_bits(self) -> float:
        """Entropy of the usage EMA (the published metric): log2(V) when all codes are used equally."""
        p = self.usage / self.usage.sum()
        p = p[p > 0]
        return float(-(p * p.log2()).sum())


@torch.no_grad()
def update_usage(q: "Quantizer | FSQuantizer", tokens: torch.Tensor) -> torch.Tensor:
    """One step of a quantizer's usage EMA (and update count) with this batch's flat tokens; returns
    the per-code counts. Shared by both quantizers: the entropy metric and revival read the EMA."""
    counts = torch.bincount(tokens, minlength=q.vocab_size).float()
    q.usage.lerp_(counts / tokens.numel(), 1 - q.usage_decay)
    q.num_updates += 1
    return counts


def batch_perplexity(tokens: torch.Tensor, vocab_size: int) -> float:
    """exp(entropy) of this batch's token histogram: the effective number of codes in use."""
    p = torch.bincount(tokens.flatten(), minlength=vocab_size).float()
    p = p[p > 0] / p.sum()
    return float(torch.exp(-(p * p.log()).sum()))


def codebook_usage(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Tokens (N, K) -> (K, V) counts: how often each position uses each code. ``(usage > 0).sum(1)``
    gives the number of distinct codes per position (a collapsed position uses one)."""
    k = tokens.size(-1)
    flat = tokens.reshape(-1, k).long()
    offsets = torch.arange(k, device=flat.device) * vocab_size
    return torch.bincount((flat + offsets).flatten(), minlength=k * vocab_size).view(k, vocab_size)


class FSQuantizer(nn.Module):
    """Finite scalar quantization (Mentzer et al., 2023): a factorised code with no codebook to collapse.

    Each token is ``len(levels)`` numbers, each squashed into ``[0, L_i - 1]`` and rounded (straight-through
    gradient); the token is their mixed-radix index, so levels (4, 4, 4, 4, 4) give exactly 1024 codes.
    There is nothing to revive and no commitment loss: every code is a fixed grid point, and a code is
    used as soon as the encoder puts an input in its cell. The cpu preset uses it: with the cosine VQ, its
    residual decoder learned to ignore the tokens (docs/decisions.md). Same interface as :class:`Quantizer` (``codebook`` holds the V grid points, for ``embed`` and tests).
    """

    def __init__(self, input_dim: int, levels: tuple[int, ...] = (4, 4, 4, 4, 4), usage_decay: float = 0.98) -> None:
        super().__init__()
        if not levels or min(levels) < 2:
            raise ValueError(f"FSQ levels must be integers >= 2, got {levels}")
        self.levels = tuple(int(v) for v in levels)
        self.vocab_size = math.prod(self.levels)
        self.code_dim = len(self.levels)
        self.usage_decay = usage_decay
        self.proj_in = nn.Linear(input_dim, self.code_dim)
        self.proj_out = nn.Linear(self.code_dim, input_dim)
        basis = torch.tensor([math.prod(self.levels[:i]) for i in range(self.code_dim)])
        self.register_buffer("top", torch.tensor(self.levels, dtype=torch.float32) - 1, persistent=False)
        self.register_buffer("basis", basis, persistent=False)
        self.register_buffer("codebook", self._grid(torch.arange(self.vocab_size)), persistent=False)
        self.register_buffer("usage", torch.full((self.vocab_size,), 1.0 / self.vocab_size))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def _grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (...,) -> their grid points (..., code_dim) in [-1, 1]."""
        digits = (tokens[..., None] // self.basis) % (self.top.long() + 1)
        return digits.float() / self.top * 2 - 1

    def forward(self, z: torch.Tensor, update: bool = False) -> QuantizerOutput:
        u = torch.sigmoid(self.proj_in(z).float()) * self.top  # each number in [0, L_i - 1]
        digits = u.round()
        tokens = (digits.long() * self.basis).sum(-1)
        q = (u + (digits - u).detach()) / self.top * 2 - 1  # straight-through, scaled to [-1, 1]
        metrics = {"codebook_perplexity": batch_perplexity(tokens, self.vocab_size)}
        if update:
            metrics["codewords_revived"] = float(self.update_codebook(q.detach(), tokens.flatten()))
        metrics["codebook_entropy_bits"] = self.entropy_bits()
        zero = q.new_zeros(())
        return QuantizerOutput(self.proj_out(q.to(z.dtype)), tokens, zero, metrics, q.detach())

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj_out(self.codebook[tokens])

    @torch.no_grad()
    def update_codebook(self, e: torch.Tensor, tokens: torch.Tensor) -> int:
        """Only the usage EMA (for the entropy metric): the grid never changes, nothing is revived."""
        update_usage(self, tokens)
        return 0

    entropy_bits = Quantizer.entropy_bits
