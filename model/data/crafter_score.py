"""The Crafter score (Hafner, 2021): a geometric mean of achievement success rates.

score = exp(mean_i ln(1 + s_i)) - 1, with s_i in percent (0..100) the share of episodes in which
achievement i was unlocked at least once. The +1 keeps never-unlocked achievements from zeroing it.
Published: human 50.5, DreamerV3 14.5, random 1.6.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np


def crafter_score(success_rates_percent: Mapping[str, float] | Iterable[float]) -> float:
    rates = np.asarray(list(success_rates_percent.values() if isinstance(success_rates_percent, Mapping)
                            else success_rates_percent), dtype=np.float64)
    if rates.size == 0:
        raise ValueError("crafter_score needs at least one success rate")
    if (rates < 0).any() or (rates > 100).any():
        raise ValueError("success rates are percentages in [0, 100]")
    return float(np.exp(np.mean(np.log1p(rates))) - 1.0)


def success_rates(unlocked: np.ndarray) -> np.ndarray:
    """(episodes, achievements) bool/counts -> percent of episodes that unlocked each achievement."""
    unlocked = np.asarray(unlocked)
    if unlocked.shape[0] == 0:
        return np.zeros(unlocked.shape[1:], np.float64)
    return 100.0 * (unlocked > 0).mean(axis=0)
