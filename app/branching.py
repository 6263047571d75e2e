"""What the Δ-tokens carry, for the front ends: branching futures and the token inspector.

A Δ-tokenizer encodes only what the previous frame and the action leave open, so a dream state holds a
*distribution* of next frames. :func:`sample_branches` shows N of them at once (sampled in one batch from
a copy of the world model's cache), and :func:`inspect` shows, for the current frame, each token position's
most likely alternatives under the world model; :func:`heat_map` shows which pixels a token change moved.
:func:`token_maps` does the same for a tokenizer alone, one map per token position: the IRIS tokenizer's
tokens each paint a fixed patch, a Δ-token moves whatever changed.

The play engine (:class:`app.engine.PlaySession`) wraps these, so the web UI, the window and the CLI share them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model.data.frames import to_tensor, to_uint8
from model.nets.imagination import DreamEnv

# Colour ramp of the heat maps (black -> purple -> orange -> pale yellow), as anchors over [0, 1].
_RAMP = np.array([[0, 0, 0], [90, 20, 120], [230, 90, 40], [255, 240, 160]], np.float32)
HEAT_FLOOR = 0.05  # a change below 5% of the pixel range is not stretched to full colour


@dataclass
class Branch:
    """One sampled next step."""

    index: int
    frame: np.ndarray  # uint8 (H, W, 3)
    tokens: list[int]
    logp: float  # log-probability of its tokens under the world model (temperature 1)
    reward: float
    end_prob: float


@dataclass
class TokenSlot:
    """One token position of the current frame, with the world model's view of it."""

    position: int
    token: int  # the token the frame has now
    prob: float  # its probability under the world model
    top: list[tuple[int, float]]  # the most likely tokens at this position, (token, probability)


@dataclass
class Inspection:
    """The current frame's tokens; after an edit, also what the edit changed."""

    slots: list[TokenSlot]
    frame: np.ndarray  # uint8 (H, W, 3), the current dream frame
    heat: np.ndarray | None = None  # uint8 (H, W, 3): where the last edit changed the frame
    changed: float = 0.0  # mean |after - before| of the last edit, in 0..255 units

    @property
    def tokens(self) -> list[int]:
        return [s.token for s in self.slots]


def sample_branches(dream: DreamEnv, action: int, n: int, temperature: float | None = None) -> list[Branch]:
    if not 1 <= n <= 64:
        raise ValueError(f"the number of branches must be between 1 and 64, got {n}")
    b = dream.branch(action, n, temperature)
    frames = to_uint8(b.frames)
    return [Branch(i, frames[i], [int(t) for t in b.tokens[i]], float(b.logp[i]), float(b.reward[i]),
                   float(b.end_prob[i])) for i in range(n)]


def continue_from(dream: DreamEnv, action: int, branch: Branch) -> tuple[torch.Tensor, float, float]:
    """Advance the dream along ``branch``: its tokens go into the world model's memory and its frame
    becomes the current one, bit for bit. Returns (frame (1, 3, H, W), reward, end probability)."""
    tokens = torch.tensor([branch.tokens], dtype=torch.long)
    frame = to_tensor(branch.frame, dream.device)[None]
    frame, _, _ = dream.step(torch.tensor([action]), tokens=tokens, frame=frame)
    return frame, branch.reward, branch.end_prob


def inspect(dream: DreamEnv, topk: int = 5) -> Inspection:
    probs = dream.last_logits().softmax(-1)  # (K, V)
    current = dream.last_tokens[0].tolist()
    top_p, top_i = probs.topk(min(topk, probs.size(-1)), dim=-1)
    slots = [TokenSlot(k, int(t), float(probs[k, t]), [(int(i), float(p)) for i, p in zip(top_i[k], top_p[k])])
             for k, t in enumerate(current)]
    return Inspection(slots, to_uint8(dream.frame[0]))


