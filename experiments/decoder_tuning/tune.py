"""Closed-loop decoder tuning: a Δ-decoder that holds up when it reads its own output.

Why: a Δ-tokenizer trains on real pairs, so its decoder always sees a real x_{t-1}. In the dream it sees
its own previous output, and each step's small error becomes the next step's input (the question and the
result: experiments/decoder_tuning/README.md).

``tune_decoder`` trains the decoder side only (every parameter outside ``encoder*`` and ``quantizer``),
so the tokens mean what they meant and the world models trained on them stay valid. Each example is an
unroll of ``unroll`` steps from a real frame: the tokens come from the real pairs (computed without
gradients), and from the second step on the decoder reads its own previous output (detached). The loss is
the tokenizer's own reconstruction loss (``Tokenizer.reconstruction_loss``). ``closed_loop_errors``
measures the same closed loop on held-out episodes; ``python -m experiments.decoder_tuning.cli`` is the
command line.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from model.data.view_motion import ViewGeometry, motion_labels, strip_weights
from model.eval.keys import closed_loop
from model.train.averaging import WeightAverage
from model.eval.parts import frame_mse
from model.data.frames import to_tensor
from model.data.store import Episode

ENCODER_SIDE = ("encoder", "quantizer")  # parameter-name prefixes that make the tokens


def decoder_parameters(tokenizer: nn.Module) -> list[nn.Parameter]:
    """The parameters ``decode`` uses and ``encode`` does not (Δ-tokenizers name their encode side
    ``encoder*`` and ``quantizer``)."""
    if getattr(tokenizer, "kind", None) != "delta":
        raise ValueError("closed-loop tuning is for Δ-tokenizers (an IRIS tokenizer decodes each frame on its own)")
    return [p for n, p in tokenizer.named_parameters() if not n.startswith(ENCODER_SIDE)]


def grow_decoder(tokenizer: nn.Module, cfg, blocks: int) -> tuple[nn.Module, Any]:
    """A copy of a Δ-tokenizer whose decoder has ``blocks`` more ResBlocks at the end of each level, and the
    config that builds it. Each new block's last conv starts at zero, so the block is the identity and the grown
    tokenizer decodes exactly as the old one: tuning starts where the old decoder stood, with room to draw more."""
    from model.checkpoint import build_model

    if blocks < 1:
        raise ValueError("grow by at least one block")
    decoder_parameters(tokenizer)  # a Δ-tokenizer, or a clear error
    tok_cfg = dataclasses.replace(cfg.tokenizer, decoder_extra_blocks=cfg.tokenizer.decoder_extra_blocks + blocks)
    new_cfg = dataclasses.replace(cfg, tokenizer=tok_cfg)
    grown = build_model("tokenizer", new_cfg).to(next(tokenizer.parameters()).device)
    missing, unexpected = grown.load_state_dict(tokenizer.state_dict(), strict=False)
    if unexpected or not missing or not all(k.startswith("decoder.levels.") for k in missing):
        raise ValueError(f"cannot grow this decoder (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for block in sorted({k.split(".f.")[0] for k in missing}):  # the new ResBlocks, named by their missing weights
        last = grown.get_submodule(block).f[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    grown.train(tokenizer.training)
    return grown, new_cfg


def windows(episodes: Sequence[Episode], steps: int) -> list[tuple[int, int]]:
    """Every (episode index, start) with ``steps`` transitions after the start."""
    return [(i, s) for i, ep in enumerate(episodes) for s in range(ep.length - steps + 1)]


def _batch(episodes: Sequence[Episode], picks: Sequence[tuple[int, int]], steps: int,
           device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    frames = np.stack([episodes[i].frames[s:s + steps + 1] for i, s in picks])  # (B, T+1, H, W, 3)
    actions = np.stack([episodes[i].actions[s:s + steps] for i, s in picks])
    return to_tensor(frames, device), torch.as_tensor(actions, dtype=torch.long, device=device)


def _unroll(tokenizer, frames: torch.Tensor, actions: torch.Tensor,
            encoder: bool = False) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Closed-loop reconstructions x^_1..x^_T (each (B, 3, H, W), unclamped) from x^_0 = x_0 and the real
    pairs' tokens; step t decodes from x^_{t-1} clamped to [0, 1], as ``decode`` hands it to the next step.
    Also the mean commitment loss (zero unless ``encoder``: then the tokens come through the quantizer's
    straight-through path, so the encode side learns what the decoder needs from its own output)."""
    out, prev, commitment = [], frames[:, 0], frames.new_zeros(())
    for t in range(actions.size(1)):
        if encoder:
            quantized = tokenizer.quantize(frames[:, t], actions[:, t], frames[:, t + 1])
            q, commitment = tokenizer.from_patches(quantized.q), commitment + quantized.commitment / actions.size(1)
        else:
            with torch.no_grad():  # the encode side gets no gradient: only the decoder side can learn
                tokens = tokenizer.encode(frames[:, t], actions[:, t], frames[:, t + 1])
                q = tokenizer.from_patches(tokenizer.quantizer.embed(tokens))
        recon = tokenizer.image(prev, actions[:, t], q).float()
        out.append(recon)
        prev = recon.clamp(0, 1).detach()
    return out, commitment


