"""The three learning phases of an epoch, each a fixed number of optimiser steps on sampled batches:
the tokenizer on pairs of real frames, the world model on the frozen tokenizer's tokens, and the
actor-critic in imagination from real burn-in segments.

Optimisers: AdamW (lr, weight decay on weight matrices and embeddings only) for the tokenizer and
world model, as the published code; the actor-critic gets no weight decay (the published code uses
Adam for it). Grad-norm clip ``grad_clip``; bf16 autocast for the tokenizer and world model where it is fast
(``model.device.autocast_dtype``: CUDA, CPUs with bf16 hardware).
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import nn

from model.config import Config
from model.data.sampler import SegmentSampler, to_torch
from model.data.token_cache import TokenCache
from model.data.view_motion import env_key_motions, motion_labels, strip_weights
from model.device import autocast
from model.nets.imagination import DreamEnv
from model.train.averaging import WeightAverage
from model.train.dist import Dist
from model.train.schedule import steps_for
from model.train.stop import StopRequested


class Pairs(NamedTuple):
    """One tokenizer batch: the encoder reads (prev, actions, next); the decoder rebuilds next from decoder_prev
    (prev itself, or a reconstruction chained in a closed loop, ``train.tokenizer_closed_loop``)."""

    prev: torch.Tensor
    actions: torch.Tensor
    next: torch.Tensor
    decoder_prev: torch.Tensor

Emit = Callable[..., None]  # emit(phase, step=..., steps=..., loss=...)


AVERAGED = ("tokenizer", "iris_tokenizer", "world_model", "world_model_no_itok")  # train.weight_average


class Mean:
    """Running means of metric dicts."""

    def __init__(self) -> None:
        self.sum: dict[str, float] = defaultdict(float)
        self.n: dict[str, int] = defaultdict(int)

    def add(self, metrics: dict[str, float], prefix: str = "") -> None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.sum[prefix + k] += float(v)
                self.n[prefix + k] += 1

    def mean(self, key: str) -> float:
        return self.sum[key] / max(self.n[key], 1)

    def result(self) -> dict[str, float]:
        return {k: self.sum[k] / self.n[k] for k in self.sum}


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; decay only on tensors with >= 2 dims (weights, embeddings), not on biases or norms. A submodule
    with an ``lr_scale`` attribute (the world model's motion head) gets its own groups at ``lr * lr_scale``."""
    scaled = {id(p): m.lr_scale for m in model.modules() if hasattr(m, "lr_scale") for p in m.parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = []
    for scale in [1.0] + sorted(set(scaled.values())):
        mine = [p for p in params if scaled.get(id(p), 1.0) == scale]
        groups += [{"params": [p for p in mine if p.dim() >= 2], "weight_decay": weight_decay, "lr": lr * scale},
                   {"params": [p for p in mine if p.dim() < 2], "weight_decay": 0.0, "lr": lr * scale}]
    return torch.optim.AdamW(groups, lr=lr)


class Phases:
    """Trains the run's models in place. ``emit`` reports each step; ``should_stop`` is asked before each
    step (a stop raises :class:`StopRequested`). ``updated`` says whether an optimiser stepped since the
    owner last cleared it (the trainer does at each checkpoint)."""

    def __init__(self, cfg: Config, models: dict[str, nn.Module], optims: dict[str, torch.optim.Optimizer],
                 samplers: dict[str, SegmentSampler], token_cache: TokenCache, dist: Dist, emit: Emit,
                 should_stop: Callable[[], bool], checkpoint: Callable[[], None] | None = None):
        self.cfg, self.models, self.optims, self.samplers = cfg, models, optims, samplers
        self.token_cache, self.dist, self.device = token_cache, dist, dist.device
        self.emit, self.should_stop, self.checkpoint = emit, should_stop, checkpoint
        self.updated = False
        self._key_motions: torch.Tensor | None = None  # per action, the scroll of its key (motion labels)
        decay = cfg.train.weight_average
        self.averages = {name: WeightAverage(models[name], decay) for name in AVERAGED if decay > 0 and name in models}

    # ---------------------------------------------------------------- shared steps

    def _autocast(self):
        return autocast(self.device, self.cfg.train.autocast)

    def _optimize(self, name: str, loss: torch.Tensor) -> float:
        """One optimiser step of model ``name`` (gradients averaged over ranks, clipped); the grad norm."""
        model, opt = self.models[name], self.optims[name]
        params = [p for p in model.parameters() if p.requires_grad]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self.dist.average_grads(params)
        norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.train.grad_clip)
        opt.step()
        self.dist.broadcast_module(model, buffers_only=True)
        if name in self.averages:
            self.averages[name].update(model)
        self.updated = True
        return float(norm)

    def _steps(self, component: str, epoch: int) -> Iterator[tuple[int, int]]:
        """(step, steps) of this epoch's schedule for ``component``, stopping when asked to, with a checkpoint
        every ``train.checkpoint_every`` steps (the same steps on every rank: it is a collective)."""
        n, every = steps_for(self.cfg, component, epoch), self.cfg.train.checkpoint_every
        for i in range(n):
            if self.should_stop():
                raise StopRequested
            yield i, n
            if every and self.checkpoint is not None and (i + 1) % every == 0 and i + 1 < n:
                self.checkpoint()

    @contextmanager
    def _training(self, names: list[str]) -> Iterator[None]:
        """Train mode for ``names`` while the phase runs; eval mode and their weight averages after (also on a
        stop, so that the checkpoint it leaves holds the averages)."""
        for name in names:
            self.models[name].train()
        try:
            yield
        finally:
            for name in names:
                self.models[name].eval()
                if name in self.averages:
                    self.averages[name].copy_to(self.models[name])

    # ---------------------------------------------------------------- batches

    def pairs(self) -> Pairs:
        """Frame pairs of one tokenizer batch (only real transitions)."""
        tr = self.cfg.train
        for _ in range(100):
            raw = self.samplers["tokenizer"].sample(self.dist.share(tr.tokenizer_batch))
            b = to_torch(raw, self.device)
            valid = b.action_mask[:, :-1]
            if valid.any():
                real_tokens = tr.tokenizer_closed_loop_tokens == "real"
                chained = self._closed_loop(b.frames, b.actions, b.action_mask, tr.tokenizer_closed_loop, real_tokens)
                prev = (b.frames if real_tokens else chained)[:, :-1][valid]
                decoder_prev = prev if chained is b.frames or not real_tokens else chained[:, :-1][valid]
                return Pairs(prev, b.actions[:, :-1][valid], b.frames[:, 1:][valid], decoder_prev)
        raise RuntimeError("the store holds no transitions to train the tokenizer on")

    def _closed_loop(self, frames: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor,
                     share: float, real_tokens: bool = False, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Frames (B, T) whose first ``share`` of segments are replaced, from the second frame on, by the tokenizer's
        own reconstructions chained from the first real frame: x^_t = D(x^_{t-1}, a_{t-1}, E(x^_{t-1}, a_{t-1}, x_t)),
        or with ``real_tokens`` E(x_{t-1}, a_{t-1}, x_t) (the tokens a world model learns): the previous frames a
        dream's decoder meets. The chain restarts from the real frame after an episode's end. No gradient flows
        through the chain. ``tokens`` (B, T-1, K): the real pairs' tokens, already encoded (the token cache)."""
        n = round(share * frames.size(0))
        if n == 0:
            return frames
        tok = self.models["tokenizer"]
        out = frames.clone()
        with torch.no_grad(), self._autocast():
            for t in range(1, frames.size(1)):
                prev, a = out[:n, t - 1], actions[:n, t - 1]
                if tokens is not None:
                    z = tokens[:n, t - 1]
                else:
                    z = tok.encode(frames[:n, t - 1] if real_tokens else prev, a, frames[:n, t])
                recon = tok.decode(prev, a, z).float().clamp(0, 1)
                out[:n, t] = torch.where(mask[:n, t - 1, None, None, None], recon, frames[:n, t])
        return out

    def _world_model_batch(self) -> tuple[torch.Tensor, ...]:
        """World-model inputs from one sampled segment: L steps need L+1 frames."""
        tok = self.models["tokenizer"]
        raw = self.samplers["world_model"].sample(self.dist.share(self.cfg.train.world_model_batch))
        b = to_torch(raw, self.device)

        def encode(prev, actions, nxt):
            with torch.no_grad(), self._autocast():
                return tok.encode(prev, actions, nxt)

        tokens = self.token_cache.tokens(raw, b.frames, encode)
        wm = self.models["world_model"]
        weights = wm.step_weights(b.frames)
        motions = self._motion_labels(b.frames, b.actions[:, :-1]) if wm.motion else None
        # The frames the I-tokens read: in a dream they are the decoder's own, so a share of segments shows those
        # (the real tokens decoded in a closed loop); the tokens to predict and the motion labels stay the real ones.
        seen = b.frames[:, :-1]
        if wm.i_tokens and self.cfg.train.world_model_closed_loop > 0:
            seen = self._closed_loop(seen, b.actions, b.action_mask, self.cfg.train.world_model_closed_loop,
                                     tokens=tokens)
        return (seen, b.actions[:, :-1], tokens, b.rewards[:, :-1], b.ends[:, :-1], b.action_mask[:, :-1],
                weights, motions)

    def _strip_weights(self, prev: torch.Tensor, actions: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor | None:
        """Per-pixel loss weights of tokenizer pairs: ``tokenizer.strip_weight`` on the strip each pair's scroll
        brought into view, 1 elsewhere; None at weight 1."""
        w = self.cfg.tokenizer.strip_weight
        if w == 1.0:
            return None
        motions = self._motion_labels(torch.stack([prev, nxt], dim=1), actions[:, None])[:, 0]
        return strip_weights(motions, self.cfg.env.scroll_view, prev.size(-1), w)

    def _motion_labels(self, frames: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """(B, L+1, 3, H, W) frames, (B, L) actions -> (B, L): which way the view moved at each step, the labels
        of the world model's motion input."""
        if self._key_motions is None:
            self._key_motions = env_key_motions(self.cfg.env.name, frames.device)
        b, n = actions.shape
        return motion_labels(frames[:, :-1].flatten(0, 1), frames[:, 1:].flatten(0, 1), actions.flatten(),
                             self._key_motions, self.cfg.env.scroll_view).view(b, n)

    # ---------------------------------------------------------------- the phases

    def tokenizer(self, epoch: int) -> dict[str, float]:
        names = ["tokenizer"] + (["iris_tokenizer"] if "iris_tokenizer" in self.models else [])
        agg = Mean()
        with self._training(names):
            for i, n in self._steps("tokenizer", epoch):
                prev, act, nxt, decoder_prev = self.pairs()
                swap = {"tokenizer": self.cfg.train.tokenizer_token_swap}
                weights = {"tokenizer": self._strip_weights(prev, act, nxt)}
                for name in names:
                    with self._autocast():
                        loss, m = self.models[name].compute_loss(prev, act, nxt, token_swap=swap.get(name, 0.0),
                                                                 pixel_weights=weights.get(name),
                                                                 decoder_prev=decoder_prev)
                    m["loss"] = loss.item()
                    m["grad_norm"] = self._optimize(name, loss)
                    agg.add(m, prefix=f"{name}/")
                self.emit("tokenizer", step=i + 1, steps=n, loss=agg.mean("tokenizer/loss"))
        return agg.result()

    def world_model(self, epoch: int) -> dict[str, float]:
        names = ["world_model"] + (["world_model_no_itok"] if "world_model_no_itok" in self.models else [])
        vocab = self.cfg.tokenizer.vocab_size
        counts = torch.zeros(vocab, dtype=torch.long)
        self.token_cache.clear()  # the tokenizer trained since the last phase
        agg = Mean()
        with self._training(names):
            for i, n in self._steps("world_model", epoch):
                frames, actions, tokens, rewards, ends, mask, weights, motions = self._world_model_batch()
                counts += torch.bincount(tokens[mask].flatten().cpu(), minlength=vocab)
                for name in names:
                    wm = self.models[name]
                    with self._autocast():
                        loss, m = wm.compute_loss(frames if wm.i_tokens else None, actions, tokens, rewards, ends, mask,
                                                  weights, motions if wm.motion else None)
                    m["grad_norm"] = self._optimize(name, loss)
                    agg.add(m, prefix=f"{name}/")
                self.emit("world_model", step=i + 1, steps=n, loss=agg.mean("world_model/loss"))
        return agg.result() | codebook_stats(counts)

    def actor_critic(self, epoch: int) -> dict[str, float]:
        ac = self.models["actor_critic"]
        dream = DreamEnv(self.models["tokenizer"], self.models["world_model"], temperature=1.0,
                         autocast_mode=self.cfg.train.autocast,  # for its conv nets only
                         probe_actions=self.cfg.actor_critic.lookahead_weight > 0)
        agg = Mean()
        with self._training(["actor_critic"]):
            for i, n in self._steps("actor_critic", epoch):
                batch = self.samplers["actor_critic"].sample_burn_in(self.dist.share(self.cfg.train.actor_critic_batch))
                b = to_torch(batch, self.device)
                loss, m = ac.imagine_and_loss(dream, b.frames, b.actions[:, :-1])
                m["grad_norm"] = self._optimize("actor_critic", loss)
                agg.add(m, prefix="actor_critic/")
                self.emit("actor_critic", step=i + 1, steps=n, loss=agg.mean("actor_critic/loss"))
        return agg.result()


def codebook_stats(counts: torch.Tensor) -> dict[str, float]:
    """Token counts (V,) of a phase -> share of the codebook used and its perplexity (none if no tokens)."""
    if counts.sum() == 0:
        return {}
    p = counts.float() / counts.sum()
    nz = p[p > 0]
    return {"codebook_usage": float((counts > 0).float().mean()),
            "codebook_perplexity": float(torch.exp(-(nz * nz.log()).sum()))}
