"""Teach the world model's motion head to read decoded frames.

In the Crafter dream the transformer does what its motion input (the motion head's pick) says, and the head reads
real frames far better than the dream's own (``diagnose.py``; the figures are in this folder's README). Here the
head alone trains on what the dream shows it: the real walk's tokens decoded in the tokenizer's closed loop (the
frames of a perfect world model, smears and drift included), beside real frames, each labelled with the real pair's
motion. The transformer, the tokenizer and the tokens do not change.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from model.data.frames import to_tensor
from model.data.view_motion import ViewGeometry, motion_labels
from model.eval.keys import closed_loop


@dataclass
class Reading:
    """Frames the head reads (N, 3, H, W) float in [0, 1], their actions (N,) and the real motion labels (N,)."""
    frames: torch.Tensor
    actions: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.labels.numel()

    @staticmethod
    def cat(parts: Sequence["Reading"]) -> "Reading":
        return Reading(*(torch.cat([getattr(p, f) for p in parts]) for f in ("frames", "actions", "labels")))


@torch.no_grad()
def readings(tokenizer, frames: np.ndarray, actions: np.ndarray, view: ViewGeometry,
             moves: torch.Tensor) -> tuple[Reading, Reading]:
    """One walk -> (its real frames, its closed-loop decoded frames), each step labelled with the real motion."""
    real = to_tensor(frames, "cpu")
    acts = torch.as_tensor(actions)
    labels = motion_labels(real[:-1], real[1:], acts, moves, view)
    loop = closed_loop(tokenizer, real[None], acts[None])[0]  # decoded x_1..x_T
    decoded = torch.cat([real[:1], loop[:-1]])  # the frame each action is taken from, as the dream has it
    return Reading(real[:-1], acts, labels), Reading(decoded.float(), acts, labels)


def save_readings(path: str, key: list, parts: Sequence[Reading]) -> None:
    """Readings to a file (frames as uint8, a quarter of the bytes), under ``key``: what they were made from."""
    torch.save({"key": [str(k) for k in key],
                "parts": [[(r.frames * 255).round().to(torch.uint8), r.actions, r.labels] for r in parts]}, path)


def load_readings(path: str, key: list) -> list[Reading] | None:
    """:func:`save_readings`'s readings, or None when the file holds readings of other walks."""
    saved = torch.load(path, weights_only=True)
    if saved["key"] != [str(k) for k in key]:
        return None
    return [Reading(frames.float() / 255, actions, labels) for frames, actions, labels in saved["parts"]]


def accuracy(head, data: Reading, batch: int = 512) -> float:
    with torch.no_grad():
        picks = torch.cat([head(data.frames[i:i + batch], data.actions[i:i + batch]).argmax(-1)
                           for i in range(0, len(data), batch)])
    return float((picks == data.labels).float().mean())


def tune_head(head, real: Reading, decoded: Reading, *, seconds: float, steps: int | None = None, batch: int = 256,
              lr: float = 3e-4, decoded_share: float = 0.75, seed: int = 0, weight_decay: float = 0.0,
              validate: Callable[[], float] | None = None, every: int = 250,
              progress: Callable[[int, float], None] | None = None) -> dict[str, float]:
    """AdamW on the head's cross-entropy; each batch ``decoded_share`` decoded frames, the rest real ones. With
    ``validate`` (a held-out score, higher is better) checked every ``every`` steps, the head ends on its best
    check: a few thousand walking pairs are memorised within minutes."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    best = (validate(), 0, copy.deepcopy(head.state_dict())) if validate else None
    head.train()
    n_dec = int(round(batch * decoded_share))
    start, done, loss = time.time(), 0, float("nan")
    while (steps is None or done < steps) and time.time() - start < seconds:
        parts = []
        for data, n in ((decoded, n_dec), (real, batch - n_dec)):
            if n:
                i = torch.randint(len(data), (n,), generator=g)
                parts.append(Reading(data.frames[i], data.actions[i], data.labels[i]))
        b = Reading.cat(parts)
        out = F.cross_entropy(head(b.frames, b.actions), b.labels)
        opt.zero_grad(set_to_none=True)
        out.backward()
        opt.step()
        done, loss = done + 1, out.item()
        if progress:
            progress(done, loss)
        if best and done % every == 0:
            head.eval()
            score = validate()
            head.train()
            if score > best[0]:
                best = (score, done, copy.deepcopy(head.state_dict()))
    head.eval()
    facts = {"steps": done, "seconds": round(time.time() - start, 1), "loss": round(loss, 4)}
    if best:
        head.load_state_dict(best[2])
        facts.update(kept_step=best[1], kept_score=round(best[0], 4))
    return facts
