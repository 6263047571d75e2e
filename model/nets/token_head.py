"""The world model's token head: logits of a Δ-token (or IRIS token) from the transformer's output.

``flat`` (published): Linear-ReLU-Linear to one vocabulary-wide softmax. ``digits`` (FSQ tokenizers only): the
last layer gives one small softmax per FSQ digit and a code's log-probability is the sum of its digits', so
codes that share digits share what the head learnt. Both return (..., V) logits that the losses and samplers use
unchanged (the digit head's are already normalised log-probabilities). The module is the same ``nn.Sequential``
in both cases, so checkpoints keep their parameter names.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.nets.fastpath import Linear


class TokenHead(nn.Sequential):
    def __init__(self, dim: int, hidden: int, vocab_size: int, kind: str = "flat",
                 levels: tuple[int, ...] | None = None) -> None:
        self.levels = _digit_levels(kind, levels, vocab_size)
        super().__init__(Linear(dim, hidden), nn.ReLU(), Linear(hidden, sum(self.levels) or vocab_size))
        self.vocab_size = vocab_size
        if self.levels:  # (V, digits): where each code's digits sit among the last layer's outputs
            self.register_buffer("digit_index", _digit_index(self.levels), persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        raw = super().forward(h)
        if not self.levels:
            return raw
        groups = raw.float().split(list(self.levels), dim=-1)
        logp = torch.cat([F.log_softmax(g, dim=-1) for g in groups], dim=-1)
        return logp[..., self.digit_index].sum(-1)

    def raw(self, h: torch.Tensor) -> torch.Tensor:
        """The last layer's outputs: V logits (flat) or the digits' logits side by side."""
        return super().forward(h)

    def adapt_state_dict(self, state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
        """A flat head's last layer (in ``state`` under ``prefix``) into this digit head: the output for digit
        value l is the mean of the flat outputs of the codes that have it. Anything else passes unchanged."""
        key = f"{prefix}{len(self) - 1}"
        w = state.get(f"{key}.weight")
        if not self.levels or w is None or w.size(0) != self.vocab_size:
            return state
        state = dict(state)
        for part in ("weight", "bias"):
            flat = state[f"{key}.{part}"].float()
            rows = [flat[self.digit_index[:, g] == j].mean(0) for g in range(len(self.levels))
                    for j in self.digit_index[:, g].unique()]
            state[f"{key}.{part}"] = torch.stack(rows).to(state[f"{key}.{part}"].dtype)
        return state


def _digit_levels(head: str, levels: tuple[int, ...] | None, vocab_size: int) -> tuple[int, ...]:
    if head == "flat":
        return ()
    if head != "digits":
        raise ValueError(f"world_model.token_head must be 'flat' or 'digits', got {head!r}")
    if not levels or math.prod(levels) != vocab_size:
        raise ValueError("world_model.token_head='digits' needs a Δ-tokenizer with an FSQ code "
                         "(tokenizer.quantizer='fsq'): its levels say what a token's digits are")
    return tuple(int(v) for v in levels)


def _digit_index(levels: tuple[int, ...]) -> torch.Tensor:
    """(V, len(levels)): for each code, the head output of each of its digits (FSQ's mixed-radix order)."""
    codes = torch.arange(math.prod(levels))[:, None]
    basis = torch.tensor([math.prod(levels[:i]) for i in range(len(levels))])
    offsets = torch.tensor([sum(levels[:i]) for i in range(len(levels))])
    return (codes // basis) % torch.tensor(levels) + offsets
