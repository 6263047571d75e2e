"""Segment sampler: fixed-length windows of stored episodes for the tokenizer, world model and
actor-critic, with padding masks and count-based prioritisation of fresh episodes.

Batch layout (``L`` = segment length). Position ``t`` of a segment starting at step ``s0`` holds
episode step ``s = s0 + t`` of an episode with ``T`` steps (frames x_0..x_T):

* ``frames[b, t]``  = x_s                       where 0 <= s <= T, zeros elsewhere
* ``actions[b, t]``, ``rewards[b, t]``, ``ends[b, t]`` = a_s, r_s, terminated_s   where 0 <= s < T,
  zeros / False elsewhere (also at s = T: the last frame has no action)
* ``mask[b, t]``        = 0 <= s <= T   (the frame is real, not padding)
* ``action_mask[b, t]`` = 0 <= s < T    (a real transition x_s --a_s--> x_{s+1} starts here)

So ``action_mask[:, t]`` implies that x_{s+1} exists (it is ``frames[:, t+1]`` if t+1 < L).
Typical use: tokenizer pairs ``(frames[:, :-1], actions[:, :-1], frames[:, 1:])`` valid where
``action_mask[:, :-1]``; reward/end losses valid where ``action_mask``.

``sample(B)`` (tokenizer, world model): a step t is drawn uniformly inside the episode, then the
window placed uniformly among the L windows that contain it, so segments may start before the
episode (left padding) and end after it (right padding). ``sample_burn_in(B, burn_in)``
(actor-critic): L = burn_in + 1 and padding only on the left; the last position is always a real,
non-final step x_s (s < T) from which imagination starts; pass ``frames`` and ``actions[:, :-1]``
to ``DreamEnv.reset``. Both follow the published Δ-IRIS code (``can_sample_beyond_end``).

Prioritisation (``recency_exponent`` = α, the published "priority_alpha", 5 for Crafter): each
sampler counts how often it has drawn each episode, n_i, and draws episode i with probability
proportional to (1 + n_i)^-α. A freshly collected episode (n_i = 0) thus has the highest weight,
which favours recent data without a time stamp; α = 0 is uniform. As in the published code, the
trainer keeps one sampler (one count table) per component, and may set ``update_counts = False``
during the first epoch; counts survive restarts through ``state_dict``/``load_state_dict``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .frames import to_tensor
from .store import CorruptEpisodeError, EpisodeStore


@dataclass
class Batch:
    frames: np.ndarray  # uint8 (B, L, H, W, 3)
    actions: np.ndarray  # int64 (B, L)
    rewards: np.ndarray  # float32 (B, L)
    ends: np.ndarray  # bool (B, L): terminated
    mask: np.ndarray  # bool (B, L): frame is real
    action_mask: np.ndarray  # bool (B, L): a real transition starts here
    episode_ids: np.ndarray  # int64 (B,)
    starts: np.ndarray  # int64 (B,): episode step of position 0 (negative = left padding)

    @property
    def shape(self) -> tuple[int, int]:
        return self.actions.shape


@dataclass
class TorchBatch:
    frames: torch.Tensor  # float32 (B, L, 3, H, W) in [0, 1]
    actions: torch.Tensor  # int64 (B, L)
    rewards: torch.Tensor  # float32 (B, L)
    ends: torch.Tensor  # int64 (B, L), 0/1: ready as a class target
    mask: torch.Tensor  # bool (B, L)
    action_mask: torch.Tensor  # bool (B, L)


def to_torch(batch: Batch, device: torch.device | str | None = None) -> TorchBatch:
    return TorchBatch(
        frames=to_tensor(batch.frames, device),
        actions=torch.as_tensor(batch.actions, device=device),
        rewards=torch.as_tensor(batch.rewards, device=device),
        ends=torch.as_tensor(batch.ends, device=device).long(),
        mask=torch.as_tensor(batch.mask, device=device),
        action_mask=torch.as_tensor(batch.action_mask, device=device),
    )


class SegmentSampler:
    def __init__(self, store: EpisodeStore, seq_len: int, recency_exponent: float = 5.0, burn_in: int = 0,
                 split: str = "train", rng: np.random.Generator | int | None = None):
        if seq_len < 1:
            raise ValueError("seq_len must be >= 1")
        self.store, self.seq_len, self.split = store, seq_len, split
        self.alpha, self.burn_in = recency_exponent, burn_in
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self.update_counts = True
        self._count_map: dict[int, int] = {}  # draws per episode id, as of the last sync
        self._version = -1
        self._ids = np.zeros(0, np.int64)
        self._lengths = np.zeros(0, np.int64)
        self._counts = np.zeros(0, np.int64)  # aligned with _ids; updated on every draw

    # ------------------------------------------------------------ episode choice
    def _sync(self) -> None:
        if self._version != self.store.version:
            self._count_map = self.counts
            ids, lengths = self.store.lengths(self.split)
            keep = lengths > 0  # an episode without a step has no segment to give
            self._ids, self._lengths = ids[keep], lengths[keep]
            self._counts = np.array([self._count_map.get(int(i), 0) for i in self._ids], np.int64)
            self._version = self.store.version

    @property
    def counts(self) -> dict[int, int]:
        """Episode id -> how often this sampler drew it."""
        return {**self._count_map, **{int(i): int(c) for i, c in zip(self._ids, self._counts)}}

    def probabilities(self) -> np.ndarray:
        """Current draw probability of each episode of the split, in ``store.ids(split)`` order."""
        self._sync()
        w = (1.0 + self._counts) ** -float(self.alpha)
        return w / w.sum()

    def _choose(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        self._sync()
        if len(self._ids) == 0:
            raise ValueError(f"no episodes with steps in split {self.split!r} of {self.store.root}")
        idx = self.rng.choice(len(self._ids), size=batch_size, p=self.probabilities())
        if self.update_counts:
            np.add.at(self._counts, idx, 1)
        return self._ids[idx], self._lengths[idx]

    def state_dict(self) -> dict[str, list[int]]:
        counts = self.counts
        ids = sorted(counts)
        return {"ids": ids, "counts": [counts[i] for i in ids]}

    def load_state_dict(self, state: dict[str, list[int]]) -> None:
        self._count_map = {int(i): int(c) for i, c in zip(state["ids"], state["counts"])}
        self._ids, self._counts, self._version = np.zeros(0, np.int64), np.zeros(0, np.int64), -1

    # ------------------------------------------------------------ segments
    def sample(self, batch_size: int, seq_len: int | None = None) -> Batch:
        """Windows that may hang over both episode ends (tokenizer, world model)."""
        L = seq_len or self.seq_len

        def place(lengths: np.ndarray) -> np.ndarray:
            t = self.rng.integers(0, lengths)
            return t - self.rng.integers(0, L, size=len(lengths))

        return self._sample(batch_size, L, place)

    def sample_burn_in(self, batch_size: int, burn_in: int | None = None) -> Batch:
        """Windows of burn_in + 1 steps ending at a random real step, padded on the left only."""
        L = (self.burn_in if burn_in is None else burn_in) + 1

        def place(lengths: np.ndarray) -> np.ndarray:
            t = self.rng.integers(0, lengths)
            stops = np.minimum(lengths, t + 1 + self.rng.integers(0, L, size=len(lengths)))
            return stops - L

        return self._sample(batch_size, L, place)

    def _sample(self, batch_size: int, L: int, place) -> Batch:
        for _ in range(10):
            ids, lengths = self._choose(batch_size)
            try:
                return self._gather(ids, place(lengths), L)
            except CorruptEpisodeError:
                continue  # the store reported and dropped it; draw again without it
        raise RuntimeError(f"too many damaged episodes in {self.store.root}: {self.store.corrupt}")

    def _gather(self, ids: np.ndarray, starts: np.ndarray, L: int) -> Batch:
        B = len(ids)
        first = self.store.get(int(ids[0]))
        H, W = first.frames.shape[1:3]
        out = Batch(frames=np.zeros((B, L, H, W, 3), np.uint8), actions=np.zeros((B, L), np.int64),
                    rewards=np.zeros((B, L), np.float32), ends=np.zeros((B, L), bool),
                    mask=np.zeros((B, L), bool), action_mask=np.zeros((B, L), bool),
                    episode_ids=ids.astype(np.int64), starts=starts.astype(np.int64))
        for b, (ep_id, s0) in enumerate(zip(ids, starts)):
            ep = first if b == 0 else self.store.get(int(ep_id))
            T = ep.length
            lo, hi = max(s0, 0), min(s0 + L, T + 1)  # frames x_lo .. x_{hi-1}
            out.frames[b, lo - s0:hi - s0] = ep.frames[lo:hi]
            out.mask[b, lo - s0:hi - s0] = True
            hi_a = min(s0 + L, T)  # transitions lo .. hi_a-1
            if hi_a > lo:
                sl = slice(lo - s0, hi_a - s0)
                out.actions[b, sl] = ep.actions[lo:hi_a]
                out.rewards[b, sl] = ep.rewards[lo:hi_a]
                out.ends[b, sl] = ep.terminated[lo:hi_a]
                out.action_mask[b, sl] = True
        return out