@torch.no_grad()
def closed_loop_errors(tokenizer, episodes: Sequence[Episode], horizon: int, count: int, seed: int = 0,
                       batch: int = 32) -> np.ndarray:
    """(count, horizon) per-frame MSE of closed-loop decoding (real tokens, own previous output) over
    ``count`` windows drawn with ``seed`` from ``episodes``."""
    tokenizer.eval()
    device = next(tokenizer.parameters()).device
    pool = windows(episodes, horizon)
    if not pool:
        raise ValueError(f"no episode has {horizon} steps")
    rng = np.random.default_rng(seed)
    picks = [pool[i] for i in rng.choice(len(pool), size=count, replace=len(pool) < count)]
    rows = []
    for k in range(0, count, batch):
        frames, actions = _batch(episodes, picks[k:k + batch], horizon, device)
        decoded = closed_loop(tokenizer, frames, actions)
        rows.append(frame_mse(decoded.flatten(0, 1), frames[:, 1:].flatten(0, 1)).view(decoded.shape[:2]).cpu())
    return torch.cat(rows).numpy()


def unroll_strip_weights(frames: torch.Tensor, actions: torch.Tensor, weight: float, view: ViewGeometry,
                         moves: torch.Tensor) -> torch.Tensor | None:
    """(B, T+1, 3, H, W) real frames, (B, T) actions -> (B, T, 1, H, W) per-pixel loss weights: ``weight`` on the
    strip each real step's scroll brought into view, 1 elsewhere (the tokenizer's ``strip_weight``); None at 1."""
    if weight == 1.0:
        return None
    b, t = actions.shape
    motions = motion_labels(frames[:, :-1].flatten(0, 1), frames[:, 1:].flatten(0, 1), actions.flatten(), moves, view)
    return strip_weights(motions, view, frames.size(-1), weight).view(b, t, 1, *frames.shape[-2:])


def tune_decoder(tokenizer, episodes: Sequence[Episode], *, unroll: int = 4, batch: int = 8, lr: float = 1e-4,
                 weight_decay: float = 0.01, grad_clip: float = 10.0, steps: int | None = None,
                 seconds: float | None = None, seed: int = 0, encoder: bool = False,
                 strip_weight: float = 1.0, view: ViewGeometry | None = None, moves: torch.Tensor | None = None,
                 average: float = 0.0,
                 progress: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Train the decoder side on closed-loop unrolls until ``steps`` steps or ``seconds`` of wall time
    (whichever comes first; at least one must be given). Returns facts for the model card.
    ``encoder=True`` trains the encode side too (plus the commitment loss): the tokens change meaning,
    so world models trained on the old tokens must be trained again. ``strip_weight`` (with the env's scrolling
    ``view`` and its actions' ``moves``, :func:`model.data.view_motion.key_motions`) weighs the newly scrolled-in
    strip as the tokenizer's training does; ``average`` > 0 ends on an EMA of the weights with that decay."""
    if strip_weight != 1.0 and (view is None or moves is None):
        raise ValueError("a strip weight needs the env's scrolling view and its actions' moves")
    if steps is None and seconds is None:
        raise ValueError("give steps, seconds or both")
    params = decoder_parameters(tokenizer)
    if encoder:
        params = [p for p in tokenizer.parameters() if p.requires_grad]
    pool = windows(episodes, unroll)
    if not pool:
        raise ValueError(f"no episode has {unroll} steps to unroll")
    device = next(tokenizer.parameters()).device
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    tokenizer.train()
    ema = WeightAverage(tokenizer, average) if average > 0 else None
    t0, done, loss_sum = time.perf_counter(), 0, 0.0
    while (steps is None or done < steps) and (seconds is None or time.perf_counter() - t0 < seconds):
        picks = [pool[i] for i in rng.integers(len(pool), size=batch)]
        frames, actions = _batch(episodes, picks, unroll, device)
        recons, commitment = _unroll(tokenizer, frames, actions, encoder)
        w = unroll_strip_weights(frames, actions, strip_weight, view, moves)
        loss = sum(tokenizer.reconstruction_loss(frames[:, t + 1], r, pixel_weights=None if w is None else w[:, t])[0]
                   for t, r in enumerate(recons)) / unroll
        loss = loss + commitment
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        if ema is not None:
            ema.update(tokenizer)
        done += 1
        value = loss.item()
        loss_sum += value
        if progress:
            progress(done, {"loss": value})
    if ema is not None:
        ema.copy_to(tokenizer)
    tokenizer.eval()
    return {"steps": done, "unroll": unroll, "batch": batch, "encoder": encoder, "lr": lr, "seconds": round(time.perf_counter() - t0, 1),
            "mean_loss": loss_sum / max(done, 1), "windows": len(pool), "strip_weight": strip_weight,
            "average": average}
