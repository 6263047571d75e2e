"""Exponential moving averages of a model's weights (``train.weight_average``).

With the small batches a CPU affords and a constant learning rate, the last iterate of a phase is a noisy draw
around where training is heading; its average over the last few hundred steps is a steadier, better model.
A phase ends (or is stopped) with its models set to their averages, so everything after it (the world model's
tokens, checkpoints, exports, evaluation) sees the averaged weights, and the next phase continues from them."""
from __future__ import annotations

import torch
from torch import nn


class WeightAverage:
    """EMA of ``model``'s parameters, started at their current values (so no bias correction is needed)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for n, p in model.named_parameters():
            self.shadow[n].lerp_(p.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for n, p in model.named_parameters():
            p.copy_(self.shadow[n])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = self.shadow.keys() - state.keys()
        if missing:
            raise KeyError(f"weight average lacks {len(missing)} parameters, e.g. {sorted(missing)[0]}")
        for n, t in self.shadow.items():
            t.copy_(state[n])