def set_token(dream: DreamEnv, position: int, token: int | None, temperature: float = 1.0,
              topk: int = 5) -> Inspection:
    """Put ``token`` at ``position`` of the current frame's tokens (``None``: sample one from the world
    model's distribution at that position) and decode the frame again."""
    before = dream.frame.clone()
    tokens = dream.last_tokens.clone()
    k_max, vocab = tokens.size(1), dream.tokenizer.vocab_size
    if not 0 <= position < k_max:
        raise ValueError(f"token position must be between 0 and {k_max - 1}, got {position}")
    if token is None:
        logits = dream.last_logits()[position] / max(temperature, 1e-6)
        token = int(torch.multinomial(logits.softmax(-1), 1))
    if not 0 <= token < vocab:
        raise ValueError(f"token must be between 0 and {vocab - 1}, got {token}")
    tokens[0, position] = token
    after = dream.replace_last(tokens)
    view = inspect(dream, topk)
    view.heat = heat_map(before[0], after[0])
    view.changed = float((after - before).abs().mean() * 255)
    return view


def heat_map(before: torch.Tensor, after: torch.Tensor) -> np.ndarray:
    """(3, H, W) frames in [0, 1] -> uint8 (H, W, 3): the per-pixel change, coloured."""
    diff = (after.float() - before.float()).abs().mean(0).cpu().numpy()
    return colorize(diff / max(float(diff.max()), HEAT_FLOOR))


def colorize(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (H, W) -> uint8 (H, W, 3) along the heat ramp."""
    x = np.clip(values, 0, 1) * (len(_RAMP) - 1)
    lo = np.floor(x).astype(int).clip(0, len(_RAMP) - 2)
    t = (x - lo)[..., None]
    return ((1 - t) * _RAMP[lo] + t * _RAMP[lo + 1]).round().astype(np.uint8)


@torch.inference_mode()
def token_maps(tokenizer, prev: np.ndarray | None, action: int | None, frame: np.ndarray,
               codes: int = 8, seed: int = 0) -> np.ndarray:
    """How much each token position moves the decoded frame: for each position, the mean |change| over
    ``codes`` random replacement tokens. uint8 frames (H, W, 3) -> float (K, H, W) in 0..1 units.
    Δ tokenizers need ``prev`` and ``action``; an IRIS tokenizer reads ``frame`` alone."""
    dev = next(tokenizer.parameters()).device
    x = to_tensor(frame, dev)[None]
    if tokenizer.kind == "iris":
        p = a = None
    else:
        if prev is None or action is None:
            raise ValueError("a Δ-tokenizer's tokens mean something only given the previous frame and action")
        p, a = to_tensor(prev, dev)[None], torch.tensor([int(action)], device=dev)
    tokens = tokenizer.encode(p, a, x)  # (1, K)
    base = tokenizer.decode(p, a, tokens).float()
    k = tokens.size(1)
    gen = torch.Generator().manual_seed(seed)
    swaps = torch.randint(0, tokenizer.vocab_size, (k, codes), generator=gen).to(dev)
    edited = tokens.repeat(k * codes, 1)
    rows = torch.arange(k * codes, device=dev)
    edited[rows, rows // codes] = swaps.flatten()
    many = lambda t: None if t is None else t.expand(k * codes, *t.shape[1:])  # noqa: E731
    out = tokenizer.decode(many(p), many(a), edited).float()
    return (out - base).abs().mean(1).view(k, codes, *out.shape[-2:]).mean(1).cpu().numpy()


def rollout_futures(bundle, start: np.ndarray, actions: list[int] | str, n: int, steps: int,
                    temperature: float = 1.0) -> list[list[np.ndarray]]:
    """``n`` dreams from one real frame, in one batch: ``actions`` (repeated when shorter than ``steps``)
    for all of them, or "agent" (one agent per future, acting on that future's frames). Returns
    ``steps + 1`` rows of ``n`` uint8 frames."""
    from model.data.policies import Agent

    dream = DreamEnv(bundle.tokenizer, bundle.world_models[next(iter(bundle.world_models))],
                     temperature=temperature, autocast_mode=bundle.cfg.train.autocast)
    frame = dream.reset(to_tensor(start, bundle.device)[None, None].expand(n, 1, -1, -1, -1).contiguous(),
                        torch.zeros(n, 0, dtype=torch.long))
    if actions == "agent":
        if bundle.actor_critic is None:
            raise ValueError("this checkpoint has no trained agent (no actor_critic weights)")
        agent = Agent(bundle.actor_critic)
    elif not actions:
        raise ValueError("empty action list")
    rows = [list(to_uint8(frame))]
    for t in range(steps):
        a = agent.act(frame) if actions == "agent" else torch.full((n,), actions[t % len(actions)])
        frame, _, _ = dream.step(a)
        rows.append(list(to_uint8(frame)))
    return rows
